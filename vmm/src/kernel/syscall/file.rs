//! File system calls, carried out on the host inside the sandbox.
//!
//! Data moves between the host kernel and guest memory directly (host
//! iovecs over guest frames), without a copy in the VMM and without
//! allocating on the way.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use super::super::errno::{check, Errno, SysResult};
use super::super::file::{Extra, FileKind, OpenFile};
use super::super::mm::{Mm, Pod};
use super::super::sandbox::{EntryOp, PATH_MAX};
use super::super::signal::{Signal, SIG_DFL};
use super::super::Kernel;
use super::Sys;
use crate::monitor::OpMode;

/// Linux caps one read or write at this many bytes.
pub(crate) const MAX_RW: u64 = 0x7fff_f000;
const AT_FDCWD: i32 = -100;
const AT_SYMLINK_NOFOLLOW: u64 = 0x100;
const AT_REMOVEDIR: u64 = 0x200;
const AT_SYMLINK_FOLLOW: u64 = 0x400;
const AT_NO_AUTOMOUNT: u64 = 0x800;
const AT_EMPTY_PATH: u64 = 0x1000;
const AT_EACCESS: u64 = 0x200;
const AT_STATX_SYNC_TYPE: u64 = 0x6000;
const UIO_MAXIOV: u64 = 1024;
const SELF_EXE: &[u8] = b"/proc/self/exe";

/// A descriptor argument: the kernel reads an `int`/`unsigned int`.
#[inline]
fn fd_arg(a: u64) -> u64 {
    a as u32 as u64
}

#[inline]
fn dirfd_arg(a: u64) -> i32 {
    a as u32 as i32
}

fn cstr(b: &[u8]) -> SysResult<CString> {
    CString::new(b).map_err(|_| Errno::EINVAL)
}

/// `/proc/self/fd/N` of a host descriptor, for host calls that have no
/// descriptor-relative form for O_PATH descriptors.
fn proc_fd_path(fd: &OwnedFd) -> CString {
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).expect("no NUL in a formatted number")
}

/// Size of `struct stat` on x86-64.
const STAT_SIZE: usize = std::mem::size_of::<libc::stat>();

fn stat_of(b: &[u8; STAT_SIZE]) -> libc::stat {
    let mut s: libc::stat = zeroed();
    s.as_bytes_mut().copy_from_slice(b);
    s
}

impl Kernel {
    /// Whether `dirfd` is a remote descriptor (operations relative to it
    /// are the leader's).
    fn dirfd_remote(&self, dirfd: i32) -> bool {
        dirfd != AT_FDCWD && self.fds().file(fd_arg(dirfd as u64)).is_ok_and(|f| f.remote)
    }

    /// A path argument (NUL-terminated, at most PATH_MAX).
    pub(crate) fn path_arg(&mut self, va: u64) -> SysResult<Vec<u8>> {
        self.mm.read_cstr(va, PATH_MAX - 1)
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

    /// Converts EPIPE into SIGPIPE where the program has not handled it.
    pub(crate) fn sigpipe(&self, r: SysResult) -> Sys {
        if r == Err(Errno::EPIPE)
            && self.tg().sighand.action(Signal::SIGPIPE).handler == SIG_DFL
            && self.task.sig.mask & (1 << 12) == 0
        {
            return Sys::Kill(Signal::SIGPIPE, "write to a pipe or socket with no reader".into());
        }
        r.into()
    }

    /// Host iovecs for the program's iovec array at `iov_va` (to be filled
    /// by the host when `into_guest`).
    pub(crate) fn gather(&mut self, iov_va: u64, cnt: u64, into_guest: bool) -> SysResult<()> {
        if cnt > UIO_MAXIOV {
            return Err(Errno::EINVAL);
        }
        self.iov.clear();
        let n = cnt as usize;
        self.bounce.resize(n * 16, 0);
        let mut bytes = std::mem::take(&mut self.bounce);
        let r = self.mm.read_user(iov_va, &mut bytes[..n * 16]);
        let out = r.and_then(|_| {
            let mut total: u64 = 0;
            for i in 0..n {
                let base = u64::from_le_bytes(bytes[i * 16..i * 16 + 8].try_into().expect("8 bytes"));
                let len = u64::from_le_bytes(bytes[i * 16 + 8..i * 16 + 16].try_into().expect("8 bytes"));
                total = total.checked_add(len).filter(|&t| t <= i64::MAX as u64).ok_or(Errno::EINVAL)?;
                if len == 0 {
                    continue;
                }
                let covered = self.mm.user_iov(base, len.min(MAX_RW), into_guest, &mut self.iov)?;
                if covered < len {
                    break;
                }
            }
            Ok(())
        });
        self.bounce = bytes;
        out
    }
}

fn zeroed<T: super::super::mm::Pod>() -> T {
    T::zeroed()
}

/// read/write and their positioned forms; `into_guest` for reads.
fn rw(k: &mut Kernel, fd: u64, buf: u64, count: u64, into_guest: bool, off: Option<i64>) -> SysResult {
    let file = k.fds().file(fd_arg(fd))?.clone();
    if let Some(o) = off {
        if o < 0 {
            return Err(Errno::EINVAL);
        }
    }
    k.iov.clear();
    if count > 0 {
        k.mm.user_iov(buf, count.min(MAX_RW), into_guest, &mut k.iov)?;
    } else {
        Mm::range_ok(buf, 0)?;
    }
    transfer(k, &file, into_guest, off)
}

/// Moves data between `file` and the guest memory in `k.iov`: into the
/// guest (a read) when `into_guest`. Replicated and held as the call's
/// policy says.
fn transfer(k: &mut Kernel, file: &Arc<OpenFile>, into_guest: bool, off: Option<i64>) -> SysResult {
    if !into_guest && k.holds_outputs(file) {
        return k.hold_output(file, off);
    }
    let raw = file.raw();
    k.host_call_iov(file.remote, None, |k, _| {
        if into_guest && !k.settle_if_blocking(file, false) {
            return Err(Errno::EINTR);
        }
        host_rw(k, raw, into_guest, off)
    })
}

/// The host half of `transfer`.
fn host_rw(k: &mut Kernel, raw: i32, into_guest: bool, off: Option<i64>) -> SysResult {
    let (iov, n) = k.iov.as_raw();
    // SAFETY: every iovec points into guest memory (built by Mm::user_iov,
    // bounds-checked) and stays valid during the call; the guest is stopped.
    let r = unsafe {
        match (!into_guest, off) {
            (false, None) => libc::readv(raw, iov, n),
            (true, None) => libc::writev(raw, iov, n),
            (false, Some(o)) => libc::preadv(raw, iov, n, o),
            (true, Some(o)) => libc::pwritev(raw, iov, n, o),
        }
    };
    check(r as i64)
}

pub fn read(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    rw(k, a[0], a[1], a[2], true, None)
}

pub fn write(k: &mut Kernel, a: &[u64; 6]) -> Sys {
    let r = rw(k, a[0], a[1], a[2], false, None);
    k.sigpipe(r)
}

pub fn pread64(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    rw(k, a[0], a[1], a[2], true, Some(a[3] as i64))
}

pub fn pwrite64(k: &mut Kernel, a: &[u64; 6]) -> Sys {
    let r = rw(k, a[0], a[1], a[2], false, Some(a[3] as i64));
    k.sigpipe(r)
}

fn rwv(k: &mut Kernel, a: &[u64; 6], into_guest: bool, off: Option<i64>) -> SysResult {
    let file = k.fds().file(fd_arg(a[0]))?.clone();
    if off.is_some_and(|o| o < 0) {
        return Err(Errno::EINVAL);
    }
    k.gather(a[1], a[2], into_guest)?;
    transfer(k, &file, into_guest, off)
}

pub fn readv(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    rwv(k, a, true, None)
}

pub fn writev(k: &mut Kernel, a: &[u64; 6]) -> Sys {
    let r = rwv(k, a, false, None);
    k.sigpipe(r)
}

pub fn preadv(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    rwv(k, a, true, Some(a[3] as i64))
}

pub fn pwritev(k: &mut Kernel, a: &[u64; 6]) -> Sys {
    let r = rwv(k, a, false, Some(a[3] as i64));
    k.sigpipe(r)
}

fn do_open(k: &mut Kernel, dirfd: i32, pathva: u64, flags: i32, mode: u32) -> SysResult {
    let path = k.path_arg(pathva)?;
    if flags & libc::O_ASYNC != 0 {
        // Would make the host send SIGIO to the VMM.
        return Err(Errno::EINVAL);
    }
    let mode = if flags & (libc::O_CREAT | libc::O_TMPFILE) != 0 { mode & 0o7777 & !k.fs().umask } else { 0 };
    // Files opened for writing (or under mutable paths) are the leader's.
    let remote = k.op_mode(false) != OpMode::Direct;
    let mut owned: Option<OwnedFd> = None;
    let mut st = [0u8; STAT_SIZE];
    k.host_call(false, &mut st, |k, out| {
        let base = k.base_dir(dirfd, &path)?;
        let path = if path == SELF_EXE { k.tg().exe.clone() } else { path.clone() };
        let (fd, s) = k.sandbox.open(&base, &path, flags & !libc::O_CLOEXEC, mode)?;
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
        OpenFile::make(owned, kind, Extra::None, remote)
    };
    k.fds().insert(file, flags & libc::O_CLOEXEC != 0, 0)
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

pub fn close(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    k.fds().close(fd_arg(a[0])).map(|_| 0)
}

pub fn fstat(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let f = k.fds().file(fd_arg(a[0]))?.clone();
    let mut st = [0u8; STAT_SIZE];
    k.host_call(f.remote, &mut st, |_, out| {
        let mut s: libc::stat = zeroed();
        // SAFETY: raw is open; s is a valid out-parameter.
        check(unsafe { libc::fstat(f.raw(), &mut s) } as i64)?;
        out.copy_from_slice(s.as_bytes());
        Ok(0)
    })?;
    k.mm.write_user(a[1], &st).map(|_| 0)
}

fn stat_at(k: &mut Kernel, dirfd: i32, pathva: u64, buf: u64, flags: u64) -> SysResult {
    if flags & !(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH | AT_NO_AUTOMOUNT) != 0 {
        return Err(Errno::EINVAL);
    }
    let remote = k.dirfd_remote(dirfd);
    let mut st = [0u8; STAT_SIZE];
    k.host_call(remote, &mut st, |k, out| {
        let (_fd, s, _) = k.lookup_at(dirfd, pathva, flags, true)?;
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
        out.copy_from_slice(sx.as_bytes());
        Ok(0)
    })?;
    k.mm.write_user(a[4], &out).map(|_| 0)
}

pub fn lseek(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let f = k.fds().file(fd_arg(a[0]))?.clone();
    k.host_call(f.remote, &mut [], |_, _| {
        // SAFETY: plain call on an open descriptor.
        check(unsafe { libc::lseek(f.raw(), a[1] as i64, a[2] as i32) })
    })
}

pub fn getdents64(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let f = k.fds().file(fd_arg(a[0]))?.clone();
    let count = (a[2] as u32 as usize).min(1 << 16);
    Mm::range_ok(a[1], count as u64)?;
    let mut data = vec![0u8; count];
    let n = k.host_call(f.remote, &mut data, |_, out| {
        // SAFETY: out has `count` writable bytes.
        check(unsafe { libc::syscall(libc::SYS_getdents64, f.raw(), out.as_mut_ptr(), count) })
    })?;
    k.mm.write_user(a[1], &data[..(n as usize).min(count)]).map(|_| n)
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

pub fn fcntl(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let fd = fd_arg(a[0]);
    let entry = k.fds().get(fd)?.clone();
    let f = entry.file.clone();
    let raw = f.raw();
    match a[1] as i32 {
        libc::F_DUPFD | libc::F_DUPFD_CLOEXEC => {
            let min = a[2] as u32 as usize;
            if min >= k.fds().limit {
                return Err(Errno::EINVAL);
            }
            k.fds().insert(entry.file, a[1] as i32 == libc::F_DUPFD_CLOEXEC, min)
        }
        libc::F_GETFD => Ok(entry.cloexec as u64),
        libc::F_SETFD => k.fds().set_cloexec(fd, a[2] & 1 != 0).map(|_| 0),
        libc::F_GETFL => k.host_call(f.remote, &mut [], |_, _| {
            // SAFETY: plain call on an open descriptor.
            let fl = check(unsafe { libc::fcntl(raw, libc::F_GETFL) } as i64)?;
            Ok(fl & !(libc::O_CLOEXEC as u64))
        }),
        libc::F_SETFL => {
            if a[2] as i32 & libc::O_ASYNC != 0 {
                return Err(Errno::EINVAL);
            }
            f.forget_flags();
            k.host_call(f.remote, &mut [], |_, _| {
                // SAFETY: plain call on an open descriptor.
                check(unsafe { libc::fcntl(raw, libc::F_SETFL, a[2] as i32) } as i64)
            })
        }
        cmd @ (libc::F_GETLK
        | libc::F_SETLK
        | libc::F_SETLKW
        | libc::F_OFD_GETLK
        | libc::F_OFD_SETLK
        | libc::F_OFD_SETLKW) => {
            let mut fl = [0u8; std::mem::size_of::<libc::flock>()];
            k.mm.read_user(a[2], &mut fl)?;
            k.host_call(f.remote, &mut fl, |_, fl| {
                // SAFETY: fl is a flock-sized buffer the kernel reads and writes.
                check(unsafe { libc::fcntl(raw, cmd, fl.as_mut_ptr()) } as i64)
            })?;
            if matches!(cmd, libc::F_GETLK | libc::F_OFD_GETLK) {
                k.mm.write_user(a[2], &fl)?;
            }
            Ok(0)
        }
        cmd @ (libc::F_GETPIPE_SZ | libc::F_SETPIPE_SZ) => k.host_call(f.remote, &mut [], |_, _| {
            // SAFETY: plain call on an open descriptor.
            check(unsafe { libc::fcntl(raw, cmd, a[2] as i32) } as i64)
        }),
        _ => Err(Errno::EINVAL),
    }
}

pub fn dup(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let f = k.fds().file(fd_arg(a[0]))?.clone();
    k.fds().insert(f, false, 0)
}

pub fn dup2(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let (old, new) = (fd_arg(a[0]), fd_arg(a[1]));
    let f = k.fds().file(old)?.clone();
    if old == new {
        return Ok(new);
    }
    k.fds().insert_at(new, f, false)
}

pub fn dup3(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let (old, new) = (fd_arg(a[0]), fd_arg(a[1]));
    if a[2] as i32 & !libc::O_CLOEXEC != 0 {
        return Err(Errno::EINVAL);
    }
    let f = k.fds().file(old)?.clone();
    if old == new {
        return Err(Errno::EINVAL);
    }
    k.fds().insert_at(new, f, a[2] as i32 & libc::O_CLOEXEC != 0)
}

fn do_pipe(k: &mut Kernel, va: u64, flags: i32) -> SysResult {
    if flags & !(libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_DIRECT) != 0 {
        return Err(Errno::EINVAL);
    }
    Mm::range_ok(va, 8)?;
    let mut fds = [0i32; 2];
    // SAFETY: fds is a valid 2-element out-parameter.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | (flags & (libc::O_NONBLOCK | libc::O_DIRECT))) }
        as i64)?;
    // SAFETY: both descriptors were just created and are owned by nobody else.
    let (r, w) = unsafe {
        (
            <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fds[0]),
            <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fds[1]),
        )
    };
    let cloexec = flags & libc::O_CLOEXEC != 0;
    let rfd = k.fds().insert(OpenFile::new(r, FileKind::Pipe), cloexec, 0)?;
    let wfd = match k.fds().insert(OpenFile::new(w, FileKind::Pipe), cloexec, 0) {
        Ok(w) => w,
        Err(e) => {
            let _ = k.fds().close(rfd);
            return Err(e);
        }
    };
    if let Err(e) = k.mm.write_val(va, &[rfd as i32, wfd as i32]) {
        let _ = k.fds().close(rfd);
        let _ = k.fds().close(wfd);
        return Err(e);
    }
    Ok(0)
}

pub fn pipe(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    do_pipe(k, a[0], 0)
}

pub fn pipe2(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    do_pipe(k, a[0], a[1] as i32)
}

pub fn ioctl(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let fd = fd_arg(a[0]);
    let f = k.fds().file(fd)?.clone();
    let raw = f.raw();
    let req = a[1] as u32 as u64;
    match req {
        libc::TCGETS => {
            let mut t = [0u8; std::mem::size_of::<libc::termios>()];
            k.host_call(f.remote, &mut t, |_, t| {
                // SAFETY: t is a termios-sized out-parameter for TCGETS.
                check(unsafe { libc::ioctl(raw, libc::TCGETS, t.as_mut_ptr()) } as i64)
            })?;
            k.mm.write_user(a[2], &t).map(|_| 0)
        }
        libc::TCSETS | libc::TCSETSW | libc::TCSETSF => {
            let t: libc::termios = k.mm.read_val(a[2])?;
            k.host_call(f.remote, &mut [], |_, _| {
                // SAFETY: t is a valid termios for the TCSETS family.
                check(unsafe { libc::ioctl(raw, req, &t) } as i64)
            })
        }
        libc::TIOCGWINSZ => {
            let mut w = [0u8; std::mem::size_of::<libc::winsize>()];
            k.host_call(f.remote, &mut w, |_, w| {
                // SAFETY: w is a winsize-sized out-parameter for TIOCGWINSZ.
                check(unsafe { libc::ioctl(raw, libc::TIOCGWINSZ, w.as_mut_ptr()) } as i64)
            })?;
            k.mm.write_user(a[2], &w).map(|_| 0)
        }
        libc::TIOCGPGRP => {
            k.host_call(f.remote, &mut [], |_, _| {
                let mut t: libc::termios = zeroed();
                // SAFETY: probing whether raw is a terminal.
                check(unsafe { libc::ioctl(raw, libc::TCGETS, &mut t) } as i64)
            })?;
            k.mm.write_val(a[2], &(k.task.tg.pid as i32)).map(|_| 0)
        }
        libc::FIONREAD => {
            let mut n = [0u8; 4];
            k.host_call(f.remote, &mut n, |_, n| {
                // SAFETY: n is an int-sized out-parameter.
                check(unsafe { libc::ioctl(raw, libc::FIONREAD, n.as_mut_ptr()) } as i64)
            })?;
            k.mm.write_user(a[2], &n).map(|_| 0)
        }
        libc::FIONBIO => {
            let on: i32 = k.mm.read_val(a[2])?;
            f.forget_flags();
            k.host_call(f.remote, &mut [], |_, _| {
                // SAFETY: on is a valid in-parameter.
                check(unsafe { libc::ioctl(raw, libc::FIONBIO, &on) } as i64)
            })
        }
        libc::FIOCLEX => k.fds().set_cloexec(fd, true).map(|_| 0),
        libc::FIONCLEX => k.fds().set_cloexec(fd, false).map(|_| 0),
        _ => Err(Errno::ENOTTY),
    }
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
    let mode = mode as u32 & 0o7777 & !k.fs().umask;
    // SAFETY: dir is an open directory; name a valid C string.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) } as i64)
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
    let (_fd, _, raw) = k.lookup_at(od, ov, flags, false)?;
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

/// Looks a path up for a call that modifies the inode.
fn modify_target(k: &mut Kernel, dirfd: i32, pathva: u64, flags: u64) -> SysResult<(Option<OwnedFd>, i32)> {
    let (fd, _st, raw) = k.lookup_at(dirfd, pathva, flags, true)?;
    if !k.sandbox.writable() {
        return Err(Errno::EROFS);
    }
    Ok((fd, raw))
}

/// Creates or modifies a directory entry: the leader's, under the policy.
fn chmod_at(k: &mut Kernel, dirfd: i32, pathva: u64, mode: u64, flags: u64) -> SysResult {
    k.host_call(false, &mut [], |k, _| chmod_at_host(k, dirfd, pathva, mode, flags))
}

fn chmod_at_host(k: &mut Kernel, dirfd: i32, pathva: u64, mode: u64, flags: u64) -> SysResult {
    if flags & !AT_SYMLINK_NOFOLLOW != 0 {
        return Err(Errno::EINVAL);
    }
    let (fd, _) = modify_target(k, dirfd, pathva, flags)?;
    let fd = fd.ok_or(Errno::EBADF)?;
    // SAFETY: the path names the VMM's own descriptor; mode is plain data.
    check(unsafe { libc::chmod(proc_fd_path(&fd).as_ptr(), mode as u32 & 0o7777) } as i64)
}

pub fn chmod(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    chmod_at(k, AT_FDCWD, a[0], a[1], 0)
}

pub fn fchmodat(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    chmod_at(k, dirfd_arg(a[0]), a[1], a[2], 0)
}

pub fn fchmod(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let remote = k.fds().file(fd_arg(a[0]))?.remote;
    k.host_call(remote, &mut [], |k, _| fchmod_host(k, a))
}

fn fchmod_host(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let raw = k.fds().file(fd_arg(a[0]))?.raw();
    if !k.sandbox.writable() {
        return Err(Errno::EROFS);
    }
    // SAFETY: plain call on an open descriptor.
    check(unsafe { libc::fchmod(raw, a[1] as u32 & 0o7777) } as i64)
}

pub fn truncate(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let remote = false;
    k.host_call(remote, &mut [], |k, _| truncate_host(k, a))
}

fn truncate_host(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let (fd, _) = modify_target(k, AT_FDCWD, a[0], 0)?;
    let fd = fd.ok_or(Errno::EBADF)?;
    // SAFETY: the path names the VMM's own descriptor.
    check(unsafe { libc::truncate(proc_fd_path(&fd).as_ptr(), a[1] as i64) } as i64)
}

pub fn ftruncate(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let remote = k.fds().file(fd_arg(a[0]))?.remote;
    k.host_call(remote, &mut [], |k, _| ftruncate_host(k, a))
}

fn ftruncate_host(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let raw = k.fds().file(fd_arg(a[0]))?.raw();
    // SAFETY: plain call on an open descriptor.
    check(unsafe { libc::ftruncate(raw, a[1] as i64) } as i64)
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
        // futimens on dirfd.
        let raw = k.fds().file(fd_arg(a[0]))?.raw();
        if !k.sandbox.writable() {
            return Err(Errno::EROFS);
        }
        // SAFETY: raw is open; tp is null or two timespecs.
        return check(unsafe { libc::futimens(raw, tp) } as i64);
    }
    let (fd, _) = modify_target(k, dirfd_arg(a[0]), a[1], a[3] & AT_SYMLINK_NOFOLLOW)?;
    let fd = fd.ok_or(Errno::EBADF)?;
    // SAFETY: the path names the VMM's own descriptor; tp is null or two timespecs.
    check(unsafe { libc::utimensat(libc::AT_FDCWD, proc_fd_path(&fd).as_ptr(), tp, 0) } as i64)
}

pub fn fsync(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let remote = k.fds().file(fd_arg(a[0]))?.remote;
    k.host_call(remote, &mut [], |k, _| fsync_host(k, a))
}

fn fsync_host(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let raw = k.fds().file(fd_arg(a[0]))?.raw();
    // SAFETY: plain call on an open descriptor.
    check(unsafe { libc::fsync(raw) } as i64)
}

pub fn sync(_k: &mut Kernel, _a: &[u64; 6]) -> SysResult {
    Ok(0)
}

pub fn statfs(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let mut out = [0u8; std::mem::size_of::<libc::statfs>()];
    k.host_call(false, &mut out, |k, out| {
        let (_fd, _, raw) = k.lookup_at(AT_FDCWD, a[0], 0, true)?;
        host_statfs(raw, out)
    })?;
    k.mm.write_user(a[1], &out).map(|_| 0)
}

fn host_statfs(raw: i32, out: &mut [u8]) -> SysResult {
    let mut s: libc::statfs = zeroed();
    // SAFETY: raw is open; s is a valid out-parameter.
    check(unsafe { libc::fstatfs(raw, &mut s) } as i64)?;
    out.copy_from_slice(s.as_bytes());
    Ok(0)
}

pub fn fstatfs(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let f = k.fds().file(fd_arg(a[0]))?.clone();
    let mut out = [0u8; std::mem::size_of::<libc::statfs>()];
    k.host_call(f.remote, &mut out, |_, out| host_statfs(f.raw(), out))?;
    k.mm.write_user(a[1], &out).map(|_| 0)
}

pub fn fadvise64(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    k.fds().file(fd_arg(a[0]))?;
    Ok(0)
}

pub fn flock(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let remote = k.fds().file(fd_arg(a[0]))?.remote;
    k.host_call(remote, &mut [], |k, _| flock_host(k, a))
}

fn flock_host(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let raw = k.fds().file(fd_arg(a[0]))?.raw();
    // SAFETY: plain call on an open descriptor.
    check(unsafe { libc::flock(raw, a[1] as i32) } as i64)
}

/// sendfile: from a local file to anything. Under output commit the data
/// is read and held like a write; followers replay the count and move
/// their own file position (or offset) as Linux would.
pub fn sendfile(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let out = k.fds().file(fd_arg(a[0]))?.clone();
    let inp = k.fds().file(fd_arg(a[1]))?.clone();
    let count = a[3].min(MAX_RW) as usize;
    let mut off: Option<i64> = if a[2] == 0 { None } else { Some(k.mm.read_val(a[2])?) };
    let n = if k.holds_outputs(&out) {
        // Read what sendfile would send, then hold it.
        let mut data = vec![0u8; count.min(1 << 20)];
        // SAFETY: data is a valid buffer of data.len() bytes; inp is open.
        let got = check(unsafe {
            match off {
                Some(o) => libc::pread(inp.raw(), data.as_mut_ptr().cast(), data.len(), o),
                None => libc::read(inp.raw(), data.as_mut_ptr().cast(), data.len()),
            }
        } as i64)?;
        data.truncate(got as usize);
        let base = data.as_mut_ptr();
        k.iov.clear();
        k.iov.push_host(base, got as usize);
        let r = k.hold_output(&out, None);
        drop(data);
        r?
    } else {
        let mode = k.op_mode(out.remote);
        let n = k.host_call(out.remote, &mut [], |_, _| {
            let ptr = off.as_mut().map_or(std::ptr::null_mut(), |o| o as *mut i64);
            // SAFETY: both descriptors are open; ptr is null or a valid offset.
            check(unsafe { libc::sendfile(out.raw(), inp.raw(), ptr, count) } as i64)
        })?;
        if mode == OpMode::Replay {
            // The leader moved its input position; move ours alike.
            match off.as_mut() {
                Some(o) => *o += n as i64,
                // SAFETY: plain call on an open descriptor.
                None => unsafe {
                    libc::lseek(inp.raw(), n as i64, libc::SEEK_CUR);
                },
            }
        }
        n
    };
    if let Some(o) = off {
        let o = if k.holds_outputs(&out) { o + n as i64 } else { o };
        k.mm.write_val(a[2], &o)?;
    }
    Ok(n)
}

pub fn umask(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let old = k.fs().umask;
    k.fs().umask = a[0] as u32 & 0o777;
    Ok(old as u64)
}

/// Creates or modifies a directory entry: the leader's, under the policy.
fn chown_at(k: &mut Kernel, dirfd: i32, pathva: u64, uid: u64, gid: u64, flags: u64) -> SysResult {
    k.host_call(false, &mut [], |k, _| chown_at_host(k, dirfd, pathva, uid, gid, flags))
}

fn chown_at_host(k: &mut Kernel, dirfd: i32, pathva: u64, uid: u64, gid: u64, flags: u64) -> SysResult {
    if flags & !(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH) != 0 {
        return Err(Errno::EINVAL);
    }
    let (_fd, raw) = modify_target(k, dirfd, pathva, flags)?;
    // SAFETY: raw is an open (possibly O_PATH) descriptor named by "" with AT_EMPTY_PATH.
    check(unsafe { libc::fchownat(raw, c"".as_ptr(), uid as u32, gid as u32, AT_EMPTY_PATH as i32) } as i64)
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

pub fn fchown(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let remote = k.fds().file(fd_arg(a[0]))?.remote;
    k.host_call(remote, &mut [], |k, _| fchown_host(k, a))
}

fn fchown_host(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let raw = k.fds().file(fd_arg(a[0]))?.raw();
    if !k.sandbox.writable() {
        return Err(Errno::EROFS);
    }
    // SAFETY: plain call on an open descriptor.
    check(unsafe { libc::fchown(raw, a[1] as u32, a[2] as u32) } as i64)
}
