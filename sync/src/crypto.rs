//! The Noise protocol and its transport messages.
//!
//! The link runs `Noise_XK_25519_ChaChaPoly_SHA256` (the `snow` crate): the
//! follower initiates and knows the leader's static key from the cluster
//! file; it sends its own static key, encrypted, in the third message
//! ([`crate::handshake`]). After the handshake each direction has its own
//! key and a 64-bit nonce counter, starting at 0 and never sent.
//!
//! A Noise transport message holds at most 65535 bytes, so one message of
//! the link is sent as one or more *chunks*, each a Noise transport message
//! framed by a 2-byte big-endian length:
//!
//! ```text
//! chunk = len: u16 BE || Noise transport message (ciphertext || 16-byte tag)
//!         plaintext of a chunk = data (up to 65518 bytes) || flag (1 byte)
//!         flag: 0 = more chunks of this message follow, 1 = last chunk
//! ```
//!
//! The flag is inside the authenticated plaintext, so message boundaries
//! cannot be moved: splitting a message, joining two, or cutting one after a
//! whole chunk fails as surely as a flipped bit. A modified, forged,
//! replayed, reordered, dropped or injected chunk fails to open (its nonce
//! is the next counter value, or the tag does not verify).

use std::sync::Arc;

use snow::{HandshakeState, StatelessTransportState};

use crate::wire::TAG_LEN;

/// The Noise protocol name.
pub const NOISE_PARAMS: &str = "Noise_XK_25519_ChaChaPoly_SHA256";
/// Mixed into the handshake hash: both sides must speak this protocol version.
pub const PROLOGUE: &[u8] = b"dmvx link, protocol version 3";
/// Largest Noise message.
pub const MAX_NOISE_MESSAGE: usize = 65535;
/// Bytes of the chunk length prefix.
pub const CHUNK_HEADER: usize = 2;
/// Most bytes of a message one chunk carries.
pub const CHUNK_DATA: usize = MAX_NOISE_MESSAGE - TAG_LEN - 1;
/// Smallest valid chunk: an empty last piece, its flag and the tag.
pub const MIN_CHUNK: usize = TAG_LEN + 1;

const MORE: u8 = 0;
const LAST: u8 = 1;

/// A message could not be sealed or opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("a frame failed authentication: tampered with, replayed, reordered or forged")]
    Auth,
    #[error("frame too short to hold an authentication tag")]
    Short,
    #[error("an authenticated chunk carries an unknown flag {0}")]
    BadFlag(u8),
    #[error("the nonce counter is exhausted; the link must be re-established")]
    Exhausted,
}

/// The two ends of a finished handshake: (sealer, opener).
pub fn transport(hs: HandshakeState) -> Result<(Sealer, Opener), snow::Error> {
    let state = Arc::new(hs.into_stateless_transport_mode()?);
    Ok((Sealer { state: state.clone(), counter: 0, scratch: Vec::new() }, Opener { state, counter: 0 }))
}

/// Seals messages for the sending direction.
pub struct Sealer {
    state: Arc<StatelessTransportState>,
    counter: u64,
    /// One chunk's plaintext (data and flag); kept to avoid allocating.
    scratch: Vec<u8>,
}

impl Sealer {
    /// Appends the chunks carrying `plain` to `out`. On failure `out` is as it was.
    pub fn seal_into(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<(), CryptoError> {
        let start = out.len();
        let result = self.seal_chunks(plain, out);
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    fn seal_chunks(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<(), CryptoError> {
        let mut rest = plain;
        loop {
            let (data, tail) = rest.split_at(rest.len().min(CHUNK_DATA));
            let flag = if tail.is_empty() { LAST } else { MORE };
            self.scratch.clear();
            self.scratch.extend_from_slice(data);
            self.scratch.push(flag);
            let len = self.scratch.len() + TAG_LEN;
            // len <= MAX_NOISE_MESSAGE, which fits in 16 bits.
            out.extend_from_slice(&(len as u16).to_be_bytes());
            let at = out.len();
            out.resize(at + len, 0);
            if self.counter == u64::MAX {
                return Err(CryptoError::Exhausted);
            }
            let dst = out.get_mut(at..).unwrap_or_default();
            self.state.write_message(self.counter, &self.scratch, dst).map_err(|_| CryptoError::Exhausted)?;
            self.counter += 1;
            if flag == LAST {
                return Ok(());
            }
            rest = tail;
        }
    }
}

/// Opens the chunks of the receiving direction, in order.
pub struct Opener {
    state: Arc<StatelessTransportState>,
    counter: u64,
}

impl Opener {
    /// Opens one chunk (its Noise message, without the length prefix) and
    /// appends its data to `plain`; returns whether it ends its message.
    /// On failure `plain` is as it was.
    pub fn open_chunk(&mut self, chunk: &[u8], plain: &mut Vec<u8>) -> Result<bool, CryptoError> {
        if chunk.len() < MIN_CHUNK {
            return Err(CryptoError::Short);
        }
        if self.counter == u64::MAX {
            return Err(CryptoError::Exhausted);
        }
        let at = plain.len();
        plain.resize(at + chunk.len() - TAG_LEN, 0);
        let dst = plain.get_mut(at..).unwrap_or_default();
        if self.state.read_message(self.counter, chunk, dst).is_err() {
            plain.truncate(at);
            return Err(CryptoError::Auth);
        }
        self.counter += 1;
        match plain.pop() {
            Some(LAST) => Ok(true),
            Some(MORE) => Ok(false),
            other => {
                plain.truncate(at);
                Err(CryptoError::BadFlag(other.unwrap_or(0)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::PrivateKey;

    /// A finished XK handshake in memory: (initiator's, responder's) ends.
    fn pair() -> ((Sealer, Opener), (Sealer, Opener)) {
        let (si, sr) = (PrivateKey::generate().unwrap(), PrivateKey::generate().unwrap());
        let b = || snow::Builder::new(NOISE_PARAMS.parse().unwrap()).prologue(PROLOGUE).unwrap();
        let leader = sr.public();
        let i = b().local_private_key(si.as_bytes()).unwrap();
        let mut i = i.remote_public_key(leader.as_bytes()).unwrap().build_initiator().unwrap();
        let mut r = b().local_private_key(sr.as_bytes()).unwrap().build_responder().unwrap();
        let (mut m, mut p) = ([0u8; 1024], [0u8; 1024]);
        for turn in 0..3 {
            let (from, to) = if turn == 1 { (&mut r, &mut i) } else { (&mut i, &mut r) };
            let n = from.write_message(&[], &mut m).unwrap();
            to.read_message(&m[..n], &mut p).unwrap();
        }
        (transport(i).unwrap(), transport(r).unwrap())
    }

    /// Splits sealed bytes into chunks (without their length prefixes).
    fn chunks(mut bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let len = u16::from_be_bytes([bytes[0], bytes[1]]) as usize;
            out.push(bytes[2..2 + len].to_vec());
            bytes = &bytes[2 + len..];
        }
        out
    }

    fn open_all(o: &mut Opener, chunks: &[Vec<u8>]) -> Result<Vec<u8>, CryptoError> {
        let mut plain = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            let last = o.open_chunk(c, &mut plain)?;
            assert_eq!(last, i + 1 == chunks.len(), "chunk {i}");
        }
        Ok(plain)
    }

    #[test]
    fn messages_of_every_size_round_trip_in_chunks() {
        let ((mut seal, _), (_, mut open)) = pair();
        for len in [0, 1, CHUNK_DATA - 1, CHUNK_DATA, CHUNK_DATA + 1, 3 * CHUNK_DATA + 7] {
            let msg: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let mut out = Vec::new();
            seal.seal_into(&msg, &mut out).unwrap();
            let cs = chunks(&out);
            assert_eq!(cs.len(), len.div_ceil(CHUNK_DATA).max(1), "len {len}");
            assert!(cs.iter().all(|c| c.len() <= MAX_NOISE_MESSAGE));
            assert_eq!(open_all(&mut open, &cs).unwrap(), msg, "len {len}");
        }
    }

    #[test]
    fn replay_reorder_tamper_and_moved_boundaries_fail() {
        let ((mut seal, _), (_, mut open)) = pair();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        seal.seal_into(b"first", &mut a).unwrap();
        seal.seal_into(&vec![9u8; CHUNK_DATA + 10], &mut b).unwrap();
        let (a, b) = (chunks(&a), chunks(&b));
        let mut plain = Vec::new();
        // Reordered.
        assert_eq!(open.open_chunk(&b[0], &mut plain), Err(CryptoError::Auth));
        assert!(plain.is_empty());
        assert_eq!(open_all(&mut open, &a).unwrap(), b"first");
        // Replayed.
        assert_eq!(open.open_chunk(&a[0], &mut plain), Err(CryptoError::Auth));
        // Flipped bits anywhere.
        for i in 0..b[1].len() {
            let mut t = b[1].clone();
            t[i] ^= 0x20;
            let mut o = Opener { state: open.state.clone(), counter: open.counter + 1 };
            assert_eq!(o.open_chunk(&t, &mut plain), Err(CryptoError::Auth), "flip at {i}");
        }
        // The first chunk of a two-chunk message does not end it: a message
        // cut after it is incomplete, whatever its length prefix says.
        assert_eq!(open.open_chunk(&b[0], &mut plain), Ok(false));
        assert_eq!(open.open_chunk(&b[1], &mut plain), Ok(true));
        assert_eq!(plain.len(), CHUNK_DATA + 10);
        // Our own direction's messages do not open with the other key.
        let ((_, mut mine), _) = pair();
        assert_eq!(mine.open_chunk(&a[0], &mut plain), Err(CryptoError::Auth));
        assert_eq!(open.open_chunk(&[0; MIN_CHUNK - 1], &mut plain), Err(CryptoError::Short));
    }
}
