//! The ENI registry: the composition of who each ENI is
//! ([`Identities`]), which interface stands for it and what addresses it
//! owns ([`AddressBook`]), and what the loop has to act on
//! ([`LoopQueues`]). Here are the rules that join them: which interface
//! an ENI takes, and what happens when it gets or loses one.
//!
//! Pure data: rtnetlink events come in as [`RouteEvent`]s and metadata as
//! [`SnapshotUpdate`]s, each with the time it was seen; nothing here opens
//! a socket.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use flowlogd_plugin_api::EniIds;

use super::address_book::{AddressBook, SharedAddress};
use super::events::LoopQueues;
use super::identity::{Identities, Visibility};
use super::index::{EniError, EniIndex};
use crate::config::{Config, EniConfig, EniMatch, MetadataSource, Unmapped};
use crate::model::{
    EcsSnapshot, IfIndex, Interface, InterfaceAddress, MacAddr, RouteEvent, SnapshotUpdate,
};

/// Names the flow log instances that capture an ENI with these ids and
/// visibility, for the log lines about it: the instance stage's rule
/// (`crate::instances`), handed in so that the registry need not know it.
pub type CapturedBy = Box<dyn Fn(&EniIds, Visibility) -> String>;

/// The ENIs, the interfaces that currently stand for them and the
/// addresses those own.
///
/// Methods taking an [`EniIndex`] panic if it comes from another registry
/// (one with fewer ENIs).
pub struct EniRegistry {
    identities: Identities,
    book: AddressBook,
    queues: LoopQueues,
    /// For the log: which instances capture an ENI (see [`CapturedBy`]).
    captured_by: Option<CapturedBy>,
}

impl EniRegistry {
    /// A registry for the ENIs and metadata source of `config`; no
    /// interface is known until [`EniRegistry::apply`] reports one.
    ///
    /// # Errors
    /// [`EniError::TooMany`] if more than [`EniIndex::MAX_ENIS`] ENIs are configured.
    pub fn new(config: &Config) -> Result<EniRegistry, EniError> {
        let mut r = EniRegistry::from_parts(&config.enis)?;
        if let MetadataSource::Ecs(ecs) = &config.metadata {
            r.learn_from_ecs(ecs.unmapped);
        }
        Ok(r)
    }

    /// As [`EniRegistry::new`] with static metadata, from the `[[eni]]` tables.
    ///
    /// # Errors
    /// [`EniError::TooMany`] if more than [`EniIndex::MAX_ENIS`] ENIs are configured.
    pub fn from_parts(enis: &[EniConfig]) -> Result<EniRegistry, EniError> {
        let identities = Identities::from_config(enis)?;
        Ok(EniRegistry {
            book: AddressBook::for_enis(identities.len()),
            identities,
            queues: LoopQueues::default(),
            captured_by: None,
        })
    }

    /// Log lines about an ENI name the instances that capture it, as
    /// `captured_by` says.
    pub fn with_captured_by(mut self, captured_by: CapturedBy) -> EniRegistry {
        self.captured_by = Some(captured_by);
        self
    }

    /// From now on, interfaces that no `[[eni]]` matches are ENIs that the
    /// ECS metadata service describes by their MAC.
    pub fn learn_from_ecs(&mut self, unmapped: Unmapped) {
        self.identities.learn_from_ecs(unmapped);
    }

    /// Number of ENIs (configured and learnt).
    pub fn len(&self) -> usize {
        self.identities.len()
    }

    /// Every ENI, in index order.
    pub fn indices(&self) -> impl Iterator<Item = EniIndex> + '_ {
        (0..self.len()).filter_map(EniIndex::new)
    }

    /// The metadata of an ENI (`-` for what is not known).
    pub fn ids(&self, eni: EniIndex) -> &Arc<EniIds> {
        self.identities.ids(eni)
    }

    /// The ENI with this id.
    pub fn find(&self, eni_id: &str) -> Option<EniIndex> {
        self.identities.find(eni_id)
    }

    /// For a reload: each ENI of this registry (by index) as an ENI of
    /// `new`, the registry built from the new config, or `None` if `new`
    /// has no such ENI. The same ENI is the one bound to the same
    /// interface (its addresses, hence its flows, are that interface's;
    /// the new config may have changed its ids), or, without an interface
    /// now, the one with the same ENI id.
    pub fn counterparts_in(&self, new: &EniRegistry) -> Vec<Option<EniIndex>> {
        self.indices()
            .map(|e| match self.ifindex(e) {
                Some(ifindex) => new.by_ifindex(ifindex),
                None if self.ids(e).eni_id != "-" => new.find(&self.ids(e).eni_id),
                None => None,
            })
            .collect()
    }

    /// The ENI that owns the local address `addr`, if any.
    pub fn owner_of(&self, addr: IpAddr) -> Option<EniIndex> {
        self.book.owner_of(addr)
    }

    #[cfg(test)]
    /// Whether `addr` is an address of any interface of this host,
    /// loopback and interfaces that are no ENI included.
    pub fn is_local(&self, addr: IpAddr) -> bool {
        self.book.is_local(addr)
    }

    /// The ENI bound to interface `ifindex` (NFLOG's indev / outdev).
    pub fn by_ifindex(&self, ifindex: IfIndex) -> Option<EniIndex> {
        self.book.by_ifindex(ifindex)
    }

    /// The interface currently bound to an ENI.
    pub fn ifindex(&self, eni: EniIndex) -> Option<IfIndex> {
        self.book.ifindex(eni)
    }

    /// The name of the interface currently bound to an ENI, if known.
    pub fn interface_name(&self, eni: EniIndex) -> Option<&str> {
        self.book.name_of(self.ifindex(eni)?)
    }

    #[cfg(test)]
    /// When the ENI's current interface appeared, if it has one.
    pub fn present_since(&self, eni: EniIndex) -> Option<i64> {
        self.book.present_since(eni)
    }

    /// Whether the ENI had an interface at some time in `[start, end)`.
    pub fn existed_during(&self, eni: EniIndex, start: i64, end: i64) -> bool {
        self.book.existed_during(eni, start, end)
    }

    /// What becomes of the ENI's records at window close.
    pub fn visibility(&self, eni: EniIndex) -> Visibility {
        self.identities.visibility(eni)
    }

    /// Whether the ENI's records wait for its metadata.
    pub fn is_held(&self, eni: EniIndex) -> bool {
        self.visibility(eni) == Visibility::Held
    }

    /// One line about an ENI for the log: its ids, where they came from,
    /// its interface and, if the registry was given [`CapturedBy`], the
    /// instances that capture it.
    pub fn describe(&self, eni: EniIndex) -> String {
        let ids = self.ids(eni);
        let matcher = match self.identities.matcher(eni) {
            EniMatch::Interface(name) => format!("matched by interface {name}"),
            EniMatch::Mac(mac) => format!("matched by mac {mac}"),
        };
        let interface = match self.ifindex(eni) {
            Some(index) => {
                let name = self.book.name_of(index).unwrap_or("?");
                format!("now interface {name} (index {index})")
            }
            None => "no interface now".to_owned(),
        };
        let source = self.identities.source(eni);
        let captured_by = match &self.captured_by {
            Some(names) => format!("; captured by: {}", names(ids, self.visibility(eni))),
            None => String::new(),
        };
        format!(
            "ENI {} ({matcher}): vswitch {}, vpc {}, vm {}, account {}; {source}; {interface}{captured_by}",
            ids.eni_id, ids.vswitch_id, ids.vpc_id, ids.vm_id, ids.account_id,
        )
    }

    /// Takes in what rtnetlink reported at `now` (Unix seconds).
    pub fn apply(&mut self, event: &RouteEvent, now: i64) {
        match event {
            RouteEvent::LinkAdded(iface) => self.link_added(iface, now),
            RouteEvent::LinkRemoved { index } => self.link_removed(*index, now),
            RouteEvent::AddressAdded(a) => {
                if let Some(shared) = self.book.add_address(a) {
                    self.warn_shared(&shared);
                }
            }
            RouteEvent::AddressRemoved(a) => self.book.remove_address(a),
        }
    }

    /// Takes in a full listing of interfaces and addresses (after an
    /// overrun lost events): what it no longer lists is gone.
    pub fn resync(&mut self, listing: &[RouteEvent], now: i64) {
        let mut links: HashMap<IfIndex, Vec<IpAddr>> = HashMap::new();
        for ev in listing {
            match ev {
                RouteEvent::LinkAdded(i) => {
                    links.entry(i.index).or_default();
                }
                RouteEvent::AddressAdded(a) => links.entry(a.index).or_default().push(a.addr),
                _ => {}
            }
        }
        let mut gone_links = Vec::new();
        let mut gone_addrs = Vec::new();
        for (index, addrs_now) in self.book.links() {
            match links.get(&index) {
                None => gone_links.push(index),
                Some(addrs) => {
                    gone_addrs.extend(addrs_now.iter().filter(|a| !addrs.contains(a)).map(
                        |&addr| InterfaceAddress {
                            index,
                            addr,
                            prefix_len: 0,
                        },
                    ))
                }
            }
        }
        gone_links.sort_unstable();
        for index in gone_links {
            self.link_removed(index, now);
        }
        for a in &gone_addrs {
            self.book.remove_address(a);
        }
        for ev in listing {
            self.apply(ev, now);
        }
    }

    /// Whether applying `event` takes an interface or an address away from
    /// an ENI. The loop harvests flows first, under the registry as it is:
    /// a connection first seen afterwards would belong to nobody. (Deleting
    /// a link removes its addresses first, each with its own event.)
    pub fn takes_from_an_eni(&self, event: &RouteEvent) -> bool {
        match event {
            RouteEvent::LinkRemoved { index } => self.by_ifindex(*index).is_some(),
            RouteEvent::LinkAdded(iface) => {
                let current = self.by_ifindex(iface.index);
                current.is_some() && self.wanted_eni(iface, current) != current
            }
            RouteEvent::AddressRemoved(a) => {
                let owner = self.owner_of(a.addr);
                owner.is_some() && owner == self.by_ifindex(a.index)
            }
            RouteEvent::AddressAdded(_) => false,
        }
    }

    /// The ENIs that lost their interface since the last call: their
    /// flows are over.
    pub fn take_detached(&mut self) -> Vec<EniIndex> {
        self.queues.take_detached()
    }

    /// MACs the metadata service should be asked about, since the last call.
    pub fn take_metadata_requests(&mut self) -> Vec<MacAddr> {
        self.queues.take_metadata_requests()
    }

    /// MACs of every ENI still waiting for its metadata (for a new worker).
    pub fn pending_macs(&self) -> Vec<MacAddr> {
        self.identities.pending_macs()
    }

    /// The last answer of the metadata service, if any.
    pub fn metadata_snapshot(&self) -> Option<&EcsSnapshot> {
        self.identities.metadata_snapshot()
    }

    /// Starts from an answer the service gave earlier (a reload keeps what
    /// the running daemon knew). Call before interfaces are applied.
    pub fn adopt_snapshot(&mut self, snapshot: EcsSnapshot) {
        self.identities.adopt_snapshot(snapshot);
    }

    /// Takes in what the metadata service said at `now`: ENIs waiting for
    /// their ids get them (or are found not to be ENIs). Returns the ENIs
    /// whose ids or standing changed (the instances that capture them
    /// follow: `crate::instances` decides from ids and visibility).
    pub fn apply_metadata(&mut self, update: &SnapshotUpdate, now: i64) -> Vec<EniIndex> {
        let changed = self.identities.apply_metadata(update);
        for c in &changed {
            let active = self.visibility(c.eni) != Visibility::Inactive;
            if c.was_active && !active {
                // Not an ENI after all: its interface is just an interface.
                self.unbind(c.eni, now);
            } else if !c.was_active && active {
                self.rebind(c.eni, now);
            }
            log::info!("metadata: {}", self.describe(c.eni));
        }
        changed.into_iter().map(|c| c.eni).collect()
    }

    /// The ENI that interface `iface` should stand for, of those that
    /// exist: a static one first (`[[eni]]` overrides the service), the
    /// one it stands for already if it still matches (a later config entry
    /// must not steal it on an unrelated update), otherwise the first free
    /// one it matches; then the ENI learnt for its MAC.
    fn wanted_eni(&self, iface: &Interface, current: Option<EniIndex>) -> Option<EniIndex> {
        let ids = &self.identities;
        let free = |e: EniIndex| self.book.is_free_for(e, iface.index);
        if let Some(c) = current.filter(|&c| ids.is_static(c) && ids.matches(c, iface)) {
            return Some(c);
        }
        if let Some(s) = ids.statics().find(|&e| free(e) && ids.matches(e, iface)) {
            return Some(s);
        }
        let learnt = ids.learnt_for(iface)?;
        (free(learnt) && ids.matches(learnt, iface)).then_some(learnt)
    }

    /// A new ENI for an interface whose MAC the registry has not seen, if
    /// ENIs are learnt from the service.
    fn learn_eni(&mut self, iface: &Interface) -> Option<EniIndex> {
        let (eni, ask) = self.identities.learn(iface)?;
        self.book.add_eni();
        if let Some(mac) = ask {
            self.queues.request_metadata(mac);
        }
        Some(eni)
    }

    fn link_added(&mut self, iface: &Interface, now: i64) {
        // RTM_NEWLINK also reports changes (rename, MAC, flags) of a known link.
        let current = self.book.note_link(iface);
        let wanted = self
            .wanted_eni(iface, current)
            .or_else(|| self.learn_eni(iface));
        if current == wanted {
            return;
        }
        if let Some(old) = current {
            self.unbind(old, now);
        }
        if let Some(new) = wanted {
            // It may stand for another interface that also matches (the
            // same MAC on a VLAN, say): keep that binding.
            if self.ifindex(new).is_none() {
                self.bind(new, iface.index, now);
            }
        }
        if let Some(old) = current {
            self.rebind(old, now);
        }
    }

    fn link_removed(&mut self, index: IfIndex, now: i64) {
        let eni = self.by_ifindex(index);
        if let Some(eni) = eni {
            self.unbind(eni, now);
        }
        self.book.remove_link(index);
        if let Some(eni) = eni {
            self.rebind(eni, now);
        }
    }

    fn bind(&mut self, eni: EniIndex, ifindex: IfIndex, now: i64) {
        let mut shared = Vec::new();
        if !self.book.bind(eni, ifindex, now, &mut shared) {
            return;
        }
        for s in &shared {
            self.warn_shared(s);
        }
        log::info!("{}", self.describe(eni));
    }

    fn unbind(&mut self, eni: EniIndex, now: i64) {
        let Some(ifindex) = self.book.unbind(eni, now) else {
            return;
        };
        log::info!(
            "ENI {} lost its interface (index {ifindex}); its flows are closed",
            self.ids(eni).eni_id
        );
        self.queues.detached(eni);
    }

    /// After `eni` lost its interface (or became an ENI again): bind it to
    /// a known interface that matches, if any (lowest index first, for
    /// determinism).
    fn rebind(&mut self, eni: EniIndex, now: i64) {
        if self.ifindex(eni).is_some() {
            return;
        }
        let ids = &self.identities;
        if let Some(index) = self.book.lowest_free_link(|i| ids.matches(eni, i)) {
            self.bind(eni, index, now);
        }
    }

    fn warn_shared(&self, s: &SharedAddress) {
        log::warn!(
            "address {} is on ENIs {} and {}; its flows go to {}",
            s.addr,
            self.ids(s.owner).eni_id,
            self.ids(s.also).eni_id,
            self.ids(s.owner).eni_id,
        );
    }
}
