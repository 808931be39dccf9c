//! Virtual ownership: what the program's chown and the set-id bits of its
//! chmod, open and mkdir set never reach the host's owner and mode. They are
//! kept in an extended attribute of the host file (`user.dmvx.id`, which the
//! program cannot read or write: the xattr calls are not in its table) and
//! laid over what stat reports. The attribute lives with the file, so every
//! process of the program sees it, and in a cluster it is the leader's, like
//! every other modification of the tree (followers take the leader's stat).
//!
//! Files the VMM's own host ids (the jail's) own are shown as the
//! program's root's, as a user namespace shows its owner's files as its
//! root's: a writable root given to the jail's uid (docs/security.md) looks
//! to the program like a root it owns (git accepts its repositories).

use std::ffi::CString;
use std::os::fd::RawFd;

use super::creds::Creds;
use super::errno::{Errno, SysResult};

const XATTR: &std::ffi::CStr = c"user.dmvx.id";
/// Format of the attribute (a version word, then the fields).
const VERSION: u32 = 1;
const LEN: usize = 16;
/// No id recorded: the host's stands.
const NONE: u32 = u32::MAX;

/// The mode bits that never reach the host.
pub const SETID: u32 = libc::S_ISUID | libc::S_ISGID;

/// The virtual owner, group and set-id bits of a file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Overlay {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// S_ISUID and S_ISGID as the program set them.
    pub setid: u32,
}

impl Overlay {
    fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[0..4].copy_from_slice(&VERSION.to_le_bytes());
        b[4..8].copy_from_slice(&self.uid.unwrap_or(NONE).to_le_bytes());
        b[8..12].copy_from_slice(&self.gid.unwrap_or(NONE).to_le_bytes());
        b[12..16].copy_from_slice(&(self.setid & SETID).to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<Overlay> {
        let word = |i: usize| b.get(i..i + 4).map(|w| u32::from_le_bytes(w.try_into().expect("4 bytes")));
        if b.len() != LEN || word(0)? != VERSION {
            return None;
        }
        let id = |v: u32| (v != NONE).then_some(v);
        Some(Overlay { uid: id(word(4)?), gid: id(word(8)?), setid: word(12)? & SETID })
    }

    /// The owner, group and mode the program sees for host `st`.
    pub fn apply(&self, uid: &mut u32, gid: &mut u32, mode: &mut u32) {
        *uid = self.uid.unwrap_or(*uid);
        *gid = self.gid.unwrap_or(*gid);
        *mode = (*mode & !SETID) | self.setid;
    }
}

/// `/proc/self/fd/N`: names the inode behind any descriptor, O_PATH ones too.
fn proc_path(raw: RawFd) -> CString {
    CString::new(format!("/proc/self/fd/{raw}")).expect("no NUL in a formatted number")
}

/// The overlay of the file behind `raw` (whose host mode is `mode`), if any.
/// Symbolic links have none (Linux keeps no user attributes on them).
pub fn read(raw: RawFd, mode: u32) -> Option<Overlay> {
    if raw < 0 || mode & libc::S_IFMT == libc::S_IFLNK {
        return None;
    }
    let mut b = [0u8; LEN];
    let p = proc_path(raw);
    // SAFETY: p and XATTR are valid C strings; b is writable for its length.
    let n = unsafe { libc::getxattr(p.as_ptr(), XATTR.as_ptr(), b.as_mut_ptr().cast(), b.len()) };
    if n != LEN as isize {
        return None;
    }
    Overlay::decode(&b)
}

/// Records `ov` for the file behind `raw`; an empty overlay is removed.
pub fn write(raw: RawFd, mode: u32, ov: &Overlay) -> SysResult<()> {
    if mode & libc::S_IFMT == libc::S_IFLNK {
        // Nothing to keep it in; a link's owner means nothing to Linux either.
        return Ok(());
    }
    let p = proc_path(raw);
    if *ov == Overlay::default() {
        // SAFETY: p and XATTR are valid C strings.
        let r = unsafe { libc::removexattr(p.as_ptr(), XATTR.as_ptr()) };
        // Nothing there, or no attributes at all here: nothing to remove.
        let nothing = matches!(Errno::last().0, libc::ENODATA | libc::EOPNOTSUPP);
        return if r == 0 || nothing { Ok(()) } else { Err(refusal()) };
    }
    let b = ov.encode();
    // SAFETY: p and XATTR are valid C strings; b is readable for its length.
    let r = unsafe { libc::setxattr(p.as_ptr(), XATTR.as_ptr(), b.as_ptr().cast(), b.len(), 0) };
    if r == 0 {
        Ok(())
    } else {
        Err(refusal())
    }
}

/// The error for a file whose overlay cannot be written: a file system
/// without user attributes, or a file the VMM may not change.
fn refusal() -> Errno {
    match Errno::last() {
        Errno::EROFS => Errno::EROFS,
        _ => Errno::EPERM,
    }
}

/// The overlay a file created by `creds` needs: the creator's ids where
/// those a file of the VMM's own ids is shown with differ, as Linux makes
/// the creator the owner. None when they already are the creator's.
pub fn creator(creds: &Creds) -> Option<Overlay> {
    let host = host_ids();
    // What a file of the VMM's ids is shown as, before any overlay.
    let (uid, gid) = shown_ids(host.0, host.1, host);
    let ov = Overlay {
        uid: (creds.euid != uid).then_some(creds.euid),
        gid: (creds.egid != gid).then_some(creds.egid),
        setid: 0,
    };
    (ov != Overlay::default()).then_some(ov)
}

/// Gives the file just created at `name` in `dir` the creator's overlay
/// (best effort: a FIFO or a file system without user attributes keeps the
/// host's ids).
pub fn created_at(creds: &Creds, dir: RawFd, name: &std::ffi::CStr) {
    let Some(ov) = creator(creds) else { return };
    // SAFETY: dir is an open directory; name a valid C string; the result is checked.
    let fd = unsafe { libc::openat(dir, name.as_ptr(), libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC) };
    if fd < 0 {
        return;
    }
    // SAFETY: fd was just opened and is owned by nobody else.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    // SAFETY: stat is plain data; all zeroes is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: raw is open; st is a valid out-parameter.
    if unsafe { libc::fstat(raw, &mut st) } == 0 && matches!(st.st_mode & libc::S_IFMT, libc::S_IFREG | libc::S_IFDIR) {
        let _ = write(raw, st.st_mode, &ov);
    }
}

/// The VMM's own host ids.
fn host_ids() -> (u32, u32) {
    // SAFETY: geteuid and getegid have no preconditions and cannot fail.
    unsafe { (libc::geteuid(), libc::getegid()) }
}

/// Host ids as the program sees them before any overlay: the VMM's own
/// (when unprivileged) are root's.
pub fn shown_ids(uid: u32, gid: u32, host: (u32, u32)) -> (u32, u32) {
    let map = |v: u32, own: u32| if own != 0 && v == own { 0 } else { v };
    (map(uid, host.0), map(gid, host.1))
}

/// Lays the overlay of the file behind `raw`, if any, over its stat.
pub fn overlay_stat(raw: RawFd, st: &mut libc::stat) {
    (st.st_uid, st.st_gid) = shown_ids(st.st_uid, st.st_gid, host_ids());
    if let Some(ov) = read(raw, st.st_mode) {
        ov.apply(&mut st.st_uid, &mut st.st_gid, &mut st.st_mode);
    }
}

/// The same for a statx.
pub fn overlay_statx(raw: RawFd, sx: &mut libc::statx) {
    let mut mode = sx.stx_mode as u32;
    (sx.stx_uid, sx.stx_gid) = shown_ids(sx.stx_uid, sx.stx_gid, host_ids());
    if let Some(ov) = read(raw, mode) {
        ov.apply(&mut sx.stx_uid, &mut sx.stx_gid, &mut mode);
        sx.stx_mode = mode as u16;
    }
}

/// chown of the file behind `raw` (host stat `st`) to `uid`/`gid` (-1:
/// keep) by `creds`: only the overlay changes, never the host's owner.
pub fn chown(creds: &Creds, raw: RawFd, st: &libc::stat, uid: u32, gid: u32) -> SysResult {
    let id = |v: u32| (v != u32::MAX).then_some(v);
    let (uid, gid) = (id(uid), id(gid));
    let old = read(raw, st.st_mode);
    let (mut owner, mut group) = shown_ids(st.st_uid, st.st_gid, host_ids());
    let mut mode = st.st_mode;
    if let Some(o) = old {
        o.apply(&mut owner, &mut group, &mut mode);
    }
    may_chown(creds, owner, group, uid, gid)?;
    write(raw, st.st_mode, &chowned(old, st, uid, gid, host_ids()))?;
    Ok(0)
}

/// chmod of the file behind `raw` (host stat `st`) to `mode` by `creds`:
/// `host` sets the permission bits on the host; the set-id bits go to the
/// overlay only.
pub fn chmod(creds: &Creds, raw: RawFd, st: &libc::stat, mode: u32, host: impl FnOnce(u32) -> SysResult) -> SysResult {
    let old = read(raw, st.st_mode);
    let owner = old.and_then(|o| o.uid).unwrap_or(shown_ids(st.st_uid, st.st_gid, host_ids()).0);
    may_chmod(creds, owner)?;
    let mode = mode & 0o7777;
    let ov = Overlay { setid: mode & SETID, ..old.unwrap_or_default() };
    if ov.setid != 0 {
        // First, so that a file system without attributes refuses it whole.
        write(raw, st.st_mode, &ov)?;
    }
    host(mode & !SETID)?;
    if ov.setid == 0 {
        write(raw, st.st_mode, &ov)?;
    }
    Ok(0)
}

/// A change of owner and group (None: keep), as `creds` may make it: Linux's
/// rules with the virtual ids. `owner`/`group` are the file's current ones.
pub fn may_chown(creds: &Creds, owner: u32, group: u32, uid: Option<u32>, gid: Option<u32>) -> SysResult<()> {
    if creds.capable(super::creds::CAP_CHOWN) {
        return Ok(());
    }
    if uid.is_some_and(|u| u != owner) {
        return Err(Errno::EPERM);
    }
    if let Some(g) = gid {
        let member = g == creds.egid || creds.groups.contains(&g);
        if creds.euid != owner || (g != group && !member) {
            return Err(Errno::EPERM);
        }
    }
    Ok(())
}

/// Whether `creds` may change the mode of a file owned by `owner`.
pub fn may_chmod(creds: &Creds, owner: u32) -> SysResult<()> {
    if creds.capable(super::creds::CAP_FOWNER) || creds.euid == owner {
        Ok(())
    } else {
        Err(Errno::EPERM)
    }
}

/// The overlay after chown(uid, gid) of a file with host/overlay state `st`
/// (`host`: the VMM's own ids): set-id bits of a regular file are cleared,
/// as Linux clears them.
pub fn chowned(old: Option<Overlay>, st: &libc::stat, uid: Option<u32>, gid: Option<u32>, host: (u32, u32)) -> Overlay {
    let mut ov = old.unwrap_or_default();
    let (su, sg) = shown_ids(st.st_uid, st.st_gid, host);
    if let Some(u) = uid {
        ov.uid = (u != su).then_some(u);
    }
    if let Some(g) = gid {
        ov.gid = (g != sg).then_some(g);
    }
    if st.st_mode & libc::S_IFMT == libc::S_IFREG && (uid.is_some() || gid.is_some()) {
        // Set-group-id without group execute is a locking marker Linux keeps.
        let group_exec = st.st_mode & libc::S_IXGRP != 0;
        ov.setid &= !(libc::S_ISUID | if group_exec { libc::S_ISGID } else { 0 });
    }
    ov
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vmms_own_ids_are_shown_as_roots() {
        let jail = (65534, 65534);
        assert_eq!(shown_ids(65534, 65534, jail), (0, 0));
        assert_eq!(shown_ids(0, 0, jail), (0, 0));
        assert_eq!(shown_ids(1000, 65534, jail), (1000, 0));
        // A VMM acting as root maps nothing.
        assert_eq!(shown_ids(65534, 65534, (0, 0)), (65534, 65534));
        // chown to root of a file the jail's uid owns needs no overlay;
        // chown to the jail's uid itself does (it is shown as root's).
        // SAFETY: stat is plain data; all zeroes is a valid value.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        st.st_mode = libc::S_IFREG | 0o644;
        (st.st_uid, st.st_gid) = jail;
        assert_eq!(chowned(None, &st, Some(0), Some(0), jail), Overlay::default());
        assert_eq!(chowned(None, &st, Some(65534), None, jail).uid, Some(65534));
    }

    #[test]
    fn overlays_round_trip() {
        let ov = Overlay { uid: Some(0), gid: None, setid: libc::S_ISUID };
        assert_eq!(Overlay::decode(&ov.encode()), Some(ov));
        assert_eq!(Overlay::decode(&[0u8; LEN]), None);
        let (mut u, mut g, mut m) = (1000, 1000, libc::S_IFREG | 0o755);
        ov.apply(&mut u, &mut g, &mut m);
        assert_eq!((u, g, m), (0, 1000, libc::S_IFREG | 0o4755));
    }

    #[test]
    fn chown_follows_linux_rules() {
        let root = Creds::new(0, 0);
        let user = Creds { groups: vec![50], ..Creds::new(1000, 1000) };
        assert!(may_chown(&root, 1000, 1000, Some(33), Some(33)).is_ok());
        assert_eq!(may_chown(&user, 1000, 1000, Some(0), None), Err(Errno::EPERM));
        assert!(may_chown(&user, 1000, 1000, None, Some(50)).is_ok());
        assert_eq!(may_chown(&user, 1000, 1000, None, Some(51)), Err(Errno::EPERM));
        assert_eq!(may_chown(&user, 0, 0, None, Some(1000)), Err(Errno::EPERM));
        assert_eq!(may_chmod(&user, 0), Err(Errno::EPERM));
    }

    #[test]
    fn the_attribute_lives_with_the_file() {
        let p = std::env::temp_dir().join(format!("dmvx-id-{}", std::process::id()));
        std::fs::write(&p, b"x").unwrap();
        let f = std::fs::File::open(&p).unwrap();
        let raw = std::os::fd::AsRawFd::as_raw_fd(&f);
        let ov = Overlay { uid: Some(0), gid: Some(0), setid: libc::S_ISUID };
        if write(raw, libc::S_IFREG, &ov).is_ok() {
            assert_eq!(read(raw, libc::S_IFREG), Some(ov));
            write(raw, libc::S_IFREG, &Overlay::default()).unwrap();
            assert_eq!(read(raw, libc::S_IFREG), None);
        }
        std::fs::remove_file(&p).unwrap();
    }
}
