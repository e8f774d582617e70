//! The headers of a packet that a firewall rule logged through NFLOG: just
//! enough of IPv4 / IPv6 and TCP / UDP to give the record's 5-tuple and its
//! IP-layer size. Every read is bounds-checked: a short or malformed
//! payload is an error to count, never a panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::flows::FlowTuple;
use crate::model::has_ports;

/// What a logged packet's headers say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketHeaders {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// 0 for protocols without ports and for non-first fragments.
    pub src_port: u16,
    pub dst_port: u16,
    pub protocol: u8,
    /// The packet's IP-layer length from its header (total length / payload
    /// length + 40), not the captured length, which the copy range cuts.
    pub ip_len: u64,
    /// The TCP header's flags byte (CWR ECE URG ACK PSH RST SYN FIN), for a
    /// TCP first fragment copied far enough; see [`aws_tcp_flags`].
    pub tcp_flags: Option<u8>,
}

// The TCP header's flags byte (RFC 9293), at offset 13.
const TCP_FLAGS_OFFSET: usize = 13;
const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

/// The flags of one TCP packet as the `tcp-flags` field encodes them (as
/// AWS VPC flow logs do): FIN 1, SYN 2, RST 4, and SYN-ACK 18 (SYN with the
/// ACK bit, 2 + 16) so that the answer to a SYN is told from the SYN. ACK
/// alone and the other bits are not recorded: every packet but the first
/// carries ACK. A window's value is the OR over its packets.
pub fn aws_tcp_flags(raw: u8) -> u8 {
    let syn_ack = if raw & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK {
        TCP_ACK
    } else {
        0
    };
    raw & (TCP_FIN | TCP_SYN | TCP_RST) | syn_ack
}

impl PacketHeaders {
    /// The packet's 5-tuple as a record shows it.
    pub fn tuple(&self) -> FlowTuple {
        FlowTuple {
            src: self.src,
            src_port: self.src_port,
            dst: self.dst,
            dst_port: self.dst_port,
            protocol: self.protocol,
        }
    }

    /// The packet's TCP flags in the field's encoding ([`aws_tcp_flags`]);
    /// 0 when it is no TCP first fragment or the copy stops short of them.
    pub fn aws_tcp_flags(&self) -> u8 {
        self.tcp_flags.map_or(0, aws_tcp_flags)
    }
}

/// The flags byte of the TCP header at `at`, if `b` reaches it.
fn tcp_flags_at(b: &[u8], at: usize, protocol: u8, first_fragment: bool) -> Option<u8> {
    (protocol == crate::model::ipproto::TCP && first_fragment)
        .then(|| b.get(at + TCP_FLAGS_OFFSET).copied())
        .flatten()
}

/// Why a payload could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketError {
    /// Fewer bytes than the headers need.
    Truncated,
    /// Not IPv4 or IPv6.
    UnknownVersion(u8),
    /// A header field that cannot be right (IHL < 5, ...).
    Malformed,
}

impl std::fmt::Display for PacketError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PacketError::Truncated => f.write_str("payload too short for its headers"),
            PacketError::UnknownVersion(v) => write!(f, "IP version {v}"),
            PacketError::Malformed => f.write_str("malformed IP header"),
        }
    }
}

// IPv6 extension headers that may come before the transport header.
const HOPOPTS: u8 = 0;
const ROUTING: u8 = 43;
const FRAGMENT: u8 = 44;
const AH: u8 = 51;
const DSTOPTS: u8 = 60;
/// More extension headers than any real packet has: stop walking.
const MAX_IPV6_EXTENSIONS: usize = 8;

fn be16(b: &[u8], at: usize) -> Result<u16, PacketError> {
    b.get(at..at + 2)
        .map(|s| u16::from_be_bytes([s[0], s[1]]))
        .ok_or(PacketError::Truncated)
}

/// Ports at `at` if the protocol has them; 0/0 otherwise.
fn ports(
    b: &[u8],
    at: usize,
    protocol: u8,
    first_fragment: bool,
) -> Result<(u16, u16), PacketError> {
    if !has_ports(protocol) || !first_fragment {
        return Ok((0, 0));
    }
    Ok((be16(b, at)?, be16(b, at + 2)?))
}

/// Reads the network and transport headers at the start of `payload`.
///
/// # Errors
/// [`PacketError`] for a payload too short or not IP.
pub fn parse(payload: &[u8]) -> Result<PacketHeaders, PacketError> {
    let first = *payload.first().ok_or(PacketError::Truncated)?;
    match first >> 4 {
        4 => parse_ipv4(payload),
        6 => parse_ipv6(payload),
        v => Err(PacketError::UnknownVersion(v)),
    }
}

fn parse_ipv4(b: &[u8]) -> Result<PacketHeaders, PacketError> {
    if b.len() < 20 {
        return Err(PacketError::Truncated);
    }
    let ihl = usize::from(b[0] & 0x0f) * 4;
    if ihl < 20 {
        return Err(PacketError::Malformed);
    }
    let total_len = be16(b, 2)?;
    if usize::from(total_len) < ihl {
        return Err(PacketError::Malformed);
    }
    let fragment_offset = be16(b, 6)? & 0x1fff;
    let protocol = b[9];
    let src = Ipv4Addr::new(b[12], b[13], b[14], b[15]);
    let dst = Ipv4Addr::new(b[16], b[17], b[18], b[19]);
    let (src_port, dst_port) = ports(b, ihl, protocol, fragment_offset == 0)?;
    Ok(PacketHeaders {
        src: IpAddr::V4(src),
        dst: IpAddr::V4(dst),
        src_port,
        dst_port,
        protocol,
        ip_len: u64::from(total_len),
        tcp_flags: tcp_flags_at(b, ihl, protocol, fragment_offset == 0),
    })
}

fn parse_ipv6(b: &[u8]) -> Result<PacketHeaders, PacketError> {
    if b.len() < 40 {
        return Err(PacketError::Truncated);
    }
    let payload_len = be16(b, 4)?;
    let addr = |at: usize| {
        let mut a = [0u8; 16];
        a.copy_from_slice(&b[at..at + 16]);
        Ipv6Addr::from(a)
    };
    let (src, dst) = (addr(8), addr(24));
    let mut next = b[6];
    let mut at = 40;
    let mut first_fragment = true;
    for _ in 0..MAX_IPV6_EXTENSIONS {
        match next {
            HOPOPTS | ROUTING | DSTOPTS => {
                let len = usize::from(*b.get(at + 1).ok_or(PacketError::Truncated)?);
                next = b[at];
                at += (len + 1) * 8;
            }
            AH => {
                let len = usize::from(*b.get(at + 1).ok_or(PacketError::Truncated)?);
                next = b[at];
                at += (len + 2) * 4;
            }
            FRAGMENT => {
                let offset = be16(b, at + 2)? >> 3;
                first_fragment = offset == 0;
                next = b[at];
                at += 8;
            }
            _ => break,
        }
    }
    let (src_port, dst_port) = ports(b, at, next, first_fragment)?;
    Ok(PacketHeaders {
        src: IpAddr::V6(src),
        dst: IpAddr::V6(dst),
        src_port,
        dst_port,
        protocol: next,
        ip_len: 40 + u64::from(payload_len),
        tcp_flags: tcp_flags_at(b, at, next, first_fragment),
    })
}

/// The rule named by a log prefix in flowlogd's convention
/// `flowlogd:<security-group>:<rule>` (e.g. `flowlogd:sg-web:deny-ssh`),
/// as `<security-group>:<rule>`; `None` if the prefix is not flowlogd's.
/// Firewalls often end prefixes with a space for readability in the kernel
/// log; it is trimmed.
pub fn rule_of_prefix(prefix: &str) -> Option<&str> {
    let rest = prefix.trim_end().strip_prefix("flowlogd:")?;
    let (group, rule) = rest.split_once(':')?;
    (!group.is_empty() && !rule.is_empty()).then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ipproto::UDP;

    /// A TCP SYN from 10.0.0.1:40000 to 10.0.0.2:22, 60 bytes
    /// (IPv4 header + TCP header with options), as `nft ... log group`
    /// copies it: the IP header first.
    fn tcp_syn_v4() -> Vec<u8> {
        let mut p = vec![
            0x45, 0x00, 0x00, 0x3c, 0x12, 0x34, 0x40, 0x00, 0x40, 0x06, 0x00, 0x00, 10, 0, 0, 1,
            10, 0, 0, 2,
        ];
        p.extend_from_slice(&[0x9c, 0x40, 0x00, 0x16]);
        p.extend_from_slice(&[0; 36]);
        // Data offset 10 words, flags SYN.
        p[20 + 12] = 0xa0;
        p[20 + 13] = 0x02;
        p
    }

    #[test]
    fn tcp_flags_in_the_aws_encoding() {
        // (raw flags byte, encoded): FIN 1, SYN 2, RST 4, SYN-ACK 18; ACK,
        // PSH, URG, ECE and CWR are left out.
        for (raw, aws) in [
            (0x02, 2),  // SYN
            (0x12, 18), // SYN-ACK
            (0xc2, 2),  // SYN with ECE and CWR (ECN setup)
            (0x11, 1),  // FIN-ACK
            (0x19, 1),  // FIN-PSH-ACK
            (0x04, 4),  // RST
            (0x14, 4),  // RST-ACK
            (0x10, 0),  // ACK
            (0x18, 0),  // PSH-ACK (data)
            (0x13, 19), // SYN-ACK-FIN (a test of the OR, not a real packet)
        ] {
            assert_eq!(aws_tcp_flags(raw), aws, "{raw:#04x}");
        }
    }

    #[test]
    fn tcp_flags_are_read_from_the_tcp_header() {
        let mut p = tcp_syn_v4();
        assert_eq!(parse(&p).unwrap().tcp_flags, Some(0x02));
        p[20 + 13] = 0x11;
        assert_eq!(parse(&p).unwrap().tcp_flags, Some(0x11));
        // Cut before the flags byte: the tuple is known, the flags are not.
        assert_eq!(parse(&p[..20 + 13]).unwrap().tcp_flags, None);
        assert_eq!(parse(&p[..20 + 14]).unwrap().tcp_flags, Some(0x11));
        // Not TCP, or not the first fragment: no TCP header to read.
        let mut udp = p.clone();
        udp[9] = UDP;
        assert_eq!(parse(&udp).unwrap().tcp_flags, None);
        let mut fragment = p.clone();
        fragment[7] = 0x10;
        assert_eq!(parse(&fragment).unwrap().tcp_flags, None);
    }

    #[test]
    fn ipv6_tcp_flags_after_an_extension_header() {
        let mut p = vec![0x60, 0, 0, 0, 0x00, 0x1c, HOPOPTS, 64];
        p.extend_from_slice(&"fd00::1".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&"fd00::2".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&[crate::model::ipproto::TCP, 0, 0, 0, 0, 0, 0, 0]);
        let mut tcp = [0u8; 20];
        tcp[..4].copy_from_slice(&[0x00, 0x50, 0x9c, 0x40]);
        tcp[12] = 0x50;
        tcp[13] = 0x14;
        p.extend_from_slice(&tcp);
        let h = parse(&p).unwrap();
        assert_eq!((h.src_port, h.dst_port, h.protocol), (80, 40000, 6));
        assert_eq!(h.tcp_flags.map(aws_tcp_flags), Some(4));
    }

    #[test]
    fn ipv4_tcp() {
        let h = parse(&tcp_syn_v4()).unwrap();
        assert_eq!(h.src, "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(h.dst, "10.0.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(
            (h.src_port, h.dst_port, h.protocol, h.ip_len),
            (40000, 22, 6, 60)
        );
    }

    #[test]
    fn ip_len_comes_from_the_header_not_the_capture() {
        // Only the first 28 bytes were copied (copy range), the packet was 60.
        let h = parse(&tcp_syn_v4()[..24]).unwrap();
        assert_eq!(h.ip_len, 60);
    }

    #[test]
    fn ipv4_icmp_has_no_ports() {
        let mut p = tcp_syn_v4();
        p[9] = 1;
        let h = parse(&p).unwrap();
        assert_eq!((h.src_port, h.dst_port, h.protocol), (0, 0, 1));
    }

    #[test]
    fn non_first_fragment_has_no_ports() {
        let mut p = tcp_syn_v4();
        p[6] = 0x00;
        p[7] = 0x10;
        assert_eq!(parse(&p).unwrap().dst_port, 0);
    }

    #[test]
    fn ipv6_udp_after_an_extension_header() {
        let mut p = vec![0x60, 0, 0, 0, 0x00, 0x18, HOPOPTS, 64];
        p.extend_from_slice(&"fd00::1".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&"fd00::2".parse::<Ipv6Addr>().unwrap().octets());
        // Hop-by-hop: next = UDP, length 0 (8 bytes).
        p.extend_from_slice(&[UDP, 0, 0, 0, 0, 0, 0, 0]);
        p.extend_from_slice(&[0x13, 0x88, 0x00, 0x35, 0x00, 0x10, 0, 0]);
        let h = parse(&p).unwrap();
        assert_eq!(
            (h.src_port, h.dst_port, h.protocol, h.ip_len),
            (5000, 53, 17, 64)
        );
    }

    #[test]
    fn every_truncation_is_an_error_or_a_result_never_a_panic() {
        let v4 = tcp_syn_v4();
        for n in 0..v4.len() {
            let r = parse(&v4[..n]);
            if n < 24 {
                assert!(r.is_err(), "{n} bytes");
            }
        }
        assert_eq!(parse(&[0x45, 0, 0]), Err(PacketError::Truncated));
        assert_eq!(parse(&[0x20; 40]), Err(PacketError::UnknownVersion(2)));
        let mut bad_ihl = v4.clone();
        bad_ihl[0] = 0x44;
        assert_eq!(parse(&bad_ihl), Err(PacketError::Malformed));
    }

    #[test]
    fn prefix_convention() {
        assert_eq!(
            rule_of_prefix("flowlogd:sg-web:deny-ssh"),
            Some("sg-web:deny-ssh")
        );
        assert_eq!(
            rule_of_prefix("flowlogd:sg-web:deny-ssh "),
            Some("sg-web:deny-ssh")
        );
        assert_eq!(rule_of_prefix("flowlogd:sg-web:"), None);
        assert_eq!(rule_of_prefix("flowlogd:"), None);
        assert_eq!(rule_of_prefix("DROP "), None);
    }
}
