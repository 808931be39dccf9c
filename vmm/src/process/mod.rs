//! Process mode: the VMM is the operating system of one Linux program.
//!
//! The guest kernel's stubs turn every `syscall` and every fault of the
//! program into a port write; `Process` handles it and tells the vCPU where
//! to continue. There are three ways back to the program:
//! - the vCPU is still at CPL3 (hosts where `syscall` keeps privilege): the
//!   VMM sets the program's registers directly — one exit per call;
//! - the vCPU is at CPL0 (bare-metal `syscall`, or an exception handler):
//!   the VMM writes an iret frame and points rip at the kernel's `iretq`;
//! - page-table entries were narrowed: the VMM first runs the kernel's
//!   kernel-operations routine (see `mm`), then returns as above.

pub mod deliver;
pub mod errno;
pub mod exec;
pub mod fd;
pub mod fs;
pub mod layout;
pub mod mm;
pub mod monitor;
pub mod signal;
pub mod syscall;

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::Instant;

use dmvx_abi::{
    KernelHeader, KopsOp, EXCEPTION_FRAME_SIZE, PORT_BOOT, PORT_EXCEPTION_BASE, PORT_KOPS_DONE, PORT_SYSCALL,
};
use kvm_bindings::kvm_regs;

use crate::arch::x86_64::gdt::write_tables;
use crate::arch::x86_64::layout::{
    direct_map, DIRECT_MAP_BASE, FRAMES_START, KERNEL_STACK_TOP_GPA, KOPS_MAX_OPS, KOPS_OPS_GPA, MIN_MEMORY,
};
use crate::arch::x86_64::paging::{is_canonical, pte, PageTables};
use crate::arch::x86_64::regs::{self, cpl, enter_kernel_segments, rflags, USER_CS_SEL, USER_SS_SEL};
use crate::arch::x86_64::{pf, vector};
use crate::kernel::GuestKernel;
use crate::memory::FrameAllocator;
use crate::vstate::vcpu::{self, ExitHandler, Flow, Vcpu, VcpuError};
use crate::vstate::vm::{Vm, VmError};
use errno::Errno;
use exec::{Creds, ExecError};
use fd::{FdTable, FileKind, OpenFile};
use fs::{Sandbox, SandboxError};
use layout::Layout;
use mm::{Access, Fault, HostIov, Mm};
use signal::{Signal, SignalState};

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
    /// Print statistics at exit.
    pub stats: bool,
    /// Print every system call and its result to stderr.
    pub trace: bool,
    /// CLOCK_MONOTONIC nanoseconds at which the caller launched the VMM,
    /// for the launch-to-first-instruction figure.
    pub launched_ns: Option<u64>,
    /// Run as this variant of a cluster.
    pub cluster: Option<ClusterJoin>,
}

/// Membership in a cluster of variants.
pub struct ClusterJoin {
    pub cfg: dmvx_sync::ClusterConfig,
    pub id: u8,
    pub report_dir: PathBuf,
}

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
            Outcome::Diverged(_) => crate::mvx::EXIT_DIVERGENCE as i32,
            Outcome::Ended(s) => *s & 0xff,
        }
    }
}

/// Errors that stop process mode (as opposed to the program failing).
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error(transparent)]
    Regs(#[from] regs::RegsError),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error("program {0}")]
    Exec(#[from] ExecError),
    #[error("guest memory of {0} MiB is too small for the page tables and guest kernel (raise --memory)")]
    MemoryTooSmall(u64),
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    #[error("cannot set up the program's standard descriptors: {0}")]
    Stdio(std::io::Error),
    #[error("cluster: {0}")]
    Cluster(String),
}

/// Counters printed with --stats.
#[derive(Debug, Default)]
pub struct Stats {
    pub exits: u64,
    pub syscalls: u64,
    pub page_faults: u64,
    pub kops_rounds: u64,
    pub signals: u64,
    pub first_exit_ns: Option<u64>,
}

/// Identity the program sees.
#[derive(Debug, Clone, Copy)]
pub struct Ids {
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
}

/// The virtual process id of the program (the same in every variant).
pub const VIRTUAL_PID: u32 = 2;

/// The program's operating system.
pub struct Process {
    mm: Mm,
    sandbox: Sandbox,
    fds: FdTable,
    cwd: Vec<u8>,
    umask: u32,
    exe: Vec<u8>,
    ids: Ids,
    kernel: KernelHeader<u64>,
    signals: SignalState,
    /// FS and GS bases to load before the program resumes, if changed.
    seg_bases: Option<(u64, u64)>,
    fs_base: u64,
    gs_base: u64,
    /// The program's registers while the kernel-operations routine runs.
    saved: Option<kvm_regs>,
    tid_address: u64,
    robust_list: (u64, u64),
    limits: syscall::proc::Limits,
    name: [u8; 16],
    started: Instant,
    stats: Stats,
    show_stats: bool,
    trace: bool,
    launched_ns: Option<u64>,
    unsupported_seen: [u64; syscall::names::COUNT.div_ceil(64)],
    iov: HostIov,
    bounce: Vec<u8>,
    /// The call being handled (for refusals logged by name).
    current_nr: Option<u64>,
    /// Why the program must be killed, when execve fails past its point of no return.
    fatal: Option<String>,
    /// Refusals already logged (each is logged once).
    refusals_logged: std::collections::HashSet<String>,
    /// The program's signal mask before a call replaced it for its wait
    /// (ppoll, pselect6, epoll_pwait, rt_sigsuspend).
    saved_mask: Option<u64>,
    /// FPU state to load before the program resumes (rt_sigreturn).
    pending_xsave: Option<Box<kvm_bindings::kvm_xsave>>,
    /// Bytes of XSAVE state in a signal frame, and the XCR0 it was sized for.
    xsave_size: usize,
    xcr0: u64,
    /// The program's stack pointer at the current system call.
    entry_rsp: u64,
    /// Multi-variant execution: the link to the other variants, if any.
    mvx: Option<Box<crate::mvx::Mvx>>,
    /// Leader: signals caught from the host since the last call (replicated).
    host_raised: u64,
    /// The system call being handled.
    cur_nr: Option<u64>,
    /// The monitor must stop the run once the current call returns.
    stop_requested: Option<crate::mvx::Stop>,
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

/// Runs a program to completion.
pub fn run(config: Config) -> Result<Outcome, ProcessError> {
    let vm = Vm::new(config.memory, MIN_MEMORY)?;
    let mem = vm.mem.clone();
    let mib = config.memory >> 20;
    let mut frames = FrameAllocator::new(FRAMES_START, mem.size());
    let pt = PageTables::new(&mem, &mut frames).ok_or(ProcessError::MemoryTooSmall(mib))?;
    config.kernel.install(&mem, &mut frames, &pt).ok_or(ProcessError::MemoryTooSmall(mib))?;
    pt.map_huge(
        &mem,
        &mut frames,
        DIRECT_MAP_BASE,
        0,
        mem.size(),
        pte::PRESENT | pte::WRITABLE | pte::ACCESSED | pte::DIRTY | pte::NO_EXECUTE,
    )
    .ok_or(ProcessError::MemoryTooSmall(mib))?;
    let header = config.kernel.header;
    write_tables(&mem, &header.exception_stubs, PORT_SYSCALL).ok_or(ProcessError::MemoryTooSmall(mib))?;

    let sandbox = Sandbox::new(&config.root, config.writable)?;
    let mut mm = Mm::new(mem.clone(), frames, pt, Layout::for_variant(config.variant));
    let cwd = {
        let (fd, st) =
            sandbox.lookup(b"/", config.cwd.as_bytes(), true).map_err(|e| exec_open_error(&config.cwd, e))?;
        if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
            return Err(exec_open_error(&config.cwd, Errno::ENOTDIR));
        }
        sandbox.guest_path(std::os::fd::AsRawFd::as_raw_fd(&fd))
    };
    let ids = Ids {
        pid: VIRTUAL_PID,
        // SAFETY: getuid and getgid have no preconditions and cannot fail.
        uid: unsafe { libc::getuid() },
        // SAFETY: as above.
        gid: unsafe { libc::getgid() },
    };
    let argv: Vec<Vec<u8>> = config.argv.iter().map(|s| s.clone().into_bytes()).collect();
    let envp: Vec<Vec<u8>> = config.env.iter().map(|s| s.clone().into_bytes()).collect();
    let program = find_program(&sandbox, &cwd, &config.program);
    let prepared = exec::prepare(&sandbox, &cwd, &program, argv, &envp)?;
    let loaded = exec::load(&mut mm, prepared, &envp, &Creds { uid: ids.uid, gid: ids.gid }, random16())?;

    let mut vcpu = Vcpu::new(vm.fd.create_vcpu(0).map_err(VmError::CreateVcpu)?);
    let xcr0 = regs::setup_cpuid(&vm.kvm, vcpu.fd())?;
    regs::setup_long_mode(vcpu.fd(), mm.page_tables().root(), header.syscall_entry, xcr0)?;
    // Enter through the boot stub, which irets into the program.
    let frame = KERNEL_STACK_TOP_GPA - 5 * 8;
    let r = loaded.regs;
    for (i, v) in [r.rip, USER_CS_SEL, r.rflags, r.rsp, USER_SS_SEL].into_iter().enumerate() {
        mem.write_u64(frame + 8 * i as u64, v).ok_or(ProcessError::MemoryTooSmall(mib))?;
    }
    regs::setup_regs(vcpu.fd(), header.boot_entry, direct_map(frame))?;

    let mut p = Process {
        mm,
        sandbox,
        fds: stdio_table()?,
        cwd,
        umask: 0o022,
        exe: loaded.exe,
        ids,
        kernel: header,
        signals: SignalState::default(),
        seg_bases: None,
        fs_base: 0,
        gs_base: 0,
        saved: None,
        tid_address: 0,
        robust_list: (0, 0),
        limits: syscall::proc::Limits::default(),
        name: comm_name(&program),
        started: Instant::now(),
        stats: Stats::default(),
        show_stats: config.stats,
        trace: config.trace,
        launched_ns: config.launched_ns,
        unsupported_seen: [0; syscall::names::COUNT.div_ceil(64)],
        iov: HostIov::default(),
        bounce: Vec::new(),
        current_nr: None,
        fatal: None,
        refusals_logged: Default::default(),
        saved_mask: None,
        pending_xsave: None,
        xsave_size: deliver::xsave_size(),
        xcr0,
        entry_rsp: 0,
        mvx: None,
        host_raised: 0,
        cur_nr: None,
        stop_requested: None,
    };
    if let Some(join) = config.cluster {
        p.mvx = Some(Box::new(connect_cluster(join, &p.exe, &p.sandbox)?));
        // The standard descriptors are the leader's: followers replay
        // their input and never write their output.
        p.fds.mark_remote(&[0, 1, 2]);
    }
    let follower = p.mvx.as_ref().is_some_and(|m| !m.is_leader());
    let guard = deliver::SignalGuard::install(&mut vcpu, follower);
    let outcome = vcpu::run(&mut vcpu, &mut p);
    drop(guard);
    let outcome = outcome?;
    if p.show_stats {
        p.print_stats();
    }
    Ok(outcome)
}

/// Joins the cluster: checks the program against the cluster file's digest,
/// compiles the policy, and connects (leader: waits for every follower).
fn connect_cluster(join: ClusterJoin, exe: &[u8], sandbox: &Sandbox) -> Result<crate::mvx::Mvx, ProcessError> {
    use dmvx_sync::{Digest, Follower, HandshakeInfo, Leader};
    let err = |s: String| ProcessError::Cluster(s);
    let cfg = join.cfg;
    let policy =
        dmvx_sync::policy::Policy::from_toml(&cfg.policy, syscall::names::number).map_err(|e| err(e.to_string()))?;
    let (fd, _) = sandbox
        .open(b"/", exe, libc::O_RDONLY, 0)
        .map_err(|e| err(format!("cannot read the program to digest it: errno {}", e.0)))?;
    let bytes = std::fs::read(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd)))
        .map_err(|e| err(format!("cannot read the program to digest it: {e}")))?;
    let program = Digest::of(&bytes);
    if let Some(want) = cfg.digests.program {
        if want != program {
            return Err(err(format!(
                "the program {} has digest {program}, the cluster file says {want}",
                String::from_utf8_lossy(exe)
            )));
        }
    }
    let info = HandshakeInfo {
        policy: Digest(policy.digest(syscall::names::name)),
        image: cfg.digests.image,
        program: Some(program),
    };
    let me = cfg.variant(join.id).map_err(|e| err(e.to_string()))?.clone();
    let timeout = cfg.timeout;
    let link = match me.role {
        dmvx_sync::Role::Leader => {
            crate::mvx::Link::Leader(Leader::start(&cfg, &info).map_err(|e| err(e.to_string()))?)
        }
        dmvx_sync::Role::Follower => crate::mvx::Link::Follower(Box::new(
            Follower::connect(&cfg, join.id, &info).map_err(|e| err(e.to_string()))?,
        )),
    };
    Ok(crate::mvx::Mvx::new(join.id, link, policy, timeout, join.report_dir))
}

fn exec_open_error(path: &str, e: Errno) -> ProcessError {
    ProcessError::Exec(ExecError::Open {
        path: path.into(),
        reason: std::io::Error::from_raw_os_error(e.0).to_string(),
        errno: e,
    })
}

/// A program name without a slash is looked up in the usual PATH inside the root.
fn find_program(sb: &Sandbox, cwd: &[u8], program: &str) -> Vec<u8> {
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

fn comm_name(path: &[u8]) -> [u8; 16] {
    let base = path.rsplit(|&c| c == b'/').next().unwrap_or(path);
    let mut n = [0u8; 16];
    let len = base.len().min(15);
    n[..len].copy_from_slice(&base[..len]);
    n
}

/// 16 random bytes from the host (AT_RANDOM).
fn random16() -> [u8; 16] {
    let mut b = [0u8; 16];
    // SAFETY: b is a valid 16-byte buffer.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), 16, 0) };
    debug_assert_eq!(n, 16);
    b
}

/// The program's standard descriptors: duplicates of the VMM's, so the
/// program closing them never closes the VMM's own.
fn stdio_table() -> Result<FdTable, ProcessError> {
    let mut t = FdTable::new(1024);
    for fd in 0..3 {
        // SAFETY: F_DUPFD_CLOEXEC on a standard descriptor; result checked.
        let d = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
        if d < 0 {
            // A closed standard descriptor: give the program /dev/null.
            let null =
                std::fs::OpenOptions::new().read(true).write(true).open("/dev/null").map_err(ProcessError::Stdio)?;
            t.insert_at(fd as u64, OpenFile::new(OwnedFd::from(null), FileKind::CharDevice), false)
                .expect("slot 0..3 is valid");
            continue;
        }
        // SAFETY: d is a fresh descriptor owned by nobody else.
        let owned = unsafe { OwnedFd::from_raw_fd(d) };
        let mut st: libc::stat = unsafe_zeroed_stat();
        // SAFETY: d is open; st is a valid out-parameter.
        unsafe { libc::fstat(d, &mut st) };
        t.insert_at(fd as u64, OpenFile::new(owned, FileKind::from_mode(st.st_mode)), false)
            .expect("slot 0..3 is valid");
    }
    Ok(t)
}

fn unsafe_zeroed_stat() -> libc::stat {
    // SAFETY: stat is plain data; all zeroes is a valid value.
    unsafe { std::mem::zeroed() }
}

impl Process {
    /// Where the program continues: `ctx` holds its registers.
    fn resume(&mut self, vcpu: &mut Vcpu, ctx: kvm_regs) -> Result<Flow<Outcome>, VcpuError> {
        if !is_canonical(ctx.rip) || !is_canonical(ctx.rsp) {
            return Ok(self.kill(
                Signal::SIGSEGV,
                format!("general protection fault: non-canonical rip {:#x} or rsp {:#x}", ctx.rip, ctx.rsp),
            ));
        }
        if let Some((fs, gs)) = self.seg_bases.take() {
            let s = vcpu.sregs_mut();
            s.fs.base = fs;
            s.gs.base = gs;
        }
        if let Some(x) = self.pending_xsave.take() {
            // SAFETY: XCR0 excludes AMX, so the whole state fits the
            // 4096-byte kvm_xsave; KVM validates the header and refuses a
            // malformed image, which kills the program below.
            if unsafe { vcpu.fd().set_xsave(&x) }.is_err() {
                return Ok(self.kill(Signal::SIGSEGV, "rt_sigreturn with corrupt FPU state".into()));
            }
        }
        let ctx = match self.deliver_pending(vcpu, ctx) {
            Ok(c) => c,
            Err((sig, why)) => return Ok(self.kill(sig, why)),
        };
        if self.mm.has_kops() {
            self.saved = Some(ctx);
            self.enter_kops(vcpu);
            return Ok(Flow::Continue);
        }
        self.return_to_user(vcpu, ctx);
        Ok(Flow::Continue)
    }

    fn return_to_user(&mut self, vcpu: &mut Vcpu, mut ctx: kvm_regs) {
        ctx.rflags = rflags::sanitize_user(ctx.rflags);
        if cpl(vcpu.sregs()) == 3 {
            *vcpu.regs_mut() = ctx;
            return;
        }
        let frame = KERNEL_STACK_TOP_GPA - 5 * 8;
        for (i, v) in [ctx.rip, USER_CS_SEL, ctx.rflags, ctx.rsp, USER_SS_SEL].into_iter().enumerate() {
            // The kernel stack is inside guest memory by construction.
            let _ = self.mm.mem.write_u64(frame + 8 * i as u64, v);
        }
        ctx.rip = self.kernel.user_return;
        ctx.rsp = direct_map(frame);
        ctx.rflags = rflags::FIXED;
        *vcpu.regs_mut() = ctx;
    }

    /// Runs one batch of queued page-table rewrites in the guest kernel.
    fn enter_kops(&mut self, vcpu: &mut Vcpu) {
        let ops: Vec<KopsOp> = self.mm.take_kops(KOPS_MAX_OPS);
        for (i, op) in ops.iter().enumerate() {
            let at = KOPS_OPS_GPA + (i * dmvx_abi::KOPS_OP_SIZE) as u64;
            let _ = self.mm.mem.write_u64(at, op.dst);
            let _ = self.mm.mem.write_u64(at + 8, op.src);
            let _ = self.mm.mem.write_u64(at + 16, op.qwords);
        }
        if cpl(vcpu.sregs()) != 0 {
            enter_kernel_segments(vcpu.sregs_mut());
        }
        *vcpu.regs_mut() = kvm_regs {
            rbx: direct_map(KOPS_OPS_GPA),
            rbp: ops.len() as u64,
            rsp: direct_map(KERNEL_STACK_TOP_GPA),
            rip: self.kernel.kops_entry,
            rflags: rflags::FIXED,
            ..Default::default()
        };
        self.stats.kops_rounds += 1;
    }

    fn on_kops_done(&mut self, vcpu: &mut Vcpu) -> Result<Flow<Outcome>, VcpuError> {
        let rip = vcpu.regs().rip;
        if cpl(vcpu.sregs()) != 0 || !(self.kernel.kops_entry..self.kernel.kops_entry + KOPS_ROUTINE_MAX).contains(&rip)
        {
            return Err(VcpuError::GuestKernel("kernel-operations report from an unexpected place".into()));
        }
        if self.mm.has_kops() {
            self.enter_kops(vcpu);
            return Ok(Flow::Continue);
        }
        let ctx = self
            .saved
            .take()
            .ok_or_else(|| VcpuError::GuestKernel("kernel operations finished with no program to return to".into()))?;
        self.return_to_user(vcpu, ctx);
        Ok(Flow::Continue)
    }

    fn on_syscall(&mut self, vcpu: &mut Vcpu) -> Result<Flow<Outcome>, VcpuError> {
        let r = *vcpu.regs();
        if r.rip != self.kernel.syscall_entry + 2 {
            // An `out` to the syscall port from anywhere but the entry stub:
            // program code poking the port, which Linux would fault.
            if cpl(vcpu.sregs()) == 3 {
                return Ok(
                    self.kill(Signal::SIGSEGV, format!("general protection fault: port I/O at rip {:#x}", r.rip))
                );
            }
            return Err(VcpuError::GuestKernel(format!("syscall port written from rip {:#x}", r.rip)));
        }
        self.stats.syscalls += 1;
        let mut ctx = r;
        ctx.rip = r.rcx;
        ctx.rflags = r.r11;
        self.entry_rsp = r.rsp;
        let args = [r.rdi, r.rsi, r.rdx, r.r10, r.r8, r.r9];
        self.cur_nr = Some(r.rax);
        if self.mvx.is_some() {
            if let Err(stop) = self.monitor_begin(r.rax, &args) {
                return Ok(self.stopped(stop));
            }
        }
        let sys = syscall::dispatch(self, r.rax, &args);
        if self.trace {
            syscall::trace(r.rax, &args, &sys);
        }
        if let Some(stop) = self.stop_requested.take() {
            return Ok(self.stopped(stop));
        }
        if self.mvx.is_some() {
            let ret = match &sys {
                syscall::Sys::Ret(v) => Some(*v as i64),
                syscall::Sys::Exec(_) | syscall::Sys::Restore(_) => Some(0),
                syscall::Sys::Exit(_) | syscall::Sys::Kill(..) => None,
            };
            if let Some(ret) = ret {
                if let Err(stop) = self.monitor_end(ret) {
                    return Ok(self.stopped(stop));
                }
            }
        }
        match sys {
            syscall::Sys::Ret(v) => {
                ctx.rax = v;
                if v as i64 == -(libc::EINTR as i64) && deliver::restartable(r.rax) && self.restart_after_handler() {
                    // Back to the `syscall` instruction once the handler returns.
                    ctx.rip = r.rcx.wrapping_sub(2);
                    ctx.rax = r.rax;
                }
                self.resume(vcpu, ctx)
            }
            syscall::Sys::Restore(regs) => self.resume(vcpu, *regs),
            syscall::Sys::Exec(regs) => {
                self.seg_bases = Some((0, 0));
                self.fs_base = 0;
                self.gs_base = 0;
                self.resume(vcpu, *regs)
            }
            syscall::Sys::Exit(code) => {
                if self.mvx.is_some() {
                    // exit_group is a call like others; the exit itself is
                    // the final event.
                    if let Err(stop) = self.monitor_end(0).and_then(|_| self.monitor_final(Some(code), None)) {
                        return Ok(self.stopped(stop));
                    }
                }
                Ok(Flow::Done(Outcome::Exited(code)))
            }
            syscall::Sys::Kill(sig, reason) => Ok(self.kill(sig, reason)),
        }
    }

    /// Whether the signal about to be delivered has a handler with
    /// SA_RESTART (so an interrupted call restarts after it).
    fn restart_after_handler(&mut self) -> bool {
        self.collect_host_signals();
        let ready = self.signals.pending & !(self.signals.mask & !signal::UNBLOCKABLE);
        if ready == 0 {
            return false;
        }
        let sig = Signal(ready.trailing_zeros() as i32 + 1);
        let act = self.signals.action(sig);
        act.handler > signal::SIG_IGN && act.flags & signal::SA_RESTART != 0
    }

    /// A fault of the program: delivered to its handler if it has one that
    /// is not blocked (as Linux forces), otherwise it kills the program.
    fn fault_signal(
        &mut self,
        vcpu: &mut Vcpu,
        ctx: kvm_regs,
        sig: Signal,
        info: signal::SigInfo,
        reason: String,
    ) -> Result<Flow<Outcome>, VcpuError> {
        let act = self.signals.action(sig);
        let blocked = self.signals.mask & signal::bit(sig.0) != 0;
        if act.handler <= signal::SIG_IGN || blocked {
            return Ok(self.kill(sig, reason));
        }
        self.signals.raise(sig, info);
        self.resume(vcpu, ctx)
    }

    fn on_exception(&mut self, vcpu: &mut Vcpu, vec: u8) -> Result<Flow<Outcome>, VcpuError> {
        let r = *vcpu.regs();
        let cr2 = vcpu.sregs().cr2;
        let frame_gpa = r.rsp.wrapping_sub(DIRECT_MAP_BASE);
        let stack_lo = KERNEL_STACK_TOP_GPA - 0x8000;
        if cpl(vcpu.sregs()) != 0 || !(stack_lo..=KERNEL_STACK_TOP_GPA - EXCEPTION_FRAME_SIZE).contains(&frame_gpa) {
            return Err(VcpuError::GuestKernel(format!(
                "{} reported with rsp {:#x} outside the kernel stack",
                vector::name(vec),
                r.rsp
            )));
        }
        let word = |i: u64| self.mm.mem.read_u64(frame_gpa + 8 * i).unwrap_or(0);
        let (err, rip, cs, fl, rsp) = (word(0), word(1), word(2), word(3), word(4));
        if cs & 3 != 3 {
            return Err(VcpuError::GuestKernel(format!(
                "{} in the guest kernel at rip {rip:#x} (error code {err:#x}, cr2 {cr2:#x})",
                vector::name(vec)
            )));
        }
        let mut ctx = r;
        ctx.rip = rip;
        ctx.rsp = rsp;
        ctx.rflags = fl;
        if vec == vector::PAGE_FAULT {
            self.stats.page_faults += 1;
            let access = if err & pf::FETCH != 0 {
                Access::Exec
            } else if err & pf::WRITE != 0 {
                Access::Write
            } else {
                Access::Read
            };
            return match self.mm.fault(cr2, access) {
                Ok(()) => self.resume(vcpu, ctx),
                Err(Fault::OutOfMemory) => Ok(self.kill(
                    Signal::SIGKILL,
                    format!("out of guest memory at address {cr2:#x}, rip {rip:#x} (raise --memory)"),
                )),
                Err(f) => {
                    let what = match access {
                        Access::Read => "read",
                        Access::Write => "write",
                        Access::Exec => "instruction fetch",
                    };
                    let why = if f == Fault::Unmapped { "no mapping" } else { "not permitted by the mapping" };
                    let info = signal::SigInfo {
                        code: if f == Fault::Unmapped { 1 } else { 2 },
                        addr: cr2,
                        trapno: vec as u64,
                        err,
                    };
                    let reason = format!("page fault: {what} at address {cr2:#x} ({why}), rip {rip:#x}");
                    self.fault_signal(vcpu, ctx, Signal::SIGSEGV, info, reason)
                }
            };
        }
        let sig = match vec {
            vector::DIVIDE_ERROR | vector::X87_FP | vector::SIMD_FP => Signal::SIGFPE,
            vector::INVALID_OPCODE => Signal::SIGILL,
            vector::DEBUG | vector::BREAKPOINT => Signal::SIGTRAP,
            vector::ALIGNMENT_CHECK => Signal::SIGBUS,
            _ => Signal::SIGSEGV,
        };
        let code = match vec {
            vector::DIVIDE_ERROR => 1,    // FPE_INTDIV
            vector::INVALID_OPCODE => 2,  // ILL_ILLOPN
            vector::BREAKPOINT => 1,      // TRAP_BRKPT
            vector::ALIGNMENT_CHECK => 1, // BUS_ADRALN
            _ => 0x80,                    // SI_KERNEL
        };
        let info = signal::SigInfo { code, addr: if code == 0x80 { 0 } else { rip }, trapno: vec as u64, err };
        let reason = format!("{} at rip {rip:#x} (error code {err:#x})", vector::name(vec));
        self.fault_signal(vcpu, ctx, sig, info, reason)
    }

    /// Ends the program as killed by `sig`.
    fn kill(&mut self, sig: Signal, reason: String) -> Flow<Outcome> {
        if self.mvx.is_some() {
            if let Err(stop) = self.monitor_final(None, Some(sig.0)) {
                return self.stopped(stop);
            }
        }
        Flow::Done(Outcome::Killed { signal: sig, reason })
    }

    /// Logs an unsupported call once, by name.
    fn unsupported(&mut self, nr: u64) {
        let i = nr as usize;
        if i < syscall::names::COUNT {
            let (w, b) = (i / 64, i % 64);
            if self.unsupported_seen[w] & (1 << b) != 0 {
                return;
            }
            self.unsupported_seen[w] |= 1 << b;
        }
        let name = syscall::names::name(nr).unwrap_or("unknown");
        eprintln!("dmvx: unsupported system call {name} ({nr}), returning ENOSYS");
    }

    fn print_stats(&self) {
        let s = &self.stats;
        let up = self.started.elapsed();
        eprintln!("dmvx stats: {} exits, {} system calls, {} page faults, {} kernel-operation rounds, {} pages populated, {} guest frames in use, {:.3} s",
            s.exits, s.syscalls, s.page_faults, s.kops_rounds, self.mm.pages_populated, self.mm.frames.in_use(), up.as_secs_f64());
        let rss = vm_rss_bytes();
        let guest = self.mm.mem.resident_bytes();
        eprintln!(
            "dmvx stats: resident memory {} KiB = guest pages {} KiB + VMM overhead {} KiB",
            rss / 1024,
            guest / 1024,
            rss.saturating_sub(guest) / 1024
        );
        if let Some(m) = &self.mvx {
            eprintln!(
                "dmvx stats: variant {} ({}), {} events, {} replicated file bytes, {} bytes of held output released",
                m.id,
                if m.is_leader() { "leader" } else { "follower" },
                m.seq,
                m.replicated_file_bytes,
                m.outputs.released
            );
        }
        if let Some(ns) = s.first_exit_ns {
            eprintln!("dmvx stats: launch to first guest instruction {:.3} ms", ns as f64 / 1e6);
        }
    }
}

/// The kernel-operations routine's report must come from within this many
/// bytes of its entry (its exact length is not part of the ABI).
const KOPS_ROUTINE_MAX: u64 = 256;

impl ExitHandler for Process {
    type Done = Outcome;

    fn io_out(&mut self, vcpu: &mut Vcpu, port: u16, _data: &[u8]) -> Result<Flow<Outcome>, VcpuError> {
        self.stats.exits += 1;
        let Ok(port) = u8::try_from(port) else {
            return self.bad_port(vcpu, port);
        };
        match port {
            PORT_SYSCALL => self.on_syscall(vcpu),
            PORT_KOPS_DONE => self.on_kops_done(vcpu),
            PORT_BOOT => {
                if self.stats.first_exit_ns.is_none() {
                    self.stats.first_exit_ns = self.launched_ns.map(|t| monotonic_ns().saturating_sub(t));
                }
                Ok(Flow::Continue)
            }
            p if ((PORT_EXCEPTION_BASE as usize)..PORT_EXCEPTION_BASE as usize + dmvx_abi::EXCEPTION_VECTORS)
                .contains(&(p as usize)) =>
            {
                self.on_exception(vcpu, p - PORT_EXCEPTION_BASE)
            }
            _ => self.bad_port(vcpu, port as u16),
        }
    }

    fn io_in(&mut self, _port: u16, data: &mut [u8]) {
        data.fill(0xff);
    }

    /// A signal reached the VMM while the vCPU ran. At CPL3 the program is
    /// between instructions: deliver there. At CPL0 the guest kernel is
    /// on its way to an exit; delivery waits for it.
    fn interrupted(&mut self, vcpu: &mut Vcpu) -> Result<Flow<Outcome>, VcpuError> {
        vcpu.set_immediate_exit(false);
        if self.mvx.is_some() {
            // Variants take signals at the same point: after a call.
            return Ok(Flow::Continue);
        }
        self.collect_host_signals();
        if self.signals.pending == 0 || cpl(vcpu.sregs()) != 3 {
            return Ok(Flow::Continue);
        }
        let ctx = *vcpu.regs();
        match self.deliver_pending(vcpu, ctx) {
            Ok(c) => {
                if c.rip != ctx.rip || c.rsp != ctx.rsp {
                    *vcpu.regs_mut() = c;
                }
                Ok(Flow::Continue)
            }
            Err((sig, why)) => Ok(self.kill(sig, why)),
        }
    }
}

impl Process {
    fn bad_port(&mut self, vcpu: &mut Vcpu, port: u16) -> Result<Flow<Outcome>, VcpuError> {
        let rip = vcpu.regs().rip;
        if cpl(vcpu.sregs()) == 3 {
            return Ok(
                self.kill(Signal::SIGSEGV, format!("general protection fault: port I/O to {port:#x} at rip {rip:#x}"))
            );
        }
        Err(VcpuError::GuestKernel(format!("write to unknown port {port:#x} at rip {rip:#x}")))
    }
}

impl Process {
    /// The outcome when the monitor stops the run.
    fn stopped(&mut self, stop: crate::mvx::Stop) -> Flow<Outcome> {
        use crate::mvx::Stop;
        Flow::Done(match stop {
            Stop::Divergence(msg) => Outcome::Diverged(msg),
            Stop::Shutdown(status) => Outcome::Ended(status),
            Stop::Link { why, peer, silent } => {
                self.link_failed(&why, peer, silent);
                Outcome::Diverged(format!("the link to the other variants failed: {why}"))
            }
        })
    }

    /// How a host operation on a `remote` resource runs for the current call.
    #[inline]
    pub(crate) fn op_mode(&self, remote: bool) -> crate::mvx::OpMode {
        match &self.mvx {
            None => crate::mvx::OpMode::Direct,
            Some(m) => m.mode_for(remote),
        }
    }

    /// Records a host operation's results for the followers (leader).
    pub(crate) fn record_op(&mut self, ret: i64, outs: &mut [crate::mvx::Out<'_>]) {
        if let Some(m) = self.mvx.as_mut() {
            m.record(ret, outs);
        }
    }

    /// Replays the leader's results of the next host operation (follower).
    pub(crate) fn replay_op(&mut self, outs: &mut [crate::mvx::Out<'_>]) -> i64 {
        match self.mvx.as_mut() {
            Some(m) => m.replay(outs),
            None => -(libc::EIO as i64),
        }
    }

    /// Runs host work `f`, which fills `buf` and yields a value, or replays
    /// the leader's (value and bytes) instead; the leader records them.
    pub(crate) fn host_call(
        &mut self,
        remote: bool,
        buf: &mut [u8],
        f: impl FnOnce(&mut Process, &mut [u8]) -> errno::SysResult,
    ) -> errno::SysResult {
        use crate::mvx::{OpMode, Out};
        let mode = self.op_mode(remote);
        if mode == OpMode::Replay {
            return errno::from_neg(self.replay_op(&mut [Out::Buf(buf)]));
        }
        let r = errno::to_neg(f(self, buf));
        if mode == OpMode::Record {
            self.record_op(r, &mut [Out::Buf(buf)]);
        }
        errno::from_neg(r)
    }

    /// Runs host work `f` that fills the guest memory in `self.iov` (as many
    /// bytes as it returns), or replays the leader's bytes into it.
    pub(crate) fn host_call_iov(
        &mut self,
        remote: bool,
        f: impl FnOnce(&mut Process) -> errno::SysResult,
    ) -> errno::SysResult {
        use crate::mvx::{OpMode, Out};
        let mode = self.op_mode(remote);
        if mode == OpMode::Replay {
            let Some(m) = self.mvx.as_mut() else { return Err(Errno::EIO) };
            return errno::from_neg(m.replay(&mut [Out::Iov(&self.iov)]));
        }
        let r = errno::to_neg(f(self));
        if mode == OpMode::Record {
            if let Some(m) = self.mvx.as_mut() {
                m.record(r, &mut [Out::Iov(&self.iov)]);
            }
        }
        errno::from_neg(r)
    }

    /// Like `host_call_iov`, with a VMM buffer `buf` filled as well (a
    /// received message's address, say).
    pub(crate) fn host_call_iov_buf(
        &mut self,
        remote: bool,
        buf: &mut [u8],
        f: impl FnOnce(&mut Process, &mut [u8]) -> errno::SysResult,
    ) -> errno::SysResult {
        use crate::mvx::{OpMode, Out};
        let mode = self.op_mode(remote);
        if mode == OpMode::Replay {
            let Some(m) = self.mvx.as_mut() else { return Err(Errno::EIO) };
            return errno::from_neg(m.replay(&mut [Out::Iov(&self.iov), Out::Buf(buf)]));
        }
        let r = errno::to_neg(f(self, buf));
        if mode == OpMode::Record {
            if let Some(m) = self.mvx.as_mut() {
                m.record(r, &mut [Out::Iov(&self.iov), Out::Buf(buf)]);
            }
        }
        errno::from_neg(r)
    }

    /// Installs a descriptor a host operation returned (`owned`: the host
    /// descriptor, absent when the operation was replayed). Under MVX such
    /// descriptors (sockets, epoll, ...) are remote: the leader's.
    pub(crate) fn adopt(
        &mut self,
        owned: Option<OwnedFd>,
        kind: FileKind,
        extra: fd::Extra,
        cloexec: bool,
    ) -> errno::SysResult {
        let remote = self.mvx.is_some();
        self.fds.insert(OpenFile::make(owned, kind, extra, remote), cloexec, 0)
    }

    /// Leader: holds the output in `self.iov` for `file` until every
    /// follower agreed on it (output commit); the call reports it written.
    pub(crate) fn hold_output(&mut self, file: &std::rc::Rc<OpenFile>, offset: Option<i64>) -> errno::SysResult {
        let Some(m) = self.mvx.as_mut() else { return Err(Errno::EIO) };
        let broken = file.broken.get();
        let r = if broken != 0 {
            Err(Errno(broken))
        } else {
            let mut data = m.outputs.buffer();
            for v in &self.iov.iov[..self.iov.len] {
                // SAFETY: the iovecs point into guest memory (bounds-checked
                // by Mm::user_iov) and the guest is stopped.
                data.extend_from_slice(unsafe { std::slice::from_raw_parts(v.iov_base as *const u8, v.iov_len) });
            }
            let n = data.len() as u64;
            let digest = dmvx_sync::record::record_digest(m.rec.as_bytes());
            m.outputs.hold(m.seq, digest, file.clone(), data, offset);
            Ok(n)
        };
        m.record(errno::to_neg(r), &mut []);
        r
    }

    /// Whether a lockstep output of the leader is held instead of performed.
    pub(crate) fn holds_outputs(&self, file: &OpenFile) -> bool {
        self.mvx.as_ref().is_some_and(|m| {
            m.is_leader() && m.deferred_outputs && file.remote && m.class == dmvx_sync::policy::Class::Output
        })
    }
}

/// Runs `$body` (a host call yielding a value or a negated errno) unless
/// the leader's results are replayed instead; records them on the leader.
#[macro_export]
macro_rules! host_op {
    ($p:expr, $remote:expr, [$($out:expr),* $(,)?], $body:expr) => {{
        let mode = $p.op_mode($remote);
        if mode == $crate::mvx::OpMode::Replay {
            $p.replay_op(&mut [$($out),*])
        } else {
            let r: i64 = $body;
            if mode == $crate::mvx::OpMode::Record {
                $p.record_op(r, &mut [$($out),*]);
            }
            r
        }
    }};
}
