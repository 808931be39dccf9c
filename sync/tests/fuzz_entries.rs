//! The fuzz targets' entry functions (`dmvx_sync::fuzz_entry`, run by
//! `fuzz/` under libFuzzer on nightly) on stable: a few thousand seeded
//! pseudo-random and mutated valid inputs each. No input may panic, and
//! the valid inputs must still be accepted, so a decoder that refuses
//! everything fails here too.

use dmvx_sync::frame::put_plain_frame;
use dmvx_sync::fuzz_entry::{self, RecordAccepted, Rng};
use dmvx_sync::policy::Class;
use dmvx_sync::record::{EntryBuf, RecordBuf, SignalEvent};
use dmvx_sync::wire::{BatchBuilder, Control, Message};
use dmvx_sync::PrivateKey;

/// `v` truncated, extended, with bytes flipped, inserted or removed.
fn mutate(rng: &mut Rng, v: &[u8]) -> Vec<u8> {
    let mut m = v.to_vec();
    for _ in 0..=rng.below(4) {
        match rng.below(6) {
            0 => {
                let n = rng.below(m.len() + 1);
                m.truncate(n)
            }
            1 => {
                let n = rng.below(16);
                let extra = rng.bytes(n);
                m.extend(extra);
            }
            2 | 3 if !m.is_empty() => {
                let i = rng.below(m.len());
                let bit = rng.below(8);
                m[i] ^= 1 << bit;
            }
            4 => {
                let i = rng.below(m.len() + 1);
                let b = rng.next() as u8;
                m.insert(i, b);
            }
            _ if !m.is_empty() => {
                let i = rng.below(m.len());
                let b = [0, 0xff, 0x7f, 0x80][rng.below(4)];
                m[i] = b;
            }
            _ => {}
        }
    }
    m
}

/// Runs `f` over every seed, its mutations and random buffers.
fn exercise<T>(seeds: &[Vec<u8>], salt: u64, mut f: impl FnMut(&[u8]) -> T) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ salt);
    for s in seeds {
        for cut in 0..s.len() {
            f(&s[..cut]);
        }
    }
    for _ in 0..3000 {
        let s = &seeds[rng.below(seeds.len())];
        let m = mutate(&mut rng, s);
        f(&m);
    }
    for _ in 0..1000 {
        let n = rng.below(96);
        f(&rng.bytes(n));
    }
}

fn record_seeds() -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let mut rec = RecordBuf::new();
    rec.call(1, Class::ALL[0]).fd(3).str(b"/etc/passwd").digest_of(b"data").int(42).bytes(b"\x00\xff");
    let mut thread = RecordBuf::new();
    thread.call(56, Class::ALL[1]).thread(7).int(0x11);
    let records = vec![
        rec.as_bytes().to_vec(),
        thread.as_bytes().to_vec(),
        RecordBuf::new().exit(3).as_bytes().to_vec(),
        RecordBuf::new().killed(9).as_bytes().to_vec(),
    ];
    let mut e = EntryBuf::new();
    e.start(rec.as_bytes());
    e.op(7, &[b"hello", b""]);
    e.op(-11, &[]);
    let one = e.finish(3, &[SignalEvent { sig: 15, code: 0, addr: 0x1000 }]).to_vec();
    e.start(thread.as_bytes());
    let two = e.finish(0, &[]).to_vec();
    (records, vec![one, two])
}

fn message_seeds() -> Vec<Vec<u8>> {
    let (_, entries) = record_seeds();
    let mut b = BatchBuilder::with_buffer(Vec::new(), 9);
    b.push(b"first");
    for e in &entries {
        b.push(e);
    }
    let (buf, start) = b.finish();
    vec![
        buf[start..].to_vec(),
        Message::Ack { seq: 5, digest: [1; 32] }.encode(),
        Message::Control(Control::Divergence { seq: 2, report: b"report".to_vec() }).encode(),
        Message::Control(Control::Custom { kind: 9, payload: vec![1, 2, 3] }).encode(),
        Message::Bye.encode(),
    ]
}

#[test]
fn record_entry_never_panics_and_accepts_valid_input() {
    let (records, entries) = record_seeds();
    for r in &records {
        assert!(fuzz_entry::record(r).record, "a valid record was refused: {r:?}");
    }
    for e in &entries {
        assert!(fuzz_entry::record(e).entry, "a valid entry was refused: {e:?}");
    }
    let seeds: Vec<Vec<u8>> = records.into_iter().chain(entries).collect();
    let mut accepted = RecordAccepted { record: false, entry: false };
    exercise(&seeds, 1, |d| {
        let a = fuzz_entry::record(d);
        accepted.record |= a.record;
        accepted.entry |= a.entry;
    });
    assert!(accepted.record && accepted.entry, "no mutated input was accepted: {accepted:?}");
}

#[test]
fn frames_entry_never_panics_and_accepts_valid_input() {
    let mut seeds = message_seeds();
    for m in &seeds {
        assert!(fuzz_entry::frames(m), "a valid message was refused: {m:?}");
    }
    // A stream of frames, as the link reads them.
    let mut stream = Vec::new();
    for m in &seeds {
        put_plain_frame(&mut stream, m);
    }
    seeds.push(stream);
    let mut n = 0;
    exercise(&seeds, 2, |d| n += usize::from(fuzz_entry::frames(d)));
    assert!(n > 0, "no mutated message was accepted");
}

/// A valid cluster file.
fn cluster_text() -> String {
    let pk = |id: u8| PrivateKey::from_bytes([0x40 + id; 32]).public().to_hex();
    format!(
        "[cluster]\nname = \"fuzz\"\ntimeout_ms = 900\n\n\
         [[variant]]\nid = 0\nname = \"lead\"\naddress = \"127.0.0.1:7700\"\nrole = \"leader\"\npublic_key = \"{}\"\n\n\
         [[variant]]\nid = 1\naddress = \"[::1]:7701\"\nrole = \"follower\"\npublic_key = \"{}\"\n",
        pk(0),
        pk(1)
    )
}

#[test]
fn cluster_file_entry_never_panics_and_accepts_valid_input() {
    let text = cluster_text();
    assert!(fuzz_entry::cluster_file(text.as_bytes()), "the valid cluster file was refused:\n{text}");
    let seeds = vec![text.into_bytes()];
    let mut n = 0;
    exercise(&seeds, 3, |d| n += usize::from(fuzz_entry::cluster_file(d)));
    assert!(n > 0, "no mutated cluster file was accepted");
}

/// Writes the seeds for `fuzz/` when asked (`DMVX_WRITE_FUZZ_SEEDS=dir`).
#[test]
fn write_seeds_when_asked() {
    let Some(dir) = std::env::var_os("DMVX_WRITE_FUZZ_SEEDS") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let (records, entries) = record_seeds();
    let sets = [
        ("record", records.into_iter().chain(entries).collect::<Vec<_>>()),
        ("frames", message_seeds()),
        ("cluster_file", vec![cluster_text().into_bytes()]),
    ];
    for (target, seeds) in sets {
        let d = dir.join(target);
        std::fs::create_dir_all(&d).unwrap();
        for (i, s) in seeds.iter().enumerate() {
            std::fs::write(d.join(format!("seed-{i}")), s).unwrap();
        }
    }
}
