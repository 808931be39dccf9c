//! Seccomp filters, one per kind of VMM thread (rust-vmm's `seccompiler`,
//! as Firecracker). A thread's filter allows the host calls that thread
//! makes and nothing else; filters stack, so a thread started by a
//! filtered thread is held to both. A refused call raises SIGSYS, whose
//! handler writes which call of which thread was refused and ends the VMM.

use std::cell::Cell;
use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition as Cond, SeccompFilter,
    SeccompRule, TargetArch,
};

use super::JailError;

/// The status a VMM ends with when its filter refuses a call.
pub const EXIT_REFUSED: i32 = 125;

/// The kinds of VMM threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Process mode: the thread that runs the vCPU and performs the
    /// program's host calls (and forks child VMMs).
    Vmm,
    /// An MVX link's I/O thread (tokio: sockets, timers).
    LinkIo,
    /// Linux mode: the thread that waits for the vCPU and runs the monitor.
    LinuxMain,
    /// Linux mode: the vCPU thread (KVM_RUN, serial output).
    LinuxVcpu,
    /// Process mode with the exit-less call path: the thread that issues
    /// KVM_RUN while the VMM thread serves the ring.
    VcpuRunner,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Vmm => "vmm",
            Role::LinkIo => "link I/O",
            Role::LinuxMain => "linux main",
            Role::LinuxVcpu => "linux vcpu",
            Role::VcpuRunner => "vcpu runner",
        }
    }
}

/// Why a filter was not installed.
pub(super) enum InstallError {
    /// The filter could not be built (a VMM bug).
    Build(JailError),
    /// The kernel refused it (no seccomp).
    Kernel(String),
}

thread_local! {
    /// The calling thread's role, for the SIGSYS message.
    static ROLE: Cell<&'static str> = const { Cell::new("unfiltered") };
}

/// Calls every thread needs: memory, locks, time, signals, its own end.
const BASE: &[i64] = &[
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_close,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_brk,
    libc::SYS_futex,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_clock_gettime,
    libc::SYS_clock_getres,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_gettimeofday,
    libc::SYS_getrandom,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    // The host kernel resumes a sleep that a signal handler (or a tracer)
    // interrupted with it: it only continues the interrupted call.
    libc::SYS_restart_syscall,
    libc::SYS_sigaltstack,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_fcntl,
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_seccomp,
];

/// An MVX link's I/O thread: tokio's event loop over its sockets.
const LINK_IO: &[i64] = &[
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_pwait2,
    libc::SYS_eventfd2,
    libc::SYS_connect,
    libc::SYS_accept4,
    libc::SYS_bind,
    libc::SYS_listen,
    libc::SYS_sendto,
    libc::SYS_recvfrom,
    libc::SYS_sendmsg,
    libc::SYS_recvmsg,
    libc::SYS_shutdown,
    libc::SYS_setsockopt,
    libc::SYS_getsockopt,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    libc::SYS_dup,
    libc::SYS_statx,
    libc::SYS_timerfd_create,
    libc::SYS_timerfd_settime,
];

/// The process-mode VMM thread: KVM, the program's host calls inside the
/// root, its processes (fork, wait, signals) and its sockets.
const VMM: &[i64] = &[
    // files and directories, resolved inside the root
    libc::SYS_openat,
    libc::SYS_openat2,
    libc::SYS_open,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_preadv2,
    libc::SYS_pwritev2,
    libc::SYS_lseek,
    libc::SYS_dup,
    libc::SYS_dup2,
    libc::SYS_dup3,
    libc::SYS_close_range,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_stat,
    libc::SYS_lstat,
    libc::SYS_statx,
    libc::SYS_fstatfs,
    libc::SYS_statfs,
    libc::SYS_getdents64,
    libc::SYS_readlink,
    libc::SYS_readlinkat,
    libc::SYS_access,
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
    libc::SYS_mkdirat,
    libc::SYS_mknodat,
    libc::SYS_unlinkat,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    libc::SYS_linkat,
    libc::SYS_symlinkat,
    libc::SYS_fchmod,
    libc::SYS_fchmodat,
    libc::SYS_chmod,
    libc::SYS_fchown,
    libc::SYS_fchownat,
    libc::SYS_utimensat,
    libc::SYS_ftruncate,
    libc::SYS_truncate,
    libc::SYS_fallocate,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_sync_file_range,
    libc::SYS_flock,
    libc::SYS_fadvise64,
    libc::SYS_chdir,
    libc::SYS_fchdir,
    libc::SYS_getcwd,
    libc::SYS_umask,
    libc::SYS_sendfile,
    libc::SYS_splice,
    libc::SYS_copy_file_range,
    libc::SYS_pipe2,
    libc::SYS_memfd_create,
    libc::SYS_msync,
    libc::SYS_mincore,
    // the program's virtual owners and modes live in a user xattr
    libc::SYS_getxattr,
    libc::SYS_lgetxattr,
    libc::SYS_fgetxattr,
    libc::SYS_setxattr,
    libc::SYS_lsetxattr,
    libc::SYS_fsetxattr,
    libc::SYS_removexattr,
    libc::SYS_lremovexattr,
    libc::SYS_fremovexattr,
    // sockets (socket() itself: only the families below)
    libc::SYS_socketpair,
    libc::SYS_bind,
    libc::SYS_listen,
    libc::SYS_accept,
    libc::SYS_accept4,
    libc::SYS_connect,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    libc::SYS_setsockopt,
    libc::SYS_getsockopt,
    libc::SYS_sendto,
    libc::SYS_recvfrom,
    libc::SYS_sendmsg,
    libc::SYS_recvmsg,
    libc::SYS_sendmmsg,
    libc::SYS_recvmmsg,
    libc::SYS_shutdown,
    // waiting
    libc::SYS_select,
    libc::SYS_pselect6,
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_pwait2,
    libc::SYS_eventfd2,
    libc::SYS_timerfd_create,
    libc::SYS_timerfd_settime,
    libc::SYS_timerfd_gettime,
    // the scheduler's preemption timer of the program's threads
    libc::SYS_timer_create,
    libc::SYS_timer_settime,
    libc::SYS_timer_gettime,
    libc::SYS_timer_getoverrun,
    libc::SYS_timer_delete,
    libc::SYS_pause,
    libc::SYS_rt_sigsuspend,
    libc::SYS_rt_sigtimedwait,
    // processes and signals (the program's processes are VMMs forked here)
    libc::SYS_wait4,
    libc::SYS_waitid,
    libc::SYS_kill,
    libc::SYS_tgkill,
    libc::SYS_tkill,
    libc::SYS_rt_sigqueueinfo,
    libc::SYS_rt_tgsigqueueinfo,
    libc::SYS_rt_sigaction,
    libc::SYS_set_tid_address,
    libc::SYS_clone3,
    libc::SYS_getppid,
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
    libc::SYS_getrusage,
    libc::SYS_times,
    libc::SYS_sysinfo,
    libc::SYS_uname,
    libc::SYS_prlimit64,
    libc::SYS_getrlimit,
    libc::SYS_setitimer,
    libc::SYS_getitimer,
    libc::SYS_timer_create,
    libc::SYS_timer_settime,
    libc::SYS_timer_gettime,
    libc::SYS_timer_getoverrun,
    libc::SYS_timer_delete,
    libc::SYS_alarm,
    libc::SYS_arch_prctl,
    libc::SYS_sched_getparam,
    libc::SYS_sched_getscheduler,
    libc::SYS_getpriority,
];

/// Linux mode's main thread: the monitor's link, timing, the vCPU's end.
const LINUX_MAIN: &[i64] = &[
    libc::SYS_ioctl,
    libc::SYS_kill,
    libc::SYS_tgkill,
    libc::SYS_rt_sigaction,
    libc::SYS_clone3,
    libc::SYS_fstat,
    libc::SYS_statx,
    libc::SYS_openat,
    libc::SYS_mkdirat,
    libc::SYS_newfstatat,
    libc::SYS_lseek,
    libc::SYS_sendto,
    libc::SYS_recvfrom,
    libc::SYS_sendmsg,
    libc::SYS_recvmsg,
    libc::SYS_shutdown,
    libc::SYS_socketpair,
    libc::SYS_wait4,
];

/// Linux mode's vCPU thread: KVM_RUN and its devices' output, which the
/// monitor may send straight on the link's open socket (send is sendto),
/// and the divergence report it may write (openat in the report directory;
/// Landlock and the empty jail leave nothing else to open).
const LINUX_VCPU: &[i64] =
    &[libc::SYS_ioctl, libc::SYS_tgkill, libc::SYS_kill, libc::SYS_sendto, libc::SYS_sendmsg, libc::SYS_openat];

/// Process mode's vCPU runner (the ring's): KVM_RUN and its own rdtsc
/// faulting (below), futexes (in BASE).
const VCPU_RUNNER: &[i64] = &[libc::SYS_ioctl];

/// Namespace flags that no VMM thread may pass to clone.
const CLONE_NAMESPACES: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u64
    | 0x80; // CLONE_NEWTIME

/// ioctls the VMM forwards for the program (terminals, FIONREAD, FIONBIO).
const PROGRAM_IOCTLS: &[u64] = &[
    libc::TCGETS,
    libc::TCSETS,
    libc::TCSETSW,
    libc::TCSETSF,
    libc::TIOCGWINSZ,
    libc::TIOCGPGRP,
    libc::TIOCSPGRP,
    libc::FIONREAD,
    libc::FIONBIO,
];

/// The ioctl type of KVM's requests.
const KVMIO: u64 = 0xAE;

fn cond(arg: u8, len: Len, op: Op, value: u64) -> Result<Cond, String> {
    Cond::new(arg, len, op, value).map_err(|e| e.to_string())
}

fn rule(conds: Vec<Cond>) -> Result<SeccompRule, String> {
    SeccompRule::new(conds).map_err(|e| e.to_string())
}

/// The rules of `role`: system call -> rules (empty: always allowed).
fn rules(role: Role) -> Result<BTreeMap<i64, Vec<SeccompRule>>, String> {
    let mut m: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    let extra = match role {
        Role::Vmm => VMM,
        Role::LinkIo => LINK_IO,
        Role::LinuxMain => LINUX_MAIN,
        Role::LinuxVcpu => LINUX_VCPU,
        Role::VcpuRunner => VCPU_RUNNER,
    };
    // Linux mode's main thread starts the link's I/O threads, which inherit its filter.
    let inherited: &[i64] = if role == Role::LinuxMain { LINK_IO } else { &[] };
    for &nr in BASE.iter().chain(extra).chain(inherited) {
        m.insert(nr, Vec::new());
    }
    // No executable host memory: the guest's code never runs on the host.
    for nr in [libc::SYS_mmap, libc::SYS_mprotect] {
        m.insert(nr, vec![rule(vec![cond(2, Len::Dword, Op::MaskedEq(libc::PROT_EXEC as u64), 0)?])?]);
    }
    // Threads and forks, never new namespaces.
    if matches!(role, Role::Vmm | Role::LinuxMain) {
        m.insert(libc::SYS_clone, vec![rule(vec![cond(0, Len::Qword, Op::MaskedEq(CLONE_NAMESPACES), 0)?])?]);
    }
    let mut sockets = Vec::new();
    if matches!(role, Role::Vmm | Role::LinkIo | Role::LinuxMain) {
        for family in [libc::AF_UNIX, libc::AF_INET, libc::AF_INET6] {
            sockets.push(rule(vec![cond(0, Len::Dword, Op::Eq, family as u64)?])?);
        }
        m.insert(libc::SYS_socket, sockets);
    }
    if role == Role::LinkIo {
        // A control message or a failed link wakes this process's vCPU
        // thread (signal::host::kick_for_link): that one signal only.
        let sig = crate::kernel::signal::host::link_kick_signal() as u64;
        m.insert(libc::SYS_tgkill, vec![rule(vec![cond(2, Len::Dword, Op::Eq, sig)?])?]);
    }
    let mut ioctls = Vec::new();
    if matches!(role, Role::Vmm | Role::LinuxMain | Role::LinuxVcpu) {
        ioctls.push(rule(vec![cond(1, Len::Dword, Op::MaskedEq(0xff00), KVMIO << 8)?])?);
    }
    if role == Role::VcpuRunner {
        // KVM_RUN only.
        ioctls.push(rule(vec![cond(1, Len::Dword, Op::Eq, 0xae80)?])?);
    }
    if role == Role::Vmm {
        for &req in PROGRAM_IOCTLS {
            ioctls.push(rule(vec![cond(1, Len::Dword, Op::Eq, req)?])?);
        }
    }
    if matches!(role, Role::LinkIo | Role::LinuxMain) {
        ioctls.push(rule(vec![cond(1, Len::Dword, Op::Eq, libc::FIONBIO)?])?);
    }
    if !ioctls.is_empty() {
        m.insert(libc::SYS_ioctl, ioctls);
    }
    let mut prctls = Vec::new();
    // PR_SET_NO_NEW_PRIVS and seccomp only narrow: a new thread adds its own filter.
    for op in [
        libc::PR_SET_NAME,
        libc::PR_GET_NAME,
        libc::PR_SET_CHILD_SUBREAPER,
        libc::PR_GET_DUMPABLE,
        libc::PR_SET_NO_NEW_PRIVS,
    ] {
        prctls.push(rule(vec![cond(0, Len::Dword, Op::Eq, op as u64)?])?);
    }
    if matches!(role, Role::Vmm | Role::VcpuRunner) {
        // The vCPU thread faults its own rdtsc around KVM_RUN (vstate/tsc.rs):
        // it changes only this thread's time stamp counter access.
        for op in [libc::PR_GET_TSC, libc::PR_SET_TSC] {
            prctls.push(rule(vec![cond(0, Len::Dword, Op::Eq, op as u64)?])?);
        }
    }
    m.insert(libc::SYS_prctl, prctls);
    Ok(m)
}

/// The BPF program of `role`.
pub fn program(role: Role) -> Result<BpfProgram, JailError> {
    let bad = |why: String| JailError::Filter { role: role.name(), why };
    let filter =
        SeccompFilter::new(rules(role).map_err(bad)?, SeccompAction::Trap, SeccompAction::Allow, TargetArch::x86_64)
            .map_err(|e| bad(e.to_string()))?;
    filter.try_into().map_err(|e: seccompiler::BackendError| bad(e.to_string()))
}

/// clone3 passes its flags in memory, out of a filter's reach: it fails
/// with ENOSYS, so the C library falls back to clone, whose flags are checked.
fn no_clone3() -> Result<BpfProgram, JailError> {
    let bad = |why: String| JailError::Filter { role: "clone3", why };
    let mut m = BTreeMap::new();
    m.insert(libc::SYS_clone3, Vec::new());
    let filter =
        SeccompFilter::new(m, SeccompAction::Allow, SeccompAction::Errno(libc::ENOSYS as u32), TargetArch::x86_64)
            .map_err(|e| bad(e.to_string()))?;
    filter.try_into().map_err(|e: seccompiler::BackendError| bad(e.to_string()))
}

/// Installs `role`'s filter on the calling thread.
pub(super) fn install(role: Role) -> Result<(), InstallError> {
    let prog = program(role).map_err(InstallError::Build)?;
    let clone3 = no_clone3().map_err(InstallError::Build)?;
    install_sigsys_handler();
    ROLE.with(|r| r.set(role.name()));
    seccompiler::apply_filter(&clone3).map_err(|e| InstallError::Kernel(format!("seccomp: {e}")))?;
    seccompiler::apply_filter(&prog).map_err(|e| InstallError::Kernel(format!("seccomp: {e}")))
}

fn install_sigsys_handler() {
    // SAFETY: a zeroed sigaction is valid; the handler only calls
    // async-signal-safe functions (write, _exit).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigsys as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO;
        libc::sigaction(libc::SIGSYS, &sa, std::ptr::null_mut());
    }
}

/// Appends `s` to `buf` at `*n`, as far as it fits.
fn put(buf: &mut [u8], n: &mut usize, s: &[u8]) {
    for &c in s {
        if *n < buf.len() {
            buf[*n] = c;
            *n += 1;
        }
    }
}

fn put_num(buf: &mut [u8], n: &mut usize, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    put(buf, n, &digits[i..]);
}

fn put_hex(buf: &mut [u8], n: &mut usize, v: u64) {
    for i in (0..16).rev() {
        put(buf, n, &[b"0123456789abcdef"[((v >> (i * 4)) & 0xf) as usize]]);
    }
}

extern "C" fn on_sigsys(_sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // The refused call's number is the int after si_call_addr in the
    // SIGSYS layout of siginfo_t (offset 24 on x86-64).
    // SAFETY: the kernel passes a valid siginfo_t to an SA_SIGINFO handler.
    let nr = unsafe { *(info as *const u8).add(24).cast::<i32>() } as u64;
    let name = crate::kernel::syscall::names::name(nr).unwrap_or("unknown");
    let role = ROLE.with(|r| r.get());
    let mut buf = [0u8; 512];
    let mut n = 0;
    put(&mut buf, &mut n, b"dmvx-vmm: jail: the seccomp filter of the ");
    put(&mut buf, &mut n, role.as_bytes());
    put(&mut buf, &mut n, b" thread refused host system call ");
    put(&mut buf, &mut n, name.as_bytes());
    put(&mut buf, &mut n, b" (");
    put_num(&mut buf, &mut n, nr);
    put(&mut buf, &mut n, b")");
    // SAFETY: an SA_SIGINFO handler's third argument is the interrupted
    // thread's ucontext_t.
    let regs = unsafe { &(*ctx.cast::<libc::ucontext_t>()).uc_mcontext.gregs };
    put(&mut buf, &mut n, b" at ip 0x");
    put_hex(&mut buf, &mut n, regs[libc::REG_RIP as usize] as u64);
    // A path names what the VMM tried to reach (the path is the VMM's own
    // memory: this thread was in a call with it).
    let path = match nr as i64 {
        libc::SYS_openat | libc::SYS_newfstatat | libc::SYS_readlinkat | libc::SYS_statx => {
            regs[libc::REG_RSI as usize]
        }
        libc::SYS_open | libc::SYS_stat | libc::SYS_lstat | libc::SYS_access | libc::SYS_readlink => {
            regs[libc::REG_RDI as usize]
        }
        _ => 0,
    } as *const u8;
    if !path.is_null() {
        put(&mut buf, &mut n, b" path \"");
        for i in 0..120 {
            // SAFETY: a NUL-terminated string the VMM passed to the call.
            let c = unsafe { *path.add(i) };
            if c == 0 {
                break;
            }
            put(&mut buf, &mut n, &[c]);
        }
        put(&mut buf, &mut n, b"\"");
    }
    put(&mut buf, &mut n, b"; the VMM stops\n");
    // SAFETY: write and _exit are async-signal-safe; buf holds n bytes.
    unsafe {
        libc::write(2, buf.as_ptr().cast(), n);
        libc::_exit(EXIT_REFUSED);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_compiles() {
        for role in [Role::Vmm, Role::LinkIo, Role::LinuxMain, Role::LinuxVcpu] {
            assert!(!program(role).unwrap().is_empty(), "{role:?}");
        }
        assert!(!no_clone3().unwrap().is_empty());
    }

    /// A link I/O thread that frees much memory must not make glibc open
    /// /proc/sys/vm/overcommit_memory (a thread arena's heap shrinking),
    /// which its filter refuses. Run in a fresh process (this test binary
    /// again, the test below), so that the filter and the allocator's
    /// state are its own.
    #[test]
    fn a_filtered_thread_gives_memory_back_without_opening_files() {
        let exe = std::env::current_exe().expect("test binary");
        let out = std::process::Command::new(exe)
            .args(["--exact", "jail::seccomp::tests::filtered_thread_frees_memory", "--ignored", "--test-threads", "1"])
            .env("DMVX_TEST_ARENA_CHILD", "1")
            .output()
            .expect("run the child test");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "the filtered thread was stopped: {:?}\n{err}", out.status);
        assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"), "the child test did not run");
    }

    /// The child of the test above.
    #[test]
    #[ignore = "run by a_filtered_thread_gives_memory_back_without_opening_files in a process of its own"]
    fn filtered_thread_frees_memory() {
        assert!(std::env::var_os("DMVX_TEST_ARENA_CHILD").is_some(), "run by the test above only");
        super::super::one_malloc_arena();
        let t = std::thread::spawn(|| {
            assert!(install(Role::LinkIo).is_ok(), "filter");
            for _ in 0..4 {
                let chunks: Vec<Vec<u8>> = (0..200).map(|i| vec![i as u8; 48 << 10]).collect();
                drop(chunks);
            }
        });
        assert!(t.join().is_ok());
    }

    #[test]
    fn numbers_print() {
        let mut b = [0u8; 8];
        let mut n = 0;
        put_num(&mut b, &mut n, 1234);
        assert_eq!(&b[..n], b"1234");
    }
}
