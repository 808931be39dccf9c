//! Entry points for the fuzz targets in `fuzz/` and for the stable test
//! that runs the same functions (`sync/tests/fuzz_entries.rs`). Each feeds
//! arbitrary bytes to the real decoder and says whether it was accepted;
//! the asserts are invariants a fuzzer should report if they break.

use std::future::Future;
use std::path::Path;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use crate::config::ClusterConfig;
use crate::crypto::MAX_NOISE_MESSAGE;
use crate::frame::{read_frame, FrameError};
use crate::record::{self, EntryView};
use crate::wire::{self, Decoded, Message};

/// What [`record`] accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordAccepted {
    /// As an event record ([`record::decode`]).
    pub record: bool,
    /// As a shipped entry ([`EntryView::decode`]).
    pub entry: bool,
}

/// The record decoders: an event record, the quick field readers, and a
/// shipped entry with everything it borrows walked.
pub fn record(data: &[u8]) -> RecordAccepted {
    let as_record = record::decode(data, |_| None).is_ok();
    let _ = (record::call_of(data), record::record_thread(data));
    for i in 0..4 {
        let _ = record::record_int(data, i);
    }
    let entry = match EntryView::decode(data) {
        Ok(view) => {
            walk_entry(&view);
            true
        }
        Err(_) => false,
    };
    RecordAccepted { record: as_record, entry }
}

fn walk_entry(view: &EntryView<'_>) {
    let _ = record::decode(view.record, |_| None);
    let mut n = 0;
    for op in view.ops.iter() {
        n += 1;
        let _ = op.bufs().map(<[u8]>::len).sum::<usize>();
    }
    assert_eq!(n, view.ops.len(), "a checked entry yields fewer operations than it counts");
    assert!(view.ops.get(view.ops.len()).is_none());
}

/// The link's wire decoders: `data` as one message (a batch is checked
/// and its entries decoded), then `data` as a byte stream of frames, each
/// payload decoded as a message and as a handshake message. `true` if
/// `data` decoded as a message.
pub fn frames(data: &[u8]) -> bool {
    let accepted = decode_message(data);
    let mut stream = data;
    let mut buf = Vec::new();
    while let Some(Ok(())) = poll_ready(read_frame(&mut stream, &mut buf, MAX_NOISE_MESSAGE)) {
        assert!(!buf.is_empty() && buf.len() <= MAX_NOISE_MESSAGE, "read_frame returned {} bytes", buf.len());
        decode_message(&buf);
        let _ = crate::handshake::fuzz_decode(&buf);
    }
    accepted
}

fn decode_message(bytes: &[u8]) -> bool {
    let whole = Message::decode(bytes);
    match wire::decode(bytes) {
        Ok(Decoded::Batch(view)) => {
            let entries: Vec<&[u8]> = view.entries().collect();
            assert_eq!(entries.len() as u64, view.count, "a checked batch yields a different entry count");
            for e in entries {
                if let Ok(v) = EntryView::decode(e) {
                    walk_entry(&v);
                }
            }
            true
        }
        Ok(Decoded::Other(_)) => {
            assert!(whole.is_ok(), "the borrowing decoder accepted what the owning one refuses");
            true
        }
        Err(_) => false,
    }
}

/// Polls a future over an in-memory reader, which never waits, once.
fn poll_ready<F: Future<Output = Result<(), FrameError>>>(f: F) -> Option<Result<(), FrameError>> {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(r) => Some(r),
        Poll::Pending => None,
    }
}

/// The cluster file parser and its checks, on `data` as text. `true` if
/// the file was accepted.
pub fn cluster_file(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    match ClusterConfig::parse(text, Path::new("/nonexistent")) {
        Ok(cfg) => {
            let _ = (cfg.leader(), cfg.followers().count(), cfg.programs_digest(), cfg.policy_digest());
            for v in &cfg.variants {
                assert!(cfg.variant(v.id).is_ok(), "variant {} not found by its id", v.id);
            }
            true
        }
        Err(_) => false,
    }
}

/// xorshift64*: the deterministic generator of the stable tests that stand
/// in for the fuzzers (a failure reproduces from its seed).
pub struct Rng(pub u64);

impl Rng {
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (0 if `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}
