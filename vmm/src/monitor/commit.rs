//! Output commit: on the leader, data a lockstep output call sends (to a
//! socket, the terminal, a file) is held in the VMM until every follower has
//! acknowledged reaching the same call with the same data; only then does it
//! leave the host. The program continues meanwhile, so checking outputs in
//! lockstep costs latency (one round trip) but not throughput. A divergence
//! discards what is held: nothing of it ever reaches the outside world.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::kernel::file::OpenFile;

/// Held bytes above which the leader waits for acknowledgements before
/// holding more (bounded memory, bounded latency).
pub const HOLD_LIMIT: usize = 4 << 20;

struct Held {
    seq: u64,
    /// Digest of the call's record: a follower's acknowledgement of `seq`
    /// releases the output only if it carries the same digest.
    digest: [u8; 32],
    file: Arc<OpenFile>,
    data: Vec<u8>,
    sent: usize,
    offset: Option<i64>,
}

/// Outputs waiting for acknowledgement, in program order.
#[derive(Default)]
pub struct Outputs {
    queue: VecDeque<Held>,
    bytes: usize,
    pool: Vec<Vec<u8>>,
    /// Bytes released so far.
    pub released: u64,
}

/// What releasing found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Released {
    pub bytes: usize,
    /// Output would block (non-blocking descriptor full): try again later.
    pub blocked: bool,
}

impl Outputs {
    /// A buffer to fill with output data (recycled).
    pub fn buffer(&mut self) -> Vec<u8> {
        let mut b = self.pool.pop().unwrap_or_default();
        b.clear();
        b
    }

    /// Holds `data` for `file` (at `offset` for positioned writes) until
    /// event `seq` (whose record has `digest`) is acknowledged by every
    /// follower.
    pub fn hold(&mut self, seq: u64, digest: [u8; 32], file: Arc<OpenFile>, data: Vec<u8>, offset: Option<i64>) {
        self.bytes += data.len();
        self.queue.push_back(Held { seq, digest, file, data, sent: 0, offset });
    }

    /// How far an acknowledgement of event `seq` with record `digest`
    /// shows agreement: a follower acknowledges the call it reached before
    /// it compares; if that is a held output with another record, it
    /// agreed only on what came before.
    pub fn agreement(&self, seq: u64, digest: &[u8; 32]) -> u64 {
        match self.queue.iter().find(|h| h.seq == seq) {
            Some(h) if h.digest != *digest => seq - 1,
            _ => seq,
        }
    }

    /// Whether anything is held.
    #[inline]
    pub fn pending(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Whether the held bytes passed the limit.
    pub fn full(&self) -> bool {
        self.bytes >= HOLD_LIMIT
    }

    /// Sequence number of the newest held output (0 if none).
    pub fn newest(&self) -> u64 {
        self.queue.back().map_or(0, |h| h.seq)
    }

    /// Whether anything is held for `file`.
    pub fn holds(&self, file: &Arc<OpenFile>) -> bool {
        self.queue.iter().any(|h| Arc::ptr_eq(&h.file, file))
    }

    /// Writes out, in order, everything acknowledged up to `acked`. With
    /// `wait`, waits for a full descriptor to drain (up to 10 s each).
    pub fn release(&mut self, acked: u64, wait: bool) -> Released {
        let mut r = Released::default();
        while let Some(h) = self.queue.front_mut() {
            if h.seq > acked {
                break;
            }
            let raw = h.file.raw();
            while h.sent < h.data.len() {
                let rest = &h.data[h.sent..];
                // SAFETY: `rest` is a valid buffer; `raw` is the leader's
                // host descriptor, kept open by the Arc held here.
                let n = unsafe {
                    match h.offset {
                        Some(off) => libc::pwrite(raw, rest.as_ptr().cast(), rest.len(), off + h.sent as i64),
                        None if h.file.kind == crate::kernel::file::FileKind::Socket => {
                            libc::send(raw, rest.as_ptr().cast(), rest.len(), libc::MSG_NOSIGNAL)
                        }
                        None => libc::write(raw, rest.as_ptr().cast(), rest.len()),
                    }
                };
                if n > 0 {
                    h.sent += n as usize;
                    r.bytes += n as usize;
                    continue;
                }
                let e = std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO);
                if n < 0 && e == libc::EINTR {
                    continue;
                }
                if n < 0 && e == libc::EAGAIN {
                    if !wait {
                        r.blocked = true;
                        self.released += r.bytes as u64;
                        return r;
                    }
                    let mut pfd = libc::pollfd { fd: raw, events: libc::POLLOUT, revents: 0 };
                    // SAFETY: pfd is one valid pollfd.
                    if unsafe { libc::poll(&mut pfd, 1, 10_000) } > 0 {
                        continue;
                    }
                }
                // The peer is gone (EPIPE, ECONNRESET) or it stalled: the
                // rest of this output cannot be delivered.
                h.file.set_broken(if n == 0 { libc::EPIPE } else { e });
                break;
            }
            let done = self.queue.pop_front().expect("front exists");
            self.bytes -= done.data.len();
            if self.pool.len() < 64 && done.data.capacity() <= 1 << 20 {
                self.pool.push(done.data);
            }
        }
        self.released += r.bytes as u64;
        r
    }

    /// Sequence number of the newest output held from before event
    /// `before` (0 if none).
    pub fn newest_before(&self, before: u64) -> u64 {
        self.queue.iter().rev().find(|h| h.seq < before).map_or(0, |h| h.seq)
    }

    /// Releases what every variant agreed on (up to `agreed`) of the
    /// outputs made before event `before`, waiting for slow descriptors.
    pub fn release_before(&mut self, agreed: u64, before: u64) -> Released {
        self.release(agreed.min(before.saturating_sub(1)), true)
    }

    /// Drops everything held (divergence: nothing of it may leave).
    pub fn discard(&mut self) -> usize {
        let n = self.bytes;
        self.queue.clear();
        self.bytes = 0;
        n
    }
}
