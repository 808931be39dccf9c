//! dmvx-sync: the MVX engine, independent of KVM.
//!
//! * [`policy`]: lockstep/relaxed/unchecked and replicated/local, per call class.
//! * [`record`]: event records (normalised calls) and the entries the leader ships.
//! * [`report`]: divergence reports and the forensic log.
//! * [`config`]: the cluster file (TOML) and its checks.
//! * [`keys`]: each variant's static key pair, and private key files.
//! * [`wire`]: the messages and their encoding.
//! * [`frame`]: length-delimited frames with a hard size limit.
//! * [`crypto`]: the Noise protocol's parameters and its transport messages, in chunks.
//! * [`handshake`]: the versioned Noise XK handshake, mutually authenticated by static keys.
//! * [`link`]: the runtime: [`Leader`] and [`Follower`].
//!
//! The protocol is described for review in `sync/README.md`.

// One call (geteuid, in keys.rs) needs unsafe; nothing else may.
#![deny(unsafe_code)]

pub mod config;
pub mod crypto;
pub mod frame;
#[doc(hidden)]
pub mod fuzz_entry;
pub mod handshake;
pub mod keys;
pub mod link;
pub mod policy;
pub mod record;
pub mod report;
pub mod tempname;
pub mod wire;

pub use config::{ClusterConfig, ConfigError, Digest, Role};
pub use handshake::{HandshakeError, HandshakeInfo, RejectReason};
pub use keys::{KeyError, PrivateKey, PublicKey};
pub use link::{AckState, Acked, Entry, Follower, Incoming, Leader, LinkError, PeerFailure};
pub use wire::{Control, Message};
