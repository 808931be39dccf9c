//! The program's system calls.
//!
//! `TABLE` is the single place that says what dmvx does with each call:
//! handled by the VMM editing page tables, executed on the host inside the
//! sandbox, answered from the VMM's own state, or refused. Dispatch goes
//! through it, and the documentation's syscall table is generated from it
//! (`dmvx-vmm --syscall-table`), so the two cannot disagree.

pub mod file;
pub mod mem;
pub mod names;
pub mod proc;

use super::errno::{Errno, SysResult};
use super::signal::Signal;
use super::Process;
use kvm_bindings::kvm_regs;

/// What a system call asks of the exit loop.
pub enum Sys {
    /// Return this value (a negated errno for errors) to the program.
    Ret(u64),
    /// The program exits with this status.
    Exit(i32),
    /// The program is killed by a signal.
    Kill(Signal, String),
    /// The program image was replaced: continue with these registers.
    Exec(Box<kvm_regs>),
}

impl From<SysResult> for Sys {
    #[inline]
    fn from(r: SysResult) -> Sys {
        match r {
            Ok(v) => Sys::Ret(v),
            Err(e) => Sys::Ret((-(e.0 as i64)) as u64),
        }
    }
}

/// How dmvx handles a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handling {
    /// The VMM edits the guest page tables.
    Memory,
    /// Executed on the host on the program's behalf, inside the sandbox.
    Host,
    /// Answered by the VMM from its own (virtual) state.
    Virtual,
    /// Refused with the error in the note, without a log line.
    Refused,
}

impl Handling {
    pub fn describe(self) -> &'static str {
        match self {
            Handling::Memory => "VMM (page tables)",
            Handling::Host => "host (sandboxed)",
            Handling::Virtual => "VMM (virtual)",
            Handling::Refused => "refused",
        }
    }
}

/// A handler.
#[derive(Clone, Copy)]
pub enum Handler {
    /// Returns a value or an errno.
    Plain(fn(&mut Process, &[u64; 6]) -> SysResult),
    /// May end the program or replace it.
    Full(fn(&mut Process, &[u64; 6]) -> Sys),
}

/// One row of the table.
#[derive(Clone, Copy)]
pub struct Entry {
    pub handler: Handler,
    pub handling: Handling,
    pub note: &'static str,
}

macro_rules! table {
    ($($nr:ident => $kind:ident $handling:ident $f:path, $note:expr;)*) => {
        const fn build() -> [Option<Entry>; names::COUNT] {
            let mut t: [Option<Entry>; names::COUNT] = [None; names::COUNT];
            $( t[libc::$nr as usize] = Some(Entry { handler: Handler::$kind($f), handling: Handling::$handling, note: $note }); )*
            t
        }
    };
}

table! {
    // Memory: the VMM edits the page tables.
    SYS_brk => Plain Memory mem::brk, "";
    SYS_mmap => Plain Memory mem::mmap, "anonymous and file-backed private mappings; shared writable file mappings are refused (ENODEV)";
    SYS_munmap => Plain Memory mem::munmap, "";
    SYS_mprotect => Plain Memory mem::mprotect, "";
    SYS_mremap => Plain Memory mem::mremap, "MREMAP_DONTUNMAP is refused (EINVAL)";
    SYS_madvise => Plain Memory mem::madvise, "DONTNEED/FREE drop pages; the rest are hints";
    SYS_msync => Plain Memory mem::msync, "private mappings: nothing to write back";
    SYS_mincore => Plain Memory mem::mincore, "";
    SYS_mlock => Plain Memory mem::mlock, "guest pages never leave memory";
    SYS_munlock => Plain Memory mem::mlock, "";
    SYS_mlockall => Plain Memory mem::mlockall, "";
    SYS_munlockall => Plain Memory mem::mlockall, "";
    // Files, inside the sandbox.
    SYS_read => Plain Host file::read, "";
    SYS_write => Full Host file::write, "EPIPE raises SIGPIPE";
    SYS_readv => Plain Host file::readv, "";
    SYS_writev => Full Host file::writev, "";
    SYS_pread64 => Plain Host file::pread64, "";
    SYS_pwrite64 => Full Host file::pwrite64, "";
    SYS_preadv => Plain Host file::preadv, "";
    SYS_pwritev => Full Host file::pwritev, "";
    SYS_open => Plain Host file::open, "paths resolve inside the root";
    SYS_openat => Plain Host file::openat, "paths resolve inside the root";
    SYS_creat => Plain Host file::creat, "";
    SYS_close => Plain Host file::close, "";
    SYS_stat => Plain Host file::stat, "";
    SYS_lstat => Plain Host file::lstat, "";
    SYS_fstat => Plain Host file::fstat, "";
    SYS_newfstatat => Plain Host file::newfstatat, "";
    SYS_statx => Plain Host file::statx, "";
    SYS_lseek => Plain Host file::lseek, "";
    SYS_getdents64 => Plain Host file::getdents64, "";
    SYS_readlink => Plain Host file::readlink, "/proc/self/exe is the program";
    SYS_readlinkat => Plain Host file::readlinkat, "/proc/self/exe is the program";
    SYS_access => Plain Host file::access, "";
    SYS_faccessat => Plain Host file::faccessat, "";
    SYS_faccessat2 => Plain Host file::faccessat2, "";
    SYS_getcwd => Plain Virtual file::getcwd, "";
    SYS_chdir => Plain Host file::chdir, "";
    SYS_fchdir => Plain Host file::fchdir, "";
    SYS_fcntl => Plain Host file::fcntl, "O_ASYNC, F_SETOWN, F_SETSIG, leases and notifications are refused";
    SYS_dup => Plain Virtual file::dup, "";
    SYS_dup2 => Plain Virtual file::dup2, "";
    SYS_dup3 => Plain Virtual file::dup3, "";
    SYS_pipe => Plain Host file::pipe, "";
    SYS_pipe2 => Plain Host file::pipe2, "";
    SYS_ioctl => Plain Host file::ioctl, "terminal queries, FIONREAD, FIONBIO, FIOCLEX; others ENOTTY";
    SYS_unlink => Plain Host file::unlink, "EROFS in a read-only root";
    SYS_unlinkat => Plain Host file::unlinkat, "EROFS in a read-only root";
    SYS_rmdir => Plain Host file::rmdir, "EROFS in a read-only root";
    SYS_mkdir => Plain Host file::mkdir, "EROFS in a read-only root";
    SYS_mkdirat => Plain Host file::mkdirat, "EROFS in a read-only root";
    SYS_rename => Plain Host file::rename, "EROFS in a read-only root";
    SYS_renameat => Plain Host file::renameat, "EROFS in a read-only root";
    SYS_renameat2 => Plain Host file::renameat2, "EROFS in a read-only root";
    SYS_symlink => Plain Host file::symlink, "EROFS in a read-only root";
    SYS_symlinkat => Plain Host file::symlinkat, "EROFS in a read-only root";
    SYS_link => Plain Host file::link, "EROFS in a read-only root";
    SYS_linkat => Plain Host file::linkat, "EROFS in a read-only root";
    SYS_chmod => Plain Host file::chmod, "EROFS in a read-only root";
    SYS_fchmod => Plain Host file::fchmod, "";
    SYS_fchmodat => Plain Host file::fchmodat, "EROFS in a read-only root";
    SYS_truncate => Plain Host file::truncate, "EROFS in a read-only root";
    SYS_ftruncate => Plain Host file::ftruncate, "";
    SYS_utimensat => Plain Host file::utimensat, "EROFS in a read-only root";
    SYS_fsync => Plain Host file::fsync, "";
    SYS_fdatasync => Plain Host file::fsync, "";
    SYS_sync => Plain Virtual file::sync, "";
    SYS_statfs => Plain Host file::statfs, "";
    SYS_fstatfs => Plain Host file::fstatfs, "";
    SYS_fadvise64 => Plain Virtual file::fadvise64, "a hint";
    SYS_flock => Plain Host file::flock, "";
    SYS_sendfile => Plain Host file::sendfile, "";
    SYS_umask => Plain Virtual file::umask, "";
    SYS_chroot => Plain Refused proc::eperm, "EPERM";
    SYS_mknod => Plain Refused proc::eperm, "EPERM";
    SYS_mknodat => Plain Refused proc::eperm, "EPERM";
    // Time and randomness.
    SYS_clock_gettime => Plain Host proc::clock_gettime, "";
    SYS_clock_getres => Plain Host proc::clock_getres, "";
    SYS_gettimeofday => Plain Host proc::gettimeofday, "";
    SYS_time => Plain Host proc::time, "";
    SYS_nanosleep => Plain Host proc::nanosleep, "";
    SYS_clock_nanosleep => Plain Host proc::clock_nanosleep, "";
    SYS_getrandom => Plain Host proc::getrandom, "";
    // Process identity and limits.
    SYS_uname => Plain Virtual proc::uname, "a fixed identity, the same in every variant";
    SYS_getpid => Plain Virtual proc::getpid, "";
    SYS_gettid => Plain Virtual proc::getpid, "";
    SYS_getppid => Plain Virtual proc::getppid, "";
    SYS_getuid => Plain Virtual proc::getuid, "";
    SYS_geteuid => Plain Virtual proc::getuid, "";
    SYS_getgid => Plain Virtual proc::getgid, "";
    SYS_getegid => Plain Virtual proc::getgid, "";
    SYS_getresuid => Plain Virtual proc::getresuid, "";
    SYS_getresgid => Plain Virtual proc::getresgid, "";
    SYS_getgroups => Plain Virtual proc::getgroups, "";
    SYS_getpgrp => Plain Virtual proc::getpid, "";
    SYS_getpgid => Plain Virtual proc::getpgid, "";
    SYS_getsid => Plain Virtual proc::getpgid, "";
    SYS_setpgid => Plain Virtual proc::setpgid, "";
    SYS_setsid => Plain Virtual proc::setsid, "";
    SYS_prlimit64 => Plain Virtual proc::prlimit64, "";
    SYS_getrlimit => Plain Virtual proc::getrlimit, "";
    SYS_setrlimit => Plain Virtual proc::setrlimit, "";
    SYS_getrusage => Plain Host proc::getrusage, "";
    SYS_times => Plain Host proc::times, "";
    SYS_sysinfo => Plain Virtual proc::sysinfo, "";
    SYS_sched_yield => Plain Virtual proc::zero, "";
    SYS_sched_getaffinity => Plain Virtual proc::sched_getaffinity, "one CPU";
    SYS_sched_setaffinity => Plain Virtual proc::zero, "";
    SYS_getcpu => Plain Virtual proc::getcpu, "";
    SYS_prctl => Plain Virtual proc::prctl, "";
    SYS_arch_prctl => Plain Virtual proc::arch_prctl, "FS and GS base";
    SYS_set_tid_address => Plain Virtual proc::set_tid_address, "";
    SYS_set_robust_list => Plain Virtual proc::set_robust_list, "";
    SYS_get_robust_list => Plain Virtual proc::get_robust_list, "";
    SYS_futex => Plain Virtual proc::futex, "single-thread semantics";
    SYS_rseq => Plain Refused proc::enosys, "ENOSYS (glibc does without)";
    // Signals.
    SYS_rt_sigaction => Plain Virtual proc::rt_sigaction, "";
    SYS_rt_sigprocmask => Plain Virtual proc::rt_sigprocmask, "";
    SYS_sigaltstack => Plain Virtual proc::sigaltstack, "";
    SYS_kill => Full Virtual proc::kill, "only the program itself";
    SYS_tkill => Full Virtual proc::tkill, "only the program itself";
    SYS_tgkill => Full Virtual proc::tgkill, "only the program itself";
    // Program lifetime.
    SYS_exit => Full Virtual proc::exit, "";
    SYS_exit_group => Full Virtual proc::exit, "";
    SYS_execve => Full Memory proc::execve, "replaces the program image";
    SYS_execveat => Full Memory proc::execveat, "replaces the program image";
    SYS_wait4 => Plain Virtual proc::wait4, "ECHILD: there are no children";
    SYS_fork => Plain Refused proc::enosys_logged, "ENOSYS: one process per VM";
    SYS_vfork => Plain Refused proc::enosys_logged, "ENOSYS: one process per VM";
    SYS_clone => Plain Refused proc::enosys_logged, "ENOSYS: one process and one thread per VM";
    SYS_clone3 => Plain Refused proc::enosys_logged, "ENOSYS: one process and one thread per VM";
}

/// The table, by call number.
pub static TABLE: [Option<Entry>; names::COUNT] = build();

/// Carries out system call `nr`.
#[inline]
pub fn dispatch(p: &mut Process, nr: u64, args: &[u64; 6]) -> Sys {
    p.current_nr = Some(nr);
    match TABLE.get(nr as usize).copied().flatten() {
        Some(Entry { handler: Handler::Plain(f), .. }) => f(p, args).into(),
        Some(Entry { handler: Handler::Full(f), .. }) => f(p, args),
        None => {
            p.unsupported(nr);
            Sys::from(Err::<u64, _>(Errno::ENOSYS))
        }
    }
}

/// The syscall table as markdown: every call dmvx knows, and what it does.
pub fn markdown_table() -> String {
    let mut out = String::from("| nr | system call | handling | notes |\n|---:|---|---|---|\n");
    for (nr, entry) in TABLE.iter().enumerate() {
        let Some(name) = names::name(nr as u64) else {
            continue;
        };
        match entry {
            Some(e) => out.push_str(&format!("| {nr} | `{name}` | {} | {} |\n", e.handling.describe(), e.note)),
            None => out.push_str(&format!("| {nr} | `{name}` | unsupported | ENOSYS, logged once |\n")),
        }
    }
    out
}

/// Prints one call and its outcome, strace-like, to stderr.
pub fn trace(nr: u64, a: &[u64; 6], outcome: &Sys) {
    let name = names::name(nr).unwrap_or("unknown");
    let result = match outcome {
        Sys::Ret(v) if (*v as i64) < 0 && (*v as i64) > -4096 => {
            format!("-{} ({})", -(*v as i64), std::io::Error::from_raw_os_error(-(*v as i64) as i32))
        }
        Sys::Ret(v) => format!("{v:#x}"),
        Sys::Exit(c) => format!("exit {c}"),
        Sys::Kill(s, why) => format!("killed by {} ({why})", s.name()),
        Sys::Exec(_) => "0 (new program)".into(),
    };
    eprintln!("dmvx: {name}({:#x}, {:#x}, {:#x}, {:#x}, {:#x}, {:#x}) = {result}", a[0], a[1], a[2], a[3], a[4], a[5]);
}
