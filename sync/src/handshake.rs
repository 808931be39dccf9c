//! The versioned, mutually authenticated handshake.
//!
//! Every handshake frame is a plaintext frame whose payload is
//! `"DMVX" || version (u16, big-endian) || postcard(HandshakeMsg)`, so a
//! version mismatch is detected before anything version-specific is parsed.
//!
//! ```text
//! follower                                             leader
//!   ClientHello{cluster, follower id, leader id,
//!               nonce_f (32 random bytes), share_f, digests_f} ->
//!                                   checks version, cluster name, ids
//!                <- ServerHello{core{leader id, nonce_l, share_l, digests_l},
//!                               proof_l = HMAC(k_lp, th)}
//!   checks proof_l (else: wrong key),
//!   compares digests -> verdict
//!   ClientFinish{verdict, proof_f = HMAC(k_fp, th || verdict)} ->
//!                                   checks proof_f (else: wrong key),
//!                                   compares digests, claims the id
//!                <- Accept  |  Reject(reason)
//! ```
//!
//! `th` is the transcript hash over the exact ClientHello payload and the
//! encoded ServerHello core ([`crate::crypto`]), so the proofs bind the
//! protocol version, the cluster name, both variant ids, both nonces and all
//! digests. `share_f` and `share_l` are ephemeral X25519 public keys, new
//! for every handshake; the keys derive from the cluster key *and* their
//! Diffie-Hellman secret ([`crate::crypto`]), so traffic recorded today
//! stays sealed even if the cluster key leaks later (forward secrecy). A
//! share of low order (no contribution to the secret) is refused.
//! Either side may answer `Reject(reason)` instead of its next
//! message; the side that detects a problem names it in its own error, the
//! other reports "the peer refused the handshake: <reason>". After Accept
//! both sides switch to sealed frames with the traffic keys.

use std::fmt;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::config::{ClusterConfig, Digest};
use x25519_dalek::{EphemeralSecret, PublicKey, SharedSecret};

use crate::crypto::{transcript, Opener, Schedule, Sealer};
use crate::frame::{put_plain_frame, read_frame, FrameError};
use crate::wire::{MAX_HANDSHAKE_FRAME, PROTOCOL_VERSION};

const MAGIC: &[u8; 4] = b"DMVX";

/// What a variant asserts about itself in the handshake; every variant of a
/// cluster must present equal values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandshakeInfo {
    /// Digest of the effective MVX policy.
    pub policy: Digest,
    /// Digest of the variant image, if any.
    pub image: Option<Digest>,
    /// Digest of the program, if any.
    pub program: Option<Digest>,
}

impl HandshakeInfo {
    /// The digests named by the cluster file, with its policy table's digest.
    pub fn from_config(cfg: &ClusterConfig) -> Self {
        HandshakeInfo { policy: cfg.policy_digest(), image: cfg.digests.image, program: cfg.digests.program }
    }
}

fn show(d: &Option<Digest>) -> String {
    match d {
        Some(d) => d.to_string(),
        None => "none".to_string(),
    }
}

/// Why one side refused the handshake; sent to the other side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RejectReason {
    VersionMismatch { version: u16 },
    ClusterName,
    WrongLeader { expected: u8 },
    UnknownVariant { id: u8 },
    DuplicateVariant { id: u8 },
    WrongKey,
    PolicyDigest,
    ImageDigest,
    ProgramDigest,
    Malformed,
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RejectReason::VersionMismatch { version } => {
                write!(f, "protocol version mismatch (it speaks version {version})")
            }
            RejectReason::ClusterName => f.write_str("different cluster name"),
            RejectReason::WrongLeader { expected } => {
                write!(f, "wrong leader id (its cluster file names leader {expected})")
            }
            RejectReason::UnknownVariant { id } => {
                write!(f, "unknown variant id {id}: not a follower in its cluster file")
            }
            RejectReason::DuplicateVariant { id } => {
                write!(f, "duplicate variant id {id}: variant {id} is already connected")
            }
            RejectReason::WrongKey => f.write_str("wrong cluster key (our proof of the key did not verify)"),
            RejectReason::PolicyDigest => f.write_str("different policy digest"),
            RejectReason::ImageDigest => f.write_str("different image digest"),
            RejectReason::ProgramDigest => f.write_str("different program digest"),
            RejectReason::Malformed => f.write_str("malformed handshake message"),
        }
    }
}

/// Why a handshake failed, as seen by the side reporting it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("not a dmvx peer (bad magic)")]
    BadMagic,
    #[error("protocol version mismatch: ours is {ours}, the peer's is {theirs}")]
    VersionMismatch { ours: u16, theirs: u16 },
    #[error("different cluster name: ours is {ours:?}, the peer's is {theirs:?}")]
    ClusterName { ours: String, theirs: String },
    #[error("wrong cluster key: the peer's proof of the key did not verify (or the handshake was tampered with)")]
    WrongKey,
    #[error("different policy digest: ours is {ours}, the peer's is {theirs}")]
    PolicyDigest { ours: Digest, theirs: Digest },
    #[error("different image digest: ours is {}, the peer's is {}", show(.ours), show(.theirs))]
    ImageDigest { ours: Option<Digest>, theirs: Option<Digest> },
    #[error("different program digest: ours is {}, the peer's is {}", show(.ours), show(.theirs))]
    ProgramDigest { ours: Option<Digest>, theirs: Option<Digest> },
    #[error("unknown variant id {id}: not a follower in the cluster file")]
    UnknownVariant { id: u8 },
    #[error("duplicate variant id {id}: variant {id} is already connected")]
    DuplicateVariant { id: u8 },
    #[error("the peer says the leader is variant {got}, but the cluster file names {expected}")]
    WrongLeader { expected: u8, got: u8 },
    #[error("the peer refused the handshake: {0}")]
    Rejected(RejectReason),
    #[error("malformed handshake message: {0}")]
    Malformed(String),
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("cannot send: {0}")]
    Send(String),
    #[error("the handshake did not complete within {0} ms")]
    Timeout(u64),
}

impl HandshakeError {
    /// The reason to send to the peer, if any.
    fn reject_reason(&self) -> Option<RejectReason> {
        Some(match self {
            HandshakeError::VersionMismatch { .. } => RejectReason::VersionMismatch { version: PROTOCOL_VERSION },
            HandshakeError::ClusterName { .. } => RejectReason::ClusterName,
            HandshakeError::WrongKey => RejectReason::WrongKey,
            HandshakeError::PolicyDigest { .. } => RejectReason::PolicyDigest,
            HandshakeError::ImageDigest { .. } => RejectReason::ImageDigest,
            HandshakeError::ProgramDigest { .. } => RejectReason::ProgramDigest,
            HandshakeError::UnknownVariant { id } => RejectReason::UnknownVariant { id: *id },
            HandshakeError::DuplicateVariant { id } => RejectReason::DuplicateVariant { id: *id },
            HandshakeError::WrongLeader { expected, .. } => RejectReason::WrongLeader { expected: *expected },
            HandshakeError::Malformed(_) => RejectReason::Malformed,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ServerCore {
    leader_id: u8,
    nonce: [u8; 32],
    share: [u8; 32],
    info: HandshakeInfo,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Verdict {
    Agree,
    Disagree(RejectReason),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum HandshakeMsg {
    ClientHello {
        cluster: String,
        follower_id: u8,
        leader_id: u8,
        nonce: [u8; 32],
        share: [u8; 32],
        info: HandshakeInfo,
    },
    ServerHello {
        core: ServerCore,
        proof: [u8; 32],
    },
    ClientFinish {
        verdict: Verdict,
        proof: [u8; 32],
    },
    Accept,
    Reject(RejectReason),
}

fn encode(msg: &HandshakeMsg) -> Vec<u8> {
    encode_versioned(PROTOCOL_VERSION, msg)
}

fn encode_versioned(version: u16, msg: &HandshakeMsg) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&version.to_be_bytes());
    // Serialising these types into a Vec cannot fail.
    postcard::to_extend(msg, out).unwrap_or_default()
}

fn decode(payload: &[u8]) -> Result<HandshakeMsg, HandshakeError> {
    let (magic, rest) = payload.split_at_checked(MAGIC.len()).ok_or(HandshakeError::BadMagic)?;
    if magic != MAGIC {
        return Err(HandshakeError::BadMagic);
    }
    let (version, body) = rest.split_at_checked(2).ok_or_else(|| HandshakeError::Malformed("no version".into()))?;
    let version = u16::from_be_bytes([version[0], version[1]]);
    if version != PROTOCOL_VERSION {
        return Err(HandshakeError::VersionMismatch { ours: PROTOCOL_VERSION, theirs: version });
    }
    let (msg, rest) =
        postcard::take_from_bytes::<HandshakeMsg>(body).map_err(|e| HandshakeError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(HandshakeError::Malformed(format!("{} trailing bytes", rest.len())));
    }
    Ok(msg)
}

async fn send<W: AsyncWrite + Unpin>(w: &mut W, payload: &[u8]) -> Result<(), HandshakeError> {
    let mut out = Vec::with_capacity(payload.len() + 4);
    put_plain_frame(&mut out, payload);
    w.write_all(&out).await.map_err(|e| HandshakeError::Send(e.to_string()))?;
    w.flush().await.map_err(|e| HandshakeError::Send(e.to_string()))
}

async fn recv<R: AsyncRead + Unpin>(r: &mut R) -> Result<Vec<u8>, HandshakeError> {
    let mut buf = Vec::new();
    read_frame(r, &mut buf, MAX_HANDSHAKE_FRAME).await?;
    Ok(buf)
}

/// Tells the peer why we refuse, best effort (it may be gone already).
async fn refuse<S: AsyncWrite + Unpin>(s: &mut S, err: &HandshakeError) {
    if let Some(reason) = err.reject_reason() {
        let _ = send(s, &encode(&HandshakeMsg::Reject(reason))).await;
    }
}

fn random_nonce() -> Result<[u8; 32], HandshakeError> {
    let mut n = [0u8; 32];
    getrandom::fill(&mut n).map_err(|e| HandshakeError::Send(format!("no randomness: {e}")))?;
    Ok(n)
}

/// The Diffie-Hellman secret with the peer's `share`; refuses a share of
/// low order, which would make the secret known to anyone.
fn agree(mine: EphemeralSecret, share: [u8; 32]) -> Result<SharedSecret, HandshakeError> {
    let dh = mine.diffie_hellman(&PublicKey::from(share));
    if !dh.was_contributory() {
        return Err(HandshakeError::Malformed("the peer's key share is not a valid X25519 public key".into()));
    }
    Ok(dh)
}

fn compare(ours: &HandshakeInfo, theirs: &HandshakeInfo) -> Result<(), HandshakeError> {
    if ours.policy != theirs.policy {
        return Err(HandshakeError::PolicyDigest { ours: ours.policy, theirs: theirs.policy });
    }
    if ours.image != theirs.image {
        return Err(HandshakeError::ImageDigest { ours: ours.image, theirs: theirs.image });
    }
    if ours.program != theirs.program {
        return Err(HandshakeError::ProgramDigest { ours: ours.program, theirs: theirs.program });
    }
    Ok(())
}

/// The keys of an established session.
pub struct Session {
    pub sealer: Sealer,
    pub opener: Opener,
}

/// The leader's view of a failed handshake.
#[derive(Debug, Clone)]
pub struct ServerFailure {
    /// The variant id the peer claimed, if it got that far.
    pub claimed: Option<u8>,
    /// Whether the peer had proved knowledge of the cluster key (a
    /// misconfigured member rather than a stranger).
    pub authenticated: bool,
    pub error: HandshakeError,
}

/// Runs the leader's side on one accepted connection. `claim(id)` is called
/// once the follower is authenticated and its digests agree; it returns
/// false if that id is already taken.
pub async fn server<S, F>(
    s: &mut S,
    cfg: &ClusterConfig,
    info: &HandshakeInfo,
    claim: F,
) -> Result<(u8, Session), ServerFailure>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce(u8) -> bool,
{
    let mut claimed = None;
    let mut authenticated = false;
    let result = server_inner(s, cfg, info, claim, &mut claimed, &mut authenticated).await;
    match result {
        Ok(ok) => Ok(ok),
        Err(error) => {
            refuse(s, &error).await;
            Err(ServerFailure { claimed, authenticated, error })
        }
    }
}

async fn server_inner<S, F>(
    s: &mut S,
    cfg: &ClusterConfig,
    info: &HandshakeInfo,
    claim: F,
    claimed: &mut Option<u8>,
    authenticated: &mut bool,
) -> Result<(u8, Session), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce(u8) -> bool,
{
    let leader_id = cfg.leader().id;
    let hello_f = recv(s).await?;
    let HandshakeMsg::ClientHello { cluster, follower_id, leader_id: their_leader, nonce: _, share, info: their_info } =
        decode(&hello_f)?
    else {
        return Err(HandshakeError::Malformed("expected a ClientHello".into()));
    };
    *claimed = Some(follower_id);
    if cluster != cfg.name {
        return Err(HandshakeError::ClusterName { ours: cfg.name.clone(), theirs: cluster });
    }
    if their_leader != leader_id {
        return Err(HandshakeError::WrongLeader { expected: leader_id, got: their_leader });
    }
    if !cfg.followers().any(|v| v.id == follower_id) {
        return Err(HandshakeError::UnknownVariant { id: follower_id });
    }
    let mine = EphemeralSecret::random();
    let core = ServerCore { leader_id, nonce: random_nonce()?, share: PublicKey::from(&mine).to_bytes(), info: *info };
    let dh = agree(mine, share)?;
    let core_bytes = postcard::to_allocvec(&core).unwrap_or_default();
    let sched = Schedule::new(&cfg.key, dh.as_bytes(), transcript(&hello_f, &core_bytes));
    let server_hello = HandshakeMsg::ServerHello { proof: sched.leader_proof(), core };
    send(s, &encode(&server_hello)).await?;

    let finish = recv(s).await?;
    let (verdict, proof) = match decode(&finish)? {
        HandshakeMsg::ClientFinish { verdict, proof } => (verdict, proof),
        HandshakeMsg::Reject(reason) => return Err(HandshakeError::Rejected(reason)),
        _ => return Err(HandshakeError::Malformed("expected a ClientFinish".into())),
    };
    let verdict_bytes = postcard::to_allocvec(&verdict).unwrap_or_default();
    if !sched.verify_follower_proof(&verdict_bytes, &proof) {
        return Err(HandshakeError::WrongKey);
    }
    *authenticated = true;
    compare(info, &their_info)?;
    if let Verdict::Disagree(reason) = verdict {
        return Err(HandshakeError::Rejected(reason));
    }
    if !claim(follower_id) {
        return Err(HandshakeError::DuplicateVariant { id: follower_id });
    }
    send(s, &encode(&HandshakeMsg::Accept)).await?;
    let (sealer, opener) = sched.leader_keys();
    Ok((follower_id, Session { sealer, opener }))
}

/// Runs a follower's side on a connection to the leader.
pub async fn client<S>(
    s: &mut S,
    cfg: &ClusterConfig,
    my_id: u8,
    info: &HandshakeInfo,
) -> Result<Session, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match client_inner(s, cfg, my_id, info).await {
        Ok(session) => Ok(session),
        Err(e) => {
            // A digest mismatch was already sent, with proof, in the verdict.
            if !matches!(
                e,
                HandshakeError::PolicyDigest { .. }
                    | HandshakeError::ImageDigest { .. }
                    | HandshakeError::ProgramDigest { .. }
            ) {
                refuse(s, &e).await;
            }
            Err(e)
        }
    }
}

async fn client_inner<S>(
    s: &mut S,
    cfg: &ClusterConfig,
    my_id: u8,
    info: &HandshakeInfo,
) -> Result<Session, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let leader_id = cfg.leader().id;
    let mine = EphemeralSecret::random();
    let hello_f = encode(&HandshakeMsg::ClientHello {
        cluster: cfg.name.clone(),
        follower_id: my_id,
        leader_id,
        nonce: random_nonce()?,
        share: PublicKey::from(&mine).to_bytes(),
        info: *info,
    });
    send(s, &hello_f).await?;

    let reply = recv(s).await?;
    let (core, proof) = match decode(&reply)? {
        HandshakeMsg::ServerHello { core, proof } => (core, proof),
        HandshakeMsg::Reject(reason) => return Err(HandshakeError::Rejected(reason)),
        _ => return Err(HandshakeError::Malformed("expected a ServerHello".into())),
    };
    let dh = agree(mine, core.share)?;
    let core_bytes = postcard::to_allocvec(&core).unwrap_or_default();
    let sched = Schedule::new(&cfg.key, dh.as_bytes(), transcript(&hello_f, &core_bytes));
    if !sched.verify_leader_proof(&proof) {
        return Err(HandshakeError::WrongKey);
    }
    if core.leader_id != leader_id {
        return Err(HandshakeError::WrongLeader { expected: leader_id, got: core.leader_id });
    }
    let mismatch = compare(info, &core.info).err();
    let verdict = match mismatch.as_ref().and_then(|e| e.reject_reason()) {
        Some(reason) => Verdict::Disagree(reason),
        None => Verdict::Agree,
    };
    let verdict_bytes = postcard::to_allocvec(&verdict).unwrap_or_default();
    let finish = HandshakeMsg::ClientFinish { proof: sched.follower_proof(&verdict_bytes), verdict };
    send(s, &encode(&finish)).await?;
    if let Some(e) = mismatch {
        // Already told the leader, with proof, in the verdict.
        return Err(e);
    }
    let last = recv(s).await?;
    match decode(&last)? {
        HandshakeMsg::Accept => {
            let (sealer, opener) = sched.follower_keys();
            Ok(Session { sealer, opener })
        }
        HandshakeMsg::Reject(reason) => Err(HandshakeError::Rejected(reason)),
        _ => Err(HandshakeError::Malformed("expected Accept or Reject".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ClusterConfig, ClusterKey};

    #[test]
    fn any_bytes_from_a_stranger_decode_to_a_message_or_an_error() {
        let mut x = 0x243f_6a88_85a3_08d3u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let valid = encode(&HandshakeMsg::ServerHello {
            core: ServerCore {
                leader_id: 0,
                nonce: [1; 32],
                share: [2; 32],
                info: HandshakeInfo { policy: Digest([3; 32]), image: None, program: None },
            },
            proof: [4; 32],
        });
        for i in 0..100_000 {
            let mut b = if i % 2 == 0 { valid.clone() } else { encode(&HandshakeMsg::Accept) };
            match next() % 3 {
                0 => b.truncate((next() as usize) % (b.len() + 1)),
                1 => b.extend((0..next() % 64).map(|_| next() as u8)),
                _ => {
                    let at = (next() as usize) % b.len();
                    b[at] ^= 1 << (next() % 8);
                }
            }
            let _ = decode(&b);
        }
        assert!(decode(&valid).is_ok());
    }

    #[tokio::test]
    async fn a_key_share_of_low_order_is_refused() {
        let cfg = ClusterConfig::local(2, 7000, ClusterKey::from_bytes([3; 32])).unwrap();
        let info = HandshakeInfo::from_config(&cfg);
        for share in [[0u8; 32], {
            let mut one = [0u8; 32];
            one[0] = 1;
            one
        }] {
            let (mut a, mut b) = tokio::io::duplex(4096);
            let hello = encode(&HandshakeMsg::ClientHello {
                cluster: cfg.name.clone(),
                follower_id: 1,
                leader_id: 0,
                nonce: [5; 32],
                share,
                info,
            });
            send(&mut b, &hello).await.unwrap();
            let failure = server(&mut a, &cfg, &info, |_| true).await.err().expect("refused");
            assert!(
                matches!(&failure.error, HandshakeError::Malformed(m) if m.contains("key share")),
                "{:?}",
                failure.error
            );
            assert!(!failure.authenticated);
        }
    }
}
