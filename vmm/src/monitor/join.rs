//! Joining a cluster: the program is checked against the cluster file's
//! digest, the policy compiled, and the link connected (the leader waits for
//! every follower).

use std::io::Read;
use std::path::{Path, PathBuf};

use dmvx_sync::{Digest, Follower, HandshakeInfo, Leader};

use super::{Link, Monitor};
use crate::kernel::errno::Errno;
use crate::kernel::exec;
use crate::kernel::find_program;
use crate::kernel::sandbox::Sandbox;
use crate::kernel::syscall::names;

/// Why a VMM could not join its cluster.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("cluster: the policy is invalid: {0}")]
    Policy(#[source] dmvx_sync::policy::PolicyError),
    #[error("cluster: cannot read the program {path} to digest it: {source}")]
    ReadProgram { path: String, source: std::io::Error },
    #[error("cluster: the program {path} has digest {have}, the cluster file says {want} for variant {id}")]
    ProgramDigest { path: String, have: Digest, want: Digest, id: u8 },
    #[error("cluster: {0}")]
    Program(String),
    #[error("cluster: {0}")]
    Config(#[source] dmvx_sync::ConfigError),
    #[error("cluster: {0}")]
    Link(#[source] dmvx_sync::link::LinkError),
    #[error("cluster: cannot draw the seed of the shared data layout: {0}")]
    DataSeed(#[source] std::io::Error),
    #[error("cluster: the leader's first message was not the seed of the shared data layout")]
    NoDataSeed,
}

/// The control message (leader to followers, before any event) that
/// carries the seed of the shared data layout.
const CTRL_DATA_SEED: u32 = 4;

/// This VMM's place in a cluster.
pub struct Join {
    pub cfg: dmvx_sync::ClusterConfig,
    /// This variant's private key.
    pub key: dmvx_sync::PrivateKey,
    pub id: u8,
    pub report_dir: PathBuf,
    /// The network policy: part of what every variant must agree on.
    pub net: crate::kernel::net_policy::NetPolicy,
    /// Where data lives across variants: agreed too.
    pub data: crate::kernel::layout::DataLayout,
}

/// The digest the handshake compares for the MVX policy: the call policy's
/// and the network policy's together (variants that may connect to
/// different places must not form a cluster).
fn policy_digest(
    policy: &dmvx_sync::policy::Policy,
    net: &crate::kernel::net_policy::NetPolicy,
    data: crate::kernel::layout::DataLayout,
) -> Digest {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    h.update(policy.digest(names::name));
    h.update(format!("net={net}").as_bytes());
    h.update(format!(" data={data}").as_bytes());
    Digest(h.finalize().into())
}

/// What a process's VMM needs to open the event streams of the processes
/// it creates: one link per process set, authenticated as the first.
#[derive(Clone)]
pub struct StreamSpec {
    pub cfg: dmvx_sync::ClusterConfig,
    /// This variant's private key (the same for every process's stream).
    pub key: dmvx_sync::PrivateKey,
    pub id: u8,
    pub report_dir: PathBuf,
    pub info: HandshakeInfo,
    pub policy: dmvx_sync::policy::Policy,
    /// The process this stream belongs to (its virtual pid; the same in
    /// every variant).
    pub pid: u32,
    /// Its place in the process tree: the first process, then which of its
    /// parent's children it is, at each generation ("2/0/1").
    pub path: String,
}

impl StreamSpec {
    /// The handshake of process `pid`'s stream: the cluster's, bound to the
    /// pid, so that a connection meant for one process's stream cannot be
    /// joined to another's.
    fn info_for(&self, pid: u32) -> HandshakeInfo {
        let mut bound = self.info.policy.0.to_vec();
        bound.extend_from_slice(b"dmvx process stream");
        bound.extend_from_slice(&pid.to_le_bytes());
        HandshakeInfo { policy: Digest::of(&bound), ..self.info }
    }

    /// Leader: a listener for the followers of child `pid`'s stream, on the
    /// leader's address, port chosen by the system.
    pub fn child_listener(&self) -> Result<std::net::TcpListener, JoinError> {
        let addr = &self.cfg.leader().address;
        let host = addr.rsplit_once(':').map_or(addr.as_str(), |(h, _)| h);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        std::net::TcpListener::bind((host, 0)).map_err(|e| {
            JoinError::Link(dmvx_sync::link::LinkError::Listen { address: format!("{host}:0"), reason: e.to_string() })
        })
    }

    /// The stream of child `pid` (in the child's VMM): the leader accepts
    /// its followers on `listener`; a follower connects to the leader's
    /// host at `port`.
    pub fn child(
        &self,
        pid: u32,
        place: u32,
        listener: Option<std::net::TcpListener>,
        port: u16,
    ) -> Result<Monitor, JoinError> {
        let info = self.info_for(pid);
        let mut cfg = self.cfg.clone();
        let link = match listener {
            Some(l) => Link::Leader(Leader::start_on(l, &cfg, &self.key, &info).map_err(JoinError::Link)?),
            None => {
                for v in cfg.variants.iter_mut().filter(|v| v.role == dmvx_sync::Role::Leader) {
                    let host = v.address.rsplit_once(':').map_or(v.address.clone(), |(h, _)| h.to_string());
                    v.address = format!("{host}:{port}");
                }
                Link::Follower(Box::new(Follower::connect(&cfg, self.id, &self.key, &info).map_err(JoinError::Link)?))
            }
        };
        let spec = StreamSpec { pid, path: format!("{}/{place}", self.path), ..self.clone() };
        let timeout = cfg.timeout;
        Ok(Monitor::new(self.id, link, self.policy.clone(), timeout, self.report_dir.clone(), spec))
    }
}

/// Joins the cluster as variant `join.id`, running program `exe` (a path
/// inside the sandbox) as process `pid`.
pub fn join(join: Join, exe: &[u8], sandbox: &Sandbox, pid: u32) -> Result<Monitor, JoinError> {
    let cfg = join.cfg;
    let policy = dmvx_sync::policy::Policy::from_toml(&cfg.policy, names::number).map_err(JoinError::Policy)?;
    let path = String::from_utf8_lossy(exe).into_owned();
    let program = file_digest(sandbox, exe)?;
    if let Some(want) = cfg.program_for(join.id) {
        if want != program {
            return Err(JoinError::ProgramDigest { path, have: program, want, id: join.id });
        }
    }
    // Variants built differently compare the cluster file's table of
    // program digests (each checked its own above); others the program.
    let info = HandshakeInfo {
        policy: policy_digest(&policy, &join.net, join.data),
        image: cfg.digests.image,
        program: cfg.programs_digest().or(Some(program)),
    };
    let me = cfg.variant(join.id).map_err(JoinError::Config)?.clone();
    let timeout = cfg.timeout;
    let link = Link::join(&cfg, join.id, me.role, &join.key, &info).map_err(JoinError::Link)?;
    let spec = StreamSpec {
        cfg: cfg.clone(),
        key: join.key.clone(),
        id: join.id,
        report_dir: join.report_dir.clone(),
        info,
        policy: policy.clone(),
        pid,
        path: pid.to_string(),
    };
    Ok(Monitor::new(join.id, link, policy, timeout, join.report_dir, spec))
}

impl Monitor {
    /// The seed every variant draws its shared data bases from: the
    /// leader's `fresh` draw, sent before any event; a follower takes it
    /// and nothing else first.
    pub fn agree_data_seed(&mut self, fresh: impl FnOnce() -> std::io::Result<u64>) -> Result<u64, JoinError> {
        use dmvx_sync::{Control, Incoming};
        match &mut self.link {
            Link::Leader(l) => {
                let seed = fresh().map_err(JoinError::DataSeed)?;
                let c = Control::Custom { kind: CTRL_DATA_SEED, payload: seed.to_le_bytes().to_vec() };
                l.send_control(&c).map_err(JoinError::Link)?;
                Ok(seed)
            }
            Link::Follower(f) => match f.next_incoming().map_err(JoinError::Link)? {
                Incoming::Control(Control::Custom { kind: CTRL_DATA_SEED, payload }) => {
                    <[u8; 8]>::try_from(payload.as_slice()).map(u64::from_le_bytes).map_err(|_| JoinError::NoDataSeed)
                }
                _ => Err(JoinError::NoDataSeed),
            },
        }
    }
}

/// The SHA-256 of the file at guest path `exe`, read through the sandbox.
fn file_digest(sandbox: &Sandbox, exe: &[u8]) -> Result<Digest, JoinError> {
    let path = String::from_utf8_lossy(exe).into_owned();
    let read_err = |source| JoinError::ReadProgram { path: path.clone(), source };
    let (fd, _) = sandbox
        .open(b"/", exe, libc::O_RDONLY, 0)
        .map_err(|Errno(e)| read_err(std::io::Error::from_raw_os_error(e)))?;
    let mut bytes = Vec::new();
    std::fs::File::from(fd).read_to_end(&mut bytes).map_err(read_err)?;
    Ok(Digest::of(&bytes))
}

/// The digest of the program a variant started with `program` under `root`
/// and `cwd` runs (looked up and `#!`-resolved as a run does); the local
/// launcher writes it into the cluster file for variants of other builds.
pub fn program_digest(root: &Path, cwd: &str, program: &str) -> Result<Digest, JoinError> {
    let fail = |e: String| JoinError::Program(format!("{program}: {e}"));
    let sandbox = Sandbox::new(root, false).map_err(|e| fail(e.to_string()))?;
    let path = find_program(&sandbox, cwd.as_bytes(), program);
    let prepared = exec::prepare(&sandbox, cwd.as_bytes(), &path, vec![path.clone()], &[])
        .map_err(|e| JoinError::Program(e.to_string()))?;
    file_digest(&sandbox, prepared.exe())
}
