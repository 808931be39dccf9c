//! The vCPU and the generic exit loop.
//!
//! Registers travel through the `kvm_run` sync area (KVM_CAP_SYNC_REGS):
//! KVM copies them out at every exit and in when marked dirty, so the hot
//! path needs no register ioctls.

use kvm_bindings::{kvm_regs, kvm_run, kvm_sregs};
use kvm_ioctls::{SyncReg, VcpuExit, VcpuFd};

/// Errors of running the vCPU.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    #[error("KVM_RUN failed: {0}")]
    Run(kvm_ioctls::Error),
    #[error("KVM could not enter the guest (hardware entry failure reason {reason:#x}, cpu {cpu})")]
    FailEntry { reason: u64, cpu: u32 },
    #[error("KVM internal error (the host's KVM could not emulate an instruction) at rip {rip:#x}, cs {cs:#x}")]
    Internal { rip: u64, cs: u16 },
    #[error("the guest stopped with an unexpected exit: {0}")]
    Unexpected(String),
    #[error("the guest kernel misbehaved: {0}")]
    GuestKernel(String),
}

/// A vCPU whose registers are exchanged through the sync area.
pub struct Vcpu {
    fd: VcpuFd,
    /// The guest's rdtsc must fault (see `tsc`).
    trap_tsc: bool,
}

impl Vcpu {
    /// Wraps `fd`, asking KVM to sync general and special registers.
    pub fn new(mut fd: VcpuFd) -> Self {
        fd.set_sync_valid_reg(SyncReg::Register);
        fd.set_sync_valid_reg(SyncReg::SystemRegister);
        Vcpu { fd, trap_tsc: false }
    }

    /// Makes the guest's rdtsc and rdtscp fault at CPL3 even where KVM
    /// ignores the guest's CR4.TSD (see `tsc`).
    pub fn set_trap_tsc(&mut self, on: bool) {
        self.trap_tsc = on;
    }

    /// The raw vCPU.
    pub fn fd(&self) -> &VcpuFd {
        &self.fd
    }

    /// General registers as of the last exit.
    #[inline]
    pub fn regs(&mut self) -> &kvm_regs {
        &self.fd.sync_regs_mut().regs
    }

    /// General registers, to be written back at the next entry.
    #[inline]
    pub fn regs_mut(&mut self) -> &mut kvm_regs {
        self.fd.set_sync_dirty_reg(SyncReg::Register);
        &mut self.fd.sync_regs_mut().regs
    }

    /// Special registers as of the last exit.
    #[inline]
    pub fn sregs(&mut self) -> &kvm_sregs {
        &self.fd.sync_regs_mut().sregs
    }

    /// Special registers, to be written back at the next entry.
    #[inline]
    pub fn sregs_mut(&mut self) -> &mut kvm_sregs {
        self.fd.set_sync_dirty_reg(SyncReg::SystemRegister);
        &mut self.fd.sync_regs_mut().sregs
    }

    /// Address of `kvm_run.immediate_exit`, for a signal handler to set
    /// (valid as long as this vCPU lives).
    pub fn immediate_exit_ptr(&mut self) -> *mut u8 {
        &mut self.fd.get_kvm_run().immediate_exit as *mut u8
    }

    /// Asks the next KVM_RUN to return at once (from a signal handler's
    /// point of view, see `immediate_exit`).
    pub fn set_immediate_exit(&mut self, on: bool) {
        self.fd.set_kvm_immediate_exit(on as u8);
    }
}

/// What an exit handler wants next.
pub enum Flow<T> {
    /// Re-enter the guest.
    Continue,
    /// Stop the loop with this result.
    Done(T),
}

/// Reactions to exits. Only `io_out` is mandatory; the defaults treat the
/// rest as the guest going wrong.
pub trait ExitHandler {
    type Done;

    /// A write to an I/O port. `data` is a copy; `vcpu` may be used freely.
    fn io_out(&mut self, vcpu: &mut Vcpu, port: u16, data: &[u8]) -> Result<Flow<Self::Done>, VcpuError>;

    /// A read of an I/O port: fill `data`.
    fn io_in(&mut self, _port: u16, data: &mut [u8]) {
        data.fill(0xff);
    }

    /// A read of unbacked guest physical memory: fill `data`.
    fn mmio_read(&mut self, _addr: u64, data: &mut [u8]) {
        data.fill(0xff);
    }

    /// A write to unbacked guest physical memory.
    fn mmio_write(&mut self, _vcpu: &mut Vcpu, addr: u64, _data: &[u8]) -> Result<Flow<Self::Done>, VcpuError> {
        Err(VcpuError::Unexpected(format!("write to unbacked guest physical address {addr:#x}")))
    }

    /// The guest executed `hlt`.
    fn hlt(&mut self, vcpu: &mut Vcpu) -> Result<Flow<Self::Done>, VcpuError> {
        let rip = vcpu.regs().rip;
        Err(VcpuError::GuestKernel(format!("halted at rip {rip:#x}")))
    }

    /// Triple fault or reset.
    fn shutdown(&mut self, vcpu: &mut Vcpu) -> Result<Flow<Self::Done>, VcpuError> {
        let rip = vcpu.regs().rip;
        Err(VcpuError::GuestKernel(format!("triple fault (shutdown) near rip {rip:#x}")))
    }

    /// KVM_RUN was interrupted by a signal (or immediate_exit was set).
    fn interrupted(&mut self, _vcpu: &mut Vcpu) -> Result<Flow<Self::Done>, VcpuError> {
        Ok(Flow::Continue)
    }
}

enum Event {
    Out { port: u16, len: usize, data: [u8; 8] },
    MmioWrite { addr: u64, len: usize, data: [u8; 8] },
    Hlt,
    Shutdown,
    Interrupted,
    Internal,
    FailEntry(u64, u32),
    Other(String),
}

/// What a KVM_RUN issued elsewhere (`run_via`) came to.
pub enum Entered<D> {
    /// KVM_RUN returned: 0, or the errno it failed with. The exit is in
    /// the vCPU's `kvm_run`.
    Ran(Result<(), i32>),
    /// Something else ended the wait; the loop returns it (the vCPU may
    /// still be running).
    Stop(D),
}

/// Runs the vCPU until the handler is done, KVM_RUN being issued by
/// `enter` (for example by another thread while this one does other work).
/// `enter` must return `Ran` only once KVM_RUN has returned.
pub fn run_via<H: ExitHandler>(
    vcpu: &mut Vcpu,
    handler: &mut H,
    enter: &mut dyn FnMut(&mut Vcpu) -> Entered<H::Done>,
) -> Result<H::Done, VcpuError> {
    loop {
        let event = match enter(vcpu) {
            Entered::Stop(d) => return Ok(d),
            Entered::Ran(Err(e)) if e == libc::EINTR || e == libc::EAGAIN => Event::Interrupted,
            Entered::Ran(Err(e)) => return Err(VcpuError::Run(kvm_ioctls::Error::new(e))),
            Entered::Ran(Ok(())) => match event_of(vcpu.fd.get_kvm_run(), handler) {
                Some(e) => e,
                None => continue,
            },
        };
        if let Flow::Done(d) = handle(vcpu, handler, event)? {
            return Ok(d);
        }
    }
}

/// The exit that `kvm_run` describes after a successful KVM_RUN; `None` if
/// the handler answered it in place (port and MMIO reads).
fn event_of<H: ExitHandler>(run: &mut kvm_run, handler: &mut H) -> Option<Event> {
    use kvm_bindings::*;
    Some(match run.exit_reason {
        KVM_EXIT_IO => {
            // SAFETY: the exit reason says which member of the union KVM filled.
            let io = unsafe { run.__bindgen_anon_1.io };
            let len = (io.count as usize * io.size as usize).min(8);
            let base = run as *mut kvm_run as *mut u8;
            // SAFETY: KVM places the data at data_offset inside the kvm_run
            // mapping (the vCPU's mmap, which covers it); at most 8 bytes are used.
            let data = unsafe { std::slice::from_raw_parts_mut(base.add(io.data_offset as usize), len) };
            if u32::from(io.direction) == KVM_EXIT_IO_IN {
                handler.io_in(io.port, data);
                return None;
            }
            let mut out = [0u8; 8];
            out[..len].copy_from_slice(data);
            Event::Out { port: io.port, len, data: out }
        }
        KVM_EXIT_MMIO => {
            // SAFETY: as above.
            let mmio = unsafe { &mut run.__bindgen_anon_1.mmio };
            let len = (mmio.len as usize).min(8);
            if mmio.is_write == 0 {
                handler.mmio_read(mmio.phys_addr, &mut mmio.data[..len]);
                return None;
            }
            let mut data = [0u8; 8];
            data[..len].copy_from_slice(&mmio.data[..len]);
            Event::MmioWrite { addr: mmio.phys_addr, len, data }
        }
        KVM_EXIT_HLT => Event::Hlt,
        KVM_EXIT_SHUTDOWN => Event::Shutdown,
        KVM_EXIT_INTERNAL_ERROR => Event::Internal,
        KVM_EXIT_INTR => Event::Interrupted,
        KVM_EXIT_FAIL_ENTRY => {
            // SAFETY: as above.
            let f = unsafe { run.__bindgen_anon_1.fail_entry };
            Event::FailEntry(f.hardware_entry_failure_reason, f.cpu)
        }
        other => Event::Other(format!("exit reason {other}")),
    })
}

/// The handler's answer to one exit.
fn handle<H: ExitHandler>(vcpu: &mut Vcpu, handler: &mut H, event: Event) -> Result<Flow<H::Done>, VcpuError> {
    Ok(match event {
        Event::Out { port, len, data } => handler.io_out(vcpu, port, &data[..len])?,
        Event::MmioWrite { addr, len, data } => handler.mmio_write(vcpu, addr, &data[..len])?,
        Event::Hlt => handler.hlt(vcpu)?,
        Event::Shutdown => handler.shutdown(vcpu)?,
        Event::Interrupted => handler.interrupted(vcpu)?,
        Event::Internal => {
            let rip = vcpu.regs().rip;
            let cs = vcpu.sregs().cs.selector;
            return Err(VcpuError::Internal { rip, cs });
        }
        Event::FailEntry(reason, cpu) => return Err(VcpuError::FailEntry { reason, cpu }),
        Event::Other(what) => return Err(VcpuError::Unexpected(what)),
    })
}

/// Whether KVM_RUN faults the guest's rdtsc (see `tsc`), for a thread that
/// issues it for this vCPU.
impl Vcpu {
    pub fn traps_tsc(&self) -> bool {
        self.trap_tsc
    }
}

/// Runs the vCPU until the handler is done.
pub fn run<H: ExitHandler>(vcpu: &mut Vcpu, handler: &mut H) -> Result<H::Done, VcpuError> {
    loop {
        // Copy what the exit says, so the handler gets the vCPU back.
        if vcpu.trap_tsc {
            super::tsc::fault_tsc();
        }
        let res = vcpu.fd.run();
        if vcpu.trap_tsc {
            super::tsc::allow_tsc();
        }
        let event = match res {
            Ok(VcpuExit::IoOut(port, bytes)) => {
                let mut data = [0u8; 8];
                let len = bytes.len().min(8);
                data[..len].copy_from_slice(&bytes[..len]);
                Event::Out { port, len, data }
            }
            Ok(VcpuExit::IoIn(port, bytes)) => {
                handler.io_in(port, bytes);
                continue;
            }
            Ok(VcpuExit::MmioRead(addr, bytes)) => {
                handler.mmio_read(addr, bytes);
                continue;
            }
            Ok(VcpuExit::MmioWrite(addr, bytes)) => {
                let mut data = [0u8; 8];
                let len = bytes.len().min(8);
                data[..len].copy_from_slice(&bytes[..len]);
                Event::MmioWrite { addr, len, data }
            }
            Ok(VcpuExit::Hlt) => Event::Hlt,
            Ok(VcpuExit::Shutdown) => Event::Shutdown,
            Ok(VcpuExit::InternalError) => Event::Internal,
            Ok(VcpuExit::FailEntry(reason, cpu)) => Event::FailEntry(reason, cpu),
            Ok(VcpuExit::Intr) => Event::Interrupted,
            Ok(other) => Event::Other(format!("{other:?}")),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => Event::Interrupted,
            Err(e) => return Err(VcpuError::Run(e)),
        };
        if let Flow::Done(d) = handle(vcpu, handler, event)? {
            return Ok(d);
        }
    }
}

#[cfg(test)]
#[path = "vcpu_tests.rs"]
mod tests;
