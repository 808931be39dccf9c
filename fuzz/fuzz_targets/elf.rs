#![no_main]
//! The ELF parser (vmm/src/elf.rs) as exec and the Linux loader use it.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = dmvx_vmm::fuzz_entry::elf(data);
});
