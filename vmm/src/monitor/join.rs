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
}

/// This VMM's place in a cluster.
pub struct Join {
    pub cfg: dmvx_sync::ClusterConfig,
    pub id: u8,
    pub report_dir: PathBuf,
}

/// Joins the cluster as variant `join.id`, running program `exe` (a path
/// inside the sandbox).
pub fn join(join: Join, exe: &[u8], sandbox: &Sandbox) -> Result<Monitor, JoinError> {
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
        policy: Digest(policy.digest(names::name)),
        image: cfg.digests.image,
        program: cfg.programs_digest().or(Some(program)),
    };
    let me = cfg.variant(join.id).map_err(JoinError::Config)?.clone();
    let timeout = cfg.timeout;
    let link = match me.role {
        dmvx_sync::Role::Leader => Link::Leader(Leader::start(&cfg, &info).map_err(JoinError::Link)?),
        dmvx_sync::Role::Follower => {
            Link::Follower(Box::new(Follower::connect(&cfg, join.id, &info).map_err(JoinError::Link)?))
        }
    };
    Ok(Monitor::new(join.id, link, policy, timeout, join.report_dir))
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
