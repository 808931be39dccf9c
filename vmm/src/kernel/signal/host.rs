//! Signals sent to the VMM itself: SIGTERM, SIGINT, ... sent to `dmvx-vmm`
//! are meant for the program. A handler records them and kicks every vCPU
//! out of KVM_RUN, so the kernel sees them at once.

use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use super::{bit, SigInfo, Signal, SI_USER};
use crate::kernel::Kernel;

/// Signals sent to the VMM that are passed on to the program.
pub const FORWARDED: [i32; 8] = [
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGALRM,
    libc::SIGTERM,
    libc::SIGWINCH,
];

/// Signals caught by the VMM and not yet handed to the program.
static HOST_PENDING: AtomicU64 = AtomicU64::new(0);
/// The `kvm_run.immediate_exit` bytes of the running vCPUs (null: free).
static KICKS: [AtomicPtr<u8>; MAX_VCPUS] = [const { AtomicPtr::new(std::ptr::null_mut()) }; MAX_VCPUS];
const MAX_VCPUS: usize = 64;

extern "C" fn on_host_signal(sig: libc::c_int) {
    HOST_PENDING.fetch_or(bit(sig), Ordering::SeqCst);
    for k in &KICKS {
        let p = k.load(Ordering::SeqCst);
        if !p.is_null() {
            // SAFETY: p points at the live kvm_run of a vCPU (its guard
            // clears the slot before that mapping goes away); a volatile byte
            // store is async-signal-safe.
            unsafe { p.write_volatile(1) };
        }
    }
}

/// Installs the VMM's handlers for the forwarded signals and registers a
/// vCPU to kick; the registration is undone on drop.
pub struct SignalGuard {
    slot: Option<usize>,
}

impl SignalGuard {
    /// Registers `kick` (a vCPU's `kvm_run.immediate_exit`, alive as long as
    /// the guard). A follower ignores its host's signals (the leader's are
    /// replicated); everyone else catches them for the program.
    pub fn install(kick: *mut u8, ignore: bool) -> SignalGuard {
        let slot = KICKS
            .iter()
            .position(|k| k.compare_exchange(std::ptr::null_mut(), kick, Ordering::SeqCst, Ordering::SeqCst).is_ok());
        for sig in FORWARDED {
            if ignore {
                // SAFETY: installing SIG_IGN has no preconditions.
                unsafe { libc::signal(sig, libc::SIG_IGN) };
                continue;
            }
            // SAFETY: a zeroed sigaction is valid; the handler only touches
            // atomics and volatile bytes (async-signal-safe). No SA_RESTART:
            // blocking host calls must return EINTR so the VMM can act.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_host_signal as *const () as usize;
                libc::sigfillset(&mut sa.sa_mask);
                libc::sigaction(sig, &sa, std::ptr::null_mut());
            }
        }
        SignalGuard { slot }
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            KICKS[i].store(std::ptr::null_mut(), Ordering::SeqCst);
        }
    }
}

impl Kernel {
    /// follower ignores its host's signals: it takes the leader's.
    pub(crate) fn collect_host_signals(&mut self) {
        let caught = HOST_PENDING.swap(0, Ordering::SeqCst);
        if self.monitor.as_ref().is_some_and(|m| !m.is_leader()) {
            return;
        }
        for sig in FORWARDED {
            if caught & bit(sig) != 0 {
                self.task.sig.raise(Signal(sig), SigInfo { code: SI_USER, ..Default::default() });
                self.host_raised |= bit(sig);
            }
        }
    }
}
