//! Divergence reports: what was different, where, under which policy, and
//! the last events of every variant (the forensic log).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::policy::{Class, Rule};
use crate::record::{decode, Event};

/// How many recent events each variant keeps for a report.
pub const FORENSIC_EVENTS: usize = 64;

/// One past event in the forensic log.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoggedEvent {
    pub seq: u64,
    #[serde(flatten)]
    pub event: Event,
    pub ret: i64,
}

/// A ring of a variant's last events (raw records; decoded only for a report).
#[derive(Clone, Debug, Default)]
pub struct ForensicLog {
    ring: VecDeque<(u64, Vec<u8>, i64)>,
}

impl ForensicLog {
    /// Remembers event `seq` (its record and return value).
    pub fn push(&mut self, seq: u64, record: &[u8], ret: i64) {
        if self.ring.len() == FORENSIC_EVENTS {
            if let Some((_, mut buf, _)) = self.ring.pop_front() {
                buf.clear();
                buf.extend_from_slice(record);
                self.ring.push_back((seq, buf, ret));
                return;
            }
        }
        self.ring.push_back((seq, record.to_vec(), ret));
    }

    /// The events, oldest first, decoded.
    pub fn events(&self, name_of: impl Fn(u64) -> Option<&'static str> + Copy) -> Vec<LoggedEvent> {
        self.ring
            .iter()
            .filter_map(|(seq, r, ret)| {
                decode(r, name_of).ok().map(|event| LoggedEvent { seq: *seq, event, ret: *ret })
            })
            .collect()
    }
}

/// What diverged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Different events (call, arguments, data, exit, fault) at one sequence number.
    Records,
    /// The same call returned different results where each variant ran it locally.
    Result,
    /// A variant stopped answering.
    Silent,
    /// A variant ended (exit or fault) where others did not.
    Ended,
    /// The authenticated link to a variant failed: lost, closed, or a
    /// frame that was forged, tampered with or broke the protocol.
    Link,
    /// A signal reached the program while it ran without system calls, and
    /// the variants could not take it at the same point.
    Signal,
}

/// The report written when variants diverge.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub kind: Kind,
    /// Human-readable one-line summary.
    pub message: String,
    /// Sequence number of the event that diverged.
    pub seq: u64,
    /// The variant that disagreed with the leader.
    pub variant: u32,
    /// The variant that detected it.
    pub detected_by: u32,
    /// The policy that applied: class, check, input.
    pub policy: PolicyUsed,
    /// The leader's event and the other variant's.
    pub leader: Option<Event>,
    pub other: Option<Event>,
    /// Whether the leader's event had taken effect already (relaxed calls).
    pub took_effect: bool,
    /// The last events of each variant.
    pub forensic: Vec<VariantLog>,
}

/// The rule a diverging call fell under.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PolicyUsed {
    pub class: String,
    pub check: String,
    pub input: String,
}

impl PolicyUsed {
    /// The rule of `class`, by the names policy files use.
    pub fn of(class: Class, rule: Rule) -> Self {
        PolicyUsed { class: class.name().into(), check: rule.check.name().into(), input: rule.input.name().into() }
    }
}

/// One variant's recent events.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VariantLog {
    pub variant: u32,
    pub events: Vec<LoggedEvent>,
    /// Its address-space layout (process mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<LayoutUsed>,
}

/// A variant's address-space layout: where its program, interpreter, heap,
/// initial stack pointer and mmap area were (hexadecimal addresses), and the
/// seed they were drawn from (`dmvx-vmm --layout-seed SEED --variant ID`
/// reproduces them; "fixed": no randomisation).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayoutUsed {
    pub seed: String,
    /// Images loaded by execve before this one.
    pub generation: u32,
    pub program: String,
    pub interpreter: String,
    pub heap: String,
    pub stack: String,
    pub mmap_top: String,
    /// Top of the anonymous mappings' area (absent in older reports).
    #[serde(default)]
    pub anon_top: String,
}

impl Report {
    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// Parses a report back (for tests and tools).
    pub fn parse(json: &str) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_str(json)
    }

    /// A report a peer sent, if it is one. The peer is not trusted: larger
    /// reports are refused, and what is kept of one is bounded.
    pub fn decode(bytes: &[u8]) -> Option<Report> {
        if bytes.len() > MAX_PEER_REPORT {
            return None;
        }
        let mut r: Report = serde_json::from_slice(bytes).ok()?;
        r.message = bounded(&r.message);
        r.forensic.truncate(MAX_PEER_LOGS);
        for log in &mut r.forensic {
            let excess = log.events.len().saturating_sub(FORENSIC_EVENTS);
            log.events.drain(..excess);
        }
        Some(r)
    }

    /// The report in `bytes` that variant `from` sent about event `seq`;
    /// what does not decode becomes the message of a report of its own.
    pub fn from_peer(bytes: &[u8], seq: u64, from: u8) -> Report {
        Report::decode(bytes).unwrap_or_else(|| Report {
            kind: Kind::Records,
            message: bounded(&String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_MESSAGE)])),
            seq,
            variant: from as u32,
            detected_by: from as u32,
            policy: PolicyUsed::default(),
            leader: None,
            other: None,
            took_effect: false,
            forensic: Vec::new(),
        })
    }
}

/// The largest report taken from a peer, in bytes.
pub const MAX_PEER_REPORT: usize = 1 << 20;
/// What is kept of a peer's report: the message's length in bytes, and
/// how many variants' logs.
const MAX_MESSAGE: usize = 16 << 10;
const MAX_PEER_LOGS: usize = 256;

/// `s`, cut to at most [`MAX_MESSAGE`] bytes at a character boundary.
fn bounded(s: &str) -> String {
    let mut end = s.len().min(MAX_MESSAGE);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Renders an event in one line, for the human-readable message.
pub fn describe(e: &Option<Event>) -> String {
    match e {
        None => "nothing".into(),
        Some(Event::Exit { status }) => format!("exit({status})"),
        Some(Event::Killed { signal }) => format!("death by signal {signal}"),
        Some(Event::Serial { offset, text }) => format!("console output {text:?} at byte {offset}"),
        Some(Event::Call { name, args, .. }) => {
            let a: Vec<String> = args
                .iter()
                .map(|a| match a {
                    crate::record::Arg::Int(v) => format!("{v:#x}"),
                    crate::record::Arg::Fd(v) => format!("fd {v}"),
                    crate::record::Arg::Str(s) => format!("{s:?}"),
                    crate::record::Arg::Bytes(h) => format!("<{} bytes>", h.len() / 2),
                    crate::record::Arg::Digest { sha256, len } => format!("<{len} bytes, sha256 {}…>", &sha256[..12]),
                })
                .collect();
            format!("{name}({})", a.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Class;
    use crate::record::RecordBuf;

    #[test]
    fn forensic_log_keeps_the_last_events() {
        let mut log = ForensicLog::default();
        let mut r = RecordBuf::new();
        for i in 0..200u64 {
            r.call(39, Class::Process).int(i);
            log.push(i, r.as_bytes(), 2);
        }
        let ev = log.events(|_| Some("getpid"));
        assert_eq!(ev.len(), FORENSIC_EVENTS);
        assert_eq!(ev[0].seq, 200 - FORENSIC_EVENTS as u64);
        assert_eq!(ev.last().unwrap().seq, 199);
    }

    #[test]
    fn reports_serialise() {
        let mut a = RecordBuf::new();
        a.call(1, Class::Output).fd(1).digest_of(b"a");
        let leader = decode(a.as_bytes(), |_| Some("write")).ok();
        let r = Report {
            kind: Kind::Records,
            message: format!("variant 1 made {} where the leader made {}", describe(&None), describe(&leader)),
            seq: 7,
            variant: 1,
            detected_by: 1,
            policy: PolicyUsed { class: "output".into(), check: "lockstep".into(), input: "replicated".into() },
            leader,
            other: None,
            took_effect: false,
            forensic: vec![],
        };
        let v = Report::parse(&r.to_json()).unwrap();
        assert_eq!(v["seq"], 7);
        assert_eq!(v["leader"]["name"], "write");
        assert_eq!(v["kind"], "records");
    }

    #[test]
    fn reports_decode_as_they_were_written() {
        let mut rec = RecordBuf::new();
        rec.call(1, Class::Output).fd(1).digest_of(b"a");
        let mut log = ForensicLog::default();
        log.push(3, rec.as_bytes(), 1);
        let leader = decode(rec.as_bytes(), |_| Some("write")).ok();
        let r = Report {
            kind: Kind::Silent,
            message: "m".into(),
            seq: 3,
            variant: 2,
            detected_by: 0,
            policy: PolicyUsed { class: "output".into(), check: "lockstep".into(), input: "local".into() },
            leader: leader.clone(),
            other: None,
            took_effect: true,
            forensic: vec![
                VariantLog { variant: 0, events: log.events(|_| Some("write")), layout: None },
                VariantLog { variant: 2, events: vec![], layout: Some(LayoutUsed::default()) },
            ],
        };
        let back = Report::decode(r.to_json().as_bytes()).expect("decodes");
        assert_eq!(back.to_json(), r.to_json());
        assert_eq!(back.kind, Kind::Silent);
        assert_eq!(back.leader, leader);
        assert_eq!(back.forensic[0].events[0].event, leader.unwrap());
    }

    #[test]
    fn a_peers_report_is_bounded_and_never_refused() {
        let r = Report::from_peer(b"not json \xff", 9, 1);
        assert_eq!((r.seq, r.variant, r.kind), (9, 1, Kind::Records));
        assert!(r.message.starts_with("not json"));
        let huge = "é".repeat(MAX_PEER_REPORT);
        let r = Report::from_peer(huge.as_bytes(), 1, 1);
        assert!(r.message.len() <= MAX_MESSAGE && r.message.starts_with('é'));
        let long = format!(
            "{{\"kind\":\"records\",\"message\":\"{}\",\"seq\":1,\"variant\":1,\"detected_by\":1,\
             \"policy\":{{\"class\":\"\",\"check\":\"\",\"input\":\"\"}},\"leader\":null,\"other\":null,\
             \"took_effect\":false,\"forensic\":[]}}",
            "x".repeat(100_000)
        );
        let r = Report::decode(long.as_bytes()).expect("decodes");
        assert_eq!(r.message.len(), MAX_MESSAGE);
    }
}
