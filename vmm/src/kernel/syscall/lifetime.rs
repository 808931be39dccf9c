//! The program's lifetime: exit, waiting for children, execve.

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

pub fn wait4(_k: &mut Kernel, _a: &[u64; 6]) -> SysResult {
    Err(Errno::ECHILD)
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
        let argv = string_array(k, argv_va)?;
        let envp = string_array(k, envp_va)?;
        let path = if path == b"/proc/self/exe" { k.tg().exe.clone() } else { path };
        let cwd = k.cwd();
        let prepared = exec::prepare(&k.sandbox, &cwd, &path, argv, &envp).map_err(|e| e.errno())?;
        // Point of no return: the old image goes.
        k.mm.unmap(USER_MIN, USER_END);
        k.fds().close_on_exec();
        k.tg().sighand.reset_on_exec();
        k.tg().name = comm_name(&path);
        let creds = k.tg().creds.clone();
        // A new image gets a new layout, as on Linux.
        k.mm.layout = k.mm.layout.next();
        match exec::load(&mut k.mm, prepared, &envp, &creds, random16()) {
            Ok(loaded) => {
                k.placed(&loaded.placed);
                k.tg().exe = loaded.exe;
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
