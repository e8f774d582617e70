//! The registry's tests: interfaces and addresses in, ENIs and owners
//! out. (ENIs learnt from the metadata service, and the instances that
//! capture them as they are learnt, are tested in
//! `crate::instances::scope_tests`.)

use std::net::IpAddr;

use super::*;
use crate::config::{EniConfig, EniMatch};
use crate::model::{IfIndex, InterfaceAddress, MacAddr, RouteEvent};
use crate::test_builders::{addr, eni, link, loopback, MAC_B};

fn del_addr(index: u32, addr: &str) -> RouteEvent {
    RouteEvent::AddressRemoved(InterfaceAddress {
        index: IfIndex(index),
        addr: addr.parse().unwrap(),
        prefix_len: 24,
    })
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// eni-a: interface eth0 (vsw-1); eni-b: MAC_B (vsw-2); eni-c: eth9 (vsw-1).
fn two_plus_one() -> EniRegistry {
    EniRegistry::from_parts(&[
        eni("eni-a", "vsw-1", EniMatch::Interface("eth0".into())),
        eni("eni-b", "vsw-2", EniMatch::Mac(MAC_B)),
        eni("eni-c", "vsw-1", EniMatch::Interface("eth9".into())),
    ])
    .unwrap()
}

#[test]
fn index_is_two_bytes_and_round_trips() {
    assert_eq!(std::mem::size_of::<Option<EniIndex>>(), 2);
    assert_eq!(EniIndex::new(0).unwrap().get(), 0);
    assert_eq!(EniIndex::new(65534).unwrap().get(), 65534);
    assert_eq!(EniIndex::new(65535), None);
}

#[test]
fn matches_by_name_and_mac_and_owns_addresses() {
    let mut r = two_plus_one();
    r.apply(&link(2, "eth0", Some(MacAddr([2; 6]))), 100);
    r.apply(&link(3, "eth1", Some(MAC_B)), 100);
    r.apply(&addr(2, "10.0.0.5"), 100);
    r.apply(&addr(2, "fd00::5"), 100);
    r.apply(&addr(3, "10.0.1.7"), 100);
    let a = r.find("eni-a").unwrap();
    let b = r.find("eni-b").unwrap();
    assert_eq!(r.owner_of(ip("10.0.0.5")), Some(a));
    assert_eq!(r.owner_of(ip("fd00::5")), Some(a));
    assert_eq!(r.owner_of(ip("10.0.1.7")), Some(b));
    assert_eq!(r.owner_of(ip("10.0.1.8")), None);
    assert_eq!(r.by_ifindex(IfIndex(3)), Some(b));
    assert_eq!(r.ifindex(a), Some(IfIndex(2)));
    assert_eq!(r.ids(b).eni_id, "eni-b");
}

#[test]
fn loopback_and_its_addresses_belong_to_nobody() {
    let mut r =
        EniRegistry::from_parts(&[eni("eni-lo", "vsw-1", EniMatch::Interface("lo".into()))])
            .unwrap();
    r.apply(&loopback(1), 0);
    r.apply(&addr(1, "127.0.0.1"), 0);
    r.apply(&addr(1, "10.9.9.9"), 0);
    assert_eq!(r.owner_of(ip("127.0.0.1")), None);
    assert_eq!(r.owner_of(ip("10.9.9.9")), None);
    assert_eq!(r.by_ifindex(IfIndex(1)), None);
    assert!(r.is_local(ip("127.0.0.1")));
    assert!(!r.existed_during(r.find("eni-lo").unwrap(), 0, 600));
}

#[test]
fn address_reported_before_its_link_is_owned_once_link_appears() {
    let mut r = two_plus_one();
    r.apply(&addr(2, "10.0.0.5"), 0);
    assert_eq!(r.owner_of(ip("10.0.0.5")), None);
    assert!(r.is_local(ip("10.0.0.5")));
    r.apply(&link(2, "eth0", None), 0);
    assert_eq!(r.owner_of(ip("10.0.0.5")), r.find("eni-a"));
}

#[test]
fn address_and_link_removal() {
    let mut r = two_plus_one();
    r.apply(&link(2, "eth0", None), 0);
    r.apply(&addr(2, "10.0.0.5"), 0);
    r.apply(&addr(2, "10.0.0.6"), 0);
    r.apply(&link(5, "other0", None), 0);
    r.apply(&addr(5, "10.9.0.1"), 0);
    assert!(r.takes_from_an_eni(&del_addr(2, "10.0.0.5")));
    assert!(!r.takes_from_an_eni(&del_addr(5, "10.9.0.1")), "no ENI's");
    assert!(!r.takes_from_an_eni(&del_addr(2, "10.0.0.99")), "not there");
    r.apply(&del_addr(2, "10.0.0.5"), 10);
    assert_eq!(r.owner_of(ip("10.0.0.5")), None);
    assert!(!r.is_local(ip("10.0.0.5")));
    assert!(r.owner_of(ip("10.0.0.6")).is_some());
    r.apply(&RouteEvent::LinkRemoved { index: IfIndex(2) }, 20);
    assert_eq!(r.owner_of(ip("10.0.0.6")), None);
    assert!(!r.is_local(ip("10.0.0.6")));
    assert_eq!(r.ifindex(r.find("eni-a").unwrap()), None);
}

#[test]
fn rename_unbinds_and_rebinds() {
    let mut r = two_plus_one();
    let a = r.find("eni-a").unwrap();
    r.apply(&link(2, "eth0", None), 0);
    r.apply(&addr(2, "10.0.0.5"), 0);
    r.apply(&link(2, "wan0", None), 50);
    assert_eq!(r.owner_of(ip("10.0.0.5")), None);
    assert_eq!(r.ifindex(a), None);
    // Another interface takes the name: it is the ENI now.
    r.apply(&link(7, "eth0", None), 60);
    r.apply(&addr(7, "10.0.0.9"), 60);
    assert_eq!(r.ifindex(a), Some(IfIndex(7)));
    assert_eq!(r.owner_of(ip("10.0.0.9")), Some(a));
    assert_eq!(r.present_since(a), Some(60));
}

#[test]
fn same_mac_on_two_interfaces_binds_one_and_falls_back() {
    let mut r = two_plus_one();
    let b = r.find("eni-b").unwrap();
    r.apply(&link(3, "eth1", Some(MAC_B)), 0);
    r.apply(&link(4, "eth1.100", Some(MAC_B)), 0);
    assert_eq!(r.ifindex(b), Some(IfIndex(3)));
    assert_eq!(r.by_ifindex(IfIndex(4)), None);
    r.apply(&RouteEvent::LinkRemoved { index: IfIndex(3) }, 10);
    assert_eq!(r.ifindex(b), Some(IfIndex(4)));
}

#[test]
fn existence_during_windows() {
    let mut r = two_plus_one();
    let a = r.find("eni-a").unwrap();
    let c = r.find("eni-c").unwrap();
    assert!(!r.existed_during(a, 0, 600));
    r.apply(&link(2, "eth0", None), 100);
    assert!(r.existed_during(a, 0, 600));
    assert!(!r.existed_during(a, 0, 100), "appeared exactly at the end");
    assert!(
        r.existed_during(a, 100, 100),
        "a window begun and closed in the second it appeared"
    );
    r.apply(&RouteEvent::LinkRemoved { index: IfIndex(2) }, 700);
    assert!(r.existed_during(a, 600, 1200), "removed during the window");
    assert!(
        r.existed_during(a, 700, 1200),
        "removed in the window's first second"
    );
    assert!(!r.existed_during(a, 1200, 1800));
    assert!(!r.existed_during(c, 0, 1800));
}

#[test]
fn shared_address_moves_to_the_other_eni_when_one_drops_it() {
    let mut r = two_plus_one();
    r.apply(&link(2, "eth0", None), 0);
    r.apply(&link(3, "eth1", Some(MAC_B)), 0);
    r.apply(&addr(2, "10.0.0.100"), 0);
    r.apply(&addr(3, "10.0.0.100"), 0);
    assert_eq!(r.owner_of(ip("10.0.0.100")), r.find("eni-a"));
    r.apply(&del_addr(2, "10.0.0.100"), 5);
    assert_eq!(r.owner_of(ip("10.0.0.100")), r.find("eni-b"));
    assert!(r.is_local(ip("10.0.0.100")));
}

#[test]
fn too_many_is_an_error() {
    let enis: Vec<EniConfig> = (0..=EniIndex::MAX_ENIS)
        .map(|i| {
            eni(
                &format!("eni-{i}"),
                "vsw-1",
                EniMatch::Interface(format!("e{i}")),
            )
        })
        .collect();
    let err = EniRegistry::from_parts(&enis).err().unwrap();
    assert_eq!(err, EniError::TooMany { count: 65536 });
}
