//! A security group rule's peer: an IPv4 or IPv6 network.

use std::fmt;
use std::net::IpAddr;

/// A network written `addr/len` with no host bits set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix_len: u8,
}

/// Why a string is not a [`Cidr`], for a config error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CidrError {
    Malformed,
    /// Host bits set: the network it probably means.
    HostBits {
        network: Cidr,
    },
}

impl Cidr {
    /// Parses `10.0.0.0/8` or `2001:db8::/32`.
    ///
    /// # Errors
    /// [`CidrError::HostBits`] when bits after the prefix are set (a
    /// silently masked `10.0.0.1/8` would let in more than its writer
    /// meant to name), [`CidrError::Malformed`] otherwise.
    pub fn parse(s: &str) -> Result<Cidr, CidrError> {
        let (addr, len) = s.split_once('/').ok_or(CidrError::Malformed)?;
        let addr: IpAddr = addr.parse().map_err(|_| CidrError::Malformed)?;
        // Only plain decimal digits: `u8::from_str` would take "+8".
        if len.is_empty() || len.len() > 3 || !len.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CidrError::Malformed);
        }
        let prefix_len: u8 = len.parse().map_err(|_| CidrError::Malformed)?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix_len > max {
            return Err(CidrError::Malformed);
        }
        let network = Cidr {
            network: mask(addr, prefix_len),
            prefix_len,
        };
        if network.network != addr {
            return Err(CidrError::HostBits { network });
        }
        Ok(network)
    }

    pub fn is_ipv4(&self) -> bool {
        self.network.is_ipv4()
    }

    /// Whether `ip` is in this network; an address of the other family
    /// never is (IPv4-mapped IPv6 addresses included: the kernel hands the
    /// daemon v4 packets as v4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                mask(ip, self.prefix_len) == self.network
            }
            _ => false,
        }
    }
}

/// `addr` with every bit after the first `prefix_len` cleared.
fn mask(addr: IpAddr, prefix_len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let m = u32::MAX
                .checked_shl(32 - u32::from(prefix_len))
                .unwrap_or(0);
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = u128::MAX
                .checked_shl(128 - u32::from(prefix_len))
                .unwrap_or(0);
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_refuses() {
        assert_eq!(Cidr::parse("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(Cidr::parse("::/0").unwrap().to_string(), "::/0");
        assert_eq!(
            Cidr::parse("10.0.0.1/8"),
            Err(CidrError::HostBits {
                network: Cidr::parse("10.0.0.0/8").unwrap()
            })
        );
        for bad in [
            "10.0.0.0",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "x/1",
            "10.0.0.0/+8",
            "10.0.0.0/",
        ] {
            assert_eq!(Cidr::parse(bad), Err(CidrError::Malformed), "{bad}");
        }
    }

    #[test]
    fn contains_edges_and_families() {
        let c = Cidr::parse("192.168.1.0/24").unwrap();
        assert!(c.contains(ip("192.168.1.0")));
        assert!(c.contains(ip("192.168.1.255")));
        assert!(!c.contains(ip("192.168.0.255")));
        assert!(!c.contains(ip("192.168.2.0")));
        assert!(!c.contains(ip("::ffff:192.168.1.1")));
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains(ip("255.255.255.255")));
        assert!(!Cidr::parse("0.0.0.0/0").unwrap().contains(ip("::1")));
        assert!(!Cidr::parse("::/0").unwrap().contains(ip("1.2.3.4")));
    }
}
