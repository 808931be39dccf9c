//! Signals: numbers, names, the program's recorded dispositions and mask.

pub mod frame;
pub mod host;

use super::errno::{Errno, SysResult};

/// A signal number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signal(pub i32);

// Linux's whole table of signal numbers, not only those the VMM names.
#[allow(dead_code)]
impl Signal {
    pub const SIGHUP: Signal = Signal(1);
    pub const SIGINT: Signal = Signal(2);
    pub const SIGQUIT: Signal = Signal(3);
    pub const SIGILL: Signal = Signal(4);
    pub const SIGTRAP: Signal = Signal(5);
    pub const SIGABRT: Signal = Signal(6);
    pub const SIGBUS: Signal = Signal(7);
    pub const SIGFPE: Signal = Signal(8);
    pub const SIGKILL: Signal = Signal(9);
    pub const SIGUSR1: Signal = Signal(10);
    pub const SIGSEGV: Signal = Signal(11);
    pub const SIGUSR2: Signal = Signal(12);
    pub const SIGPIPE: Signal = Signal(13);
    pub const SIGALRM: Signal = Signal(14);
    pub const SIGTERM: Signal = Signal(15);
    pub const SIGCHLD: Signal = Signal(17);
    pub const SIGCONT: Signal = Signal(18);
    pub const SIGSTOP: Signal = Signal(19);
    pub const SIGTSTP: Signal = Signal(20);
    pub const SIGURG: Signal = Signal(23);
    pub const SIGWINCH: Signal = Signal(28);

    /// The conventional name, e.g. "SIGSEGV".
    pub fn name(self) -> String {
        const NAMES: [&str; 32] = [
            "0",
            "SIGHUP",
            "SIGINT",
            "SIGQUIT",
            "SIGILL",
            "SIGTRAP",
            "SIGABRT",
            "SIGBUS",
            "SIGFPE",
            "SIGKILL",
            "SIGUSR1",
            "SIGSEGV",
            "SIGUSR2",
            "SIGPIPE",
            "SIGALRM",
            "SIGTERM",
            "SIGSTKFLT",
            "SIGCHLD",
            "SIGCONT",
            "SIGSTOP",
            "SIGTSTP",
            "SIGTTIN",
            "SIGTTOU",
            "SIGURG",
            "SIGXCPU",
            "SIGXFSZ",
            "SIGVTALRM",
            "SIGPROF",
            "SIGWINCH",
            "SIGIO",
            "SIGPWR",
            "SIGSYS",
        ];
        match NAMES.get(self.0 as usize) {
            Some(n) => n.to_string(),
            None => format!("SIGRT{}", self.0 - 32),
        }
    }

    /// Whether `n` is a valid signal number (1..=64).
    pub fn valid(n: u64) -> bool {
        (1..=64).contains(&n)
    }

    /// What happens when the signal arrives with the default disposition.
    pub fn default_ignored(self) -> bool {
        matches!(self, Signal::SIGCHLD | Signal::SIGCONT | Signal::SIGURG | Signal::SIGWINCH)
    }
}

/// SIG_DFL and SIG_IGN handler values.
pub const SIG_DFL: u64 = 0;
pub const SIG_IGN: u64 = 1;

/// The kernel's `struct sigaction` on x86-64.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SigAction {
    pub handler: u64,
    pub flags: u64,
    pub restorer: u64,
    pub mask: u64,
}

// SAFETY: repr(C) struct of integers.
unsafe impl crate::kernel::mm::Pod for SigAction {}

/// The kernel's `stack_t`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StackT {
    pub sp: u64,
    pub flags: i32,
    pub _pad: i32,
    pub size: u64,
}

// SAFETY: repr(C) struct of integers.
unsafe impl crate::kernel::mm::Pod for StackT {}

pub const SS_ONSTACK: i32 = 1;
pub const SS_DISABLE: i32 = 2;
const MINSIGSTKSZ: u64 = 2048;

#[allow(dead_code)] // glibc always sets it; every frame is built with siginfo
pub const SA_SIGINFO: u64 = 0x4;
pub const SA_RESTORER: u64 = 0x0400_0000;
pub const SA_ONSTACK: u64 = 0x0800_0000;
pub const SA_RESTART: u64 = 0x1000_0000;
pub const SA_NODEFER: u64 = 0x4000_0000;
pub const SA_RESETHAND: u64 = 0x8000_0000;

/// What `siginfo` says about a pending signal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SigInfo {
    pub code: i32,
    /// Faulting address (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP).
    pub addr: u64,
    /// Exception vector and error code, for the signal frame.
    pub trapno: u64,
    pub err: u64,
    /// The union's second word (a timer's si_value).
    pub value: u64,
}

/// si_code values.
pub const SI_USER: i32 = 0;
pub const SI_TKILL: i32 = -6;

/// Signal dispositions: shared by the tasks of a thread group.
#[derive(Debug, Clone)]
pub struct SigHand {
    actions: [SigAction; 65],
}

impl Default for SigHand {
    fn default() -> Self {
        SigHand { actions: [SigAction::default(); 65] }
    }
}

/// A task's signal mask, pending set and alternate stack.
#[derive(Debug, Clone)]
pub struct SigState {
    pub mask: u64,
    pub altstack: StackT,
    /// Pending signals (bit n-1 for signal n) and what siginfo says.
    pub pending: u64,
    info: [SigInfo; 65],
}

impl Default for SigState {
    fn default() -> Self {
        SigState {
            mask: 0,
            altstack: StackT { flags: SS_DISABLE, ..Default::default() },
            pending: 0,
            info: [SigInfo::default(); 65],
        }
    }
}

/// Bits of the mask that can never be blocked.
pub const UNBLOCKABLE: u64 = (1 << (9 - 1)) | (1 << (19 - 1));

/// The mask bit of signal `n`.
#[inline]
pub fn bit(n: i32) -> u64 {
    1u64 << (n - 1)
}

impl SigHand {
    /// The disposition of `sig`.
    pub fn action(&self, sig: Signal) -> SigAction {
        self.actions.get(sig.0 as usize).copied().unwrap_or_default()
    }

    /// Changes the disposition of `sig`; returns the old one.
    pub fn set_action(&mut self, sig: u64, new: Option<SigAction>) -> SysResult<SigAction> {
        if !Signal::valid(sig) {
            return Err(Errno::EINVAL);
        }
        let old = self.actions[sig as usize];
        if let Some(mut a) = new {
            if sig == 9 || sig == 19 {
                return Err(Errno::EINVAL);
            }
            a.mask &= !UNBLOCKABLE;
            self.actions[sig as usize] = a;
        }
        Ok(old)
    }

    /// Whether `sig` is ignored (explicitly, or by default).
    pub fn ignored(&self, sig: Signal) -> bool {
        let a = self.action(sig);
        sig != Signal::SIGKILL
            && sig != Signal::SIGSTOP
            && (a.handler == SIG_IGN || (a.handler == SIG_DFL && sig.default_ignored()))
    }

    /// Resets the disposition of `sig` to the default (SA_RESETHAND).
    pub fn reset(&mut self, sig: Signal) {
        if let Some(a) = self.actions.get_mut(sig.0 as usize) {
            *a = SigAction::default();
        }
    }

    /// Resets handled signals to the default at execve (ignored stay ignored).
    pub fn reset_on_exec(&mut self) {
        for a in self.actions.iter_mut() {
            if a.handler != SIG_IGN {
                *a = SigAction::default();
            }
        }
    }
}

impl SigState {
    /// rt_sigprocmask.
    pub fn change_mask(&mut self, how: u64, set: Option<u64>) -> SysResult<u64> {
        let old = self.mask;
        if let Some(s) = set {
            self.mask = match how {
                0 => old | s,  // SIG_BLOCK
                1 => old & !s, // SIG_UNBLOCK
                2 => s,        // SIG_SETMASK
                _ => return Err(Errno::EINVAL),
            } & !UNBLOCKABLE;
        }
        Ok(old)
    }

    /// sigaltstack.
    pub fn set_altstack(&mut self, new: Option<StackT>) -> SysResult<StackT> {
        let old = self.altstack;
        if let Some(s) = new {
            if s.flags & !(SS_DISABLE | SS_ONSTACK | (1 << 31)) != 0 {
                return Err(Errno::EINVAL);
            }
            if s.flags & SS_DISABLE != 0 {
                self.altstack = StackT { flags: SS_DISABLE, ..Default::default() };
            } else {
                if s.size < MINSIGSTKSZ {
                    return Err(Errno::ENOMEM);
                }
                self.altstack = StackT { sp: s.sp, flags: 0, _pad: 0, size: s.size };
            }
        }
        Ok(old)
    }

    /// Marks `sig` pending with `info` (standard signals do not queue).
    pub fn raise(&mut self, sig: Signal, info: SigInfo) {
        if (1..=64).contains(&sig.0) {
            self.pending |= bit(sig.0);
            self.info[sig.0 as usize] = info;
        }
    }

    /// The next pending signal the mask lets through, removed from the
    /// pending set, with its siginfo.
    pub fn take_deliverable(&mut self) -> Option<(Signal, SigInfo)> {
        let ready = self.pending & !(self.mask & !UNBLOCKABLE);
        if ready == 0 {
            return None;
        }
        let n = ready.trailing_zeros() as i32 + 1;
        self.pending &= !bit(n);
        Some((Signal(n), self.info[n as usize]))
    }

    /// The lowest pending signal whatever the mask, removed, with its siginfo.
    pub fn take_any(&mut self) -> Option<(Signal, SigInfo)> {
        if self.pending == 0 {
            return None;
        }
        let n = self.pending.trailing_zeros() as i32 + 1;
        self.pending &= !bit(n);
        Some((Signal(n), self.info[n as usize]))
    }

    /// Whether a pending signal would be delivered now.
    pub fn has_deliverable(&self) -> bool {
        self.pending & !(self.mask & !UNBLOCKABLE) != 0
    }

    /// At execve: the alternate stack is gone.
    pub fn reset_on_exec(&mut self) {
        self.altstack = StackT { flags: SS_DISABLE, ..Default::default() };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_and_stop_cannot_be_caught_or_blocked() {
        let mut h = SigHand::default();
        assert_eq!(h.set_action(9, Some(SigAction { handler: 0x1000, ..Default::default() })), Err(Errno::EINVAL));
        assert_eq!(h.set_action(0, None), Err(Errno::EINVAL));
        assert_eq!(h.set_action(65, None), Err(Errno::EINVAL));
        let mut s = SigState::default();
        s.change_mask(2, Some(u64::MAX)).unwrap();
        assert_eq!(s.mask & UNBLOCKABLE, 0);
        assert_eq!(Signal::SIGSEGV.name(), "SIGSEGV");
        assert_eq!(Signal(34).name(), "SIGRT2");
    }
}
