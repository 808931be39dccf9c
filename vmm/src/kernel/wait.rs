//! Blocking host waits on the program's behalf: interruptible by the
//! signals the program will receive, and, on a leader, releasing held output
//! while the program waits.

use std::cell::RefCell;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Instant;

use super::errno::{Errno, SysResult};
use super::signal::UNBLOCKABLE;
use super::Kernel;

impl Kernel {
    /// Runs a blocking host call `f(remaining_ms)` (negative: forever) with
    /// the program's signal mask replaced by `mask` meanwhile. A signal the
    /// program will receive ends the wait with EINTR; other interruptions
    /// resume it.
    pub(crate) fn blocking(&mut self, mask: Option<u64>, timeout_ms: i64, f: impl FnMut(i64) -> i64) -> SysResult {
        self.blocking_on(mask, timeout_ms, None, f)
    }

    /// [`Self::blocking`] for a call whose readiness `wake` describes (an
    /// epoll descriptor, or a poll/select set): the leader then waits for it
    /// and its followers' acknowledgements at once, releasing held output
    /// as they come, instead of waiting for every acknowledgement first. The
    /// program handles new clients while the followers verify what it sent.
    pub(crate) fn blocking_on(
        &mut self,
        mask: Option<u64>,
        timeout_ms: i64,
        wake: Option<WakeOn<'_>>,
        mut f: impl FnMut(i64) -> i64,
    ) -> SysResult {
        let start = Instant::now();
        if let Some(m) = mask {
            self.task.saved_mask = Some(self.task.sig.mask);
            self.task.sig.mask = m & !UNBLOCKABLE;
        }
        self.collect_host_signals();
        if timeout_ms != 0 {
            self.flush_link();
        }
        let left = |start: Instant| {
            if timeout_ms < 0 {
                -1
            } else {
                (timeout_ms - start.elapsed().as_millis() as i64).max(0)
            }
        };
        // The leader may hold outputs a client is waiting for: look first
        // whether anything is ready at once; if not, send them out before
        // blocking.
        if timeout_ms != 0 && self.monitor.as_ref().is_some_and(|m| m.is_leader() && m.outputs.pending()) {
            let r = f(0);
            if r != 0 {
                return if r > 0 { Ok(r as u64) } else { Err(Errno::last()) };
            }
            // A poll set is watched through a temporary epoll descriptor.
            let set_fd;
            let wake = match wake {
                None => None,
                Some(WakeOn::Fd(fd, events)) => Some((fd, events)),
                Some(WakeOn::Set(set)) => {
                    set_fd = epoll_of(&set.borrow());
                    set_fd.as_ref().map(|e| (e.as_raw_fd(), libc::POLLIN))
                }
            };
            match wake {
                None => {
                    if !self.settle_before_blocking() {
                        return Err(Errno::EINTR);
                    }
                }
                Some((fd, events)) => loop {
                    if self.task.sig.has_deliverable() {
                        return Err(Errno::EINTR);
                    }
                    let released = match self.monitor.as_mut() {
                        Some(m) => m.release_while_waiting(),
                        None => Ok(None),
                    };
                    let link = match released {
                        Ok(Some(link)) => link,
                        Ok(None) => break,
                        Err(stop) => {
                            self.stop = Some(stop);
                            return Err(Errno::EINTR);
                        }
                    };
                    let mut pfd = [
                        libc::pollfd { fd, events, revents: 0 },
                        libc::pollfd { fd: link, events: libc::POLLIN, revents: 0 },
                    ];
                    let t = left(start);
                    // SAFETY: two valid pollfds.
                    let n = unsafe { libc::poll(pfd.as_mut_ptr(), 2, t as i32) };
                    if let Some(m) = self.monitor.as_mut() {
                        m.disarm_link_wake();
                    }
                    if n < 0 {
                        if Errno::last() == Errno::EINTR {
                            self.collect_host_signals();
                            continue;
                        }
                        break;
                    }
                    if pfd[0].revents != 0 || n == 0 {
                        let r = f(0);
                        if r != 0 || n == 0 {
                            return if r >= 0 { Ok(r as u64) } else { Err(Errno::last()) };
                        }
                    }
                },
            }
        }
        loop {
            if self.task.sig.has_deliverable() {
                return Err(Errno::EINTR);
            }
            let r = f(left(start));
            if r >= 0 {
                return Ok(r as u64);
            }
            let e = Errno::last();
            if e != Errno::EINTR {
                return Err(e);
            }
            self.collect_host_signals();
        }
    }

    /// Waits until a signal the program will receive arrives (pause,
    /// sigsuspend, a futex nobody can wake). Returns EINTR.
    pub(crate) fn wait_for_signal(&mut self, mask: Option<u64>) -> Errno {
        if !self.settle_before_blocking() {
            return Errno::EINTR;
        }
        match self.blocking(mask, -1, |_| {
            // SAFETY: pause has no preconditions; it returns on a signal.
            unsafe { libc::pause() as i64 }
        }) {
            Err(e) => e,
            Ok(_) => Errno::EINTR,
        }
    }

    /// A sigset argument (pointer, size): None when the pointer is null.
    pub(crate) fn sigmask_arg(&mut self, va: u64, size: u64) -> SysResult<Option<u64>> {
        if va == 0 {
            return Ok(None);
        }
        if size != 8 {
            return Err(Errno::EINVAL);
        }
        Ok(Some(self.mm.read_val::<u64>(va)?))
    }
}

/// What a blocking call waits for, so that the leader can wait for it and
/// for its followers' acknowledgements at once.
pub(crate) enum WakeOn<'a> {
    /// A descriptor that reports these poll events when the call is ready
    /// (an epoll descriptor: POLLIN).
    Fd(i32, i16),
    /// The host pollfd set of a poll or select.
    Set(&'a RefCell<Vec<libc::pollfd>>),
}

/// An epoll descriptor ready when any of `set` is (level-triggered, the same
/// events: poll and epoll share their bit values). None if a descriptor
/// cannot be watched by epoll; the caller then waits the simple way.
fn epoll_of(set: &[libc::pollfd]) -> Option<OwnedFd> {
    // SAFETY: no pointer arguments.
    let raw = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if raw < 0 {
        return None;
    }
    // SAFETY: `raw` is a new descriptor that nothing else owns.
    let ep = unsafe { OwnedFd::from_raw_fd(raw) };
    for p in set.iter().filter(|k| k.fd >= 0) {
        // A descriptor listed twice waits for the union of its events.
        let events = set.iter().filter(|q| q.fd == p.fd).fold(0i16, |a, q| a | q.events);
        let mut ev = libc::epoll_event { events: u32::from(events as u16), u64: 0 };
        // SAFETY: `ev` is a valid epoll_event for the call's duration.
        if unsafe { libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, p.fd, &mut ev) } < 0
            && Errno::last() != Errno::EEXIST
        {
            return None;
        }
    }
    Some(ep)
}
