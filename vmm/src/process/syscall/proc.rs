//! Process, time, identity, limit and signal system calls, and the
//! program's lifetime (exit, execve).

use super::super::errno::{check, Errno, SysResult};
use super::super::exec::{self, Creds};
use super::super::mm::Pod;
use super::super::signal::{SigAction, SigInfo, Signal, StackT, SI_TKILL, SI_USER};
use super::super::{random16, Process};
use super::Sys;
use crate::arch::x86_64::layout::{USER_END, USER_MIN};
use crate::arch::x86_64::paging::is_canonical;

pub fn zero(_p: &mut Process, _a: &[u64; 6]) -> SysResult {
    Ok(0)
}

pub fn eperm(_p: &mut Process, _a: &[u64; 6]) -> SysResult {
    Err(Errno::EPERM)
}

pub fn enosys(_p: &mut Process, _a: &[u64; 6]) -> SysResult {
    Err(Errno::ENOSYS)
}

/// ENOSYS, logged once (a refusal the user should hear about).
pub fn enosys_logged(p: &mut Process, _a: &[u64; 6]) -> SysResult {
    // The entry is the call being made; log it by its name.
    p.log_refusal();
    Err(Errno::ENOSYS)
}

impl Process {
    fn log_refusal(&mut self) {
        if let Some(nr) = self.current_nr {
            self.unsupported(nr);
        }
    }
}

// ---- time and randomness ----

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

pub fn clock_gettime(p: &mut Process, a: &[u64; 6]) -> SysResult {
    let c = valid_clock(a[0])?;
    let mut ts = [0u8; 16];
    p.host_call(false, &mut ts, |_, out| {
        let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: t is a valid out-parameter.
        check(unsafe { libc::clock_gettime(c, &mut t) } as i64)?;
        out.copy_from_slice(t.as_bytes());
        Ok(0)
    })?;
    p.mm.write_user(a[1], &ts).map(|_| 0)
}

pub fn clock_getres(p: &mut Process, a: &[u64; 6]) -> SysResult {
    let c = valid_clock(a[0])?;
    let mut ts = [0u8; 16];
    p.host_call(false, &mut ts, |_, out| {
        let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: t is a valid out-parameter.
        check(unsafe { libc::clock_getres(c, &mut t) } as i64)?;
        out.copy_from_slice(t.as_bytes());
        Ok(0)
    })?;
    if a[1] != 0 {
        p.mm.write_user(a[1], &ts)?;
    }
    Ok(0)
}

pub fn gettimeofday(p: &mut Process, a: &[u64; 6]) -> SysResult {
    let mut tv = [0u8; 16];
    p.host_call(false, &mut tv, |_, out| {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: ts is a valid out-parameter.
        unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
        out.copy_from_slice(libc::timeval { tv_sec: ts.tv_sec, tv_usec: ts.tv_nsec / 1000 }.as_bytes());
        Ok(0)
    })?;
    if a[0] != 0 {
        p.mm.write_user(a[0], &tv)?;
    }
    if a[1] != 0 {
        p.mm.write_val(a[1], &[0i32; 2])?;
    }
    Ok(0)
}

pub fn time(p: &mut Process, a: &[u64; 6]) -> SysResult {
    let now = p.host_call(false, &mut [], |_, _| {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: ts is a valid out-parameter.
        unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
        Ok(ts.tv_sec as u64)
    })?;
    if a[0] != 0 {
        p.mm.write_val(a[0], &(now as i64))?;
    }
    Ok(now)
}

fn sleep(p: &mut Process, clock: libc::clockid_t, flags: i32, req_va: u64, rem_va: u64) -> SysResult {
    let req: libc::timespec = p.mm.read_val(req_va)?;
    if req.tv_sec < 0 || !(0..1_000_000_000).contains(&req.tv_nsec) {
        return Err(Errno::EINVAL);
    }
    let mut rem = [0u8; 16];
    let r = p.host_call(false, &mut rem, |p, out| {
        if let Err(stop) = p.settle_before_blocking() {
            p.stop_requested = Some(stop);
            return Err(Errno::EINTR);
        }
        let mut left = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: req and left are valid timespecs.
        let r = unsafe { libc::clock_nanosleep(clock, flags, &req, &mut left) };
        out.copy_from_slice(left.as_bytes());
        if r != 0 {
            p.collect_host_signals();
            return Err(Errno(r));
        }
        Ok(0)
    });
    if r == Err(Errno::EINTR) && rem_va != 0 && flags & libc::TIMER_ABSTIME == 0 {
        p.mm.write_user(rem_va, &rem)?;
    }
    r
}

pub fn nanosleep(p: &mut Process, a: &[u64; 6]) -> SysResult {
    sleep(p, libc::CLOCK_MONOTONIC, 0, a[0], a[1])
}

pub fn clock_nanosleep(p: &mut Process, a: &[u64; 6]) -> SysResult {
    let c = valid_clock(a[0])?;
    if a[1] as i32 & !libc::TIMER_ABSTIME != 0 {
        return Err(Errno::EINVAL);
    }
    sleep(p, c, a[1] as i32, a[2], a[3])
}

pub fn getrandom(p: &mut Process, a: &[u64; 6]) -> SysResult {
    const GRND_NONBLOCK: u64 = 1;
    const GRND_RANDOM: u64 = 2;
    const GRND_INSECURE: u64 = 4;
    if a[2] & !(GRND_NONBLOCK | GRND_RANDOM | GRND_INSECURE) != 0 {
        return Err(Errno::EINVAL);
    }
    let len = a[1].min(1 << 25);
    p.iov.clear();
    if len == 0 {
        return Ok(0);
    }
    p.mm.user_iov(a[0], len, true, &mut p.iov)?;
    p.host_call_iov(false, |p| {
        let mut total = 0u64;
        for i in 0..p.iov.len {
            let v = p.iov.iov[i];
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

// ---- identity ----

/// The fixed identity `uname` reports in every variant.
fn utsname() -> libc::utsname {
    fn put(dst: &mut [libc::c_char; 65], s: &str) {
        for (d, b) in dst.iter_mut().zip(s.bytes()) {
            *d = b as libc::c_char;
        }
    }
    let mut u: libc::utsname = Pod::zeroed();
    put(&mut u.sysname, "Linux");
    put(&mut u.nodename, "dmvx");
    put(&mut u.release, "6.1.0-dmvx");
    put(&mut u.version, "#1 SMP PREEMPT_DYNAMIC dmvx");
    put(&mut u.machine, "x86_64");
    put(&mut u.domainname, "(none)");
    u
}

pub fn uname(p: &mut Process, a: &[u64; 6]) -> SysResult {
    p.mm.write_val(a[0], &utsname()).map(|_| 0)
}

pub fn getpid(p: &mut Process, _a: &[u64; 6]) -> SysResult {
    Ok(p.ids.pid as u64)
}

pub fn getppid(_p: &mut Process, _a: &[u64; 6]) -> SysResult {
    Ok(1)
}

pub fn getuid(p: &mut Process, _a: &[u64; 6]) -> SysResult {
    Ok(p.ids.uid as u64)
}

pub fn getgid(p: &mut Process, _a: &[u64; 6]) -> SysResult {
    Ok(p.ids.gid as u64)
}

pub fn getresuid(p: &mut Process, a: &[u64; 6]) -> SysResult {
    for &va in &a[..3] {
        p.mm.write_val(va, &p.ids.uid)?;
    }
    Ok(0)
}

pub fn getresgid(p: &mut Process, a: &[u64; 6]) -> SysResult {
    for &va in &a[..3] {
        p.mm.write_val(va, &p.ids.gid)?;
    }
    Ok(0)
}

pub fn getgroups(p: &mut Process, a: &[u64; 6]) -> SysResult {
    let size = a[0] as u32 as i32;
    if size < 0 {
        return Err(Errno::EINVAL);
    }
    if size == 0 {
        return Ok(1);
    }
    p.mm.write_val(a[1], &p.ids.gid)?;
    Ok(1)
}

pub fn getpgid(p: &mut Process, a: &[u64; 6]) -> SysResult {
    if a[0] as u32 != 0 && a[0] as u32 != p.ids.pid {
        return Err(Errno::ESRCH);
    }
    Ok(p.ids.pid as u64)
}

pub fn setpgid(p: &mut Process, a: &[u64; 6]) -> SysResult {
    if a[0] as u32 != 0 && a[0] as u32 != p.ids.pid {
        return Err(Errno::ESRCH);
    }
    Ok(0)
}

pub fn setsid(_p: &mut Process, _a: &[u64; 6]) -> SysResult {
    // Already a process-group leader.
    Err(Errno::EPERM)
}

// ---- limits and accounting ----

/// Resource limits (the program's view).
#[derive(Debug, Clone)]
pub struct Limits(pub [libc::rlimit64; 16]);

const INF: u64 = u64::MAX;

impl Default for Limits {
    fn default() -> Self {
        let l = |c: u64, m: u64| libc::rlimit64 { rlim_cur: c, rlim_max: m };
        Limits([
            l(INF, INF),         // CPU
            l(INF, INF),         // FSIZE
            l(INF, INF),         // DATA
            l(8 << 20, INF),     // STACK
            l(0, INF),           // CORE
            l(INF, INF),         // RSS
            l(1, 1),             // NPROC: this one process
            l(1024, 4096),       // NOFILE
            l(8 << 20, 8 << 20), // MEMLOCK
            l(INF, INF),         // AS
            l(INF, INF),         // LOCKS
            l(0, 0),             // SIGPENDING
            l(819_200, 819_200), // MSGQUEUE
            l(0, 0),             // NICE
            l(0, 0),             // RTPRIO
            l(INF, INF),         // RTTIME
        ])
    }
}

fn limit(p: &mut Process, res: u64, new: Option<libc::rlimit64>) -> SysResult<libc::rlimit64> {
    let i = res as u32 as usize;
    let old = *p.limits.0.get(i).ok_or(Errno::EINVAL)?;
    if let Some(n) = new {
        if n.rlim_cur > n.rlim_max {
            return Err(Errno::EINVAL);
        }
        if n.rlim_max > old.rlim_max {
            return Err(Errno::EPERM);
        }
        if i == libc::RLIMIT_NOFILE as usize {
            p.fds.limit = n.rlim_cur.min(4096) as usize;
        }
        p.limits.0[i] = n;
    }
    Ok(old)
}

pub fn prlimit64(p: &mut Process, a: &[u64; 6]) -> SysResult {
    if a[0] as u32 != 0 && a[0] as u32 != p.ids.pid {
        return Err(Errno::ESRCH);
    }
    let new = if a[2] != 0 { Some(p.mm.read_val::<libc::rlimit64>(a[2])?) } else { None };
    let old = limit(p, a[1], new)?;
    if a[3] != 0 {
        p.mm.write_val(a[3], &old)?;
    }
    Ok(0)
}

pub fn getrlimit(p: &mut Process, a: &[u64; 6]) -> SysResult {
    let old = limit(p, a[0], None)?;
    p.mm.write_val(a[1], &old).map(|_| 0)
}

pub fn setrlimit(p: &mut Process, a: &[u64; 6]) -> SysResult {
    let new: libc::rlimit64 = p.mm.read_val(a[1])?;
    limit(p, a[0], Some(new)).map(|_| 0)
}

pub fn getrusage(p: &mut Process, a: &[u64; 6]) -> SysResult {
    let who = a[0] as i32;
    if !matches!(who, libc::RUSAGE_SELF | libc::RUSAGE_CHILDREN | libc::RUSAGE_THREAD) {
        return Err(Errno::EINVAL);
    }
    let mut ru = [0u8; std::mem::size_of::<libc::rusage>()];
    p.host_call(false, &mut ru, |_, out| {
        if who != libc::RUSAGE_CHILDREN {
            // SAFETY: out is a rusage-sized out-parameter.
            check(unsafe { libc::getrusage(libc::RUSAGE_SELF, out.as_mut_ptr().cast()) } as i64)?;
        }
        Ok(0)
    })?;
    p.mm.write_user(a[1], &ru).map(|_| 0)
}

pub fn times(p: &mut Process, a: &[u64; 6]) -> SysResult {
    let mut t = [0u8; 32];
    let r = p.host_call(false, &mut t, |_, out| {
        // SAFETY: out is a tms-sized out-parameter (four clock_t).
        Ok(unsafe { libc::times(out.as_mut_ptr().cast()) } as u64)
    })?;
    if a[0] != 0 {
        p.mm.write_user(a[0], &t)?;
    }
    Ok(r)
}

pub fn sysinfo(p: &mut Process, a: &[u64; 6]) -> SysResult {
    let mut out = [0u8; std::mem::size_of::<libc::sysinfo>()];
    p.host_call(false, &mut out, |p, out| {
        let mut s: libc::sysinfo = Pod::zeroed();
        s.uptime = p.started.elapsed().as_secs() as i64;
        s.totalram = p.mm.mem.size();
        s.freeram = p.mm.frames.available() * 4096;
        s.procs = 1;
        s.mem_unit = 1;
        out.copy_from_slice(s.as_bytes());
        Ok(0)
    })?;
    p.mm.write_user(a[0], &out).map(|_| 0)
}

pub fn sched_getaffinity(p: &mut Process, a: &[u64; 6]) -> SysResult {
    if a[0] as u32 != 0 && a[0] as u32 != p.ids.pid {
        return Err(Errno::ESRCH);
    }
    if a[1] < 8 || !a[1].is_multiple_of(8) {
        return Err(Errno::EINVAL);
    }
    p.mm.write_val(a[2], &1u64)?;
    Ok(8)
}

pub fn getcpu(p: &mut Process, a: &[u64; 6]) -> SysResult {
    if a[0] != 0 {
        p.mm.write_val(a[0], &0u32)?;
    }
    if a[1] != 0 {
        p.mm.write_val(a[1], &0u32)?;
    }
    Ok(0)
}

pub fn prctl(p: &mut Process, a: &[u64; 6]) -> SysResult {
    match a[0] as i32 {
        libc::PR_SET_NAME => {
            let mut n = [0u8; 16];
            let s = p.mm.read_cstr(a[1], 4096)?;
            let len = s.len().min(15);
            n[..len].copy_from_slice(&s[..len]);
            p.name = n;
            Ok(0)
        }
        libc::PR_GET_NAME => {
            let n = p.name;
            p.mm.write_user(a[1], &n).map(|_| 0)
        }
        libc::PR_SET_PDEATHSIG
        | libc::PR_SET_NO_NEW_PRIVS
        | libc::PR_SET_DUMPABLE
        | libc::PR_SET_VMA
        | libc::PR_SET_KEEPCAPS => Ok(0),
        libc::PR_GET_DUMPABLE | libc::PR_GET_NO_NEW_PRIVS => Ok(1),
        libc::PR_GET_PDEATHSIG => p.mm.write_val(a[1], &0i32).map(|_| 0),
        libc::PR_CAPBSET_READ => Ok(0),
        _ => Err(Errno::EINVAL),
    }
}

pub fn arch_prctl(p: &mut Process, a: &[u64; 6]) -> SysResult {
    const ARCH_SET_GS: u64 = 0x1001;
    const ARCH_SET_FS: u64 = 0x1002;
    const ARCH_GET_FS: u64 = 0x1003;
    const ARCH_GET_GS: u64 = 0x1004;
    match a[0] {
        ARCH_SET_FS | ARCH_SET_GS => {
            if a[1] >= USER_END || !is_canonical(a[1]) {
                return Err(Errno::EPERM);
            }
            if a[0] == ARCH_SET_FS {
                p.fs_base = a[1];
            } else {
                p.gs_base = a[1];
            }
            p.seg_bases = Some((p.fs_base, p.gs_base));
            Ok(0)
        }
        ARCH_GET_FS => p.mm.write_val(a[1], &p.fs_base).map(|_| 0),
        ARCH_GET_GS => p.mm.write_val(a[1], &p.gs_base).map(|_| 0),
        _ => Err(Errno::EINVAL),
    }
}

pub fn set_tid_address(p: &mut Process, a: &[u64; 6]) -> SysResult {
    p.tid_address = a[0];
    Ok(p.ids.pid as u64)
}

pub fn set_robust_list(p: &mut Process, a: &[u64; 6]) -> SysResult {
    if a[1] != 24 {
        return Err(Errno::EINVAL);
    }
    p.robust_list = (a[0], a[1]);
    Ok(0)
}

pub fn get_robust_list(p: &mut Process, a: &[u64; 6]) -> SysResult {
    if a[0] as u32 != 0 && a[0] as u32 != p.ids.pid {
        return Err(Errno::ESRCH);
    }
    let (head, len) = p.robust_list;
    p.mm.write_val(a[1], &head)?;
    p.mm.write_val(a[2], &len)?;
    Ok(0)
}

/// futex with one thread: nobody else can wake a waiter, so a wait either
/// fails at once, times out, or would block forever.
pub fn futex(p: &mut Process, a: &[u64; 6]) -> SysResult {
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
            let cur: u32 = p.mm.read_val(uaddr)?;
            if cur != val {
                return Err(Errno::EAGAIN);
            }
            if a[3] == 0 {
                // Nobody else can wake it: only a signal ends this wait.
                return p.host_call(false, &mut [], |p, _| Err(p.wait_for_signal(None)));
            }
            let ts: libc::timespec = p.mm.read_val(a[3])?;
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
            p.mm.read_val::<u32>(uaddr)?;
            Ok(0)
        }
        FUTEX_CMP_REQUEUE => {
            let cur: u32 = p.mm.read_val(uaddr)?;
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
            let old: u32 = p.mm.read_val(uaddr2)?;
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
            p.mm.write_val(uaddr2, &new)?;
            Ok(0)
        }
        FUTEX_LOCK_PI | FUTEX_TRYLOCK_PI => {
            let cur: u32 = p.mm.read_val(uaddr)?;
            if cur & 0x3fff_ffff == 0 {
                p.mm.write_val(uaddr, &(p.ids.pid | (cur & 0x4000_0000)))?;
                return Ok(0);
            }
            if cur & 0x3fff_ffff == p.ids.pid {
                return Err(Errno::EDEADLK);
            }
            Err(if op == FUTEX_TRYLOCK_PI { Errno::EAGAIN } else { Errno::EDEADLK })
        }
        FUTEX_UNLOCK_PI => {
            let cur: u32 = p.mm.read_val(uaddr)?;
            if cur & 0x3fff_ffff != p.ids.pid {
                return Err(Errno::EPERM);
            }
            p.mm.write_val(uaddr, &0u32)?;
            Ok(0)
        }
        _ => Err(Errno::ENOSYS),
    }
}

// ---- signals ----

pub fn rt_sigaction(p: &mut Process, a: &[u64; 6]) -> SysResult {
    if a[3] != 8 {
        return Err(Errno::EINVAL);
    }
    let new = if a[1] != 0 { Some(p.mm.read_val::<SigAction>(a[1])?) } else { None };
    let old = p.signals.set_action(a[0], new)?;
    if a[2] != 0 {
        p.mm.write_val(a[2], &old)?;
    }
    Ok(0)
}

pub fn rt_sigprocmask(p: &mut Process, a: &[u64; 6]) -> SysResult {
    if a[3] != 8 {
        return Err(Errno::EINVAL);
    }
    let set = if a[1] != 0 { Some(p.mm.read_val::<u64>(a[1])?) } else { None };
    let old = p.signals.change_mask(a[0], set)?;
    if a[2] != 0 {
        p.mm.write_val(a[2], &old)?;
    }
    Ok(0)
}

pub fn rt_sigreturn(p: &mut Process, _a: &[u64; 6]) -> Sys {
    match p.sigreturn(p.entry_rsp) {
        Ok(regs) => Sys::Restore(Box::new(regs)),
        Err(why) => Sys::Kill(Signal::SIGSEGV, why),
    }
}

pub fn pause(p: &mut Process, _a: &[u64; 6]) -> SysResult {
    p.host_call(false, &mut [], |p, _| Err(p.wait_for_signal(None)))
}

pub fn rt_sigsuspend(p: &mut Process, a: &[u64; 6]) -> SysResult {
    let mask = p.sigmask_arg(a[0], a[1])?.ok_or(Errno::EFAULT)?;
    let r = p.host_call(false, &mut [], |p, _| Err(p.wait_for_signal(Some(mask))));
    if p.op_mode(false) == crate::mvx::OpMode::Replay {
        // Replayed: the mask the leader waited with applies to the delivery.
        p.saved_mask = Some(p.signals.mask);
        p.signals.mask = mask & !super::super::signal::UNBLOCKABLE;
    }
    r
}

pub fn rt_sigpending(p: &mut Process, a: &[u64; 6]) -> SysResult {
    if a[1] != 8 {
        return Err(Errno::EINVAL);
    }
    p.collect_host_signals();
    let v = p.signals.pending & p.signals.mask;
    p.mm.write_val(a[0], &v).map(|_| 0)
}

/// alarm: the VMM's own real-time timer, whose SIGALRM it passes on.
pub fn alarm(p: &mut Process, a: &[u64; 6]) -> SysResult {
    p.host_call(false, &mut [], |_, _| {
        // SAFETY: alarm has no memory arguments.
        Ok(unsafe { libc::alarm(a[0] as u32) } as u64)
    })
}

pub fn setitimer(p: &mut Process, a: &[u64; 6]) -> SysResult {
    if a[0] as i32 != libc::ITIMER_REAL {
        return Err(Errno::EINVAL);
    }
    let new: libc::itimerval = if a[1] == 0 { Pod::zeroed() } else { p.mm.read_val(a[1])? };
    let mut old = [0u8; 32];
    p.host_call(false, &mut old, |_, out| {
        let mut o: libc::itimerval = Pod::zeroed();
        // SAFETY: new/o are valid itimervals.
        check(unsafe { libc::setitimer(libc::ITIMER_REAL, &new, &mut o) } as i64)?;
        out.copy_from_slice(o.as_bytes());
        Ok(0)
    })?;
    if a[2] != 0 {
        p.mm.write_user(a[2], &old)?;
    }
    Ok(0)
}

pub fn getitimer(p: &mut Process, a: &[u64; 6]) -> SysResult {
    if a[0] as i32 != libc::ITIMER_REAL {
        return Err(Errno::EINVAL);
    }
    let mut cur = [0u8; 32];
    p.host_call(false, &mut cur, |_, out| {
        let mut c: libc::itimerval = Pod::zeroed();
        // SAFETY: c is a valid out-parameter.
        check(unsafe { libc::getitimer(libc::ITIMER_REAL, &mut c) } as i64)?;
        out.copy_from_slice(c.as_bytes());
        Ok(0)
    })?;
    p.mm.write_user(a[1], &cur).map(|_| 0)
}

pub fn sigaltstack(p: &mut Process, a: &[u64; 6]) -> SysResult {
    let new = if a[0] != 0 { Some(p.mm.read_val::<StackT>(a[0])?) } else { None };
    let old = p.signals.set_altstack(new)?;
    if a[1] != 0 {
        p.mm.write_val(a[1], &old)?;
    }
    Ok(0)
}

/// A signal the program sends itself: pending, delivered (or acted on by
/// its default) before the program continues.
fn raise(p: &mut Process, sig: u64, code: i32) -> Sys {
    if sig == 0 {
        return Sys::Ret(0);
    }
    if !Signal::valid(sig) {
        return Err::<u64, _>(Errno::EINVAL).into();
    }
    let s = Signal(sig as i32);
    if !p.signals.ignored(s) {
        p.signals.raise(s, SigInfo { code, ..Default::default() });
    }
    Sys::Ret(0)
}

fn is_self(p: &Process, pid: u64) -> bool {
    let pid = pid as u32 as i32;
    pid == 0 || pid == -1 || pid == p.ids.pid as i32 || pid == -(p.ids.pid as i32)
}

pub fn kill(p: &mut Process, a: &[u64; 6]) -> Sys {
    if !is_self(p, a[0]) {
        return Err::<u64, _>(Errno::ESRCH).into();
    }
    raise(p, a[1], SI_USER)
}

pub fn tkill(p: &mut Process, a: &[u64; 6]) -> Sys {
    if a[0] as u32 != p.ids.pid {
        return Err::<u64, _>(Errno::ESRCH).into();
    }
    raise(p, a[1], SI_TKILL)
}

pub fn tgkill(p: &mut Process, a: &[u64; 6]) -> Sys {
    if a[0] as u32 != p.ids.pid || a[1] as u32 != p.ids.pid {
        return Err::<u64, _>(Errno::ESRCH).into();
    }
    raise(p, a[2], SI_TKILL)
}

// ---- lifetime ----

pub fn exit(_p: &mut Process, a: &[u64; 6]) -> Sys {
    Sys::Exit((a[0] & 0xff) as i32)
}

pub fn wait4(_p: &mut Process, _a: &[u64; 6]) -> SysResult {
    Err(Errno::ECHILD)
}

/// Reads a NULL-terminated array of string pointers.
fn string_array(p: &mut Process, va: u64) -> SysResult<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    if va == 0 {
        return Ok(out);
    }
    let mut total = 0usize;
    for i in 0.. {
        let ptr: u64 = p.mm.read_val(va.checked_add(i * 8).ok_or(Errno::EFAULT)?)?;
        if ptr == 0 {
            break;
        }
        let s = p.mm.read_cstr(ptr, 128 * 1024).map_err(|e| if e == Errno::ENAMETOOLONG { Errno::E2BIG } else { e })?;
        total += s.len() + 1 + 8;
        if total > 2 << 20 {
            return Err(Errno::E2BIG);
        }
        out.push(s);
    }
    Ok(out)
}

fn do_execve(p: &mut Process, path: Vec<u8>, argv_va: u64, envp_va: u64) -> Sys {
    let r = (|| -> Result<Box<kvm_bindings::kvm_regs>, Errno> {
        let argv = string_array(p, argv_va)?;
        let envp = string_array(p, envp_va)?;
        let path = if path == b"/proc/self/exe" { p.exe.clone() } else { path };
        let cwd = p.cwd.clone();
        let prepared = exec::prepare(&p.sandbox, &cwd, &path, argv, &envp).map_err(|e| e.errno())?;
        // Point of no return: the old image goes.
        p.mm.unmap(USER_MIN, USER_END);
        p.fds.close_on_exec();
        p.signals.reset_on_exec();
        p.name = super::super::comm_name(&path);
        let creds = Creds { uid: p.ids.uid, gid: p.ids.gid };
        match exec::load(&mut p.mm, prepared, &envp, &creds, random16()) {
            Ok(loaded) => {
                p.exe = loaded.exe;
                Ok(Box::new(loaded.regs))
            }
            Err(e) => {
                p.fatal = Some(format!("execve failed after the old program was gone: {e}"));
                Err(Errno::ENOEXEC)
            }
        }
    })();
    match r {
        Ok(regs) => Sys::Exec(regs),
        Err(_) if p.fatal.is_some() => Sys::Kill(Signal::SIGKILL, p.fatal.take().unwrap_or_default()),
        Err(e) => Err::<u64, _>(e).into(),
    }
}

pub fn execve(p: &mut Process, a: &[u64; 6]) -> Sys {
    match p.path_arg(a[0]) {
        Ok(path) => do_execve(p, path, a[1], a[2]),
        Err(e) => Err::<u64, _>(e).into(),
    }
}

pub fn execveat(p: &mut Process, a: &[u64; 6]) -> Sys {
    const AT_EMPTY_PATH: u64 = 0x1000;
    const AT_SYMLINK_NOFOLLOW: u64 = 0x100;
    if a[4] & !(AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0 {
        return Err::<u64, _>(Errno::EINVAL).into();
    }
    let path = match p.path_arg(a[1]) {
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
        let dir = match p.fds.file(a[0] as u32 as u64) {
            Ok(f) => p.sandbox.guest_path(f.raw()),
            Err(e) => return Err::<u64, _>(e).into(),
        };
        let mut d = dir;
        if !d.ends_with(b"/") {
            d.push(b'/');
        }
        d.extend_from_slice(&path);
        d
    };
    do_execve(p, full, a[2], a[3])
}
