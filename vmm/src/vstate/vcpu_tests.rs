//! The generic exit loop on a tiny real guest: a few instructions at CPL0
//! in long mode that make one exit each (port writes of one and four
//! bytes, a port read, an MMIO write and read, hlt), so every kind of exit
//! reaches its handler method with its data, in order, and the handler's
//! answers (port and MMIO reads) reach the guest.

use kvm_bindings::kvm_regs;

use super::*;
use crate::arch::x86_64::gdt::write_tables;
use crate::arch::x86_64::layout::{DIRECT_MAP_BASE, FRAMES_START, MIN_MEMORY};
use crate::arch::x86_64::paging::{pte, PageTables};
use crate::arch::x86_64::regs;
use crate::memory::{FrameAllocator, GuestMemory};
use crate::vstate::vm::Vm;

const CODE: u64 = 0x10_0000;
const DATA: u64 = 0x8_0000;
/// A virtual window onto guest physical addresses beyond memory (MMIO).
const MMIO_VA: u64 = 0x40_0000;
const MMIO_GPA: u64 = 0x1_0000_0000;

/// A VM running `code` at CPL0, or None (loudly) without /dev/kvm.
fn guest(code: &[u8]) -> Option<(Vm, Vcpu)> {
    let vm = match Vm::new(MIN_MEMORY, MIN_MEMORY) {
        Ok(vm) => vm,
        Err(e) => {
            eprintln!("SKIPPED: this test needs /dev/kvm ({e})");
            return None;
        }
    };
    let mem: &GuestMemory = &vm.mem;
    let mut frames = FrameAllocator::new(FRAMES_START, mem.size());
    let pt = PageTables::new(mem, &mut frames).expect("page tables");
    let rw = pte::PRESENT | pte::WRITABLE | pte::ACCESSED | pte::DIRTY;
    pt.map_huge(mem, &mut frames, 0, 0, 2 << 20, rw).expect("identity map");
    pt.map_huge(mem, &mut frames, DIRECT_MAP_BASE, 0, 2 << 20, rw | pte::NO_EXECUTE).expect("direct map");
    pt.map_huge(mem, &mut frames, MMIO_VA, MMIO_GPA, 2 << 20, rw | pte::NO_EXECUTE).expect("MMIO window");
    write_tables(mem, &[0; dmvx_abi::EXCEPTION_VECTORS], &[dmvx_abi::PORT_SYSCALL]).expect("descriptor tables");
    mem.write(CODE, code).expect("code");
    let mut vcpu = Vcpu::new(vm.fd.create_vcpu(0).expect("a vCPU"));
    let xcr0 = regs::setup_cpuid(&vm.kvm, vcpu.fd()).expect("cpuid");
    regs::setup_long_mode(vcpu.fd(), pt.root(), 0, xcr0).expect("long mode");
    *vcpu.regs_mut() = kvm_regs { rip: CODE, rsp: DATA + 0x8000, rflags: 2, ..Default::default() };
    Some((vm, vcpu))
}

/// An exit as a handler saw it.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Out(u16, Vec<u8>),
    In(u16, usize),
    MmioRead(u64, usize),
    MmioWrite(u64, Vec<u8>),
    Interrupted,
}

/// Records every exit; stops at hlt, or at a write to `stop_port`.
#[derive(Default)]
struct Recorder {
    seen: Vec<Seen>,
    stop_port: Option<u16>,
}

impl ExitHandler for Recorder {
    type Done = (Vec<Seen>, u64);

    fn io_out(&mut self, vcpu: &mut Vcpu, port: u16, data: &[u8]) -> Result<Flow<Self::Done>, VcpuError> {
        self.seen.push(Seen::Out(port, data.to_vec()));
        if self.stop_port == Some(port) {
            return Ok(Flow::Done((std::mem::take(&mut self.seen), vcpu.regs().rip)));
        }
        Ok(Flow::Continue)
    }

    fn io_in(&mut self, port: u16, data: &mut [u8]) {
        self.seen.push(Seen::In(port, data.len()));
        data.fill(0x5a);
    }

    fn mmio_read(&mut self, addr: u64, data: &mut [u8]) {
        self.seen.push(Seen::MmioRead(addr, data.len()));
        data.fill(0x33);
    }

    fn mmio_write(&mut self, _vcpu: &mut Vcpu, addr: u64, data: &[u8]) -> Result<Flow<Self::Done>, VcpuError> {
        self.seen.push(Seen::MmioWrite(addr, data.to_vec()));
        Ok(Flow::Continue)
    }

    fn hlt(&mut self, vcpu: &mut Vcpu) -> Result<Flow<Self::Done>, VcpuError> {
        Ok(Flow::Done((std::mem::take(&mut self.seen), vcpu.regs().rip)))
    }

    fn interrupted(&mut self, vcpu: &mut Vcpu) -> Result<Flow<Self::Done>, VcpuError> {
        vcpu.set_immediate_exit(false);
        self.seen.push(Seen::Interrupted);
        Ok(Flow::Continue)
    }
}

#[rustfmt::skip]
const PROGRAM: &[u8] = &[
    0xb0, 0x42,                                     // mov al, 0x42
    0xe6, 0x80,                                     // out 0x80, al
    0x66, 0xba, 0xf8, 0x03,                         // mov dx, 0x3f8
    0xb8, 0x44, 0x33, 0x22, 0x11,                   // mov eax, 0x11223344
    0xef,                                           // out dx, eax
    0xe4, 0x61,                                     // in al, 0x61
    0x88, 0x04, 0x25, 0x00, 0x00, 0x08, 0x00,       // mov [0x80000], al
    0xc6, 0x04, 0x25, 0x08, 0x00, 0x40, 0x00, 0x77, // mov byte [0x400008], 0x77
    0x8a, 0x04, 0x25, 0x10, 0x00, 0x40, 0x00,       // mov al, [0x400010]
    0x88, 0x04, 0x25, 0x01, 0x00, 0x08, 0x00,       // mov [0x80001], al
    0xf4,                                           // hlt
];

#[test]
fn every_exit_reaches_its_handler_in_order() {
    let Some((vm, mut vcpu)) = guest(PROGRAM) else { return };
    let (seen, rip) = run(&mut vcpu, &mut Recorder::default()).expect("the guest runs to hlt");
    assert_eq!(
        seen,
        [
            Seen::Out(0x80, vec![0x42]),
            Seen::Out(0x3f8, vec![0x44, 0x33, 0x22, 0x11]),
            Seen::In(0x61, 1),
            Seen::MmioWrite(MMIO_GPA + 8, vec![0x77]),
            Seen::MmioRead(MMIO_GPA + 0x10, 1),
        ]
    );
    assert_eq!(rip, CODE + PROGRAM.len() as u64, "rip after the hlt");
    let mut answers = [0u8; 2];
    vm.mem.read(DATA, &mut answers).expect("data");
    assert_eq!(answers, [0x5a, 0x33], "the handler's port and MMIO answers reached the guest");
}

#[test]
fn a_handler_that_is_done_stops_the_loop_where_the_guest_is() {
    let Some((_vm, mut vcpu)) = guest(PROGRAM) else { return };
    let mut h = Recorder { stop_port: Some(0x3f8), ..Default::default() };
    let (seen, rip) = run(&mut vcpu, &mut h).expect("the loop stops at the second port write");
    assert_eq!(seen.len(), 2);
    assert_eq!(rip, CODE + 14, "just after `out dx, eax`");
    // Run on: the guest continues from there.
    h.stop_port = None;
    let (seen, _) = run(&mut vcpu, &mut h).expect("on to hlt");
    assert_eq!(seen.first(), Some(&Seen::In(0x61, 1)));
}

#[test]
fn a_kick_before_entry_is_an_interruption_then_the_guest_runs() {
    let Some((_vm, mut vcpu)) = guest(PROGRAM) else { return };
    vcpu.set_immediate_exit(true);
    let (seen, _) = run(&mut vcpu, &mut Recorder::default()).expect("the guest runs to hlt");
    assert_eq!(seen.first(), Some(&Seen::Interrupted));
    assert_eq!(seen.len(), 6);
}

/// The defaults treat what a handler does not expect as the guest going
/// wrong: an MMIO write, hlt.
#[test]
fn unexpected_exits_are_errors_by_default() {
    struct PortsOnly;
    impl ExitHandler for PortsOnly {
        type Done = ();
        fn io_out(&mut self, _: &mut Vcpu, _: u16, _: &[u8]) -> Result<Flow<()>, VcpuError> {
            Ok(Flow::Continue)
        }
    }
    let Some((_vm, mut vcpu)) = guest(PROGRAM) else { return };
    match run(&mut vcpu, &mut PortsOnly) {
        Err(VcpuError::Unexpected(m)) => assert!(m.contains("0x100000008"), "{m}"),
        other => panic!("an MMIO write was not refused: {:?}", other.err()),
    }
    let Some((_vm, mut vcpu)) = guest(&[0x90, 0xf4]) else { return };
    match run(&mut vcpu, &mut PortsOnly) {
        Err(VcpuError::GuestKernel(m)) => assert!(m.contains(&format!("halted at rip {:#x}", CODE + 2)), "{m}"),
        other => panic!("hlt was not refused: {:?}", other.err()),
    }
}
