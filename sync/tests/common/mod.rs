//! Helpers shared by the integration tests: clusters on loopback, a
//! deterministic generator, and a frame-aware TCP proxy that can tamper with
//! the traffic between a follower and the leader.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Mutex;
use std::thread;
use std::time::Duration;

use dmvx_sync::{ClusterConfig, Follower, HandshakeInfo, Leader, LinkError, PrivateKey, PublicKey};

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Variant `id`'s private key in the test clusters (fixed, so that a test
/// can make a second, differently configured member with the same key).
pub fn private_key(id: u8) -> PrivateKey {
    PrivateKey::from_bytes([0x40 + id; 32])
}

/// The public keys of variants 0..n.
pub fn public_keys(n: usize) -> Vec<PublicKey> {
    (0..n as u8).map(|id| private_key(id).public()).collect()
}

/// A key no test cluster lists.
pub fn stranger_key() -> PrivateKey {
    PrivateKey::from_bytes([0x99; 32])
}

/// Connects as follower `id` of `cfg` with its own key.
pub fn connect(cfg: &ClusterConfig, id: u8, info: &HandshakeInfo) -> Result<Follower, LinkError> {
    Follower::connect(cfg, id, &private_key(id), info)
}

/// Listeners bound for clusters made by [`cluster`], by port: tests start
/// their leaders on them, so no other socket can take the port meanwhile.
static LISTENERS: Mutex<Vec<(u16, TcpListener)>> = Mutex::new(Vec::new());

/// A local cluster of `n` variants (0 leads) with the given timeout. Its
/// leader port is bound already: start the leader with [`start`].
pub fn cluster(n: usize, timeout_ms: u64) -> ClusterConfig {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    LISTENERS.lock().unwrap().push((port, listener));
    let mut cfg = ClusterConfig::local(port, &public_keys(n)).unwrap();
    cfg.timeout = Duration::from_millis(timeout_ms);
    cfg
}

/// Starts the leader of a cluster made by [`cluster`] on its bound port
/// (or binds the leader's address if it has none).
pub fn start(cfg: &ClusterConfig, info: &HandshakeInfo) -> Result<Leader, LinkError> {
    start_as(cfg, &private_key(cfg.leader().id), info)
}

/// [`start`] with another private key.
pub fn start_as(cfg: &ClusterConfig, key: &PrivateKey, info: &HandshakeInfo) -> Result<Leader, LinkError> {
    let addr: SocketAddr = cfg.leader().address.parse().unwrap();
    let listener = {
        let mut all = LISTENERS.lock().unwrap();
        all.iter().position(|(p, _)| *p == addr.port()).map(|i| all.swap_remove(i).1)
    };
    match listener {
        Some(l) => Leader::start_on(l, cfg, key, info),
        None => Leader::start(cfg, key, info),
    }
}

pub fn info(cfg: &ClusterConfig) -> HandshakeInfo {
    HandshakeInfo::from_config(cfg)
}

/// Connects follower `id` of `cfg` in a thread of its own and runs `body`
/// on it; the handle yields the follower (still connected, for the test to
/// drop when it is done) and what `body` returned.
pub fn spawn_follower<T: Send + 'static>(
    cfg: &ClusterConfig,
    id: u8,
    body: impl FnOnce(&mut Follower) -> T + Send + 'static,
) -> thread::JoinHandle<(Follower, T)> {
    let cfg = cfg.clone();
    thread::spawn(move || {
        let mut f = connect(&cfg, id, &info(&cfg)).unwrap();
        let out = body(&mut f);
        (f, out)
    })
}

/// The same cluster, but followers reach the leader at `addr`.
pub fn via(cfg: &ClusterConfig, addr: SocketAddr) -> ClusterConfig {
    let mut c = cfg.clone();
    for v in &mut c.variants {
        if v.role == dmvx_sync::Role::Leader {
            v.address = addr.to_string();
        }
    }
    c
}

/// xorshift64*: deterministic test data without a dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// The entry with sequence number `seq` in the stream tests: a size in
/// 0..=max and bytes, all derived from `seq`.
pub fn entry_for(seq: u64, max: usize, out: &mut Vec<u8>) {
    let mut rng = Rng(seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let len = (rng.next() % (max as u64 + 1)) as usize;
    out.clear();
    while out.len() < len {
        let word = rng.next().to_le_bytes();
        let take = (len - out.len()).min(8);
        out.extend_from_slice(&word[..take]);
    }
}

/// What the proxy does with one frame.
pub enum Act {
    Send(Vec<u8>),
    /// Close both connections at once.
    Close,
}

pub type Mutator = Box<dyn FnMut(usize, Vec<u8>) -> Vec<Act> + Send>;

/// Forwards every frame unchanged.
pub fn pass() -> Mutator {
    Box::new(|_, f| vec![Act::Send(f)])
}

/// A proxy for one connection: a follower connects to `addr`, the proxy
/// connects to `target` (the leader). Frames (2-byte big-endian length and
/// payload: a handshake message or one chunk of a sealed message) are
/// passed through `l2f` (leader to follower) and `f2l`. Frames 0 and 1 of
/// each direction are the handshake (leader to follower: Noise message 2
/// and the sealed answer; follower to leader: Noise messages 1 and 3);
/// the link's own messages start at 2.
pub struct Proxy {
    pub addr: SocketAddr,
}

pub fn proxy(target: SocketAddr, l2f: Mutator, f2l: Mutator) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        let Ok((client, _)) = listener.accept() else {
            return;
        };
        let server = loop {
            match TcpStream::connect(target) {
                Ok(s) => break s,
                Err(_) => thread::sleep(Duration::from_millis(20)),
            }
        };
        client.set_nodelay(true).unwrap();
        server.set_nodelay(true).unwrap();
        let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
        thread::spawn(move || pump(server, client, l2f));
        thread::spawn(move || pump(c2, s2, f2l));
    });
    Proxy { addr }
}

fn pump(mut from: TcpStream, mut to: TcpStream, mut mutate: Mutator) {
    let mut idx = 0;
    loop {
        let mut header = [0u8; 2];
        if from.read_exact(&mut header).is_err() {
            let _ = to.shutdown(Shutdown::Write);
            return;
        }
        let len = u16::from_be_bytes(header) as usize;
        let mut frame = header.to_vec();
        frame.resize(2 + len, 0);
        if from.read_exact(&mut frame[2..]).is_err() {
            let _ = to.shutdown(Shutdown::Write);
            return;
        }
        for act in mutate(idx, frame) {
            match act {
                Act::Send(bytes) => {
                    if to.write_all(&bytes).is_err() {
                        return;
                    }
                }
                Act::Close => {
                    let _ = to.shutdown(Shutdown::Both);
                    let _ = from.shutdown(Shutdown::Both);
                    return;
                }
            }
        }
        idx += 1;
    }
}
