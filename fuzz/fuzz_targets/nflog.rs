//! One NFULNL_MSG_PACKET payload (after the netlink header), then the
//! logged packet inside it, as the NFLOG drain does.
#![no_main]

use flowlogd::netlink::parsers::parse_nflog_packet;
use flowlogd::packet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|payload: &[u8]| {
    if let Ok((logged, _seq)) = parse_nflog_packet(payload) {
        let _ = packet::parse(logged.payload);
        if let Ok(prefix) = std::str::from_utf8(logged.prefix) {
            let _ = packet::rule_of_prefix(prefix);
        }
    }
});
