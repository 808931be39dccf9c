//! Who may join: wrong keys, different digests, unknown or duplicate ids,
//! other protocol versions and garbage are refused, naming why.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use common::*;
use dmvx_sync::wire::PROTOCOL_VERSION;
use dmvx_sync::{
    ClusterConfig, Digest, Follower, HandshakeError, HandshakeInfo, Leader, LinkError, RejectReason, Role,
};

fn start_leader(cfg: &ClusterConfig, info: HandshakeInfo) -> thread::JoinHandle<Result<Leader, LinkError>> {
    let cfg = cfg.clone();
    thread::spawn(move || start(&cfg, &info))
}

fn handshake_error(e: LinkError) -> HandshakeError {
    match e {
        LinkError::Handshake { error, .. } => error,
        other => panic!("not a handshake error: {other}"),
    }
}

#[test]
fn a_peer_with_the_wrong_key_is_refused_on_both_sides() {
    let cfg = cluster(2, 800);
    let info = info(&cfg);
    let leader = start_leader(&cfg, info);
    let mut bad = cfg.clone();
    bad.key = key(0x99);
    let err = Follower::connect(&bad, 1, &info).err().unwrap();
    assert!(err.to_string().contains("wrong cluster key"), "{err}");
    assert_eq!(handshake_error(err), HandshakeError::WrongKey);
    let err = leader.join().unwrap().err().unwrap();
    let text = err.to_string();
    assert!(matches!(err, LinkError::MissingFollowers { .. }), "{text}");
    assert!(text.contains("claiming variant 1"), "{text}");
    assert!(text.contains("wrong cluster key"), "{text}");
}

#[test]
fn a_leader_with_the_wrong_key_is_refused() {
    // The follower checks the leader's proof first: an impostor leader
    // learns no proof from the follower.
    let cfg = cluster(2, 800);
    let info = info(&cfg);
    let mut bad = cfg.clone();
    bad.key = key(0x98);
    let leader = start_leader(&bad, info);
    let err = Follower::connect(&cfg, 1, &info).err().unwrap();
    assert_eq!(handshake_error(err), HandshakeError::WrongKey);
    let text = leader.join().unwrap().err().unwrap().to_string();
    assert!(text.contains("the peer refused the handshake: wrong cluster key"), "{text}");
}

fn digest(b: u8) -> Digest {
    Digest([b; 32])
}

fn mismatch(change: impl Fn(&mut HandshakeInfo), what: &str) {
    let cfg = cluster(2, 2_000);
    let ours = info(&cfg);
    let mut theirs = ours;
    change(&mut theirs);
    let leader = start_leader(&cfg, ours);
    let ferr = Follower::connect(&cfg, 1, &theirs).err().unwrap();
    let ftext = ferr.to_string();
    assert!(ftext.contains(&format!("different {what} digest")), "{ftext}");
    // The follower proved the key, so the leader stops waiting at once.
    let lerr = leader.join().unwrap().err().unwrap();
    let ltext = lerr.to_string();
    assert!(matches!(lerr, LinkError::Handshake { .. }), "{ltext}");
    assert!(ltext.contains(&format!("different {what} digest")), "{ltext}");
    assert!(ltext.contains("claiming variant 1"), "{ltext}");
}

#[test]
fn a_different_policy_digest_is_refused_naming_it() {
    mismatch(|i| i.policy = digest(1), "policy");
}

#[test]
fn a_different_image_digest_is_refused_naming_it() {
    mismatch(|i| i.image = Some(digest(2)), "image");
}

#[test]
fn a_different_program_digest_is_refused_naming_it() {
    mismatch(|i| i.program = Some(digest(3)), "program");
}

#[test]
fn policy_tables_in_the_cluster_file_feed_the_digest() {
    let mut cfg = cluster(2, 2_000);
    cfg.policy.insert("preset".into(), "dmvx".into());
    let mut other = cfg.clone();
    other.policy.insert("preset".into(), "strict".into());
    let leader = start_leader(&cfg, info(&cfg));
    let err = Follower::connect(&other, 1, &info(&other)).err().unwrap();
    assert!(matches!(handshake_error(err), HandshakeError::PolicyDigest { .. }));
    assert!(leader.join().unwrap().is_err());
}

#[test]
fn an_unknown_variant_id_is_refused() {
    let cfg = cluster(2, 800);
    let info = info(&cfg);
    let leader = start_leader(&cfg, info);
    let mut theirs = cfg.clone();
    theirs.variants.push(dmvx_sync::config::VariantConfig {
        id: 5,
        address: "127.0.0.1:1".into(),
        role: Role::Follower,
    });
    let err = Follower::connect(&theirs, 5, &info).err().unwrap();
    assert_eq!(handshake_error(err), HandshakeError::Rejected(RejectReason::UnknownVariant { id: 5 }));
    let text = leader.join().unwrap().err().unwrap().to_string();
    assert!(text.contains("unknown variant id 5"), "{text}");
}

#[test]
fn a_duplicate_variant_id_is_refused_and_the_cluster_still_forms() {
    let cfg = cluster(3, 3_000);
    let info = info(&cfg);
    let leader = start_leader(&cfg, info);
    let first = Follower::connect(&cfg, 1, &info).unwrap();
    let err = Follower::connect(&cfg, 1, &info).err().unwrap();
    assert!(err.to_string().contains("duplicate variant id 1"), "{err}");
    assert_eq!(handshake_error(err), HandshakeError::Rejected(RejectReason::DuplicateVariant { id: 1 }));
    let second = Follower::connect(&cfg, 2, &info).unwrap();
    let mut leader = leader.join().unwrap().unwrap();
    leader.push(b"x").unwrap();
    drop((first, second));
}

#[test]
fn another_protocol_version_is_refused_by_the_leader() {
    let cfg = cluster(2, 800);
    let leader = start_leader(&cfg, info(&cfg));
    let mut s = loop {
        match TcpStream::connect(&cfg.leader().address) {
            Ok(s) => break s,
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    };
    // An older peer (version 1 had no ephemeral key exchange).
    let old = PROTOCOL_VERSION - 1;
    let mut payload = b"DMVX".to_vec();
    payload.extend_from_slice(&old.to_be_bytes());
    payload.extend_from_slice(b"whatever the old version says");
    s.write_all(&(payload.len() as u32).to_be_bytes()).unwrap();
    s.write_all(&payload).unwrap();
    // The leader answers with a refusal in its own version, then closes.
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).unwrap();
    assert_eq!(&reply[4..8], b"DMVX");
    assert_eq!(reply[8..10], PROTOCOL_VERSION.to_be_bytes());
    let text = leader.join().unwrap().err().unwrap().to_string();
    let want = format!("protocol version mismatch: ours is {PROTOCOL_VERSION}, the peer's is {old}");
    assert!(text.contains(&want), "{text}");
}

#[test]
fn another_protocol_version_is_refused_by_the_follower() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut cfg = cluster(2, 2_000);
    cfg.variants[0].address = listener.local_addr().unwrap().to_string();
    let fake = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut len = [0u8; 4];
        s.read_exact(&mut len).unwrap();
        let mut hello = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut hello).unwrap();
        assert_eq!(&hello[..4], b"DMVX");
        assert_eq!(hello[4..6], PROTOCOL_VERSION.to_be_bytes());
        let payload = b"DMVX\x00\x07from the future";
        s.write_all(&(payload.len() as u32).to_be_bytes()).unwrap();
        s.write_all(payload).unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    });
    let err = Follower::connect(&cfg, 1, &info(&cfg)).err().unwrap();
    assert_eq!(handshake_error(err), HandshakeError::VersionMismatch { ours: PROTOCOL_VERSION, theirs: 7 });
    fake.join().unwrap();
}

#[test]
fn garbage_and_idle_connections_do_not_stop_the_cluster_forming() {
    let cfg = cluster(2, 2_000);
    let info = info(&cfg);
    let leader = start_leader(&cfg, info);
    let connect = || loop {
        match TcpStream::connect(&cfg.leader().address) {
            Ok(s) => break s,
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    };
    // One says nothing at all, one speaks HTTP, one sends a valid length
    // and junk, one sends a huge length.
    let _idle = connect();
    let mut http = connect();
    http.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut junk = connect();
    junk.write_all(&[0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
    let mut huge = connect();
    huge.write_all(&[0xff, 0xff, 0xff, 0xff]).unwrap();
    for s in [&mut http, &mut junk, &mut huge] {
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }
    let mut f = Follower::connect(&cfg, 1, &info).unwrap();
    let mut leader = leader.join().unwrap().unwrap();
    leader.push(b"ok").unwrap();
    leader.flush().unwrap();
    assert_eq!(f.next_entry().unwrap().data, b"ok");
}

#[test]
fn a_different_cluster_name_is_refused() {
    let cfg = cluster(2, 800);
    let info = info(&cfg);
    let leader = start_leader(&cfg, info);
    let mut other = cfg.clone();
    other.name = "elsewhere".into();
    let err = Follower::connect(&other, 1, &info).err().unwrap();
    assert_eq!(handshake_error(err), HandshakeError::Rejected(RejectReason::ClusterName));
    let text = leader.join().unwrap().err().unwrap().to_string();
    assert!(text.contains("different cluster name"), "{text}");
}
