#![no_main]
//! Event records and shipped entries (dmvx_sync::record::decode, EntryView).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = dmvx_sync::fuzz_entry::record(data);
});
