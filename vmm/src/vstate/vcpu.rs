//! The vCPU and the generic exit loop.
//!
//! Registers travel through the `kvm_run` sync area (KVM_CAP_SYNC_REGS):
//! KVM copies them out at every exit and in when marked dirty, so the hot
//! path needs no register ioctls.

use kvm_bindings::{kvm_regs, kvm_sregs};
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
        let flow = match event {
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
        };
        if let Flow::Done(d) = flow {
            return Ok(d);
        }
    }
}

#[cfg(test)]
#[path = "vcpu_tests.rs"]
mod tests;
