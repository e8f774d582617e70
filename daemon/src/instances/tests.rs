//! The flow table and the instance stage end to end: conntrack messages
//! and a registry in, each flow log instance's records out, with a fake
//! clock.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;

use flowlogd_plugin_api::{Action, Direction, FlowExtras, FlowFields, FlowRecord, LogStatus};

use super::*;
use crate::config::{EniMatch, FlowLogConfig, ResourceType, TrafficFilter};
use crate::eni::{EniIndex, EniRegistry};
use crate::flows::{
    CaptureWindow, Clock, FakeClock, FlowTable, FlowTuple, LossScope, WindowAggregate, WindowDrain,
};
use crate::model::{ConntrackEntry, ConntrackKind, IfIndex, MacAddr, RouteEvent};
use crate::test_builders::{addr, conn, eni, flow_log, link, loopback, EntryExt, MAC_B};

mod extras;
mod sg_rules;
mod tcp_flags;

/// What the loop does with a closed window (or an early emit): the flow
/// table's drain, routed to the instances of `flow_logs` by their scopes
/// over `reg` now.
fn routed(d: WindowDrain, flow_logs: &[FlowLogConfig], reg: &EniRegistry) -> InstanceDrain {
    InstanceDrain::new(d, flow_logs, reg)
}

/// One flow log instance: the whole VPC `vpc`, all traffic.
fn vpc_log(vpc: &str) -> Vec<FlowLogConfig> {
    vec![flow_log("vpc", ResourceType::Vpc, vpc, TrafficFilter::All)]
}

#[test]
fn the_flow_tables_default_memory_bound_is_the_configs() {
    assert_eq!(
        crate::flows::DEFAULT_WINDOW_MEMORY_BYTES,
        crate::config::default_window_memory_bytes()
    );
}

/// 2024-05-01 10:00:00 UTC.
const TEN: i64 = 1_714_557_600;
const W: u32 = 600;
const A: &str = "10.0.0.5";
const A6: &str = "fd00::5";
const B: &str = "10.0.1.7";
const R: &str = "198.51.100.9";
const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;
const ICMPV6: u8 = 58;

const ALL: usize = 0;
const A_ACCEPT: usize = 1;
const A_REJECT: usize = 2;

use ConntrackKind::{Destroy, New, Update};

struct Fixture {
    clock: Rc<FakeClock>,
    reg: EniRegistry,
    flow_logs: Vec<FlowLogConfig>,
    table: FlowTable<Rc<FakeClock>>,
}

impl Fixture {
    /// Starts at 10:03:17. eni-a is eth0 (10.0.0.5, fd00::5), eni-b is the
    /// interface with MAC_B (10.0.1.7), eni-c (eth9) never appears.
    /// Flow logs: 0 = the whole VPC, all traffic; 1 = eni-a, accept;
    /// 2 = eni-a, reject.
    fn new(max_flows: u64) -> Fixture {
        let clock = Rc::new(FakeClock::new(TEN + 197));
        let mut reg = EniRegistry::from_parts(&[
            eni("eni-a", "vsw-1", EniMatch::Interface("eth0".into())),
            eni("eni-b", "vsw-2", EniMatch::Mac(MAC_B)),
            eni("eni-c", "vsw-1", EniMatch::Interface("eth9".into())),
        ])
        .unwrap();
        let flow_logs = vec![
            flow_log("vpc", ResourceType::Vpc, "vpc-1", TrafficFilter::All),
            flow_log(
                "a-accept",
                ResourceType::Eni,
                "eni-a",
                TrafficFilter::Accept,
            ),
            flow_log(
                "a-reject",
                ResourceType::Eni,
                "eni-a",
                TrafficFilter::Reject,
            ),
        ];
        let now = clock.now_unix();
        for ev in [
            loopback(1),
            addr(1, "127.0.0.1"),
            link(2, "eth0", Some(MacAddr([2; 6]))),
            addr(2, A),
            addr(2, A6),
            link(3, "eth1", Some(MAC_B)),
            addr(3, B),
        ] {
            reg.apply(&ev, now);
        }
        let table = FlowTable::new(Rc::clone(&clock), W, max_flows);
        Fixture {
            clock,
            reg,
            flow_logs,
            table,
        }
    }

    fn event(&mut self, e: ConntrackEntry) {
        self.table.on_event(&self.reg, &e);
    }

    fn baseline(&mut self, e: ConntrackEntry) {
        self.table.baseline(&self.reg, &e);
    }

    fn dump(&mut self, entries: &[ConntrackEntry]) {
        self.table.begin_dump();
        for e in entries {
            self.table.on_dump_entry(&self.reg, e);
        }
        self.table.end_dump(true);
    }

    /// Closes the open window on time.
    fn close(&mut self) -> WindowRecords {
        let deadline = self.table.next_deadline();
        self.clock.set(deadline);
        in_old_order(self.close_at(deadline))
    }

    /// Closes the open window at `end`, whatever the clock says.
    fn close_at(&mut self, end: i64) -> WindowRecords {
        let d = self.table.close_window(&self.reg, end);
        self.route(d).collect_all()
    }

    /// `d` routed to the fixture's instances by their scopes now.
    fn route(&self, d: WindowDrain) -> InstanceDrain {
        routed(d, &self.flow_logs, &self.reg)
    }

    fn eni(&self, id: &str) -> EniIndex {
        self.reg.find(id).unwrap()
    }
}

/// Record order within a window is not part of the format: the drain
/// gives OK records in its hash map's order and the NODATA / SKIPDATA
/// records last. The tests read them in the order the daemon emitted them
/// before it drained in chunks: by ENI (the fixtures' ENI ids sort as their
/// indices do), each ENI's OK records by action, direction and tuple, then
/// its NODATA or SKIPDATA record.
fn in_old_order(mut w: WindowRecords) -> WindowRecords {
    for i in &mut w.instances {
        i.records.sort_by_key(|r| {
            let flow = r.flow.map(|f| {
                (
                    f.action,
                    f.direction,
                    f.srcaddr,
                    f.srcport,
                    f.dstaddr,
                    f.dstport,
                    f.protocol,
                )
            });
            (r.eni.eni_id.clone(), r.log_status != LogStatus::Ok, flow)
        });
    }
    w
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn records(w: &WindowRecords, instance: usize) -> &[FlowRecord] {
    let i = &w.instances[instance];
    assert_eq!(i.instance, instance);
    &i.records
}

/// Each record of one instance as (ENI, status), in emit order: a whole
/// window at a glance, so a check over its records cannot pass on an empty
/// one.
fn eni_statuses(w: &WindowRecords, instance: usize) -> Vec<(&str, LogStatus)> {
    records(w, instance)
        .iter()
        .map(|r| (r.eni.eni_id.as_str(), r.log_status))
        .collect()
}

/// The OK records of one ENI in one instance, without the fields beyond
/// the 18 (`FlowExtras`: the tests in `tests/extras.rs` and
/// `tests/tcp_flags.rs` check those).
fn flows_of(w: &WindowRecords, instance: usize, eni_id: &str) -> Vec<FlowFields> {
    flows_with_extras_of(w, instance, eni_id)
        .into_iter()
        .map(bare)
        .collect()
}

/// The OK records of one ENI in one instance as they are.
fn flows_with_extras_of(w: &WindowRecords, instance: usize, eni_id: &str) -> Vec<FlowFields> {
    records(w, instance)
        .iter()
        .filter(|r| r.eni.eni_id == eni_id && r.log_status == LogStatus::Ok)
        .map(|r| r.flow.unwrap())
        .collect()
}

/// `f` without its fields beyond the 18.
fn bare(f: FlowFields) -> FlowFields {
    FlowFields {
        extras: Default::default(),
        ..f
    }
}

/// The NODATA / SKIPDATA records of one ENI in one instance.
fn statuses(w: &WindowRecords, instance: usize, eni_id: &str) -> Vec<LogStatus> {
    records(w, instance)
        .iter()
        .filter(|r| r.eni.eni_id == eni_id && r.log_status != LogStatus::Ok)
        .inspect(|r| assert!(r.flow.is_none()))
        .map(|r| r.log_status)
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn rec(
    direction: Direction,
    protocol: u8,
    src: &str,
    srcport: u16,
    dst: &str,
    dstport: u16,
    packets: u64,
    bytes: u64,
) -> FlowFields {
    FlowFields {
        srcaddr: ip(src),
        srcport,
        dstaddr: ip(dst),
        dstport,
        protocol,
        direction,
        packets,
        bytes,
        action: Action::Accept,
        extras: Default::default(),
    }
}

fn sort(mut v: Vec<FlowFields>) -> Vec<FlowFields> {
    v.sort_by_key(|f| (f.direction, f.srcaddr, f.srcport, f.dstaddr, f.dstport));
    v
}

use Direction::{In, Out};

#[test]
fn connection_across_three_windows_carries_only_its_delta() {
    let mut f = Fixture::new(1000);
    let c = conn(1, TCP, A, 40000, R, 443);
    f.event(c.clone().kind(New));
    f.dump(&[c.clone().counted((10, 1000), (8, 8000))]);
    let w1 = f.close();
    f.dump(&[c.clone().counted((25, 2500), (20, 20000))]);
    let w2 = f.close();
    f.event(c.clone().kind(Destroy).counted((30, 3000), (22, 22000)));
    f.dump(&[]);
    let w3 = f.close();

    assert_eq!(
        w1.window,
        CaptureWindow {
            start: TEN,
            end: TEN + 600
        }
    );
    assert_eq!(
        w2.window,
        CaptureWindow {
            start: TEN + 600,
            end: TEN + 1200
        }
    );
    assert_eq!(
        w3.window,
        CaptureWindow {
            start: TEN + 1200,
            end: TEN + 1800
        }
    );
    let expect = |o: (u64, u64), r: (u64, u64)| {
        sort(vec![
            rec(Out, TCP, A, 40000, R, 443, o.0, o.1),
            rec(In, TCP, R, 443, A, 40000, r.0, r.1),
        ])
    };
    assert_eq!(
        sort(flows_of(&w1, ALL, "eni-a")),
        expect((10, 1000), (8, 8000))
    );
    assert_eq!(
        sort(flows_of(&w2, ALL, "eni-a")),
        expect((15, 1500), (12, 12000))
    );
    assert_eq!(
        sort(flows_of(&w3, ALL, "eni-a")),
        expect((5, 500), (2, 2000))
    );
    let (mut packets, mut bytes) = (0, 0);
    for w in [&w1, &w2, &w3] {
        for r in records(w, ALL).iter().filter(|r| r.eni.eni_id == "eni-a") {
            assert_eq!((r.start, r.end), (w.window.start, w.window.end));
            let flow = r.flow.unwrap();
            packets += flow.packets;
            bytes += flow.bytes;
        }
    }
    assert_eq!((packets, bytes), (30 + 22, 3000 + 22000));
    assert_eq!(f.table.stats().entries, 0);
}

#[test]
fn baseline_attributes_nothing_from_before_start() {
    let mut f = Fixture::new(1000);
    let c = conn(1, TCP, A, 40000, R, 443);
    f.table.begin_dump();
    f.baseline(c.clone().counted((100, 10_000), (90, 90_000)));
    f.table.end_dump(true);
    f.dump(&[c.clone().counted((100, 10_000), (90, 90_000))]);
    let w1 = f.close();
    assert!(flows_of(&w1, ALL, "eni-a").is_empty());
    assert_eq!(statuses(&w1, ALL, "eni-a"), [LogStatus::NoData]);
    f.dump(&[c.clone().counted((105, 10_500), (93, 93_000))]);
    let w2 = f.close();
    assert_eq!(
        sort(flows_of(&w2, ALL, "eni-a")),
        sort(vec![
            rec(Out, TCP, A, 40000, R, 443, 5, 500),
            rec(In, TCP, R, 443, A, 40000, 3, 3000),
        ])
    );
}

/// A start after an unclean stop: the first window begins at the start
/// (not at the aligned boundary before it, which the previous run's
/// windows covered), ends at the aligned boundary, and every ENI that
/// exists gets SKIPDATA besides the OK records of what was counted.
#[test]
fn first_window_begins_at_the_start_and_can_be_marked_lost() {
    let mut f = Fixture::new(1000);
    let started = f.clock.now_unix();
    f.table.start_first_window_at(started);
    f.table.mark_lost(LossScope::All);
    let c = conn(1, UDP, A, 40000, R, 53);
    f.event(c.clone().kind(Destroy).counted((2, 200), (1, 100)));
    let w = f.close();
    assert_eq!(w.window.start, started);
    assert_eq!(w.window.end, TEN + i64::from(W));
    assert_eq!(flows_of(&w, ALL, "eni-a").len(), 2);
    assert_eq!(statuses(&w, ALL, "eni-a"), [LogStatus::SkipData]);
    assert_eq!(statuses(&w, ALL, "eni-b"), [LogStatus::SkipData]);
}

#[test]
fn destroy_of_baselined_connection_gives_only_the_delta_since_baseline() {
    let mut f = Fixture::new(1000);
    let c = conn(1, UDP, R, 5000, A, 53);
    f.baseline(c.clone().counted((50, 5000), (50, 7000)));
    f.event(c.clone().kind(Destroy).counted((52, 5200), (51, 7140)));
    f.dump(&[]);
    let w = f.close();
    assert_eq!(
        sort(flows_of(&w, ALL, "eni-a")),
        sort(vec![
            rec(In, UDP, R, 5000, A, 53, 2, 200),
            rec(Out, UDP, A, 53, R, 5000, 1, 140),
        ])
    );
    assert_eq!(f.table.stats().lost_connections, 0);
}

#[test]
fn connection_created_and_destroyed_between_dumps_is_counted_once_in_full() {
    let mut f = Fixture::new(1000);
    // No NEW event: the daemon may not subscribe to them.
    let c = conn(7, TCP, R, 51000, A, 22);
    f.event(c.clone().kind(Destroy).counted((6, 400), (5, 900)));
    f.dump(&[]);
    let w1 = f.close();
    assert_eq!(
        sort(flows_of(&w1, ALL, "eni-a")),
        sort(vec![
            rec(In, TCP, R, 51000, A, 22, 6, 400),
            rec(Out, TCP, A, 22, R, 51000, 5, 900),
        ])
    );
    f.dump(&[]);
    let w2 = f.close();
    assert!(flows_of(&w2, ALL, "eni-a").is_empty());
    assert_eq!(f.table.stats().lost_connections, 0);
}

#[test]
fn connection_first_seen_in_a_dump_is_counted_in_full() {
    let mut f = Fixture::new(1000);
    let c = conn(7, TCP, A, 40001, R, 80);
    f.dump(&[c.clone().counted((3, 300), (2, 2000))]);
    let w1 = f.close();
    assert_eq!(flows_of(&w1, ALL, "eni-a").len(), 2);
    f.event(c.clone().kind(Destroy).counted((4, 350), (2, 2000)));
    let w2 = f.close();
    assert_eq!(
        flows_of(&w2, ALL, "eni-a"),
        [rec(Out, TCP, A, 40001, R, 80, 1, 50)]
    );
}

#[test]
fn dump_destroy_race_does_not_double_count() {
    let mut f = Fixture::new(1000);
    // Known connection: DESTROY read while the dump that still lists it is in flight.
    let known = conn(1, TCP, A, 40000, R, 443);
    f.event(known.clone().kind(New));
    // Unknown connection (no NEW event), same race.
    let unknown = conn(2, UDP, A, 5353, R, 53);
    f.table.begin_dump();
    f.event(known.clone().kind(Destroy).counted((10, 1000), (9, 900)));
    f.event(unknown.clone().kind(Destroy).counted((1, 60), (1, 120)));
    f.table
        .on_dump_entry(&f.reg, &known.clone().counted((8, 800), (7, 700)));
    f.table
        .on_dump_entry(&f.reg, &unknown.clone().counted((1, 60), (1, 120)));
    f.table.end_dump(true);
    let w = f.close();
    assert_eq!(
        sort(flows_of(&w, ALL, "eni-a")),
        sort(vec![
            rec(Out, TCP, A, 40000, R, 443, 10, 1000),
            rec(In, TCP, R, 443, A, 40000, 9, 900),
            rec(Out, UDP, A, 5353, R, 53, 1, 60),
            rec(In, UDP, R, 53, A, 5353, 1, 120),
        ])
    );
    assert_eq!(f.table.stats().entries, 0);
    assert_eq!(statuses(&w, ALL, "eni-a"), []);

    // Tombstones last one dump: the id can be a new connection afterwards.
    f.dump(&[known.clone().counted((2, 100), (0, 0))]);
    let w2 = f.close();
    assert_eq!(
        flows_of(&w2, ALL, "eni-a"),
        [rec(Out, TCP, A, 40000, R, 443, 2, 100)]
    );
}

#[test]
fn connection_missing_from_a_complete_dump_is_lost_and_marks_skipdata() {
    let mut f = Fixture::new(1000);
    let lost = conn(1, TCP, A, 40000, R, 443);
    let alive = conn(2, TCP, R, 40000, B, 443);
    f.event(lost.clone().kind(New));
    f.event(alive.clone().kind(New));
    // Interrupted dump: proves nothing.
    f.table.begin_dump();
    f.table
        .on_dump_entry(&f.reg, &alive.clone().counted((1, 60), (1, 60)));
    f.table.end_dump(false);
    assert_eq!(f.table.stats().entries, 2);
    // A connection whose NEW arrives during the dump but which the dump
    // passed over already is alive, not lost.
    let during = conn(3, UDP, A, 1000, R, 2000);
    f.table.begin_dump();
    f.event(during.clone().kind(New));
    f.table
        .on_dump_entry(&f.reg, &alive.clone().counted((2, 120), (2, 120)));
    f.table.end_dump(true);
    // One complete dump without it is not proof yet: its DESTROY may
    // still come (redelivery, or evicted by the dump itself).
    assert_eq!(f.table.stats().lost_connections, 0);
    let w = f.close();
    assert_eq!(statuses(&w, ALL, "eni-a"), [LogStatus::NoData]);
    // Missing from a second complete dump in a row, with no DESTROY: lost.
    f.dump(&[alive.clone().counted((3, 180), (3, 180)), during.clone()]);
    let stats = f.table.stats();
    assert_eq!((stats.entries, stats.lost_connections), (2, 1));
    let w = f.close();
    assert_eq!(statuses(&w, ALL, "eni-a"), [LogStatus::SkipData]);
    assert_eq!(statuses(&w, ALL, "eni-b"), []);
    assert_eq!(flows_of(&w, ALL, "eni-b").len(), 2);
    // The mark lasts one window.
    f.dump(&[alive.clone().counted((3, 180), (3, 180)), during.clone()]);
    let w2 = f.close();
    assert_eq!(statuses(&w2, ALL, "eni-a"), [LogStatus::NoData]);
}

#[test]
fn eni_to_eni_traffic_gives_records_on_both_enis() {
    let mut f = Fixture::new(1000);
    let c = conn(1, TCP, A, 40000, B, 80);
    f.event(c.clone().kind(New));
    f.event(c.clone().kind(Destroy).counted((4, 400), (3, 3000)));
    let w = f.close();
    assert_eq!(
        sort(flows_of(&w, ALL, "eni-a")),
        sort(vec![
            rec(Out, TCP, A, 40000, B, 80, 4, 400),
            rec(In, TCP, B, 80, A, 40000, 3, 3000),
        ])
    );
    assert_eq!(
        sort(flows_of(&w, ALL, "eni-b")),
        sort(vec![
            rec(In, TCP, A, 40000, B, 80, 4, 400),
            rec(Out, TCP, B, 80, A, 40000, 3, 3000),
        ])
    );
}

#[test]
fn nat_records_show_the_tuples_on_the_eni_wire() {
    let mut f = Fixture::new(1000);
    // A container masqueraded behind eni-a: orig.src is the container,
    // the packets leave eni-a from A:61000.
    let mut snat = conn(1, TCP, "172.17.0.2", 33000, R, 80);
    snat.reply.dst = ip(A);
    snat.reply.dst_port = 61000;
    // A port forward on eni-a to a container: arrives for A:8080, the
    // reply comes from the container.
    let mut dnat = conn(2, TCP, R, 5000, A, 8080);
    dnat.reply.src = ip("172.17.0.3");
    dnat.reply.src_port = 80;
    f.event(snat.kind(Destroy).counted((5, 500), (4, 4000)));
    f.event(dnat.kind(Destroy).counted((3, 300), (2, 2000)));
    let w = f.close();
    assert_eq!(
        sort(flows_of(&w, ALL, "eni-a")),
        sort(vec![
            rec(Out, TCP, A, 61000, R, 80, 5, 500),
            rec(In, TCP, R, 80, A, 61000, 4, 4000),
            rec(In, TCP, R, 5000, A, 8080, 3, 300),
            rec(Out, TCP, A, 8080, R, 5000, 2, 2000),
        ])
    );
}

#[test]
fn no_record_for_a_direction_without_packets() {
    let mut f = Fixture::new(1000);
    let c = conn(1, UDP, A, 5000, R, 9999);
    f.dump(&[c.clone().counted((3, 300), (0, 0))]);
    let w1 = f.close();
    assert_eq!(
        flows_of(&w1, ALL, "eni-a"),
        [rec(Out, UDP, A, 5000, R, 9999, 3, 300)]
    );
    f.dump(&[c.clone().counted((3, 300), (2, 100))]);
    let w2 = f.close();
    assert_eq!(
        flows_of(&w2, ALL, "eni-a"),
        [rec(In, UDP, R, 9999, A, 5000, 2, 100)]
    );
    f.dump(&[c.clone().counted((3, 300), (2, 100))]);
    let w3 = f.close();
    assert!(flows_of(&w3, ALL, "eni-a").is_empty());
    assert_eq!(statuses(&w3, ALL, "eni-a"), [LogStatus::NoData]);
}

#[test]
fn icmp_ports_are_zero_and_connections_aggregate() {
    let mut f = Fixture::new(1000);
    // Echo ids 1 and 2, type 8 code 0, as conntrack keys them.
    let mut p1 = conn(1, ICMP, A, 1, R, 8 << 8);
    p1.reply.src_port = 1;
    p1.reply.dst_port = 0;
    let p2 = conn(2, ICMP, A, 2, R, 8 << 8);
    let p6 = conn(3, ICMPV6, A6, 7, "2001:db8::1", 128 << 8);
    let gre = conn(4, 47, A, 0, R, 0);
    f.event(p1.kind(Destroy).counted((4, 336), (4, 336)));
    f.event(p2.kind(Destroy).counted((1, 84), (0, 0)));
    f.event(p6.kind(Destroy).counted((2, 208), (2, 208)));
    f.dump(&[gre.counted((9, 900), (0, 0))]);
    let w = f.close();
    assert_eq!(
        sort(flows_of(&w, ALL, "eni-a")),
        sort(vec![
            rec(Out, ICMP, A, 0, R, 0, 5, 420),
            rec(In, ICMP, R, 0, A, 0, 4, 336),
            rec(Out, ICMPV6, A6, 0, "2001:db8::1", 0, 2, 208),
            rec(In, ICMPV6, "2001:db8::1", 0, A6, 0, 2, 208),
            rec(Out, 47, A, 0, R, 0, 9, 900),
        ])
    );
}

#[test]
fn udp_flow_restarted_within_a_window_is_one_record() {
    let mut f = Fixture::new(1000);
    f.event(
        conn(1, UDP, A, 5353, R, 53)
            .kind(Destroy)
            .counted((1, 70), (1, 150)),
    );
    f.event(
        conn(2, UDP, A, 5353, R, 53)
            .kind(Destroy)
            .counted((2, 140), (1, 130)),
    );
    let w = f.close();
    assert_eq!(
        sort(flows_of(&w, ALL, "eni-a")),
        sort(vec![
            rec(Out, UDP, A, 5353, R, 53, 3, 210),
            rec(In, UDP, R, 53, A, 5353, 2, 280),
        ])
    );
}

#[test]
fn nodata_for_an_idle_existing_eni_and_none_for_an_absent_one() {
    let mut f = Fixture::new(1000);
    let w1 = f.close();
    assert_eq!(statuses(&w1, ALL, "eni-a"), [LogStatus::NoData]);
    assert_eq!(statuses(&w1, ALL, "eni-b"), [LogStatus::NoData]);
    assert_eq!(statuses(&w1, ALL, "eni-c"), []);
    assert_eq!(records(&w1, ALL).len(), 2);
    let nodata = &records(&w1, ALL)[0];
    assert_eq!(
        (nodata.start, nodata.end, nodata.flow),
        (TEN, TEN + 600, None)
    );

    // eni-c's interface appears during window 2; eni-b's goes away.
    f.clock.set(TEN + 900);
    f.reg.apply(&link(9, "eth9", None), TEN + 900);
    f.reg
        .apply(&RouteEvent::LinkRemoved { index: IfIndex(3) }, TEN + 900);
    let w2 = f.close();
    assert_eq!(statuses(&w2, ALL, "eni-b"), [LogStatus::NoData]);
    assert_eq!(statuses(&w2, ALL, "eni-c"), [LogStatus::NoData]);
    let w3 = f.close();
    assert_eq!(statuses(&w3, ALL, "eni-b"), []);
    assert_eq!(statuses(&w3, ALL, "eni-c"), [LogStatus::NoData]);
}

#[test]
fn traffic_filters_route_records_to_instances() {
    let mut f = Fixture::new(1000);
    let a = f.eni("eni-a");
    f.event(
        conn(1, TCP, A, 40000, R, 443)
            .kind(Destroy)
            .counted((2, 200), (2, 200)),
    );
    f.event(
        conn(2, TCP, R, 40000, B, 443)
            .kind(Destroy)
            .counted((1, 60), (1, 60)),
    );
    let rule: Arc<str> = Arc::from("inet filter input drop");
    let blocked = FlowTuple {
        src: ip(R),
        src_port: 6000,
        dst: ip(A),
        dst_port: 23,
        protocol: TCP,
    };
    f.table.add_reject(a, In, blocked, 1, 60, Some(&rule), 0);
    f.table.add_reject(a, In, blocked, 2, 120, None, 0);
    let w = f.close();

    let actions = |instance| {
        let mut v: Vec<(String, Action)> = records(&w, instance)
            .iter()
            .map(|r| (r.eni.eni_id.clone(), r.flow.unwrap().action))
            .collect();
        v.sort();
        v
    };
    let (acc, rej) = (Action::Accept, Action::Reject);
    let s = |id: &str| id.to_owned();
    assert_eq!(
        actions(ALL),
        [
            (s("eni-a"), acc),
            (s("eni-a"), acc),
            (s("eni-a"), rej),
            (s("eni-b"), acc),
            (s("eni-b"), acc)
        ]
    );
    assert_eq!(actions(A_ACCEPT), [(s("eni-a"), acc), (s("eni-a"), acc)]);
    assert_eq!(actions(A_REJECT), [(s("eni-a"), rej)]);
    let reject = &records(&w, A_REJECT)[0];
    assert_eq!(reject.rule.as_deref(), Some("inet filter input drop"));
    let flow = reject.flow.unwrap();
    assert_eq!(
        (flow.direction, flow.packets, flow.bytes, flow.dstport),
        (In, 3, 180, 23)
    );

    // Only accepted traffic: the reject instance reads eni-a as idle.
    f.event(
        conn(3, TCP, A, 40001, R, 443)
            .kind(Destroy)
            .counted((1, 60), (0, 0)),
    );
    let w2 = f.close();
    assert_eq!(flows_of(&w2, A_ACCEPT, "eni-a").len(), 1);
    assert_eq!(statuses(&w2, A_REJECT, "eni-a"), [LogStatus::NoData]);
    assert_eq!(eni_statuses(&w2, A_REJECT), [("eni-a", LogStatus::NoData)]);
}

#[test]
fn mark_lost_adds_skipdata_besides_ok_records() {
    let mut f = Fixture::new(1000);
    let b = f.eni("eni-b");
    f.event(
        conn(1, TCP, A, 40000, R, 443)
            .kind(Destroy)
            .counted((2, 200), (2, 200)),
    );
    f.table.mark_lost(LossScope::Eni(b));
    let w1 = f.close();
    assert_eq!(flows_of(&w1, ALL, "eni-a").len(), 2);
    assert_eq!(statuses(&w1, ALL, "eni-a"), []);
    assert_eq!(statuses(&w1, ALL, "eni-b"), [LogStatus::SkipData]);

    f.event(
        conn(2, TCP, A, 40000, R, 443)
            .kind(Destroy)
            .counted((2, 200), (2, 200)),
    );
    f.table.mark_lost(LossScope::All);
    let w2 = f.close();
    assert_eq!(flows_of(&w2, ALL, "eni-a").len(), 2);
    assert_eq!(statuses(&w2, ALL, "eni-a"), [LogStatus::SkipData]);
    assert_eq!(statuses(&w2, ALL, "eni-b"), [LogStatus::SkipData]);
    assert_eq!(
        statuses(&w2, ALL, "eni-c"),
        [],
        "no interface, nothing to lose"
    );
    // Every instance covering the ENI says so, whatever its filter.
    assert_eq!(statuses(&w2, A_REJECT, "eni-a"), [LogStatus::SkipData]);

    let w3 = f.close();
    assert_eq!(statuses(&w3, ALL, "eni-b"), [LogStatus::NoData]);
}

/// What the daemon's STATUS= line says of a window: the drain's count of
/// its SKIPDATA records, before and after they are given out.
#[test]
fn a_drain_counts_its_skipdata_records() {
    let mut f = Fixture::new(1000);
    let b = f.eni("eni-b");
    let close = |f: &mut Fixture| {
        let deadline = f.table.next_deadline();
        f.clock.set(deadline);
        f.table.begin_close(deadline);
        let d = f.table.finish_close(&f.reg).expect("a closing window");
        routed(d, &f.flow_logs, &f.reg)
    };
    let counted = |drain: &mut InstanceDrain| {
        let mut skipdata = 0;
        while let Some(chunk) = drain.next_chunk(usize::MAX) {
            for (_, batch) in &chunk.instances {
                skipdata += batch
                    .iter()
                    .filter(|r| r.log_status == LogStatus::SkipData)
                    .count();
            }
        }
        skipdata
    };
    let mut none = close(&mut f);
    assert_eq!((none.skipdata_records(), counted(&mut none)), (0, 0));
    // eni-b is in one flow log; eni-a in three (all say SKIPDATA); eni-c
    // has no interface.
    f.table.mark_lost(LossScope::Eni(b));
    let mut one = close(&mut f);
    assert_eq!(one.skipdata_records(), 1);
    assert_eq!(counted(&mut one), 1);
    assert_eq!(one.skipdata_records(), 1, "still said once given out");
    f.table.mark_lost(LossScope::All);
    let mut all = close(&mut f);
    assert_eq!(all.skipdata_records(), 4);
    assert_eq!(counted(&mut all), 4);
}

#[test]
fn max_flows_marks_skipdata() {
    let mut f = Fixture::new(1);
    let first = conn(1, TCP, A, 40000, R, 443);
    let second = conn(2, TCP, R, 40000, B, 443);
    f.event(first.clone().kind(New));
    f.event(second.clone().kind(New));
    f.dump(&[
        first.clone().counted((1, 60), (1, 60)),
        second.clone().counted((3, 180), (3, 180)),
    ]);
    let stats = f.table.stats();
    assert_eq!(
        (stats.entries, stats.peak_entries, stats.table_full_drops),
        (1, 1, 2)
    );
    let w1 = f.close();
    assert_eq!(statuses(&w1, ALL, "eni-a"), []);
    assert_eq!(statuses(&w1, ALL, "eni-b"), [LogStatus::SkipData]);
    assert!(
        flows_of(&w1, ALL, "eni-b").is_empty(),
        "nothing counted that is not tracked"
    );
    // A DESTROY needs no room: it is counted in full, once.
    f.event(second.clone().kind(Destroy).counted((4, 240), (4, 240)));
    let w2 = f.close();
    assert_eq!(flows_of(&w2, ALL, "eni-b").len(), 2);
    assert_eq!(statuses(&w2, ALL, "eni-b"), []);
}

#[test]
fn counters_going_backwards_do_not_wrap() {
    let mut f = Fixture::new(1000);
    let c = conn(1, TCP, A, 40000, R, 443);
    f.dump(&[c.clone().counted((10, 1000), (10, 1000))]);
    f.close();
    // Another tool zeroed the counters, or the id was reused.
    f.dump(&[c.clone().counted((3, 300), (2, 200))]);
    assert_eq!(f.table.stats().anomalies, 1);
    let w = f.close();
    assert_eq!(
        sort(flows_of(&w, ALL, "eni-a")),
        sort(vec![
            rec(Out, TCP, A, 40000, R, 443, 3, 300),
            rec(In, TCP, R, 443, A, 40000, 2, 200),
        ])
    );
    assert_eq!(statuses(&w, ALL, "eni-a"), [LogStatus::SkipData]);
    // And it is tracked from the new counters on.
    f.event(c.clone().kind(Destroy).counted((4, 400), (2, 200)));
    let w2 = f.close();
    assert_eq!(
        flows_of(&w2, ALL, "eni-a"),
        [rec(Out, TCP, A, 40000, R, 443, 1, 100)]
    );
}

/// CTA_ID is a 32-bit hash: two live connections can share one. They are
/// two connections, each counted on its own.
#[test]
fn two_live_connections_sharing_an_id_are_kept_apart() {
    let mut f = Fixture::new(1000);
    let one = conn(1, TCP, A, 40000, R, 443);
    let two = conn(1, TCP, A, 40002, R, 443);
    f.dump(&[
        one.clone().counted((10, 1000), (0, 0)),
        two.clone().counted((20, 2000), (0, 0)),
    ]);
    f.close();
    f.dump(&[
        one.clone().counted((11, 1100), (0, 0)),
        two.clone().counted((22, 2200), (0, 0)),
    ]);
    let w = f.close();
    assert_eq!(
        sort(flows_of(&w, ALL, "eni-a")),
        sort(vec![
            rec(Out, TCP, A, 40000, R, 443, 1, 100),
            rec(Out, TCP, A, 40002, R, 443, 2, 200),
        ])
    );
    assert_eq!(f.table.stats().anomalies, 0);
    assert_eq!(f.table.stats().entries, 2);
}

#[test]
fn new_event_read_after_a_dump_keeps_the_dump_counters() {
    let mut f = Fixture::new(1000);
    let c = conn(1, TCP, A, 40000, R, 443);
    f.dump(&[c.clone().counted((5, 500), (0, 0))]);
    f.event(c.clone().kind(New));
    f.event(c.clone().kind(Destroy).counted((7, 700), (0, 0)));
    let w = f.close();
    assert_eq!(
        flows_of(&w, ALL, "eni-a"),
        [rec(Out, TCP, A, 40000, R, 443, 7, 700)]
    );
}

#[test]
fn update_events_harvest_like_dump_lines() {
    let mut f = Fixture::new(1000);
    let c = conn(1, TCP, A, 40000, R, 443);
    f.event(c.clone().kind(New));
    f.event(c.clone().kind(Update).counted((3, 180), (2, 120)));
    f.dump(&[c.clone().counted((4, 240), (3, 180))]);
    let w = f.close();
    assert_eq!(
        sort(flows_of(&w, ALL, "eni-a")),
        sort(vec![
            rec(Out, TCP, A, 40000, R, 443, 4, 240),
            rec(In, TCP, R, 443, A, 40000, 3, 180),
        ])
    );
}

#[test]
fn zones_keep_connections_with_the_same_id_apart() {
    let mut f = Fixture::new(1000);
    let c = conn(1, UDP, A, 1000, R, 2000);
    let mut z = conn(1, UDP, A, 1000, R, 2000);
    z.zone = 5;
    f.dump(&[
        c.clone().counted((1, 100), (0, 0)),
        z.clone().counted((2, 200), (0, 0)),
    ]);
    assert_eq!(f.table.stats().entries, 2);
    let w = f.close();
    assert_eq!(
        flows_of(&w, ALL, "eni-a"),
        [rec(Out, UDP, A, 1000, R, 2000, 3, 300)]
    );
}

#[test]
fn loopback_and_foreign_traffic_is_unattributed() {
    let mut f = Fixture::new(1000);
    f.event(conn(1, TCP, "127.0.0.1", 40000, "127.0.0.1", 80).kind(New));
    f.dump(&[conn(2, TCP, "192.168.5.5", 1, R, 2).counted((1, 60), (1, 60))]);
    let stats = f.table.stats();
    assert_eq!((stats.entries, stats.unattributed), (0, 2));
    let w = f.close();
    assert_eq!(
        eni_statuses(&w, ALL),
        [("eni-a", LogStatus::NoData), ("eni-b", LogStatus::NoData)]
    );
}

#[test]
fn missing_counters_attribute_nothing() {
    let mut f = Fixture::new(1000);
    let mut c = conn(1, TCP, A, 40000, R, 443);
    c.orig_counters = None;
    c.reply_counters = None;
    f.event(c.clone().kind(New));
    f.dump(std::slice::from_ref(&c));
    let w = f.close();
    assert!(flows_of(&w, ALL, "eni-a").is_empty());
    assert_eq!(f.table.stats().entries, 1, "seen alive by the dump");
    assert_eq!(f.table.stats().missing_counters, 1);
}

#[test]
fn early_close_uses_the_given_end() {
    let mut f = Fixture::new(1000);
    assert_eq!(
        f.table.window(),
        CaptureWindow {
            start: TEN,
            end: TEN + 600
        }
    );
    f.event(
        conn(1, TCP, A, 40000, R, 443)
            .kind(Destroy)
            .counted((1, 60), (0, 0)),
    );
    // SIGTERM at 10:07:30.
    f.clock.set(TEN + 450);
    let w = in_old_order(f.close_at(TEN + 450));
    assert_eq!(
        w.window,
        CaptureWindow {
            start: TEN,
            end: TEN + 450
        }
    );
    let r = &records(&w, ALL)[0];
    assert_eq!((r.start, r.end), (TEN, TEN + 450));
    assert_eq!(
        f.table.window(),
        CaptureWindow {
            start: TEN + 450,
            end: TEN + 600
        }
    );
}

#[test]
fn next_window_starts_where_the_last_one_ended() {
    let mut f = Fixture::new(1000);
    assert_eq!(f.table.next_deadline(), TEN + 600);
    // The loop woke up 3 s late.
    f.clock.set(TEN + 603);
    let w = in_old_order(f.close_at(TEN + 600));
    assert_eq!(w.window.end, TEN + 600);
    assert_eq!(f.table.next_deadline(), TEN + 1200);
    // A clock stepped back never yields a window ending before it starts.
    f.clock.set(TEN);
    let w = in_old_order(f.close_at(TEN));
    assert_eq!(
        w.window,
        CaptureWindow {
            start: TEN + 600,
            end: TEN + 600
        }
    );
}

/// A restarted daemon resumes a connection from what the previous run
/// attributed: what flowed while no daemon ran is counted once, in the
/// first window, and nothing the previous run counted is counted again.
#[test]
fn handoff_resumes_where_the_previous_run_stopped() {
    let c = conn(1, TCP, A, 40000, R, 443);
    // The previous run attributed (10, 1000) / (8, 8000) and stopped.
    let mut old = Fixture::new(1000);
    old.event(c.clone().kind(New));
    old.dump(&[c.clone().counted((10, 1000), (8, 8000))]);
    let handed_off = old.table.handoff();
    assert_eq!(handed_off.len(), 1);
    assert_eq!(handed_off[0].attributed, [10, 1000, 8, 8000]);

    // The new run baselines at (12, 1200) / (9, 9000), then resumes.
    let mut new = Fixture::new(1000);
    new.table.begin_dump();
    new.baseline(c.clone().counted((12, 1200), (9, 9000)));
    new.table.end_dump(false);
    assert_eq!(new.table.resume_from(&handed_off), 1);
    new.dump(&[c.clone().counted((15, 1500), (9, 9000))]);
    let w = new.close();
    assert_eq!(
        sort(flows_of(&w, ALL, "eni-a")),
        sort(vec![
            rec(Out, TCP, A, 40000, R, 443, 5, 500),
            rec(In, TCP, R, 443, A, 40000, 1, 1000),
        ])
    );

    // A handoff for another connection under the same id, or one ahead of
    // the kernel's counters, is not applied.
    let mut other = Fixture::new(1000);
    other.baseline(conn(1, TCP, A, 40001, R, 443).counted((12, 1200), (9, 9000)));
    assert_eq!(other.table.resume_from(&handed_off), 0);
    let mut behind = Fixture::new(1000);
    behind.baseline(c.clone().counted((5, 500), (4, 4000)));
    assert_eq!(behind.table.resume_from(&handed_off), 0);
}

/// After a clean handoff: a connection the kernel created after the
/// previous run stopped counting, and that it did not hand off, was
/// created while no daemon ran and is counted in full; an older one is
/// baselined (not the previous run's to count, so not this one's either),
/// and a handed-off one resumes whatever its start time.
#[test]
fn connections_created_while_no_daemon_ran_are_counted_in_full() {
    let stopped = TEN + 100; // the previous run's last window ended here
    let ns = |t: i64| u64::try_from(t).unwrap() * 1_000_000_000;
    let handed = conn(1, TCP, A, 40000, R, 443).started(ns(stopped) + 5);
    let older = conn(2, TCP, A, 40001, R, 443).started(ns(stopped) - 1);
    let during = conn(3, UDP, A, 40002, R, 53).started(ns(stopped) + 2_000_000_000);
    let mut old = Fixture::new(1000);
    old.dump(&[handed.clone().counted((1, 100), (1, 100))]);
    let handed_off = old.table.handoff();
    let keys: std::collections::HashSet<u64> = handed_off.iter().map(|h| h.key).collect();

    let mut new = Fixture::new(1000);
    new.table.begin_dump();
    for (c, counters, in_full) in [
        (&handed, ((3, 300), (2, 200)), false),
        (&older, ((50, 5000), (40, 4000)), false),
        (&during, ((4, 400), (0, 0)), true),
    ] {
        let e = c.clone().counted(counters.0, counters.1);
        assert_eq!(
            new.table
                .baseline_after_handoff(&new.reg, &e, stopped, &keys),
            in_full
        );
    }
    new.table.end_dump(false);
    assert_eq!(new.table.resume_from(&handed_off), 1);
    new.dump(&[
        handed.counted((3, 300), (2, 200)),
        older.counted((50, 5000), (40, 4000)),
        during.counted((4, 400), (0, 0)),
    ]);
    let w = new.close();
    assert_eq!(
        sort(flows_of(&w, ALL, "eni-a")),
        sort(vec![
            rec(Out, TCP, A, 40000, R, 443, 2, 200),
            rec(In, TCP, R, 443, A, 40000, 1, 100),
            rec(Out, UDP, A, 40002, R, 53, 4, 400),
        ])
    );
}

/// The loop harvests an ENI's flows when its interface goes, then detaches
/// them: what they carry later is not that ENI's, nothing is counted twice,
/// and if the address turns up on another ENI the rest is that one's.
#[test]
fn an_eni_that_loses_its_interface_has_its_flows_closed() {
    let mut f = Fixture::new(1000);
    let c = conn(1, UDP, R, 5000, A, 53);
    f.dump(&[c.clone().counted((2, 200), (0, 0))]);
    // Removed mid-window: the loop dumps first, then applies and detaches.
    f.clock.set(TEN + 400);
    f.dump(&[c.clone().counted((3, 300), (0, 0))]);
    f.reg
        .apply(&RouteEvent::LinkRemoved { index: IfIndex(2) }, TEN + 400);
    let a = f.eni("eni-a");
    assert_eq!(f.reg.take_detached(), vec![a]);
    f.table.detach(a);
    let w1 = f.close();
    assert_eq!(
        flows_of(&w1, ALL, "eni-a"),
        [rec(In, UDP, R, 5000, A, 53, 3, 300)]
    );
    // Later counters of the same connection (an address nobody owns now).
    f.dump(&[c.clone().counted((4, 400), (0, 0))]);
    let w2 = f.close();
    // Only eni-b's empty window: nothing of eni-a, nothing to another ENI.
    assert_eq!(
        eni_statuses(&w2, ALL),
        [("eni-b", LogStatus::NoData)],
        "{w2:?}"
    );
    // The address turns up on eni-c: from then on its, from where it was.
    f.reg.apply(&link(9, "eth9", None), TEN + 1300);
    f.reg.apply(&addr(9, A), TEN + 1300);
    f.dump(&[c.clone().counted((6, 600), (0, 0))]);
    f.event(c.clone().kind(Destroy).counted((7, 700), (0, 0)));
    let w3 = f.close();
    assert_eq!(
        flows_of(&w3, ALL, "eni-c"),
        [rec(In, UDP, R, 5000, A, 53, 3, 300)]
    );
}

/// With the metadata service, an interface's records wait (across
/// windows) until its ids are known, and then go out whole.
#[test]
fn records_of_an_eni_waiting_for_its_metadata_are_held_then_emitted() {
    use crate::config::Unmapped;
    use crate::model::{EcsEni, EcsSnapshot, SnapshotUpdate};

    let clock = Rc::new(FakeClock::new(TEN + 10));
    let mut reg = EniRegistry::from_parts(&[]).unwrap();
    let logs = vpc_log("vpc-ecs");
    reg.learn_from_ecs(Unmapped::Ignore);
    let mac = MacAddr([0x00, 0x16, 0x3e, 0, 0, 0x42]);
    reg.apply(&link(4, "eth1", Some(mac)), TEN + 10);
    reg.apply(&addr(4, A), TEN + 10);
    let mut table = FlowTable::new(Rc::clone(&clock), W, 1000);
    let c = conn(1, UDP, R, 5000, A, 53);
    let dump = |table: &mut FlowTable<Rc<FakeClock>>, reg: &EniRegistry, e: ConntrackEntry| {
        table.begin_dump();
        table.on_dump_entry(reg, &e);
        table.end_dump(true);
    };
    dump(&mut table, &reg, c.clone().counted((5, 500), (0, 0)));
    table.mark_lost(LossScope::All);
    clock.set(TEN + 600);
    let w1 = in_old_order(routed(table.close_window(&reg, TEN + 600), &logs, &reg).collect_all());
    assert_eq!(w1.record_count(), 0);
    assert_eq!((w1.held, w1.held_dropped), (1, 0));

    // Window 2: more traffic, then the service answers.
    dump(&mut table, &reg, c.clone().counted((8, 800), (0, 0)));
    let mut snapshot = EcsSnapshot {
        instance_id: "i-ecs".into(),
        account_id: "5678".into(),
        ..EcsSnapshot::default()
    };
    snapshot.enis.insert(
        mac,
        EcsEni {
            eni_id: "eni-late".into(),
            vpc_id: "vpc-ecs".into(),
            vswitch_id: "vsw-ecs".into(),
        },
    );
    reg.apply_metadata(
        &SnapshotUpdate {
            snapshot,
            looked_for: vec![mac],
            retrying: vec![],
        },
        TEN + 700,
    );
    clock.set(TEN + 1200);
    let w2 = in_old_order(routed(table.close_window(&reg, TEN + 1200), &logs, &reg).collect_all());
    assert_eq!(w2.held, 0);
    // All 8 packets, in the window the ids became known; the loss marked
    // while it was held is not forgotten.
    assert_eq!(
        flows_of(&w2, 0, "eni-late"),
        [rec(In, UDP, R, 5000, A, 53, 8, 800)]
    );
    assert_eq!(statuses(&w2, 0, "eni-late"), [LogStatus::SkipData]);
    let r = &records(&w2, 0)[0];
    assert_eq!(
        (r.start, r.end, r.eni.vm_id.as_str()),
        (TEN + 600, TEN + 1200, "i-ecs")
    );
    let w3 = in_old_order(routed(table.close_window(&reg, TEN + 1800), &logs, &reg).collect_all());
    assert_eq!(statuses(&w3, 0, "eni-late"), [LogStatus::NoData]);
}

/// In reliable mode the kernel re-sends a DESTROY that a full socket
/// refused, possibly after two window dumps no longer listed the entry and
/// the table declared it lost (SKIPDATA). That late DESTROY counts only what
/// was not attributed yet, never the whole connection a second time.
#[test]
fn a_late_destroy_after_a_presumed_loss_is_not_counted_twice() {
    let mut f = Fixture::new(1000);
    let c = conn(7, UDP, A, 5000, R, 53);
    f.dump(&[c.clone().counted((10, 1000), (0, 0))]);
    let w1 = f.close();
    assert_eq!(
        flows_of(&w1, ALL, "eni-a"),
        [rec(Out, UDP, A, 5000, R, 53, 10, 1000)]
    );
    // Two complete dumps without it and no DESTROY: presumed lost.
    f.dump(&[]);
    f.dump(&[]);
    assert_eq!(f.table.stats().lost_connections, 1);
    let w2 = f.close();
    assert_eq!(statuses(&w2, ALL, "eni-a"), [LogStatus::SkipData]);
    // Its DESTROY arrives after all, with 2 more packets than attributed.
    f.event(c.clone().kind(Destroy).counted((12, 1200), (0, 0)));
    let w3 = f.close();
    assert_eq!(
        flows_of(&w3, ALL, "eni-a"),
        [rec(Out, UDP, A, 5000, R, 53, 2, 200)]
    );
    assert_eq!(f.table.stats().revived, 1);
}

/// A reopened TCP 5-tuple usually gets the same CTA_ID as the connection it
/// replaced. The old one's DESTROY, still queued, can arrive during the dump
/// that lists the new one: both are counted, each once, because the start
/// time tells the incarnations apart.
#[test]
fn two_incarnations_of_one_tuple_with_one_id_are_counted_apart() {
    let mut f = Fixture::new(1000);
    let old = conn(9, TCP, A, 40000, R, 443).started(1_000);
    let new = conn(9, TCP, A, 40000, R, 443).started(2_000);
    f.dump(&[old.clone().counted((5, 500), (0, 0))]);
    f.close();
    f.table.begin_dump();
    f.table
        .on_dump_entry(&f.reg, &new.clone().counted((3, 300), (0, 0)));
    f.event(old.clone().kind(Destroy).counted((6, 600), (0, 0)));
    f.table.end_dump(true);
    let w = f.close();
    assert_eq!(
        flows_of(&w, ALL, "eni-a"),
        [rec(Out, TCP, A, 40000, R, 443, 4, 400)],
        "1 packet of the old incarnation and 3 of the new, aggregated by 5-tuple"
    );
    assert_eq!(statuses(&w, ALL, "eni-a"), []);
    assert_eq!(f.table.stats().anomalies, 0);
}

// The chunked drain of a closed window.

use crate::model::has_ports;

/// The fixtures' open window.
const WINDOW: CaptureWindow = CaptureWindow {
    start: TEN,
    end: TEN + 600,
};

fn tuple(protocol: u8, src: &str, src_port: u16, dst: &str, dst_port: u16) -> FlowTuple {
    FlowTuple {
        src: ip(src),
        src_port,
        dst: ip(dst),
        dst_port,
        protocol,
    }
}

/// One `WindowAggregate::add` of the reference below.
#[derive(Clone)]
struct Add {
    eni: &'static str,
    direction: Direction,
    action: Action,
    tuple: FlowTuple,
    packets: u64,
    bytes: u64,
}

/// Traffic over the fixture's three ENIs: eni-a only accepted traffic,
/// eni-b both kinds, eni-c (whose interface never appears) only rejected;
/// IPv4 and IPv6; some tuples twice (summed); ICMP whose echo ids differ
/// (one record).
fn traffic() -> Vec<Add> {
    let mut adds = Vec::new();
    for i in 0..60u16 {
        let eni = ["eni-a", "eni-b", "eni-c"][usize::from(i % 3)];
        let action = match (eni, i % 2) {
            ("eni-a", _) | ("eni-b", 0) => Action::Accept,
            _ => Action::Reject,
        };
        let direction = if i % 4 < 2 { In } else { Out };
        let t = match i % 5 {
            0 => tuple(UDP, "fd00::5", 5000 + i, "2001:db8::1", 53),
            1 if i % 7 == 1 => tuple(ICMP, A, i, R, 8 << 8),
            _ => tuple(TCP, A, 40000 + i, R, 443),
        };
        let add = Add {
            eni,
            direction,
            action,
            tuple: t,
            packets: u64::from(i) + 1,
            bytes: 100 * (u64::from(i) + 1),
        };
        if i % 6 == 0 {
            adds.push(Add {
                packets: 2,
                bytes: 20,
                ..add.clone()
            });
        }
        if t.protocol == ICMP {
            adds.push(Add {
                tuple: FlowTuple { src_port: 0, ..t },
                ..add.clone()
            });
        }
        adds.push(add);
    }
    adds
}

fn aggregate_of(reg: &EniRegistry, adds: &[Add]) -> WindowAggregate {
    let mut agg = WindowAggregate::default();
    for a in adds {
        let eni = reg.find(a.eni).unwrap();
        agg.add(
            eni,
            a.direction,
            a.action,
            a.tuple,
            (a.packets, a.bytes),
            None,
        );
    }
    agg
}

/// What the fixture's instances should get for `adds` (eni-b marked
/// lost), computed without the aggregate.
fn expected(reg: &EniRegistry, adds: &[Add]) -> WindowRecords {
    type Key = (&'static str, Action, Direction, FlowTuple);
    let mut sums: Vec<(Key, (u64, u64))> = Vec::new();
    for a in adds {
        let mut t = a.tuple;
        if !has_ports(t.protocol) {
            (t.src_port, t.dst_port) = (0, 0);
        }
        let key = (a.eni, a.action, a.direction, t);
        match sums.iter_mut().find(|(k, _)| *k == key) {
            Some((_, s)) => *s = (s.0 + a.packets, s.1 + a.bytes),
            None => sums.push((key, (a.packets, a.bytes))),
        }
    }
    let record = |eni: &str, flow, log_status| FlowRecord {
        eni: Arc::clone(reg.ids(reg.find(eni).unwrap())),
        flow,
        start: WINDOW.start,
        end: WINDOW.end,
        log_status,
        rule: None,
    };
    let ok = |(eni, action, direction, t): Key, (packets, bytes)| {
        let flow = FlowFields {
            srcaddr: t.src,
            srcport: t.src_port,
            dstaddr: t.dst,
            dstport: t.dst_port,
            protocol: t.protocol,
            direction,
            packets,
            bytes,
            action,
            // Not NATed, no times given: the window's bounds.
            extras: FlowExtras {
                pkt_srcaddr: Some(t.src),
                pkt_dstaddr: Some(t.dst),
                flow_start: Some(WINDOW.start),
                flow_end: Some(WINDOW.end),
                tcp_flags: None,
            },
        };
        record(eni, Some(flow), LogStatus::Ok)
    };
    let mut all: Vec<FlowRecord> = sums.iter().map(|&(k, s)| ok(k, s)).collect();
    all.push(record("eni-b", None, LogStatus::SkipData));
    let a_accept: Vec<FlowRecord> = sums
        .iter()
        .filter(|((eni, action, ..), _)| *eni == "eni-a" && *action == Action::Accept)
        .map(|&(k, s)| ok(k, s))
        .collect();
    let a_reject = vec![record("eni-a", None, LogStatus::NoData)];
    in_old_order(WindowRecords {
        window: WINDOW,
        instances: [all, a_accept, a_reject]
            .into_iter()
            .enumerate()
            .map(|(instance, records)| InstanceRecords { instance, records })
            .collect(),
        held: 0,
        held_dropped: 0,
    })
}

fn close_traffic(f: &Fixture, adds: &[Add]) -> InstanceDrain {
    let mut agg = aggregate_of(&f.reg, adds);
    agg.mark_skipped(f.eni("eni-b"));
    let mut next = WindowAggregate::default();
    let drain = f.route(agg.close(&f.reg, WINDOW, &mut next));
    assert_eq!((agg.len(), next.len()), (0, 0));
    drain
}

#[test]
fn the_one_shot_drain_gives_each_instance_its_records() {
    let f = Fixture::new(1000);
    let adds = traffic();
    let w = in_old_order(close_traffic(&f, &adds).collect_all());
    let expect = expected(&f.reg, &adds);
    assert_eq!(w, expect);
    assert!(records(&w, A_ACCEPT).len() > 10);
    assert!(records(&w, ALL).len() > records(&w, A_ACCEPT).len() + 10);
}

#[test]
fn chunks_add_up_to_the_one_shot_records_for_every_chunk_size() {
    let f = Fixture::new(1000);
    let adds = traffic();
    let one_shot = in_old_order(close_traffic(&f, &adds).collect_all());
    // The VPC instance takes every OK record.
    let n = records(&one_shot, ALL)
        .iter()
        .filter(|r| r.log_status == LogStatus::Ok)
        .count();
    assert!(n > 40, "{n}");
    for k in [1, 7, n, n + 1] {
        let mut drain = close_traffic(&f, &adds);
        let mut per_instance: Vec<Vec<FlowRecord>> = vec![Vec::new(); 3];
        let (mut ok_chunks, mut statuses) = (0, 0);
        while let Some(chunk) = drain.next_chunk(k) {
            assert_eq!(statuses, 0, "chunk size {k}: NODATA / SKIPDATA come last");
            assert!(!chunk.instances.is_empty());
            assert!(chunk.instances.windows(2).all(|w| w[0].0 < w[1].0));
            let is_ok = |r: &FlowRecord| r.log_status == LogStatus::Ok;
            if chunk.instances.iter().all(|(_, b)| b.iter().all(is_ok)) {
                ok_chunks += 1;
                assert_eq!(chunk.instances[0].0, ALL);
                let whole = chunk.instances[0].1.len();
                assert!(whole == k || (whole < k && whole == n - (ok_chunks - 1) * k));
            } else {
                assert!(chunk.instances.iter().all(|(_, b)| !b.iter().any(is_ok)));
                statuses += 1;
            }
            for (i, batch) in chunk.instances {
                assert!(!batch.is_empty() && batch.len() <= k);
                per_instance[i].extend(batch.iter().cloned());
            }
            if ok_chunks == 1 && k < n {
                assert!(!drain.is_done());
            }
        }
        assert_eq!((ok_chunks, statuses), (n.div_ceil(k), 1), "chunk size {k}");
        assert!(drain.is_done());
        assert_eq!(drain.next_chunk(k), None);
        assert_eq!(drain.records_emitted(), one_shot.record_count() as u64);
        let chunked = in_old_order(WindowRecords {
            window: drain.window,
            instances: per_instance
                .into_iter()
                .enumerate()
                .map(|(instance, records)| InstanceRecords { instance, records })
                .collect(),
            held: drain.held,
            held_dropped: drain.held_dropped,
        });
        assert_eq!(chunked, one_shot, "chunk size {k}");
    }
}

#[test]
fn an_instance_that_takes_all_of_a_chunk_gets_its_arc() {
    let f = Fixture::new(1000);
    let (a, b) = (f.eni("eni-a"), f.eni("eni-b"));
    let mut agg = WindowAggregate::default();
    for port in 0..5 {
        let t = tuple(TCP, A, 40000 + port, R, 443);
        agg.add(a, Out, Action::Accept, t, (1, 60), None);
    }
    let mut drain = f.route(agg.close(&f.reg, WINDOW, &mut WindowAggregate::default()));
    let chunk = drain.next_chunk(100).unwrap();
    let taken: Vec<usize> = chunk.instances.iter().map(|(i, _)| *i).collect();
    assert_eq!(taken, [ALL, A_ACCEPT]);
    let (all, accept) = (&chunk.instances[0].1, &chunk.instances[1].1);
    assert!(Arc::ptr_eq(all, accept), "one Vec for both instances");
    assert_eq!((all.len(), Arc::strong_count(all)), (5, 2));
    // The statuses: eni-b idle for the VPC, eni-a idle for the reject-only
    // instance, whatever eni-a's accepted traffic.
    let statuses = drain.next_chunk(100).unwrap();
    let seen: Vec<(usize, String, LogStatus)> = statuses
        .instances
        .iter()
        .flat_map(|(i, b)| b.iter().map(|r| (*i, r.eni.eni_id.clone(), r.log_status)))
        .collect();
    assert_eq!(
        seen,
        [
            (ALL, "eni-b".to_owned(), LogStatus::NoData),
            (A_REJECT, "eni-a".to_owned(), LogStatus::NoData)
        ]
    );
    assert!(drain.is_done());
    assert_eq!(drain.next_chunk(100), None);

    // An instance that takes part of a chunk gets a copy of its part; the
    // instance that takes all of it has the chunk to itself.
    let mut agg = WindowAggregate::default();
    for port in 0..2 {
        let t = tuple(TCP, A, 40000 + port, R, 443);
        agg.add(a, Out, Action::Accept, t, (1, 60), None);
        agg.add(b, Out, Action::Accept, t, (1, 60), None);
    }
    let blocked = tuple(TCP, R, 6000, A, 23);
    agg.add(a, In, Action::Reject, blocked, (1, 60), None);
    let mut drain = f.route(agg.close(&f.reg, WINDOW, &mut WindowAggregate::default()));
    let chunk = drain.next_chunk(5).unwrap();
    let shape: Vec<(usize, usize, usize)> = chunk
        .instances
        .iter()
        .map(|(i, b)| (*i, b.len(), Arc::strong_count(b)))
        .collect();
    assert_eq!(shape, [(ALL, 5, 1), (A_ACCEPT, 2, 1), (A_REJECT, 1, 1)]);
    let accepted = &chunk.instances[1].1;
    assert!(accepted
        .iter()
        .all(|r| r.eni.eni_id == "eni-a" && r.flow.unwrap().action == Action::Accept));
    assert_eq!(chunk.instances[2].1[0].flow.unwrap().action, Action::Reject);
    // Every instance has records of eni-a of its kind; eni-b has some too.
    assert_eq!(drain.next_chunk(5), None);
    assert_eq!(drain.records_emitted(), 8);
}

#[test]
fn drain_statuses_follow_loss_marks_existence_and_window_length() {
    let f = Fixture::new(1000);
    let a = f.eni("eni-a");
    let statuses = |drain: InstanceDrain| {
        let w = in_old_order(drain.collect_all());
        (0..3)
            .map(|i| {
                records(&w, i)
                    .iter()
                    .map(|r| (r.eni.eni_id.clone(), r.log_status))
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
    };
    let s = |id: &str, status| (id.to_owned(), status);
    let (ok, no, skip) = (LogStatus::Ok, LogStatus::NoData, LogStatus::SkipData);

    // Lost data of unknown ENIs: SKIPDATA for every ENI that existed (not
    // eni-c), in every instance covering it, besides the OK records.
    let mut agg = WindowAggregate::default();
    let t = tuple(TCP, A, 40000, R, 443);
    agg.add(a, Out, Action::Accept, t, (1, 60), None);
    agg.mark_all_skipped();
    let drain = f.route(agg.close(&f.reg, WINDOW, &mut WindowAggregate::default()));
    assert_eq!(
        statuses(drain),
        [
            vec![s("eni-a", ok), s("eni-a", skip), s("eni-b", skip)],
            vec![s("eni-a", ok), s("eni-a", skip)],
            vec![s("eni-a", skip)],
        ]
    );

    // A window of zero length: no NODATA, but lost data is still said.
    let mut agg = WindowAggregate::default();
    agg.mark_skipped(f.eni("eni-b"));
    let empty = CaptureWindow {
        start: TEN + 600,
        end: TEN + 600,
    };
    let drain = f.route(agg.close(&f.reg, empty, &mut WindowAggregate::default()));
    assert_eq!(statuses(drain), [vec![s("eni-b", skip)], vec![], vec![]]);

    // An empty window of some length: NODATA per existing ENI and instance.
    let drain =
        f.route(WindowAggregate::default().close(&f.reg, WINDOW, &mut WindowAggregate::default()));
    assert_eq!(
        statuses(drain),
        [
            vec![s("eni-a", no), s("eni-b", no)],
            vec![s("eni-a", no)],
            vec![s("eni-a", no)],
        ]
    );
}

/// The ENIs of an ECS registry: eni-s from the config (eth0, A), and the
/// interface with `ECS_MAC` (eth1, B), held until the service answers.
/// Its tests route to one instance, the whole of vpc-1 (`vpc_log`).
const ECS_MAC: MacAddr = MacAddr([0x00, 0x16, 0x3e, 0, 0, 0x42]);

fn ecs_registry() -> EniRegistry {
    use crate::config::Unmapped;
    let mut reg =
        EniRegistry::from_parts(&[eni("eni-s", "vsw-1", EniMatch::Interface("eth0".into()))])
            .unwrap();
    reg.learn_from_ecs(Unmapped::Ignore);
    for ev in [
        link(2, "eth0", Some(MacAddr([2; 6]))),
        addr(2, A),
        link(4, "eth1", Some(ECS_MAC)),
        addr(4, B),
    ] {
        reg.apply(&ev, TEN + 10);
    }
    reg
}

fn ecs_answers(reg: &mut EniRegistry, eni_id: &str, vpc_id: &str, now: i64) {
    use crate::model::{EcsEni, EcsSnapshot, SnapshotUpdate};
    let mut snapshot = EcsSnapshot {
        instance_id: "i-ecs".into(),
        account_id: "5678".into(),
        ..EcsSnapshot::default()
    };
    snapshot.enis.insert(
        ECS_MAC,
        EcsEni {
            eni_id: eni_id.into(),
            vpc_id: vpc_id.into(),
            vswitch_id: "vsw-ecs".into(),
        },
    );
    reg.apply_metadata(
        &SnapshotUpdate {
            snapshot,
            looked_for: vec![ECS_MAC],
            retrying: vec![],
        },
        now,
    );
}

#[test]
fn close_moves_held_records_and_their_loss_into_the_next_aggregate() {
    let mut reg = ecs_registry();
    let (s, held) = (
        reg.by_ifindex(IfIndex(2)).unwrap(),
        reg.by_ifindex(IfIndex(4)).unwrap(),
    );
    assert!(reg.is_held(held) && !reg.is_held(s));
    let (t1, t2, t3) = (
        tuple(UDP, R, 5000, B, 53),
        tuple(UDP, R, 5001, B, 53),
        tuple(TCP, A, 40000, R, 443),
    );
    let mut agg = WindowAggregate::default();
    agg.add(held, In, Action::Accept, t1, (2, 200), None);
    agg.add(held, In, Action::Accept, t2, (1, 100), None);
    agg.add(s, Out, Action::Accept, t3, (1, 60), None);
    agg.mark_skipped(held);
    // The next window counted traffic already (the close comes after the
    // deadline): held records add to it.
    let mut next = WindowAggregate::default();
    next.add(held, In, Action::Accept, t1, (5, 500), None);
    next.add(s, Out, Action::Accept, t3, (1, 60), None);

    let logs = vpc_log("vpc-1");
    let w1 = routed(agg.close(&reg, WINDOW, &mut next), &logs, &reg).collect_all();
    assert_eq!((w1.held, w1.held_dropped), (2, 0));
    assert_eq!(agg.len(), 0);
    assert_eq!(next.len(), 3);
    assert_eq!(
        records(&w1, 0)
            .iter()
            .map(|r| (r.eni.eni_id.as_str(), r.log_status))
            .collect::<Vec<_>>(),
        [("eni-s", LogStatus::Ok)],
        "nothing of the held ENI, not even its SKIPDATA"
    );

    // The service answers; the window closes; the registry changes again
    // while its drain is in progress: the drain goes by what it was.
    ecs_answers(&mut reg, "eni-late", "vpc-1", TEN + 700);
    let second = CaptureWindow {
        start: TEN + 600,
        end: TEN + 1200,
    };
    let drain = routed(
        next.close(&reg, second, &mut WindowAggregate::default()),
        &logs,
        &reg,
    );
    ecs_answers(&mut reg, "eni-moved", "vpc-2", TEN + 1200);
    reg.apply(&RouteEvent::LinkRemoved { index: IfIndex(2) }, TEN + 1200);
    let w2 = in_old_order(drain.collect_all());
    assert_eq!((w2.held, w2.held_dropped), (0, 0));
    assert_eq!(
        flows_of(&w2, 0, "eni-late"),
        [
            rec(In, UDP, R, 5000, B, 53, 7, 700),
            rec(In, UDP, R, 5001, B, 53, 1, 100)
        ]
    );
    assert_eq!(statuses(&w2, 0, "eni-late"), [LogStatus::SkipData]);
    assert_eq!(
        flows_of(&w2, 0, "eni-s"),
        [rec(Out, TCP, A, 40000, R, 443, 1, 60)]
    );
    assert_eq!(records(&w2, 0).len(), 4);
}

#[test]
fn too_many_held_records_are_dropped_and_their_enis_marked() {
    let reg = ecs_registry();
    let held = reg.by_ifindex(IfIndex(4)).unwrap();
    let mut agg = WindowAggregate::default();
    let count = (1usize << 18) + 1;
    for i in 0..count {
        let i = u32::try_from(i).unwrap();
        let src = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 | (i >> 8)));
        let t = FlowTuple {
            src,
            src_port: (i & 0xff) as u16,
            dst: ip(B),
            dst_port: 53,
            protocol: UDP,
        };
        agg.add(held, In, Action::Accept, t, (1, 60), None);
    }
    let mut next = WindowAggregate::default();
    let logs = vpc_log("vpc-1");
    let w = routed(agg.close(&reg, WINDOW, &mut next), &logs, &reg).collect_all();
    assert_eq!((w.held, w.held_dropped), (0, count));
    assert_eq!(w.record_count(), 1, "the static ENI's NODATA");
    assert_eq!(next.len(), 0);
    let mut reg = reg;
    ecs_answers(&mut reg, "eni-late", "vpc-1", TEN + 700);
    let second = CaptureWindow {
        start: TEN + 600,
        end: TEN + 1200,
    };
    let w2 = routed(
        next.close(&reg, second, &mut WindowAggregate::default()),
        &logs,
        &reg,
    )
    .collect_all();
    assert_eq!(statuses(&w2, 0, "eni-late"), [LogStatus::SkipData]);
}

// ---- a window closed while events go on (the loop reads the closing dump
// in slices between event reads) ----

impl Fixture {
    /// Reaches the deadline and begins closing: returns the closing window.
    fn begin_close(&mut self) -> CaptureWindow {
        let deadline = self.table.next_deadline();
        self.clock.set(deadline);
        let w = self.table.begin_close(deadline);
        self.table.begin_dump();
        w
    }

    fn dump_line(&mut self, e: ConntrackEntry) {
        self.table.on_dump_entry(&self.reg, &e);
    }

    /// Ends the closing dump and takes the closed window's records.
    fn finish_close(&mut self) -> WindowRecords {
        self.table.end_dump(true);
        let d = self
            .table
            .finish_close(&self.reg)
            .expect("a close was pending");
        self.route(d).collect_all()
    }
}

/// Packets and bytes of every OK record of eni-a in instance ALL.
fn totals(w: &WindowRecords) -> (u64, u64) {
    flows_of(w, ALL, "eni-a")
        .iter()
        .fold((0, 0), |(p, b), f| (p + f.packets, b + f.bytes))
}

#[test]
fn dump_lines_of_a_closing_window_count_in_it_and_events_in_the_next() {
    let mut f = Fixture::new(1000);
    let long = conn(1, TCP, A, 40000, R, 443);
    f.dump(&[long.clone().counted((1, 100), (0, 0))]);
    let closing = f.begin_close();
    assert!(f.table.is_closing());
    assert_eq!(closing.end, TEN + 600);
    // While the dump runs: a short connection's DESTROY, then the long
    // connection's dump line.
    let short = conn(2, UDP, A, 5000, R, 53);
    f.event(short.clone().kind(Destroy).counted((2, 120), (2, 300)));
    f.dump_line(long.clone().counted((4, 400), (3, 3000)));
    let w1 = f.finish_close();
    assert!(!f.table.is_closing());
    assert_eq!(w1.window, closing);
    // The first dump's packet and the closing dump's delta.
    assert_eq!(
        sort(flows_of(&w1, ALL, "eni-a")),
        sort(vec![
            rec(Out, TCP, A, 40000, R, 443, 4, 400),
            rec(In, TCP, R, 443, A, 40000, 3, 3000),
        ])
    );
    f.dump(&[long.clone().counted((4, 400), (3, 3000))]);
    let w2 = f.close();
    assert_eq!(
        sort(flows_of(&w2, ALL, "eni-a")),
        sort(vec![
            rec(Out, UDP, A, 5000, R, 53, 2, 120),
            rec(In, UDP, R, 53, A, 5000, 2, 300),
        ])
    );
}

#[test]
fn a_destroy_during_the_closing_dump_is_counted_once_in_the_next_window() {
    let mut f = Fixture::new(1000);
    let c = conn(1, TCP, A, 40000, R, 443);
    f.dump(&[c.clone().counted((1, 100), (1, 100))]);
    f.begin_close();
    // The connection ends before the dump reaches it; the dump still
    // lists it (its line was built before the DESTROY was read).
    f.event(c.clone().kind(Destroy).counted((5, 500), (4, 400)));
    f.dump_line(c.clone().counted((5, 500), (4, 400)));
    let w1 = f.finish_close();
    let w2 = f.close();
    let w3 = f.close();
    assert_eq!(totals(&w1), (2, 200));
    assert_eq!(totals(&w2), (7, 700));
    assert_eq!(totals(&w3), (0, 0));
    assert_eq!(f.table.stats().anomalies, 0);
}

#[test]
fn loss_while_a_window_closes_marks_both_windows() {
    let mut f = Fixture::new(1000);
    let c = conn(1, TCP, A, 40000, R, 443);
    f.dump(&[c.clone().counted((1, 100), (1, 100))]);
    f.begin_close();
    f.table.mark_lost(LossScope::All);
    f.dump_line(c.clone().counted((2, 200), (1, 100)));
    let w1 = f.finish_close();
    let w2 = f.close();
    assert_eq!(statuses(&w1, ALL, "eni-a"), vec![LogStatus::SkipData]);
    assert_eq!(statuses(&w2, ALL, "eni-a"), vec![LogStatus::SkipData]);
    // The OK records kept stand beside the marks.
    assert_eq!(totals(&w1), (3, 300));
}

#[test]
fn a_connection_lost_by_the_closing_dump_marks_the_closing_window() {
    let mut f = Fixture::new(1000);
    let c = conn(1, TCP, A, 40000, R, 443);
    f.dump(&[c.clone().counted((1, 100), (1, 100))]);
    // Two complete dumps without it (the grace), the second one closing a
    // window.
    f.dump(&[]);
    f.begin_close();
    let w1 = f.finish_close();
    let w2 = f.close();
    assert_eq!(f.table.stats().lost_connections, 1);
    assert_eq!(statuses(&w1, ALL, "eni-a"), vec![LogStatus::SkipData]);
    assert_eq!(statuses(&w2, ALL, "eni-a"), vec![LogStatus::NoData]);
}

/// A reload replaces the registry but keeps the table and the open window:
/// sums and connections move to the new registry's ENIs (the same
/// interface, whatever its new ids), an ENI the new config drops takes its
/// sums with it, and the reload's dump counts in full what the old config
/// owned and had not seen yet, but baselines what only the new one owns.
#[test]
fn reload_renumbers_the_open_window_and_keeps_every_counter() {
    let mut f = Fixture::new(1000);
    let known = conn(1, TCP, B, 40000, R, 443);
    f.dump(&[known.clone().counted((2, 200), (1, 100))]);
    let dropped = conn(2, TCP, A, 40001, R, 80);
    f.dump(&[
        known.clone().counted((2, 200), (1, 100)),
        dropped.clone().counted((3, 300), (0, 0)),
    ]);
    // eni-a goes, eni-b gets new ids (and index 0), eni-d on eth5 is new.
    let mut new = EniRegistry::from_parts(&[
        eni("eni-b2", "vsw-2", EniMatch::Mac(MAC_B)),
        eni("eni-c", "vsw-1", EniMatch::Interface("eth9".into())),
        eni("eni-d", "vsw-1", EniMatch::Interface("eth5".into())),
    ])
    .unwrap();
    let now = f.clock.now_unix();
    for ev in [
        link(2, "eth0", Some(MacAddr([2; 6]))),
        addr(2, A),
        link(3, "eth1", Some(MAC_B)),
        addr(3, B),
        link(5, "eth5", Some(MacAddr([5; 6]))),
        addr(5, "10.0.2.9"),
    ] {
        new.apply(&ev, now);
    }
    let to = f.reg.counterparts_in(&new);
    assert_eq!(
        to,
        [None, new.find("eni-b2"), new.find("eni-c")],
        "by interface, else by id"
    );
    let r = f.table.renumber_enis(&to);
    assert_eq!((r.sums_dropped, r.flows_detached), (1, 1));

    let created_since = conn(3, UDP, B, 5353, R, 53);
    let only_new = conn(4, TCP, R, 50000, "10.0.2.9", 22);
    f.table.begin_dump();
    for e in [
        known.clone().counted((5, 500), (1, 100)),
        created_since.clone().counted((4, 400), (0, 0)),
        only_new.clone().counted((7, 700), (7, 700)),
    ] {
        f.table.on_reload_dump_entry(&f.reg, &new, &e);
    }
    f.table.end_dump(false);
    f.reg = new;
    f.flow_logs = vpc_log("vpc-1");
    f.event(only_new.clone().kind(Destroy).counted((8, 800), (7, 700)));
    let w = f.close();
    assert_eq!(
        sort(flows_of(&w, 0, "eni-b2")),
        sort(vec![
            rec(Out, TCP, B, 40000, R, 443, 5, 500),
            rec(In, TCP, R, 443, B, 40000, 1, 100),
            rec(Out, UDP, B, 5353, R, 53, 4, 400),
        ])
    );
    assert_eq!(
        flows_of(&w, 0, "eni-d"),
        [rec(In, TCP, R, 50000, "10.0.2.9", 22, 1, 100)]
    );
    // The four flows above and nothing else: none left on eni-a.
    assert_eq!(
        eni_statuses(&w, 0),
        [
            ("eni-b2", LogStatus::Ok),
            ("eni-b2", LogStatus::Ok),
            ("eni-b2", LogStatus::Ok),
            ("eni-d", LogStatus::Ok)
        ]
    );
}

// ---------------------------------------------------------------------
// The window's sums at their memory bound
// ---------------------------------------------------------------------

/// A memory bound that holds about a hundred IPv4 sums per window (each
/// window gets half: 8 KiB, a table of 128 buckets of 33 bytes).
const SMALL_WINDOW_MEMORY: u64 = 16 << 10;

/// Takes every early emit the table has, as the loop does after each
/// message, checking the sums stayed within their half of the bound.
fn take_spills(f: &mut Fixture, out: &mut Vec<WindowRecords>) {
    assert!(
        f.table.sums_bytes() <= (SMALL_WINDOW_MEMORY / 2) as usize,
        "{} bytes of sums",
        f.table.sums_bytes()
    );
    while let Some(d) = f.table.take_spill(&f.reg) {
        let d = f.route(d);
        assert_eq!(d.held + d.held_dropped, 0);
        out.push(d.collect_all());
    }
}

/// A record's ENI and flow without its counters, as a map key.
type FlowKey = (String, String);

fn flow_key(eni: &str, flow: FlowFields) -> FlowKey {
    let bare = FlowFields {
        packets: 0,
        bytes: 0,
        ..bare(flow)
    };
    (eni.to_string(), format!("{bare:?}"))
}

/// OK records of instance ALL summed per ENI and flow over several drains
/// of one window.
fn summed(parts: &[&WindowRecords]) -> BTreeMap<FlowKey, (u64, u64)> {
    let mut m = BTreeMap::new();
    for w in parts {
        for r in records(w, ALL)
            .iter()
            .filter(|r| r.log_status == LogStatus::Ok)
        {
            let flow = r.flow.unwrap();
            let e = m.entry(flow_key(&r.eni.eni_id, flow)).or_insert((0, 0));
            e.0 += flow.packets;
            e.1 += flow.bytes;
        }
    }
    m
}

/// 600 one-way UDP connections to eni-b (R port 10000..10300 to B:53,
/// twice: two connections per tuple, ids `first_id..`), each with `i + 1`
/// packets of 100 bytes; and the sums they must add up to.
fn flood_b(
    f: &mut Fixture,
    first_id: u32,
    spills: &mut Vec<WindowRecords>,
) -> BTreeMap<FlowKey, (u64, u64)> {
    let mut want = BTreeMap::new();
    for round in 0..2u32 {
        for i in 0..300u16 {
            let id = first_id + round * 1000 + u32::from(i);
            let packets = u64::from(i) + 1;
            f.event(
                conn(id, UDP, R, 10_000 + i, B, 53)
                    .kind(Destroy)
                    .counted((packets, packets * 100), (0, 0)),
            );
            take_spills(f, spills);
            let key = flow_key("eni-b", rec(In, UDP, R, 10_000 + i, B, 53, 0, 0));
            let e = want.entry(key).or_insert((0, 0));
            e.0 += packets;
            e.1 += packets * 100;
        }
    }
    want
}

#[test]
fn sums_at_the_memory_bound_go_out_early_as_records_of_their_window_and_sum_exactly() {
    let mut f = Fixture::new(100_000);
    f.table = FlowTable::new(Rc::clone(&f.clock), W, 100_000)
        .with_window_memory_bytes(SMALL_WINDOW_MEMORY);
    let mut spills = Vec::new();
    // eni-a has one connection, at the start: its records go out with the
    // first early emit, none are left for the close.
    f.event(
        conn(1, TCP, A, 40000, R, 443)
            .kind(Destroy)
            .counted((3, 300), (2, 200)),
    );
    let mut want = flood_b(&mut f, 100, &mut spills);
    let a_out = rec(Out, TCP, A, 40000, R, 443, 0, 0);
    let a_in = rec(In, TCP, R, 443, A, 40000, 0, 0);
    want.insert(flow_key("eni-a", a_out), (3, 300));
    want.insert(flow_key("eni-a", a_in), (2, 200));
    let window = f.table.window();
    let closed = f.close();

    // 600 connections over 300 tuples (and eni-a's two records) do not fit
    // in a hundred sums: several early emits.
    assert!(spills.len() >= 3, "{} early emits", spills.len());
    for (i, s) in spills.iter().enumerate() {
        assert_eq!(s.window, window, "early emit {i}");
        assert!(s.record_count() > 0, "early emit {i} is empty");
        for r in s.instances.iter().flat_map(|i| &i.records) {
            // Records of the window as it was planned, OK only.
            assert_eq!((r.start, r.end), (TEN, TEN + 600));
            assert_eq!(r.log_status, LogStatus::Ok, "{r:?}");
        }
    }
    assert_eq!(closed.window, window);
    let mut parts: Vec<&WindowRecords> = spills.iter().collect();
    parts.push(&closed);
    assert_eq!(summed(&parts), want);
    // A tuple's sum is split over early emits, not counted twice: some
    // tuple has more than one record in the window.
    let records_of_b: usize = parts.iter().map(|w| flows_of(w, ALL, "eni-b").len()).sum();
    assert!(records_of_b > 300, "{records_of_b} records for 300 tuples");

    // eni-a's traffic all went out early: not NODATA in the instances
    // whose filter takes it, NODATA in the one that takes only REJECT.
    assert!(flows_of(&closed, ALL, "eni-a").is_empty());
    assert_eq!(statuses(&closed, ALL, "eni-a"), []);
    assert_eq!(statuses(&closed, A_ACCEPT, "eni-a"), []);
    assert_eq!(statuses(&closed, A_REJECT, "eni-a"), [LogStatus::NoData]);
    assert_eq!(statuses(&closed, ALL, "eni-b"), []);

    // The next window starts empty and without early emits, and says
    // NODATA for both idle ENIs.
    let next = f.close();
    assert_eq!(statuses(&next, ALL, "eni-a"), [LogStatus::NoData]);
    assert_eq!(statuses(&next, ALL, "eni-b"), [LogStatus::NoData]);
    assert!(f.table.take_spill(&f.reg).is_none());
}

#[test]
fn an_early_emit_marks_nothing_and_skipdata_comes_once_with_the_close() {
    let mut f = Fixture::new(100_000);
    f.table = FlowTable::new(Rc::clone(&f.clock), W, 100_000)
        .with_window_memory_bytes(SMALL_WINDOW_MEMORY);
    let mut spills = Vec::new();
    f.table.mark_lost(LossScope::Eni(f.eni("eni-b")));
    let want = flood_b(&mut f, 100, &mut spills);
    let closed = f.close();
    assert!(spills.len() >= 3, "{} early emits", spills.len());
    for s in &spills {
        let recs: Vec<&FlowRecord> = s.instances.iter().flat_map(|i| &i.records).collect();
        // An early emit is made because the sums are full: never empty.
        assert!(!recs.is_empty(), "an empty early emit");
        assert!(
            recs.iter().all(|r| r.log_status == LogStatus::Ok),
            "an early emit with a status record"
        );
    }
    // The loss mark survived the early emits: one SKIPDATA, at the close.
    assert_eq!(statuses(&closed, ALL, "eni-b"), [LogStatus::SkipData]);
    assert_eq!(statuses(&closed, ALL, "eni-a"), [LogStatus::NoData]);
    let mut parts: Vec<&WindowRecords> = spills.iter().collect();
    parts.push(&closed);
    assert_eq!(summed(&parts), want);
}

#[test]
fn a_closing_window_whose_dump_reaches_the_bound_emits_early_as_itself() {
    let mut f = Fixture::new(100_000);
    f.table = FlowTable::new(Rc::clone(&f.clock), W, 100_000)
        .with_window_memory_bytes(SMALL_WINDOW_MEMORY);
    // 300 live connections, first seen by the closing window's dump.
    let live: Vec<ConntrackEntry> = (0..300u16)
        .map(|i| {
            conn(u32::from(i) + 1, UDP, R, 20_000 + i, B, 53)
                .counted((u64::from(i) + 1, (u64::from(i) + 1) * 60), (1, 80))
        })
        .collect();
    let deadline = f.table.next_deadline();
    f.clock.set(deadline);
    let closing = f.table.begin_close(deadline);
    let open = f.table.window();
    assert_ne!(closing, open);
    let mut spills = Vec::new();
    f.table.begin_dump();
    for e in &live {
        f.table.on_dump_entry(&f.reg, e);
        take_spills(&mut f, &mut spills);
    }
    // An event meanwhile counts in the open window, not in an early emit
    // of the closing one.
    f.event(
        conn(999, TCP, A, 40000, R, 443)
            .kind(Destroy)
            .counted((1, 60), (0, 0)),
    );
    take_spills(&mut f, &mut spills);
    f.table.end_dump(true);
    let closed = f.table.finish_close(&f.reg).unwrap();
    let closed = f.route(closed).collect_all();
    assert!(spills.len() >= 2, "{} early emits", spills.len());
    assert!(spills.iter().all(|s| s.window == closing));
    let mut parts: Vec<&WindowRecords> = spills.iter().collect();
    parts.push(&closed);
    let got = summed(&parts);
    assert_eq!(got.len(), 600, "each connection's two directions on eni-b");
    for (i, e) in live.iter().enumerate() {
        let p = i as u64 + 1;
        let port = e.orig.src_port;
        let inbound = rec(In, UDP, R, port, B, 53, 0, 0);
        let outbound = rec(Out, UDP, B, 53, R, port, 0, 0);
        assert_eq!(got[&flow_key("eni-b", inbound)], (p, p * 60));
        assert_eq!(got[&flow_key("eni-b", outbound)], (1, 80));
    }
    // eni-a's connection is the open window's.
    assert!(flows_of(&closed, ALL, "eni-a").is_empty());
    let next = f.close();
    assert_eq!(flows_of(&next, ALL, "eni-a").len(), 1);
}

#[test]
fn an_early_emit_keeps_a_few_held_records_and_gives_up_a_flood_of_them() {
    use crate::config::Unmapped;
    // eni-a (A) is configured; the interface on B waits for its ids from
    // the metadata service, so its records are held.
    let clock = Rc::new(FakeClock::new(TEN + 10));
    let mut reg =
        EniRegistry::from_parts(&[eni("eni-a", "vsw-1", EniMatch::Interface("eth0".into()))])
            .unwrap();
    let logs = vpc_log("vpc-1");
    reg.learn_from_ecs(Unmapped::Ignore);
    for ev in [
        link(2, "eth0", Some(MacAddr([2; 6]))),
        addr(2, A),
        link(4, "eth1", Some(MacAddr([0x00, 0x16, 0x3e, 0, 0, 0x42]))),
        addr(4, B),
    ] {
        reg.apply(&ev, TEN + 10);
    }
    let mut table =
        FlowTable::new(Rc::clone(&clock), W, 100_000).with_window_memory_bytes(SMALL_WINDOW_MEMORY);
    let destroy = |table: &mut FlowTable<Rc<FakeClock>>, id: u32, port: u16, to: &str| {
        let c = conn(id, UDP, R, port, to, 53).kind(Destroy);
        table.on_event(&reg, &c.counted((1, 60), (0, 0)));
        let mut drains = Vec::new();
        while let Some(d) = table.take_spill(&reg) {
            drains.push(routed(d, &logs, &reg));
        }
        drains
    };

    // A few held records and a flood on eni-a: the held ones stay.
    for i in 0..5 {
        assert!(destroy(&mut table, i + 1, 7000 + i as u16, B).is_empty());
    }
    let mut a_records = 0;
    let mut early = 0;
    for i in 0..300u16 {
        for d in destroy(&mut table, 1000 + u32::from(i), 10_000 + i, A) {
            assert_eq!((d.held, d.held_dropped), (5, 0));
            early += 1;
            a_records += d.collect_all().record_count();
        }
    }
    assert!(early >= 2, "{early} early emits");
    clock.set(TEN + 600);
    let w = routed(table.close_window(&reg, TEN + 600), &logs, &reg).collect_all();
    assert_eq!((w.held, w.held_dropped), (5, 0));
    assert_eq!(a_records + w.record_count(), 300);

    // A flood of held records: kept, they would fill the sums again at
    // once; they are given up (and their ENI will say SKIPDATA).
    let mut dropped = 0;
    for i in 0..300u16 {
        for d in destroy(&mut table, 5000 + u32::from(i), 20_000 + i, B) {
            assert_eq!(d.held, 0);
            dropped += d.held_dropped;
            assert_eq!(d.collect_all().record_count(), 0);
        }
    }
    assert!(dropped >= 100, "{dropped} held records given up");
    clock.set(TEN + 1200);
    let w = routed(table.close_window(&reg, TEN + 1200), &logs, &reg).collect_all();
    // The 5 held from before and the flood's rest are still held.
    assert_eq!((w.held + dropped, w.held_dropped), (305, 0));
}
