//! The hot path allocates nothing: decoding an entry, and, once warm,
//! pushing and flushing batches on the leader and taking entries and
//! acknowledging on a follower. Counted per thread by a counting allocator,
//! so the I/O threads (which allocate as tokio does) are not counted.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::thread;
use std::time::Duration;

use common::*;
use dmvx_sync::record::{EntryBuf, EntryView};

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counter is a const-initialised thread-local Cell, which allocates nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        // SAFETY: the caller's contract is System's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is System's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        // SAFETY: the caller's contract is System's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs() -> u64 {
    ALLOCS.with(|c| c.get())
}

#[test]
fn decoding_an_entry_allocates_nothing() {
    let mut e = EntryBuf::default();
    e.start(b"record bytes");
    e.op(5, &[b"hello", b""]);
    e.op(-11, &[]);
    let bytes = e.finish(3, &[]).to_vec();
    let before = allocs();
    let mut total = 0;
    for _ in 0..1000 {
        let v = EntryView::decode(&bytes).unwrap();
        total += v.ops.len() + v.ops.get(0).unwrap().bufs().count() + v.record.len();
        assert_eq!(v.ops.get(1).unwrap().ret, -11);
    }
    assert_eq!(allocs() - before, 0, "EntryView::decode allocated");
    assert_eq!(total, 1000 * (2 + 2 + 12));
}

#[test]
fn leader_push_flush_and_follower_take_ack_allocate_nothing_once_warm() {
    const WARM: u64 = 2_000;
    const N: u64 = 20_000;
    let cfg = cluster(2, 10_000);
    let info = info(&cfg);
    let follower = {
        spawn_follower(&cfg, 1, move |f| {
            let mut during = 0;
            for seq in 1..=N {
                let before = allocs();
                let e = f.next_entry().unwrap();
                assert_eq!(e.seq, seq);
                assert_eq!(e.data.len(), 64);
                if seq % 10 == 0 {
                    f.ack(seq, [1; 32]).unwrap();
                }
                if seq > WARM {
                    during += allocs() - before;
                }
            }
            during
        })
    };
    let mut leader = start(&cfg, &info).unwrap();
    let entry = [0x5au8; 64];
    let mut during = 0;
    for seq in 1..=N {
        let before = allocs();
        leader.push(&entry).unwrap();
        if seq % 10 == 0 {
            leader.flush().unwrap();
        }
        if seq > WARM {
            during += allocs() - before;
        }
        if seq == WARM / 2 {
            // Let the follower catch up and wait for entries once: the first
            // blocking receive makes std's channel allocate its waiter list
            // (once per channel), which belongs to warming up.
            thread::sleep(Duration::from_millis(50));
        }
    }
    assert_eq!(leader.wait_acked(N, Duration::from_secs(20)).unwrap(), dmvx_sync::Acked::All);
    let (f, follower_during) = follower.join().unwrap();
    drop(f);
    assert_eq!(during, 0, "the leader's push/flush allocated {during} times in {} entries", N - WARM);
    assert_eq!(follower_during, 0, "the follower's next_entry/ack allocated {follower_during} times");
}
