//! Process mode's divergence reports: built where a variant finds that it
//! differs, answered by the other variant with what it made there, merged
//! as typed reports, and written (`peer`). Output every variant agreed on
//! before the divergence may still go out; nothing after it.

use std::time::{Duration, Instant};

use dmvx_sync::record::decode;
use dmvx_sync::report::{describe, Kind, PolicyUsed, Report};
use dmvx_sync::Control;

use super::engine::agreed;
use super::{peer, Monitor, Stop};
use crate::kernel::proc_table::FIRST_PID;
use crate::kernel::syscall::names;

impl Monitor {
    /// Builds, writes and sends a divergence report; returns the stop.
    pub(super) fn diverge(
        &mut self,
        kind: Kind,
        seq: u64,
        leader: Option<&[u8]>,
        other: Option<&[u8]>,
        variant: u8,
        took_effect: bool,
    ) -> Stop {
        // A silent follower checked only what it acknowledged; any other
        // reached `seq`, having agreed on everything before.
        let reached = !matches!(kind, Kind::Silent);
        let le = leader.and_then(|r| decode(r, names::name).ok());
        let oe = other.and_then(|r| decode(r, names::name).ok());
        let who = if self.is_leader() { variant } else { self.id };
        let message = match kind {
            Kind::Silent if self.is_leader() => {
                format!("variant {who} stopped answering at event {seq} (the leader was at {})", describe(&le))
            }
            Kind::Silent => format!("the leader stopped answering at event {seq}"),
            Kind::Result => {
                format!("variant {who} got a different result from {} at event {seq} than the leader", describe(&oe))
            }
            _ => peer::made_instead(who as u32, seq, &oe, &le),
        };
        let message = self.in_process(self.in_thread(message));
        let mut report = self.report(kind, message, seq, variant);
        (report.leader, report.other, report.took_effect) = (le, oe, took_effect);
        let json = report.to_json();
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
            peer::send_report(self.leader(), seq, &json);
            if report.other.is_none() {
                // The other variant answers with what it made there.
                if let Some(mut reply) = self.await_answer(seq, variant, answer) {
                    reply.message = peer::made_instead(variant as u32, seq, &reply.other, &report.leader);
                    report = reply;
                }
            }
        } else {
            let _ = self.follower().send_control(&Control::Divergence { seq, report: json.into_bytes() });
            // Give the leader time to read it before the link closes.
            peer::await_farewell(self.follower());
        }
        self.write_report_file(&report.to_json());
        warn_discarded(discarded);
        Stop::Divergence(report.message)
    }

    /// Leader: the answer of `variant` to the report of event `seq` (it
    /// may have come already), if it comes within a second and decodes.
    fn await_answer(&mut self, seq: u64, variant: u8, mut answer: Option<Vec<u8>>) -> Option<Report> {
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline {
            let got = answer.take().map(|r| (variant, Control::Divergence { seq, report: r }));
            match got.or_else(|| self.leader().try_recv_control()) {
                Some((from, Control::Divergence { report, .. })) if from == variant => return Report::decode(&report),
                Some((_, Control::Divergence { .. })) => {}
                _ => std::thread::sleep(Duration::from_millis(2)),
            }
        }
        None
    }

    /// Leader: follower `from` reported a divergence at `seq`: the leader's
    /// view joins its report, which every variant keeps, and all stop.
    pub(super) fn on_follower_report(&mut self, from: u8, seq: u64, report: &[u8]) -> Stop {
        let mut report = Report::from_peer(report, seq, from);
        report.forensic.push(self.variant_log());
        let json = report.to_json();
        // The reporting follower checked every event before `seq`.
        let (agreed, _) = self.agreed_before(seq, from, true);
        self.outputs.release_before(agreed, seq);
        let discarded = self.outputs.discard();
        self.write_report_file(&json);
        peer::send_report(self.leader(), seq, &json);
        log::warn!(
            target: crate::logger::PROGRAM,
            "variant {from} diverged at event {seq}; {discarded} bytes of held output discarded"
        );
        Stop::Divergence(report.message)
    }

    /// Follower: the leader's report of a divergence at `seq`. If the
    /// leader found it at this variant's current event, this variant
    /// answers with what it made there.
    pub(super) fn on_leader_report(&mut self, seq: u64, report: &[u8]) -> Stop {
        let mut report = Report::from_peer(report, seq, self.spec.cfg.leader().id);
        if seq == self.seq && report.variant == self.id as u32 && report.other.is_none() {
            let mine = decode(self.rec.as_bytes(), names::name).ok();
            report = peer::answer(report, seq, mine, self.variant_log());
            let reply = report.to_json().into_bytes();
            let _ = self.follower().send_control(&Control::Divergence { seq, report: reply });
        }
        self.write_report_file(&report.to_json());
        Stop::Divergence(report.message)
    }

    /// Leader: follower `silent` stopped answering; the leader is at `seq`.
    pub(super) fn silent_follower(&mut self, seq: u64, silent: &[u8]) -> Stop {
        let who = silent.first().copied().unwrap_or(0);
        let mine = self.rec.as_bytes().to_vec();
        self.diverge(Kind::Silent, seq, Some(&mine), None, who, false)
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
        let (kind, message) = if silent {
            (Kind::Silent, format!("variant {variant} stopped answering at event {seq}: {why}"))
        } else {
            (Kind::Link, format!("the link to variant {variant} failed at event {seq}: {why}"))
        };
        let report = self.report(kind, message, seq, variant);
        self.write_report_file(&report.to_json());
        warn_discarded(discarded);
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
        let report = self.report(Kind::Signal, message, seq, self.id);
        let json = report.to_json();
        let (agreed, _) = self.agreed_before(seq + 1, u8::MAX, true);
        self.outputs.release_before(agreed, seq + 1);
        let _ = self.outputs.discard();
        peer::send_report(self.leader(), seq, &json);
        self.write_report_file(&json);
        Stop::Divergence(report.message)
    }

    /// A report of this variant's, about `variant` at `seq`, with neither
    /// side's event yet.
    fn report(&self, kind: Kind, message: String, seq: u64, variant: u8) -> Report {
        Report {
            kind,
            message,
            seq,
            variant: variant as u32,
            detected_by: self.id as u32,
            policy: PolicyUsed::of(self.class, self.rule),
            leader: None,
            other: None,
            took_effect: false,
            forensic: vec![self.variant_log()],
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

    /// The first process's report keeps the plain name; each other
    /// process's stream has its own file.
    fn write_report_file(&self, json: &str) {
        let pid = (self.spec.pid != FIRST_PID).then_some(self.spec.pid);
        peer::write_report(&self.report_dir, &peer::report_name(self.id, pid), json);
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
        if self.spec.pid == FIRST_PID {
            message
        } else {
            format!("process {} ({}): {message}", self.spec.pid, self.spec.path)
        }
    }
}

fn warn_discarded(bytes: usize) {
    if bytes > 0 {
        log::warn!(target: crate::logger::PROGRAM, "{bytes} bytes of held output discarded: they never left this host");
    }
}
