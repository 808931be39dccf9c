//! 4-level x86-64 page tables, kept in guest memory and edited by the VMM.
//!
//! The VMM writes entries itself only when it *adds* a translation or
//! widens its permissions: a shadow-paging KVM re-walks the guest tables on
//! every fault, so such changes are seen. Changes that remove or narrow a
//! translation are handed to the guest kernel's kernel-operations routine
//! (see `process::mm`), because KVM only notices page-table writes made by
//! the guest. Page-table frames are never freed, so a frame KVM has seen as
//! a page table never comes back as anything else.

use crate::memory::{FrameAllocator, GuestMemory};

/// Page-table entry bits.
pub mod pte {
    pub const PRESENT: u64 = 1 << 0;
    pub const WRITABLE: u64 = 1 << 1;
    pub const USER: u64 = 1 << 2;
    pub const ACCESSED: u64 = 1 << 5;
    pub const DIRTY: u64 = 1 << 6;
    pub const HUGE: u64 = 1 << 7;
    pub const NO_EXECUTE: u64 = 1 << 63;
    /// Physical address bits of an entry.
    pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
}

/// Index of `va` in the table at `level` (4 = PML4 ... 1 = PT).
#[inline]
fn index(va: u64, level: u32) -> u64 {
    (va >> (12 + 9 * (level - 1))) & 0x1ff
}

/// Whether `va` is canonical with 48-bit addresses.
#[inline]
pub fn is_canonical(va: u64) -> bool {
    let top = va >> 47;
    top == 0 || top == 0x1_ffff
}

/// The page tables of one address space, rooted at `root` (the CR3 value).
#[derive(Debug, Clone, Copy)]
pub struct PageTables {
    root: u64,
}

impl PageTables {
    /// An empty address space.
    pub fn new(mem: &GuestMemory, frames: &mut FrameAllocator) -> Option<Self> {
        let root = frames.alloc(mem)?;
        Some(PageTables { root })
    }

    /// The guest physical address of the top-level table (CR3).
    pub fn root(&self) -> u64 {
        self.root
    }

    /// Guest physical address of the table entry for `va` at `level`
    /// (1 = the 4 KiB leaf), walking only tables that already exist.
    #[inline]
    pub fn entry_gpa(&self, mem: &GuestMemory, va: u64, level: u32) -> Option<u64> {
        let mut table = self.root;
        let mut l = 4;
        loop {
            let gpa = table + index(va, l) * 8;
            if l == level {
                return Some(gpa);
            }
            let e = mem.read_u64(gpa)?;
            if e & pte::PRESENT == 0 || e & pte::HUGE != 0 {
                return None;
            }
            table = e & pte::ADDR_MASK;
            l -= 1;
        }
    }

    /// The leaf table (level 1) covering `va`, or, if some table on the way
    /// is missing, the size of the address range that missing entry covers
    /// (so a range walk can skip it whole).
    #[inline]
    pub fn leaf_table(&self, mem: &GuestMemory, va: u64) -> Result<u64, u64> {
        let mut table = self.root;
        for l in (2..=4).rev() {
            let e = mem.read_u64(table + index(va, l) * 8).unwrap_or(0);
            if e & pte::PRESENT == 0 || e & pte::HUGE != 0 {
                return Err(1 << (12 + 9 * (l - 1)));
            }
            table = e & pte::ADDR_MASK;
        }
        Ok(table)
    }

    /// The leaf entry mapping `va`, or 0.
    #[inline]
    pub fn leaf(&self, mem: &GuestMemory, va: u64) -> u64 {
        self.entry_gpa(mem, va, 1).and_then(|g| mem.read_u64(g)).unwrap_or(0)
    }

    /// Guest physical address of the entry for `va` at `level`, creating the
    /// tables above it. New intermediate entries allow everything (even in
    /// the kernel half, which holds the user-executable syscall entry); the
    /// leaf decides. Returns `None` when guest memory is exhausted.
    pub fn entry_gpa_alloc(&self, mem: &GuestMemory, frames: &mut FrameAllocator, va: u64, level: u32) -> Option<u64> {
        let mut table = self.root;
        let mut l = 4;
        loop {
            let gpa = table + index(va, l) * 8;
            if l == level {
                return Some(gpa);
            }
            let e = mem.read_u64(gpa)?;
            if e & pte::HUGE != 0 {
                return None;
            }
            table = if e & pte::PRESENT != 0 {
                e & pte::ADDR_MASK
            } else {
                let t = frames.alloc(mem)?;
                let flags = pte::PRESENT | pte::WRITABLE | pte::ACCESSED | pte::USER;
                mem.write_u64(gpa, t | flags)?;
                t
            };
            l -= 1;
        }
    }

    /// Maps the 4 KiB page at `va` to frame `gpa` with `flags`. Only for a
    /// `va` that is not mapped now (see the module comment).
    pub fn map_new(&self, mem: &GuestMemory, frames: &mut FrameAllocator, va: u64, gpa: u64, flags: u64) -> Option<()> {
        let e = self.entry_gpa_alloc(mem, frames, va, 1)?;
        debug_assert!(mem.read_u64(e)? & pte::PRESENT == 0, "map_new over a present entry at {va:#x}");
        mem.write_u64(e, gpa | flags)
    }

    /// Maps `len` bytes at `va` to guest physical `gpa` with 2 MiB pages.
    pub fn map_huge(
        &self,
        mem: &GuestMemory,
        frames: &mut FrameAllocator,
        va: u64,
        gpa: u64,
        len: u64,
        flags: u64,
    ) -> Option<()> {
        const HUGE: u64 = 2 << 20;
        let mut off = 0;
        while off < len {
            let e = self.entry_gpa_alloc(mem, frames, va + off, 2)?;
            mem.write_u64(e, (gpa + off) | flags | pte::HUGE)?;
            off += HUGE;
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_and_walk() {
        let mem = GuestMemory::new(8 << 20, 2 << 20).unwrap();
        let mut frames = FrameAllocator::new(4 << 20, 8 << 20);
        let pt = PageTables::new(&mem, &mut frames).unwrap();
        let va = 0x7fff_1234_5000;
        assert_eq!(pt.leaf(&mem, va), 0);
        pt.map_new(&mem, &mut frames, va, 0x20_0000, pte::PRESENT | pte::USER).unwrap();
        assert_eq!(pt.leaf(&mem, va), 0x20_0000 | pte::PRESENT | pte::USER);
        assert_eq!(pt.leaf(&mem, va + 4096), 0);
        // root + PDPT + PD + PT
        assert_eq!(frames.in_use(), 4);
        assert!(is_canonical(va) && !is_canonical(0x8000_0000_0000) && is_canonical(0xffff_8000_0000_0000));
    }

    #[test]
    fn corrupt_tables_do_not_escape_guest_memory() {
        let mem = GuestMemory::new(8 << 20, 2 << 20).unwrap();
        let mut frames = FrameAllocator::new(4 << 20, 8 << 20);
        let pt = PageTables::new(&mem, &mut frames).unwrap();
        // A PML4 entry pointing far outside guest memory.
        mem.write_u64(pt.root(), 0x7_0000_0000_0000 | pte::PRESENT).unwrap();
        assert_eq!(pt.leaf(&mem, 0x1000), 0);
        assert!(pt.entry_gpa_alloc(&mem, &mut frames, 0x1000, 1).is_none());
    }
}
