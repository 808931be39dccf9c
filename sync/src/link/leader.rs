//! The leader's end: accepts and authenticates every follower, then streams
//! batches to all of them and collects their acknowledgements.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use tokio::io::BufReader;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::{
    check_own_key, lock, millis, read_sealed, start_io, tx_writer, LinkError, PeerFailure, Pool, Signal, Tx, Waker,
    WakerSlot,
};
use crate::config::{ClusterConfig, MAX_VARIANTS};
use crate::crypto::Opener;
use crate::handshake::{self, HandshakeError, HandshakeInfo, Session};
use crate::keys::PrivateKey;
use crate::wire::{self, BatchBuilder, Control, Decoded, Message, BATCH_HEADROOM, MAX_CONTROL_PAYLOAD, MAX_ENTRY};

/// How long an entry may wait in a batch that is neither full nor flushed.
pub const BATCH_DELAY: Duration = Duration::from_micros(200);

/// A follower's latest acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckState {
    pub variant: u8,
    pub seq: u64,
    pub digest: [u8; 32],
}

struct Slot {
    id: u8,
    acked: AtomicU64,
    latest: Mutex<AckState>,
    failure: Mutex<Option<PeerFailure>>,
}

/// A descriptor the engine can poll together with its own: readable after
/// something happened on the link while armed.
struct Wake {
    armed: AtomicBool,
    tx: UnixStream,
    rx: UnixStream,
}

impl Wake {
    fn new() -> std::io::Result<Wake> {
        let (tx, rx) = UnixStream::pair()?;
        tx.set_nonblocking(true)?;
        rx.set_nonblocking(true)?;
        Ok(Wake { armed: AtomicBool::new(false), tx, rx })
    }

    fn ring(&self) {
        if self.armed.load(Ordering::SeqCst) {
            // Full means a wake-up is pending already.
            let _ = (&self.tx).write(&[1]);
        }
    }
}

struct Shared {
    slots: Vec<Slot>,
    signal: Signal,
    wake: Wake,
    failed: AtomicBool,
    first_failure: Mutex<Option<LinkError>>,
    /// Highest seq sent to the followers.
    sent: AtomicU64,
    controls: Mutex<VecDeque<(u8, Control)>>,
    /// Each follower's sending side, by slot; set once every follower joined.
    txs: OnceLock<Vec<Arc<Tx>>>,
    waker: WakerSlot,
}

impl Shared {
    fn fail(&self, slot: usize, failure: PeerFailure) {
        let Some(s) = self.slots.get(slot) else {
            return;
        };
        {
            let mut f = lock(&s.failure);
            if f.is_some() {
                return;
            }
            *f = Some(failure.clone());
        }
        let mut first = lock(&self.first_failure);
        if first.is_none() {
            *first = Some(LinkError::Peer { variant: s.id, failure });
        }
        drop(first);
        if let Some(tx) = self.txs.get().and_then(|t| t.get(slot)) {
            tx.finish();
        }
        self.failed.store(true, Ordering::SeqCst);
        self.notify();
        self.waker.wake();
    }

    /// Sends one message to every follower (or to `to` only), from the
    /// caller's thread.
    fn send(&self, to: Option<u8>, plain: &[u8]) {
        let Some(txs) = self.txs.get() else {
            return;
        };
        for (slot, (s, tx)) in self.slots.iter().zip(txs).enumerate() {
            if to.is_none_or(|t| t == s.id) {
                if let Err(f) = tx.send(plain) {
                    self.fail(slot, f);
                }
            }
        }
    }

    fn notify(&self) {
        self.signal.notify();
        self.wake.ring();
    }

    fn failure(&self) -> Option<LinkError> {
        if !self.failed.load(Ordering::SeqCst) {
            return None;
        }
        lock(&self.first_failure).clone()
    }

    fn min_acked(&self) -> Option<u64> {
        self.slots.iter().map(|s| s.acked.load(Ordering::SeqCst)).min()
    }
}

/// How a wait for acknowledgements ended.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acked {
    /// Every follower acknowledged.
    All,
    /// A follower sent a control message first: take it, then wait again.
    ControlWaiting,
}

/// The leader's end of the cluster's links.
pub struct Leader {
    shared: Arc<Shared>,
    /// Asks the I/O thread to say goodbye to every follower and stop.
    close: mpsc::UnboundedSender<()>,
    io: Option<thread::JoinHandle<()>>,
    pool: Arc<Pool>,
    batch: BatchBuilder,
    next_seq: u64,
    /// A lower bound of the slowest follower's acknowledged seq.
    floor: u64,
    batch_bytes: usize,
    /// When the first entry of the pending batch was pushed.
    batch_started: Instant,
    max_lag: u64,
    timeout: Duration,
    local_addr: SocketAddr,
}

impl Leader {
    /// Listens on the leader's address, accepts and authenticates every
    /// follower of `cfg` (within `cfg.timeout`), and starts the I/O thread.
    /// `key` is the leader's private key.
    pub fn start(cfg: &ClusterConfig, key: &PrivateKey, info: &HandshakeInfo) -> Result<Leader, LinkError> {
        check_own_key(cfg, cfg.leader().id, key)?;
        let address = &cfg.leader().address;
        let listener = std::net::TcpListener::bind(address)
            .map_err(|e| LinkError::Listen { address: address.clone(), reason: e.to_string() })?;
        Self::start_on(listener, cfg, key, info)
    }

    /// Like [`Leader::start`], on a listener the caller bound already (for
    /// socket activation, or to listen on port 0 and learn the port first).
    pub fn start_on(
        listener: std::net::TcpListener,
        cfg: &ClusterConfig,
        key: &PrivateKey,
        info: &HandshakeInfo,
    ) -> Result<Leader, LinkError> {
        // The fields are public: check what the caller may have edited.
        let cfg = &cfg.clone().validate().map_err(|e| LinkError::Config(e.to_string()))?;
        check_own_key(cfg, cfg.leader().id, key)?;
        let address = cfg.leader().address.clone();
        let listen_err = |e: std::io::Error| LinkError::Listen { address: address.clone(), reason: e.to_string() };
        listener.set_nonblocking(true).map_err(listen_err)?;
        let local_addr = listener.local_addr().map_err(listen_err)?;

        let shared = Arc::new(Shared {
            slots: cfg
                .followers()
                .map(|v| Slot {
                    id: v.id,
                    acked: AtomicU64::new(0),
                    latest: Mutex::new(AckState { variant: v.id, seq: 0, digest: [0; 32] }),
                    failure: Mutex::new(None),
                })
                .collect(),
            signal: Signal::new(),
            wake: Wake::new().map_err(|e| LinkError::Spawn(format!("cannot create the wake-up socket pair: {e}")))?,
            failed: AtomicBool::new(false),
            first_failure: Mutex::new(None),
            sent: AtomicU64::new(0),
            controls: Mutex::new(VecDeque::new()),
            waker: WakerSlot::default(),
            txs: OnceLock::new(),
        });
        let pool = Arc::new(Pool::new(cfg.batch_bytes + BATCH_HEADROOM + 64));
        let (close_tx, close_rx) = mpsc::unbounded_channel();
        let io = {
            let (cfg, key, info) = (cfg.clone(), key.clone(), *info);
            let shared = shared.clone();
            start_io("dmvx-sync-leader".into(), move |ready| {
                leader_io(cfg, key, info, listener, shared, close_rx, ready)
            })?
        };
        let batch = BatchBuilder::with_buffer(pool.get(), 1);
        Ok(Leader {
            shared,
            close: close_tx,
            io: Some(io),
            pool,
            batch,
            next_seq: 1,
            floor: 0,
            batch_bytes: cfg.batch_bytes,
            batch_started: Instant::now(),
            max_lag: cfg.max_lag,
            timeout: cfg.timeout,
            local_addr,
        })
    }

    /// The address the leader listened on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Appends one entry to the current batch and returns its sequence
    /// number (the first is 1). Sends the batch once it reaches
    /// `batch_bytes`. Blocks while the slowest follower is more than
    /// `max_lag` entries behind; fails if it makes no progress for the
    /// timeout, or if any follower has failed.
    pub fn push(&mut self, entry: &[u8]) -> Result<u64, LinkError> {
        if entry.len() > MAX_ENTRY {
            return Err(LinkError::EntryTooLarge { len: entry.len(), max: MAX_ENTRY });
        }
        if self.shared.failed.load(Ordering::Relaxed) {
            return Err(self.failure());
        }
        let seq = self.next_seq;
        if seq - self.floor > self.max_lag {
            self.wait_for_room(seq)?;
        }
        if !self.batch.is_empty() && self.batch.body_len() + entry.len() + 10 > self.batch_bytes {
            self.send_batch()?;
        }
        let first = self.batch.is_empty();
        self.batch.push(entry);
        self.next_seq += 1;
        // A batch goes out when full, when flushed (the engine is about to
        // wait), or once its first entry is BATCH_DELAY old: followers get
        // entries promptly while the program runs without waiting.
        let now = Instant::now();
        if first {
            self.batch_started = now;
        }
        if self.batch.body_len() >= self.batch_bytes || now.duration_since(self.batch_started) >= BATCH_DELAY {
            self.send_batch()?;
        }
        Ok(seq)
    }

    /// Sends the pending batch now (no-op if empty).
    pub fn flush(&mut self) -> Result<(), LinkError> {
        if self.shared.failed.load(Ordering::Relaxed) {
            return Err(self.failure());
        }
        self.send_batch()
    }

    /// The sequence number of the last pushed entry (0 before the first).
    pub fn last_pushed(&self) -> u64 {
        self.next_seq - 1
    }

    /// The minimum over followers of their acknowledged seq (with no
    /// followers, the last pushed seq). Cheap: a few atomic loads.
    pub fn acked(&self) -> u64 {
        self.shared.min_acked().unwrap_or(self.next_seq - 1)
    }

    /// Each follower's latest acknowledgement, by increasing variant id.
    pub fn acks(&self) -> impl Iterator<Item = AckState> + '_ {
        self.shared.slots.iter().map(|s| *lock(&s.latest))
    }

    /// Follower `variant`'s latest acknowledgement.
    pub fn ack_of(&self, variant: u8) -> Option<AckState> {
        self.shared.slots.iter().find(|s| s.id == variant).map(|s| *lock(&s.latest))
    }

    /// A descriptor that becomes readable when, while armed, a follower
    /// acknowledges, sends a control message or fails: the engine polls it
    /// together with the program's descriptors, to release held output
    /// while the program waits.
    pub fn wake_fd(&self) -> BorrowedFd<'_> {
        self.shared.wake.rx.as_fd()
    }

    /// Arms the wake descriptor. Look at the link's state after arming:
    /// anything that happens later makes the descriptor readable.
    pub fn arm_wake(&self) {
        self.shared.wake.armed.store(true, Ordering::SeqCst);
    }

    /// Disarms the wake descriptor and empties it.
    pub fn disarm_wake(&self) {
        self.shared.wake.armed.store(false, Ordering::SeqCst);
        let mut buf = [0u8; 64];
        while matches!((&self.shared.wake.rx).read(&mut buf), Ok(n) if n > 0) {}
    }

    /// The followers' variant ids.
    pub fn followers(&self) -> impl Iterator<Item = u8> + '_ {
        self.shared.slots.iter().map(|s| s.id)
    }

    /// Calls `w` from the link's I/O thread whenever a follower sends a
    /// control message or fails (set once).
    pub fn set_waker(&self, w: Waker) {
        self.shared.waker.set(w);
    }

    /// The first failure of any follower, if one failed.
    pub fn check(&self) -> Result<(), LinkError> {
        match self.shared.failure() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Flushes, then blocks until every follower acknowledged `seq` or
    /// later. `seq` may be the next entry, not pushed yet: followers that
    /// reached it acknowledge it ahead (lockstep). On timeout the error
    /// names the followers that did not. A control message from a follower
    /// ends the wait early with [`Acked::ControlWaiting`]: take it with
    /// `try_recv_control`, then wait again.
    pub fn wait_acked(&mut self, seq: u64, timeout: Duration) -> Result<Acked, LinkError> {
        if seq > self.next_seq {
            return Err(LinkError::NotPushed { seq, last: self.next_seq - 1 });
        }
        self.flush()?;
        let deadline = Instant::now() + timeout;
        let shared = &*self.shared;
        let done = || shared.min_acked().is_none_or(|m| m >= seq);
        loop {
            if done() {
                return Ok(Acked::All);
            }
            if let Some(e) = shared.failure() {
                return Err(e);
            }
            if Instant::now() >= deadline {
                return Err(LinkError::AckTimeout {
                    seq,
                    silent: shared
                        .slots
                        .iter()
                        .filter(|s| s.acked.load(Ordering::SeqCst) < seq)
                        .map(|s| s.id)
                        .collect(),
                    timeout_ms: millis(timeout),
                });
            }
            if !lock(&shared.controls).is_empty() {
                // A follower said something (a divergence report, say): the
                // engine must hear it before waiting on.
                return Ok(Acked::ControlWaiting);
            }
            shared.signal.wait_until(deadline, || {
                done() || shared.failed.load(Ordering::SeqCst) || !lock(&shared.controls).is_empty()
            });
        }
    }

    /// Sends a control message to every follower, after all entries pushed
    /// so far.
    pub fn send_control(&mut self, control: &Control) -> Result<(), LinkError> {
        self.control(None, control)
    }

    /// Sends a control message to follower `variant` only.
    pub fn send_control_to(&mut self, variant: u8, control: &Control) -> Result<(), LinkError> {
        if !self.shared.slots.iter().any(|s| s.id == variant) {
            return Err(LinkError::NotAFollower(variant));
        }
        self.control(Some(variant), control)
    }

    fn control(&mut self, to: Option<u8>, control: &Control) -> Result<(), LinkError> {
        if control.payload_len() > MAX_CONTROL_PAYLOAD {
            return Err(LinkError::ControlTooLarge { len: control.payload_len(), max: MAX_CONTROL_PAYLOAD });
        }
        self.flush()?;
        self.shared.send(to, &Message::Control(control.clone()).encode());
        Ok(())
    }

    /// A control message from a follower, if one is waiting: (variant, message).
    pub fn try_recv_control(&self) -> Option<(u8, Control)> {
        lock(&self.shared.controls).pop_front()
    }

    /// Waits up to `timeout` for a control message from a follower. Fails
    /// if a follower failed and no message is waiting.
    pub fn recv_control_timeout(&self, timeout: Duration) -> Result<Option<(u8, Control)>, LinkError> {
        let deadline = Instant::now() + timeout;
        let shared = &*self.shared;
        loop {
            if let Some(c) = lock(&shared.controls).pop_front() {
                return Ok(Some(c));
            }
            if let Some(e) = shared.failure() {
                return Err(e);
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            shared
                .signal
                .wait_until(deadline, || !lock(&shared.controls).is_empty() || shared.failed.load(Ordering::SeqCst));
        }
    }

    /// Flushes, says goodbye to every follower and stops the I/O thread.
    pub fn close(mut self) -> Result<(), LinkError> {
        let flushed = self.flush();
        self.stop();
        flushed
    }

    fn stop(&mut self) {
        if let Some(io) = self.io.take() {
            let _ = self.close.send(());
            let _ = io.join();
        }
    }

    fn failure(&self) -> LinkError {
        self.shared.failure().unwrap_or(LinkError::IoThreadGone)
    }

    fn send_batch(&mut self) -> Result<(), LinkError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let next = BatchBuilder::with_buffer(self.pool.get(), self.next_seq);
        let batch = std::mem::replace(&mut self.batch, next);
        self.shared.sent.store(self.next_seq - 1, Ordering::SeqCst);
        let (buf, start) = batch.finish();
        self.shared.send(None, buf.get(start..).unwrap_or_default());
        self.pool.put(buf);
        Ok(())
    }

    /// Blocks until the slowest follower acknowledged `seq - max_lag`.
    fn wait_for_room(&mut self, seq: u64) -> Result<(), LinkError> {
        let need = seq - self.max_lag;
        if let Some(m) = self.shared.min_acked() {
            self.floor = m;
        } else {
            self.floor = seq;
        }
        if self.floor >= need {
            return Ok(());
        }
        // The followers cannot acknowledge what they have not received.
        self.send_batch()?;
        let shared = self.shared.clone();
        let mut best = self.floor;
        let mut deadline = Instant::now() + self.timeout;
        loop {
            if let Some(e) = shared.failure() {
                return Err(e);
            }
            let m = shared.min_acked().unwrap_or(seq);
            if m >= need {
                self.floor = m;
                return Ok(());
            }
            let now = Instant::now();
            if m > best {
                best = m;
                deadline = now + self.timeout;
            } else if now >= deadline {
                return Err(LinkError::LagTimeout {
                    lagging: shared
                        .slots
                        .iter()
                        .filter(|s| s.acked.load(Ordering::SeqCst) < need)
                        .map(|s| s.id)
                        .collect(),
                    max_lag: self.max_lag,
                    timeout_ms: millis(self.timeout),
                });
            }
            shared.signal.wait_until(deadline, || {
                shared.min_acked().unwrap_or(seq) > best || shared.failed.load(Ordering::SeqCst)
            });
        }
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        let _ = self.send_batch();
        self.stop();
    }
}

type Joined = (u8, TcpStream, Session);

async fn leader_io(
    cfg: ClusterConfig,
    key: PrivateKey,
    info: HandshakeInfo,
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    mut close_rx: mpsc::UnboundedReceiver<()>,
    ready: std::sync::mpsc::SyncSender<Result<(), LinkError>>,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(LinkError::Listen { address: cfg.leader().address.clone(), reason: e.to_string() }));
            return;
        }
    };
    let joined = match accept_all(&listener, &cfg, &key, &info).await {
        Ok(j) => j,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    drop(listener);

    let mut writers = Vec::new();
    let mut readers = Vec::new();
    let mut byes = Vec::new();
    let mut txs: Vec<Option<Arc<Tx>>> = shared.slots.iter().map(|_| None).collect();
    for (id, stream, session) in joined {
        let Some(slot) = shared.slots.iter().position(|s| s.id == id) else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let tx = match Tx::new(&stream, session.sealer) {
            Ok(tx) => Arc::new(tx),
            Err(e) => {
                let _ = ready.send(Err(LinkError::Spawn(format!("cannot duplicate the socket of variant {id}: {e}"))));
                return;
            }
        };
        let (rd, wr) = stream.into_split();
        let (bye_tx, bye_rx) = mpsc::unbounded_channel();
        byes.push(bye_tx);
        if let Some(t) = txs.get_mut(slot) {
            *t = Some(tx.clone());
        }
        writers.push(tokio::spawn(writer(slot, shared.clone(), tx, wr, bye_rx, cfg.timeout)));
        readers.push(tokio::spawn(reader(slot, shared.clone(), rd, session.opener, cfg.timeout)));
    }
    // accept_all returned every follower of the configuration.
    let Some(txs) = txs.into_iter().collect::<Option<Vec<_>>>() else {
        let _ = ready.send(Err(LinkError::Spawn("a follower's connection is missing".into())));
        return;
    };
    let _ = shared.txs.set(txs);
    if ready.send(Ok(())).is_err() {
        return;
    }

    // Runs until the engine closes the link (or drops it).
    let _ = close_rx.recv().await;
    for bye in &byes {
        let _ = bye.send(());
    }
    drop(byes);
    let _ = tokio::time::timeout(cfg.timeout, async {
        for w in writers {
            let _ = w.await;
        }
    })
    .await;
    for r in readers {
        r.abort();
    }
}

/// Accepts connections until every follower has joined, running the
/// handshakes concurrently. Strangers and failed handshakes are refused and
/// listed; a member that proved the key but disagrees (digests) ends the
/// wait at once.
async fn accept_all(
    listener: &TcpListener,
    cfg: &ClusterConfig,
    key: &PrivateKey,
    info: &HandshakeInfo,
) -> Result<Vec<Joined>, LinkError> {
    let deadline = tokio::time::Instant::now() + cfg.timeout;
    let wanted: Vec<u8> = cfg.followers().map(|v| v.id).collect();
    let claimed = Arc::new(Mutex::new([false; MAX_VARIANTS as usize]));
    let mut tasks = JoinSet::new();
    let mut joined: Vec<Joined> = Vec::new();
    let mut refused = Vec::new();
    while joined.len() < wanted.len() {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((mut stream, peer)) => {
                    let (cfg, key, info) = (cfg.clone(), key.clone(), *info);
                    let claimed = claimed.clone();
                    tasks.spawn(async move {
                        let claim = |id: u8| {
                            let mut c = lock(&claimed);
                            match c.get_mut(usize::from(id)) {
                                Some(taken) if !*taken => {
                                    *taken = true;
                                    true
                                }
                                _ => false,
                            }
                        };
                        let result = tokio::time::timeout(
                            cfg.timeout,
                            handshake::server(&mut stream, &cfg, &key, &info, claim),
                        )
                        .await;
                        (peer, stream, result)
                    });
                }
                Err(e) => {
                    refused.push(format!("accept failed: {e}"));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(done) = tasks.join_next(), if !tasks.is_empty() => match done {
                Ok((_, stream, Ok(Ok((id, session))))) => joined.push((id, stream, session)),
                Ok((peer, _, Ok(Err(failure)))) => {
                    let who = match failure.claimed {
                        Some(id) => format!("{peer} (claiming variant {id})"),
                        None => peer.to_string(),
                    };
                    // A member that proved the key but disagrees is a
                    // misconfiguration: stop waiting. A second connection
                    // for an id already joined is refused, the rest go on.
                    let duplicate =
                        matches!(failure.error, HandshakeError::DuplicateVariant { .. });
                    if failure.authenticated && !duplicate {
                        return Err(LinkError::Handshake {
                            peer: who,
                            error: failure.error,
                        });
                    }
                    refused.push(format!("{who}: {}", failure.error));
                }
                Ok((peer, _, Err(_))) => refused.push(format!(
                    "{peer}: the handshake did not complete within {} ms",
                    millis(cfg.timeout)
                )),
                Err(e) => refused.push(format!("handshake task failed: {e}")),
            },
            _ = tokio::time::sleep_until(deadline) => {
                let missing = wanted
                    .iter()
                    .copied()
                    .filter(|id| !joined.iter().any(|j| j.0 == *id))
                    .collect();
                return Err(LinkError::MissingFollowers {
                    missing,
                    timeout_ms: millis(cfg.timeout),
                    refused,
                });
            }
        }
    }
    tasks.abort_all();
    joined.sort_by_key(|j| j.0);
    Ok(joined)
}

async fn writer(
    slot: usize,
    shared: Arc<Shared>,
    tx: Arc<Tx>,
    mut wr: OwnedWriteHalf,
    mut bye: mpsc::UnboundedReceiver<()>,
    timeout: Duration,
) {
    if let Err(f) = tx_writer(&tx, &mut wr, &mut bye, timeout).await {
        shared.fail(slot, f);
    }
    tx.finish();
}

async fn reader(slot: usize, shared: Arc<Shared>, rd: OwnedReadHalf, mut opener: Opener, timeout: Duration) {
    let mut rd = BufReader::with_capacity(64 * 1024, rd);
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = Vec::with_capacity(4096);
    let Some(s) = shared.slots.get(slot) else {
        return;
    };
    loop {
        let n = match read_sealed(&mut rd, &mut chunk, &mut buf, &mut opener, timeout).await {
            Ok(n) => n,
            Err(f) => return shared.fail(slot, f),
        };
        let plain = buf.get(..n).unwrap_or_default();
        let msg = match wire::decode(plain) {
            Ok(Decoded::Other(m)) => m,
            Ok(Decoded::Batch(_)) => return shared.fail(slot, PeerFailure::Protocol("a follower sent a batch".into())),
            Err(e) => return shared.fail(slot, PeerFailure::Malformed(e.to_string())),
        };
        match msg {
            Message::Ack { seq, digest } => {
                let prev = s.acked.load(Ordering::SeqCst);
                let sent = shared.sent.load(Ordering::SeqCst);
                if seq < prev {
                    return shared.fail(
                        slot,
                        PeerFailure::Protocol(format!("acknowledgement went back from seq {prev} to {seq}")),
                    );
                }
                // One ahead: the follower reached the next event (lockstep).
                if seq > sent + 1 {
                    return shared.fail(
                        slot,
                        PeerFailure::Protocol(format!("acknowledged seq {seq}, but only {sent} entries were sent")),
                    );
                }
                *lock(&s.latest) = AckState { variant: s.id, seq, digest };
                s.acked.store(seq, Ordering::SeqCst);
                shared.notify();
            }
            Message::Control(Control::Heartbeat) => {}
            Message::Control(c) => {
                lock(&shared.controls).push_back((s.id, c));
                shared.notify();
                shared.waker.wake();
            }
            Message::Bye => return shared.fail(slot, PeerFailure::Closed),
            Message::Batch { .. } => return shared.fail(slot, PeerFailure::Protocol("a follower sent a batch".into())),
        }
    }
}
