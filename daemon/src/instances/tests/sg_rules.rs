//! `rule` on ACCEPT records: the security-group rule a connection's
//! conntrack mark names (the mark the daemon's accept verdict set).

use std::collections::HashMap;

use super::*;
use crate::security_groups::MARK_FLAG as FLAG;
const SSH: u32 = FLAG | 0x0000_1234;
const WEB: u32 = FLAG | 0x0042_0000;
const EGRESS_DEFAULT: u32 = FLAG | 0x0000_0002;

/// The names a `MarkNames` would give.
fn rule_names() -> HashMap<u32, Arc<str>> {
    [
        (SSH, "sg-web:allow-ssh"),
        (WEB, "sg-web:allow-web"),
        (EGRESS_DEFAULT, "default"),
    ]
    .into_iter()
    .map(|(m, n)| (m, Arc::from(n)))
    .collect()
}

/// eni-a's OK records in instance ALL as (direction, eni-a's port,
/// packets, bytes, rule), sorted.
type Row = (Direction, u16, u64, u64, Option<String>);

fn rows(w: &WindowRecords) -> Vec<Row> {
    let mut v: Vec<Row> = records(w, ALL)
        .iter()
        .filter(|r| r.eni.eni_id == "eni-a" && r.log_status == LogStatus::Ok)
        .map(|r| {
            let f = r.flow.unwrap();
            let port = if f.direction == In {
                f.dstport
            } else {
                f.srcport
            };
            let rule = r.rule.as_deref().map(str::to_owned);
            (f.direction, port, f.packets, f.bytes, rule)
        })
        .collect();
    v.sort();
    v
}

fn named(s: &str) -> Option<String> {
    Some(s.to_owned())
}

#[test]
fn accept_records_name_the_rule_of_their_connections_mark() {
    let mut f = Fixture::new(1000);
    let names = rule_names();
    f.table.set_rule_names(move |m| names.get(&m).cloned());
    // Ingress ssh, accepted by allow-ssh: both directions of it say so.
    f.event(
        conn(1, TCP, R, 5000, A, 22)
            .marked(SSH)
            .kind(Destroy)
            .counted((3, 180), (2, 120)),
    );
    // Egress, accepted by the implicit egress accept.
    f.event(
        conn(2, UDP, A, 5353, R, 53)
            .marked(EGRESS_DEFAULT)
            .kind(Destroy)
            .counted((1, 60), (1, 90)),
    );
    // The operator's own mark (no flag), even one equal to a rule's mark
    // without its flag, names nothing; nor does a flagged mark no config
    // ever gave.
    f.event(
        conn(3, TCP, R, 5001, A, 80)
            .marked(SSH & !FLAG)
            .kind(Destroy)
            .counted((1, 60), (1, 60)),
    );
    f.event(
        conn(4, TCP, R, 5002, A, 81)
            .marked(FLAG | 0x77)
            .kind(Destroy)
            .counted((1, 60), (1, 60)),
    );
    let w = f.close();
    assert_eq!(
        rows(&w),
        [
            (In, 22, 3, 180, named("sg-web:allow-ssh")),
            (In, 80, 1, 60, None),
            (In, 81, 1, 60, None),
            (In, 5353, 1, 90, named("default")),
            (Out, 22, 2, 120, named("sg-web:allow-ssh")),
            (Out, 80, 1, 60, None),
            (Out, 81, 1, 60, None),
            (Out, 5353, 1, 60, named("default")),
        ]
    );
    // Text keeps its 18 fields: the rule is not one of them, and the
    // record's 18 are what they were without a mark.
    let text_fields = flows_of(&w, ALL, "eni-a");
    assert_eq!(text_fields.len(), 8);
}

#[test]
fn a_long_connection_keeps_its_rule_in_every_window_and_across_a_reload() {
    let mut f = Fixture::new(1000);
    let names = rule_names();
    f.table.set_rule_names(move |m| names.get(&m).cloned());
    let c = || conn(1, TCP, R, 5000, A, 22).marked(SSH);
    f.event(c().kind(New));
    f.dump(&[c().counted((2, 120), (2, 120))]);
    let first = f.close();
    assert_eq!(
        rows(&first),
        [
            (In, 22, 2, 120, named("sg-web:allow-ssh")),
            (Out, 22, 2, 120, named("sg-web:allow-ssh")),
        ]
    );
    // A reload removed allow-ssh; the names still know its mark (the
    // policy's MarkNames keeps earlier configs'), so the connection it let
    // in keeps its name.
    let mut after_reload = rule_names();
    after_reload.remove(&WEB);
    f.table
        .set_rule_names(move |m| after_reload.get(&m).cloned());
    f.event(c().kind(Destroy).counted((5, 300), (4, 240)));
    let second = f.close();
    assert_eq!(
        rows(&second),
        [
            (In, 22, 3, 180, named("sg-web:allow-ssh")),
            (Out, 22, 2, 120, named("sg-web:allow-ssh")),
        ]
    );
}

#[test]
fn connections_on_one_tuple_under_two_rules_in_a_window_give_a_record_each() {
    let mut f = Fixture::new(1000);
    let names = rule_names();
    f.table.set_rule_names(move |m| names.get(&m).cloned());
    // The same client port twice in one window: first let in by
    // allow-ssh, then (after a reload) by allow-web. Each rule's record
    // counts only its connection.
    f.event(
        conn(1, TCP, R, 5000, A, 22)
            .marked(SSH)
            .kind(Destroy)
            .counted((3, 180), (2, 120)),
    );
    f.event(
        conn(2, TCP, R, 5000, A, 22)
            .marked(WEB)
            .kind(Destroy)
            .counted((4, 400), (5, 500)),
    );
    // And a third connection of allow-ssh joins the first's record.
    f.event(
        conn(3, TCP, R, 5000, A, 22)
            .marked(SSH)
            .kind(Destroy)
            .counted((1, 60), (1, 60)),
    );
    let w = f.close();
    assert_eq!(
        rows(&w),
        [
            (In, 22, 4, 240, named("sg-web:allow-ssh")),
            (In, 22, 4, 400, named("sg-web:allow-web")),
            (Out, 22, 3, 180, named("sg-web:allow-ssh")),
            (Out, 22, 5, 500, named("sg-web:allow-web")),
        ]
    );
}

#[test]
fn rejects_of_two_rules_on_one_tuple_are_apart_as_accepts_are() {
    let mut f = Fixture::new(1000);
    let names = rule_names();
    f.table.set_rule_names(move |m| names.get(&m).cloned());
    let a = f.eni("eni-a");
    f.event(
        conn(1, TCP, R, 5000, A, 22)
            .marked(SSH)
            .kind(Destroy)
            .counted((1, 60), (1, 60)),
    );
    f.event(
        conn(2, TCP, R, 5000, A, 22)
            .marked(WEB)
            .kind(Destroy)
            .counted((2, 120), (2, 120)),
    );
    // REJECT sums are keyed apart from ACCEPT ones; two drop rules on one
    // tuple are kept apart too.
    let tuple = FlowTuple {
        src: ip(R),
        src_port: 6000,
        dst: ip(A),
        dst_port: 23,
        protocol: TCP,
    };
    let (deny, default): (Arc<str>, Arc<str>) =
        (Arc::from("sg-web:deny-telnet"), Arc::from("default"));
    f.table.add_reject(a, In, tuple, 1, 60, Some(&deny), 0);
    f.table.add_reject(a, In, tuple, 2, 120, Some(&default), 0);
    f.table.add_reject(a, In, tuple, 1, 60, Some(&deny), 0);
    let w = f.close();
    let mut rejects: Vec<(u64, Option<String>)> = records(&w, ALL)
        .iter()
        .filter(|r| r.flow.is_some_and(|f| f.action == Action::Reject))
        .map(|r| {
            (
                r.flow.unwrap().packets,
                r.rule.as_deref().map(str::to_owned),
            )
        })
        .collect();
    rejects.sort();
    assert_eq!(
        rejects,
        [(2, named("default")), (2, named("sg-web:deny-telnet"))]
    );
    let accepts: Vec<Row> = rows(&w).into_iter().filter(|r| r.1 == 22).collect();
    assert_eq!(
        accepts,
        [
            (In, 22, 1, 60, named("sg-web:allow-ssh")),
            (In, 22, 2, 120, named("sg-web:allow-web")),
            (Out, 22, 1, 60, named("sg-web:allow-ssh")),
            (Out, 22, 2, 120, named("sg-web:allow-web")),
        ]
    );
}
