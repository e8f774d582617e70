//! The daemon's netlink socket reading batches (`drain_messages`) against
//! the live kernel, in a network namespace of the test's own thread: a user
//! socket multicasts into a NETLINK_USERSOCK group the way the kernel
//! multicasts conntrack and rtnetlink events, so order, budgets, cut
//! datagrams, other senders and overruns can be set up exactly. (The
//! unprivileged tests of the socket are beside it, in
//! `daemon/src/netlink/socket.rs`.)

use flowlogd::netlink::{DrainStats, NetlinkSocket, ReceiveSlots, Received, SocketOptions};
use flowlogd_tests::raw_netlink::{message, RawNetlink};
use flowlogd_tests::require_root;
use flowlogd_tests::thread_netns::in_new_netns;

// include/uapi/linux/netlink.h. Its multicast groups need no
// privilege to join or to send to, so a user socket can queue
// datagrams on an event socket the way the kernel does: each send is
// one datagram in every member's queue, dropped (ENOBUFS) when the
// member's receive buffer is full.
const NETLINK_USERSOCK: i32 = 2;
const GROUP: u32 = 1;

/// A message with sequence number `seq` and `payload_len` bytes of
/// payload, for telling datagrams apart.
fn numbered(seq: u32, payload_len: usize) -> Vec<u8> {
    message(0x100, 0, seq, &vec![0xab; payload_len])
}

/// An event socket of NETLINK_USERSOCK in GROUP that takes `sender`'s
/// datagrams as the kernel's. Open it inside `in_new_netns`, so no
/// other test's datagrams reach it.
fn member(sender: &GroupSender, slots: ReceiveSlots, receive_buffer_bytes: usize) -> NetlinkSocket {
    let mut socket = NetlinkSocket::open(
        NETLINK_USERSOCK as isize,
        &SocketOptions {
            groups: vec![GROUP],
            receive_buffer_bytes: Some(receive_buffer_bytes),
            receive_slots: slots,
            ..SocketOptions::default()
        },
    )
    .expect("open a NETLINK_USERSOCK member");
    socket.trust_sender(sender.port_id);
    socket
}

struct GroupSender {
    socket: RawNetlink,
    port_id: u32,
}

impl GroupSender {
    fn open() -> Self {
        let socket = RawNetlink::open(NETLINK_USERSOCK).expect("NETLINK_USERSOCK socket");
        let port_id = socket.port_id();
        GroupSender { socket, port_id }
    }

    /// One datagram to every member of GROUP.
    fn send(&self, datagram: &[u8]) {
        match self.socket.send_to(datagram, 0, 1 << (GROUP - 1)) {
            Ok(()) => {}
            // netlink_sendmsg delivers to the group, then also unicasts
            // to port 0, where NETLINK_USERSOCK has no kernel socket.
            Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {}
            Err(e) => panic!("multicast send: {e}"),
        }
    }
}

/// Drains once, returning the stats and the sequence numbers seen.
fn drain_seqs(socket: &mut NetlinkSocket, budget: usize) -> (DrainStats, Vec<u32>) {
    let mut seqs = Vec::new();
    let stats = socket.drain_messages("test", budget, |m, _| seqs.push(m.seq));
    (stats, seqs)
}

#[test]
fn drain_reads_more_datagrams_than_slots_in_order_within_its_budget() {
    if !require_root("drain_reads_more_datagrams_than_slots_in_order_within_its_budget") {
        return;
    }
    in_new_netns(|| {
        let sender = GroupSender::open();
        let mut socket = member(
            &sender,
            ReceiveSlots {
                count: 8,
                len: 1024,
            },
            1 << 20,
        );
        for seq in 0..100 {
            sender.send(&numbered(seq, 64));
        }
        // One datagram with two messages: one of the budget, two messages.
        let mut two = numbered(100, 8);
        two.extend(numbered(101, 8));
        sender.send(&two);

        // 30 is not a multiple of 8: the last batch must ask for 6.
        let (stats, seqs) = drain_seqs(&mut socket, 30);
        assert_eq!(seqs, (0..30).collect::<Vec<_>>());
        assert_eq!(
            stats,
            DrainStats {
                messages: 30,
                more_pending: true,
                ..DrainStats::default()
            }
        );
        let (stats, seqs) = drain_seqs(&mut socket, 71);
        assert_eq!(seqs, (30..102).collect::<Vec<_>>());
        assert_eq!(stats.messages, 72);
        // Exactly the budget was queued: whether more is pending is
        // only known from another read.
        assert!(stats.more_pending);
        let (stats, seqs) = drain_seqs(&mut socket, 1000);
        assert!(seqs.is_empty());
        assert_eq!(stats, DrainStats::default());
    });
}

/// Another process multicasting into the group (as one with
/// CAP_NET_ADMIN can into conntrack's or rtnetlink's): its datagrams
/// are counted as foreign, never handed out, and not a loss.
#[test]
fn drain_skips_and_counts_datagrams_from_another_sender() {
    if !require_root("drain_skips_and_counts_datagrams_from_another_sender") {
        return;
    }
    in_new_netns(|| {
        let kernel = GroupSender::open();
        let forger = GroupSender::open();
        let mut socket = member(
            &kernel,
            ReceiveSlots {
                count: 4,
                len: 1024,
            },
            1 << 20,
        );
        kernel.send(&numbered(0, 16));
        forger.send(&numbered(1, 16));
        kernel.send(&numbered(2, 16));
        forger.send(&numbered(3, 16));

        let (stats, seqs) = drain_seqs(&mut socket, 100);
        assert_eq!(seqs, [0, 2]);
        assert_eq!(
            stats,
            DrainStats {
                messages: 2,
                foreign: 2,
                ..DrainStats::default()
            }
        );

        // The single-datagram read skips it too.
        forger.send(&numbered(4, 16));
        assert_eq!(
            socket.recv().unwrap(),
            Received::Foreign {
                sender: forger.port_id
            }
        );
        assert_eq!(socket.recv().unwrap(), Received::WouldBlock);
    });
}

#[test]
fn drain_counts_a_datagram_longer_than_its_slot_and_parses_none_of_it() {
    if !require_root("drain_counts_a_datagram_longer_than_its_slot_and_parses_none_of_it") {
        return;
    }
    in_new_netns(|| {
        let sender = GroupSender::open();
        let mut socket = member(&sender, ReceiveSlots { count: 4, len: 256 }, 1 << 20);
        sender.send(&numbered(0, 16));
        // 3 messages of 196 bytes: the first one would fit the slot,
        // so a cut datagram would still yield it if parsed.
        let mut long = numbered(1, 180);
        long.extend(numbered(2, 180));
        long.extend(numbered(3, 180));
        sender.send(&long);
        sender.send(&numbered(4, 16));

        let (stats, seqs) = drain_seqs(&mut socket, 100);
        assert_eq!(seqs, [0, 4]);
        assert_eq!(
            stats,
            DrainStats {
                messages: 2,
                parse_errors: 1,
                ..DrainStats::default()
            }
        );
    });
}

#[test]
fn drain_counts_an_overrun_and_reads_what_was_queued() {
    if !require_root("drain_counts_an_overrun_and_reads_what_was_queued") {
        return;
    }
    in_new_netns(|| {
        let sender = GroupSender::open();
        // 32 KiB of receive buffer hold a few dozen small datagrams
        // (each costs its skb's truesize, about 1 KiB); the rest of
        // the 500 are dropped, and the socket gets one ENOBUFS.
        let mut socket = member(
            &sender,
            ReceiveSlots {
                count: 4,
                len: 1024,
            },
            16 * 1024,
        );
        for seq in 0..500 {
            sender.send(&numbered(seq, 200));
        }
        let (stats, seqs) = drain_seqs(&mut socket, 1000);
        let queued = seqs.len();
        assert!(
            (5..500).contains(&queued),
            "expected a drop after more than one batch, got {queued} of 500"
        );
        assert_eq!(seqs, (0..queued as u32).collect::<Vec<_>>());
        assert_eq!(
            stats,
            DrainStats {
                messages: queued as u64,
                overruns: 1,
                ..DrainStats::default()
            }
        );

        // Read empty, the socket takes datagrams again.
        for seq in 500..510 {
            sender.send(&numbered(seq, 200));
        }
        let (stats, seqs) = drain_seqs(&mut socket, 1000);
        assert_eq!(seqs, (500..510).collect::<Vec<_>>());
        assert_eq!(stats.overruns, 0);
    });
}

/// A sender floods a small receive buffer while the socket is drained,
/// so drops happen at any point, including while a recvmmsg call is
/// between two datagrams (the kernel then returns what it read and
/// reports ENOBUFS on the next call). Whatever the interleaving:
/// datagrams arrive in order, and the first one after a gap arrives
/// after an overrun was counted.
#[test]
fn drain_under_a_flood_keeps_order_and_counts_loss_before_the_gap() {
    if !require_root("drain_under_a_flood_keeps_order_and_counts_loss_before_the_gap") {
        return;
    }
    in_new_netns(|| {
        const SENT: u32 = 20_000;
        let sender = GroupSender::open();
        let mut socket = member(
            &sender,
            ReceiveSlots {
                count: 16,
                len: 1024,
            },
            4 * 1024,
        );
        let flood = std::thread::spawn(move || {
            for seq in 0..SENT {
                sender.send(&numbered(seq, 200));
            }
        });
        let mut seqs: Vec<u32> = Vec::new();
        let mut overruns = 0;
        let mut overruns_at_first_gap = None;
        let mut drained = false;
        // Bounded: the sender stops; then a few drains empty the queue.
        for _ in 0..10_000_000 {
            let sender_done = flood.is_finished();
            let stats = socket.drain_messages("test", 64, |m, stats| {
                let expected = seqs.last().map_or(0, |last| last + 1);
                if m.seq != expected && overruns_at_first_gap.is_none() {
                    overruns_at_first_gap = Some(overruns + stats.overruns);
                }
                seqs.push(m.seq);
            });
            overruns += stats.overruns;
            assert_eq!(stats.parse_errors + stats.read_errors, 0);
            if sender_done && stats.messages == 0 && stats.overruns == 0 {
                drained = true;
                break;
            }
        }
        flood.join().unwrap();
        assert!(drained, "drain loop hit its bound");
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "datagrams out of order or repeated"
        );
        if let Some(counted) = overruns_at_first_gap {
            assert!(counted >= 1, "a gap in the sequence before any overrun");
        }
        let lost = SENT as usize - seqs.len();
        assert_eq!(lost > 0, overruns > 0, "{lost} lost, {overruns} overruns");
    });
}
