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
    ClusterConfig, Digest, Follower, HandshakeError, HandshakeInfo, Leader, LinkError, PrivateKey, RejectReason, Role,
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

/// `cfg` as a member holding `key` sees it: it lists `key` for variant `id`.
fn posing_as(cfg: &ClusterConfig, id: u8, key: &PrivateKey) -> ClusterConfig {
    let mut c = cfg.clone();
    for v in &mut c.variants {
        if v.public_key == key.public() {
            v.public_key = PrivateKey::from_bytes([0x77 + v.id; 32]).public();
        }
    }
    c.variants.iter_mut().find(|v| v.id == id).unwrap().public_key = key.public();
    c
}

#[test]
fn a_member_with_an_unlisted_key_is_refused() {
    let cfg = cluster(2, 800);
    let info = info(&cfg);
    let leader = start_leader(&cfg, info);
    let stranger = stranger_key();
    let err = Follower::connect(&posing_as(&cfg, 1, &stranger), 1, &stranger, &info).err().unwrap();
    assert_eq!(handshake_error(err), HandshakeError::Rejected(RejectReason::KeyNotListed { id: 1 }));
    let err = leader.join().unwrap().err().unwrap();
    let text = err.to_string();
    assert!(matches!(err, LinkError::MissingFollowers { .. }), "{text}");
    assert!(text.contains("claiming variant 1"), "{text}");
    assert!(text.contains("its key is not listed in our cluster file"), "{text}");
}

#[test]
fn a_follower_cannot_pose_as_another_follower_and_the_cluster_still_forms() {
    let cfg = cluster(3, 3_000);
    let info = info(&cfg);
    let leader = start_leader(&cfg, info);
    // Follower 2 holds its own key and claims to be follower 1.
    let key2 = private_key(2);
    let err = Follower::connect(&posing_as(&cfg, 1, &key2), 1, &key2, &info).err().unwrap();
    assert_eq!(handshake_error(err), HandshakeError::Rejected(RejectReason::KeyNotListed { id: 1 }));
    // The real ones join.
    let f1 = connect(&cfg, 1, &info).unwrap();
    let f2 = connect(&cfg, 2, &info).unwrap();
    let mut leader = leader.join().unwrap().unwrap();
    leader.push(b"x").unwrap();
    drop((f1, f2));
}

#[test]
fn a_follower_cannot_pose_as_the_leader() {
    // Follower 1 listens where the leader should, with its own key (its
    // cluster file edited to call that the leader's): follower 2's first
    // message is sealed to the real leader's key, so the impostor can open
    // nothing, and follower 2 does not join it.
    let cfg = cluster(3, 800);
    let info = info(&cfg);
    let key1 = private_key(1);
    let fake = {
        let fake_cfg = posing_as(&cfg, 0, &key1);
        thread::spawn(move || start_as(&fake_cfg, &key1, &info))
    };
    let err = handshake_error(connect(&cfg, 2, &info).err().unwrap());
    assert_eq!(err, HandshakeError::Rejected(RejectReason::NotLeaderKey));
    assert!(err.to_string().contains("lists another public key for the leader"), "{err}");
    let text = fake.join().unwrap().err().unwrap().to_string();
    assert!(text.contains("claiming") || text.contains("not for our key"), "{text}");
    assert!(text.contains("the peer's first message is not for our key"), "{text}");
}

#[test]
fn a_private_key_that_is_not_the_listed_one_is_refused_before_connecting() {
    let cfg = cluster(2, 800);
    let err = Follower::connect(&cfg, 1, &stranger_key(), &info(&cfg)).err().unwrap();
    assert!(matches!(err, LinkError::KeyMismatch { id: 1, .. }), "{err}");
    assert!(err.to_string().contains("but the cluster file lists"), "{err}");
    let err = Leader::start(&cfg, &private_key(1), &info(&cfg)).err().unwrap();
    assert!(matches!(err, LinkError::KeyMismatch { id: 0, .. }), "{err}");
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
    let ferr = connect(&cfg, 1, &theirs).err().unwrap();
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
    let err = connect(&other, 1, &info(&other)).err().unwrap();
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
        name: None,
        address: "127.0.0.1:1".into(),
        role: Role::Follower,
        public_key: private_key(5).public(),
        private_key_file: None,
    });
    let err = connect(&theirs, 5, &info).err().unwrap();
    assert_eq!(handshake_error(err), HandshakeError::Rejected(RejectReason::UnknownVariant { id: 5 }));
    let text = leader.join().unwrap().err().unwrap().to_string();
    assert!(text.contains("unknown variant id 5"), "{text}");
}

#[test]
fn a_duplicate_variant_id_is_refused_and_the_cluster_still_forms() {
    let cfg = cluster(3, 3_000);
    let info = info(&cfg);
    let leader = start_leader(&cfg, info);
    let first = connect(&cfg, 1, &info).unwrap();
    let err = connect(&cfg, 1, &info).err().unwrap();
    assert!(err.to_string().contains("duplicate variant id 1"), "{err}");
    assert_eq!(handshake_error(err), HandshakeError::Rejected(RejectReason::DuplicateVariant { id: 1 }));
    let second = connect(&cfg, 2, &info).unwrap();
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
    // An older peer (version 2 had a pre-shared cluster key).
    let old = PROTOCOL_VERSION - 1;
    let mut payload = b"DMVX".to_vec();
    payload.extend_from_slice(&old.to_be_bytes());
    payload.extend_from_slice(b"whatever the old version says");
    s.write_all(&(payload.len() as u16).to_be_bytes()).unwrap();
    s.write_all(&payload).unwrap();
    // The leader answers with a refusal in its own version, then closes.
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).unwrap();
    assert_eq!(&reply[2..6], b"DMVX");
    assert_eq!(reply[6..8], PROTOCOL_VERSION.to_be_bytes());
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
        let mut len = [0u8; 2];
        s.read_exact(&mut len).unwrap();
        let mut hello = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut hello).unwrap();
        assert_eq!(&hello[..4], b"DMVX");
        assert_eq!(hello[4..6], PROTOCOL_VERSION.to_be_bytes());
        let payload = b"DMVX\x00\x07from the future";
        s.write_all(&(payload.len() as u16).to_be_bytes()).unwrap();
        s.write_all(payload).unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    });
    let err = connect(&cfg, 1, &info(&cfg)).err().unwrap();
    assert_eq!(handshake_error(err), HandshakeError::VersionMismatch { ours: PROTOCOL_VERSION, theirs: 7 });
    fake.join().unwrap();
}

#[test]
fn garbage_and_idle_connections_do_not_stop_the_cluster_forming() {
    let cfg = cluster(2, 2_000);
    let info = info(&cfg);
    let leader = start_leader(&cfg, info);
    let dial = || loop {
        match TcpStream::connect(&cfg.leader().address) {
            Ok(s) => break s,
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    };
    // One says nothing at all, one speaks HTTP, one sends a valid length
    // and junk, one sends a huge length.
    let _idle = dial();
    let mut http = dial();
    http.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut junk = dial();
    junk.write_all(&[0, 8, 1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
    let mut huge = dial();
    huge.write_all(&[0xff, 0xff, 0xff, 0xff]).unwrap();
    for s in [&mut http, &mut junk, &mut huge] {
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }
    let mut f = connect(&cfg, 1, &info).unwrap();
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
    let err = connect(&other, 1, &info).err().unwrap();
    assert_eq!(handshake_error(err), HandshakeError::Rejected(RejectReason::ClusterName));
    let text = leader.join().unwrap().err().unwrap().to_string();
    assert!(text.contains("different cluster name"), "{text}");
}
