//! The `tcp-flags` field: TCP control packets that the daemon's own rules
//! (table `inet flowlogd`, see `tracking`) copy to its NFLOG group, turned
//! into flags of the ACCEPT records their connection makes.
//!
//! Conntrack keeps no header flags, so this is their only exact source.
//! The rules see a packet once its fate is decided: arriving, in the input
//! and forward hooks after the filter (its addresses are after DNAT then);
//! leaving, in postrouting after SNAT. The group attaches the packet's
//! conntrack entry, and the flags go to the record of the ENI and tuple
//! that the connection's counters go to (`flows::table`'s attribution):
//!
//! | packet                  | ENI (owns)  | tuple                  |
//! |-------------------------|-------------|------------------------|
//! | arriving, original dir. | `orig.dst`  | `orig` (before DNAT)   |
//! | leaving, reply dir.     | `orig.dst`  | `orig` reversed        |
//! | leaving, original dir.  | `reply.dst` | `reply` reversed       |
//! | arriving, reply dir.    | `reply.dst` | `reply` (before un-SNAT) |
//!
//! The tuples are the ENI wire's whatever NAT did: the original tuple is
//! what arrived, the reply tuple what the answer arrives as, and each
//! reversed is what leaves after NAT. So the flags land on exactly the
//! record whose packets they were seen on.

use flowlogd_plugin_api::Direction;

use crate::eni::{EniIndex, EniRegistry};
use crate::flows::{Clock, FlowTable, FlowTuple, LossScope};
use crate::model::{LoggedPacket, Tuple};
use crate::packet;

/// What became of the packets read from the tcp-flags group.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpFlagsStats {
    /// Packets read from the group.
    pub packets: u64,
    /// The connection's local addresses are no ENI's.
    pub not_on_an_eni: u64,
    /// No conntrack entry attached (the rules copy only packets of a
    /// connection; this counts what a changed rule would let through).
    pub no_conntrack: u64,
    /// The copied headers could not be read, or hold no SYN, FIN or RST.
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
    /// record of its connection on its ENI. Headers that cannot be read
    /// lost flags of some ENI's record, which one is unknown: every ENI's
    /// window is marked SKIPDATA.
    pub fn on_packet<C: Clock>(
        &mut self,
        registry: &EniRegistry,
        table: &mut FlowTable<C>,
        p: &LoggedPacket<'_>,
    ) {
        match self.sighting(registry, p) {
            Ok(Some(s)) => table.add_tcp_flags(s.eni, s.direction, s.tuple, s.flags),
            Ok(None) => {}
            Err(()) => {
                log::debug!("nflog: unreadable tcp-flags packet in group {}", self.group);
                table.mark_lost(LossScope::All);
            }
        }
    }

    /// The record `p`'s flags go to, or `None` (counted by reason). A
    /// packet whose headers cannot be read returns `Err`: its flags are
    /// lost, and the caller marks the window.
    ///
    /// # Errors
    /// `Err(())` for headers that do not parse or carry no control flag.
    #[allow(clippy::result_unit_err)]
    pub fn sighting(
        &mut self,
        registry: &EniRegistry,
        p: &LoggedPacket<'_>,
    ) -> Result<Option<TcpFlagsSighting>, ()> {
        self.stats.packets += 1;
        let flags = match packet::parse(p.payload).map(|h| h.tcp_flags.map(packet::aws_tcp_flags)) {
            Ok(Some(flags)) if flags != 0 => flags,
            _ => {
                self.stats.bad_headers += 1;
                return Err(());
            }
        };
        let Some(ct) = p.conntrack else {
            self.stats.no_conntrack += 1;
            return Ok(None);
        };
        // Arriving: the rules in input and forward (indev set); leaving:
        // the one in postrouting (outdev only).
        let arriving = match (p.indev, p.outdev) {
            (Some(_), _) => true,
            (None, Some(_)) => false,
            (None, None) => {
                self.stats.not_on_an_eni += 1;
                return Ok(None);
            }
        };
        let (owner, tuple, direction) = match (arriving, ct.is_reply) {
            (true, false) => (ct.orig.dst, wire(&ct.orig, false), Direction::In),
            (false, true) => (ct.orig.dst, wire(&ct.orig, true), Direction::Out),
            (false, false) => (ct.reply.dst, wire(&ct.reply, true), Direction::Out),
            (true, true) => (ct.reply.dst, wire(&ct.reply, false), Direction::In),
        };
        let Some(eni) = registry.owner_of(owner) else {
            self.stats.not_on_an_eni += 1;
            return Ok(None);
        };
        Ok(Some(TcpFlagsSighting {
            eni,
            direction,
            tuple,
            flags,
        }))
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

    fn logged<'a>(
        payload: &'a [u8],
        arriving: bool,
        ct: Option<LoggedConntrack>,
    ) -> LoggedPacket<'a> {
        let dev = Some(IfIndex(2));
        LoggedPacket {
            group: 65000,
            prefix: &[],
            indev: if arriving { dev } else { None },
            outdev: if arriving { None } else { dev },
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
        let s = c.sighting(&r, &logged(&syn, true, Some(ct))).unwrap();
        assert_eq!(
            s,
            Some(TcpFlagsSighting {
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
        let s = c
            .sighting(&r, &logged(&syn_ack, false, Some(reply)))
            .unwrap();
        assert_eq!(
            s,
            Some(TcpFlagsSighting {
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
        let s = c
            .sighting(&r, &logged(&fin, false, Some(ct)))
            .unwrap()
            .unwrap();
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
        let s = c
            .sighting(&r, &logged(&rst, true, Some(reply)))
            .unwrap()
            .unwrap();
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
        assert_eq!(c.sighting(&r, &logged(&syn, true, Some(ct))), Ok(None));
        assert_eq!(c.stats().not_on_an_eni, 1);
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
        let syn = segment([198, 51, 100, 7], 40000, [192, 0, 2, 1], 22, 0x02);
        assert_eq!(c.sighting(&r, &logged(&syn, true, None)), Ok(None));
        let ack = segment([198, 51, 100, 7], 40000, [192, 0, 2, 1], 22, 0x10);
        assert_eq!(c.sighting(&r, &logged(&ack, true, Some(ct))), Err(()));
        assert_eq!(c.sighting(&r, &logged(&syn[..30], true, Some(ct))), Err(()));
        assert_eq!(
            c.stats(),
            TcpFlagsStats {
                packets: 3,
                not_on_an_eni: 0,
                no_conntrack: 1,
                bad_headers: 2,
            }
        );
    }
}
