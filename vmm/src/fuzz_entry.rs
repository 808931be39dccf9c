//! Entry points for the fuzz targets in `fuzz/` and for the stable test
//! that runs the same functions (`vmm/tests/fuzz_entries.rs`). Each feeds
//! arbitrary bytes to the real parser, the way the VMM calls it, and says
//! whether the input was accepted. Nothing here is used by the VMM itself.

use std::path::Path;

use crate::elf::{ElfHeader, PT_LOAD};
/// The embedded dmvx guest kernel (a seed of the bzimage target).
pub use crate::guest_kernel::EMBEDDED;
use crate::linux::boot;
/// What `bzimage` recognised.
pub use crate::linux::boot::KernelKind;
use crate::memory::GuestMemory;

/// Guest memory for `bzimage`: big enough that a small valid kernel loads.
const FUZZ_MEM: u64 = 32 << 20;

/// The ELF parser as exec and the Linux loader use it: the header, the
/// program header table read by offset (as exec reads it), the table
/// within the whole file, and a section lookup. `true` if the program
/// headers were accepted.
pub fn elf(data: &[u8]) -> bool {
    let Ok(header) = ElfHeader::parse(data) else {
        return false;
    };
    let Ok((start, end)) = header.phdr_range() else {
        return false;
    };
    let table = usize::try_from(start).ok().and_then(|s| data.get(s..)).unwrap_or_default();
    let table = table.get(..usize::try_from(end - start).unwrap_or(usize::MAX)).unwrap_or(table);
    let by_offset = header.program_headers(table, data.len() as u64);
    let in_file = header.program_headers_in(data);
    assert_eq!(by_offset.is_ok(), in_file.is_ok(), "the two ways of reading the program headers disagree");
    let _ = header.find_section(data, dmvx_abi::HEADER_SECTION);
    let _ = header.find_section(data, ".text");
    match in_file {
        Ok(phdrs) => {
            assert!(phdrs.iter().any(|p| p.p_type == PT_LOAD), "accepted without a loadable segment");
            true
        }
        Err(_) => false,
    }
}

/// Linux kernel detection (bzImage setup header or PVH ELF) and, for what
/// is detected, loading into guest memory. The kind detected, if any.
pub fn bzimage(data: &[u8]) -> Option<KernelKind> {
    let path = Path::new("fuzz-kernel");
    let is_bz = boot::is_bzimage(data);
    let kind = boot::detect(path, data).ok()?;
    // An ELF is detected as one first, even with "HdrS" at 0x202.
    assert!(kind != KernelKind::BzImage || is_bz, "a bzImage detected without its setup header");
    thread_local! {
        static MEM: Option<GuestMemory> = GuestMemory::new(FUZZ_MEM, 0).ok();
    }
    MEM.with(|mem| {
        if let Some(mem) = mem {
            if let Ok(k) = boot::load_kernel(mem, path, data) {
                let _ = boot::place_initrd(&k, mem.size(), Path::new("fuzz-initrd"), 4096);
                let _ = boot::check_cmdline(&k, "console=ttyS0");
            }
        }
    });
    Some(kind)
}
