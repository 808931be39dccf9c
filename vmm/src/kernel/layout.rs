//! Where a variant's program lives in its address space.
//!
//! Each variant id owns a disjoint 4 TiB slot of the user half for its stack,
//! mmap area, position-independent program, interpreter and heap, so an
//! absolute address that an exploit injects is valid in at most one variant.
//! (A non-PIE program's own segments sit at the addresses it was linked for,
//! the same in every variant; its heap still moves with the variant.)

/// Largest number of variants with disjoint layouts.
pub const MAX_VARIANTS: u32 = 16;

const TIB: u64 = 1 << 40;
const SLOT: u64 = 4 * TIB;
/// Top of slot 0: below the 128 TiB end of user space, with a guard.
const TOP: u64 = 0x8000_0000_0000 - (16 << 20);
/// Room reserved under the stack top for the stack (Linux's default limit).
pub const STACK_SIZE: u64 = 8 << 20;
/// Gap between the stack reservation and the mmap area.
const STACK_GAP: u64 = 248 << 20;

/// The address-space layout of one variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub variant: u32,
    /// Initial stack pointer region ends here (exclusive).
    pub stack_top: u64,
    /// mmap allocates top-down from here...
    pub mmap_top: u64,
    /// ...but never below this.
    pub mmap_bottom: u64,
    /// Load address of a position-independent program.
    pub pie_base: u64,
    /// Offset added to the heap start of a non-PIE program.
    pub brk_offset: u64,
}

impl Layout {
    /// The layout of variant `id` (< MAX_VARIANTS).
    pub fn for_variant(id: u32) -> Layout {
        let id = id.min(MAX_VARIANTS - 1);
        let top = TOP - id as u64 * SLOT;
        let bottom = top + (16 << 20) - SLOT;
        Layout {
            variant: id,
            stack_top: top,
            mmap_top: top - STACK_SIZE - STACK_GAP,
            mmap_bottom: bottom + TIB,
            pie_base: bottom + (16 << 20),
            brk_offset: id as u64 * TIB,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variant_slots_are_disjoint_and_inside_user_space() {
        let spans: Vec<(u64, u64)> = (0..MAX_VARIANTS)
            .map(|i| {
                let l = Layout::for_variant(i);
                assert!(l.pie_base < l.mmap_bottom && l.mmap_bottom < l.mmap_top && l.mmap_top < l.stack_top);
                assert!(l.stack_top < 0x7fff_ffff_f000);
                (l.pie_base, l.stack_top)
            })
            .collect();
        for (i, a) in spans.iter().enumerate() {
            for b in &spans[i + 1..] {
                assert!(a.1 <= b.0 || b.1 <= a.0, "{a:x?} overlaps {b:x?}");
            }
        }
        // Non-PIE heaps (linked near 4 MiB, offset by id TiB) stay below every slot.
        assert!(Layout::for_variant(MAX_VARIANTS - 1).brk_offset + TIB < spans.iter().map(|s| s.0).min().unwrap());
    }
}
