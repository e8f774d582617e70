//! An rtnetlink datagram (links and addresses), split and parsed as the
//! route watcher does.
#![no_main]

use flowlogd::netlink::parsers::{parse_route_message, Messages};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|datagram: &[u8]| {
    for message in Messages::new(datagram) {
        let Ok(message) = message else { break };
        let _ = parse_route_message(message.bytes);
    }
    let _ = parse_route_message(datagram);
});
