//! The traffic's shape: which 5-tuple and size each generated packet has,
//! as pure functions of its index, so that every run (flowlogd's, ulogd's,
//! the no-listener ceiling's) sends byte-identical traffic and the ground
//! truth is a sum the generator computes as it sends.

use std::net::Ipv4Addr;

/// IPv4 header without options.
pub const IPV4_HEADER_LEN: usize = 20;
pub const UDP_HEADER_LEN: usize = 8;
const IPPROTO_UDP: u8 = 17;
/// Don't Fragment: every packet is below the veth MTU; DF keeps the kernel
/// from ever splitting one (a fragment would be a second packet to count).
const IP_DF: u16 = 0x4000;

/// Source ports used for generated tuples: above the well-known range.
const FIRST_PORT: u32 = 1024;
const PORTS: u32 = 65536 - FIRST_PORT;

/// A pool of source addresses (an IPv4 prefix routed to the generator's
/// side), from which distinct tuples are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourcePool {
    base: u32,
    /// Usable host addresses (the network and broadcast addresses skipped).
    hosts: u32,
}

impl SourcePool {
    /// Parses `a.b.c.d/len` (len 8..=30).
    ///
    /// # Errors
    /// A message saying what is wrong with `s`.
    pub fn parse(s: &str) -> Result<SourcePool, String> {
        let (addr, len) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?}: expected ADDR/LEN"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|e| format!("{s:?}: {e}"))?;
        let len: u32 = len.parse().map_err(|e| format!("{s:?}: {e}"))?;
        if !(8..=30).contains(&len) {
            return Err(format!("{s:?}: prefix length must be 8..=30"));
        }
        let mask = u32::MAX << (32 - len);
        Ok(SourcePool {
            base: u32::from(addr) & mask,
            hosts: (1u32 << (32 - len)) - 2,
        })
    }

    /// How many distinct (address, port) pairs the pool holds.
    pub fn tuples(&self) -> u64 {
        u64::from(self.hosts) * u64::from(PORTS)
    }

    /// The `i`-th distinct source (address, port). Consecutive indices
    /// change the address first, so the conntrack hash spreads them.
    pub fn source(&self, i: u64) -> (Ipv4Addr, u16) {
        let i = i % self.tuples();
        let host = (i % u64::from(self.hosts)) as u32;
        let port = (i / u64::from(self.hosts)) as u32;
        (
            Ipv4Addr::from(self.base + 1 + host),
            (FIRST_PORT + port) as u16,
        )
    }
}

/// UDP payload bytes of packet `j` of flow `i`: varied between 18 and
/// 1217 (IP sizes 46 to 1245), so byte counts are not a multiple of the
/// packet count and a swapped or lost packet changes the byte total.
pub fn flow_payload_len(i: u64, j: u32) -> usize {
    18 + ((i.wrapping_mul(7919) + u64::from(j).wrapping_mul(104_729)) % 1200) as usize
}

/// UDP payload bytes of dropped packet `k`: small, as a scan's probes are
/// (IP sizes 36 to 92).
pub fn drop_payload_len(k: u64) -> usize {
    8 + (k % 57) as usize
}

/// Writes an IPv4/UDP packet with `payload_len` zero bytes of payload into
/// `buf` and returns its length (the IP-layer size conntrack counts).
///
/// The IP checksum and id are left 0: with IP_HDRINCL the kernel fills
/// both (raw(7)). The UDP checksum 0 means "none" in IPv4 (RFC 768), so the
/// receiver does not verify one.
///
/// # Panics
/// If `buf` is shorter than the packet.
pub fn write_udp(
    buf: &mut [u8],
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    payload_len: usize,
) -> usize {
    let udp_len = UDP_HEADER_LEN + payload_len;
    let total = IPV4_HEADER_LEN + udp_len;
    let p = &mut buf[..total];
    p[0] = 0x45; // version 4, 5 words of header
    p[1] = 0;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[4..6].copy_from_slice(&0u16.to_be_bytes());
    p[6..8].copy_from_slice(&IP_DF.to_be_bytes());
    p[8] = 64;
    p[9] = IPPROTO_UDP;
    p[10..12].copy_from_slice(&0u16.to_be_bytes());
    p[12..16].copy_from_slice(&src.0.octets());
    p[16..20].copy_from_slice(&dst.0.octets());
    let u = &mut p[IPV4_HEADER_LEN..];
    u[0..2].copy_from_slice(&src.1.to_be_bytes());
    u[2..4].copy_from_slice(&dst.1.to_be_bytes());
    u[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    u[6..8].copy_from_slice(&0u16.to_be_bytes());
    u[UDP_HEADER_LEN..].fill(0);
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn pool_parses_and_yields_distinct_sources() {
        let pool = SourcePool::parse("10.201.0.0/16").unwrap();
        assert_eq!(pool.tuples(), 65534 * 64512);
        assert_eq!(pool.source(0), (Ipv4Addr::new(10, 201, 0, 1), 1024));
        assert_eq!(pool.source(1), (Ipv4Addr::new(10, 201, 0, 2), 1024));
        assert_eq!(pool.source(65534), (Ipv4Addr::new(10, 201, 0, 1), 1025));
        let seen: HashSet<_> = (0..200_000).map(|i| pool.source(i)).collect();
        assert_eq!(seen.len(), 200_000);
        // Never the network or broadcast address.
        let small = SourcePool::parse("10.9.9.0/30").unwrap();
        let addrs: HashSet<_> = (0..10).map(|i| small.source(i).0).collect();
        assert_eq!(
            addrs,
            HashSet::from([Ipv4Addr::new(10, 9, 9, 1), Ipv4Addr::new(10, 9, 9, 2)])
        );
        assert!(SourcePool::parse("10.0.0.0").is_err());
        assert!(SourcePool::parse("10.0.0.0/31").is_err());
    }

    #[test]
    fn sizes_vary_and_fit_the_mtu() {
        let sizes: HashSet<_> = (0..1000).map(|i| flow_payload_len(i, 0)).collect();
        assert!(sizes.len() > 500);
        assert!((0..100_000u64)
            .flat_map(|i| (0..4).map(move |j| flow_payload_len(i, j)))
            .all(|n| (18..1218).contains(&n)));
        assert_ne!(flow_payload_len(5, 0), flow_payload_len(5, 1));
        assert!((0..1000).all(|k| (8..65).contains(&drop_payload_len(k))));
    }

    #[test]
    fn udp_packet_layout() {
        let mut buf = [0xffu8; 64];
        let n = write_udp(
            &mut buf,
            (Ipv4Addr::new(10, 201, 0, 1), 1024),
            (Ipv4Addr::new(10, 200, 77, 2), 5001),
            10,
        );
        assert_eq!(n, 38);
        assert_eq!(
            &buf[..28],
            &[
                0x45, 0, 0, 38, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 201, 0, 1, 10, 200, 77, 2, 4, 0,
                0x13, 0x89, 0, 18, 0, 0
            ]
        );
        assert!(buf[28..38].iter().all(|&b| b == 0));
        assert_eq!(buf[38], 0xff);
    }
}
