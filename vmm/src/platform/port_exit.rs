//! The platform of one VM exit per trap: the guest kernel's stubs write a
//! port, KVM exits, and the registers travel through the `kvm_run` sync area.

use dmvx_abi::{
    KernelHeader, KopsOp, EXCEPTION_FRAME_SIZE, EXCEPTION_VECTORS, PORT_BOOT, PORT_EXCEPTION_BASE, PORT_KOPS_DONE,
    PORT_RING_WAIT, PORT_SYSCALL,
};
use kvm_bindings::{kvm_regs, kvm_xsave};

use super::ring::{Event, Ring, SyscallPath, Waited};
use super::{PlatformError, PlatformStats, Trap, UserRegs};
use crate::arch::x86_64::gdt::write_tables;
use crate::arch::x86_64::layout::{
    direct_map, DIRECT_MAP_BASE, FRAMES_START, KERNEL_STACK_TOP_GPA, KOPS_MAX_OPS, KOPS_OPS_GPA,
};
use crate::arch::x86_64::paging::{pte, PageTables};
use crate::arch::x86_64::regs::{self, cpl, enter_kernel_segments, rflags, USER_CS_SEL, USER_SS_SEL};
use crate::arch::x86_64::vector;
use crate::guest_kernel::GuestKernel;
use crate::kernel::mm::Mm;
use crate::memory::{FrameAllocator, GuestMemory};
use crate::vstate::vcpu::{self, ExitHandler, Flow, Vcpu, VcpuError};
use crate::vstate::vm::{Vm, VmError};

/// The kernel-operations routine's report must come from within this many
/// bytes of its entry (its exact length is not part of the ABI).
const KOPS_ROUTINE_MAX: u64 = 256;

/// Where the iret frame of a return to user mode goes.
const IRET_FRAME_GPA: u64 = KERNEL_STACK_TOP_GPA - 5 * 8;

/// Errors of building the VM.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error(transparent)]
    Regs(#[from] regs::RegsError),
    #[error("guest memory of {0} MiB is too small for the page tables and guest kernel (raise --memory)")]
    MemoryTooSmall(u64),
}

/// What the kernel needs to build the address space over the VM's memory.
pub struct Memory {
    pub mem: GuestMemory,
    pub frames: FrameAllocator,
    pub pt: PageTables,
}

/// One VM and its vCPU, running one program.
pub struct Platform {
    vcpu: Vcpu,
    st: State,
    /// The exit-less call path, while it is on.
    ring: Option<Ring>,
    /// The calls the ring serves (kept for a forked VMM's new ring).
    ring_calls: Vec<u64>,
}

/// Everything but the vCPU, so the exit handler can hold it while the exit
/// loop holds the vCPU.
struct State {
    /// Keeps the VM (and with it the memory slot) alive as long as the vCPU.
    _vm: Vm,
    header: KernelHeader<u64>,
    mem: GuestMemory,
    /// The program's registers while the kernel-operations routine runs.
    parked: Option<kvm_regs>,
    stats: PlatformStats,
    launched_ns: Option<u64>,
    xcr0: u64,
    /// Time slices, once the program has threads.
    slices: Option<super::slices::SliceTimer>,
    /// A slice ended since the kernel last looked.
    slice_ended: bool,
    /// How system calls reach the VMM (LSTAR's stub).
    path: SyscallPath,
    /// Guest physical address of the ring page.
    ring_gpa: u64,
}

impl Platform {
    /// A VM with `memory` bytes, the guest kernel installed, the direct map
    /// and descriptor tables in place, and a vCPU in long mode.
    pub fn new(
        memory: u64,
        shared: u64,
        kernel: &GuestKernel,
        launched_ns: Option<u64>,
        path: SyscallPath,
    ) -> Result<(Self, Memory), SetupError> {
        use crate::arch::x86_64::layout::MIN_MEMORY;
        let vm = Vm::with_shared(memory, MIN_MEMORY, shared)?;
        let mem = vm.mem.clone();
        let small = || SetupError::MemoryTooSmall(memory >> 20);
        let mut frames = FrameAllocator::new(FRAMES_START, mem.size());
        let pt = PageTables::new(&mem, &mut frames).ok_or_else(small)?;
        kernel.install(&mem, &mut frames, &pt, path == SyscallPath::Ring).ok_or_else(small)?;
        pt.map_huge(
            &mem,
            &mut frames,
            DIRECT_MAP_BASE,
            0,
            mem.size(),
            pte::PRESENT | pte::WRITABLE | pte::ACCESSED | pte::DIRTY | pte::NO_EXECUTE,
        )
        .ok_or_else(small)?;
        let header = kernel.header;
        // CPL3 code may write the syscall port (the stub runs there where
        // `syscall` keeps privilege), and the ring's wait port with the ring.
        let ports: &[u8] = if path == SyscallPath::Ring { &[PORT_SYSCALL, PORT_RING_WAIT] } else { &[PORT_SYSCALL] };
        write_tables(&mem, &header.exception_stubs, ports).ok_or_else(small)?;
        let mut vcpu = Vcpu::new(vm.fd.create_vcpu(0).map_err(VmError::CreateVcpu)?);
        vcpu.set_trap_tsc(true);
        let xcr0 = regs::setup_cpuid(&vm.kvm, vcpu.fd())?;
        let lstar = if path == SyscallPath::Ring { header.ring_entry } else { header.syscall_entry };
        regs::setup_long_mode(vcpu.fd(), pt.root(), lstar, xcr0)?;
        let st = State {
            _vm: vm,
            header,
            mem: mem.clone(),
            parked: None,
            stats: PlatformStats::default(),
            launched_ns,
            xcr0,
            slices: None,
            slice_ended: false,
            path,
            ring_gpa: kernel.ring_page_gpa().ok_or_else(small)?,
        };
        let platform = Platform { vcpu, st, ring: None, ring_calls: Vec::new() };
        Ok((platform, Memory { mem, frames, pt }))
    }

    /// In a forked VMM: a new VM and vCPU over the inherited memory (the
    /// parent's cannot be used from another process), with the program's
    /// page tables, FS and GS bases and FPU state. The next `resume` enters
    /// the program.
    pub fn rebuild(&mut self, mm: &Mm, fs: u64, gs: u64, fpu: &kvm_xsave) -> Result<(), PlatformError> {
        let vm = self.st._vm.for_child().map_err(SetupError::from)?;
        let mut vcpu = Vcpu::new(vm.fd.create_vcpu(0).map_err(|e| SetupError::Vm(VmError::CreateVcpu(e)))?);
        vcpu.set_trap_tsc(true);
        let xcr0 = regs::setup_cpuid(&vm.kvm, vcpu.fd())?;
        regs::setup_long_mode(vcpu.fd(), mm.page_tables().root(), self.st.lstar(), xcr0)?;
        regs::set_segment_bases(vcpu.fd(), fs, gs)?;
        // SAFETY: as in `set_fpu`: the state came from a vCPU of this host.
        unsafe { vcpu.fd().set_xsave(fpu) }.map_err(PlatformError::Fpu)?;
        // The parent's vCPU and VM go (this process's copies of them), and
        // its slice timer was never this process's.
        if let Some(t) = self.st.slices.take() {
            t.forget();
        }
        // Its ring's runner was the parent's thread, which a fork leaves behind.
        let had_ring = self.ring.take().map(Ring::forget).is_some();
        self.vcpu = vcpu;
        self.st._vm = vm;
        self.st.xcr0 = xcr0;
        self.st.parked = None;
        self.st.stats = PlatformStats::default();
        if had_ring {
            let calls = std::mem::take(&mut self.ring_calls);
            self.enable_ring(&calls)?;
        }
        Ok(())
    }

    /// Turns the exit-less call path on for `calls`, if it was chosen
    /// (`SyscallPath::Ring`); from the VMM thread, after the jail.
    pub fn enable_ring(&mut self, calls: &[u64]) -> Result<(), PlatformError> {
        if self.st.path != SyscallPath::Ring || self.ring.is_some() {
            return Ok(());
        }
        use std::os::fd::AsRawFd;
        let gpa = self.st.ring_gpa;
        let trap_tsc = self.vcpu.traps_tsc();
        let kick = self.vcpu.immediate_exit_ptr();
        let fd = self.vcpu.fd().as_raw_fd();
        self.ring = Some(Ring::start(&self.st.mem, gpa, (fd, kick, trap_tsc), calls)?);
        self.ring_calls = calls.to_vec();
        Ok(())
    }

    /// Turns the ring off for good (the program has threads now, which the
    /// ring does not serve yet): the VMM thread enters the guest itself, and
    /// the stub, finding the service parked, exits.
    pub fn disable_ring(&mut self) {
        if let Some(r) = self.ring.take() {
            drop(r);
            crate::kernel::signal::host::set_runner_thread(0);
            // The kicks and the link's wake-ups go to this thread again.
            crate::kernel::signal::host::set_vcpu_thread_here();
            self.ring_calls.clear();
        }
    }

    /// The kernel does not serve the call it was handed (`Trap::RingCall`):
    /// the program's stub takes the exit with it.
    pub fn ring_refuse(&mut self) {
        if let Some(r) = self.ring.as_mut() {
            r.refuse();
        }
    }

    /// The kernel handled the call of a `Trap::RingCall`; the program
    /// continues with `ctx`. `plain`: nothing but rax changed and nothing
    /// is left to do on the way back, so the stub returns by itself.
    pub fn ring_complete(&mut self, mm: &Mm, ctx: UserRegs, plain: bool) {
        if let Some(r) = self.ring.as_mut() {
            r.complete(ctx, plain && !mm.has_kops());
        }
    }

    /// The run ends while the guest may still run (a `Trap::RingCall`
    /// ended it): stops the vCPU.
    pub fn ring_stop(&mut self) {
        if let Some(r) = self.ring.as_mut() {
            r.stop_flight();
        }
    }

    /// Starts the program with registers `ctx`: the vCPU enters through
    /// the boot stub, which irets into it.
    pub fn start(&mut self, ctx: &UserRegs) -> Result<(), PlatformError> {
        self.st.write_iret_frame(ctx.rip, rflags::sanitize_user(ctx.rflags), ctx.rsp)?;
        let mut r = *ctx;
        r.rip = self.st.header.boot_entry;
        r.rsp = direct_map(IRET_FRAME_GPA);
        r.rflags = rflags::FIXED;
        *self.vcpu.regs_mut() = r;
        Ok(())
    }

    /// Runs the program until it traps; returns the trap and its registers.
    pub fn run(&mut self, mm: &mut Mm) -> Result<(Trap, UserRegs), PlatformError> {
        let mut exits = Exits { p: &mut self.st, mm };
        let Some(ring) = self.ring.as_mut() else {
            return vcpu::run(&mut self.vcpu, &mut exits).map_err(PlatformError::from);
        };
        // Direct once the runner is out of the guest (a call it served may
        // have made the choice while the vCPU still ran).
        let (trap, ctx) = if ring.direct() && !ring.in_flight() {
            vcpu::run(&mut self.vcpu, &mut exits)?
        } else {
            vcpu::run_via(&mut self.vcpu, &mut exits, &mut |_| ring.enter(|r| (Trap::RingCall, r)))?
        };
        let (trap, ctx) = match trap {
            // The stub's exit to PORT_RING_WAIT (see `Exits::io_out`).
            Trap::RingReturn => match ring.on_wait(ctx) {
                Waited::Finished(c) => {
                    ring.note(Event::Late);
                    return Ok((Trap::RingReturn, c));
                }
                Waited::Call(c) => (Trap::Syscall, c),
            },
            _ => (trap, ctx),
        };
        let ev = match trap {
            Trap::RingCall => Event::Served,
            Trap::Syscall if ring.serves(ctx.rax) => {
                // A call the ring serves came by the exit (the service was
                // parked): the program is making such calls again.
                ring.wake();
                Event::Servable
            }
            _ => Event::Other,
        };
        ring.note(ev);
        Ok((trap, ctx))
    }

    /// Where the program continues after a trap.
    pub fn resume(&mut self, mm: &mut Mm, mut ctx: UserRegs) {
        ctx.rflags = rflags::sanitize_user(ctx.rflags);
        if mm.has_kops() {
            self.st.parked = Some(ctx);
            self.st.enter_kops(&mut self.vcpu, mm);
            return;
        }
        self.st.return_to_user(&mut self.vcpu, ctx);
    }

    /// Loads new FS and GS bases for the program.
    pub fn set_segment_bases(&mut self, fs: u64, gs: u64) {
        let s = self.vcpu.sregs_mut();
        s.fs.base = fs;
        s.gs.base = gs;
    }

    /// The program's FPU/SSE/AVX state.
    pub fn fpu(&self) -> Result<kvm_xsave, PlatformError> {
        self.vcpu.fd().get_xsave().map_err(PlatformError::Fpu)
    }

    /// Loads the program's FPU state (KVM validates it).
    pub fn set_fpu(&self, x: &kvm_xsave) -> Result<(), PlatformError> {
        // SAFETY: XCR0 excludes AMX, so the whole state fits the 4096-byte
        // kvm_xsave; KVM validates the header and refuses a malformed image.
        unsafe { self.vcpu.fd().set_xsave(x) }.map_err(PlatformError::Fpu)
    }

    /// Starts time slices of `period` (the program has threads); a trap
    /// `Interrupted` then comes at least once a slice.
    pub fn start_slices(&mut self, period: std::time::Duration) -> Result<(), super::SliceError> {
        if self.st.slices.is_none() {
            use std::os::fd::AsRawFd;
            self.st.slices = Some(super::slices::SliceTimer::start(self.vcpu.fd().as_raw_fd(), period)?);
        }
        Ok(())
    }

    /// Whether a time slice ended since the last look.
    pub fn slice_expired(&mut self) -> bool {
        let drained = self.st.slices.as_ref().is_some_and(|t| t.take_expired());
        std::mem::take(&mut self.st.slice_ended) || drained
    }

    /// The XCR0 the vCPU runs with (the features of its FPU state).
    pub fn xcr0(&self) -> u64 {
        self.st.xcr0
    }

    /// The vCPU's `kvm_run.immediate_exit`, for a kick from a signal handler.
    pub fn kick_target(&mut self) -> *mut u8 {
        self.vcpu.immediate_exit_ptr()
    }

    /// Counters.
    pub fn stats(&self) -> PlatformStats {
        let mut s = self.st.stats;
        if let Some(r) = &self.ring {
            s.ring = r.stats;
        }
        s
    }
}

impl State {
    /// LSTAR: the stub of the chosen call path.
    fn lstar(&self) -> u64 {
        if self.path == SyscallPath::Ring {
            self.header.ring_entry
        } else {
            self.header.syscall_entry
        }
    }

    /// Whether `rip` is inside the ring stub, which must run to its end
    /// (its return or its exit) before the program may be interrupted.
    fn in_ring_stub(&self, rip: u64) -> bool {
        self.path == SyscallPath::Ring && (self.header.ring_entry..self.header.ring_exit + 2).contains(&rip)
    }

    fn write_iret_frame(&self, rip: u64, flags: u64, rsp: u64) -> Result<(), PlatformError> {
        for (i, v) in [rip, USER_CS_SEL, flags, rsp, USER_SS_SEL].into_iter().enumerate() {
            self.mem
                .write_u64(IRET_FRAME_GPA + 8 * i as u64, v)
                .ok_or_else(|| PlatformError::GuestKernel("the kernel stack is outside guest memory".into()))?;
        }
        Ok(())
    }

    fn return_to_user(&mut self, vcpu: &mut Vcpu, mut ctx: kvm_regs) {
        if cpl(vcpu.sregs()) == 3 {
            *vcpu.regs_mut() = ctx;
            return;
        }
        // The kernel stack is inside guest memory by construction.
        let _ = self.write_iret_frame(ctx.rip, ctx.rflags, ctx.rsp);
        ctx.rip = self.header.user_return;
        ctx.rsp = direct_map(IRET_FRAME_GPA);
        ctx.rflags = rflags::FIXED;
        *vcpu.regs_mut() = ctx;
    }

    /// Runs one batch of queued page-table rewrites in the guest kernel.
    fn enter_kops(&mut self, vcpu: &mut Vcpu, mm: &mut Mm) {
        let ops: Vec<KopsOp> = mm.take_kops(KOPS_MAX_OPS);
        for (i, op) in ops.iter().enumerate() {
            let at = KOPS_OPS_GPA + (i * dmvx_abi::KOPS_OP_SIZE) as u64;
            let _ = self.mem.write_u64(at, op.dst);
            let _ = self.mem.write_u64(at + 8, op.src);
            let _ = self.mem.write_u64(at + 16, op.qwords);
        }
        if cpl(vcpu.sregs()) != 0 {
            enter_kernel_segments(vcpu.sregs_mut());
        }
        *vcpu.regs_mut() = kvm_regs {
            rbx: direct_map(KOPS_OPS_GPA),
            rbp: ops.len() as u64,
            rsp: direct_map(KERNEL_STACK_TOP_GPA),
            rip: self.header.kops_entry,
            rflags: rflags::FIXED,
            ..Default::default()
        };
        self.stats.kops_rounds += 1;
    }
}

/// The exit handler of one `Platform::run`.
struct Exits<'a> {
    p: &'a mut State,
    mm: &'a mut Mm,
}

type Out = Flow<(Trap, UserRegs)>;

impl Exits<'_> {
    fn on_syscall(&mut self, vcpu: &mut Vcpu) -> Result<Out, VcpuError> {
        let r = *vcpu.regs();
        let h = &self.p.header;
        if r.rip != h.syscall_entry + 2 && !(self.p.path == SyscallPath::Ring && r.rip == h.ring_exit + 2) {
            // An `out` to the syscall port from anywhere but the entry stub:
            // program code poking the port, which Linux would fault.
            if cpl(vcpu.sregs()) == 3 {
                return Ok(Flow::Done((Trap::Forbidden { port: PORT_SYSCALL as u16 }, r)));
            }
            return Err(VcpuError::GuestKernel(format!("syscall port written from rip {:#x}", r.rip)));
        }
        let mut ctx = r;
        ctx.rip = r.rcx;
        ctx.rflags = r.r11;
        Ok(Flow::Done((Trap::Syscall, ctx)))
    }

    /// The ring stub's exit: the call did not complete on the ring. The
    /// platform's `run` finds out from the ring what became of it.
    fn on_ring_wait(&mut self, vcpu: &mut Vcpu) -> Result<Out, VcpuError> {
        let r = *vcpu.regs();
        if self.p.path != SyscallPath::Ring || r.rip != self.p.header.ring_wait + 2 {
            return self.bad_port(vcpu, PORT_RING_WAIT as u16);
        }
        if cpl(vcpu.sregs()) != 3 {
            return Err(VcpuError::GuestKernel("the ring stub waited at CPL0".into()));
        }
        let mut ctx = r;
        ctx.rip = r.rcx;
        ctx.rflags = r.r11;
        Ok(Flow::Done((Trap::RingReturn, ctx)))
    }

    fn on_exception(&mut self, vcpu: &mut Vcpu, vec: u8) -> Result<Out, VcpuError> {
        let r = *vcpu.regs();
        let cr2 = vcpu.sregs().cr2;
        let frame_gpa = r.rsp.wrapping_sub(DIRECT_MAP_BASE);
        let stack_lo = KERNEL_STACK_TOP_GPA - 0x8000;
        if cpl(vcpu.sregs()) != 0 || !(stack_lo..=KERNEL_STACK_TOP_GPA - EXCEPTION_FRAME_SIZE).contains(&frame_gpa) {
            return Err(VcpuError::GuestKernel(format!(
                "{} reported with rsp {:#x} outside the kernel stack",
                vector::name(vec),
                r.rsp
            )));
        }
        let word = |i: u64| self.p.mem.read_u64(frame_gpa + 8 * i).unwrap_or(0);
        let (error, rip, cs, fl, rsp) = (word(0), word(1), word(2), word(3), word(4));
        if cs & 3 != 3 {
            return Err(VcpuError::GuestKernel(format!(
                "{} in the guest kernel at rip {rip:#x} (error code {error:#x}, cr2 {cr2:#x})",
                vector::name(vec)
            )));
        }
        let mut ctx = r;
        ctx.rip = rip;
        ctx.rsp = rsp;
        ctx.rflags = fl;
        Ok(Flow::Done((Trap::Exception { vector: vec, error, cr2 }, ctx)))
    }

    fn on_kops_done(&mut self, vcpu: &mut Vcpu) -> Result<Out, VcpuError> {
        let rip = vcpu.regs().rip;
        let entry = self.p.header.kops_entry;
        if cpl(vcpu.sregs()) != 0 || !(entry..entry + KOPS_ROUTINE_MAX).contains(&rip) {
            return Err(VcpuError::GuestKernel("kernel-operations report from an unexpected place".into()));
        }
        if self.mm.has_kops() {
            self.p.enter_kops(vcpu, self.mm);
            return Ok(Flow::Continue);
        }
        self.mm.kops_applied();
        let ctx =
            self.p.parked.take().ok_or_else(|| {
                VcpuError::GuestKernel("kernel operations finished with no program to return to".into())
            })?;
        self.p.return_to_user(vcpu, ctx);
        Ok(Flow::Continue)
    }

    fn bad_port(&mut self, vcpu: &mut Vcpu, port: u16) -> Result<Out, VcpuError> {
        let r = *vcpu.regs();
        if cpl(vcpu.sregs()) == 3 {
            return Ok(Flow::Done((Trap::Forbidden { port }, r)));
        }
        Err(VcpuError::GuestKernel(format!("write to unknown port {port:#x} at rip {:#x}", r.rip)))
    }
}

impl ExitHandler for Exits<'_> {
    type Done = (Trap, UserRegs);

    fn io_out(&mut self, vcpu: &mut Vcpu, port: u16, _data: &[u8]) -> Result<Out, VcpuError> {
        self.p.stats.exits += 1;
        let Ok(port8) = u8::try_from(port) else {
            return self.bad_port(vcpu, port);
        };
        match port8 {
            PORT_SYSCALL => self.on_syscall(vcpu),
            PORT_RING_WAIT => self.on_ring_wait(vcpu),
            PORT_KOPS_DONE => self.on_kops_done(vcpu),
            PORT_BOOT => {
                if self.p.stats.first_exit_ns.is_none() {
                    self.p.stats.first_exit_ns =
                        self.p.launched_ns.map(|t| crate::kernel::monotonic_ns().saturating_sub(t));
                }
                Ok(Flow::Continue)
            }
            p if ((PORT_EXCEPTION_BASE as usize)..PORT_EXCEPTION_BASE as usize + EXCEPTION_VECTORS)
                .contains(&(p as usize)) =>
            {
                self.on_exception(vcpu, p - PORT_EXCEPTION_BASE)
            }
            _ => self.bad_port(vcpu, port),
        }
    }

    fn io_in(&mut self, _port: u16, data: &mut [u8]) {
        data.fill(0xff);
    }

    /// A signal reached the VMM while the vCPU ran. At CPL3 the program is
    /// between instructions: the kernel may act there. At CPL0 the guest
    /// kernel is on its way to an exit; that exit comes first.
    fn interrupted(&mut self, vcpu: &mut Vcpu) -> Result<Out, VcpuError> {
        vcpu.set_immediate_exit(false);
        // The slice signal stays pending (and KVM_RUN would return at once
        // again) until it is drained, wherever the guest was.
        if self.p.slices.as_ref().is_some_and(|t| t.take_expired()) {
            self.p.slice_ended = true;
        }
        if cpl(vcpu.sregs()) != 3 || self.p.in_ring_stub(vcpu.regs().rip) {
            return Ok(Flow::Continue);
        }
        Ok(Flow::Done((Trap::Interrupted, *vcpu.regs())))
    }
}

#[cfg(test)]
#[path = "port_exit_tests.rs"]
mod tests;
