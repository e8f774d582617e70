//! The headers of a packet that a firewall rule logged through NFLOG: just
//! enough of IPv4 / IPv6 and TCP / UDP to give the record's 5-tuple and its
//! IP-layer size. Every read is bounds-checked: a short or malformed
//! payload is an error to count, never a panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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
        p
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
