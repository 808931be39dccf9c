//! The jail: confinement of the VMM process itself, before the guest's
//! first instruction, so that a bug in any system-call handler cannot become
//! a host compromise (Firecracker's jailer is the model).
//!
//! Layers, each reported at start; a layer the host lacks stops the VMM
//! unless the operator names it in `--allow-missing`:
//! - `mount-namespace`: a private mount namespace whose root is a small
//!   read-only tmpfs holding the program's root directory at [`JAIL_ROOT`]
//!   (read-only unless writable, nosuid, nodev, host pseudo file systems
//!   detached) and a procfs that shows only the VMM's own processes;
//! - `identity`: an unprivileged uid/gid, no supplementary groups, every
//!   capability dropped (bounding, ambient, effective, permitted,
//!   inheritable), no_new_privs, not dumpable;
//! - `landlock`: file access only beneath the root directory (no device
//!   creation, no device ioctls; writes only in a writable root), no
//!   abstract unix sockets or signals outside the jail;
//! - `seccomp`: a filter per thread allowing only the host calls that
//!   thread needs; a refused call ends the VMM with a message naming it.

mod identity;
mod landlock;
mod mounts;
pub mod reports;
pub mod seccomp;

use std::path::{Path, PathBuf};

pub use seccomp::Role;

/// Where the program's root directory is inside the jail.
pub const JAIL_ROOT: &str = "/root";

/// The id the VMM runs as by default (nobody).
pub const DEFAULT_ID: u32 = 65534;

/// One layer of the jail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Layer {
    Identity,
    MountNamespace,
    Landlock,
    Seccomp,
}

impl Layer {
    pub const ALL: [Layer; 4] = [Layer::Identity, Layer::MountNamespace, Layer::Landlock, Layer::Seccomp];

    /// The name `--allow-missing` takes.
    pub fn name(self) -> &'static str {
        match self {
            Layer::Identity => "identity",
            Layer::MountNamespace => "mount-namespace",
            Layer::Landlock => "landlock",
            Layer::Seccomp => "seccomp",
        }
    }

    /// The layer of a name.
    pub fn parse(s: &str) -> Option<Layer> {
        Layer::ALL.into_iter().find(|l| l.name() == s)
    }
}

impl std::fmt::Display for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How the operator wants the VMM confined.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// No jail at all (`--no-jail`): the VMM keeps its own authority.
    pub disabled: bool,
    /// The host uid and gid the VMM runs as.
    pub uid: u32,
    pub gid: u32,
    /// Layers the VMM may run without (`--allow-missing`).
    pub allow_missing: Vec<Layer>,
    /// Once confined, make one host call that no filter allows
    /// (`--jail-selftest`): the VMM must end with the refusal message.
    pub selftest: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { disabled: false, uid: DEFAULT_ID, gid: DEFAULT_ID, allow_missing: Vec::new(), selftest: false }
    }
}

/// Errors of entering the jail.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    #[error(
        "jail layer {layer} is missing on this host: {why}; the VMM does not run the guest without it \
         (pass --allow-missing {layer} to run anyway, see docs/security.md)"
    )]
    Missing { layer: Layer, why: String },
    #[error(
        "refusing to run the guest with host root authority (--uid 0 or --gid 0): \
         pass --allow-missing identity to do so anyway"
    )]
    HostRoot,
    #[error("jail self-test: the host call ptrace was not refused (it returned {0}): no seccomp filter is in force")]
    SelftestPassed(i64),
    #[error("cannot build the seccomp filter for the {role} thread: {why}")]
    Filter { role: &'static str, why: String },
}

/// The jail a VMM entered.
#[derive(Debug)]
pub struct Entered {
    /// The program's root directory as the VMM now reaches it.
    pub root: Option<PathBuf>,
}

/// A failed layer: an error, or a warning when the operator allowed it.
fn missing(s: &Settings, layer: Layer, why: String) -> Result<(), JailError> {
    if s.allow_missing.contains(&layer) {
        log::warn!("jail: running without layer {layer} (--allow-missing {layer}): {why}");
        Ok(())
    } else {
        Err(JailError::Missing { layer, why })
    }
}

/// Whether the jail is on, so threads the VMM starts later filter themselves.
static ACTIVE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether this process entered a jail with seccomp on.
pub fn active() -> bool {
    ACTIVE.load(std::sync::atomic::Ordering::Relaxed)
}

/// Confines this process. `root` is the program's root directory; `role`
/// the calling thread's. Every descriptor the VMM needs later (/dev/kvm,
/// the guest's memory, the cluster's keys, the report directory) must be
/// open already. Must be called while the process has one thread.
/// Without a root (Linux mode) the jail holds no file tree of the host.
pub fn enter(s: &Settings, root: Option<&Path>, writable: bool, role: Role) -> Result<Entered, JailError> {
    if s.disabled {
        log::warn!("jail: off (--no-jail): the VMM performs the guest's host calls with its own authority");
        return Ok(Entered { root: root.map(Path::to_path_buf) });
    }
    if (s.uid == 0 || s.gid == 0) && !s.allow_missing.contains(&Layer::Identity) {
        return Err(JailError::HostRoot);
    }
    let mut layers = Vec::new();
    let privileged = identity::privileged();
    let mut jailed_root = root.map(Path::to_path_buf);
    match mounts::enter(root, writable, privileged) {
        Ok(r) => {
            jailed_root = r;
            layers.push(Layer::MountNamespace);
        }
        Err(why) => missing(s, Layer::MountNamespace, why)?,
    }
    match identity::drop_to(s.uid, s.gid, privileged) {
        Ok(()) => {
            if s.uid != 0 && s.gid != 0 {
                layers.push(Layer::Identity);
            }
        }
        Err(why) => missing(s, Layer::Identity, why)?,
    }
    reports::warn_if_unwritable();
    match landlock::restrict(jailed_root.as_deref(), writable, reports::fd()) {
        Ok(abi) => {
            log::debug!("jail: landlock ABI {abi}");
            layers.push(Layer::Landlock);
        }
        Err(why) => missing(s, Layer::Landlock, why)?,
    }
    match seccomp::install(role) {
        Ok(()) => {
            ACTIVE.store(true, std::sync::atomic::Ordering::Relaxed);
            dmvx_sync::link::on_io_thread_start(|| filter_thread(Role::LinkIo));
            layers.push(Layer::Seccomp);
        }
        Err(seccomp::InstallError::Build(e)) => return Err(e),
        Err(seccomp::InstallError::Kernel(why)) => missing(s, Layer::Seccomp, why)?,
    }
    let names: Vec<&str> = layers.iter().map(|l| l.name()).collect();
    log::debug!(
        "jail: uid {} gid {}, root {}, layers: {}",
        // SAFETY: getuid and getgid cannot fail.
        unsafe { libc::getuid() },
        // SAFETY: as above.
        unsafe { libc::getgid() },
        jailed_root.as_deref().unwrap_or(Path::new("(none)")).display(),
        names.join(", ")
    );
    if s.selftest {
        log::warn!("jail self-test: calling ptrace(PTRACE_TRACEME), which no filter allows");
        // SAFETY: PTRACE_TRACEME takes no pointers; the filter refuses it.
        let r = unsafe { libc::syscall(libc::SYS_ptrace, libc::PTRACE_TRACEME, 0, 0, 0) };
        return Err(JailError::SelftestPassed(r));
    }
    Ok(Entered { root: jailed_root })
}

/// Makes every thread of this process allocate from glibc's main arena.
/// A thread's own arena is a heap that glibc shrinks by reading
/// /proc/sys/vm/overcommit_memory the first time it would give memory
/// back; the filters refuse that open, and a link I/O thread that freed a
/// large receive buffer ended the VMM with SIGSYS. Call it before the
/// first thread starts (threads keep the arena they first used).
pub fn one_malloc_arena() {
    // SAFETY: mallopt only changes allocator tunables.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Installs the filter of `role` on a thread the VMM started after it
/// entered the jail (a no-op outside a jail). Failing here is fatal: the
/// thread would run with its parent's wider filter.
pub fn filter_thread(role: Role) {
    if !active() {
        return;
    }
    if let Err(e) = seccomp::install(role) {
        let msg = match e {
            seccomp::InstallError::Build(e) => e.to_string(),
            seccomp::InstallError::Kernel(w) => w,
        };
        log::error!("jail: cannot filter the {} thread: {msg}", role.name());
        std::process::exit(125);
    }
}
