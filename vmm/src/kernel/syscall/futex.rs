//! Futexes, sleeps and yields of threads, and the thread-exit bookkeeping
//! glibc registers (clear-tid address, robust list). A thread that waits is
//! parked (`kernel::sched`) while the others run; with one thread, a wait
//! blocks the VMM as the call would block the program.

use std::time::{Duration, Instant};

use super::super::errno::{Errno, SysResult};
use super::super::sched::{Wait, BITSET_ALL};
use super::super::Kernel;
use super::Sys;

pub fn set_tid_address(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    k.task.clear_child_tid = a[0];
    Ok(k.task.tid as u64)
}

pub fn set_robust_list(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    if a[1] != 24 {
        return Err(Errno::EINVAL);
    }
    k.task.robust_list = (a[0], a[1]);
    Ok(0)
}

pub fn get_robust_list(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let tid = a[0] as u32;
    let (head, len) = if tid == 0 || tid == k.task.tid {
        k.task.robust_list
    } else {
        let i = k.sched.find(tid).ok_or(Errno::ESRCH)?;
        k.sched.others[i].task.robust_list
    };
    k.mm.write_val(a[1], &head)?;
    k.mm.write_val(a[2], &len)?;
    Ok(0)
}

pub fn gettid(k: &mut Kernel, _a: &[u64; 6]) -> SysResult {
    Ok(k.task.tid as u64)
}

/// sched_yield: the next runnable thread runs; the caller continues after it.
pub fn sched_yield(k: &mut Kernel, _a: &[u64; 6]) -> Sys {
    if k.sched.any_runnable() {
        k.sched.yield_due = true;
    }
    Sys::Ret(0)
}

/// membarrier: the threads take turns on one vCPU, so every barrier holds.
pub fn membarrier(_k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    const QUERY: u64 = 0;
    const GLOBAL: u64 = 1;
    const PRIVATE_EXPEDITED: u64 = 8;
    const REGISTER_PRIVATE_EXPEDITED: u64 = 16;
    match a[0] {
        QUERY => Ok(GLOBAL | PRIVATE_EXPEDITED | REGISTER_PRIVATE_EXPEDITED),
        GLOBAL | PRIVATE_EXPEDITED | REGISTER_PRIVATE_EXPEDITED if a[1] == 0 => Ok(0),
        _ => Err(Errno::EINVAL),
    }
}

/// A timespec argument, validated.
fn timespec(k: &mut Kernel, va: u64) -> SysResult<Duration> {
    let ts: libc::timespec = k.mm.read_val(va)?;
    if ts.tv_sec < 0 || !(0..1_000_000_000).contains(&ts.tv_nsec) {
        return Err(Errno::EINVAL);
    }
    Ok(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

/// The instant at which an absolute time `at` on `clock` is reached.
fn deadline_of(clock: libc::clockid_t, at: Duration) -> Instant {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: now is a valid out-parameter.
    unsafe { libc::clock_gettime(clock, &mut now) };
    let now = Duration::new(now.tv_sec.max(0) as u64, now.tv_nsec.clamp(0, 999_999_999) as u32);
    Instant::now() + at.saturating_sub(now)
}

/// A relative time from now, as an instant (far ones are capped).
fn after(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d).unwrap_or(now + Duration::from_secs(1 << 32))
}

pub fn nanosleep(k: &mut Kernel, a: &[u64; 6]) -> Sys {
    if k.sched.others.is_empty() {
        return super::time::nanosleep(k, a).into();
    }
    match timespec(k, a[0]) {
        Ok(d) => Sys::Block(Wait::Sleep { deadline: after(d) }),
        Err(e) => Err::<u64, _>(e).into(),
    }
}

pub fn clock_nanosleep(k: &mut Kernel, a: &[u64; 6]) -> Sys {
    if k.sched.others.is_empty() {
        return super::time::clock_nanosleep(k, a).into();
    }
    let clock = a[0] as libc::clockid_t;
    if ![libc::CLOCK_REALTIME, libc::CLOCK_MONOTONIC, libc::CLOCK_BOOTTIME].contains(&clock) {
        return super::time::clock_nanosleep(k, a).into();
    }
    if a[1] as i32 & !libc::TIMER_ABSTIME != 0 {
        return Err::<u64, _>(Errno::EINVAL).into();
    }
    match timespec(k, a[2]) {
        Ok(d) if a[1] as i32 & libc::TIMER_ABSTIME != 0 => Sys::Block(Wait::Sleep { deadline: deadline_of(clock, d) }),
        Ok(d) => Sys::Block(Wait::Sleep { deadline: after(d) }),
        Err(e) => Err::<u64, _>(e).into(),
    }
}

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
/// The owner died (robust futexes) and the tid bits of a futex word.
const FUTEX_OWNER_DIED: u32 = 0x4000_0000;
const FUTEX_WAITERS: u32 = 0x8000_0000;
const FUTEX_TID_MASK: u32 = 0x3fff_ffff;

/// futex(uaddr, op, val, timeout or val2, uaddr2, val3). Waiters are
/// parked threads of this process, keyed by address (one address space).
pub fn futex(k: &mut Kernel, a: &[u64; 6]) -> Sys {
    match futex_op(k, a) {
        Ok(Some(w)) => Sys::Block(w),
        Ok(None) => Sys::Ret(0),
        Err(Ok(v)) => Sys::Ret(v),
        Err(Err(e)) => Err::<u64, _>(e).into(),
    }
}

/// Ok(Some): the caller waits; Err(Ok(v)): the call returns v at once.
fn futex_op(k: &mut Kernel, a: &[u64; 6]) -> Result<Option<Wait>, SysResult> {
    let (uaddr, op, val) = (a[0], a[1] & 0x7f, a[2] as u32);
    if !uaddr.is_multiple_of(4) {
        return Err(Err(Errno::EINVAL));
    }
    let read = |k: &mut Kernel, va: u64| k.mm.read_val::<u32>(va).map_err(Err);
    match op {
        FUTEX_WAIT | FUTEX_WAIT_BITSET => {
            let bitset = if op == FUTEX_WAIT { BITSET_ALL } else { a[5] as u32 };
            if bitset == 0 {
                return Err(Err(Errno::EINVAL));
            }
            let timeout = if a[3] != 0 { Some(timespec(k, a[3]).map_err(Err)?) } else { None };
            if read(k, uaddr)? != val {
                return Err(Err(Errno::EAGAIN));
            }
            let deadline = timeout.map(|d| {
                if op == FUTEX_WAIT {
                    after(d)
                } else if a[1] & FUTEX_CLOCK_REALTIME != 0 {
                    deadline_of(libc::CLOCK_REALTIME, d)
                } else {
                    deadline_of(libc::CLOCK_MONOTONIC, d)
                }
            });
            if k.sched.others.is_empty() {
                return Err(alone_wait(k, deadline));
            }
            Ok(Some(Wait::Futex { addr: uaddr, bitset, deadline }))
        }
        FUTEX_WAKE | FUTEX_WAKE_BITSET => {
            let bits = if op == FUTEX_WAKE { BITSET_ALL } else { a[5] as u32 };
            if bits == 0 {
                return Err(Err(Errno::EINVAL));
            }
            read(k, uaddr)?;
            Err(Ok(k.sched.wake(uaddr, bits, val) as u64))
        }
        FUTEX_REQUEUE | FUTEX_CMP_REQUEUE => {
            let (uaddr2, val2) = (a[4], a[3] as u32);
            if !uaddr2.is_multiple_of(4) || (val as i32) < 0 || (val2 as i32) < 0 {
                return Err(Err(Errno::EINVAL));
            }
            let cur = read(k, uaddr)?;
            if op == FUTEX_CMP_REQUEUE && cur != a[5] as u32 {
                return Err(Err(Errno::EAGAIN));
            }
            Err(Ok(k.sched.requeue(uaddr, uaddr2, val, val2) as u64))
        }
        FUTEX_WAKE_OP => {
            let (uaddr2, encoded) = (a[4], a[5] as u32);
            if !uaddr2.is_multiple_of(4) {
                return Err(Err(Errno::EINVAL));
            }
            let old = read(k, uaddr2)?;
            let (o, cmp) = (encoded >> 28, (encoded >> 24) & 0xf);
            let mut oparg = (encoded >> 12) & 0xfff;
            let cmparg = encoded & 0xfff;
            if o & 8 != 0 {
                oparg = 1u32.checked_shl(oparg).unwrap_or(0);
            }
            let new = match o & 7 {
                0 => oparg,
                1 => old.wrapping_add(oparg),
                2 => old | oparg,
                3 => old & !oparg,
                4 => old ^ oparg,
                _ => return Err(Err(Errno::ENOSYS)),
            };
            let hit = match cmp {
                0 => old == cmparg,
                1 => old != cmparg,
                2 => (old as i32) < cmparg as i32,
                3 => (old as i32) <= cmparg as i32,
                4 => (old as i32) > cmparg as i32,
                5 => (old as i32) >= cmparg as i32,
                _ => return Err(Err(Errno::ENOSYS)),
            };
            k.mm.write_val(uaddr2, &new).map_err(Err)?;
            let mut n = k.sched.wake(uaddr, BITSET_ALL, val);
            if hit {
                n += k.sched.wake(uaddr2, BITSET_ALL, a[3] as u32);
            }
            Err(Ok(n as u64))
        }
        FUTEX_LOCK_PI | FUTEX_TRYLOCK_PI => {
            let cur = read(k, uaddr)?;
            let tid = k.task.tid;
            if cur & FUTEX_TID_MASK == 0 {
                k.mm.write_val(uaddr, &(tid | (cur & FUTEX_OWNER_DIED))).map_err(Err)?;
                return Err(Ok(0));
            }
            if cur & FUTEX_TID_MASK == tid {
                return Err(Err(Errno::EDEADLK));
            }
            if op == FUTEX_TRYLOCK_PI || k.sched.others.is_empty() {
                return Err(Err(if op == FUTEX_TRYLOCK_PI { Errno::EAGAIN } else { Errno::EDEADLK }));
            }
            // Contended: wait for the owner's unlock, then try again (the
            // call restarts: see `kernel::threads`).
            k.mm.write_val(uaddr, &(cur | FUTEX_WAITERS)).map_err(Err)?;
            k.sched.retry_call = true;
            Ok(Some(Wait::Futex { addr: uaddr, bitset: BITSET_ALL, deadline: None }))
        }
        FUTEX_UNLOCK_PI => {
            let cur = read(k, uaddr)?;
            if cur & FUTEX_TID_MASK != k.task.tid {
                return Err(Err(Errno::EPERM));
            }
            k.mm.write_val(uaddr, &0u32).map_err(Err)?;
            k.sched.wake(uaddr, BITSET_ALL, 1);
            Err(Ok(0))
        }
        _ => Err(Err(Errno::ENOSYS)),
    }
}

/// A wait of the only thread: nobody else can wake it, so only a signal or
/// the deadline ends it.
fn alone_wait(k: &mut Kernel, deadline: Option<Instant>) -> SysResult {
    let Some(d) = deadline else {
        return k.host_call(false, &mut [], |k, _| Err(k.wait_for_signal(None)));
    };
    // As a sleep: the leader waits and its result is every variant's (a
    // follower's own clock and host signals must not decide it), and a host
    // signal that is not for the program (a time slice's) does not end it.
    k.host_call(false, &mut [], |k, _| {
        if !k.settle_before_blocking() {
            return Err(Errno::EINTR);
        }
        loop {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Errno::ETIMEDOUT);
            }
            let ts = libc::timespec { tv_sec: left.as_secs() as i64, tv_nsec: left.subsec_nanos() as i64 };
            // SAFETY: ts is a valid timespec; no remainder wanted.
            let r = unsafe { libc::clock_nanosleep(libc::CLOCK_MONOTONIC, 0, &ts, std::ptr::null_mut()) };
            if r != libc::EINTR {
                return Err(Errno::ETIMEDOUT);
            }
            if crate::kernel::signal::host::pending() {
                k.collect_host_signals();
                return Err(Errno::EINTR);
            }
        }
    })
}

/// A thread ends: its robust futexes are marked as their owner died (one
/// waiter of each woken), its clear-tid word is zeroed and one waiter on it
/// woken (pthread_join).
pub fn thread_exit_cleanup(k: &mut Kernel) {
    let tid = k.task.tid;
    let (head, len) = k.task.robust_list;
    if head != 0 && len == 24 {
        robust_cleanup(k, head, tid);
    }
    let ctid = std::mem::take(&mut k.task.clear_child_tid);
    if ctid != 0 && ctid.is_multiple_of(4) && k.mm.write_val(ctid, &0u32).is_ok() {
        k.sched.wake(ctid, BITSET_ALL, 1);
    }
}

/// Walks the robust list at `head` (struct robust_list_head: next,
/// futex_offset, list_op_pending), bounded as Linux bounds it.
fn robust_cleanup(k: &mut Kernel, head: u64, tid: u32) {
    const MAX_ENTRIES: usize = 2048;
    let Ok(mut entry) = k.mm.read_val::<u64>(head) else { return };
    let Ok(offset) = k.mm.read_val::<i64>(head + 8) else { return };
    let pending = k.mm.read_val::<u64>(head + 16).unwrap_or(0);
    let mut n = 0;
    while entry != head && entry != 0 && n < MAX_ENTRIES {
        let next = k.mm.read_val::<u64>(entry).unwrap_or(0);
        if entry != pending {
            owner_died(k, entry.wrapping_add(offset as u64), tid);
        }
        entry = next;
        n += 1;
    }
    if pending != 0 {
        owner_died(k, pending.wrapping_add(offset as u64), tid);
    }
}

fn owner_died(k: &mut Kernel, word: u64, tid: u32) {
    if !word.is_multiple_of(4) {
        return;
    }
    let Ok(v) = k.mm.read_val::<u32>(word) else { return };
    if v & FUTEX_TID_MASK != tid {
        return;
    }
    let new = (v & FUTEX_WAITERS) | FUTEX_OWNER_DIED;
    if k.mm.write_val(word, &new).is_ok() && v & FUTEX_WAITERS != 0 {
        k.sched.wake(word, BITSET_ALL, 1);
    }
}
