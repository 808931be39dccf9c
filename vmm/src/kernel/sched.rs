//! The threads of one process that are not on the vCPU, and what they
//! wait for.
//!
//! A process's threads share its one vCPU: one runs, the others are parked
//! here with their registers and FPU state. The kernel switches only at
//! system-call boundaries, so a schedule is a sequence of (thread, call)
//! pairs that the leader of a cluster records and its followers replay.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use kvm_bindings::kvm_xsave;

use super::task::Task;
use crate::platform::UserRegs;

/// Every bit of a futex bitset (FUTEX_WAIT, FUTEX_WAKE).
pub const BITSET_ALL: u32 = u32::MAX;

/// What a parked thread waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// A futex word at `addr` (a wake whose bitset meets `bitset`), until
    /// `deadline` if there is one.
    Futex { addr: u64, bitset: u32, deadline: Option<Instant> },
    /// nanosleep and clock_nanosleep: until `deadline`.
    Sleep { deadline: Instant },
    /// poll or epoll_wait found nothing ready: the call is issued again
    /// when no thread can run (or at `deadline`, when it returns 0).
    Poll { deadline: Option<Instant> },
}

impl Wait {
    fn deadline(&self) -> Option<Instant> {
        match *self {
            Wait::Futex { deadline, .. } | Wait::Poll { deadline } => deadline,
            Wait::Sleep { deadline } => Some(deadline),
        }
    }

    /// The call ends: a futex wait with ETIMEDOUT, a sleep with 0; a poll
    /// is issued again (its registers are rewound) and sees its deadline.
    pub fn end(&self, regs: &mut UserRegs) {
        match self {
            Wait::Futex { deadline: Some(_), .. } => regs.rax = (-(libc::ETIMEDOUT as i64)) as u64,
            // A wait without a deadline ends early only as if by a signal.
            Wait::Futex { deadline: None, .. } => regs.rax = (-(libc::EINTR as i64)) as u64,
            Wait::Sleep { .. } => regs.rax = 0,
            Wait::Poll { .. } => {}
        }
    }
}

/// A thread off the vCPU.
pub struct Parked {
    pub task: Task,
    /// Where it continues (rax holds the result of a call it waits in).
    pub regs: UserRegs,
    pub fpu: Box<kvm_xsave>,
    /// What it waits for; None: runnable.
    pub wait: Option<Wait>,
    /// The call it waits in.
    pub call: u64,
    /// A signal woke it (the call may restart after the handler).
    pub interrupted: bool,
    /// The call is issued again when it runs (a contended PI lock).
    pub retry: bool,
}

/// The parked threads of the process and the scheduler's counters.
#[derive(Default)]
pub struct Sched {
    /// In the order they run next (round robin).
    pub others: VecDeque<Parked>,
    /// The process ever had more than one thread: records name the thread.
    pub threaded: bool,
    pub switches: u64,
    /// Switches because a thread ran its slice out at a call entry.
    pub yields: u64,
    /// The current thread gives way at its next call (sched_yield).
    pub yield_due: bool,
    /// The wait being parked re-issues its call when woken.
    pub retry_call: bool,
    /// The VMM thread's CPU time when the current thread's slice began.
    pub slice_start_ns: u64,
    /// Slices that ended since the running thread's last system call.
    pub quiet_slices: u32,
    /// Threads preempted between two system calls.
    pub preemptions: u64,
    /// How long the VMM waits before pollers look again when nothing can
    /// run (grows while nothing becomes ready).
    pub poll_backoff: Duration,
    /// The current call is a poll issued again: whether it is the last
    /// look (its timeout passed). Goes into the call's record.
    pub probe_final: Option<bool>,
}

impl Sched {
    /// Whether any other thread can run now.
    pub fn any_runnable(&self) -> bool {
        self.others.iter().any(|p| p.wait.is_none())
    }

    /// The position of thread `tid`.
    pub fn find(&self, tid: u32) -> Option<usize> {
        self.others.iter().position(|p| p.task.tid == tid)
    }

    /// Wakes up to `n` waiters on `addr` whose bitset meets `bits`
    /// (FIFO, as Linux); returns how many.
    pub fn wake(&mut self, addr: u64, bits: u32, n: u32) -> u32 {
        let mut woken = 0;
        for p in self.others.iter_mut() {
            if woken >= n {
                break;
            }
            if let Some(Wait::Futex { addr: a, bitset, .. }) = p.wait {
                if a == addr && bitset & bits != 0 {
                    p.wait = None;
                    p.regs.rax = 0;
                    woken += 1;
                }
            }
        }
        woken
    }

    /// Wakes up to `n` waiters on `from` and moves up to `m` more to wait
    /// on `to` (FUTEX_REQUEUE); returns how many were woken plus moved.
    pub fn requeue(&mut self, from: u64, to: u64, n: u32, m: u32) -> u32 {
        let woken = self.wake(from, BITSET_ALL, n);
        let mut moved = 0;
        for p in self.others.iter_mut() {
            if moved >= m {
                break;
            }
            if let Some(Wait::Futex { addr, bitset, deadline }) = p.wait {
                if addr == from {
                    p.wait = Some(Wait::Futex { addr: to, bitset, deadline });
                    moved += 1;
                }
            }
        }
        woken + moved
    }

    /// The earliest deadline of a waiter.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.others.iter().filter_map(|p| p.wait.and_then(|w| w.deadline())).min()
    }

    /// Removes and returns the first thread, in order, that can run: a
    /// runnable one, or a waiter whose deadline passed at `now`. A wait ends
    /// by its timeout only when its thread is chosen, never before: a wake
    /// from another thread meanwhile finds it waiting in every variant
    /// alike (the leader's expiry is not in the stream; a follower forces
    /// the timeout when the leader's next event is that thread's).
    pub fn take_ready(&mut self, now: Instant) -> Option<Parked> {
        let i = self.others.iter().position(|p| p.wait.is_none_or(|w| w.deadline().is_some_and(|d| d <= now)))?;
        let mut p = self.others.remove(i)?;
        if let Some(w) = p.wait.take() {
            w.end(&mut p.regs);
        }
        Some(p)
    }

    /// Removes and returns thread `i`, made runnable: a waiter whose turn
    /// the leader's schedule says it is timed out there.
    pub fn take_forced(&mut self, i: usize) -> Option<Parked> {
        let mut p = self.others.remove(i)?;
        if let Some(w) = p.wait.take() {
            w.end(&mut p.regs);
        }
        Some(p)
    }

    /// Whether a thread waits in poll or epoll_wait.
    pub fn any_polling(&self) -> bool {
        self.others.iter().any(|p| matches!(p.wait, Some(Wait::Poll { .. })))
    }

    /// A host signal came while no thread could run: a thread goes on so
    /// that its next call takes it (a futex waiter sees EINTR, as after a
    /// signal; glibc waits again). Returns whether one was found.
    pub fn wake_one_for_signal(&mut self) -> bool {
        let eintr = (-(libc::EINTR as i64)) as u64;
        let pick = self
            .others
            .iter()
            .position(|p| matches!(p.wait, Some(Wait::Futex { .. })))
            .or_else(|| self.others.iter().position(|p| p.wait.is_some()));
        let Some(i) = pick else { return false };
        let p = &mut self.others[i];
        if !matches!(p.wait, Some(Wait::Poll { .. })) {
            p.regs.rax = eintr;
        }
        p.wait = None;
        true
    }

    /// Threads waiting in poll or epoll_wait issue their calls again.
    pub fn retry_polls(&mut self) {
        for p in self.others.iter_mut() {
            if matches!(p.wait, Some(Wait::Poll { .. })) {
                p.wait = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parked(tid: u32, wait: Option<Wait>) -> Parked {
        let tg = std::sync::Arc::new(super::super::thread_group::ThreadGroup::new(
            1,
            0,
            super::super::creds::Creds::new(0, 0),
            Vec::new(),
            [0; 16],
        ));
        let files = std::sync::Arc::new(std::sync::Mutex::new(super::super::fd_table::FdTable::new(16)));
        let fs = std::sync::Arc::new(std::sync::Mutex::new(super::super::fs_context::FsContext {
            cwd: b"/".to_vec(),
            umask: 0o22,
        }));
        Parked {
            task: Task::new(tid, tg, files, fs),
            regs: UserRegs::default(),
            fpu: Box::default(),
            wait,
            call: 0,
            interrupted: false,
            retry: false,
        }
    }

    fn futex(addr: u64, bitset: u32) -> Option<Wait> {
        Some(Wait::Futex { addr, bitset, deadline: None })
    }

    #[test]
    fn wake_is_fifo_and_honours_bitsets() {
        let mut s = Sched::default();
        s.others.extend([parked(2, futex(8, 1)), parked(3, futex(8, 2)), parked(4, futex(8, 3)), parked(5, None)]);
        assert_eq!(s.wake(8, 2, 1), 1);
        assert!(s.others[0].wait.is_some());
        assert!(s.others[1].wait.is_none());
        assert_eq!(s.wake(8, BITSET_ALL, 5), 2);
        assert_eq!(s.take_ready(Instant::now()).map(|p| p.task.tid), Some(2));
    }

    #[test]
    fn requeue_moves_the_rest() {
        let mut s = Sched::default();
        s.others.extend([parked(2, futex(8, 1)), parked(3, futex(8, 1)), parked(4, futex(8, 1))]);
        assert_eq!(s.requeue(8, 16, 1, 10), 3);
        assert_eq!(s.wake(8, BITSET_ALL, 10), 0);
        assert_eq!(s.wake(16, BITSET_ALL, 10), 2);
    }

    #[test]
    fn deadlines_time_out() {
        let mut s = Sched::default();
        let now = Instant::now();
        s.others.push_back(parked(2, Some(Wait::Futex { addr: 8, bitset: 1, deadline: Some(now) })));
        s.others.push_back(parked(3, Some(Wait::Sleep { deadline: now + std::time::Duration::from_secs(60) })));
        assert_eq!(s.next_deadline(), Some(now));
        // A wake before the timed-out waiter is chosen finds it waiting.
        assert_eq!(s.wake(8, 1, 1), 1);
        assert_eq!(s.others[0].regs.rax, 0);
        s.others[0].wait = Some(Wait::Futex { addr: 8, bitset: 1, deadline: Some(now) });
        let p = s.take_ready(now).unwrap();
        assert_eq!((p.task.tid, p.regs.rax), (2, (-(libc::ETIMEDOUT as i64)) as u64));
        assert!(s.take_ready(now).is_none(), "the sleeper's deadline is ahead");
        let p = s.take_forced(0).unwrap();
        assert_eq!(p.regs.rax, 0);
    }
}
