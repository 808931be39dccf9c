//! The link at work on real loopback TCP: streaming, acknowledgements,
//! back-pressure, silence, controls, shutdown.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use dmvx_sync::link::{Entry, Incoming};
use dmvx_sync::{Control, Leader, LinkError, PeerFailure};
use sha2::{Digest as _, Sha256};

fn chain(prev: &[u8; 32], entry: &Entry<'_>) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(entry.seq.to_le_bytes());
    h.update(entry.data);
    h.finalize().into()
}

#[test]
fn stream_of_100k_random_entries_arrives_in_order_with_acks() {
    const N: u64 = 100_000;
    const MAX: usize = 1000;
    let cfg = cluster(3, 10_000);
    let info = info(&cfg);
    let followers: Vec<_> = [1u8, 2]
        .into_iter()
        .map(|id| {
            spawn_follower(&cfg, id, move |f| {
                let mut want = Vec::new();
                let mut digest = [0u8; 32];
                for seq in 1..=N {
                    let e = f.next_entry().unwrap();
                    assert_eq!(e.seq, seq);
                    entry_for(seq, MAX, &mut want);
                    assert_eq!(e.data, &want[..], "entry {seq} differs");
                    digest = chain(&digest, &e);
                    if seq % 64 == 0 || seq == N {
                        f.ack(seq, digest).unwrap();
                    }
                }
                // The leader's goodbye follows the last entry.
                let end = f.next_entry().unwrap_err();
                assert_eq!(end, LinkError::Peer { variant: 0, failure: PeerFailure::Closed });
                digest
            })
        })
        .collect();
    let mut leader = start(&cfg, &info).unwrap();
    let mut buf = Vec::new();
    let mut digest = [0u8; 32];
    for seq in 1..=N {
        entry_for(seq, MAX, &mut buf);
        assert_eq!(leader.push(&buf).unwrap(), seq);
        digest = chain(&digest, &Entry { seq, data: &buf });
    }
    assert_eq!(leader.wait_acked(N, Duration::from_secs(10)).unwrap(), dmvx_sync::Acked::All);
    assert_eq!(leader.acked(), N);
    for id in [1, 2] {
        let a = leader.ack_of(id).unwrap();
        assert_eq!((a.variant, a.seq), (id, N));
        assert_eq!(a.digest, digest, "follower {id}'s digest differs");
    }
    assert_eq!(leader.acks().count(), 2);
    leader.close().unwrap();
    for f in followers {
        assert_eq!(f.join().unwrap().1, digest);
    }
}

#[test]
fn back_pressure_blocks_the_leader_until_the_follower_acks_again() {
    let mut cfg = cluster(2, 5_000);
    cfg.max_lag = 100;
    cfg.batch_bytes = 64;
    let info = info(&cfg);
    let stalled = Arc::new(AtomicBool::new(false));
    let follower = {
        let stalled = stalled.clone();
        spawn_follower(&cfg, 1, move |f| {
            for seq in 1..=1000u64 {
                let e = f.next_entry().unwrap();
                assert_eq!(e.seq, seq);
                f.ack(seq, [0; 32]).unwrap();
                if seq == 50 {
                    stalled.store(true, Ordering::SeqCst);
                    thread::sleep(Duration::from_millis(800));
                    stalled.store(false, Ordering::SeqCst);
                }
            }
        })
    };
    let mut leader = start(&cfg, &info).unwrap();
    let mut blocked_at = None;
    for seq in 1..=1000u64 {
        let t = Instant::now();
        leader.push(&seq.to_le_bytes()).unwrap();
        if t.elapsed() > Duration::from_millis(300) {
            blocked_at.get_or_insert(seq);
            // It may only go on once the follower resumed acknowledging.
            assert!(!stalled.load(Ordering::SeqCst));
            assert!(leader.acked() >= seq - 100);
        }
    }
    // 50 acknowledged + max_lag 100: the 151st push is the first to block.
    assert_eq!(blocked_at, Some(151));
    assert_eq!(leader.wait_acked(1000, Duration::from_secs(5)).unwrap(), dmvx_sync::Acked::All);
    drop(follower.join().unwrap());
}

#[test]
fn a_follower_that_does_not_ack_makes_wait_acked_fail_naming_it() {
    let cfg = cluster(3, 5_000);
    let info = info(&cfg);
    let done = Arc::new(AtomicBool::new(false));
    let spawn = |id: u8, acks: bool| {
        let done = done.clone();
        spawn_follower(&cfg, id, move |f| {
            for _ in 0..10 {
                let seq = f.next_entry().unwrap().seq;
                if acks {
                    f.ack(seq, [1; 32]).unwrap();
                }
            }
            while !done.load(Ordering::SeqCst) {
                thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let (f1, f2) = (spawn(1, true), spawn(2, false));
    let mut leader = start(&cfg, &info).unwrap();
    for i in 0..10u8 {
        leader.push(&[i]).unwrap();
    }
    let t = Instant::now();
    let err = leader.wait_acked(10, Duration::from_millis(700)).unwrap_err();
    let waited = t.elapsed();
    assert_eq!(err, LinkError::AckTimeout { seq: 10, silent: vec![2], timeout_ms: 700 });
    assert!(err.to_string().contains("follower(s) 2 did not acknowledge seq 10"));
    assert!(waited >= Duration::from_millis(700) && waited < Duration::from_millis(1500));
    assert_eq!(leader.ack_of(1).unwrap().seq, 10);
    assert_eq!(leader.ack_of(2).unwrap().seq, 0);
    done.store(true, Ordering::SeqCst);
    f1.join().unwrap();
    f2.join().unwrap();
}

#[test]
fn a_follower_that_stops_answering_is_detected_by_heartbeat_timeout() {
    let cfg = cluster(2, 600);
    let info = info(&cfg);
    let leader_addr = cfg.leader().address.parse().unwrap();
    // After the handshake the proxy stops forwarding follower → leader.
    let px = proxy(
        leader_addr,
        pass(),
        Box::new(|idx, f| {
            if idx >= 2 {
                thread::sleep(Duration::from_secs(5));
            }
            vec![Act::Send(f)]
        }),
    );
    let fcfg = via(&cfg, px.addr);
    let follower = thread::spawn(move || connect(&fcfg, 1, &info).unwrap());
    let leader = start(&cfg, &info).unwrap();
    let t = Instant::now();
    let err = loop {
        if let Err(e) = leader.check() {
            break e;
        }
        assert!(t.elapsed() < Duration::from_secs(3), "silence not detected");
        thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(err, LinkError::Peer { variant: 1, failure: PeerFailure::Silent(600) });
    assert!(t.elapsed() < Duration::from_millis(1200));
    assert!(err.to_string().contains("variant 1: silent for 600 ms"));
    drop(leader);
    drop(follower.join().unwrap());
}

#[test]
fn idle_links_stay_up_on_heartbeats() {
    let cfg = cluster(2, 300);
    let info = info(&cfg);
    let follower = spawn_follower(&cfg, 1, move |f| {
        // Nothing for 4 timeouts, then an entry.
        let e = f.next_entry().unwrap();
        assert_eq!((e.seq, e.data), (1, &b"late"[..]));
        f.ack(1, [0; 32]).unwrap();
    });
    let mut leader = start(&cfg, &info).unwrap();
    thread::sleep(Duration::from_millis(1200));
    leader.check().unwrap();
    leader.push(b"late").unwrap();
    assert_eq!(leader.wait_acked(1, Duration::from_secs(2)).unwrap(), dmvx_sync::Acked::All);
    drop(follower.join().unwrap());
}

#[test]
fn controls_flow_both_ways_in_order_with_entries() {
    let cfg = cluster(2, 5_000);
    let info = info(&cfg);
    let follower = spawn_follower(&cfg, 1, move |f| {
        let mut seen = Vec::new();
        loop {
            match f.next_incoming() {
                Ok(Incoming::Entry(e)) => seen.push(format!("entry {}", e.seq)),
                Ok(Incoming::Control(c)) => {
                    let stop = matches!(c, Control::Shutdown { .. });
                    seen.push(format!("{c:?}"));
                    if stop {
                        break;
                    }
                }
                Err(e) => panic!("{e}"),
            }
        }
        f.send_control(&Control::Divergence { seq: 2, report: b"variant 1 saw write(1, \"x\")".to_vec() }).unwrap();
        // next_entry leaves a control message that came first for
        // try_recv_control; next_incoming_timeout keeps the leader's order.
        assert_eq!(f.next_entry().unwrap().seq, 3);
        assert_eq!(f.try_recv_control(), Some(Control::Custom { kind: 9, payload: vec![1] }));
        seen
    });
    let mut leader = start(&cfg, &info).unwrap();
    leader.push(b"one").unwrap();
    leader.push(b"two").unwrap();
    leader.send_control(&Control::Shutdown { status: 3 }).unwrap();
    leader.send_control_to(1, &Control::Custom { kind: 9, payload: vec![1] }).unwrap();
    leader.push(b"three").unwrap();
    leader.flush().unwrap();
    let (from, c) = leader.recv_control_timeout(Duration::from_secs(5)).unwrap().unwrap();
    assert_eq!(from, 1);
    assert!(matches!(c, Control::Divergence { seq: 2, .. }));
    assert_eq!(leader.try_recv_control(), None);
    assert_eq!(leader.recv_control_timeout(Duration::from_millis(50)), Ok(None));
    assert_eq!(leader.send_control_to(7, &Control::Heartbeat), Err(LinkError::NotAFollower(7)));
    let (f, seen) = follower.join().unwrap();
    assert_eq!(seen, ["entry 1", "entry 2", "Shutdown { status: 3 }"]);
    // The follower closes: the leader learns it.
    f.close();
    let err = leader.recv_control_timeout(Duration::from_secs(5)).unwrap_err();
    assert_eq!(err, LinkError::Peer { variant: 1, failure: PeerFailure::Closed });
    assert_eq!(leader.push(b"x").unwrap_err(), err);
}

#[test]
fn follower_may_start_before_the_leader() {
    // Nothing listens on the leader's port until Leader::start binds it.
    let mut cfg = dmvx_sync::ClusterConfig::local(free_port(), &public_keys(2)).unwrap();
    cfg.timeout = Duration::from_millis(3_000);
    let info = info(&cfg);
    let follower = spawn_follower(&cfg, 1, move |f| {
        let e = f.next_entry().unwrap();
        assert_eq!(e.data, b"hi");
        f.ack(1, [0; 32]).unwrap();
    });
    thread::sleep(Duration::from_millis(400));
    let mut leader = Leader::start(&cfg, &private_key(0), &info).unwrap();
    leader.push(b"hi").unwrap();
    assert_eq!(leader.wait_acked(1, Duration::from_secs(3)).unwrap(), dmvx_sync::Acked::All);
    drop(follower.join().unwrap());
}

#[test]
fn a_missing_follower_is_named() {
    let cfg = cluster(3, 500);
    let info = info(&cfg);
    let f1 = {
        let cfg = cfg.clone();
        thread::spawn(move || connect(&cfg, 1, &info))
    };
    let err = start(&cfg, &info).err().unwrap();
    assert!(matches!(&err, LinkError::MissingFollowers { missing, .. } if missing == &[2]), "{err}");
    assert!(err.to_string().starts_with("follower(s) 2 did not join within 500 ms"));
    // Follower 1 joined, then lost its leader.
    let mut f1 = f1.join().unwrap().unwrap();
    let err = f1.next_entry().unwrap_err();
    assert!(matches!(err, LinkError::Peer { variant: 0, .. }), "{err}");
}

#[test]
fn no_leader_means_a_clear_connect_error() {
    let mut cfg = dmvx_sync::ClusterConfig::local(free_port(), &public_keys(2)).unwrap();
    cfg.timeout = Duration::from_millis(300);
    let err = connect(&cfg, 1, &info(&cfg)).err().unwrap();
    assert!(matches!(err, LinkError::Connect { .. }), "{err}");
    assert!(err.to_string().contains("cannot reach the leader at 127.0.0.1:"));
    assert_eq!(connect(&cfg, 0, &info(&cfg)).err().unwrap(), LinkError::NotAFollower(0));
}

#[test]
fn an_edited_invalid_config_is_refused() {
    let mut cfg = cluster(2, 300);
    cfg.variants[1].role = dmvx_sync::Role::Leader;
    let err = start(&cfg, &info(&cfg)).err().unwrap();
    assert!(matches!(err, LinkError::Config(_)), "{err}");
    cfg.variants.clear();
    let err = connect(&cfg, 1, &info(&cfg)).err().unwrap();
    assert_eq!(err.to_string(), "invalid cluster configuration: the cluster file lists no [[variant]]");
}

#[test]
fn api_misuse_is_an_error() {
    let cfg = cluster(2, 3_000);
    let info = info(&cfg);
    let follower = spawn_follower(&cfg, 1, move |f| {
        // The next event may be acknowledged ahead; the one after may not.
        assert_eq!(f.ack(2, [0; 32]), Err(LinkError::AckAhead { seq: 2, received: 0 }));
        let e = f.next_entry().unwrap();
        assert_eq!(e.data.len(), 0);
        assert_eq!(f.next_incoming_timeout(Duration::from_millis(50)).unwrap(), None);
        f.ack(1, [0; 32]).unwrap();
    });
    let mut leader = start(&cfg, &info).unwrap();
    assert_eq!(leader.wait_acked(2, Duration::from_millis(1)), Err(LinkError::NotPushed { seq: 2, last: 0 }));
    let big = vec![0u8; dmvx_sync::wire::MAX_ENTRY + 1];
    assert!(matches!(leader.push(&big), Err(LinkError::EntryTooLarge { .. })));
    leader.push(b"").unwrap();
    assert_eq!(leader.wait_acked(1, Duration::from_secs(3)).unwrap(), dmvx_sync::Acked::All);
    drop(follower.join().unwrap());
}

#[test]
fn large_entries_cross_in_their_own_batches() {
    let cfg = cluster(2, 5_000);
    let info = info(&cfg);
    let sizes = [0usize, 8191, 8192, 8193, 100_000, 3 << 20, 1, dmvx_sync::wire::MAX_ENTRY, 2];
    let follower = spawn_follower(&cfg, 1, move |f| {
        for (i, size) in sizes.iter().enumerate() {
            let e = f.next_entry().unwrap();
            assert_eq!(e.data.len(), *size);
            assert!(e.data.iter().all(|b| *b == i as u8));
            let seq = e.seq;
            f.ack(seq, [0; 32]).unwrap();
        }
    });
    let mut leader = start(&cfg, &info).unwrap();
    for (i, size) in sizes.iter().enumerate() {
        leader.push(&vec![i as u8; *size]).unwrap();
    }
    assert_eq!(leader.wait_acked(sizes.len() as u64, Duration::from_secs(5)).unwrap(), dmvx_sync::Acked::All);
    drop(follower.join().unwrap());
}

#[test]
fn an_unflushed_batch_goes_out_after_the_batch_delay_and_deferred_acks_when_the_follower_waits() {
    let cfg = cluster(2, 5_000);
    let info = info(&cfg);
    let (tx, rx) = std::sync::mpsc::channel();
    let follower = {
        spawn_follower(&cfg, 1, move |f| {
            // Entry 1 was never flushed: it arrives because entry 2 was
            // pushed after the batch delay.
            let e = f.next_incoming_timeout(Duration::from_secs(2)).unwrap().expect("entry 1 within 2 s");
            assert_eq!(e, Incoming::Entry(dmvx_sync::Entry { seq: 1, data: &[1u8][..] }));
            f.ack_soon(1, [7; 32]).unwrap();
            tx.send(()).unwrap();
            // Waiting for entry 3 sends the deferred acknowledgement of 1.
            let e = f.next_incoming_timeout(Duration::from_secs(3)).unwrap().expect("entry 2");
            assert!(matches!(e, Incoming::Entry(dmvx_sync::Entry { seq: 2, .. })), "{e:?}");
            let e = f.next_incoming_timeout(Duration::from_secs(3)).unwrap().expect("entry 3");
            assert!(matches!(e, Incoming::Entry(dmvx_sync::Entry { seq: 3, .. })), "{e:?}");
        })
    };
    let mut leader = start(&cfg, &info).unwrap();
    leader.push(&[1]).unwrap();
    thread::sleep(dmvx_sync::link::BATCH_DELAY * 5);
    leader.push(&[2]).unwrap();
    rx.recv_timeout(Duration::from_secs(3)).expect("the follower got entry 1 without a flush");
    // The follower keeps its acknowledgement back only until it waits.
    let t = Instant::now();
    while leader.ack_of(1).unwrap().seq < 1 {
        assert!(t.elapsed() < Duration::from_secs(2), "the deferred acknowledgement never came");
        thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(leader.ack_of(1).unwrap().digest, [7; 32]);
    leader.push(&[3]).unwrap();
    leader.flush().unwrap();
    follower.join().unwrap();
}

#[test]
fn the_wake_descriptor_becomes_readable_on_an_acknowledgement_only_while_armed() {
    let cfg = cluster(2, 5_000);
    let info = info(&cfg);
    let (go_tx, go_rx) = std::sync::mpsc::channel::<u64>();
    let follower = {
        spawn_follower(&cfg, 1, move |f| {
            for seq in go_rx {
                assert_eq!(f.next_entry().unwrap().seq, seq);
                f.ack(seq, [1; 32]).unwrap();
            }
        })
    };
    let mut leader = start(&cfg, &info).unwrap();
    // Whether a byte arrives on (a duplicate of) the wake descriptor.
    let rings = |l: &Leader, ms: u64| {
        let s = std::os::unix::net::UnixStream::from(l.wake_fd().try_clone_to_owned().unwrap());
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(ms))).unwrap();
        std::io::Read::read(&mut &s, &mut [0u8; 1]).is_ok()
    };
    // Not armed: an acknowledgement does not ring.
    leader.push(&[1]).unwrap();
    leader.flush().unwrap();
    go_tx.send(1).unwrap();
    assert_eq!(leader.wait_acked(1, Duration::from_secs(3)).unwrap(), dmvx_sync::Acked::All);
    assert!(!rings(&leader, 100), "rang while disarmed");
    // Armed: it does.
    leader.arm_wake();
    leader.push(&[2]).unwrap();
    leader.flush().unwrap();
    go_tx.send(2).unwrap();
    assert!(rings(&leader, 3000), "no wake-up for the acknowledgement");
    leader.disarm_wake();
    drop(go_tx);
    follower.join().unwrap();
}

#[test]
fn a_follower_that_reads_late_gets_everything_in_order_after_the_socket_filled() {
    // The leader writes from its own thread until the socket is full; the
    // rest waits for the I/O thread, and later entries and a control
    // message must queue behind it, not overtake it.
    const N: u64 = 600;
    const SIZE: usize = 64 * 1024;
    let mut cfg = cluster(2, 10_000);
    cfg.max_lag = u64::MAX / 2;
    let info = info(&cfg);
    let follower = spawn_follower(&cfg, 1, move |f| {
        thread::sleep(Duration::from_millis(500));
        for seq in 1..=N {
            if seq == N / 2 + 1 {
                match f.next_incoming().unwrap() {
                    Incoming::Control(c) => assert_eq!(c, Control::Custom { kind: 3, payload: vec![3] }),
                    other => panic!("expected the control message before entry {seq}, got {other:?}"),
                }
            }
            let e = f.next_entry().unwrap();
            assert_eq!(e.seq, seq);
            assert_eq!(e.data.len(), SIZE);
            assert!(e.data.iter().all(|b| *b == seq as u8), "entry {seq} corrupted");
        }
        f.ack(N, [0; 32]).unwrap();
    });
    let mut leader = start(&cfg, &info).unwrap();
    let t = Instant::now();
    for seq in 1..=N {
        leader.push(&vec![seq as u8; SIZE]).unwrap();
        if seq == N / 2 {
            leader.send_control(&Control::Custom { kind: 3, payload: vec![3] }).unwrap();
        }
    }
    // 37.5 MiB cannot fit in the socket buffers: the leader did not block
    // on the late reader, the I/O thread holds the rest.
    assert!(t.elapsed() < Duration::from_millis(450), "pushing blocked on the follower: {:?}", t.elapsed());
    assert_eq!(leader.wait_acked(N, Duration::from_secs(20)).unwrap(), dmvx_sync::Acked::All);
    drop(follower.join().unwrap());
}
