//! Process, time, identity, limit and signal system calls, and the
//! program's lifetime (exit, execve).

use super::super::errno::{check, Errno, SysResult};
use super::super::exec;
use super::super::mm::Pod;
use super::super::setup::{comm_name, random16};
use super::super::signal::{SigAction, SigInfo, Signal, StackT, SI_TKILL, SI_USER};
use super::super::Kernel;
use super::Sys;
use crate::arch::x86_64::layout::{USER_END, USER_MIN};
use crate::arch::x86_64::paging::is_canonical;

pub fn zero(_k: &mut Kernel, _a: &[u64; 6]) -> SysResult {
    Ok(0)
}

pub fn eperm(_k: &mut Kernel, _a: &[u64; 6]) -> SysResult {
    Err(Errno::EPERM)
}

pub fn enosys(_k: &mut Kernel, _a: &[u64; 6]) -> SysResult {
    Err(Errno::ENOSYS)
}

/// ENOSYS, logged once (a refusal the user should hear about).
pub fn enosys_logged(k: &mut Kernel, _a: &[u64; 6]) -> SysResult {
    // The entry is the call being made; log it by its name.
    k.log_refusal();
    Err(Errno::ENOSYS)
}

impl Kernel {
    fn log_refusal(&mut self) {
        if let Some(nr) = self.task.nr {
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

pub fn uname(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    k.mm.write_val(a[0], &utsname()).map(|_| 0)
}

pub fn getpid(k: &mut Kernel, _a: &[u64; 6]) -> SysResult {
    Ok(k.task.tg.pid as u64)
}

pub fn getppid(_k: &mut Kernel, _a: &[u64; 6]) -> SysResult {
    Ok(1)
}

pub fn getuid(k: &mut Kernel, _a: &[u64; 6]) -> SysResult {
    Ok(k.tg().creds.uid as u64)
}

pub fn getgid(k: &mut Kernel, _a: &[u64; 6]) -> SysResult {
    Ok(k.tg().creds.gid as u64)
}

pub fn getresuid(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    for &va in &a[..3] {
        let uid = k.tg().creds.uid;
        k.mm.write_val(va, &uid)?;
    }
    Ok(0)
}

pub fn getresgid(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    for &va in &a[..3] {
        let gid = k.tg().creds.gid;
        k.mm.write_val(va, &gid)?;
    }
    Ok(0)
}

pub fn getgroups(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let size = a[0] as u32 as i32;
    if size < 0 {
        return Err(Errno::EINVAL);
    }
    if size == 0 {
        return Ok(1);
    }
    let gid = k.tg().creds.gid;
    k.mm.write_val(a[1], &gid)?;
    Ok(1)
}

pub fn getpgid(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    if a[0] as u32 != 0 && a[0] as u32 != k.task.tg.pid {
        return Err(Errno::ESRCH);
    }
    Ok(k.task.tg.pid as u64)
}

pub fn setpgid(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    if a[0] as u32 != 0 && a[0] as u32 != k.task.tg.pid {
        return Err(Errno::ESRCH);
    }
    Ok(0)
}

pub fn setsid(_k: &mut Kernel, _a: &[u64; 6]) -> SysResult {
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

fn limit(k: &mut Kernel, res: u64, new: Option<libc::rlimit64>) -> SysResult<libc::rlimit64> {
    let i = res as u32 as usize;
    let old = *k.tg().limits.0.get(i).ok_or(Errno::EINVAL)?;
    if let Some(n) = new {
        if n.rlim_cur > n.rlim_max {
            return Err(Errno::EINVAL);
        }
        if n.rlim_max > old.rlim_max {
            return Err(Errno::EPERM);
        }
        if i == libc::RLIMIT_NOFILE as usize {
            k.fds().limit = n.rlim_cur.min(4096) as usize;
        }
        k.tg().limits.0[i] = n;
    }
    Ok(old)
}

pub fn prlimit64(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    if a[0] as u32 != 0 && a[0] as u32 != k.task.tg.pid {
        return Err(Errno::ESRCH);
    }
    let new = if a[2] != 0 { Some(k.mm.read_val::<libc::rlimit64>(a[2])?) } else { None };
    let old = limit(k, a[1], new)?;
    if a[3] != 0 {
        k.mm.write_val(a[3], &old)?;
    }
    Ok(0)
}

pub fn getrlimit(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let old = limit(k, a[0], None)?;
    k.mm.write_val(a[1], &old).map(|_| 0)
}

pub fn setrlimit(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let new: libc::rlimit64 = k.mm.read_val(a[1])?;
    limit(k, a[0], Some(new)).map(|_| 0)
}

pub fn getrusage(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let who = a[0] as i32;
    if !matches!(who, libc::RUSAGE_SELF | libc::RUSAGE_CHILDREN | libc::RUSAGE_THREAD) {
        return Err(Errno::EINVAL);
    }
    let mut ru = [0u8; std::mem::size_of::<libc::rusage>()];
    k.host_call(false, &mut ru, |_, out| {
        if who != libc::RUSAGE_CHILDREN {
            // SAFETY: out is a rusage-sized out-parameter.
            check(unsafe { libc::getrusage(libc::RUSAGE_SELF, out.as_mut_ptr().cast()) } as i64)?;
        }
        Ok(0)
    })?;
    k.mm.write_user(a[1], &ru).map(|_| 0)
}

pub fn times(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let mut t = [0u8; 32];
    let r = k.host_call(false, &mut t, |_, out| {
        // SAFETY: out is a tms-sized out-parameter (four clock_t).
        Ok(unsafe { libc::times(out.as_mut_ptr().cast()) } as u64)
    })?;
    if a[0] != 0 {
        k.mm.write_user(a[0], &t)?;
    }
    Ok(r)
}

pub fn sysinfo(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let mut out = [0u8; std::mem::size_of::<libc::sysinfo>()];
    k.host_call(false, &mut out, |k, out| {
        let mut s: libc::sysinfo = Pod::zeroed();
        s.uptime = k.uptime_secs() as i64;
        s.totalram = k.mm.mem.size();
        s.freeram = k.mm.frames.available() * 4096;
        s.procs = 1;
        s.mem_unit = 1;
        out.copy_from_slice(s.as_bytes());
        Ok(0)
    })?;
    k.mm.write_user(a[0], &out).map(|_| 0)
}

pub fn sched_getaffinity(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    if a[0] as u32 != 0 && a[0] as u32 != k.task.tg.pid {
        return Err(Errno::ESRCH);
    }
    if a[1] < 8 || !a[1].is_multiple_of(8) {
        return Err(Errno::EINVAL);
    }
    k.mm.write_val(a[2], &1u64)?;
    Ok(8)
}

pub fn getcpu(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    if a[0] != 0 {
        k.mm.write_val(a[0], &0u32)?;
    }
    if a[1] != 0 {
        k.mm.write_val(a[1], &0u32)?;
    }
    Ok(0)
}

pub fn prctl(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    match a[0] as i32 {
        libc::PR_SET_NAME => {
            let mut n = [0u8; 16];
            let s = k.mm.read_cstr(a[1], 4096)?;
            let len = s.len().min(15);
            n[..len].copy_from_slice(&s[..len]);
            k.tg().name = n;
            Ok(0)
        }
        libc::PR_GET_NAME => {
            let n = k.tg().name;
            k.mm.write_user(a[1], &n).map(|_| 0)
        }
        libc::PR_SET_PDEATHSIG
        | libc::PR_SET_NO_NEW_PRIVS
        | libc::PR_SET_DUMPABLE
        | libc::PR_SET_VMA
        | libc::PR_SET_KEEPCAPS => Ok(0),
        libc::PR_GET_DUMPABLE | libc::PR_GET_NO_NEW_PRIVS => Ok(1),
        libc::PR_GET_PDEATHSIG => k.mm.write_val(a[1], &0i32).map(|_| 0),
        libc::PR_CAPBSET_READ => Ok(0),
        _ => Err(Errno::EINVAL),
    }
}

pub fn arch_prctl(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
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
                k.task.fs_base = a[1];
            } else {
                k.task.gs_base = a[1];
            }
            k.task.bases_dirty = true;
            Ok(0)
        }
        ARCH_GET_FS => k.mm.write_val(a[1], &k.task.fs_base).map(|_| 0),
        ARCH_GET_GS => k.mm.write_val(a[1], &k.task.gs_base).map(|_| 0),
        _ => Err(Errno::EINVAL),
    }
}

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

// ---- signals ----

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

// ---- lifetime ----

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
        match exec::load(&mut k.mm, prepared, &envp, &creds, random16()) {
            Ok(loaded) => {
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
