//! The floor of the syscall path: a guest that does nothing but exit to the
//! VMM in a loop, at CPL3 (where programs run) or CPL0 (the guest kernel).
//! `dmvx-vmm --bench-exit-loop N [--bench-cpl 0|3]` prints ns per exit.

use std::time::Instant;

use crate::arch::x86_64::gdt::write_tables;
use crate::arch::x86_64::layout::{direct_map, DIRECT_MAP_BASE, FRAMES_START, KERNEL_STACK_TOP_GPA, MIN_MEMORY};
use crate::arch::x86_64::paging::{pte, PageTables};
use crate::arch::x86_64::regs::{self, USER_CS_SEL, USER_SS_SEL};
use crate::memory::FrameAllocator;

use crate::vstate::vcpu::{self, ExitHandler, Flow, Vcpu, VcpuError};
use crate::vstate::vm::{Vm, VmError};

const CODE_VA: u64 = 0x40_0000;
const PORT: u8 = dmvx_abi::PORT_SYSCALL;

struct Counter {
    left: u64,
}

impl ExitHandler for Counter {
    type Done = ();
    fn io_out(&mut self, _vcpu: &mut Vcpu, _port: u16, _data: &[u8]) -> Result<Flow<()>, VcpuError> {
        self.left -= 1;
        Ok(if self.left == 0 { Flow::Done(()) } else { Flow::Continue })
    }
}

/// Why the exit-loop benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error(transparent)]
    Regs(#[from] regs::RegsError),
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    #[error("guest memory of {0} MiB is too small for the benchmark")]
    MemoryTooSmall(u64),
}

/// Runs `n` exits at privilege `cpl` (0 or 3); returns nanoseconds per exit.
pub fn exit_loop(n: u64, cpl: u8) -> Result<f64, BenchError> {
    let vm = Vm::new(MIN_MEMORY, MIN_MEMORY)?;
    let mem = vm.mem.clone();
    let oom = || BenchError::MemoryTooSmall(MIN_MEMORY >> 20);
    let mut frames = FrameAllocator::new(FRAMES_START, mem.size());
    let pt = PageTables::new(&mem, &mut frames).ok_or_else(oom)?;
    pt.map_huge(
        &mem,
        &mut frames,
        DIRECT_MAP_BASE,
        0,
        mem.size(),
        pte::PRESENT | pte::WRITABLE | pte::ACCESSED | pte::DIRTY | pte::NO_EXECUTE,
    )
    .ok_or_else(oom)?;
    // Page 0: `iretq` (kernel); page 1: `1: out PORT, al; jmp 1b`.
    let code = frames.alloc(&mem).ok_or_else(oom)?;
    let user = frames.alloc(&mem).ok_or_else(oom)?;
    mem.write(code, &[0x48, 0xcf, 0xe6, PORT, 0xeb, 0xfc]).ok_or_else(oom)?;
    mem.write(user, &[0xe6, PORT, 0xeb, 0xfc]).ok_or_else(oom)?;
    let flags = pte::PRESENT | pte::ACCESSED | pte::USER;
    pt.map_new(&mem, &mut frames, CODE_VA, code, flags).ok_or_else(oom)?;
    pt.map_new(&mem, &mut frames, CODE_VA + 0x1000, user, flags).ok_or_else(oom)?;
    write_tables(&mem, &[CODE_VA; dmvx_abi::EXCEPTION_VECTORS], &[PORT]).ok_or_else(oom)?;
    let frame = KERNEL_STACK_TOP_GPA - 40;
    for (i, v) in [CODE_VA + 0x1000, USER_CS_SEL, 0x202, 0, USER_SS_SEL].into_iter().enumerate() {
        mem.write_u64(frame + 8 * i as u64, v).ok_or_else(oom)?;
    }
    let mut vcpu = Vcpu::new(vm.fd.create_vcpu(0).map_err(VmError::CreateVcpu)?);
    let xcr0 = regs::setup_cpuid(&vm.kvm, vcpu.fd())?;
    regs::setup_long_mode(vcpu.fd(), pt.root(), 0, xcr0)?;
    let rip = if cpl == 3 { CODE_VA } else { CODE_VA + 2 };
    regs::setup_regs(vcpu.fd(), rip, direct_map(frame))?;
    // Warm up (first touches, shadow page tables), then time.
    vcpu::run(&mut vcpu, &mut Counter { left: 1000 })?;
    let start = Instant::now();
    vcpu::run(&mut vcpu, &mut Counter { left: n })?;
    Ok(start.elapsed().as_nanos() as f64 / n as f64)
}
