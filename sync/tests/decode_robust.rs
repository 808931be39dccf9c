//! Whatever bytes arrive, the decoders answer with a value or an error,
//! never a panic: random buffers, and valid encodings truncated, extended
//! and with bytes flipped. (Frames are authenticated before they are
//! decoded, but a member's VMM is not trusted to be bug-free either.)

use dmvx_sync::fuzz_entry::Rng;
use dmvx_sync::policy::Class;
use dmvx_sync::record::{self, EntryBuf, EntryView, RecordBuf};
use dmvx_sync::wire::{self, BatchBuilder, Control, Decoded, Message};

fn samples() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rec = RecordBuf::new();
    rec.call(1, Class::ALL[0]).fd(3).str(b"/etc/passwd").digest_of(b"data").int(42).bytes(b"\x00\xff");
    out.push(rec.as_bytes().to_vec());
    let mut e = EntryBuf::new();
    e.start(rec.as_bytes());
    e.op(7, &[b"hello", b""]);
    e.op(-11, &[]);
    out.push(e.finish(3, &[]).to_vec());
    let mut b = BatchBuilder::with_buffer(Vec::new(), 9);
    b.push(b"first");
    b.push(&out[1].clone());
    let (buf, start) = b.finish();
    out.push(buf[start..].to_vec());
    out.push(Message::Ack { seq: 5, digest: [1; 32] }.encode());
    out.push(Message::Control(Control::Divergence { seq: 2, report: b"report".to_vec() }).encode());
    out.push(Message::Control(Control::Custom { kind: 9, payload: vec![1, 2, 3] }).encode());
    out.push(Message::Bye.encode());
    out
}

fn decode_all(bytes: &[u8]) {
    if let Ok(Decoded::Batch(view)) = wire::decode(bytes) {
        for entry in view.entries() {
            decode_entry(entry);
        }
    }
    let _ = Message::decode(bytes);
    decode_entry(bytes);
}

fn decode_entry(bytes: &[u8]) {
    if let Ok(v) = EntryView::decode(bytes) {
        for op in v.ops.iter() {
            let _ = op.bufs().count();
        }
        let _ = record::decode(v.record, |_| Some("call"));
    }
    let _ = record::decode(bytes, |_| None);
}

#[test]
fn random_bytes_never_panic_a_decoder() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut buf = Vec::new();
    for _ in 0..200_000 {
        buf.clear();
        let len = rng.below(96);
        buf.extend((0..len).map(|_| rng.next() as u8));
        decode_all(&buf);
    }
}

#[test]
fn damaged_valid_encodings_never_panic_a_decoder() {
    let samples = samples();
    for s in &samples {
        decode_all(s);
    }
    let mut rng = Rng(42);
    for _ in 0..200_000 {
        let mut b = samples[rng.below(samples.len())].clone();
        match rng.below(4) {
            0 => b.truncate(rng.below(b.len() + 1)),
            1 => b.extend((0..rng.below(16)).map(|_| rng.next() as u8)),
            _ => {
                for _ in 0..1 + rng.below(4) {
                    let i = rng.below(b.len());
                    b[i] ^= 1 << rng.below(8);
                }
            }
        }
        decode_all(&b);
    }
}
