//! Scopes over a registry: which instances capture which ENI, for ENIs
//! from the config and for ENIs the metadata service describes later (the
//! registry's side of those is checked here too, as the scopes follow it).

use std::net::IpAddr;

use flowlogd_plugin_api::EniIds;

use super::Scopes;
use crate::config::{EniMatch, FlowLogConfig, ResourceType, TrafficFilter, Unmapped};
use crate::eni::{EniIndex, EniRegistry, Visibility};
use crate::model::{EcsEni, EcsSnapshot, IfIndex, MacAddr, RouteEvent, SnapshotUpdate};
use crate::test_builders::{addr, eni, flow_log, link, loopback, MAC_B};

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

/// The flow logs of [`two_plus_one`]'s tests.
fn two_plus_one_flow_logs() -> Vec<FlowLogConfig> {
    vec![
        flow_log("vpc", ResourceType::Vpc, "vpc-1", TrafficFilter::All),
        flow_log("b", ResourceType::Eni, "eni-b", TrafficFilter::Accept),
        flow_log(
            "vsw1",
            ResourceType::VSwitch,
            "vsw-1",
            TrafficFilter::Reject,
        ),
    ]
}

#[test]
fn instances_are_computed_from_scopes() {
    let r = two_plus_one();
    let s = Scopes::of(&two_plus_one_flow_logs(), &r);
    let a = r.find("eni-a").unwrap();
    let b = r.find("eni-b").unwrap();
    let c = r.find("eni-c").unwrap();
    assert_eq!(s.instances_for(a), &[0, 2]);
    assert_eq!(s.instances_for(b), &[0, 1]);
    assert_eq!(s.instances_for(c), &[0, 2]);
    assert_eq!(s.instance_count(), 3);
    assert_eq!(s.enis_of_instance(0), &[a, b, c]);
    assert_eq!(s.enis_of_instance(1), &[b]);
    assert_eq!(s.enis_of_instance(2), &[a, c]);
    assert_eq!(s.traffic_of_instance(2), TrafficFilter::Reject);
}

// ENIs learnt from the ECS metadata service.

const M1: MacAddr = MacAddr([0x00, 0x16, 0x3e, 0x00, 0x01, 0x01]);
const M2: MacAddr = MacAddr([0x00, 0x16, 0x3e, 0x00, 0x01, 0x02]);
const M0: MacAddr = MacAddr([0x00, 0x16, 0x3e, 0x00, 0x01, 0x00]);

/// Flow logs: 0 = VPC vpc-ecs, 1 = VSwitch vsw-9, 2 = ENI eni-a.
fn flow_logs() -> Vec<FlowLogConfig> {
    vec![
        flow_log("vpc", ResourceType::Vpc, "vpc-ecs", TrafficFilter::All),
        flow_log("vsw", ResourceType::VSwitch, "vsw-9", TrafficFilter::All),
        flow_log("a", ResourceType::Eni, "eni-a", TrafficFilter::All),
    ]
}

/// A static eni-a on eth0 (vpc-1), whose log lines name the
/// instances of [`flow_logs`] that capture an ENI.
fn registry(unmapped: Unmapped) -> EniRegistry {
    let logs = flow_logs();
    let mut r =
        EniRegistry::from_parts(&[eni("eni-a", "vsw-1", EniMatch::Interface("eth0".into()))])
            .unwrap()
            .with_captured_by(Box::new(move |ids, v| super::captured_by(&logs, ids, v)));
    r.learn_from_ecs(unmapped);
    r
}

/// The instances of [`flow_logs`] that capture `eni` now.
fn instances_for(r: &EniRegistry, eni: EniIndex) -> Vec<usize> {
    Scopes::of(&flow_logs(), r).instances_for(eni).to_vec()
}

fn snapshot(enis: &[(MacAddr, &str, &str)]) -> EcsSnapshot {
    let mut s = EcsSnapshot {
        instance_id: "i-ecs".into(),
        account_id: "5678".into(),
        ..EcsSnapshot::default()
    };
    for (mac, id, vsw) in enis {
        s.enis.insert(
            *mac,
            EcsEni {
                eni_id: (*id).into(),
                vpc_id: "vpc-ecs".into(),
                vswitch_id: (*vsw).into(),
            },
        );
    }
    s
}

fn update(s: EcsSnapshot, looked_for: &[MacAddr], retrying: &[MacAddr]) -> SnapshotUpdate {
    SnapshotUpdate {
        snapshot: s,
        looked_for: looked_for.to_vec(),
        retrying: retrying.to_vec(),
    }
}

#[test]
fn an_interface_waits_for_its_ids_then_vpc_and_vswitch_scopes_pick_it_up() {
    let mut r = registry(Unmapped::Ignore);
    r.apply(&loopback(1), 0);
    r.apply(&link(2, "eth0", Some(M0)), 0);
    r.apply(&link(3, "eth1", Some(M1)), 0);
    r.apply(&addr(3, "10.0.9.5"), 0);
    // A new index after the static ones, for the MAC.
    let x = EniIndex::new(1).unwrap();
    assert_eq!(r.len(), 2);
    assert_eq!(r.take_metadata_requests(), vec![M1]);
    assert_eq!(r.pending_macs(), vec![M1]);
    // Its flows are its from the start; its records wait.
    assert_eq!(r.owner_of(ip("10.0.9.5")), Some(x));
    assert_eq!(r.by_ifindex(IfIndex(3)), Some(x));
    assert_eq!(r.visibility(x), Visibility::Held);
    assert!(instances_for(&r, x).is_empty());
    assert_eq!(r.ids(x).eni_id, "-");

    let changed = r.apply_metadata(
        &update(
            snapshot(&[(M1, "eni-x", "vsw-9"), (M0, "eni-from-service", "vsw-9")]),
            &[M1],
            &[],
        ),
        10,
    );
    assert_eq!(changed, vec![x]);
    assert_eq!(r.visibility(x), Visibility::Scoped);
    assert_eq!(
        **r.ids(x),
        EniIds {
            eni_id: "eni-x".into(),
            vswitch_id: "vsw-9".into(),
            vpc_id: "vpc-ecs".into(),
            vm_id: "i-ecs".into(),
            account_id: "5678".into(),
        }
    );
    assert_eq!(instances_for(&r, x), [0, 1]);
    assert_eq!(Scopes::of(&flow_logs(), &r).enis_of_instance(0), &[x]);
    assert!(r.pending_macs().is_empty());
    // The static [[eni]] overrides what the service says of eth0.
    let a = r.find("eni-a").unwrap();
    assert_eq!(r.ifindex(a), Some(IfIndex(2)));
    assert_eq!(r.ids(a).vpc_id, "vpc-1");
    assert_eq!(instances_for(&r, a), [2]);
    assert_eq!(r.find("eni-from-service"), None);
    assert!(r.describe(x).starts_with(
        "ENI eni-x (matched by mac 00:16:3e:00:01:01): vswitch vsw-9, vpc vpc-ecs, vm i-ecs, account 5678; \
         ids from ecs; now interface eth1 (index 3); captured by: vpc, vsw"
    ));
    assert!(r.describe(a).contains("ids from static config"));
    // The same answer again changes nothing.
    let again = update(snapshot(&[(M1, "eni-x", "vsw-9")]), &[], &[]);
    assert!(r.apply_metadata(&again, 20).is_empty());
}

#[test]
fn a_hot_plugged_interface_the_service_knows_is_an_eni_at_once() {
    let mut r = registry(Unmapped::Ignore);
    r.apply_metadata(&update(snapshot(&[(M2, "eni-y", "vsw-2")]), &[], &[]), 0);
    r.apply(&link(7, "eth2", Some(M2)), 50);
    let y = r.find("eni-y").unwrap();
    assert_eq!(r.visibility(y), Visibility::Scoped);
    assert_eq!(instances_for(&r, y), [0]);
    assert!(r.take_metadata_requests().is_empty());
    assert!(r.existed_during(y, 0, 600));
    // Gone: its flows are closed, it existed until then.
    assert!(r.takes_from_an_eni(&RouteEvent::LinkRemoved { index: IfIndex(7) }));
    r.apply(&RouteEvent::LinkRemoved { index: IfIndex(7) }, 70);
    assert_eq!(r.take_detached(), vec![y]);
    assert!(r.existed_during(y, 0, 600));
    assert!(!r.existed_during(y, 600, 1200));
    // Back (the same MAC): the same index.
    r.apply(&link(8, "eth2", Some(M2)), 900);
    assert_eq!(r.by_ifindex(IfIndex(8)), Some(y));
    assert_eq!(r.len(), 2);
}

#[test]
fn an_interface_the_service_does_not_list_is_ignored_or_reported() {
    let mut r = registry(Unmapped::Ignore);
    r.apply(&link(3, "docker0", Some(M1)), 0);
    r.apply(&addr(3, "172.17.0.1"), 0);
    let x = r.by_ifindex(IfIndex(3)).unwrap();
    // Still being looked for: it waits.
    r.apply_metadata(&update(snapshot(&[]), &[M1], &[M1]), 1);
    assert_eq!(r.visibility(x), Visibility::Held);
    // Given up: not an ENI; its flows are closed.
    r.apply_metadata(&update(snapshot(&[]), &[M1], &[]), 60);
    assert_eq!(r.visibility(x), Visibility::Inactive);
    assert_eq!(r.by_ifindex(IfIndex(3)), None);
    assert_eq!(r.owner_of(ip("172.17.0.1")), None);
    assert_eq!(r.take_detached(), vec![x]);
    assert!(r.describe(x).contains("not an ENI"));
    // Listed later after all: an ENI again, on the same interface.
    r.apply_metadata(
        &update(snapshot(&[(M1, "eni-late", "vsw-1")]), &[], &[]),
        300,
    );
    assert_eq!(r.by_ifindex(IfIndex(3)), Some(x));
    assert_eq!(r.owner_of(ip("172.17.0.1")), Some(x));
    assert_eq!(r.ids(x).eni_id, "eni-late");

    let mut r = registry(Unmapped::Report);
    r.apply(&link(3, "docker0", Some(M1)), 0);
    let x = r.by_ifindex(IfIndex(3)).unwrap();
    assert_eq!(r.visibility(x), Visibility::Everywhere);
    assert_eq!(
        instances_for(&r, x),
        [0, 1, 2],
        "scope unknown: every instance"
    );
    assert_eq!(r.ids(x).vm_id, "-");
    r.apply_metadata(&update(snapshot(&[]), &[M1], &[]), 60);
    assert_eq!(r.visibility(x), Visibility::Everywhere);
    assert_eq!(r.by_ifindex(IfIndex(3)), Some(x));
    // What the service says of the instance is used.
    assert_eq!(
        (r.ids(x).eni_id.as_str(), r.ids(x).vm_id.as_str()),
        ("-", "i-ecs")
    );
    assert!(r.take_detached().is_empty());
}

#[test]
fn a_static_eni_takes_its_interface_from_a_learnt_one() {
    let mut r = registry(Unmapped::Ignore);
    r.apply(&link(2, "wan0", Some(M0)), 0);
    let learnt = r.by_ifindex(IfIndex(2)).unwrap();
    assert_ne!(r.ids(learnt).eni_id, "eni-a");
    let renamed = link(2, "eth0", Some(M0));
    assert!(r.takes_from_an_eni(&renamed));
    r.apply(&renamed, 10);
    assert_eq!(r.by_ifindex(IfIndex(2)), r.find("eni-a"));
    assert_eq!(r.take_detached(), vec![learnt]);
    assert!(!r.takes_from_an_eni(&renamed), "an unrelated update");
}

#[test]
fn loopback_and_interfaces_without_a_mac_are_never_learnt() {
    let mut r = registry(Unmapped::Report);
    r.apply(&loopback(1), 0);
    r.apply(&link(5, "wg0", None), 0);
    r.apply(&link(6, "dummy0", Some(MacAddr([0; 6]))), 0);
    assert_eq!(r.len(), 1);
    assert!(r.take_metadata_requests().is_empty());
}

#[test]
fn a_resync_forgets_what_is_gone() {
    let mut r = two_plus_one();
    r.apply(&link(2, "eth0", None), 0);
    r.apply(&addr(2, "10.0.0.5"), 0);
    r.apply(&addr(2, "10.0.0.6"), 0);
    r.apply(&link(3, "eth1", Some(MAC_B)), 0);
    r.apply(&addr(3, "10.0.1.7"), 0);
    // eth1 vanished and eth0 lost .6 while events were lost.
    r.resync(&[link(2, "eth0", None), addr(2, "10.0.0.5")], 50);
    let b = r.find("eni-b").unwrap();
    assert_eq!(r.ifindex(b), None);
    assert_eq!(r.take_detached(), vec![b]);
    assert_eq!(r.owner_of(ip("10.0.1.7")), None);
    assert_eq!(r.owner_of(ip("10.0.0.6")), None);
    assert!(!r.is_local(ip("10.0.0.6")));
    assert_eq!(r.owner_of(ip("10.0.0.5")), r.find("eni-a"));
}
