//! Where a variant's program lives in its address space.
//!
//! Each variant id owns a disjoint 4 TiB slot of the user half for its stack,
//! mmap area (and the interpreter, the first thing mapped there),
//! position-independent program and heap, so an absolute address that an
//! exploit injects is valid in at most one variant. Inside its slot, every
//! run (and every execve) draws each base anew, page-granular as Linux does:
//! 28 bits for the program and the mmap area, 22 bits of pages for the
//! stack, 24 bits for the heap. Unlike Linux, the initial stack pointer has
//! no random sub-page step: where it sits in its page must be the same in
//! every variant, since programs probe their stack's extent page by page
//! from it (diff's stack-overflow guard runs mincore down from a local
//! variable) and would see the bottom one page nearer in one variant. The draw is a hash
//! of a 64-bit seed taken from the host at launch (`--layout-seed` sets it to
//! reproduce a layout), so the guest learns the addresses Linux would tell
//! it and nothing of how they were drawn.
//!
//! A non-PIE program's own segments sit at the addresses it was linked for,
//! the same in every variant; its heap still moves with the variant and the
//! run (variants built differently, see images/build-nversion.sh, diversify
//! the rest).
//!
//! Slot layout, from its bottom B (addresses grow up):
//! ```text
//! B + 16 MiB  .. + 1 TiB     program base (PIE), then its heap 0-64 GiB above it
//! B + 1.5 TiB                lowest mmap address
//! B + 1.75 TiB .. + 2.5 TiB  anonymous mmap top (960 MiB steps)
//! B + 2.5 TiB .. + 3.5 TiB   mmap top (mappings grow down from it)
//! ```
//!
//! Anonymous mappings have their own area, whose top is a multiple of
//! 960 MiB (64 MiB x 3 x 5) in every variant, drawn from about 800 such
//! steps (9.7 bits). Programs compute with the address of anonymous memory
//! modulo sizes of their own, and must compute the same in every variant:
//! they align it by mapping more and unmapping the misaligned ends (glibc's
//! per-thread arenas to 64 MiB, ruby's heap pages to 64 KiB), and ruby fits
//! as many 40-byte object slots in a heap page as its address modulo 40
//! allows, which decides when its garbage collector runs. Files, libraries
//! among them, keep 28 bits of pages; the slots stay disjoint either way.
//!
//! ```text
//! B + 4 TiB - 16 MiB - 16 GiB .. B + 4 TiB - 16 MiB   stack top
//! ```
//!
//! Data may instead be shared (`DataLayout::Shared`, the default in a
//! cluster): the anonymous area and the heap of every variant then sit at the
//! same addresses, drawn per run (and per execve) from a seed the leader
//! sends, in slot 0's ranges; code, files and the stack stay in each
//! variant's own slot. Programs derive behaviour from data addresses beyond
//! what aligning the area can keep equal: jemalloc (redis) seeds the
//! generator of its decay ticks with the address of its thread data, so its
//! calls to the clock, and with them its background thread's wake-ups,
//! came at other points in each variant. As in ReMon's disjoint code
//! layouts, an injected code address is still valid in at most one variant;
//! an injected data address now is valid in all (docs/diversity.md).

use dmvx_sync::report::LayoutUsed;
use sha2::{Digest, Sha256};

/// Largest number of variants with disjoint layouts.
pub const MAX_VARIANTS: u32 = 16;

const MIB: u64 = 1 << 20;
const TIB: u64 = 1 << 40;
const PAGE: u64 = 4096;
const SLOT: u64 = 4 * TIB;
/// Top of slot 0: below the 128 TiB end of user space, with a guard.
const TOP: u64 = 0x8000_0000_0000 - 16 * MIB;
/// Guard at the bottom of a slot (below the lowest program base).
const GUARD: u64 = 16 * MIB;
/// Room reserved under the stack top for the stack (Linux's default limit).
pub const STACK_SIZE: u64 = 8 << 20;

/// Bits of page-granular randomness of each base (Linux x86-64: mmap 28,
/// PIE 28 since 4.x, stack 22 pages + sub-page, heap 13; see the module
/// comment for the sub-page step).
pub const PIE_BITS: u32 = 28;
pub const MMAP_BITS: u32 = 28;
pub const STACK_BITS: u32 = 22;
pub const HEAP_BITS: u32 = 24;
/// The anonymous mmap top's unit, and how many of them it may move (see
/// the module comment).
pub const ANON_ALIGN: u64 = 64 * MIB * 15;
pub const ANON_STEPS: u64 = (MMAP_TOP_LOW - ANON_TOP_LOW) / ANON_ALIGN - 1;

const PIE_LOW: u64 = GUARD;
const MMAP_BOTTOM: u64 = 3 * TIB / 2;
const MMAP_TOP_LOW: u64 = 5 * TIB / 2;
const ANON_TOP_LOW: u64 = 7 * TIB / 4;
/// Non-PIE heaps of variant `id` start `id` times this above the program,
/// below every slot (16 x 4 TiB = 64 TiB, the bottom of slot 15).
const LOW_HEAP_STRIDE: u64 = 4 * TIB;
/// Shared data: a PIE program's heap starts this far above slot 0's bottom
/// (above every PIE base and 64 GiB of program image), plus the drawn gap.
const SHARED_HEAP_LOW: u64 = PIE_LOW + (PAGE << PIE_BITS) + 64 * (1 << 30);

/// Where a variant's data (anonymous memory and the heap) lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DataLayout {
    /// At the same addresses in every variant of a cluster.
    #[default]
    Shared,
    /// In each variant's own slot, like its code.
    Disjoint,
}

impl std::str::FromStr for DataLayout {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "shared" => Ok(DataLayout::Shared),
            "disjoint" => Ok(DataLayout::Disjoint),
            _ => Err(format!("'{s}' is not a data layout (shared or disjoint)")),
        }
    }
}

impl std::fmt::Display for DataLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DataLayout::Shared => "shared",
            DataLayout::Disjoint => "disjoint",
        })
    }
}

/// The address-space layout of one variant for one program image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub variant: u32,
    /// The seed of the draw; `None`: the slot's fixed layout (`--fixed-layout`).
    pub seed: Option<u64>,
    /// How many execve calls came before this image (each draws anew).
    pub generation: u32,
    /// Initial stack pointer region ends here (exclusive).
    pub stack_top: u64,
    /// Anonymous mmap allocates top-down from here (a multiple of 64 MiB)...
    pub anon_top: u64,
    /// ...but never below this (then it takes from the file area).
    pub anon_bottom: u64,
    /// Shared data: the seed every variant drew its data bases from.
    pub data_seed: Option<u64>,
    /// Shared data: where a PIE program's heap starts.
    pub shared_heap: Option<u64>,
    /// mmap allocates top-down from here...
    pub mmap_top: u64,
    /// ...but never below this.
    pub mmap_bottom: u64,
    /// Load address of a position-independent program.
    pub pie_base: u64,
    /// Gap between the end of the program and the start of its heap.
    pub heap_gap: u64,
    /// Added to the heap start of a non-PIE program (its segments are low).
    pub low_heap: u64,
}

/// The bottom of variant `id`'s slot.
fn slot_bottom(id: u32) -> u64 {
    TOP + GUARD - (id as u64 + 1) * SLOT
}

/// The anonymous area's top in the slot at `b`, drawn from `word`.
fn anon_top_in(b: u64, word: u64) -> u64 {
    (b + ANON_TOP_LOW).next_multiple_of(ANON_ALIGN) + word % ANON_STEPS * ANON_ALIGN
}

/// `bits` random bits of `word`, as a multiple of `unit`.
fn pick(word: u64, bits: u32, unit: u64) -> u64 {
    (word & ((1 << bits) - 1)) * unit
}

impl Layout {
    /// The fixed layout of variant `id` (< MAX_VARIANTS): every base at the
    /// bottom of its range.
    pub fn fixed(id: u32) -> Layout {
        Layout::with_words(id.min(MAX_VARIANTS - 1), None, 0, [0; 4])
    }

    /// The layout of variant `id` drawn from `seed` for its `generation`th image.
    pub fn drawn(id: u32, seed: u64, generation: u32) -> Layout {
        let id = id.min(MAX_VARIANTS - 1);
        let mut h = Sha256::new();
        h.update(b"dmvx layout v1\0");
        h.update(seed.to_le_bytes());
        h.update(id.to_le_bytes());
        h.update(generation.to_le_bytes());
        let d = h.finalize();
        let word = |i: usize| u64::from_le_bytes(d[8 * i..8 * i + 8].try_into().expect("8 bytes of a 32-byte digest"));
        Layout::with_words(id, Some(seed), generation, [word(0), word(1), word(2), word(3)])
    }

    /// A fresh draw for variant `id`, from the host's random generator
    /// unless `seed` is given; `fixed` turns randomisation off.
    pub fn at_launch(id: u32, seed: Option<u64>, fixed: bool) -> std::io::Result<Layout> {
        if fixed {
            return Ok(Layout::fixed(id));
        }
        let seed = match seed {
            Some(s) => s,
            None => host_seed()?,
        };
        Ok(Layout::drawn(id, seed, 0))
    }

    /// The layout for the image an execve loads next.
    pub fn next(&self) -> Layout {
        let mut l = match self.seed {
            None => *self,
            Some(s) => Layout::drawn(self.variant, s, self.generation.wrapping_add(1)),
        };
        if let Some(d) = self.data_seed {
            l.share_data(d);
        }
        l
    }

    /// Moves the anonymous area and the heap to the bases every variant
    /// draws from `seed` (for this image's generation), in slot 0's ranges.
    pub fn share_data(&mut self, seed: u64) {
        let mut h = Sha256::new();
        h.update(b"dmvx data layout v1\0");
        h.update(seed.to_le_bytes());
        h.update(self.generation.to_le_bytes());
        let d = h.finalize();
        let word = |i: usize| u64::from_le_bytes(d[8 * i..8 * i + 8].try_into().expect("8 bytes of a 32-byte digest"));
        let b = slot_bottom(0);
        self.data_seed = Some(seed);
        self.anon_top = anon_top_in(b, word(0));
        self.anon_bottom = b + MMAP_BOTTOM;
        self.heap_gap = pick(word(1), HEAP_BITS, PAGE);
        self.shared_heap = Some(b + SHARED_HEAP_LOW + self.heap_gap);
        self.low_heap = 0;
    }

    fn with_words(id: u32, seed: Option<u64>, generation: u32, w: [u64; 4]) -> Layout {
        let b = slot_bottom(id);
        Layout {
            variant: id,
            seed,
            generation,
            pie_base: b + PIE_LOW + pick(w[0], PIE_BITS, PAGE),
            mmap_top: b + MMAP_TOP_LOW + pick(w[1], MMAP_BITS, PAGE),
            mmap_bottom: b + MMAP_BOTTOM,
            anon_top: anon_top_in(b, w[2] >> 32),
            anon_bottom: b + MMAP_BOTTOM,
            data_seed: None,
            shared_heap: None,
            stack_top: b + SLOT - GUARD - pick(w[2], STACK_BITS, PAGE),
            heap_gap: pick(w[3], HEAP_BITS, PAGE),
            low_heap: id as u64 * LOW_HEAP_STRIDE,
        }
    }

    /// Where the heap starts, given the page-aligned end of the program.
    pub fn heap_start(&self, program_end: u64, pie: bool) -> u64 {
        match self.shared_heap {
            Some(h) if pie => h,
            _ => program_end + self.heap_gap + if pie { 0 } else { self.low_heap },
        }
    }

    /// The seed as the report and `--layout-seed` write it.
    pub fn seed_text(&self) -> String {
        match self.seed {
            Some(s) => format!("{s:#018x}"),
            None => "fixed".into(),
        }
    }
}

/// Where the loader put a program (for the forensic report and --trace).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Placed {
    /// Lowest address of the program's segments.
    pub program: u64,
    /// Load address of the interpreter (0: none).
    pub interpreter: u64,
    /// Start of the heap.
    pub heap: u64,
    /// Initial stack pointer.
    pub stack: u64,
}

impl Layout {
    /// The layout as the forensic report records it.
    pub fn used(&self, placed: &Placed) -> LayoutUsed {
        let hex = |a: u64| format!("{a:#x}");
        LayoutUsed {
            seed: self.seed_text(),
            generation: self.generation,
            program: hex(placed.program),
            interpreter: hex(placed.interpreter),
            heap: hex(placed.heap),
            stack: hex(placed.stack),
            mmap_top: hex(self.mmap_top),
            anon_top: hex(self.anon_top),
        }
    }
}

/// A 64-bit seed from the host (getrandom); no weaker stand-in if it fails.
pub fn host_seed() -> std::io::Result<u64> {
    let mut b = [0u8; 8];
    loop {
        // SAFETY: b is a valid writable 8-byte buffer.
        let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
        if n == b.len() as isize {
            return Ok(u64::from_le_bytes(b));
        }
        let e = std::io::Error::last_os_error();
        if n >= 0 || e.kind() != std::io::ErrorKind::Interrupted {
            return Err(if n >= 0 { std::io::Error::other("a short read") } else { e });
        }
    }
}

/// Parses a `--layout-seed` value: decimal or 0x-prefixed hexadecimal.
pub fn parse_seed(s: &str) -> Option<u64> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// The span of variant `id`'s slot, `[bottom, top)`.
#[cfg(test)]
fn slot(id: u32) -> (u64, u64) {
    let b = slot_bottom(id.min(MAX_VARIANTS - 1));
    (b, b + SLOT)
}

/// Largest heap gap plus the low-heap offset of the last variant: every
/// non-PIE heap starts below this much above its program.
#[cfg(test)]
const LOW_HEAP_SPAN: u64 = (MAX_VARIANTS as u64 - 1) * LOW_HEAP_STRIDE + (PAGE << HEAP_BITS);

const _: () = assert!(MMAP_TOP_LOW + (PAGE << MMAP_BITS) + TIB / 4 < SLOT - GUARD - (PAGE << STACK_BITS) - STACK_SIZE);
const _: () =
    assert!(MMAP_BOTTOM + TIB / 4 <= ANON_TOP_LOW && ANON_TOP_LOW + (ANON_STEPS + 1) * ANON_ALIGN <= MMAP_TOP_LOW);
const _: () = assert!(PIE_LOW + (PAGE << PIE_BITS) + (PAGE << HEAP_BITS) < MMAP_BOTTOM);
const _: () = assert!(SHARED_HEAP_LOW + (PAGE << HEAP_BITS) + TIB / 4 <= MMAP_BOTTOM);

#[cfg(test)]
mod tests {
    use super::*;

    /// Every region of `l` inside its slot, in order.
    fn check_inside(l: &Layout) {
        let (lo, hi) = slot(l.variant);
        assert!(lo < l.pie_base && l.pie_base + l.heap_gap < l.mmap_bottom, "{l:x?}");
        assert!(l.mmap_bottom + TIB <= l.mmap_top, "at least 1 TiB for mappings: {l:x?}");
        assert!(l.mmap_top + TIB / 4 < l.stack_top - STACK_SIZE, "{l:x?}");
        assert!(l.stack_top < hi && l.stack_top < 0x7fff_ffff_f000, "{l:x?}");
        for a in [l.pie_base, l.mmap_top, l.mmap_bottom, l.stack_top, l.heap_gap] {
            assert!(a.is_multiple_of(PAGE), "{l:x?}");
        }
        assert!(l.mmap_bottom + TIB / 4 <= l.anon_top && l.anon_top < l.mmap_top, "{l:x?}");
        assert!(l.anon_top.is_multiple_of(ANON_ALIGN), "{l:x?}");
    }

    #[test]
    fn variant_slots_are_disjoint_and_inside_user_space() {
        for i in 0..MAX_VARIANTS {
            for seed in 0..200u64 {
                check_inside(&Layout::drawn(i, seed, (seed % 3) as u32));
            }
            check_inside(&Layout::fixed(i));
        }
        for i in 0..MAX_VARIANTS {
            for j in i + 1..MAX_VARIANTS {
                let (a, b) = (slot(i), slot(j));
                assert!(a.1 <= b.0 || b.1 <= a.0, "{a:x?} overlaps {b:x?}");
            }
        }
        // Non-PIE programs (linked below 4 GiB) keep their heaps below every slot.
        assert!((4 << 30) + LOW_HEAP_SPAN <= slot(MAX_VARIANTS - 1).0);
        assert_eq!(slot(0).1, TOP + GUARD);
    }

    #[test]
    fn draws_vary_per_seed_variant_and_generation_and_repeat_per_seed() {
        let a = Layout::drawn(0, 42, 0);
        assert_eq!(a, Layout::drawn(0, 42, 0), "a seed reproduces its layout");
        assert_eq!(a.next(), Layout::drawn(0, 42, 1));
        for other in [Layout::drawn(0, 43, 0), Layout::drawn(0, 42, 1), Layout::drawn(1, 42, 0)] {
            assert_ne!(a.pie_base - slot(a.variant).0, other.pie_base - slot(other.variant).0);
            assert_ne!(a.mmap_top - slot(a.variant).0, other.mmap_top - slot(other.variant).0);
            assert_ne!(a.stack_top - slot(a.variant).0, other.stack_top - slot(other.variant).0);
            assert_ne!(a.anon_top - slot(a.variant).0, other.anon_top - slot(other.variant).0);
        }
        assert_eq!(Layout::fixed(3).next(), Layout::fixed(3));
        assert_ne!(Layout::at_launch(0, None, false).unwrap(), Layout::at_launch(0, None, false).unwrap());
        assert_eq!(Layout::at_launch(2, Some(9), false).unwrap(), Layout::drawn(2, 9, 0));
        assert_eq!(Layout::at_launch(2, Some(9), true).unwrap(), Layout::fixed(2));
    }

    #[test]
    fn every_random_bit_is_used() {
        // Over many draws each base varies in exactly its bits (a bias or a
        // lost bit would show as a constant bit here).
        let (mut pie_or, mut pie_and) = (0u64, u64::MAX);
        let (mut stack_or, mut stack_and) = (0u64, u64::MAX);
        let mut anon = std::collections::HashSet::new();
        for seed in 0..4000 {
            anon.insert(Layout::drawn(5, seed, 0).anon_top);
            let l = Layout::drawn(5, seed, 0);
            let p = (l.pie_base - slot(5).0 - PIE_LOW) / PAGE;
            pie_or |= p;
            pie_and &= p;
            let s = (slot(5).1 - GUARD - l.stack_top) / PAGE;
            stack_or |= s;
            stack_and &= s;
        }
        assert_eq!((pie_or, pie_and), ((1 << PIE_BITS) - 1, 0));
        assert_eq!((stack_or, stack_and), ((1 << STACK_BITS) - 1, 0));
        assert!(anon.len() as u64 > ANON_STEPS * 9 / 10, "{} of {ANON_STEPS} anonymous tops", anon.len());
    }

    #[test]
    fn shared_data_is_equal_across_variants_and_code_stays_disjoint() {
        for data in 0..200u64 {
            let mut ls: Vec<Layout> = (0..MAX_VARIANTS).map(|i| Layout::drawn(i, data * 7 + i as u64, 0)).collect();
            for l in ls.iter_mut() {
                l.share_data(data);
            }
            let (s0_lo, s0_hi) = slot(0);
            for l in &ls {
                // Data: one place for all, inside slot 0's anonymous and heap ranges.
                assert_eq!(
                    (l.anon_top, l.anon_bottom, l.shared_heap),
                    (ls[0].anon_top, ls[0].anon_bottom, ls[0].shared_heap)
                );
                assert_eq!(l.heap_start(0x1000_0000, true), ls[0].heap_start(0x1000_0000, true));
                assert_eq!(l.heap_start(0x60_0000, false), ls[0].heap_start(0x60_0000, false));
                assert!(s0_lo + MMAP_BOTTOM + TIB / 4 <= l.anon_top && l.anon_top <= s0_lo + MMAP_TOP_LOW, "{l:x?}");
                assert!(l.anon_top.is_multiple_of(ANON_ALIGN), "{l:x?}");
                let h = l.shared_heap.unwrap();
                assert!(s0_lo + PIE_LOW + (PAGE << PIE_BITS) < h && h + TIB / 4 <= s0_lo + MMAP_BOTTOM, "{l:x?}");
                assert!(h < s0_hi);
                // Code, files and the stack: still in the variant's own slot.
                check_inside(&Layout { anon_top: Layout::drawn(l.variant, 0, 0).anon_top, ..*l });
            }
            // The next image draws its data anew, again the same in all.
            let n: Vec<Layout> = ls.iter().map(|l| l.next()).collect();
            assert!(n.iter().all(|l| l.anon_top == n[0].anon_top && l.shared_heap == n[0].shared_heap));
            assert_eq!(n[0].data_seed, Some(data));
        }
        let (mut a, mut b) = (Layout::drawn(1, 5, 0), Layout::drawn(1, 5, 0));
        a.share_data(1);
        b.share_data(2);
        assert_ne!((a.anon_top, a.shared_heap), (b.anon_top, b.shared_heap), "the data seed decides");
        assert_eq!("shared".parse(), Ok(DataLayout::Shared));
        assert_eq!("disjoint".parse::<DataLayout>().map(|d| d.to_string()), Ok("disjoint".into()));
        assert!("same".parse::<DataLayout>().is_err());
    }

    #[test]
    fn seeds_parse_in_decimal_and_hex() {
        assert_eq!(parse_seed("12"), Some(12));
        assert_eq!(parse_seed("0x00ff"), Some(255));
        assert_eq!(parse_seed("0xffffffffffffffff"), Some(u64::MAX));
        assert_eq!(parse_seed("nope"), None);
        assert_eq!(parse_seed("0x1ffffffffffffffff"), None);
        assert_eq!(Layout::drawn(0, 255, 0).seed_text(), "0x00000000000000ff");
        assert_eq!(parse_seed(&Layout::drawn(0, 255, 0).seed_text()), Some(255));
    }
}
