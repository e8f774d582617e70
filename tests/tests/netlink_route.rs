//! The daemon's rtnetlink watcher against the live kernel, in a network
//! namespace of the test's own thread: the dump of links and addresses, then
//! a veth pair and an address added while it listens. (The parser tests on
//! captured bytes are beside the code, in `daemon/src/netlink/route.rs`.)

use std::time::{Duration, Instant};

use flowlogd::model::{IfIndex, InterfaceAddress, MacAddr, RouteEvent};
use flowlogd::netlink::RouteWatcher;
use flowlogd_tests::require_root;
use flowlogd_tests::thread_netns::{in_new_netns, run};

fn addr(index: u32, addr: &str, prefix_len: u8) -> InterfaceAddress {
    InterfaceAddress {
        index: IfIndex(index),
        addr: addr.parse().unwrap(),
        prefix_len,
    }
}

#[test]
fn live_route_watcher_in_a_namespace() {
    if !require_root("live_route_watcher_in_a_namespace") {
        return;
    }
    in_new_netns(|| {
        let mut watcher = RouteWatcher::open(1 << 20).unwrap();
        let mut dumped = Vec::new();
        let stats = watcher.dump_all(|e| dumped.push(e)).unwrap();
        assert_eq!(stats.parse_errors, 0);
        assert!(
            dumped.contains(&RouteEvent::AddressAdded(addr(1, "127.0.0.1", 8))),
            "{dumped:?}"
        );
        assert!(
            dumped
                .iter()
                .any(|e| matches!(e, RouteEvent::LinkAdded(i) if i.name == "lo" && i.is_loopback)),
            "{dumped:?}"
        );

        run(&[
            "ip",
            "link",
            "add",
            "flct-v0",
            "address",
            "02:99:00:00:01:01",
            "type",
            "veth",
            "peer",
            "name",
            "flct-v1",
        ]);
        run(&["ip", "addr", "add", "10.99.2.1/24", "dev", "flct-v0"]);
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline
            && !seen
                .iter()
                .any(|e| matches!(e, RouteEvent::AddressAdded(a) if a.prefix_len == 24))
        {
            watcher.drain(|e| seen.push(e));
            std::thread::sleep(Duration::from_millis(20));
        }
        let link = seen
            .iter()
            .find_map(|e| match e {
                RouteEvent::LinkAdded(i) if i.name == "flct-v0" => Some(i.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no LinkAdded for flct-v0 in {seen:?}"));
        assert_eq!(link.mac, Some(MacAddr([0x02, 0x99, 0, 0, 0x01, 0x01])));
        assert!(
            seen.contains(&RouteEvent::AddressAdded(addr(
                link.index.0,
                "10.99.2.1",
                24
            ))),
            "{seen:?}"
        );
    });
}
