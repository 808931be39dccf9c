//! Calls on descriptors: close, dup, fcntl, ioctl, pipes, locks, syncs,
//! and the metadata calls that act through a descriptor.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use super::super::errno::{check, Errno, SysResult};
use super::super::file::{Extra, FileKind, OpenFile};
use super::super::identity;
use super::super::mm::{Mm, Pod};
use super::super::Kernel;
use super::common::*;
use super::path::host_statfs;

/// Size of the kernel's `struct termios` (TCGETS/TCSETS), not glibc's.
pub(crate) const KERNEL_TERMIOS_SIZE: usize = 36;

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
        if f.in_root() {
            identity::overlay_stat(f.raw(), &mut s);
        }
        out.copy_from_slice(s.as_bytes());
        Ok(0)
    })?;
    k.mm.write_user(a[1], &st).map(|_| 0)
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
            let sets = !matches!(cmd, libc::F_GETLK | libc::F_OFD_GETLK);
            if sets && !f.in_root() {
                // A lock on a host file outside the root would reach the
                // host's other users of it.
                return Err(Errno::EINVAL);
            }
            if sets && !k.sandbox.writable() {
                // A lock on an immutable tree protects nothing; on the host
                // it would let the program stall the host's users of the file.
                let ty = i16::from_le_bytes([fl[0], fl[1]]);
                return match ty as i32 {
                    libc::F_RDLCK | libc::F_WRLCK | libc::F_UNLCK => Ok(0),
                    _ => Err(Errno::EINVAL),
                };
            }
            k.host_call(f.remote, &mut fl, |_, fl| {
                // SAFETY: fl is a flock-sized buffer the kernel reads and writes.
                check(unsafe { libc::fcntl(raw, cmd, fl.as_mut_ptr()) } as i64)
            })?;
            if matches!(cmd, libc::F_GETLK | libc::F_OFD_GETLK) {
                k.mm.write_user(a[2], &fl)?;
            }
            Ok(0)
        }
        // Remembered, never passed to the host (whose SIGIO would reach the
        // VMM): signal-driven I/O is not supported, so O_ASYNC stays refused
        // and no SIGIO is sent. nginx sets an owner on its channels.
        libc::F_GETOWN => Ok(f.owner() as i64 as u64),
        libc::F_SETOWN => {
            f.set_owner(a[2] as i32);
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
    // Every variant makes its own pipe. In a cluster what a read returns
    // depends on when the writer wrote, so followers take the leader's
    // results, and pass the same bytes through their own pipe
    // (`Kernel::follow_pipe`): their processes see each other's progress
    // in the leader's order.
    let mut fds = [0i32; 2];
    let fl = libc::O_CLOEXEC | (flags & (libc::O_NONBLOCK | libc::O_DIRECT));
    // SAFETY: fds is a valid 2-element out-parameter.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), fl) } as i64)?;
    // SAFETY: both descriptors were just created and are owned by nobody else.
    let (r, w) = unsafe {
        (
            Some(<OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fds[0])),
            Some(<OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fds[1])),
        )
    };
    let cloexec = flags & libc::O_CLOEXEC != 0;
    let rfd = k.adopt_ipc(r, FileKind::Pipe, Extra::None, cloexec)?;
    let wfd = match k.adopt_ipc(w, FileKind::Pipe, Extra::None, cloexec) {
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
            // The kernel's struct termios (36 bytes), not glibc's (60).
            let mut t = [0u8; KERNEL_TERMIOS_SIZE];
            k.host_call(f.remote, &mut t, |_, t| {
                let mut host = [0u8; 64];
                // SAFETY: host is larger than the kernel's termios TCGETS writes.
                check(unsafe { libc::ioctl(raw, libc::TCGETS, host.as_mut_ptr()) } as i64)?;
                t.copy_from_slice(&host[..KERNEL_TERMIOS_SIZE]);
                Ok(0)
            })?;
            k.mm.write_user(a[2], &t).map(|_| 0)
        }
        libc::TCSETS | libc::TCSETSW | libc::TCSETSF => {
            if !f.in_root() {
                // Changing a host terminal outlives the program: a query only.
                return Err(Errno::EPERM);
            }
            let mut host = [0u8; 64];
            k.mm.read_user(a[2], &mut host[..KERNEL_TERMIOS_SIZE])?;
            k.host_call(f.remote, &mut [], |_, _| {
                // SAFETY: host holds a kernel termios the TCSETS family reads.
                check(unsafe { libc::ioctl(raw, req, host.as_ptr()) } as i64)
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
                let mut t = [0u8; 64];
                // SAFETY: probing whether raw is a terminal; t is large enough.
                check(unsafe { libc::ioctl(raw, libc::TCGETS, t.as_mut_ptr()) } as i64)
            })?;
            // The terminal's foreground group is virtual (a shell's job control).
            k.mm.write_val(a[2], &(k.procs.fg_pgrp() as i32)).map(|_| 0)
        }
        libc::TIOCSPGRP => {
            let pgrp: i32 = k.mm.read_val(a[2])?;
            k.host_call(f.remote, &mut [], |_, _| {
                let mut t = [0u8; 64];
                // SAFETY: probing whether raw is a terminal; t is large enough.
                check(unsafe { libc::ioctl(raw, libc::TCGETS, t.as_mut_ptr()) } as i64)
            })?;
            if pgrp <= 0 {
                return Err(Errno::EINVAL);
            }
            let sid = k.procs.get(k.task.tg.pid).map(|p| p.sid);
            if k.procs.select(|p| p.pgid == pgrp as u32 && Some(p.sid) == sid).is_empty() {
                return Err(Errno::EPERM);
            }
            k.procs.set_fg_pgrp(pgrp as u32);
            Ok(0)
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
        // Turning signal-driven I/O off is a no-op; on is not supported
        // (see fcntl's F_SETOWN), but succeeds for sockets and pipes, as
        // nginx's master requires for its channels to its workers: no SIGIO
        // is ever sent.
        libc::FIOASYNC => {
            let _on: i32 = k.mm.read_val(a[2])?;
            match f.kind {
                FileKind::Socket | FileKind::Pipe => Ok(0),
                _ => Err(Errno::ENOTTY),
            }
        }
        libc::FIOCLEX => k.fds().set_cloexec(fd, true).map(|_| 0),
        libc::FIONCLEX => k.fds().set_cloexec(fd, false).map(|_| 0),
        // The interface queries of a socket (if_nametoindex and friends):
        // the virtual network's, as its netlink socket answers.
        libc::SIOCGIFINDEX | libc::SIOCGIFNAME | libc::SIOCGIFFLAGS | libc::SIOCGIFMTU
            if f.kind == FileKind::Socket =>
        {
            let mut ifr = [0u8; crate::kernel::netlink::IFREQ_SIZE];
            k.mm.read_user(a[2], &mut ifr)?;
            crate::kernel::netlink::interface_ioctl(req, &mut ifr)?;
            k.mm.write_user(a[2], &ifr).map(|_| 0)
        }
        _ => Err(Errno::ENOTTY),
    }
}

pub fn fchmod(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let remote = k.fds().file(fd_arg(a[0]))?.remote;
    k.host_call(remote, &mut [], |k, _| fchmod_host(k, a))
}

impl Kernel {
    /// The file behind `fd` for a call that modifies it: one inside the
    /// root (else `outside`, what Linux says of a pipe), in a writable root.
    fn modifiable(&self, fd: u64, outside: Errno) -> SysResult<Arc<OpenFile>> {
        let f = self.fds().file(fd_arg(fd))?.clone();
        if !f.in_root() {
            return Err(outside);
        }
        if !self.sandbox.writable() {
            return Err(Errno::EROFS);
        }
        Ok(f)
    }
}

/// The host stat of an open descriptor.
fn host_stat(raw: i32) -> SysResult<libc::stat> {
    let mut s: libc::stat = zeroed();
    // SAFETY: raw is open; s is a valid out-parameter.
    check(unsafe { libc::fstat(raw, &mut s) } as i64)?;
    Ok(s)
}

fn fchmod_host(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let raw = k.modifiable(a[0], Errno::EPERM)?.raw();
    let st = host_stat(raw)?;
    let creds = k.tg().creds.clone();
    identity::chmod(&creds, raw, &st, a[1] as u32, |m| {
        // SAFETY: plain call on an open descriptor.
        check(unsafe { libc::fchmod(raw, m) } as i64)
    })
}

pub fn ftruncate(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let remote = k.fds().file(fd_arg(a[0]))?.remote;
    k.host_call(remote, &mut [], |k, _| ftruncate_host(k, a))
}

fn ftruncate_host(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let raw = k.modifiable(a[0], Errno::EINVAL)?.raw();
    // SAFETY: plain call on an open descriptor.
    check(unsafe { libc::ftruncate(raw, a[1] as i64) } as i64)
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
    let f = k.fds().file(fd_arg(a[0]))?.clone();
    let op = a[1] as i32 & !libc::LOCK_NB;
    if !matches!(op, libc::LOCK_SH | libc::LOCK_EX | libc::LOCK_UN) {
        return Err(Errno::EINVAL);
    }
    if !f.in_root() {
        // A lock on a host file outside the root reaches its other users.
        return Err(Errno::EINVAL);
    }
    if !k.sandbox.writable() {
        // See fcntl's locks: nothing to protect, the host to protect from.
        return Ok(0);
    }
    let raw = f.raw();
    // SAFETY: plain call on an open descriptor.
    check(unsafe { libc::flock(raw, a[1] as i32) } as i64)
}

pub fn umask(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let old = k.fs().umask;
    k.fs().umask = a[0] as u32 & 0o777;
    Ok(old as u64)
}

pub fn fchown(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let remote = k.fds().file(fd_arg(a[0]))?.remote;
    k.host_call(remote, &mut [], |k, _| fchown_host(k, a))
}

fn fchown_host(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let raw = k.modifiable(a[0], Errno::EPERM)?.raw();
    let st = host_stat(raw)?;
    // The owner is virtual: the host's never changes.
    let creds = k.tg().creds.clone();
    identity::chown(&creds, raw, &st, a[1] as u32, a[2] as u32)
}

/// fallocate: regular files inside a writable root.
pub fn fallocate(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let f = k.fds().file(fd_arg(a[0]))?.clone();
    k.host_call(f.remote, &mut [], |k, _| {
        let outside = if matches!(f.kind, FileKind::Pipe | FileKind::Socket) { Errno::ESPIPE } else { Errno::ENODEV };
        let raw = k.modifiable(a[0], outside)?.raw();
        // SAFETY: plain call on an open descriptor.
        check(unsafe { libc::fallocate(raw, a[1] as i32, a[2] as i64, a[3] as i64) } as i64)
    })
}

/// close_range(first, last, flags).
pub fn close_range(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    const CLOSE_RANGE_UNSHARE: u64 = 2;
    const CLOSE_RANGE_CLOEXEC: u64 = 4;
    let (first, last) = (a[0] as u32 as u64, a[1] as u32 as u64);
    if a[2] & !(CLOSE_RANGE_UNSHARE | CLOSE_RANGE_CLOEXEC) != 0 || first > last {
        return Err(Errno::EINVAL);
    }
    k.fds().close_range(first, last, a[2] & CLOSE_RANGE_CLOEXEC != 0);
    Ok(0)
}
