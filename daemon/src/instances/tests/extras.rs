//! pkt-srcaddr / pkt-dstaddr and flow-start / flow-end of the window's
//! records: from the conntrack tuples and timestamps (NFLOG for REJECT),
//! through NAT, merged sums, early emits and held records.

use super::*;

/// A container's address behind the host's NAT.
const C: &str = "172.17.0.2";
const C2: &str = "172.17.0.3";

/// Unix seconds as conntrack's nanoseconds.
fn ns(secs: i64) -> u64 {
    u64::try_from(secs).unwrap() * 1_000_000_000
}

/// eni-a's OK record in `direction` whose port on eni-a's side is
/// `a_port` (the only one), in instance ALL.
fn one(w: &WindowRecords, direction: Direction, a_port: u16) -> FlowFields {
    let found: Vec<FlowFields> = flows_with_extras_of(w, ALL, "eni-a")
        .into_iter()
        .filter(|f| f.direction == direction)
        .filter(|f| {
            a_port
                == if direction == Out {
                    f.srcport
                } else {
                    f.dstport
                }
        })
        .collect();
    assert_eq!(found.len(), 1, "{direction:?} {a_port}: {found:#?}");
    found[0]
}

fn pkt(f: &FlowFields) -> (IpAddr, IpAddr) {
    (f.extras.pkt_srcaddr.unwrap(), f.extras.pkt_dstaddr.unwrap())
}

fn span(f: &FlowFields) -> (i64, i64) {
    (f.extras.flow_start.unwrap(), f.extras.flow_end.unwrap())
}

#[test]
fn masquerade_shows_the_inside_addresses_as_pkt() {
    let mut f = Fixture::new(1000);
    // C:40000 -> R:443 leaves eni-a masqueraded as A:61000.
    f.event(
        conn(1, TCP, C, 40000, R, 443)
            .replied(R, 443, A, 61000)
            .kind(Destroy)
            .counted((3, 180), (2, 120)),
    );
    let w = f.close();
    let out = one(&w, Out, 61000);
    assert_eq!((out.srcaddr, out.dstaddr), (ip(A), ip(R)));
    assert_eq!(pkt(&out), (ip(C), ip(R)));
    let back = one(&w, In, 61000);
    assert_eq!((back.srcaddr, back.dstaddr), (ip(R), ip(A)));
    assert_eq!(pkt(&back), (ip(R), ip(C)));
    assert_eq!(flows_of(&w, ALL, "eni-a").len(), 2);
}

#[test]
fn a_port_forward_shows_the_inside_address_as_pkt() {
    let mut f = Fixture::new(1000);
    // R:5000 -> A:8080 forwarded to C:80.
    f.event(
        conn(1, TCP, R, 5000, A, 8080)
            .replied(C, 80, R, 5000)
            .kind(Destroy)
            .counted((3, 180), (2, 120)),
    );
    let w = f.close();
    let arrive = one(&w, In, 8080);
    assert_eq!((arrive.srcaddr, arrive.dstaddr), (ip(R), ip(A)));
    assert_eq!(pkt(&arrive), (ip(R), ip(C)));
    let back = one(&w, Out, 8080);
    assert_eq!((back.srcaddr, back.dstaddr), (ip(A), ip(R)));
    assert_eq!(pkt(&back), (ip(C), ip(R)));
}

#[test]
fn without_nat_and_for_rejects_pkt_is_the_records_own_addresses() {
    let mut f = Fixture::new(1000);
    let a = f.eni("eni-a");
    f.event(
        conn(1, UDP, A, 5353, R, 53)
            .kind(Destroy)
            .counted((1, 60), (1, 60)),
    );
    // A port-only forward (A:8080 -> A:80): the addresses do not change.
    f.event(
        conn(2, TCP, R, 5000, A, 8080)
            .replied(A, 80, R, 5000)
            .kind(Destroy)
            .counted((1, 60), (1, 60)),
    );
    let blocked = FlowTuple {
        src: ip(R),
        src_port: 6000,
        dst: ip(A),
        dst_port: 23,
        protocol: TCP,
    };
    f.table.add_reject(a, In, blocked, 1, 60, None, 0);
    let w = f.close();
    let flows = flows_with_extras_of(&w, ALL, "eni-a");
    assert_eq!(flows.len(), 5);
    for f in flows {
        assert_eq!(pkt(&f), (f.srcaddr, f.dstaddr), "{f:?}");
    }
}

#[test]
fn one_tuple_natted_differently_in_a_window_gives_a_record_per_inside_address() {
    let mut f = Fixture::new(1000);
    // Two containers one after the other, and the host itself, each
    // leaving eni-a as A:61000 -> R:443.
    for (id, inside, packets) in [(1, C, 3), (2, C2, 5), (3, A, 7)] {
        f.event(
            conn(id, TCP, inside, 40000, R, 443)
                .replied(R, 443, A, 61000)
                .kind(Destroy)
                .counted((packets, packets * 60), (1, 60)),
        );
    }
    // And C again: summed with its first connection.
    f.event(
        conn(4, TCP, C, 40001, R, 443)
            .replied(R, 443, A, 61000)
            .kind(Destroy)
            .counted((10, 600), (0, 0)),
    );
    let w = f.close();
    let mut out: Vec<(IpAddr, u64)> = flows_with_extras_of(&w, ALL, "eni-a")
        .into_iter()
        .filter(|f| f.direction == Out)
        .inspect(|f| assert_eq!((f.srcaddr, f.srcport, f.dstaddr), (ip(A), 61000, ip(R))))
        .map(|f| (f.extras.pkt_srcaddr.unwrap(), f.packets))
        .collect();
    out.sort();
    assert_eq!(out, [(ip(A), 7), (ip(C), 13), (ip(C2), 5)]);
    // Replies: to C twice (one record), to C2, to A.
    assert_eq!(flows_of(&w, ALL, "eni-a").len(), 3 + 3);
}

#[test]
fn flow_times_come_from_conntrack_and_are_clamped_to_the_window() {
    let mut f = Fixture::new(1000);
    let w0 = f.table.window();
    assert_eq!(
        w0,
        CaptureWindow {
            start: TEN,
            end: TEN + 600
        }
    );
    // Short, inside the window.
    f.event(
        conn(1, TCP, A, 40001, R, 443)
            .kind(Destroy)
            .started(ns(TEN + 100) + 7)
            .stopped(ns(TEN + 130) + 999_999_999)
            .counted((3, 180), (2, 120)),
    );
    // Started before the window, ended in it.
    f.event(
        conn(2, TCP, A, 40002, R, 443)
            .kind(Destroy)
            .started(ns(TEN - 900))
            .stopped(ns(TEN + 200))
            .counted((3, 180), (2, 120)),
    );
    // Alive at the close: a dump line, no stop.
    let long = conn(3, TCP, A, 40003, R, 443).started(ns(TEN + 50));
    f.dump(&[long.clone().counted((1, 60), (1, 60))]);
    // No timestamps (nf_conntrack_timestamp off): the window's bounds.
    f.event(
        conn(4, UDP, A, 40004, R, 53)
            .kind(Destroy)
            .counted((1, 60), (0, 0)),
    );
    let w = f.close();
    assert_eq!(span(&one(&w, Out, 40001)), (TEN + 100, TEN + 130));
    assert_eq!(span(&one(&w, In, 40001)), (TEN + 100, TEN + 130));
    assert_eq!(span(&one(&w, Out, 40002)), (TEN, TEN + 200));
    assert_eq!(span(&one(&w, Out, 40003)), (TEN + 50, TEN + 600));
    assert_eq!(span(&one(&w, Out, 40004)), (TEN, TEN + 600));

    // The long one spans the next window and ends in the one after.
    f.dump(&[long.clone().counted((2, 120), (2, 120))]);
    let w = f.close();
    assert_eq!(span(&one(&w, Out, 40003)), (TEN + 600, TEN + 1200));
    f.event(
        long.clone()
            .kind(Destroy)
            .stopped(ns(TEN + 1300))
            .counted((3, 180), (2, 120)),
    );
    let w = f.close();
    assert_eq!(span(&one(&w, Out, 40003)), (TEN + 1200, TEN + 1300));
}

#[test]
fn a_connection_begun_after_the_deadline_and_listed_by_the_closing_dump_is_clamped() {
    let mut f = Fixture::new(1000);
    let deadline = f.table.next_deadline();
    f.clock.set(deadline + 2);
    let window = f.table.begin_close(deadline);
    f.table.begin_dump();
    let late = conn(1, TCP, A, 40001, R, 443)
        .started(ns(deadline + 1))
        .counted((1, 60), (0, 0));
    f.table.on_dump_entry(&f.reg, &late);
    f.table.end_dump(true);
    let d = f.table.finish_close(&f.reg).unwrap();
    assert_eq!(d.window(), window);
    let w = f.route(d).collect_all();
    assert_eq!(span(&one(&w, Out, 40001)), (deadline, deadline));
}

#[test]
fn a_record_of_several_connections_spans_from_the_earliest_start_to_the_latest_end() {
    let mut f = Fixture::new(1000);
    // UDP: one tuple, three connections in the window.
    for (id, start, stop) in [(1, 300, 320), (2, 400, 410), (3, 100, 150)] {
        f.event(
            conn(id, UDP, A, 5000, R, 53)
                .kind(Destroy)
                .started(ns(TEN + start))
                .stopped(ns(TEN + stop))
                .counted((1, 60), (1, 60)),
        );
    }
    let w = f.close();
    assert_eq!(span(&one(&w, Out, 5000)), (TEN + 100, TEN + 410));
    let back = one(&w, In, 5000);
    assert_eq!((back.packets, span(&back)), (3, (TEN + 100, TEN + 410)));
}

#[test]
fn a_reject_record_spans_its_first_and_last_drop() {
    let mut f = Fixture::new(1000);
    let a = f.eni("eni-a");
    let blocked = FlowTuple {
        src: ip(R),
        src_port: 6000,
        dst: ip(A),
        dst_port: 23,
        protocol: TCP,
    };
    for at in [TEN + 250, TEN + 251, TEN + 420] {
        f.clock.set(at);
        f.table.add_reject(a, In, blocked, 1, 60, None, 0);
    }
    let w = f.close();
    let r = one(&w, In, 23);
    assert_eq!((r.action, r.packets), (Action::Reject, 3));
    assert_eq!(span(&r), (TEN + 250, TEN + 420));
}

#[test]
fn a_reject_record_takes_the_kernels_timestamp_unless_it_is_off_by_a_window() {
    let mut f = Fixture::new(1000);
    let a = f.eni("eni-a");
    let blocked = |dst_port| FlowTuple {
        src: ip(R),
        src_port: 6000,
        dst: ip(A),
        dst_port,
        protocol: TCP,
    };
    f.clock.set(TEN + 300);
    // Received two seconds before it was read: the kernel's time.
    f.table
        .add_reject_at(Some(TEN + 298), a, In, blocked(22), 1, 60, None, 0);
    // More than a window away (another clock): the reading time.
    f.table
        .add_reject_at(Some(TEN + 300 - 601), a, In, blocked(23), 1, 60, None, 0);
    f.table
        .add_reject_at(Some(TEN + 300 + 601), a, In, blocked(24), 1, 60, None, 0);
    f.table
        .add_reject_at(None, a, In, blocked(25), 1, 60, None, 0);
    let w = f.close();
    assert_eq!(span(&one(&w, In, 22)), (TEN + 298, TEN + 298));
    for port in [23, 24, 25] {
        assert_eq!(span(&one(&w, In, port)), (TEN + 300, TEN + 300), "{port}");
    }
}

#[test]
fn early_emits_keep_pkt_and_times() {
    let mut f = Fixture::new(100_000);
    f.table = FlowTable::new(Rc::clone(&f.clock), W, 100_000)
        .with_window_memory_bytes(SMALL_WINDOW_MEMORY);
    let mut spills = Vec::new();
    f.event(
        conn(1, TCP, C, 40000, R, 443)
            .replied(R, 443, A, 61000)
            .kind(Destroy)
            .started(ns(TEN + 10))
            .stopped(ns(TEN + 20))
            .counted((3, 180), (2, 120)),
    );
    flood_b(&mut f, 100, &mut spills);
    assert!(!spills.is_empty(), "the flood emitted early");
    let early: Vec<FlowFields> = spills
        .iter()
        .flat_map(|w| flows_with_extras_of(w, ALL, "eni-a"))
        .collect();
    assert_eq!(early.len(), 2, "{early:?}");
    for e in &early {
        let (inside, outside) = match e.direction {
            Out => ((ip(C), ip(R)), (ip(A), ip(R))),
            In => ((ip(R), ip(C)), (ip(R), ip(A))),
        };
        assert_eq!((pkt(e), (e.srcaddr, e.dstaddr)), (inside, outside));
        assert_eq!(span(e), (TEN + 10, TEN + 20));
    }
    // The flood's records span the window: no timestamps.
    let flood = flows_with_extras_of(&spills[0], ALL, "eni-b");
    assert!(!flood.is_empty());
    assert!(flood.iter().all(|f| span(f) == (TEN, TEN + 600)));
}

#[test]
fn held_records_keep_pkt_and_are_clamped_to_the_window_they_go_out_with() {
    let clock = Rc::new(FakeClock::new(TEN + 10));
    let mut reg = ecs_registry();
    let mut table = FlowTable::new(Rc::clone(&clock), W, 1000);
    // R:5000 -> B:8080 forwarded to C:80, on the ENI waiting for its ids.
    let c = conn(1, TCP, R, 5000, B, 8080)
        .replied(C, 80, R, 5000)
        .kind(Destroy)
        .started(ns(TEN + 30))
        .stopped(ns(TEN + 40))
        .counted((2, 120), (1, 60));
    table.on_event(&reg, &c);
    clock.set(TEN + 600);
    assert_eq!(table.close_window(&reg, TEN + 600).held, 2);
    // Its ids arrive in the next window: its records go out with it.
    ecs_answers(&mut reg, "eni-late", "vpc-1", TEN + 700);
    clock.set(TEN + 1200);
    let logs = vpc_log("vpc-1");
    let w = routed(table.close_window(&reg, TEN + 1200), &logs, &reg).collect_all();
    let flows = flows_with_extras_of(&w, 0, "eni-late");
    assert_eq!(flows.len(), 2, "{w:#?}");
    for f in flows {
        // From the window before: clamped to this one's start.
        assert_eq!(span(&f), (TEN + 600, TEN + 600), "{f:?}");
        let want = match f.direction {
            In => (ip(R), ip(C)),
            Out => (ip(C), ip(R)),
        };
        assert_eq!(pkt(&f), want);
    }
}
