//! The cluster file: which variants exist, each variant's public key, where
//! the leader listens, timing and batching parameters, the digests every
//! variant must agree on, and the (opaque here) policy table. It holds no
//! secret: each VMM reads its own private key from a file of its own
//! ([`crate::keys`]), named by `private_key_file` in its `[[variant]]` or
//! given to the VMM directly.
//!
//! ```toml
//! [cluster]
//! name = "demo"
//! timeout_ms = 5000          # optional, default 5000
//! batch_bytes = 8192         # optional, default 8192
//! max_lag = 4096             # optional, default 4096
//! [digests]                  # optional; each entry optional
//! image = "sha256:<64 hex>"
//! program = "sha256:<64 hex>"
//! [policy]                   # optional, opaque: interpreted by the policy module
//! preset = "dmvx"
//! [[variant]]
//! id = 0
//! name = "a"                 # optional: `dmvx-vmm --variant a` selects it
//! address = "127.0.0.1:7700"
//! role = "leader"
//! public_key = "<64 hex>"            # what `dmvx-vmm keygen` printed
//! private_key_file = "demo-0.key"    # optional; read by variant 0's VMM only
//! [[variant]]
//! id = 1
//! address = "127.0.0.1:7701"
//! role = "follower"
//! public_key = "<64 hex>"
//! program = "sha256:<64 hex>"  # optional: this variant's own build (N-version)
//! ```
//!
//! A relative `private_key_file` is resolved against the directory of the
//! cluster file. A variant's name is 1 to 64 letters, digits, `-`, `_` or
//! `.`, not all digits (a number selects a variant by id), and unique in the
//! file.
//!
//! A variant's own `program` digest (variants built differently, e.g. by
//! images/build-nversion.sh) overrides `[digests] program` for it; once one
//! variant has one, every variant needs a program digest, and the handshake
//! compares the table of them instead of the program itself.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::keys::{KeyError, PublicKey};

/// Variant ids are below this bound (they index small per-variant tables).
pub const MAX_VARIANTS: u8 = 16;
/// Largest accepted `batch_bytes` (a batch must fit in one frame).
pub const MAX_BATCH_BYTES: usize = 4 << 20;
/// Smallest accepted `batch_bytes`.
pub const MIN_BATCH_BYTES: usize = 64;
/// Longest accepted cluster name, in bytes.
pub const MAX_NAME_LEN: usize = 128;
/// Longest accepted variant name, in bytes.
pub const MAX_VARIANT_NAME_LEN: usize = 64;

/// Default for `timeout_ms`.
pub const DEFAULT_TIMEOUT_MS: u64 = 5000;
/// Default for `batch_bytes`.
pub const DEFAULT_BATCH_BYTES: usize = 8192;
/// Default for `max_lag`.
pub const DEFAULT_MAX_LAG: u64 = 4096;

/// What went wrong reading or checking a cluster file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read cluster file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cluster file is not valid: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("[cluster] `{0}`: the variants of a cluster no longer share a key (any member could pose as any other); each [[variant]] lists its own `public_key` and each VMM reads its own private key: `dmvx-vmm keygen FILE` writes a key pair")]
    SharedKey(&'static str),
    #[error("variant {id}: {source}")]
    BadPublicKey { id: u8, source: KeyError },
    #[error("variants {0} and {1} list the same public key: every variant needs a key pair of its own")]
    DuplicateKey(u8, u8),
    #[error("cluster name must be 1 to {MAX_NAME_LEN} bytes, got {0} bytes")]
    BadName(usize),
    #[error("timeout_ms must be at least 1")]
    ZeroTimeout,
    #[error("batch_bytes must be between {MIN_BATCH_BYTES} and {MAX_BATCH_BYTES}, got {0}")]
    BadBatchBytes(usize),
    #[error("max_lag must be at least 1")]
    ZeroMaxLag,
    #[error("digest `{key}` = {value:?} is not of the form \"sha256:<64 hex characters>\"")]
    BadDigest { key: &'static str, value: String },
    #[error("the cluster file lists no [[variant]]")]
    NoVariants,
    #[error("variant id {0} is out of range: ids must be below {MAX_VARIANTS}")]
    IdOutOfRange(u32),
    #[error("variant id {0} is listed more than once")]
    DuplicateId(u8),
    #[error("the cluster has no leader: exactly one [[variant]] must have role = \"leader\"")]
    NoLeader,
    #[error("the cluster has {} leaders (variants {ids:?}): exactly one is allowed", .ids.len())]
    SeveralLeaders { ids: Vec<u8> },
    #[error("variant {id}: address {address:?} is not of the form host:port")]
    BadAddress { id: u8, address: String },
    #[error("variant {0} is not in the cluster file")]
    UnknownVariant(u8),
    #[error("no variant is named {0:?} in the cluster file")]
    UnknownVariantName(String),
    #[error("variant {id}: name {name:?} is not valid: {why}")]
    BadVariantName { id: u8, name: String, why: &'static str },
    #[error("variant name {0:?} is given to more than one variant")]
    DuplicateVariantName(String),
    #[error("variant {0} has no program digest, but other variants name their own (give it `program` or set [digests] program)")]
    MissingProgram(u8),
    #[error("variant {0} is the leader, not a follower")]
    NotAFollower(u8),
    #[error("a local cluster needs 1 to {MAX_VARIANTS} variants (one public key each) and ports that fit in 16 bits, got {n} variants from port {base_port}")]
    BadLocal { n: usize, base_port: u16 },
}

/// A SHA-256 digest, written `sha256:<64 hex>` in files and messages.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The SHA-256 of `data`.
    pub fn of(data: &[u8]) -> Self {
        Digest(Sha256::digest(data).into())
    }

    /// Parses `sha256:<64 hex>`; `key` names the setting in errors.
    pub fn parse(key: &'static str, value: &str) -> Result<Self, ConfigError> {
        let bad = || ConfigError::BadDigest { key, value: value.to_string() };
        let hex_part = value.strip_prefix("sha256:").ok_or_else(bad)?;
        if hex_part.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut out).map_err(|_| bad())?;
        Ok(Digest(out))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A variant's part in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Leader,
    Follower,
}

/// One `[[variant]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VariantConfig {
    pub id: u8,
    /// An operator's name for it (`--variant NAME`), if the file gives one.
    pub name: Option<String>,
    /// `host:port`. The leader listens here; a follower's address is
    /// informational (it may later be used as the source address).
    pub address: String,
    pub role: Role,
    /// The variant's static public key: only its owner may join as this variant.
    pub public_key: PublicKey,
    /// Where this variant's VMM finds its private key, if the file says.
    pub private_key_file: Option<PathBuf>,
}

/// The `[digests]` table: what every variant must agree on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Digests {
    pub image: Option<Digest>,
    pub program: Option<Digest>,
    /// Per-variant program digests (`[[variant]] program`), by id.
    pub programs: [Option<Digest>; MAX_VARIANTS as usize],
}

/// A checked cluster file.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub name: String,
    /// A peer silent this long is dead (handshake, acks, heartbeats).
    pub timeout: Duration,
    /// The leader batches entries up to this many bytes.
    pub batch_bytes: usize,
    /// The leader blocks when a follower is this many entries behind.
    pub max_lag: u64,
    pub digests: Digests,
    /// The `[policy]` table, uninterpreted.
    pub policy: toml::Table,
    /// Sorted by id.
    pub variants: Vec<VariantConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    cluster: RawCluster,
    #[serde(default)]
    digests: RawDigests,
    #[serde(default)]
    policy: toml::Table,
    #[serde(default)]
    variant: Vec<RawVariant>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    name: String,
    /// Refused with an explanation: the pre-shared key of protocol 2.
    key: Option<toml::Value>,
    key_file: Option<toml::Value>,
    timeout_ms: Option<u64>,
    batch_bytes: Option<usize>,
    max_lag: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDigests {
    image: Option<String>,
    program: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVariant {
    id: u32,
    name: Option<String>,
    address: String,
    role: Role,
    public_key: String,
    private_key_file: Option<PathBuf>,
    program: Option<String>,
}

impl ClusterConfig {
    /// Reads and checks a cluster file. A relative `private_key_file` is
    /// taken relative to the file's directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        Self::parse(&text, base)
    }

    /// Parses and checks cluster-file text; `base_dir` resolves a relative
    /// `private_key_file`.
    pub fn parse(text: &str, base_dir: &Path) -> Result<Self, ConfigError> {
        let raw: RawFile = toml::from_str(text)?;
        if raw.cluster.key.is_some() {
            return Err(ConfigError::SharedKey("key"));
        }
        if raw.cluster.key_file.is_some() {
            return Err(ConfigError::SharedKey("key_file"));
        }
        let mut digests = Digests {
            image: raw.digests.image.map(|v| Digest::parse("image", &v)).transpose()?,
            program: raw.digests.program.map(|v| Digest::parse("program", &v)).transpose()?,
            programs: Default::default(),
        };
        let mut variants = Vec::with_capacity(raw.variant.len());
        for v in raw.variant {
            if v.id >= u32::from(MAX_VARIANTS) {
                return Err(ConfigError::IdOutOfRange(v.id));
            }
            if let Some(p) = &v.program {
                digests.programs[v.id as usize] = Some(Digest::parse("variant program", p)?);
            }
            let id = v.id as u8;
            let public_key = PublicKey::parse_hex(&v.public_key, "`public_key`")
                .map_err(|source| ConfigError::BadPublicKey { id, source })?;
            let private_key_file = v.private_key_file.map(|f| base_dir.join(f));
            let (address, role, name) = (v.address, v.role, v.name);
            variants.push(VariantConfig { id, name, address, role, public_key, private_key_file });
        }
        let cfg = ClusterConfig {
            name: raw.cluster.name,
            timeout: Duration::from_millis(raw.cluster.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS)),
            batch_bytes: raw.cluster.batch_bytes.unwrap_or(DEFAULT_BATCH_BYTES),
            max_lag: raw.cluster.max_lag.unwrap_or(DEFAULT_MAX_LAG),
            digests,
            policy: raw.policy,
            variants,
        };
        cfg.validate()
    }

    /// The embedded local default: one variant per key on 127.0.0.1,
    /// variant `i` with `keys[i]` at `base_port + i`, variant 0 the leader,
    /// default timing.
    pub fn local(base_port: u16, keys: &[PublicKey]) -> Result<Self, ConfigError> {
        let n_variants = keys.len();
        let bad = ConfigError::BadLocal { n: n_variants, base_port };
        if n_variants == 0 || n_variants > usize::from(MAX_VARIANTS) {
            return Err(bad);
        }
        if usize::from(base_port) + n_variants - 1 > usize::from(u16::MAX) {
            return Err(bad);
        }
        let variants = keys
            .iter()
            .enumerate()
            .map(|(i, key)| VariantConfig {
                id: i as u8,
                name: None,
                address: format!("127.0.0.1:{}", usize::from(base_port) + i),
                role: if i == 0 { Role::Leader } else { Role::Follower },
                public_key: *key,
                private_key_file: None,
            })
            .collect();
        ClusterConfig {
            name: "local".to_string(),
            timeout: Duration::from_millis(DEFAULT_TIMEOUT_MS),
            batch_bytes: DEFAULT_BATCH_BYTES,
            max_lag: DEFAULT_MAX_LAG,
            digests: Digests::default(),
            policy: toml::Table::new(),
            variants,
        }
        .validate()
    }

    /// Checks every rule of the cluster file; sorts the variants by id.
    pub fn validate(mut self) -> Result<Self, ConfigError> {
        if self.name.is_empty() || self.name.len() > MAX_NAME_LEN {
            return Err(ConfigError::BadName(self.name.len()));
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::ZeroTimeout);
        }
        if !(MIN_BATCH_BYTES..=MAX_BATCH_BYTES).contains(&self.batch_bytes) {
            return Err(ConfigError::BadBatchBytes(self.batch_bytes));
        }
        if self.max_lag == 0 {
            return Err(ConfigError::ZeroMaxLag);
        }
        if self.variants.is_empty() {
            return Err(ConfigError::NoVariants);
        }
        self.variants.sort_by_key(|v| v.id);
        for pair in self.variants.windows(2) {
            if pair[0].id == pair[1].id {
                return Err(ConfigError::DuplicateId(pair[0].id));
            }
        }
        for v in &self.variants {
            if v.id >= MAX_VARIANTS {
                return Err(ConfigError::IdOutOfRange(u32::from(v.id)));
            }
            let ok =
                v.address.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !ok {
                return Err(ConfigError::BadAddress { id: v.id, address: v.address.clone() });
            }
            if let Some(other) = self.variants.iter().find(|o| o.id < v.id && o.public_key == v.public_key) {
                return Err(ConfigError::DuplicateKey(other.id, v.id));
            }
            if let Some(name) = &v.name {
                check_variant_name(name).map_err(|why| ConfigError::BadVariantName {
                    id: v.id,
                    name: name.clone(),
                    why,
                })?;
                if self.variants.iter().filter(|w| w.name.as_ref() == Some(name)).count() > 1 {
                    return Err(ConfigError::DuplicateVariantName(name.clone()));
                }
            }
        }
        if self.digests.programs.iter().any(Option::is_some) {
            if let Some(v) = self.variants.iter().find(|v| self.program_for(v.id).is_none()) {
                return Err(ConfigError::MissingProgram(v.id));
            }
        }
        let leaders: Vec<u8> = self.variants.iter().filter(|v| v.role == Role::Leader).map(|v| v.id).collect();
        match leaders.len() {
            0 => return Err(ConfigError::NoLeader),
            1 => {}
            _ => return Err(ConfigError::SeveralLeaders { ids: leaders }),
        }
        Ok(self)
    }

    /// The leader's entry.
    pub fn leader(&self) -> &VariantConfig {
        // validate() guarantees exactly one leader; fall back to the first
        // variant rather than panic if a caller edited the fields afterwards.
        self.variants.iter().find(|v| v.role == Role::Leader).unwrap_or(&self.variants[0])
    }

    /// The followers, by increasing id.
    pub fn followers(&self) -> impl Iterator<Item = &VariantConfig> {
        self.variants.iter().filter(|v| v.role == Role::Follower)
    }

    /// The entry for variant `id`.
    pub fn variant(&self, id: u8) -> Result<&VariantConfig, ConfigError> {
        self.variants.iter().find(|v| v.id == id).ok_or(ConfigError::UnknownVariant(id))
    }

    /// The entry of the variant named `name`.
    pub fn variant_named(&self, name: &str) -> Result<&VariantConfig, ConfigError> {
        self.variants
            .iter()
            .find(|v| v.name.as_deref() == Some(name))
            .ok_or_else(|| ConfigError::UnknownVariantName(name.to_string()))
    }

    /// The digest variant `id`'s program must have: its own, else `[digests] program`.
    pub fn program_for(&self, id: u8) -> Option<Digest> {
        self.digests.programs.get(id as usize).copied().flatten().or(self.digests.program)
    }

    /// With per-variant programs (N-version variants): a digest of every
    /// variant's program digest, which the handshake compares instead of
    /// the program itself (each variant checked its own before joining).
    pub fn programs_digest(&self) -> Option<Digest> {
        if self.digests.programs.iter().all(Option::is_none) {
            return None;
        }
        let mut hasher = Sha256::new();
        hasher.update(b"dmvx programs v1\0");
        for v in &self.variants {
            hasher.update([v.id]);
            hasher.update(self.program_for(v.id).map_or([0; 32], |d| d.0));
        }
        Some(Digest(hasher.finalize().into()))
    }

    /// A digest of the `[policy]` table that does not depend on key order or
    /// formatting: every variant with an equal table gets an equal digest.
    /// (The policy module may hand the handshake a digest of its own instead.)
    pub fn policy_digest(&self) -> Digest {
        let mut hasher = Sha256::new();
        hasher.update(b"dmvx policy v1\0");
        canonical_table(&self.policy, &mut hasher);
        Digest(hasher.finalize().into())
    }
}

/// Whether `name` may name a variant; if not, why.
pub fn check_variant_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > MAX_VARIANT_NAME_LEN {
        return Err("a name has 1 to 64 characters");
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
        return Err("a name has only letters, digits, '-', '_' and '.'");
    }
    if name.bytes().all(|b| b.is_ascii_digit()) {
        return Err("a name is not all digits (a number selects a variant by id)");
    }
    Ok(())
}

fn put_str(h: &mut Sha256, s: &str) {
    h.update((s.len() as u64).to_le_bytes());
    h.update(s.as_bytes());
}

/// Feeds a canonical, self-delimiting encoding of `table` (keys sorted) to `h`.
fn canonical_table(table: &toml::Table, h: &mut Sha256) {
    let mut keys: Vec<&String> = table.keys().collect();
    keys.sort();
    h.update(b"{");
    h.update((keys.len() as u64).to_le_bytes());
    for k in keys {
        put_str(h, k);
        if let Some(v) = table.get(k) {
            canonical_value(v, h);
        }
    }
}

fn canonical_value(v: &toml::Value, h: &mut Sha256) {
    match v {
        toml::Value::String(s) => {
            h.update(b"s");
            put_str(h, s);
        }
        toml::Value::Integer(i) => {
            h.update(b"i");
            h.update(i.to_le_bytes());
        }
        toml::Value::Float(f) => {
            h.update(b"f");
            h.update(f.to_bits().to_le_bytes());
        }
        toml::Value::Boolean(b) => {
            h.update(if *b { b"T" } else { b"F" });
        }
        toml::Value::Datetime(d) => {
            h.update(b"d");
            put_str(h, &d.to_string());
        }
        toml::Value::Array(items) => {
            h.update(b"[");
            h.update((items.len() as u64).to_le_bytes());
            for item in items {
                canonical_value(item, h);
            }
        }
        toml::Value::Table(t) => canonical_table(t, h),
    }
}
