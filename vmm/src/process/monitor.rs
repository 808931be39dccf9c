//! The monitor: every event of a variant goes through here when it is part
//! of a cluster. Each system call is classified (what it does, on what), its
//! record is built (normalised so that diversified variants compare equal),
//! and the policy decides: checked in lockstep before it takes effect,
//! relaxed, or unchecked; its inputs replicated from the leader or local.
//!
//! Leader: runs the call (waiting first for every follower to reach the same
//! record if the call is lockstep, or holding its outputs until they did),
//! records the results of its replicated host operations, and ships the
//! entry. Follower: compares its own record with the leader's, performs
//! local calls itself and replays replicated ones, and acknowledges.

use std::time::Duration;

use dmvx_sync::link::LinkError;
use dmvx_sync::policy::{Check, Class, Input};
use dmvx_sync::record::{decode, record_digest, EntryView, RecordBuf, SignalEvent};
use dmvx_sync::report::{describe, Kind, PolicyUsed, Report, VariantLog};
use dmvx_sync::Control;
use sha2::{Digest as _, Sha256};

use super::fd::FileKind;
use super::mm::HostIov;
use super::signal::Signal;
use super::syscall::names;
use super::Process;
use crate::mvx::{Mvx, OpMode, Stop};

const AT_FDCWD: i32 = -100;
/// A pointer argument the VMM could not read (both variants must fail alike).
const UNREADABLE: u64 = u64::MAX - 1;
/// Followers acknowledge at least this often (back-pressure).
const ACK_EVERY: u64 = 64;
/// Custom control from a follower: "I reached event N with this digest" (a
/// held output, which it acknowledges only once verified against the
/// leader's entry; if the leader is waiting at N instead, this tells it).
const CTRL_REACHED: u32 = 1;
/// How long a follower waits for the leader's entry of a held output
/// before telling the leader it reached it.
const REACHED_AFTER: Duration = Duration::from_millis(20);

/// Whether open flags create a file (so the mode argument counts).
fn creates(flags: u64) -> bool {
    flags as i32 & libc::O_CREAT != 0 || flags as i32 & libc::O_TMPFILE == libc::O_TMPFILE
}

impl Process {
    fn file_of(&self, fd: u64) -> Option<(FileKind, bool)> {
        self.fds.file(fd as u32 as u64).ok().map(|f| (f.kind, f.remote))
    }

    /// What call `nr` does and whether it works on a remote resource.
    #[allow(non_upper_case_globals)] // libc's SYS_* names
    fn classify(&mut self, nr: u64, a: &[u64; 6]) -> (Class, bool) {
        use libc::*;
        let fdc = |p: &Process, fd: u64| p.file_of(fd);
        let on_fd = |p: &Process, fd: u64, remote: Class, local: Class| match fdc(p, fd) {
            Some((_, true)) => (remote, true),
            Some((FileKind::CharDevice, false)) if remote == Class::NetInput => (Class::Random, false),
            _ => (local, false),
        };
        match nr as i64 {
            SYS_brk | SYS_munmap | SYS_mremap | SYS_madvise | SYS_msync | SYS_mincore | SYS_mlock | SYS_munlock
            | SYS_mlockall | SYS_munlockall => (Class::Memory, false),
            // The protection is the third argument of both.
            SYS_mmap | SYS_mprotect => (if a[2] & PROT_EXEC as u64 != 0 { Class::Exec } else { Class::Memory }, false),
            SYS_execve | SYS_execveat => (Class::Exec, false),
            SYS_read | SYS_readv | SYS_pread64 | SYS_preadv => on_fd(self, a[0], Class::NetInput, Class::FileRead),
            SYS_lseek => on_fd(self, a[0], Class::FdState, Class::FileRead),
            SYS_write | SYS_writev | SYS_pwrite64 | SYS_pwritev | SYS_sendto | SYS_sendmsg | SYS_sendfile => {
                on_fd(self, a[0], Class::Output, Class::Other)
            }
            SYS_open | SYS_openat | SYS_creat => {
                let (flags, path) = match nr as i64 {
                    SYS_open => (a[1], self.path_arg(a[0]).ok()),
                    SYS_openat => (a[2], self.path_arg(a[1]).ok()),
                    _ => ((O_CREAT | O_WRONLY | O_TRUNC) as u64, self.path_arg(a[0]).ok()),
                };
                let writes = flags as i32 & (O_ACCMODE | O_CREAT | O_TRUNC | O_APPEND) != 0;
                let mutable = path.is_some_and(|p| self.is_mutable_path(nr, a, &p));
                if writes || mutable {
                    (Class::FileModify, true)
                } else {
                    (Class::FileOpen, false)
                }
            }
            SYS_stat | SYS_lstat | SYS_newfstatat | SYS_statx | SYS_readlink | SYS_readlinkat | SYS_access
            | SYS_faccessat | SYS_faccessat2 | SYS_statfs | SYS_fstatfs | SYS_fstat | SYS_getdents64 => {
                (Class::FileMeta, false)
            }
            SYS_unlink | SYS_unlinkat | SYS_rmdir | SYS_mkdir | SYS_mkdirat | SYS_rename | SYS_renameat
            | SYS_renameat2 | SYS_symlink | SYS_symlinkat | SYS_link | SYS_linkat | SYS_chmod | SYS_fchmodat
            | SYS_chown | SYS_lchown | SYS_fchownat | SYS_truncate | SYS_utimensat => (Class::FileModify, false),
            SYS_fchmod | SYS_fchown | SYS_ftruncate | SYS_fsync | SYS_fdatasync | SYS_flock | SYS_fcntl | SYS_ioctl => {
                on_fd(self, a[0], Class::FdState, Class::Other)
            }
            SYS_socket | SYS_socketpair | SYS_bind | SYS_listen | SYS_connect => (Class::SocketSetup, true),
            SYS_accept | SYS_accept4 | SYS_recvfrom | SYS_recvmsg => (Class::NetInput, true),
            SYS_getsockname | SYS_getpeername | SYS_setsockopt | SYS_getsockopt | SYS_shutdown => {
                (Class::FdState, true)
            }
            SYS_epoll_create | SYS_epoll_create1 | SYS_epoll_ctl | SYS_eventfd | SYS_eventfd2 | SYS_timerfd_create
            | SYS_timerfd_settime | SYS_timerfd_gettime => (Class::FdState, true),
            SYS_epoll_wait | SYS_epoll_pwait | SYS_epoll_pwait2 | SYS_poll | SYS_ppoll | SYS_select | SYS_pselect6 => {
                (Class::Wait, true)
            }
            SYS_clock_gettime | SYS_clock_getres | SYS_gettimeofday | SYS_time | SYS_sysinfo | SYS_times
            | SYS_getrusage | SYS_alarm | SYS_setitimer | SYS_getitimer => (Class::Time, false),
            SYS_getrandom => (Class::Random, false),
            SYS_nanosleep | SYS_clock_nanosleep | SYS_pause | SYS_rt_sigsuspend => (Class::Sleep, false),
            SYS_futex if a[1] & 0x7f == 0 && a[3] == 0 => (Class::Sleep, false),
            SYS_exit | SYS_exit_group => (Class::Exit, false),
            SYS_close
            | SYS_dup
            | SYS_dup2
            | SYS_dup3
            | SYS_pipe
            | SYS_pipe2
            | SYS_chdir
            | SYS_fchdir
            | SYS_getcwd
            | SYS_umask
            | SYS_uname
            | SYS_getpid
            | SYS_gettid
            | SYS_getppid
            | SYS_getuid
            | SYS_geteuid
            | SYS_getgid
            | SYS_getegid
            | SYS_getresuid
            | SYS_getresgid
            | SYS_getgroups
            | SYS_getpgrp
            | SYS_getpgid
            | SYS_getsid
            | SYS_setpgid
            | SYS_setsid
            | SYS_prlimit64
            | SYS_getrlimit
            | SYS_setrlimit
            | SYS_sched_yield
            | SYS_sched_getaffinity
            | SYS_sched_setaffinity
            | SYS_getcpu
            | SYS_prctl
            | SYS_arch_prctl
            | SYS_set_tid_address
            | SYS_set_robust_list
            | SYS_get_robust_list
            | SYS_futex
            | SYS_rt_sigaction
            | SYS_rt_sigprocmask
            | SYS_sigaltstack
            | SYS_rt_sigreturn
            | SYS_rt_sigpending
            | SYS_kill
            | SYS_tkill
            | SYS_tgkill
            | SYS_wait4 => (Class::Process, false),
            _ => (Class::Other, false),
        }
    }

    /// Whether an open's path lies under a mutable path of the policy.
    fn is_mutable_path(&self, nr: u64, a: &[u64; 6], path: &[u8]) -> bool {
        let Some(m) = &self.mvx else { return false };
        let full = if path.first() == Some(&b'/') {
            path.to_vec()
        } else {
            let dirfd = if nr as i64 == libc::SYS_openat { a[0] as u32 as i32 } else { AT_FDCWD };
            let base = if dirfd == AT_FDCWD {
                self.cwd.clone()
            } else {
                self.fds.file(dirfd as u32 as u64).map(|f| self.sandbox.guest_path(f.raw())).unwrap_or_default()
            };
            [base, b"/".to_vec(), path.to_vec()].concat()
        };
        m.policy.is_mutable(&full)
    }

    /// SHA-256 and length of `len` bytes of program memory at `va`, or None.
    fn hash_user(&mut self, va: u64, len: u64) -> Option<([u8; 32], u64)> {
        let mut h = Sha256::new();
        let mut done = 0u64;
        let len = len.min(super::syscall::file::MAX_RW);
        while done < len {
            let mut iov = HostIov::default();
            let n = self.mm.user_iov(va + done, len - done, false, &mut iov).ok()?;
            if n == 0 {
                break;
            }
            for v in &iov.iov[..iov.len] {
                // SAFETY: the iovecs point into guest memory (bounds-checked
                // by Mm::user_iov) and the guest is stopped.
                h.update(unsafe { std::slice::from_raw_parts(v.iov_base as *const u8, v.iov_len) });
            }
            done += n;
            if n < len - (done - n) {
                break;
            }
        }
        Some((h.finalize().into(), done))
    }

    /// Adds a digest of the bytes the program's iovec array describes.
    fn hash_iovs(&mut self, iov_va: u64, cnt: u64) -> Option<([u8; 32], u64)> {
        if cnt > 1024 {
            return None;
        }
        let mut raw = vec![0u8; cnt as usize * 16];
        self.mm.read_user(iov_va, &mut raw).ok()?;
        let mut h = Sha256::new();
        let mut total = 0;
        for i in 0..cnt as usize {
            let base = u64::from_le_bytes(raw[i * 16..i * 16 + 8].try_into().ok()?);
            let len = u64::from_le_bytes(raw[i * 16 + 8..i * 16 + 16].try_into().ok()?);
            if len == 0 {
                continue;
            }
            let (d, n) = self.hash_user(base, len)?;
            h.update(d);
            total += n;
        }
        Some((h.finalize().into(), total))
    }

    fn rec_path(&mut self, rec: &mut RecordBuf, va: u64) {
        match self.path_arg(va) {
            Ok(p) => rec.str(&p),
            Err(_) => rec.int(UNREADABLE),
        };
    }

    fn rec_bytes(&mut self, rec: &mut RecordBuf, va: u64, len: u64) {
        if len > 4096 {
            rec.int(len);
            return;
        }
        let mut b = vec![0u8; len as usize];
        match self.mm.read_user(va, &mut b) {
            Ok(()) => rec.bytes(&b),
            Err(_) => rec.int(UNREADABLE),
        };
    }

    /// A socket address, without the padding and unused bytes a program may
    /// leave uninitialised (they differ between variants).
    fn rec_sockaddr(&mut self, rec: &mut RecordBuf, va: u64, len: u64) {
        let len = len.min(128);
        let mut b = vec![0u8; len as usize];
        if self.mm.read_user(va, &mut b).is_err() {
            rec.int(UNREADABLE);
            return;
        }
        let family = if b.len() >= 2 { u16::from_le_bytes([b[0], b[1]]) as i32 } else { -1 };
        let keep = match family {
            libc::AF_INET => 8,
            libc::AF_INET6 => 28,
            libc::AF_UNIX if b.get(2).is_some_and(|&c| c != 0) => {
                2 + b[2..].iter().position(|&c| c == 0).unwrap_or(b.len() - 2)
            }
            _ => b.len(),
        };
        rec.int(len).bytes(&b[..keep.min(b.len())]);
    }

    fn rec_digest(&mut self, rec: &mut RecordBuf, d: Option<([u8; 32], u64)>) {
        match d {
            Some((d, n)) => rec.digest(d, n),
            None => rec.int(UNREADABLE),
        };
    }

    /// The normalised record of call `nr`: descriptor numbers, integers,
    /// paths, input structures; digests of output data; never addresses.
    #[allow(non_upper_case_globals)] // libc's SYS_* names
    fn build_record(&mut self, rec: &mut RecordBuf, nr: u64, class: Class, a: &[u64; 6]) {
        use libc::*;
        rec.call(nr, class);
        let dirfd = |rec: &mut RecordBuf, v: u64| {
            if v as u32 as i32 == AT_FDCWD {
                rec.int(AT_FDCWD as u64);
            } else {
                rec.fd(v);
            }
        };
        match nr as i64 {
            SYS_read | SYS_recvfrom => {
                rec.fd(a[0]).int(a[2]);
                if nr as i64 == SYS_recvfrom {
                    rec.int(a[3]);
                }
            }
            SYS_readv | SYS_preadv => {
                rec.fd(a[0]).int(a[2]);
            }
            SYS_pread64 => {
                rec.fd(a[0]).int(a[2]).int(a[3]);
            }
            SYS_write | SYS_pwrite64 => {
                rec.fd(a[0]);
                let d = self.hash_user(a[1], a[2]);
                self.rec_digest(rec, d);
                if nr as i64 == SYS_pwrite64 {
                    rec.int(a[3]);
                }
            }
            SYS_writev | SYS_pwritev => {
                rec.fd(a[0]);
                let d = self.hash_iovs(a[1], a[2]);
                self.rec_digest(rec, d);
            }
            SYS_sendto => {
                rec.fd(a[0]);
                let d = self.hash_user(a[1], a[2]);
                self.rec_digest(rec, d);
                rec.int(a[3]);
                if a[4] != 0 {
                    self.rec_sockaddr(rec, a[4], a[5]);
                }
            }
            SYS_sendmsg => {
                rec.fd(a[0]).int(a[2]);
                match self.mm.read_val::<[u64; 7]>(a[1]) {
                    Ok(m) => {
                        let d = self.hash_iovs(m[2], m[3]);
                        self.rec_digest(rec, d);
                        if m[0] != 0 {
                            self.rec_sockaddr(rec, m[0], m[1] & 0xffff_ffff);
                        }
                    }
                    Err(_) => {
                        rec.int(UNREADABLE);
                    }
                }
            }
            SYS_recvmsg => {
                rec.fd(a[0]).int(a[2]);
            }
            SYS_sendfile => {
                rec.fd(a[0]).fd(a[1]).int(a[3]);
            }
            SYS_open => {
                self.rec_path(rec, a[0]);
                rec.int(a[1]).int(if creates(a[1]) { a[2] } else { 0 });
            }
            SYS_creat => {
                self.rec_path(rec, a[0]);
                rec.int(a[1]);
            }
            SYS_openat => {
                dirfd(rec, a[0]);
                self.rec_path(rec, a[1]);
                rec.int(a[2]).int(if creates(a[2]) { a[3] } else { 0 });
            }
            SYS_stat | SYS_lstat | SYS_access | SYS_unlink | SYS_rmdir | SYS_mkdir | SYS_chdir | SYS_chmod
            | SYS_truncate | SYS_statfs | SYS_chown | SYS_lchown | SYS_readlink => {
                self.rec_path(rec, a[0]);
                // Only the arguments each call has (the rest are stale registers).
                match nr as i64 {
                    SYS_access | SYS_mkdir | SYS_chmod | SYS_truncate => {
                        rec.int(a[1]);
                    }
                    SYS_readlink => {
                        rec.int(a[2]);
                    }
                    SYS_chown | SYS_lchown => {
                        rec.int(a[1]).int(a[2]);
                    }
                    _ => {}
                }
            }
            SYS_newfstatat | SYS_faccessat | SYS_faccessat2 | SYS_unlinkat | SYS_mkdirat | SYS_fchmodat
            | SYS_readlinkat | SYS_utimensat | SYS_fchownat | SYS_statx => {
                dirfd(rec, a[0]);
                if a[1] != 0 {
                    self.rec_path(rec, a[1]);
                }
                match nr as i64 {
                    SYS_newfstatat | SYS_readlinkat => rec.int(a[3]),
                    SYS_statx | SYS_faccessat2 => rec.int(a[2]).int(a[3]),
                    SYS_fchownat => rec.int(a[2]).int(a[3]).int(a[4]),
                    SYS_utimensat => {
                        if a[2] != 0 {
                            self.rec_bytes(rec, a[2], 32);
                        }
                        rec.int(a[3])
                    }
                    // faccessat, unlinkat, mkdirat, fchmodat: three arguments.
                    _ => rec.int(a[2]),
                };
            }
            SYS_rename | SYS_symlink | SYS_link => {
                self.rec_path(rec, a[0]);
                self.rec_path(rec, a[1]);
            }
            SYS_renameat | SYS_renameat2 | SYS_linkat => {
                dirfd(rec, a[0]);
                self.rec_path(rec, a[1]);
                dirfd(rec, a[2]);
                self.rec_path(rec, a[3]);
                rec.int(if nr as i64 == SYS_renameat { 0 } else { a[4] });
            }
            SYS_symlinkat => {
                self.rec_path(rec, a[0]);
                dirfd(rec, a[1]);
                self.rec_path(rec, a[2]);
            }
            SYS_execve | SYS_execveat => {
                let (path, argv, envp) = if nr as i64 == SYS_execve { (a[0], a[1], a[2]) } else { (a[1], a[2], a[3]) };
                self.rec_path(rec, path);
                for arr in [argv, envp] {
                    let mut h = Sha256::new();
                    let mut i = 0u64;
                    let mut ok = arr != 0;
                    while ok {
                        match self.mm.read_val::<u64>(arr + i * 8) {
                            Ok(0) => break,
                            Ok(p) => match self.mm.read_cstr(p, 128 * 1024) {
                                Ok(s) => {
                                    h.update(&s);
                                    h.update([0]);
                                }
                                Err(_) => ok = false,
                            },
                            Err(_) => ok = false,
                        }
                        i += 1;
                        if i > 65536 {
                            break;
                        }
                    }
                    rec.digest(h.finalize().into(), i);
                }
            }
            SYS_mmap => {
                rec.int(a[1]).int(a[2]).int(a[3]);
                if a[3] & MAP_ANONYMOUS as u64 == 0 {
                    rec.fd(a[4]).int(a[5]);
                }
            }
            SYS_mprotect | SYS_madvise | SYS_msync => {
                rec.int(a[1]).int(a[2]);
            }
            SYS_munmap | SYS_mlock | SYS_munlock => {
                rec.int(a[1]);
            }
            SYS_mremap => {
                rec.int(a[1]).int(a[2]).int(a[3]);
            }
            SYS_socket | SYS_socketpair => {
                rec.int(a[0]).int(a[1]).int(a[2]);
            }
            SYS_bind | SYS_connect => {
                rec.fd(a[0]);
                self.rec_sockaddr(rec, a[1], a[2]);
            }
            SYS_listen | SYS_shutdown => {
                rec.fd(a[0]).int(a[1]);
            }
            SYS_accept | SYS_accept4 => {
                rec.fd(a[0]).int(if nr as i64 == SYS_accept4 { a[3] } else { 0 });
            }
            SYS_setsockopt => {
                rec.fd(a[0]).int(a[1]).int(a[2]);
                self.rec_bytes(rec, a[3], a[4].min(256));
            }
            SYS_getsockopt => {
                rec.fd(a[0]).int(a[1]).int(a[2]);
            }
            SYS_epoll_ctl => {
                rec.fd(a[0]).int(a[1]).fd(a[2]);
                // The events, not the data (the program's pointers).
                match self.mm.read_val::<u32>(a[3]) {
                    Ok(ev) if a[1] as i32 != EPOLL_CTL_DEL => rec.int(ev as u64),
                    _ => rec.int(0),
                };
            }
            SYS_epoll_wait | SYS_epoll_pwait | SYS_epoll_pwait2 => {
                rec.fd(a[0]).int(a[2]).int(a[3]);
            }
            SYS_poll | SYS_ppoll => {
                rec.int(a[1]);
                if a[1] <= 1024 {
                    let mut b = vec![0u8; a[1] as usize * 8];
                    if self.mm.read_user(a[0], &mut b).is_ok() {
                        // fd and events; not revents.
                        for c in b.chunks_mut(8) {
                            c[6] = 0;
                            c[7] = 0;
                        }
                        rec.bytes(&b);
                    }
                }
            }
            SYS_select | SYS_pselect6 => {
                rec.int(a[0]);
                for &s in &a[1..4] {
                    if s != 0 {
                        self.rec_bytes(rec, s, (a[0].min(1024)).div_ceil(64) * 8);
                    }
                }
            }
            SYS_clock_gettime | SYS_clock_getres | SYS_getrandom | SYS_alarm => {
                rec.int(if nr as i64 == SYS_getrandom { a[1] } else { a[0] });
            }
            SYS_nanosleep => self.rec_bytes(rec, a[0], 16),
            SYS_clock_nanosleep => {
                rec.int(a[0]).int(a[1]);
                self.rec_bytes(rec, a[2], 16);
            }
            SYS_close | SYS_dup | SYS_fsync | SYS_fdatasync | SYS_fstat | SYS_fstatfs | SYS_fchdir => {
                rec.fd(a[0]);
            }
            SYS_dup2 | SYS_dup3 => {
                rec.fd(a[0]).fd(a[1]).int(if nr as i64 == SYS_dup3 { a[2] } else { 0 });
            }
            SYS_fcntl | SYS_ioctl | SYS_lseek | SYS_flock | SYS_ftruncate | SYS_fchmod => {
                rec.fd(a[0]).int(a[1]);
                if nr as i64 == SYS_lseek {
                    rec.int(a[2]);
                }
            }
            SYS_getdents64 => {
                rec.fd(a[0]).int(a[2]);
            }
            SYS_pipe2 | SYS_eventfd2 => {
                rec.int(a[1]);
            }
            SYS_epoll_create1 | SYS_umask | SYS_exit | SYS_exit_group => {
                rec.int(a[0]);
            }
            SYS_kill | SYS_tkill => {
                rec.int(a[0]).int(a[1]);
            }
            SYS_tgkill => {
                rec.int(a[0]).int(a[1]).int(a[2]);
            }
            SYS_rt_sigaction => {
                rec.int(a[0]);
                // The disposition's kind and flags, not the handler's address.
                if let Ok(act) = self.mm.read_val::<[u64; 4]>(a[1]) {
                    rec.int(act[0].min(2)).int(act[1]).int(act[3]);
                }
            }
            SYS_rt_sigprocmask => {
                rec.int(a[0]);
                if a[1] != 0 {
                    if let Ok(m) = self.mm.read_val::<u64>(a[1]) {
                        rec.int(m);
                    }
                }
            }
            SYS_prlimit64 => {
                rec.int(a[1]);
                if a[2] != 0 {
                    self.rec_bytes(rec, a[2], 16);
                }
            }
            SYS_arch_prctl | SYS_prctl => {
                rec.int(a[0]);
            }
            SYS_futex => {
                rec.int(a[1]).int(a[2]);
            }
            _ => {}
        }
    }

    /// Before call `nr` runs. Err stops the run.
    pub(crate) fn monitor_begin(&mut self, nr: u64, a: &[u64; 6]) -> Result<(), Stop> {
        let (class, remote) = self.classify(nr, a);
        let Some(mut m) = self.mvx.take() else { return Ok(()) };
        let mut rec = std::mem::take(&mut m.rec);
        self.build_record(&mut rec, nr, class, a);
        m.rec = rec;
        m.class = class;
        m.rule = m.policy.rule(nr, class);
        m.replay_broken = None;
        let replicated = m.rule.input == Input::Replicated || remote;
        let r = self.begin_with(&mut m, replicated);
        self.mvx = Some(m);
        r
    }

    fn begin_with(&mut self, m: &mut Mvx, replicated: bool) -> Result<(), Stop> {
        m.seq += 1;
        let seq = m.seq;
        let lockstep = m.rule.check == Check::Lockstep;
        if m.is_leader() {
            self.take_controls_leader(m)?;
            self.release_outputs(m, false)?;
            m.mode = if replicated { OpMode::Record } else { OpMode::Direct };
            // A lockstep call whose effect is not an output held back waits
            // for every follower to reach the same record first.
            let held = m.deferred_outputs && m.class == Class::Output;
            if lockstep && !held {
                m.leader().flush().map_err(Mvx::link_stop)?;
                self.await_followers(m, seq)?;
            }
            let Mvx { rec, entry, .. } = &mut *m;
            entry.start(rec.as_bytes());
            return Ok(());
        }
        // A lockstep call the leader waits for: tell it at once that we
        // reached it, with our record's digest (the leader compares). A held
        // output the leader does not wait for: it is acknowledged only once
        // verified here (the acknowledgement releases it).
        let held = m.deferred_outputs && m.class == Class::Output;
        if lockstep && !held {
            let digest = record_digest(m.rec.as_bytes());
            m.follower().ack(seq, digest).map_err(Mvx::link_stop)?;
            m.acked = seq;
        }
        if held && !self.fetch_leader_entry_within(m, seq, REACHED_AFTER)? {
            let mut payload = seq.to_le_bytes().to_vec();
            payload.extend_from_slice(&record_digest(m.rec.as_bytes()));
            m.follower().send_control(&Control::Custom { kind: CTRL_REACHED, payload }).map_err(Mvx::link_stop)?;
            self.fetch_leader_entry(m, seq)?;
        } else if !held {
            self.fetch_leader_entry(m, seq)?;
        }
        let view = EntryView::decode(&m.leader_entry)
            .map_err(|e| Stop::link(format!("undecodable entry {seq} from the leader: {e}")))?;
        if view.record != m.rec.as_bytes() {
            let leader = view.record.to_vec();
            let mine = m.rec.as_bytes().to_vec();
            return Err(self.diverge(m, Kind::Records, seq, Some(&leader), Some(&mine), m.id, false));
        }
        m.mode = if replicated { OpMode::Replay } else { OpMode::Direct };
        m.ops_replayed = 0;
        Ok(())
    }

    /// Leader: waits until every follower acknowledged `seq` with this
    /// call's record.
    fn await_followers(&mut self, m: &mut Mvx, seq: u64) -> Result<(), Stop> {
        let want = record_digest(m.rec.as_bytes());
        loop {
            let timeout = m.timeout;
            match m.leader().wait_acked(seq, timeout) {
                Ok(()) => break,
                Err(LinkError::ControlPending) => self.take_controls_leader(m)?,
                Err(LinkError::AckTimeout { silent, .. }) => {
                    let who = silent.first().copied().unwrap_or(0);
                    let mine = m.rec.as_bytes().to_vec();
                    return Err(self.diverge(m, Kind::Silent, seq, Some(&mine), None, who, false));
                }
                Err(e) => {
                    self.take_controls_leader(m)?;
                    return Err(Mvx::link_stop(e));
                }
            }
        }
        let bad: Vec<u8> = m.leader().acks().filter(|a| a.seq == seq && a.digest != want).map(|a| a.variant).collect();
        if let Some(&v) = bad.first() {
            // Only the digest differs so far; the follower answers our
            // report with what it made there.
            let mine = m.rec.as_bytes().to_vec();
            return Err(self.diverge(m, Kind::Records, seq, Some(&mine), None, v, false));
        }
        Ok(())
    }

    /// Follower: the leader's entry `seq` into `m.leader_entry`, if it
    /// arrives within `wait`.
    fn fetch_leader_entry_within(&mut self, m: &mut Mvx, seq: u64, wait: Duration) -> Result<bool, Stop> {
        let full = m.timeout;
        m.timeout = wait;
        let r = self.fetch_leader_entry(m, seq);
        m.timeout = full;
        match r {
            Ok(()) => Ok(true),
            Err(Stop::Divergence(_)) if m.replay_broken.take().is_some() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Follower: the leader's entry `seq` into `m.leader_entry`.
    fn fetch_leader_entry(&mut self, m: &mut Mvx, seq: u64) -> Result<(), Stop> {
        loop {
            let timeout = m.timeout;
            let crate::mvx::Link::Follower(link) = &mut m.link else { unreachable!() };
            let got = match link.next_entry_timeout(timeout) {
                Ok(Some(e)) => {
                    if e.seq != seq {
                        return Err(Stop::link(format!("entry {} from the leader where {seq} was due", e.seq)));
                    }
                    m.leader_entry.clear();
                    m.leader_entry.extend_from_slice(e.data);
                    Some(())
                }
                Ok(None) => None,
                Err(LinkError::ControlPending) => {
                    let c = m.follower().try_recv_control();
                    if let Some(stop) = self.on_control_follower(m, c) {
                        return Err(stop);
                    }
                    continue;
                }
                Err(e) => return Err(Mvx::link_stop(e)),
            };
            match got {
                Some(()) => return Ok(()),
                None if timeout < Duration::from_secs(1) => {
                    // A short wait ran out (fetch_leader_entry_within).
                    m.replay_broken = Some("waiting".into());
                    return Err(Stop::Divergence(String::new()));
                }
                None => {
                    let mine = m.rec.as_bytes().to_vec();
                    return Err(self.diverge(m, Kind::Silent, seq, None, Some(&mine), 0, false));
                }
            }
        }
    }

    fn on_control_follower(&mut self, m: &mut Mvx, c: Option<Control>) -> Option<Stop> {
        match c? {
            Control::Shutdown { status } => Some(Stop::Shutdown(status)),
            Control::Divergence { seq, report } => {
                let text = String::from_utf8_lossy(&report).into_owned();
                let mut v: serde_json::Value =
                    serde_json::from_str(&text).unwrap_or_else(|_| serde_json::json!({"message": text}));
                // The leader found it at our current event: tell it what we made there.
                if seq == m.seq && v["variant"].as_u64() == Some(m.id as u64) && v["other"].is_null() {
                    let name_of = |nr| names::name(nr);
                    let mine = decode(m.rec.as_bytes(), name_of).ok();
                    let leader: Option<dmvx_sync::record::Event> = serde_json::from_value(v["leader"].clone()).ok();
                    v["message"] = serde_json::Value::String(format!(
                        "variant {} made {} at event {seq} where the leader made {}",
                        m.id,
                        describe(&mine),
                        describe(&leader)
                    ));
                    v["other"] = serde_json::to_value(mine).unwrap_or_default();
                    if let Some(arr) = v["forensic"].as_array_mut() {
                        arr.push(
                            serde_json::to_value(VariantLog { variant: m.id as u32, events: m.log.events(name_of) })
                                .unwrap_or_default(),
                        );
                    }
                    let reply = serde_json::to_vec_pretty(&v).unwrap_or_default();
                    let _ = m.follower().send_control(&Control::Divergence { seq, report: reply });
                }
                let msg =
                    v["message"].as_str().map(String::from).unwrap_or_else(|| format!("divergence at event {seq}"));
                self.write_report_file(m, &serde_json::to_string_pretty(&v).unwrap_or(text));
                Some(Stop::Divergence(msg))
            }
            _ => None,
        }
    }

    /// Leader: handles control messages from followers (divergence reports).
    fn take_controls_leader(&mut self, m: &mut Mvx) -> Result<(), Stop> {
        if !m.is_leader() {
            return Ok(());
        }
        loop {
            let Some((from, c)) = m.leader().try_recv_control() else { return Ok(()) };
            if let Control::Custom { kind: CTRL_REACHED, payload } = &c {
                // A follower reached event `seq` with a held output; if the
                // leader is at a different event there, that is a divergence.
                if payload.len() == 40 {
                    let seq = u64::from_le_bytes(payload[..8].try_into().expect("8 bytes"));
                    if seq == m.seq && payload[8..] != record_digest(m.rec.as_bytes()) {
                        let mine = m.rec.as_bytes().to_vec();
                        return Err(self.diverge(m, Kind::Records, seq, Some(&mine), None, from, false));
                    }
                }
                continue;
            }
            if let Control::Divergence { seq, report } = c {
                // The follower found it: add the leader's view and stop all.
                let mut v: serde_json::Value =
                    serde_json::from_slice(&report).unwrap_or_else(|_| serde_json::json!({"message": "divergence"}));
                let name_of = |nr| names::name(nr);
                let my_log = serde_json::to_value(VariantLog { variant: m.id as u32, events: m.log.events(name_of) })
                    .unwrap_or_default();
                if let Some(arr) = v["forensic"].as_array_mut() {
                    arr.push(my_log);
                }
                let text = serde_json::to_string_pretty(&v).unwrap_or_default();
                // The reporting follower checked every event before `seq`.
                let (agreed, _) = self.agreed_before(m, seq, from, true);
                m.outputs.release_before(agreed, seq);
                let discarded = m.outputs.discard();
                self.write_report_file(m, &text);
                let _ = m.leader().send_control(&Control::Divergence { seq, report: text.into_bytes() });
                let _ = m.leader().flush();
                let msg = v["message"].as_str().unwrap_or("divergence").to_string();
                eprintln!("dmvx: variant {from} diverged at event {seq}; {discarded} bytes of held output discarded");
                return Err(Stop::Divergence(msg));
            }
        }
    }

    /// Leader, on a divergence at `seq` in variant `diverging`: how far
    /// every variant agreed. If `diverging` reached `seq` (it reported a
    /// different record there), it agreed on everything before; if it fell
    /// silent, only on what it acknowledged. The other followers may lag:
    /// the output held before `seq` waits (up to the cluster timeout) until
    /// each acknowledged it or reported a divergence of its own. Also
    /// returns a report `diverging` sent meanwhile.
    fn agreed_before(&mut self, m: &mut Mvx, seq: u64, diverging: u8, reached: bool) -> (u64, Option<Vec<u8>>) {
        let need = m.outputs.newest_before(seq);
        let deadline = std::time::Instant::now() + m.timeout;
        // Followers that reported a divergence: they agreed up to there.
        let mut reported: Vec<(u8, u64)> = Vec::new();
        let mut own = None;
        loop {
            let mut frozen = u64::MAX;
            let mut others = u64::MAX;
            for a in m.leader_ref().acks() {
                let upto = m.outputs.agreement(a.seq, &a.digest);
                match reported.iter().find(|r| r.0 == a.variant) {
                    _ if a.variant == diverging && reached => {}
                    _ if a.variant == diverging => frozen = upto,
                    Some(r) => frozen = frozen.min(r.1.saturating_sub(1)),
                    None => others = others.min(upto),
                }
            }
            let agreed = frozen.min(others).min(seq.saturating_sub(1));
            let hopeless = frozen < need;
            if agreed >= need || hopeless || std::time::Instant::now() >= deadline || m.leader().check().is_err() {
                return (agreed, own);
            }
            match m.leader().try_recv_control() {
                Some((from, Control::Divergence { report, .. })) if from == diverging => own = Some(report),
                Some((from, Control::Divergence { seq: at, .. })) => reported.push((from, at)),
                Some(_) => {}
                None => std::thread::sleep(Duration::from_micros(200)),
            }
        }
    }

    /// Leader: sends out held outputs that every follower acknowledged;
    /// with `all`, waits until everything held is acknowledged first.
    pub(crate) fn release_outputs(&mut self, m: &mut Mvx, all: bool) -> Result<(), Stop> {
        if !m.outputs.pending() || !m.is_leader() {
            return Ok(());
        }
        let mut acked = agreed(m);
        if (all || m.outputs.full()) && acked < m.outputs.newest() {
            let want = m.outputs.newest();
            loop {
                let timeout = m.timeout;
                match m.leader().wait_acked(want, timeout) {
                    Ok(()) => break,
                    Err(LinkError::ControlPending) => self.take_controls_leader(m)?,
                    Err(LinkError::AckTimeout { silent, .. }) => {
                        let who = silent.first().copied().unwrap_or(0);
                        return Err(self.diverge(m, Kind::Silent, want, None, None, who, false));
                    }
                    Err(e) => {
                        self.take_controls_leader(m)?;
                        return Err(Mvx::link_stop(e));
                    }
                }
            }
            acked = agreed(m);
        }
        m.outputs.release(acked, all);
        Ok(())
    }

    /// After call `nr` ran (or was replayed) with return value `ret`.
    pub(crate) fn monitor_end(&mut self, ret: i64) -> Result<(), Stop> {
        let Some(mut m) = self.mvx.take() else { return Ok(()) };
        let r = self.end_with(&mut m, ret);
        self.mvx = Some(m);
        r
    }

    fn end_with(&mut self, m: &mut Mvx, ret: i64) -> Result<(), Stop> {
        let seq = m.seq;
        m.log.push(seq, m.rec.as_bytes(), ret);
        if m.is_leader() {
            // Signals that reached the leader are delivered to every variant
            // right after this call.
            self.collect_host_signals();
            let mut sigs: Vec<SignalEvent> = Vec::new();
            for s in super::deliver::FORWARDED {
                if self.host_raised & super::signal::bit(s) != 0 {
                    sigs.push(SignalEvent { sig: s, code: 0, addr: 0 });
                }
            }
            self.host_raised = 0;
            // No flush here: the batch goes out when full, when this side
            // waits, or after the link's batch delay.
            let Mvx { entry, link, .. } = &mut *m;
            let crate::mvx::Link::Leader(link) = link else { unreachable!("leader link on a leader") };
            let pushed = link.push(entry.finish(ret, &sigs)).map_err(Mvx::link_stop)?;
            if pushed != seq {
                return Err(Stop::link(format!("the link numbered event {seq} as {pushed}")));
            }
            return Ok(());
        }
        if m.replay_broken.take().is_some() {
            let mine = m.rec.as_bytes().to_vec();
            let leader = EntryView::decode(&m.leader_entry).map(|v| v.record.to_vec()).ok();
            return Err(self.diverge(m, Kind::Records, seq, leader.as_deref(), Some(&mine), m.id, true));
        }
        let view = EntryView::decode(&m.leader_entry).map_err(|e| Stop::link(e.to_string()))?;
        // Nothing is copied out of the entry unless needed (hot path).
        let leader_ret = view.ret;
        // Addresses differ by design (diversified layouts): the return
        // values of brk, mmap and mremap are not compared.
        let address =
            matches!(self.cur_nr, Some(n) if [libc::SYS_brk, libc::SYS_mmap, libc::SYS_mremap].contains(&(n as i64)));
        if m.mode == OpMode::Direct && leader_ret != ret && m.rule.check != Check::Unchecked && !address {
            let leader_rec = view.record.to_vec();
            let mine = m.rec.as_bytes().to_vec();
            return Err(self.diverge(m, Kind::Result, seq, Some(&leader_rec), Some(&mine), m.id, true));
        }
        for s in &view.signals {
            self.signals
                .raise(Signal(s.sig), super::signal::SigInfo { code: s.code, addr: s.addr, ..Default::default() });
        }
        if seq - m.acked >= ACK_EVERY || m.rule.check == Check::Lockstep {
            let d = record_digest(m.rec.as_bytes());
            m.follower().ack_soon(seq, d).map_err(Mvx::link_stop)?;
            m.acked = seq;
        }
        Ok(())
    }

    /// The program ends (`record` is its Exit or Killed record): the last
    /// event is checked in lockstep, held outputs go out, the run ends.
    pub(crate) fn monitor_final(&mut self, exit: Option<i32>, sig: Option<i32>) -> Result<(), Stop> {
        let Some(mut m) = self.mvx.take() else { return Ok(()) };
        let r = self.final_with(&mut m, exit, sig);
        self.mvx = Some(m);
        r
    }

    fn final_with(&mut self, m: &mut Mvx, exit: Option<i32>, sig: Option<i32>) -> Result<(), Stop> {
        // exit_group already went through monitor_begin as a call; the
        // final event is the exit or death itself.
        match (exit, sig) {
            (Some(s), _) => m.rec.exit(s),
            (_, Some(s)) => m.rec.killed(s),
            _ => m.rec.exit(0),
        };
        m.class = Class::Exit;
        m.rule = m.policy.rule(u64::MAX, Class::Exit);
        m.seq += 1;
        let seq = m.seq;
        if m.is_leader() {
            let rec = m.rec.as_bytes().to_vec();
            m.entry.start(&rec);
            let entry = m.entry.finish(0, &[]).to_vec();
            m.leader().push(&entry).map_err(Mvx::link_stop)?;
            m.leader().flush().map_err(Mvx::link_stop)?;
            self.await_followers(m, seq)?;
            self.release_outputs(m, true)?;
            m.log.push(seq, m.rec.as_bytes(), 0);
            let status = exit.unwrap_or(128 + sig.unwrap_or(0));
            let _ = m.leader().send_control(&Control::Shutdown { status });
            let _ = m.leader().flush();
            return Ok(());
        }
        let d = record_digest(m.rec.as_bytes());
        m.follower().ack(seq, d).map_err(Mvx::link_stop)?;
        self.fetch_leader_entry(m, seq)?;
        let view = EntryView::decode(&m.leader_entry).map_err(|e| Stop::link(e.to_string()))?;
        if view.record != m.rec.as_bytes() {
            let leader = view.record.to_vec();
            let mine = m.rec.as_bytes().to_vec();
            return Err(self.diverge(m, Kind::Ended, seq, Some(&leader), Some(&mine), m.id, true));
        }
        // Stay until the leader ends the run: it still waits for the other
        // followers, and a closed link would look like a failure to it.
        let deadline = std::time::Instant::now() + m.timeout;
        while std::time::Instant::now() < deadline {
            match m.follower().try_recv_control() {
                Some(Control::Shutdown { .. }) => break,
                Some(_) => continue,
                None => {
                    if m.follower().check().is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        Ok(())
    }

    /// Builds, writes and sends a divergence report; returns the stop.
    #[allow(clippy::too_many_arguments)]
    fn diverge(
        &mut self,
        m: &mut Mvx,
        kind: Kind,
        seq: u64,
        leader: Option<&[u8]>,
        other: Option<&[u8]>,
        variant: u8,
        took_effect: bool,
    ) -> Stop {
        let name_of = |nr| names::name(nr);
        // A silent follower checked only what it acknowledged; any other
        // reached `seq`, having agreed on everything before.
        let reached = !matches!(kind, Kind::Silent);
        let le = leader.and_then(|r| decode(r, name_of).ok());
        let oe = other.and_then(|r| decode(r, name_of).ok());
        let who = if m.is_leader() { format!("variant {variant}") } else { format!("variant {}", m.id) };
        let message = match kind {
            Kind::Silent if m.is_leader() => {
                format!("{who} stopped answering at event {seq} (the leader was at {})", describe(&le))
            }
            Kind::Silent => format!("the leader stopped answering at event {seq}"),
            Kind::Result => {
                format!("{who} got a different result from {} at event {seq} than the leader", describe(&oe))
            }
            _ => format!("{who} made {} at event {seq} where the leader made {}", describe(&oe), describe(&le)),
        };
        let report = Report {
            kind,
            message: message.clone(),
            seq,
            variant: variant as u32,
            detected_by: m.id as u32,
            policy: PolicyUsed::of(m.class, m.rule),
            leader: le,
            other: oe,
            took_effect,
            forensic: vec![VariantLog { variant: m.id as u32, events: m.log.events(name_of) }],
        };
        let mut json = report.to_json();
        // Output every variant agreed on before the divergence may go out;
        // nothing from the diverging event on.
        let mut answer = None;
        if m.is_leader() {
            let (agreed, own) = self.agreed_before(m, seq, variant, reached);
            m.outputs.release_before(agreed, seq);
            answer = own;
        }
        let discarded = m.outputs.discard();
        if m.is_leader() {
            let _ = m.leader().send_control(&Control::Divergence { seq, report: json.clone().into_bytes() });
            let _ = m.leader().flush();
            if report.other.is_none() {
                // The other variant answers with what it made there.
                let deadline = std::time::Instant::now() + Duration::from_secs(1);
                while std::time::Instant::now() < deadline {
                    let got = answer.take().map(|r| (variant, Control::Divergence { seq, report: r }));
                    if let Some((from, Control::Divergence { report: r, .. })) =
                        got.or_else(|| m.leader().try_recv_control())
                    {
                        if from == variant {
                            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&r) {
                                let message = format!(
                                    "variant {variant} made {} at event {seq} where the leader made {}",
                                    describe(&serde_json::from_value(v["other"].clone()).ok()),
                                    describe(&report.leader)
                                );
                                let mut v = v;
                                v["message"] = serde_json::Value::String(message);
                                json = serde_json::to_string_pretty(&v).unwrap_or(json);
                            }
                            break;
                        }
                        continue;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        } else {
            let _ = m.follower().send_control(&Control::Divergence { seq, report: json.clone().into_bytes() });
            // Give the leader time to read it before the link closes.
            let deadline = std::time::Instant::now() + Duration::from_secs(1);
            while std::time::Instant::now() < deadline {
                match m.follower().try_recv_control() {
                    Some(Control::Shutdown { .. }) | Some(Control::Divergence { .. }) => break,
                    _ if m.follower().check().is_err() => break,
                    _ => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        }
        self.write_report_file(m, &json);
        if discarded > 0 {
            eprintln!("dmvx: {discarded} bytes of held output discarded: they never left this host");
        }
        let message = serde_json::from_str::<serde_json::Value>(&json)
            .ok()
            .and_then(|v| v["message"].as_str().map(String::from))
            .unwrap_or(message);
        Stop::Divergence(message)
    }

    /// The link failed: what every follower agreed on may still go out,
    /// nothing else; the report says which variant and why.
    pub(crate) fn link_failed(&mut self, why: &str, peer: Option<u8>, silent: bool) {
        let Some(mut m) = self.mvx.take() else { return };
        let seq = m.seq;
        if m.is_leader() {
            let acked = agreed(&m);
            m.outputs.release_before(acked, seq + 1);
        }
        let discarded = m.outputs.discard();
        let name_of = |nr| names::name(nr);
        let variant = peer.unwrap_or(if m.is_leader() { m.id } else { 0 });
        let report = Report {
            kind: if silent { Kind::Silent } else { Kind::Link },
            message: if silent {
                format!("variant {variant} stopped answering at event {seq}: {why}")
            } else {
                format!("the link to variant {variant} failed at event {seq}: {why}")
            },
            seq,
            variant: variant as u32,
            detected_by: m.id as u32,
            policy: PolicyUsed::of(m.class, m.rule),
            leader: None,
            other: None,
            took_effect: false,
            forensic: vec![VariantLog { variant: m.id as u32, events: m.log.events(name_of) }],
        };
        self.write_report_file(&m, &report.to_json());
        if discarded > 0 {
            eprintln!("dmvx: {discarded} bytes of held output discarded: they never left this host");
        }
        self.mvx = Some(m);
    }

    fn write_report_file(&self, m: &Mvx, json: &str) {
        let path = m.report_dir.join(format!("dmvx-divergence-variant{}.json", m.id));
        match std::fs::write(&path, json) {
            Ok(()) => eprintln!("dmvx: divergence report written to {}", path.display()),
            Err(e) => eprintln!("dmvx: cannot write the divergence report {}: {e}", path.display()),
        }
    }

    /// Leader: before an operation that must come after what is held for
    /// `f` (shutdown, a blocking read of a reply), send it out.
    pub(crate) fn settle_file(&mut self, f: &std::rc::Rc<super::fd::OpenFile>) -> Result<(), Stop> {
        if self.mvx.as_ref().is_some_and(|m| m.is_leader() && m.outputs.holds(f)) {
            return self.settle_before_blocking();
        }
        Ok(())
    }

    /// Leader: before a host call that may block on `file` (a blocking
    /// descriptor), send out what is held; a failure stops the run after
    /// the call (the call itself reports EINTR).
    pub(crate) fn settle_if_blocking(&mut self, file: &super::fd::OpenFile, dontwait: bool) -> bool {
        if dontwait || !self.mvx.as_ref().is_some_and(|m| m.is_leader()) || !file.may_block() {
            return true;
        }
        match self.settle_before_blocking() {
            Ok(()) => true,
            Err(stop) => {
                self.stop_requested = Some(stop);
                false
            }
        }
    }

    /// Leader, while the program waits: takes control messages, releases
    /// what was acknowledged, and arms the link's wake descriptor. Returns
    /// that descriptor to poll, or None when nothing is held any more.
    pub(crate) fn release_while_waiting(&mut self) -> Result<Option<i32>, Stop> {
        let Some(mut m) = self.mvx.take() else { return Ok(None) };
        m.leader().arm_wake();
        let r = (|| {
            self.take_controls_leader(&mut m)?;
            m.leader().check().map_err(Mvx::link_stop)?;
            let _ = m.leader().flush();
            self.release_outputs(&mut m, false)?;
            Ok(m.outputs.pending().then(|| std::os::fd::AsRawFd::as_raw_fd(&m.leader_ref().wake_fd())))
        })();
        if !matches!(r, Ok(Some(_))) {
            m.leader().disarm_wake();
        }
        self.mvx = Some(m);
        r
    }

    /// Leader: sends the pending batch, before the program may block.
    pub(crate) fn flush_link(&mut self) {
        if let Some(m) = self.mvx.as_mut().filter(|m| m.is_leader()) {
            let _ = m.leader().flush();
        }
    }

    /// Leader: after a wait on the link's wake descriptor.
    pub(crate) fn disarm_link_wake(&mut self) {
        if let Some(m) = self.mvx.as_mut() {
            m.leader().disarm_wake();
        }
    }

    /// Leader, before blocking on the host: everything held must go out
    /// first, or a client waits for an answer that waits for us.
    pub(crate) fn settle_before_blocking(&mut self) -> Result<(), Stop> {
        let Some(mut m) = self.mvx.take() else { return Ok(()) };
        let r = if m.is_leader() {
            // Followers must not wait for entries while the leader sleeps.
            let _ = m.leader().flush();
            if m.outputs.pending() {
                self.release_outputs(&mut m, true)
            } else {
                Ok(())
            }
        } else {
            Ok(())
        };
        self.mvx = Some(m);
        r
    }
}

/// Leader: the event up to which every follower's acknowledgement shows
/// agreement with the held outputs.
fn agreed(m: &Mvx) -> u64 {
    let mut acks = m.leader_ref().acks().peekable();
    if acks.peek().is_none() {
        return m.leader_ref().acked();
    }
    acks.map(|a| m.outputs.agreement(a.seq, &a.digest)).min().unwrap_or(0)
}
