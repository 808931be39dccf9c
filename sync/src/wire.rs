//! Messages exchanged after the handshake, and their encoding.
//!
//! Messages are encoded with `postcard` (a stable, documented, compact serde
//! format: varint integers, length-prefixed byte strings, varint enum tags).
//! The batch — the only message on the hot path — is also written and read
//! by hand ([`BatchBuilder`], [`BatchView`]) *in exactly the bytes postcard
//! produces for [`Message::Batch`]*, so the leader appends entries into one
//! reusable buffer and the follower hands out entries as slices of the
//! decrypted frame, with no per-entry allocation on either side. Tests check
//! that both encodings agree.

use serde::{Deserialize, Serialize};

/// Version of the whole protocol (handshake and messages). Peers with
/// different versions refuse each other in the handshake.
pub const PROTOCOL_VERSION: u16 = 3;

/// Largest message accepted after the handshake (its plaintext, however
/// many chunks carry it).
pub const MAX_MESSAGE: usize = 8 << 20;
/// Largest handshake frame payload.
pub const MAX_HANDSHAKE_FRAME: usize = 4096;
/// Bytes of AEAD tag at the end of every Noise transport message.
pub const TAG_LEN: usize = 16;
/// Room reserved in front of a batch for its header (tag, first_seq, count).
pub const BATCH_HEADROOM: usize = 1 + 10 + 10;
/// Largest single entry (it must fit in one batch, in one frame).
pub const MAX_ENTRY: usize = MAX_MESSAGE - BATCH_HEADROOM - 10;
/// Largest opaque payload of a control message.
pub const MAX_CONTROL_PAYLOAD: usize = MAX_MESSAGE - 64;

/// postcard's tag of [`Message::Batch`].
const BATCH_TAG: u64 = 0;

/// A message after the handshake. Variants may only ever be appended (the
/// tag is the variant's index); anything else needs a new protocol version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Leader → followers: entries `first_seq, first_seq + 1, ...`.
    Batch { first_seq: u64, entries: Vec<Vec<u8>> },
    /// Follower → leader: the follower reached and verified entry `seq`;
    /// `digest` is the engine's digest at that point.
    Ack { seq: u64, digest: [u8; 32] },
    /// Either direction.
    Control(Control),
    /// Either direction: the sender closes the link on purpose; nothing follows.
    Bye,
}

/// Control messages, in either direction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Control {
    /// Keeps an idle link alive; consumed by the link, never delivered.
    Heartbeat,
    /// The run ends with this exit status.
    Shutdown { status: i32 },
    /// A variant diverged at `seq`; the report is encoded by the engine.
    Divergence { seq: u64, report: Vec<u8> },
    /// Room for the engine's own messages without a protocol change.
    Custom { kind: u32, payload: Vec<u8> },
}

impl Control {
    /// Bytes of opaque payload (reports, custom payloads).
    pub fn payload_len(&self) -> usize {
        match self {
            Control::Heartbeat | Control::Shutdown { .. } => 0,
            Control::Divergence { report, .. } => report.len(),
            Control::Custom { payload, .. } => payload.len(),
        }
    }
}

/// A message that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("empty message")]
    Empty,
    #[error("cannot decode message: {0}")]
    Decode(String),
    #[error("{0} trailing bytes after the message")]
    Trailing(usize),
    #[error("malformed batch: {0}")]
    BadBatch(&'static str),
}

impl Message {
    /// Encodes with postcard.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// Appends the postcard encoding to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        // Serialising these types into a Vec cannot fail: no maps with
        // non-string keys, no unsized sequences, and Vec grows as needed.
        if let Ok(bytes) = postcard::to_extend(self, std::mem::take(out)) {
            *out = bytes;
        }
    }

    /// Decodes a whole message; trailing bytes are an error.
    pub fn decode(bytes: &[u8]) -> Result<Message, WireError> {
        if bytes.is_empty() {
            return Err(WireError::Empty);
        }
        let (msg, rest) = postcard::take_from_bytes::<Message>(bytes).map_err(|e| WireError::Decode(e.to_string()))?;
        if !rest.is_empty() {
            return Err(WireError::Trailing(rest.len()));
        }
        Ok(msg)
    }
}

/// A decoded message that borrows batches from the receive buffer.
#[derive(Debug)]
pub enum Decoded<'a> {
    Batch(BatchView<'a>),
    Other(Message),
}

/// Decodes `bytes`, checking a batch completely but without copying it.
pub fn decode(bytes: &[u8]) -> Result<Decoded<'_>, WireError> {
    let mut pos = 0;
    match read_varint(bytes, &mut pos) {
        None => Err(WireError::Empty),
        Some(BATCH_TAG) => BatchView::parse(bytes).map(Decoded::Batch),
        Some(_) => Message::decode(bytes).map(Decoded::Other),
    }
}

/// Appends `v` as a LEB128 varint (postcard's integer encoding).
pub fn write_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Encodes `v` as a varint into `buf`, returns the number of bytes used.
fn varint_bytes(mut v: u64, buf: &mut [u8; 10]) -> usize {
    let mut n = 0;
    for slot in buf.iter_mut() {
        n += 1;
        if v < 0x80 {
            *slot = v as u8;
            return n;
        }
        *slot = (v as u8) | 0x80;
        v >>= 7;
    }
    n
}

/// Reads a varint at `*pos`, advancing `*pos`. `None` if it runs past the
/// end, is longer than 10 bytes, or overflows 64 bits.
pub fn read_varint(bytes: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value: u64 = 0;
    for i in 0..10u32 {
        let byte = *bytes.get(*pos)?;
        *pos += 1;
        let bits = u64::from(byte & 0x7f);
        if i == 9 && byte > 1 {
            return None;
        }
        value |= bits << (7 * i);
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Builds the encoding of `Message::Batch` in place, entry by entry, in a
/// reusable buffer. The buffer starts with [`BATCH_HEADROOM`] reserved bytes;
/// [`BatchBuilder::finish`] writes the header right-aligned into them.
#[derive(Debug)]
pub struct BatchBuilder {
    buf: Vec<u8>,
    first_seq: u64,
    count: u64,
}

impl BatchBuilder {
    /// A builder using `buf` (cleared) as its storage.
    pub fn with_buffer(mut buf: Vec<u8>, first_seq: u64) -> Self {
        buf.clear();
        buf.resize(BATCH_HEADROOM, 0);
        BatchBuilder { buf, first_seq, count: 0 }
    }

    pub fn first_seq(&self) -> u64 {
        self.first_seq
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes of entries (with their length prefixes) so far.
    pub fn body_len(&self) -> usize {
        self.buf.len() - BATCH_HEADROOM
    }

    /// Appends one entry.
    pub fn push(&mut self, entry: &[u8]) {
        write_varint(&mut self.buf, entry.len() as u64);
        self.buf.extend_from_slice(entry);
        self.count += 1;
    }

    /// Writes the header; returns the buffer and the offset where the
    /// encoded message starts (`buf[start..]` is the message).
    pub fn finish(mut self) -> (Vec<u8>, usize) {
        let mut tmp = [0u8; 10];
        let mut parts = [[0u8; 10]; 3];
        let mut lens = [0usize; 3];
        for (i, v) in [BATCH_TAG, self.first_seq, self.count].into_iter().enumerate() {
            lens[i] = varint_bytes(v, &mut tmp);
            parts[i] = tmp;
        }
        let hlen: usize = lens.iter().sum();
        let start = BATCH_HEADROOM - hlen;
        let mut at = start;
        for i in 0..3 {
            self.buf[at..at + lens[i]].copy_from_slice(&parts[i][..lens[i]]);
            at += lens[i];
        }
        (self.buf, start)
    }
}

/// A checked batch inside a receive buffer.
#[derive(Debug, Clone, Copy)]
pub struct BatchView<'a> {
    pub first_seq: u64,
    pub count: u64,
    /// The entries, each a varint length then the bytes; checked to hold
    /// exactly `count` entries.
    pub body: &'a [u8],
    /// Offset of `body` within the parsed message.
    pub body_offset: usize,
}

impl<'a> BatchView<'a> {
    /// Parses and completely checks an encoded `Message::Batch`.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, WireError> {
        let mut pos = 0;
        if read_varint(bytes, &mut pos) != Some(BATCH_TAG) {
            return Err(WireError::BadBatch("not a batch"));
        }
        let first_seq = read_varint(bytes, &mut pos).ok_or(WireError::BadBatch("bad first_seq"))?;
        let count = read_varint(bytes, &mut pos).ok_or(WireError::BadBatch("bad entry count"))?;
        let body_offset = pos;
        let mut n = 0u64;
        while pos < bytes.len() {
            let len = read_varint(bytes, &mut pos).ok_or(WireError::BadBatch("bad entry length"))?;
            let remaining = (bytes.len() - pos) as u64;
            if len > remaining {
                return Err(WireError::BadBatch("entry runs past the end"));
            }
            pos += len as usize;
            n += 1;
        }
        if n != count {
            return Err(WireError::BadBatch("entry count does not match the entries"));
        }
        if first_seq.checked_add(count).is_none() {
            return Err(WireError::BadBatch("sequence numbers overflow"));
        }
        Ok(BatchView { first_seq, count, body: bytes.get(body_offset..).unwrap_or_default(), body_offset })
    }

    /// The entries, in order.
    pub fn entries(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let body = self.body;
        let mut pos = 0;
        std::iter::from_fn(move || next_entry(body, &mut pos))
    }
}

/// Reads the entry at `*pos` of a batch body, advancing `*pos`.
pub fn next_entry<'a>(body: &'a [u8], pos: &mut usize) -> Option<&'a [u8]> {
    let len = usize::try_from(read_varint(body, pos)?).ok()?;
    let end = pos.checked_add(len)?;
    let entry = body.get(*pos..end)?;
    *pos = end;
    Some(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_entries() -> Vec<Vec<u8>> {
        vec![vec![], b"a".to_vec(), vec![7u8; 127], vec![9u8; 128], vec![1u8; 70_000]]
    }

    #[test]
    fn batch_builder_matches_postcard() {
        for first_seq in [0u64, 1, 127, 128, 300, u64::MAX / 2] {
            for n in [0usize, 1, 5] {
                let entries: Vec<Vec<u8>> = sample_entries().into_iter().take(n).collect();
                let mut b = BatchBuilder::with_buffer(Vec::new(), first_seq);
                for e in &entries {
                    b.push(e);
                }
                let (buf, start) = b.finish();
                let want = Message::Batch { first_seq, entries: entries.clone() }.encode();
                assert_eq!(&buf[start..], &want[..], "first_seq {first_seq}, n {n}");
                let view = BatchView::parse(&buf[start..]).unwrap();
                assert_eq!(view.first_seq, first_seq);
                assert_eq!(view.count, n as u64);
                let got: Vec<Vec<u8>> = view.entries().map(|e| e.to_vec()).collect();
                assert_eq!(got, entries);
                assert_eq!(Message::decode(&buf[start..]).unwrap(), Message::Batch { first_seq, entries });
            }
        }
    }

    #[test]
    fn messages_round_trip() {
        let msgs = [
            Message::Ack { seq: 99, digest: [3; 32] },
            Message::Control(Control::Heartbeat),
            Message::Control(Control::Shutdown { status: -3 }),
            Message::Control(Control::Divergence { seq: 5, report: b"report".to_vec() }),
            Message::Control(Control::Custom { kind: 7, payload: vec![1, 2] }),
            Message::Bye,
        ];
        for m in msgs {
            let bytes = m.encode();
            assert_eq!(Message::decode(&bytes).unwrap(), m);
            match decode(&bytes).unwrap() {
                Decoded::Other(o) => assert_eq!(o, m),
                Decoded::Batch(_) => panic!("not a batch"),
            }
        }
    }

    #[test]
    fn malformed_messages_are_errors() {
        assert_eq!(Message::decode(&[]).unwrap_err(), WireError::Empty);
        assert!(matches!(decode(&[]), Err(WireError::Empty)));
        // Unknown tag.
        assert!(matches!(Message::decode(&[42]), Err(WireError::Decode(_))));
        // Trailing bytes.
        let mut bytes = Message::Bye.encode();
        bytes.push(0);
        assert_eq!(Message::decode(&bytes).unwrap_err(), WireError::Trailing(1));
        // A batch whose entry runs past the end.
        assert!(matches!(decode(&[0, 1, 1, 5, 1, 2]), Err(WireError::BadBatch(_))));
        // A batch with fewer entries than announced.
        assert!(matches!(decode(&[0, 1, 2, 1, 9]), Err(WireError::BadBatch(_))));
        // More entries than announced.
        assert!(matches!(decode(&[0, 1, 0, 0]), Err(WireError::BadBatch(_))));
        // An overlong varint.
        assert!(matches!(
            decode(&[0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]),
            Err(WireError::BadBatch(_))
        ));
        // A huge claimed count is no allocation, just an error.
        assert!(matches!(decode(&[0, 1, 0xff, 0xff, 0xff, 0xff, 0x0f]), Err(WireError::BadBatch(_))));
        // Truncated control.
        let bytes = Message::Control(Control::Divergence { seq: 1, report: vec![5; 10] }).encode();
        assert!(Message::decode(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn varints() {
        for v in [0u64, 1, 127, 128, 16383, 16384, u64::MAX] {
            let mut out = Vec::new();
            write_varint(&mut out, v);
            let mut pos = 0;
            assert_eq!(read_varint(&out, &mut pos), Some(v));
            assert_eq!(pos, out.len());
            let mut tmp = [0u8; 10];
            let n = varint_bytes(v, &mut tmp);
            assert_eq!(&tmp[..n], &out[..]);
        }
        let mut pos = 0;
        assert_eq!(read_varint(&[0x80, 0x80], &mut pos), None);
    }
}
