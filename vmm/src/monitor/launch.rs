//! The embedded default: `dmvx-vmm --variants N -- PROGRAM ...` runs N
//! variants on this machine as N VMM processes joined over loopback TCP,
//! through exactly the same protocol (and the same authentication) as
//! variants on different hosts. The launcher writes a cluster file with a
//! fresh random key, starts the variants, passes its signals to the leader,
//! and exits with the leader's status, or 121 if the variants diverged.

use std::ffi::OsString;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};

use dmvx_sync::{ClusterKey, Digest};

use super::EXIT_DIVERGENCE;

/// Errors of the launcher.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("no {0} consecutive free TCP ports on 127.0.0.1")]
    NoPorts(u32),
    #[error("cannot generate the cluster key: {0}")]
    Key(String),
    #[error("policy {path}: {why}")]
    Policy { path: String, why: String },
    #[error("cannot write the cluster file: {0}")]
    Write(std::io::Error),
    #[error("cannot start variant {id}: {source}")]
    Spawn { id: u32, source: std::io::Error },
}

/// The `[policy]` table for `--policy P`: a preset name or a TOML file
/// (with a `[policy]` table, or the policy fields at top level).
pub fn policy_table(p: Option<&str>) -> Result<String, LaunchError> {
    match p.unwrap_or("dmvx") {
        name @ ("strict" | "dmvx") => Ok(format!("[policy]\npreset = \"{name}\"\n")),
        path => {
            let bad = |why: String| LaunchError::Policy { path: path.to_string(), why };
            let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
            let v: toml::Table = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
            let table = match v.get("policy") {
                Some(toml::Value::Table(t)) => t.clone(),
                Some(_) => return Err(bad("`policy` is not a table".into())),
                None => v,
            };
            let mut doc = toml::Table::new();
            doc.insert("policy".into(), toml::Value::Table(table));
            toml::to_string(&doc).map_err(|e| bad(e.to_string()))
        }
    }
}

/// A run of `n` free consecutive ports.
fn free_ports(n: u32) -> Result<u16, LaunchError> {
    let mut seed = [0u8; 2];
    let _ = getrandom_bytes(&mut seed);
    let start = 20000 + (u16::from_le_bytes(seed) % 30000);
    'outer: for attempt in 0..200u16 {
        let base = start.wrapping_add(attempt * 37);
        if base < 20000 || base as u32 + n > 60000 {
            continue;
        }
        let mut held = Vec::new();
        for i in 0..n {
            match TcpListener::bind(("127.0.0.1", base + i as u16)) {
                Ok(l) => held.push(l),
                Err(_) => continue 'outer,
            }
        }
        return Ok(base);
    }
    Err(LaunchError::NoPorts(n))
}

fn getrandom_bytes(b: &mut [u8]) -> bool {
    // SAFETY: b is a valid writable buffer of b.len() bytes.
    unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) == b.len() as isize }
}

/// The text of a local cluster file; `programs` (empty, or one per
/// variant): each variant's program digest.
pub fn cluster_file(
    n: u32,
    base_port: u16,
    key: &ClusterKey,
    policy: &str,
    timeout_ms: u64,
    programs: &[Digest],
) -> String {
    let mut s =
        format!("[cluster]\nname = \"local\"\nkey = \"{}\"\ntimeout_ms = {timeout_ms}\n\n{policy}\n", key.to_hex());
    for i in 0..n {
        let role = if i == 0 { "leader" } else { "follower" };
        s.push_str(&format!(
            "[[variant]]\nid = {i}\naddress = \"127.0.0.1:{}\"\nrole = \"{role}\"\n",
            base_port + i as u16
        ));
        if let Some(d) = programs.get(i as usize) {
            s.push_str(&format!("program = \"{d}\"\n"));
        }
        s.push('\n');
    }
    s
}

static LEADER_PID: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    let pid = LEADER_PID.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

/// A private directory removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `n` variants. `args` is this process's command line without the
/// program name and without `--variants N` / `--policy P`; each variant gets
/// `--cluster FILE --variant I` in front of it.
pub fn run_local(n: u32, policy: Option<&str>, programs: &[Digest], args: &[OsString]) -> Result<u8, LaunchError> {
    let policy = policy_table(policy)?;
    let key = ClusterKey::generate().map_err(|e| LaunchError::Key(e.to_string()))?;
    let base = free_ports(n)?;
    let mut rnd = [0u8; 8];
    getrandom_bytes(&mut rnd);
    let dir = std::env::temp_dir().join(format!("dmvx-cluster-{}-{}", std::process::id(), u64::from_le_bytes(rnd)));
    std::fs::create_dir(&dir).map_err(LaunchError::Write)?;
    let scratch = Scratch(dir);
    std::fs::set_permissions(&scratch.0, std::fs::Permissions::from_mode(0o700)).map_err(LaunchError::Write)?;
    let file = scratch.0.join("cluster.toml");
    std::fs::write(&file, cluster_file(n, base, &key, &policy, 10_000, programs)).map_err(LaunchError::Write)?;
    run_cluster(n, &file, args)
}

/// Starts variants 0..n of the cluster in `file` here and waits for them.
fn run_cluster(n: u32, file: &Path, args: &[OsString]) -> Result<u8, LaunchError> {
    let exe = std::env::current_exe().map_err(|e| LaunchError::Spawn { id: 0, source: e })?;
    let mut children = Vec::new();
    // Followers first: they wait for the leader, which waits for them.
    for id in (0..n).rev() {
        let mut cmd = Command::new(&exe);
        cmd.arg("--cluster").arg(file).arg("--variant").arg(id.to_string()).args(args);
        if id != 0 {
            // Only the leader's inputs and outputs are real.
            cmd.stdin(Stdio::null()).stdout(Stdio::null());
        }
        let child = cmd.spawn().map_err(|source| LaunchError::Spawn { id, source })?;
        if id == 0 {
            LEADER_PID.store(child.id() as i32, Ordering::SeqCst);
        }
        children.push((id, child));
    }
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT, libc::SIGUSR1, libc::SIGUSR2] {
        // SAFETY: the handler only calls kill (async-signal-safe).
        unsafe { libc::signal(sig, forward as *const () as libc::sighandler_t) };
    }
    let mut leader_status = 0u8;
    let mut diverged = false;
    for (id, mut child) in children {
        let st = loop {
            match child.wait() {
                Ok(st) => break st,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(LaunchError::Spawn { id, source: e }),
            }
        };
        use std::os::unix::process::ExitStatusExt;
        let code = st.code().map(|c| c as u8).unwrap_or_else(|| 128u8.wrapping_add(st.signal().unwrap_or(0) as u8));
        if code == EXIT_DIVERGENCE {
            diverged = true;
        }
        if id == 0 {
            leader_status = code;
        }
    }
    LEADER_PID.store(0, Ordering::SeqCst);
    Ok(if diverged { EXIT_DIVERGENCE } else { leader_status })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_cluster_files_parse() {
        let key = ClusterKey::generate().unwrap();
        let text = cluster_file(3, 40000, &key, &policy_table(Some("strict")).unwrap(), 5000, &[]);
        let cfg = dmvx_sync::ClusterConfig::parse(&text, Path::new("/")).unwrap();
        assert_eq!(cfg.variants.len(), 3);
        assert_eq!(cfg.programs_digest(), None);
        assert_eq!(cfg.policy.get("preset").and_then(|v| v.as_str()), Some("strict"));
        assert!(policy_table(Some("/nonexistent.toml")).is_err());
        // N-version variants: each variant's own program digest.
        let builds = [Digest::of(b"a"), Digest::of(b"b")];
        let text = cluster_file(2, 40000, &key, &policy_table(None).unwrap(), 5000, &builds);
        let cfg = dmvx_sync::ClusterConfig::parse(&text, Path::new("/")).unwrap();
        assert_eq!((cfg.program_for(0), cfg.program_for(1)), (Some(builds[0]), Some(builds[1])));
    }
}
