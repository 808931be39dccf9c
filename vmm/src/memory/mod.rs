//! Guest physical memory: one anonymous region starting at guest address 0,
//! plus a page-frame allocator over the part the VMM hands out at run time;
//! optionally a second region, shared with the VMMs of the program's other
//! processes, for its MAP_SHARED memory (`shared`).
//!
//! Every access is bounds-checked against the region; a guest-supplied
//! address never reaches a raw pointer unchecked.

use std::sync::Arc;

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend as _, GuestMemoryMmap, GuestRegionMmap, MmapRegion};

mod shared;
pub use shared::SharedFrames;

/// Size of a page.
pub const PAGE_SIZE: u64 = 4096;

/// Errors of guest memory setup.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("guest memory of {size} bytes is too small: at least {min} bytes are needed")]
    TooSmall { size: u64, min: u64 },
    #[error("guest memory size {0} is not a multiple of 2 MiB")]
    Unaligned(u64),
    #[error("cannot allocate {size} bytes of guest memory: {source}")]
    Alloc { size: u64, source: vm_memory::mmap::FromRangesError },
    #[error("cannot allocate {size} bytes of shared guest memory: {reason}")]
    AllocShared { size: u64, reason: String },
}

/// The guest's physical memory. Cheap to clone (the mapping is shared) and
/// `Send + Sync`: reads and writes are bounds-checked volatile copies through
/// vm-memory, since a running vCPU may change guest memory at any time.
#[derive(Clone)]
pub struct GuestMemory {
    mmap: Arc<GuestMemoryMmap>,
    /// Host address of guest physical address 0 (the private region).
    base: usize,
    size: u64,
    /// The shared region: its guest physical address, host address, size.
    shared: Option<(u64, usize, u64)>,
}

impl std::fmt::Debug for GuestMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestMemory").field("size", &self.size).finish()
    }
}

impl GuestMemory {
    /// `size` bytes (a multiple of 2 MiB, at least `min`) of zeroed memory.
    pub fn new(size: u64, min: u64) -> Result<Self, MemoryError> {
        if size < min {
            return Err(MemoryError::TooSmall { size, min });
        }
        if !size.is_multiple_of(2 << 20) {
            return Err(MemoryError::Unaligned(size));
        }
        let mmap = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), size as usize)])
            .map_err(|source| MemoryError::Alloc { size, source })?;
        let region = mmap.iter().next().expect("one region was requested");
        let base = region.as_ptr() as usize;
        Ok(GuestMemory { mmap: Arc::new(mmap), base, size, shared: None })
    }

    /// Private memory of `size` bytes at 0 and, above it, `shared` bytes
    /// mapped MAP_SHARED: forked VMMs keep seeing one copy of it.
    pub fn with_shared(size: u64, min: u64, shared: u64) -> Result<Self, MemoryError> {
        if shared == 0 {
            return Self::new(size, min);
        }
        if size < min {
            return Err(MemoryError::TooSmall { size, min });
        }
        if !size.is_multiple_of(2 << 20) || !shared.is_multiple_of(2 << 20) {
            return Err(MemoryError::Unaligned(if size.is_multiple_of(2 << 20) { shared } else { size }));
        }
        let bad = |reason: String| MemoryError::AllocShared { size: shared, reason };
        let private = MmapRegion::<()>::new(size as usize).map_err(|e| bad(e.to_string()))?;
        let flags = libc::MAP_SHARED | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
        let common = MmapRegion::<()>::build(None, shared as usize, libc::PROT_READ | libc::PROT_WRITE, flags)
            .map_err(|e| bad(e.to_string()))?;
        // Above the private memory, on a 1 GiB boundary.
        let gpa = size.next_multiple_of(1 << 30);
        let r0 = GuestRegionMmap::new(private, GuestAddress(0)).ok_or_else(|| bad("region 0".into()))?;
        let r1 = GuestRegionMmap::new(common, GuestAddress(gpa)).ok_or_else(|| bad("region 1".into()))?;
        let mmap = GuestMemoryMmap::from_regions(vec![r0, r1]).map_err(|e| bad(e.to_string()))?;
        let (base, sbase) = {
            let mut it = mmap.iter();
            (it.next().expect("two regions").as_ptr() as usize, it.next().expect("two regions").as_ptr() as usize)
        };
        Ok(GuestMemory { mmap: Arc::new(mmap), base, size, shared: Some((gpa, sbase, shared)) })
    }

    /// The shared region's guest physical address, host address and size.
    pub fn shared_region(&self) -> Option<(u64, u64, u64)> {
        self.shared.map(|(g, b, s)| (g, b as u64, s))
    }

    /// The vm-memory view, for loaders that write through it.
    pub fn mmap(&self) -> &GuestMemoryMmap {
        &self.mmap
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Host address of the region, for KVM's memory slot.
    pub fn host_base(&self) -> u64 {
        self.base as u64
    }

    /// Whether `[gpa, gpa + len)` lies inside one region of guest memory.
    #[inline]
    pub fn contains(&self, gpa: u64, len: u64) -> bool {
        self.host_ptr(gpa, len).is_some()
    }

    /// Host pointer to `[gpa, gpa + len)`, if inside one region of guest
    /// memory. Only for handing guest buffers to a host system call
    /// (iovecs); the VMM's own accesses use the copies below.
    #[inline]
    pub fn host_ptr(&self, gpa: u64, len: u64) -> Option<*mut u8> {
        let end = gpa.checked_add(len)?;
        if end <= self.size {
            // The sum stays inside the mapping because of the check.
            return Some((self.base + gpa as usize) as *mut u8);
        }
        let (sgpa, sbase, ssize) = self.shared?;
        (gpa >= sgpa && end <= sgpa + ssize).then(|| (sbase + (gpa - sgpa) as usize) as *mut u8)
    }

    /// Bytes of guest memory the host has backed with pages (for --stats).
    pub fn resident_bytes(&self) -> u64 {
        let pages = self.size.div_ceil(PAGE_SIZE) as usize;
        let mut vec = vec![0u8; pages];
        // SAFETY: the range is the whole mapping; vec has one byte per page.
        let r = unsafe { libc::mincore(self.base as *mut libc::c_void, self.size as usize, vec.as_mut_ptr()) };
        if r != 0 {
            return 0;
        }
        vec.iter().filter(|&&b| b & 1 != 0).count() as u64 * PAGE_SIZE
    }

    /// Reads a little-endian u64.
    #[inline]
    pub fn read_u64(&self, gpa: u64) -> Option<u64> {
        self.mmap.read_obj::<u64>(GuestAddress(gpa)).ok()
    }

    /// Writes a little-endian u64.
    #[inline]
    pub fn write_u64(&self, gpa: u64, value: u64) -> Option<()> {
        self.mmap.write_obj(value, GuestAddress(gpa)).ok()
    }

    /// Copies `data` into guest memory at `gpa`.
    pub fn write(&self, gpa: u64, data: &[u8]) -> Option<()> {
        if !self.contains(gpa, data.len() as u64) {
            return None;
        }
        self.mmap.write_slice(data, GuestAddress(gpa)).ok()
    }

    /// Copies guest memory at `gpa` into `buf`.
    pub fn read(&self, gpa: u64, buf: &mut [u8]) -> Option<()> {
        if !self.contains(gpa, buf.len() as u64) {
            return None;
        }
        self.mmap.read_slice(buf, GuestAddress(gpa)).ok()
    }

    /// Zeroes `[gpa, gpa + len)`.
    pub fn zero(&self, gpa: u64, len: u64) -> Option<()> {
        if !self.contains(gpa, len) {
            return None;
        }
        static ZEROES: [u8; PAGE_SIZE as usize] = [0; PAGE_SIZE as usize];
        let mut at = gpa;
        while at < gpa + len {
            let n = (gpa + len - at).min(PAGE_SIZE);
            self.mmap.write_slice(&ZEROES[..n as usize], GuestAddress(at)).ok()?;
            at += n;
        }
        Some(())
    }
}

/// Hands out and takes back the guest frames of page tables and program pages.
#[derive(Debug)]
pub struct FrameAllocator {
    next: u64,
    end: u64,
    free: Vec<u64>,
    in_use: u64,
}

impl FrameAllocator {
    /// Frames from `[start, end)`, both page aligned.
    pub fn new(start: u64, end: u64) -> Self {
        FrameAllocator { next: start, end, free: Vec::new(), in_use: 0 }
    }

    /// A zeroed frame, or `None` when guest memory is exhausted.
    #[inline]
    pub fn alloc(&mut self, mem: &GuestMemory) -> Option<u64> {
        let frame = if let Some(f) = self.free.pop() {
            mem.zero(f, PAGE_SIZE)?;
            f
        } else if self.next < self.end {
            let f = self.next;
            self.next += PAGE_SIZE;
            f
        } else {
            return None;
        };
        self.in_use += 1;
        Some(frame)
    }

    /// Returns a frame. The caller guarantees no mapping refers to it any more.
    #[inline]
    pub fn free(&mut self, frame: u64) {
        debug_assert!(frame.is_multiple_of(PAGE_SIZE));
        self.in_use -= 1;
        self.free.push(frame);
    }

    /// Frames currently handed out.
    pub fn in_use(&self) -> u64 {
        self.in_use
    }

    /// Frames that can still be handed out.
    pub fn available(&self) -> u64 {
        (self.end - self.next) / PAGE_SIZE + self.free.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_checked() {
        let mem = GuestMemory::new(4 << 20, 2 << 20).unwrap();
        assert!(mem.read_u64((4 << 20) - 8).is_some());
        assert!(mem.read_u64((4 << 20) - 7).is_none());
        assert!(mem.read_u64(u64::MAX - 3).is_none());
        assert!(mem.host_ptr(0, u64::MAX).is_none());
        assert!(mem.write(4 << 20, &[1]).is_none());
    }

    #[test]
    fn too_small_and_unaligned_are_errors() {
        assert!(matches!(GuestMemory::new(2 << 20, 4 << 20), Err(MemoryError::TooSmall { .. })));
        assert!(matches!(GuestMemory::new((4 << 20) + 4096, 2 << 20), Err(MemoryError::Unaligned(_))));
    }

    #[test]
    fn recycled_frames_are_zeroed() {
        let mem = GuestMemory::new(4 << 20, 2 << 20).unwrap();
        let mut frames = FrameAllocator::new(2 << 20, 4 << 20);
        let f = frames.alloc(&mem).unwrap();
        mem.write_u64(f + 8, 42).unwrap();
        frames.free(f);
        let g = frames.alloc(&mem).unwrap();
        assert_eq!(g, f);
        assert_eq!(mem.read_u64(f + 8), Some(0));
        assert_eq!(frames.in_use(), 1);
    }
}
