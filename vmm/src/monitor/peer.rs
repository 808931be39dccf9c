//! What a variant does with its peers the same way in process mode and in
//! Linux mode: its end of the link, the leader's wait for acknowledgements,
//! the goodbyes at the end of a run (agreed or diverged), and divergence
//! reports: decoded from peers as typed values, answered, and written.
//! Each mode keeps only what its events are.

use std::path::Path;
use std::time::{Duration, Instant};

use dmvx_sync::link::{Follower, Leader, LinkError};
use dmvx_sync::record::Event;
use dmvx_sync::report::{describe, Report, VariantLog};
use dmvx_sync::{Acked, ClusterConfig, Control, HandshakeInfo, PrivateKey, Role};

use crate::logger::PROGRAM;

/// This variant's end of the cluster.
pub enum Link {
    Leader(Leader),
    Follower(Box<Follower>),
}

impl Link {
    /// Joins `cfg` as variant `id` in `role`: the leader accepts its
    /// followers, a follower connects to it.
    pub fn join(
        cfg: &ClusterConfig,
        id: u8,
        role: Role,
        key: &PrivateKey,
        info: &HandshakeInfo,
    ) -> Result<Link, LinkError> {
        Ok(match role {
            Role::Leader => Link::Leader(Leader::start(cfg, key, info)?),
            Role::Follower => Link::Follower(Box::new(Follower::connect(cfg, id, key, info)?)),
        })
    }

    pub fn is_leader(&self) -> bool {
        matches!(self, Link::Leader(_))
    }

    /// The leader's link (call only on the leader).
    pub fn leader(&mut self) -> &mut Leader {
        match self {
            Link::Leader(l) => l,
            Link::Follower(_) => unreachable!("leader link used on a follower"),
        }
    }

    /// The leader's link, shared (call only on the leader).
    pub fn leader_ref(&self) -> &Leader {
        match self {
            Link::Leader(l) => l,
            Link::Follower(_) => unreachable!("leader link used on a follower"),
        }
    }

    /// The follower's link (call only on a follower).
    pub fn follower(&mut self) -> &mut Follower {
        match self {
            Link::Follower(f) => f,
            Link::Leader(_) => unreachable!("follower link used on the leader"),
        }
    }
}

/// A mode's state, as the shared pieces see it: its end of the cluster.
pub(crate) trait Peer {
    fn link(&mut self) -> &mut Link;
}

/// Leader: waits until every follower acknowledged `seq`. Control messages
/// that arrive meanwhile go to `controls` first (its stop ends the wait);
/// each wait lasts up to what `wait` says; a failed wait (a timeout names
/// the silent followers) becomes the stop that `failed` makes of it.
pub(crate) fn await_acked<P: Peer, S>(
    p: &mut P,
    seq: u64,
    mut wait: impl FnMut() -> Duration,
    mut controls: impl FnMut(&mut P) -> Result<(), S>,
    failed: impl FnOnce(&mut P, LinkError) -> S,
) -> Result<(), S> {
    loop {
        match p.link().leader().wait_acked(seq, wait()) {
            Ok(Acked::All) => return Ok(()),
            Ok(Acked::ControlWaiting) => controls(p)?,
            Err(e) => return Err(failed(p, e)),
        }
    }
}

/// Leader: the run ended with `status`, agreed by every follower; they may go.
pub(crate) fn send_goodbye(leader: &mut Leader, status: i32) {
    let _ = leader.send_control(&Control::Shutdown { status });
    let _ = leader.flush();
}

/// Follower: stays until the leader ends the run (or `within` passed, or
/// the link failed): it may still wait for the other followers, and a link
/// closed before would look like a failure to it.
pub(crate) fn await_goodbye(follower: &mut Follower, within: Duration) {
    await_leader(follower, within, |c| matches!(c, Control::Shutdown { .. }));
}

/// Leader: tells every follower the run stops on the divergence in `report`.
pub(crate) fn send_report(leader: &mut Leader, seq: u64, report: &str) {
    let _ = leader.send_control(&Control::Divergence { seq, report: report.as_bytes().to_vec() });
    let _ = leader.flush();
}

/// Follower, after a divergence: gives the leader a moment to read its
/// report, until the leader's own report or goodbye arrives.
pub(crate) fn await_farewell(follower: &mut Follower) {
    await_leader(follower, Duration::from_secs(1), |c| {
        matches!(c, Control::Shutdown { .. } | Control::Divergence { .. })
    });
}

fn await_leader(follower: &mut Follower, within: Duration, until: impl Fn(&Control) -> bool) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        match follower.try_recv_control() {
            Some(c) if until(&c) => return,
            Some(_) => {}
            None if follower.check().is_err() => return,
            None => std::thread::sleep(Duration::from_millis(1)),
        }
    }
}

/// The report file of variant `id` about process `pid` (None: the first
/// process, or a Linux guest), which keeps the plain name.
pub(crate) fn report_name(id: u8, pid: Option<u32>) -> String {
    match pid {
        None => format!("dmvx-divergence-variant{id}.json"),
        Some(pid) => format!("dmvx-divergence-variant{id}-pid{pid}.json"),
    }
}

/// Writes report `json` as `name` into `dir` and says where it went;
/// nothing is lost if it cannot be written: it goes to stderr instead.
pub(crate) fn write_report(dir: &Path, name: &str, json: &str) {
    let path = dir.join(name);
    match crate::jail::reports::write(dir, name, json.as_bytes()) {
        Ok(()) => log::info!(target: PROGRAM, "divergence report written to {}", path.display()),
        Err(e) => log::error!(
            target: PROGRAM,
            "cannot write the divergence report {}: {e}; the report:\n{json}",
            path.display()
        ),
    }
}

/// The message of a report whose other variant `variant` made `other` at
/// event `seq` where the leader made `leader`.
pub(crate) fn made_instead(variant: u32, seq: u64, other: &Option<Event>, leader: &Option<Event>) -> String {
    format!("variant {variant} made {} at event {seq} where the leader made {}", describe(other), describe(leader))
}

/// The other variant's answer to the leader's `report` of event `seq`:
/// what it made there (`mine`) and its recent events.
pub(crate) fn answer(mut report: Report, seq: u64, mine: Option<Event>, log: VariantLog) -> Report {
    report.message = made_instead(report.variant, seq, &mine, &report.leader);
    report.other = mine;
    report.forensic.push(log);
    report
}

#[cfg(test)]
mod tests {
    use dmvx_sync::report::{Kind, PolicyUsed};

    use super::*;

    fn call(name: &str) -> Option<Event> {
        Some(Event::Call { nr: 1, name: name.into(), class: "output".into(), args: vec![] })
    }

    #[test]
    fn an_answer_fills_in_what_the_other_variant_made() {
        let leader_log = VariantLog { variant: 0, events: vec![], layout: None };
        let report = Report {
            kind: Kind::Records,
            message: "variant 1 made nothing at event 5 where the leader made write()".into(),
            seq: 5,
            variant: 1,
            detected_by: 0,
            policy: PolicyUsed::default(),
            leader: call("write"),
            other: None,
            took_effect: false,
            forensic: vec![leader_log],
        };
        let sent = Report::from_peer(report.to_json().as_bytes(), 5, 0);
        let mine = VariantLog { variant: 1, events: vec![], layout: None };
        let a = answer(sent, 5, call("openat"), mine);
        let v = Report::parse(&a.to_json()).unwrap();
        assert_eq!(v["message"], "variant 1 made openat() at event 5 where the leader made write()");
        assert_eq!(v["other"]["name"], "openat");
        assert_eq!(v["leader"]["name"], "write");
        assert_eq!(v["kind"], "records");
        let logs: Vec<_> = v["forensic"].as_array().unwrap().iter().map(|l| l["variant"].clone()).collect();
        assert_eq!(logs, [0, 1]);
    }

    #[test]
    fn report_files_are_named_by_variant_and_process() {
        assert_eq!(report_name(2, None), "dmvx-divergence-variant2.json");
        assert_eq!(report_name(1, Some(7)), "dmvx-divergence-variant1-pid7.json");
    }
}
