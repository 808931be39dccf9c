//! connect. In a process with threads a blocking connect is not made
//! blocking on the host: the vCPU would hold every other thread, the one
//! that accepts among them. It is tried without blocking, and a connection
//! still in progress is waited for as a poller (`Kernel::block_probe`),
//! then finished by its outcome. Leader and followers take the same path;
//! the result is the leader's.

use super::super::errno::{check, Errno, SysResult};
use super::super::Kernel;

pub fn connect(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let f = k.socket_file(a[0])?;
    if Kernel::netlink_of(&f).is_some() {
        let addr = k.read_addr(&f, a[1], a[2], false)?;
        return k.netlink_connect(&f, &addr.buf[..addr.len as usize]);
    }
    let threads = !k.sched.others.is_empty();
    if threads && k.task.connecting == Some(a[0]) {
        let r = k.host_call(true, &mut [], |_, _| connect_outcome(f.raw()));
        if r == Err(Errno(libc::EINPROGRESS)) {
            k.task.reissue = true;
        } else {
            k.task.connecting = None;
        }
        return r;
    }
    k.task.connecting = None;
    // Whether the connection was tried without blocking is the leader's
    // finding (its socket's flags: a follower has no host socket), shipped
    // with the result.
    let without_blocking = threads && f.may_block();
    let mut tried = [0u8; 1];
    let r = k.host_call(true, &mut tried, |k, out| {
        let addr = k.read_addr(&f, a[1], a[2], false)?;
        let connect = || {
            // SAFETY: addr.buf holds addr.len valid bytes of a socket address.
            check(unsafe { libc::connect(f.raw(), addr.buf.as_ptr().cast(), addr.len) } as i64)
        };
        if !without_blocking {
            return connect();
        }
        // The descriptor's status flags are the open file's: set back at once.
        // SAFETY: F_GETFL/F_SETFL on a descriptor this file owns.
        let fl = unsafe { libc::fcntl(f.raw(), libc::F_GETFL) };
        // SAFETY: as above.
        if fl < 0 || unsafe { libc::fcntl(f.raw(), libc::F_SETFL, fl | libc::O_NONBLOCK) } < 0 {
            return connect();
        }
        out[0] = 1;
        let r = connect();
        // SAFETY: as above.
        unsafe { libc::fcntl(f.raw(), libc::F_SETFL, fl) };
        r
    });
    if tried[0] == 1 {
        match r {
            // Started (or started before): the outcome is awaited.
            Err(Errno(libc::EINPROGRESS)) | Err(Errno(libc::EALREADY)) => {
                k.task.connecting = Some(a[0]);
                k.task.reissue = true;
            }
            // A local listener's queue is full: tried again later.
            Err(Errno::EAGAIN) => k.task.reissue = true,
            _ => {}
        }
    }
    r
}

/// The outcome of a connection started without blocking: EINPROGRESS
/// while it is still under way.
fn connect_outcome(raw: i32) -> SysResult {
    let mut p = libc::pollfd { fd: raw, events: libc::POLLOUT, revents: 0 };
    // SAFETY: one valid pollfd; no wait.
    if unsafe { libc::poll(&mut p, 1, 0) } == 0 {
        return Err(Errno(libc::EINPROGRESS));
    }
    let mut err: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: err and len are valid out-parameters of their sizes.
    check(unsafe {
        libc::getsockopt(raw, libc::SOL_SOCKET, libc::SO_ERROR, (&mut err as *mut libc::c_int).cast(), &mut len)
    } as i64)?;
    if err != 0 {
        return Err(Errno(err));
    }
    Ok(0)
}
