//! NFLOG: the packets that firewall drop rules log (`log group N` in
//! nftables, `-j NFLOG --nflog-group N` in iptables) before dropping them.
//!
//! The group configuration messages are built with netlink-packet-netfilter.
//! Packet messages are parsed here, in place: the crate's parser copies
//! every payload into a `Vec` and every prefix into a `CString`, which at
//! hundreds of thousands of logged packets a second is most of the cost.
//! We need five attributes and borrow them from the receive buffer.

use std::collections::HashMap;
use std::io;
use std::os::unix::io::{AsRawFd, RawFd};
use std::time::Duration;

use netlink_packet_core::{NLMSG_ERROR, NLM_F_ACK, NLM_F_REQUEST};
use netlink_packet_netfilter::nflog::ConfigNla;
use netlink_packet_netfilter::nflog::{config_request, ConfigCmd, ConfigFlags, ConfigMode};
use netlink_packet_netfilter::NetfilterProtoFamily;
use netlink_sys::protocols::NETLINK_NETFILTER;

use netlink_packet_core::{NlaBuffer, NlasIterator};

use super::ct_parse;
use super::socket::{Messages, NetlinkSocket, Received, SocketOptions};
use super::stats::DrainStats;
use crate::model::{IfIndex, LoggedConntrack, LoggedPacket, PacketHook};

// include/uapi/linux/netfilter/nfnetlink.h, nfnetlink_log.h
const NFNL_SUBSYS_ULOG: u16 = 4;
const NFULNL_MSG_PACKET: u16 = 0;
// struct nfulnl_msg_packet_hdr { __be16 hw_protocol; __u8 hook; __u8 _pad; }
const NFULA_PACKET_HDR: u16 = 1;
// include/uapi/linux/netfilter.h, enum nf_inet_hooks
const NF_INET_PRE_ROUTING: u8 = 0;
const NF_INET_LOCAL_IN: u8 = 1;
const NF_INET_FORWARD: u8 = 2;
const NF_INET_LOCAL_OUT: u8 = 3;
const NF_INET_POST_ROUTING: u8 = 4;
const NFGENMSG_LEN: usize = 4;
const NFULA_TIMESTAMP: u16 = 3;
const NFULA_IFINDEX_INDEV: u16 = 4;
const NFULA_IFINDEX_OUTDEV: u16 = 5;
const NFULA_PAYLOAD: u16 = 9;
const NFULA_PREFIX: u16 = 10;
const NFULA_SEQ: u16 = 12;
const NFULA_CT: u16 = 18;
const NFULA_CT_INFO: u16 = 19;
// include/uapi/linux/netfilter/nfnetlink_conntrack.h, inside NFULA_CT
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
// include/uapi/linux/netfilter/nf_conntrack_common.h, enum ip_conntrack_info:
// IP_CT_IS_REPLY (3) is added to ESTABLISHED (0) and RELATED (1) for a
// packet in the reply direction; IP_CT_NUMBER (5) and above (UNTRACKED, 7)
// are not directions.
const IP_CT_IS_REPLY: u32 = 3;
const IP_CT_NUMBER: u32 = 5;
const NLA_TYPE_MASK: u16 = 0x3fff;
const NLA_HDRLEN: usize = 4;

/// Reads per drain before yielding to the other sources of the loop; the
/// caller drains again at once when `more_pending` is set.
const DRAIN_BUDGET: usize = 4096;

/// How the NFLOG socket is set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NflogConfig {
    pub groups: Vec<u16>,
    /// The group of the daemon's tcp-flags rules, bound with the packet's
    /// conntrack entry attached (NFULNL_CFG_F_CONNTRACK: each message
    /// carries the tuples, which costs the kernel a few hundred bytes per
    /// message, so the drop groups go without).
    pub tcp_flags_group: Option<u16>,
    /// Bytes of each packet copied: enough for IPv6 with extension headers
    /// and the transport ports; the record's size comes from the IP header.
    pub copy_range: u32,
    /// Kernel receive buffer of the socket.
    pub receive_buffer_bytes: usize,
}

/// A parse failure of one NFLOG message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NflogParseError {
    /// Shorter than the nfgenmsg header or an attribute header.
    Truncated,
    /// No NFULA_PAYLOAD attribute.
    NoPayload,
    /// NFULA_CT without both tuples, or a malformed one; or NFULA_CT_INFO
    /// that is not a direction.
    Conntrack,
}

/// What the kernel's NFLOG sequence numbers say about loss.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NflogLoss {
    /// Packets the kernel logged that never reached us (gaps in NFULA_SEQ).
    pub sequence_gaps: u64,
}

/// The NFLOG socket, bound to the configured groups.
pub struct NflogSocket {
    socket: NetlinkSocket,
    /// Per group, the next NFULA_SEQ expected.
    next_seq: HashMap<u16, u32>,
    loss: NflogLoss,
    /// The tcp-flags group's messages carry the packet's conntrack entry.
    tcp_flags_conntrack: bool,
}

impl NflogSocket {
    /// Opens the socket and binds every group in packet-copy mode with
    /// per-instance sequence numbers (so gaps show loss); the tcp-flags
    /// group also with the packet's conntrack entry attached, if the kernel
    /// can ([`NflogSocket::tcp_flags_conntrack`]).
    ///
    /// # Errors
    /// The socket error, or the kernel's answer to a bind (EBUSY: another
    /// process, e.g. ulogd, holds the group; EPERM: no CAP_NET_ADMIN).
    pub fn open(config: &NflogConfig) -> io::Result<NflogSocket> {
        let socket = NetlinkSocket::open(
            NETLINK_NETFILTER,
            &SocketOptions {
                receive_buffer_bytes: Some(config.receive_buffer_bytes),
                blocking: true,
                receive_timeout: Some(Duration::from_secs(2)),
                ..SocketOptions::default()
            },
        )?;
        let mut this = NflogSocket {
            socket,
            next_seq: HashMap::new(),
            loss: NflogLoss::default(),
            tcp_flags_conntrack: false,
        };
        let mut seq = 0;
        for &group in &config.groups {
            seq += 1;
            this.bind(group, ConfigFlags::SEQ, config.copy_range, seq)
                .map_err(in_binding(group))?;
        }
        if let Some(group) = config.tcp_flags_group {
            seq += 1;
            let with_ct = ConfigFlags::SEQ | ConfigFlags::CONNTRACK;
            match this.bind(group, with_ct, config.copy_range, seq) {
                Ok(()) => this.tcp_flags_conntrack = true,
                // A kernel without CONFIG_NETFILTER_NETLINK_GLUE_CT refuses
                // the flag (before binding anything): the group goes
                // without, and the packets' headers must do.
                Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                    seq += 1;
                    this.bind(group, ConfigFlags::SEQ, config.copy_range, seq)
                        .map_err(in_binding(group))?;
                }
                Err(e) => return Err(in_binding(group)(e)),
            }
        }
        this.socket.set_non_blocking(true)?;
        Ok(this)
    }

    /// Binds `group` in packet-copy mode with `flags`; request number `seq`.
    /// The kernel's error is returned as it is (its errno kept); callers
    /// say which group with [`in_binding`].
    fn bind(
        &mut self,
        group: u16,
        flags: ConfigFlags,
        copy_range: u32,
        seq: u32,
    ) -> io::Result<()> {
        let mut request = config_request(
            NetfilterProtoFamily::Unspec,
            group,
            vec![
                ConfigCmd::Bind.into(),
                ConfigMode::new_packet(copy_range).into(),
                flags.into(),
                // Batch up to 64 KiB per datagram, flushed every 10 ms,
                // so the loop reads many packets per system call.
                ConfigNla::NlBufSiz(64 * 1024),
                ConfigNla::QThresh(256),
                netlink_packet_netfilter::nflog::Timeout::new(1).into(),
            ],
        );
        request.header.flags = NLM_F_REQUEST | NLM_F_ACK;
        request.header.sequence_number = seq;
        request.finalize();
        let mut buf = vec![0; request.buffer_len()];
        request.serialize(&mut buf);
        self.socket.send(&buf)?;
        self.wait_ack(seq)
    }

    /// Whether the tcp-flags group was bound with the packets' conntrack
    /// entries attached (false: the kernel cannot, or no such group).
    pub fn tcp_flags_conntrack(&self) -> bool {
        self.tcp_flags_conntrack
    }

    fn wait_ack(&mut self, seq: u32) -> io::Result<()> {
        // Bounded: the kernel answers a config request at once.
        for _ in 0..16 {
            match self.socket.recv()? {
                Received::Datagram(d) => {
                    for m in Messages::new(d).flatten() {
                        if m.message_type == NLMSG_ERROR && m.seq == seq {
                            let code = m
                                .payload
                                .get(..4)
                                .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                                .unwrap_or(-libc::EIO);
                            return if code == 0 {
                                Ok(())
                            } else {
                                Err(io::Error::from_raw_os_error(-code))
                            };
                        }
                    }
                }
                Received::WouldBlock => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no answer from the kernel",
                    ))
                }
                // A forgery (counted by the socket) answers nothing.
                Received::Overrun | Received::Foreign { .. } => {}
            }
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "no answer from the kernel",
        ))
    }

    /// Reads until nothing is queued (or the budget is spent) and hands
    /// every logged packet to `on_packet`.
    pub fn drain(&mut self, mut on_packet: impl FnMut(LoggedPacket<'_>)) -> DrainStats {
        let (next_seq, loss) = (&mut self.next_seq, &mut self.loss);
        self.socket
            .drain_messages("nflog", DRAIN_BUDGET, |message, stats| {
                if message.message_type != (NFNL_SUBSYS_ULOG << 8 | NFULNL_MSG_PACKET) {
                    return;
                }
                match parse_packet(message.payload) {
                    Ok((packet, seq)) => {
                        if let Some(seq) = seq {
                            if let Some(expected) =
                                next_seq.insert(packet.group, seq.wrapping_add(1))
                            {
                                // Gaps only count forwards; a lower number
                                // means the group was re-bound.
                                let gap = seq.wrapping_sub(expected);
                                if gap != 0 && gap < u32::MAX / 2 {
                                    loss.sequence_gaps += u64::from(gap);
                                }
                            }
                        }
                        stats.entries += 1;
                        on_packet(packet);
                    }
                    Err(_) => stats.parse_errors += 1,
                }
            })
    }

    /// Loss seen in sequence numbers since the last call; resets.
    pub fn take_loss(&mut self) -> NflogLoss {
        std::mem::take(&mut self.loss)
    }

    pub fn receive_buffer_granted(&self) -> usize {
        self.socket.receive_buffer_granted()
    }

    /// After an overrun: a bigger receive buffer, up to `max_bytes`
    /// (logged; see `NetlinkSocket::grow_receive_buffer`).
    pub fn grow_receive_buffer(&mut self, max_bytes: u64) {
        self.socket.grow_receive_buffer(max_bytes, "nflog");
    }
}

impl AsRawFd for NflogSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

/// The netfilter hook number as a [`PacketHook`].
fn hook(number: u8) -> Option<PacketHook> {
    Some(match number {
        NF_INET_PRE_ROUTING => PacketHook::PreRouting,
        NF_INET_LOCAL_IN => PacketHook::LocalIn,
        NF_INET_FORWARD => PacketHook::Forward,
        NF_INET_LOCAL_OUT => PacketHook::LocalOut,
        NF_INET_POST_ROUTING => PacketHook::PostRouting,
        _ => return None,
    })
}

/// The error of binding `group`, saying so.
fn in_binding(group: u16) -> impl Fn(io::Error) -> io::Error {
    move |e| io::Error::new(e.kind(), format!("binding NFLOG group {group}: {e}"))
}

fn be32(b: &[u8]) -> Option<u32> {
    b.get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Parses one NFULNL_MSG_PACKET payload (after the netlink header): the
/// struct nfulnl_msg_packet_timestamp: seconds and microseconds, each a
/// big-endian 64-bit number; the seconds.
fn timestamp_secs(b: &[u8]) -> Option<i64> {
    let sec = u64::from_be_bytes(b.get(..8)?.try_into().ok()?);
    i64::try_from(sec).ok()
}

/// nfgenmsg, then the attributes. Returns the packet and its NFULA_SEQ.
///
/// # Errors
/// [`NflogParseError`] for a truncated message or one without payload.
pub fn parse_packet(payload: &[u8]) -> Result<(LoggedPacket<'_>, Option<u32>), NflogParseError> {
    let header = payload
        .get(..NFGENMSG_LEN)
        .ok_or(NflogParseError::Truncated)?;
    // nfgenmsg.res_id is the group, big-endian.
    let group = u16::from_be_bytes([header[2], header[3]]);
    let mut packet = LoggedPacket {
        group,
        prefix: &[],
        timestamp: None,
        indev: None,
        outdev: None,
        hook: None,
        payload: &[],
        conntrack: None,
    };
    let mut seq = None;
    let mut ct_info = None;
    let mut has_payload = false;
    let mut rest = &payload[NFGENMSG_LEN..];
    while !rest.is_empty() {
        let h = rest.get(..NLA_HDRLEN).ok_or(NflogParseError::Truncated)?;
        let len = usize::from(u16::from_ne_bytes([h[0], h[1]]));
        let kind = u16::from_ne_bytes([h[2], h[3]]) & NLA_TYPE_MASK;
        if len < NLA_HDRLEN {
            return Err(NflogParseError::Truncated);
        }
        let value = rest
            .get(NLA_HDRLEN..len)
            .ok_or(NflogParseError::Truncated)?;
        match kind {
            NFULA_PACKET_HDR => packet.hook = value.get(2).and_then(|&h| hook(h)),
            NFULA_TIMESTAMP => packet.timestamp = timestamp_secs(value),
            NFULA_IFINDEX_INDEV => packet.indev = be32(value).map(IfIndex),
            NFULA_IFINDEX_OUTDEV => packet.outdev = be32(value).map(IfIndex),
            NFULA_PAYLOAD => {
                packet.payload = value;
                has_payload = true;
            }
            NFULA_PREFIX => {
                packet.prefix = value.split(|b| *b == 0).next().unwrap_or(&[]);
            }
            NFULA_SEQ => seq = be32(value),
            NFULA_CT => packet.conntrack = Some(conntrack_tuples(value)?),
            NFULA_CT_INFO => ct_info = Some(be32(value).ok_or(NflogParseError::Conntrack)?),
            _ => {}
        }
        let advance = (len + 3) & !3;
        rest = rest.get(advance..).unwrap_or(&[]);
    }
    if !has_payload {
        return Err(NflogParseError::NoPayload);
    }
    if let Some(ct) = &mut packet.conntrack {
        // The kernel puts NFULA_CT_INFO right after NFULA_CT, always.
        match ct_info {
            Some(info) if info < IP_CT_NUMBER => ct.is_reply = info >= IP_CT_IS_REPLY,
            _ => return Err(NflogParseError::Conntrack),
        }
    }
    Ok((packet, seq))
}

/// NFULA_CT: the ctnetlink attributes of the packet's connection, of which
/// the two tuples are read (`is_reply` is set from NFULA_CT_INFO after).
fn conntrack_tuples(nested: &[u8]) -> Result<LoggedConntrack, NflogParseError> {
    let (mut orig, mut reply) = (None, None);
    for nla in NlasIterator::new(nested) {
        let nla: NlaBuffer<&[u8]> = nla.map_err(|_| NflogParseError::Conntrack)?;
        let slot = match nla.kind() {
            CTA_TUPLE_ORIG => &mut orig,
            CTA_TUPLE_REPLY => &mut reply,
            _ => continue,
        };
        let tuple = ct_parse::tuple(nla.value(), "invalid NFULA_CT tuple")
            .map_err(|_| NflogParseError::Conntrack)?;
        *slot = Some(tuple);
    }
    match (orig, reply) {
        (Some(orig), Some(reply)) => Ok(LoggedConntrack {
            orig,
            reply,
            is_reply: false,
        }),
        _ => Err(NflogParseError::Conntrack),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ipproto::TCP;

    // Nested attributes as the kernel writes them: nla_nest_start sets
    // NLA_F_NESTED (1 << 15) in the type.
    const NESTED: u16 = 1 << 15;

    /// One attribute: header, value, padding to 4 bytes.
    fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
        let len = (NLA_HDRLEN + value.len()) as u16;
        let mut out = len.to_ne_bytes().to_vec();
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(value);
        out.resize((out.len() + 3) & !3, 0);
        out
    }

    /// CTA_TUPLE_* of a TCP IPv4 tuple (ctnetlink_dump_tuples).
    fn tuple(kind: u16, src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
        let ip = [nla(1, &src), nla(2, &dst)].concat(); // CTA_IP_V4_SRC/DST
        let proto = [
            nla(1, &[TCP]),               // CTA_PROTO_NUM
            nla(2, &sport.to_be_bytes()), // CTA_PROTO_SRC_PORT
            nla(3, &dport.to_be_bytes()), // CTA_PROTO_DST_PORT
        ]
        .concat();
        nla(
            kind | NESTED,
            &[nla(1 | NESTED, &ip), nla(2 | NESTED, &proto)].concat(),
        )
    }

    /// An NFLOG packet message of group 65000 arriving on ifindex 2, with
    /// NFULA_CT (the two tuples of a DNAT'd connection and CTA_STATUS, as
    /// ctnetlink_glue_build writes them) and NFULA_CT_INFO `ctinfo`. Built
    /// by hand: the kernel this was written on is built without
    /// CONFIG_NETFILTER_NETLINK_GLUE_CT, so it sends no NFULA_CT to capture.
    fn message_with_conntrack(ctinfo: Option<u32>) -> Vec<u8> {
        let mut m = vec![2, 0, 0xfd, 0xe8]; // AF_INET, version 0, group 65000
        m.extend(nla(NFULA_PACKET_HDR, &[0x08, 0x00, NF_INET_FORWARD, 0]));
        m.extend(nla(NFULA_IFINDEX_INDEV, &2u32.to_be_bytes()));
        m.extend(nla(NFULA_PAYLOAD, &[0x45; 40]));
        let ct = [
            tuple(
                CTA_TUPLE_ORIG,
                [198, 51, 100, 7],
                40000,
                [192, 0, 2, 1],
                8080,
            ),
            tuple(CTA_TUPLE_REPLY, [10, 9, 0, 2], 80, [198, 51, 100, 7], 40000),
            nla(3, &0x1a8u32.to_be_bytes()), // CTA_STATUS
        ]
        .concat();
        m.extend(nla(NFULA_CT | NESTED, &ct));
        if let Some(info) = ctinfo {
            m.extend(nla(NFULA_CT_INFO, &info.to_be_bytes()));
        }
        m
    }

    #[test]
    fn attached_conntrack_gives_both_tuples_and_the_direction() {
        let m = message_with_conntrack(Some(2)); // IP_CT_NEW
        let (p, _) = parse_packet(&m).unwrap();
        assert_eq!(
            (p.group, p.indev, p.hook),
            (65000, Some(IfIndex(2)), Some(PacketHook::Forward))
        );
        let ct = p.conntrack.expect("NFULA_CT");
        assert_eq!(
            (
                ct.orig.src.to_string(),
                ct.orig.dst_port,
                ct.reply.src.to_string(),
                ct.reply.src_port
            ),
            ("198.51.100.7".into(), 8080, "10.9.0.2".into(), 80)
        );
        assert_eq!((ct.orig.protocol, ct.is_reply), (TCP, false));
        // IP_CT_ESTABLISHED_REPLY (3) and IP_CT_RELATED_REPLY (4) are replies.
        for (info, is_reply) in [(0, false), (1, false), (3, true), (4, true)] {
            let m = message_with_conntrack(Some(info));
            let (p, _) = parse_packet(&m).unwrap();
            assert_eq!(p.conntrack.unwrap().is_reply, is_reply, "ctinfo {info}");
        }
    }

    #[test]
    fn conntrack_without_its_info_or_a_tuple_is_refused() {
        assert_eq!(
            parse_packet(&message_with_conntrack(None)).err(),
            Some(NflogParseError::Conntrack)
        );
        // IP_CT_UNTRACKED (7) is no direction.
        assert_eq!(
            parse_packet(&message_with_conntrack(Some(7))).err(),
            Some(NflogParseError::Conntrack)
        );
        // Only the original tuple.
        let mut m = vec![2, 0, 0xfd, 0xe8];
        m.extend(nla(NFULA_PAYLOAD, &[0x45; 40]));
        let orig = tuple(
            CTA_TUPLE_ORIG,
            [198, 51, 100, 7],
            40000,
            [192, 0, 2, 1],
            8080,
        );
        m.extend(nla(NFULA_CT | NESTED, &orig));
        m.extend(nla(NFULA_CT_INFO, &0u32.to_be_bytes()));
        assert_eq!(parse_packet(&m).err(), Some(NflogParseError::Conntrack));
        // Without NFULA_CT (the drop groups, a kernel without the glue).
        let mut m = vec![2, 0, 0, 100];
        m.extend(nla(NFULA_PAYLOAD, &[0x45; 40]));
        assert_eq!(parse_packet(&m).unwrap().0.conntrack, None);
    }
}
