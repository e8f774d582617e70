//! The `tcp-flags` field: TCP control packets that the daemon's own rules
//! (table `inet flowlogd`, see `tracking`) copy to its NFLOG group, turned
//! into flags of the ACCEPT records their connection makes.
//!
//! Conntrack keeps no header flags, so this is their only exact source.
//! The rules see a packet once its fate is decided: arriving, in the input
//! and forward hooks after the filter (its addresses are after NAT then);
//! leaving, in postrouting after SNAT (its addresses are the wire's). The
//! flags go to the record of the ENI and tuple that the connection's
//! counters go to (`flows::table`'s attribution).
//!
//! Where the kernel attaches the packet's conntrack entry to the message
//! (CONFIG_NETFILTER_NETLINK_GLUE_CT), the tuples give the record whatever
//! NAT did:
//!
//! | packet                  | ENI (owns)  | tuple                    |
//! |-------------------------|-------------|--------------------------|
//! | arriving, original dir. | `orig.dst`  | `orig` (before DNAT)     |
//! | leaving, reply dir.     | `orig.dst`  | `orig` reversed          |
//! | leaving, original dir.  | `reply.dst` | `reply` reversed         |
//! | arriving, reply dir.    | `reply.dst` | `reply` (before un-SNAT) |
//!
//! (the original tuple is what arrived, the reply tuple what the answer
//! arrives as, and each reversed is what leaves after NAT).
//!
//! Where it cannot, the packet's headers are the record's tuple: always
//! right for a leaving packet (after all NAT), and for an arriving one of
//! a connection without NAT; the ENI is the one owning the local end (the
//! destination arriving, the source leaving), as for the counters. An
//! arriving packet of a NAT'd connection (the rules prefix it
//! [`NAT_PREFIX`]) shows addresses the wire never carried: its flags
//! cannot be placed, and the window of the ENI it arrived on is marked
//! SKIPDATA rather than show a record without them.

use flowlogd_plugin_api::Direction;

use crate::eni::{EniIndex, EniRegistry};
use crate::flows::{Clock, FlowTable, FlowTuple, LossScope};
use crate::model::{LoggedPacket, PacketHook, Tuple};
use crate::packet;

/// The log prefix of the rule that copies arriving packets of NAT'd
/// connections (`tracking` writes it into the rule).
pub const NAT_PREFIX: &str = "flowlogd:nat";

/// What became of the packets read from the tcp-flags group.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpFlagsStats {
    /// Packets read from the group.
    pub packets: u64,
    /// The connection's local end is no ENI's (traffic of other
    /// interfaces, e.g. containers behind the VM).
    pub not_on_an_eni: u64,
    /// Arriving on a NAT'd connection without the conntrack entry attached:
    /// the wire's tuple is unknown; the ENI's window is marked SKIPDATA.
    pub nat_unplaced: u64,
    /// The copied headers could not be read, or hold no SYN, FIN or RST;
    /// every ENI's window is marked SKIPDATA.
    pub bad_headers: u64,
}

/// Flags seen on one packet, and the record they belong to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpFlagsSighting {
    pub eni: EniIndex,
    pub direction: Direction,
    pub tuple: FlowTuple,
    /// In the field's encoding ([`packet::aws_tcp_flags`]), never 0.
    pub flags: u8,
}

/// What one packet of the group comes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpFlagsOutcome {
    /// Flags for this record.
    Flags(TcpFlagsSighting),
    /// Not an ENI's: nothing to do (counted).
    Ignored,
    /// Flags some record should have had are lost: mark these windows.
    Lost(LossScope),
}

/// Turns the tcp-flags group's packets into flags of records.
#[derive(Debug)]
pub struct TcpFlagsCapture {
    /// The NFLOG group the rules log to; packets of other groups are drops.
    group: u16,
    stats: TcpFlagsStats,
}

impl TcpFlagsCapture {
    pub fn new(group: u16) -> TcpFlagsCapture {
        TcpFlagsCapture {
            group,
            stats: TcpFlagsStats::default(),
        }
    }

    /// Whether `group` is the tcp-flags group.
    pub fn reads(&self, group: u16) -> bool {
        group == self.group
    }

    pub fn stats(&self) -> TcpFlagsStats {
        self.stats
    }

    /// One packet of the group: its flags are ORed into the open window's
    /// record of its connection on its ENI, or the window is marked.
    pub fn on_packet<C: Clock>(
        &mut self,
        registry: &EniRegistry,
        table: &mut FlowTable<C>,
        p: &LoggedPacket<'_>,
    ) {
        match self.outcome(registry, p) {
            TcpFlagsOutcome::Flags(s) => table.add_tcp_flags(s.eni, s.direction, s.tuple, s.flags),
            TcpFlagsOutcome::Ignored => {}
            TcpFlagsOutcome::Lost(scope) => table.mark_lost(scope),
        }
    }

    /// What `p` comes to (counted by reason).
    pub fn outcome(&mut self, registry: &EniRegistry, p: &LoggedPacket<'_>) -> TcpFlagsOutcome {
        self.stats.packets += 1;
        let headers = match packet::parse(p.payload) {
            Ok(h) => h,
            Err(_) => return self.bad_headers(),
        };
        let flags = match headers.tcp_flags.map(packet::aws_tcp_flags) {
            Some(flags) if flags != 0 => flags,
            _ => return self.bad_headers(),
        };
        // Arriving: the rules in input and forward; leaving: the one in
        // postrouting (where a forwarded packet has an input device too).
        let arriving = match p.hook {
            Some(PacketHook::LocalIn | PacketHook::Forward) => true,
            Some(PacketHook::PostRouting) => false,
            // Not one of the rules' hooks: another rule logging here.
            _ => return self.not_on_an_eni(),
        };
        let (owner, tuple, direction) = match p.conntrack {
            Some(ct) => match (arriving, ct.is_reply) {
                (true, false) => (ct.orig.dst, wire(&ct.orig, false), Direction::In),
                (false, true) => (ct.orig.dst, wire(&ct.orig, true), Direction::Out),
                (false, false) => (ct.reply.dst, wire(&ct.reply, true), Direction::Out),
                (true, true) => (ct.reply.dst, wire(&ct.reply, false), Direction::In),
            },
            None if arriving && p.prefix == NAT_PREFIX.as_bytes() => {
                // Which record is unknown, but whose wire it was on is not.
                return match p.indev.and_then(|i| registry.by_ifindex(i)) {
                    Some(eni) => {
                        self.stats.nat_unplaced += 1;
                        TcpFlagsOutcome::Lost(LossScope::Eni(eni))
                    }
                    None => self.not_on_an_eni(),
                };
            }
            None => {
                let tuple = headers.tuple();
                if arriving {
                    (headers.dst, tuple, Direction::In)
                } else {
                    (headers.src, tuple, Direction::Out)
                }
            }
        };
        match registry.owner_of(owner) {
            Some(eni) => TcpFlagsOutcome::Flags(TcpFlagsSighting {
                eni,
                direction,
                tuple,
                flags,
            }),
            None => self.not_on_an_eni(),
        }
    }

    fn bad_headers(&mut self) -> TcpFlagsOutcome {
        self.stats.bad_headers += 1;
        log::debug!("nflog: unreadable tcp-flags packet in group {}", self.group);
        TcpFlagsOutcome::Lost(LossScope::All)
    }

    fn not_on_an_eni(&mut self) -> TcpFlagsOutcome {
        self.stats.not_on_an_eni += 1;
        TcpFlagsOutcome::Ignored
    }
}

/// A conntrack tuple as the record's 5-tuple, `reversed` for the packets
/// going the other way.
fn wire(t: &Tuple, reversed: bool) -> FlowTuple {
    let (src, src_port, dst, dst_port) = if reversed {
        (t.dst, t.dst_port, t.src, t.src_port)
    } else {
        (t.src, t.src_port, t.dst, t.dst_port)
    };
    FlowTuple {
        src,
        src_port,
        dst,
        dst_port,
        protocol: t.protocol,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EniMatch;
    use crate::model::{ipproto::TCP, IfIndex, LoggedConntrack};
    use crate::test_builders::{addr, eni, link};

    /// eni-a on eth0 (ifindex 2) with 192.0.2.1, the VM's only ENI.
    fn registry() -> EniRegistry {
        let mut r =
            EniRegistry::from_parts(&[eni("eni-a", "vsw-1", EniMatch::Interface("eth0".into()))])
                .unwrap();
        r.apply(&link(2, "eth0", None), 0);
        r.apply(&addr(2, "192.0.2.1"), 0);
        r
    }

    fn tuple(src: &str, src_port: u16, dst: &str, dst_port: u16) -> Tuple {
        Tuple {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            src_port,
            dst_port,
            protocol: TCP,
        }
    }

    fn flow(src: &str, src_port: u16, dst: &str, dst_port: u16) -> FlowTuple {
        wire(&tuple(src, src_port, dst, dst_port), false)
    }

    /// An IPv4 TCP header pair with `flags`, from `src:sp` to `dst:dp` (the
    /// packet's own addresses, after whatever NAT the hook has done).
    fn segment(src: [u8; 4], sp: u16, dst: [u8; 4], dp: u16, flags: u8) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, TCP, 0, 0];
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(&sp.to_be_bytes());
        p.extend_from_slice(&dp.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
        p
    }

    #[track_caller]
    fn flags_of(o: TcpFlagsOutcome) -> TcpFlagsSighting {
        match o {
            TcpFlagsOutcome::Flags(s) => s,
            other => panic!("no flags: {other:?}"),
        }
    }

    fn logged<'a>(
        payload: &'a [u8],
        arriving: bool,
        ct: Option<LoggedConntrack>,
    ) -> LoggedPacket<'a> {
        let dev = Some(IfIndex(2));
        LoggedPacket {
            group: 65000,
            prefix: &[],
            timestamp: None,
            indev: if arriving { dev } else { None },
            outdev: if arriving { None } else { dev },
            hook: Some(if arriving {
                PacketHook::LocalIn
            } else {
                PacketHook::PostRouting
            }),
            payload,
            conntrack: ct,
        }
    }

    /// A port forward: 198.51.100.7:40000 -> 192.0.2.1:8080, DNAT to the
    /// container 10.9.0.2:80 behind the VM. Every packet of it that is
    /// seen gives the ENI's wire tuple, never the container's address.
    #[test]
    fn dnat_flags_go_to_the_wire_tuples() {
        let r = registry();
        let eni_a = r.owner_of("192.0.2.1".parse().unwrap()).unwrap();
        let ct = LoggedConntrack {
            orig: tuple("198.51.100.7", 40000, "192.0.2.1", 8080),
            reply: tuple("10.9.0.2", 80, "198.51.100.7", 40000),
            is_reply: false,
        };
        let mut c = TcpFlagsCapture::new(65000);
        // The SYN in forward (after DNAT: to 10.9.0.2:80).
        let syn = segment([198, 51, 100, 7], 40000, [10, 9, 0, 2], 80, 0x02);
        let s = c.outcome(&r, &logged(&syn, true, Some(ct)));
        assert_eq!(
            s,
            TcpFlagsOutcome::Flags(TcpFlagsSighting {
                eni: eni_a,
                direction: Direction::In,
                tuple: flow("198.51.100.7", 40000, "192.0.2.1", 8080),
                flags: 2,
            })
        );
        // The SYN-ACK leaving in postrouting (after un-DNAT).
        let syn_ack = segment([192, 0, 2, 1], 8080, [198, 51, 100, 7], 40000, 0x12);
        let reply = LoggedConntrack {
            is_reply: true,
            ..ct
        };
        let s = c.outcome(&r, &logged(&syn_ack, false, Some(reply)));
        assert_eq!(
            s,
            TcpFlagsOutcome::Flags(TcpFlagsSighting {
                eni: eni_a,
                direction: Direction::Out,
                tuple: flow("192.0.2.1", 8080, "198.51.100.7", 40000),
                flags: 18,
            })
        );
        assert_eq!(c.stats().packets, 2);
    }

    /// Masquerade: the container 10.9.0.2:5555 connects out to
    /// 203.0.113.9:443, leaving as 192.0.2.1:61000.
    #[test]
    fn snat_flags_go_to_the_wire_tuples() {
        let r = registry();
        let eni_a = r.owner_of("192.0.2.1".parse().unwrap()).unwrap();
        let ct = LoggedConntrack {
            orig: tuple("10.9.0.2", 5555, "203.0.113.9", 443),
            reply: tuple("203.0.113.9", 443, "192.0.2.1", 61000),
            is_reply: false,
        };
        let mut c = TcpFlagsCapture::new(65000);
        let fin = segment([192, 0, 2, 1], 61000, [203, 0, 113, 9], 443, 0x11);
        let s = flags_of(c.outcome(&r, &logged(&fin, false, Some(ct))));
        assert_eq!(
            (s.eni, s.direction, s.tuple, s.flags),
            (
                eni_a,
                Direction::Out,
                flow("192.0.2.1", 61000, "203.0.113.9", 443),
                1
            )
        );
        // The RST back, seen in forward after un-SNAT (to 10.9.0.2).
        let rst = segment([203, 0, 113, 9], 443, [10, 9, 0, 2], 5555, 0x14);
        let reply = LoggedConntrack {
            is_reply: true,
            ..ct
        };
        let s = flags_of(c.outcome(&r, &logged(&rst, true, Some(reply))));
        assert_eq!(
            (s.eni, s.direction, s.tuple, s.flags),
            (
                eni_a,
                Direction::In,
                flow("203.0.113.9", 443, "192.0.2.1", 61000),
                4
            )
        );
        // The SYN arriving from the container (forward, original
        // direction): its destination is no ENI's, so not this ENI's wire.
        let syn = segment([10, 9, 0, 2], 5555, [203, 0, 113, 9], 443, 0x02);
        assert_eq!(
            c.outcome(&r, &logged(&syn, true, Some(ct))),
            TcpFlagsOutcome::Ignored
        );
        assert_eq!(c.stats().not_on_an_eni, 1);
    }

    /// Without the conntrack entry attached (a kernel without
    /// CONFIG_NETFILTER_NETLINK_GLUE_CT): the headers are the tuple, the
    /// local end's owner the ENI; a NAT'd connection's arriving packet
    /// marks the ENI it arrived on.
    #[test]
    fn without_conntrack_the_headers_place_the_flags() {
        let r = registry();
        let eni_a = r.owner_of("192.0.2.1".parse().unwrap()).unwrap();
        let mut c = TcpFlagsCapture::new(65000);
        let syn = segment([198, 51, 100, 7], 40000, [192, 0, 2, 1], 22, 0x02);
        let s = flags_of(c.outcome(&r, &logged(&syn, true, None)));
        assert_eq!(
            (s.eni, s.direction, s.tuple, s.flags),
            (
                eni_a,
                Direction::In,
                flow("198.51.100.7", 40000, "192.0.2.1", 22),
                2
            )
        );
        let fin = segment([192, 0, 2, 1], 22, [198, 51, 100, 7], 40000, 0x11);
        let s = flags_of(c.outcome(&r, &logged(&fin, false, None)));
        assert_eq!(
            (s.eni, s.direction, s.tuple, s.flags),
            (
                eni_a,
                Direction::Out,
                flow("192.0.2.1", 22, "198.51.100.7", 40000),
                1
            )
        );
        // DNAT'd to a container: its address is not the wire's.
        let dnat = segment([198, 51, 100, 7], 40001, [10, 9, 0, 2], 80, 0x02);
        let mut p = logged(&dnat, true, None);
        p.prefix = NAT_PREFIX.as_bytes();
        assert_eq!(
            c.outcome(&r, &p),
            TcpFlagsOutcome::Lost(LossScope::Eni(eni_a))
        );
        // Forwarded, in postrouting: the input device is there too, and the
        // packet is leaving all the same.
        let mut p = logged(&fin, false, None);
        p.indev = Some(IfIndex(9));
        assert_eq!(flags_of(c.outcome(&r, &p)).direction, Direction::Out);
        // Leaving, the headers are after NAT: the prefix does not matter.
        let mut p = logged(&fin, false, None);
        p.prefix = NAT_PREFIX.as_bytes();
        assert!(matches!(c.outcome(&r, &p), TcpFlagsOutcome::Flags(_)));
        // Arriving NAT'd on an interface that is no ENI's: not ours.
        let mut p = logged(&dnat, true, None);
        p.prefix = NAT_PREFIX.as_bytes();
        p.indev = Some(IfIndex(9));
        assert_eq!(c.outcome(&r, &p), TcpFlagsOutcome::Ignored);
        assert_eq!(
            (
                c.stats().packets,
                c.stats().nat_unplaced,
                c.stats().not_on_an_eni
            ),
            (6, 1, 1)
        );
    }

    #[test]
    fn what_gives_no_flags_is_counted_by_reason() {
        let r = registry();
        let ct = LoggedConntrack {
            orig: tuple("198.51.100.7", 40000, "192.0.2.1", 22),
            reply: tuple("192.0.2.1", 22, "198.51.100.7", 40000),
            is_reply: false,
        };
        let mut c = TcpFlagsCapture::new(65000);
        let lost = TcpFlagsOutcome::Lost(LossScope::All);
        let ack = segment([198, 51, 100, 7], 40000, [192, 0, 2, 1], 22, 0x10);
        assert_eq!(c.outcome(&r, &logged(&ack, true, Some(ct))), lost);
        let syn = segment([198, 51, 100, 7], 40000, [192, 0, 2, 1], 22, 0x02);
        assert_eq!(c.outcome(&r, &logged(&syn[..30], true, Some(ct))), lost);
        // Not from the rules' hooks.
        let mut p = logged(&syn, true, Some(ct));
        p.hook = Some(PacketHook::PreRouting);
        assert_eq!(c.outcome(&r, &p), TcpFlagsOutcome::Ignored);
        assert_eq!(
            c.stats(),
            TcpFlagsStats {
                packets: 3,
                not_on_an_eni: 1,
                nat_unplaced: 0,
                bad_headers: 2,
            }
        );
    }
}
