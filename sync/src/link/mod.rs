//! The runtime: authenticated TCP links between the leader and its
//! followers, driven by a tokio runtime on a dedicated I/O thread, with a
//! synchronous API for the VMM's vCPU thread.
//!
//! Hot paths: [`Leader::push`] copies the entry into the current batch buffer
//! (no allocation, no system call); a full or flushed batch is sealed and
//! written to each follower by the caller's thread itself, as are a
//! follower's acknowledgements, so the hot path wakes no other thread.
//! [`Follower::next_entry`] returns a slice of the decrypted frame. The I/O
//! thread reads and opens what arrives, sends heartbeats, and finishes
//! writes the socket did not take at once. Batch buffers are recycled
//! through a pool.

mod follower;
mod leader;

use std::io::Write;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWriteExt};

pub use follower::{Entry, Follower, Incoming, ACK_DELAY};
pub use leader::{AckState, Acked, Leader, BATCH_DELAY};

use crate::config::ClusterConfig;
use crate::crypto::{CryptoError, Opener, Sealer, MAX_NOISE_MESSAGE};
use crate::frame::{read_frame, FrameError};
use crate::handshake::HandshakeError;
use crate::keys::{PrivateKey, PublicKey};
use crate::wire::{Control, Message, MAX_MESSAGE};

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
    #[error(
        "variant {id}'s private key belongs to public key {ours}, but the cluster file lists {listed} for variant {id}"
    )]
    KeyMismatch { id: u8, ours: PublicKey, listed: PublicKey },
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
/// A callback the link's I/O thread calls when a control message arrives or
/// the link fails: the peer wants this side to act even if its program is
/// running code that makes no system call (the VMM kicks its vCPU).
pub type Waker = Box<dyn Fn() + Send + Sync>;

/// Where a link keeps its waker (set once).
#[derive(Default)]
pub(crate) struct WakerSlot(OnceLock<Waker>);

impl WakerSlot {
    pub(crate) fn set(&self, w: Waker) {
        let _ = self.0.set(w);
    }

    pub(crate) fn wake(&self) {
        if let Some(w) = self.0.get() {
            w();
        }
    }
}

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

/// Reads the chunks of one sealed message and opens them into `buf`
/// (cleared first); `chunk` is scratch space for one chunk's ciphertext.
/// Returns the plaintext length.
pub(crate) async fn read_sealed<R: AsyncRead + Unpin>(
    rd: &mut R,
    chunk: &mut Vec<u8>,
    buf: &mut Vec<u8>,
    opener: &mut Opener,
    timeout: Duration,
) -> Result<usize, PeerFailure> {
    buf.clear();
    let read = async {
        loop {
            match read_frame(rd, chunk, MAX_NOISE_MESSAGE).await {
                Ok(()) => {}
                Err(FrameError::Closed) if buf.is_empty() => {
                    return Err(PeerFailure::Disconnected("the connection was closed without a goodbye".into()))
                }
                Err(FrameError::Closed) => {
                    return Err(PeerFailure::Disconnected(format!(
                        "the connection was closed in the middle of a message (after {} bytes)",
                        buf.len()
                    )))
                }
                Err(FrameError::Io(e)) => return Err(PeerFailure::Disconnected(e)),
                Err(e) => return Err(PeerFailure::Frame(e)),
            }
            let last = opener.open_chunk(chunk, buf).map_err(|e| match e {
                CryptoError::Auth | CryptoError::Short => PeerFailure::Auth,
                CryptoError::BadFlag(_) => PeerFailure::Malformed(e.to_string()),
                CryptoError::Exhausted => PeerFailure::Protocol(e.to_string()),
            })?;
            if buf.len() > MAX_MESSAGE {
                return Err(PeerFailure::Frame(FrameError::TooLarge { len: buf.len(), max: MAX_MESSAGE }));
            }
            if last {
                return Ok(buf.len());
            }
        }
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(result) => result,
        Err(_) => Err(PeerFailure::Silent(millis(timeout))),
    }
}

/// Checks that `key` is the private half of variant `id`'s listed key.
pub(crate) fn check_own_key(cfg: &ClusterConfig, id: u8, key: &PrivateKey) -> Result<(), LinkError> {
    let listed = cfg.variant(id).map_err(|e| LinkError::Config(e.to_string()))?.public_key;
    let ours = key.public();
    if ours != listed {
        return Err(LinkError::KeyMismatch { id, ours, listed });
    }
    Ok(())
}

static IO_THREAD_START: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Sets what every link I/O thread runs first, before any I/O: the VMM
/// installs that thread's seccomp filter there. Set once per process.
pub fn on_io_thread_start(f: fn()) {
    let _ = IO_THREAD_START.set(f);
}

/// Starts the link's I/O thread `name`, running `io(ready)` on a
/// single-threaded tokio runtime, and waits until `io` reports on `ready`
/// that the link is up (or why not).
pub(crate) fn start_io<F, Fut>(name: String, io: F) -> Result<std::thread::JoinHandle<()>, LinkError>
where
    F: FnOnce(std::sync::mpsc::SyncSender<Result<(), LinkError>>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
    let thread = std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            if let Some(start) = IO_THREAD_START.get() {
                start();
            }
            let rt = match tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build() {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(LinkError::Spawn(e.to_string())));
                    return;
                }
            };
            rt.block_on(io(ready_tx));
        })
        .map_err(|e| LinkError::Spawn(e.to_string()))?;
    if let Err(e) = ready_rx.recv().unwrap_or(Err(LinkError::IoThreadGone)) {
        let _ = thread.join();
        return Err(e);
    }
    Ok(thread)
}

/// The sending side of one connection, shared by the engine's thread and
/// the I/O thread. The engine seals and writes its frames itself (no
/// hand-off, no wake-up of the I/O thread on the hot path); whatever the
/// socket does not take at once stays in `out` for the I/O thread's writer
/// task, which also sends heartbeats and the goodbye. One lock keeps the
/// sealing order (the nonce counter) and the byte order the same.
pub(crate) struct Tx {
    /// A duplicate of the I/O thread's socket, written directly; non-blocking.
    sock: std::net::TcpStream,
    state: Mutex<TxState>,
    /// Asks the writer task to take over a backlog.
    kick: tokio::sync::Notify,
}

pub(crate) struct TxState {
    sealer: Sealer,
    /// Sealed bytes not written yet, from `pos`.
    out: Vec<u8>,
    pos: usize,
    /// The writer task owns the backlog: it waits for the socket to drain.
    backlogged: bool,
    /// Nothing more is sent (the link failed or said goodbye).
    done: bool,
    last_send: Instant,
}

impl TxState {
    /// Seals `plain` after what is pending; false once sending is done.
    fn seal(&mut self, plain: &[u8]) -> Result<bool, PeerFailure> {
        if self.done {
            return Ok(false);
        }
        self.sealer.seal_into(plain, &mut self.out).map_err(|e| PeerFailure::Protocol(e.to_string()))?;
        self.last_send = Instant::now();
        Ok(true)
    }

    /// Writes what is pending; returns whether bytes remain.
    fn write_some(&mut self, mut write: impl FnMut(&[u8]) -> std::io::Result<usize>) -> std::io::Result<bool> {
        while self.pos < self.out.len() {
            match write(self.out.get(self.pos..).unwrap_or_default()) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => self.pos += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if self.pos > self.out.len() / 2 {
                        self.out.drain(..self.pos);
                        self.pos = 0;
                    }
                    return Ok(true);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        self.pos = 0;
        Ok(false)
    }
}

impl Tx {
    /// `stream` is the connection before it is split for tokio.
    pub(crate) fn new(stream: &tokio::net::TcpStream, sealer: Sealer) -> std::io::Result<Tx> {
        let sock = std::net::TcpStream::from(stream.as_fd().try_clone_to_owned()?);
        sock.set_nonblocking(true)?;
        Ok(Tx {
            sock,
            state: Mutex::new(TxState {
                sealer,
                out: Vec::with_capacity(64 * 1024),
                pos: 0,
                backlogged: false,
                done: false,
                last_send: Instant::now(),
            }),
            kick: tokio::sync::Notify::new(),
        })
    }

    /// Seals `plain` and sends it now if the socket takes it; otherwise the
    /// writer task sends the rest when it can.
    pub(crate) fn send(&self, plain: &[u8]) -> Result<(), PeerFailure> {
        let mut st = lock(&self.state);
        if !st.seal(plain)? || st.backlogged {
            return Ok(());
        }
        match st.write_some(|b| (&self.sock).write(b)) {
            Ok(false) => Ok(()),
            Ok(true) => {
                st.backlogged = true;
                drop(st);
                self.kick.notify_one();
                Ok(())
            }
            Err(e) => {
                st.done = true;
                Err(PeerFailure::Disconnected(e.to_string()))
            }
        }
    }

    /// Stops all sending (the writer task is gone).
    pub(crate) fn finish(&self) {
        lock(&self.state).done = true;
    }
}

/// What the writer task is asked to do when it wakes.
enum WriterWake {
    Kick,
    Heartbeat,
    Bye,
}

/// The I/O thread's half of a [`Tx`]: drains backlogs (failing if the peer
/// takes nothing for `timeout`), sends a heartbeat after `heartbeat_interval`
/// of silence, and the goodbye on `bye`. Returns the failure, if any.
pub(crate) async fn tx_writer(
    tx: &Tx,
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    bye: &mut tokio::sync::mpsc::UnboundedReceiver<()>,
    timeout: Duration,
) -> Result<(), PeerFailure> {
    let heartbeat = Message::Control(Control::Heartbeat).encode();
    let goodbye = Message::Bye.encode();
    let idle = heartbeat_interval(timeout);
    loop {
        let last = lock(&tx.state).last_send;
        let wake = tokio::select! {
            biased;
            _ = bye.recv() => WriterWake::Bye,
            _ = tx.kick.notified() => WriterWake::Kick,
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(last + idle)) => WriterWake::Heartbeat,
        };
        let plain = match wake {
            WriterWake::Kick => None,
            WriterWake::Heartbeat if lock(&tx.state).last_send + idle <= Instant::now() => Some(&heartbeat),
            WriterWake::Heartbeat => None,
            WriterWake::Bye => Some(&goodbye),
        };
        if let Some(plain) = plain {
            let mut st = lock(&tx.state);
            if !st.seal(plain)? {
                return Ok(());
            }
            st.backlogged = true;
        }
        // Drain: the engine appends meanwhile, but does not write while
        // the backlog is the writer's.
        loop {
            let pending = {
                let mut st = lock(&tx.state);
                if !st.backlogged {
                    break;
                }
                let pending = st.write_some(|b| wr.try_write(b)).map_err(|e| {
                    st.done = true;
                    PeerFailure::Disconnected(e.to_string())
                })?;
                st.backlogged = pending;
                pending
            };
            if !pending {
                break;
            }
            match tokio::time::timeout(timeout, wr.writable()).await {
                Err(_) => return Err(PeerFailure::Stuck(millis(timeout))),
                Ok(Err(e)) => return Err(PeerFailure::Disconnected(e.to_string())),
                Ok(Ok(())) => {}
            }
        }
        if matches!(wake, WriterWake::Bye) {
            tx.finish();
            let _ = wr.shutdown().await;
            return Ok(());
        }
    }
}
