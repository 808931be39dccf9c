//! dmvx-sync: the MVX engine's cluster configuration and transport.
//!
//! * [`config`]: the cluster file (TOML) and its checks.
//! * [`wire`]: the messages and their encoding.
//! * [`frame`]: length-delimited frames with a hard size limit.
//! * [`crypto`]: key schedule, handshake proofs, sealed frames.
//! * [`handshake`]: the versioned, mutually authenticated handshake.
//! * [`link`]: the runtime: [`Leader`] and [`Follower`].
//!
//! The protocol is described for review in `sync/README.md`.

#![forbid(unsafe_code)]

pub mod config;
pub mod crypto;
pub mod frame;
pub mod handshake;
pub mod link;
pub mod wire;

pub use config::{ClusterConfig, ClusterKey, ConfigError, Digest, Role};
pub use handshake::{HandshakeError, HandshakeInfo, RejectReason};
pub use link::{AckState, Entry, Follower, Incoming, Leader, LinkError, PeerFailure};
pub use wire::{Control, Message};
