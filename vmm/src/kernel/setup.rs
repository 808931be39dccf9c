//! Building the kernel of a new run: the VM, the address space with the
//! program loaded, the first task and its thread group, and, in a cluster,
//! the monitor.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::creds::Creds;
use super::errno::Errno;
use super::exec::{self, ExecError};
use super::fd_table::FdTable;
use super::file::{lock, FileKind, OpenFile};
use super::fs_context::FsContext;
use super::layout::Layout;
use super::mm::{HostIov, Mm};
use super::sandbox::Sandbox;
use super::signal::frame::xsave_size;
use super::signal::host::SignalGuard;
use super::task::Task;
use super::thread_group::ThreadGroup;
use super::{Config, Diagnostics, Kernel, KernelError, Outcome, Stats};
use crate::memory::SharedFrames;
use crate::monitor;
use crate::platform::Platform;

use super::proc_table::{ProcTable, FIRST_PID, INIT_PID};

/// Runs a program to completion.
pub fn run(config: Config) -> Result<Outcome, KernelError> {
    let (mut plat, memory) =
        Platform::new(config.memory, config.shared_memory, &config.kernel, config.launched_ns, config.syscall_path)?;
    // SAFETY: getuid and getgid have no preconditions and cannot fail.
    let creds = Creds::new(unsafe { libc::getuid() }, unsafe { libc::getgid() });
    // What the VMM needs from outside the root is opened before the jail.
    super::sandbox::open_devices();
    super::cpus::init_host_cpus();
    if let Some(join) = &config.cluster {
        crate::jail::reports::open(&join.report_dir)
            .map_err(|source| KernelError::ReportDir { path: join.report_dir.clone(), source })?;
    }
    let jailed = crate::jail::enter(&config.jail, Some(&config.root), config.writable, crate::jail::Role::Vmm)?;
    let root = jailed.root.unwrap_or(config.root.clone());
    let sandbox = Arc::new(Sandbox::new(&root, config.writable)?);
    // The VMM applies the program's umask itself; the host's must not cut
    // the modes again.
    // SAFETY: umask has no preconditions and cannot fail.
    unsafe { libc::umask(0) };
    let shared = SharedFrames::of(&memory.mem).map_err(KernelError::Table)?;
    let layout =
        Layout::at_launch(config.variant, config.layout_seed, config.fixed_layout).map_err(KernelError::LayoutSeed)?;
    let mut mm = Mm::new(memory.mem, memory.frames, memory.pt, layout);
    mm.shared = shared.map(Arc::new);
    let cwd = {
        let (fd, st) =
            sandbox.lookup(b"/", config.cwd.as_bytes(), true).map_err(|e| exec_open_error(&config.cwd, e))?;
        if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
            return Err(exec_open_error(&config.cwd, Errno::ENOTDIR));
        }
        sandbox.guest_path(fd.as_raw_fd())
    };
    let argv: Vec<Vec<u8>> = config.argv.iter().map(|s| s.clone().into_bytes()).collect();
    let envp: Vec<Vec<u8>> = config.env.iter().map(|s| s.clone().into_bytes()).collect();
    let program = find_program(&sandbox, &cwd, &config.program);
    let prepared = exec::prepare(&sandbox, &cwd, &program, argv, &envp)?;
    // The cluster is joined before the program is loaded: a shared data
    // layout needs the leader's seed first.
    let monitor = match config.cluster {
        Some(join) => {
            let data = join.data;
            let mut m = monitor::join::join(join, prepared.exe(), &sandbox, FIRST_PID)?;
            if data == super::layout::DataLayout::Shared {
                let seed = m.agree_data_seed(super::layout::host_seed)?;
                mm.layout.share_data(seed);
            }
            Some(Box::new(m))
        }
        None => None,
    };
    let loaded = exec::load(&mut mm, prepared, &envp, &creds, random16())?;
    let placed = loaded.placed;
    plat.start(&loaded.regs)?;

    let procs = Arc::new(ProcTable::new(config.max_procs).map_err(KernelError::Table)?);
    // Orphaned processes of the program are reparented here (or to the
    // jail's init) and reaped, never left to the host's init.
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let tg = Arc::new(ThreadGroup::new(FIRST_PID, INIT_PID, creds, loaded.exe, comm_name(&program)));
    let files = Arc::new(Mutex::new(stdio_table()?));
    let fs = Arc::new(Mutex::new(FsContext { cwd, umask: 0o022 }));
    let task = Task::new(FIRST_PID, tg, files, fs);
    if monitor.is_some() {
        Kernel::stdio_remote(&mut lock(&task.files));
    }
    let follower = monitor.as_ref().is_some_and(|m| !m.is_leader());
    if monitor.as_ref().is_some_and(|m| m.is_leader()) {
        report_unhidden();
    }
    let mut k = Kernel {
        mm,
        task,
        sandbox,
        monitor,
        iov: HostIov::default(),
        bounce: Vec::new(),
        stop: None,
        fatal: None,
        host_raised: 0,
        timer_raised: Vec::new(),
        xsave_size: xsave_size(),
        xcr0: plat.xcr0(),
        stats: Stats::default(),
        diag: Diagnostics {
            show_stats: config.stats,
            trace: config.trace,
            started: Instant::now(),
            refusals_logged: Default::default(),
        },
        procs,
        root: true,
        vfork_done: None,
        reported: Default::default(),
        signal_waiting: None,
        sched: Default::default(),
        net: Arc::new(config.net.clone()),
        own_ports: Default::default(),
        peers: Default::default(),
        cpus: None,
        netlink_ports: 0,
    };
    k.placed(&placed);
    let guard = SignalGuard::install(plat.kick_target(), follower);
    // After the jail and the guard: the ring's runner inherits the filter
    // and becomes the thread that kicks reach.
    plat.enable_ring(super::syscall::RING_CALLS)?;
    let outcome = k.run_loop(&mut plat);
    drop(guard);
    let outcome = outcome?;
    k.exit_process(&outcome);
    if k.diag.show_stats {
        k.print_stats(plat.stats());
    }
    if !k.root {
        // A child process's VMM ends here: its status went into the process
        // table for its parent; what the first process's VMM tells the user
        // (how the program ended) is not for it to say.
        std::process::exit(outcome.status());
    }
    Ok(outcome)
}

/// Says which instructions that bypass the VMM this host could not hide
/// from the program (each variant may then see its own values).
fn report_unhidden() {
    let unhidden = crate::arch::x86_64::regs::unhidden_instructions();
    if !unhidden.is_empty() {
        log::info!(
            "this host's KVM shows the program the host CPU's CPUID: {} cannot be hidden (a program that uses them \
             gets different values in each variant and diverges)",
            unhidden.join(" and ")
        );
    }
    if !crate::vstate::tsc::can_fault_tsc() {
        log::info!("this host cannot make rdtsc fault: each variant reads its own time stamp counter");
    }
}

fn exec_open_error(path: &str, e: Errno) -> KernelError {
    KernelError::Exec(ExecError::Open {
        path: path.into(),
        reason: std::io::Error::from_raw_os_error(e.0).to_string(),
        errno: e,
    })
}

/// A program name without a slash is looked up in the usual PATH inside the root.
pub(crate) fn find_program(sb: &Sandbox, cwd: &[u8], program: &str) -> Vec<u8> {
    if program.contains('/') {
        return program.as_bytes().to_vec();
    }
    for dir in ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        let candidate = format!("{dir}/{program}");
        if sb.lookup(cwd, candidate.as_bytes(), true).is_ok_and(|(_, st)| st.st_mode & libc::S_IFMT == libc::S_IFREG) {
            return candidate.into_bytes();
        }
    }
    program.as_bytes().to_vec()
}

/// The command name of a program path (its last component, 15 bytes at most).
pub(crate) fn comm_name(path: &[u8]) -> [u8; 16] {
    let base = path.rsplit(|&c| c == b'/').next().unwrap_or(path);
    let mut n = [0u8; 16];
    let len = base.len().min(15);
    n[..len].copy_from_slice(&base[..len]);
    n
}

impl Kernel {
    /// A program image was loaded: its layout goes into reports (and the trace).
    pub(crate) fn placed(&mut self, placed: &super::layout::Placed) {
        let used = self.mm.layout.used(placed);
        if self.diag.trace {
            eprintln!(
                "dmvx: layout of variant {} (seed {}, image {}): program {}, interpreter {}, heap {}, stack {}, mmap top {}",
                self.mm.layout.variant, used.seed, used.generation, used.program, used.interpreter, used.heap, used.stack, used.mmap_top
            );
        }
        if let Some(m) = self.monitor.as_mut() {
            m.layout = Some(used);
        }
    }
}

/// 16 random bytes from the host (AT_RANDOM), drawn by every variant itself:
/// the stack canary and pointer guard that glibc derives from them differ
/// between variants (nothing compares or replicates them).
pub(crate) fn random16() -> [u8; 16] {
    let mut b = [0u8; 16];
    // SAFETY: b is a valid 16-byte buffer.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), 16, 0) };
    debug_assert_eq!(n, 16);
    b
}

/// The program's standard descriptors: duplicates of the VMM's, so the
/// program closing them never closes the VMM's own.
fn stdio_table() -> Result<FdTable, KernelError> {
    let mut t = FdTable::new(1024);
    for fd in 0..3 {
        // SAFETY: F_DUPFD_CLOEXEC on a standard descriptor; result checked.
        let d = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
        if d < 0 {
            // A closed standard descriptor: give the program /dev/null.
            let null = super::sandbox::null_device().map_err(KernelError::Stdio)?;
            t.insert_at(fd as u64, OpenFile::new(null, FileKind::CharDevice), false).expect("slot 0..3 is valid");
            continue;
        }
        // SAFETY: d is a fresh descriptor owned by nobody else.
        let owned = unsafe { OwnedFd::from_raw_fd(d) };
        // SAFETY: stat is plain data; all zeroes is a valid value.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: d is open; st is a valid out-parameter.
        unsafe { libc::fstat(d, &mut st) };
        t.insert_at(fd as u64, OpenFile::new(owned, FileKind::from_mode(st.st_mode)), false)
            .expect("slot 0..3 is valid");
    }
    Ok(t)
}
