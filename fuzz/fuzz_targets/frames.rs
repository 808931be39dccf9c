#![no_main]
//! The link's wire decoders: messages, batches, frames, handshake messages.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = dmvx_sync::fuzz_entry::frames(data);
});
