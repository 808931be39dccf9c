#![no_main]
//! The cluster file parser and its checks (dmvx_sync::config).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = dmvx_sync::fuzz_entry::cluster_file(data);
});
