//! fork, vfork, clone and clone3: the arguments are checked here; the new
//! process is made by the run loop (`kernel::fork`), which owns the VM, and
//! a new thread by `kernel::threads` (it shares the VM and its vCPU).

use super::super::errno::Errno;
use super::super::Kernel;
use super::Sys;

/// What a new process gets from its parent's call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ForkRequest {
    /// Signal to the parent when the child ends (SIGCHLD, or 0).
    pub exit_signal: i32,
    /// The parent waits until the child execs or exits (vfork).
    pub vfork: bool,
    /// The child's stack pointer, if the call gave one.
    pub stack: Option<u64>,
    /// The child's FS base (CLONE_SETTLS).
    pub tls: Option<u64>,
    /// Where to store the child's pid in the parent (CLONE_PARENT_SETTID).
    pub parent_tid: Option<u64>,
    /// Where to store the child's pid in the child (CLONE_CHILD_SETTID).
    pub child_tid: Option<u64>,
    /// The child's clear-tid address (CLONE_CHILD_CLEARTID).
    pub clear_tid: Option<u64>,
    /// Reset handled signals to the default in the child (CLONE_CLEAR_SIGHAND).
    pub clear_sighand: bool,
    /// A thread of the caller's process (CLONE_THREAD), not a process.
    pub thread: bool,
    /// The thread shares the fd table (CLONE_FILES) and the file-system
    /// context (CLONE_FS) instead of copying them.
    pub share_files: bool,
    pub share_fs: bool,
}

const CSIGNAL: u64 = 0xff;
const CLONE_VM: u64 = 0x100;
const CLONE_FS: u64 = 0x200;
const CLONE_FILES: u64 = 0x400;
const CLONE_SIGHAND: u64 = 0x800;
const CLONE_PIDFD: u64 = 0x1000;
const CLONE_PTRACE: u64 = 0x2000;
const CLONE_VFORK: u64 = 0x4000;
const CLONE_PARENT: u64 = 0x8000;
const CLONE_THREAD: u64 = 0x10000;
const CLONE_NEWNS: u64 = 0x20000;
const CLONE_SYSVSEM: u64 = 0x40000;
const CLONE_SETTLS: u64 = 0x80000;
const CLONE_PARENT_SETTID: u64 = 0x100000;
const CLONE_CHILD_CLEARTID: u64 = 0x200000;
const CLONE_DETACHED: u64 = 0x400000;
const CLONE_UNTRACED: u64 = 0x800000;
const CLONE_CHILD_SETTID: u64 = 0x1000000;
const CLONE_NEWCGROUP: u64 = 0x0200_0000;
const CLONE_NEWUTS: u64 = 0x0400_0000;
const CLONE_NEWIPC: u64 = 0x0800_0000;
const CLONE_NEWUSER: u64 = 0x1000_0000;
const CLONE_NEWPID: u64 = 0x2000_0000;
const CLONE_NEWNET: u64 = 0x4000_0000;
const CLONE_IO: u64 = 0x8000_0000;
const CLONE_CLEAR_SIGHAND: u64 = 0x1_0000_0000;
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
const NAMESPACES: u64 =
    CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET;
/// Flags that change nothing for a new process here.
const HARMLESS: u64 = CLONE_PTRACE | CLONE_DETACHED | CLONE_UNTRACED | CLONE_SYSVSEM | CLONE_IO;

/// Checks clone flags for a new process; `tls`, `parent_tid` and
/// `child_tid` are the call's pointers.
fn request(k: &mut Kernel, flags: u64, exit_signal: u64, stack: u64, a: (u64, u64, u64)) -> Result<ForkRequest, Errno> {
    let (tls, parent_tid, child_tid) = a;
    if flags & NAMESPACES != 0 {
        return Err(Errno::EPERM);
    }
    // Linux's rules: a thread shares the dispositions, which need the
    // address space.
    if (flags & CLONE_THREAD != 0 && flags & CLONE_SIGHAND == 0)
        || (flags & CLONE_SIGHAND != 0 && flags & CLONE_VM == 0)
        || (flags & CLONE_FS != 0 && flags & CLONE_NEWNS != 0)
    {
        return Err(Errno::EINVAL);
    }
    let thread = flags & CLONE_THREAD != 0;
    if thread {
        if flags & (CLONE_VFORK | CLONE_PIDFD | CLONE_INTO_CGROUP | CLONE_CLEAR_SIGHAND | CLONE_PARENT) != 0 {
            k.log_once(format!("clone flags {flags:#x} are not supported for threads: EINVAL"));
            return Err(Errno::EINVAL);
        }
    } else if flags & CLONE_VM != 0 && flags & CLONE_VFORK == 0 {
        // A process sharing the address space without being a thread of it.
        k.log_once(
            "clone with CLONE_VM but not CLONE_THREAD (a process sharing memory) is not supported: ENOSYS".into(),
        );
        return Err(Errno::ENOSYS);
    } else if flags & (CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_PARENT | CLONE_PIDFD | CLONE_INTO_CGROUP) != 0 {
        // Sharing a table with a process in another VM, a pidfd, cgroups.
        k.log_once(format!("clone flags {flags:#x} are not supported for new processes: EINVAL"));
        return Err(Errno::EINVAL);
    }
    let known = CSIGNAL
        | CLONE_VM
        | CLONE_VFORK
        | CLONE_SETTLS
        | CLONE_PARENT_SETTID
        | CLONE_CHILD_SETTID
        | CLONE_CHILD_CLEARTID
        | CLONE_CLEAR_SIGHAND
        | CLONE_THREAD
        | CLONE_SIGHAND
        | CLONE_FS
        | CLONE_FILES
        | HARMLESS;
    if flags & !known != 0 || exit_signal > 64 {
        return Err(Errno::EINVAL);
    }
    if thread && stack == 0 {
        // A thread on its parent's stack cannot work; Linux lets it crash.
        return Err(Errno::EINVAL);
    }
    Ok(ForkRequest {
        exit_signal: exit_signal as i32,
        vfork: flags & CLONE_VFORK != 0,
        stack: (stack != 0).then_some(stack),
        tls: (flags & CLONE_SETTLS != 0).then_some(tls),
        parent_tid: (flags & CLONE_PARENT_SETTID != 0).then_some(parent_tid),
        child_tid: (flags & CLONE_CHILD_SETTID != 0).then_some(child_tid),
        clear_tid: (flags & CLONE_CHILD_CLEARTID != 0).then_some(child_tid),
        clear_sighand: flags & CLONE_CLEAR_SIGHAND != 0,
        thread,
        share_files: flags & CLONE_FILES != 0,
        share_fs: flags & CLONE_FS != 0,
    })
}

fn fork_or_err(r: Result<ForkRequest, Errno>) -> Sys {
    match r {
        Ok(req) if req.thread => Sys::Thread(Box::new(req)),
        Ok(req) => Sys::Fork(Box::new(req)),
        Err(e) => Err::<u64, _>(e).into(),
    }
}

pub fn fork(_k: &mut Kernel, _a: &[u64; 6]) -> Sys {
    Sys::Fork(Box::new(ForkRequest { exit_signal: libc::SIGCHLD, ..Default::default() }))
}

pub fn vfork(_k: &mut Kernel, _a: &[u64; 6]) -> Sys {
    Sys::Fork(Box::new(ForkRequest { exit_signal: libc::SIGCHLD, vfork: true, ..Default::default() }))
}

/// clone(flags, stack, parent_tid, child_tid, tls) (x86-64 argument order).
pub fn clone(k: &mut Kernel, a: &[u64; 6]) -> Sys {
    let flags = a[0] & !CSIGNAL & 0xffff_ffff;
    fork_or_err(request(k, flags, a[0] & CSIGNAL, a[1], (a[4], a[2], a[3])))
}

/// The kernel's `struct clone_args` (the sizes clone3 accepts).
const CLONE_ARGS_SIZE_VER0: u64 = 64;
const CLONE_ARGS_SIZE_MAX: u64 = 88;

/// clone3(args, size).
pub fn clone3(k: &mut Kernel, a: &[u64; 6]) -> Sys {
    let r = (|| -> Result<ForkRequest, Errno> {
        let size = a[1];
        if !(CLONE_ARGS_SIZE_VER0..=4096).contains(&size) {
            return Err(Errno::EINVAL);
        }
        let mut raw = [0u8; CLONE_ARGS_SIZE_MAX as usize];
        let n = size.min(CLONE_ARGS_SIZE_MAX) as usize;
        k.mm.read_user(a[0], &mut raw[..n])?;
        if size > CLONE_ARGS_SIZE_MAX {
            // Larger structs are accepted only if the unknown tail is zero.
            let mut tail = vec![0u8; (size - CLONE_ARGS_SIZE_MAX) as usize];
            k.mm.read_user(a[0] + CLONE_ARGS_SIZE_MAX, &mut tail)?;
            if tail.iter().any(|&b| b != 0) {
                return Err(Errno::E2BIG);
            }
        }
        let w = |i: usize| u64::from_le_bytes(raw[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        let (flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls) =
            (w(0), w(1), w(2), w(3), w(4), w(5), w(6), w(7));
        let set_tid_size = if n >= 80 { w(9) } else { 0 };
        if set_tid_size != 0 {
            // Choosing pids (checkpoint/restore) is a privilege.
            return Err(Errno::EPERM);
        }
        if flags & CSIGNAL != 0 || (flags & CLONE_PIDFD != 0 && pidfd == 0) {
            return Err(Errno::EINVAL);
        }
        if (stack == 0) != (stack_size == 0) {
            return Err(Errno::EINVAL);
        }
        let top = if stack != 0 { stack.checked_add(stack_size).ok_or(Errno::EINVAL)? } else { 0 };
        request(k, flags, exit_signal, top, (tls, parent_tid, child_tid))
    })();
    fork_or_err(r)
}
