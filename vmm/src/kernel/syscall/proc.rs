//! Process identity, limits and state answered by the VMM: ids, uname,
//! resource limits, usage, prctl, and the trivial answers.

use super::super::creds::{Caps, IdChange, CAP_SETGID};
use super::super::errno::{check, Errno, SysResult};
use super::super::mm::Pod;
use super::super::Kernel;
use crate::arch::x86_64::layout::USER_END;
use crate::arch::x86_64::paging::is_canonical;

pub fn eperm(_k: &mut Kernel, _a: &[u64; 6]) -> SysResult {
    Err(Errno::EPERM)
}

pub fn enosys(_k: &mut Kernel, _a: &[u64; 6]) -> SysResult {
    Err(Errno::ENOSYS)
}

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

pub fn getppid(k: &mut Kernel, _a: &[u64; 6]) -> SysResult {
    // The parent may have ended since (then it is init's).
    Ok(k.procs.get(k.task.tg.pid).map_or(k.task.tg.ppid, |p| p.ppid) as u64)
}

pub fn getuid(k: &mut Kernel, _a: &[u64; 6]) -> SysResult {
    Ok(k.tg().creds.uid as u64)
}

pub fn geteuid(k: &mut Kernel, _a: &[u64; 6]) -> SysResult {
    Ok(k.tg().creds.euid as u64)
}

pub fn getgid(k: &mut Kernel, _a: &[u64; 6]) -> SysResult {
    Ok(k.tg().creds.gid as u64)
}

pub fn getegid(k: &mut Kernel, _a: &[u64; 6]) -> SysResult {
    Ok(k.tg().creds.egid as u64)
}

pub fn getresuid(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let c = k.tg().creds.clone();
    for (va, v) in a[..3].iter().zip([c.uid, c.euid, c.suid]) {
        k.mm.write_val(*va, &v)?;
    }
    Ok(0)
}

pub fn getresgid(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let c = k.tg().creds.clone();
    for (va, v) in a[..3].iter().zip([c.gid, c.egid, c.sgid]) {
        k.mm.write_val(*va, &v)?;
    }
    Ok(0)
}

pub fn getgroups(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let size = a[0] as u32 as i32;
    if size < 0 {
        return Err(Errno::EINVAL);
    }
    let groups = k.tg().creds.groups.clone();
    if size == 0 {
        return Ok(groups.len() as u64);
    }
    if (size as usize) < groups.len() {
        return Err(Errno::EINVAL);
    }
    let bytes: Vec<u8> = groups.iter().flat_map(|g| g.to_le_bytes()).collect();
    k.mm.write_user(a[1], &bytes)?;
    Ok(groups.len() as u64)
}

/// An id argument: -1 (as u32) keeps the id.
fn id_arg(v: u64) -> Option<u32> {
    (v as u32 != u32::MAX).then_some(v as u32)
}

fn set_ids(k: &mut Kernel, uids: bool, c: IdChange) -> SysResult {
    let mut tg = k.tg();
    let r = if uids { tg.creds.set_uids(c) } else { tg.creds.set_gids(c) };
    r.map(|_| 0).map_err(Errno)
}

pub fn setuid(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    k.tg().creds.setuid(a[0] as u32).map(|_| 0).map_err(Errno)
}

pub fn setgid(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    k.tg().creds.setgid(a[0] as u32).map(|_| 0).map_err(Errno)
}

pub fn setreuid(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let (real, effective) = (id_arg(a[0]), id_arg(a[1]));
    // The saved id follows the effective one when the real one changes or
    // the effective one becomes other than the real one.
    let old_real = k.tg().creds.uid;
    let saved = if real.is_some() || effective.is_some_and(|e| e != old_real) { effective } else { None };
    set_ids(k, true, IdChange { real, effective, saved: saved.or(None) })
}

pub fn setregid(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let (real, effective) = (id_arg(a[0]), id_arg(a[1]));
    let old_real = k.tg().creds.gid;
    let saved = if real.is_some() || effective.is_some_and(|e| e != old_real) { effective } else { None };
    set_ids(k, false, IdChange { real, effective, saved })
}

pub fn setresuid(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    set_ids(k, true, IdChange { real: id_arg(a[0]), effective: id_arg(a[1]), saved: id_arg(a[2]) })
}

pub fn setresgid(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    set_ids(k, false, IdChange { real: id_arg(a[0]), effective: id_arg(a[1]), saved: id_arg(a[2]) })
}

/// setfsuid/setfsgid: the file-system id follows the effective one here;
/// returns the previous one, as Linux does, and changes nothing else.
pub fn setfsuid(k: &mut Kernel, _a: &[u64; 6]) -> SysResult {
    Ok(k.tg().creds.euid as u64)
}

pub fn setfsgid(k: &mut Kernel, _a: &[u64; 6]) -> SysResult {
    Ok(k.tg().creds.egid as u64)
}

pub fn setgroups(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    const NGROUPS_MAX: u64 = 65536;
    if a[0] > NGROUPS_MAX {
        return Err(Errno::EINVAL);
    }
    if !k.tg().creds.capable(CAP_SETGID) {
        return Err(Errno::EPERM);
    }
    let mut raw = vec![0u8; a[0] as usize * 4];
    k.mm.read_user(a[1], &mut raw)?;
    k.tg().creds.groups = raw.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes"))).collect();
    Ok(0)
}

/// The process `pid` names (0: the caller).
fn proc_of(k: &Kernel, pid: u64) -> SysResult<super::super::proc_table::Proc> {
    let pid = if pid as u32 == 0 { k.task.tg.pid } else { pid as u32 };
    k.procs.get(pid).ok_or(Errno::ESRCH)
}

pub fn getpgid(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    proc_of(k, a[0]).map(|p| p.pgid as u64)
}

pub fn getpgrp(k: &mut Kernel, _a: &[u64; 6]) -> SysResult {
    proc_of(k, 0).map(|p| p.pgid as u64)
}

pub fn getsid(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    proc_of(k, a[0]).map(|p| p.sid as u64)
}

pub fn setpgid(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    if (a[1] as u32 as i32) < 0 {
        return Err(Errno::EINVAL);
    }
    k.procs.setpgid(k.task.tg.pid, a[0] as u32, a[1] as u32).map(|_| 0).map_err(Errno)
}

pub fn setsid(k: &mut Kernel, _a: &[u64; 6]) -> SysResult {
    k.procs.setsid(k.task.tg.pid).map(u64::from).map_err(Errno)
}

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
    let mut out = [0u8; SYSINFO_SIZE];
    k.host_call(false, &mut out, |k, out| {
        let free = k.mm.frames.available() * 4096;
        out.copy_from_slice(&sysinfo_bytes(k.uptime_secs(), k.mm.mem.size(), free));
        Ok(0)
    })?;
    k.mm.write_user(a[0], &out).map(|_| 0)
}

/// Size of the kernel's `struct sysinfo` on x86-64.
pub(crate) const SYSINFO_SIZE: usize = 112;

/// The kernel's `struct sysinfo` on x86-64, written field by field: its
/// padding bytes are zero, never VMM memory, and the same in every variant.
pub(crate) fn sysinfo_bytes(uptime: u64, totalram: u64, freeram: u64) -> [u8; SYSINFO_SIZE] {
    let mut out = [0u8; SYSINFO_SIZE];
    let mut put = |off: usize, v: &[u8]| out[off..off + v.len()].copy_from_slice(v);
    put(0, &uptime.to_le_bytes()); // uptime
    put(32, &totalram.to_le_bytes()); // totalram
    put(40, &freeram.to_le_bytes()); // freeram
    put(80, &1u16.to_le_bytes()); // procs
    put(104, &1u32.to_le_bytes()); // mem_unit
    out
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
        libc::PR_SET_PDEATHSIG => {
            if a[1] > 64 {
                return Err(Errno::EINVAL);
            }
            k.procs.set_pdeathsig(k.task.tg.pid, a[1] as i32);
            Ok(0)
        }
        libc::PR_SET_NO_NEW_PRIVS | libc::PR_SET_DUMPABLE | libc::PR_SET_VMA | libc::PR_SET_KEEPCAPS => Ok(0),
        libc::PR_GET_DUMPABLE | libc::PR_GET_NO_NEW_PRIVS => Ok(1),
        libc::PR_GET_PDEATHSIG => {
            let sig = k.procs.get(k.task.tg.pid).map_or(0, |p| p.pdeathsig);
            k.mm.write_val(a[1], &sig).map(|_| 0)
        }
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

/// The capability header's versions: 1 (one 32-bit set each), 2 and 3 (two).
const CAP_V1: u32 = 0x1998_0330;
const CAP_V2: u32 = 0x2007_1026;
const CAP_V3: u32 = 0x2008_0522;

/// Reads a capability header: the number of 32-bit words per set, or
/// EINVAL with the preferred version written back (as Linux).
fn cap_header(k: &mut Kernel, hdr: u64) -> SysResult<usize> {
    let h: [u32; 2] = k.mm.read_val(hdr)?;
    let words = match h[0] {
        CAP_V1 => 1,
        CAP_V2 | CAP_V3 => 2,
        _ => {
            k.mm.write_val(hdr, &CAP_V3)?;
            return Err(Errno::EINVAL);
        }
    };
    if h[1] as i32 != 0 && h[1] != k.task.tg.pid {
        return Err(Errno::ESRCH);
    }
    Ok(words)
}

/// capget: the program's virtual capabilities.
pub fn capget(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let words = cap_header(k, a[0])?;
    if a[1] == 0 {
        return Ok(0);
    }
    let c = k.tg().creds.caps;
    let mut out = [0u32; 6];
    for w in 0..words {
        let part = |v: u64| (v >> (32 * w)) as u32;
        out[w * 3..w * 3 + 3].copy_from_slice(&[part(c.effective), part(c.permitted), part(c.inheritable)]);
    }
    let bytes: Vec<u8> = out[..words * 3].iter().flat_map(|v| v.to_le_bytes()).collect();
    k.mm.write_user(a[1], &bytes).map(|_| 0)
}

/// capset: changes the virtual capabilities within Linux's rules.
pub fn capset(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let words = cap_header(k, a[0]).map_err(|e| if e == Errno::ESRCH { Errno::EPERM } else { e })?;
    let mut raw = [0u8; 24];
    k.mm.read_user(a[1], &mut raw[..words * 12])?;
    let word = |i: usize| u32::from_le_bytes(raw[i * 4..i * 4 + 4].try_into().expect("4 bytes")) as u64;
    let set = |i: usize| (0..words).fold(0u64, |acc, w| acc | word(w * 3 + i) << (32 * w));
    let new = Caps { effective: set(0), permitted: set(1), inheritable: set(2) };
    k.tg().creds.set_caps(new).map(|_| 0).map_err(Errno)
}
