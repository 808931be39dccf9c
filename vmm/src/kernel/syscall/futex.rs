//! Futexes and the thread-exit bookkeeping glibc registers (clear-tid
//! address, robust list).

use super::super::errno::{Errno, SysResult};
use super::super::Kernel;

pub fn set_tid_address(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    k.task.clear_child_tid = a[0];
    Ok(k.task.tg.pid as u64)
}

pub fn set_robust_list(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    if a[1] != 24 {
        return Err(Errno::EINVAL);
    }
    k.task.robust_list = (a[0], a[1]);
    Ok(0)
}

pub fn get_robust_list(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    if a[0] as u32 != 0 && a[0] as u32 != k.task.tg.pid {
        return Err(Errno::ESRCH);
    }
    let (head, len) = k.task.robust_list;
    k.mm.write_val(a[1], &head)?;
    k.mm.write_val(a[2], &len)?;
    Ok(0)
}

/// futex with one thread: nobody else can wake a waiter, so a wait either
/// fails at once, times out, or would block forever.
pub fn futex(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    const FUTEX_WAIT: u64 = 0;
    const FUTEX_WAKE: u64 = 1;
    const FUTEX_REQUEUE: u64 = 3;
    const FUTEX_CMP_REQUEUE: u64 = 4;
    const FUTEX_WAKE_OP: u64 = 5;
    const FUTEX_LOCK_PI: u64 = 6;
    const FUTEX_UNLOCK_PI: u64 = 7;
    const FUTEX_TRYLOCK_PI: u64 = 8;
    const FUTEX_WAIT_BITSET: u64 = 9;
    const FUTEX_WAKE_BITSET: u64 = 10;
    const FUTEX_CLOCK_REALTIME: u64 = 256;
    let (uaddr, op, val) = (a[0], a[1] & 0x7f, a[2] as u32);
    if uaddr % 4 != 0 {
        return Err(Errno::EINVAL);
    }
    match op {
        FUTEX_WAIT | FUTEX_WAIT_BITSET => {
            let cur: u32 = k.mm.read_val(uaddr)?;
            if cur != val {
                return Err(Errno::EAGAIN);
            }
            if a[3] == 0 {
                // Nobody else can wake it: only a signal ends this wait.
                return k.host_call(false, &mut [], |k, _| Err(k.wait_for_signal(None)));
            }
            let ts: libc::timespec = k.mm.read_val(a[3])?;
            if ts.tv_sec < 0 || !(0..1_000_000_000).contains(&ts.tv_nsec) {
                return Err(Errno::EINVAL);
            }
            let (clock, flags) = if op == FUTEX_WAIT {
                (libc::CLOCK_MONOTONIC, 0)
            } else if a[1] & FUTEX_CLOCK_REALTIME != 0 {
                (libc::CLOCK_REALTIME, libc::TIMER_ABSTIME)
            } else {
                (libc::CLOCK_MONOTONIC, libc::TIMER_ABSTIME)
            };
            // SAFETY: ts is a valid timespec; no remainder wanted.
            let r = unsafe { libc::clock_nanosleep(clock, flags, &ts, std::ptr::null_mut()) };
            Err(if r == libc::EINTR { Errno::EINTR } else { Errno::ETIMEDOUT })
        }
        FUTEX_WAKE | FUTEX_WAKE_BITSET | FUTEX_REQUEUE => {
            k.mm.read_val::<u32>(uaddr)?;
            Ok(0)
        }
        FUTEX_CMP_REQUEUE => {
            let cur: u32 = k.mm.read_val(uaddr)?;
            if cur != a[5] as u32 {
                return Err(Errno::EAGAIN);
            }
            Ok(0)
        }
        FUTEX_WAKE_OP => {
            let (uaddr2, encoded) = (a[4], a[5] as u32);
            if uaddr2 % 4 != 0 {
                return Err(Errno::EINVAL);
            }
            let old: u32 = k.mm.read_val(uaddr2)?;
            let (o, cmp) = (encoded >> 28, (encoded >> 24) & 0xf);
            let mut oparg = (encoded >> 12) & 0xfff;
            if o & 8 != 0 {
                oparg = 1u32.checked_shl(oparg).unwrap_or(0);
            }
            let new = match o & 7 {
                0 => oparg,
                1 => old.wrapping_add(oparg),
                2 => old | oparg,
                3 => old & !oparg,
                4 => old ^ oparg,
                _ => return Err(Errno::EINVAL),
            };
            if cmp > 5 {
                return Err(Errno::EINVAL);
            }
            k.mm.write_val(uaddr2, &new)?;
            Ok(0)
        }
        FUTEX_LOCK_PI | FUTEX_TRYLOCK_PI => {
            let cur: u32 = k.mm.read_val(uaddr)?;
            if cur & 0x3fff_ffff == 0 {
                k.mm.write_val(uaddr, &(k.task.tg.pid | (cur & 0x4000_0000)))?;
                return Ok(0);
            }
            if cur & 0x3fff_ffff == k.task.tg.pid {
                return Err(Errno::EDEADLK);
            }
            Err(if op == FUTEX_TRYLOCK_PI { Errno::EAGAIN } else { Errno::EDEADLK })
        }
        FUTEX_UNLOCK_PI => {
            let cur: u32 = k.mm.read_val(uaddr)?;
            if cur & 0x3fff_ffff != k.task.tg.pid {
                return Err(Errno::EPERM);
            }
            k.mm.write_val(uaddr, &0u32)?;
            Ok(0)
        }
        _ => Err(Errno::ENOSYS),
    }
}
