//! Credentials: the identity a thread group has inside its VM.
//!
//! They are virtual: the program's uids and gids are what it was started
//! with or set itself, never the host's authority (the VMM's host identity is
//! the jail's). They are the same in every variant.

/// Real, effective, saved and file-system user and group ids, and the
/// supplementary groups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Creds {
    pub uid: u32,
    pub euid: u32,
    pub suid: u32,
    pub gid: u32,
    pub egid: u32,
    pub sgid: u32,
    pub groups: Vec<u32>,
}

impl Creds {
    /// All ids `uid` and `gid`, no supplementary groups.
    pub fn new(uid: u32, gid: u32) -> Creds {
        Creds { uid, euid: uid, suid: uid, gid, egid: gid, sgid: gid, groups: Vec::new() }
    }
}
