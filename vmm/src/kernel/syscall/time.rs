//! Clocks, sleeps, timers and randomness.

use super::super::errno::{check, Errno, SysResult};
use super::super::mm::Pod;
use super::super::Kernel;

fn valid_clock(c: u64) -> SysResult<libc::clockid_t> {
    let c = c as u32 as i32;
    match c {
        libc::CLOCK_REALTIME
        | libc::CLOCK_MONOTONIC
        | libc::CLOCK_PROCESS_CPUTIME_ID
        | libc::CLOCK_THREAD_CPUTIME_ID
        | libc::CLOCK_MONOTONIC_RAW
        | libc::CLOCK_REALTIME_COARSE
        | libc::CLOCK_MONOTONIC_COARSE
        | libc::CLOCK_BOOTTIME => Ok(c),
        _ => Err(Errno::EINVAL),
    }
}

pub fn clock_gettime(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let c = valid_clock(a[0])?;
    let mut ts = [0u8; 16];
    k.host_call(false, &mut ts, |_, out| {
        let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: t is a valid out-parameter.
        check(unsafe { libc::clock_gettime(c, &mut t) } as i64)?;
        out.copy_from_slice(t.as_bytes());
        Ok(0)
    })?;
    k.mm.write_user(a[1], &ts).map(|_| 0)
}

pub fn clock_getres(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let c = valid_clock(a[0])?;
    let mut ts = [0u8; 16];
    k.host_call(false, &mut ts, |_, out| {
        let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: t is a valid out-parameter.
        check(unsafe { libc::clock_getres(c, &mut t) } as i64)?;
        out.copy_from_slice(t.as_bytes());
        Ok(0)
    })?;
    if a[1] != 0 {
        k.mm.write_user(a[1], &ts)?;
    }
    Ok(0)
}

pub fn gettimeofday(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let mut tv = [0u8; 16];
    k.host_call(false, &mut tv, |_, out| {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: ts is a valid out-parameter.
        unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
        out.copy_from_slice(libc::timeval { tv_sec: ts.tv_sec, tv_usec: ts.tv_nsec / 1000 }.as_bytes());
        Ok(0)
    })?;
    if a[0] != 0 {
        k.mm.write_user(a[0], &tv)?;
    }
    if a[1] != 0 {
        k.mm.write_val(a[1], &[0i32; 2])?;
    }
    Ok(0)
}

pub fn time(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let now = k.host_call(false, &mut [], |_, _| {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: ts is a valid out-parameter.
        unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
        Ok(ts.tv_sec as u64)
    })?;
    if a[0] != 0 {
        k.mm.write_val(a[0], &(now as i64))?;
    }
    Ok(now)
}

fn sleep(k: &mut Kernel, clock: libc::clockid_t, flags: i32, req_va: u64, rem_va: u64) -> SysResult {
    let req: libc::timespec = k.mm.read_val(req_va)?;
    if req.tv_sec < 0 || !(0..1_000_000_000).contains(&req.tv_nsec) {
        return Err(Errno::EINVAL);
    }
    let mut rem = [0u8; 16];
    let r = k.host_call(false, &mut rem, |k, out| {
        if !k.settle_before_blocking() {
            return Err(Errno::EINTR);
        }
        let mut left = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: req and left are valid timespecs.
        let r = unsafe { libc::clock_nanosleep(clock, flags, &req, &mut left) };
        out.copy_from_slice(left.as_bytes());
        if r != 0 {
            k.collect_host_signals();
            return Err(Errno(r));
        }
        Ok(0)
    });
    if r == Err(Errno::EINTR) && rem_va != 0 && flags & libc::TIMER_ABSTIME == 0 {
        k.mm.write_user(rem_va, &rem)?;
    }
    r
}

pub fn nanosleep(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    sleep(k, libc::CLOCK_MONOTONIC, 0, a[0], a[1])
}

pub fn clock_nanosleep(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let c = valid_clock(a[0])?;
    if a[1] as i32 & !libc::TIMER_ABSTIME != 0 {
        return Err(Errno::EINVAL);
    }
    sleep(k, c, a[1] as i32, a[2], a[3])
}

pub fn getrandom(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    const GRND_NONBLOCK: u64 = 1;
    const GRND_RANDOM: u64 = 2;
    const GRND_INSECURE: u64 = 4;
    if a[2] & !(GRND_NONBLOCK | GRND_RANDOM | GRND_INSECURE) != 0 {
        return Err(Errno::EINVAL);
    }
    let len = a[1].min(1 << 25);
    k.iov.clear();
    if len == 0 {
        return Ok(0);
    }
    k.mm.user_iov(a[0], len, true, &mut k.iov)?;
    k.host_call_iov(false, None, |k, _| {
        let mut total = 0u64;
        for i in 0..k.iov.len {
            let v = k.iov.iov[i];
            // SAFETY: v points into guest memory (bounds-checked by user_iov).
            let n = check(unsafe { libc::getrandom(v.iov_base, v.iov_len, (a[2] & !GRND_RANDOM) as u32) } as i64)?;
            total += n;
            if (n as usize) < v.iov_len {
                break;
            }
        }
        Ok(total)
    })
}

/// alarm: the VMM's own real-time timer, whose SIGALRM it passes on.
pub fn alarm(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    k.host_call(false, &mut [], |_, _| {
        // SAFETY: alarm has no memory arguments.
        Ok(unsafe { libc::alarm(a[0] as u32) } as u64)
    })
}

pub fn setitimer(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    if a[0] as i32 != libc::ITIMER_REAL {
        return Err(Errno::EINVAL);
    }
    let new: libc::itimerval = if a[1] == 0 { Pod::zeroed() } else { k.mm.read_val(a[1])? };
    let mut old = [0u8; 32];
    k.host_call(false, &mut old, |_, out| {
        let mut o: libc::itimerval = Pod::zeroed();
        // SAFETY: new/o are valid itimervals.
        check(unsafe { libc::setitimer(libc::ITIMER_REAL, &new, &mut o) } as i64)?;
        out.copy_from_slice(o.as_bytes());
        Ok(0)
    })?;
    if a[2] != 0 {
        k.mm.write_user(a[2], &old)?;
    }
    Ok(0)
}

pub fn getitimer(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    if a[0] as i32 != libc::ITIMER_REAL {
        return Err(Errno::EINVAL);
    }
    let mut cur = [0u8; 32];
    k.host_call(false, &mut cur, |_, out| {
        let mut c: libc::itimerval = Pod::zeroed();
        // SAFETY: c is a valid out-parameter.
        check(unsafe { libc::getitimer(libc::ITIMER_REAL, &mut c) } as i64)?;
        out.copy_from_slice(c.as_bytes());
        Ok(0)
    })?;
    k.mm.write_user(a[1], &cur).map(|_| 0)
}

/// Linux's timer clocks this VMM keeps (the CPU-time ones are the VMM
/// process's, which runs the program).
fn timer_clock(c: u64) -> SysResult<libc::clockid_t> {
    match c as u32 as i32 {
        c @ (libc::CLOCK_REALTIME
        | libc::CLOCK_MONOTONIC
        | libc::CLOCK_BOOTTIME
        | libc::CLOCK_PROCESS_CPUTIME_ID
        | libc::CLOCK_REALTIME_ALARM
        | libc::CLOCK_BOOTTIME_ALARM) => Ok(match c {
            libc::CLOCK_REALTIME_ALARM => libc::CLOCK_REALTIME,
            libc::CLOCK_BOOTTIME_ALARM => libc::CLOCK_BOOTTIME,
            c => c,
        }),
        _ => Err(Errno::EINVAL),
    }
}

/// timer_create(clockid, sevp, timerid).
pub fn timer_create(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    use super::super::timers::{Notify, Timer, SIGEV_NONE, SIGEV_SIGNAL, SIGEV_THREAD_ID};
    let clock = timer_clock(a[0])?;
    let id = k.tg().timers.free_id()?;
    // struct sigevent: value, signo, notify, then the thread id.
    let (notify, value) = if a[1] == 0 {
        (Notify::Process(libc::SIGALRM), id as u64)
    } else {
        let sev: [u64; 3] = k.mm.read_val(a[1])?;
        let (signo, how, tid) = (sev[1] as u32 as i32, (sev[1] >> 32) as u32 as i32, sev[2] as u32);
        let signal = || if super::super::signal::Signal::valid(signo as u64) { Ok(signo) } else { Err(Errno::EINVAL) };
        let notify = match how {
            SIGEV_NONE => Notify::None,
            SIGEV_SIGNAL => Notify::Process(signal()?),
            SIGEV_THREAD_ID if tid == k.task.tid || k.sched.find(tid).is_some() => Notify::Thread(signal()?, tid),
            _ => return Err(Errno::EINVAL),
        };
        (notify, sev[0])
    };
    super::super::mm::Mm::range_ok(a[2], 4)?;
    // The host timer's handle stays here; only success is replicated.
    let mut host = None;
    k.host_call(false, &mut [], |_, _| {
        host = Some(super::super::timers::create_host(clock, id)?);
        Ok(0)
    })?;
    if let Err(e) = k.mm.write_val(a[2], &(id as i32)) {
        if let Some(h) = host {
            super::super::timers::delete(Timer { notify, value, host: Some(h) });
        }
        return Err(e);
    }
    k.tg().timers.insert(id, Timer { notify, value, host });
    Ok(0)
}

/// The host timer of timer `id` (0 in a follower, which replays).
fn host_timer(k: &Kernel, id: u64) -> SysResult<usize> {
    Ok(k.tg().timers.get(id)?.host.unwrap_or(0))
}

/// timer_settime(timerid, flags, new, old).
pub fn timer_settime(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let h = host_timer(k, a[0])?;
    if a[1] & !(libc::TIMER_ABSTIME as u64) != 0 {
        return Err(Errno::EINVAL);
    }
    let new: libc::itimerspec = k.mm.read_val(a[2])?;
    super::super::timers::valid_spec(&new)?;
    let mut old = [0u8; 32];
    k.host_call(false, &mut old, |_, out| {
        let mut o: libc::itimerspec = Pod::zeroed();
        // SAFETY: h is the live host timer of this id; new/o are valid.
        check(unsafe { libc::timer_settime(h as libc::timer_t, a[1] as i32, &new, &mut o) } as i64)?;
        out.copy_from_slice(o.as_bytes());
        Ok(0)
    })?;
    if a[3] != 0 {
        k.mm.write_user(a[3], &old)?;
    }
    Ok(0)
}

/// timer_gettime(timerid, cur).
pub fn timer_gettime(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let h = host_timer(k, a[0])?;
    let mut cur = [0u8; 32];
    k.host_call(false, &mut cur, |_, out| {
        let mut c: libc::itimerspec = Pod::zeroed();
        // SAFETY: h is the live host timer of this id; c is valid.
        check(unsafe { libc::timer_gettime(h as libc::timer_t, &mut c) } as i64)?;
        out.copy_from_slice(c.as_bytes());
        Ok(0)
    })?;
    k.mm.write_user(a[1], &cur).map(|_| 0)
}

/// timer_getoverrun(timerid).
pub fn timer_getoverrun(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let h = host_timer(k, a[0])?;
    k.host_call(false, &mut [], |_, _| {
        // SAFETY: h is the live host timer of this id.
        check(unsafe { libc::timer_getoverrun(h as libc::timer_t) } as i64)
    })
}

/// timer_delete(timerid).
pub fn timer_delete(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let t = k.tg().timers.remove(a[0])?;
    super::super::timers::delete(t);
    Ok(0)
}
