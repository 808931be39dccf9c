//! The network policy (`--net`): where the program's sockets may connect.
//!
//! Listening and answering is always allowed (that is what a server under
//! dmvx does: a datagram may always go back to an address the program
//! received one from); what the policy limits is connections the program opens
//! itself (connect, and the destination of sendto/sendmsg), which would
//! otherwise reach every service of the host and its networks:
//! - `serve` (the default): only the program's own listening ports on a
//!   loopback or unspecified address (a server that talks to itself);
//! - `loopback`: any port on a loopback address (the host's local services
//!   too: an operator's choice);
//! - `allow=ADDR:PORT,...`: `serve`, plus exactly these destinations;
//! - `none`: no IP sockets at all.
//!
//! Unix sockets are paths inside the root and follow the root's rules.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// Where the program may connect.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum NetPolicy {
    /// No IP sockets.
    None,
    /// Listen and answer; connect only to the program's own ports.
    #[default]
    Serve,
    /// Also any loopback destination.
    Loopback,
    /// Also these destinations.
    Allow(Vec<SocketAddr>),
}

/// A `--net` value that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NetPolicyError {
    #[error("unknown network policy '{0}' (use serve, loopback, none or allow=ADDR:PORT,...)")]
    Unknown(String),
    #[error("network policy allow=: '{0}' is not ADDR:PORT (IPv6 as [ADDR]:PORT)")]
    Address(String),
    #[error("network policy allow= needs at least one ADDR:PORT")]
    Empty,
}

impl FromStr for NetPolicy {
    type Err = NetPolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => return Ok(NetPolicy::None),
            "serve" => return Ok(NetPolicy::Serve),
            "loopback" => return Ok(NetPolicy::Loopback),
            _ => {}
        }
        let Some(list) = s.strip_prefix("allow=") else { return Err(NetPolicyError::Unknown(s.into())) };
        let mut addrs = Vec::new();
        for a in list.split(',').filter(|a| !a.is_empty()) {
            addrs.push(a.parse::<SocketAddr>().map_err(|_| NetPolicyError::Address(a.into()))?);
        }
        if addrs.is_empty() {
            return Err(NetPolicyError::Empty);
        }
        addrs.sort();
        addrs.dedup();
        Ok(NetPolicy::Allow(addrs))
    }
}

impl fmt::Display for NetPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetPolicy::None => f.write_str("none"),
            NetPolicy::Serve => f.write_str("serve"),
            NetPolicy::Loopback => f.write_str("loopback"),
            NetPolicy::Allow(a) => {
                let list: Vec<String> = a.iter().map(SocketAddr::to_string).collect();
                write!(f, "allow={}", list.join(","))
            }
        }
    }
}

/// Whether `ip` names this host: loopback or unspecified (IPv4-mapped too).
fn local(ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    ip.is_loopback() || ip.is_unspecified()
}

impl NetPolicy {
    /// Whether the program may make IP sockets at all.
    pub fn ip_sockets(&self) -> bool {
        *self != NetPolicy::None
    }

    /// Whether the program may connect (or send) to `dest`; `own`: the ports
    /// it bound itself; `peer`: whether `dest` sent the program a datagram
    /// (an answer goes back).
    pub fn may_reach(&self, dest: SocketAddr, own: &BTreeSet<u16>, peer: bool) -> bool {
        let own_port = local(dest.ip()) && own.contains(&dest.port());
        match self {
            NetPolicy::None => false,
            _ if peer => true,
            NetPolicy::Serve => own_port,
            NetPolicy::Loopback => local(dest.ip()),
            NetPolicy::Allow(list) => {
                let unmapped = match dest.ip() {
                    IpAddr::V6(v6) => v6.to_ipv4_mapped().map(|v4| SocketAddr::new(IpAddr::V4(v4), dest.port())),
                    IpAddr::V4(_) => None,
                };
                own_port || list.contains(&dest) || unmapped.is_some_and(|d| list.contains(&d))
            }
        }
    }
}

/// The addresses datagrams came from, which answers may go back to: the
/// most recent `Peers::MAX` of them.
#[derive(Debug, Default)]
pub struct Peers {
    order: VecDeque<SocketAddr>,
    set: HashSet<SocketAddr>,
}

impl Peers {
    /// How many peers are remembered (bounded memory per process).
    pub const MAX: usize = 4096;

    /// Remembers that `a` sent a datagram.
    pub fn note(&mut self, a: SocketAddr) {
        if self.set.insert(a) {
            self.order.push_back(a);
            if self.order.len() > Self::MAX {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }

    pub fn contains(&self, a: &SocketAddr) -> bool {
        self.set.contains(a)
    }
}

/// A socket address of the program, if it is an IP one.
pub fn ip_of(raw: &[u8]) -> Option<SocketAddr> {
    let family = u16::from_le_bytes([*raw.first()?, *raw.get(1)?]) as i32;
    let port = u16::from_be_bytes([*raw.get(2)?, *raw.get(3)?]);
    match family {
        libc::AF_INET => {
            let a: [u8; 4] = raw.get(4..8)?.try_into().ok()?;
            Some(SocketAddr::new(IpAddr::from(a), port))
        }
        libc::AF_INET6 => {
            let a: [u8; 16] = raw.get(8..24)?.try_into().ok()?;
            Some(SocketAddr::new(IpAddr::from(a), port))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn policies_parse_and_print() {
        for s in ["none", "serve", "loopback", "allow=10.0.0.1:5432,[::1]:80"] {
            let p: NetPolicy = s.parse().unwrap();
            assert_eq!(p.to_string().parse::<NetPolicy>().unwrap(), p);
        }
        assert_eq!("allow=".parse::<NetPolicy>(), Err(NetPolicyError::Empty));
        assert!(matches!("allow=10.0.0.1".parse::<NetPolicy>(), Err(NetPolicyError::Address(_))));
        assert!(matches!("all".parse::<NetPolicy>(), Err(NetPolicyError::Unknown(_))));
    }

    #[test]
    fn the_default_reaches_only_the_programs_own_ports() {
        let own: BTreeSet<u16> = [8080].into();
        let p = NetPolicy::default();
        let reach = |p: &NetPolicy, d: &str| p.may_reach(a(d), &own, false);
        assert!(reach(&p, "127.0.0.1:8080"));
        assert!(reach(&p, "0.0.0.0:8080"));
        assert!(reach(&p, "[::ffff:127.0.0.1]:8080"));
        assert!(!reach(&p, "127.0.0.1:22"));
        assert!(!reach(&p, "192.0.2.1:8080"));
        assert!(reach(&NetPolicy::Loopback, "127.0.0.1:22"));
        assert!(!reach(&NetPolicy::Loopback, "192.0.2.1:80"));
        let allow: NetPolicy = "allow=192.0.2.1:80".parse().unwrap();
        assert!(reach(&allow, "192.0.2.1:80"));
        assert!(reach(&allow, "[::ffff:192.0.2.1]:80"));
        assert!(!reach(&allow, "192.0.2.1:81"));
        assert!(!reach(&NetPolicy::None, "127.0.0.1:8080"));
        // An answer to a datagram's sender goes back, except under none.
        assert!(p.may_reach(a("192.0.2.9:5353"), &own, true));
        assert!(!NetPolicy::None.may_reach(a("192.0.2.9:5353"), &own, true));
    }

    #[test]
    fn peers_are_bounded() {
        let mut p = Peers::default();
        for i in 0..(Peers::MAX as u32 + 10) {
            p.note(SocketAddr::new(IpAddr::from(i.to_be_bytes()), 1));
        }
        assert!(!p.contains(&a("0.0.0.0:1")));
        assert!(p.contains(&SocketAddr::new(IpAddr::from((Peers::MAX as u32 + 9).to_be_bytes()), 1)));
        assert_eq!(p.order.len(), Peers::MAX);
    }

    #[test]
    fn ip_addresses_are_read_from_sockaddrs() {
        let mut v4 = [0u8; 16];
        v4[..2].copy_from_slice(&(libc::AF_INET as u16).to_le_bytes());
        v4[2..4].copy_from_slice(&80u16.to_be_bytes());
        v4[4..8].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(ip_of(&v4), Some(a("127.0.0.1:80")));
        assert_eq!(ip_of(&v4[..6]), None);
        assert_eq!(ip_of(&[1, 0, 0, 0]), None);
    }
}
