#![no_main]
//! Linux kernel detection and loading (vmm/src/linux/boot.rs): bzImage setup header and PVH ELF.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = dmvx_vmm::fuzz_entry::bzimage(data);
});
