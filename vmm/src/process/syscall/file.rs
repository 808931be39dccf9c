//! File system calls, carried out on the host inside the sandbox.
//!
//! Data moves between the host kernel and guest memory directly (host
//! iovecs over guest frames), without a copy in the VMM and without
//! allocating on the way.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};

use super::super::errno::{check, Errno, SysResult};
use super::super::fd::{Extra, FileKind, OpenFile};
use super::super::fs::{EntryOp, PATH_MAX};
use super::super::mm::{Mm, Pod};
use super::super::signal::{Signal, SIG_DFL};
use super::super::Process;
use super::Sys;
use crate::mvx::OpMode;

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

impl Process {
    /// Whether `dirfd` is a remote descriptor (operations relative to it
    /// are the leader's).
    fn dirfd_remote(&self, dirfd: i32) -> bool {
        dirfd != AT_FDCWD && self.fds.file(fd_arg(dirfd as u64)).is_ok_and(|f| f.remote)
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
            return Ok(self.cwd.clone());
        }
        let f = self.fds.file(fd_arg(dirfd as u64))?;
        if f.kind != FileKind::Directory {
            return Err(Errno::ENOTDIR);
        }
        Ok(self.sandbox.guest_path(f.raw()))
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
                let (fd, st) = self.sandbox.lookup(b"/", &self.cwd.clone(), true)?;
                return Ok((Some(fd), st, -1));
            } else {
                self.fds.file(fd_arg(dirfd as u64))?.raw()
            };
            let mut st: libc::stat = zeroed();
            // SAFETY: raw is an open host descriptor; st a valid out-parameter.
            check(unsafe { libc::fstat(raw, &mut st) } as i64)?;
            return Ok((None, st, raw));
        }
        let base = self.base_dir(dirfd, &path)?;
        let follow = if follow_default { flags & AT_SYMLINK_NOFOLLOW == 0 } else { flags & AT_SYMLINK_FOLLOW != 0 };
        let path = if path == SELF_EXE { self.exe.clone() } else { path };
        let (fd, st) = self.sandbox.lookup(&base, &path, follow)?;
        let raw = fd.as_raw_fd();
        Ok((Some(fd), st, raw))
    }

    /// Converts EPIPE into SIGPIPE where the program has not handled it.
    pub(crate) fn sigpipe(&self, r: SysResult) -> Sys {
        if r == Err(Errno::EPIPE)
            && self.signals.action(Signal::SIGPIPE).handler == SIG_DFL
            && self.signals.mask & (1 << 12) == 0
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
fn rw(p: &mut Process, fd: u64, buf: u64, count: u64, into_guest: bool, off: Option<i64>) -> SysResult {
    let file = p.fds.file(fd_arg(fd))?.clone();
    if let Some(o) = off {
        if o < 0 {
            return Err(Errno::EINVAL);
        }
    }
    p.iov.clear();
    if count > 0 {
        p.mm.user_iov(buf, count.min(MAX_RW), into_guest, &mut p.iov)?;
    } else {
        Mm::range_ok(buf, 0)?;
    }
    transfer(p, &file, into_guest, off)
}

/// Moves data between `file` and the guest memory in `p.iov`: into the
/// guest (a read) when `into_guest`. Replicated and held as the call's
/// policy says.
fn transfer(p: &mut Process, file: &std::rc::Rc<OpenFile>, into_guest: bool, off: Option<i64>) -> SysResult {
    if !into_guest && p.holds_outputs(file) {
        return p.hold_output(file, off);
    }
    let raw = file.raw();
    p.host_call_iov(file.remote, |p| {
        if into_guest && !p.settle_if_blocking(file, false) {
            return Err(Errno::EINTR);
        }
        host_rw(p, raw, into_guest, off)
    })
}

/// The host half of `transfer`.
fn host_rw(p: &mut Process, raw: i32, into_guest: bool, off: Option<i64>) -> SysResult {
    let (iov, n) = p.iov.as_raw();
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

pub fn read(p: &mut Process, a: &[u64; 6]) -> SysResult {
    rw(p, a[0], a[1], a[2], true, None)
}

pub fn write(p: &mut Process, a: &[u64; 6]) -> Sys {
    let r = rw(p, a[0], a[1], a[2], false, None);
    p.sigpipe(r)
}

pub fn pread64(p: &mut Process, a: &[u64; 6]) -> SysResult {
    rw(p, a[0], a[1], a[2], true, Some(a[3] as i64))
}

pub fn pwrite64(p: &mut Process, a: &[u64; 6]) -> Sys {
    let r = rw(p, a[0], a[1], a[2], false, Some(a[3] as i64));
    p.sigpipe(r)
}

fn rwv(p: &mut Process, a: &[u64; 6], into_guest: bool, off: Option<i64>) -> SysResult {
    let file = p.fds.file(fd_arg(a[0]))?.clone();
    if off.is_some_and(|o| o < 0) {
        return Err(Errno::EINVAL);
    }
    p.gather(a[1], a[2], into_guest)?;
    transfer(p, &file, into_guest, off)
}

pub fn readv(p: &mut Process, a: &[u64; 6]) -> SysResult {
    rwv(p, a, true, None)
}

pub fn writev(p: &mut Process, a: &[u64; 6]) -> Sys {
    let r = rwv(p, a, false, None);
    p.sigpipe(r)
}

pub fn preadv(p: &mut Process, a: &[u64; 6]) -> SysResult {
    rwv(p, a, true, Some(a[3] as i64))
}

pub fn pwritev(p: &mut Process, a: &[u64; 6]) -> Sys {
    let r = rwv(p, a, false, Some(a[3] as i64));
    p.sigpipe(r)
}

fn do_open(p: &mut Process, dirfd: i32, pathva: u64, flags: i32, mode: u32) -> SysResult {
    let path = p.path_arg(pathva)?;
    if flags & libc::O_ASYNC != 0 {
        // Would make the host send SIGIO to the VMM.
        return Err(Errno::EINVAL);
    }
    let mode = if flags & (libc::O_CREAT | libc::O_TMPFILE) != 0 { mode & 0o7777 & !p.umask } else { 0 };
    // Files opened for writing (or under mutable paths) are the leader's.
    let remote = p.op_mode(false) != OpMode::Direct;
    let mut owned: Option<OwnedFd> = None;
    let mut st = [0u8; STAT_SIZE];
    p.host_call(false, &mut st, |p, out| {
        let base = p.base_dir(dirfd, &path)?;
        let path = if path == SELF_EXE { p.exe.clone() } else { path.clone() };
        let (fd, s) = p.sandbox.open(&base, &path, flags & !libc::O_CLOEXEC, mode)?;
        out.copy_from_slice(s.as_bytes());
        let raw = fd.as_raw_fd();
        owned = Some(fd);
        Ok(raw as u64)
    })?;
    let kind = FileKind::from_mode(stat_of(&st).st_mode);
    p.fds.insert(OpenFile::make(owned, kind, Extra::None, remote), flags & libc::O_CLOEXEC != 0, 0)
}

pub fn open(p: &mut Process, a: &[u64; 6]) -> SysResult {
    do_open(p, AT_FDCWD, a[0], a[1] as i32, a[2] as u32)
}

pub fn openat(p: &mut Process, a: &[u64; 6]) -> SysResult {
    do_open(p, dirfd_arg(a[0]), a[1], a[2] as i32, a[3] as u32)
}

pub fn creat(p: &mut Process, a: &[u64; 6]) -> SysResult {
    do_open(p, AT_FDCWD, a[0], libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC, a[1] as u32)
}

pub fn close(p: &mut Process, a: &[u64; 6]) -> SysResult {
    p.fds.close(fd_arg(a[0])).map(|_| 0)
}

pub fn fstat(p: &mut Process, a: &[u64; 6]) -> SysResult {
    let f = p.fds.file(fd_arg(a[0]))?.clone();
    let mut st = [0u8; STAT_SIZE];
    p.host_call(f.remote, &mut st, |_, out| {
        let mut s: libc::stat = zeroed();
        // SAFETY: raw is open; s is a valid out-parameter.
        check(unsafe { libc::fstat(f.raw(), &mut s) } as i64)?;
        out.copy_from_slice(s.as_bytes());
        Ok(0)
    })?;
    p.mm.write_user(a[1], &st).map(|_| 0)
}

fn stat_at(p: &mut Process, dirfd: i32, pathva: u64, buf: u64, flags: u64) -> SysResult {
    if flags & !(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH | AT_NO_AUTOMOUNT) != 0 {
        return Err(Errno::EINVAL);
    }
    let remote = p.dirfd_remote(dirfd);
    let mut st = [0u8; STAT_SIZE];
    p.host_call(remote, &mut st, |p, out| {
        let (_fd, s, _) = p.lookup_at(dirfd, pathva, flags, true)?;
        out.copy_from_slice(s.as_bytes());
        Ok(0)
    })?;
    p.mm.write_user(buf, &st).map(|_| 0)
}

pub fn stat(p: &mut Process, a: &[u64; 6]) -> SysResult {
    stat_at(p, AT_FDCWD, a[0], a[1], 0)
}

pub fn lstat(p: &mut Process, a: &[u64; 6]) -> SysResult {
    stat_at(p, AT_FDCWD, a[0], a[1], AT_SYMLINK_NOFOLLOW)
}

pub fn newfstatat(p: &mut Process, a: &[u64; 6]) -> SysResult {
    stat_at(p, dirfd_arg(a[0]), a[1], a[2], a[3])
}

pub fn statx(p: &mut Process, a: &[u64; 6]) -> SysResult {
    let flags = a[2];
    if flags & !(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH | AT_NO_AUTOMOUNT | AT_STATX_SYNC_TYPE) != 0 {
        return Err(Errno::EINVAL);
    }
    let dirfd = dirfd_arg(a[0]);
    let remote = p.dirfd_remote(dirfd);
    let mut out = [0u8; std::mem::size_of::<libc::statx>()];
    p.host_call(remote, &mut out, |p, out| {
        let (_fd, _, raw) = p.lookup_at(dirfd, a[1], flags, true)?;
        let mut sx: libc::statx = zeroed();
        // SAFETY: raw is an open descriptor, "" with AT_EMPTY_PATH names it; sx is a valid out-parameter.
        check(unsafe {
            libc::statx(raw, c"".as_ptr(), (AT_EMPTY_PATH | (flags & AT_STATX_SYNC_TYPE)) as i32, a[3] as u32, &mut sx)
        } as i64)?;
        out.copy_from_slice(sx.as_bytes());
        Ok(0)
    })?;
    p.mm.write_user(a[4], &out).map(|_| 0)
}

pub fn lseek(p: &mut Process, a: &[u64; 6]) -> SysResult {
    let f = p.fds.file(fd_arg(a[0]))?.clone();
    p.host_call(f.remote, &mut [], |_, _| {
        // SAFETY: plain call on an open descriptor.
        check(unsafe { libc::lseek(f.raw(), a[1] as i64, a[2] as i32) })
    })
}

pub fn getdents64(p: &mut Process, a: &[u64; 6]) -> SysResult {
    let f = p.fds.file(fd_arg(a[0]))?.clone();
    let count = (a[2] as u32 as usize).min(1 << 16);
    Mm::range_ok(a[1], count as u64)?;
    let mut data = vec![0u8; count];
    let n = p.host_call(f.remote, &mut data, |_, out| {
        // SAFETY: out has `count` writable bytes.
        check(unsafe { libc::syscall(libc::SYS_getdents64, f.raw(), out.as_mut_ptr(), count) })
    })?;
    p.mm.write_user(a[1], &data[..(n as usize).min(count)]).map(|_| n)
}

fn readlink_at(p: &mut Process, dirfd: i32, pathva: u64, buf: u64, size: u64) -> SysResult {
    let size = size as u32 as i32;
    if size <= 0 {
        return Err(Errno::EINVAL);
    }
    let path = p.path_arg(pathva)?;
    let mut t = vec![0u8; PATH_MAX];
    let n = p.host_call(false, &mut t, |p, out| {
        if path == SELF_EXE {
            let e = &p.exe;
            out[..e.len()].copy_from_slice(e);
            return Ok(e.len() as u64);
        }
        let base = p.base_dir(dirfd, &path)?;
        let (fd, st) = p.sandbox.lookup(&base, &path, false)?;
        if st.st_mode & libc::S_IFMT != libc::S_IFLNK {
            return Err(Errno::EINVAL);
        }
        // SAFETY: fd is an O_PATH descriptor of the link; out has PATH_MAX bytes.
        check(unsafe { libc::readlinkat(fd.as_raw_fd(), c"".as_ptr(), out.as_mut_ptr().cast(), out.len()) } as i64)
    })? as usize;
    let n = n.min(size as usize).min(PATH_MAX);
    p.mm.write_user(buf, &t[..n])?;
    Ok(n as u64)
}

pub fn readlink(p: &mut Process, a: &[u64; 6]) -> SysResult {
    readlink_at(p, AT_FDCWD, a[0], a[1], a[2])
}

pub fn readlinkat(p: &mut Process, a: &[u64; 6]) -> SysResult {
    readlink_at(p, dirfd_arg(a[0]), a[1], a[2], a[3])
}

fn access_at(p: &mut Process, dirfd: i32, pathva: u64, mode: u64, flags: u64) -> SysResult {
    if mode & !7 != 0 || flags & !(AT_SYMLINK_NOFOLLOW | AT_EACCESS | AT_EMPTY_PATH) != 0 {
        return Err(Errno::EINVAL);
    }
    let remote = p.dirfd_remote(dirfd);
    p.host_call(remote, &mut [], |p, _| {
        let (_fd, st, raw) = p.lookup_at(dirfd, pathva, flags, true)?;
        if mode & 2 != 0 && !p.sandbox.writable() && st.st_mode & libc::S_IFMT != libc::S_IFCHR {
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

pub fn access(p: &mut Process, a: &[u64; 6]) -> SysResult {
    access_at(p, AT_FDCWD, a[0], a[1], 0)
}

pub fn faccessat(p: &mut Process, a: &[u64; 6]) -> SysResult {
    access_at(p, dirfd_arg(a[0]), a[1], a[2], 0)
}

pub fn faccessat2(p: &mut Process, a: &[u64; 6]) -> SysResult {
    access_at(p, dirfd_arg(a[0]), a[1], a[2], a[3])
}

pub fn getcwd(p: &mut Process, a: &[u64; 6]) -> SysResult {
    let need = p.cwd.len() + 1;
    if (a[1] as usize) < need {
        return Err(Errno::ERANGE);
    }
    let mut s = p.cwd.clone();
    s.push(0);
    p.mm.write_user(a[0], &s)?;
    Ok(need as u64)
}

pub fn chdir(p: &mut Process, a: &[u64; 6]) -> SysResult {
    let path = p.path_arg(a[0])?;
    let base = p.base_dir(AT_FDCWD, &path)?;
    let (fd, st) = p.sandbox.lookup(&base, &path, true)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
        return Err(Errno::ENOTDIR);
    }
    p.cwd = p.sandbox.guest_path(fd.as_raw_fd());
    Ok(0)
}

pub fn fchdir(p: &mut Process, a: &[u64; 6]) -> SysResult {
    let f = p.fds.file(fd_arg(a[0]))?;
    if f.kind != FileKind::Directory {
        return Err(Errno::ENOTDIR);
    }
    p.cwd = p.sandbox.guest_path(f.raw());
    Ok(0)
}

pub fn fcntl(p: &mut Process, a: &[u64; 6]) -> SysResult {
    let fd = fd_arg(a[0]);
    let entry = p.fds.get(fd)?.clone();
    let f = entry.file.clone();
    let raw = f.raw();
    match a[1] as i32 {
        libc::F_DUPFD | libc::F_DUPFD_CLOEXEC => {
            let min = a[2] as u32 as usize;
            if min >= p.fds.limit {
                return Err(Errno::EINVAL);
            }
            p.fds.insert(entry.file, a[1] as i32 == libc::F_DUPFD_CLOEXEC, min)
        }
        libc::F_GETFD => Ok(entry.cloexec as u64),
        libc::F_SETFD => p.fds.set_cloexec(fd, a[2] & 1 != 0).map(|_| 0),
        libc::F_GETFL => p.host_call(f.remote, &mut [], |_, _| {
            // SAFETY: plain call on an open descriptor.
            let fl = check(unsafe { libc::fcntl(raw, libc::F_GETFL) } as i64)?;
            Ok(fl & !(libc::O_CLOEXEC as u64))
        }),
        libc::F_SETFL => {
            if a[2] as i32 & libc::O_ASYNC != 0 {
                return Err(Errno::EINVAL);
            }
            f.forget_flags();
            p.host_call(f.remote, &mut [], |_, _| {
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
            p.mm.read_user(a[2], &mut fl)?;
            p.host_call(f.remote, &mut fl, |_, fl| {
                // SAFETY: fl is a flock-sized buffer the kernel reads and writes.
                check(unsafe { libc::fcntl(raw, cmd, fl.as_mut_ptr()) } as i64)
            })?;
            if matches!(cmd, libc::F_GETLK | libc::F_OFD_GETLK) {
                p.mm.write_user(a[2], &fl)?;
            }
            Ok(0)
        }
        cmd @ (libc::F_GETPIPE_SZ | libc::F_SETPIPE_SZ) => p.host_call(f.remote, &mut [], |_, _| {
            // SAFETY: plain call on an open descriptor.
            check(unsafe { libc::fcntl(raw, cmd, a[2] as i32) } as i64)
        }),
        _ => Err(Errno::EINVAL),
    }
}

pub fn dup(p: &mut Process, a: &[u64; 6]) -> SysResult {
    let f = p.fds.file(fd_arg(a[0]))?.clone();
    p.fds.insert(f, false, 0)
}

pub fn dup2(p: &mut Process, a: &[u64; 6]) -> SysResult {
    let (old, new) = (fd_arg(a[0]), fd_arg(a[1]));
    let f = p.fds.file(old)?.clone();
    if old == new {
        return Ok(new);
    }
    p.fds.insert_at(new, f, false)
}

pub fn dup3(p: &mut Process, a: &[u64; 6]) -> SysResult {
    let (old, new) = (fd_arg(a[0]), fd_arg(a[1]));
    if a[2] as i32 & !libc::O_CLOEXEC != 0 {
        return Err(Errno::EINVAL);
    }
    let f = p.fds.file(old)?.clone();
    if old == new {
        return Err(Errno::EINVAL);
    }
    p.fds.insert_at(new, f, a[2] as i32 & libc::O_CLOEXEC != 0)
}

fn do_pipe(p: &mut Process, va: u64, flags: i32) -> SysResult {
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
    let rfd = p.fds.insert(OpenFile::new(r, FileKind::Pipe), cloexec, 0)?;
    let wfd = match p.fds.insert(OpenFile::new(w, FileKind::Pipe), cloexec, 0) {
        Ok(w) => w,
        Err(e) => {
            let _ = p.fds.close(rfd);
            return Err(e);
        }
    };
    if let Err(e) = p.mm.write_val(va, &[rfd as i32, wfd as i32]) {
        let _ = p.fds.close(rfd);
        let _ = p.fds.close(wfd);
        return Err(e);
    }
    Ok(0)
}

pub fn pipe(p: &mut Process, a: &[u64; 6]) -> SysResult {
    do_pipe(p, a[0], 0)
}

pub fn pipe2(p: &mut Process, a: &[u64; 6]) -> SysResult {
    do_pipe(p, a[0], a[1] as i32)
}

pub fn ioctl(p: &mut Process, a: &[u64; 6]) -> SysResult {
    let fd = fd_arg(a[0]);
    let f = p.fds.file(fd)?.clone();
    let raw = f.raw();
    let req = a[1] as u32 as u64;
    match req {
        libc::TCGETS => {
            let mut t = [0u8; std::mem::size_of::<libc::termios>()];
            p.host_call(f.remote, &mut t, |_, t| {
                // SAFETY: t is a termios-sized out-parameter for TCGETS.
                check(unsafe { libc::ioctl(raw, libc::TCGETS, t.as_mut_ptr()) } as i64)
            })?;
            p.mm.write_user(a[2], &t).map(|_| 0)
        }
        libc::TCSETS | libc::TCSETSW | libc::TCSETSF => {
            let t: libc::termios = p.mm.read_val(a[2])?;
            p.host_call(f.remote, &mut [], |_, _| {
                // SAFETY: t is a valid termios for the TCSETS family.
                check(unsafe { libc::ioctl(raw, req, &t) } as i64)
            })
        }
        libc::TIOCGWINSZ => {
            let mut w = [0u8; std::mem::size_of::<libc::winsize>()];
            p.host_call(f.remote, &mut w, |_, w| {
                // SAFETY: w is a winsize-sized out-parameter for TIOCGWINSZ.
                check(unsafe { libc::ioctl(raw, libc::TIOCGWINSZ, w.as_mut_ptr()) } as i64)
            })?;
            p.mm.write_user(a[2], &w).map(|_| 0)
        }
        libc::TIOCGPGRP => {
            p.host_call(f.remote, &mut [], |_, _| {
                let mut t: libc::termios = zeroed();
                // SAFETY: probing whether raw is a terminal.
                check(unsafe { libc::ioctl(raw, libc::TCGETS, &mut t) } as i64)
            })?;
            p.mm.write_val(a[2], &(p.ids.pid as i32)).map(|_| 0)
        }
        libc::FIONREAD => {
            let mut n = [0u8; 4];
            p.host_call(f.remote, &mut n, |_, n| {
                // SAFETY: n is an int-sized out-parameter.
                check(unsafe { libc::ioctl(raw, libc::FIONREAD, n.as_mut_ptr()) } as i64)
            })?;
            p.mm.write_user(a[2], &n).map(|_| 0)
        }
        libc::FIONBIO => {
            let on: i32 = p.mm.read_val(a[2])?;
            f.forget_flags();
            p.host_call(f.remote, &mut [], |_, _| {
                // SAFETY: on is a valid in-parameter.
                check(unsafe { libc::ioctl(raw, libc::FIONBIO, &on) } as i64)
            })
        }
        libc::FIOCLEX => p.fds.set_cloexec(fd, true).map(|_| 0),
        libc::FIONCLEX => p.fds.set_cloexec(fd, false).map(|_| 0),
        _ => Err(Errno::ENOTTY),
    }
}

fn entry_at(p: &mut Process, dirfd: i32, pathva: u64, op: EntryOp) -> SysResult<(OwnedFd, CString)> {
    let path = p.path_arg(pathva)?;
    let base = p.base_dir(dirfd, &path)?;
    p.sandbox.parent(&base, &path, op)
}

/// Creates or modifies a directory entry: the leader's, under the policy.
fn unlink_at(p: &mut Process, dirfd: i32, pathva: u64, flags: u64) -> SysResult {
    p.host_call(false, &mut [], |p, _| unlink_at_host(p, dirfd, pathva, flags))
}

fn unlink_at_host(p: &mut Process, dirfd: i32, pathva: u64, flags: u64) -> SysResult {
    if flags & !AT_REMOVEDIR != 0 {
        return Err(Errno::EINVAL);
    }
    let op = if flags & AT_REMOVEDIR != 0 { EntryOp::RemoveDir } else { EntryOp::Unlink };
    let (dir, name) = entry_at(p, dirfd, pathva, op)?;
    // SAFETY: dir is an open directory; name a valid C string.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags as i32) } as i64)
}

pub fn unlink(p: &mut Process, a: &[u64; 6]) -> SysResult {
    unlink_at(p, AT_FDCWD, a[0], 0)
}

pub fn unlinkat(p: &mut Process, a: &[u64; 6]) -> SysResult {
    unlink_at(p, dirfd_arg(a[0]), a[1], a[2])
}

pub fn rmdir(p: &mut Process, a: &[u64; 6]) -> SysResult {
    unlink_at(p, AT_FDCWD, a[0], AT_REMOVEDIR)
}

/// Creates or modifies a directory entry: the leader's, under the policy.
fn mkdir_at(p: &mut Process, dirfd: i32, pathva: u64, mode: u64) -> SysResult {
    p.host_call(false, &mut [], |p, _| mkdir_at_host(p, dirfd, pathva, mode))
}

fn mkdir_at_host(p: &mut Process, dirfd: i32, pathva: u64, mode: u64) -> SysResult {
    let (dir, name) = entry_at(p, dirfd, pathva, EntryOp::Create)?;
    let mode = mode as u32 & 0o7777 & !p.umask;
    // SAFETY: dir is an open directory; name a valid C string.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) } as i64)
}

pub fn mkdir(p: &mut Process, a: &[u64; 6]) -> SysResult {
    mkdir_at(p, AT_FDCWD, a[0], a[1])
}

pub fn mkdirat(p: &mut Process, a: &[u64; 6]) -> SysResult {
    mkdir_at(p, dirfd_arg(a[0]), a[1], a[2])
}

/// Creates or modifies a directory entry: the leader's, under the policy.
fn rename_at(p: &mut Process, od: i32, ov: u64, nd: i32, nv: u64, flags: u64) -> SysResult {
    p.host_call(false, &mut [], |p, _| rename_at_host(p, od, ov, nd, nv, flags))
}

fn rename_at_host(p: &mut Process, od: i32, ov: u64, nd: i32, nv: u64, flags: u64) -> SysResult {
    const RENAME_NOREPLACE: u64 = 1;
    const RENAME_EXCHANGE: u64 = 2;
    if flags & !(RENAME_NOREPLACE | RENAME_EXCHANGE) != 0 {
        return Err(Errno::EINVAL);
    }
    let (odir, oname) = entry_at(p, od, ov, EntryOp::Rename)?;
    let (ndir, nname) = entry_at(p, nd, nv, EntryOp::Rename)?;
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

pub fn rename(p: &mut Process, a: &[u64; 6]) -> SysResult {
    rename_at(p, AT_FDCWD, a[0], AT_FDCWD, a[1], 0)
}

pub fn renameat(p: &mut Process, a: &[u64; 6]) -> SysResult {
    rename_at(p, dirfd_arg(a[0]), a[1], dirfd_arg(a[2]), a[3], 0)
}

pub fn renameat2(p: &mut Process, a: &[u64; 6]) -> SysResult {
    rename_at(p, dirfd_arg(a[0]), a[1], dirfd_arg(a[2]), a[3], a[4])
}

/// Creates or modifies a directory entry: the leader's, under the policy.
fn symlink_at(p: &mut Process, target: u64, dirfd: i32, pathva: u64) -> SysResult {
    p.host_call(false, &mut [], |p, _| symlink_at_host(p, target, dirfd, pathva))
}

fn symlink_at_host(p: &mut Process, target: u64, dirfd: i32, pathva: u64) -> SysResult {
    let t = cstr(&p.path_arg(target)?)?;
    let (dir, name) = entry_at(p, dirfd, pathva, EntryOp::Create)?;
    // SAFETY: dir is open; both strings are valid C strings.
    check(unsafe { libc::symlinkat(t.as_ptr(), dir.as_raw_fd(), name.as_ptr()) } as i64)
}

pub fn symlink(p: &mut Process, a: &[u64; 6]) -> SysResult {
    symlink_at(p, a[0], AT_FDCWD, a[1])
}

pub fn symlinkat(p: &mut Process, a: &[u64; 6]) -> SysResult {
    symlink_at(p, a[0], dirfd_arg(a[1]), a[2])
}

/// Creates or modifies a directory entry: the leader's, under the policy.
fn link_at(p: &mut Process, od: i32, ov: u64, nd: i32, nv: u64, flags: u64) -> SysResult {
    p.host_call(false, &mut [], |p, _| link_at_host(p, od, ov, nd, nv, flags))
}

fn link_at_host(p: &mut Process, od: i32, ov: u64, nd: i32, nv: u64, flags: u64) -> SysResult {
    if flags & !(AT_SYMLINK_FOLLOW | AT_EMPTY_PATH) != 0 {
        return Err(Errno::EINVAL);
    }
    let (dir, name) = entry_at(p, nd, nv, EntryOp::Create)?;
    let (_fd, _, raw) = p.lookup_at(od, ov, flags, false)?;
    // SAFETY: raw is an open O_PATH descriptor named by "" with AT_EMPTY_PATH;
    // dir is open and name a valid C string.
    check(unsafe { libc::linkat(raw, c"".as_ptr(), dir.as_raw_fd(), name.as_ptr(), AT_EMPTY_PATH as i32) } as i64)
}

pub fn link(p: &mut Process, a: &[u64; 6]) -> SysResult {
    link_at(p, AT_FDCWD, a[0], AT_FDCWD, a[1], 0)
}

pub fn linkat(p: &mut Process, a: &[u64; 6]) -> SysResult {
    link_at(p, dirfd_arg(a[0]), a[1], dirfd_arg(a[2]), a[3], a[4])
}

/// Looks a path up for a call that modifies the inode.
fn modify_target(p: &mut Process, dirfd: i32, pathva: u64, flags: u64) -> SysResult<(Option<OwnedFd>, i32)> {
    let (fd, _st, raw) = p.lookup_at(dirfd, pathva, flags, true)?;
    if !p.sandbox.writable() {
        return Err(Errno::EROFS);
    }
    Ok((fd, raw))
}

/// Creates or modifies a directory entry: the leader's, under the policy.
fn chmod_at(p: &mut Process, dirfd: i32, pathva: u64, mode: u64, flags: u64) -> SysResult {
    p.host_call(false, &mut [], |p, _| chmod_at_host(p, dirfd, pathva, mode, flags))
}

fn chmod_at_host(p: &mut Process, dirfd: i32, pathva: u64, mode: u64, flags: u64) -> SysResult {
    if flags & !AT_SYMLINK_NOFOLLOW != 0 {
        return Err(Errno::EINVAL);
    }
    let (fd, _) = modify_target(p, dirfd, pathva, flags)?;
    let fd = fd.ok_or(Errno::EBADF)?;
    // SAFETY: the path names the VMM's own descriptor; mode is plain data.
    check(unsafe { libc::chmod(proc_fd_path(&fd).as_ptr(), mode as u32 & 0o7777) } as i64)
}

pub fn chmod(p: &mut Process, a: &[u64; 6]) -> SysResult {
    chmod_at(p, AT_FDCWD, a[0], a[1], 0)
}

pub fn fchmodat(p: &mut Process, a: &[u64; 6]) -> SysResult {
    chmod_at(p, dirfd_arg(a[0]), a[1], a[2], 0)
}

pub fn fchmod(p: &mut Process, a: &[u64; 6]) -> SysResult {
    let remote = p.fds.file(fd_arg(a[0]))?.remote;
    p.host_call(remote, &mut [], |p, _| fchmod_host(p, a))
}

fn fchmod_host(p: &mut Process, a: &[u64; 6]) -> SysResult {
    let raw = p.fds.file(fd_arg(a[0]))?.raw();
    if !p.sandbox.writable() {
        return Err(Errno::EROFS);
    }
    // SAFETY: plain call on an open descriptor.
    check(unsafe { libc::fchmod(raw, a[1] as u32 & 0o7777) } as i64)
}

pub fn truncate(p: &mut Process, a: &[u64; 6]) -> SysResult {
    let remote = false;
    p.host_call(remote, &mut [], |p, _| truncate_host(p, a))
}

fn truncate_host(p: &mut Process, a: &[u64; 6]) -> SysResult {
    let (fd, _) = modify_target(p, AT_FDCWD, a[0], 0)?;
    let fd = fd.ok_or(Errno::EBADF)?;
    // SAFETY: the path names the VMM's own descriptor.
    check(unsafe { libc::truncate(proc_fd_path(&fd).as_ptr(), a[1] as i64) } as i64)
}

pub fn ftruncate(p: &mut Process, a: &[u64; 6]) -> SysResult {
    let remote = p.fds.file(fd_arg(a[0]))?.remote;
    p.host_call(remote, &mut [], |p, _| ftruncate_host(p, a))
}

fn ftruncate_host(p: &mut Process, a: &[u64; 6]) -> SysResult {
    let raw = p.fds.file(fd_arg(a[0]))?.raw();
    // SAFETY: plain call on an open descriptor.
    check(unsafe { libc::ftruncate(raw, a[1] as i64) } as i64)
}

pub fn utimensat(p: &mut Process, a: &[u64; 6]) -> SysResult {
    // A null path is futimens on the descriptor.
    let remote = a[1] == 0 && p.dirfd_remote(dirfd_arg(a[0]));
    p.host_call(remote, &mut [], |p, _| utimensat_host(p, a))
}

fn utimensat_host(p: &mut Process, a: &[u64; 6]) -> SysResult {
    let times: Option<[libc::timespec; 2]> = if a[2] == 0 { None } else { Some(p.mm.read_val(a[2])?) };
    let tp = times.as_ref().map_or(std::ptr::null(), |t| t.as_ptr());
    if a[1] == 0 {
        // futimens on dirfd.
        let raw = p.fds.file(fd_arg(a[0]))?.raw();
        if !p.sandbox.writable() {
            return Err(Errno::EROFS);
        }
        // SAFETY: raw is open; tp is null or two timespecs.
        return check(unsafe { libc::futimens(raw, tp) } as i64);
    }
    let (fd, _) = modify_target(p, dirfd_arg(a[0]), a[1], a[3] & AT_SYMLINK_NOFOLLOW)?;
    let fd = fd.ok_or(Errno::EBADF)?;
    // SAFETY: the path names the VMM's own descriptor; tp is null or two timespecs.
    check(unsafe { libc::utimensat(libc::AT_FDCWD, proc_fd_path(&fd).as_ptr(), tp, 0) } as i64)
}

pub fn fsync(p: &mut Process, a: &[u64; 6]) -> SysResult {
    let remote = p.fds.file(fd_arg(a[0]))?.remote;
    p.host_call(remote, &mut [], |p, _| fsync_host(p, a))
}

fn fsync_host(p: &mut Process, a: &[u64; 6]) -> SysResult {
    let raw = p.fds.file(fd_arg(a[0]))?.raw();
    // SAFETY: plain call on an open descriptor.
    check(unsafe { libc::fsync(raw) } as i64)
}

pub fn sync(_p: &mut Process, _a: &[u64; 6]) -> SysResult {
    Ok(0)
}

pub fn statfs(p: &mut Process, a: &[u64; 6]) -> SysResult {
    let mut out = [0u8; std::mem::size_of::<libc::statfs>()];
    p.host_call(false, &mut out, |p, out| {
        let (_fd, _, raw) = p.lookup_at(AT_FDCWD, a[0], 0, true)?;
        host_statfs(raw, out)
    })?;
    p.mm.write_user(a[1], &out).map(|_| 0)
}

fn host_statfs(raw: i32, out: &mut [u8]) -> SysResult {
    let mut s: libc::statfs = zeroed();
    // SAFETY: raw is open; s is a valid out-parameter.
    check(unsafe { libc::fstatfs(raw, &mut s) } as i64)?;
    out.copy_from_slice(s.as_bytes());
    Ok(0)
}

pub fn fstatfs(p: &mut Process, a: &[u64; 6]) -> SysResult {
    let f = p.fds.file(fd_arg(a[0]))?.clone();
    let mut out = [0u8; std::mem::size_of::<libc::statfs>()];
    p.host_call(f.remote, &mut out, |_, out| host_statfs(f.raw(), out))?;
    p.mm.write_user(a[1], &out).map(|_| 0)
}

pub fn fadvise64(p: &mut Process, a: &[u64; 6]) -> SysResult {
    p.fds.file(fd_arg(a[0]))?;
    Ok(0)
}

pub fn flock(p: &mut Process, a: &[u64; 6]) -> SysResult {
    let remote = p.fds.file(fd_arg(a[0]))?.remote;
    p.host_call(remote, &mut [], |p, _| flock_host(p, a))
}

fn flock_host(p: &mut Process, a: &[u64; 6]) -> SysResult {
    let raw = p.fds.file(fd_arg(a[0]))?.raw();
    // SAFETY: plain call on an open descriptor.
    check(unsafe { libc::flock(raw, a[1] as i32) } as i64)
}

/// sendfile: from a local file to anything. Under output commit the data
/// is read and held like a write; followers replay the count and move
/// their own file position (or offset) as Linux would.
pub fn sendfile(p: &mut Process, a: &[u64; 6]) -> SysResult {
    let out = p.fds.file(fd_arg(a[0]))?.clone();
    let inp = p.fds.file(fd_arg(a[1]))?.clone();
    let count = a[3].min(MAX_RW) as usize;
    let mut off: Option<i64> = if a[2] == 0 { None } else { Some(p.mm.read_val(a[2])?) };
    let n = if p.holds_outputs(&out) {
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
        p.iov.clear();
        p.iov.push_host(base, got as usize);
        let r = p.hold_output(&out, None);
        drop(data);
        r?
    } else {
        let mode = p.op_mode(out.remote);
        let n = p.host_call(out.remote, &mut [], |_, _| {
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
        let o = if p.holds_outputs(&out) { o + n as i64 } else { o };
        p.mm.write_val(a[2], &o)?;
    }
    Ok(n)
}

pub fn umask(p: &mut Process, a: &[u64; 6]) -> SysResult {
    let old = p.umask;
    p.umask = a[0] as u32 & 0o777;
    Ok(old as u64)
}

/// Creates or modifies a directory entry: the leader's, under the policy.
fn chown_at(p: &mut Process, dirfd: i32, pathva: u64, uid: u64, gid: u64, flags: u64) -> SysResult {
    p.host_call(false, &mut [], |p, _| chown_at_host(p, dirfd, pathva, uid, gid, flags))
}

fn chown_at_host(p: &mut Process, dirfd: i32, pathva: u64, uid: u64, gid: u64, flags: u64) -> SysResult {
    if flags & !(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH) != 0 {
        return Err(Errno::EINVAL);
    }
    let (_fd, raw) = modify_target(p, dirfd, pathva, flags)?;
    // SAFETY: raw is an open (possibly O_PATH) descriptor named by "" with AT_EMPTY_PATH.
    check(unsafe { libc::fchownat(raw, c"".as_ptr(), uid as u32, gid as u32, AT_EMPTY_PATH as i32) } as i64)
}

pub fn chown(p: &mut Process, a: &[u64; 6]) -> SysResult {
    chown_at(p, AT_FDCWD, a[0], a[1], a[2], 0)
}

pub fn lchown(p: &mut Process, a: &[u64; 6]) -> SysResult {
    chown_at(p, AT_FDCWD, a[0], a[1], a[2], AT_SYMLINK_NOFOLLOW)
}

pub fn fchownat(p: &mut Process, a: &[u64; 6]) -> SysResult {
    chown_at(p, dirfd_arg(a[0]), a[1], a[2], a[3], a[4])
}

pub fn fchown(p: &mut Process, a: &[u64; 6]) -> SysResult {
    let remote = p.fds.file(fd_arg(a[0]))?.remote;
    p.host_call(remote, &mut [], |p, _| fchown_host(p, a))
}

fn fchown_host(p: &mut Process, a: &[u64; 6]) -> SysResult {
    let raw = p.fds.file(fd_arg(a[0]))?.raw();
    if !p.sandbox.writable() {
        return Err(Errno::EROFS);
    }
    // SAFETY: plain call on an open descriptor.
    check(unsafe { libc::fchown(raw, a[1] as u32, a[2] as u32) } as i64)
}
