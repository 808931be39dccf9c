//! The handshake: Noise XK between a follower (initiator) and the leader
//! (responder), each with its own static key listed in the cluster file.
//!
//! Every handshake frame's payload is `"DMVX" || version (u16, big-endian) ||
//! postcard(HandshakeMsg)`, so a version mismatch is detected before anything
//! version-specific is parsed. A `HandshakeMsg` is a Noise handshake message
//! or a refusal.
//!
//! ```text
//! follower (knows s_L)                                    leader
//!   1  -> e, es        Hello{cluster, follower id, leader id, digests_F}
//!                      leader: opens it (else: not for our key), checks the
//!                      cluster name, the ids
//!   2  <- e, ee        Welcome{leader id, digests_L}
//!                      follower: opens it (else: not the listed leader),
//!                      checks the leader id, compares digests -> verdict
//!   3  -> s, se        Finish{verdict}
//!                      leader: opens it (else: no proof of the key sent),
//!                      checks s_F is the listed key of the claimed id,
//!                      compares digests, claims the id
//!   4  <- sealed       Answer: Accept | Reject(reason)   (first transport message)
//! ```
//!
//! The Noise handshake hash binds the prologue (protocol version) and every
//! payload; the keys of the session come from ephemeral Diffie-Hellman
//! secrets as well as the static ones (forward secrecy). Either side may
//! answer `Reject(reason)` instead of its next message; the side that detects
//! a problem names it in its own error, the other reports "the peer refused
//! the handshake: <reason>". A refusal sent before the peer is authenticated
//! is plaintext, and can only make a handshake fail, which an attacker on the
//! path can do anyway.

use std::fmt;

use serde::{Deserialize, Serialize};
use snow::HandshakeState;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::config::{ClusterConfig, Digest};
use crate::crypto::{self, Opener, Sealer, NOISE_PARAMS, PROLOGUE};
use crate::frame::{put_plain_frame, read_frame, FrameError};
use crate::keys::{PrivateKey, PublicKey};
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
    VersionMismatch {
        version: u16,
    },
    ClusterName,
    WrongLeader {
        expected: u8,
    },
    UnknownVariant {
        id: u8,
    },
    DuplicateVariant {
        id: u8,
    },
    /// The leader could not open the first message: sent to another key.
    NotLeaderKey,
    /// The follower could not open the second message: no proof of the leader's key.
    LeaderNotProven,
    /// The leader could not open the third message.
    FollowerNotProven,
    /// The follower's static key is not the one listed for its id.
    KeyNotListed {
        id: u8,
    },
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
            RejectReason::NotLeaderKey => f.write_str(
                "our first message was not for its key: our cluster file lists another public key for the leader",
            ),
            RejectReason::LeaderNotProven => {
                f.write_str("we did not prove the leader's key that its cluster file lists")
            }
            RejectReason::FollowerNotProven => {
                f.write_str("our last handshake message did not verify (or was tampered with)")
            }
            RejectReason::KeyNotListed { id } => {
                write!(f, "our key is not the one its cluster file lists for variant {id}")
            }
            RejectReason::PolicyDigest => f.write_str("different policy digest"),
            RejectReason::ImageDigest => f.write_str("different image digest"),
            RejectReason::ProgramDigest => f.write_str("different program digest"),
            RejectReason::Malformed => f.write_str("malformed handshake message"),
        }
    }
}

/// Whose key a refused peer presented.
fn owner_text(owner: &Option<u8>) -> String {
    match owner {
        Some(v) => format!("variant {v}'s"),
        None => "not listed in our cluster file".to_string(),
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
    #[error("the peer's first message is not for our key: its cluster file lists another public key for the leader (or the message was tampered with)")]
    NotLeaderKey,
    #[error("the peer did not prove the leader's key that our cluster file lists: an impostor, a wrong public key for the leader, or a tampered handshake")]
    LeaderNotProven,
    #[error("the peer did not prove the key it presented: its last handshake message did not verify (tampered with, or replayed from another session)")]
    FollowerNotProven,
    #[error("the peer claims to be variant {id}, but its key is {}: only the key listed for variant {id} may join as variant {id}", owner_text(.owner))]
    KeyNotListed { id: u8, owner: Option<u8> },
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
    #[error("cannot set up the Noise handshake: {0}")]
    Noise(String),
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
            HandshakeError::NotLeaderKey => RejectReason::NotLeaderKey,
            HandshakeError::LeaderNotProven => RejectReason::LeaderNotProven,
            HandshakeError::FollowerNotProven => RejectReason::FollowerNotProven,
            HandshakeError::KeyNotListed { id, .. } => RejectReason::KeyNotListed { id: *id },
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

    fn is_digest_mismatch(&self) -> bool {
        matches!(
            self,
            HandshakeError::PolicyDigest { .. }
                | HandshakeError::ImageDigest { .. }
                | HandshakeError::ProgramDigest { .. }
        )
    }
}

/// Message 1's payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Hello {
    cluster: String,
    follower_id: u8,
    leader_id: u8,
    info: HandshakeInfo,
}

/// Message 2's payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Welcome {
    leader_id: u8,
    info: HandshakeInfo,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Verdict {
    Agree,
    Disagree(RejectReason),
}

/// The leader's last word, sealed.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Answer {
    Accept,
    Reject(RejectReason),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum HandshakeMsg {
    /// A Noise handshake message.
    Noise(Vec<u8>),
    /// A refusal, before the peer was authenticated.
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

/// Whether `payload` decodes as a handshake message (for `fuzz_entry`).
pub(crate) fn fuzz_decode(payload: &[u8]) -> bool {
    decode(payload).is_ok()
}

/// Decodes a payload (of a Noise message or of the sealed answer) in full.
fn decode_payload<'a, T: Deserialize<'a>>(bytes: &'a [u8], what: &str) -> Result<T, HandshakeError> {
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((v, [])) => Ok(v),
        Ok((_, rest)) => Err(HandshakeError::Malformed(format!("{what}: {} trailing bytes", rest.len()))),
        Err(e) => Err(HandshakeError::Malformed(format!("{what}: {e}"))),
    }
}

async fn send<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> Result<(), HandshakeError> {
    w.write_all(bytes).await.map_err(|e| HandshakeError::Send(e.to_string()))?;
    w.flush().await.map_err(|e| HandshakeError::Send(e.to_string()))
}

async fn send_msg<W: AsyncWrite + Unpin>(w: &mut W, msg: &HandshakeMsg) -> Result<(), HandshakeError> {
    let payload = encode(msg);
    let mut out = Vec::with_capacity(payload.len() + 2);
    put_plain_frame(&mut out, &payload);
    send(w, &out).await
}

async fn recv<R: AsyncRead + Unpin>(r: &mut R) -> Result<Vec<u8>, HandshakeError> {
    let mut buf = Vec::new();
    read_frame(r, &mut buf, MAX_HANDSHAKE_FRAME).await?;
    Ok(buf)
}

/// Receives the peer's next Noise message; a refusal is an error.
async fn recv_noise<R: AsyncRead + Unpin>(r: &mut R) -> Result<Vec<u8>, HandshakeError> {
    match decode(&recv(r).await?)? {
        HandshakeMsg::Noise(m) => Ok(m),
        HandshakeMsg::Reject(reason) => Err(HandshakeError::Rejected(reason)),
    }
}

/// Tells the peer why we refuse, best effort (it may be gone already):
/// sealed once the session keys exist, else in plaintext.
async fn refuse<S: AsyncWrite + Unpin>(s: &mut S, err: &HandshakeError, sealer: Option<&mut Sealer>) {
    let Some(reason) = err.reject_reason() else {
        return;
    };
    match sealer {
        Some(sealer) => {
            let mut out = Vec::new();
            let plain = postcard::to_allocvec(&Answer::Reject(reason)).unwrap_or_default();
            if sealer.seal_into(&plain, &mut out).is_ok() {
                let _ = send(s, &out).await;
            }
        }
        None => {
            let _ = send_msg(s, &HandshakeMsg::Reject(reason)).await;
        }
    }
}

fn noise(e: snow::Error) -> HandshakeError {
    HandshakeError::Noise(e.to_string())
}

fn builder(key: &PrivateKey) -> Result<snow::Builder<'_>, HandshakeError> {
    let params = NOISE_PARAMS.parse().map_err(noise)?;
    snow::Builder::new(params).prologue(PROLOGUE).map_err(noise)?.local_private_key(key.as_bytes()).map_err(noise)
}

/// Writes the next Noise message of `hs` with `payload`.
fn noise_message<T: Serialize>(hs: &mut HandshakeState, payload: &T) -> Result<HandshakeMsg, HandshakeError> {
    let plain = postcard::to_allocvec(payload).unwrap_or_default();
    let mut out = vec![0u8; MAX_HANDSHAKE_FRAME];
    let n = hs.write_message(&plain, &mut out).map_err(noise)?;
    out.truncate(n);
    Ok(HandshakeMsg::Noise(out))
}

/// Reads a Noise message into its payload; `err` if it does not verify.
fn open_noise(hs: &mut HandshakeState, msg: &[u8], err: HandshakeError) -> Result<Vec<u8>, HandshakeError> {
    let mut payload = vec![0u8; MAX_HANDSHAKE_FRAME];
    let n = hs.read_message(msg, &mut payload).map_err(|_| err)?;
    payload.truncate(n);
    Ok(payload)
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
    /// Whether the peer had proved the key listed for the id it claims (a
    /// misconfigured member rather than a stranger).
    pub authenticated: bool,
    pub error: HandshakeError,
}

/// What the leader learned of a peer so far.
#[derive(Default)]
struct PeerState {
    claimed: Option<u8>,
    authenticated: bool,
    /// The session's sealer, once the Noise handshake finished.
    sealer: Option<Sealer>,
}

/// Runs the leader's side on one accepted connection; `key` is the leader's
/// private key. `claim(id)` is called once the follower is authenticated and
/// its digests agree; it returns false if that id is already taken.
pub async fn server<S, F>(
    s: &mut S,
    cfg: &ClusterConfig,
    key: &PrivateKey,
    info: &HandshakeInfo,
    claim: F,
) -> Result<(u8, Session), ServerFailure>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce(u8) -> bool,
{
    let mut peer = PeerState::default();
    match server_inner(s, cfg, key, info, claim, &mut peer).await {
        Ok(ok) => Ok(ok),
        Err(error) => {
            refuse(s, &error, peer.sealer.as_mut()).await;
            Err(ServerFailure { claimed: peer.claimed, authenticated: peer.authenticated, error })
        }
    }
}

async fn server_inner<S, F>(
    s: &mut S,
    cfg: &ClusterConfig,
    key: &PrivateKey,
    info: &HandshakeInfo,
    claim: F,
    peer: &mut PeerState,
) -> Result<(u8, Session), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce(u8) -> bool,
{
    let leader_id = cfg.leader().id;
    let mut hs = builder(key)?.build_responder().map_err(noise)?;
    let m1 = recv_noise(s).await?;
    let hello: Hello = decode_payload(&open_noise(&mut hs, &m1, HandshakeError::NotLeaderKey)?, "hello")?;
    peer.claimed = Some(hello.follower_id);
    if hello.cluster != cfg.name {
        return Err(HandshakeError::ClusterName { ours: cfg.name.clone(), theirs: hello.cluster });
    }
    if hello.leader_id != leader_id {
        return Err(HandshakeError::WrongLeader { expected: leader_id, got: hello.leader_id });
    }
    let Some(listed) = cfg.followers().find(|v| v.id == hello.follower_id).map(|v| v.public_key) else {
        return Err(HandshakeError::UnknownVariant { id: hello.follower_id });
    };
    let m2 = noise_message(&mut hs, &Welcome { leader_id, info: *info })?;
    send_msg(s, &m2).await?;

    let m3 = recv_noise(s).await?;
    let finish = open_noise(&mut hs, &m3, HandshakeError::FollowerNotProven)?;
    let presented = hs.get_remote_static().and_then(|k| <[u8; 32]>::try_from(k).ok()).map(PublicKey::from_bytes);
    let (sealer, opener) = crypto::transport(hs).map_err(noise)?;
    peer.sealer = Some(sealer);
    if presented != Some(listed) {
        let owner = cfg.variants.iter().find(|v| Some(v.public_key) == presented).map(|v| v.id);
        return Err(HandshakeError::KeyNotListed { id: hello.follower_id, owner });
    }
    let verdict: Verdict = decode_payload(&finish, "finish")?;
    peer.authenticated = true;
    compare(info, &hello.info)?;
    if let Verdict::Disagree(reason) = verdict {
        return Err(HandshakeError::Rejected(reason));
    }
    if !claim(hello.follower_id) {
        return Err(HandshakeError::DuplicateVariant { id: hello.follower_id });
    }
    let Some(mut sealer) = peer.sealer.take() else {
        return Err(HandshakeError::Noise("the session keys are missing".into()));
    };
    let mut out = Vec::new();
    let accept = postcard::to_allocvec(&Answer::Accept).unwrap_or_default();
    sealer.seal_into(&accept, &mut out).map_err(|e| HandshakeError::Send(e.to_string()))?;
    send(s, &out).await?;
    Ok((hello.follower_id, Session { sealer, opener }))
}

/// Runs a follower's side on a connection to the leader; `key` is this
/// follower's private key.
pub async fn client<S>(
    s: &mut S,
    cfg: &ClusterConfig,
    my_id: u8,
    key: &PrivateKey,
    info: &HandshakeInfo,
) -> Result<Session, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match client_inner(s, cfg, my_id, key, info).await {
        Ok(session) => Ok(session),
        Err(e) => {
            // A digest mismatch was already sent, authenticated, in the verdict;
            // a refusal by the leader needs no answer.
            if !e.is_digest_mismatch() && !matches!(e, HandshakeError::Rejected(_)) {
                refuse(s, &e, None).await;
            }
            Err(e)
        }
    }
}

async fn client_inner<S>(
    s: &mut S,
    cfg: &ClusterConfig,
    my_id: u8,
    key: &PrivateKey,
    info: &HandshakeInfo,
) -> Result<Session, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let leader = cfg.leader();
    let mut hs = builder(key)?
        .remote_public_key(leader.public_key.as_bytes())
        .map_err(noise)?
        .build_initiator()
        .map_err(noise)?;
    let hello = Hello { cluster: cfg.name.clone(), follower_id: my_id, leader_id: leader.id, info: *info };
    send_msg(s, &noise_message(&mut hs, &hello)?).await?;

    let m2 = recv_noise(s).await?;
    let welcome: Welcome = decode_payload(&open_noise(&mut hs, &m2, HandshakeError::LeaderNotProven)?, "welcome")?;
    if welcome.leader_id != leader.id {
        return Err(HandshakeError::WrongLeader { expected: leader.id, got: welcome.leader_id });
    }
    let mismatch = compare(info, &welcome.info).err();
    let verdict = match mismatch.as_ref().and_then(|e| e.reject_reason()) {
        Some(reason) => Verdict::Disagree(reason),
        None => Verdict::Agree,
    };
    send_msg(s, &noise_message(&mut hs, &verdict)?).await?;
    if let Some(e) = mismatch {
        return Err(e);
    }
    let (sealer, mut opener) = crypto::transport(hs).map_err(noise)?;
    let last = recv(s).await?;
    // The leader refuses in plaintext if it could not authenticate us.
    if let Ok(HandshakeMsg::Reject(reason)) = decode(&last) {
        return Err(HandshakeError::Rejected(reason));
    }
    let mut plain = Vec::new();
    match opener.open_chunk(&last, &mut plain) {
        Ok(true) => {}
        _ => return Err(HandshakeError::Malformed("the leader's answer did not open as a sealed message".into())),
    }
    match decode_payload(&plain, "answer")? {
        Answer::Accept => Ok(Session { sealer, opener }),
        Answer::Reject(reason) => Err(HandshakeError::Rejected(reason)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_bytes_from_a_stranger_decode_to_a_message_or_an_error() {
        let mut x = 0x243f_6a88_85a3_08d3u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let valid = encode(&HandshakeMsg::Noise(vec![7; 80]));
        for i in 0..100_000 {
            let mut b = if i % 2 == 0 { valid.clone() } else { encode(&HandshakeMsg::Reject(RejectReason::Malformed)) };
            match next() % 3 {
                0 => b.truncate((next() as usize) % (b.len() + 1)),
                1 => b.extend((0..next() % 64).map(|_| next() as u8)),
                _ => {
                    let at = (next() as usize) % b.len();
                    b[at] ^= 1 << (next() % 8);
                }
            }
            let _ = decode(&b);
            let _ = decode_payload::<Hello>(&b, "fuzz");
            let _ = decode_payload::<Welcome>(&b, "fuzz");
            let _ = decode_payload::<Answer>(&b, "fuzz");
        }
        assert!(decode(&valid).is_ok());
    }
}
