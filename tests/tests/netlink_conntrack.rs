//! The daemon's ctnetlink sockets against the live kernel, each test in a
//! network namespace of its own thread: events and dumps of real
//! connections, an overrun, reliable delivery of DESTROY events, and dumps
//! of many entries, whole and in slices. (The parser tests on captured
//! bytes are beside the code, in `daemon/src/netlink/conntrack.rs`.)

use std::collections::HashSet;
use std::net::{Ipv4Addr, UdpSocket};
use std::os::unix::io::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use flowlogd::model::{ConntrackEntry, ConntrackKind, Counters};
use flowlogd::netlink::{
    ConntrackDumper, ConntrackEvents, DrainStats, DumpStep, EventSubscription, EventsConfig,
};
use flowlogd::tracking::{ensure_sysctls, TrackingTable};
use flowlogd_tests::raw_netlink::{message, nla, udp4_tuple, RawNetlink};
use flowlogd_tests::require_root;
use flowlogd_tests::thread_netns::{in_new_netns, run};

// include/uapi/linux/netlink.h
const NETLINK_NETFILTER: i32 = 12;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_CREATE: u16 = 0x400;
// include/uapi/linux/netfilter/nfnetlink.h, nfnetlink_conntrack.h
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_NEW: u16 = 0;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_TIMEOUT: u16 = 7;

fn events_config(destroy_only: bool, receive_buffer_bytes: usize, reliable: bool) -> EventsConfig {
    EventsConfig {
        subscription: EventSubscription {
            new: !destroy_only,
            update: false,
            destroy: true,
        },
        receive_buffer_bytes,
        reliable,
    }
}

/// A UDP request and its answer over `lo`; returns the client's port.
fn udp_exchange(server: &str, payload: &[u8]) -> u16 {
    let server = UdpSocket::bind(server).unwrap();
    let client = UdpSocket::bind((server.local_addr().unwrap().ip(), 0)).unwrap();
    client
        .send_to(payload, server.local_addr().unwrap())
        .unwrap();
    let mut buf = [0u8; 64];
    let (n, peer) = server.recv_from(&mut buf).unwrap();
    server.send_to(&buf[..n], peer).unwrap();
    client.recv(&mut buf).unwrap();
    client.local_addr().unwrap().port()
}

/// Drain until `want` entries of `kind` were seen or 10 s passed.
fn drain_until(
    events: &mut ConntrackEvents,
    kind: ConntrackKind,
    want: usize,
) -> (Vec<ConntrackEntry>, DrainStats) {
    let mut seen = Vec::new();
    let mut total = DrainStats::default();
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.len() < want && Instant::now() < deadline {
        let stats = events.drain(|e| {
            if e.kind == kind {
                seen.push(e)
            }
        });
        total.messages += stats.messages;
        total.entries += stats.entries;
        total.parse_errors += stats.parse_errors;
        total.overruns += stats.overruns;
        std::thread::sleep(Duration::from_millis(20));
    }
    (seen, total)
}

#[test]
fn live_events_and_dump_in_a_namespace() {
    if !require_root("live_events_and_dump_in_a_namespace") {
        return;
    }
    in_new_netns(|| {
        let _table = TrackingTable::install().unwrap();
        ensure_sysctls(true).unwrap();
        let mut events = ConntrackEvents::open(&events_config(false, 1 << 20, false)).unwrap();
        let mut dumper = ConntrackDumper::open().unwrap();

        let port4 = udp_exchange("127.0.0.1:0", b"hello");
        let port6 = udp_exchange("[::1]:0", b"hello");
        let (new, stats) = drain_until(&mut events, ConntrackKind::New, 2);
        assert_eq!(stats.parse_errors, 0);
        let find = |entries: &[ConntrackEntry], port: u16| {
            entries
                .iter()
                .find(|e| e.orig.src_port == port && e.orig.protocol == 17)
                .cloned()
                .unwrap_or_else(|| panic!("no entry for port {port} in {entries:?}"))
        };
        assert_eq!(find(&new, port4).orig_counters, None);
        assert!(find(&new, port6).orig.src.is_ipv6());

        let mut dumped = Vec::new();
        let stats = dumper.dump(|e| dumped.push(e)).unwrap();
        assert_eq!((stats.parse_errors, stats.interrupted), (0, false));
        assert_eq!(stats.entries as usize, dumped.len());
        // IP header + UDP header + 5 bytes, each way.
        let d4 = find(&dumped, port4);
        assert_eq!(d4.kind, ConntrackKind::Dump);
        assert_eq!(
            d4.orig_counters,
            Some(Counters {
                packets: 1,
                bytes: 20 + 8 + 5
            })
        );
        assert_eq!(
            d4.reply_counters,
            Some(Counters {
                packets: 1,
                bytes: 20 + 8 + 5
            })
        );
        let d6 = find(&dumped, port6);
        assert_eq!(
            d6.orig_counters,
            Some(Counters {
                packets: 1,
                bytes: 40 + 8 + 5
            })
        );
        assert!(d6.start_ns.is_some() && d6.stop_ns.is_none());

        // A second dump on the same socket works too.
        assert_eq!(dumper.dump(|_| {}).unwrap().entries, stats.entries);

        run(&["conntrack", "-F"]);
        let (destroyed, _) = drain_until(&mut events, ConntrackKind::Destroy, dumped.len());
        let x4 = find(&destroyed, port4);
        assert_eq!((x4.id, x4.orig_counters), (d4.id, d4.orig_counters));
        assert!(x4.stop_ns.unwrap() >= x4.start_ns.unwrap());
        assert_eq!(find(&destroyed, port6).reply_counters, d6.reply_counters);
    });
}

/// `n` UDP flows to a closed port, each its own conntrack entry.
fn make_flows(n: usize) {
    let sockets: Vec<UdpSocket> = (0..n)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    for s in &sockets {
        s.send_to(b"x", "127.0.0.1:9").unwrap();
    }
}

#[test]
fn live_overrun_is_reported() {
    if !require_root("live_overrun_is_reported") {
        return;
    }
    in_new_netns(|| {
        let _table = TrackingTable::install().unwrap();
        // The smallest buffer the kernel grants holds a few events.
        let mut events = ConntrackEvents::open(&events_config(true, 0, false)).unwrap();
        make_flows(300);
        run(&["conntrack", "-F"]);
        let stats = events.drain(|_| {});
        assert!(stats.overruns >= 1, "{stats:?}");
        assert!(stats.entries < 300, "{stats:?}");
    });
}

/// With NETLINK_BROADCAST_ERROR + NETLINK_NO_ENOBUFS the kernel keeps
/// entries whose DESTROY event did not fit and re-sends it: every
/// destroy arrives even through the smallest buffer.
#[test]
fn live_reliable_mode_redelivers_destroy_events() {
    if !require_root("live_reliable_mode_redelivers_destroy_events") {
        return;
    }
    in_new_netns(|| {
        let _table = TrackingTable::install().unwrap();
        let mut events = ConntrackEvents::open(&events_config(true, 0, true)).unwrap();
        make_flows(300);
        run(&["conntrack", "-F"]);
        let (destroyed, stats) = drain_until(&mut events, ConntrackKind::Destroy, 300);
        assert_eq!(stats.overruns, 0, "{stats:?}");
        let ids: HashSet<u32> = destroyed.iter().map(|e| e.id).collect();
        assert_eq!(ids.len(), 300, "{stats:?}");
    });
}

/// IPCTNL_MSG_CT_NEW requests creating `count` UDP entries, batched
/// into datagrams of about 32 KiB.
fn insert_entries(count: u32) {
    let socket = RawNetlink::open(NETLINK_NETFILTER).unwrap();
    let mut batch = Vec::new();
    for i in 0..count {
        let src = Ipv4Addr::from(0x0a00_0000u32 + i);
        let dst = Ipv4Addr::new(10, 255, 255, 254);
        // nfgenmsg: AF_INET, NFNETLINK_V0, res_id 0.
        let mut body = vec![libc::AF_INET as u8, 0, 0, 0];
        body.extend(udp4_tuple(CTA_TUPLE_ORIG, src, dst, 40000, 53));
        body.extend(udp4_tuple(CTA_TUPLE_REPLY, dst, src, 53, 40000));
        body.extend(nla(CTA_TIMEOUT, &600u32.to_be_bytes()));
        batch.extend(message(
            (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW,
            NLM_F_REQUEST | NLM_F_CREATE,
            i,
            &body,
        ));
        if batch.len() > 32 * 1024 || i + 1 == count {
            socket.send_to(&batch, 0, 0).unwrap();
            batch.clear();
        }
    }
    // Without NLM_F_ACK only failures are answered.
    match socket.try_recv().unwrap() {
        None => {}
        Some(reply) => panic!("entry creation failed: {reply:?}"),
    }
}

/// Blocks until `fd` is readable or `timeout` passed (EINTR counts as
/// having waited).
fn wait_readable(fd: RawFd, timeout: Duration) -> std::io::Result<()> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: one valid pollfd, its count passed with it.
    let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
    Ok(())
}

#[test]
fn live_dump_of_250k_entries() {
    if !require_root("live_dump_of_250k_entries") {
        return;
    }
    in_new_netns(|| {
        const COUNT: u32 = 250_000;
        let started = Instant::now();
        insert_entries(COUNT);
        let inserted = started.elapsed();
        let mut dumper = ConntrackDumper::open().unwrap();
        let mut keys = HashSet::new();
        let mut ids = HashSet::new();
        let started = Instant::now();
        let stats = dumper
            .dump(|e| {
                ids.insert(e.id);
                keys.insert((e.id, e.orig));
            })
            .unwrap();
        eprintln!(
            "inserted {COUNT} entries in {inserted:?}, dumped in {:?}: {stats:?}, {} distinct CTA_IDs",
            started.elapsed(),
            ids.len()
        );
        assert_eq!(stats.entries, u64::from(COUNT), "{stats:?}");
        assert_eq!(stats.parse_errors, 0);
        // Every entry exactly once. (Not by CTA_ID alone: it is a 32-bit
        // hash, nf_ct_get_id, and 250k live entries share a few ids.)
        assert_eq!(keys.len(), COUNT as usize);
    });
}
#[test]
fn a_dump_read_in_slices_lists_every_entry_once() {
    if !require_root("a_dump_read_in_slices_lists_every_entry_once") {
        return;
    }
    in_new_netns(|| {
        const COUNT: u32 = 5_000;
        insert_entries(COUNT);
        let mut dumper = ConntrackDumper::open().unwrap();
        dumper.start().unwrap();
        let second = dumper.start().expect_err("one dump at a time");
        assert!(second.to_string().contains("already running"), "{second}");
        let mut keys = HashSet::new();
        let mut slices = 0;
        let deadline = Instant::now() + Duration::from_secs(30);
        let stats = loop {
            assert!(Instant::now() < deadline, "dump not done after 30 s");
            slices += 1;
            match dumper
                .read_some(1, |e| assert!(keys.insert((e.id, e.orig))))
                .unwrap()
            {
                DumpStep::Done(stats) => break stats,
                DumpStep::Running { more_queued: true } => {}
                DumpStep::Running { more_queued: false } => {
                    wait_readable(dumper.as_raw_fd(), Duration::from_millis(100)).unwrap()
                }
            }
        };
        // One datagram per slice: 5000 entries need many.
        assert!(slices > 10, "{slices} slices");
        assert_eq!(stats.entries, u64::from(COUNT), "{stats:?}");
        assert_eq!(keys.len(), COUNT as usize);
        // The socket serves the next dump.
        let again = dumper.dump(|_| {}).unwrap();
        assert_eq!(again.entries, u64::from(COUNT));
        assert!(!dumper.take_reopened());
    });
}
