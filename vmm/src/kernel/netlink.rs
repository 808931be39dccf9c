//! A virtual NETLINK_ROUTE socket: what glibc's getifaddrs, if_nameindex
//! and getaddrinfo(AI_ADDRCONFIG) ask of it, answered from the VMM's own
//! view of the network, the same in every variant.
//!
//! The program's network is the host's loopback (its sockets reach other
//! hosts only through the VMM's policy), so the one interface it sees is
//! `lo` (index 1, up, 127.0.0.1/8 and ::1/128), never the host's own
//! interfaces: their names and addresses would differ from host to host,
//! and would tell the program about a network it cannot use directly.
//! RTM_GETLINK (a dump, or one link by index or name) and RTM_GETADDR
//! dumps are answered; a request that changes something is EPERM, any
//! other query EOPNOTSUPP, both as NLMSG_ERROR replies as Linux sends
//! them. Replies echo the request's sequence number and carry the
//! socket's port id. The request is the program's bytes: every header and
//! attribute is bounds-checked, and a malformed message ends the parse as
//! Linux's does (silently), never the VMM.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Mutex;

use super::errno::{check, Errno, SysResult};
use super::file::{lock, Extra, FileKind, OpenFile};
use super::Kernel;

/// Netlink message types and flags (linux/netlink.h, linux/rtnetlink.h).
const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_MIN_TYPE: u16 = 0x10;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_MULTI: u16 = 0x2;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_CAPPED: u16 = 0x100;
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_GETADDR: u16 = 22;
const IFLA_ADDRESS: u16 = 1;
const IFLA_BROADCAST: u16 = 2;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_QDISC: u16 = 6;
const IFLA_STATS: u16 = 7;
const IFLA_TXQLEN: u16 = 13;
const IFLA_OPERSTATE: u16 = 16;
const IFLA_LINKMODE: u16 = 17;
const IFLA_GROUP: u16 = 27;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_LABEL: u16 = 3;
const IFA_CACHEINFO: u16 = 6;
const IFA_FLAGS: u16 = 8;
const ARPHRD_LOOPBACK: u16 = 772;
/// IFF_UP | IFF_LOOPBACK | IFF_RUNNING | IFF_LOWER_UP.
const LO_FLAGS: u32 = 0x1 | 0x8 | 0x40 | 0x1_0000;
const IFA_F_PERMANENT: u8 = 0x80;
const RT_SCOPE_HOST: u8 = 254;
/// The loopback interface's index and name.
const LO_INDEX: i32 = 1;
const LO_NAME: &[u8] = b"lo";
/// The largest request handled (Linux refuses more than the socket's send
/// buffer); at most this many messages of one request are answered.
pub const REQUEST_MAX: usize = 64 * 1024;
const MESSAGES_MAX: usize = 64;

/// sockaddr_nl: family, padding, port id, groups.
pub fn sockaddr(port: u32, groups: u32) -> [u8; 12] {
    let mut a = [0u8; 12];
    a[..2].copy_from_slice(&(libc::AF_NETLINK as u16).to_le_bytes());
    a[4..8].copy_from_slice(&port.to_le_bytes());
    a[8..].copy_from_slice(&groups.to_le_bytes());
    a
}

/// A sockaddr_nl of the program's (bind, connect, sendto): its port id and
/// groups, or EINVAL.
pub fn parse_sockaddr(b: &[u8]) -> Option<(u32, u32)> {
    if b.len() < 12 || u16::from_le_bytes([b[0], b[1]]) as i32 != libc::AF_NETLINK {
        return None;
    }
    Some((u32::from_le_bytes(b[4..8].try_into().ok()?), u32::from_le_bytes(b[8..12].try_into().ok()?)))
}

/// What a request asked for, when it is not an answerable query: for the
/// log (once per kind).
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// A message type that changes the network (RTM_NEW*, RTM_DEL*, RTM_SET*).
    Change(u16),
    /// A query of something the virtual network does not have.
    Query(u16),
}

/// The answer to one datagram of requests: the reply datagram (empty: none)
/// and what was refused in it.
#[derive(Debug, Default)]
pub struct Answer {
    pub reply: Vec<u8>,
    pub refused: Vec<Refused>,
}

/// Answers the requests in one datagram sent by socket `port`.
pub fn answer(req: &[u8], port: u32) -> Answer {
    let mut out = Answer::default();
    let mut rest = req;
    let mut n = 0;
    while rest.len() >= NLMSG_HDRLEN && n < MESSAGES_MAX {
        let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            break;
        }
        let msg = &rest[..len];
        rest = &rest[align(len).min(rest.len())..];
        n += 1;
        one(msg, port, &mut out);
    }
    out
}

/// One request message (its length checked by `answer`).
fn one(msg: &[u8], port: u32, out: &mut Answer) {
    let ty = u16::from_le_bytes([msg[4], msg[5]]);
    let flags = u16::from_le_bytes([msg[6], msg[7]]);
    let seq = u32::from_le_bytes(msg[8..12].try_into().expect("4 bytes"));
    let body = &msg[NLMSG_HDRLEN..];
    if flags & NLM_F_REQUEST == 0 {
        return;
    }
    let h = Header { seq, port };
    if ty < NLMSG_MIN_TYPE {
        // Control messages: nothing to do, acknowledged if asked.
        if flags & NLM_F_ACK != 0 {
            h.error(&mut out.reply, 0, msg);
        }
        return;
    }
    let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
    let family = body.first().copied().unwrap_or(0) as i32;
    match ty {
        RTM_GETLINK if dump => {
            h.link(&mut out.reply, NLM_F_MULTI);
            h.done(&mut out.reply);
        }
        RTM_GETLINK => match wanted_link(body) {
            Some(true) => {
                h.link(&mut out.reply, 0);
                if flags & NLM_F_ACK != 0 {
                    h.error(&mut out.reply, 0, msg);
                }
            }
            Some(false) => h.error(&mut out.reply, -libc::ENODEV, msg),
            None => h.error(&mut out.reply, -libc::EINVAL, msg),
        },
        RTM_GETADDR if dump => {
            if matches!(family, libc::AF_UNSPEC | libc::AF_INET) {
                h.addr(&mut out.reply, libc::AF_INET as u8, 8, &[127, 0, 0, 1]);
            }
            if matches!(family, libc::AF_UNSPEC | libc::AF_INET6) {
                let mut one = [0u8; 16];
                one[15] = 1;
                h.addr(&mut out.reply, libc::AF_INET6 as u8, 128, &one);
            }
            h.done(&mut out.reply);
        }
        // RTM_GET* (type & 3 == 2) that the virtual network does not have:
        // routes, neighbours, rules, a single address.
        t if t & 3 == 2 => {
            out.refused.push(Refused::Query(t));
            h.error(&mut out.reply, -libc::EOPNOTSUPP, msg);
        }
        t => {
            out.refused.push(Refused::Change(t));
            h.error(&mut out.reply, -libc::EPERM, msg);
        }
    }
}

/// Whether a single RTM_GETLINK asks for lo (by index, or by IFLA_IFNAME
/// when the index is 0); None if the request is malformed.
fn wanted_link(body: &[u8]) -> Option<bool> {
    // struct ifinfomsg: family, pad, type, index, flags, change.
    let index = i32::from_le_bytes(body.get(4..8)?.try_into().ok()?);
    if index != 0 {
        return Some(index == LO_INDEX);
    }
    let mut attrs = body.get(16..)?;
    while attrs.len() >= 4 {
        let len = u16::from_le_bytes([attrs[0], attrs[1]]) as usize;
        let ty = u16::from_le_bytes([attrs[2], attrs[3]]);
        if len < 4 || len > attrs.len() {
            return None;
        }
        if ty == IFLA_IFNAME {
            let name = &attrs[4..len];
            let name = &name[..name.iter().position(|&c| c == 0).unwrap_or(name.len())];
            return Some(name == LO_NAME);
        }
        attrs = &attrs[align(len).min(attrs.len())..];
    }
    // Neither an index nor a name.
    None
}

const fn align(n: usize) -> usize {
    (n + 3) & !3
}

/// The header fields every reply to one request shares.
struct Header {
    seq: u32,
    port: u32,
}

impl Header {
    /// Starts a message of `ty` in `out`; `end` fills in its length.
    fn start(&self, out: &mut Vec<u8>, ty: u16, flags: u16) -> usize {
        let at = out.len();
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&ty.to_le_bytes());
        out.extend_from_slice(&flags.to_le_bytes());
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.port.to_le_bytes());
        at
    }

    fn end(out: &mut [u8], at: usize) {
        let len = (out.len() - at) as u32;
        out[at..at + 4].copy_from_slice(&len.to_le_bytes());
    }

    /// RTM_NEWLINK for lo.
    fn link(&self, out: &mut Vec<u8>, flags: u16) {
        let at = self.start(out, RTM_NEWLINK, flags);
        // struct ifinfomsg.
        out.extend_from_slice(&[libc::AF_UNSPEC as u8, 0]);
        out.extend_from_slice(&ARPHRD_LOOPBACK.to_le_bytes());
        out.extend_from_slice(&LO_INDEX.to_le_bytes());
        out.extend_from_slice(&LO_FLAGS.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        attr(out, IFLA_IFNAME, b"lo\0");
        attr(out, IFLA_TXQLEN, &1000u32.to_le_bytes());
        attr(out, IFLA_OPERSTATE, &[0]);
        attr(out, IFLA_LINKMODE, &[0]);
        attr(out, IFLA_MTU, &65536u32.to_le_bytes());
        attr(out, IFLA_GROUP, &0u32.to_le_bytes());
        attr(out, IFLA_QDISC, b"noqueue\0");
        attr(out, IFLA_ADDRESS, &[0; 6]);
        attr(out, IFLA_BROADCAST, &[0; 6]);
        // struct rtnl_link_stats: 24 counters, all zero (no traffic is the
        // VM's to count).
        attr(out, IFLA_STATS, &[0; 96]);
        Header::end(out, at);
    }

    /// RTM_NEWADDR of lo: `addr`/`prefix` of `family`.
    fn addr(&self, out: &mut Vec<u8>, family: u8, prefix: u8, addr: &[u8]) {
        let at = self.start(out, RTM_NEWADDR, NLM_F_MULTI);
        // struct ifaddrmsg.
        out.extend_from_slice(&[family, prefix, IFA_F_PERMANENT, RT_SCOPE_HOST]);
        out.extend_from_slice(&(LO_INDEX as u32).to_le_bytes());
        attr(out, IFA_ADDRESS, addr);
        if family == libc::AF_INET as u8 {
            attr(out, IFA_LOCAL, addr);
            attr(out, IFA_LABEL, b"lo\0");
        }
        attr(out, IFA_FLAGS, &(IFA_F_PERMANENT as u32).to_le_bytes());
        // struct ifa_cacheinfo: forever preferred and valid.
        let mut ci = Vec::with_capacity(16);
        ci.extend_from_slice(&u32::MAX.to_le_bytes());
        ci.extend_from_slice(&u32::MAX.to_le_bytes());
        ci.extend_from_slice(&[0; 8]);
        attr(out, IFA_CACHEINFO, &ci);
        Header::end(out, at);
    }

    /// NLMSG_DONE of a dump.
    fn done(&self, out: &mut Vec<u8>) {
        let at = self.start(out, NLMSG_DONE, NLM_F_MULTI);
        out.extend_from_slice(&0i32.to_le_bytes());
        Header::end(out, at);
    }

    /// NLMSG_ERROR with `err` (0: an acknowledgement) and the request's
    /// header (capped, as with NETLINK_CAP_ACK).
    fn error(&self, out: &mut Vec<u8>, err: i32, request: &[u8]) {
        let at = self.start(out, NLMSG_ERROR, NLM_F_CAPPED);
        out.extend_from_slice(&err.to_le_bytes());
        out.extend_from_slice(&request[..NLMSG_HDRLEN]);
        Header::end(out, at);
    }
}

/// A route attribute, padded to 4 bytes.
fn attr(out: &mut Vec<u8>, ty: u16, data: &[u8]) {
    out.extend_from_slice(&((4 + data.len()) as u16).to_le_bytes());
    out.extend_from_slice(&ty.to_le_bytes());
    out.extend_from_slice(data);
    out.resize(align(out.len()), 0);
}

/// Size of struct ifreq: a name of IFNAMSIZ bytes, then a 24-byte union.
pub const IFREQ_SIZE: usize = 40;

/// An interface ioctl on a socket, on the program's struct ifreq (read
/// once into `ifr`, answered in place): SIOCGIFINDEX, SIOCGIFNAME,
/// SIOCGIFFLAGS and SIOCGIFMTU of the one interface, lo; ENODEV for any
/// other name or index.
pub fn interface_ioctl(req: u64, ifr: &mut [u8; IFREQ_SIZE]) -> SysResult<()> {
    let name = &ifr[..16];
    let is_lo = name.iter().position(|&c| c == 0).is_some_and(|n| &name[..n] == LO_NAME);
    let put = |ifr: &mut [u8; IFREQ_SIZE], v: &[u8]| ifr[16..16 + v.len()].copy_from_slice(v);
    match req {
        libc::SIOCGIFNAME => {
            let index = i32::from_le_bytes(ifr[16..20].try_into().expect("4 bytes"));
            if index != LO_INDEX {
                return Err(Errno::ENODEV);
            }
            ifr[..16].fill(0);
            ifr[..LO_NAME.len()].copy_from_slice(LO_NAME);
        }
        _ if !is_lo => return Err(Errno::ENODEV),
        libc::SIOCGIFINDEX => put(ifr, &LO_INDEX.to_le_bytes()),
        libc::SIOCGIFFLAGS => put(ifr, &(LO_FLAGS as u16).to_le_bytes()),
        libc::SIOCGIFMTU => put(ifr, &65536i32.to_le_bytes()),
        _ => return Err(Errno::ENOTTY),
    }
    Ok(())
}

/// A virtual netlink socket's state, beside the program's descriptor (one
/// end of a host datagram socket pair: reads, polls and blocking behave as
/// the host's; the VMM writes the replies into the other end).
#[derive(Debug)]
pub struct NlSocket {
    /// The VMM's end of the pair.
    replies: OwnedFd,
    /// The socket type the program asked for (SOCK_RAW or SOCK_DGRAM).
    pub ty: i32,
    /// The port id, once bound (0: not yet), and the multicast groups
    /// (accepted; the virtual network never changes, so nothing is sent).
    port: u32,
    groups: u32,
}

/// Netlink protocols and socket options (linux/netlink.h).
const NETLINK_ROUTE: i32 = 0;
pub const SOL_NETLINK: i32 = 270;
/// Options of SOL_NETLINK accepted (and ignored: they change nothing the
/// virtual socket does): membership, pktinfo, broadcast errors, no ENOBUFS,
/// listen all nsid, cap ack, extended ack, strict checking.
const NETLINK_OPTIONS: &[i32] = &[1, 2, 3, 4, 5, 8, 10, 11, 12];

impl Kernel {
    /// The virtual netlink socket behind `f`, if it is one.
    pub(crate) fn netlink_of(f: &OpenFile) -> Option<&Mutex<NlSocket>> {
        match &f.extra {
            Extra::Netlink(s) => Some(s),
            _ => None,
        }
    }

    /// socket(AF_NETLINK, ty, proto): NETLINK_ROUTE only.
    pub(crate) fn netlink_socket(&mut self, ty: i32, proto: i32) -> SysResult {
        let base = ty & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC);
        if !matches!(base, libc::SOCK_RAW | libc::SOCK_DGRAM) {
            return Err(Errno(libc::ESOCKTNOSUPPORT));
        }
        if proto != NETLINK_ROUTE {
            self.log_once(format!(
                "refused netlink protocol {proto} (only NETLINK_ROUTE, answered by the VMM with the loopback interface)"
            ));
            return Err(Errno(libc::EPROTONOSUPPORT));
        }
        let mut sv = [0i32; 2];
        // SAFETY: sv is a valid 2-element out-parameter.
        check(unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0, sv.as_mut_ptr()) }
            as i64)?;
        // SAFETY: both are fresh descriptors owned by nobody else.
        let (mine, replies) = unsafe { (OwnedFd::from_raw_fd(sv[0]), OwnedFd::from_raw_fd(sv[1])) };
        // The VMM never waits on its end: a full buffer is the program's
        // ENOBUFS, as an overrun netlink socket's.
        set_nonblock(replies.as_raw_fd(), true)?;
        if ty & libc::SOCK_NONBLOCK != 0 {
            set_nonblock(mine.as_raw_fd(), true)?;
        }
        let state = NlSocket { replies, ty: base, port: 0, groups: 0 };
        let f = OpenFile::make(Some(mine), FileKind::Socket, Extra::Netlink(Mutex::new(state)), false);
        self.fds().insert(f, ty & libc::SOCK_CLOEXEC != 0, 0)
    }

    /// A port id for a socket of this process: its pid for the first, then
    /// descending negative ids, as Linux's autobind (the same sequence in
    /// every variant: pids are virtual).
    fn netlink_port(&mut self) -> u32 {
        let n = self.netlink_ports;
        self.netlink_ports = n.wrapping_add(1);
        if n == 0 {
            self.task.tg.pid
        } else {
            (-4096i64 - n as i64) as u32
        }
    }

    /// Binds `s` if it is not yet (to `want`, or a port of our choosing).
    fn netlink_bind_port(&mut self, s: &Mutex<NlSocket>, want: u32) -> SysResult<u32> {
        let port = lock(s).port;
        if port != 0 {
            return if want == 0 || want == port { Ok(port) } else { Err(Errno::EINVAL) };
        }
        let port = if want != 0 { want } else { self.netlink_port() };
        lock(s).port = port;
        Ok(port)
    }

    /// bind(2) of a netlink socket: `addr` is the program's sockaddr_nl.
    pub(crate) fn netlink_bind(&mut self, f: &OpenFile, addr: &[u8]) -> SysResult {
        let s = Kernel::netlink_of(f).ok_or(Errno::EINVAL)?;
        let (want, groups) = parse_sockaddr(addr).ok_or(Errno::EINVAL)?;
        self.netlink_bind_port(s, want)?;
        lock(s).groups = groups;
        Ok(0)
    }

    /// connect(2): only the kernel (port 0) is there to talk to.
    pub(crate) fn netlink_connect(&mut self, f: &OpenFile, addr: &[u8]) -> SysResult {
        let s = Kernel::netlink_of(f).ok_or(Errno::EINVAL)?;
        let (dest, _) = parse_sockaddr(addr).ok_or(Errno::EINVAL)?;
        if dest != 0 {
            return Err(Errno(libc::ECONNREFUSED));
        }
        self.netlink_bind_port(s, 0)?;
        Ok(0)
    }

    /// getsockname(2) (`peer`: getpeername, which names the kernel).
    pub(crate) fn netlink_name(&mut self, f: &OpenFile, peer: bool) -> SysResult<[u8; 12]> {
        let s = Kernel::netlink_of(f).ok_or(Errno::EINVAL)?;
        let st = lock(s);
        Ok(if peer { sockaddr(0, 0) } else { sockaddr(st.port, st.groups) })
    }

    /// A send of the bytes in `self.iov` (to `dest`, a sockaddr_nl, if
    /// given): the requests are answered into the socket's queue.
    pub(crate) fn netlink_send(&mut self, f: &OpenFile, dest: Option<&[u8]>) -> SysResult {
        let s = Kernel::netlink_of(f).ok_or(Errno::EINVAL)?;
        if let Some(d) = dest {
            let (to, groups) = parse_sockaddr(d).ok_or(Errno::EINVAL)?;
            if groups != 0 {
                // Sending to multicast groups needs privilege on Linux.
                return Err(Errno::EPERM);
            }
            if to != 0 {
                return Err(Errno(libc::ECONNREFUSED));
            }
        }
        let total = self.iov.total;
        if total > REQUEST_MAX {
            return Err(Errno(libc::EMSGSIZE));
        }
        // Read once: the answer is built from this copy only.
        let req = crate::monitor::gather(&self.iov, total);
        let port = self.netlink_bind_port(s, 0)?;
        let a = answer(&req, port);
        for r in &a.refused {
            self.log_once(match r {
                Refused::Change(t) => format!("refused a netlink request that changes the network (type {t}): EPERM"),
                Refused::Query(t) => {
                    format!("refused a netlink query the virtual network does not answer (type {t}): EOPNOTSUPP")
                }
            });
        }
        if !a.reply.is_empty() {
            let fd = lock(s).replies.as_raw_fd();
            // SAFETY: the reply buffer is valid for its length; fd is open.
            let r = unsafe { libc::send(fd, a.reply.as_ptr().cast(), a.reply.len(), libc::MSG_NOSIGNAL) };
            if r < 0 {
                return Err(if Errno::last().0 == libc::EAGAIN { Errno(libc::ENOBUFS) } else { Errno::last() });
            }
        }
        Ok(total as u64)
    }

    /// setsockopt(2) at SOL_NETLINK (other levels go to the host pair).
    pub(crate) fn netlink_setsockopt(&mut self, name: i32, val: u64, len: u64) -> SysResult {
        if !NETLINK_OPTIONS.contains(&name) {
            self.log_once(format!("refused netlink socket option {name}: ENOPROTOOPT"));
            return Err(Errno(libc::ENOPROTOOPT));
        }
        if len < 4 {
            return Err(Errno::EINVAL);
        }
        let _: u32 = self.mm.read_val(val)?;
        Ok(0)
    }
}

/// Sets or clears O_NONBLOCK on a host descriptor.
fn set_nonblock(fd: i32, on: bool) -> SysResult<()> {
    // SAFETY: plain calls on an open descriptor.
    let fl = check(unsafe { libc::fcntl(fd, libc::F_GETFL) } as i64)? as i32;
    let fl = if on { fl | libc::O_NONBLOCK } else { fl & !libc::O_NONBLOCK };
    // SAFETY: as above.
    check(unsafe { libc::fcntl(fd, libc::F_SETFL, fl) } as i64).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request: header (`len` as given, or the real length) and body.
    fn req(ty: u16, flags: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let mut m = ((NLMSG_HDRLEN + body.len()) as u32).to_le_bytes().to_vec();
        m.extend_from_slice(&ty.to_le_bytes());
        m.extend_from_slice(&flags.to_le_bytes());
        m.extend_from_slice(&seq.to_le_bytes());
        m.extend_from_slice(&0u32.to_le_bytes());
        m.extend_from_slice(body);
        m.resize(align(m.len()), 0);
        m
    }

    /// The messages of a reply: (type, flags, seq, port, body).
    fn messages(mut b: &[u8]) -> Vec<(u16, u16, u32, u32, Vec<u8>)> {
        let mut out = Vec::new();
        while b.len() >= NLMSG_HDRLEN {
            let len = u32::from_le_bytes(b[..4].try_into().unwrap()) as usize;
            assert!(len >= NLMSG_HDRLEN && len <= b.len(), "a reply message's length {len} is wrong");
            let w = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
            out.push((
                u16::from_le_bytes([b[4], b[5]]),
                u16::from_le_bytes([b[6], b[7]]),
                w(8),
                w(12),
                b[NLMSG_HDRLEN..len].to_vec(),
            ));
            b = &b[align(len).min(b.len())..];
        }
        assert!(b.is_empty(), "trailing bytes in a reply");
        out
    }

    /// The attributes of a message body after a fixed part of `skip` bytes.
    fn attrs(body: &[u8], skip: usize) -> Vec<(u16, Vec<u8>)> {
        let mut out = Vec::new();
        let mut b = &body[skip..];
        while b.len() >= 4 {
            let len = u16::from_le_bytes([b[0], b[1]]) as usize;
            out.push((u16::from_le_bytes([b[2], b[3]]), b[4..len].to_vec()));
            b = &b[align(len).min(b.len())..];
        }
        out
    }

    #[test]
    fn a_link_dump_is_lo_then_done_with_the_requests_seq_and_our_port() {
        // glibc's getifaddrs: RTM_GETLINK, NLM_F_REQUEST|NLM_F_DUMP, rtgenmsg AF_PACKET.
        let a = answer(&req(RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, 77, &[17]), 4242);
        let m = messages(&a.reply);
        assert_eq!(m.len(), 2);
        let (ty, flags, seq, port, body) = &m[0];
        assert_eq!((*ty, *flags, *seq, *port), (RTM_NEWLINK, NLM_F_MULTI, 77, 4242));
        assert_eq!(i32::from_le_bytes(body[4..8].try_into().unwrap()), 1, "index");
        assert_eq!(u32::from_le_bytes(body[8..12].try_into().unwrap()), LO_FLAGS);
        let at = attrs(body, 16);
        assert!(at.contains(&(IFLA_IFNAME, b"lo\0".to_vec())));
        assert!(at.iter().any(|(t, v)| *t == IFLA_STATS && v.len() == 96));
        assert_eq!((m[1].0, m[1].1, m[1].2, m[1].3), (NLMSG_DONE, NLM_F_MULTI, 77, 4242));
        assert_eq!(m[1].4, 0i32.to_le_bytes());
        assert!(a.refused.is_empty());
    }

    #[test]
    fn an_address_dump_is_the_loopback_addresses_of_the_family_asked() {
        let all = messages(&answer(&req(RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, 5, &[0; 8]), 9).reply);
        assert_eq!(all.iter().map(|m| m.0).collect::<Vec<_>>(), [RTM_NEWADDR, RTM_NEWADDR, NLMSG_DONE]);
        let v4 = &all[0].4;
        assert_eq!(&v4[..4], &[libc::AF_INET as u8, 8, IFA_F_PERMANENT, RT_SCOPE_HOST]);
        assert!(attrs(v4, 8).contains(&(IFA_LOCAL, vec![127, 0, 0, 1])));
        let v6 = &all[1].4;
        assert_eq!(&v6[..2], &[libc::AF_INET6 as u8, 128]);
        let mut one = vec![0u8; 16];
        one[15] = 1;
        assert!(attrs(v6, 8).contains(&(IFA_ADDRESS, one)));
        let only6 =
            messages(&answer(&req(RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, 5, &[libc::AF_INET6 as u8]), 9).reply);
        assert_eq!(only6.len(), 2);
        assert_eq!(only6[0].4[0], libc::AF_INET6 as u8);
        // A body shorter than ifaddrmsg (just rtgenmsg, or nothing): every family.
        assert_eq!(messages(&answer(&req(RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, 5, &[]), 9).reply).len(), 3);
    }

    #[test]
    fn one_link_by_index_or_name() {
        let by_index = |i: i32| {
            let mut body = vec![0u8; 16];
            body[4..8].copy_from_slice(&i.to_le_bytes());
            messages(&answer(&req(RTM_GETLINK, NLM_F_REQUEST, 1, &body), 3).reply)
        };
        let lo = by_index(1);
        assert_eq!((lo.len(), lo[0].0, lo[0].1), (1, RTM_NEWLINK, 0));
        let none = by_index(2);
        assert_eq!((none.len(), none[0].0), (1, NLMSG_ERROR));
        assert_eq!(i32::from_le_bytes(none[0].4[..4].try_into().unwrap()), -libc::ENODEV);
        let mut body = vec![0u8; 16];
        attr(&mut body, IFLA_IFNAME, b"lo\0");
        let m = messages(&answer(&req(RTM_GETLINK, NLM_F_REQUEST | NLM_F_ACK, 1, &body), 3).reply);
        assert_eq!(m.iter().map(|m| m.0).collect::<Vec<_>>(), [RTM_NEWLINK, NLMSG_ERROR], "the link, then the ack");
        let mut body = vec![0u8; 16];
        attr(&mut body, IFLA_IFNAME, b"eth0\0");
        let m = messages(&answer(&req(RTM_GETLINK, NLM_F_REQUEST, 1, &body), 3).reply);
        assert_eq!(i32::from_le_bytes(m[0].4[..4].try_into().unwrap()), -libc::ENODEV);
    }

    #[test]
    fn changes_and_other_queries_are_refused_with_an_error_reply() {
        let a = answer(&req(RTM_NEWADDR, NLM_F_REQUEST | NLM_F_ACK, 8, &[0; 8]), 3);
        let m = messages(&a.reply);
        assert_eq!((m[0].0, m[0].2), (NLMSG_ERROR, 8));
        assert_eq!(i32::from_le_bytes(m[0].4[..4].try_into().unwrap()), -libc::EPERM);
        assert_eq!(
            &m[0].4[4..8],
            &req(RTM_NEWADDR, NLM_F_REQUEST | NLM_F_ACK, 8, &[0; 8])[..4],
            "the request's header"
        );
        assert_eq!(a.refused, [Refused::Change(RTM_NEWADDR)]);
        // RTM_GETROUTE dump.
        let a = answer(&req(26, NLM_F_REQUEST | NLM_F_DUMP, 8, &[0; 12]), 3);
        assert_eq!(i32::from_le_bytes(messages(&a.reply)[0].4[..4].try_into().unwrap()), -libc::EOPNOTSUPP);
        assert_eq!(a.refused, [Refused::Query(26)]);
    }

    #[test]
    fn malformed_requests_end_the_parse_without_a_panic() {
        let good = req(RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, 1, &[0]);
        assert!(answer(&good[..15], 1).reply.is_empty(), "shorter than a header");
        let mut long = good.clone();
        long[..4].copy_from_slice(&1000u32.to_le_bytes());
        assert!(answer(&long, 1).reply.is_empty(), "a length beyond the datagram");
        let mut short = good.clone();
        short[..4].copy_from_slice(&3u32.to_le_bytes());
        assert!(answer(&short, 1).reply.is_empty(), "a length below the header");
        let mut noreq = good.clone();
        noreq[6] = 0;
        assert!(answer(&noreq, 1).reply.is_empty(), "not a request");
        // Two messages in one datagram: both answered.
        let two = [good.clone(), req(RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, 2, &[2])].concat();
        assert_eq!(messages(&answer(&two, 1).reply).len(), 4);
        // A single GETLINK with a broken attribute.
        let mut body = vec![0u8; 16];
        body.extend_from_slice(&[200, 0, 3, 0, b'l', b'o']);
        let m = messages(&answer(&req(RTM_GETLINK, NLM_F_REQUEST, 1, &body), 3).reply);
        assert_eq!(i32::from_le_bytes(m[0].4[..4].try_into().unwrap()), -libc::EINVAL);
        // Arbitrary bytes never panic, and every reply parses.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..2000 {
            let mut b = good.clone();
            for _ in 0..4 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let i = (x as usize) % b.len();
                b[i] = (x >> 32) as u8;
            }
            b.truncate(((x >> 40) as usize) % (b.len() + 1));
            messages(&answer(&b, 1).reply);
        }
        // At most MESSAGES_MAX messages of one datagram are answered.
        let many: Vec<u8> = (0..1000).flat_map(|_| good.clone()).collect();
        assert_eq!(messages(&answer(&many, 1).reply).len(), 2 * MESSAGES_MAX);
        assert_eq!(parse_sockaddr(&sockaddr(7, 0)), Some((7, 0)));
        assert_eq!(parse_sockaddr(&sockaddr(7, 0)[..11]), None);
        assert_eq!(parse_sockaddr(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), None);
    }

    #[test]
    fn interface_ioctls_know_lo_only() {
        let mut ifr = [0u8; IFREQ_SIZE];
        ifr[..2].copy_from_slice(b"lo");
        interface_ioctl(libc::SIOCGIFINDEX, &mut ifr).unwrap();
        assert_eq!(&ifr[16..20], &1i32.to_le_bytes());
        interface_ioctl(libc::SIOCGIFFLAGS, &mut ifr).unwrap();
        assert_eq!(u16::from_le_bytes([ifr[16], ifr[17]]), 0x49);
        let mut eth = [0xffu8; IFREQ_SIZE];
        eth[..5].copy_from_slice(b"eth0\0");
        assert_eq!(interface_ioctl(libc::SIOCGIFINDEX, &mut eth), Err(Errno::ENODEV));
        // A name without its NUL within IFNAMSIZ is no interface's.
        let mut long = [b'l'; IFREQ_SIZE];
        assert_eq!(interface_ioctl(libc::SIOCGIFINDEX, &mut long), Err(Errno::ENODEV));
        let mut by_index = [0xaau8; IFREQ_SIZE];
        by_index[16..20].copy_from_slice(&1i32.to_le_bytes());
        interface_ioctl(libc::SIOCGIFNAME, &mut by_index).unwrap();
        assert_eq!(&by_index[..3], b"lo\0");
        by_index[16..20].copy_from_slice(&2i32.to_le_bytes());
        assert_eq!(interface_ioctl(libc::SIOCGIFNAME, &mut by_index), Err(Errno::ENODEV));
    }
}
