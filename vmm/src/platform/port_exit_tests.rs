//! The exit handler of the port-exit platform, driven by synthetic exits:
//! a real vCPU (for its register sync area) whose registers and guest
//! memory each test sets as the guest kernel's stubs would leave them, and
//! then one port write as KVM would report it. KVM_RUN itself never runs.

use crate::arch::x86_64::gdt::{segment, KERNEL_CS, USER_CS};
use crate::arch::x86_64::layout::MIN_MEMORY;
use crate::kernel::layout::Layout;

use super::*;

const BOOT: u64 = 0x1000;
const SYSCALL_ENTRY: u64 = 0x20_0000;
const USER_RETURN: u64 = 0x20_1000;
const KOPS_ENTRY: u64 = 0x20_2000;
const RING_ENTRY: u64 = SYSCALL_ENTRY + 0x100;

struct Rig {
    st: State,
    mm: Mm,
    vcpu: Vcpu,
}

/// A VM and vCPU, or None (with a loud message) without a usable /dev/kvm.
fn rig() -> Option<Rig> {
    rig_with(SyscallPath::Exit)
}

/// As `rig`, with the stub of system call path `path` as LSTAR.
fn rig_with(path: SyscallPath) -> Option<Rig> {
    let vm = match Vm::new(MIN_MEMORY, MIN_MEMORY) {
        Ok(vm) => vm,
        Err(e) => {
            eprintln!("SKIPPED: this test needs /dev/kvm ({e})");
            return None;
        }
    };
    let vcpu = Vcpu::new(vm.fd.create_vcpu(0).expect("a vCPU"));
    let mem = vm.mem.clone();
    let mut frames = FrameAllocator::new(FRAMES_START, mem.size());
    let pt = PageTables::new(&mem, &mut frames).expect("page tables");
    let mm = Mm::new(mem.clone(), frames, pt, Layout::fixed(0));
    let header = KernelHeader {
        magic: dmvx_abi::HEADER_MAGIC,
        abi_version: dmvx_abi::ABI_VERSION,
        header_size: dmvx_abi::HEADER_SIZE as u32,
        boot_entry: BOOT,
        syscall_entry: SYSCALL_ENTRY,
        user_return: USER_RETURN,
        kops_entry: KOPS_ENTRY,
        user_text_start: SYSCALL_ENTRY,
        user_text_end: SYSCALL_ENTRY + 0x1000,
        exception_stubs: [0; EXCEPTION_VECTORS],
        ring_entry: RING_ENTRY,
        ring_wait: RING_ENTRY + 0x80,
        ring_exit: RING_ENTRY + 0xa0,
        ring_page: 0,
    };
    let st = State {
        _vm: vm,
        header,
        mem,
        parked: None,
        stats: PlatformStats::default(),
        launched_ns: Some(crate::kernel::monotonic_ns()),
        xcr0: 0,
        slices: None,
        slice_ended: false,
        path,
        ring_gpa: 0,
    };
    Some(Rig { st, mm, vcpu })
}

impl Rig {
    /// Sets the vCPU's privilege level and registers.
    fn at(&mut self, cpl: u8, regs: kvm_regs) -> &mut Self {
        let cs = if cpl == 3 { USER_CS } else { KERNEL_CS };
        self.vcpu.sregs_mut().cs = segment(cs, true);
        *self.vcpu.regs_mut() = regs;
        self
    }

    /// One `out` to `port`, as the exit loop hands it over.
    fn out(&mut self, port: u16) -> Result<Out, VcpuError> {
        let mut exits = Exits { p: &mut self.st, mm: &mut self.mm };
        exits.io_out(&mut self.vcpu, port, &[0])
    }

    fn done(&mut self, port: u16) -> (Trap, UserRegs) {
        match self.out(port) {
            Ok(Flow::Done(d)) => d,
            Ok(Flow::Continue) => panic!("port {port:#x}: the guest was re-entered"),
            Err(e) => panic!("port {port:#x}: {e}"),
        }
    }

    fn error(&mut self, port: u16) -> String {
        match self.out(port) {
            Err(VcpuError::GuestKernel(m)) => m,
            Err(e) => panic!("port {port:#x}: another error: {e}"),
            Ok(_) => panic!("port {port:#x}: accepted"),
        }
    }

    fn continues(&mut self, port: u16) {
        match self.out(port) {
            Ok(Flow::Continue) => {}
            Ok(Flow::Done(d)) => panic!("port {port:#x}: the loop stopped with {:?}", d.0),
            Err(e) => panic!("port {port:#x}: {e}"),
        }
    }

    /// Writes an exception frame (error code, rip, cs, rflags, rsp, ss) at
    /// `gpa` and points rsp at it, as an exception stub leaves it.
    fn exception_frame(&mut self, gpa: u64, words: [u64; 6]) -> kvm_regs {
        for (i, w) in words.into_iter().enumerate() {
            self.st.mem.write_u64(gpa + 8 * i as u64, w).expect("inside guest memory");
        }
        kvm_regs { rsp: direct_map(gpa), rax: 0x1111, ..Default::default() }
    }
}

fn syscall_regs(rip: u64) -> kvm_regs {
    kvm_regs { rip, rax: 39, rdi: 1, rcx: 0x40_1002, r11: 0x246, rsp: 0x7ffc_0000, ..Default::default() }
}

#[test]
fn a_syscall_from_the_entry_stub_continues_after_the_programs_syscall() {
    let Some(mut r) = rig() else { return };
    // CPL3 where `syscall` keeps privilege, CPL0 on bare metal: alike.
    for cpl in [3, 0] {
        r.at(cpl, syscall_regs(SYSCALL_ENTRY + 2));
        let (trap, ctx) = r.done(PORT_SYSCALL as u16);
        assert_eq!(trap, Trap::Syscall);
        assert_eq!((ctx.rip, ctx.rflags), (0x40_1002, 0x246), "rcx and r11 hold where and how");
        assert_eq!((ctx.rax, ctx.rdi, ctx.rsp), (39, 1, 0x7ffc_0000));
    }
    assert_eq!(r.st.stats.exits, 2);
}

#[test]
fn the_syscall_port_from_program_code_is_forbidden() {
    let Some(mut r) = rig() else { return };
    r.at(3, syscall_regs(0x40_1234));
    let (trap, ctx) = r.done(PORT_SYSCALL as u16);
    assert_eq!(trap, Trap::Forbidden { port: PORT_SYSCALL as u16 });
    assert_eq!(ctx.rip, 0x40_1234, "the program's own registers, for its SIGSEGV");
    r.at(0, syscall_regs(0x40_1234));
    assert!(r.error(PORT_SYSCALL as u16).contains("syscall port written from rip 0x401234"));
}

#[test]
fn an_exception_frame_on_the_kernel_stack_is_the_programs_fault() {
    let Some(mut r) = rig() else { return };
    let frame = KERNEL_STACK_TOP_GPA - EXCEPTION_FRAME_SIZE;
    let regs = r.exception_frame(frame, [6, 0x40_2000, USER_CS_SEL, 0x10246, 0x7ffc_1000, USER_SS_SEL]);
    r.at(0, regs);
    r.vcpu.sregs_mut().cr2 = 0xdead_0000;
    let (trap, ctx) = r.done(PORT_EXCEPTION_BASE as u16 + 14);
    assert_eq!(trap, Trap::Exception { vector: 14, error: 6, cr2: 0xdead_0000 });
    assert_eq!((ctx.rip, ctx.rsp, ctx.rflags), (0x40_2000, 0x7ffc_1000, 0x10246));
    assert_eq!(ctx.rax, 0x1111, "the program's other registers are kept");
    // The last vector has a port of its own too.
    let regs = r.exception_frame(frame, [0, 0x40_2000, USER_CS_SEL, 0x246, 0x7ffc_1000, USER_SS_SEL]);
    r.at(0, regs);
    let last = PORT_EXCEPTION_BASE as u16 + EXCEPTION_VECTORS as u16 - 1;
    assert!(matches!(r.done(last).0, Trap::Exception { vector: 31, .. }));
}

#[test]
fn an_exception_report_that_the_stubs_cannot_have_made_stops_the_guest() {
    let Some(mut r) = rig() else { return };
    let frame = KERNEL_STACK_TOP_GPA - EXCEPTION_FRAME_SIZE;
    let words = [0, 0x40_2000, USER_CS_SEL, 0x246, 0x7ffc_1000, USER_SS_SEL];
    let port = PORT_EXCEPTION_BASE as u16 + 13;

    // From user mode (the program cannot reach these ports).
    let regs = r.exception_frame(frame, words);
    r.at(3, regs);
    assert!(r.error(port).contains("outside the kernel stack"));
    // With rsp beyond either end of the kernel stack.
    for gpa in [KERNEL_STACK_TOP_GPA - EXCEPTION_FRAME_SIZE + 8, KERNEL_STACK_TOP_GPA - 0x8000 - 8] {
        let regs = r.exception_frame(gpa, words);
        r.at(0, regs);
        assert!(r.error(port).contains("outside the kernel stack"), "frame at {gpa:#x}");
    }
    r.at(0, kvm_regs { rsp: 0x7ffc_0000, ..Default::default() });
    assert!(r.error(port).contains("outside the kernel stack"), "a user stack pointer");
    // A fault of the guest kernel itself (the frame's cs is kernel code).
    let regs = r.exception_frame(frame, [0, 0xffff_ffff_8000_1000, KERNEL_CS as u64, 0x2, 0, 0]);
    r.at(0, regs);
    assert!(r.error(port).contains("in the guest kernel at rip 0xffffffff80001000"));
}

#[test]
fn kernel_operations_report_only_from_their_routine() {
    let Some(mut r) = rig() else { return };
    let program = kvm_regs { rip: 0x40_3000, rsp: 0x7ffc_2000, rflags: 0x202, rax: 7, ..Default::default() };
    r.st.parked = Some(program);
    for (cpl, rip) in [(0, KOPS_ENTRY - 1), (0, KOPS_ENTRY + KOPS_ROUTINE_MAX), (3, KOPS_ENTRY + 8)] {
        r.at(cpl, kvm_regs { rip, ..Default::default() });
        assert!(r.error(PORT_KOPS_DONE as u16).contains("unexpected place"), "cpl {cpl} rip {rip:#x}");
    }
    assert!(r.st.parked.is_some(), "a refused report does not release the program");

    // From the routine, with nothing left queued: back to the program
    // through an iret frame (the vCPU is at CPL0).
    r.at(0, kvm_regs { rip: KOPS_ENTRY + 8, ..Default::default() });
    r.continues(PORT_KOPS_DONE as u16);
    assert!(r.st.parked.is_none());
    let regs = *r.vcpu.regs();
    assert_eq!((regs.rip, regs.rsp), (USER_RETURN, direct_map(IRET_FRAME_GPA)));
    assert_eq!(regs.rax, 7);
    let frame: Vec<u64> = (0..5).map(|i| r.st.mem.read_u64(IRET_FRAME_GPA + 8 * i).expect("frame")).collect();
    assert_eq!(frame, [0x40_3000, USER_CS_SEL, 0x202, 0x7ffc_2000, USER_SS_SEL]);

    // A second report has no program to return to.
    r.at(0, kvm_regs { rip: KOPS_ENTRY + 8, ..Default::default() });
    assert!(r.error(PORT_KOPS_DONE as u16).contains("no program to return to"));
}

#[test]
fn a_return_at_cpl3_sets_the_registers_directly() {
    let Some(mut r) = rig() else { return };
    r.at(3, kvm_regs::default());
    let ctx = kvm_regs { rip: 0x40_4000, rsp: 0x7ffc_3000, rflags: 0x202, rbx: 5, ..Default::default() };
    r.st.return_to_user(&mut r.vcpu, ctx);
    let regs = *r.vcpu.regs();
    assert_eq!((regs.rip, regs.rsp, regs.rflags, regs.rbx), (0x40_4000, 0x7ffc_3000, 0x202, 5));
}

#[test]
fn the_boot_report_is_timed_once_and_continues() {
    let Some(mut r) = rig() else { return };
    r.at(0, kvm_regs { rip: BOOT + 2, ..Default::default() });
    r.continues(PORT_BOOT as u16);
    let first = r.st.stats.first_exit_ns;
    assert!(first.is_some());
    r.continues(PORT_BOOT as u16);
    assert_eq!(r.st.stats.first_exit_ns, first);
}

#[test]
fn other_ports_are_the_programs_fault_at_cpl3_and_the_kernels_at_cpl0() {
    let Some(mut r) = rig() else { return };
    for port in [0x80, PORT_EXCEPTION_BASE as u16 + EXCEPTION_VECTORS as u16, 0x3f8, 0xffff] {
        r.at(3, kvm_regs { rip: 0x40_5000, ..Default::default() });
        assert_eq!(r.done(port).0, Trap::Forbidden { port });
        r.at(0, kvm_regs { rip: 0xffff_ffff_8000_2000, ..Default::default() });
        assert!(r.error(port).contains("unknown port"), "port {port:#x}");
    }
}

#[test]
fn a_kick_stops_the_program_only_between_its_instructions() {
    let Some(mut r) = rig() else { return };
    let mut exits = Exits { p: &mut r.st, mm: &mut r.mm };
    r.vcpu.set_immediate_exit(true);
    r.vcpu.sregs_mut().cs = segment(USER_CS, true);
    r.vcpu.regs_mut().rip = 0x40_6000;
    match exits.interrupted(&mut r.vcpu) {
        Ok(Flow::Done((Trap::Interrupted, regs))) => assert_eq!(regs.rip, 0x40_6000),
        _ => panic!("a kick at CPL3 is an interruption of the program"),
    }
    // SAFETY: the pointer is to this live vCPU's kvm_run.
    assert_eq!(unsafe { *r.vcpu.immediate_exit_ptr() }, 0, "the kick is consumed");
    r.vcpu.sregs_mut().cs = segment(KERNEL_CS, true);
    assert!(
        matches!(exits.interrupted(&mut r.vcpu), Ok(Flow::Continue)),
        "at CPL0 the guest kernel's exit comes first"
    );
}

#[test]
fn with_the_ring_the_ring_stubs_exits_are_system_calls() {
    let Some(mut r) = rig_with(SyscallPath::Ring) else { return };
    // The stub's own exit (CPL0, service parked, a call it does not post).
    for cpl in [3, 0] {
        r.at(cpl, syscall_regs(RING_ENTRY + 0xa0 + 2));
        let (trap, ctx) = r.done(PORT_SYSCALL as u16);
        assert_eq!(trap, Trap::Syscall);
        assert_eq!((ctx.rip, ctx.rflags, ctx.rax), (0x40_1002, 0x246, 39));
    }
    // Its wait: the platform's run asks the ring what became of the call.
    r.at(3, syscall_regs(RING_ENTRY + 0x80 + 2));
    let (trap, ctx) = r.done(PORT_RING_WAIT as u16);
    assert_eq!(trap, Trap::RingReturn);
    assert_eq!((ctx.rip, ctx.rflags), (0x40_1002, 0x246));
    // The wait port from anywhere else is the program's fault.
    r.at(3, syscall_regs(0x40_1234));
    assert_eq!(r.done(PORT_RING_WAIT as u16).0, Trap::Forbidden { port: PORT_RING_WAIT as u16 });
    r.at(0, syscall_regs(RING_ENTRY + 0x80 + 2));
    assert!(r.error(PORT_RING_WAIT as u16).contains("waited at CPL0"));
}

#[test]
fn without_the_ring_its_ports_and_stub_exits_are_refused() {
    let Some(mut r) = rig() else { return };
    r.at(3, syscall_regs(RING_ENTRY + 0x80 + 2));
    assert_eq!(r.done(PORT_RING_WAIT as u16).0, Trap::Forbidden { port: PORT_RING_WAIT as u16 });
    r.at(3, syscall_regs(RING_ENTRY + 0xa0 + 2));
    assert_eq!(r.done(PORT_SYSCALL as u16).0, Trap::Forbidden { port: PORT_SYSCALL as u16 });
}

#[test]
fn a_kick_waits_for_the_ring_stub_to_finish() {
    let Some(mut r) = rig_with(SyscallPath::Ring) else { return };
    let mut exits = Exits { p: &mut r.st, mm: &mut r.mm };
    r.vcpu.sregs_mut().cs = segment(USER_CS, true);
    r.vcpu.regs_mut().rip = RING_ENTRY + 0x40;
    assert!(
        matches!(exits.interrupted(&mut r.vcpu), Ok(Flow::Continue)),
        "the stub runs to its return or its exit before the program is interrupted"
    );
    r.vcpu.regs_mut().rip = 0x40_6000;
    assert!(matches!(exits.interrupted(&mut r.vcpu), Ok(Flow::Done((Trap::Interrupted, _)))));
}
