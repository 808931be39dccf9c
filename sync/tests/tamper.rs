//! An attacker on the wire: a TCP proxy between a follower and the leader
//! flips bytes, replays, reorders, drops, truncates, inflates and injects
//! frames. Each must end the link with a clean, specific error — no panic,
//! no hang, and no bad entry handed out.

mod common;

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::*;
use dmvx_sync::frame::FrameError;
use dmvx_sync::{HandshakeError, LinkError, PeerFailure, RejectReason};

/// Runs `f` on a thread and fails the test if it takes longer than `secs`.
fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(secs)).expect("hung (or panicked)")
}

/// Leader → follower traffic goes through `l2f`. The leader sends entries
/// 1..=10 in one frame and 11..=20 in the next. Returns the entries the
/// follower got and the error that ended its stream.
fn leader_to_follower(l2f: Mutator) -> (Vec<u64>, LinkError) {
    through(l2f, pass())
}

/// [`leader_to_follower`], with the follower's traffic through `f2l`.
fn through(l2f: Mutator, f2l: Mutator) -> (Vec<u64>, LinkError) {
    within(15, move || {
        let cfg = cluster(2, 2_000);
        let info = info(&cfg);
        let px = proxy(cfg.leader().address.parse().unwrap(), l2f, f2l);
        let fcfg = via(&cfg, px.addr);
        let follower = thread::spawn(move || {
            let mut f = connect(&fcfg, 1, &info).unwrap();
            let mut seqs = Vec::new();
            loop {
                match f.next_entry() {
                    Ok(e) => {
                        assert_eq!(e.data, e.seq.to_le_bytes(), "a bad entry got through");
                        seqs.push(e.seq);
                    }
                    Err(err) => return (seqs, err),
                }
            }
        });
        let mut leader = start(&cfg, &info).unwrap();
        // The follower may drop the link early: the leader then stops.
        for seq in 1..=20u64 {
            if leader.push(&seq.to_le_bytes()).is_err() {
                break;
            }
            if seq % 10 == 0 {
                if leader.flush().is_err() {
                    break;
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
        // Goodbye after the entries: an untouched stream ends with Closed.
        drop(leader);
        follower.join().unwrap()
    })
}

fn auth() -> LinkError {
    LinkError::Peer { variant: 0, failure: PeerFailure::Auth }
}

fn frame_err(e: FrameError) -> LinkError {
    LinkError::Peer { variant: 0, failure: PeerFailure::Frame(e) }
}

#[test]
fn a_flipped_ciphertext_byte_is_detected() {
    let (seqs, err) = leader_to_follower(Box::new(|idx, mut f| {
        if idx == 2 {
            f[6] ^= 0x40;
        }
        vec![Act::Send(f)]
    }));
    assert!(seqs.is_empty());
    assert_eq!(err, auth());
    assert!(err.to_string().contains("failed authentication"), "{err}");
}

#[test]
fn a_flipped_tag_byte_is_detected() {
    let (seqs, err) = leader_to_follower(Box::new(|idx, mut f| {
        if idx == 3 {
            let last = f.len() - 1;
            f[last] ^= 1;
        }
        vec![Act::Send(f)]
    }));
    assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
    assert_eq!(err, auth());
}

#[test]
fn a_replayed_frame_is_detected() {
    let (seqs, err) = leader_to_follower(Box::new(|idx, f| {
        if idx == 2 {
            vec![Act::Send(f.clone()), Act::Send(f)]
        } else {
            vec![Act::Send(f)]
        }
    }));
    assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
    assert_eq!(err, auth());
}

#[test]
fn reordered_frames_are_detected() {
    let mut held = None;
    let (seqs, err) = leader_to_follower(Box::new(move |idx, f| match idx {
        2 => {
            held = Some(f);
            vec![]
        }
        3 => vec![Act::Send(f), Act::Send(held.take().unwrap())],
        _ => vec![Act::Send(f)],
    }));
    assert!(seqs.is_empty());
    assert_eq!(err, auth());
}

#[test]
fn a_dropped_frame_is_detected() {
    let (seqs, err) = leader_to_follower(Box::new(|idx, f| if idx == 2 { vec![] } else { vec![Act::Send(f)] }));
    assert!(seqs.is_empty());
    assert_eq!(err, auth());
}

#[test]
fn an_injected_frame_is_detected() {
    let (seqs, err) = leader_to_follower(Box::new(|idx, f| {
        if idx == 3 {
            let mut forged = vec![0, 40];
            forged.extend((0..40u8).map(|i| i.wrapping_mul(37)));
            vec![Act::Send(forged), Act::Send(f)]
        } else {
            vec![Act::Send(f)]
        }
    }));
    assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
    assert_eq!(err, auth());
}

#[test]
fn a_frame_replayed_from_another_session_is_detected() {
    let captured = Arc::new(Mutex::new(None));
    let c = captured.clone();
    let (seqs, end) = leader_to_follower(Box::new(move |idx, f| {
        if idx == 2 {
            *c.lock().unwrap() = Some(f.clone());
        }
        vec![Act::Send(f)]
    }));
    assert_eq!(seqs.len(), 20);
    assert_eq!(end, LinkError::Peer { variant: 0, failure: PeerFailure::Closed });
    let old = captured.lock().unwrap().take().unwrap();
    let (seqs, err) =
        leader_to_follower(Box::new(
            move |idx, f| {
                if idx == 2 {
                    vec![Act::Send(old.clone())]
                } else {
                    vec![Act::Send(f)]
                }
            },
        ));
    assert!(seqs.is_empty());
    assert_eq!(err, auth());
}

#[test]
fn a_truncated_frame_is_detected() {
    let (seqs, err) = leader_to_follower(Box::new(|idx, f| {
        if idx == 3 {
            let half = f.len() / 2;
            vec![Act::Send(f[..half].to_vec()), Act::Close]
        } else {
            vec![Act::Send(f)]
        }
    }));
    assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
    assert!(
        matches!(err, LinkError::Peer { variant: 0, failure: PeerFailure::Frame(FrameError::Truncated { .. }) }),
        "{err}"
    );
    assert!(err.to_string().contains("closed in the middle of a frame"), "{err}");
}

#[test]
fn a_chunk_too_short_for_a_tag_is_refused() {
    let (seqs, err) =
        leader_to_follower(Box::new(
            |idx, f| {
                if idx == 2 {
                    vec![Act::Send(vec![0, 3, 1, 2, 3])]
                } else {
                    vec![Act::Send(f)]
                }
            },
        ));
    assert!(seqs.is_empty());
    assert_eq!(err, auth());
}

/// The leader sends one batch of 100 KiB, which travels in two chunks
/// (frames 2 and 3 leader to follower) through `l2f`; returns the error
/// that ends the follower's wait for its entry.
fn big_batch_through(l2f: Mutator) -> LinkError {
    within(15, || {
        let cfg = cluster(2, 2_000);
        let info = info(&cfg);
        let px = proxy(cfg.leader().address.parse().unwrap(), l2f, pass());
        let fcfg = via(&cfg, px.addr);
        let follower = thread::spawn(move || connect(&fcfg, 1, &info).unwrap().next_entry().map(|e| e.seq));
        let mut leader = start(&cfg, &info).unwrap();
        // The proxy may cut the leader off before it is done.
        let _ = leader.push(&vec![7u8; 100 << 10]).and_then(|_| leader.flush());
        let got = follower.join().unwrap();
        drop(leader);
        got.expect_err("the follower got the batch")
    })
}

#[test]
fn a_chunk_taken_out_of_a_message_is_detected() {
    // The first chunk says "more", so the follower takes no batch from it
    // alone, and what arrives next (a heartbeat) is not the chunk sealed after it.
    let err = big_batch_through(Box::new(|idx, f| if idx == 3 { vec![] } else { vec![Act::Send(f)] }));
    assert_eq!(err, auth());
}

#[test]
fn an_empty_frame_is_refused() {
    let (_, err) =
        leader_to_follower(Box::new(|idx, f| if idx == 2 { vec![Act::Send(vec![0, 0])] } else { vec![Act::Send(f)] }));
    assert_eq!(err, frame_err(FrameError::Empty));
}

#[test]
fn a_connection_cut_between_the_chunks_of_a_message_is_detected() {
    let err = big_batch_through(Box::new(|idx, f| if idx == 3 { vec![Act::Close] } else { vec![Act::Send(f)] }));
    assert!(err.to_string().contains("closed in the middle of a message"), "{err}");
}

#[test]
fn a_cut_connection_is_a_disconnect() {
    let (seqs, err) =
        leader_to_follower(Box::new(|idx, f| if idx == 3 { vec![Act::Close] } else { vec![Act::Send(f)] }));
    assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
    assert!(matches!(err, LinkError::Peer { variant: 0, failure: PeerFailure::Disconnected(_) }), "{err}");
}

#[test]
fn a_tampered_acknowledgement_is_detected_by_the_leader() {
    let err = within(15, || {
        let cfg = cluster(2, 2_000);
        let info = info(&cfg);
        let f2l: Mutator = Box::new(|idx, mut f| {
            if idx == 2 {
                f[10] ^= 0x80;
            }
            vec![Act::Send(f)]
        });
        let px = proxy(cfg.leader().address.parse().unwrap(), pass(), f2l);
        let fcfg = via(&cfg, px.addr);
        let follower = thread::spawn(move || {
            let mut f = connect(&fcfg, 1, &info).unwrap();
            let seq = f.next_entry().unwrap().seq;
            f.ack(seq, [5; 32]).unwrap();
            // The leader drops the link: the follower learns it.
            while f.next_incoming_timeout(Duration::from_millis(100)).is_ok() {}
        });
        let mut leader = start(&cfg, &info).unwrap();
        leader.push(b"1").unwrap();
        let err = leader.wait_acked(1, Duration::from_secs(5)).unwrap_err();
        drop(leader);
        follower.join().unwrap();
        err
    });
    assert_eq!(err, LinkError::Peer { variant: 1, failure: PeerFailure::Auth });
}

/// Follower 1 of a 2-variant cluster connects through a proxy that passes
/// its traffic through `l2f` and `f2l`; returns the follower's error and the
/// leader's.
fn handshake_through(l2f: Mutator, f2l: Mutator) -> (LinkError, LinkError) {
    within(15, move || {
        let cfg = cluster(2, 800);
        let info = info(&cfg);
        let px = proxy(cfg.leader().address.parse().unwrap(), l2f, f2l);
        let fcfg = via(&cfg, px.addr);
        let leader = {
            let cfg = cfg.clone();
            thread::spawn(move || start(&cfg, &info))
        };
        let ferr = connect(&fcfg, 1, &info).err().expect("the follower joined");
        let lerr = leader.join().unwrap().err().expect("the cluster formed");
        (ferr, lerr)
    })
}

fn flip(at_frame: usize, at_byte: usize) -> Mutator {
    Box::new(move |idx, mut f| {
        if idx == at_frame {
            f[at_byte] ^= 1;
        }
        vec![Act::Send(f)]
    })
}

#[test]
fn a_tampered_handshake_is_refused() {
    // The leader's message: the follower finds no proof of the leader's key.
    let (ferr, lerr) = handshake_through(flip(0, 30), pass());
    assert!(matches!(ferr, LinkError::Handshake { error: HandshakeError::LeaderNotProven, .. }), "{ferr}");
    assert!(ferr.to_string().contains("tampered"), "{ferr}");
    assert!(lerr.to_string().contains("we did not prove the leader's key"), "{lerr}");
    // The follower's first message: the leader cannot open it.
    let (ferr, lerr) = handshake_through(pass(), flip(0, 30));
    assert!(matches!(ferr, LinkError::Handshake { error: HandshakeError::Rejected(RejectReason::NotLeaderKey), .. }));
    assert!(lerr.to_string().contains("tampered"), "{lerr}");
    // The follower's last message, which carries its key.
    let (ferr, lerr) = handshake_through(pass(), flip(1, 30));
    assert!(
        matches!(ferr, LinkError::Handshake { error: HandshakeError::Rejected(RejectReason::FollowerNotProven), .. }),
        "{ferr}"
    );
    assert!(lerr.to_string().contains("did not prove the key it presented"), "{lerr}");
}

#[test]
fn a_recorded_session_replayed_to_the_leader_is_refused() {
    use std::io::{Read, Write};
    // Record everything follower 1 sends in a real session.
    let recorded = Arc::new(Mutex::new(Vec::new()));
    let rec = recorded.clone();
    let (seqs, _) = through(
        pass(),
        Box::new(move |_, f| {
            rec.lock().unwrap().push(f.clone());
            vec![Act::Send(f)]
        }),
    );
    assert_eq!(seqs.len(), 20);
    let frames = recorded.lock().unwrap().clone();
    assert!(frames.len() >= 2, "{} frames recorded", frames.len());
    // Replay it, frame by frame, to a new leader of the same cluster. Its
    // first message is valid, but the session's keys come from the new
    // leader's fresh ephemeral key: the replayed third message fails.
    let err = within(15, move || {
        // The same names and keys; another port.
        let cfg = cluster(2, 800);
        let info = info(&cfg);
        let leader = {
            let cfg = cfg.clone();
            thread::spawn(move || start(&cfg, &info))
        };
        let mut s = loop {
            match std::net::TcpStream::connect(&cfg.leader().address) {
                Ok(s) => break s,
                Err(_) => thread::sleep(Duration::from_millis(20)),
            }
        };
        let mut answer = [0u8; 2];
        for (i, f) in frames.iter().enumerate() {
            if s.write_all(f).is_err() {
                break;
            }
            if i == 0 {
                // Wait for the new leader's second message, as a peer would.
                let _ = s.read_exact(&mut answer);
                let mut rest = vec![0u8; u16::from_be_bytes(answer) as usize];
                let _ = s.read_exact(&mut rest);
            }
        }
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        leader.join().unwrap().err().expect("the replayed session joined")
    });
    let text = err.to_string();
    assert!(matches!(err, LinkError::MissingFollowers { .. }), "{text}");
    assert!(text.contains("claiming variant 1"), "{text}");
    assert!(text.contains("did not prove the key it presented"), "{text}");
}
