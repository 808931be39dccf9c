//! The program's system calls.
//!
//! `TABLE` is the single place that says what dmvx does with each call:
//! handled by the VMM editing page tables, executed on the host inside the
//! sandbox, answered from the VMM's own state, or refused; its class for the
//! MVX policy and how the monitor records it. Dispatch and the monitor go
//! through it, and the documentation's syscall table is generated from it
//! (`dmvx-vmm --syscall-table`), so none of them can disagree.

pub mod clone;
mod common;
pub mod connect;
pub mod fd;
pub mod file;
pub mod futex;
pub mod lifetime;
pub mod mem;
pub mod names;
pub mod net;
pub mod path;
pub mod poll;
pub mod proc;
pub mod signal;
pub mod time;

#[cfg(test)]
mod abi_layout_tests;

use dmvx_sync::policy::Class::{self, *};
use kvm_bindings::kvm_regs;

use super::cpus;
use super::errno::{Errno, SysResult};
use super::signal::Signal;
use super::Kernel;
use crate::monitor::records;
use crate::monitor::spec::Field::*;
use crate::monitor::spec::{ClassRule, Field, Flags, Len};

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
    /// Continue with these registers (rt_sigreturn).
    Restore(Box<kvm_regs>),
    /// Create a new process (the run loop does: it owns the VM).
    Fork(Box<clone::ForkRequest>),
    /// Create a thread of this process (the run loop does: it owns the vCPU).
    Thread(Box<clone::ForkRequest>),
    /// The calling thread waits; other threads run meanwhile.
    Block(super::sched::Wait),
    /// The calling thread ends (exit with other threads left).
    ThreadExit(i32),
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
    Plain(fn(&mut Kernel, &[u64; 6]) -> SysResult),
    /// May end the program or replace it.
    Full(fn(&mut Kernel, &[u64; 6]) -> Sys),
}

/// One row of the table: everything dmvx knows about a call.
#[derive(Clone, Copy)]
pub struct Entry {
    pub handler: Handler,
    pub handling: Handling,
    pub note: &'static str,
    /// Its class for the MVX policy.
    pub class: ClassRule,
    /// How its record is built (after the call number and class).
    pub record: &'static [Field],
}

macro_rules! table {
    ($($nr:ident => $kind:ident $handling:ident $f:path, $class:expr, [$($field:expr),* $(,)?], $note:expr;)*) => {
        const fn build() -> [Option<Entry>; names::COUNT] {
            let mut t: [Option<Entry>; names::COUNT] = [None; names::COUNT];
            $( t[libc::$nr as usize] = Some(Entry {
                handler: Handler::$kind($f),
                handling: Handling::$handling,
                note: $note,
                class: $class,
                record: &[$($field),*],
            }); )*
            t
        }
    };
}

const fn is(c: Class) -> ClassRule {
    ClassRule::Is(c)
}

const fn remote(c: Class) -> ClassRule {
    ClassRule::Remote(c)
}

const fn on_fd(fd: u8, remote: Class, local: Class) -> ClassRule {
    ClassRule::OnFd { fd, remote, local }
}

/// creat(path, mode) is open(path, O_CREAT | O_WRONLY | O_TRUNC, mode).
const CREAT_FLAGS: u64 = (libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC) as u64;

#[rustfmt::skip]
table! {
    // Memory: the VMM edits the page tables.
    SYS_brk => Plain Memory mem::brk, is(Memory), [], "";
    SYS_mmap => Plain Memory mem::mmap, ClassRule::ProtExec { prot: 2 }, [Custom(records::mmap)], "anonymous and file-backed; shared file mappings are written back at msync, munmap and the end; in N variants a shared mapping of a file that is the leader's is refused (ENODEV)";
    SYS_munmap => Plain Memory mem::munmap, is(Memory), [Int(1)], "";
    SYS_mprotect => Plain Memory mem::mprotect, ClassRule::ProtExec { prot: 2 }, [Int(1), Int(2)], "";
    SYS_mremap => Plain Memory mem::mremap, is(Memory), [Int(1), Int(2), Int(3)], "MREMAP_DONTUNMAP is refused (EINVAL)";
    SYS_madvise => Plain Memory mem::madvise, is(Memory), [Int(1), Int(2)], "DONTNEED/FREE drop pages; the rest are hints";
    SYS_msync => Plain Memory mem::msync, is(Memory), [Int(1), Int(2)], "shared file mappings are written back (also at munmap and the end; not coherent with read/write or other processes meanwhile)";
    SYS_mincore => Plain Memory mem::mincore, is(Memory), [], "";
    SYS_mlock => Plain Memory mem::mlock, is(Memory), [Int(1)], "guest pages never leave memory";
    SYS_munlock => Plain Memory mem::mlock, is(Memory), [Int(1)], "";
    SYS_mlockall => Plain Memory mem::mlockall, is(Memory), [], "";
    SYS_munlockall => Plain Memory mem::mlockall, is(Memory), [], "";
    // Files, inside the sandbox.
    SYS_read => Plain Host file::read, on_fd(0, NetInput, FileRead), [Fd(0), Int(2)], "";
    SYS_write => Full Host file::write, on_fd(0, Output, Other), [Fd(0), Digest { ptr: 1, len: 2 }], "EPIPE raises SIGPIPE";
    SYS_readv => Plain Host file::readv, on_fd(0, NetInput, FileRead), [Fd(0), Int(2)], "";
    SYS_writev => Full Host file::writev, on_fd(0, Output, Other), [Fd(0), DigestIov { ptr: 1, cnt: 2 }], "";
    SYS_pread64 => Plain Host file::pread64, on_fd(0, NetInput, FileRead), [Fd(0), Int(2), Int(3)], "";
    SYS_pwrite64 => Full Host file::pwrite64, on_fd(0, Output, Other), [Fd(0), Digest { ptr: 1, len: 2 }, Int(3)], "";
    SYS_preadv => Plain Host file::preadv, on_fd(0, NetInput, FileRead), [Fd(0), Int(2)], "";
    SYS_pwritev => Full Host file::pwritev, on_fd(0, Output, Other), [Fd(0), DigestIov { ptr: 1, cnt: 2 }], "";
    SYS_open => Plain Host path::open, ClassRule::Open { flags: Flags::Arg(1), dirfd: None, path: 0 }, [NewPath { path: 0, flags: 1 }, Int(1), CreateMode { flags: 1, mode: 2 }], "paths resolve inside the root";
    SYS_openat => Plain Host path::openat, ClassRule::Open { flags: Flags::Arg(2), dirfd: Some(0), path: 1 }, [DirFd(0), NewPath { path: 1, flags: 2 }, Int(2), CreateMode { flags: 2, mode: 3 }], "paths resolve inside the root";
    SYS_creat => Plain Host path::creat, ClassRule::Open { flags: Flags::Const(CREAT_FLAGS), dirfd: None, path: 0 }, [Path(0), Int(1)], "";
    SYS_close => Plain Host fd::close, ClassRule::Closes { fd: 0 }, [Fd(0)], "closing a socket is checked in lockstep (the peer sees it)";
    SYS_close_range => Plain Virtual fd::close_range, is(SocketSetup), [Int(0), Int(1), Int(2)], "checked in lockstep (it may close sockets)";
    SYS_stat => Plain Host path::stat, is(FileMeta), [Path(0)], "";
    SYS_lstat => Plain Host path::lstat, is(FileMeta), [Path(0)], "";
    SYS_fstat => Plain Host fd::fstat, is(FileMeta), [Fd(0)], "";
    SYS_newfstatat => Plain Host path::newfstatat, is(FileMeta), [DirFd(0), PathIf(1), Int(3)], "";
    SYS_statx => Plain Host path::statx, is(FileMeta), [DirFd(0), PathIf(1), Int(2), Int(3)], "";
    SYS_lseek => Plain Host file::lseek, on_fd(0, FdState, FileRead), [Fd(0), Int(1), Int(2)], "";
    SYS_getdents64 => Plain Host file::getdents64, is(FileMeta), [Fd(0), Int(2)], "";
    SYS_readlink => Plain Host path::readlink, is(FileMeta), [Path(0), Int(2)], "/proc/self/exe is the program";
    SYS_readlinkat => Plain Host path::readlinkat, is(FileMeta), [DirFd(0), PathIf(1), Int(3)], "/proc/self/exe is the program";
    SYS_access => Plain Host path::access, is(FileMeta), [Path(0), Int(1)], "";
    SYS_faccessat => Plain Host path::faccessat, is(FileMeta), [DirFd(0), PathIf(1), Int(2)], "";
    SYS_faccessat2 => Plain Host path::faccessat2, is(FileMeta), [DirFd(0), PathIf(1), Int(2), Int(3)], "";
    SYS_getcwd => Plain Virtual path::getcwd, is(Process), [], "";
    SYS_chdir => Plain Host path::chdir, is(Process), [Path(0)], "";
    SYS_fchdir => Plain Host path::fchdir, is(Process), [Fd(0)], "";
    SYS_fcntl => Plain Host fd::fcntl, ClassRule::Fcntl, [Fd(0), Int(1)], "F_SETOWN is remembered, but O_ASYNC, F_SETSIG, leases and notifications are refused: no SIGIO; locks: files inside the root only, the leader's in a cluster (no-ops in a read-only root)";
    SYS_dup => Plain Virtual fd::dup, is(Process), [Fd(0)], "";
    SYS_dup2 => Plain Virtual fd::dup2, ClassRule::Closes { fd: 1 }, [Fd(0), Fd(1), Const(0)], "";
    SYS_dup3 => Plain Virtual fd::dup3, ClassRule::Closes { fd: 1 }, [Fd(0), Fd(1), Int(2)], "";
    SYS_pipe => Plain Host fd::pipe, remote(Ipc), [], "the leader's in a cluster (reads replicated)";
    SYS_pipe2 => Plain Host fd::pipe2, remote(Ipc), [Int(1)], "the leader's in a cluster (reads replicated)";
    SYS_ioctl => Plain Host fd::ioctl, on_fd(0, FdState, Other), [Fd(0), Int(1)], "terminal queries, FIONREAD, FIONBIO, FIOCLEX, FIOASYNC (accepted on sockets and pipes, no SIGIO); SIOCGIFINDEX/NAME/FLAGS/MTU of lo on sockets; others ENOTTY; a host terminal is never changed (TCSETS: EPERM)";
    SYS_unlink => Plain Host path::unlink, is(FileModify), [Path(0)], "EROFS in a read-only root";
    SYS_unlinkat => Plain Host path::unlinkat, is(FileModify), [DirFd(0), PathIf(1), Int(2)], "EROFS in a read-only root";
    SYS_rmdir => Plain Host path::rmdir, is(FileModify), [Path(0)], "EROFS in a read-only root";
    SYS_mkdir => Plain Host path::mkdir, is(FileModify), [NewDir { path: 0, mode: 1 }, Int(1)], "EROFS in a read-only root";
    SYS_mkdirat => Plain Host path::mkdirat, is(FileModify), [DirFd(0), NewDir { path: 1, mode: 2 }, Int(2)], "EROFS in a read-only root";
    SYS_rename => Plain Host path::rename, is(FileModify), [Path(0), Path(1)], "EROFS in a read-only root";
    SYS_renameat => Plain Host path::renameat, is(FileModify), [DirFd(0), Path(1), DirFd(2), Path(3), Const(0)], "EROFS in a read-only root";
    SYS_renameat2 => Plain Host path::renameat2, is(FileModify), [DirFd(0), Path(1), DirFd(2), Path(3), Int(4)], "EROFS in a read-only root";
    SYS_symlink => Plain Host path::symlink, is(FileModify), [Path(0), Path(1)], "EROFS in a read-only root";
    SYS_symlinkat => Plain Host path::symlinkat, is(FileModify), [Path(0), DirFd(1), Path(2)], "EROFS in a read-only root";
    SYS_link => Plain Host path::link, is(FileModify), [Path(0), Path(1)], "EROFS in a read-only root";
    SYS_linkat => Plain Host path::linkat, is(FileModify), [DirFd(0), Path(1), DirFd(2), Path(3), Int(4)], "EROFS in a read-only root";
    SYS_chmod => Plain Host path::chmod, is(FileModify), [Path(0), Int(1)], "set-id bits are virtual; EROFS in a read-only root";
    SYS_fchmod => Plain Host fd::fchmod, remote(FileModify), [Fd(0), Int(1)], "files inside the root only; set-id bits are virtual";
    SYS_chown => Plain Host path::chown, is(FileModify), [Path(0), Int(1), Int(2)], "virtual owners; EROFS in a read-only root";
    SYS_lchown => Plain Host path::lchown, is(FileModify), [Path(0), Int(1), Int(2)], "virtual owners; EROFS in a read-only root";
    SYS_fchownat => Plain Host path::fchownat, is(FileModify), [DirFd(0), PathIf(1), Int(2), Int(3), Int(4)], "virtual owners; EROFS in a read-only root";
    SYS_fchown => Plain Host fd::fchown, remote(FileModify), [Fd(0), Int(1), Int(2)], "files inside the root only; virtual owners";
    SYS_fchmodat => Plain Host path::fchmodat, is(FileModify), [DirFd(0), PathIf(1), Int(2)], "set-id bits are virtual; EROFS in a read-only root";
    SYS_truncate => Plain Host path::truncate, is(FileModify), [Path(0), Int(1)], "EROFS in a read-only root";
    SYS_ftruncate => Plain Host fd::ftruncate, remote(FileModify), [Fd(0), Int(1)], "files inside the root only";
    SYS_fallocate => Plain Host fd::fallocate, remote(FileModify), [Fd(0), Int(1), Int(2), Int(3)], "files inside the root only";
    SYS_utimensat => Plain Host path::utimensat, remote(FileModify), [DirFd(0), PathIf(1), Custom(records::utimensat), Int(3)], "EROFS in a read-only root";
    SYS_fsync => Plain Host fd::fsync, on_fd(0, FdState, Other), [Fd(0)], "";
    SYS_fdatasync => Plain Host fd::fsync, on_fd(0, FdState, Other), [Fd(0)], "";
    SYS_sync => Plain Virtual fd::sync, is(Other), [], "";
    SYS_statfs => Plain Host path::statfs, is(FileMeta), [Path(0)], "";
    SYS_fstatfs => Plain Host fd::fstatfs, is(FileMeta), [Fd(0)], "";
    SYS_fadvise64 => Plain Virtual fd::fadvise64, is(Other), [], "a hint";
    SYS_flock => Plain Host fd::flock, remote(FileModify), [Fd(0), Int(1)], "files inside the root only; the leader's in a cluster; a no-op in a read-only root";
    SYS_sendfile => Plain Host file::sendfile, on_fd(0, Output, Other), [Fd(0), Fd(1), Int(3)], "";
    SYS_umask => Plain Virtual fd::umask, is(Process), [Int(0)], "";
    SYS_chroot => Plain Refused proc::eperm, is(Other), [], "EPERM";
    SYS_mknod => Plain Host path::mknod, is(FileModify), [Path(0), Int(1)], "files, FIFOs and sockets; device nodes EPERM";
    SYS_mknodat => Plain Host path::mknodat, is(FileModify), [DirFd(0), Path(1), Int(2)], "files, FIFOs and sockets; device nodes EPERM";
    // Networking, on the host.
    SYS_socket => Plain Host net::socket, remote(SocketSetup), [Int(0), Int(1), Int(2)], "AF_INET, AF_INET6, AF_UNIX; stream and datagram; AF_NETLINK/NETLINK_ROUTE answered by the VMM (lo only)";
    SYS_socketpair => Plain Host net::socketpair, remote(SocketSetup), [Int(0), Int(1), Int(2)], "AF_UNIX";
    SYS_bind => Plain Host net::bind, remote(SocketSetup), [Fd(0), SockAddr { ptr: 1, len: 2 }], "Unix paths resolve inside the root; abstract names refused";
    SYS_listen => Plain Host net::listen, remote(SocketSetup), [Fd(0), Int(1)], "";
    SYS_accept => Plain Host net::accept, remote(NetInput), [Fd(0), Const(0)], "";
    SYS_accept4 => Plain Host net::accept4, remote(NetInput), [Fd(0), Int(3)], "";
    SYS_connect => Plain Host connect::connect, remote(SocketSetup), [Fd(0), SockAddr { ptr: 1, len: 2 }], "Unix paths resolve inside the root; abstract names refused";
    SYS_getsockname => Plain Host net::getsockname, remote(FdState), [], "";
    SYS_getpeername => Plain Host net::getpeername, remote(FdState), [], "";
    SYS_setsockopt => Plain Host net::setsockopt, remote(FdState), [Fd(0), Int(1), Int(2), Bytes { ptr: 3, len: Len::ArgMax(4, 256) }], "an allow-list; others ENOPROTOOPT, logged";
    SYS_getsockopt => Plain Host net::getsockopt, remote(FdState), [Fd(0), Int(1), Int(2)], "an allow-list; others ENOPROTOOPT, logged";
    SYS_shutdown => Plain Host net::shutdown, remote(SocketSetup), [Fd(0), Int(1)], "checked in lockstep (the peer sees it)";
    SYS_sendto => Full Host net::sendto, on_fd(0, Output, Other), [Fd(0), Digest { ptr: 1, len: 2 }, Int(3), SockAddrIf { ptr: 4, len: 5 }], "EPIPE raises SIGPIPE unless MSG_NOSIGNAL";
    SYS_recvfrom => Plain Host net::recvfrom, on_fd(0, NetInput, NetInput), [Fd(0), Int(2), Int(3)], "";
    SYS_sendmsg => Full Host net::sendmsg, on_fd(0, Output, Other), [Fd(0), Int(2), Custom(records::sendmsg)], "no ancillary data (descriptor passing refused)";
    SYS_recvmsg => Plain Host net::recvmsg, on_fd(0, NetInput, NetInput), [Fd(0), Int(2)], "no ancillary data is passed";
    SYS_epoll_create => Plain Host poll::epoll_create, remote(FdState), [], "";
    SYS_epoll_create1 => Plain Host poll::epoll_create1, remote(FdState), [Int(0)], "";
    SYS_epoll_ctl => Plain Host poll::epoll_ctl, remote(FdState), [Fd(0), Int(1), Fd(2), Custom(records::epoll_ctl)], "the program's epoll_data stays in the VMM";
    SYS_epoll_wait => Plain Host poll::epoll_wait, remote(Wait), [Fd(0), Int(2), Int(3)], "";
    SYS_epoll_pwait => Plain Host poll::epoll_pwait, remote(Wait), [Fd(0), Int(2), Int(3)], "";
    SYS_epoll_pwait2 => Plain Host poll::epoll_pwait2, remote(Wait), [Fd(0), Int(2), Int(3)], "";
    SYS_poll => Plain Host poll::poll, remote(Wait), [Custom(records::poll)], "";
    SYS_ppoll => Plain Host poll::ppoll, remote(Wait), [Custom(records::poll)], "";
    SYS_select => Plain Host poll::select, remote(Wait), [Custom(records::select)], "descriptors below 1024";
    SYS_pselect6 => Plain Host poll::pselect6, remote(Wait), [Custom(records::select)], "descriptors below 1024";
    SYS_eventfd => Plain Host poll::eventfd, remote(FdState), [], "";
    SYS_eventfd2 => Plain Host poll::eventfd2, remote(FdState), [Int(1)], "";
    SYS_timerfd_create => Plain Host poll::timerfd_create, remote(FdState), [], "";
    SYS_timerfd_settime => Plain Host poll::timerfd_settime, remote(FdState), [], "";
    SYS_timerfd_gettime => Plain Host poll::timerfd_gettime, remote(FdState), [], "";
    // Time and randomness.
    SYS_clock_gettime => Plain Host time::clock_gettime, is(Time), [Int(0)], "";
    SYS_clock_getres => Plain Host time::clock_getres, is(Time), [Int(0)], "";
    SYS_gettimeofday => Plain Host time::gettimeofday, is(Time), [], "";
    SYS_time => Plain Host time::time, is(Time), [], "";
    SYS_nanosleep => Full Host futex::nanosleep, is(Sleep), [Bytes { ptr: 0, len: Len::Const(16) }], "";
    SYS_clock_nanosleep => Full Host futex::clock_nanosleep, is(Sleep), [Int(0), Int(1), Bytes { ptr: 2, len: Len::Const(16) }], "";
    SYS_getrandom => Plain Host time::getrandom, is(Random), [Int(1)], "";
    // Process identity and limits.
    SYS_uname => Plain Virtual proc::uname, is(Process), [], "a fixed identity, the same in every variant";
    SYS_getpid => Plain Virtual proc::getpid, is(Process), [], "";
    SYS_gettid => Plain Virtual futex::gettid, is(Process), [], "";
    SYS_getppid => Plain Virtual proc::getppid, is(Process), [], "";
    SYS_getuid => Plain Virtual proc::getuid, is(Process), [], "virtual credentials";
    SYS_geteuid => Plain Virtual proc::geteuid, is(Process), [], "";
    SYS_getgid => Plain Virtual proc::getgid, is(Process), [], "";
    SYS_getegid => Plain Virtual proc::getegid, is(Process), [], "";
    SYS_setuid => Plain Virtual proc::setuid, is(Process), [Int(0)], "virtual: changes the program's ids, never the host's";
    SYS_setgid => Plain Virtual proc::setgid, is(Process), [Int(0)], "virtual";
    SYS_setreuid => Plain Virtual proc::setreuid, is(Process), [Int(0), Int(1)], "virtual";
    SYS_setregid => Plain Virtual proc::setregid, is(Process), [Int(0), Int(1)], "virtual";
    SYS_setresuid => Plain Virtual proc::setresuid, is(Process), [Int(0), Int(1), Int(2)], "virtual";
    SYS_setresgid => Plain Virtual proc::setresgid, is(Process), [Int(0), Int(1), Int(2)], "virtual";
    SYS_setfsuid => Plain Virtual proc::setfsuid, is(Process), [Int(0)], "follows the effective id";
    SYS_setfsgid => Plain Virtual proc::setfsgid, is(Process), [Int(0)], "follows the effective id";
    SYS_setgroups => Plain Virtual proc::setgroups, is(Process), [Int(0)], "virtual";
    SYS_capget => Plain Virtual proc::capget, is(Process), [], "virtual capabilities: root's all, others none";
    SYS_capset => Plain Virtual proc::capset, is(Process), [BytesIf { ptr: 1, len: Len::Const(24) }], "virtual: they only shrink";
    SYS_getresuid => Plain Virtual proc::getresuid, is(Process), [], "";
    SYS_getresgid => Plain Virtual proc::getresgid, is(Process), [], "";
    SYS_getgroups => Plain Virtual proc::getgroups, is(Process), [], "";
    SYS_getpgrp => Plain Virtual proc::getpgrp, is(Process), [], "";
    SYS_getpgid => Plain Virtual proc::getpgid, is(Process), [Int(0)], "";
    SYS_getsid => Plain Virtual proc::getsid, is(Process), [Int(0)], "";
    SYS_setpgid => Plain Virtual proc::setpgid, is(Process), [Int(0), Int(1)], "virtual process groups";
    SYS_setsid => Plain Virtual proc::setsid, is(Process), [], "";
    SYS_prlimit64 => Plain Virtual proc::prlimit64, is(Process), [Int(1), BytesIf { ptr: 2, len: Len::Const(16) }], "";
    SYS_getrlimit => Plain Virtual proc::getrlimit, is(Process), [], "";
    SYS_setrlimit => Plain Virtual proc::setrlimit, is(Process), [], "";
    SYS_getrusage => Plain Host proc::getrusage, is(Time), [], "";
    SYS_times => Plain Host proc::times, is(Time), [], "";
    SYS_sysinfo => Plain Virtual proc::sysinfo, is(Time), [], "";
    SYS_sched_yield => Full Virtual futex::sched_yield, is(Process), [], "lets the next thread run";
    SYS_sched_getaffinity => Plain Virtual cpus::sched_getaffinity, is(Process), [Int(0)], "the virtual CPUs: the leader's host's count, replicated (threads take turns on one vCPU)";
    SYS_sched_setaffinity => Plain Virtual cpus::sched_setaffinity, is(Process), [Int(0), Bytes { ptr: 2, len: Len::ArgMax(1, 128) }], "kept per thread, within the virtual CPUs";
    SYS_getcpu => Plain Virtual cpus::getcpu, is(Process), [], "the first CPU of the caller's set";
    SYS_prctl => Plain Virtual proc::prctl, is(Process), [Int(0)], "";
    SYS_arch_prctl => Plain Virtual proc::arch_prctl, is(Process), [Int(0)], "FS and GS base";
    SYS_set_tid_address => Plain Virtual futex::set_tid_address, is(Process), [], "";
    SYS_set_robust_list => Plain Virtual futex::set_robust_list, is(Process), [], "";
    SYS_get_robust_list => Plain Virtual futex::get_robust_list, is(Process), [], "";
    SYS_futex => Full Virtual futex::futex, ClassRule::Futex, [Int(1), Int(2)], "waiters park; the VMM switches threads";
    SYS_membarrier => Plain Virtual futex::membarrier, is(Process), [Int(0)], "threads take turns on one vCPU: every barrier holds";
    SYS_rseq => Plain Refused proc::enosys, is(Other), [], "ENOSYS (glibc does without)";
    // Signals.
    SYS_rt_sigaction => Plain Virtual signal::rt_sigaction, is(Process), [Custom(records::rt_sigaction)], "";
    SYS_rt_sigprocmask => Plain Virtual signal::rt_sigprocmask, is(Process), [Custom(records::rt_sigprocmask)], "";
    SYS_sigaltstack => Plain Virtual signal::sigaltstack, is(Process), [], "";
    SYS_rt_sigreturn => Full Virtual signal::rt_sigreturn, is(Process), [], "restores the frame the VMM built";
    SYS_rt_sigsuspend => Plain Virtual signal::rt_sigsuspend, is(Sleep), [], "";
    SYS_rt_sigpending => Plain Virtual signal::rt_sigpending, is(Process), [], "";
    SYS_pause => Plain Virtual signal::pause, is(Sleep), [], "";
    SYS_alarm => Plain Host time::alarm, is(Time), [Int(0)], "the VMM's real-time timer; SIGALRM is passed on";
    SYS_setitimer => Plain Host time::setitimer, is(Time), [], "ITIMER_REAL only";
    SYS_getitimer => Plain Host time::getitimer, is(Time), [], "ITIMER_REAL only";
    SYS_timer_create => Plain Host time::timer_create, is(Time), [Int(0)], "a host timer of the VMM per timer; SIGEV_SIGNAL, SIGEV_THREAD_ID, SIGEV_NONE";
    SYS_timer_settime => Plain Host time::timer_settime, is(Time), [Int(0), Int(1)], "";
    SYS_timer_gettime => Plain Host time::timer_gettime, is(Time), [Int(0)], "";
    SYS_timer_getoverrun => Plain Host time::timer_getoverrun, is(Time), [Int(0)], "";
    SYS_timer_delete => Plain Host time::timer_delete, is(Time), [Int(0)], "";
    SYS_kill => Full Virtual signal::kill, is(Spawn), [Int(0), Int(1)], "the program's processes and groups, by virtual pid";
    SYS_tkill => Full Virtual signal::tkill, is(Spawn), [Int(0), Int(1)], "";
    SYS_tgkill => Full Virtual signal::tgkill, is(Spawn), [Int(0), Int(1), Int(2)], "";
    // Program lifetime.
    SYS_exit => Full Virtual lifetime::exit_thread, is(Exit), [Int(0)], "";
    SYS_exit_group => Full Virtual lifetime::exit, is(Exit), [Int(0)], "";
    SYS_execve => Full Memory lifetime::execve, is(Exec), [Custom(records::execve)], "replaces the program image";
    SYS_execveat => Full Memory lifetime::execveat, is(Exec), [Custom(records::execveat)], "replaces the program image";
    SYS_wait4 => Plain Virtual lifetime::wait4, is(Spawn), [Int(0), Int(2)], "the leader's choice of child is replicated; rusage is zero";
    SYS_waitid => Plain Virtual lifetime::waitid, is(Spawn), [Int(0), Int(1), Int(3)], "exited children (stops are not tracked)";
    SYS_fork => Full Host clone::fork, is(Spawn), [], "a new VMM process and VM, memory copy-on-write";
    SYS_vfork => Full Host clone::vfork, is(Spawn), [], "as fork; the parent waits until the child execs or exits";
    SYS_clone => Full Host clone::clone, is(Spawn), [Int(0)], "new processes; threads (CLONE_THREAD) share the VM";
    SYS_clone3 => Full Host clone::clone3, is(Spawn), [], "as clone";
}

/// The table, by call number.
pub static TABLE: [Option<Entry>; names::COUNT] = build();

/// The calls the exit-less path (the ring) serves while the process has
/// one thread: their whole effect is their result and the kernel's own
/// state; none needs the vCPU (its registers, FPU state or segment bases),
/// a switch of threads or a new process. A call that turns out to need the
/// way back through the exit (a signal to deliver, page-table entries to
/// narrow, a restart) is finished there (see `Kernel::on_ring_call`).
/// Calls that may block the VMM thread are fine: it is the same thread as
/// without the ring, and the stub stops spinning and waits in an exit.
pub const RING_CALLS: &[u64] = &[
    libc::SYS_read as u64,
    libc::SYS_write as u64,
    libc::SYS_open as u64,
    libc::SYS_close as u64,
    libc::SYS_stat as u64,
    libc::SYS_fstat as u64,
    libc::SYS_lstat as u64,
    libc::SYS_poll as u64,
    libc::SYS_lseek as u64,
    libc::SYS_mmap as u64,
    libc::SYS_mprotect as u64,
    libc::SYS_munmap as u64,
    libc::SYS_brk as u64,
    libc::SYS_rt_sigaction as u64,
    libc::SYS_rt_sigprocmask as u64,
    libc::SYS_ioctl as u64,
    libc::SYS_pread64 as u64,
    libc::SYS_pwrite64 as u64,
    libc::SYS_readv as u64,
    libc::SYS_writev as u64,
    libc::SYS_access as u64,
    libc::SYS_pipe as u64,
    libc::SYS_select as u64,
    libc::SYS_madvise as u64,
    libc::SYS_dup as u64,
    libc::SYS_dup2 as u64,
    libc::SYS_getpid as u64,
    libc::SYS_sendfile as u64,
    libc::SYS_socket as u64,
    libc::SYS_connect as u64,
    libc::SYS_accept as u64,
    libc::SYS_sendto as u64,
    libc::SYS_recvfrom as u64,
    libc::SYS_sendmsg as u64,
    libc::SYS_recvmsg as u64,
    libc::SYS_shutdown as u64,
    libc::SYS_bind as u64,
    libc::SYS_listen as u64,
    libc::SYS_getsockname as u64,
    libc::SYS_getpeername as u64,
    libc::SYS_socketpair as u64,
    libc::SYS_setsockopt as u64,
    libc::SYS_getsockopt as u64,
    libc::SYS_uname as u64,
    libc::SYS_fcntl as u64,
    libc::SYS_fsync as u64,
    libc::SYS_fdatasync as u64,
    libc::SYS_ftruncate as u64,
    libc::SYS_getcwd as u64,
    libc::SYS_chdir as u64,
    libc::SYS_fchdir as u64,
    libc::SYS_rename as u64,
    libc::SYS_mkdir as u64,
    libc::SYS_rmdir as u64,
    libc::SYS_unlink as u64,
    libc::SYS_readlink as u64,
    libc::SYS_chmod as u64,
    libc::SYS_fchmod as u64,
    libc::SYS_umask as u64,
    libc::SYS_gettimeofday as u64,
    libc::SYS_getrlimit as u64,
    libc::SYS_getrusage as u64,
    libc::SYS_sysinfo as u64,
    libc::SYS_times as u64,
    libc::SYS_getuid as u64,
    libc::SYS_getgid as u64,
    libc::SYS_geteuid as u64,
    libc::SYS_getegid as u64,
    libc::SYS_getppid as u64,
    libc::SYS_getpgrp as u64,
    libc::SYS_getpgid as u64,
    libc::SYS_getsid as u64,
    libc::SYS_statfs as u64,
    libc::SYS_fstatfs as u64,
    libc::SYS_gettid as u64,
    libc::SYS_time as u64,
    libc::SYS_getdents64 as u64,
    libc::SYS_clock_gettime as u64,
    libc::SYS_clock_getres as u64,
    libc::SYS_epoll_wait as u64,
    libc::SYS_epoll_ctl as u64,
    libc::SYS_openat as u64,
    libc::SYS_mkdirat as u64,
    libc::SYS_newfstatat as u64,
    libc::SYS_unlinkat as u64,
    libc::SYS_readlinkat as u64,
    libc::SYS_faccessat as u64,
    libc::SYS_pselect6 as u64,
    libc::SYS_ppoll as u64,
    libc::SYS_utimensat as u64,
    libc::SYS_epoll_pwait as u64,
    libc::SYS_accept4 as u64,
    libc::SYS_eventfd2 as u64,
    libc::SYS_epoll_create1 as u64,
    libc::SYS_dup3 as u64,
    libc::SYS_pipe2 as u64,
    libc::SYS_preadv as u64,
    libc::SYS_pwritev as u64,
    libc::SYS_prlimit64 as u64,
    libc::SYS_getrandom as u64,
    libc::SYS_statx as u64,
];

/// The row of call `nr`, if dmvx knows it.
#[inline]
pub fn entry(nr: u64) -> Option<&'static Entry> {
    TABLE.get(nr as usize).and_then(|e| e.as_ref())
}

/// Carries out system call `nr`.
#[inline]
pub fn dispatch(k: &mut Kernel, nr: u64, args: &[u64; 6]) -> Sys {
    match entry(nr) {
        Some(Entry { handler: Handler::Plain(f), .. }) => f(k, args).into(),
        Some(Entry { handler: Handler::Full(f), .. }) => f(k, args),
        None => {
            k.unsupported(nr);
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

/// Prints one call and its outcome, strace-like, to stderr, as one write
/// (the variants of a run share a terminal). `variant`: this variant's id
/// when it is one of several, named in the line.
pub fn trace(variant: Option<u8>, nr: u64, a: &[u64; 6], outcome: &Sys) {
    let name = names::name(nr).unwrap_or("unknown");
    let result = match outcome {
        Sys::Ret(v) if (*v as i64) < 0 && (*v as i64) > -4096 => {
            format!("-{} ({})", -(*v as i64), std::io::Error::from_raw_os_error(-(*v as i64) as i32))
        }
        Sys::Ret(v) => format!("{v:#x}"),
        Sys::Exit(c) => format!("exit {c}"),
        Sys::Kill(s, why) => format!("killed by {} ({why})", s.name()),
        Sys::Exec(_) => "0 (new program)".into(),
        Sys::Restore(r) => format!("{:#x} (restored, rip {:#x})", r.rax, r.rip),
        Sys::Fork(_) => "(new process)".into(),
        Sys::Thread(_) => "(new thread)".into(),
        Sys::Block(w) => format!("(blocked: {w:?})"),
        Sys::ThreadExit(c) => format!("thread exit {c}"),
    };
    let who = variant.map(|v| format!("[{v}]")).unwrap_or_default();
    let line = format!(
        "dmvx{who}: {name}({:#x}, {:#x}, {:#x}, {:#x}, {:#x}, {:#x}) = {result}\n",
        a[0], a[1], a[2], a[3], a[4], a[5]
    );
    let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), line.as_bytes());
}
