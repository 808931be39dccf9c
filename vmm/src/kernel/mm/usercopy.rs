//! Access to user memory on the program's behalf: every address is checked
//! against the program's mappings (EFAULT where the program itself would
//! fault), pages are populated as the mapping allows, and guest buffers reach
//! host system calls as iovecs without a copy.

use super::{Access, Mm};
use crate::arch::x86_64::layout::{USER_END, USER_MIN};
use crate::arch::x86_64::paging::pte;
use crate::kernel::errno::{Errno, SysResult};
use crate::memory::PAGE_SIZE;

impl Mm {
    /// Guest physical address of user address `va` for an access by the
    /// VMM on the program's behalf, populating the page if its mapping
    /// allows. EFAULT where the program itself would fault.
    #[inline]
    pub fn translate(&mut self, va: u64, write: bool) -> SysResult<u64> {
        if !(USER_MIN..USER_END).contains(&va) {
            return Err(Errno::EFAULT);
        }
        let e = self.pt.leaf(&self.mem, va);
        let need = pte::PRESENT | pte::USER | if write { pte::WRITABLE } else { 0 };
        if e & need == need {
            return Ok((e & pte::ADDR_MASK) | (va & (PAGE_SIZE - 1)));
        }
        if e & pte::PRESENT != 0 {
            return Err(Errno::EFAULT);
        }
        let v = self.find(va).ok_or(Errno::EFAULT)?;
        if !v.allows(if write { Access::Write } else { Access::Read }) {
            return Err(Errno::EFAULT);
        }
        let frame = self.populate(va, false).map_err(|_| Errno::EFAULT)?;
        Ok(frame | (va & (PAGE_SIZE - 1)))
    }

    /// Checks that `[va, va + len)` lies in user space (Linux's access_ok).
    #[inline]
    pub fn range_ok(va: u64, len: u64) -> SysResult<()> {
        match va.checked_add(len) {
            Some(end) if end <= USER_END => Ok(()),
            _ => Err(Errno::EFAULT),
        }
    }

    /// Copies program memory at `va` into `buf`.
    pub fn read_user(&mut self, va: u64, buf: &mut [u8]) -> SysResult<()> {
        Self::range_ok(va, buf.len() as u64)?;
        let mut done = 0;
        while done < buf.len() {
            let a = va + done as u64;
            let n = ((PAGE_SIZE - (a & (PAGE_SIZE - 1))) as usize).min(buf.len() - done);
            let gpa = self.translate(a, false)?;
            self.mem.read(gpa, &mut buf[done..done + n]).ok_or(Errno::EFAULT)?;
            done += n;
        }
        Ok(())
    }

    /// Copies `data` into program memory at `va`.
    pub fn write_user(&mut self, va: u64, data: &[u8]) -> SysResult<()> {
        Self::range_ok(va, data.len() as u64)?;
        let mut done = 0;
        while done < data.len() {
            let a = va + done as u64;
            let n = ((PAGE_SIZE - (a & (PAGE_SIZE - 1))) as usize).min(data.len() - done);
            let gpa = self.translate(a, true)?;
            self.mem.write(gpa, &data[done..done + n]).ok_or(Errno::EFAULT)?;
            done += n;
        }
        Ok(())
    }

    /// Reads a plain-old-data value.
    pub fn read_val<T: Pod>(&mut self, va: u64) -> SysResult<T> {
        let mut v = T::zeroed();
        self.read_user(va, v.as_bytes_mut())?;
        Ok(v)
    }

    /// Writes a plain-old-data value.
    pub fn write_val<T: Pod>(&mut self, va: u64, v: &T) -> SysResult<()> {
        self.write_user(va, v.as_bytes())
    }

    /// Reads a NUL-terminated string of at most `max` bytes (without NUL).
    pub fn read_cstr(&mut self, va: u64, max: usize) -> SysResult<Vec<u8>> {
        let mut out = Vec::new();
        let mut a = va;
        loop {
            if a >= USER_END {
                return Err(Errno::EFAULT);
            }
            let gpa = self.translate(a, false)?;
            let n = (PAGE_SIZE - (a & (PAGE_SIZE - 1))) as usize;
            let p = self.mem.host_ptr(gpa, n as u64).ok_or(Errno::EFAULT)?;
            // SAFETY: `p..p+n` is inside guest memory (checked by host_ptr)
            // and the guest is not running while the VMM handles its call.
            let chunk = unsafe { std::slice::from_raw_parts(p, n) };
            if let Some(z) = chunk.iter().position(|&c| c == 0) {
                out.extend_from_slice(&chunk[..z]);
                if out.len() > max {
                    return Err(Errno::ENAMETOOLONG);
                }
                return Ok(out);
            }
            out.extend_from_slice(chunk);
            if out.len() > max {
                return Err(Errno::ENAMETOOLONG);
            }
            a += n as u64;
        }
    }

    /// Appends host iovecs covering up to `len` bytes of program memory at
    /// `va` to `iov`, for the host kernel to read (`write == false`) or fill
    /// (`write == true`) directly. Stops early at an inaccessible page or a
    /// full `iov`; returns the bytes covered. EFAULT if the first byte is
    /// inaccessible.
    pub fn user_iov(&mut self, va: u64, len: u64, write: bool, iov: &mut HostIov) -> SysResult<u64> {
        Self::range_ok(va, len)?;
        let mut done = 0u64;
        while done < len {
            let a = va + done;
            let n = (PAGE_SIZE - (a & (PAGE_SIZE - 1))).min(len - done);
            let gpa = match self.translate(a, write) {
                Ok(g) => g,
                Err(e) if done == 0 && iov.total == 0 => return Err(e),
                Err(_) => break,
            };
            let host = self.mem.host_ptr(gpa, n).ok_or(Errno::EFAULT)?;
            if !iov.push(host, n as usize) {
                break;
            }
            done += n;
        }
        Ok(done)
    }
}

/// Host iovecs over guest memory, built without allocating.
pub struct HostIov {
    pub iov: [libc::iovec; Self::MAX],
    pub len: usize,
    pub total: usize,
}

impl Default for HostIov {
    fn default() -> Self {
        HostIov { iov: [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; Self::MAX], len: 0, total: 0 }
    }
}

impl HostIov {
    /// Segments per host call (contiguous frames merge into one).
    pub const MAX: usize = 64;

    /// Appends `[p, p + n)`; false if full.
    #[inline]
    fn push(&mut self, p: *mut u8, n: usize) -> bool {
        if self.len > 0 {
            let last = &mut self.iov[self.len - 1];
            if (last.iov_base as usize) + last.iov_len == p as usize {
                last.iov_len += n;
                self.total += n;
                return true;
            }
        }
        if self.len == Self::MAX {
            return false;
        }
        self.iov[self.len] = libc::iovec { iov_base: p.cast(), iov_len: n };
        self.len += 1;
        self.total += n;
        true
    }

    /// Appends a VMM buffer (valid until the list is used).
    pub fn push_host(&mut self, p: *mut u8, n: usize) -> bool {
        self.push(p, n)
    }

    /// Empties the list.
    #[inline]
    pub fn clear(&mut self) {
        self.len = 0;
        self.total = 0;
    }

    /// The bytes behind the list, segment by segment.
    pub fn slices(&self) -> impl Iterator<Item = &[u8]> {
        self.iov[..self.len].iter().map(|v| {
            // SAFETY: every segment was built by `Mm::user_iov` (guest memory,
            // bounds-checked) or `push_host` (a live VMM buffer), and the
            // guest does not run while the VMM handles its call.
            unsafe { std::slice::from_raw_parts(v.iov_base as *const u8, v.iov_len) }
        })
    }

    /// Copies `data` into the list's segments, in order (as far as it goes).
    pub fn fill_from(&self, mut data: &[u8]) {
        for v in &self.iov[..self.len] {
            if data.is_empty() {
                break;
            }
            let k = v.iov_len.min(data.len());
            // SAFETY: as in `slices`; the segments of a list built for writing
            // are writable guest memory (Mm::user_iov checked the mapping).
            unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), v.iov_base as *mut u8, k) };
            data = &data[k..];
        }
    }

    /// Pointer and count for readv/writev.
    #[inline]
    pub fn as_raw(&self) -> (*const libc::iovec, i32) {
        (self.iov.as_ptr(), self.len as i32)
    }
}

/// Types whose every bit pattern is valid, copied to and from user memory.
///
/// # Safety
/// Implementors must be `repr(C)` (or primitive) with no padding-dependent
/// invariants and no pointers the VMM dereferences.
pub unsafe trait Pod: Copy {
    fn zeroed() -> Self {
        // SAFETY: Pod types accept any bit pattern, including all zeroes.
        unsafe { std::mem::zeroed() }
    }
    fn as_bytes(&self) -> &[u8] {
        // SAFETY: a Pod value is plain bytes of size_of::<Self>().
        unsafe { std::slice::from_raw_parts((self as *const Self).cast(), std::mem::size_of::<Self>()) }
    }
    fn as_bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above; any bytes written form a valid value.
        unsafe { std::slice::from_raw_parts_mut((self as *mut Self).cast(), std::mem::size_of::<Self>()) }
    }
}

// SAFETY: primitive integers and the listed libc structs are plain data.
unsafe impl Pod for u32 {}
// SAFETY: plain integer.
unsafe impl Pod for u64 {}
// SAFETY: plain integer.
unsafe impl Pod for i32 {}
// SAFETY: plain integer.
unsafe impl Pod for i64 {}
// SAFETY: arrays of plain data are plain data.
unsafe impl<T: Pod, const N: usize> Pod for [T; N] {}
// SAFETY: repr(C) struct of integers.
unsafe impl Pod for libc::timespec {}
// SAFETY: repr(C) struct of integers.
unsafe impl Pod for libc::timeval {}
// SAFETY: repr(C) struct of integers; the pointer field is only copied.
unsafe impl Pod for libc::iovec {}
// SAFETY: repr(C) struct of integers.
unsafe impl Pod for libc::stat {}
// SAFETY: repr(C) struct of integers.
unsafe impl Pod for libc::statx {}
// SAFETY: repr(C) struct of integers.
unsafe impl Pod for libc::rlimit64 {}
// SAFETY: repr(C) struct of integers.
unsafe impl Pod for libc::utsname {}
// SAFETY: repr(C) struct of integers.
unsafe impl Pod for libc::winsize {}
// SAFETY: repr(C) struct of integers.
unsafe impl Pod for libc::statfs {}
// SAFETY: repr(C) struct of integers.
unsafe impl Pod for libc::itimerspec {}
// SAFETY: repr(C) struct of integers.
unsafe impl Pod for libc::itimerval {}

#[cfg(test)]
#[path = "pod_tests.rs"]
mod pod_tests;
