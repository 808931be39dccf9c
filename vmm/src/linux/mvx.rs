//! Linux mode in several variants: each variant boots the same kernel in
//! its own VMM, and the serial console is the monitored output. The
//! leader's bytes reach its stdout at once and stream to the followers
//! (relaxed), which compare their own console with it as both go. How the
//! guest stopped and the stream's length are compared at the end, in
//! lockstep. The variant that sees a difference stops its guest, writes a
//! report, and every variant exits with status 121. The cluster plumbing
//! is process mode's (`monitor::peer`); only the console stream is here.

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use dmvx_sync::record::Event;
use dmvx_sync::report::{Kind, LoggedEvent, PolicyUsed, Report, VariantLog};
use dmvx_sync::{ClusterConfig, Control, Digest, HandshakeInfo, Incoming, LinkError};

use super::devices::Latch;
use super::serial::SerialSink;
use super::{Config, LinuxError, LinuxExit};
use crate::monitor::peer::{self, Link, Peer};

/// Entry tags: console bytes, and the end of the run.
const TAG_BYTES: u8 = 0;
const TAG_END: u8 = 1;
/// The leader ships console output at line ends or in chunks of this size.
const CHUNK: usize = 1024;
/// Console output a follower may be ahead of the leader by (memory bound).
const MAX_AHEAD: usize = 16 << 20;
/// The policy every variant of a Linux-mode cluster runs under.
const POLICY: &[u8] = b"dmvx linux mode: serial console relaxed, end of run lockstep, v1";

/// The state the console sink (on the vCPU thread) and the end of the run share.
struct State {
    link: Link,
    id: u8,
    /// The leader's variant id (a report from it names it).
    leader_id: u8,
    /// Leader: bytes not shipped yet.
    chunk: Vec<u8>,
    /// Console bytes of this variant so far.
    total: u64,
    /// Follower: own and leader bytes not compared yet, from `base` on.
    mine: Vec<u8>,
    theirs: Vec<u8>,
    base: u64,
    /// Follower: the compared part of the current line (for reports).
    line: Vec<u8>,
    /// Follower: where the consoles differ, while this variant's line
    /// completes (for the report), and since when.
    mismatch: Option<(usize, Instant)>,
    /// Follower: the leader's end (its status, its stream length).
    leader_end: Option<(u8, u64)>,
    /// The message, once the variants diverged, and the report.
    diverged: Option<String>,
    report: String,
    /// The last console lines of this variant, for the report.
    tail: Vec<u8>,
    report_dir: PathBuf,
}

/// Console output that goes through the cluster.
struct MvxSink {
    state: Arc<Mutex<State>>,
    stop: Latch,
}

fn lock(s: &Mutex<State>) -> MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

impl SerialSink for MvxSink {
    fn output(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut s = lock(&self.state);
        if s.diverged.is_some() {
            return Ok(());
        }
        s.total += bytes.len() as u64;
        s.tail.extend_from_slice(bytes);
        let excess = s.tail.len().saturating_sub(2048);
        s.tail.drain(..excess);
        let r = if s.link.is_leader() { s.leader_output(bytes) } else { s.follower_output(bytes) };
        if let Err(e) = r {
            s.diverge(e);
        }
        if s.diverged.is_some() {
            self.stop.set();
        }
        Ok(())
    }
}

/// Why the run of the variants cannot go on.
enum Stop {
    /// Different console output or end, seen at this byte offset.
    Differs { offset: u64, leader: String, mine: String },
    /// A peer reported a divergence (its report).
    Reported(Box<Report>),
    /// The link failed.
    Link(LinkError),
}

impl Peer for State {
    fn link(&mut self) -> &mut Link {
        &mut self.link
    }
}

impl State {
    fn leader_output(&mut self, bytes: &[u8]) -> Result<(), Stop> {
        let mut out = io::stdout().lock();
        let _ = out.write_all(bytes);
        if bytes.contains(&b'\n') {
            let _ = out.flush();
        }
        self.chunk.extend_from_slice(bytes);
        if self.chunk.len() >= CHUNK || bytes.contains(&b'\n') {
            self.ship()?;
        }
        self.leader_controls()
    }

    /// Leader: pushes the pending console bytes.
    fn ship(&mut self) -> Result<(), Stop> {
        if self.chunk.is_empty() {
            return Ok(());
        }
        let mut entry = Vec::with_capacity(self.chunk.len() + 1);
        entry.push(TAG_BYTES);
        entry.extend_from_slice(&self.chunk);
        self.chunk.clear();
        self.link.leader().push(&entry).map_err(Stop::Link)?;
        Ok(())
    }

    /// Leader: a follower's divergence report ends the run.
    fn leader_controls(&mut self) -> Result<(), Stop> {
        while let Some((from, c)) = self.link.leader().try_recv_control() {
            if let Control::Divergence { seq, report } = c {
                return Err(Stop::Reported(Box::new(Report::from_peer(&report, seq, from))));
            }
        }
        self.link.leader().check().map_err(Stop::Link)
    }

    fn follower_output(&mut self, bytes: &[u8]) -> Result<(), Stop> {
        self.mine.extend_from_slice(bytes);
        self.pull(Some(Duration::ZERO))?;
        self.compare()?;
        if self.mine.len() > MAX_AHEAD {
            return Err(Stop::Link(LinkError::Config(format!(
                "this variant's console is more than {MAX_AHEAD} bytes ahead of the leader's"
            ))));
        }
        Ok(())
    }

    /// Follower: takes the leader's entries that arrived (waiting up to
    /// `wait` for one, None: until the cluster timeout).
    fn pull(&mut self, wait: Option<Duration>) -> Result<bool, Stop> {
        let mut got = false;
        loop {
            let wait = if got { Duration::ZERO } else { wait.unwrap_or(Duration::from_secs(3600)) };
            let entry = match self.link.follower().next_incoming_timeout(wait) {
                Ok(Some(Incoming::Entry(e))) => (e.seq, e.data.to_vec()),
                Ok(None) => return Ok(got),
                Ok(Some(Incoming::Control(Control::Divergence { seq, report }))) => {
                    return Err(Stop::Reported(Box::new(Report::from_peer(&report, seq, self.leader_id))))
                }
                Ok(Some(Incoming::Control(_))) => continue,
                Err(e) => return Err(Stop::Link(e)),
            };
            got = true;
            let (seq, data) = entry;
            match data.split_first() {
                Some((&TAG_BYTES, bytes)) => {
                    self.theirs.extend_from_slice(bytes);
                    // Received (the leader's back-pressure); the end alone
                    // is acknowledged only once compared.
                    let _ = self.link.follower().ack_soon(seq, [0; 32]);
                }
                Some((&TAG_END, rest)) if rest.len() == 9 => {
                    let total = u64::from_le_bytes(rest[1..9].try_into().expect("8 bytes"));
                    self.leader_end = Some((rest[0], total));
                }
                _ => {
                    return Err(Stop::Link(LinkError::Config(format!("malformed console entry {seq} from the leader"))))
                }
            }
        }
    }

    /// Follower: compares what both consoles have in common. A difference
    /// is reported once this variant's line is complete (or 100 ms later).
    fn compare(&mut self) -> Result<(), Stop> {
        if let Some((i, since)) = self.mismatch {
            let rest = &self.mine[i..];
            if rest.contains(&b'\n') || rest.len() > 240 || since.elapsed() > Duration::from_millis(100) {
                return Err(self.differs(i));
            }
            return Ok(());
        }
        let n = self.mine.len().min(self.theirs.len());
        if let Some(i) = (0..n).find(|&i| self.mine[i] != self.theirs[i]) {
            self.mismatch = Some((i, Instant::now()));
            return self.compare();
        }
        if let Some((_, total)) = self.leader_end {
            if self.base + self.mine.len() as u64 > total {
                return Err(self.differs(n));
            }
        }
        match self.mine[..n].iter().rposition(|&b| b == b'\n') {
            Some(p) => {
                self.line.clear();
                self.line.extend_from_slice(&self.mine[p + 1..n]);
            }
            None => self.line.extend_from_slice(&self.mine[..n]),
        }
        self.line.truncate(4096);
        self.mine.drain(..n);
        self.theirs.drain(..n);
        self.base += n as u64;
        Ok(())
    }

    /// [`State::compare`] when this variant's console has ended: a
    /// difference is reported at once.
    fn compare_now(&mut self) -> Result<(), Stop> {
        self.compare()?;
        match self.mismatch {
            Some((i, _)) => Err(self.differs(i)),
            None => Ok(()),
        }
    }

    fn differs(&self, i: usize) -> Stop {
        // The line the difference is on, in both consoles: its compared
        // start, then each side's own rest.
        let start = self.mine[..i.min(self.mine.len())].iter().rposition(|&b| b == b'\n').map(|p| p + 1);
        let line = |v: &[u8]| {
            let mut text = match start {
                Some(_) => Vec::new(),
                None => self.line.clone(),
            };
            let rest = v.get(start.unwrap_or(0)..).unwrap_or_default();
            let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
            text.extend_from_slice(&rest[..end]);
            let text = String::from_utf8_lossy(&text).trim_end_matches('\r').to_string();
            text.chars().take(240).collect::<String>()
        };
        Stop::Differs { offset: self.base + i as u64, leader: line(&self.theirs), mine: line(&self.mine) }
    }

    /// Records the divergence: the report (written) and what to print.
    fn diverge(&mut self, stop: Stop) {
        let (text, message) = match stop {
            Stop::Reported(r) => (r.to_json(), r.message),
            Stop::Link(e) => {
                let message = format!("the link to the other variants failed: {e}");
                (self.report(Kind::Link, &message, self.total, None, None).to_json(), message)
            }
            Stop::Differs { offset, leader, mine } => {
                let who = self.id;
                let message = if self.leader_end.is_some_and(|(_, t)| offset >= t) && mine.len() > leader.len() {
                    format!("variant {who}'s console goes on after the leader's ended at byte {offset}: {mine:?}")
                } else {
                    format!(
                        "variant {who}'s console differs from the leader's at byte {offset}: leader {leader:?}, variant {who} {mine:?}"
                    )
                };
                let ev = |text: String| Event::Serial { offset, text };
                let report = self.report(Kind::Records, &message, offset, Some(ev(leader)), Some(ev(mine)));
                let json = report.to_json();
                if let Link::Follower(f) = &mut self.link {
                    let _ = f.send_control(&Control::Divergence { seq: offset, report: json.clone().into_bytes() });
                }
                (json, message)
            }
        };
        peer::write_report(&self.report_dir, &peer::report_name(self.id, None), &text);
        self.report = text;
        self.diverged = Some(message);
    }

    fn report(&self, kind: Kind, message: &str, offset: u64, leader: Option<Event>, other: Option<Event>) -> Report {
        let tail = String::from_utf8_lossy(&self.tail).into_owned();
        let events = tail
            .lines()
            .rev()
            .take(16)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .map(|l| LoggedEvent { seq: 0, event: Event::Serial { offset: 0, text: l.to_string() }, ret: 0 })
            .collect();
        Report {
            kind,
            message: message.to_string(),
            seq: offset,
            variant: self.id as u32,
            detected_by: self.id as u32,
            policy: PolicyUsed { class: "serial".into(), check: "relaxed".into(), input: "local".into() },
            leader,
            other,
            took_effect: false,
            forensic: vec![VariantLog { variant: self.id as u32, events, layout: None }],
        }
    }
}

/// A cluster to join in Linux mode.
pub struct Join {
    pub cfg: ClusterConfig,
    /// This variant's private key.
    pub key: dmvx_sync::PrivateKey,
    pub id: u8,
    pub report_dir: PathBuf,
}

/// The outcome of a variant.
pub enum Outcome {
    /// The variants agreed; how the guest stopped.
    Agreed(LinuxExit),
    /// They diverged (the report is written).
    Diverged(String),
}

/// Boots `config` as variant `join.id` of the cluster.
pub fn run(mut config: Config, join: Join) -> Result<Outcome, LinuxError> {
    let (mut kernel, initrd) = config.read_images()?;
    let kernel_digest = Digest::of(&kernel);
    if let Some(want) = join.cfg.digests.program {
        if want != kernel_digest {
            return Err(LinuxError::KernelDigest {
                path: config.kernel.display().to_string(),
                have: kernel_digest,
                want,
            });
        }
    }
    if let Some(i) = initrd {
        kernel.extend(i);
    }
    let info = HandshakeInfo { policy: Digest::of(POLICY), image: None, program: Some(Digest::of(&kernel)) };
    drop(kernel);
    let me = join.cfg.variant(join.id).map_err(LinuxError::Config)?.clone();
    let timeout = join.cfg.timeout;
    let link = Link::join(&join.cfg, join.id, me.role, &join.key, &info).map_err(LinuxError::Link)?;
    log::debug!("cluster {:?}: variant {} joined as the {:?}", join.cfg.name, join.id, me.role);
    let state = Arc::new(Mutex::new(State {
        link,
        id: join.id,
        leader_id: join.cfg.leader().id,
        chunk: Vec::with_capacity(CHUNK * 2),
        total: 0,
        mine: Vec::new(),
        theirs: Vec::new(),
        base: 0,
        line: Vec::new(),
        mismatch: None,
        leader_end: None,
        diverged: None,
        report: String::new(),
        tail: Vec::new(),
        report_dir: join.report_dir,
    }));
    let stop = Latch::default();
    config.sink = Box::new(MvxSink { state: state.clone(), stop: stop.clone() });
    config.sink_stop = Some(stop.clone());
    // While the guest runs, also between its console writes (a guest may
    // print and then spin): take the leader's console or the followers'
    // reports, and stop the guest on a difference.
    let watched = state.clone();
    config.monitor = Some(Box::new(move || {
        let mut s = lock(&watched);
        if s.diverged.is_none() {
            let r = if s.link.is_leader() {
                s.leader_controls()
            } else {
                s.pull(Some(Duration::ZERO)).and_then(|_| s.compare())
            };
            if let Err(e) = r {
                s.diverge(e);
            }
        }
        s.diverged.is_some() || stop.is_set()
    }));
    let exit = super::run(config)?;
    let mut s = lock(&state);
    if let Some(msg) = s.diverged.clone() {
        finish_diverged(&mut s);
        return Ok(Outcome::Diverged(msg));
    }
    let status = exit.status();
    let end =
        if s.link.is_leader() { leader_end(&mut s, status, timeout) } else { follower_end(&mut s, status, timeout) };
    match end {
        Ok(()) => Ok(Outcome::Agreed(exit)),
        Err(stop) => {
            s.diverge(stop);
            finish_diverged(&mut s);
            Ok(Outcome::Diverged(s.diverged.clone().unwrap_or_default()))
        }
    }
}

/// Leader: ships the end and waits until every follower agreed with it.
fn leader_end(s: &mut State, status: u8, timeout: Duration) -> Result<(), Stop> {
    s.ship()?;
    let mut end = vec![TAG_END, status];
    end.extend_from_slice(&s.total.to_le_bytes());
    let seq = s.link.leader().push(&end).map_err(Stop::Link)?;
    let deadline = Instant::now() + timeout;
    let left = || deadline.saturating_duration_since(Instant::now());
    // A follower's report explains a failure better.
    peer::await_acked(s, seq, left, State::leader_controls, |s, e| s.leader_controls().err().unwrap_or(Stop::Link(e)))?;
    peer::send_goodbye(s.link.leader(), status as i32);
    Ok(())
}

/// Follower: reads the leader's console to its end and compares the rest.
fn follower_end(s: &mut State, status: u8, timeout: Duration) -> Result<(), Stop> {
    if let Some((i, _)) = s.mismatch {
        return Err(s.differs(i));
    }
    let deadline = Instant::now() + timeout;
    while s.leader_end.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Stop::Link(LinkError::Config(format!(
                "the leader did not end its run within {} ms of this variant's end",
                timeout.as_millis()
            ))));
        }
        s.pull(Some(left))?;
        s.compare_now()?;
    }
    s.compare_now()?;
    let (their_status, total) = s.leader_end.expect("checked above");
    if s.base + (s.mine.len() as u64) < total || !s.mine.is_empty() {
        // The leader's console went on where this one ended (or the reverse).
        return Err(s.differs(s.mine.len().min(s.theirs.len())));
    }
    if their_status != status {
        return Err(Stop::Differs {
            offset: total,
            leader: format!("<the guest stopped with status {their_status}>"),
            mine: format!("<the guest stopped with status {status}>"),
        });
    }
    let seq = s.link.follower().last_seq();
    s.link.follower().ack(seq, [0; 32]).map_err(Stop::Link)?;
    // The leader's goodbye, so the acknowledgement is not cut off.
    peer::await_goodbye(s.link.follower(), Duration::from_secs(2));
    Ok(())
}

/// After a divergence: the leader tells every follower; both give the link a
/// moment so the other side reads the report.
fn finish_diverged(s: &mut State) {
    match &mut s.link {
        Link::Leader(l) => {
            peer::send_report(l, 0, &s.report);
            std::thread::sleep(Duration::from_millis(100));
        }
        Link::Follower(f) => peer::await_farewell(f),
    }
}
