//! The MVX monitor: the layer between system-call dispatch and execution
//! when a run is part of a cluster of variants.
//!
//! For each call the kernel asks `spec` (driven by the call's row in the
//! syscall table) for its class and normalised record, and hands them to the
//! monitor, which decides from the policy: checked in lockstep before it
//! takes effect, relaxed, or unchecked; its inputs replicated from the
//! leader or local. The engine (`engine`) runs the leader/follower protocol
//! over the link; the kernel's host operations are recorded (leader) or
//! replayed (followers) through `record` and `replay`; outputs are held
//! until every variant agreed on them (`commit`). What Linux mode does with
//! its peers the same way (the link, acknowledgements, goodbyes, reports)
//! is `peer`, used by both.

pub mod cluster;
pub mod commit;
mod divergence;
mod engine;
mod finish;
mod fresh_names;
pub mod join;
pub mod launch;
pub mod peer;
pub mod records;
pub mod spec;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dmvx_sync::link::{Follower, Leader, LinkError};
use dmvx_sync::policy::{Class, Policy, Rule};
use dmvx_sync::record::{EntryBuf, EntryView, RecordBuf};
use dmvx_sync::report::{ForensicLog, LayoutUsed, VariantLog};

use crate::kernel::file::OpenFile;
use crate::kernel::mm::HostIov;
pub use join::JoinError;
pub use peer::Link;

/// Exit status of a run stopped because variants diverged.
pub const EXIT_DIVERGENCE: u8 = 121;

/// How the host operations of the current call are carried out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpMode {
    /// Performed here, not recorded (local inputs, single variant).
    Direct,
    /// Performed here and recorded for the followers (leader, replicated).
    Record,
    /// Not performed: the leader's recorded results are replayed.
    Replay,
}

/// A buffer a host operation fills.
pub enum Out<'a> {
    /// Guest memory; the operation's return value says how much it filled.
    Iov(&'a HostIov),
    /// A VMM buffer, recorded whole.
    Buf(&'a mut [u8]),
}

/// Why the run must stop.
#[derive(Debug)]
pub enum Stop {
    /// Variants diverged; the report is written.
    Divergence(String),
    /// The leader ended the run with this status.
    Shutdown(i32),
    /// The link failed (`peer`: the variant it failed with, if known;
    /// `silent`: that variant stopped answering).
    Link { why: String, peer: Option<u8>, silent: bool },
}

impl Stop {
    /// A link failure found by the engine (a bad entry, say).
    pub fn link(why: String) -> Stop {
        Stop::Link { why, peer: None, silent: false }
    }
}

/// Multi-variant state of one VMM: one event stream.
pub struct Monitor {
    /// How to open the streams of the processes this one creates.
    pub spec: join::StreamSpec,
    pub id: u8,
    pub link: Link,
    pub policy: Policy,
    /// Outputs are held until acknowledged, instead of stalling the call.
    pub deferred_outputs: bool,
    pub timeout: Duration,
    /// Sequence number of the current (or last) event.
    pub seq: u64,
    pub rec: RecordBuf,
    pub entry: EntryBuf,
    /// The current call, its class and the policy's rule for it.
    pub nr: u64,
    pub class: Class,
    pub rule: Rule,
    pub mode: OpMode,
    /// Follower: the leader's entry for the current call, and how many of
    /// its operations were replayed.
    pub leader_entry: Vec<u8>,
    pub ops_replayed: usize,
    /// Follower: the last sequence number acknowledged.
    pub acked: u64,
    pub log: ForensicLog,
    pub report_dir: PathBuf,
    pub outputs: commit::Outputs,
    /// Set when the replay ran out of recorded operations (divergence).
    pub replay_broken: Option<String>,
    /// Bytes of replicated file contents this variant sent or received.
    pub replicated_file_bytes: u64,
    /// This variant's current address-space layout, for reports.
    pub layout: Option<LayoutUsed>,
    /// Follower: its fresh temporary names bound to the leader's.
    pub names: dmvx_sync::tempname::NameMap,
    /// Follower: the leader said it waits at this event (`fresh_names`).
    pub leader_waiting: Option<u64>,
    /// Follower: the current event is left out of the stream.
    pub skip_event: bool,
    /// The process has threads: records name the thread of the call.
    pub threaded: bool,
    /// The thread of the current call.
    pub tid: u32,
    /// Follower: the leader's entry of this event is in `leader_entry`
    /// already (read ahead to learn whose call it is).
    pub prefetched: Option<u64>,
    /// Follower: the leader said which thread makes this event, and the
    /// scheduler's flag of its record (before a lockstep call, whose entry
    /// comes only after the follower's ack).
    pub next_hint: Option<(u64, u32, Option<u64>)>,
    /// The last thread preempted between two system calls, and the event
    /// after which it was (for a report of a divergence that follows).
    pub preempted: Option<(u32, u64)>,
}

impl Monitor {
    pub fn new(
        id: u8,
        link: Link,
        policy: Policy,
        timeout: Duration,
        report_dir: PathBuf,
        spec: join::StreamSpec,
    ) -> Monitor {
        let deferred_outputs = policy.preset == dmvx_sync::policy::Preset::Dmvx;
        // A peer's control message or a failed link must reach this VMM
        // even while its program computes without system calls.
        match &link {
            Link::Leader(l) => l.set_waker(Box::new(crate::kernel::signal::host::kick_for_link)),
            Link::Follower(f) => f.set_waker(Box::new(crate::kernel::signal::host::kick_for_link)),
        }
        Monitor {
            spec,
            id,
            link,
            policy,
            deferred_outputs,
            timeout,
            seq: 0,
            nr: 0,
            rec: RecordBuf::new(),
            entry: EntryBuf::new(),
            class: Class::Other,
            rule: Rule { check: dmvx_sync::policy::Check::Relaxed, input: dmvx_sync::policy::Input::Local },
            mode: OpMode::Direct,
            leader_entry: Vec::with_capacity(4096),
            ops_replayed: 0,
            acked: 0,
            log: ForensicLog::default(),
            report_dir,
            outputs: commit::Outputs::default(),
            replay_broken: None,
            replicated_file_bytes: 0,
            layout: None,
            names: Default::default(),
            leader_waiting: None,
            skip_event: false,
            threaded: false,
            tid: 0,
            prefetched: None,
            next_hint: None,
            preempted: None,
        }
    }

    /// This variant's recent events and layout, for a report.
    pub fn variant_log(&self) -> VariantLog {
        let events = self.log.events(crate::kernel::syscall::names::name);
        VariantLog { variant: self.id as u32, events, layout: self.layout.clone() }
    }

    pub fn is_leader(&self) -> bool {
        self.link.is_leader()
    }

    /// One line for --stats.
    pub fn summary(&self) -> String {
        format!(
            "variant {} ({}), {} events, {} replicated file bytes, {} bytes of held output released",
            self.id,
            if self.is_leader() { "leader" } else { "follower" },
            self.seq,
            self.replicated_file_bytes,
            self.outputs.released
        )
    }

    /// The leader's link (call only on the leader).
    pub fn leader(&mut self) -> &mut Leader {
        self.link.leader()
    }

    /// The leader's link, shared (call only on the leader).
    pub fn leader_ref(&self) -> &Leader {
        self.link.leader_ref()
    }

    /// The follower's link (call only on a follower).
    pub fn follower(&mut self) -> &mut Follower {
        self.link.follower()
    }

    /// The mode for an operation of the current call on a resource that is
    /// `remote` (exists only on the leader) or not.
    #[inline]
    pub fn mode_for(&self, remote: bool) -> OpMode {
        match self.mode {
            OpMode::Direct if remote => {
                if self.is_leader() {
                    OpMode::Record
                } else {
                    OpMode::Replay
                }
            }
            m => m,
        }
    }

    /// Records the results of a host operation: its return value (or
    /// negated errno) and the bytes it produced in `outs`.
    pub fn record(&mut self, ret: i64, outs: &mut [Out<'_>]) {
        let mut bufs: Vec<Vec<u8>> = Vec::with_capacity(outs.len());
        for o in outs.iter() {
            bufs.push(match o {
                Out::Iov(iov) => gather(iov, ret.max(0) as usize),
                Out::Buf(b) => b.to_vec(),
            });
        }
        if self.class == Class::FileRead {
            self.replicated_file_bytes += ret.max(0) as u64;
        }
        let refs: Vec<&[u8]> = bufs.iter().map(|b| b.as_slice()).collect();
        self.entry.op(ret, &refs);
    }

    /// Replays the leader's next host operation into `outs`; returns its
    /// return value.
    pub fn replay(&mut self, outs: &mut [Out<'_>]) -> i64 {
        let ret = self.take_op(|op| {
            for (o, data) in outs.iter_mut().zip(op.bufs()) {
                match o {
                    Out::Iov(iov) => scatter(iov, data),
                    Out::Buf(b) => {
                        let n = b.len().min(data.len());
                        b[..n].copy_from_slice(&data[..n]);
                    }
                }
            }
            op.ret
        });
        let Some(ret) = ret else { return -(libc::EIO as i64) };
        if self.class == Class::FileRead {
            self.replicated_file_bytes += ret.max(0) as u64;
        }
        ret
    }

    /// Replays the leader's next host operation, whose one buffer is as
    /// long as the leader made it: its return value and a copy of the
    /// buffer, if it has one of at most `max` bytes (else the replay is
    /// broken: a divergence).
    pub fn replay_bytes(&mut self, max: usize) -> (i64, Vec<u8>) {
        let got = self.take_op(|op| (op.ret, op.bufs().next().filter(|b| b.len() <= max).map(<[u8]>::to_vec)));
        match got {
            Some((ret, Some(data))) => (ret, data),
            Some((_, None)) => {
                self.replay_broken = Some(format!("the leader's operation has no buffer of at most {max} bytes"));
                (-(libc::EIO as i64), Vec::new())
            }
            None => (-(libc::EIO as i64), Vec::new()),
        }
    }

    /// Hands the leader's next host operation to `f` (None, with the replay
    /// marked broken, if there is none).
    fn take_op<R>(&mut self, f: impl FnOnce(dmvx_sync::record::OpView<'_>) -> R) -> Option<R> {
        let view = match EntryView::decode(&self.leader_entry) {
            Ok(v) => v,
            Err(e) => {
                self.replay_broken = Some(format!("undecodable entry from the leader: {e}"));
                return None;
            }
        };
        let Some(op) = view.ops.get(self.ops_replayed) else {
            self.replay_broken =
                Some(format!("this variant made more host operations than the leader ({})", view.ops.len()));
            return None;
        };
        self.ops_replayed += 1;
        Some(f(op))
    }

    /// Leader: holds the output in `iov` for `file` until every follower
    /// agreed on it (output commit); returns its length.
    pub fn hold(&mut self, iov: &HostIov, file: Arc<OpenFile>, offset: Option<i64>) -> u64 {
        let mut data = self.outputs.buffer();
        for s in iov.slices() {
            data.extend_from_slice(s);
        }
        let n = data.len() as u64;
        let digest = dmvx_sync::record::record_digest(self.rec.as_bytes());
        self.outputs.hold(self.seq, digest, file, data, offset);
        n
    }

    /// Whether the current call's output to a file (`remote` or not) is
    /// held instead of performed (leader, lockstep outputs).
    pub fn holds_outputs_for(&self, remote: bool) -> bool {
        self.is_leader() && self.deferred_outputs && remote && self.class == Class::Output
    }

    /// The leader's return value of the current call (follower).
    pub fn leader_ret(&self) -> Option<i64> {
        EntryView::decode(&self.leader_entry).ok().map(|v| v.ret)
    }

    /// Wraps a link error.
    pub fn link_stop(e: LinkError) -> Stop {
        use dmvx_sync::link::PeerFailure;
        let (peer, silent) = match &e {
            LinkError::Peer { variant, failure } => {
                (Some(*variant), matches!(failure, PeerFailure::Silent(_) | PeerFailure::Stuck(_)))
            }
            LinkError::AckTimeout { silent, .. } => (silent.first().copied(), true),
            LinkError::LagTimeout { lagging, .. } => (lagging.first().copied(), true),
            _ => (None, false),
        };
        Stop::Link { why: e.to_string(), peer, silent }
    }
}

impl peer::Peer for Monitor {
    fn link(&mut self) -> &mut Link {
        &mut self.link
    }
}

/// The first `n` bytes behind a host iovec list.
pub(crate) fn gather(iov: &HostIov, mut n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n);
    for s in iov.slices() {
        if n == 0 {
            break;
        }
        let k = s.len().min(n);
        out.extend_from_slice(&s[..k]);
        n -= k;
    }
    out
}

/// Writes `data` across a host iovec list.
fn scatter(iov: &HostIov, data: &[u8]) {
    iov.fill_from(data);
}
