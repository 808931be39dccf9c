//! How the kernel's host operations run under the monitor.
//!
//! A handler wraps every host operation whose results a follower must not
//! produce itself in one of these: alone (no cluster) or for a local input
//! the operation simply runs; on the leader it runs and its results are
//! recorded for the followers; on a follower it does not run and the
//! leader's results are replayed into the same buffers. Which applies is
//! the monitor's decision for the current call (`OpMode`).

use std::os::fd::OwnedFd;
use std::sync::Arc;

use super::errno::{self, Errno, SysResult};
use super::fd_table::FdTable;
use super::file::{Extra, FileKind, OpenFile};
use super::Kernel;
use crate::monitor::{OpMode, Out, Stop};

impl Kernel {
    /// How a host operation on a `remote` resource runs for the current call.
    #[inline]
    pub(crate) fn op_mode(&self, remote: bool) -> OpMode {
        match &self.monitor {
            None => OpMode::Direct,
            Some(m) => m.mode_for(remote),
        }
    }

    /// Records a host operation's results for the followers (leader).
    pub(crate) fn record_op(&mut self, ret: i64, outs: &mut [Out<'_>]) {
        if let Some(m) = self.monitor.as_mut() {
            m.record(ret, outs);
        }
    }

    /// Replays the leader's results of the next host operation (follower).
    pub(crate) fn replay_op(&mut self, outs: &mut [Out<'_>]) -> i64 {
        match self.monitor.as_mut() {
            Some(m) => m.replay(outs),
            None => -(libc::EIO as i64),
        }
    }

    /// Runs host work `f`, which fills `buf` and yields a value, or replays
    /// the leader's (value and bytes) instead; the leader records them.
    pub(crate) fn host_call(
        &mut self,
        remote: bool,
        buf: &mut [u8],
        f: impl FnOnce(&mut Kernel, &mut [u8]) -> SysResult,
    ) -> SysResult {
        let mode = self.op_mode(remote);
        if mode == OpMode::Replay {
            return errno::from_neg(self.replay_op(&mut [Out::Buf(buf)]));
        }
        let r = errno::to_neg(f(self, buf));
        if mode == OpMode::Record {
            self.record_op(r, &mut [Out::Buf(buf)]);
        }
        errno::from_neg(r)
    }

    /// Like `host_call`, for work that fills the guest memory in `self.iov`
    /// (as many bytes as it returns), and optionally a VMM buffer `buf` as
    /// well (a received message's address, say).
    pub(crate) fn host_call_iov(
        &mut self,
        remote: bool,
        buf: Option<&mut [u8]>,
        f: impl FnOnce(&mut Kernel, &mut [u8]) -> SysResult,
    ) -> SysResult {
        let mut none = [0u8; 0];
        let (buf, with_buf) = match buf {
            Some(b) => (b, true),
            None => (&mut none[..], false),
        };
        let mode = self.op_mode(remote);
        if mode == OpMode::Replay {
            let Some(m) = self.monitor.as_mut() else { return Err(Errno::EIO) };
            let r = if with_buf {
                m.replay(&mut [Out::Iov(&self.iov), Out::Buf(buf)])
            } else {
                m.replay(&mut [Out::Iov(&self.iov)])
            };
            return errno::from_neg(r);
        }
        let r = errno::to_neg(f(self, buf));
        if mode == OpMode::Record {
            if let Some(m) = self.monitor.as_mut() {
                if with_buf {
                    m.record(r, &mut [Out::Iov(&self.iov), Out::Buf(buf)]);
                } else {
                    m.record(r, &mut [Out::Iov(&self.iov)]);
                }
            }
        }
        errno::from_neg(r)
    }

    /// Follower: the leader's read or write of `n` bytes on a pipe between
    /// the program's processes was replayed; the same bytes now pass through
    /// this variant's own pipe, so a read here returns only once this
    /// variant's writer wrote them, and the program's processes observe each
    /// other in the leader's order (a child's setpgid before the byte it
    /// writes to its parent). The bytes read must be the leader's.
    /// Err(EINTR) with `self.stop` set if the run stops meanwhile.
    pub(crate) fn follow_pipe(&mut self, file: &OpenFile, into_guest: bool, n: usize) -> SysResult {
        let raw = file.raw();
        if raw < 0 || n == 0 {
            return Ok(0);
        }
        // A read's: the leader's bytes (replayed); a write's: this variant's.
        let theirs = crate::monitor::gather(&self.iov, n);
        let mut mine = vec![0u8; if into_guest { theirs.len() } else { 0 }];
        let n = theirs.len();
        let mut done = 0;
        let mut why = None;
        while done < n {
            let events = if into_guest { libc::POLLIN } else { libc::POLLOUT };
            let mut pfd = libc::pollfd { fd: raw, events, revents: 0 };
            // SAFETY: one valid pollfd, for the call's duration.
            let r = unsafe { libc::poll(&mut pfd, 1, 20) };
            if r <= 0 {
                if r < 0 && Errno::last().0 != libc::EINTR {
                    why = Some("poll of this variant's pipe failed");
                    break;
                }
                if let Some(stop) = self.monitor.as_mut().and_then(|m| m.pending_stop()) {
                    self.stop = Some(stop);
                    return Err(Errno::EINTR);
                }
                continue;
            }
            // SAFETY: the buffers have n - done bytes from `done` on; raw is open.
            let got = unsafe {
                if into_guest {
                    libc::read(raw, mine[done..].as_mut_ptr().cast(), n - done)
                } else {
                    libc::write(raw, theirs[done..].as_ptr().cast(), n - done)
                }
            };
            match got {
                1.. => done += got as usize,
                0 => {
                    why = Some("this variant's pipe ended before the leader's bytes");
                    break;
                }
                _ if matches!(Errno::last().0, libc::EAGAIN | libc::EINTR) => {}
                // This variant's reader is gone for good (it ran ahead of
                // the leader's): nobody can read these bytes any more.
                _ if !into_guest && Errno::last().0 == libc::EPIPE => break,
                _ => {
                    why = Some("this variant's pipe failed where the leader's did not");
                    break;
                }
            }
        }
        if why.is_none() && into_guest && mine != theirs {
            why = Some("this variant's pipe carried other bytes than the leader's");
        }
        if let (Some(why), Some(m)) = (why, self.monitor.as_mut()) {
            m.replay_broken = Some(why.to_string());
        }
        Ok(0)
    }

    /// Installs a descriptor a host operation returned (`owned`: the host
    /// descriptor, absent when the operation was replayed). Under MVX such
    /// descriptors (sockets, epoll, ...) are remote: the leader's.
    pub(crate) fn adopt(&mut self, owned: Option<OwnedFd>, kind: FileKind, extra: Extra, cloexec: bool) -> SysResult {
        let remote = self.monitor.is_some();
        self.fds().insert(OpenFile::make(owned, kind, extra, remote), cloexec, 0)
    }

    /// Like `adopt`, for an end of a pipe or socket pair the program made.
    pub(crate) fn adopt_ipc(
        &mut self,
        owned: Option<OwnedFd>,
        kind: FileKind,
        extra: Extra,
        cloexec: bool,
    ) -> SysResult {
        let remote = self.monitor.is_some();
        self.fds().insert(OpenFile::ipc(owned, kind, extra, remote), cloexec, 0)
    }

    /// Leader: holds the output in `self.iov` for `file` until every
    /// follower agreed on it (output commit); the call reports it written.
    pub(crate) fn hold_output(&mut self, file: &Arc<OpenFile>, offset: Option<i64>) -> SysResult {
        let Some(m) = self.monitor.as_mut() else { return Err(Errno::EIO) };
        let r = match file.broken() {
            0 => Ok(m.hold(&self.iov, file.clone(), offset)),
            e => Err(Errno(e)),
        };
        m.record(errno::to_neg(r), &mut []);
        r
    }

    /// Whether a lockstep output of the leader is held instead of performed.
    pub(crate) fn holds_outputs(&self, file: &OpenFile) -> bool {
        self.monitor.as_ref().is_some_and(|m| m.holds_outputs_for(file.remote))
    }

    /// Leader: before an operation that must come after what is held for
    /// `f`, sends it out.
    pub(crate) fn settle_file(&mut self, f: &Arc<OpenFile>) -> Result<(), Stop> {
        match self.monitor.as_mut() {
            Some(m) => m.settle_file(f),
            None => Ok(()),
        }
    }

    /// Leader: before a host call that may block on `file` (a blocking
    /// descriptor), sends out what is held; a failure stops the run after
    /// the call (the call itself then reports EINTR).
    pub(crate) fn settle_if_blocking(&mut self, file: &OpenFile, dontwait: bool) -> bool {
        if dontwait || !self.is_leader() || !file.may_block() {
            return true;
        }
        self.settle_before_blocking()
    }

    /// Leader, before blocking on the host: everything held goes out first
    /// (a client waits for an answer that waits for us). False if the run
    /// must stop (`self.stop` says why).
    pub(crate) fn settle_before_blocking(&mut self) -> bool {
        let Some(m) = self.monitor.as_mut() else { return true };
        match m.settle_before_blocking() {
            Ok(()) => true,
            Err(stop) => {
                self.stop = Some(stop);
                false
            }
        }
    }

    /// Leader: sends the pending batch, before the program may block.
    pub(crate) fn flush_link(&mut self) {
        if let Some(m) = self.monitor.as_mut() {
            m.flush_link();
        }
    }

    /// Marks the standard descriptors remote: followers replay the leader's
    /// input and never write their output.
    pub(crate) fn stdio_remote(files: &mut FdTable) {
        files.mark_remote(&[0, 1, 2]);
    }
}
