//! Time slices of the program's threads on one vCPU: a timer on the VMM
//! thread's CPU clock whose signal is blocked in that thread except inside
//! KVM_RUN (KVM_SET_SIGNAL_MASK). Its expiry makes KVM_RUN return, so a
//! thread that runs without system calls can be preempted; the VMM's own
//! host calls never see the signal (it stays blocked there), and the
//! pending signal is drained with a zero-timeout sigtimedwait.

use std::os::fd::RawFd;
use std::time::Duration;

/// KVM_SET_SIGNAL_MASK: _IOW(KVMIO, 0x8b, struct kvm_signal_mask).
const KVM_SET_SIGNAL_MASK: libc::c_ulong = 0x4004_ae8b;

/// The host signal of slice expiry.
pub fn slice_signal() -> i32 {
    libc::SIGRTMIN() + 5
}

/// `struct kvm_signal_mask` with the kernel's 8-byte sigset.
#[repr(C)]
struct SignalMask {
    len: u32,
    sigset: [u8; 8],
}

/// Errors of setting up the slice timer.
#[derive(Debug, thiserror::Error)]
pub enum SliceError {
    #[error("cannot give KVM_RUN its signal mask: {0}")]
    Mask(std::io::Error),
    #[error("cannot create the time-slice timer: {0}")]
    Timer(std::io::Error),
}

/// Gives KVM_RUN of vCPU `vcpu_fd` the signal mask `set`.
pub(super) fn set_kvm_sigmask(vcpu_fd: RawFd, set: &libc::sigset_t) -> std::io::Result<()> {
    let mut m = SignalMask { len: 8, sigset: [0; 8] };
    // SAFETY: sigset_t is at least 8 bytes; the kernel's sigset is its first 8.
    unsafe { std::ptr::copy_nonoverlapping(set as *const libc::sigset_t as *const u8, m.sigset.as_mut_ptr(), 8) };
    // SAFETY: the ioctl reads a valid kvm_signal_mask.
    if unsafe { libc::ioctl(vcpu_fd, KVM_SET_SIGNAL_MASK as _, &m) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

extern "C" fn on_slice(_sig: libc::c_int) {}

/// A periodic timer on the calling thread's CPU time.
pub struct SliceTimer {
    id: libc::timer_t,
    set: libc::sigset_t,
}

impl SliceTimer {
    /// Starts a timer of `period` for the calling thread, which runs the
    /// vCPU `vcpu_fd`.
    pub fn start(vcpu_fd: RawFd, period: Duration) -> Result<SliceTimer, SliceError> {
        let sig = slice_signal();
        // SAFETY: plain-data sigsets and sigaction, valid pointers; the
        // handler does nothing (it exists so the signal never kills).
        let set = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_slice as *const () as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigaction(sig, &sa, std::ptr::null_mut());
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, sig);
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
            // Inside KVM_RUN: the thread's mask, the slice signal let through.
            libc::sigdelset(&mut old, sig);
            set_kvm_sigmask(vcpu_fd, &old).map_err(SliceError::Mask)?;
            set
        };
        let mut id: libc::timer_t = std::ptr::null_mut();
        // SAFETY: sev and id are valid; the timer signals this thread only.
        unsafe {
            let mut sev: libc::sigevent = std::mem::zeroed();
            sev.sigev_notify = libc::SIGEV_THREAD_ID;
            sev.sigev_signo = sig;
            sev.sigev_notify_thread_id = libc::gettid();
            if libc::timer_create(libc::CLOCK_THREAD_CPUTIME_ID, &mut sev, &mut id) != 0 {
                return Err(SliceError::Timer(std::io::Error::last_os_error()));
            }
            let ts = libc::timespec { tv_sec: period.as_secs() as i64, tv_nsec: period.subsec_nanos() as i64 };
            let spec = libc::itimerspec { it_interval: ts, it_value: ts };
            if libc::timer_settime(id, 0, &spec, std::ptr::null_mut()) != 0 {
                let e = std::io::Error::last_os_error();
                libc::timer_delete(id);
                return Err(SliceError::Timer(e));
            }
        }
        Ok(SliceTimer { id, set })
    }

    /// Whether a slice ended since the last look (drains the signal).
    pub fn take_expired(&self) -> bool {
        let zero = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        let mut any = false;
        // SAFETY: the set is valid; no siginfo wanted; zero timeout.
        while unsafe { libc::sigtimedwait(&self.set, std::ptr::null_mut(), &zero) } > 0 {
            any = true;
        }
        any
    }

    /// In a forked VMM: the timer was the parent's (timers are not
    /// inherited), so nothing is deleted.
    pub fn forget(self) {
        std::mem::forget(self);
    }
}

impl Drop for SliceTimer {
    fn drop(&mut self) {
        // SAFETY: the id came from timer_create in this process.
        unsafe { libc::timer_delete(self.id) };
    }
}
