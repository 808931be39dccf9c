//! Static key pairs. Every variant of a cluster has its own X25519 key pair,
//! its Noise static key: the cluster file lists every variant's public key,
//! and each VMM reads its own private key from a file (or a descriptor) that
//! only the user it runs as can read.
//!
//! A private key file (what `dmvx-vmm keygen` writes):
//!
//! ```text
//! # dmvx private key (X25519, the variant's Noise static key): keep it secret
//! # public_key = "<64 hex>"
//! <64 hex>
//! ```
//!
//! Lines starting with `#` and blank lines are ignored; exactly one line of
//! 64 hexadecimal characters must remain. A public key is written as 64
//! hexadecimal characters.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use zeroize::Zeroize;

/// Bytes of a key, private or public.
pub const KEY_LEN: usize = 32;
/// A private key file is refused above this size (it is a few lines of text).
const MAX_KEY_FILE: u64 = 4096;

/// A key that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{origin}: cannot read the private key: {source}")]
    Read { origin: String, source: std::io::Error },
    #[error("{origin}: cannot write the key: {source}")]
    Write { origin: String, source: std::io::Error },
    #[error("{0}: a file exists there already, and a key is not replaced unless asked to (keygen --force)")]
    Exists(String),
    #[error(
        "{origin}: the private key file is owned by uid {owner}, but this VMM runs as uid {euid}: it must be owned by the VMM's user"
    )]
    Owner { origin: String, owner: u32, euid: u32 },
    #[error(
        "{origin}: the private key file has mode {mode:04o}, which lets other users read or change it: it must be readable by its owner alone (chmod 600)"
    )]
    Mode { origin: String, mode: u32 },
    #[error("{origin}: a private key file is a few lines of text, not {len} bytes")]
    TooLong { origin: String, len: u64 },
    #[error("{origin}: {what} is not 64 hexadecimal characters (32 bytes): {reason}")]
    BadHex { origin: String, what: &'static str, reason: String },
    #[error("{origin}: no key found (expected one line of 64 hexadecimal characters)")]
    Empty { origin: String },
    #[error("{origin}: more than one key line")]
    SeveralKeys { origin: String },
    #[error("{origin}: {key} is a public key of low order (no Diffie-Hellman contribution): not a usable key")]
    LowOrder { origin: String, key: PublicKey },
    #[error("cannot get random bytes from the operating system: {0}")]
    Random(String),
}

/// An X25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; KEY_LEN]);

impl PublicKey {
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        PublicKey(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Parses 64 hexadecimal characters (surrounding whitespace ignored);
    /// `origin` says where the text came from, for errors. Keys of low order,
    /// which would make every Diffie-Hellman result with them known, are refused.
    pub fn parse_hex(text: &str, origin: &str) -> Result<Self, KeyError> {
        let key = PublicKey(parse_hex(text, origin, "the public key")?);
        if key.is_low_order() {
            return Err(KeyError::LowOrder { origin: origin.to_string(), key });
        }
        Ok(key)
    }

    /// The key as 64 lowercase hexadecimal characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Whether this point has a small order: X25519 with any (clamped, so
    /// a multiple of the cofactor) scalar then gives the all-zero result.
    fn is_low_order(&self) -> bool {
        x25519_dalek::x25519([0x5a; KEY_LEN], self.0) == [0; KEY_LEN]
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_hex())
    }
}

/// An X25519 private key. Its `Debug` output is redacted and it is wiped
/// from memory when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct PrivateKey([u8; KEY_LEN]);

impl PrivateKey {
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        PrivateKey(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// A fresh key from the operating system's generator.
    pub fn generate() -> Result<Self, KeyError> {
        let mut key = [0u8; KEY_LEN];
        getrandom::fill(&mut key).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(PrivateKey(key))
    }

    /// The matching public key (X25519 of the clamped key and the base point,
    /// as Noise's DH functions compute it).
    pub fn public(&self) -> PublicKey {
        PublicKey(x25519_dalek::x25519(self.0, x25519_dalek::X25519_BASEPOINT_BYTES))
    }

    /// Reads a private key file, refusing one that anybody but the VMM's
    /// user owns or may read or write.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let origin = path.display().to_string();
        let file = File::open(path).map_err(|source| KeyError::Read { origin: origin.clone(), source })?;
        Self::read_from(file, &origin)
    }

    /// Reads a private key from an open file or descriptor (a pipe from the
    /// launcher, say), with the same checks as [`PrivateKey::load`], made on
    /// what was opened.
    pub fn read_from(file: File, origin: &str) -> Result<Self, KeyError> {
        let read_err = |source| KeyError::Read { origin: origin.to_string(), source };
        let meta = file.metadata().map_err(read_err)?;
        let euid = effective_uid();
        if meta.uid() != euid {
            return Err(KeyError::Owner { origin: origin.to_string(), owner: meta.uid(), euid });
        }
        if meta.mode() & 0o077 != 0 {
            return Err(KeyError::Mode { origin: origin.to_string(), mode: meta.mode() & 0o7777 });
        }
        if meta.is_file() && meta.len() > MAX_KEY_FILE {
            return Err(KeyError::TooLong { origin: origin.to_string(), len: meta.len() });
        }
        let mut text = String::new();
        let got = file.take(MAX_KEY_FILE + 1).read_to_string(&mut text);
        let key = match got {
            Err(source) => Err(KeyError::Read { origin: origin.to_string(), source }),
            Ok(n) if n as u64 > MAX_KEY_FILE => Err(KeyError::TooLong { origin: origin.to_string(), len: n as u64 }),
            Ok(_) => Self::parse_file_text(&text, origin),
        };
        text.zeroize();
        key
    }

    /// Parses the text of a private key file.
    pub fn parse_file_text(text: &str, origin: &str) -> Result<Self, KeyError> {
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#'));
        let line = lines.next().ok_or_else(|| KeyError::Empty { origin: origin.to_string() })?;
        if lines.next().is_some() {
            return Err(KeyError::SeveralKeys { origin: origin.to_string() });
        }
        Ok(PrivateKey(parse_hex(line, origin, "the private key")?))
    }

    /// Writes its key file at `path`, readable and writable by its owner
    /// alone, and the public key to `path` + `.pub`. An existing key file is
    /// replaced only with `replace`; a key is never written through a symlink.
    pub fn write_key_pair(&self, path: &Path, replace: bool) -> Result<(), KeyError> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let origin = path.display().to_string();
        let write_err = |source| KeyError::Write { origin: origin.clone(), source };
        if replace {
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(write_err(e)),
                _ => {}
            }
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => KeyError::Exists(origin.clone()),
                _ => write_err(e),
            })?;
        // The umask may only have taken bits away; be exact.
        f.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(write_err)?;
        self.write_file_text(&mut f).and_then(|_| f.sync_all()).map_err(write_err)?;
        let mut public = path.as_os_str().to_owned();
        public.push(".pub");
        std::fs::write(&public, format!("{}\n", self.public()))
            .map_err(|source| KeyError::Write { origin: Path::new(&public).display().to_string(), source })
    }

    /// Writes the text of its private key file to `w` (wiping the copy it made).
    pub fn write_file_text(&self, w: &mut impl std::io::Write) -> std::io::Result<()> {
        let mut text = self.file_text();
        let written = w.write_all(text.as_bytes());
        text.zeroize();
        written
    }

    /// The text of its private key file.
    pub fn file_text(&self) -> String {
        format!(
            "# dmvx private key (X25519, the variant's Noise static key): keep it secret\n\
             # public_key = \"{}\"\n{}\n",
            self.public(),
            hex::encode(self.0)
        )
    }
}

impl Drop for PrivateKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

fn parse_hex(text: &str, origin: &str, what: &'static str) -> Result<[u8; KEY_LEN], KeyError> {
    let text = text.trim();
    let bad = |reason: String| KeyError::BadHex { origin: origin.to_string(), what, reason };
    if text.len() != 2 * KEY_LEN {
        return Err(bad(format!("it has {} characters", text.len())));
    }
    let mut key = [0u8; KEY_LEN];
    hex::decode_to_slice(text, &mut key).map_err(|e| bad(e.to_string()))?;
    Ok(key)
}

/// The user this process acts as for file access.
#[allow(unsafe_code)]
pub(crate) fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions, cannot fail and touches no memory of ours.
    unsafe { libc::geteuid() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_keys_match_noise_and_file_text_round_trips() {
        // Noise's own key generation derives the same public key.
        let kp = snow::Builder::new(crate::crypto::NOISE_PARAMS.parse().unwrap()).generate_keypair().unwrap();
        let k = PrivateKey::from_bytes(kp.private.as_slice().try_into().unwrap());
        assert_eq!(k.public().as_bytes().as_slice(), kp.public.as_slice());
        let k = PrivateKey::generate().unwrap();
        let text = k.file_text();
        assert!(text.contains(&k.public().to_hex()));
        let back = PrivateKey::parse_file_text(&text, "t").unwrap();
        assert_eq!(back, k);
        assert_eq!(PublicKey::parse_hex(&k.public().to_hex(), "t").unwrap(), k.public());
        assert!(!format!("{k:?}").contains(&hex::encode(k.as_bytes())[..8]));
    }

    #[test]
    fn bad_key_text_is_refused_naming_why() {
        let e = PrivateKey::parse_file_text("# only comments\n\n", "f").unwrap_err().to_string();
        assert!(e.contains("no key found"), "{e}");
        let e = PrivateKey::parse_file_text("abcd\n", "f").unwrap_err().to_string();
        assert!(e.contains("has 4 characters"), "{e}");
        let two = format!("{}\n{}\n", "11".repeat(32), "22".repeat(32));
        assert!(matches!(PrivateKey::parse_file_text(&two, "f"), Err(KeyError::SeveralKeys { .. })));
        let e = PublicKey::parse_hex(&"zz".repeat(32), "here").unwrap_err().to_string();
        assert!(e.starts_with("here: the public key is not 64 hexadecimal"), "{e}");
        for low in [[0u8; 32], {
            let mut one = [0u8; 32];
            one[0] = 1;
            one
        }] {
            assert!(matches!(PublicKey::parse_hex(&hex::encode(low), "f"), Err(KeyError::LowOrder { .. })));
        }
    }
}
