//! The vCPU was kicked out of program code that makes no system call: a
//! host signal for the program, or the link asking to be looked at.
//!
//! Alone, a signal is delivered right there. In a cluster, variants take
//! signals after the same call, so the program goes on, except:
//! - a signal whose action is to end the program ends every variant at
//!   once (the leader's death is its last event; followers take it when
//!   the link wakes them);
//! - a handled signal waits for the program's next call at most
//!   `SIGNAL_WAIT`; without one, the variants cannot take it at one point
//!   (no instruction counter here), and the run stops with a report;
//! - a stop decided elsewhere (a divergence, a failed link) stops this
//!   variant now instead of at its next call.

use std::time::{Duration, Instant};

use super::signal::{host, Signal, SIG_DFL, UNBLOCKABLE};
use super::{Kernel, Outcome};

/// How long a handled signal may wait for the program's next system call.
pub const SIGNAL_WAIT: Duration = Duration::from_secs(2);

impl Kernel {
    /// Some(outcome) if the run ends here.
    pub(super) fn mvx_interrupt(&mut self) -> Option<Outcome> {
        if self.monitor.is_none() {
            self.collect_host_signals();
            return None;
        }
        let notice = host::take_link_notice();
        if self.is_leader() {
            return self.leader_interrupt(notice);
        }
        if !notice {
            return None;
        }
        let polled = self.monitor.as_mut().map(|m| m.poll_leader())?;
        match polled {
            Ok(None) => None,
            Ok(Some(sig)) => {
                Some(self.kill(Signal(sig), format!("{} (the leader's death, taken at once)", Signal(sig).name())))
            }
            Err(stop) => Some(self.stopped(stop)),
        }
    }

    fn leader_interrupt(&mut self, notice: bool) -> Option<Outcome> {
        if notice {
            if let Some(Err(stop)) = self.monitor.as_mut().map(|m| m.poll_followers()) {
                return Some(self.stopped(stop));
            }
        }
        let pending = host::peek_host_pending();
        if pending == 0 {
            return None;
        }
        if let Some(sig) = self.ends_program(pending) {
            self.collect_host_signals();
            return Some(
                self.kill_externally(sig, format!("{} while the program ran without system calls", sig.name())),
            );
        }
        // A handled (or blocked, or ignored) signal: its next call delivers it.
        let since = *self.signal_waiting.get_or_insert_with(|| {
            std::thread::spawn(|| {
                std::thread::sleep(SIGNAL_WAIT);
                host::kick_for_link();
            });
            Instant::now()
        });
        let waited = since.elapsed();
        if waited < SIGNAL_WAIT || !self.would_handle(pending) {
            return None;
        }
        let names: Vec<String> =
            (1..=64).filter(|&s| pending & super::signal::bit(s) != 0).map(|s| Signal(s).name()).collect();
        let stop = self.monitor.as_mut().map(|m| m.signal_undeliverable(&names.join(", "), waited))?;
        Some(self.stopped(stop))
    }

    /// The first signal in `pending` whose disposition is the default one
    /// and ends the program (not blocked).
    fn ends_program(&self, pending: u64) -> Option<Signal> {
        (1..=64).map(Signal).find(|&s| {
            pending & super::signal::bit(s.0) != 0
                && self.tg().sighand.action(s).handler == SIG_DFL
                && !s.default_ignored()
                && self.task.sig.mask & super::signal::bit(s.0) & !UNBLOCKABLE == 0
        })
    }

    /// Whether a signal in `pending` would run a handler now (ignored and
    /// blocked ones wait harmlessly).
    fn would_handle(&self, pending: u64) -> bool {
        (1..=64).map(Signal).any(|s| {
            pending & super::signal::bit(s.0) != 0
                && self.tg().sighand.action(s).handler > super::signal::SIG_IGN
                && self.task.sig.mask & super::signal::bit(s.0) == 0
        })
    }
}
