//! A follower's end: connects to the leader, receives batches and control
//! messages in order, and sends acknowledgements promptly.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use tokio::io::BufReader;
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::{
    check_own_key, lock, millis, read_sealed, start_io, tx_writer, LinkError, PeerFailure, Pool, Tx, Waker, WakerSlot,
};
use crate::config::{ClusterConfig, Role};
use crate::crypto::Opener;
use crate::frame::FrameError;
use crate::handshake::{self, HandshakeError, HandshakeInfo};
use crate::keys::PrivateKey;
use crate::wire::{self, Control, Decoded, Message, MAX_CONTROL_PAYLOAD};

/// One entry from the leader: its sequence number and its bytes (a slice of
/// the receive buffer, valid until the next call on the follower).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    pub seq: u64,
    pub data: &'a [u8],
}

/// What the leader sent next, in the leader's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming<'a> {
    Entry(Entry<'a>),
    Control(Control),
}

struct RecvBatch {
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    remaining: u64,
}

enum Inbound {
    Batch(RecvBatch, u64),
    Control(Control),
    Failed(LinkError),
}

struct Shared {
    failed: AtomicBool,
    failure: Mutex<Option<LinkError>>,
    inbound: Mutex<Option<std_mpsc::Sender<Inbound>>>,
    /// The sending side, set once connected.
    tx: OnceLock<Arc<Tx>>,
    waker: WakerSlot,
}

impl Shared {
    fn fail(&self, e: LinkError) {
        {
            let mut f = lock(&self.failure);
            if f.is_some() {
                return;
            }
            *f = Some(e.clone());
        }
        self.failed.store(true, Ordering::SeqCst);
        if let Some(tx) = lock(&self.inbound).as_ref() {
            let _ = tx.send(Inbound::Failed(e));
        }
        if let Some(tx) = self.tx.get() {
            tx.finish();
        }
        self.waker.wake();
    }
}

/// A follower's end of its link to the leader.
pub struct Follower {
    id: u8,
    leader_id: u8,
    inbound: std_mpsc::Receiver<Inbound>,
    current: Option<RecvBatch>,
    queued: VecDeque<RecvBatch>,
    /// Control messages with the number of entries the leader sent before each.
    controls: VecDeque<(u64, Control)>,
    /// Entries taken from the I/O thread so far.
    received: u64,
    next_seq: u64,
    failure: Option<LinkError>,
    shared: Arc<Shared>,
    /// Asks the I/O thread to say goodbye and stop.
    bye: mpsc::UnboundedSender<()>,
    pool: Arc<Pool>,
    io: Option<thread::JoinHandle<()>>,
    /// An acknowledgement made with `ack_soon` and not sent yet (seq,
    /// digest), and when the first one still unsent was made.
    deferred: Option<(u64, [u8; 32], Instant)>,
    /// The highest seq acknowledged on the wire (they never go back).
    acked: u64,
    /// Scratch space for encoding acknowledgements.
    plain: Vec<u8>,
}

/// How long `ack_soon` may keep an acknowledgement back.
pub const ACK_DELAY: Duration = Duration::from_micros(200);

impl Follower {
    /// Connects to the leader of `cfg` as follower `my_id`, whose private
    /// key is `key` (retrying until `cfg.timeout`, since the leader may start
    /// later), and authenticates.
    pub fn connect(
        cfg: &ClusterConfig,
        my_id: u8,
        key: &PrivateKey,
        info: &HandshakeInfo,
    ) -> Result<Follower, LinkError> {
        let cfg = &cfg.clone().validate().map_err(|e| LinkError::Config(e.to_string()))?;
        let me = cfg.variant(my_id).map_err(|e| LinkError::Config(e.to_string()))?;
        if me.role != Role::Follower {
            return Err(LinkError::NotAFollower(my_id));
        }
        check_own_key(cfg, my_id, key)?;
        let (in_tx, in_rx) = std_mpsc::channel();
        let shared = Arc::new(Shared {
            failed: AtomicBool::new(false),
            failure: Mutex::new(None),
            inbound: Mutex::new(Some(in_tx.clone())),
            tx: OnceLock::new(),
            waker: WakerSlot::default(),
        });
        let pool = Arc::new(Pool::new(cfg.batch_bytes + 256));
        let (bye_tx, bye_rx) = mpsc::unbounded_channel();
        let io = {
            let (cfg, key, info) = (cfg.clone(), key.clone(), *info);
            let shared = shared.clone();
            let pool = pool.clone();
            start_io(format!("dmvx-sync-follower-{my_id}"), move |ready| {
                follower_io(cfg, my_id, key, info, shared, pool, in_tx, bye_rx, ready)
            })?
        };
        Ok(Follower {
            id: my_id,
            leader_id: cfg.leader().id,
            inbound: in_rx,
            current: None,
            queued: VecDeque::new(),
            controls: VecDeque::new(),
            received: 0,
            next_seq: 1,
            failure: None,
            shared,
            bye: bye_tx,
            pool,
            io: Some(io),
            deferred: None,
            acked: 0,
            plain: Vec::with_capacity(64),
        })
    }

    /// This follower's variant id.
    pub fn id(&self) -> u8 {
        self.id
    }

    /// The seq of the last entry handed out (0 before the first).
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// The next entry, in sequence order; blocks while the link is alive.
    /// A leader silent for the timeout (not even heartbeats) or a broken
    /// link is an error. Control messages that came first stay queued for
    /// [`Follower::try_recv_control`]; [`Follower::next_incoming`] and
    /// [`Follower::next_incoming_timeout`] keep the leader's order.
    pub fn next_entry(&mut self) -> Result<Entry<'_>, LinkError> {
        self.fill(None, false)?;
        self.take_entry()
    }

    /// The next entry or the control message the leader sent before it, in
    /// the leader's order; `None` if neither came within `timeout`.
    pub fn next_incoming_timeout(&mut self, timeout: Duration) -> Result<Option<Incoming<'_>>, LinkError> {
        if self.fill(Some(Instant::now() + timeout), true)? {
            return self.take_entry().map(|e| Some(Incoming::Entry(e)));
        }
        if self.control_due() {
            return Ok(self.controls.pop_front().map(|(_, c)| Incoming::Control(c)));
        }
        Ok(None)
    }

    /// The next entry or control message, strictly in the leader's order.
    pub fn next_incoming(&mut self) -> Result<Incoming<'_>, LinkError> {
        if self.fill(None, true)? {
            return self.take_entry().map(Incoming::Entry);
        }
        match self.controls.pop_front() {
            Some((_, c)) => Ok(Incoming::Control(c)),
            None => Err(LinkError::IoThreadGone),
        }
    }

    /// Acknowledges entry `seq` with the engine's `digest` there, at once
    /// (from the caller's thread). An acknowledgement older than one sent
    /// already is dropped: they never go back. The entry after the last one
    /// received may be acknowledged too: "this variant reached its next
    /// event, with this digest", which a leader waits for before a lockstep
    /// event takes effect (and before it sends that entry).
    pub fn ack(&mut self, seq: u64, digest: [u8; 32]) -> Result<(), LinkError> {
        self.check_ack(seq)?;
        self.deferred = None;
        self.send_ack(seq, digest);
        Ok(())
    }

    fn check_ack(&self, seq: u64) -> Result<(), LinkError> {
        if seq > self.next_seq {
            return Err(LinkError::AckAhead { seq, received: self.next_seq - 1 });
        }
        if self.shared.failed.load(Ordering::Relaxed) {
            return Err(self.sticky_failure());
        }
        Ok(())
    }

    fn send_ack(&mut self, seq: u64, digest: [u8; 32]) {
        if seq < self.acked {
            return;
        }
        self.acked = seq;
        let mut plain = std::mem::take(&mut self.plain);
        plain.clear();
        Message::Ack { seq, digest }.encode_into(&mut plain);
        self.send(&plain);
        self.plain = plain;
    }

    /// Sends one message from this thread; a failure is the link's.
    fn send(&self, plain: &[u8]) {
        if let Some(tx) = self.shared.tx.get() {
            if let Err(failure) = tx.send(plain) {
                self.shared.fail(LinkError::Peer { variant: self.leader_id, failure });
            }
        }
    }

    /// Acknowledges entry `seq` like [`Follower::ack`], but sends it only
    /// when this side is about to wait for the leader, or with a later
    /// `ack_soon` made [`ACK_DELAY`] or more after the first unsent one,
    /// whichever comes first: while the engine runs ahead, one frame
    /// acknowledges many entries (fewer wake-ups on both sides) at a bounded
    /// cost in latency.
    pub fn ack_soon(&mut self, seq: u64, digest: [u8; 32]) -> Result<(), LinkError> {
        self.check_ack(seq)?;
        match self.deferred {
            None => self.deferred = Some((seq, digest, Instant::now())),
            Some((s, d, since)) => {
                let (seq, digest) = if s <= seq { (seq, digest) } else { (s, d) };
                self.deferred = Some((seq, digest, since));
                if since.elapsed() >= ACK_DELAY {
                    self.send_deferred();
                }
            }
        }
        Ok(())
    }

    fn send_deferred(&mut self) {
        if let Some((seq, digest, _)) = self.deferred.take() {
            self.send_ack(seq, digest);
        }
    }

    /// Sends a control message to the leader.
    pub fn send_control(&mut self, control: &Control) -> Result<(), LinkError> {
        // In order: what was acknowledged before the message goes first.
        self.send_deferred();
        if control.payload_len() > MAX_CONTROL_PAYLOAD {
            return Err(LinkError::ControlTooLarge { len: control.payload_len(), max: MAX_CONTROL_PAYLOAD });
        }
        if self.shared.failed.load(Ordering::Relaxed) {
            return Err(self.sticky_failure());
        }
        self.send(&Message::Control(control.clone()).encode());
        Ok(())
    }

    /// A control message from the leader, if one has arrived (possibly ahead
    /// of entries not yet taken; use [`Follower::next_incoming`] for strict order).
    pub fn try_recv_control(&mut self) -> Option<Control> {
        loop {
            if let Some((_, c)) = self.controls.pop_front() {
                return Some(c);
            }
            match self.inbound.try_recv() {
                Ok(item) => self.accept(item),
                Err(_) => return None,
            }
        }
    }

    /// Calls `w` from the link's I/O thread whenever the leader sends a
    /// control message or the link fails (set once).
    pub fn set_waker(&self, w: Waker) {
        self.shared.waker.set(w);
    }

    /// The link's failure, if it failed.
    pub fn check(&self) -> Result<(), LinkError> {
        if self.shared.failed.load(Ordering::SeqCst) {
            Err(self.sticky_failure())
        } else {
            Ok(())
        }
    }

    /// Says goodbye to the leader and stops the I/O thread.
    pub fn close(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(io) = self.io.take() {
            let _ = self.bye.send(());
            let _ = io.join();
        }
    }

    fn sticky_failure(&self) -> LinkError {
        lock(&self.shared.failure).clone().unwrap_or(LinkError::IoThreadGone)
    }

    fn control_due(&self) -> bool {
        self.controls.front().is_some_and(|(before, _)| *before < self.next_seq)
    }

    fn accept(&mut self, item: Inbound) {
        match item {
            Inbound::Batch(b, count) => {
                self.received += count;
                self.queued.push_back(b);
            }
            Inbound::Control(c) => self.controls.push_back((self.received, c)),
            Inbound::Failed(e) => {
                if self.failure.is_none() {
                    self.failure = Some(e);
                }
            }
        }
    }

    /// Makes an entry ready in `current` (true), or stops at a due control
    /// message or the deadline (false).
    /// Makes the next entry current; false if the deadline passed first,
    /// or (with `at_control`) a control message comes before it.
    fn fill(&mut self, deadline: Option<Instant>, at_control: bool) -> Result<bool, LinkError> {
        loop {
            if at_control && self.control_due() {
                return Ok(false);
            }
            if self.current.as_ref().is_some_and(|c| c.remaining > 0) {
                return Ok(true);
            }
            if let Some(done) = self.current.take() {
                self.pool.put(done.buf);
            }
            if let Some(b) = self.queued.pop_front() {
                self.current = Some(b);
                continue;
            }
            if let Some(e) = &self.failure {
                return Err(e.clone());
            }
            if self.deferred.is_some() {
                // About to wait: what was acknowledged goes out first.
                match self.inbound.try_recv() {
                    Ok(item) => {
                        self.accept(item);
                        continue;
                    }
                    Err(_) => self.send_deferred(),
                }
            }
            let item = match deadline {
                None => self.inbound.recv().ok(),
                Some(d) => match self.inbound.recv_timeout(d.saturating_duration_since(Instant::now())) {
                    Ok(item) => Some(item),
                    Err(std_mpsc::RecvTimeoutError::Timeout) => return Ok(false),
                    Err(std_mpsc::RecvTimeoutError::Disconnected) => None,
                },
            };
            match item {
                Some(item) => self.accept(item),
                None => self.failure = Some(self.sticky_failure()),
            }
        }
    }

    fn take_entry(&mut self) -> Result<Entry<'_>, LinkError> {
        let cur = self.current.as_mut().ok_or(LinkError::IoThreadGone)?;
        let body = cur.buf.get(..cur.end).unwrap_or_default();
        // The I/O thread checked the whole batch, so this cannot fail; stay
        // defensive anyway.
        let data = wire::next_entry(body, &mut cur.pos).ok_or_else(|| LinkError::Peer {
            variant: self.leader_id,
            failure: PeerFailure::Malformed("batch entry out of bounds".into()),
        })?;
        cur.remaining -= 1;
        let seq = self.next_seq;
        self.next_seq += 1;
        Ok(Entry { seq, data })
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.stop();
    }
}

#[allow(clippy::too_many_arguments)]
async fn follower_io(
    cfg: ClusterConfig,
    my_id: u8,
    key: PrivateKey,
    info: HandshakeInfo,
    shared: Arc<Shared>,
    pool: Arc<Pool>,
    in_tx: std_mpsc::Sender<Inbound>,
    mut bye_rx: mpsc::UnboundedReceiver<()>,
    ready: std_mpsc::SyncSender<Result<(), LinkError>>,
) {
    let leader = cfg.leader().clone();
    let deadline = tokio::time::Instant::now() + cfg.timeout;
    let connect_err = |reason: String| LinkError::Connect {
        address: leader.address.clone(),
        timeout_ms: millis(cfg.timeout),
        reason,
    };
    let peer = format!("leader (variant {}) at {}", leader.id, leader.address);
    // A connection the leader's side closes before answering (the leader
    // not yet listening behind a proxy or relay) is retried like a refused
    // one, until the cluster timeout.
    let (stream, session) = loop {
        let retry_or = |fail: LinkError| {
            let retry = tokio::time::Instant::now() + Duration::from_millis(50);
            (retry < deadline).then_some(retry).ok_or(fail)
        };
        let outcome = match tokio::time::timeout_at(deadline, TcpStream::connect(&leader.address)).await {
            Err(_) => Err(connect_err("timed out".into())),
            Ok(Err(e)) => retry_or(connect_err(e.to_string())),
            Ok(Ok(mut s)) => {
                let _ = s.set_nodelay(true);
                match tokio::time::timeout_at(deadline, handshake::client(&mut s, &cfg, my_id, &key, &info)).await {
                    Ok(Ok(session)) => break (s, session),
                    Ok(Err(
                        error @ (HandshakeError::Frame(FrameError::Closed | FrameError::Io(_))
                        | HandshakeError::Send(_)),
                    )) => retry_or(LinkError::Handshake { peer: peer.clone(), error }),
                    Ok(Err(error)) => Err(LinkError::Handshake { peer: peer.clone(), error }),
                    Err(_) => Err(LinkError::Handshake {
                        peer: peer.clone(),
                        error: HandshakeError::Timeout(millis(cfg.timeout)),
                    }),
                }
            }
        };
        match outcome {
            Ok(retry) => tokio::time::sleep_until(retry).await,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        }
    };
    let tx = match Tx::new(&stream, session.sealer) {
        Ok(tx) => Arc::new(tx),
        Err(e) => {
            let _ = ready.send(Err(LinkError::Spawn(format!("cannot duplicate the leader's socket: {e}"))));
            return;
        }
    };
    let _ = shared.tx.set(tx.clone());
    let (rd, mut wr) = stream.into_split();
    let reader = tokio::spawn(reader(leader.id, rd, session.opener, shared.clone(), pool, in_tx, cfg.timeout));
    if ready.send(Ok(())).is_err() {
        return;
    }
    if let Err(failure) = tx_writer(&tx, &mut wr, &mut bye_rx, cfg.timeout).await {
        shared.fail(LinkError::Peer { variant: leader.id, failure });
    }
    tx.finish();
    reader.abort();
    // No more inbound items after this: the receiver sees a disconnect.
    lock(&shared.inbound).take();
}

async fn reader(
    leader_id: u8,
    rd: OwnedReadHalf,
    mut opener: Opener,
    shared: Arc<Shared>,
    pool: Arc<Pool>,
    tx: std_mpsc::Sender<Inbound>,
    timeout: Duration,
) {
    let fail = |failure: PeerFailure| shared.fail(LinkError::Peer { variant: leader_id, failure });
    let mut rd = BufReader::with_capacity(64 * 1024, rd);
    let mut expected = 1u64;
    let mut buf = pool.get();
    let mut chunk = Vec::with_capacity(4096);
    loop {
        let n = match read_sealed(&mut rd, &mut chunk, &mut buf, &mut opener, timeout).await {
            Ok(n) => n,
            Err(f) => return fail(f),
        };
        let plain = buf.get(..n).unwrap_or_default();
        let item = match wire::decode(plain) {
            Err(e) => return fail(PeerFailure::Malformed(e.to_string())),
            Ok(Decoded::Batch(view)) => {
                if view.first_seq != expected {
                    return fail(PeerFailure::Protocol(format!(
                        "batch starts at seq {}, expected {expected}",
                        view.first_seq
                    )));
                }
                expected += view.count;
                let (count, pos) = (view.count, view.body_offset);
                let full = std::mem::replace(&mut buf, pool.get());
                let batch = RecvBatch { buf: full, pos, end: n, remaining: count };
                Inbound::Batch(batch, count)
            }
            Ok(Decoded::Other(Message::Control(Control::Heartbeat))) => continue,
            Ok(Decoded::Other(Message::Control(c))) => Inbound::Control(c),
            Ok(Decoded::Other(Message::Bye)) => return fail(PeerFailure::Closed),
            Ok(Decoded::Other(Message::Ack { .. })) => {
                return fail(PeerFailure::Protocol("the leader sent an acknowledgement".into()))
            }
            Ok(Decoded::Other(Message::Batch { .. })) => {
                return fail(PeerFailure::Malformed("unexpected batch encoding".into()))
            }
        };
        let control = matches!(item, Inbound::Control(_));
        if tx.send(item).is_err() {
            return;
        }
        if control {
            shared.waker.wake();
        }
    }
}
