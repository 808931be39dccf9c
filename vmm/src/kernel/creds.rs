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

/// Which ids a set*id call changes: real, effective, saved (None: keep).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IdChange {
    pub real: Option<u32>,
    pub effective: Option<u32>,
    pub saved: Option<u32>,
}

/// Applies `c` to the triple (real, effective, saved) as Linux's setres*id
/// does: a privileged caller (effective uid 0) may set any id; others only
/// ids they already hold.
fn apply(ids: (u32, u32, u32), c: IdChange, privileged: bool) -> Result<(u32, u32, u32), libc::c_int> {
    let allowed = |v: u32| privileged || v == ids.0 || v == ids.1 || v == ids.2;
    for v in [c.real, c.effective, c.saved].into_iter().flatten() {
        if !allowed(v) {
            return Err(libc::EPERM);
        }
    }
    Ok((c.real.unwrap_or(ids.0), c.effective.unwrap_or(ids.1), c.saved.unwrap_or(ids.2)))
}

impl Creds {
    /// Whether the effective uid is root (inside the program's world).
    pub fn privileged(&self) -> bool {
        self.euid == 0
    }

    /// setresuid and the calls built on it.
    pub fn set_uids(&mut self, c: IdChange) -> Result<(), libc::c_int> {
        let (r, e, s) = apply((self.uid, self.euid, self.suid), c, self.privileged())?;
        (self.uid, self.euid, self.suid) = (r, e, s);
        Ok(())
    }

    /// setresgid and the calls built on it.
    pub fn set_gids(&mut self, c: IdChange) -> Result<(), libc::c_int> {
        let (r, e, s) = apply((self.gid, self.egid, self.sgid), c, self.privileged())?;
        (self.gid, self.egid, self.sgid) = (r, e, s);
        Ok(())
    }

    /// setuid: a privileged caller sets all three, others the effective id.
    pub fn setuid(&mut self, uid: u32) -> Result<(), libc::c_int> {
        if self.privileged() {
            return self.set_uids(IdChange { real: Some(uid), effective: Some(uid), saved: Some(uid) });
        }
        self.set_uids(IdChange { effective: Some(uid), ..Default::default() })
    }

    /// setgid: as setuid, for groups.
    pub fn setgid(&mut self, gid: u32) -> Result<(), libc::c_int> {
        if self.privileged() {
            return self.set_gids(IdChange { real: Some(gid), effective: Some(gid), saved: Some(gid) });
        }
        self.set_gids(IdChange { effective: Some(gid), ..Default::default() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_drops_privileges_and_cannot_regain_them() {
        let mut c = Creds::new(0, 0);
        c.setgid(33).unwrap();
        c.setuid(33).unwrap();
        assert_eq!((c.uid, c.euid, c.suid, c.gid), (33, 33, 33, 33));
        assert_eq!(c.setuid(0), Err(libc::EPERM));
    }

    #[test]
    fn unprivileged_ids_move_only_among_their_own() {
        let mut c = Creds::new(1000, 1000);
        c.set_uids(IdChange { effective: Some(1000), ..Default::default() }).unwrap();
        assert_eq!(c.set_uids(IdChange { real: Some(0), ..Default::default() }), Err(libc::EPERM));
        // A saved id can be swapped in and out (the setuid-program pattern).
        let mut s = Creds { suid: 0, euid: 0, ..Creds::new(1000, 1000) };
        s.set_uids(IdChange { effective: Some(1000), ..Default::default() }).unwrap();
        assert!(!s.privileged());
        s.set_uids(IdChange { effective: Some(0), ..Default::default() }).unwrap();
        assert!(s.privileged());
    }
}
