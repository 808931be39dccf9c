//! File I/O: read and write families, seeks, directory listings, sendfile.
//!
//! Data moves between the host kernel and guest memory directly (host
//! iovecs over guest frames), without a copy in the VMM and without
//! allocating on the way.

use std::sync::Arc;

use super::super::errno::{check, Errno, SysResult};
use super::super::file::{lock, Extra, FileKind, OpenFile};
use super::super::mm::Mm;
use super::super::signal::{Signal, SIG_DFL};
use super::super::Kernel;
use super::common::*;
use super::Sys;
use crate::monitor::OpMode;

impl Kernel {
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
                Mm::range_ok(base, len)?;
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

/// read/write and their positioned forms; `into_guest` for reads.
fn rw(k: &mut Kernel, fd: u64, buf: u64, count: u64, into_guest: bool, off: Option<i64>) -> SysResult {
    let file = k.fds().file(fd_arg(fd))?.clone();
    if let Some(o) = off {
        if o < 0 {
            return Err(Errno::EINVAL);
        }
    }
    k.iov.clear();
    // As Linux's access_ok: the whole range must lie in user space, before
    // the count is cut to MAX_RW (otherwise whether a huge count faults
    // would depend on how far the buffer lies below the end of user space).
    Mm::range_ok(buf, count)?;
    if count > 0 {
        k.mm.user_iov(buf, count.min(MAX_RW), into_guest, &mut k.iov)?;
    }
    transfer(k, &file, into_guest, off)
}

/// Moves data between `file` and the guest memory in `k.iov`: into the
/// guest (a read) when `into_guest`. Replicated and held as the call's
/// policy says.
fn transfer(k: &mut Kernel, file: &Arc<OpenFile>, into_guest: bool, off: Option<i64>) -> SysResult {
    if !into_guest && Kernel::netlink_of(file).is_some() {
        return k.netlink_send(file, None);
    }
    if !into_guest && k.holds_outputs(file) {
        return k.hold_output(file, off);
    }
    let raw = file.raw();
    let mode = k.op_mode(file.remote);
    let n = k.host_call_iov(file.remote, None, |k, _| {
        if into_guest && !k.settle_if_blocking(file, false) {
            return Err(Errno::EINTR);
        }
        host_rw(k, raw, into_guest, off)
    })?;
    if mode == OpMode::Replay && file.is_ipc() && file.kind == FileKind::Pipe {
        k.follow_pipe(file, into_guest, n as usize)?;
    }
    Ok(n)
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
    if let Extra::ProcDir(d) = &f.extra {
        // Whole records that fit, from where the program left off.
        let mut d = lock(d);
        let (ents, pos) = &mut *d;
        let mut end = *pos;
        while end + 19 <= ents.len() {
            let reclen = u16::from_le_bytes([ents[end + 16], ents[end + 17]]) as usize;
            if end + reclen - *pos > count {
                break;
            }
            end += reclen;
        }
        if end == *pos && *pos < ents.len() {
            return Err(Errno::EINVAL);
        }
        k.mm.write_user(a[1], &ents[*pos..end])?;
        let n = end - *pos;
        *pos = end;
        return Ok(n as u64);
    }
    let mut data = vec![0u8; count];
    let n = k.host_call(f.remote, &mut data, |_, out| {
        // SAFETY: out has `count` writable bytes.
        check(unsafe { libc::syscall(libc::SYS_getdents64, f.raw(), out.as_mut_ptr(), count) })
    })?;
    k.mm.write_user(a[1], &data[..(n as usize).min(count)]).map(|_| n)
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
