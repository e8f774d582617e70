//! The address book fed by rtnetlink: which interfaces exist, which ENI
//! each stands for, the addresses they carry and so which ENI owns a
//! local address, and when each ENI had an interface.

use std::collections::HashMap;
use std::net::IpAddr;

use super::index::EniIndex;
use crate::model::{IfIndex, Interface, InterfaceAddress};

/// What rtnetlink told us about one interface index. Addresses may be
/// reported before their link (dump order is not guaranteed), so a link
/// can exist with no `iface` yet.
#[derive(Default)]
struct Link {
    iface: Option<Interface>,
    eni: Option<EniIndex>,
    addrs: Vec<IpAddr>,
}

/// When an ENI had an interface.
#[derive(Clone, Copy, Default)]
struct Presence {
    /// The interface currently bound to this ENI.
    ifindex: Option<IfIndex>,
    /// When the current interface appeared (Unix seconds).
    since: Option<i64>,
    /// The last time the ENI had an interface that is gone now: (appeared,
    /// removed). One span is enough because windows close every few minutes
    /// and NODATA only asks whether the ENI existed during the last one.
    last_span: Option<(i64, i64)>,
}

/// An address that two ENIs' interfaces carry: its flows go to `owner`.
pub(super) struct SharedAddress {
    pub(super) addr: IpAddr,
    pub(super) owner: EniIndex,
    pub(super) also: EniIndex,
}

#[derive(Default)]
pub(super) struct AddressBook {
    links: HashMap<IfIndex, Link>,
    /// Local address -> the ENI that owns it: one lookup per side of every
    /// conntrack message.
    owners: HashMap<IpAddr, EniIndex>,
    /// Every address of every interface (loopback and non-ENI included),
    /// with the number of interfaces that carry it.
    locals: HashMap<IpAddr, u32>,
    /// Per ENI, by index.
    presence: Vec<Presence>,
}

impl AddressBook {
    /// A book for `enis` ENIs, none with an interface yet.
    pub(super) fn for_enis(enis: usize) -> AddressBook {
        AddressBook {
            presence: vec![Presence::default(); enis],
            ..AddressBook::default()
        }
    }

    /// Makes room for one more ENI (learnt at run time).
    pub(super) fn add_eni(&mut self) {
        self.presence.push(Presence::default());
    }

    pub(super) fn owner_of(&self, addr: IpAddr) -> Option<EniIndex> {
        self.owners.get(&addr).copied()
    }

    #[cfg(test)]
    pub(super) fn is_local(&self, addr: IpAddr) -> bool {
        self.locals.contains_key(&addr)
    }

    pub(super) fn by_ifindex(&self, ifindex: IfIndex) -> Option<EniIndex> {
        self.links.get(&ifindex).and_then(|l| l.eni)
    }

    pub(super) fn ifindex(&self, eni: EniIndex) -> Option<IfIndex> {
        self.presence[eni.get()].ifindex
    }

    #[cfg(test)]
    pub(super) fn present_since(&self, eni: EniIndex) -> Option<i64> {
        self.presence[eni.get()].since
    }

    /// See [`super::EniRegistry::existed_during`].
    pub(super) fn existed_during(&self, eni: EniIndex, start: i64, end: i64) -> bool {
        let p = &self.presence[eni.get()];
        // Windows are in whole seconds: one that began and closed within
        // a second (a stop right after a start) still covers that second,
        // or an ENI present since it began would get no NODATA or SKIPDATA.
        let end = end.max(start + 1);
        let now = p.since.is_some_and(|since| since < end);
        // An interface removed at second `start` still existed during it.
        let before = p
            .last_span
            .is_some_and(|(appeared, removed)| appeared < end && removed >= start);
        now || before
    }

    /// The name of interface `ifindex`, if rtnetlink reported its link.
    pub(super) fn name_of(&self, ifindex: IfIndex) -> Option<&str> {
        self.links
            .get(&ifindex)
            .and_then(|l| l.iface.as_ref())
            .map(|i| i.name.as_str())
    }

    /// Whether the ENI may take interface `ifindex`: it stands for no
    /// interface, or for that one.
    pub(super) fn is_free_for(&self, eni: EniIndex, ifindex: IfIndex) -> bool {
        let p = &self.presence[eni.get()];
        p.ifindex.is_none() || p.ifindex == Some(ifindex)
    }

    /// Records `iface` (new, or a change of a known link); returns the ENI
    /// it stands for so far.
    pub(super) fn note_link(&mut self, iface: &Interface) -> Option<EniIndex> {
        let link = self.links.entry(iface.index).or_default();
        link.iface = Some(iface.clone());
        link.eni
    }

    /// Forgets link `index` and its addresses (unbind its ENI first).
    pub(super) fn remove_link(&mut self, index: IfIndex) {
        if let Some(link) = self.links.remove(&index) {
            for addr in link.addrs {
                self.forget_local(addr);
            }
        }
    }

    /// Records an address; if its interface stands for an ENI, the ENI
    /// owns it (unless another ENI does already: returned).
    pub(super) fn add_address(&mut self, a: &InterfaceAddress) -> Option<SharedAddress> {
        let link = self.links.entry(a.index).or_default();
        if link.addrs.contains(&a.addr) {
            return None;
        }
        link.addrs.push(a.addr);
        let eni = link.eni;
        *self.locals.entry(a.addr).or_insert(0) += 1;
        self.add_owner(a.addr, eni?)
    }

    pub(super) fn remove_address(&mut self, a: &InterfaceAddress) {
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

    /// Every address of every link, by link (for a resync).
    pub(super) fn links(&self) -> impl Iterator<Item = (IfIndex, &[IpAddr])> {
        self.links.iter().map(|(&i, l)| (i, l.addrs.as_slice()))
    }

    /// The lowest index of a known interface that stands for no ENI and
    /// that `wanted` takes.
    pub(super) fn lowest_free_link(&self, wanted: impl Fn(&Interface) -> bool) -> Option<IfIndex> {
        self.links
            .iter()
            .filter(|(_, l)| l.eni.is_none())
            .filter_map(|(&index, l)| l.iface.as_ref().map(|i| (index, i)))
            .filter(|(_, i)| wanted(i))
            .map(|(index, _)| index)
            .min()
    }

    /// Binds `eni` to interface `ifindex` from `now`: it owns the
    /// interface's addresses. Returns `false` if the link is unknown.
    pub(super) fn bind(
        &mut self,
        eni: EniIndex,
        ifindex: IfIndex,
        now: i64,
        shared: &mut Vec<SharedAddress>,
    ) -> bool {
        let Some(link) = self.links.get_mut(&ifindex) else {
            return false;
        };
        link.eni = Some(eni);
        let addrs = link.addrs.clone();
        let p = &mut self.presence[eni.get()];
        p.ifindex = Some(ifindex);
        p.since = Some(now);
        for addr in addrs {
            shared.extend(self.add_owner(addr, eni));
        }
        true
    }

    /// Unbinds `eni` from its interface at `now`; returns the interface,
    /// `None` if it had none.
    pub(super) fn unbind(&mut self, eni: EniIndex, now: i64) -> Option<IfIndex> {
        let p = &mut self.presence[eni.get()];
        let ifindex = p.ifindex.take()?;
        if let Some(since) = p.since.take() {
            p.last_span = Some((since, now));
        }
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
        Some(ifindex)
    }

    fn forget_local(&mut self, addr: IpAddr) {
        if let Some(n) = self.locals.get_mut(&addr) {
            *n -= 1;
            if *n == 0 {
                self.locals.remove(&addr);
            }
        }
    }

    fn add_owner(&mut self, addr: IpAddr, eni: EniIndex) -> Option<SharedAddress> {
        // Loopback traffic is no ENI's, whatever interface carries the address.
        if addr.is_loopback() || addr.is_unspecified() {
            return None;
        }
        let owner = *self.owners.entry(addr).or_insert(eni);
        (owner != eni).then_some(SharedAddress {
            addr,
            owner,
            also: eni,
        })
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
