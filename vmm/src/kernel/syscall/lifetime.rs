//! The program's lifetime: exit, waiting for children, execve.

use super::super::children::{Reaped, Which};
use super::super::errno::{Errno, SysResult};
use super::super::exec;
use super::super::setup::{comm_name, random16};
use super::super::signal::Signal;
use super::super::Kernel;
use super::Sys;
use crate::arch::x86_64::layout::{USER_END, USER_MIN};

pub fn exit(_k: &mut Kernel, a: &[u64; 6]) -> Sys {
    Sys::Exit((a[0] & 0xff) as i32)
}

/// exit: the calling thread ends; the process with its last thread.
pub fn exit_thread(k: &mut Kernel, a: &[u64; 6]) -> Sys {
    if k.sched.others.is_empty() {
        return exit(k, a);
    }
    Sys::ThreadExit((a[0] & 0xff) as i32)
}

const WNOHANG: u64 = 1;
const WUNTRACED: u64 = 2;
const WEXITED: u64 = 4;
const WCONTINUED: u64 = 8;
const WNOWAIT: u64 = 0x0100_0000;
const WNOTHREAD: u64 = 0x2000_0000;
const WALL: u64 = 0x4000_0000;
const WCLONE: u64 = 0x8000_0000;
const RUSAGE_SIZE: usize = 144;

/// Waits for a child as the leader did: the leader waits and records which
/// child it reaped; a follower takes that, then reaps its own matching
/// child (whose stream made sure it ended alike).
fn wait_common(k: &mut Kernel, which: Which, block: bool, keep: bool) -> SysResult<Option<Reaped>> {
    let mut out = [0u8; 8];
    let pid = k.host_call(true, &mut out, |k, out| match k.wait_child(which, block, keep)? {
        None => Ok(0),
        Some(r) => {
            out[..4].copy_from_slice(&r.pid.to_le_bytes());
            out[4..].copy_from_slice(&r.wait_status.to_le_bytes());
            Ok(r.pid as u64)
        }
    })?;
    if pid == 0 {
        return Ok(None);
    }
    if k.is_follower() {
        k.reap_as_leader_did(pid as u32, keep);
    }
    Ok(Some(Reaped { pid: pid as u32, wait_status: i32::from_le_bytes(out[4..].try_into().expect("4 bytes")) }))
}

/// The children a wait4 or waitid call (`nr`, `a`) would block for: None
/// when it would not block (WNOHANG, stopped children only, a bad argument
/// the call itself refuses).
pub(crate) fn blocking_wait_target(k: &Kernel, nr: u64, a: &[u64; 6]) -> Option<Which> {
    match nr as i64 {
        libc::SYS_wait4 if a[2] & WNOHANG == 0 && a[0] as u32 as i32 != i32::MIN => {
            Some(which_of(k, a[0] as u32 as i32))
        }
        libc::SYS_waitid if a[3] & WNOHANG == 0 && a[3] & WEXITED != 0 => match a[0] {
            0 => Some(Which::Any),
            1 if a[1] as i32 > 0 => Some(Which::Pid(a[1] as u32)),
            2 if a[1] as i32 >= 0 => Some(which_of(k, -(a[1] as i32))),
            _ => None,
        },
        _ => None,
    }
}

fn which_of(k: &Kernel, pid: i32) -> Which {
    match pid {
        -1 => Which::Any,
        0 => Which::Group(k.procs.get(k.task.tg.pid).map_or(k.task.tg.pid, |p| p.pgid)),
        p if p < -1 => Which::Group((-p) as u32),
        p => Which::Pid(p as u32),
    }
}

/// wait4(pid, wstatus, options, rusage).
pub fn wait4(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let options = a[2];
    if options & !(WNOHANG | WUNTRACED | WCONTINUED | WNOTHREAD | WALL | WCLONE) != 0 {
        return Err(Errno::EINVAL);
    }
    if a[0] as u32 as i32 == i32::MIN {
        return Err(Errno::ESRCH);
    }
    let which = which_of(k, a[0] as u32 as i32);
    let Some(r) = wait_common(k, which, options & WNOHANG == 0, false)? else { return Ok(0) };
    if a[1] != 0 {
        k.mm.write_val(a[1], &r.wait_status)?;
    }
    if a[3] != 0 {
        k.mm.write_user(a[3], &[0u8; RUSAGE_SIZE])?;
    }
    Ok(r.pid as u64)
}

/// waitid(idtype, id, infop, options, rusage).
pub fn waitid(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    const P_ALL: u64 = 0;
    const P_PID: u64 = 1;
    const P_PGID: u64 = 2;
    let options = a[3];
    if options & !(WNOHANG | WUNTRACED | WEXITED | WCONTINUED | WNOWAIT | WNOTHREAD | WALL | WCLONE) != 0
        || options & (WEXITED | WUNTRACED | WCONTINUED) == 0
    {
        return Err(Errno::EINVAL);
    }
    let which = match a[0] {
        P_ALL => Which::Any,
        P_PID if a[1] as i32 > 0 => Which::Pid(a[1] as u32),
        P_PGID if a[1] as i32 >= 0 => which_of(k, -(a[1] as i32)),
        _ => return Err(Errno::EINVAL),
    };
    if options & WEXITED == 0 {
        // Stopped and continued children are not tracked: nothing to report.
        return if options & WNOHANG != 0 { Ok(0) } else { Err(Errno::ECHILD) };
    }
    let found = wait_common(k, which, options & WNOHANG == 0, options & WNOWAIT != 0)?;
    if a[2] != 0 {
        let mut info = [0u8; 128];
        if let Some(r) = found {
            let (code, status) = if r.wait_status & 0x7f == 0 {
                (1i32, (r.wait_status >> 8) & 0xff) // CLD_EXITED
            } else if r.wait_status & 0x80 != 0 {
                (3, r.wait_status & 0x7f) // CLD_DUMPED
            } else {
                (2, r.wait_status & 0x7f) // CLD_KILLED
            };
            let uid = k.tg().creds.uid;
            info[0..4].copy_from_slice(&libc::SIGCHLD.to_le_bytes());
            info[8..12].copy_from_slice(&code.to_le_bytes());
            info[16..20].copy_from_slice(&r.pid.to_le_bytes());
            info[20..24].copy_from_slice(&uid.to_le_bytes());
            info[24..28].copy_from_slice(&status.to_le_bytes());
        }
        k.mm.write_user(a[2], &info)?;
    }
    if a[4] != 0 {
        k.mm.write_user(a[4], &[0u8; RUSAGE_SIZE])?;
    }
    Ok(0)
}

/// Reads a NULL-terminated array of string pointers.
fn string_array(k: &mut Kernel, va: u64) -> SysResult<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    if va == 0 {
        return Ok(out);
    }
    let mut total = 0usize;
    for i in 0.. {
        let ptr: u64 = k.mm.read_val(va.checked_add(i * 8).ok_or(Errno::EFAULT)?)?;
        if ptr == 0 {
            break;
        }
        let s = k.mm.read_cstr(ptr, 128 * 1024).map_err(|e| if e == Errno::ENAMETOOLONG { Errno::E2BIG } else { e })?;
        total += s.len() + 1 + 8;
        if total > 2 << 20 {
            return Err(Errno::E2BIG);
        }
        out.push(s);
    }
    Ok(out)
}

fn do_execve(k: &mut Kernel, path: Vec<u8>, argv_va: u64, envp_va: u64) -> Sys {
    let r = (|| -> Result<Box<kvm_bindings::kvm_regs>, Errno> {
        let mut argv = string_array(k, argv_va)?;
        if let Some(m) = k.monitor.as_ref() {
            // A follower's temporaries in the arguments are the leader's.
            argv.iter_mut().for_each(|a| m.names.rewrite(a));
        }
        let envp = string_array(k, envp_va)?;
        let path = if path == b"/proc/self/exe" { k.tg().exe.clone() } else { path };
        let cwd = k.cwd();
        let prepared = exec::prepare(&k.sandbox, &cwd, &path, argv, &envp).map_err(|e| e.errno())?;
        // Point of no return: the old image goes.
        k.mm.unmap(USER_MIN, USER_END);
        k.fds().close_on_exec();
        k.tg().sighand.reset_on_exec();
        k.tg().timers.clear();
        k.task.sig.reset_on_exec();
        k.tg().name = comm_name(&path);
        let creds = k.tg().creds.clone();
        // A new image gets a new layout, as on Linux.
        k.mm.layout = k.mm.layout.next();
        match exec::load(&mut k.mm, prepared, &envp, &creds, random16()) {
            Ok(loaded) => {
                k.placed(&loaded.placed);
                k.tg().exe = loaded.exe;
                // A vfork parent resumes once its child runs a program of its own.
                k.vfork_done = None;
                Ok(Box::new(loaded.regs))
            }
            Err(e) => {
                k.fatal = Some(format!("execve failed after the old program was gone: {e}"));
                Err(Errno::ENOEXEC)
            }
        }
    })();
    match r {
        Ok(regs) => Sys::Exec(regs),
        Err(_) if k.fatal.is_some() => Sys::Kill(Signal::SIGKILL, k.fatal.take().unwrap_or_default()),
        Err(e) => Err::<u64, _>(e).into(),
    }
}

pub fn execve(k: &mut Kernel, a: &[u64; 6]) -> Sys {
    match k.path_arg(a[0]) {
        Ok(path) => do_execve(k, path, a[1], a[2]),
        Err(e) => Err::<u64, _>(e).into(),
    }
}

pub fn execveat(k: &mut Kernel, a: &[u64; 6]) -> Sys {
    const AT_EMPTY_PATH: u64 = 0x1000;
    const AT_SYMLINK_NOFOLLOW: u64 = 0x100;
    if a[4] & !(AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0 {
        return Err::<u64, _>(Errno::EINVAL).into();
    }
    let path = match k.path_arg(a[1]) {
        Ok(p) => p,
        Err(e) => return Err::<u64, _>(e).into(),
    };
    if path.is_empty() || a[4] & AT_EMPTY_PATH != 0 {
        // execveat(fd, "", ..., AT_EMPTY_PATH) runs the file behind fd.
        return Err::<u64, _>(Errno::ENOSYS).into();
    }
    let full = if path[0] == b'/' || a[0] as u32 as i32 == -100 {
        path
    } else {
        let dir = match k.fds().file(a[0] as u32 as u64) {
            Ok(f) => k.sandbox.guest_path(f.raw()),
            Err(e) => return Err::<u64, _>(e).into(),
        };
        let mut d = dir;
        if !d.ends_with(b"/") {
            d.push(b'/');
        }
        d.extend_from_slice(&path);
        d
    };
    do_execve(k, full, a[2], a[3])
}
