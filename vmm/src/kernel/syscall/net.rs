//! Socket system calls, executed by the VMM on the host.
//!
//! Families: AF_INET, AF_INET6 and AF_UNIX, stream and datagram, and a
//! virtual AF_NETLINK/NETLINK_ROUTE socket (`kernel::netlink`). Unix
//! socket paths resolve inside the sandbox root like every other path;
//! abstract Unix sockets (a host-wide namespace) are refused. Socket options
//! outside an allow-list, and ancillary data (descriptor passing, credentials),
//! are refused with a log line.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;

use super::super::errno::{check, Errno, SysResult};
use super::super::file::{lock, Extra, FileKind, OpenFile};
use super::super::mm::Mm;
use super::super::net_policy::ip_of;
use super::super::netlink;
use super::super::sandbox::EntryOp;
use super::super::Kernel;
use super::Sys;

/// Largest socket address (sockaddr_storage).
const ADDR_MAX: usize = 128;
const SUN_PATH_MAX: usize = 108;
const MSG_OOB: u64 = 0x1;
const MSG_PEEK: u64 = 0x2;
const MSG_DONTROUTE: u64 = 0x4;
const MSG_CTRUNC: u64 = 0x8;
const MSG_TRUNC: u64 = 0x20;
const MSG_DONTWAIT: u64 = 0x40;
const MSG_EOR: u64 = 0x80;
const MSG_WAITALL: u64 = 0x100;
const MSG_CONFIRM: u64 = 0x800;
const MSG_NOSIGNAL: u64 = 0x4000;
const MSG_MORE: u64 = 0x8000;
const MSG_CMSG_CLOEXEC: u64 = 0x4000_0000;
const SEND_FLAGS: u64 = MSG_OOB | MSG_DONTROUTE | MSG_DONTWAIT | MSG_EOR | MSG_CONFIRM | MSG_NOSIGNAL | MSG_MORE;
const RECV_FLAGS: u64 = MSG_OOB | MSG_PEEK | MSG_TRUNC | MSG_DONTWAIT | MSG_WAITALL | MSG_CMSG_CLOEXEC | MSG_NOSIGNAL;

#[inline]
fn fd_arg(a: u64) -> u64 {
    a as u32 as u64
}

/// A socket address read from the program, ready for the host.
pub(super) struct SockAddr {
    pub(super) buf: [u8; ADDR_MAX],
    pub(super) len: u32,
    /// Keeps a sandbox descriptor named by a rewritten Unix path alive.
    _hold: Option<OwnedFd>,
}

impl Kernel {
    /// The socket behind `fd`, or ENOTSOCK/EBADF.
    pub(super) fn socket_file(&self, fd: u64) -> SysResult<Arc<OpenFile>> {
        let f = self.fds().file(fd_arg(fd))?.clone();
        if f.kind != FileKind::Socket {
            return Err(Errno::ENOTSOCK);
        }
        Ok(f)
    }

    /// Logs a refused socket feature once per distinct message.
    fn refuse(&mut self, what: String) {
        self.log_once(format!("refused {what}"));
    }

    /// Reads a socket address of `len` bytes at `va`; Unix paths are
    /// resolved in the sandbox (`bind` creates, others look up).
    pub(super) fn read_addr(&mut self, file: &OpenFile, va: u64, len: u64, binding: bool) -> SysResult<SockAddr> {
        if len as usize > ADDR_MAX || len < 2 {
            return Err(Errno::EINVAL);
        }
        let mut a = SockAddr { buf: [0; ADDR_MAX], len: len as u32, _hold: None };
        self.mm.read_user(va, &mut a.buf[..len as usize])?;
        let family = u16::from_le_bytes([a.buf[0], a.buf[1]]) as i32;
        if family != libc::AF_UNIX {
            if !binding {
                self.vet_destination(&a.buf[..len as usize])?;
            }
            return Ok(a);
        }
        let raw = &a.buf[2..len as usize];
        let path: Vec<u8> = raw.iter().copied().take_while(|&c| c != 0).collect();
        if raw.first().is_none_or(|&c| c == 0) {
            self.refuse(
                "an abstract or unnamed Unix socket address (abstract sockets are a host-wide namespace)".into(),
            );
            return Err(Errno::EPERM);
        }
        let cwd = self.cwd();
        let host_path = if binding {
            let (dir, name) = self.sandbox.parent(&cwd, &path, EntryOp::Create)?;
            let p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
            a._hold = Some(dir);
            [p, name.into_bytes()].concat()
        } else {
            let (fd, st) = self.sandbox.lookup(&cwd, &path, true)?;
            if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
                return Err(Errno(libc::ECONNREFUSED));
            }
            let p = format!("/proc/self/fd/{}", fd.as_raw_fd()).into_bytes();
            a._hold = Some(fd);
            p
        };
        if host_path.len() >= SUN_PATH_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        a.buf[2..].fill(0);
        a.buf[2..2 + host_path.len()].copy_from_slice(&host_path);
        a.len = (2 + host_path.len() + 1) as u32;
        if binding {
            if let Extra::Unix(bound) = &file.extra {
                *lock(bound) = Some(path);
            }
        }
        Ok(a)
    }

    /// Refuses a destination the network policy does not allow (EACCES,
    /// logged once per destination).
    fn vet_destination(&mut self, raw: &[u8]) -> SysResult<()> {
        let Some(dest) = ip_of(raw) else { return Ok(()) };
        if self.net.may_reach(dest, &self.own_ports, self.peers.contains(&dest)) {
            return Ok(());
        }
        self.refuse(format!("a connection to {dest} (--net {}; see --help)", self.net));
        Err(Errno::EACCES)
    }

    /// Remembers the IP address a datagram came from (the same in every
    /// variant: the leader's, replicated).
    fn note_peer(&mut self, raw: &[u8]) {
        if let Some(a) = ip_of(raw) {
            self.peers.note(a);
        }
    }

    /// Writes a host socket address back to the program (`addr_va`,
    /// `len_va` as for accept/getsockname), truncating like Linux.
    fn write_addr(&mut self, addr: &[u8], addr_va: u64, len_va: u64) -> SysResult<()> {
        if addr_va == 0 || len_va == 0 {
            return Ok(());
        }
        let cap: u32 = self.mm.read_val(len_va)?;
        if cap as i32 <= -1 {
            return Err(Errno::EINVAL);
        }
        let mut out = addr.to_vec();
        self.unix_addr_for_guest(&mut out);
        let n = out.len().min(cap as usize);
        self.mm.write_user(addr_va, &out[..n])?;
        self.mm.write_val(len_va, &(out.len() as u32))
    }

    /// Host Unix paths inside the root become guest paths; the VMM's own
    /// `/proc/self/fd/...` rewrites never reach the program.
    fn unix_addr_for_guest(&self, addr: &mut Vec<u8>) {
        if addr.len() < 3 || u16::from_le_bytes([addr[0], addr[1]]) as i32 != libc::AF_UNIX || addr[2] == 0 {
            return;
        }
        let path: Vec<u8> = addr[2..].iter().copied().take_while(|&c| c != 0).collect();
        let guest =
            if path.starts_with(b"/proc/self/fd/") { Vec::new() } else { self.sandbox.guest_path_of_host(&path) };
        addr.truncate(2);
        addr.extend_from_slice(&guest);
        if !guest.is_empty() {
            addr.push(0);
        }
    }
}

fn sockaddr_of(raw: i32, peer: bool) -> SysResult<Vec<u8>> {
    let mut buf = [0u8; ADDR_MAX];
    let mut len = ADDR_MAX as libc::socklen_t;
    // SAFETY: buf/len are a valid sockaddr buffer and its size.
    let r = unsafe {
        if peer {
            libc::getpeername(raw, buf.as_mut_ptr().cast(), &mut len)
        } else {
            libc::getsockname(raw, buf.as_mut_ptr().cast(), &mut len)
        }
    };
    check(r as i64)?;
    Ok(buf[..(len as usize).min(ADDR_MAX)].to_vec())
}

pub fn socket(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let (domain, ty, proto) = (a[0] as i32, a[1] as i32, a[2] as i32);
    let base = ty & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC);
    if domain == libc::AF_NETLINK {
        return k.netlink_socket(ty, proto);
    }
    if matches!(domain, libc::AF_INET | libc::AF_INET6) && !k.net.ip_sockets() {
        k.refuse("an IP socket (--net none)".into());
        return Err(Errno::EACCES);
    }
    if !matches!(domain, libc::AF_INET | libc::AF_INET6 | libc::AF_UNIX) {
        k.refuse(format!("socket family {domain} (allowed: AF_INET, AF_INET6, AF_UNIX, AF_NETLINK)"));
        return Err(Errno::EAFNOSUPPORT);
    }
    if !matches!(base, libc::SOCK_STREAM | libc::SOCK_DGRAM)
        || (domain != libc::AF_UNIX && !matches!(proto, 0 | libc::IPPROTO_TCP | libc::IPPROTO_UDP))
    {
        k.refuse(format!("socket type {base} protocol {proto} (allowed: stream and datagram)"));
        return Err(Errno(libc::EPROTONOSUPPORT));
    }
    let mut owned = None;
    k.host_call(true, &mut [], |_, _| {
        // SAFETY: plain call; the result is checked.
        let fd = check(
            unsafe { libc::socket(domain, base | (ty & libc::SOCK_NONBLOCK) | libc::SOCK_CLOEXEC, proto) } as i64
        )?;
        // SAFETY: a fresh descriptor owned by nobody else.
        owned = Some(unsafe { OwnedFd::from_raw_fd(fd as i32) });
        Ok(fd)
    })?;
    let extra = if domain == libc::AF_UNIX { Extra::Unix(Default::default()) } else { Extra::None };
    k.adopt(owned, FileKind::Socket, extra, ty & libc::SOCK_CLOEXEC != 0)
}

pub fn socketpair(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let (domain, ty, proto) = (a[0] as i32, a[1] as i32, a[2] as i32);
    let base = ty & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC);
    if domain != libc::AF_UNIX || !matches!(base, libc::SOCK_STREAM | libc::SOCK_DGRAM | libc::SOCK_SEQPACKET) {
        k.refuse(format!("socketpair family {domain} type {base}"));
        return Err(Errno::EAFNOSUPPORT);
    }
    Mm::range_ok(a[3], 8)?;
    let mut pair: Option<(OwnedFd, OwnedFd)> = None;
    k.host_call(true, &mut [], |_, _| {
        let mut sv = [0i32; 2];
        // SAFETY: sv is a valid 2-element out-parameter.
        check(unsafe {
            libc::socketpair(domain, base | (ty & libc::SOCK_NONBLOCK) | libc::SOCK_CLOEXEC, proto, sv.as_mut_ptr())
        } as i64)?;
        // SAFETY: both are fresh descriptors owned by nobody else.
        pair = Some(unsafe { (OwnedFd::from_raw_fd(sv[0]), OwnedFd::from_raw_fd(sv[1])) });
        Ok(0)
    })?;
    let (x, y) = match pair {
        Some((x, y)) => (Some(x), Some(y)),
        None => (None, None),
    };
    let cloexec = ty & libc::SOCK_CLOEXEC != 0;
    let fx = k.adopt_ipc(x, FileKind::Socket, Extra::Unix(Default::default()), cloexec)?;
    let fy = match k.adopt_ipc(y, FileKind::Socket, Extra::Unix(Default::default()), cloexec) {
        Ok(f) => f,
        Err(e) => {
            let _ = k.fds().close(fx);
            return Err(e);
        }
    };
    if let Err(e) = k.mm.write_val(a[3], &[fx as i32, fy as i32]) {
        let _ = k.fds().close(fx);
        let _ = k.fds().close(fy);
        return Err(e);
    }
    Ok(0)
}

pub fn bind(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let f = k.socket_file(a[0])?;
    if Kernel::netlink_of(&f).is_some() {
        let addr = k.read_addr(&f, a[1], a[2], true)?;
        return k.netlink_bind(&f, &addr.buf[..addr.len as usize]);
    }
    // The port bound (the leader's, for port 0): the program's own, which
    // the network policy lets it connect to.
    let mut port = [0u8; 2];
    k.host_call(true, &mut port, |k, port| {
        let addr = k.read_addr(&f, a[1], a[2], true)?;
        // SAFETY: addr.buf holds addr.len valid bytes of a socket address.
        check(unsafe { libc::bind(f.raw(), addr.buf.as_ptr().cast(), addr.len) } as i64)?;
        if let Some(bound) = sockaddr_of(f.raw(), false).ok().and_then(|s| ip_of(&s)) {
            port.copy_from_slice(&bound.port().to_le_bytes());
        }
        Ok(0)
    })?;
    let port = u16::from_le_bytes(port);
    if port != 0 {
        k.own_ports.insert(port);
    }
    Ok(0)
}

pub fn listen(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let f = k.socket_file(a[0])?;
    if Kernel::netlink_of(&f).is_some() {
        return Err(Errno::EOPNOTSUPP);
    }
    k.host_call(true, &mut [], |_, _| {
        // SAFETY: plain call on an open socket.
        check(unsafe { libc::listen(f.raw(), a[1] as i32) } as i64)
    })
}

fn do_accept(k: &mut Kernel, fd: u64, addr_va: u64, len_va: u64, flags: u64) -> SysResult {
    if flags & !((libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) as u64) != 0 {
        return Err(Errno::EINVAL);
    }
    let f = k.socket_file(fd)?;
    if Kernel::netlink_of(&f).is_some() {
        return Err(Errno::EOPNOTSUPP);
    }
    if addr_va != 0 {
        Mm::range_ok(len_va, 4)?;
        let cap: u32 = k.mm.read_val(len_va)?;
        if cap as i32 <= -1 {
            return Err(Errno::EINVAL);
        }
    }
    // The peer address, then its length.
    let mut out = [0u8; ADDR_MAX + 4];
    let mut owned = None;
    k.host_call(true, &mut out, |k, out| {
        let mut len = ADDR_MAX as libc::socklen_t;
        if !k.settle_if_blocking(&f, false) {
            return Err(Errno::EINTR);
        }
        let nfd = k.blocking(None, -1, |_| {
            // SAFETY: out/len are a valid sockaddr buffer and its size.
            let r = unsafe {
                libc::accept4(
                    f.raw(),
                    out.as_mut_ptr().cast(),
                    &mut len,
                    libc::SOCK_CLOEXEC | (flags as i32 & libc::SOCK_NONBLOCK),
                )
            };
            r as i64
        })?;
        out[ADDR_MAX..].copy_from_slice(&len.to_le_bytes());
        // SAFETY: a fresh descriptor owned by nobody else.
        owned = Some(unsafe { OwnedFd::from_raw_fd(nfd as i32) });
        Ok(nfd)
    })?;
    let extra = if matches!(f.extra, Extra::Unix(_)) { Extra::Unix(Default::default()) } else { Extra::None };
    let vfd = k.adopt(owned, FileKind::Socket, extra, flags as i32 & libc::SOCK_CLOEXEC != 0)?;
    let len = u32::from_le_bytes(out[ADDR_MAX..].try_into().expect("4 bytes")) as usize;
    if let Err(e) = k.write_addr(&out[..len.min(ADDR_MAX)], addr_va, len_va) {
        let _ = k.fds().close(vfd);
        return Err(e);
    }
    Ok(vfd)
}

pub fn accept(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    do_accept(k, a[0], a[1], a[2], 0)
}

pub fn accept4(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    do_accept(k, a[0], a[1], a[2], a[3])
}

fn name_of(k: &mut Kernel, a: &[u64; 6], peer: bool) -> SysResult {
    let f = k.socket_file(a[0])?;
    Mm::range_ok(a[2], 4)?;
    if Kernel::netlink_of(&f).is_some() {
        let name = k.netlink_name(&f, peer)?;
        k.write_addr(&name, a[1], a[2])?;
        return Ok(0);
    }
    if !peer {
        if let Extra::Unix(bound) = &f.extra {
            if let Some(path) = lock(bound).clone() {
                let mut addr = (libc::AF_UNIX as u16).to_le_bytes().to_vec();
                addr.extend_from_slice(&path);
                addr.push(0);
                let cap: u32 = k.mm.read_val(a[2])?;
                let n = addr.len().min(cap as usize);
                k.mm.write_user(a[1], &addr[..n])?;
                k.mm.write_val(a[2], &(addr.len() as u32))?;
                return Ok(0);
            }
        }
    }
    let mut out = [0u8; ADDR_MAX + 4];
    k.host_call(true, &mut out, |_, out| {
        let addr = sockaddr_of(f.raw(), peer)?;
        out[..addr.len()].copy_from_slice(&addr);
        out[ADDR_MAX..].copy_from_slice(&(addr.len() as u32).to_le_bytes());
        Ok(0)
    })?;
    let len = u32::from_le_bytes(out[ADDR_MAX..].try_into().expect("4 bytes")) as usize;
    k.write_addr(&out[..len.min(ADDR_MAX)], a[1], a[2])?;
    Ok(0)
}

pub fn getsockname(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    name_of(k, a, false)
}

pub fn getpeername(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    name_of(k, a, true)
}

/// Socket options the program may set or read: (level, option, settable,
/// the size of the option's value that Linux reads).
const OPTIONS: &[(i32, i32, bool, usize)] = &[
    (libc::SOL_SOCKET, libc::SO_REUSEADDR, true, 4),
    (libc::SOL_SOCKET, libc::SO_REUSEPORT, true, 4),
    (libc::SOL_SOCKET, libc::SO_KEEPALIVE, true, 4),
    (libc::SOL_SOCKET, libc::SO_RCVBUF, true, 4),
    (libc::SOL_SOCKET, libc::SO_SNDBUF, true, 4),
    (libc::SOL_SOCKET, libc::SO_RCVLOWAT, true, 4),
    (libc::SOL_SOCKET, libc::SO_SNDLOWAT, true, 4),
    (libc::SOL_SOCKET, libc::SO_RCVTIMEO, true, 16),
    (libc::SOL_SOCKET, libc::SO_SNDTIMEO, true, 16),
    (libc::SOL_SOCKET, libc::SO_LINGER, true, 8),
    (libc::SOL_SOCKET, libc::SO_BROADCAST, true, 4),
    (libc::SOL_SOCKET, libc::SO_OOBINLINE, true, 4),
    (libc::SOL_SOCKET, libc::SO_ERROR, false, 4),
    (libc::SOL_SOCKET, libc::SO_TYPE, false, 4),
    (libc::SOL_SOCKET, libc::SO_DOMAIN, false, 4),
    (libc::SOL_SOCKET, libc::SO_PROTOCOL, false, 4),
    (libc::SOL_SOCKET, libc::SO_ACCEPTCONN, false, 4),
    (libc::IPPROTO_TCP, libc::TCP_NODELAY, true, 4),
    (libc::IPPROTO_TCP, libc::TCP_CORK, true, 4),
    (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, true, 4),
    (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, true, 4),
    (libc::IPPROTO_TCP, libc::TCP_KEEPCNT, true, 4),
    (libc::IPPROTO_TCP, libc::TCP_DEFER_ACCEPT, true, 4),
    (libc::IPPROTO_TCP, libc::TCP_FASTOPEN, true, 4),
    (libc::IPPROTO_TCP, libc::TCP_QUICKACK, true, 4),
    (libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, true, 4),
    (libc::IPPROTO_TCP, libc::TCP_NOTSENT_LOWAT, true, 4),
    (libc::IPPROTO_TCP, libc::TCP_INFO, false, 256),
    (libc::IPPROTO_TCP, libc::TCP_MAXSEG, true, 4),
    (libc::IPPROTO_IP, libc::IP_TOS, true, 4),
    (libc::IPPROTO_IP, libc::IP_TTL, true, 4),
    (libc::IPPROTO_IP, libc::IP_BIND_ADDRESS_NO_PORT, true, 4),
    (libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, true, 4),
    (libc::IPPROTO_IPV6, libc::IPV6_TCLASS, true, 4),
];

/// The size Linux reads for an allowed option, or ENOPROTOOPT (logged).
fn option_size(k: &mut Kernel, level: i32, name: i32, set: bool) -> SysResult<usize> {
    match OPTIONS.iter().find(|o| o.0 == level && o.1 == name) {
        Some(o) if o.2 || !set => Ok(o.3),
        _ => {
            k.refuse(format!("socket option level {level} name {name} ({})", if set { "set" } else { "get" }));
            Err(Errno(libc::ENOPROTOOPT))
        }
    }
}

pub fn setsockopt(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let f = k.socket_file(a[0])?;
    let (level, name) = (a[1] as i32, a[2] as i32);
    if level == netlink::SOL_NETLINK && Kernel::netlink_of(&f).is_some() {
        return k.netlink_setsockopt(name, a[3], a[4]);
    }
    let size = option_size(k, level, name, true)?;
    if (a[4] as u32 as i32) < 0 {
        return Err(Errno::EINVAL);
    }
    // Like Linux, read only as much as the option holds.
    let len = (a[4] as u32).min(size as u32);
    let mut v = [0u8; 256];
    k.mm.read_user(a[3], &mut v[..len as usize])?;
    k.host_call(true, &mut [], |_, _| {
        // SAFETY: v holds len valid bytes.
        check(unsafe { libc::setsockopt(f.raw(), level, name, v.as_ptr().cast(), len) } as i64)
    })
}

pub fn getsockopt(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let f = k.socket_file(a[0])?;
    let (level, name) = (a[1] as i32, a[2] as i32);
    if level == netlink::SOL_NETLINK && Kernel::netlink_of(&f).is_some() {
        return Err(Errno(libc::ENOPROTOOPT));
    }
    option_size(k, level, name, false)?;
    let cap: u32 = k.mm.read_val(a[4])?;
    if cap as i32 <= -1 {
        return Err(Errno::EINVAL);
    }
    // A virtual netlink socket is what the program asked for, not the
    // host socket pair behind it.
    if let Some(s) = Kernel::netlink_of(&f).filter(|_| level == libc::SOL_SOCKET) {
        let v = match name {
            libc::SO_TYPE => Some(lock(s).ty),
            libc::SO_DOMAIN => Some(libc::AF_NETLINK),
            libc::SO_PROTOCOL => Some(0),
            _ => None,
        };
        if let Some(v) = v {
            let b = v.to_le_bytes();
            let n = (cap as usize).min(4);
            k.mm.write_user(a[3], &b[..n])?;
            k.mm.write_val(a[4], &(n as u32))?;
            return Ok(0);
        }
    }
    // The value, then its length.
    let mut out = [0u8; 256 + 4];
    k.host_call(true, &mut out, |_, out| {
        let mut len = (cap as usize).min(256) as libc::socklen_t;
        // SAFETY: out has len writable bytes; len is an in/out parameter.
        check(unsafe { libc::getsockopt(f.raw(), level, name, out.as_mut_ptr().cast(), &mut len) } as i64)?;
        out[256..].copy_from_slice(&len.to_le_bytes());
        Ok(0)
    })?;
    let len = u32::from_le_bytes(out[256..].try_into().expect("4 bytes")).min(256);
    k.mm.write_user(a[3], &out[..len as usize])?;
    k.mm.write_val(a[4], &len)?;
    Ok(0)
}

pub fn shutdown(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let f = k.socket_file(a[0])?;
    // What is held for the socket must go out before it is shut.
    if let Err(stop) = k.settle_file(&f) {
        k.stop = Some(stop);
        return Err(Errno::EINTR);
    }
    k.host_call(true, &mut [], |_, _| {
        // SAFETY: plain call on an open socket.
        check(unsafe { libc::shutdown(f.raw(), a[1] as i32) } as i64)
    })
}

/// sendmsg over host iovecs in `k.iov`, with an optional destination.
fn host_send(k: &mut Kernel, raw: i32, addr: Option<&SockAddr>, flags: u64) -> SysResult {
    let (iov, n) = k.iov.as_raw();
    // SAFETY: msghdr is plain data; all-zero is a valid starting value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov as *mut libc::iovec;
    msg.msg_iovlen = n as usize;
    if let Some(a) = addr {
        msg.msg_name = a.buf.as_ptr() as *mut libc::c_void;
        msg.msg_namelen = a.len;
    }
    // SAFETY: msg points at valid iovecs over guest memory (bounds-checked)
    // and an optional address buffer, all alive for the call.
    check(unsafe { libc::sendmsg(raw, &msg, (flags | MSG_NOSIGNAL) as i32) } as i64)
}

/// Sends what `k.iov` holds: held by the leader under output commit,
/// replayed by followers, performed otherwise.
fn send(k: &mut Kernel, f: &Arc<OpenFile>, addr: Option<&SockAddr>, flags: u64) -> SysResult {
    if Kernel::netlink_of(f).is_some() {
        return k.netlink_send(f, addr.map(|a| &a.buf[..a.len as usize]));
    }
    if addr.is_none() && k.holds_outputs(f) {
        return k.hold_output(f, None);
    }
    k.host_call(true, &mut [], |k, _| host_send(k, f.raw(), addr, flags))
}

/// recvmsg into host iovecs in `k.iov`; returns (bytes, address, flags).
fn host_recv(k: &mut Kernel, raw: i32, flags: u64) -> SysResult<(u64, Vec<u8>, u64)> {
    let (iov, n) = k.iov.as_raw();
    let mut name = [0u8; ADDR_MAX];
    // SAFETY: msghdr is plain data; all-zero is a valid starting value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov as *mut libc::iovec;
    msg.msg_iovlen = n as usize;
    msg.msg_name = name.as_mut_ptr().cast();
    msg.msg_namelen = ADDR_MAX as u32;
    // SAFETY: msg points at valid iovecs over guest memory and a name buffer.
    let r = check(unsafe { libc::recvmsg(raw, &mut msg, (flags & !MSG_CMSG_CLOEXEC) as i32) } as i64)?;
    let nlen = (msg.msg_namelen as usize).min(ADDR_MAX);
    Ok((r, name[..nlen].to_vec(), msg.msg_flags as u64))
}

fn check_flags(k: &mut Kernel, flags: u64, allowed: u64, what: &str) -> SysResult<()> {
    if flags & !allowed != 0 {
        k.refuse(format!("{what} flags {:#x}", flags & !allowed));
        return Err(Errno::EOPNOTSUPP);
    }
    Ok(())
}

pub fn sendto(k: &mut Kernel, a: &[u64; 6]) -> Sys {
    let flags = a[3];
    let r = (|| {
        let f = k.socket_file(a[0])?;
        check_flags(k, flags, SEND_FLAGS, "send")?;
        let addr = if a[4] != 0 { Some(k.read_addr(&f, a[4], a[5], false)?) } else { None };
        k.iov.clear();
        if a[2] > 0 {
            k.mm.user_iov(a[1], a[2].min(super::common::MAX_RW), false, &mut k.iov)?;
        }
        send(k, &f, addr.as_ref(), flags)
    })();
    if flags & MSG_NOSIGNAL != 0 {
        return r.into();
    }
    k.sigpipe(r)
}

pub fn recvfrom(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let f = k.socket_file(a[0])?;
    let flags = a[3];
    check_flags(k, flags, RECV_FLAGS, "recv")?;
    if a[4] != 0 {
        Mm::range_ok(a[5], 4)?;
    }
    k.iov.clear();
    if a[2] > 0 {
        k.mm.user_iov(a[1], a[2].min(super::common::MAX_RW), true, &mut k.iov)?;
    }
    let mut name = [0u8; ADDR_MAX + 8];
    let n = k.host_call_iov(true, Some(&mut name), |k, out| recv_into(k, &f, flags, out))?;
    if Kernel::netlink_of(&f).is_some() {
        netlink_source(&mut name);
    }
    let nlen = u32::from_le_bytes(name[ADDR_MAX..ADDR_MAX + 4].try_into().expect("4 bytes")) as usize;
    k.note_peer(&name[..nlen.min(ADDR_MAX)]);
    if a[4] != 0 && nlen > 0 {
        k.write_addr(&name[..nlen.min(ADDR_MAX)], a[4], a[5])?;
    } else if a[4] != 0 {
        k.mm.write_val(a[5], &0u32)?;
    }
    Ok(n)
}

/// A blocking-aware recvmsg into `k.iov`; `out` gets the address, its
/// length and the message flags.
fn recv_into(k: &mut Kernel, f: &OpenFile, flags: u64, out: &mut [u8]) -> SysResult {
    let raw = f.raw();
    if !k.settle_if_blocking(f, flags & MSG_DONTWAIT != 0) {
        return Err(Errno::EINTR);
    }
    let (n, name, mflags) = host_recv(k, raw, flags)?;
    out[..name.len()].copy_from_slice(&name);
    out[ADDR_MAX..ADDR_MAX + 4].copy_from_slice(&(name.len() as u32).to_le_bytes());
    out[ADDR_MAX + 4..ADDR_MAX + 8].copy_from_slice(&(mflags as u32).to_le_bytes());
    Ok(n)
}

/// A received datagram of a virtual netlink socket comes from the kernel
/// (port 0), not from the host socket pair behind it: rewrites the
/// address part of `recv_into`'s output.
fn netlink_source(out: &mut [u8]) {
    let a = netlink::sockaddr(0, 0);
    out[..a.len()].copy_from_slice(&a);
    out[ADDR_MAX..ADDR_MAX + 4].copy_from_slice(&(a.len() as u32).to_le_bytes());
}

/// The program's msghdr (x86-64 layout).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct MsgHdr {
    name: u64,
    namelen: u32,
    _pad1: u32,
    iov: u64,
    iovlen: u64,
    control: u64,
    controllen: u64,
    flags: i32,
    _pad2: u32,
}

// SAFETY: repr(C) struct of integers.
unsafe impl super::super::mm::Pod for MsgHdr {}

pub fn sendmsg(k: &mut Kernel, a: &[u64; 6]) -> Sys {
    let flags = a[2];
    let r = (|| {
        let f = k.socket_file(a[0])?;
        check_flags(k, flags, SEND_FLAGS, "sendmsg")?;
        let m: MsgHdr = k.mm.read_val(a[1])?;
        if m.controllen != 0 {
            k.refuse("ancillary data in sendmsg (no descriptor or credential passing)".into());
            return Err(Errno::EPERM);
        }
        let addr =
            if m.name != 0 && m.namelen != 0 { Some(k.read_addr(&f, m.name, m.namelen as u64, false)?) } else { None };
        if m.iovlen > 1024 {
            return Err(Errno(libc::EMSGSIZE));
        }
        k.gather(m.iov, m.iovlen, false)?;
        send(k, &f, addr.as_ref(), flags)
    })();
    if flags & MSG_NOSIGNAL != 0 {
        return r.into();
    }
    k.sigpipe(r)
}

pub fn recvmsg(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let f = k.socket_file(a[0])?;
    let flags = a[2];
    check_flags(k, flags, RECV_FLAGS, "recvmsg")?;
    let mut m: MsgHdr = k.mm.read_val(a[1])?;
    if m.namelen as i32 <= -1 {
        return Err(Errno::EINVAL);
    }
    if m.iovlen > 1024 {
        return Err(Errno(libc::EMSGSIZE));
    }
    k.gather(m.iov, m.iovlen, true)?;
    let mut out = [0u8; ADDR_MAX + 8];
    let n = k.host_call_iov(true, Some(&mut out), |k, out| recv_into(k, &f, flags, out))?;
    if Kernel::netlink_of(&f).is_some() {
        netlink_source(&mut out);
    }
    let nlen = u32::from_le_bytes(out[ADDR_MAX..ADDR_MAX + 4].try_into().expect("4 bytes")) as usize;
    let mflags = u32::from_le_bytes(out[ADDR_MAX + 4..].try_into().expect("4 bytes")) as u64;
    let mut name = out[..nlen.min(ADDR_MAX)].to_vec();
    k.note_peer(&name);
    if m.name != 0 {
        k.unix_addr_for_guest(&mut name);
        let len = name.len().min(m.namelen as usize);
        k.mm.write_user(m.name, &name[..len])?;
        m.namelen = name.len() as u32;
    } else {
        m.namelen = 0;
    }
    // No ancillary data is ever passed to the program.
    m.flags = (mflags & !MSG_CTRUNC) as i32;
    m.controllen = 0;
    k.mm.write_val(a[1], &m)?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msghdr_has_the_kernel_layout() {
        assert_eq!(std::mem::size_of::<MsgHdr>(), 56);
        assert_eq!(std::mem::offset_of!(MsgHdr, controllen), 40);
        assert_eq!(std::mem::offset_of!(MsgHdr, flags), 48);
    }

    #[test]
    fn dangerous_options_are_not_allowed() {
        for (level, name) in [
            (libc::SOL_SOCKET, libc::SO_ATTACH_FILTER),
            (libc::SOL_SOCKET, libc::SO_BINDTODEVICE),
            (libc::SOL_SOCKET, libc::SO_MARK),
            (libc::SOL_SOCKET, libc::SO_PEERCRED),
        ] {
            assert!(!OPTIONS.iter().any(|o| o.0 == level && o.1 == name));
        }
        for o in OPTIONS {
            assert!(o.3 <= 256);
        }
    }
}
