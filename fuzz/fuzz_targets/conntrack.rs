//! A ctnetlink datagram: split into messages as the socket does, each one
//! parsed as a conntrack event. Errors are the expected outcome for most
//! inputs; a panic is the bug.
#![no_main]

use flowlogd::netlink::parsers::{parse_conntrack_message, Messages};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|datagram: &[u8]| {
    for message in Messages::new(datagram) {
        let Ok(message) = message else { break };
        let _ = parse_conntrack_message(message.bytes);
    }
    // The parser also gets whole datagrams in the unit tests.
    let _ = parse_conntrack_message(datagram);
});
