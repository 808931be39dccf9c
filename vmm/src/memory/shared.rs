//! Frames of the shared region: a reference count per frame, in memory
//! shared by the VMMs of the program's processes (never guest memory), so
//! that a frame mapped by several processes is freed when the last one
//! unmaps it.

use std::sync::atomic::{AtomicU32, Ordering};

use super::{GuestMemory, PAGE_SIZE};

/// The shared region's frame allocator (a handle, valid across fork).
pub struct SharedFrames {
    counts: *mut AtomicU32,
    frames: u64,
    gpa: u64,
    len: usize,
}

// SAFETY: the counts are a fixed shared mapping used through atomics only.
unsafe impl Send for SharedFrames {}
// SAFETY: as above.
unsafe impl Sync for SharedFrames {}

impl Drop for SharedFrames {
    fn drop(&mut self) {
        // SAFETY: the mapping was made by `new` with this length.
        unsafe { libc::munmap(self.counts.cast(), self.len) };
    }
}

impl SharedFrames {
    /// The allocator of `mem`'s shared region, if it has one.
    pub fn of(mem: &GuestMemory) -> std::io::Result<Option<SharedFrames>> {
        let Some((gpa, _, size)) = mem.shared_region() else { return Ok(None) };
        let frames = size / PAGE_SIZE;
        let len = (frames as usize * 4).next_multiple_of(PAGE_SIZE as usize);
        // SAFETY: an anonymous shared mapping; the result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Some(SharedFrames { counts: p.cast(), frames, gpa, len }))
    }

    fn count(&self, i: u64) -> &AtomicU32 {
        debug_assert!(i < self.frames);
        // SAFETY: i < frames, so the counter lies inside the mapping; zeroed
        // memory is a valid AtomicU32.
        unsafe { &*self.counts.add(i as usize) }
    }

    /// Whether `frame` is one of the shared region's.
    #[inline]
    pub fn owns(&self, frame: u64) -> bool {
        frame >= self.gpa && frame < self.gpa + self.frames * PAGE_SIZE
    }

    /// A zeroed frame with one reference, or None when the region is full.
    pub fn alloc(&self, mem: &GuestMemory) -> Option<u64> {
        for i in 0..self.frames {
            if self.count(i).compare_exchange(0, 1, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                let frame = self.gpa + i * PAGE_SIZE;
                mem.zero(frame, PAGE_SIZE)?;
                return Some(frame);
            }
        }
        None
    }

    /// One more reference to `frame` (a forked child maps it too).
    pub fn get(&self, frame: u64) {
        if self.owns(frame) {
            self.count((frame - self.gpa) / PAGE_SIZE).fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Drops a reference to `frame`; the last one frees it.
    pub fn put(&self, frame: u64) {
        if self.owns(frame) {
            let c = self.count((frame - self.gpa) / PAGE_SIZE);
            let _ = c.fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| n.checked_sub(1));
        }
    }

    /// References held to `frame`.
    #[cfg(test)]
    fn refs(&self, frame: u64) -> u32 {
        if self.owns(frame) {
            self.count((frame - self.gpa) / PAGE_SIZE).load(Ordering::Acquire)
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_shared_by_count() {
        let mem = GuestMemory::with_shared(4 << 20, 2 << 20, 2 << 20).unwrap();
        let sf = SharedFrames::of(&mem).unwrap().unwrap();
        let f = sf.alloc(&mem).unwrap();
        assert!(sf.owns(f) && !sf.owns(4096));
        assert!(mem.write_u64(f, 7).is_some() && mem.read_u64(f) == Some(7));
        sf.get(f);
        sf.put(f);
        assert_eq!(sf.refs(f), 1);
        sf.put(f);
        assert_eq!(sf.refs(f), 0);
        // Freed frames are handed out again, zeroed.
        assert_eq!(sf.alloc(&mem), Some(f));
        assert_eq!(mem.read_u64(f), Some(0));
    }

    #[test]
    fn the_shared_region_is_one_copy_across_fork() {
        let mem = GuestMemory::with_shared(4 << 20, 2 << 20, 2 << 20).unwrap();
        let sf = SharedFrames::of(&mem).unwrap().unwrap();
        let f = sf.alloc(&mem).unwrap();
        // SAFETY: the child only writes guest memory and exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let _ = mem.write_u64(f, 0x5eed);
            let _ = mem.write_u64(4096, 0xdead);
            // SAFETY: _exit ends the child without running the parent's destructors.
            unsafe { libc::_exit(0) };
        }
        let mut st = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut st, 0) };
        assert_eq!(mem.read_u64(f), Some(0x5eed), "shared memory is one copy");
        assert_eq!(mem.read_u64(4096), Some(0), "private memory is copied on write");
    }
}
