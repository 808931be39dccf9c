//! Signals: numbers, names, the program's recorded dispositions and mask.

use super::errno::{Errno, SysResult};

/// A signal number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signal(pub i32);

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
unsafe impl super::mm::Pod for SigAction {}

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
unsafe impl super::mm::Pod for StackT {}

pub const SS_ONSTACK: i32 = 1;
pub const SS_DISABLE: i32 = 2;
const MINSIGSTKSZ: u64 = 2048;

/// Dispositions, mask and alternate stack.
#[derive(Debug, Clone)]
pub struct SignalState {
    actions: [SigAction; 65],
    pub mask: u64,
    pub altstack: StackT,
}

impl Default for SignalState {
    fn default() -> Self {
        SignalState {
            actions: [SigAction::default(); 65],
            mask: 0,
            altstack: StackT { flags: SS_DISABLE, ..Default::default() },
        }
    }
}

/// Bits of the mask that can never be blocked.
const UNBLOCKABLE: u64 = (1 << (9 - 1)) | (1 << (19 - 1));

impl SignalState {
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

    /// Resets handled signals to the default at execve (ignored stay ignored).
    pub fn reset_on_exec(&mut self) {
        for a in self.actions.iter_mut() {
            if a.handler != SIG_IGN {
                *a = SigAction::default();
            }
        }
        self.altstack = StackT { flags: SS_DISABLE, ..Default::default() };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_and_stop_cannot_be_caught_or_blocked() {
        let mut s = SignalState::default();
        assert_eq!(s.set_action(9, Some(SigAction { handler: 0x1000, ..Default::default() })), Err(Errno::EINVAL));
        assert_eq!(s.set_action(0, None), Err(Errno::EINVAL));
        assert_eq!(s.set_action(65, None), Err(Errno::EINVAL));
        s.change_mask(2, Some(u64::MAX)).unwrap();
        assert_eq!(s.mask & UNBLOCKABLE, 0);
        assert_eq!(Signal::SIGSEGV.name(), "SIGSEGV");
        assert_eq!(Signal(34).name(), "SIGRT2");
    }
}
