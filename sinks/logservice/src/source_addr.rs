//! The VM's primary IPv4 address, the `LogGroup`'s default `Source` (the
//! SDKs default to the same: the address the VM reaches the world from).
//!
//! The interface of the default route (from /proc/net/route), then its
//! IPv4 address (getifaddrs). No socket is opened and nothing is sent:
//! the SDKs' UDP-connect trick would need the endpoint's DNS name resolved
//! at open, which is a network dependency at start-up for a label.

use std::ffi::CStr;
use std::net::Ipv4Addr;

/// `RTF_UP` from <linux/route.h>.
const RTF_UP: u32 = 0x1;

/// The default route's interface's IPv4 address, else the first
/// non-loopback IPv4 address, else `None`.
pub fn primary_ipv4() -> Option<Ipv4Addr> {
    let addrs = interface_ipv4_addrs();
    let route = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    default_route_interface(&route)
        .and_then(|iface| addrs.iter().find(|a| a.name == iface && !a.loopback))
        .or_else(|| addrs.iter().find(|a| !a.loopback))
        .map(|a| a.addr)
}

/// The interface of the up default route with the lowest metric.
fn default_route_interface(proc_net_route: &str) -> Option<String> {
    proc_net_route
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // Iface Destination Gateway Flags RefCnt Use Metric Mask ...
            let flags = u32::from_str_radix(f.get(3)?, 16).ok()?;
            let metric: u32 = f.get(6)?.parse().ok()?;
            (*f.get(1)? == "00000000" && *f.get(7)? == "00000000" && flags & RTF_UP != 0)
                .then(|| (metric, f[0].to_owned()))
        })
        .min()
        .map(|(_, iface)| iface)
}

struct InterfaceAddr {
    name: String,
    addr: Ipv4Addr,
    loopback: bool,
}

fn interface_ipv4_addrs() -> Vec<InterfaceAddr> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs stores a list head in `head` on success; the list
    // is freed below with freeifaddrs, once.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut p = head;
    while !p.is_null() {
        // SAFETY: `p` is a node of the list getifaddrs returned, valid
        // until freeifaddrs.
        let ifa = unsafe { &*p };
        p = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_addr is non-null and points to a sockaddr of the list.
        let family = unsafe { (*ifa.ifa_addr).sa_family };
        if i32::from(family) != libc::AF_INET {
            continue;
        }
        // SAFETY: an AF_INET ifa_addr is a sockaddr_in.
        let sin = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in>() };
        // SAFETY: ifa_name is a NUL-terminated string of the list.
        let name = unsafe { CStr::from_ptr(ifa.ifa_name) };
        out.push(InterfaceAddr {
            name: name.to_string_lossy().into_owned(),
            addr: Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
            loopback: ifa.ifa_flags & libc::IFF_LOOPBACK as u32 != 0,
        });
    }
    // SAFETY: `head` came from a successful getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_up_default_route_with_the_lowest_metric() {
        let table =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     eth1\t00000000\t0101A8C0\t0003\t0\t0\t200\t00000000\t0\t0\t0\n\
                     eth0\t00000000\t010200C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
                     eth2\t00000000\t010300C0\t0002\t0\t0\t0\t00000000\t0\t0\t0\n\
                     eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(default_route_interface(table).as_deref(), Some("eth0"));
        assert_eq!(default_route_interface("Iface\tDestination\n"), None);
    }

    #[test]
    fn loopback_is_listed_as_such() {
        let addrs = interface_ipv4_addrs();
        if let Some(lo) = addrs.iter().find(|a| a.addr == Ipv4Addr::LOCALHOST) {
            assert!(lo.loopback);
        }
        if let Some(a) = primary_ipv4() {
            assert!(!a.is_loopback());
        }
    }
}
