//! The runtime: authenticated TCP links between the leader and its
//! followers, driven by a tokio runtime on a dedicated I/O thread, with a
//! synchronous API for the VMM's vCPU thread.
//!
//! Hot paths: [`Leader::push`] copies the entry into the current batch buffer
//! (no allocation, no system call) and only hands the batch to the I/O
//! thread when it reaches `batch_bytes`; [`Follower::next_entry`] returns a
//! slice of the decrypted frame. Batch buffers are recycled through a pool.
//! Sealing, opening, heartbeats and socket I/O all happen on the I/O thread.

mod follower;
mod leader;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

pub use follower::{Entry, Follower, Incoming, ACK_DELAY};
pub use leader::{AckState, Leader, BATCH_DELAY};

use crate::crypto::{CryptoError, Opener};
use crate::frame::{read_frame, FrameError};
use crate::handshake::HandshakeError;
use crate::wire::MAX_FRAME;

/// How a peer failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerFailure {
    #[error("closed the link")]
    Closed,
    #[error("connection lost: {0}")]
    Disconnected(String),
    #[error("silent for {0} ms (no frame, not even a heartbeat)")]
    Silent(u64),
    #[error("not reading: a send stayed blocked for {0} ms")]
    Stuck(u64),
    #[error("sent a bad frame: {0}")]
    Frame(FrameError),
    #[error("a frame failed authentication: tampered with, replayed, reordered or forged")]
    Auth,
    #[error("sent a malformed message: {0}")]
    Malformed(String),
    #[error("protocol violation: {0}")]
    Protocol(String),
}

/// Everything the link can report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("invalid cluster configuration: {0}")]
    Config(String),
    #[error("cannot listen on {address}: {reason}")]
    Listen { address: String, reason: String },
    #[error("cannot reach the leader at {address} within {timeout_ms} ms: {reason}")]
    Connect { address: String, timeout_ms: u64, reason: String },
    #[error("handshake with {peer} failed: {error}")]
    Handshake { peer: String, error: HandshakeError },
    #[error("follower(s) {} did not join within {timeout_ms} ms{}", ids(.missing), refusals(.refused))]
    MissingFollowers { missing: Vec<u8>, timeout_ms: u64, refused: Vec<String> },
    #[error("variant {variant}: {failure}")]
    Peer { variant: u8, failure: PeerFailure },
    #[error("follower(s) {} did not acknowledge seq {seq} within {timeout_ms} ms", ids(.silent))]
    AckTimeout { seq: u64, silent: Vec<u8>, timeout_ms: u64 },
    #[error("follower(s) {} are more than {max_lag} entries behind and acknowledged nothing new for {timeout_ms} ms", ids(.lagging))]
    LagTimeout { lagging: Vec<u8>, max_lag: u64, timeout_ms: u64 },
    #[error("seq {seq} was never pushed (last pushed: {last})")]
    NotPushed { seq: u64, last: u64 },
    #[error("cannot acknowledge seq {seq}: only {received} entries were received")]
    AckAhead { seq: u64, received: u64 },
    #[error("entry of {len} bytes exceeds the maximum of {max} bytes")]
    EntryTooLarge { len: usize, max: usize },
    #[error("control message payload of {len} bytes exceeds the maximum of {max} bytes")]
    ControlTooLarge { len: usize, max: usize },
    #[error("variant {0} is not a follower of this cluster")]
    NotAFollower(u8),
    #[error("a control message from the leader comes before the next entry: take it with next_incoming() or try_recv_control()")]
    ControlPending,
    #[error("the link's I/O thread stopped unexpectedly")]
    IoThreadGone,
    #[error("cannot start the link's I/O thread: {0}")]
    Spawn(String),
}

fn ids(ids: &[u8]) -> String {
    let v: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    v.join(", ")
}

fn refusals(refused: &[String]) -> String {
    if refused.is_empty() {
        String::new()
    } else {
        format!("; refused connections: {}", refused.join("; "))
    }
}

/// Locks, ignoring poisoning (no lock here guards a broken invariant).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Idle time after which an endpoint sends a heartbeat.
pub(crate) fn heartbeat_interval(timeout: Duration) -> Duration {
    (timeout / 4).max(Duration::from_millis(1))
}

pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Wakes a blocked synchronous caller when shared state changes. Notifying
/// costs one atomic load when nobody waits, so the I/O thread can notify on
/// every acknowledgement. Waker and waiter both use SeqCst on the state they
/// publish and check, so no wake-up is lost.
pub(crate) struct Signal {
    waiters: AtomicUsize,
    lock: Mutex<()>,
    cv: Condvar,
}

impl Signal {
    pub(crate) fn new() -> Self {
        Signal { waiters: AtomicUsize::new(0), lock: Mutex::new(()), cv: Condvar::new() }
    }

    pub(crate) fn notify(&self) {
        if self.waiters.load(Ordering::SeqCst) > 0 {
            let _guard = lock(&self.lock);
            self.cv.notify_all();
        }
    }

    /// Blocks until `ready()` or `deadline`; returns the last `ready()`.
    pub(crate) fn wait_until(&self, deadline: Instant, mut ready: impl FnMut() -> bool) -> bool {
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let mut guard = lock(&self.lock);
        let result = loop {
            if ready() {
                break true;
            }
            let now = Instant::now();
            if now >= deadline {
                break false;
            }
            guard = self.cv.wait_timeout(guard, deadline - now).unwrap_or_else(PoisonError::into_inner).0;
        };
        drop(guard);
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        result
    }
}

/// Recycled byte buffers, so steady-state batching allocates nothing.
pub(crate) struct Pool {
    free: Mutex<Vec<Vec<u8>>>,
    capacity: usize,
}

const POOL_KEEP: usize = 64;
const POOL_MAX_BUFFER: usize = 1 << 20;

impl Pool {
    pub(crate) fn new(capacity: usize) -> Self {
        Pool { free: Mutex::new(Vec::with_capacity(POOL_KEEP)), capacity }
    }

    pub(crate) fn get(&self) -> Vec<u8> {
        lock(&self.free).pop().unwrap_or_else(|| Vec::with_capacity(self.capacity))
    }

    pub(crate) fn put(&self, mut buf: Vec<u8>) {
        if buf.capacity() > POOL_MAX_BUFFER.max(self.capacity) {
            return;
        }
        buf.clear();
        let mut free = lock(&self.free);
        if free.len() < POOL_KEEP {
            free.push(buf);
        }
    }
}

/// Reads and opens one sealed frame into `buf`; returns the plaintext length.
pub(crate) async fn read_sealed<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut Vec<u8>,
    opener: &mut Opener,
    timeout: Duration,
) -> Result<usize, PeerFailure> {
    let header = match tokio::time::timeout(timeout, read_frame(rd, buf, MAX_FRAME)).await {
        Err(_) => return Err(PeerFailure::Silent(millis(timeout))),
        Ok(Err(FrameError::Closed)) => {
            return Err(PeerFailure::Disconnected("the connection was closed without a goodbye".into()))
        }
        Ok(Err(FrameError::Io(e))) => return Err(PeerFailure::Disconnected(e)),
        Ok(Err(e)) => return Err(PeerFailure::Frame(e)),
        Ok(Ok(header)) => header,
    };
    opener.open_in_place(header, buf).map_err(|e| match e {
        CryptoError::Auth | CryptoError::Short => PeerFailure::Auth,
        CryptoError::Exhausted => PeerFailure::Protocol(e.to_string()),
    })
}

/// Writes `bytes`, failing if the peer does not take them within `timeout`.
pub(crate) async fn write_timeout<W: AsyncWrite + Unpin>(
    wr: &mut W,
    bytes: &[u8],
    timeout: Duration,
) -> Result<(), PeerFailure> {
    match tokio::time::timeout(timeout, wr.write_all(bytes)).await {
        Err(_) => Err(PeerFailure::Stuck(millis(timeout))),
        Ok(Err(e)) => Err(PeerFailure::Disconnected(e.to_string())),
        Ok(Ok(())) => Ok(()),
    }
}

pub(crate) fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build()
}
