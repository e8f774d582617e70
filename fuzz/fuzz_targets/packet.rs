//! The IP and transport headers of a logged packet.
#![no_main]

use flowlogd::packet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|payload: &[u8]| {
    let _ = packet::parse(payload);
});
