//! Micro-benchmarks of the link on loopback. Ignored by default; run with
//! `cargo test --release -p dmvx-sync --test bench -- --ignored --nocapture --test-threads=1`.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::*;
use dmvx_sync::ClusterConfig;

/// Starts a leader and `n` followers that acknowledge every `ack_every`-th
/// entry (and the last), for `total` entries.
fn run_followers(cfg: &ClusterConfig, total: u64, ack_every: u64) -> Vec<thread::JoinHandle<()>> {
    let info = info(cfg);
    cfg.followers()
        .map(|v| v.id)
        .collect::<Vec<_>>()
        .into_iter()
        .map(|id| {
            let cfg = cfg.clone();
            thread::spawn(move || {
                let mut f = connect(&cfg, id, &info).unwrap();
                for seq in 1..=total {
                    let e = f.next_entry().unwrap();
                    debug_assert_eq!(e.seq, seq);
                    if seq % ack_every == 0 || seq == total {
                        f.ack(seq, [0; 32]).unwrap();
                    }
                }
                let _ = f.next_entry();
            })
        })
        .collect()
}

fn throughput(followers: usize, entry_len: usize, max_lag: u64) {
    const N: u64 = 1_000_000;
    let mut cfg = cluster(followers + 1, 10_000);
    cfg.max_lag = max_lag;
    let handles = run_followers(&cfg, N, 1024);
    let mut leader = start(&cfg, &info(&cfg)).unwrap();
    let entry = vec![0xa5u8; entry_len];
    let t = Instant::now();
    for _ in 0..N {
        leader.push(&entry).unwrap();
    }
    let pushed = t.elapsed();
    assert_eq!(leader.wait_acked(N, Duration::from_secs(60)).unwrap(), dmvx_sync::Acked::All);
    let total = t.elapsed();
    drop(leader);
    for h in handles {
        h.join().unwrap();
    }
    println!(
        "{followers} follower(s), {entry_len}-byte entries, max_lag {max_lag}: \
         push {:.0} ns/entry (amortised, incl. batch hand-off and back-pressure), \
         {:.2} M entries/s end to end ({:.0} MB/s of entries)",
        pushed.as_nanos() as f64 / N as f64,
        N as f64 / total.as_secs_f64() / 1e6,
        (N as usize * entry_len) as f64 / total.as_secs_f64() / 1e6,
    );
}

#[test]
#[ignore]
fn bench_throughput() {
    throughput(1, 64, 4096);
    throughput(1, 64, u64::MAX / 2);
    throughput(2, 64, 4096);
    throughput(1, 512, 4096);
}

#[test]
#[ignore]
fn bench_push_fast_path() {
    // Pushes that do not fill a batch: the pure copy into the batch buffer.
    let mut cfg = cluster(2, 10_000);
    cfg.batch_bytes = 4 << 20;
    cfg.max_lag = u64::MAX / 2;
    const N: u64 = 50_000; // 50k * 66 bytes < 4 MiB: no batch is sent
    let handles = run_followers(&cfg, 3 * N, N);
    let mut leader = start(&cfg, &info(&cfg)).unwrap();
    let entry = [0x5au8; 64];
    let mut fast = Duration::MAX;
    // The first rounds touch fresh batch buffers (page faults); the third
    // reuses one from the pool, as a long run does.
    for round in 1..=3 {
        let t = Instant::now();
        for _ in 0..N {
            leader.push(&entry).unwrap();
        }
        fast = t.elapsed();
        assert_eq!(leader.wait_acked(round * N, Duration::from_secs(10)).unwrap(), dmvx_sync::Acked::All);
    }
    drop(leader);
    for h in handles {
        h.join().unwrap();
    }
    println!("push fast path (64-byte entry, warm buffer, no batch sent): {:.1} ns", fast.as_nanos() as f64 / N as f64);
}

#[test]
#[ignore]
fn bench_round_trip() {
    for followers in [1usize, 2] {
        const N: usize = 5_000;
        let cfg = cluster(followers + 1, 10_000);
        let handles = run_followers(&cfg, N as u64, 1);
        let mut leader = start(&cfg, &info(&cfg)).unwrap();
        let entry = [1u8; 64];
        let mut samples = Vec::with_capacity(N);
        for _ in 0..N {
            let t = Instant::now();
            let seq = leader.push(&entry).unwrap();
            assert_eq!(leader.wait_acked(seq, Duration::from_secs(5)).unwrap(), dmvx_sync::Acked::All);
            samples.push(t.elapsed());
        }
        drop(leader);
        for h in handles {
            h.join().unwrap();
        }
        samples.sort();
        let mean = samples.iter().sum::<Duration>() / N as u32;
        println!(
            "round trip push+flush+wait_acked, {followers} follower(s): mean {:.1} us, p50 {:.1} us, p99 {:.1} us",
            mean.as_secs_f64() * 1e6,
            samples[N / 2].as_secs_f64() * 1e6,
            samples[N * 99 / 100].as_secs_f64() * 1e6,
        );
    }
}
