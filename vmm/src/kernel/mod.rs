//! Process mode: the VMM is the kernel of one Linux program.
//!
//! The objects follow gVisor's Sentry: a task (`task`: registers, signal
//! mask, per-thread state) belongs to a thread group (`thread_group`: pid,
//! dispositions, limits, credentials) and runs in an address space (`mm`);
//! it holds an fd table (`fd_table`) and a file-system context
//! (`fs_context`), shared or copied as clone flags say. The `Kernel` is
//! everything one VM runs: its address space, its tasks, the sandbox they
//! reach the host through, and the MVX monitor (`crate::monitor`) that sits
//! between system-call dispatch and execution when the run is part of a
//! cluster. How the guest is entered and left is the platform's
//! (`crate::platform`); the kernel sees traps and registers only.

mod call_view;
pub mod children;
pub mod cpus;
pub mod creds;
pub mod errno;
pub mod exec;
pub mod fd_table;
pub mod file;
pub mod fork;
pub mod fs_context;
mod host_io;
pub mod identity;
mod insn;
mod interrupt;
pub mod layout;
pub mod mm;
pub mod net_policy;
pub mod netlink;
pub mod proc_table;
mod procfs;
mod run;
pub mod sandbox;
pub mod sched;
mod setup;
pub mod signal;
pub mod syscall;
pub mod task;
pub mod thread_group;
mod threads;
pub mod timers;
mod wait;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, MutexGuard};
use std::time::Instant;

use crate::guest_kernel::GuestKernel;
use crate::monitor::{Monitor, Stop};
use fd_table::FdTable;
use file::lock;
use fs_context::FsContext;
use mm::{HostIov, Mm};
use sandbox::Sandbox;
use signal::Signal;
use task::Task;
use thread_group::TgState;

pub(crate) use setup::find_program;
pub use setup::run;

/// What to run, and how.
pub struct Config {
    /// The guest kernel image.
    pub kernel: GuestKernel,
    /// Guest memory in bytes.
    pub memory: u64,
    /// Root directory of the program.
    pub root: PathBuf,
    /// Whether the program may modify the root.
    pub writable: bool,
    /// Path of the program inside the root.
    pub program: String,
    /// Its arguments, argv[0] first.
    pub argv: Vec<String>,
    /// Its environment, K=V.
    pub env: Vec<String>,
    /// Initial working directory inside the root.
    pub cwd: String,
    /// Variant id (address-space layout).
    pub variant: u32,
    /// Seed of the layout draw (`--layout-seed`); `None`: from the host.
    pub layout_seed: Option<u64>,
    /// The slot's fixed layout instead of a random one (`--fixed-layout`).
    pub fixed_layout: bool,
    /// Print statistics at exit.
    pub stats: bool,
    /// Print every system call and its result to stderr.
    pub trace: bool,
    /// CLOCK_MONOTONIC nanoseconds at which the caller launched the VMM,
    /// for the launch-to-first-instruction figure.
    pub launched_ns: Option<u64>,
    /// Run as this variant of a cluster.
    pub cluster: Option<ClusterJoin>,
    /// The most processes the program may have at once.
    pub max_procs: u32,
    /// How the program's system calls reach the VMM.
    pub syscall_path: crate::platform::SyscallPath,
    /// Bytes of memory for MAP_SHARED anonymous mappings shared across fork.
    pub shared_memory: u64,
    /// How the VMM confines itself before the program's first instruction.
    pub jail: crate::jail::Settings,
    /// Where the program's sockets may connect.
    pub net: net_policy::NetPolicy,
}

/// Membership in a cluster of variants.
pub use crate::monitor::join::Join as ClusterJoin;

/// How the program ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// exit/exit_group with this status.
    Exited(i32),
    /// Killed by a signal, with a one-line reason.
    Killed { signal: Signal, reason: String },
    /// Stopped because the variants diverged (the report is written).
    Diverged(String),
    /// A follower stopped because the leader ended the run.
    Ended(i32),
}

impl Outcome {
    /// The status a Linux shell would report: the exit status, or 128 + signal.
    pub fn status(&self) -> i32 {
        match self {
            Outcome::Exited(s) => *s & 0xff,
            Outcome::Killed { signal, .. } => 128 + signal.0,
            Outcome::Diverged(_) => crate::monitor::EXIT_DIVERGENCE as i32,
            Outcome::Ended(s) => *s & 0xff,
        }
    }
}

/// Errors that stop process mode (as opposed to the program failing).
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(transparent)]
    Setup(#[from] crate::platform::SetupError),
    #[error(transparent)]
    Platform(#[from] crate::platform::PlatformError),
    #[error(transparent)]
    Sandbox(#[from] sandbox::SandboxError),
    #[error("program {0}")]
    Exec(#[from] exec::ExecError),
    #[error("cannot set up the program's standard descriptors: {0}")]
    Stdio(std::io::Error),
    #[error(transparent)]
    Cluster(#[from] crate::monitor::JoinError),
    #[error("cannot create the process table: {0}")]
    Table(std::io::Error),
    #[error("cannot create a process on the host: {0}")]
    Fork(std::io::Error),
    #[error("cannot create process {pid} as the leader did: {source}")]
    ForkAsLeader { pid: u32, source: proc_table::TableError },
    #[error(transparent)]
    Jail(#[from] crate::jail::JailError),
    #[error("cannot open the divergence report directory {path}: {source}")]
    ReportDir { path: PathBuf, source: std::io::Error },
    #[error("cannot draw the address-space layout: no random bytes from the host: {0}")]
    LayoutSeed(std::io::Error),
}

/// Counters printed with --stats.
#[derive(Debug, Default)]
pub struct Stats {
    pub syscalls: u64,
    pub page_faults: u64,
    pub signals: u64,
    /// rdtsc and rdtscp the kernel answered.
    pub trapped_insns: u64,
}

/// What the kernel logs once, and how much it tells.
struct Diagnostics {
    show_stats: bool,
    trace: bool,
    started: Instant,
    /// Refusals already logged (each once).
    refusals_logged: HashSet<String>,
}

/// The kernel of one VM.
pub struct Kernel {
    /// The VM's address space.
    pub(crate) mm: Mm,
    /// The task on the vCPU.
    pub(crate) task: Task,
    /// The root directory every path resolves in.
    pub(crate) sandbox: Arc<Sandbox>,
    /// Multi-variant execution, when part of a cluster.
    pub(crate) monitor: Option<Box<Monitor>>,
    /// Host iovecs over guest memory for the current call (no allocation).
    pub(crate) iov: HostIov,
    /// A reusable VMM buffer for the current call.
    pub(crate) bounce: Vec<u8>,
    /// The monitor must stop the run once the current call returns.
    pub(crate) stop: Option<Stop>,
    /// Why the program must be killed once the current call returns
    /// (execve failing past its point of no return).
    pub(crate) fatal: Option<String>,
    /// Leader: forwarded host signals caught since the last call (replicated).
    pub(crate) host_raised: u64,
    /// Of `host_raised`, the timers' signals: (signal, si_code's word
    /// after: id and overrun), shipped so followers raise them alike.
    pub(crate) timer_raised: Vec<(i32, u64)>,
    /// Bytes of XSAVE state in a signal frame, and the XCR0 it is sized for.
    pub(crate) xsave_size: usize,
    pub(crate) xcr0: u64,
    pub(crate) stats: Stats,
    diag: Diagnostics,
    /// The process table of this variant (shared by all its VMMs).
    pub(crate) procs: Arc<proc_table::ProcTable>,
    /// Whether this is the first process (its end ends the run).
    pub(crate) root: bool,
    /// A vfork child: its end of the pipe its parent waits on (closed at
    /// execve or exit).
    pub(crate) vfork_done: Option<std::os::fd::OwnedFd>,
    /// Children whose end was signalled to the program already.
    pub(crate) reported: HashSet<u32>,
    /// Leader: since when a handled host signal waits for the program's
    /// next system call (see `interrupt`).
    pub(crate) signal_waiting: Option<Instant>,
    /// The process's other threads.
    pub(crate) sched: sched::Sched,
    /// Where the program's sockets may connect (`--net`).
    pub(crate) net: Arc<net_policy::NetPolicy>,
    /// The IP ports the program bound (its own services).
    pub(crate) own_ports: std::collections::BTreeSet<u16>,
    /// Where datagrams came from (answers may go back).
    pub(crate) peers: net_policy::Peers,
    /// How many virtual CPUs the program has, once a call asked (`cpus`).
    pub(crate) cpus: Option<u32>,
    /// Netlink port ids handed out so far (`netlink`).
    pub(crate) netlink_ports: u32,
}

impl Kernel {
    /// The current task's fd table.
    #[inline]
    pub(crate) fn fds(&self) -> MutexGuard<'_, FdTable> {
        lock(&self.task.files)
    }

    /// The current task's file-system context.
    #[inline]
    pub(crate) fn fs(&self) -> MutexGuard<'_, FsContext> {
        lock(&self.task.fs)
    }

    /// The current task's thread group.
    #[inline]
    pub(crate) fn tg(&self) -> MutexGuard<'_, TgState> {
        lock(&self.task.tg.state)
    }

    /// The current working directory.
    pub(crate) fn cwd(&self) -> Vec<u8> {
        self.fs().cwd.clone()
    }

    /// Whether the run is part of a cluster and this VMM follows its leader.
    #[inline]
    pub(crate) fn is_follower(&self) -> bool {
        self.monitor.as_ref().is_some_and(|m| !m.is_leader())
    }

    /// Whether the run is part of a cluster and this VMM leads it.
    #[inline]
    pub(crate) fn is_leader(&self) -> bool {
        self.monitor.as_ref().is_some_and(|m| m.is_leader())
    }

    /// Seconds since the run started.
    pub(crate) fn uptime_secs(&self) -> u64 {
        self.diag.started.elapsed().as_secs()
    }

    /// Logs an unsupported call once per run, by name.
    pub(crate) fn unsupported(&mut self, nr: u64) {
        if !self.procs.first_log(nr) {
            return;
        }
        let name = syscall::names::name(nr).unwrap_or("unknown");
        log::warn!(target: crate::logger::PROGRAM, "unsupported system call {name} ({nr}), returning ENOSYS");
    }

    /// Logs a refusal once (the same text is not repeated).
    pub(crate) fn log_once(&mut self, what: String) {
        if self.diag.refusals_logged.insert(what.clone()) {
            log::warn!(target: crate::logger::PROGRAM, "{what}");
        }
    }

    fn print_stats(&self, platform: crate::platform::PlatformStats) {
        let s = &self.stats;
        let up = self.diag.started.elapsed();
        eprintln!(
            "dmvx stats: {} exits, {} system calls, {} page faults, {} kernel-operation rounds, {} pages populated, {} guest frames in use, {:.3} s",
            platform.exits,
            s.syscalls,
            s.page_faults,
            platform.kops_rounds,
            self.mm.pages_populated,
            self.mm.frames.in_use(),
            up.as_secs_f64()
        );
        if s.trapped_insns > 0 {
            eprintln!("dmvx stats: {} trapped instructions (rdtsc, rdtscp)", s.trapped_insns);
        }
        let r = platform.ring;
        if r.done + r.via_exit + r.late + r.refused > 0 {
            eprintln!(
                "dmvx stats: ring: {} calls without an exit, {} finished through an exit, {} done too late for the stub, {} refused, {} parks, {} back-offs",
                r.done, r.via_exit, r.late, r.refused, r.parks, r.backoffs
            );
        }
        let rss = vm_rss_bytes();
        let guest = self.mm.mem.resident_bytes();
        eprintln!(
            "dmvx stats: resident memory {} KiB = guest pages {} KiB + VMM overhead {} KiB",
            rss / 1024,
            guest / 1024,
            rss.saturating_sub(guest) / 1024
        );
        if let Some(m) = &self.monitor {
            eprintln!("dmvx stats: {}", m.summary());
        }
        if !self.root {
            eprintln!("dmvx stats: (process {})", self.task.tg.pid);
        }
        if let Some(ns) = platform.first_exit_ns {
            eprintln!("dmvx stats: launch to first guest instruction {:.3} ms", ns as f64 / 1e6);
        }
    }
}

/// The VMM's resident set size in bytes (VmRSS), 0 if unknown.
pub fn vm_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// The CLOCK_MONOTONIC time in nanoseconds.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid out-parameter.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
