//! Event records and the entries the leader ships to followers.
//!
//! A *record* is the canonical form of one event of a variant: a system
//! call with its arguments normalised so that diversified variants compare
//! equal (descriptor numbers, which are identical in every variant; path
//! strings; digests of the buffers a call outputs; small input structures
//! byte for byte; never addresses), an exit, or a death by signal. Variants
//! agree on an event exactly when their record bytes are equal.
//!
//! An *entry* is what the leader sends for each of its events: the record,
//! the call's return value, the results of the host operations a follower
//! must replay instead of performing (replicated inputs), and the signals
//! delivered right after the call.
//!
//! Both are a compact little-endian binary encoding, written into reusable
//! buffers without allocating on the hot path; decoding checks every length.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::policy::Class;

const EV_CALL: u8 = 1;
const EV_EXIT: u8 = 2;
const EV_KILLED: u8 = 3;
/// A call whose record holds a fresh temporary name (`A_TEMP`): compared in
/// its masked form (see `tempname`).
const EV_CALL_T: u8 = 4;

const A_INT: u8 = 1;
const A_FD: u8 = 2;
const A_STR: u8 = 3;
const A_DIGEST: u8 = 4;
const A_BYTES: u8 = 5;
/// A fresh temporary name: its masked form, then the name itself.
const A_TEMP: u8 = 6;

/// Longest string or byte argument kept whole in a record.
pub const MAX_INLINE: usize = 4096;

/// A record under construction (reused from call to call).
#[derive(Clone, Debug, Default)]
pub struct RecordBuf {
    buf: Vec<u8>,
}

impl RecordBuf {
    pub fn new() -> Self {
        RecordBuf { buf: Vec::with_capacity(256) }
    }

    /// Starts the record of system call `nr` of `class`.
    #[inline]
    pub fn call(&mut self, nr: u64, class: Class) -> &mut Self {
        self.buf.clear();
        self.buf.push(EV_CALL);
        self.buf.extend_from_slice(&(nr as u16).to_le_bytes());
        self.buf.push(class as u8);
        self
    }

    /// The record of an exit with `status`.
    pub fn exit(&mut self, status: i32) -> &mut Self {
        self.buf.clear();
        self.buf.push(EV_EXIT);
        self.buf.extend_from_slice(&status.to_le_bytes());
        self
    }

    /// The record of a death by signal `sig`.
    pub fn killed(&mut self, sig: i32) -> &mut Self {
        self.buf.clear();
        self.buf.push(EV_KILLED);
        self.buf.extend_from_slice(&sig.to_le_bytes());
        self
    }

    /// The thread that makes the call (the first argument of the records of
    /// a process with threads).
    #[inline]
    pub fn thread(&mut self, tid: u32) -> &mut Self {
        self.int(tid as u64)
    }

    /// An integer argument (flags, lengths, modes, ...).
    #[inline]
    pub fn int(&mut self, v: u64) -> &mut Self {
        self.buf.push(A_INT);
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// A descriptor argument.
    #[inline]
    pub fn fd(&mut self, v: u64) -> &mut Self {
        self.buf.push(A_FD);
        self.buf.extend_from_slice(&(v as u32).to_le_bytes());
        self
    }

    /// A string argument (a path); longer ones are kept as a digest.
    pub fn str(&mut self, s: &[u8]) -> &mut Self {
        if s.len() > MAX_INLINE {
            return self.digest_of(s);
        }
        self.buf.push(A_STR);
        self.buf.extend_from_slice(&(s.len() as u16).to_le_bytes());
        self.buf.extend_from_slice(s);
        self
    }

    /// The path of a call that creates a fresh name of the program's choosing
    /// (an O_EXCL create, mkdtemp's mkdir): variants compare it with the
    /// random part of its last component masked (`tempname::mask`), and a
    /// follower binds its name to the leader's.
    pub fn temp_name(&mut self, s: &[u8]) -> &mut Self {
        let Some(masked) = crate::tempname::mask(s) else { return self.str(s) };
        if s.len() > MAX_INLINE || self.buf.first() != Some(&EV_CALL) {
            return self.str(s);
        }
        self.buf[0] = EV_CALL_T;
        self.buf.push(A_TEMP);
        self.buf.extend_from_slice(&(masked.len() as u16).to_le_bytes());
        self.buf.extend_from_slice(&masked);
        self.buf.extend_from_slice(&(s.len() as u16).to_le_bytes());
        self.buf.extend_from_slice(s);
        self
    }

    /// Replaces the record with `record` (a follower adopting the leader's).
    pub fn set(&mut self, record: &[u8]) {
        self.buf.clear();
        self.buf.extend_from_slice(record);
    }

    /// Small input bytes (a socket address, a timespec), kept whole.
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        if b.len() > MAX_INLINE {
            return self.digest_of(b);
        }
        self.buf.push(A_BYTES);
        self.buf.extend_from_slice(&(b.len() as u16).to_le_bytes());
        self.buf.extend_from_slice(b);
        self
    }

    /// Output data, as a SHA-256 digest and a length.
    pub fn digest_of(&mut self, data: &[u8]) -> &mut Self {
        let mut h = Sha256::new();
        h.update(data);
        self.digest(h.finalize().into(), data.len() as u64)
    }

    /// A digest computed by the caller (of data gathered from several buffers).
    pub fn digest(&mut self, d: [u8; 32], len: u64) -> &mut Self {
        self.buf.push(A_DIGEST);
        self.buf.extend_from_slice(&d);
        self.buf.extend_from_slice(&len.to_le_bytes());
        self
    }

    /// The encoded record.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }
}

/// SHA-256 of a record's comparable form (what a follower's
/// acknowledgement carries).
pub fn record_digest(record: &[u8]) -> [u8; 32] {
    Sha256::digest(comparable(record)).into()
}

/// Whether two records describe the same event: equal bytes, or equal
/// once the temporary names in them are reduced to their masked forms.
pub fn records_agree(a: &[u8], b: &[u8]) -> bool {
    a == b || (a.first() == Some(&EV_CALL_T) && comparable(a) == comparable(b))
}

/// The record as variants compare it: temporary names by their masked
/// form only. A malformed record compares as it is.
pub fn comparable(record: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    use std::borrow::Cow;
    if record.first() != Some(&EV_CALL_T) {
        return Cow::Borrowed(record);
    }
    let mut out = Vec::with_capacity(record.len());
    match walk_temp(record, |part| out.extend_from_slice(part), |_| {}) {
        Ok(()) => Cow::Owned(out),
        Err(_) => Cow::Borrowed(record),
    }
}

/// Whether a record holds a fresh temporary name.
pub fn has_temp_name(record: &[u8]) -> bool {
    record.first() == Some(&EV_CALL_T)
}

/// The temporary names (unmasked) in a record, in order.
pub fn temp_names(record: &[u8]) -> Vec<Vec<u8>> {
    let mut names = Vec::new();
    if record.first() == Some(&EV_CALL_T) {
        let _ = walk_temp(record, |_| {}, |n| names.push(n.to_vec()));
    }
    names
}

/// Walks an EV_CALL_T record: `keep` gets every byte range of the
/// comparable form, `name` every unmasked temporary name.
fn walk_temp(record: &[u8], mut keep: impl FnMut(&[u8]), mut name: impl FnMut(&[u8])) -> Result<(), DecodeError> {
    let mut r = Reader::new(record, "record");
    keep(r.take(4)?);
    while !r.done() {
        let tag = r.u8()?;
        let body: &[u8] = match tag {
            A_INT => r.take(8)?,
            A_FD => r.take(4)?,
            A_DIGEST => r.take(40)?,
            A_STR | A_BYTES => {
                let n = r.u16()?;
                keep(&[tag]);
                keep(&n.to_le_bytes());
                keep(r.take(n as usize)?);
                continue;
            }
            A_TEMP => {
                let n = r.u16()?;
                keep(&[tag]);
                keep(&n.to_le_bytes());
                keep(r.take(n as usize)?);
                let m = r.u16()? as usize;
                name(r.take(m)?);
                continue;
            }
            _ => return Err(r.err()),
        };
        keep(&[tag]);
        keep(body);
    }
    Ok(())
}

/// An argument of a decoded record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arg {
    Int(u64),
    Fd(u32),
    Str(String),
    Bytes(String),
    Digest { sha256: String, len: u64 },
}

/// A decoded record, for reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum Event {
    Call {
        nr: u16,
        name: String,
        class: String,
        args: Vec<Arg>,
    },
    Exit {
        status: i32,
    },
    Killed {
        signal: i32,
    },
    /// Console output (Linux mode) from byte `offset` on.
    Serial {
        offset: u64,
        text: String,
    },
}

/// A malformed record or entry (from the network: never trusted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {what} at byte {at}")]
pub struct DecodeError {
    pub what: &'static str,
    pub at: usize,
}

/// A bounds-checked reader.
pub struct Reader<'a> {
    b: &'a [u8],
    at: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub fn new(b: &'a [u8], what: &'static str) -> Self {
        Reader { b, at: 0, what }
    }

    fn err(&self) -> DecodeError {
        DecodeError { what: self.what, at: self.at }
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.b.len()).ok_or_else(|| self.err())?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }

    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    pub fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(self.u32()? as i32)
    }

    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    pub fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(self.u64()? as i64)
    }

    pub fn done(&self) -> bool {
        self.at == self.b.len()
    }

    pub fn rest(&mut self) -> &'a [u8] {
        let s = &self.b[self.at..];
        self.at = self.b.len();
        s
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The thread a call record names (see `RecordBuf::thread`), if it is a
/// call record with an integer first argument.
pub fn record_thread(record: &[u8]) -> Option<u32> {
    record_int(record, 0).and_then(|v| u32::try_from(v).ok())
}

/// Argument `i` of a call record, if the arguments up to it are integers.
pub fn record_int(record: &[u8], i: usize) -> Option<u64> {
    let at = 4 + 9 * i;
    if record.first() != Some(&EV_CALL) || record.len() < at + 9 {
        return None;
    }
    if record[4..=at].iter().step_by(9).any(|&tag| tag != A_INT) {
        return None;
    }
    Some(u64::from_le_bytes(record[at + 1..at + 9].try_into().ok()?))
}

/// The call number and class of a call's record (None for other events).
pub fn call_of(record: &[u8]) -> Option<(u64, Class)> {
    match record {
        [EV_CALL, lo, hi, c, ..] => Some((u16::from_le_bytes([*lo, *hi]) as u64, *Class::ALL.get(*c as usize)?)),
        _ => None,
    }
}

/// Decodes a record; `name_of` names system calls.
pub fn decode(record: &[u8], name_of: impl Fn(u64) -> Option<&'static str>) -> Result<Event, DecodeError> {
    let mut r = Reader::new(record, "record");
    let ev = match r.u8()? {
        EV_CALL | EV_CALL_T => {
            let nr = r.u16()?;
            let c = r.u8()?;
            let class = Class::ALL.get(c as usize).map(|c| c.name()).unwrap_or("?").to_string();
            let mut args = Vec::new();
            while !r.done() {
                args.push(match r.u8()? {
                    A_INT => Arg::Int(r.u64()?),
                    A_FD => Arg::Fd(r.u32()?),
                    A_STR => {
                        let n = r.u16()? as usize;
                        Arg::Str(String::from_utf8_lossy(r.take(n)?).into_owned())
                    }
                    A_TEMP => {
                        let n = r.u16()? as usize;
                        r.take(n)?;
                        let n = r.u16()? as usize;
                        Arg::Str(String::from_utf8_lossy(r.take(n)?).into_owned())
                    }
                    A_BYTES => {
                        let n = r.u16()? as usize;
                        Arg::Bytes(hex(r.take(n)?))
                    }
                    A_DIGEST => {
                        let d = hex(r.take(32)?);
                        Arg::Digest { sha256: d, len: r.u64()? }
                    }
                    _ => return Err(r.err()),
                });
            }
            Event::Call { nr, name: name_of(nr as u64).unwrap_or("unknown").to_string(), class, args }
        }
        EV_EXIT => Event::Exit { status: r.i32()? },
        EV_KILLED => Event::Killed { signal: r.i32()? },
        _ => return Err(r.err()),
    };
    if !r.done() {
        return Err(r.err());
    }
    Ok(ev)
}

/// A signal the leader delivered right after a call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SignalEvent {
    pub sig: i32,
    pub code: i32,
    pub addr: u64,
}

/// An entry under construction on the leader (reused).
#[derive(Clone, Debug, Default)]
pub struct EntryBuf {
    buf: Vec<u8>,
    ops_at: usize,
    ops: u16,
}

impl EntryBuf {
    pub fn new() -> Self {
        EntryBuf { buf: Vec::with_capacity(4096), ops_at: 0, ops: 0 }
    }

    /// Starts the entry of `record`.
    pub fn start(&mut self, record: &[u8]) {
        self.buf.clear();
        self.buf.extend_from_slice(&(record.len() as u16).to_le_bytes());
        self.buf.extend_from_slice(record);
        self.ops_at = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_le_bytes());
        self.ops = 0;
    }

    /// Appends the result of one host operation: its return value and the
    /// bytes it produced, buffer by buffer.
    pub fn op(&mut self, ret: i64, bufs: &[&[u8]]) {
        self.buf.extend_from_slice(&ret.to_le_bytes());
        self.buf.push(bufs.len() as u8);
        for b in bufs {
            self.buf.extend_from_slice(&(b.len() as u32).to_le_bytes());
            self.buf.extend_from_slice(b);
        }
        self.ops += 1;
        let at = self.ops_at;
        self.buf[at..at + 2].copy_from_slice(&self.ops.to_le_bytes());
    }

    /// Finishes with the call's return value and the signals delivered after it.
    pub fn finish(&mut self, ret: i64, signals: &[SignalEvent]) -> &[u8] {
        self.buf.extend_from_slice(&ret.to_le_bytes());
        self.buf.push(signals.len() as u8);
        for s in signals {
            self.buf.extend_from_slice(&s.sig.to_le_bytes());
            self.buf.extend_from_slice(&s.code.to_le_bytes());
            self.buf.extend_from_slice(&s.addr.to_le_bytes());
        }
        &self.buf
    }
}

/// One host operation's results, as recorded by the leader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpView<'a> {
    pub ret: i64,
    bufs: &'a [u8],
    count: u8,
}

impl<'a> OpView<'a> {
    /// The buffers, in order.
    pub fn bufs(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let mut r = Reader::new(self.bufs, "op");
        (0..self.count).map_while(move |_| {
            let n = r.u32().ok()? as usize;
            r.take(n).ok()
        })
    }
}

/// The host operations of an entry, checked by [`EntryView::decode`] and
/// read in place (decoding allocates nothing: it runs for every call).
#[derive(Clone, Copy, Debug)]
pub struct Ops<'a> {
    bytes: &'a [u8],
    count: u16,
}

impl<'a> Ops<'a> {
    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Operation `i`, in the leader's order.
    pub fn get(&self, i: usize) -> Option<OpView<'a>> {
        self.iter().nth(i)
    }

    pub fn iter(&self) -> impl Iterator<Item = OpView<'a>> + 'a {
        let mut r = Reader::new(self.bytes, "ops");
        let b = self.bytes;
        (0..self.count).map_while(move |_| Self::next(&mut r, b).ok())
    }

    fn next(r: &mut Reader<'a>, b: &'a [u8]) -> Result<OpView<'a>, DecodeError> {
        let ret = r.i64()?;
        let count = r.u8()?;
        let start = r.at;
        for _ in 0..count {
            let len = r.u32()? as usize;
            r.take(len)?;
        }
        Ok(OpView { ret, bufs: b.get(start..r.at).unwrap_or_default(), count })
    }
}

/// A decoded entry (borrowing the received bytes).
#[derive(Clone, Debug)]
pub struct EntryView<'a> {
    pub record: &'a [u8],
    pub ops: Ops<'a>,
    pub ret: i64,
    pub signals: Vec<SignalEvent>,
}

impl<'a> EntryView<'a> {
    /// Decodes and bounds-checks an entry.
    pub fn decode(b: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(b, "entry");
        let rl = r.u16()? as usize;
        let record = r.take(rl)?;
        let count = r.u16()?;
        let ops_start = r.at;
        for _ in 0..count {
            Ops::next(&mut r, b)?;
        }
        let ops = Ops { bytes: b.get(ops_start..r.at).unwrap_or_default(), count };
        let ret = r.i64()?;
        let ns = r.u8()?;
        let mut signals = Vec::with_capacity(ns as usize);
        for _ in 0..ns {
            signals.push(SignalEvent { sig: r.i32()?, code: r.i32()?, addr: r.u64()? });
        }
        if !r.done() {
            return Err(r.err());
        }
        Ok(EntryView { record, ops, ret, signals })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(nr: u64) -> Option<&'static str> {
        (nr == 1).then_some("write")
    }

    #[test]
    fn temporary_names_compare_masked() {
        let rec = |path: &[u8], flags: u64| {
            let mut r = RecordBuf::new();
            r.call(257, Class::FileModify).int(-100i64 as u64).temp_name(path).int(flags);
            r.as_bytes().to_vec()
        };
        let (a, b) = (rec(b"/case/tmp.OoZhRt", 0xc2), rec(b"/case/tmp.KO537U", 0xc2));
        assert_ne!(a, b);
        assert!(records_agree(&a, &b));
        assert_eq!(record_digest(&a), record_digest(&b));
        assert!(!records_agree(&a, &rec(b"/case/tmp.KO537U", 0xc1)), "another argument");
        assert!(!records_agree(&a, &rec(b"/case/tmq.KO537U", 0xc2)), "another prefix");
        assert_eq!(temp_names(&a), [b"/case/tmp.OoZhRt".to_vec()]);
        match decode(&a, |_| Some("openat")).unwrap() {
            Event::Call { args, .. } => assert_eq!(args[1], Arg::Str("/case/tmp.OoZhRt".into())),
            e => panic!("{e:?}"),
        }
        // Without a random part it is a plain string, compared whole.
        let (c, d) = (rec(b"/case/a.txt", 0xc2), rec(b"/case/b.txt", 0xc2));
        assert!(!records_agree(&c, &d));
        assert!(temp_names(&c).is_empty());
    }

    #[test]
    fn records_round_trip_and_compare_by_bytes() {
        let mut a = RecordBuf::new();
        a.call(1, Class::Output).fd(1).digest_of(b"hello\n").int(6);
        let mut b = RecordBuf::new();
        b.call(1, Class::Output).fd(1).digest_of(b"hello\n").int(6);
        assert_eq!(a.as_bytes(), b.as_bytes());
        b.call(1, Class::Output).fd(1).digest_of(b"hellO\n").int(6);
        assert_ne!(a.as_bytes(), b.as_bytes());
        match decode(a.as_bytes(), name).unwrap() {
            Event::Call { name, args, .. } => {
                assert_eq!(name, "write");
                assert_eq!(args[0], Arg::Fd(1));
                assert!(matches!(&args[1], Arg::Digest { len: 6, .. }));
            }
            e => panic!("{e:?}"),
        }
        assert_eq!(decode(RecordBuf::new().exit(3).as_bytes(), name).unwrap(), Event::Exit { status: 3 });
    }

    #[test]
    fn entries_round_trip() {
        let mut r = RecordBuf::new();
        r.call(0, Class::NetInput).fd(4).int(100);
        let mut e = EntryBuf::new();
        e.start(r.as_bytes());
        e.op(5, &[b"hello", b""]);
        e.op(-11, &[]);
        let bytes = e.finish(5, &[SignalEvent { sig: 15, code: 0, addr: 0 }]).to_vec();
        let v = EntryView::decode(&bytes).unwrap();
        assert_eq!(v.record, r.as_bytes());
        assert_eq!(v.ops.len(), 2);
        assert_eq!(v.ops.get(0).unwrap().bufs().collect::<Vec<_>>(), vec![&b"hello"[..], &b""[..]]);
        assert_eq!(v.ops.get(1).unwrap().ret, -11);
        assert!(v.ops.get(2).is_none());
        assert_eq!(v.ret, 5);
        assert_eq!(v.signals[0].sig, 15);
    }

    #[test]
    fn malformed_input_is_an_error_never_a_panic() {
        let mut r = RecordBuf::new();
        r.call(1, Class::Output).str(b"/etc/passwd").digest_of(b"x");
        let good = r.as_bytes().to_vec();
        for cut in 0..good.len() {
            let _ = decode(&good[..cut], name);
        }
        let mut e = EntryBuf::new();
        e.start(&good);
        e.op(3, &[b"abc"]);
        let entry = e.finish(3, &[]).to_vec();
        for cut in 0..entry.len() {
            assert!(EntryView::decode(&entry[..cut]).is_err());
        }
        // Random garbage.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..2000 {
            let n = (x % 64) as usize;
            let v: Vec<u8> = (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = EntryView::decode(&v);
            let _ = decode(&v, name);
        }
    }
}
