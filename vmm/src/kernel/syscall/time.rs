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
