//! The platform: how the program is entered and left.
//!
//! The kernel (`crate::kernel`) sees traps — a system call, an exception, an
//! interruption — with the program's registers, and says where the program
//! continues. Everything about how that happens on x86-64 KVM lives here:
//! the guest kernel's ports, iret frames on its stack, the CPL checks, and
//! the kernel-operations rounds that rewrite page-table entries from inside
//! the guest. Today every trap is one VM exit (`port_exit`); an exit-less
//! call path would be another implementation of the same interface.
//!
//! There are three ways back to the program:
//! - the vCPU is still at CPL3 (hosts where `syscall` keeps privilege): its
//!   registers are set directly — one exit per call;
//! - the vCPU is at CPL0 (bare-metal `syscall`, or an exception stub): an
//!   iret frame is written and rip pointed at the guest kernel's `iretq`;
//! - page-table entries were narrowed: the kernel-operations routine runs
//!   first (see `kernel::mm`), then the program returns as above.

mod port_exit;
mod ring;
mod slices;

pub use port_exit::{Platform, SetupError};
pub use ring::{RingError, RingStats, SyscallPath};
pub use slices::SliceError;

use kvm_bindings::kvm_regs;

/// The program's general registers, as Linux's `pt_regs` after a trap: for a
/// system call, `rip` and `rflags` are where and how the program continues
/// (the `syscall` instruction left them in rcx and r11).
pub type UserRegs = kvm_regs;

/// Why the program stopped running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trap {
    /// A system call: number in rax, arguments in rdi, rsi, rdx, r10, r8, r9.
    Syscall,
    /// A CPU exception in program code.
    Exception { vector: u8, error: u64, cr2: u64 },
    /// An instruction Linux answers with SIGSEGV (port I/O from the program).
    Forbidden { port: u16 },
    /// The vCPU was kicked (a host signal) while program code ran.
    Interrupted,
    /// A system call posted on the ring, the vCPU still running: the
    /// kernel handles it and answers with `Platform::ring_complete` or
    /// `ring_refuse`, never `resume`.
    RingCall,
    /// A call taken from the ring finishes through an exit: the program
    /// continues with these registers (through `resume`).
    RingReturn,
}

/// Why the platform could not run the program.
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    #[error(transparent)]
    Vcpu(#[from] crate::vstate::vcpu::VcpuError),
    #[error(transparent)]
    Regs(#[from] crate::arch::x86_64::regs::RegsError),
    #[error("the guest kernel misbehaved: {0}")]
    GuestKernel(String),
    #[error("cannot load the program's FPU state: {0}")]
    Fpu(kvm_ioctls::Error),
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error(transparent)]
    Ring(#[from] RingError),
}

/// Counters of the platform, printed with --stats.
#[derive(Debug, Default, Clone, Copy)]
pub struct PlatformStats {
    pub exits: u64,
    pub kops_rounds: u64,
    /// Nanoseconds from the VMM's launch to the guest's first instruction.
    pub first_exit_ns: Option<u64>,
    /// The exit-less call path's counters.
    pub ring: RingStats,
}

/// The syscall instruction's length: a restarted call goes back this far.
pub const SYSCALL_INSN_LEN: u64 = 2;

/// The arguments of a system call in `r`.
#[inline]
pub fn syscall_args(r: &UserRegs) -> [u64; 6] {
    [r.rdi, r.rsi, r.rdx, r.r10, r.r8, r.r9]
}
