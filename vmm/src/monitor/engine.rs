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
use dmvx_sync::report::{describe, Kind, PolicyUsed, Report};
use dmvx_sync::{Acked, Control, Incoming};

use super::{Link, Monitor, OpMode, Stop};
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
const CTRL_LOOK: u32 = 2;
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

    /// Leader: waits until every follower acknowledged `seq`, whatever it
    /// made there (a death from outside: see `finish_killed_externally`).
    fn await_any_ack(&mut self, seq: u64) -> Result<(), Stop> {
        loop {
            let timeout = self.timeout;
            match self.leader().wait_acked(seq, timeout) {
                Ok(Acked::All) => return Ok(()),
                Ok(Acked::ControlWaiting) => {
                    // A follower that reached a different call there reports
                    // it; the death is the leader's, not a divergence.
                    let _ = self.leader().try_recv_control();
                }
                Err(LinkError::AckTimeout { silent, .. }) => {
                    let who = silent.first().copied().unwrap_or(0);
                    let mine = self.rec.as_bytes().to_vec();
                    return Err(self.diverge(Kind::Silent, seq, Some(&mine), None, who, false));
                }
                Err(e) => return Err(Monitor::link_stop(e)),
            }
        }
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
    fn await_followers(&mut self, seq: u64) -> Result<(), Stop> {
        let want = record_digest(self.rec.as_bytes());
        loop {
            let timeout = self.timeout;
            match self.leader().wait_acked(seq, timeout) {
                Ok(Acked::All) => break,
                Ok(Acked::ControlWaiting) => self.take_controls_leader()?,
                Err(LinkError::AckTimeout { silent, .. }) => {
                    let who = silent.first().copied().unwrap_or(0);
                    let mine = self.rec.as_bytes().to_vec();
                    return Err(self.diverge(Kind::Silent, seq, Some(&mine), None, who, false));
                }
                Err(e) => {
                    self.take_controls_leader()?;
                    return Err(Monitor::link_stop(e));
                }
            }
        }
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
            let Link::Follower(link) = &mut self.link else { unreachable!("follower link on a follower") };
            match link.next_incoming_timeout(wait) {
                Ok(Some(Incoming::Entry(e))) => {
                    keep_entry(&mut self.leader_entry, seq, e)?;
                    return Ok(true);
                }
                Ok(None) => return Ok(false),
                Ok(Some(Incoming::Control(c))) => {
                    if let Some(stop) = self.on_control_follower(Some(c)) {
                        return Err(stop);
                    }
                }
                Err(e) => return Err(Monitor::link_stop(e)),
            }
        }
    }

    /// Follower: the leader's entry `seq` into `self.leader_entry`. The
    /// leader may be blocked in that call for as long as the program waits
    /// (pause, accept, a child that runs on): while its heartbeats arrive
    /// the follower waits on; a leader the link finds silent is a divergence.
    fn fetch_leader_entry(&mut self, seq: u64) -> Result<(), Stop> {
        loop {
            if self.fetch_leader_entry_within(seq, self.timeout)? {
                return Ok(());
            }
            if self.follower().check().is_err() {
                let mine = self.rec.as_bytes().to_vec();
                return Err(self.diverge(Kind::Silent, seq, None, Some(&mine), 0, false));
            }
        }
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
            let timeout = self.timeout;
            let Link::Follower(link) = &mut self.link else { unreachable!("follower link on a follower") };
            match link.next_incoming_timeout(timeout) {
                Ok(Some(Incoming::Entry(e))) => {
                    keep_entry(&mut self.leader_entry, seq, e)?;
                    self.prefetched = Some(seq);
                }
                Ok(None) => {
                    if self.follower().check().is_err() {
                        let mine = self.rec.as_bytes().to_vec();
                        return Err(self.diverge(Kind::Silent, seq, None, Some(&mine), 0, false));
                    }
                }
                Ok(Some(Incoming::Control(c))) => {
                    if let Some(stop) = self.on_control_follower(Some(c)) {
                        return Err(stop);
                    }
                }
                Err(e) => return Err(Monitor::link_stop(e)),
            }
        }
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
            Control::Divergence { seq, report } => {
                let text = String::from_utf8_lossy(&report).into_owned();
                let mut v: serde_json::Value =
                    serde_json::from_str(&text).unwrap_or_else(|_| serde_json::json!({"message": text}));
                // The leader found it at our current event: tell it what we made there.
                if seq == self.seq && v["variant"].as_u64() == Some(self.id as u64) && v["other"].is_null() {
                    let name_of = |nr| names::name(nr);
                    let mine = decode(self.rec.as_bytes(), name_of).ok();
                    let leader: Option<dmvx_sync::record::Event> = serde_json::from_value(v["leader"].clone()).ok();
                    v["message"] = serde_json::Value::String(format!(
                        "variant {} made {} at event {seq} where the leader made {}",
                        self.id,
                        describe(&mine),
                        describe(&leader)
                    ));
                    v["other"] = serde_json::to_value(mine).unwrap_or_default();
                    if let Some(arr) = v["forensic"].as_array_mut() {
                        arr.push(serde_json::to_value(self.variant_log()).unwrap_or_default());
                    }
                    let reply = serde_json::to_vec_pretty(&v).unwrap_or_default();
                    let _ = self.follower().send_control(&Control::Divergence { seq, report: reply });
                }
                let msg =
                    v["message"].as_str().map(String::from).unwrap_or_else(|| format!("divergence at event {seq}"));
                self.write_report_file(&serde_json::to_string_pretty(&v).unwrap_or(text));
                Some(Stop::Divergence(msg))
            }
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

    /// Leader: signal `what` cannot be delivered at one point in every
    /// variant (the program ran without system calls for `waited`): the run
    /// stops with a report, the output every follower agreed on goes out.
    pub(crate) fn signal_undeliverable(&mut self, what: &str, waited: Duration) -> Stop {
        let seq = self.seq;
        let message = self.in_process(format!(
            "{what} arrived while the program ran without system calls; after {:.1} s it still made none, so \
             the variants cannot take the signal at the same point (dmvx has no instruction counter here)",
            waited.as_secs_f64()
        ));
        let report = Report {
            kind: Kind::Signal,
            message: message.clone(),
            seq,
            variant: self.id as u32,
            detected_by: self.id as u32,
            policy: PolicyUsed::of(self.class, self.rule),
            leader: None,
            other: None,
            took_effect: false,
            forensic: vec![self.variant_log()],
        };
        let json = report.to_json();
        let (agreed, _) = self.agreed_before(seq + 1, u8::MAX, true);
        self.outputs.release_before(agreed, seq + 1);
        let _ = self.outputs.discard();
        let _ = self.leader().send_control(&Control::Divergence { seq, report: json.clone().into_bytes() });
        let _ = self.leader().flush();
        self.write_report_file(&json);
        Stop::Divergence(message)
    }

    /// Leader: handles control messages from followers (divergence reports).
    fn take_controls_leader(&mut self) -> Result<(), Stop> {
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
                // The follower found it: add the leader's view and stop all.
                let mut v: serde_json::Value =
                    serde_json::from_slice(&report).unwrap_or_else(|_| serde_json::json!({"message": "divergence"}));
                let my_log = serde_json::to_value(self.variant_log()).unwrap_or_default();
                if let Some(arr) = v["forensic"].as_array_mut() {
                    arr.push(my_log);
                }
                let text = serde_json::to_string_pretty(&v).unwrap_or_default();
                // The reporting follower checked every event before `seq`.
                let (agreed, _) = self.agreed_before(seq, from, true);
                self.outputs.release_before(agreed, seq);
                let discarded = self.outputs.discard();
                self.write_report_file(&text);
                let _ = self.leader().send_control(&Control::Divergence { seq, report: text.into_bytes() });
                let _ = self.leader().flush();
                let msg = v["message"].as_str().unwrap_or("divergence").to_string();
                log::warn!(
                    target: crate::logger::PROGRAM,
                    "variant {from} diverged at event {seq}; {discarded} bytes of held output discarded"
                );
                return Err(Stop::Divergence(msg));
            }
        }
    }

    /// Leader, on a divergence at `seq` in variant `diverging`: how far
    /// every variant agreed. If `diverging` reached `seq` (it reported a
    /// different record there), it agreed on everything before; if it fell
    /// silent, only on what it acknowledged. The other followers may lag:
    /// the output held before `seq` waits (up to the cluster timeout) until
    /// each acknowledged it or reported a divergence of its own. Also
    /// returns a report `diverging` sent meanwhile.
    fn agreed_before(&mut self, seq: u64, diverging: u8, reached: bool) -> (u64, Option<Vec<u8>>) {
        let need = self.outputs.newest_before(seq);
        let deadline = std::time::Instant::now() + self.timeout;
        // Followers that reported a divergence: they agreed up to there.
        let mut reported: Vec<(u8, u64)> = Vec::new();
        let mut own = None;
        loop {
            let mut frozen = u64::MAX;
            let mut others = u64::MAX;
            for a in self.leader_ref().acks() {
                let upto = self.outputs.agreement(a.seq, &a.digest);
                match reported.iter().find(|r| r.0 == a.variant) {
                    _ if a.variant == diverging && reached => {}
                    _ if a.variant == diverging => frozen = upto,
                    Some(r) => frozen = frozen.min(r.1.saturating_sub(1)),
                    None => others = others.min(upto),
                }
            }
            let agreed = frozen.min(others).min(seq.saturating_sub(1));
            let hopeless = frozen < need;
            if agreed >= need || hopeless || std::time::Instant::now() >= deadline || self.leader().check().is_err() {
                return (agreed, own);
            }
            match self.leader().try_recv_control() {
                Some((from, Control::Divergence { report, .. })) if from == diverging => own = Some(report),
                Some((from, Control::Divergence { seq: at, .. })) => reported.push((from, at)),
                Some(_) => {}
                None => std::thread::sleep(Duration::from_micros(200)),
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
            loop {
                let timeout = self.timeout;
                match self.leader().wait_acked(want, timeout) {
                    Ok(Acked::All) => break,
                    Ok(Acked::ControlWaiting) => self.take_controls_leader()?,
                    Err(LinkError::AckTimeout { silent, .. }) => {
                        let who = silent.first().copied().unwrap_or(0);
                        return Err(self.diverge(Kind::Silent, want, None, None, who, false));
                    }
                    Err(e) => {
                        self.take_controls_leader()?;
                        return Err(Monitor::link_stop(e));
                    }
                }
            }
            acked = agreed(self);
        }
        self.outputs.release(acked, all);
        Ok(())
    }

    /// After the call ran (or was replayed) with return value `ret`.
    /// Leader: `caught` holds the forwarded host signals (bits) that reach
    /// every variant right after this call. Follower: `raise` receives the
    /// leader's.
    pub(crate) fn end(&mut self, ret: i64, caught: u64, raise: &mut dyn FnMut(SignalEvent)) -> Result<(), Stop> {
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
                    sigs[n] = SignalEvent { sig: s, code: 0, addr: 0 };
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

    /// The program ends with `exit` status or killed by `sig`: the last
    /// event is checked in lockstep, held outputs go out, the run ends.
    pub(crate) fn finish(&mut self, exit: Option<i32>, sig: Option<i32>) -> Result<(), Stop> {
        self.finish_with(exit, sig, false)
    }

    /// Leader: the program dies of a signal from outside (sent to the
    /// VMM) that no call of its received. Followers may be at a later call
    /// already (acknowledged with its record); they end with the leader
    /// when they find its death instead of their call's entry.
    pub(crate) fn finish_killed_externally(&mut self, sig: i32) -> Result<(), Stop> {
        self.finish_with(None, Some(sig), true)
    }

    fn finish_with(&mut self, exit: Option<i32>, sig: Option<i32>, external: bool) -> Result<(), Stop> {
        // exit_group already went through monitor_begin as a call; the
        // final event is the exit or death itself.
        match (exit, sig) {
            (Some(s), _) => self.rec.exit(s),
            (_, Some(s)) => self.rec.killed(s),
            _ => self.rec.exit(0),
        };
        self.class = Class::Exit;
        self.rule = self.policy.rule(u64::MAX, Class::Exit);
        self.seq += 1;
        let seq = self.seq;
        if self.is_leader() {
            let rec = self.rec.as_bytes().to_vec();
            self.entry.start(&rec);
            let entry = self.entry.finish(0, &[]).to_vec();
            self.leader().push(&entry).map_err(Monitor::link_stop)?;
            self.leader().flush().map_err(Monitor::link_stop)?;
            // Followers may be running code without system calls (a death
            // by a signal is not at a call): this wakes them to take it.
            let _ = self.leader().send_control(&Control::Custom { kind: CTRL_LOOK, payload: Vec::new() });
            if external {
                self.await_any_ack(seq)?;
            } else {
                self.await_followers(seq)?;
            }
            self.release_outputs(true)?;
            self.log.push(seq, self.rec.as_bytes(), 0);
            let status = exit.unwrap_or(128 + sig.unwrap_or(0));
            let _ = self.leader().send_control(&Control::Shutdown { status });
            let _ = self.leader().flush();
            return Ok(());
        }
        let d = record_digest(self.rec.as_bytes());
        self.follower().ack(seq, d).map_err(Monitor::link_stop)?;
        self.fetch_leader_entry(seq)?;
        let view = EntryView::decode(&self.leader_entry).map_err(|e| Stop::link(e.to_string()))?;
        if view.record != self.rec.as_bytes() {
            let leader = view.record.to_vec();
            let mine = self.rec.as_bytes().to_vec();
            return Err(self.diverge(Kind::Ended, seq, Some(&leader), Some(&mine), self.id, true));
        }
        // Stay until the leader ends the run: it still waits for the other
        // followers, and a closed link would look like a failure to it.
        let deadline = std::time::Instant::now() + self.timeout;
        while std::time::Instant::now() < deadline {
            match self.follower().try_recv_control() {
                Some(Control::Shutdown { .. }) => break,
                Some(_) => continue,
                None => {
                    if self.follower().check().is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        Ok(())
    }

    /// Builds, writes and sends a divergence report; returns the stop.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn diverge(
        &mut self,
        kind: Kind,
        seq: u64,
        leader: Option<&[u8]>,
        other: Option<&[u8]>,
        variant: u8,
        took_effect: bool,
    ) -> Stop {
        let name_of = |nr| names::name(nr);
        // A silent follower checked only what it acknowledged; any other
        // reached `seq`, having agreed on everything before.
        let reached = !matches!(kind, Kind::Silent);
        let le = leader.and_then(|r| decode(r, name_of).ok());
        let oe = other.and_then(|r| decode(r, name_of).ok());
        let who = if self.is_leader() { format!("variant {variant}") } else { format!("variant {}", self.id) };
        let message = match kind {
            Kind::Silent if self.is_leader() => {
                format!("{who} stopped answering at event {seq} (the leader was at {})", describe(&le))
            }
            Kind::Silent => format!("the leader stopped answering at event {seq}"),
            Kind::Result => {
                format!("{who} got a different result from {} at event {seq} than the leader", describe(&oe))
            }
            _ => format!("{who} made {} at event {seq} where the leader made {}", describe(&oe), describe(&le)),
        };
        let message = self.in_process(self.in_thread(message));
        let report = Report {
            kind,
            message: message.clone(),
            seq,
            variant: variant as u32,
            detected_by: self.id as u32,
            policy: PolicyUsed::of(self.class, self.rule),
            leader: le,
            other: oe,
            took_effect,
            forensic: vec![self.variant_log()],
        };
        let mut json = report.to_json();
        // Output every variant agreed on before the divergence may go out;
        // nothing from the diverging event on.
        let mut answer = None;
        if self.is_leader() {
            let (agreed, own) = self.agreed_before(seq, variant, reached);
            self.outputs.release_before(agreed, seq);
            answer = own;
        }
        let discarded = self.outputs.discard();
        if self.is_leader() {
            let _ = self.leader().send_control(&Control::Divergence { seq, report: json.clone().into_bytes() });
            let _ = self.leader().flush();
            if report.other.is_none() {
                // The other variant answers with what it made there.
                let deadline = std::time::Instant::now() + Duration::from_secs(1);
                while std::time::Instant::now() < deadline {
                    let got = answer.take().map(|r| (variant, Control::Divergence { seq, report: r }));
                    if let Some((from, Control::Divergence { report: r, .. })) =
                        got.or_else(|| self.leader().try_recv_control())
                    {
                        if from == variant {
                            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&r) {
                                let message = format!(
                                    "variant {variant} made {} at event {seq} where the leader made {}",
                                    describe(&serde_json::from_value(v["other"].clone()).ok()),
                                    describe(&report.leader)
                                );
                                let mut v = v;
                                v["message"] = serde_json::Value::String(message);
                                json = serde_json::to_string_pretty(&v).unwrap_or(json);
                            }
                            break;
                        }
                        continue;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        } else {
            let _ = self.follower().send_control(&Control::Divergence { seq, report: json.clone().into_bytes() });
            // Give the leader time to read it before the link closes.
            let deadline = std::time::Instant::now() + Duration::from_secs(1);
            while std::time::Instant::now() < deadline {
                match self.follower().try_recv_control() {
                    Some(Control::Shutdown { .. }) | Some(Control::Divergence { .. }) => break,
                    _ if self.follower().check().is_err() => break,
                    _ => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        }
        self.write_report_file(&json);
        if discarded > 0 {
            log::warn!(
                target: crate::logger::PROGRAM,
                "{discarded} bytes of held output discarded: they never left this host"
            );
        }
        let message = serde_json::from_str::<serde_json::Value>(&json)
            .ok()
            .and_then(|v| v["message"].as_str().map(String::from))
            .unwrap_or(message);
        Stop::Divergence(message)
    }

    /// The link failed: what every follower agreed on may still go out,
    /// nothing else; the report says which variant and why.
    pub(crate) fn link_failed(&mut self, why: &str, peer: Option<u8>, silent: bool) {
        let seq = self.seq;
        if self.is_leader() {
            let acked = agreed(self);
            self.outputs.release_before(acked, seq + 1);
        }
        let discarded = self.outputs.discard();
        let variant = peer.unwrap_or(if self.is_leader() { self.id } else { 0 });
        let report = Report {
            kind: if silent { Kind::Silent } else { Kind::Link },
            message: if silent {
                format!("variant {variant} stopped answering at event {seq}: {why}")
            } else {
                format!("the link to variant {variant} failed at event {seq}: {why}")
            },
            seq,
            variant: variant as u32,
            detected_by: self.id as u32,
            policy: PolicyUsed::of(self.class, self.rule),
            leader: None,
            other: None,
            took_effect: false,
            forensic: vec![self.variant_log()],
        };
        self.write_report_file(&report.to_json());
        if discarded > 0 {
            log::warn!(
                target: crate::logger::PROGRAM,
                "{discarded} bytes of held output discarded: they never left this host"
            );
        }
    }

    fn write_report_file(&self, json: &str) {
        // The first process's report keeps the plain name; each other
        // process's stream has its own file.
        let name = if self.spec.pid == crate::kernel::proc_table::FIRST_PID {
            format!("dmvx-divergence-variant{}.json", self.id)
        } else {
            format!("dmvx-divergence-variant{}-pid{}.json", self.id, self.spec.pid)
        };
        let path = self.report_dir.join(&name);
        match crate::jail::reports::write(&self.report_dir, &name, json.as_bytes()) {
            Ok(()) => log::info!(target: crate::logger::PROGRAM, "divergence report written to {}", path.display()),
            // Nothing is lost: the report goes to stderr instead.
            Err(e) => log::error!(
                target: crate::logger::PROGRAM,
                "cannot write the divergence report {}: {e}; the report:\n{json}",
                path.display()
            ),
        }
    }

    /// A report message naming the thread, when the process has threads.
    fn in_thread(&self, message: String) -> String {
        if !self.threaded {
            return message;
        }
        let mut m = format!("thread {}: {message}", self.tid);
        if let Some((t, s)) = self.preempted {
            m.push_str(&format!(
                " (thread {t} was preempted between two system calls after event {s}: a data race in the program \
                 can make variants differ after such a preemption)"
            ));
        }
        m
    }

    /// A report message naming the process, when it is not the first.
    fn in_process(&self, message: String) -> String {
        if self.spec.pid == crate::kernel::proc_table::FIRST_PID {
            message
        } else {
            format!("process {} ({}): {message}", self.spec.pid, self.spec.path)
        }
    }

    /// Leader: the run stops because another process of this variant
    /// diverged; this stream's followers stop too (their own report is that
    /// process's).
    pub(crate) fn stop_followers(&mut self, status: i32) {
        if self.is_leader() {
            let _ = self.outputs.discard();
            let _ = self.leader().send_control(&Control::Shutdown { status });
            let _ = self.leader().flush();
        }
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
fn agreed(m: &Monitor) -> u64 {
    let mut acks = m.leader_ref().acks().peekable();
    if acks.peek().is_none() {
        return m.leader_ref().acked();
    }
    acks.map(|a| m.outputs.agreement(a.seq, &a.digest)).min().unwrap_or(0)
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
