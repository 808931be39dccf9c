//! The program's address space: its mappings (VMAs), the page tables that
//! realise them, and access to user memory on the program's behalf.
//!
//! Pages are populated lazily, on the program's first touch (a page fault)
//! or when a system call reads or writes them, so a large reservation costs
//! nothing until used. Page-table entries always carry exactly their VMA's
//! permissions; there is no copy-on-write (no fork). A populated page of a
//! PROT_NONE mapping keeps its frame in a non-present entry, so its contents
//! survive until the protection is widened again.
//!
//! The VMM writes every entry itself. Changes that take a translation away
//! or narrow it are also queued as "kernel operations": the guest kernel
//! rewrites those entries in place before the program runs again, which
//! makes a shadow-paging KVM drop what it cached (it only notices writes
//! made by the guest), then flushes the TLB.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use dmvx_abi::KopsOp;

use crate::arch::x86_64::layout::{direct_map, USER_END, USER_MIN};
use crate::arch::x86_64::paging::{pte, PageTables};
use crate::kernel::errno::{Errno, SysResult};
use crate::kernel::layout::Layout;
use crate::memory::{FrameAllocator, GuestMemory, SharedFrames, PAGE_SIZE};

mod usercopy;
pub use usercopy::{HostIov, Pod};

pub const PROT_READ: u32 = 1;
pub const PROT_WRITE: u32 = 2;
pub const PROT_EXEC: u32 = 4;
const PROT_ALL: u32 = PROT_READ | PROT_WRITE | PROT_EXEC;

/// Pages populated together on an anonymous or file fault.
const FAULT_AROUND_PAGES: u64 = 16;

/// Rounds up to a page boundary (saturating).
#[inline]
pub fn page_up(x: u64) -> u64 {
    x.saturating_add(PAGE_SIZE - 1) & !(PAGE_SIZE - 1)
}

/// Rounds down to a page boundary.
#[inline]
pub fn page_down(x: u64) -> u64 {
    x & !(PAGE_SIZE - 1)
}

/// What backs a mapping's pages that have not been populated yet.
#[derive(Clone, Debug)]
pub enum Backing {
    /// Zero pages.
    Anon,
    /// The file's contents from `offset` (the file offset of the VMA's
    /// start); zero beyond its end. `writeback`: a shared mapping of a
    /// file opened for writing, whose pages go back to the file at msync,
    /// munmap and the program's end (`Mm::write_back`).
    File { fd: Arc<OwnedFd>, offset: u64, writeback: bool },
}

/// What a mapping is, for reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmaKind {
    Mapping,
    Program,
    Heap,
    Stack,
}

/// One mapping.
#[derive(Clone, Debug)]
pub struct Vma {
    pub start: u64,
    pub end: u64,
    pub prot: u32,
    pub shared: bool,
    pub backing: Backing,
    pub kind: VmaKind,
}

impl Vma {
    /// Splits at `at` (strictly inside): self keeps the low part.
    fn split_off(&mut self, at: u64) -> Vma {
        debug_assert!(self.start < at && at < self.end);
        let mut hi = self.clone();
        hi.start = at;
        if let Backing::File { offset, .. } = &mut hi.backing {
            *offset += at - self.start;
        }
        self.end = at;
        hi
    }

    fn allows(&self, access: Access) -> bool {
        match access {
            Access::Read => self.prot & PROT_ALL != 0,
            Access::Write => self.prot & PROT_WRITE != 0,
            Access::Exec => self.prot & PROT_EXEC != 0,
        }
    }
}

/// The kind of access that faulted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    Exec,
}

/// Why an access cannot be satisfied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// No mapping at the address (SEGV_MAPERR).
    Unmapped,
    /// A mapping that forbids the access (SEGV_ACCERR).
    Denied,
    /// Guest memory is exhausted.
    OutOfMemory,
}

/// Page-table entry flags for a protection, or `None` for PROT_NONE.
#[inline]
fn pte_flags(prot: u32) -> Option<u64> {
    if prot & PROT_ALL == 0 {
        return None;
    }
    let mut f = pte::PRESENT | pte::USER | pte::ACCESSED | pte::DIRTY;
    if prot & PROT_WRITE != 0 {
        f |= pte::WRITABLE;
    }
    if prot & PROT_EXEC == 0 {
        f |= pte::NO_EXECUTE;
    }
    Some(f)
}

/// Whether replacing entry `old` by `new` takes anything away.
#[inline]
fn narrows(old: u64, new: u64) -> bool {
    old & pte::PRESENT != 0
        && (new & pte::PRESENT == 0
            || (old ^ new) & pte::ADDR_MASK != 0
            || (old & pte::WRITABLE != 0 && new & pte::WRITABLE == 0)
            || (old & pte::NO_EXECUTE == 0 && new & pte::NO_EXECUTE != 0))
}

/// Which part of the address space an mmap without a usable hint takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    /// Below 2 GiB (MAP_32BIT).
    Low32,
    /// Anonymous memory (see `layout`: its top moves in 64 MiB steps).
    Anon,
    /// Files, the interpreter, and what does not fit the anonymous area.
    File,
}

/// The address space.
pub struct Mm {
    pub mem: GuestMemory,
    pub frames: FrameAllocator,
    pt: PageTables,
    vmas: BTreeMap<u64, Vma>,
    /// Entries the guest must rewrite before user code runs again.
    kops: Vec<KopsOp>,
    /// Frames whose entries were cleared while `kops` waited: the guest
    /// may still reach them through a translation it caches until it has
    /// rewritten the entries (with the ring on, the program runs while the
    /// VMM handles a request it posted itself), so they are given out again
    /// only after that (`kops_applied`).
    retired: Vec<u64>,
    pub layout: Layout,
    /// Start of the heap, and its current end (the program break).
    pub brk_start: u64,
    pub brk: u64,
    /// Pages populated, for statistics.
    pub pages_populated: u64,
    /// Frames for MAP_SHARED anonymous memory, shared with the VMMs of the
    /// program's other processes (none: shared mappings are private).
    pub shared: Option<Arc<SharedFrames>>,
}

impl Mm {
    pub fn new(mem: GuestMemory, frames: FrameAllocator, pt: PageTables, layout: Layout) -> Self {
        Mm {
            mem,
            frames,
            pt,
            vmas: BTreeMap::new(),
            kops: Vec::new(),
            retired: Vec::new(),
            layout,
            brk_start: 0,
            brk: 0,
            pages_populated: 0,
            shared: None,
        }
    }

    /// A frame for a page of `v`: from the shared region for shared
    /// anonymous memory, else private.
    fn alloc_frame(&mut self, v: &Vma) -> Option<u64> {
        match &self.shared {
            Some(s) if v.shared && matches!(v.backing, Backing::Anon) => s.alloc(&self.mem),
            _ => self.frames.alloc(&self.mem),
        }
    }

    /// Gives a frame back where it came from.
    fn free_frame(&mut self, frame: u64) {
        match &self.shared {
            Some(s) if s.owns(frame) => s.put(frame),
            _ => self.frames.free(frame),
        }
    }

    /// Gives back `frame`, whose entry was just cleared: at once, unless
    /// entries wait for the guest to rewrite them (then once it has).
    fn release_frame(&mut self, frame: u64) {
        if self.kops.is_empty() {
            self.free_frame(frame);
        } else {
            self.retired.push(frame);
        }
    }

    /// The guest has rewritten every queued entry and flushed its TLB: no
    /// translation of a retired frame is left, so they can be given out.
    pub fn kops_applied(&mut self) {
        debug_assert!(self.kops.is_empty());
        for f in std::mem::take(&mut self.retired) {
            self.free_frame(f);
        }
    }

    /// Before a fork: every page of the shared anonymous mappings exists
    /// (so parent and child map the same frames), and the child holds a
    /// reference to each (and to each retired shared frame, which it will
    /// give back too).
    pub fn share_for_fork(&mut self) -> Result<(), Fault> {
        let Some(sf) = self.shared.clone() else { return Ok(()) };
        for &f in &self.retired {
            if sf.owns(f) {
                sf.get(f);
            }
        }
        let shared: Vec<Vma> =
            self.vmas.values().filter(|v| v.shared && matches!(v.backing, Backing::Anon)).cloned().collect();
        for v in &shared {
            self.fill(v, v.start, v.end, None)?;
            self.for_each_populated(v.start, v.end, |_, _, _, e| sf.get(e & pte::ADDR_MASK));
        }
        Ok(())
    }

    /// The page tables (CR3 root).
    pub fn page_tables(&self) -> &PageTables {
        &self.pt
    }

    /// The mapping containing `addr`.
    #[inline]
    pub fn find(&self, addr: u64) -> Option<&Vma> {
        self.vmas.range(..=addr).next_back().map(|(_, v)| v).filter(|v| addr < v.end)
    }

    /// All mappings, in address order.
    pub fn vmas(&self) -> impl Iterator<Item = &Vma> {
        self.vmas.values()
    }

    /// Whether `[start, end)` overlaps no mapping.
    pub fn is_free(&self, start: u64, end: u64) -> bool {
        if start < USER_MIN || end > USER_END || start >= end {
            return false;
        }
        match self.vmas.range(..end).next_back() {
            Some((_, v)) => v.end <= start,
            None => true,
        }
    }

    /// Whether `[start, end)` is covered by mappings without holes.
    pub fn is_fully_mapped(&self, start: u64, end: u64) -> bool {
        let mut at = start;
        while at < end {
            match self.find(at) {
                Some(v) => at = v.end,
                None => return false,
            }
        }
        true
    }

    /// A free range of `len` bytes: at `hint` if that is free, else the
    /// highest one below the top of `area`'s part of the address space.
    pub fn unmapped_area(&self, len: u64, hint: u64, area: Area) -> Option<u64> {
        if len == 0 || len > USER_END {
            return None;
        }
        if hint != 0 {
            let h = page_down(hint);
            if h.checked_add(len).is_some_and(|e| self.is_free(h, e)) {
                return Some(h);
            }
        }
        let l = &self.layout;
        match area {
            Area::Low32 => self.highest_free(len, 1 << 31, USER_MIN),
            Area::File => self.highest_free(len, l.mmap_top, l.mmap_bottom),
            // A full anonymous area spills into the file area.
            Area::Anon => self
                .highest_free(len, l.anon_top, l.anon_bottom)
                .or_else(|| self.highest_free(len, l.mmap_top, l.mmap_bottom)),
        }
    }

    /// The highest free range of `len` bytes in `[bottom, top)`.
    fn highest_free(&self, len: u64, top: u64, bottom: u64) -> Option<u64> {
        let mut end = top;
        for v in self.vmas.range(..top).rev().map(|(_, v)| v) {
            if v.end <= end && end - v.end >= len && end - len >= bottom {
                return Some(end - len);
            }
            end = end.min(v.start);
            if end < bottom + len {
                return None;
            }
        }
        (end >= bottom + len).then(|| end - len)
    }

    /// Adds a mapping over `[vma.start, vma.end)`, which must be free.
    pub fn insert(&mut self, vma: Vma) {
        debug_assert!(self.is_free(vma.start, vma.end));
        self.vmas.insert(vma.start, vma);
    }

    /// Makes `addr` a mapping boundary.
    fn split_at(&mut self, addr: u64) {
        let Some((&start, _)) = self.vmas.range(..addr).next_back() else {
            return;
        };
        let v = self.vmas.get_mut(&start).expect("key from range");
        if v.end > addr {
            let hi = v.split_off(addr);
            self.vmas.insert(addr, hi);
        }
    }

    /// Removes every mapping in `[start, end)` and frees its pages.
    pub fn unmap(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        self.split_at(start);
        self.split_at(end);
        // What the program wrote into shared file mappings reaches the
        // file before their pages go (errors cannot be reported, as Linux's).
        let _ = self.write_back(start, end);
        let keys: Vec<u64> = self.vmas.range(start..end).map(|(&k, _)| k).collect();
        for k in keys {
            let v = self.vmas.remove(&k).expect("key from range");
            self.clear_range(v.start, v.end);
        }
    }

    /// Changes the protection of `[start, end)`, which must be fully mapped.
    pub fn protect(&mut self, start: u64, end: u64, prot: u32) -> SysResult<()> {
        if !self.is_fully_mapped(start, end) {
            return Err(Errno::ENOMEM);
        }
        // As Linux: a shared mapping of a file not open for writing never
        // becomes writable.
        let readonly_shared_file = |v: &Vma| v.shared && matches!(v.backing, Backing::File { writeback: false, .. });
        if prot & PROT_WRITE != 0 && self.overlapping(start, end).any(readonly_shared_file) {
            return Err(Errno::EACCES);
        }
        self.split_at(start);
        self.split_at(end);
        for (_, v) in self.vmas.range_mut(start..end) {
            v.prot = prot;
        }
        let flags = pte_flags(prot).unwrap_or(0);
        self.for_each_populated(start, end, |mm, _va, slot, old| {
            mm.set_entry(slot, old, (old & pte::ADDR_MASK) | flags);
        });
        Ok(())
    }

    /// Drops the pages of `[start, end)` but keeps the mappings: the next
    /// touch sees zeroes (anonymous) or the file again (MADV_DONTNEED).
    pub fn discard(&mut self, start: u64, end: u64) {
        // A shared file mapping's pages come back from the file: what was
        // written there must be in it first.
        let _ = self.write_back(start, end);
        self.clear_range(start, end);
    }

    /// The mappings that overlap `[start, end)`, from the highest down
    /// (only those: an munmap must not walk every mapping).
    fn overlapping(&self, start: u64, end: u64) -> impl Iterator<Item = &Vma> {
        self.vmas.range(..end).rev().map(|(_, v)| v).take_while(move |v| v.end > start)
    }

    /// Writes the populated pages of the shared file mappings (`writeback`)
    /// in `[start, end)` to their files, as far as each file goes (never
    /// extending it: Linux does not either). Every populated page is
    /// written, changed or not. Pages stay mapped.
    pub fn write_back(&mut self, start: u64, end: u64) -> SysResult<()> {
        let vmas: Vec<Vma> = self
            .overlapping(start, end)
            .filter(|v| matches!(v.backing, Backing::File { writeback: true, .. }))
            .cloned()
            .collect();
        let mut result = Ok(());
        for v in vmas {
            let Backing::File { fd, offset, .. } = &v.backing else { continue };
            let raw = std::os::fd::AsRawFd::as_raw_fd(&**fd);
            // SAFETY: a zeroed stat is a valid buffer for fstat to fill.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: st is a live stat buffer; raw is open (held by the VMA).
            if unsafe { libc::fstat(raw, &mut st) } < 0 {
                result = Err(Errno::last());
                continue;
            }
            let size = st.st_size.max(0) as u64;
            let mut pages = Vec::new();
            self.for_each_populated(v.start.max(start), v.end.min(end), |_, va, _, e| {
                pages.push((va, e & pte::ADDR_MASK))
            });
            for (va, frame) in pages {
                let off = offset + (va - v.start);
                if off >= size {
                    continue;
                }
                let n = (size - off).min(PAGE_SIZE) as usize;
                let Some(host) = self.mem.host_ptr(frame, PAGE_SIZE) else { continue };
                // SAFETY: host points at n <= PAGE_SIZE bytes of a live guest frame.
                let r = unsafe { libc::pwrite(raw, host as *const libc::c_void, n, off as libc::off_t) };
                if r < 0 {
                    result = Err(Errno::last());
                }
            }
        }
        result
    }

    /// Moves the pages of `[old, old + len)` to `new` (free, disjoint) and
    /// the mapping with them.
    pub fn relocate(&mut self, old: u64, len: u64, new: u64) -> SysResult<()> {
        let end = old + len;
        self.split_at(old);
        self.split_at(end);
        let keys: Vec<u64> = self.vmas.range(old..end).map(|(&k, _)| k).collect();
        let mut moved = Vec::with_capacity(keys.len());
        for k in keys {
            let mut v = self.vmas.remove(&k).expect("key from range");
            let mut pages = Vec::new();
            self.for_each_populated(v.start, v.end, |mm, va, slot, e| {
                pages.push((va, e));
                mm.set_entry(slot, e, 0);
            });
            v.start = v.start - old + new;
            v.end = v.end - old + new;
            moved.push((v, pages));
        }
        for (v, pages) in moved {
            let shift = v.start;
            for (va, e) in pages {
                let to = va - old + new;
                debug_assert!(to >= shift);
                let slot = self.pt.entry_gpa_alloc(&self.mem, &mut self.frames, to, 1);
                if slot.and_then(|s| self.mem.write_u64(s, e)).is_none() {
                    self.release_frame(e & pte::ADDR_MASK);
                }
            }
            self.vmas.insert(v.start, v);
        }
        Ok(())
    }

    /// Grows or shrinks the mapping that ends at `end` in place to `new_end`.
    pub fn resize_in_place(&mut self, start: u64, end: u64, new_end: u64) {
        if new_end < end {
            self.unmap(new_end, end);
        } else if let Some((_, v)) = self.vmas.range_mut(..end).next_back() {
            debug_assert!(v.start <= start && v.end == end);
            v.end = new_end;
        }
    }

    /// Clears the entries of `[start, end)` and releases their frames.
    fn clear_range(&mut self, start: u64, end: u64) {
        self.for_each_populated(start, end, |mm, _va, slot, e| {
            mm.set_entry(slot, e, 0);
            mm.release_frame(e & pte::ADDR_MASK);
        });
    }

    /// Calls `f(self, va, slot_gpa, entry)` for each populated leaf entry
    /// (present, or holding the frame of a PROT_NONE page) in `[start, end)`,
    /// skipping absent tables whole.
    fn for_each_populated(&mut self, start: u64, end: u64, mut f: impl FnMut(&mut Self, u64, u64, u64)) {
        let mut va = page_down(start);
        while va < end {
            match self.pt.leaf_table(&self.mem, va) {
                Ok(table) => {
                    let stop = ((va | 0x1f_ffff) + 1).min(end);
                    while va < stop {
                        let slot = table + ((va >> 12) & 0x1ff) * 8;
                        let e = self.mem.read_u64(slot).unwrap_or(0);
                        if e & pte::ADDR_MASK != 0 {
                            f(self, va, slot, e);
                        }
                        va += PAGE_SIZE;
                    }
                }
                Err(span) => va = (va & !(span - 1)).saturating_add(span),
            }
        }
    }

    /// Writes an entry; if that takes something away, queues the guest
    /// rewrite that makes KVM notice.
    #[inline]
    fn set_entry(&mut self, slot: u64, old: u64, new: u64) {
        if self.mem.write_u64(slot, new).is_none() {
            return;
        }
        if narrows(old, new) {
            let dst = direct_map(slot);
            if let Some(last) = self.kops.last_mut() {
                if last.dst + last.qwords * 8 == dst {
                    last.qwords += 1;
                    return;
                }
            }
            self.kops.push(KopsOp { dst, src: dst, qwords: 1 });
        }
    }

    /// Whether entries wait for the guest to rewrite them.
    #[inline]
    pub fn has_kops(&self) -> bool {
        !self.kops.is_empty()
    }

    /// Takes up to `max` queued operations.
    pub fn take_kops(&mut self, max: usize) -> Vec<KopsOp> {
        let n = self.kops.len().min(max);
        self.kops.drain(..n).collect()
    }

    /// Populates the page at `va` and, with `around`, up to
    /// FAULT_AROUND_PAGES neighbours in the same mapping; returns the frame
    /// of `va`.
    fn populate(&mut self, va: u64, around: bool) -> Result<u64, Fault> {
        let v = self.find(va).ok_or(Fault::Unmapped)?.clone();
        let page = page_down(va);
        let (lo, hi) = if around {
            let block = FAULT_AROUND_PAGES * PAGE_SIZE;
            ((page & !(block - 1)).max(v.start), ((page & !(block - 1)) + block).min(v.end))
        } else {
            (page, page + PAGE_SIZE)
        };
        self.fill(&v, lo, hi, Some(page))?.ok_or(Fault::OutOfMemory)
    }

    /// Populates the pages of `[lo, hi)` (inside `v`) that are not yet, and
    /// returns the frame of page `want` if given. File contents arrive with
    /// one host read per contiguous run. Out of memory is an error only for
    /// `want` (or for everything when there is no `want`).
    fn fill(&mut self, v: &Vma, lo: u64, hi: u64, want: Option<u64>) -> Result<Option<u64>, Fault> {
        let flags = pte_flags(v.prot).ok_or(Fault::Denied)?;
        let mut reads = FileReads::default();
        let mut target = None;
        let mut p = lo;
        while p < hi {
            let slot = self.pt.entry_gpa_alloc(&self.mem, &mut self.frames, p, 1).ok_or(Fault::OutOfMemory)?;
            let e = self.mem.read_u64(slot).unwrap_or(0);
            let frame = if e & pte::ADDR_MASK != 0 {
                if e & pte::PRESENT == 0 {
                    self.mem.write_u64(slot, (e & pte::ADDR_MASK) | flags).ok_or(Fault::OutOfMemory)?;
                }
                reads.flush();
                e & pte::ADDR_MASK
            } else {
                let Some(frame) = self.alloc_frame(v) else {
                    reads.flush();
                    if want.is_none() || want == Some(p) {
                        return Err(Fault::OutOfMemory);
                    }
                    break;
                };
                if let Backing::File { fd, offset, .. } = &v.backing {
                    let host = self.mem.host_ptr(frame, PAGE_SIZE).ok_or(Fault::OutOfMemory)?;
                    reads.push(fd, offset + (p - v.start), host);
                }
                self.mem.write_u64(slot, frame | flags).ok_or(Fault::OutOfMemory)?;
                self.pages_populated += 1;
                frame
            };
            if want == Some(p) {
                target = Some(frame);
            }
            p += PAGE_SIZE;
        }
        reads.flush();
        Ok(target)
    }

    /// Resolves a page fault of the program at `addr`. `Ok` means the access
    /// can be retried.
    pub fn fault(&mut self, addr: u64, access: Access) -> Result<(), Fault> {
        let v = self.find(addr).ok_or(Fault::Unmapped)?;
        if !v.allows(access) {
            return Err(Fault::Denied);
        }
        let e = self.pt.leaf(&self.mem, addr);
        if e & pte::PRESENT != 0 {
            // Spurious: permissions were widened after the TLB cached the
            // entry (the fault itself refreshed it). Check they really allow it.
            let ok = match access {
                Access::Read => true,
                Access::Write => e & pte::WRITABLE != 0,
                Access::Exec => e & pte::NO_EXECUTE == 0,
            };
            return if ok { Ok(()) } else { Err(Fault::Denied) };
        }
        self.populate(addr, true).map(|_| ())
    }

    /// Maps pages of `[start, end)` now (MAP_POPULATE, program loading).
    pub fn populate_range(&mut self, start: u64, end: u64) -> Result<(), Fault> {
        let mut at = page_down(start);
        while at < end {
            let v = self.find(at).ok_or(Fault::Unmapped)?.clone();
            let stop = v.end.min(page_up(end));
            self.fill(&v, at, stop, None)?;
            at = stop;
        }
        Ok(())
    }
}

/// Pending reads of file contents into fresh frames, merged into one
/// `preadv` per contiguous run of the file.
#[derive(Default)]
struct FileReads {
    fd: i32,
    offset: u64,
    iov: Vec<libc::iovec>,
}

impl FileReads {
    const MAX: usize = 1024;

    fn push(&mut self, fd: &OwnedFd, offset: u64, host: *mut u8) {
        let next = self.offset + (self.iov.len() as u64) * PAGE_SIZE;
        if !self.iov.is_empty() && (self.fd != fd.as_raw_fd() || next != offset || self.iov.len() == Self::MAX) {
            self.flush();
        }
        if self.iov.is_empty() {
            self.fd = fd.as_raw_fd();
            self.offset = offset;
        }
        self.iov.push(libc::iovec { iov_base: host.cast(), iov_len: PAGE_SIZE as usize });
    }

    /// Reads what is pending. A short or failed read leaves zeroes, as
    /// past the end of a file.
    fn flush(&mut self) {
        if self.iov.is_empty() {
            return;
        }
        // SAFETY: each iovec covers one whole frame of guest memory
        // (bounds-checked by host_ptr); the descriptor is open.
        let _ = unsafe { libc::preadv(self.fd, self.iov.as_ptr(), self.iov.len() as i32, self.offset as i64) };
        self.iov.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mm() -> Mm {
        let mem = GuestMemory::new(16 << 20, 2 << 20).unwrap();
        let mut frames = FrameAllocator::new(4 << 20, 16 << 20);
        let pt = PageTables::new(&mem, &mut frames).unwrap();
        Mm::new(mem, frames, pt, Layout::fixed(0))
    }

    fn anon(start: u64, end: u64, prot: u32) -> Vma {
        Vma { start, end, prot, shared: false, backing: Backing::Anon, kind: VmaKind::Mapping }
    }

    #[test]
    fn lazy_population_and_fault_around() {
        let mut m = mm();
        m.insert(anon(0x10_0000, 0x10_0000 + (1 << 30), PROT_READ | PROT_WRITE));
        let before = m.frames.in_use();
        m.fault(0x10_0000 + 5 * PAGE_SIZE, Access::Write).unwrap();
        // One 16-page block plus the page tables above it.
        assert_eq!(m.frames.in_use() - before, FAULT_AROUND_PAGES + 3);
        assert!(!m.has_kops());
    }

    #[test]
    fn prot_none_reservation_costs_nothing_and_faults() {
        let mut m = mm();
        m.insert(anon(0x100_0000, 0x100_0000 + (1 << 30), 0));
        assert_eq!(m.fault(0x100_0000, Access::Read), Err(Fault::Denied));
        assert_eq!(m.fault(0x10, Access::Read), Err(Fault::Unmapped));
        assert_eq!(m.translate(0x100_0000, false), Err(Errno::EFAULT));
    }

    #[test]
    fn narrowing_queues_guest_rewrites_widening_does_not() {
        let mut m = mm();
        m.insert(anon(0x10_0000, 0x20_0000, PROT_READ));
        m.populate_range(0x10_0000, 0x10_4000).unwrap();
        m.protect(0x10_0000, 0x10_4000, PROT_READ | PROT_WRITE).unwrap();
        assert!(!m.has_kops());
        m.protect(0x10_1000, 0x10_3000, PROT_READ).unwrap();
        let ops = m.take_kops(100);
        assert_eq!(ops.len(), 1);
        assert_eq!(ops[0].qwords, 2);
        assert_eq!(ops[0].src, ops[0].dst);
        m.unmap(0x10_0000, 0x20_0000);
        assert_eq!(m.take_kops(100).iter().map(|o| o.qwords).sum::<u64>(), 4);
        assert!(m.find(0x10_0000).is_none());
    }

    #[test]
    fn unmapped_frames_wait_for_the_guest_rewrite() {
        let mut m = mm();
        m.insert(anon(0x10_0000, 0x20_0000, PROT_READ | PROT_WRITE));
        m.populate_range(0x10_0000, 0x10_2000).unwrap();
        let used = m.frames.in_use();
        m.unmap(0x10_0000, 0x10_2000);
        // Still cached by the guest until it rewrites the entries: not reused.
        assert_eq!(m.frames.in_use(), used);
        m.insert(anon(0x10_0000, 0x10_2000, PROT_READ | PROT_WRITE));
        m.populate_range(0x10_0000, 0x10_2000).unwrap();
        assert_eq!(m.frames.in_use(), used + 2);
        while m.has_kops() {
            m.take_kops(100);
        }
        m.kops_applied();
        assert_eq!(m.frames.in_use(), used);
    }

    #[test]
    fn prot_none_keeps_contents() {
        let mut m = mm();
        m.insert(anon(0x10_0000, 0x10_1000, PROT_READ | PROT_WRITE));
        m.write_user(0x10_0010, b"kept").unwrap();
        m.protect(0x10_0000, 0x10_1000, 0).unwrap();
        assert_eq!(m.take_kops(10).len(), 1);
        assert_eq!(m.read_user(0x10_0010, &mut [0u8; 4]), Err(Errno::EFAULT));
        m.protect(0x10_0000, 0x10_1000, PROT_READ).unwrap();
        let mut b = [0u8; 4];
        m.read_user(0x10_0010, &mut b).unwrap();
        assert_eq!(&b, b"kept");
        let used = m.frames.in_use();
        m.unmap(0x10_0000, 0x10_1000);
        // Given back once the guest has rewritten the entry.
        m.take_kops(10);
        m.kops_applied();
        assert_eq!(m.frames.in_use(), used - 1);
    }

    #[test]
    fn unmapped_area_is_top_down_and_respects_hints() {
        let mut m = mm();
        let a = m.unmapped_area(0x4000, 0, Area::File).unwrap();
        assert_eq!(a, m.layout.mmap_top - 0x4000);
        m.insert(anon(a, a + 0x4000, PROT_READ));
        let b = m.unmapped_area(0x1000, 0, Area::File).unwrap();
        assert_eq!(b, a - 0x1000);
        assert_eq!(m.unmapped_area(0x1000, 0x5000_0000, Area::File), Some(0x5000_0000));
        assert!(m.unmapped_area(0x1000, 0, Area::Low32).unwrap() < 1 << 31);
    }

    #[test]
    fn user_access_checks_every_byte() {
        let mut m = mm();
        m.insert(anon(0x10_0000, 0x10_2000, PROT_READ | PROT_WRITE));
        m.write_user(0x10_0ffe, b"abcd").unwrap();
        let mut b = [0u8; 4];
        m.read_user(0x10_0ffe, &mut b).unwrap();
        assert_eq!(&b, b"abcd");
        assert_eq!(m.write_user(0x10_1ffe, b"abcd"), Err(Errno::EFAULT));
        assert_eq!(m.read_user(u64::MAX - 1, &mut b), Err(Errno::EFAULT));
        assert_eq!(Mm::range_ok(0x10_0000, u64::MAX), Err(Errno::EFAULT));
        m.write_user(0x10_0000, b"hello\0").unwrap();
        assert_eq!(m.read_cstr(0x10_0000, 100).unwrap(), b"hello");
        assert_eq!(m.read_cstr(0x10_0000, 3), Err(Errno::ENAMETOOLONG));
    }
}
