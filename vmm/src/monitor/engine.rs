//! The monitor's engine: the leader/follower protocol of one event stream.
//!
//! Leader: runs the call (waiting first for every follower to reach the same
//! record if the call is lockstep, or holding its outputs until they did),
//! records the results of its replicated host operations, and ships the
//! entry. Follower: compares its own record with the leader's, performs
//! local calls itself and replays replicated ones, and acknowledges.

use std::sync::Arc;
use std::time::Duration;

use dmvx_sync::link::LinkError;
use dmvx_sync::policy::{Check, Class, Input};
use dmvx_sync::record::{decode, record_digest, records_agree, temp_names, EntryView, SignalEvent};
use dmvx_sync::report::Kind;
use dmvx_sync::{Control, Incoming};

use super::{peer, Link, Monitor, OpMode, Stop};
use crate::kernel::file::OpenFile;
use crate::kernel::syscall::names;

/// Followers acknowledge at least this often (back-pressure).
const ACK_EVERY: u64 = 64;
/// Custom control from a follower: "I reached event N with this digest" (a
/// held output, which it acknowledges only once verified against the
/// leader's entry; if the leader is waiting at N instead, this tells it).
const CTRL_REACHED: u32 = 1;
/// Custom control from the leader: "look at the link" (its last event was
/// sent while yours may be running code without system calls).
pub(super) const CTRL_LOOK: u32 = 2;
/// How long a follower waits for the leader's entry of a held output
/// before telling the leader it reached it.
const REACHED_AFTER: Duration = Duration::from_millis(20);
/// Custom control from the leader: "event N is a call of thread T" (sent
/// before a lockstep call, so a follower can switch to T before it acks).
const CTRL_NEXT_THREAD: u32 = 2;

impl Monitor {
    /// Before call `nr` of class `class` runs; its record is in `self.rec`
    /// (see `spec`). `remote`: it works on a remote resource. Err stops the run.
    pub(crate) fn begin(&mut self, nr: u64, class: Class, remote: bool) -> Result<(), Stop> {
        self.nr = nr;
        self.class = class;
        self.rule = self.policy.rule(nr, class);
        self.replay_broken = None;
        let replicated = self.rule.input == Input::Replicated || remote;
        self.begin_with(replicated)
    }

    fn begin_with(&mut self, replicated: bool) -> Result<(), Stop> {
        self.seq += 1;
        let seq = self.seq;
        let lockstep = self.rule.check == Check::Lockstep;
        if self.is_leader() {
            self.take_controls_leader()?;
            self.release_outputs(false)?;
            self.mode = if replicated { OpMode::Record } else { OpMode::Direct };
            // A lockstep call whose effect is not an output held back waits
            // for every follower to reach the same record first.
            let held = self.deferred_outputs && self.class == Class::Output;
            if lockstep && !held {
                self.announce_wait(seq)?;
                if self.threaded {
                    let mut payload = seq.to_le_bytes().to_vec();
                    payload.extend_from_slice(&self.tid.to_le_bytes());
                    if let Some(f) = dmvx_sync::record::record_int(self.rec.as_bytes(), 1) {
                        payload.extend_from_slice(&f.to_le_bytes());
                    }
                    self.leader()
                        .send_control(&Control::Custom { kind: CTRL_NEXT_THREAD, payload })
                        .map_err(Monitor::link_stop)?;
                }
                self.leader().flush().map_err(Monitor::link_stop)?;
                self.await_followers(seq)?;
            }
            let Monitor { rec, entry, .. } = self;
            entry.start(rec.as_bytes());
            return Ok(());
        }
        // A lockstep call the leader waits for: tell it at once that we
        // reached it, with our record's digest (the leader compares). A held
        // output the leader does not wait for: it is acknowledged only once
        // verified here (the acknowledgement releases it).
        let held = self.deferred_outputs && self.class == Class::Output;
        if self.match_fresh_name(lockstep && !held)? {
            return Ok(());
        }
        let seq = self.seq;
        if lockstep && !held {
            let digest = record_digest(self.rec.as_bytes());
            self.follower().ack(seq, digest).map_err(Monitor::link_stop)?;
            self.acked = seq;
        }
        if held && !self.fetch_leader_entry_within(seq, REACHED_AFTER)? {
            let mut payload = seq.to_le_bytes().to_vec();
            payload.extend_from_slice(&record_digest(self.rec.as_bytes()));
            self.follower()
                .send_control(&Control::Custom { kind: CTRL_REACHED, payload })
                .map_err(Monitor::link_stop)?;
            self.fetch_leader_entry(seq)?;
        } else if !held {
            self.fetch_leader_entry(seq)?;
        }
        let view = EntryView::decode(&self.leader_entry)
            .map_err(|e| Stop::link(format!("undecodable entry {seq} from the leader: {e}")))?;
        if view.record != self.rec.as_bytes() {
            let leader = view.record.to_vec();
            let mine = self.rec.as_bytes().to_vec();
            if let Ok(dmvx_sync::record::Event::Killed { signal }) = decode(&leader, names::name) {
                // The leader died of a signal from outside while this
                // variant went on to this call: end with it.
                if !lockstep || held {
                    let d = record_digest(&leader);
                    self.follower().ack(seq, d).map_err(Monitor::link_stop)?;
                }
                return Err(Stop::Shutdown(128 + signal));
            }
            if !records_agree(&leader, &mine) {
                let took_effect = self.leader_went_ahead(&leader);
                return Err(self.diverge(Kind::Records, seq, Some(&leader), Some(&mine), self.id, took_effect));
            }
            // Fresh temporary names that differ only in their random part:
            // from here on this variant's name means the leader's.
            for (m, l) in temp_names(&mine).iter().zip(temp_names(&leader).iter()) {
                self.names.bind(m, l);
            }
            self.rec.set(&leader);
        }
        self.mode = if replicated { OpMode::Replay } else { OpMode::Direct };
        self.ops_replayed = 0;
        Ok(())
    }

    /// Follower: whether the leader's call with `record` took effect before
    /// this variant compared it: it did unless the policy made the leader
    /// wait for agreement or hold its output.
    fn leader_went_ahead(&self, record: &[u8]) -> bool {
        let Some((nr, class)) = dmvx_sync::record::call_of(record) else { return false };
        let held = self.deferred_outputs && class == Class::Output;
        self.policy.rule(nr, class).check != Check::Lockstep && !held
    }

    /// Leader: waits until every follower acknowledged `seq` with this
    /// call's record.
    pub(super) fn await_followers(&mut self, seq: u64) -> Result<(), Stop> {
        let want = record_digest(self.rec.as_bytes());
        let timeout = self.timeout;
        peer::await_acked(
            self,
            seq,
            || timeout,
            Monitor::take_controls_leader,
            |m, e| match e {
                LinkError::AckTimeout { silent, .. } => m.silent_follower(seq, &silent),
                e => m.take_controls_leader().err().unwrap_or_else(|| Monitor::link_stop(e)),
            },
        )?;
        let bad: Vec<u8> =
            self.leader().acks().filter(|a| a.seq == seq && a.digest != want).map(|a| a.variant).collect();
        if let Some(&v) = bad.first() {
            // Only the digest differs so far; the follower answers our
            // report with what it made there.
            let mine = self.rec.as_bytes().to_vec();
            return Err(self.diverge(Kind::Records, seq, Some(&mine), None, v, false));
        }
        Ok(())
    }

    /// Follower: the leader's entry `seq` into `self.leader_entry`, if it
    /// arrives within `wait`.
    pub(super) fn fetch_leader_entry_within(&mut self, seq: u64, wait: Duration) -> Result<bool, Stop> {
        if self.prefetched.take() == Some(seq) {
            return Ok(true);
        }
        loop {
            match self.take_from_leader(seq, wait)? {
                Took::Entry => return Ok(true),
                Took::Control => {}
                Took::Nothing => return Ok(false),
            }
        }
    }

    /// Follower: the leader's entry `seq` into `self.leader_entry`. The
    /// leader may be blocked in that call for as long as the program waits
    /// (pause, accept, a child that runs on): while its heartbeats arrive
    /// the follower waits on; a leader the link finds silent is a divergence.
    pub(super) fn fetch_leader_entry(&mut self, seq: u64) -> Result<(), Stop> {
        while !self.fetch_leader_entry_within(seq, self.timeout)? {
            self.check_leader(seq)?;
        }
        Ok(())
    }

    /// Follower: the thread whose call the leader's next event is (None:
    /// the event is not a call, or names no thread). Reads the entry ahead
    /// if the leader did not say.
    pub(crate) fn next_tid(&mut self) -> Result<Option<u32>, Stop> {
        let seq = self.seq + 1;
        loop {
            if let Some((s, t, _)) = self.next_hint {
                if s == seq {
                    return Ok(Some(t));
                }
            }
            if self.prefetched == Some(seq) {
                let view = EntryView::decode(&self.leader_entry)
                    .map_err(|e| Stop::link(format!("undecodable entry {seq} from the leader: {e}")))?;
                return Ok(dmvx_sync::record::record_thread(view.record));
            }
            // A control message may be the leader's word on the thread.
            match self.take_from_leader(seq, self.timeout)? {
                Took::Entry => self.prefetched = Some(seq),
                Took::Control => {}
                Took::Nothing => self.check_leader(seq)?,
            }
        }
    }

    /// Follower: the leader's next message, if one arrives within `wait`:
    /// its entry `seq` (into `self.leader_entry`), or a control message,
    /// taken (an Err if it stops the run).
    fn take_from_leader(&mut self, seq: u64, wait: Duration) -> Result<Took, Stop> {
        let Link::Follower(link) = &mut self.link else { unreachable!("follower link on a follower") };
        match link.next_incoming_timeout(wait) {
            Ok(Some(Incoming::Entry(e))) => {
                keep_entry(&mut self.leader_entry, seq, e)?;
                Ok(Took::Entry)
            }
            Ok(Some(Incoming::Control(c))) => match self.on_control_follower(Some(c)) {
                Some(stop) => Err(stop),
                None => Ok(Took::Control),
            },
            Ok(None) => Ok(Took::Nothing),
            Err(e) => Err(Monitor::link_stop(e)),
        }
    }

    /// Follower, while it waits for the leader's entry `seq`: a leader
    /// that the link finds silent is a divergence.
    fn check_leader(&mut self, seq: u64) -> Result<(), Stop> {
        if self.follower().check().is_err() {
            let mine = self.rec.as_bytes().to_vec();
            return Err(self.diverge(Kind::Silent, seq, None, Some(&mine), 0, false));
        }
        Ok(())
    }

    /// Follower, while it waits on the host for its own processes (a pipe's
    /// writer): a stop the leader sent, or a failed link.
    pub(crate) fn pending_stop(&mut self) -> Option<Stop> {
        if self.is_leader() {
            return None;
        }
        let c = self.follower().try_recv_control();
        if let Some(stop) = self.on_control_follower(c) {
            return Some(stop);
        }
        self.follower().check().err().map(Monitor::link_stop)
    }

    /// Follower: the scheduler's flag in the leader's next record (see
    /// `spec::build_record`), if that entry was read ahead.
    pub(crate) fn leader_next_flag(&self) -> Option<u64> {
        if let Some((s, _, f)) = self.next_hint {
            if s == self.seq + 1 {
                return f;
            }
        }
        if self.prefetched != Some(self.seq + 1) {
            return None;
        }
        let view = EntryView::decode(&self.leader_entry).ok()?;
        dmvx_sync::record::record_int(view.record, 1)
    }

    fn on_control_follower(&mut self, c: Option<Control>) -> Option<Stop> {
        match c? {
            Control::Custom { kind: CTRL_NEXT_THREAD, payload } if payload.len() == 12 || payload.len() == 20 => {
                let seq = u64::from_le_bytes(payload[..8].try_into().expect("8 bytes"));
                let tid = u32::from_le_bytes(payload[8..12].try_into().expect("4 bytes"));
                let flag = payload.get(12..20).map(|f| u64::from_le_bytes(f.try_into().expect("8 bytes")));
                self.next_hint = Some((seq, tid, flag));
                None
            }
            Control::Shutdown { status } => Some(Stop::Shutdown(status)),
            Control::Divergence { seq, report } => Some(self.on_leader_report(seq, &report)),
            Control::Custom { kind: super::fresh_names::CTRL_WAITING, payload } => {
                self.on_waiting(&payload);
                None
            }
            _ => None,
        }
    }

    /// Follower, while the program runs without system calls and the link
    /// asked to be looked at: takes the leader's next entry if it is there
    /// (kept for the next call) and control messages. Some(signal) if the
    /// leader's next event is its death by that signal (every variant dies
    /// with it, at once); Err if the run stops.
    pub(crate) fn poll_leader(&mut self) -> Result<Option<i32>, Stop> {
        let next = self.seq + 1;
        if self.prefetched != Some(next) {
            if !self.fetch_leader_entry_within(next, Duration::ZERO)? {
                if let Err(e) = self.follower().check() {
                    return Err(Monitor::link_stop(e));
                }
                return Ok(None);
            }
            self.prefetched = Some(next);
        }
        let view = EntryView::decode(&self.leader_entry).map_err(|e| Stop::link(e.to_string()))?;
        match decode(view.record, names::name) {
            Ok(dmvx_sync::record::Event::Killed { signal }) => Ok(Some(signal)),
            _ => Ok(None),
        }
    }

    /// Leader, while the program runs without system calls and the link
    /// asked to be looked at: divergence reports and failures of followers.
    pub(crate) fn poll_followers(&mut self) -> Result<(), Stop> {
        self.take_controls_leader()?;
        self.leader().check().map_err(Monitor::link_stop)
    }

    /// Leader: handles control messages from followers (divergence reports).
    pub(super) fn take_controls_leader(&mut self) -> Result<(), Stop> {
        if !self.is_leader() {
            return Ok(());
        }
        loop {
            let Some((from, c)) = self.leader().try_recv_control() else { return Ok(()) };
            if let Control::Custom { kind: CTRL_REACHED, payload } = &c {
                // A follower reached event `seq` with a held output; if the
                // leader is at a different event there, that is a divergence.
                if payload.len() == 40 {
                    let seq = u64::from_le_bytes(payload[..8].try_into().expect("8 bytes"));
                    if seq == self.seq && payload[8..] != record_digest(self.rec.as_bytes()) {
                        let mine = self.rec.as_bytes().to_vec();
                        return Err(self.diverge(Kind::Records, seq, Some(&mine), None, from, false));
                    }
                }
                continue;
            }
            if let Control::Divergence { seq, report } = c {
                return Err(self.on_follower_report(from, seq, &report));
            }
        }
    }

    /// Leader: sends out held outputs that every follower acknowledged;
    /// with `all`, waits until everything held is acknowledged first.
    pub(crate) fn release_outputs(&mut self, all: bool) -> Result<(), Stop> {
        if !self.outputs.pending() || !self.is_leader() {
            return Ok(());
        }
        let mut acked = agreed(self);
        if (all || self.outputs.full()) && acked < self.outputs.newest() {
            let want = self.outputs.newest();
            let timeout = self.timeout;
            peer::await_acked(
                self,
                want,
                || timeout,
                Monitor::take_controls_leader,
                |m, e| match e {
                    LinkError::AckTimeout { silent, .. } => {
                        let who = silent.first().copied().unwrap_or(0);
                        m.diverge(Kind::Silent, want, None, None, who, false)
                    }
                    e => m.take_controls_leader().err().unwrap_or_else(|| Monitor::link_stop(e)),
                },
            )?;
            acked = agreed(self);
        }
        self.outputs.release(acked, all);
        Ok(())
    }

    /// After the call ran (or was replayed) with return value `ret`.
    /// Leader: `caught` holds the forwarded host signals (bits) that reach
    /// every variant right after this call. Follower: `raise` receives the
    /// leader's.
    /// `timers`: of those, the timers' signals (signal, id and overrun).
    pub(crate) fn end(
        &mut self,
        ret: i64,
        caught: u64,
        timers: &[(i32, u64)],
        raise: &mut dyn FnMut(SignalEvent),
    ) -> Result<(), Stop> {
        if std::mem::take(&mut self.skip_event) {
            return Ok(());
        }
        let seq = self.seq;
        self.log.push(seq, self.rec.as_bytes(), ret);
        if self.is_leader() {
            // Signals that reached the leader are delivered to every variant
            // right after this call.
            let mut sigs = [SignalEvent::default(); 64];
            let mut n = 0;
            for s in 1..=64 {
                if caught & (1u64 << (s - 1)) != 0 {
                    sigs[n] = match timers.iter().find(|t| t.0 == s) {
                        Some(&(_, addr)) => SignalEvent { sig: s, code: crate::kernel::timers::SI_TIMER, addr },
                        None => SignalEvent { sig: s, code: 0, addr: 0 },
                    };
                    n += 1;
                }
            }
            let sigs = &sigs[..n];
            // No flush here: the batch goes out when full, when this side
            // waits, or after the link's batch delay.
            let Monitor { entry, link, .. } = self;
            let Link::Leader(link) = link else { unreachable!("leader link on a leader") };
            let pushed = link.push(entry.finish(ret, sigs)).map_err(Monitor::link_stop)?;
            if pushed != seq {
                return Err(Stop::link(format!("the link numbered event {seq} as {pushed}")));
            }
            return Ok(());
        }
        if let Some(why) = self.replay_broken.take() {
            log::warn!("variant {}: event {seq} could not be replayed: {why}", self.id);
            let mine = self.rec.as_bytes().to_vec();
            let leader = EntryView::decode(&self.leader_entry).map(|v| v.record.to_vec()).ok();
            return Err(self.diverge(Kind::Records, seq, leader.as_deref(), Some(&mine), self.id, true));
        }
        let view = EntryView::decode(&self.leader_entry).map_err(|e| Stop::link(e.to_string()))?;
        // Nothing is copied out of the entry unless needed (hot path).
        let leader_ret = view.ret;
        // Addresses differ by design (diversified layouts): the return
        // values of brk, mmap and mremap are not compared.
        let address = [libc::SYS_brk, libc::SYS_mmap, libc::SYS_mremap].contains(&(self.nr as i64));
        if self.mode == OpMode::Direct && leader_ret != ret && self.rule.check != Check::Unchecked && !address {
            let leader_rec = view.record.to_vec();
            let mine = self.rec.as_bytes().to_vec();
            return Err(self.diverge(Kind::Result, seq, Some(&leader_rec), Some(&mine), self.id, true));
        }
        for s in &view.signals {
            raise(*s);
        }
        if seq - self.acked >= ACK_EVERY || self.rule.check == Check::Lockstep {
            let d = record_digest(self.rec.as_bytes());
            self.follower().ack_soon(seq, d).map_err(Monitor::link_stop)?;
            self.acked = seq;
        }
        Ok(())
    }

    /// Leader: before an operation that must come after what is held for
    /// `f` (shutdown, a blocking read of a reply), send it out.
    pub(crate) fn settle_file(&mut self, f: &Arc<OpenFile>) -> Result<(), Stop> {
        if self.is_leader() && self.outputs.holds(f) {
            return self.settle_before_blocking();
        }
        Ok(())
    }

    /// Leader, while the program waits: takes control messages, releases
    /// what was acknowledged, and arms the link's wake descriptor. Returns
    /// that descriptor to poll, or None when nothing is held any more.
    pub(crate) fn release_while_waiting(&mut self) -> Result<Option<i32>, Stop> {
        self.leader().arm_wake();
        let r = (|| {
            self.take_controls_leader()?;
            self.leader().check().map_err(Monitor::link_stop)?;
            let _ = self.leader().flush();
            self.release_outputs(false)?;
            Ok(self.outputs.pending().then(|| std::os::fd::AsRawFd::as_raw_fd(&self.leader_ref().wake_fd())))
        })();
        if !matches!(r, Ok(Some(_))) {
            self.leader().disarm_wake();
        }
        r
    }

    /// Leader: sends the pending batch, before the program may block.
    pub(crate) fn flush_link(&mut self) {
        if self.is_leader() {
            let _ = self.leader().flush();
        }
    }

    /// Leader: after a wait on the link's wake descriptor.
    pub(crate) fn disarm_link_wake(&mut self) {
        if self.is_leader() {
            self.leader().disarm_wake();
        }
    }

    /// Leader, before blocking on the host: everything held must go out
    /// first, or a client waits for an answer that waits for us.
    pub(crate) fn settle_before_blocking(&mut self) -> Result<(), Stop> {
        if !self.is_leader() {
            return Ok(());
        }
        // Followers must not wait for entries while the leader sleeps.
        let _ = self.leader().flush();
        if self.outputs.pending() {
            self.release_outputs(true)
        } else {
            Ok(())
        }
    }
}

/// Leader: the event up to which every follower's acknowledgement shows
/// agreement with the held outputs.
pub(super) fn agreed(m: &Monitor) -> u64 {
    let mut acks = m.leader_ref().acks().peekable();
    if acks.peek().is_none() {
        return m.leader_ref().acked();
    }
    acks.map(|a| m.outputs.agreement(a.seq, &a.digest)).min().unwrap_or(0)
}

/// What a follower took from the leader.
enum Took {
    Entry,
    Control,
    Nothing,
}

/// Keeps the leader's entry `e` in `into` if it is entry `seq`, the one due.
fn keep_entry(into: &mut Vec<u8>, seq: u64, e: dmvx_sync::link::Entry<'_>) -> Result<(), Stop> {
    if e.seq != seq {
        return Err(Stop::link(format!("entry {} from the leader where {seq} was due", e.seq)));
    }
    into.clear();
    into.extend_from_slice(e.data);
    Ok(())
}
