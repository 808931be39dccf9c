//! Signal dispositions, masks, handler return and signals sent by the program.

use super::super::errno::{Errno, SysResult};
use super::super::signal::{SigAction, SigInfo, Signal, StackT, SI_TKILL, SI_USER};
use super::super::Kernel;
use super::Sys;

pub fn rt_sigaction(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    if a[3] != 8 {
        return Err(Errno::EINVAL);
    }
    let new = if a[1] != 0 { Some(k.mm.read_val::<SigAction>(a[1])?) } else { None };
    let old = k.tg().sighand.set_action(a[0], new)?;
    if a[2] != 0 {
        k.mm.write_val(a[2], &old)?;
    }
    Ok(0)
}

pub fn rt_sigprocmask(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    if a[3] != 8 {
        return Err(Errno::EINVAL);
    }
    let set = if a[1] != 0 { Some(k.mm.read_val::<u64>(a[1])?) } else { None };
    let old = k.task.sig.change_mask(a[0], set)?;
    if a[2] != 0 {
        k.mm.write_val(a[2], &old)?;
    }
    Ok(0)
}

pub fn rt_sigreturn(k: &mut Kernel, _a: &[u64; 6]) -> Sys {
    match k.sigreturn(k.task.entry_rsp) {
        Ok(regs) => Sys::Restore(Box::new(regs)),
        Err(why) => Sys::Kill(Signal::SIGSEGV, why),
    }
}

pub fn pause(k: &mut Kernel, _a: &[u64; 6]) -> SysResult {
    k.host_call(false, &mut [], |k, _| Err(k.wait_for_signal(None)))
}

pub fn rt_sigsuspend(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let mask = k.sigmask_arg(a[0], a[1])?.ok_or(Errno::EFAULT)?;
    let r = k.host_call(false, &mut [], |k, _| Err(k.wait_for_signal(Some(mask))));
    if k.op_mode(false) == crate::monitor::OpMode::Replay {
        // Replayed: the mask the leader waited with applies to the delivery.
        k.task.saved_mask = Some(k.task.sig.mask);
        k.task.sig.mask = mask & !super::super::signal::UNBLOCKABLE;
    }
    r
}

pub fn rt_sigpending(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    if a[1] != 8 {
        return Err(Errno::EINVAL);
    }
    k.collect_host_signals();
    let v = k.task.sig.pending & k.task.sig.mask;
    k.mm.write_val(a[0], &v).map(|_| 0)
}

pub fn sigaltstack(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let new = if a[0] != 0 { Some(k.mm.read_val::<StackT>(a[0])?) } else { None };
    let old = k.task.sig.set_altstack(new)?;
    if a[1] != 0 {
        k.mm.write_val(a[1], &old)?;
    }
    Ok(0)
}

/// A signal the program sends itself: pending, delivered (or acted on by
/// its default) before the program continues.
fn raise(k: &mut Kernel, sig: u64, code: i32) -> Sys {
    if sig == 0 {
        return Sys::Ret(0);
    }
    if !Signal::valid(sig) {
        return Err::<u64, _>(Errno::EINVAL).into();
    }
    let s = Signal(sig as i32);
    if !k.tg().sighand.ignored(s) {
        k.task.sig.raise(s, SigInfo { code, ..Default::default() });
    }
    Sys::Ret(0)
}

fn is_self(k: &Kernel, pid: u64) -> bool {
    let pid = pid as u32 as i32;
    pid == 0 || pid == -1 || pid == k.task.tg.pid as i32 || pid == -(k.task.tg.pid as i32)
}

pub fn kill(k: &mut Kernel, a: &[u64; 6]) -> Sys {
    if !is_self(k, a[0]) {
        return Err::<u64, _>(Errno::ESRCH).into();
    }
    raise(k, a[1], SI_USER)
}

pub fn tkill(k: &mut Kernel, a: &[u64; 6]) -> Sys {
    if a[0] as u32 != k.task.tg.pid {
        return Err::<u64, _>(Errno::ESRCH).into();
    }
    raise(k, a[1], SI_TKILL)
}

pub fn tgkill(k: &mut Kernel, a: &[u64; 6]) -> Sys {
    if a[0] as u32 != k.task.tg.pid || a[1] as u32 != k.task.tg.pid {
        return Err::<u64, _>(Errno::ESRCH).into();
    }
    raise(k, a[2], SI_TKILL)
}
