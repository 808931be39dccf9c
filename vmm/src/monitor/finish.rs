//! The end of a stream: the program's exit or death is its last event,
//! checked in lockstep; then the leader lets held outputs go and says
//! goodbye, and the followers wait for it (`peer`), so that no variant's
//! closed link looks like a failure to another.

use dmvx_sync::link::LinkError;
use dmvx_sync::policy::Class;
use dmvx_sync::record::{record_digest, EntryView};
use dmvx_sync::report::Kind;
use dmvx_sync::Control;

use super::engine::CTRL_LOOK;
use super::{peer, Monitor, Stop};

impl Monitor {
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
            peer::send_goodbye(self.leader(), status);
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
        let timeout = self.timeout;
        peer::await_goodbye(self.follower(), timeout);
        Ok(())
    }

    /// Leader: waits until every follower acknowledged `seq`, whatever it
    /// made there (a death from outside: see `finish_killed_externally`).
    fn await_any_ack(&mut self, seq: u64) -> Result<(), Stop> {
        let timeout = self.timeout;
        peer::await_acked(
            self,
            seq,
            || timeout,
            |m| {
                // A follower that reached a different call there reports
                // it; the death is the leader's, not a divergence.
                let _ = m.leader().try_recv_control();
                Ok(())
            },
            |m, e| match e {
                LinkError::AckTimeout { silent, .. } => m.silent_follower(seq, &silent),
                e => Monitor::link_stop(e),
            },
        )
    }

    /// Leader: the run stops because another process of this variant
    /// diverged; this stream's followers stop too (their own report is that
    /// process's).
    pub(crate) fn stop_followers(&mut self, status: i32) {
        if self.is_leader() {
            let _ = self.outputs.discard();
            peer::send_goodbye(self.leader(), status);
        }
    }
}
