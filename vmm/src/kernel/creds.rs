//! Credentials: the identity a thread group has inside its VM.
//!
//! They are virtual: the program's uids and gids are what it was started
//! with or set itself, and its capabilities what Linux would give those ids,
//! never the host's authority (the VMM's host identity is the jail's). They
//! are the same in every variant.

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
    pub caps: Caps,
}

/// Capability sets (bit N: capability N).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Caps {
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
}

/// Every capability this Linux knows (0 ..= CAP_LAST_CAP, 40).
pub const ALL_CAPS: u64 = (1 << 41) - 1;
pub const CAP_CHOWN: u32 = 0;
pub const CAP_FOWNER: u32 = 3;
pub const CAP_SETGID: u32 = 6;
pub const CAP_SETUID: u32 = 7;

impl Creds {
    /// All ids `uid` and `gid`, no supplementary groups; root has every
    /// capability, others none.
    pub fn new(uid: u32, gid: u32) -> Creds {
        let all = if uid == 0 { ALL_CAPS } else { 0 };
        let caps = Caps { effective: all, permitted: all, inheritable: 0 };
        Creds { uid, euid: uid, suid: uid, gid, egid: gid, sgid: gid, groups: Vec::new(), caps }
    }

    /// Whether the effective set holds capability `cap`.
    pub fn capable(&self, cap: u32) -> bool {
        self.caps.effective >> cap & 1 == 1
    }

    /// capset: new sets within what Linux allows (no new permitted
    /// capabilities, effective within permitted, inheritable within the old
    /// inheritable and permitted).
    pub fn set_caps(&mut self, new: Caps) -> Result<(), libc::c_int> {
        let old = self.caps;
        let inside = |a: u64, b: u64| a & !b == 0;
        if !inside(new.permitted, old.permitted)
            || !inside(new.effective, new.permitted)
            || !inside(new.inheritable, old.inheritable | old.permitted)
            || !inside(new.permitted | new.effective | new.inheritable, ALL_CAPS)
        {
            return Err(libc::EPERM);
        }
        self.caps = new;
        Ok(())
    }

    /// What a change of uids does to the capabilities, as Linux without
    /// SECBIT_KEEP_CAPS: leaving root entirely drops them all; the
    /// effective uid leaving or reaching 0 drops or restores the effective set.
    fn caps_after_uids(&mut self, old: (u32, u32, u32)) {
        let was_root = old.0 == 0 || old.1 == 0 || old.2 == 0;
        if was_root && self.uid != 0 && self.euid != 0 && self.suid != 0 {
            self.caps.permitted = 0;
            self.caps.effective = 0;
        } else if old.1 == 0 && self.euid != 0 {
            self.caps.effective = 0;
        } else if old.1 != 0 && self.euid == 0 {
            self.caps.effective = self.caps.permitted;
        }
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
    /// Whether the program may set any uid (CAP_SETUID; root's, inside the
    /// program's world).
    pub fn privileged(&self) -> bool {
        self.capable(CAP_SETUID)
    }

    /// setresuid and the calls built on it.
    pub fn set_uids(&mut self, c: IdChange) -> Result<(), libc::c_int> {
        let old = (self.uid, self.euid, self.suid);
        let (r, e, s) = apply(old, c, self.privileged())?;
        (self.uid, self.euid, self.suid) = (r, e, s);
        self.caps_after_uids(old);
        Ok(())
    }

    /// setresgid and the calls built on it.
    pub fn set_gids(&mut self, c: IdChange) -> Result<(), libc::c_int> {
        let (r, e, s) = apply((self.gid, self.egid, self.sgid), c, self.capable(CAP_SETGID))?;
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
        if self.capable(CAP_SETGID) {
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
        let root = Creds::new(0, 0).caps;
        let mut s = Creds { suid: 0, euid: 0, caps: root, ..Creds::new(1000, 1000) };
        s.set_uids(IdChange { effective: Some(1000), ..Default::default() }).unwrap();
        assert!(!s.privileged());
        s.set_uids(IdChange { effective: Some(0), ..Default::default() }).unwrap();
        assert!(s.privileged());
    }

    #[test]
    fn capabilities_follow_the_uids_and_only_shrink() {
        let mut c = Creds::new(0, 0);
        assert!(c.capable(CAP_CHOWN));
        // Dropping CAP_SETUID while staying root: setuid to others fails.
        let fewer =
            Caps { effective: ALL_CAPS & !(1 << CAP_SETUID), permitted: ALL_CAPS & !(1 << CAP_SETUID), inheritable: 0 };
        c.set_caps(fewer).unwrap();
        assert_eq!(c.setuid(33), Err(libc::EPERM));
        assert_eq!(c.set_caps(Caps { permitted: ALL_CAPS, ..fewer }), Err(libc::EPERM));
        let mut d = Creds::new(0, 0);
        d.setuid(33).unwrap();
        assert_eq!(d.caps, Caps::default());
    }
}
