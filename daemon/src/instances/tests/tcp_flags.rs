//! TCP flags in the window's records: the flags of accepted packets
//! (`FlowTable::add_tcp_flags`) and of dropped ones (`add_reject`), with
//! capture off and on, through early emits and at the memory bound.

use flowlogd_plugin_api::abi::{TCP_FLAG_FIN, TCP_FLAG_RST, TCP_FLAG_SYN, TCP_FLAG_SYN_ACK};

use super::*;

/// A TCP tuple.
fn tcp(src: &str, src_port: u16, dst: &str, dst_port: u16) -> FlowTuple {
    FlowTuple {
        src: ip(src),
        src_port,
        dst: ip(dst),
        dst_port,
        protocol: TCP,
    }
}

/// The `tcp_flags` of eni-a's OK record of `action` in `direction` whose
/// port on eni-a's side is `a_port`, in instance ALL.
fn flags_of(w: &WindowRecords, action: Action, direction: Direction, a_port: u16) -> Option<u8> {
    let found: Vec<Option<u8>> = flows_with_extras_of(w, ALL, "eni-a")
        .into_iter()
        .filter(|f| f.action == action && f.direction == direction)
        .filter(|f| {
            a_port
                == if direction == Out {
                    f.srcport
                } else {
                    f.dstport
                }
        })
        .map(|f| f.extras.tcp_flags)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{action:?} {direction:?} {a_port}: {found:?}"
    );
    found[0]
}

/// A connection from eni-a to R:443 (source port `port`) closed with one
/// packet each way, its SYN and SYN-ACK seen as accepted packets before.
fn short_connection(f: &mut Fixture, id: u32, port: u16) {
    let a = f.eni("eni-a");
    f.table
        .add_tcp_flags(a, Out, tcp(A, port, R, 443), TCP_FLAG_SYN);
    f.table
        .add_tcp_flags(a, In, tcp(R, 443, A, port), TCP_FLAG_SYN_ACK);
    f.table
        .add_tcp_flags(a, Out, tcp(A, port, R, 443), TCP_FLAG_FIN);
    f.event(
        conn(id, TCP, A, port, R, 443)
            .kind(Destroy)
            .counted((3, 180), (2, 120)),
    );
}

#[test]
fn with_capture_off_records_carry_no_tcp_flags() {
    let mut f = Fixture::new(1000);
    let a = f.eni("eni-a");
    short_connection(&mut f, 1, 40000);
    let blocked = tcp(R, 6000, A, 23);
    f.table
        .add_reject(a, In, blocked, 1, 60, None, TCP_FLAG_SYN);
    let w = f.close();
    assert_eq!(flags_of(&w, Action::Accept, Out, 40000), None);
    assert_eq!(flags_of(&w, Action::Accept, In, 40000), None);
    assert_eq!(flags_of(&w, Action::Reject, In, 23), None);
}

#[test]
fn accepted_packets_flags_go_to_their_records_and_dropped_ones_to_the_reject_record() {
    let mut f = Fixture::new(1000);
    f.table.set_tcp_flags_capture(true);
    let a = f.eni("eni-a");
    short_connection(&mut f, 1, 40000);
    // A connection whose packets showed no flags of interest.
    f.event(
        conn(2, TCP, A, 40001, R, 443)
            .kind(Destroy)
            .counted((1, 60), (1, 60)),
    );
    // UDP: not TCP, flags 0 all the same (and flags given for it ignored).
    let udp = FlowTuple {
        protocol: UDP,
        ..tcp(A, 5353, R, 53)
    };
    f.table.add_tcp_flags(a, Out, udp, TCP_FLAG_SYN);
    f.event(
        conn(3, UDP, A, 5353, R, 53)
            .kind(Destroy)
            .counted((1, 60), (0, 0)),
    );
    // Dropped packets: a SYN, then a RST, of one tuple.
    let blocked = tcp(R, 6000, A, 23);
    f.table
        .add_reject(a, In, blocked, 1, 60, None, TCP_FLAG_SYN);
    f.table
        .add_reject(a, In, blocked, 1, 40, None, TCP_FLAG_RST);
    // Flags of a tuple that never gets an ACCEPT record in the window.
    f.table
        .add_tcp_flags(a, Out, tcp(A, 40002, R, 443), TCP_FLAG_SYN);

    let deadline = f.table.next_deadline();
    f.clock.set(deadline);
    let d = f.table.close_window(&f.reg, deadline);
    assert_eq!(d.tcp_flags_unused(), (1, 0));
    let w = in_old_order(f.route(d).collect_all());
    assert_eq!(
        flags_of(&w, Action::Accept, Out, 40000),
        Some(TCP_FLAG_SYN | TCP_FLAG_FIN)
    );
    assert_eq!(
        flags_of(&w, Action::Accept, In, 40000),
        Some(TCP_FLAG_SYN_ACK),
        "only the reply direction's record gets the SYN-ACK"
    );
    assert_eq!(flags_of(&w, Action::Accept, Out, 40001), Some(0));
    assert_eq!(flags_of(&w, Action::Accept, Out, 5353), Some(0));
    assert_eq!(
        flags_of(&w, Action::Reject, In, 23),
        Some(TCP_FLAG_SYN | TCP_FLAG_RST)
    );
    // Unmatched flags made no record: 2 + 2 + 1 ACCEPT and 1 REJECT.
    assert_eq!(flows_of(&w, ALL, "eni-a").len(), 6);

    // Flags do not outlive their window.
    f.event(
        conn(4, TCP, A, 40000, R, 443)
            .kind(Destroy)
            .counted((1, 60), (0, 0)),
    );
    let w = f.close();
    assert_eq!(flags_of(&w, Action::Accept, Out, 40000), Some(0));
}

#[test]
fn flags_go_out_with_the_early_emit_of_their_record_and_later_ones_with_the_close() {
    let mut f = Fixture::new(100_000);
    f.table = FlowTable::new(Rc::clone(&f.clock), W, 100_000)
        .with_window_memory_bytes(SMALL_WINDOW_MEMORY);
    f.table.set_tcp_flags_capture(true);
    let a = f.eni("eni-a");
    let mut spills = Vec::new();
    short_connection(&mut f, 1, 40000);
    // A long connection: its SYN now, its counters and FIN only at the close.
    f.table
        .add_tcp_flags(a, Out, tcp(A, 40009, R, 443), TCP_FLAG_SYN);
    flood_b(&mut f, 100, &mut spills);
    assert!(!spills.is_empty(), "the flood emitted early");
    let early: Vec<&FlowRecord> = spills
        .iter()
        .flat_map(|w| records(w, ALL))
        .filter(|r| r.eni.eni_id == "eni-a")
        .collect();
    assert_eq!(early.len(), 2, "{early:?}");
    for r in &early {
        let flow = r.flow.unwrap();
        let want = match flow.direction {
            Out => TCP_FLAG_SYN | TCP_FLAG_FIN,
            In => TCP_FLAG_SYN_ACK,
        };
        assert_eq!(flow.extras.tcp_flags, Some(want), "{flow:?}");
    }
    f.table
        .add_tcp_flags(a, Out, tcp(A, 40009, R, 443), TCP_FLAG_FIN);
    f.event(
        conn(9, TCP, A, 40009, R, 443)
            .kind(Destroy)
            .counted((4, 240), (3, 180)),
    );
    let w = f.close();
    assert_eq!(
        flags_of(&w, Action::Accept, Out, 40009),
        Some(TCP_FLAG_SYN | TCP_FLAG_FIN)
    );
    assert_eq!(flags_of(&w, Action::Accept, In, 40009), Some(0));
}

#[test]
fn flags_past_the_memory_bound_are_dropped_and_counted() {
    let mut f = Fixture::new(100_000);
    f.table = FlowTable::new(Rc::clone(&f.clock), W, 100_000)
        .with_window_memory_bytes(SMALL_WINDOW_MEMORY);
    f.table.set_tcp_flags_capture(true);
    let a = f.eni("eni-a");
    // Flags of 2000 tuples and no sums at all: nothing to emit early.
    for port in 0..2000u16 {
        f.table
            .add_tcp_flags(a, Out, tcp(A, 10_000 + port, R, 443), TCP_FLAG_SYN);
        assert!(
            f.table.sums_bytes() <= (SMALL_WINDOW_MEMORY / 2) as usize,
            "{} bytes",
            f.table.sums_bytes()
        );
    }
    assert!(!f.table.has_spill());
    let deadline = f.table.next_deadline();
    f.clock.set(deadline);
    let d = f.table.close_window(&f.reg, deadline);
    let (unmatched, dropped) = d.tcp_flags_unused();
    assert!(unmatched > 100, "{unmatched} kept");
    assert!(dropped > 0, "none dropped: the bound did not count them");
    assert_eq!(unmatched + dropped, 2000);
}

#[test]
fn flags_go_to_every_accept_record_of_their_key_natted_or_not() {
    let mut f = Fixture::new(1000);
    f.table.set_tcp_flags_capture(true);
    let a = f.eni("eni-a");
    // Leaving eni-a as A:61000 -> R:443: once masqueraded from a
    // container, once from the host itself.
    f.table
        .add_tcp_flags(a, Out, tcp(A, 61000, R, 443), TCP_FLAG_SYN);
    for (id, inside) in [(1, "172.17.0.2"), (2, A)] {
        f.event(
            conn(id, TCP, inside, 40000, R, 443)
                .replied(R, 443, A, 61000)
                .kind(Destroy)
                .counted((2, 120), (1, 60)),
        );
    }
    let deadline = f.table.next_deadline();
    f.clock.set(deadline);
    let d = f.table.close_window(&f.reg, deadline);
    assert_eq!(d.tcp_flags_unused(), (0, 0));
    let w = f.route(d).collect_all();
    let out: Vec<(Option<IpAddr>, Option<u8>)> = flows_with_extras_of(&w, ALL, "eni-a")
        .into_iter()
        .filter(|f| f.direction == Out)
        .map(|f| (f.extras.pkt_srcaddr, f.extras.tcp_flags))
        .collect();
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(
        out.iter().all(|&(_, flags)| flags == Some(TCP_FLAG_SYN)),
        "{out:?}"
    );
}
