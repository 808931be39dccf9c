//! Key schedule, handshake proofs and sealed frames.
//!
//! * transcript hash `th = SHA-256("dmvx/2 transcript" || len32(hello_f) ||
//!   hello_f || len32(hello_l) || hello_l)` over the exact bytes of the
//!   follower's hello frame payload and of the leader's hello core.
//! * `prk = HKDF-Extract(salt = th, ikm = cluster key || dh)`, where `dh` is
//!   the X25519 secret of the two ephemeral shares in the hellos; from it,
//!   with HKDF-Expand and distinct labels, two proof keys and two traffic
//!   keys. The cluster key authenticates, the ephemeral secret makes the
//!   traffic keys unrecoverable from a recording once both sides dropped it.
//! * proofs: `HMAC-SHA256(proof key, th || extra)`.
//! * sealed frame: `len (4 bytes, big-endian) || ChaCha20-Poly1305(key,
//!   nonce = 0u32 || counter u64 big-endian, aad = len, plaintext)`; one key
//!   and one counter per direction, the counter starting at 0 and
//!   incremented per frame, never sent.

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce, Tag};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroize;

use crate::config::ClusterKey;
use crate::frame::LEN_BYTES;
use crate::wire::TAG_LEN;

type HmacSha256 = Hmac<Sha256>;

const LABEL_TRANSCRIPT: &[u8] = b"dmvx/2 transcript";
const LABEL_LEADER_PROOF: &[u8] = b"dmvx/2 leader proof";
const LABEL_FOLLOWER_PROOF: &[u8] = b"dmvx/2 follower proof";
const LABEL_L2F: &[u8] = b"dmvx/2 traffic leader->follower";
const LABEL_F2L: &[u8] = b"dmvx/2 traffic follower->leader";

/// A sealed frame could not be made or opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("a frame failed authentication: tampered with, replayed, reordered or forged")]
    Auth,
    #[error("frame too short to hold an authentication tag")]
    Short,
    #[error("the frame counter is exhausted; the link must be re-established")]
    Exhausted,
}

/// Hash of the handshake so far.
pub fn transcript(hello_f: &[u8], hello_l: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(LABEL_TRANSCRIPT);
    h.update((hello_f.len() as u32).to_be_bytes());
    h.update(hello_f);
    h.update((hello_l.len() as u32).to_be_bytes());
    h.update(hello_l);
    h.finalize().into()
}

/// Keys derived from the cluster key, one handshake's ephemeral secret and
/// its transcript.
pub struct Schedule {
    th: [u8; 32],
    leader_proof: [u8; 32],
    follower_proof: [u8; 32],
    l2f: [u8; 32],
    f2l: [u8; 32],
}

impl Drop for Schedule {
    fn drop(&mut self) {
        self.leader_proof.zeroize();
        self.follower_proof.zeroize();
        self.l2f.zeroize();
        self.f2l.zeroize();
    }
}

impl Schedule {
    pub fn new(key: &ClusterKey, dh: &[u8; 32], th: [u8; 32]) -> Self {
        let mut ikm = [0u8; 64];
        ikm[..32].copy_from_slice(key.as_bytes());
        ikm[32..].copy_from_slice(dh);
        let hk = Hkdf::<Sha256>::new(Some(&th), &ikm);
        ikm.zeroize();
        let expand = |label: &[u8]| {
            let mut out = [0u8; 32];
            // 32 bytes is far below HKDF-SHA256's limit of 255 * 32.
            let _ = hk.expand(label, &mut out);
            out
        };
        Schedule {
            th,
            leader_proof: expand(LABEL_LEADER_PROOF),
            follower_proof: expand(LABEL_FOLLOWER_PROOF),
            l2f: expand(LABEL_L2F),
            f2l: expand(LABEL_F2L),
        }
    }

    fn mac(key: &[u8; 32], th: &[u8; 32], extra: &[u8]) -> HmacSha256 {
        // HMAC accepts keys of any length.
        let mut m = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes any key length");
        m.update(th);
        m.update(extra);
        m
    }

    /// The leader's proof that it knows the key.
    pub fn leader_proof(&self) -> [u8; 32] {
        Self::mac(&self.leader_proof, &self.th, &[]).finalize().into_bytes().into()
    }

    /// Checks the leader's proof in constant time.
    pub fn verify_leader_proof(&self, proof: &[u8; 32]) -> bool {
        Self::mac(&self.leader_proof, &self.th, &[]).verify_slice(proof).is_ok()
    }

    /// The follower's proof, also binding its verdict bytes.
    pub fn follower_proof(&self, verdict: &[u8]) -> [u8; 32] {
        Self::mac(&self.follower_proof, &self.th, verdict).finalize().into_bytes().into()
    }

    pub fn verify_follower_proof(&self, verdict: &[u8], proof: &[u8; 32]) -> bool {
        Self::mac(&self.follower_proof, &self.th, verdict).verify_slice(proof).is_ok()
    }

    /// (sealer, opener) for the leader's end.
    pub fn leader_keys(&self) -> (Sealer, Opener) {
        (Sealer::new(&self.l2f), Opener::new(&self.f2l))
    }

    /// (sealer, opener) for a follower's end.
    pub fn follower_keys(&self) -> (Sealer, Opener) {
        (Sealer::new(&self.f2l), Opener::new(&self.l2f))
    }
}

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::from(n)
}

/// Seals frames for one direction.
pub struct Sealer {
    cipher: ChaCha20Poly1305,
    counter: u64,
}

impl Sealer {
    fn new(key: &[u8; 32]) -> Self {
        Sealer { cipher: ChaCha20Poly1305::new(Key::from_slice(key)), counter: 0 }
    }

    /// Appends one sealed frame carrying `plain` to `out`.
    pub fn seal_into(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<(), CryptoError> {
        if self.counter == u64::MAX {
            return Err(CryptoError::Exhausted);
        }
        let len = u32::try_from(plain.len() + TAG_LEN).map_err(|_| CryptoError::Exhausted)?;
        let header = len.to_be_bytes();
        out.extend_from_slice(&header);
        let start = out.len();
        out.extend_from_slice(plain);
        let tag = self
            .cipher
            .encrypt_in_place_detached(&nonce(self.counter), &header, &mut out[start..])
            .map_err(|_| CryptoError::Exhausted)?;
        out.extend_from_slice(&tag);
        self.counter += 1;
        Ok(())
    }
}

/// Opens frames for one direction, in order.
pub struct Opener {
    cipher: ChaCha20Poly1305,
    counter: u64,
}

impl Opener {
    fn new(key: &[u8; 32]) -> Self {
        Opener { cipher: ChaCha20Poly1305::new(Key::from_slice(key)), counter: 0 }
    }

    /// Decrypts `payload` (ciphertext then tag) in place; returns the length
    /// of the plaintext at its start.
    pub fn open_in_place(&mut self, header: [u8; LEN_BYTES], payload: &mut [u8]) -> Result<usize, CryptoError> {
        if self.counter == u64::MAX {
            return Err(CryptoError::Exhausted);
        }
        let plain_len = payload.len().checked_sub(TAG_LEN).ok_or(CryptoError::Short)?;
        let (body, tag) = payload.split_at_mut(plain_len);
        let tag = Tag::clone_from_slice(tag);
        self.cipher
            .decrypt_in_place_detached(&nonce(self.counter), &header, body, &tag)
            .map_err(|_| CryptoError::Auth)?;
        self.counter += 1;
        Ok(plain_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Schedule, Schedule) {
        let key = ClusterKey::from_bytes([7; 32]);
        let th = transcript(b"hello f", b"hello l");
        (Schedule::new(&key, &[9; 32], th), Schedule::new(&key, &[9; 32], th))
    }

    fn split(frame: &[u8]) -> ([u8; 4], Vec<u8>) {
        let mut h = [0u8; 4];
        h.copy_from_slice(&frame[..4]);
        (h, frame[4..].to_vec())
    }

    #[test]
    fn seal_open_round_trip_and_order() {
        let (l, f) = pair();
        let (mut seal, _) = l.leader_keys();
        let (_, mut open) = f.follower_keys();
        let mut a = Vec::new();
        let mut b = Vec::new();
        seal.seal_into(b"first", &mut a).unwrap();
        seal.seal_into(b"second", &mut b).unwrap();
        // Reordered: the second frame first fails.
        let (hb, mut pb) = split(&b);
        assert_eq!(open.open_in_place(hb, &mut pb), Err(CryptoError::Auth));
        let (ha, mut pa) = split(&a);
        let n = open.open_in_place(ha, &mut pa).unwrap();
        assert_eq!(&pa[..n], b"first");
        // Replayed: the first frame again fails.
        let (ha, mut pa) = split(&a);
        assert_eq!(open.open_in_place(ha, &mut pa), Err(CryptoError::Auth));
        let (hb, mut pb) = split(&b);
        let n = open.open_in_place(hb, &mut pb).unwrap();
        assert_eq!(&pb[..n], b"second");
    }

    #[test]
    fn tampering_fails() {
        let (l, f) = pair();
        let (mut seal, _) = l.leader_keys();
        let mut a = Vec::new();
        seal.seal_into(b"payload", &mut a).unwrap();
        for i in 0..a.len() {
            let (_, mut open) = f.follower_keys();
            let mut t = a.clone();
            t[i] ^= 0x01;
            let (h, mut p) = split(&t);
            assert!(open.open_in_place(h, &mut p).is_err(), "flip at {i}");
        }
        // The other direction's key does not open it.
        let (_, mut wrong) = l.leader_keys();
        let (h, mut p) = split(&a);
        assert_eq!(wrong.open_in_place(h, &mut p), Err(CryptoError::Auth));
    }

    #[test]
    fn proofs_depend_on_key_and_transcript() {
        let (l, f) = pair();
        assert!(f.verify_leader_proof(&l.leader_proof()));
        assert!(l.verify_follower_proof(b"ok", &f.follower_proof(b"ok")));
        assert!(!l.verify_follower_proof(b"no", &f.follower_proof(b"ok")));
        assert_ne!(l.leader_proof(), l.follower_proof(b""));
        let th = transcript(b"hello f", b"hello l");
        let other = Schedule::new(&ClusterKey::from_bytes([8; 32]), &[9; 32], th);
        assert!(!other.verify_leader_proof(&l.leader_proof()));
        let other_th = Schedule::new(&ClusterKey::from_bytes([7; 32]), &[9; 32], transcript(b"hello f", b"hello L"));
        assert!(!other_th.verify_leader_proof(&l.leader_proof()));
    }

    #[test]
    fn traffic_keys_need_the_ephemeral_secret_not_just_the_cluster_key() {
        // Someone who recorded a session and later learns the cluster key
        // has the transcript but not the Diffie-Hellman secret.
        let key = ClusterKey::from_bytes([7; 32]);
        let th = transcript(b"hello f", b"hello l");
        let real = Schedule::new(&key, &[9; 32], th);
        let (mut seal, _) = real.leader_keys();
        let mut frame = Vec::new();
        seal.seal_into(b"a recorded request", &mut frame).unwrap();
        for guess in [[0u8; 32], [8; 32], [9 ^ 1; 32]] {
            let (_, mut open) = Schedule::new(&key, &guess, th).follower_keys();
            let (h, mut p) = split(&frame);
            assert_eq!(open.open_in_place(h, &mut p), Err(CryptoError::Auth));
        }
        // A v1-style derivation from the cluster key alone fails too.
        let hk = Hkdf::<Sha256>::new(Some(&th), key.as_bytes());
        let mut k = [0u8; 32];
        hk.expand(LABEL_L2F, &mut k).unwrap();
        let (h, mut p) = split(&frame);
        assert_eq!(Opener::new(&k).open_in_place(h, &mut p), Err(CryptoError::Auth));
        let (_, mut open) = Schedule::new(&key, &[9; 32], th).follower_keys();
        let (h, mut p) = split(&frame);
        assert!(open.open_in_place(h, &mut p).is_ok());
    }
}
