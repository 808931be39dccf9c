//! Signal dispositions, masks, handler return and signals sent by the program.

use super::super::errno::{Errno, SysResult};
use super::super::proc_table::{Proc, State, INIT_PID};
use super::super::signal::host;
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
        let from = k.task.tg.pid as u64 | (k.tg().creds.uid as u64) << 32;
        let info = SigInfo { code, addr: from, ..Default::default() };
        if code == SI_TKILL {
            k.task.sig.raise(s, info);
        } else {
            // Process-directed: a thread that does not block it takes it.
            k.raise_in_process(s, info);
        }
    }
    Sys::Ret(0)
}

/// Sends `sig` to the other processes `targets` (alive or zombies) from
/// this one. The leader sends; followers take the leader's result, and the
/// targets' streams deliver the signal at the same point in every variant.
fn send_to(k: &mut Kernel, targets: &[Proc], sig: u64) -> SysResult {
    let me = k.task.tg.pid;
    k.host_call(true, &mut [], |_, _| {
        for t in targets.iter().filter(|t| t.state == State::Alive && sig != 0) {
            if let Err(e) = host::send_guest_signal(t.host_pid, sig as i32, me) {
                // The VMM ended meanwhile: as if it were a zombie already.
                if e.raw_os_error() != Some(libc::ESRCH) {
                    return Err(Errno(e.raw_os_error().unwrap_or(libc::EIO)));
                }
            }
        }
        Ok(0)
    })
}

/// kill: one process, a process group (0: the caller's; -pgid), or every
/// process (-1) but init and the caller.
pub fn kill(k: &mut Kernel, a: &[u64; 6]) -> Sys {
    let pid = a[0] as u32 as i32;
    let sig = a[1];
    if sig != 0 && !Signal::valid(sig) {
        return Err::<u64, _>(Errno::EINVAL).into();
    }
    let me = k.task.tg.pid;
    if pid == me as i32 {
        return raise(k, sig, SI_USER);
    }
    let my_pgid = k.procs.get(me).map_or(me, |p| p.pgid);
    let (targets, includes_me): (Vec<Proc>, bool) = match pid {
        -1 => (k.procs.select(|p| p.pid != me && p.pid != INIT_PID), false),
        0 => (k.procs.select(|p| p.pgid == my_pgid && p.pid != me), true),
        p if p < -1 => {
            let g = (-p) as u32;
            (k.procs.select(|q| q.pgid == g && q.pid != me), g == my_pgid)
        }
        p => (k.procs.select(|q| q.pid == p as u32), false),
    };
    if targets.is_empty() && !includes_me {
        return Err::<u64, _>(Errno::ESRCH).into();
    }
    if let Err(e) = send_to(k, &targets, sig) {
        return Err::<u64, _>(e).into();
    }
    if includes_me {
        return raise(k, sig, SI_USER);
    }
    Sys::Ret(0)
}

/// tkill and tgkill: one thread (today every process has one, its pid).
fn thread_kill(k: &mut Kernel, tgid: Option<u32>, tid: u32, sig: u64) -> Sys {
    if tid as i32 <= 0 || tgid.is_some_and(|g| g as i32 <= 0) {
        return Err::<u64, _>(Errno::EINVAL).into();
    }
    if sig != 0 && !Signal::valid(sig) {
        return Err::<u64, _>(Errno::EINVAL).into();
    }
    if tid == k.task.tid && tgid.is_none_or(|g| g == k.task.tg.pid) {
        return raise(k, sig, SI_TKILL);
    }
    if let Some(i) = k.sched.find(tid).filter(|_| tgid.is_none_or(|g| g == k.task.tg.pid)) {
        // Another thread of this process (pthread_kill, pthread_cancel).
        if sig != 0 && Signal::valid(sig) && !k.tg().sighand.ignored(Signal(sig as i32)) {
            let from = k.task.tg.pid as u64 | (k.tg().creds.uid as u64) << 32;
            k.signal_parked(i, Signal(sig as i32), SigInfo { code: SI_TKILL, addr: from, ..Default::default() });
        }
        return Sys::Ret(0);
    }
    let targets = k.procs.select(|p| p.pid == tid && tgid.is_none_or(|g| g == p.pid));
    if targets.is_empty() {
        return Err::<u64, _>(Errno::ESRCH).into();
    }
    send_to(k, &targets, sig).into()
}

pub fn tkill(k: &mut Kernel, a: &[u64; 6]) -> Sys {
    thread_kill(k, None, a[0] as u32, a[1])
}

pub fn tgkill(k: &mut Kernel, a: &[u64; 6]) -> Sys {
    thread_kill(k, Some(a[0] as u32), a[1] as u32, a[2])
}
