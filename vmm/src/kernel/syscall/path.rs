//! Calls that name files by path: open, stat, access, readlink, the working
//! directory, and the modifications of the tree (unlink, mkdir, rename,
//! links, modes, owners, times), all resolved inside the sandbox.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};

use super::super::errno::{check, Errno, SysResult};
use super::super::file::{FileKind, OpenFile};
use super::super::identity::{self, SETID};
use super::super::mm::Pod;
use super::super::sandbox::{EntryOp, PATH_MAX};
use super::super::Kernel;
use super::common::*;
use crate::monitor::OpMode;

impl Kernel {
    /// Whether `dirfd` is a remote descriptor (operations relative to it
    /// are the leader's).
    fn dirfd_remote(&self, dirfd: i32) -> bool {
        dirfd != AT_FDCWD && self.fds().file(fd_arg(dirfd as u64)).is_ok_and(|f| f.remote)
    }

    /// A path argument (NUL-terminated, at most PATH_MAX).
    /// In a follower, a fresh temporary name bound to the leader's (see
    /// `dmvx_sync::tempname`) is the leader's name.
    pub(crate) fn path_arg(&mut self, va: u64) -> SysResult<Vec<u8>> {
        let mut p = self.mm.read_cstr(va, PATH_MAX - 1)?;
        if let Some(m) = self.monitor.as_ref() {
            m.names.rewrite(&mut p);
        }
        Ok(p)
    }

    /// The guest directory a relative `path` starts from.
    fn base_dir(&self, dirfd: i32, path: &[u8]) -> SysResult<Vec<u8>> {
        if path.first() == Some(&b'/') {
            return Ok(b"/".to_vec());
        }
        if dirfd == AT_FDCWD {
            return Ok(self.cwd());
        }
        let f = self.fds().file(fd_arg(dirfd as u64))?.clone();
        if f.kind != FileKind::Directory {
            return Err(Errno::ENOTDIR);
        }
        Ok(f.path().map_or_else(|| self.sandbox.guest_path(f.raw()), <[u8]>::to_vec))
    }

    /// Looks `path` up (relative to `dirfd`), honouring AT_EMPTY_PATH.
    fn lookup_at(
        &mut self,
        dirfd: i32,
        pathva: u64,
        flags: u64,
        follow_default: bool,
    ) -> SysResult<(Option<OwnedFd>, libc::stat, i32)> {
        let path = self.path_arg(pathva)?;
        if path.is_empty() && flags & AT_EMPTY_PATH != 0 {
            let raw = if dirfd == AT_FDCWD {
                let (fd, st) = self.sandbox.lookup(b"/", &self.cwd(), true)?;
                return Ok((Some(fd), st, -1));
            } else {
                self.fds().file(fd_arg(dirfd as u64))?.raw()
            };
            let mut st: libc::stat = zeroed();
            // SAFETY: raw is an open host descriptor; st a valid out-parameter.
            check(unsafe { libc::fstat(raw, &mut st) } as i64)?;
            return Ok((None, st, raw));
        }
        let base = self.base_dir(dirfd, &path)?;
        let follow = if follow_default { flags & AT_SYMLINK_NOFOLLOW == 0 } else { flags & AT_SYMLINK_FOLLOW != 0 };
        let path = if path == SELF_EXE { self.tg().exe.clone() } else { path };
        let (fd, st) = self.sandbox.lookup(&base, &path, follow)?;
        let raw = fd.as_raw_fd();
        Ok((Some(fd), st, raw))
    }
}

fn do_open(k: &mut Kernel, dirfd: i32, pathva: u64, flags: i32, mode: u32) -> SysResult {
    let path = k.path_arg(pathva)?;
    if flags & libc::O_ASYNC != 0 {
        // Would make the host send SIGIO to the VMM.
        return Err(Errno::EINVAL);
    }
    let mode = if flags & (libc::O_CREAT | libc::O_TMPFILE) != 0 { mode & 0o7777 & !k.fs().umask } else { 0 };
    if let Some(f) = k.base_dir(dirfd, &path).ok().and_then(|base| k.open_proc(&base, &path, flags)) {
        return k.fds().insert(f?, flags & libc::O_CLOEXEC != 0, 0);
    }
    // Set-id bits never reach the host; a file this open creates keeps them
    // in its overlay.
    let setid = if flags & libc::O_CREAT != 0 { mode & SETID } else { 0 };
    let mode = mode & !SETID;
    // Files opened for writing (or under mutable paths) are the leader's.
    let remote = k.op_mode(false) != OpMode::Direct;
    let mut owned: Option<OwnedFd> = None;
    let mut st = [0u8; STAT_SIZE];
    k.host_call(false, &mut st, |k, out| {
        let base = k.base_dir(dirfd, &path)?;
        let path = if path == SELF_EXE { k.tg().exe.clone() } else { path.clone() };
        let flags = flags & !libc::O_CLOEXEC;
        let creds = k.tg().creds.clone();
        let creator = identity::creator(&creds);
        let (fd, mut s) = if flags & libc::O_CREAT == 0 || (setid == 0 && creator.is_none()) {
            k.sandbox.open(&base, &path, flags, mode)?
        } else {
            let ov = identity::Overlay { setid, ..creator.unwrap_or_default() };
            open_creating(k, &base, &path, flags, mode, ov)?
        };
        identity::overlay_stat(fd.as_raw_fd(), &mut s);
        out.copy_from_slice(s.as_bytes());
        let raw = fd.as_raw_fd();
        owned = Some(fd);
        Ok(raw as u64)
    })?;
    let kind = FileKind::from_mode(stat_of(&st).st_mode);
    let file = if kind == FileKind::Directory {
        // Its canonical path inside the root, for relative lookups and for
        // classifying them: a follower without the host descriptor (the
        // leader's) takes the leader's.
        let mut name = [0u8; PATH_MAX];
        let n = k.host_call(false, &mut name, |k, out| {
            let g = k.sandbox.guest_path(owned.as_ref().map_or(-1, |f| f.as_raw_fd()));
            let n = g.len().min(out.len());
            out[..n].copy_from_slice(&g[..n]);
            Ok(n as u64)
        })?;
        OpenFile::directory(owned, remote, &name[..(n as usize).min(PATH_MAX)])
    } else {
        OpenFile::rooted(owned, kind, remote)
    };
    k.fds().insert(file, flags & libc::O_CLOEXEC != 0, 0)
}

/// An open that may create a file that needs an overlay (set-id bits, or a
/// creator whose ids are not the host's): exclusively first, so that only a
/// file it created gets it.
fn open_creating(
    k: &Kernel,
    base: &[u8],
    path: &[u8],
    flags: i32,
    mode: u32,
    ov: identity::Overlay,
) -> SysResult<(OwnedFd, libc::stat)> {
    match k.sandbox.open(base, path, flags | libc::O_EXCL, mode) {
        Ok((fd, s)) => {
            if ov.setid != 0 {
                identity::write(fd.as_raw_fd(), s.st_mode, &ov)?;
            } else {
                // Only the creator's ids: best effort, as identity::created_at.
                let _ = identity::write(fd.as_raw_fd(), s.st_mode, &ov);
            }
            Ok((fd, s))
        }
        Err(Errno::EEXIST) if flags & libc::O_EXCL == 0 => k.sandbox.open(base, path, flags, mode),
        Err(e) => Err(e),
    }
}

pub fn open(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    do_open(k, AT_FDCWD, a[0], a[1] as i32, a[2] as u32)
}

pub fn openat(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    do_open(k, dirfd_arg(a[0]), a[1], a[2] as i32, a[3] as u32)
}

pub fn creat(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    do_open(k, AT_FDCWD, a[0], libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC, a[1] as u32)
}

fn stat_at(k: &mut Kernel, dirfd: i32, pathva: u64, buf: u64, flags: u64) -> SysResult {
    if flags & !(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH | AT_NO_AUTOMOUNT) != 0 {
        return Err(Errno::EINVAL);
    }
    let remote = k.dirfd_remote(dirfd);
    let mut st = [0u8; STAT_SIZE];
    k.host_call(remote, &mut st, |k, out| {
        let (_fd, mut s, raw) = k.lookup_at(dirfd, pathva, flags, true)?;
        identity::overlay_stat(raw, &mut s);
        out.copy_from_slice(s.as_bytes());
        Ok(0)
    })?;
    k.mm.write_user(buf, &st).map(|_| 0)
}

pub fn stat(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    stat_at(k, AT_FDCWD, a[0], a[1], 0)
}

pub fn lstat(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    stat_at(k, AT_FDCWD, a[0], a[1], AT_SYMLINK_NOFOLLOW)
}

pub fn newfstatat(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    stat_at(k, dirfd_arg(a[0]), a[1], a[2], a[3])
}

pub fn statx(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let flags = a[2];
    if flags & !(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH | AT_NO_AUTOMOUNT | AT_STATX_SYNC_TYPE) != 0 {
        return Err(Errno::EINVAL);
    }
    let dirfd = dirfd_arg(a[0]);
    let remote = k.dirfd_remote(dirfd);
    let mut out = [0u8; std::mem::size_of::<libc::statx>()];
    k.host_call(remote, &mut out, |k, out| {
        let (_fd, _, raw) = k.lookup_at(dirfd, a[1], flags, true)?;
        let mut sx: libc::statx = zeroed();
        // SAFETY: raw is an open descriptor, "" with AT_EMPTY_PATH names it; sx is a valid out-parameter.
        check(unsafe {
            libc::statx(raw, c"".as_ptr(), (AT_EMPTY_PATH | (flags & AT_STATX_SYNC_TYPE)) as i32, a[3] as u32, &mut sx)
        } as i64)?;
        identity::overlay_statx(raw, &mut sx);
        out.copy_from_slice(sx.as_bytes());
        Ok(0)
    })?;
    k.mm.write_user(a[4], &out).map(|_| 0)
}

fn readlink_at(k: &mut Kernel, dirfd: i32, pathva: u64, buf: u64, size: u64) -> SysResult {
    let size = size as u32 as i32;
    if size <= 0 {
        return Err(Errno::EINVAL);
    }
    let path = k.path_arg(pathva)?;
    let mut t = vec![0u8; PATH_MAX];
    let n = k.host_call(false, &mut t, |k, out| {
        if path == SELF_EXE {
            let e = &k.tg().exe;
            out[..e.len()].copy_from_slice(e);
            return Ok(e.len() as u64);
        }
        let base = k.base_dir(dirfd, &path)?;
        let (fd, st) = k.sandbox.lookup(&base, &path, false)?;
        if st.st_mode & libc::S_IFMT != libc::S_IFLNK {
            return Err(Errno::EINVAL);
        }
        // SAFETY: fd is an O_PATH descriptor of the link; out has PATH_MAX bytes.
        check(unsafe { libc::readlinkat(fd.as_raw_fd(), c"".as_ptr(), out.as_mut_ptr().cast(), out.len()) } as i64)
    })? as usize;
    let n = n.min(size as usize).min(PATH_MAX);
    k.mm.write_user(buf, &t[..n])?;
    Ok(n as u64)
}

pub fn readlink(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    readlink_at(k, AT_FDCWD, a[0], a[1], a[2])
}

pub fn readlinkat(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    readlink_at(k, dirfd_arg(a[0]), a[1], a[2], a[3])
}

fn access_at(k: &mut Kernel, dirfd: i32, pathva: u64, mode: u64, flags: u64) -> SysResult {
    if mode & !7 != 0 || flags & !(AT_SYMLINK_NOFOLLOW | AT_EACCESS | AT_EMPTY_PATH) != 0 {
        return Err(Errno::EINVAL);
    }
    let remote = k.dirfd_remote(dirfd);
    k.host_call(remote, &mut [], |k, _| {
        let (_fd, st, raw) = k.lookup_at(dirfd, pathva, flags, true)?;
        if mode & 2 != 0 && !k.sandbox.writable() && st.st_mode & libc::S_IFMT != libc::S_IFCHR {
            return Err(Errno::EROFS);
        }
        // SAFETY: raw is open; "" with AT_EMPTY_PATH names it.
        check(unsafe {
            libc::syscall(
                libc::SYS_faccessat2,
                raw,
                c"".as_ptr(),
                mode as i32,
                (AT_EMPTY_PATH | (flags & AT_EACCESS)) as i32,
            )
        })
    })
}

pub fn access(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    access_at(k, AT_FDCWD, a[0], a[1], 0)
}

pub fn faccessat(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    access_at(k, dirfd_arg(a[0]), a[1], a[2], 0)
}

pub fn faccessat2(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    access_at(k, dirfd_arg(a[0]), a[1], a[2], a[3])
}

pub fn getcwd(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let need = k.cwd().len() + 1;
    if (a[1] as usize) < need {
        return Err(Errno::ERANGE);
    }
    let mut s = k.cwd();
    s.push(0);
    k.mm.write_user(a[0], &s)?;
    Ok(need as u64)
}

pub fn chdir(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let path = k.path_arg(a[0])?;
    let base = k.base_dir(AT_FDCWD, &path)?;
    let (fd, st) = k.sandbox.lookup(&base, &path, true)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
        return Err(Errno::ENOTDIR);
    }
    let cwd = k.sandbox.guest_path(fd.as_raw_fd());
    k.fs().cwd = cwd;
    Ok(0)
}

pub fn fchdir(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let f = k.fds().file(fd_arg(a[0]))?.clone();
    if f.kind != FileKind::Directory {
        return Err(Errno::ENOTDIR);
    }
    let cwd = f.path().map_or_else(|| k.sandbox.guest_path(f.raw()), <[u8]>::to_vec);
    k.fs().cwd = cwd;
    Ok(0)
}

fn entry_at(k: &mut Kernel, dirfd: i32, pathva: u64, op: EntryOp) -> SysResult<(OwnedFd, CString)> {
    let path = k.path_arg(pathva)?;
    let base = k.base_dir(dirfd, &path)?;
    k.sandbox.parent(&base, &path, op)
}

/// Creates or modifies a directory entry: the leader's, under the policy.
fn unlink_at(k: &mut Kernel, dirfd: i32, pathva: u64, flags: u64) -> SysResult {
    k.host_call(false, &mut [], |k, _| unlink_at_host(k, dirfd, pathva, flags))
}

fn unlink_at_host(k: &mut Kernel, dirfd: i32, pathva: u64, flags: u64) -> SysResult {
    if flags & !AT_REMOVEDIR != 0 {
        return Err(Errno::EINVAL);
    }
    let op = if flags & AT_REMOVEDIR != 0 { EntryOp::RemoveDir } else { EntryOp::Unlink };
    let (dir, name) = entry_at(k, dirfd, pathva, op)?;
    // SAFETY: dir is an open directory; name a valid C string.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags as i32) } as i64)
}

pub fn unlink(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    unlink_at(k, AT_FDCWD, a[0], 0)
}

pub fn unlinkat(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    unlink_at(k, dirfd_arg(a[0]), a[1], a[2])
}

pub fn rmdir(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    unlink_at(k, AT_FDCWD, a[0], AT_REMOVEDIR)
}

/// Creates or modifies a directory entry: the leader's, under the policy.
fn mkdir_at(k: &mut Kernel, dirfd: i32, pathva: u64, mode: u64) -> SysResult {
    k.host_call(false, &mut [], |k, _| mkdir_at_host(k, dirfd, pathva, mode))
}

fn mkdir_at_host(k: &mut Kernel, dirfd: i32, pathva: u64, mode: u64) -> SysResult {
    let (dir, name) = entry_at(k, dirfd, pathva, EntryOp::Create)?;
    // As Linux, mkdir takes no set-id bits from its mode.
    let mode = mode as u32 & 0o1777 & !k.fs().umask;
    // SAFETY: dir is an open directory; name a valid C string.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) } as i64)?;
    identity::created_at(&k.tg().creds.clone(), dir.as_raw_fd(), &name);
    Ok(0)
}

pub fn mkdir(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    mkdir_at(k, AT_FDCWD, a[0], a[1])
}

pub fn mkdirat(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    mkdir_at(k, dirfd_arg(a[0]), a[1], a[2])
}

/// Creates or modifies a directory entry: the leader's, under the policy.
fn rename_at(k: &mut Kernel, od: i32, ov: u64, nd: i32, nv: u64, flags: u64) -> SysResult {
    k.host_call(false, &mut [], |k, _| rename_at_host(k, od, ov, nd, nv, flags))
}

fn rename_at_host(k: &mut Kernel, od: i32, ov: u64, nd: i32, nv: u64, flags: u64) -> SysResult {
    const RENAME_NOREPLACE: u64 = 1;
    const RENAME_EXCHANGE: u64 = 2;
    if flags & !(RENAME_NOREPLACE | RENAME_EXCHANGE) != 0 {
        return Err(Errno::EINVAL);
    }
    let (odir, oname) = entry_at(k, od, ov, EntryOp::Rename)?;
    let (ndir, nname) = entry_at(k, nd, nv, EntryOp::Rename)?;
    // SAFETY: both directories are open; names are valid C strings.
    check(unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            odir.as_raw_fd(),
            oname.as_ptr(),
            ndir.as_raw_fd(),
            nname.as_ptr(),
            flags as u32,
        )
    })
}

pub fn rename(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    rename_at(k, AT_FDCWD, a[0], AT_FDCWD, a[1], 0)
}

pub fn renameat(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    rename_at(k, dirfd_arg(a[0]), a[1], dirfd_arg(a[2]), a[3], 0)
}

pub fn renameat2(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    rename_at(k, dirfd_arg(a[0]), a[1], dirfd_arg(a[2]), a[3], a[4])
}

/// Creates or modifies a directory entry: the leader's, under the policy.
fn symlink_at(k: &mut Kernel, target: u64, dirfd: i32, pathva: u64) -> SysResult {
    k.host_call(false, &mut [], |k, _| symlink_at_host(k, target, dirfd, pathva))
}

fn symlink_at_host(k: &mut Kernel, target: u64, dirfd: i32, pathva: u64) -> SysResult {
    let t = cstr(&k.path_arg(target)?)?;
    let (dir, name) = entry_at(k, dirfd, pathva, EntryOp::Create)?;
    // SAFETY: dir is open; both strings are valid C strings.
    check(unsafe { libc::symlinkat(t.as_ptr(), dir.as_raw_fd(), name.as_ptr()) } as i64)
}

pub fn symlink(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    symlink_at(k, a[0], AT_FDCWD, a[1])
}

pub fn symlinkat(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    symlink_at(k, a[0], dirfd_arg(a[1]), a[2])
}

/// Creates or modifies a directory entry: the leader's, under the policy.
fn link_at(k: &mut Kernel, od: i32, ov: u64, nd: i32, nv: u64, flags: u64) -> SysResult {
    k.host_call(false, &mut [], |k, _| link_at_host(k, od, ov, nd, nv, flags))
}

fn link_at_host(k: &mut Kernel, od: i32, ov: u64, nd: i32, nv: u64, flags: u64) -> SysResult {
    if flags & !(AT_SYMLINK_FOLLOW | AT_EMPTY_PATH) != 0 {
        return Err(Errno::EINVAL);
    }
    let (dir, name) = entry_at(k, nd, nv, EntryOp::Create)?;
    let (fd, _, raw) = k.lookup_at(od, ov, flags, false)?;
    if fd.is_none() && !k.fds().file(fd_arg(od as u64))?.in_root() {
        // An inherited descriptor (a host file outside the root) gets no
        // name inside it; Linux says so of a pipe.
        return Err(Errno::ENOENT);
    }
    // SAFETY: raw is an open O_PATH descriptor named by "" with AT_EMPTY_PATH;
    // dir is open and name a valid C string.
    check(unsafe { libc::linkat(raw, c"".as_ptr(), dir.as_raw_fd(), name.as_ptr(), AT_EMPTY_PATH as i32) } as i64)
}

pub fn link(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    link_at(k, AT_FDCWD, a[0], AT_FDCWD, a[1], 0)
}

pub fn linkat(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    link_at(k, dirfd_arg(a[0]), a[1], dirfd_arg(a[2]), a[3], a[4])
}

/// Looks a path up for a call that modifies the inode. A descriptor named
/// by AT_EMPTY_PATH must name a file inside the root.
fn modify_target(k: &mut Kernel, dirfd: i32, pathva: u64, flags: u64) -> SysResult<(Option<OwnedFd>, libc::stat, i32)> {
    let (fd, st, raw) = k.lookup_at(dirfd, pathva, flags, true)?;
    if fd.is_none() && !k.fds().file(fd_arg(dirfd as u64))?.in_root() {
        return Err(Errno::EPERM);
    }
    if !k.sandbox.writable() {
        return Err(Errno::EROFS);
    }
    Ok((fd, st, raw))
}

/// Creates or modifies a directory entry: the leader's, under the policy.
fn chmod_at(k: &mut Kernel, dirfd: i32, pathva: u64, mode: u64, flags: u64) -> SysResult {
    k.host_call(false, &mut [], |k, _| chmod_at_host(k, dirfd, pathva, mode, flags))
}

fn chmod_at_host(k: &mut Kernel, dirfd: i32, pathva: u64, mode: u64, flags: u64) -> SysResult {
    if flags & !AT_SYMLINK_NOFOLLOW != 0 {
        return Err(Errno::EINVAL);
    }
    // glibc's fchmodat(AT_SYMLINK_NOFOLLOW) chmods "/proc/self/fd/N" of an
    // O_PATH descriptor: the program's descriptor N.
    let path = k.path_arg(pathva)?;
    if let Some(raw) = k.base_dir(dirfd, &path).ok().and_then(|base| k.proc_fd_raw(&base, &path)) {
        if !k.sandbox.writable() {
            return Err(Errno::EROFS);
        }
        let raw = raw?;
        let host = std::ffi::CString::new(format!("/proc/self/fd/{raw}")).map_err(|_| Errno::EINVAL)?;
        let mut st: libc::stat = zeroed();
        // SAFETY: raw is an open host descriptor; st a valid out-parameter.
        check(unsafe { libc::fstat(raw, &mut st) } as i64)?;
        let creds = k.tg().creds.clone();
        // As any chmod: the program's credentials decide, set-id bits go to
        // the overlay.
        return identity::chmod(&creds, raw, &st, mode as u32, |m| {
            // SAFETY: the path names the VMM's own descriptor; m is plain data.
            check(unsafe { libc::chmod(host.as_ptr(), m) } as i64)
        });
    }
    let (fd, st, raw) = modify_target(k, dirfd, pathva, flags)?;
    let fd = fd.ok_or(Errno::EBADF)?;
    let creds = k.tg().creds.clone();
    identity::chmod(&creds, raw, &st, mode as u32, |m| {
        // SAFETY: the path names the VMM's own descriptor; m is plain data.
        check(unsafe { libc::chmod(proc_fd_path(&fd).as_ptr(), m) } as i64)
    })
}

pub fn chmod(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    chmod_at(k, AT_FDCWD, a[0], a[1], 0)
}

pub fn fchmodat(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    chmod_at(k, dirfd_arg(a[0]), a[1], a[2], 0)
}

pub fn truncate(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let remote = false;
    k.host_call(remote, &mut [], |k, _| truncate_host(k, a))
}

fn truncate_host(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let (fd, _, _) = modify_target(k, AT_FDCWD, a[0], 0)?;
    let fd = fd.ok_or(Errno::EBADF)?;
    // SAFETY: the path names the VMM's own descriptor.
    check(unsafe { libc::truncate(proc_fd_path(&fd).as_ptr(), a[1] as i64) } as i64)
}

pub fn utimensat(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    // A null path is futimens on the descriptor.
    let remote = a[1] == 0 && k.dirfd_remote(dirfd_arg(a[0]));
    k.host_call(remote, &mut [], |k, _| utimensat_host(k, a))
}

fn utimensat_host(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let times: Option<[libc::timespec; 2]> = if a[2] == 0 { None } else { Some(k.mm.read_val(a[2])?) };
    let tp = times.as_ref().map_or(std::ptr::null(), |t| t.as_ptr());
    if a[1] == 0 {
        // futimens on dirfd: a file inside the root only.
        let f = k.fds().file(fd_arg(a[0]))?.clone();
        if !f.in_root() {
            return Err(Errno::EPERM);
        }
        let raw = f.raw();
        if !k.sandbox.writable() {
            return Err(Errno::EROFS);
        }
        // SAFETY: raw is open; tp is null or two timespecs.
        return check(unsafe { libc::futimens(raw, tp) } as i64);
    }
    let (fd, _, _) = modify_target(k, dirfd_arg(a[0]), a[1], a[3] & AT_SYMLINK_NOFOLLOW)?;
    let fd = fd.ok_or(Errno::EBADF)?;
    // SAFETY: the path names the VMM's own descriptor; tp is null or two timespecs.
    check(unsafe { libc::utimensat(libc::AT_FDCWD, proc_fd_path(&fd).as_ptr(), tp, 0) } as i64)
}

pub fn statfs(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let mut out = [0u8; std::mem::size_of::<libc::statfs>()];
    k.host_call(false, &mut out, |k, out| {
        let (_fd, _, raw) = k.lookup_at(AT_FDCWD, a[0], 0, true)?;
        host_statfs(raw, out)
    })?;
    k.mm.write_user(a[1], &out).map(|_| 0)
}

pub(super) fn host_statfs(raw: i32, out: &mut [u8]) -> SysResult {
    let mut s: libc::statfs = zeroed();
    // SAFETY: raw is open; s is a valid out-parameter.
    check(unsafe { libc::fstatfs(raw, &mut s) } as i64)?;
    out.copy_from_slice(s.as_bytes());
    Ok(0)
}

/// Creates or modifies a directory entry: the leader's, under the policy.
fn chown_at(k: &mut Kernel, dirfd: i32, pathva: u64, uid: u64, gid: u64, flags: u64) -> SysResult {
    k.host_call(false, &mut [], |k, _| chown_at_host(k, dirfd, pathva, uid, gid, flags))
}

fn chown_at_host(k: &mut Kernel, dirfd: i32, pathva: u64, uid: u64, gid: u64, flags: u64) -> SysResult {
    if flags & !(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH) != 0 {
        return Err(Errno::EINVAL);
    }
    let (_fd, st, raw) = modify_target(k, dirfd, pathva, flags)?;
    // The owner is virtual: the host's never changes.
    let creds = k.tg().creds.clone();
    identity::chown(&creds, raw, &st, uid as u32, gid as u32)
}

pub fn chown(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    chown_at(k, AT_FDCWD, a[0], a[1], a[2], 0)
}

pub fn lchown(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    chown_at(k, AT_FDCWD, a[0], a[1], a[2], AT_SYMLINK_NOFOLLOW)
}

pub fn fchownat(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    chown_at(k, dirfd_arg(a[0]), a[1], a[2], a[3], a[4])
}

/// mknod: regular files, FIFOs and socket names, inside the root. Device
/// nodes never reach the host, whoever the program is inside.
fn mknod_at(k: &mut Kernel, dirfd: i32, pathva: u64, mode: u64) -> SysResult {
    k.host_call(false, &mut [], |k, _| mknod_at_host(k, dirfd, pathva, mode))
}

fn mknod_at_host(k: &mut Kernel, dirfd: i32, pathva: u64, mode: u64) -> SysResult {
    let mode = mode as u32;
    let kind = match mode & libc::S_IFMT {
        0 | libc::S_IFREG => libc::S_IFREG,
        k @ (libc::S_IFIFO | libc::S_IFSOCK) => k,
        libc::S_IFCHR | libc::S_IFBLK => return Err(Errno::EPERM),
        _ => return Err(Errno::EINVAL),
    };
    let (dir, name) = entry_at(k, dirfd, pathva, EntryOp::Create)?;
    let perm = mode & 0o1777 & !k.fs().umask;
    // SAFETY: dir is an open directory; name a valid C string; no device.
    check(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), kind | perm, 0) } as i64)?;
    identity::created_at(&k.tg().creds.clone(), dir.as_raw_fd(), &name);
    Ok(0)
}

pub fn mknod(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    mknod_at(k, AT_FDCWD, a[0], a[1])
}

pub fn mknodat(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    mknod_at(k, dirfd_arg(a[0]), a[1], a[2])
}
