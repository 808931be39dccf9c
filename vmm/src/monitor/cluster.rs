//! How a VMM joins its cluster: the cluster configuration (a file, or a
//! descriptor the `--variants` launcher passes) and this variant's private
//! key (a file named by `--private-key` or by the variant's
//! `private_key_file`, or a descriptor), read and checked before the guest
//! exists. `dmvx-vmm keygen` writes key pairs.

use std::fs::File;
use std::io::Read;
use std::os::fd::{FromRawFd, RawFd};
use std::path::{Path, PathBuf};

use dmvx_sync::{ClusterConfig, ConfigError, KeyError, PrivateKey, PublicKey};

use crate::cli::VariantRef;

/// A cluster configuration from a descriptor is refused above this size.
const MAX_CLUSTER_TEXT: u64 = 1 << 20;

/// Why this VMM cannot join its cluster.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("cluster file {origin}: {source}")]
    Config { origin: String, source: ConfigError },
    #[error("--{option} {fd}: {reason}")]
    Fd { option: &'static str, fd: RawFd, reason: String },
    #[error("{0}")]
    Key(#[from] KeyError),
    #[error("variant {0} has no private key: give --private-key FILE, or private_key_file in its [[variant]] entry (`dmvx-vmm keygen FILE` writes a key pair)")]
    NoKey(u8),
}

/// Where the configuration and the private key come from.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sources<'a> {
    pub file: Option<&'a Path>,
    pub fd: Option<RawFd>,
    pub key_file: Option<&'a Path>,
    pub key_fd: Option<RawFd>,
}

/// A member of a cluster: the configuration, its own private key and id.
pub struct Member {
    pub cfg: ClusterConfig,
    pub key: PrivateKey,
    pub id: u8,
}

/// Reads the cluster configuration and the private key of `variant` (an
/// id, or a name the configuration gives); `None` if no cluster is given.
/// A private key that is not the half of the variant's listed public key is
/// refused later, by the link, naming both.
pub fn load(src: Sources<'_>, variant: &VariantRef) -> Result<Option<Member>, JoinError> {
    let cfg = match (src.file, src.fd) {
        (Some(path), _) => ClusterConfig::load(path)
            .map_err(|source| JoinError::Config { origin: path.display().to_string(), source })?,
        (None, Some(fd)) => {
            let mut text = String::new();
            let file = take_fd(fd, "cluster-fd")?;
            let bad = |reason: String| JoinError::Fd { option: "cluster-fd", fd, reason };
            file.take(MAX_CLUSTER_TEXT + 1).read_to_string(&mut text).map_err(|e| bad(e.to_string()))?;
            if text.len() as u64 > MAX_CLUSTER_TEXT {
                return Err(bad(format!("more than {MAX_CLUSTER_TEXT} bytes: not a cluster configuration")));
            }
            let base = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
            ClusterConfig::parse(&text, &base)
                .map_err(|source| JoinError::Config { origin: format!("from descriptor {fd}"), source })?
        }
        (None, None) => return Ok(None),
    };
    let origin =
        || src.file.map_or_else(|| format!("from descriptor {}", src.fd.unwrap_or(-1)), |p| p.display().to_string());
    let id = match variant {
        // Ids the file does not list are refused by the link, which says so.
        VariantRef::Id(id) => u8::try_from(*id).map_err(|_| ConfigError::IdOutOfRange(*id)),
        VariantRef::Name(name) => cfg.variant_named(name).map(|v| v.id),
    }
    .map_err(|source| JoinError::Config { origin: origin(), source })?;
    log::debug!("cluster {:?} ({}): this is variant {id} of {}", cfg.name, origin(), cfg.variants.len());
    let key = match (src.key_fd, src.key_file) {
        (Some(fd), _) => PrivateKey::read_from(take_fd(fd, "private-key-fd")?, &format!("descriptor {fd}"))?,
        (None, Some(path)) => PrivateKey::load(path)?,
        (None, None) => {
            let listed = cfg.variant(id).ok().and_then(|v| v.private_key_file.clone());
            PrivateKey::load(&listed.ok_or(JoinError::NoKey(id))?)?
        }
    };
    Ok(Some(Member { cfg, key, id }))
}

/// Takes ownership of descriptor `fd`, inherited for `--option`.
fn take_fd(fd: RawFd, option: &'static str) -> Result<File, JoinError> {
    let bad = |reason: String| JoinError::Fd { option, fd, reason };
    if fd < 3 {
        return Err(bad("descriptors 0 to 2 are the program's standard input and output: use 3 or above".into()));
    }
    // SAFETY: F_GETFD reads a descriptor's flags; any number is safe to ask about.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(bad(format!("not an open descriptor: {}", std::io::Error::last_os_error())));
    }
    // SAFETY: `fd` is open (checked above) and was passed to this process
    // for this option alone, so nothing else owns it: the File may own it,
    // and closes it once read.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// `dmvx-vmm keygen FILE`: a fresh key pair in FILE (mode 0600) and
/// FILE.pub; returns the public key.
pub fn keygen(path: &Path, replace: bool) -> Result<PublicKey, KeyError> {
    let key = PrivateKey::generate()?;
    key.write_key_pair(path, replace)?;
    Ok(key.public())
}
