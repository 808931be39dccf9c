//! Where the VMM puts things, in guest physical and guest virtual memory.
//!
//! These are the VMM's decisions; the guest kernel only learns them through
//! the registers and descriptor tables the VMM sets up.

use crate::memory::PAGE_SIZE;

/// GDT (one page).
pub const GDT_GPA: u64 = 0x1000;
/// IDT (one page: 256 gates of 16 bytes).
pub const IDT_GPA: u64 = 0x2000;
/// TSS, followed by its 8 KiB I/O-permission bitmap and terminator byte.
pub const TSS_GPA: u64 = 0x3000;
/// Array of `KopsOp` handed to the kernel-operations routine (4 pages).
pub const KOPS_OPS_GPA: u64 = 0x6000;
/// Capacity of that array.
pub const KOPS_MAX_OPS: usize = 4 * PAGE_SIZE as usize / dmvx_abi::KOPS_OP_SIZE;
/// Kernel stack (exception frames, kernel operations): 32 KiB below this.
pub const KERNEL_STACK_TOP_GPA: u64 = 0x18000;
/// Stack for double faults and NMIs (IST1): 8 KiB below this.
pub const IST_STACK_TOP_GPA: u64 = 0x1a000;
/// Where guest kernel images may be loaded: `[KERNEL_AREA_START, KERNEL_AREA_END)`.
pub const KERNEL_AREA_START: u64 = 0x10_0000;
pub const KERNEL_AREA_END: u64 = 0x40_0000;
/// Frames for page tables and program memory start here.
pub const FRAMES_START: u64 = 0x40_0000;
/// The smallest guest memory the VMM accepts.
pub const MIN_MEMORY: u64 = 8 << 20;

/// All guest physical memory is mapped, supervisor-only, from here.
pub const DIRECT_MAP_BASE: u64 = 0xffff_8880_0000_0000;
/// Guest kernel images must be linked at or above this address.
pub const KERNEL_VIRT_MIN: u64 = 0xffff_ffff_8000_0000;

/// End (exclusive) of the user half of the address space.
pub const USER_END: u64 = 0x7fff_ffff_f000;
/// Lowest address a program may map (as Linux's default mmap_min_addr).
pub const USER_MIN: u64 = 0x1_0000;

/// Guest virtual address of a guest physical address in the direct map.
#[inline]
pub const fn direct_map(gpa: u64) -> u64 {
    DIRECT_MAP_BASE + gpa
}

const _: () = assert!(TSS_GPA + 104 + 8192 < KOPS_OPS_GPA);
const _: () = assert!(KOPS_OPS_GPA + 4 * PAGE_SIZE <= KERNEL_STACK_TOP_GPA - 0x8000);
const _: () = assert!(FRAMES_START >= KERNEL_AREA_END);
