//! The program's CPUs: a virtual set, the same in every variant.
//!
//! The VM has one vCPU and the program's threads take turns on it, but the
//! program is told of as many CPUs as a native process started where the
//! leader's VMM was would be (the CPUs that VMM may run on), so it sizes
//! its thread pools and prints `nproc` as it would natively. The number is
//! an input of the leader's host: the leader reads it once, before its
//! jail, and it reaches the followers replicated, at the first call that
//! needs it; a follower never uses its own host's. Every interface that
//! shows the set says the same: sched_getaffinity (and setaffinity within
//! the set), getcpu, /proc/cpuinfo, /proc/stat,
//! /sys/devices/system/cpu/{online,possible,present}.

use std::sync::OnceLock;

use super::errno::{Errno, SysResult};
use super::Kernel;

/// The largest virtual set (a guest mask is at most this many bits).
pub(crate) const MAX_CPUS: u32 = 1024;
/// Bytes of the largest mask.
const MASK_BYTES: usize = MAX_CPUS as usize / 8;

/// This host's count, read before the jail (which may hide /sys and refuse
/// the call).
static HOST_CPUS: OnceLock<u32> = OnceLock::new();

/// Reads this host's count: the CPUs this process may run on (its
/// affinity, what nproc counts natively), else the online CPUs.
pub(crate) fn init_host_cpus() {
    HOST_CPUS.get_or_init(|| {
        // SAFETY: a zeroed cpu_set_t is a valid empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: set is a live cpu_set_t of the size passed.
        let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
        // SAFETY: set was filled (or left empty) above.
        let n = if r == 0 { i64::from(unsafe { libc::CPU_COUNT(&set) }) } else { 0 };
        // SAFETY: sysconf has no memory preconditions.
        let n = if n > 0 { n } else { unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) } };
        n.clamp(1, MAX_CPUS as i64) as u32
    });
}

fn host_cpus() -> u32 {
    HOST_CPUS.get().copied().unwrap_or(1)
}

/// A set of virtual CPUs (bit i: CPU i).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuSet(Vec<u64>);

impl CpuSet {
    /// CPUs 0 to n - 1.
    pub fn all(n: u32) -> CpuSet {
        let mut words = vec![0u64; (n as usize).div_ceil(64)];
        for i in 0..n as usize {
            words[i / 64] |= 1 << (i % 64);
        }
        CpuSet(words)
    }

    /// The set in a guest's mask bytes (little-endian words), as far as
    /// `bytes` goes, intersected with CPUs 0 to n - 1.
    pub fn from_mask(bytes: &[u8], n: u32) -> CpuSet {
        let mut s = CpuSet::all(n);
        for (i, w) in s.0.iter_mut().enumerate() {
            let mut b = [0u8; 8];
            if let Some(src) = bytes.get(i * 8..) {
                let k = src.len().min(8);
                b[..k].copy_from_slice(&src[..k]);
            }
            *w &= u64::from_le_bytes(b);
        }
        s
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|&w| w == 0)
    }

    pub fn first(&self) -> u32 {
        self.0.iter().enumerate().find(|(_, &w)| w != 0).map_or(0, |(i, w)| i as u32 * 64 + w.trailing_zeros())
    }

    /// The mask as Linux copies it out: `len` bytes (the rest zero).
    pub fn to_mask(&self, len: usize) -> Vec<u8> {
        let mut out: Vec<u8> = self.0.iter().flat_map(|w| w.to_le_bytes()).collect();
        out.resize(len, 0);
        out
    }
}

/// Bytes of the kernel's cpumask for `n` CPUs (whole longs).
pub fn mask_size(n: u32) -> usize {
    (n as usize).div_ceil(64) * 8
}

/// "0" or "0-N": the list form of /sys/devices/system/cpu/online.
pub fn list(n: u32) -> String {
    if n <= 1 {
        "0\n".to_string()
    } else {
        format!("0-{}\n", n - 1)
    }
}

impl Kernel {
    /// How many virtual CPUs the program has: the leader's count,
    /// replicated at the first call that asks (and kept for the process,
    /// its children and its later programs, which inherit it).
    pub(crate) fn cpus(&mut self) -> u32 {
        if let Some(n) = self.cpus {
            return n;
        }
        let mut buf = [0u8; 4];
        let r = self.host_call(true, &mut buf, |_, out| {
            out.copy_from_slice(&host_cpus().to_le_bytes());
            Ok(0)
        });
        // The leader's word, checked: a count outside the virtual set's
        // bounds (or a replay that failed, which stops the run) is one CPU.
        let n = match r {
            Ok(_) => u32::from_le_bytes(buf),
            Err(_) => 1,
        };
        let n = if (1..=MAX_CPUS).contains(&n) { n } else { 1 };
        self.cpus = Some(n);
        n
    }

    /// The affinity of thread `tid` of this process (0: the caller).
    fn affinity_of(&mut self, tid: u32) -> SysResult<CpuSet> {
        let n = self.cpus();
        let set = if tid == 0 || tid == self.task.tid {
            self.task.affinity.clone()
        } else if let Some(i) = self.sched.find(tid) {
            self.sched.others[i].task.affinity.clone()
        } else if tid == self.task.tg.pid {
            // The main thread, gone while others run.
            None
        } else {
            return Err(Errno::ESRCH);
        };
        Ok(set.unwrap_or_else(|| CpuSet::all(n)))
    }
}

/// sched_getaffinity(tid, len, mask): the thread's set of virtual CPUs.
pub fn sched_getaffinity(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let set = k.affinity_of(a[0] as u32)?;
    let size = mask_size(k.cpus());
    // As Linux: the buffer must hold every possible CPU, in whole longs.
    if (a[1] as usize) < size || !a[1].is_multiple_of(8) {
        return Err(Errno::EINVAL);
    }
    let bytes = set.to_mask(size);
    k.mm.write_user(a[2], &bytes)?;
    Ok(size as u64)
}

/// sched_setaffinity(tid, len, mask): the set, within the virtual CPUs
/// (bits beyond them are ignored, as Linux ignores CPUs not present); an
/// empty intersection is EINVAL. Every thread still runs on the one vCPU.
pub fn sched_setaffinity(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let n = k.cpus();
    let tid = a[0] as u32;
    k.affinity_of(tid)?;
    let len = (a[1] as usize).min(MASK_BYTES).min(mask_size(n));
    let mut bytes = vec![0u8; len];
    k.mm.read_user(a[2], &mut bytes)?;
    let set = CpuSet::from_mask(&bytes, n);
    if set.is_empty() {
        return Err(Errno::EINVAL);
    }
    if tid == 0 || tid == k.task.tid {
        k.task.affinity = Some(set);
    } else if let Some(i) = k.sched.find(tid) {
        k.sched.others[i].task.affinity = Some(set);
    }
    Ok(0)
}

/// getcpu(cpu, node, cache): the first CPU of the caller's set, node 0.
pub fn getcpu(k: &mut Kernel, a: &[u64; 6]) -> SysResult {
    let cpu = k.affinity_of(0)?.first();
    if a[0] != 0 {
        k.mm.write_val(a[0], &cpu)?;
    }
    if a[1] != 0 {
        k.mm.write_val(a[1], &0u32)?;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_and_masks_as_linux_lays_them_out() {
        assert_eq!(CpuSet::all(2).to_mask(8), [3, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            CpuSet::all(65).to_mask(16),
            [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(mask_size(1), 8);
        assert_eq!(mask_size(64), 8);
        assert_eq!(mask_size(65), 16);
        assert_eq!(mask_size(MAX_CPUS), MASK_BYTES);
        // Bits beyond the virtual CPUs and beyond the guest's bytes are dropped.
        assert_eq!(CpuSet::from_mask(&[0xfe], 2), CpuSet(vec![2]));
        assert!(CpuSet::from_mask(&[0xfc], 2).is_empty());
        assert!(CpuSet::from_mask(&[], 4).is_empty());
        assert_eq!(CpuSet::from_mask(&[0, 0, 0, 0, 0, 0, 0, 0, 4], 70).first(), 66);
        assert_eq!(CpuSet::all(3).first(), 0);
        assert_eq!(list(1), "0\n");
        assert_eq!(list(2), "0-1\n");
    }
}
