//! The embedded default: `dmvx-vmm --variants N -- PROGRAM ...` runs N
//! variants on this machine as N VMM processes joined over loopback TCP,
//! through exactly the same protocol (and the same authentication) as
//! variants on different hosts. The launcher makes a fresh key pair per
//! variant, starts the variants, passes its signals to the leader, and
//! exits with the leader's status, or 121 if the variants diverged.
//!
//! Nothing of the cluster is written to a file: each variant reads the
//! cluster configuration and its own private key from two pipes it
//! inherits (`--cluster-fd`, `--private-key-fd`) and closes them, before
//! any variant's guest runs (a guest starts only once every variant joined),
//! so no guest, of this run or another, finds them on disk, even after a
//! SIGKILL.

use std::ffi::OsString;
use std::fs::File;
use std::io::Write;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};

use dmvx_sync::{Digest, PrivateKey, PublicKey};

use super::EXIT_DIVERGENCE;

/// Errors of the launcher.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("no {0} consecutive free TCP ports on 127.0.0.1")]
    NoPorts(u32),
    #[error("cannot generate the variants' keys: {0}")]
    Key(String),
    #[error("policy {path}: {why}")]
    Policy { path: String, why: String },
    #[error("cannot make a pipe to pass the cluster configuration: {0}")]
    Pipe(std::io::Error),
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

/// The text of a local cluster configuration: variant `i` listens on
/// `base_port + i` and has public key `keys[i]`.
/// `programs` (empty, or one per variant): each variant's program digest.
pub fn cluster_file(base_port: u16, keys: &[PublicKey], policy: &str, timeout_ms: u64, programs: &[Digest]) -> String {
    let mut s = format!("[cluster]\nname = \"local\"\ntimeout_ms = {timeout_ms}\n\n{policy}\n");
    for (i, key) in keys.iter().enumerate() {
        let role = if i == 0 { "leader" } else { "follower" };
        s.push_str(&format!(
            "[[variant]]\nid = {i}\naddress = \"127.0.0.1:{}\"\nrole = \"{role}\"\npublic_key = \"{key}\"\n",
            base_port as usize + i
        ));
        if let Some(d) = programs.get(i) {
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

/// A pipe whose read end a child inherits: (read end, write end), both
/// close-on-exec until the child's `pre_exec` clears it on the read end.
fn pipe() -> Result<(OwnedFd, File), LaunchError> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds is a valid array of two descriptors for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(LaunchError::Pipe(std::io::Error::last_os_error()));
    }
    // SAFETY: pipe2 succeeded, so both are fresh descriptors owned by nobody else.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
    if rd.as_raw_fd() > 2 {
        return Ok((rd, wr));
    }
    // Our standard input or output was closed: keep the read end off 0-2,
    // which the child's own standard descriptors take.
    // SAFETY: F_DUPFD_CLOEXEC duplicates an open descriptor we own.
    let high = unsafe { libc::fcntl(rd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if high < 0 {
        return Err(LaunchError::Pipe(std::io::Error::last_os_error()));
    }
    // SAFETY: fcntl returned a fresh descriptor owned by nobody else.
    Ok((unsafe { OwnedFd::from_raw_fd(high) }, wr))
}

/// Runs `n` variants. `args` is this process's command line without the
/// program name and without `--variants N` / `--policy P`; each variant gets
/// `--cluster-fd A --private-key-fd B --variant I` in front of it.
pub fn run_local(n: u32, policy: Option<&str>, programs: &[Digest], args: &[OsString]) -> Result<u8, LaunchError> {
    let policy = policy_table(policy)?;
    let keys = (0..n).map(|_| PrivateKey::generate()).collect::<Result<Vec<_>, _>>();
    let keys = keys.map_err(|e| LaunchError::Key(e.to_string()))?;
    let publics: Vec<PublicKey> = keys.iter().map(PrivateKey::public).collect();
    let base = free_ports(n)?;
    let text = cluster_file(base, &publics, &policy, 10_000, programs);
    log::debug!("local cluster of {n} variants on 127.0.0.1:{base}..{}", base as u32 + n - 1);
    run_cluster(&text, &keys, args)
}

/// Starts one variant per key of the cluster in `text` here and waits for them.
fn run_cluster(text: &str, keys: &[PrivateKey], args: &[OsString]) -> Result<u8, LaunchError> {
    let exe = std::env::current_exe().map_err(|e| LaunchError::Spawn { id: 0, source: e })?;
    let mut children = Vec::new();
    // Followers first: they wait for the leader, which waits for them.
    for (id, key) in keys.iter().enumerate().rev() {
        let id = id as u32;
        let (cluster_rd, mut cluster_wr) = pipe()?;
        let (key_rd, mut key_wr) = pipe()?;
        let inherit = [cluster_rd.as_raw_fd(), key_rd.as_raw_fd()];
        let mut cmd = Command::new(&exe);
        cmd.arg("--cluster-fd").arg(inherit[0].to_string());
        cmd.arg("--private-key-fd").arg(inherit[1].to_string());
        cmd.arg("--variant").arg(id.to_string()).args(args);
        if id != 0 {
            // Only the leader's inputs and outputs are real.
            cmd.stdin(Stdio::null()).stdout(Stdio::null());
        }
        // SAFETY: between fork and exec the closure only calls fcntl, which
        // is async-signal-safe, on descriptors this process owns.
        unsafe {
            cmd.pre_exec(move || {
                for fd in inherit {
                    if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|source| LaunchError::Spawn { id, source })?;
        drop((cluster_rd, key_rd));
        // A variant that died before reading reports its own failure; its
        // status is collected below like any other.
        let _ = cluster_wr.write_all(text.as_bytes());
        drop(cluster_wr);
        let _ = key.write_file_text(&mut key_wr);
        drop(key_wr);
        log::debug!("variant {id}: process {}", child.id());
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
        log::debug!("variant {id} exited with status {code}");
    }
    LEADER_PID.store(0, Ordering::SeqCst);
    Ok(if diverged { EXIT_DIVERGENCE } else { leader_status })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_cluster_files_parse() {
        let keys: Vec<PublicKey> = (0..3).map(|_| PrivateKey::generate().unwrap().public()).collect();
        let text = cluster_file(40000, &keys, &policy_table(Some("strict")).unwrap(), 5000, &[]);
        let cfg = dmvx_sync::ClusterConfig::parse(&text, std::path::Path::new("/")).unwrap();
        assert_eq!(cfg.variants.len(), 3);
        assert_eq!(cfg.variant(2).unwrap().public_key, keys[2]);
        assert!(!text.contains("private"), "{text}");
        assert_eq!(cfg.policy.get("preset").and_then(|v| v.as_str()), Some("strict"));
        assert!(policy_table(Some("/nonexistent.toml")).is_err());
        // N-version variants: each variant's own program digest.
        let builds = [Digest::of(b"a"), Digest::of(b"b")];
        let text = cluster_file(40000, &keys[..2], &policy_table(None).unwrap(), 5000, &builds);
        let cfg = dmvx_sync::ClusterConfig::parse(&text, std::path::Path::new("/")).unwrap();
        assert_eq!((cfg.program_for(0), cfg.program_for(1)), (Some(builds[0]), Some(builds[1])));
    }
}
