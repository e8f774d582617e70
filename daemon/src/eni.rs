//! The ENI registry: interfaces, their addresses and metadata, and which flow log instances capture them.
//!
//! Pure data: rtnetlink events come in as [`RouteEvent`]s with the time they
//! were seen; nothing here opens a socket.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroU16;
use std::sync::Arc;

use flowlogd_plugin_api::EniIds;

use crate::config::{Config, EniConfig, EniMatch, FlowLogConfig, TrafficFilter};
use crate::model::{Interface, InterfaceAddress, RouteEvent};

/// A configured ENI: its position in the config's `[[eni]]` list. Two bytes,
/// and `Option<EniIndex>` is two bytes too, so the flow table can afford one
/// per direction of every live connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EniIndex(NonZeroU16);

impl EniIndex {
    /// The most ENIs a registry holds.
    pub const MAX_ENIS: usize = u16::MAX as usize;

    /// The index of the ENI at `position` in the config, if it can be one.
    pub fn new(position: usize) -> Option<EniIndex> {
        u16::try_from(position + 1)
            .ok()
            .and_then(NonZeroU16::new)
            .map(EniIndex)
    }

    /// The position in the config's `[[eni]]` list.
    pub fn get(self) -> usize {
        usize::from(self.0.get() - 1)
    }
}

/// Why a registry cannot be built.
#[derive(Debug, PartialEq, Eq)]
pub enum EniError {
    TooMany { count: usize },
}

impl fmt::Display for EniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EniError::TooMany { count } => write!(
                f,
                "{count} [[eni]] tables are configured; at most {} are supported",
                EniIndex::MAX_ENIS
            ),
        }
    }
}

impl std::error::Error for EniError {}

struct EniState {
    ids: Arc<EniIds>,
    matcher: EniMatch,
    /// The flow log instances whose scope covers this ENI, in config order.
    #[cfg(test)]
    instances: Vec<usize>,
    /// The interface currently bound to this ENI.
    ifindex: Option<u32>,
    /// When the current interface appeared (Unix seconds).
    present_since: Option<i64>,
    /// The last time the ENI had an interface that is gone now: (appeared,
    /// removed). One span is enough because windows close every few minutes
    /// and NODATA only asks whether the ENI existed during the last one.
    last_span: Option<(i64, i64)>,
}

struct FlowLogScope {
    traffic: TrafficFilter,
    enis: Vec<EniIndex>,
}

/// What rtnetlink told us about one interface index. Addresses may be
/// reported before their link (dump order is not guaranteed), so a link
/// can exist with no `iface` yet.
#[derive(Default)]
struct Link {
    iface: Option<Interface>,
    eni: Option<EniIndex>,
    addrs: Vec<IpAddr>,
}

/// The configured ENIs, the interfaces that currently stand for them and
/// the addresses those own.
///
/// Methods taking an [`EniIndex`] panic if it comes from another registry
/// (one built from a config with fewer ENIs).
pub struct EniRegistry {
    enis: Vec<EniState>,
    flow_logs: Vec<FlowLogScope>,
    links: HashMap<u32, Link>,
    /// Local address -> the ENI that owns it: one lookup per side of every
    /// conntrack message.
    owners: HashMap<IpAddr, EniIndex>,
    /// Every address of every interface (loopback and non-ENI included),
    /// with the number of interfaces that carry it.
    locals: HashMap<IpAddr, u32>,
}

impl EniRegistry {
    /// A registry for the ENIs and flow log instances of `config`; no
    /// interface is known until [`EniRegistry::apply`] reports one.
    ///
    /// # Errors
    /// [`EniError::TooMany`] if more than [`EniIndex::MAX_ENIS`] ENIs are configured.
    pub fn new(config: &Config) -> Result<EniRegistry, EniError> {
        EniRegistry::from_parts(&config.enis, &config.flow_logs)
    }

    /// As [`EniRegistry::new`], from the two lists it reads.
    ///
    /// # Errors
    /// [`EniError::TooMany`] if more than [`EniIndex::MAX_ENIS`] ENIs are configured.
    pub fn from_parts(
        enis: &[EniConfig],
        flow_logs: &[FlowLogConfig],
    ) -> Result<EniRegistry, EniError> {
        if enis.len() > EniIndex::MAX_ENIS {
            return Err(EniError::TooMany { count: enis.len() });
        }
        let enis: Vec<EniState> = enis
            .iter()
            .map(|e| EniState {
                ids: Arc::new(e.ids.clone()),
                matcher: e.matcher.clone(),
                #[cfg(test)]
                instances: flow_logs
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| f.covers(&e.ids))
                    .map(|(i, _)| i)
                    .collect(),
                ifindex: None,
                present_since: None,
                last_span: None,
            })
            .collect();
        let flow_logs = flow_logs
            .iter()
            .map(|f| FlowLogScope {
                traffic: f.traffic,
                enis: enis
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| f.covers(&e.ids))
                    .filter_map(|(i, _)| EniIndex::new(i))
                    .collect(),
            })
            .collect();
        Ok(EniRegistry {
            enis,
            flow_logs,
            links: HashMap::new(),
            owners: HashMap::new(),
            locals: HashMap::new(),
        })
    }

    /// Number of configured ENIs.
    pub fn len(&self) -> usize {
        self.enis.len()
    }

    /// Every configured ENI, in config order.
    pub fn indices(&self) -> impl Iterator<Item = EniIndex> + '_ {
        (0..self.enis.len()).filter_map(EniIndex::new)
    }

    /// The metadata of an ENI.
    pub fn ids(&self, eni: EniIndex) -> &Arc<EniIds> {
        &self.enis[eni.get()].ids
    }

    #[cfg(test)]
    /// The ENI with this id.
    pub fn find(&self, eni_id: &str) -> Option<EniIndex> {
        self.enis
            .iter()
            .position(|e| e.ids.eni_id == eni_id)
            .and_then(EniIndex::new)
    }

    /// The ENI that owns the local address `addr`, if any.
    pub fn owner_of(&self, addr: IpAddr) -> Option<EniIndex> {
        self.owners.get(&addr).copied()
    }

    #[cfg(test)]
    /// Whether `addr` is an address of any interface of this host,
    /// loopback and interfaces that are no ENI included.
    pub fn is_local(&self, addr: IpAddr) -> bool {
        self.locals.contains_key(&addr)
    }

    /// The ENI bound to interface `ifindex` (NFLOG's indev / outdev).
    pub fn by_ifindex(&self, ifindex: u32) -> Option<EniIndex> {
        self.links.get(&ifindex).and_then(|l| l.eni)
    }

    /// The interface currently bound to an ENI.
    pub fn ifindex(&self, eni: EniIndex) -> Option<u32> {
        self.enis[eni.get()].ifindex
    }

    #[cfg(test)]
    /// When the ENI's current interface appeared, if it has one.
    pub fn present_since(&self, eni: EniIndex) -> Option<i64> {
        self.enis[eni.get()].present_since
    }

    /// Whether the ENI had an interface at some time in `[start, end)`.
    pub fn existed_during(&self, eni: EniIndex, start: i64, end: i64) -> bool {
        let e = &self.enis[eni.get()];
        let now = e.present_since.is_some_and(|since| since < end);
        // An interface removed at second `start` still existed during it.
        let before = e
            .last_span
            .is_some_and(|(appeared, removed)| appeared < end && removed >= start);
        now || before
    }

    #[cfg(test)]
    /// The flow log instances (indices into `config.flow_logs`) whose scope
    /// covers the ENI, in config order.
    pub fn instances_for(&self, eni: EniIndex) -> &[usize] {
        &self.enis[eni.get()].instances
    }

    /// Number of flow log instances.
    pub fn instance_count(&self) -> usize {
        self.flow_logs.len()
    }

    /// The ENIs that flow log instance `instance` covers, in config order.
    ///
    /// # Panics
    /// If there is no such instance.
    pub fn enis_of_instance(&self, instance: usize) -> &[EniIndex] {
        &self.flow_logs[instance].enis
    }

    /// The traffic filter of flow log instance `instance`.
    ///
    /// # Panics
    /// If there is no such instance.
    pub fn traffic_of_instance(&self, instance: usize) -> TrafficFilter {
        self.flow_logs[instance].traffic
    }

    /// Takes in what rtnetlink reported at `now` (Unix seconds).
    pub fn apply(&mut self, event: &RouteEvent, now: i64) {
        match event {
            RouteEvent::LinkAdded(iface) => self.link_added(iface, now),
            RouteEvent::LinkRemoved { index } => self.link_removed(*index, now),
            RouteEvent::AddressAdded(a) => self.address_added(a),
            RouteEvent::AddressRemoved(a) => self.address_removed(a),
        }
    }

    fn matches(&self, eni: EniIndex, iface: &Interface) -> bool {
        !iface.is_loopback
            && match &self.enis[eni.get()].matcher {
                EniMatch::Interface(name) => *name == iface.name,
                EniMatch::Mac(mac) => iface.mac == Some(*mac),
            }
    }

    /// The ENI that interface `iface` should stand for: the one it stands
    /// for already if it still matches (a later config entry must not steal
    /// it on an unrelated update), otherwise the first free one it matches.
    fn wanted_eni(&self, iface: &Interface, current: Option<EniIndex>) -> Option<EniIndex> {
        if let Some(c) = current.filter(|&c| self.matches(c, iface)) {
            return Some(c);
        }
        self.indices().find(|&e| {
            let state = &self.enis[e.get()];
            (state.ifindex.is_none() || state.ifindex == Some(iface.index))
                && self.matches(e, iface)
        })
    }

    fn link_added(&mut self, iface: &Interface, now: i64) {
        // RTM_NEWLINK also reports changes (rename, MAC, flags) of a known link.
        let current = self.links.get(&iface.index).and_then(|l| l.eni);
        let wanted = self.wanted_eni(iface, current);
        self.links.entry(iface.index).or_default().iface = Some(iface.clone());
        if current == wanted {
            return;
        }
        if let Some(old) = current {
            self.unbind(old, now);
        }
        if let Some(new) = wanted {
            // It may stand for another interface that also matches (the
            // same MAC on a VLAN, say): keep that binding.
            if self.enis[new.get()].ifindex.is_none() {
                self.bind(new, iface.index, now);
            }
        }
        if let Some(old) = current {
            self.rebind(old, now);
        }
    }

    fn link_removed(&mut self, index: u32, now: i64) {
        let eni = self.links.get(&index).and_then(|l| l.eni);
        if let Some(eni) = eni {
            self.unbind(eni, now);
        }
        if let Some(link) = self.links.remove(&index) {
            for addr in link.addrs {
                self.forget_local(addr);
            }
        }
        if let Some(eni) = eni {
            self.rebind(eni, now);
        }
    }

    fn address_added(&mut self, a: &InterfaceAddress) {
        let link = self.links.entry(a.index).or_default();
        if link.addrs.contains(&a.addr) {
            return;
        }
        link.addrs.push(a.addr);
        let eni = link.eni;
        *self.locals.entry(a.addr).or_insert(0) += 1;
        if let Some(eni) = eni {
            self.add_owner(a.addr, eni);
        }
    }

    fn address_removed(&mut self, a: &InterfaceAddress) {
        let Some(link) = self.links.get_mut(&a.index) else {
            return;
        };
        let Some(pos) = link.addrs.iter().position(|&x| x == a.addr) else {
            return;
        };
        link.addrs.swap_remove(pos);
        let eni = link.eni;
        self.forget_local(a.addr);
        if let Some(eni) = eni {
            self.remove_owner(a.addr, eni);
        }
    }

    fn forget_local(&mut self, addr: IpAddr) {
        if let Some(n) = self.locals.get_mut(&addr) {
            *n -= 1;
            if *n == 0 {
                self.locals.remove(&addr);
            }
        }
    }

    fn bind(&mut self, eni: EniIndex, ifindex: u32, now: i64) {
        let Some(link) = self.links.get_mut(&ifindex) else {
            return;
        };
        link.eni = Some(eni);
        let addrs = link.addrs.clone();
        let name = link
            .iface
            .as_ref()
            .map_or("", |i| i.name.as_str())
            .to_owned();
        let state = &mut self.enis[eni.get()];
        state.ifindex = Some(ifindex);
        state.present_since = Some(now);
        log::info!(
            "ENI {} is interface {name} (index {ifindex})",
            state.ids.eni_id
        );
        for addr in addrs {
            self.add_owner(addr, eni);
        }
    }

    fn unbind(&mut self, eni: EniIndex, now: i64) {
        let state = &mut self.enis[eni.get()];
        let Some(ifindex) = state.ifindex.take() else {
            return;
        };
        if let Some(since) = state.present_since.take() {
            state.last_span = Some((since, now));
        }
        log::info!(
            "ENI {} lost its interface (index {ifindex})",
            state.ids.eni_id
        );
        let addrs = match self.links.get_mut(&ifindex) {
            Some(link) => {
                link.eni = None;
                link.addrs.clone()
            }
            None => Vec::new(),
        };
        for addr in addrs {
            self.remove_owner(addr, eni);
        }
    }

    /// After `eni` lost its interface: bind it to another known interface
    /// that matches, if any (lowest index first, for determinism).
    fn rebind(&mut self, eni: EniIndex, now: i64) {
        if self.enis[eni.get()].ifindex.is_some() {
            return;
        }
        let candidate = self
            .links
            .iter()
            .filter(|(_, l)| l.eni.is_none())
            .filter_map(|(&index, l)| l.iface.as_ref().map(|i| (index, i)))
            .filter(|(_, i)| self.matches(eni, i))
            .map(|(index, _)| index)
            .min();
        if let Some(index) = candidate {
            self.bind(eni, index, now);
        }
    }

    fn add_owner(&mut self, addr: IpAddr, eni: EniIndex) {
        // Loopback traffic is no ENI's, whatever interface carries the address.
        if addr.is_loopback() || addr.is_unspecified() {
            return;
        }
        let owner = *self.owners.entry(addr).or_insert(eni);
        if owner != eni {
            log::warn!(
                "address {addr} is on ENIs {} and {}; its flows go to {}",
                self.enis[owner.get()].ids.eni_id,
                self.enis[eni.get()].ids.eni_id,
                self.enis[owner.get()].ids.eni_id,
            );
        }
    }

    fn remove_owner(&mut self, addr: IpAddr, eni: EniIndex) {
        if self.owners.get(&addr) != Some(&eni) {
            return;
        }
        self.owners.remove(&addr);
        // Another ENI's interface may carry the same address.
        let other = self
            .links
            .values()
            .filter(|l| l.addrs.contains(&addr))
            .filter_map(|l| l.eni)
            .find(|&e| e != eni);
        if let Some(other) = other {
            self.owners.insert(addr, other);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::ResourceType;

    pub(crate) const MAC_B: [u8; 6] = [0x00, 0x16, 0x3e, 0x00, 0x00, 0x0b];

    pub(crate) fn eni(id: &str, vswitch: &str, matcher: EniMatch) -> EniConfig {
        EniConfig {
            ids: EniIds {
                eni_id: id.into(),
                vswitch_id: vswitch.into(),
                vpc_id: "vpc-1".into(),
                vm_id: "i-1".into(),
                account_id: "1234".into(),
            },
            matcher,
        }
    }

    pub(crate) fn flow_log(
        name: &str,
        resource_type: ResourceType,
        id: &str,
        traffic: TrafficFilter,
    ) -> FlowLogConfig {
        FlowLogConfig {
            name: name.into(),
            resource_type,
            resource_id: id.into(),
            traffic,
            sinks: vec!["file".into()],
        }
    }

    pub(crate) fn link(index: u32, name: &str, mac: Option<[u8; 6]>) -> RouteEvent {
        RouteEvent::LinkAdded(Interface {
            index,
            name: name.into(),
            mac,
            is_loopback: false,
        })
    }

    pub(crate) fn loopback(index: u32) -> RouteEvent {
        RouteEvent::LinkAdded(Interface {
            index,
            name: "lo".into(),
            mac: None,
            is_loopback: true,
        })
    }

    pub(crate) fn addr(index: u32, addr: &str) -> RouteEvent {
        RouteEvent::AddressAdded(InterfaceAddress {
            index,
            addr: addr.parse().unwrap(),
            prefix_len: 24,
        })
    }

    fn del_addr(index: u32, addr: &str) -> RouteEvent {
        RouteEvent::AddressRemoved(InterfaceAddress {
            index,
            addr: addr.parse().unwrap(),
            prefix_len: 24,
        })
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// eni-a: interface eth0 (vsw-1); eni-b: MAC_B (vsw-2); eni-c: eth9 (vsw-1).
    fn two_plus_one() -> EniRegistry {
        EniRegistry::from_parts(
            &[
                eni("eni-a", "vsw-1", EniMatch::Interface("eth0".into())),
                eni("eni-b", "vsw-2", EniMatch::Mac(MAC_B)),
                eni("eni-c", "vsw-1", EniMatch::Interface("eth9".into())),
            ],
            &[
                flow_log("vpc", ResourceType::Vpc, "vpc-1", TrafficFilter::All),
                flow_log("b", ResourceType::Eni, "eni-b", TrafficFilter::Accept),
                flow_log(
                    "vsw1",
                    ResourceType::VSwitch,
                    "vsw-1",
                    TrafficFilter::Reject,
                ),
            ],
        )
        .unwrap()
    }

    #[test]
    fn index_is_two_bytes_and_round_trips() {
        assert_eq!(std::mem::size_of::<Option<EniIndex>>(), 2);
        assert_eq!(EniIndex::new(0).unwrap().get(), 0);
        assert_eq!(EniIndex::new(65534).unwrap().get(), 65534);
        assert_eq!(EniIndex::new(65535), None);
    }

    #[test]
    fn matches_by_name_and_mac_and_owns_addresses() {
        let mut r = two_plus_one();
        r.apply(&link(2, "eth0", Some([2; 6])), 100);
        r.apply(&link(3, "eth1", Some(MAC_B)), 100);
        r.apply(&addr(2, "10.0.0.5"), 100);
        r.apply(&addr(2, "fd00::5"), 100);
        r.apply(&addr(3, "10.0.1.7"), 100);
        let a = r.find("eni-a").unwrap();
        let b = r.find("eni-b").unwrap();
        assert_eq!(r.owner_of(ip("10.0.0.5")), Some(a));
        assert_eq!(r.owner_of(ip("fd00::5")), Some(a));
        assert_eq!(r.owner_of(ip("10.0.1.7")), Some(b));
        assert_eq!(r.owner_of(ip("10.0.1.8")), None);
        assert_eq!(r.by_ifindex(3), Some(b));
        assert_eq!(r.ifindex(a), Some(2));
        assert_eq!(r.ids(b).eni_id, "eni-b");
    }

    #[test]
    fn loopback_and_its_addresses_belong_to_nobody() {
        let mut r = EniRegistry::from_parts(
            &[eni("eni-lo", "vsw-1", EniMatch::Interface("lo".into()))],
            &[],
        )
        .unwrap();
        r.apply(&loopback(1), 0);
        r.apply(&addr(1, "127.0.0.1"), 0);
        r.apply(&addr(1, "10.9.9.9"), 0);
        assert_eq!(r.owner_of(ip("127.0.0.1")), None);
        assert_eq!(r.owner_of(ip("10.9.9.9")), None);
        assert_eq!(r.by_ifindex(1), None);
        assert!(r.is_local(ip("127.0.0.1")));
        assert!(!r.existed_during(r.find("eni-lo").unwrap(), 0, 600));
    }

    #[test]
    fn address_reported_before_its_link_is_owned_once_link_appears() {
        let mut r = two_plus_one();
        r.apply(&addr(2, "10.0.0.5"), 0);
        assert_eq!(r.owner_of(ip("10.0.0.5")), None);
        assert!(r.is_local(ip("10.0.0.5")));
        r.apply(&link(2, "eth0", None), 0);
        assert_eq!(r.owner_of(ip("10.0.0.5")), r.find("eni-a"));
    }

    #[test]
    fn address_and_link_removal() {
        let mut r = two_plus_one();
        r.apply(&link(2, "eth0", None), 0);
        r.apply(&addr(2, "10.0.0.5"), 0);
        r.apply(&addr(2, "10.0.0.6"), 0);
        r.apply(&del_addr(2, "10.0.0.5"), 10);
        assert_eq!(r.owner_of(ip("10.0.0.5")), None);
        assert!(!r.is_local(ip("10.0.0.5")));
        assert!(r.owner_of(ip("10.0.0.6")).is_some());
        r.apply(&RouteEvent::LinkRemoved { index: 2 }, 20);
        assert_eq!(r.owner_of(ip("10.0.0.6")), None);
        assert!(!r.is_local(ip("10.0.0.6")));
        assert_eq!(r.ifindex(r.find("eni-a").unwrap()), None);
    }

    #[test]
    fn rename_unbinds_and_rebinds() {
        let mut r = two_plus_one();
        let a = r.find("eni-a").unwrap();
        r.apply(&link(2, "eth0", None), 0);
        r.apply(&addr(2, "10.0.0.5"), 0);
        r.apply(&link(2, "wan0", None), 50);
        assert_eq!(r.owner_of(ip("10.0.0.5")), None);
        assert_eq!(r.ifindex(a), None);
        // Another interface takes the name: it is the ENI now.
        r.apply(&link(7, "eth0", None), 60);
        r.apply(&addr(7, "10.0.0.9"), 60);
        assert_eq!(r.ifindex(a), Some(7));
        assert_eq!(r.owner_of(ip("10.0.0.9")), Some(a));
        assert_eq!(r.present_since(a), Some(60));
    }

    #[test]
    fn same_mac_on_two_interfaces_binds_one_and_falls_back() {
        let mut r = two_plus_one();
        let b = r.find("eni-b").unwrap();
        r.apply(&link(3, "eth1", Some(MAC_B)), 0);
        r.apply(&link(4, "eth1.100", Some(MAC_B)), 0);
        assert_eq!(r.ifindex(b), Some(3));
        assert_eq!(r.by_ifindex(4), None);
        r.apply(&RouteEvent::LinkRemoved { index: 3 }, 10);
        assert_eq!(r.ifindex(b), Some(4));
    }

    #[test]
    fn existence_during_windows() {
        let mut r = two_plus_one();
        let a = r.find("eni-a").unwrap();
        let c = r.find("eni-c").unwrap();
        assert!(!r.existed_during(a, 0, 600));
        r.apply(&link(2, "eth0", None), 100);
        assert!(r.existed_during(a, 0, 600));
        assert!(!r.existed_during(a, 0, 100), "appeared exactly at the end");
        r.apply(&RouteEvent::LinkRemoved { index: 2 }, 700);
        assert!(r.existed_during(a, 600, 1200), "removed during the window");
        assert!(
            r.existed_during(a, 700, 1200),
            "removed in the window's first second"
        );
        assert!(!r.existed_during(a, 1200, 1800));
        assert!(!r.existed_during(c, 0, 1800));
    }

    #[test]
    fn instances_are_precomputed_from_scopes() {
        let r = two_plus_one();
        let a = r.find("eni-a").unwrap();
        let b = r.find("eni-b").unwrap();
        let c = r.find("eni-c").unwrap();
        assert_eq!(r.instances_for(a), &[0, 2]);
        assert_eq!(r.instances_for(b), &[0, 1]);
        assert_eq!(r.instances_for(c), &[0, 2]);
        assert_eq!(r.instance_count(), 3);
        assert_eq!(r.enis_of_instance(0), &[a, b, c]);
        assert_eq!(r.enis_of_instance(1), &[b]);
        assert_eq!(r.enis_of_instance(2), &[a, c]);
        assert_eq!(r.traffic_of_instance(2), TrafficFilter::Reject);
    }

    #[test]
    fn shared_address_moves_to_the_other_eni_when_one_drops_it() {
        let mut r = two_plus_one();
        r.apply(&link(2, "eth0", None), 0);
        r.apply(&link(3, "eth1", Some(MAC_B)), 0);
        r.apply(&addr(2, "10.0.0.100"), 0);
        r.apply(&addr(3, "10.0.0.100"), 0);
        assert_eq!(r.owner_of(ip("10.0.0.100")), r.find("eni-a"));
        r.apply(&del_addr(2, "10.0.0.100"), 5);
        assert_eq!(r.owner_of(ip("10.0.0.100")), r.find("eni-b"));
        assert!(r.is_local(ip("10.0.0.100")));
    }

    #[test]
    fn too_many_is_an_error() {
        let enis: Vec<EniConfig> = (0..=EniIndex::MAX_ENIS)
            .map(|i| {
                eni(
                    &format!("eni-{i}"),
                    "vsw-1",
                    EniMatch::Interface(format!("e{i}")),
                )
            })
            .collect();
        let err = EniRegistry::from_parts(&enis, &[]).err().unwrap();
        assert_eq!(err, EniError::TooMany { count: 65536 });
    }
}
