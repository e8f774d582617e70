//! The ENI registry: interfaces, their addresses and metadata. Which flow
//! log instances capture an ENI is `crate::instances`' to decide, from the
//! ids and [`Visibility`] the registry gives.
//!
//! Pure data: rtnetlink events come in as [`RouteEvent`]s and metadata as
//! [`SnapshotUpdate`]s, each with the time it was seen; nothing here opens
//! a socket.
//!
//! ENIs come from two places. The config's `[[eni]]` tables (matched to an
//! interface by name or MAC) come first and win. With `[metadata] source =
//! "ecs"`, every other interface with a MAC is an ENI candidate, described
//! by the ECS metadata service by its MAC; until the service has answered,
//! its records are held (`unmapped = "ignore"`) or reported with `-` ids
//! (`unmapped = "report"`).

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroU16;
use std::sync::Arc;

use flowlogd_plugin_api::EniIds;

use crate::config::{Config, EniConfig, EniMatch, MetadataSource, Unmapped};
use crate::metadata::{EcsSnapshot, SnapshotUpdate};
use crate::model::{Interface, InterfaceAddress, RouteEvent};

/// An ENI: its position in the registry, the config's `[[eni]]` tables
/// first, then ENIs learnt at run time in the order they appeared. Indices
/// are never reused while the registry lives (flows and window sums refer
/// to them); a reload builds a new registry. Two bytes, and
/// `Option<EniIndex>` is two bytes too, so the flow table can afford one
/// per direction of every live connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EniIndex(NonZeroU16);

impl EniIndex {
    /// The most ENIs a registry holds.
    pub const MAX_ENIS: usize = u16::MAX as usize;

    /// The index of the ENI at `position` in the registry, if it can be one.
    pub fn new(position: usize) -> Option<EniIndex> {
        u16::try_from(position + 1)
            .ok()
            .and_then(NonZeroU16::new)
            .map(EniIndex)
    }

    /// The position in the registry.
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

/// Where an ENI's ids come from, as an operator reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Meta {
    /// An `[[eni]]` table.
    Static,
    /// The metadata service describes it.
    Mapped,
    /// The metadata service has not said yet.
    Pending,
    /// The metadata service does not list its MAC.
    Unmapped,
}

/// What becomes of an ENI's records at window close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Visibility {
    /// They go to the flow log instances whose scope its ids match.
    Scoped,
    /// Ids unknown (`unmapped = "report"`): `-` ids, every instance.
    Everywhere,
    /// Ids not known yet (`unmapped = "ignore"`): the records wait, across
    /// windows, until they are.
    Held,
    /// Not an ENI (the service does not list it, `unmapped = "ignore"`).
    Inactive,
}

struct EniState {
    ids: Arc<EniIds>,
    matcher: EniMatch,
    meta: Meta,
    /// The interface currently bound to this ENI.
    ifindex: Option<u32>,
    /// When the current interface appeared (Unix seconds).
    present_since: Option<i64>,
    /// The last time the ENI had an interface that is gone now: (appeared,
    /// removed). One span is enough because windows close every few minutes
    /// and NODATA only asks whether the ENI existed during the last one.
    last_span: Option<(i64, i64)>,
}

/// Names the flow log instances that capture an ENI with these ids and
/// visibility, for the log lines about it: the instance stage's rule
/// (`crate::instances`), handed in so that the registry need not know it.
pub type CapturedBy = Box<dyn Fn(&EniIds, Visibility) -> String>;

/// What rtnetlink told us about one interface index. Addresses may be
/// reported before their link (dump order is not guaranteed), so a link
/// can exist with no `iface` yet.
#[derive(Default)]
struct Link {
    iface: Option<Interface>,
    eni: Option<EniIndex>,
    addrs: Vec<IpAddr>,
}

/// ENIs learnt from the ECS metadata service.
struct EcsState {
    unmapped: Unmapped,
    /// The last successful answer; kept when later fetches fail (stale ids
    /// are better than none).
    snapshot: Option<EcsSnapshot>,
    /// The learnt ENI of each MAC seen on an interface.
    by_mac: HashMap<[u8; 6], EniIndex>,
    /// MACs to ask the service about, for the loop to hand to the worker.
    requests: Vec<[u8; 6]>,
    /// The registry is full: said once.
    full_logged: bool,
}

/// The ENIs, the interfaces that currently stand for them and the
/// addresses those own.
///
/// Methods taking an [`EniIndex`] panic if it comes from another registry
/// (one with fewer ENIs).
pub struct EniRegistry {
    enis: Vec<EniState>,
    /// `[[eni]]` tables: the first `static_count` ENIs.
    static_count: usize,
    /// For the log: which instances capture an ENI (see [`CapturedBy`]).
    captured_by: Option<CapturedBy>,
    links: HashMap<u32, Link>,
    /// Local address -> the ENI that owns it: one lookup per side of every
    /// conntrack message.
    owners: HashMap<IpAddr, EniIndex>,
    /// Every address of every interface (loopback and non-ENI included),
    /// with the number of interfaces that carry it.
    locals: HashMap<IpAddr, u32>,
    ecs: Option<EcsState>,
    /// ENIs that lost their interface since the loop last asked: the loop
    /// closes their flows.
    detached: Vec<EniIndex>,
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
        if enis.len() > EniIndex::MAX_ENIS {
            return Err(EniError::TooMany { count: enis.len() });
        }
        let enis: Vec<EniState> = enis
            .iter()
            .map(|e| EniState {
                ids: Arc::new(e.ids.clone()),
                matcher: e.matcher.clone(),
                meta: Meta::Static,
                ifindex: None,
                present_since: None,
                last_span: None,
            })
            .collect();
        Ok(EniRegistry {
            static_count: enis.len(),
            enis,
            captured_by: None,
            links: HashMap::new(),
            owners: HashMap::new(),
            locals: HashMap::new(),
            ecs: None,
            detached: Vec::new(),
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
        self.ecs = Some(EcsState {
            unmapped,
            snapshot: None,
            by_mac: HashMap::new(),
            requests: Vec::new(),
            full_logged: false,
        });
    }

    /// Number of ENIs (configured and learnt).
    pub fn len(&self) -> usize {
        self.enis.len()
    }

    /// Every ENI, in index order.
    pub fn indices(&self) -> impl Iterator<Item = EniIndex> + '_ {
        (0..self.enis.len()).filter_map(EniIndex::new)
    }

    /// The metadata of an ENI (`-` for what is not known).
    pub fn ids(&self, eni: EniIndex) -> &Arc<EniIds> {
        &self.enis[eni.get()].ids
    }

    /// The ENI with this id.
    pub fn find(&self, eni_id: &str) -> Option<EniIndex> {
        self.enis
            .iter()
            .position(|e| e.ids.eni_id == eni_id)
            .and_then(EniIndex::new)
    }

    /// For a reload: each ENI of this registry (by index) as an ENI of
    /// `new`, the registry built from the new config, or `None` if `new`
    /// has no such ENI. The same ENI is the one bound to the same
    /// interface (its addresses, hence its flows, are that interface's;
    /// the new config may have changed its ids), or, without an interface
    /// now, the one with the same ENI id.
    pub fn counterparts_in(&self, new: &EniRegistry) -> Vec<Option<EniIndex>> {
        self.enis
            .iter()
            .map(|e| match e.ifindex {
                Some(ifindex) => new.by_ifindex(ifindex),
                None if e.ids.eni_id != "-" => new.find(&e.ids.eni_id),
                None => None,
            })
            .collect()
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
        // Windows are in whole seconds: one that began and closed within
        // a second (a stop right after a start) still covers that second,
        // or an ENI present since it began would get no NODATA or SKIPDATA.
        let end = end.max(start + 1);
        let now = e.present_since.is_some_and(|since| since < end);
        // An interface removed at second `start` still existed during it.
        let before = e
            .last_span
            .is_some_and(|(appeared, removed)| appeared < end && removed >= start);
        now || before
    }

    /// What becomes of the ENI's records at window close.
    pub fn visibility(&self, eni: EniIndex) -> Visibility {
        let unmapped = self
            .ecs
            .as_ref()
            .map_or(Unmapped::Ignore, |ecs| ecs.unmapped);
        match (self.enis[eni.get()].meta, unmapped) {
            (Meta::Static | Meta::Mapped, _) => Visibility::Scoped,
            (Meta::Pending | Meta::Unmapped, Unmapped::Report) => Visibility::Everywhere,
            (Meta::Pending, Unmapped::Ignore) => Visibility::Held,
            (Meta::Unmapped, Unmapped::Ignore) => Visibility::Inactive,
        }
    }

    /// Whether the ENI's records wait for its metadata.
    pub fn is_held(&self, eni: EniIndex) -> bool {
        self.visibility(eni) == Visibility::Held
    }

    /// One line about an ENI for the log: its ids, where they came from,
    /// its interface and, if the registry was given [`CapturedBy`], the
    /// instances that capture it.
    pub fn describe(&self, eni: EniIndex) -> String {
        let e = &self.enis[eni.get()];
        let matcher = match &e.matcher {
            EniMatch::Interface(name) => format!("matched by interface {name}"),
            EniMatch::Mac(mac) => format!("matched by mac {}", format_mac(mac)),
        };
        let interface = match e.ifindex {
            Some(index) => {
                let name = self
                    .links
                    .get(&index)
                    .and_then(|l| l.iface.as_ref())
                    .map_or("?", |i| i.name.as_str());
                format!("now interface {name} (index {index})")
            }
            None => "no interface now".to_owned(),
        };
        let source = match (e.meta, self.visibility(eni)) {
            (Meta::Static, _) => "ids from static config",
            (Meta::Mapped, _) => "ids from ecs",
            (Meta::Pending, Visibility::Held) => {
                "ids not known yet (waiting for the metadata service; its records are held until then)"
            }
            (Meta::Pending, _) => {
                "ids not known yet (waiting for the metadata service; reported with - ids until then)"
            }
            (Meta::Unmapped, Visibility::Inactive) => {
                "not an ENI (the metadata service does not list its MAC; unmapped = \"ignore\")"
            }
            (Meta::Unmapped, _) => {
                "ids unknown (the metadata service does not list its MAC; reported with - ids)"
            }
        };
        let captured_by = match &self.captured_by {
            Some(names) => format!("; captured by: {}", names(&e.ids, self.visibility(eni))),
            None => String::new(),
        };
        format!(
            "ENI {} ({matcher}): vswitch {}, vpc {}, vm {}, account {}; {source}; {interface}{captured_by}",
            e.ids.eni_id,
            e.ids.vswitch_id,
            e.ids.vpc_id,
            e.ids.vm_id,
            e.ids.account_id,
        )
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

    /// Takes in a full listing of interfaces and addresses (after an
    /// overrun lost events): what it no longer lists is gone.
    pub fn resync(&mut self, listing: &[RouteEvent], now: i64) {
        let mut links: HashMap<u32, Vec<IpAddr>> = HashMap::new();
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
        for (&index, link) in &self.links {
            match links.get(&index) {
                None => gone_links.push(index),
                Some(addrs) => {
                    gone_addrs.extend(link.addrs.iter().filter(|a| !addrs.contains(a)).map(
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
            self.address_removed(a);
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
        std::mem::take(&mut self.detached)
    }

    /// MACs the metadata service should be asked about, since the last call.
    pub fn take_metadata_requests(&mut self) -> Vec<[u8; 6]> {
        self.ecs
            .as_mut()
            .map(|e| std::mem::take(&mut e.requests))
            .unwrap_or_default()
    }

    /// MACs of every ENI still waiting for its metadata (for a new worker).
    pub fn pending_macs(&self) -> Vec<[u8; 6]> {
        let Some(ecs) = &self.ecs else {
            return Vec::new();
        };
        let mut macs: Vec<[u8; 6]> = ecs
            .by_mac
            .iter()
            .filter(|(_, &e)| self.enis[e.get()].meta == Meta::Pending)
            .map(|(&mac, _)| mac)
            .collect();
        macs.sort_unstable();
        macs
    }

    /// The last answer of the metadata service, if any.
    pub fn metadata_snapshot(&self) -> Option<&EcsSnapshot> {
        self.ecs.as_ref().and_then(|e| e.snapshot.as_ref())
    }

    /// Starts from an answer the service gave earlier (a reload keeps what
    /// the running daemon knew). Call before interfaces are applied.
    pub fn adopt_snapshot(&mut self, snapshot: EcsSnapshot) {
        if let Some(ecs) = &mut self.ecs {
            ecs.snapshot = Some(snapshot);
        }
    }

    /// Takes in what the metadata service said at `now`: ENIs waiting for
    /// their ids get them (or are found not to be ENIs). Returns the ENIs
    /// whose ids or standing changed (the instances that capture them
    /// follow: `crate::instances` decides from ids and visibility).
    pub fn apply_metadata(&mut self, update: &SnapshotUpdate, now: i64) -> Vec<EniIndex> {
        let Some(ecs) = &mut self.ecs else {
            return Vec::new();
        };
        ecs.snapshot = Some(update.snapshot.clone());
        let mut learnt: Vec<([u8; 6], EniIndex)> =
            ecs.by_mac.iter().map(|(&m, &e)| (m, e)).collect();
        learnt.sort_unstable_by_key(|&(_, e)| e);
        let mut changed = Vec::new();
        for (mac, eni) in learnt {
            let state = &self.enis[eni.get()];
            let (meta, ids) = match update.snapshot.enis.get(&mac) {
                Some(_) => (Meta::Mapped, self.ecs_ids(mac)),
                // An ENI the service described once keeps its ids: the
                // interface going away is what ends it.
                None if state.meta == Meta::Mapped => continue,
                None if update.looked_for.contains(&mac) && !update.retrying.contains(&mac) => {
                    (Meta::Unmapped, self.ecs_ids(mac))
                }
                None => (state.meta, self.ecs_ids(mac)),
            };
            if meta == state.meta && ids == *state.ids {
                continue;
            }
            let was_active = self.visibility(eni) != Visibility::Inactive;
            let state = &mut self.enis[eni.get()];
            state.meta = meta;
            state.ids = Arc::new(ids);
            changed.push((eni, was_active));
        }
        if changed.is_empty() {
            return Vec::new();
        }
        for &(eni, was_active) in &changed {
            let active = self.visibility(eni) != Visibility::Inactive;
            if was_active && !active {
                // Not an ENI after all: its interface is just an interface.
                self.unbind(eni, now);
            } else if !was_active && active {
                self.rebind(eni, now);
            }
            log::info!("metadata: {}", self.describe(eni));
        }
        changed.into_iter().map(|(eni, _)| eni).collect()
    }

    /// The ids the service gives the ENI of `mac`, `-` for what it does
    /// not say.
    fn ecs_ids(&self, mac: [u8; 6]) -> EniIds {
        let snapshot = self.metadata_snapshot();
        let dash = || "-".to_owned();
        let eni = snapshot.and_then(|s| s.enis.get(&mac));
        EniIds {
            eni_id: eni.map_or_else(dash, |e| e.eni_id.clone()),
            vswitch_id: eni.map_or_else(dash, |e| e.vswitch_id.clone()),
            vpc_id: eni.map_or_else(dash, |e| e.vpc_id.clone()),
            vm_id: snapshot.map_or_else(dash, |s| s.instance_id.clone()),
            account_id: snapshot.map_or_else(dash, |s| s.account_id.clone()),
        }
    }

    fn is_static(&self, eni: EniIndex) -> bool {
        eni.get() < self.static_count
    }

    fn matches(&self, eni: EniIndex, iface: &Interface) -> bool {
        !iface.is_loopback
            && self.visibility(eni) != Visibility::Inactive
            && match &self.enis[eni.get()].matcher {
                EniMatch::Interface(name) => *name == iface.name,
                EniMatch::Mac(mac) => iface.mac == Some(*mac),
            }
    }

    /// The ENI that interface `iface` should stand for, of those that
    /// exist: a static one first (`[[eni]]` overrides the service), the
    /// one it stands for already if it still matches (a later config entry
    /// must not steal it on an unrelated update), otherwise the first free
    /// one it matches; then the ENI learnt for its MAC.
    fn wanted_eni(&self, iface: &Interface, current: Option<EniIndex>) -> Option<EniIndex> {
        let free = |e: EniIndex| {
            let state = &self.enis[e.get()];
            state.ifindex.is_none() || state.ifindex == Some(iface.index)
        };
        if let Some(c) = current.filter(|&c| self.is_static(c) && self.matches(c, iface)) {
            return Some(c);
        }
        let mut statics = (0..self.static_count).filter_map(EniIndex::new);
        if let Some(s) = statics.find(|&e| free(e) && self.matches(e, iface)) {
            return Some(s);
        }
        let learnt = *self.ecs.as_ref()?.by_mac.get(&candidate_mac(iface)?)?;
        (free(learnt) && self.matches(learnt, iface)).then_some(learnt)
    }

    /// A new ENI for an interface whose MAC the registry has not seen, if
    /// ENIs are learnt from the service.
    fn learn_eni(&mut self, iface: &Interface) -> Option<EniIndex> {
        let mac = candidate_mac(iface)?;
        let ecs = self.ecs.as_ref()?;
        if ecs.by_mac.contains_key(&mac) {
            return None;
        }
        let Some(eni) = EniIndex::new(self.enis.len()) else {
            let ecs = self.ecs.as_mut()?;
            if !std::mem::replace(&mut ecs.full_logged, true) {
                log::error!(
                    "{} ENIs are known, the most one run can hold: interface {} (mac {}) and later ones are not \
                     captured until a reload (SIGHUP) or restart",
                    EniIndex::MAX_ENIS,
                    iface.name,
                    format_mac(&mac)
                );
            }
            return None;
        };
        let known = ecs
            .snapshot
            .as_ref()
            .is_some_and(|s| s.enis.contains_key(&mac));
        let ids = self.ecs_ids(mac);
        self.enis.push(EniState {
            ids: Arc::new(ids),
            matcher: EniMatch::Mac(mac),
            meta: if known { Meta::Mapped } else { Meta::Pending },
            ifindex: None,
            present_since: None,
            last_span: None,
        });
        let ecs = self.ecs.as_mut()?;
        ecs.by_mac.insert(mac, eni);
        if !known {
            ecs.requests.push(mac);
        }
        Some(eni)
    }

    fn link_added(&mut self, iface: &Interface, now: i64) {
        // RTM_NEWLINK also reports changes (rename, MAC, flags) of a known link.
        let current = self.links.get(&iface.index).and_then(|l| l.eni);
        self.links.entry(iface.index).or_default().iface = Some(iface.clone());
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
        let state = &mut self.enis[eni.get()];
        state.ifindex = Some(ifindex);
        state.present_since = Some(now);
        for addr in addrs {
            self.add_owner(addr, eni);
        }
        log::info!("{}", self.describe(eni));
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
            "ENI {} lost its interface (index {ifindex}); its flows are closed",
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
        self.detached.push(eni);
    }

    /// After `eni` lost its interface (or became an ENI again): bind it to
    /// a known interface that matches, if any (lowest index first, for
    /// determinism).
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

/// The MAC by which the metadata service could know `iface`: loopback and
/// interfaces without an Ethernet address (tunnels, WireGuard) are no ENIs.
fn candidate_mac(iface: &Interface) -> Option<[u8; 6]> {
    iface.mac.filter(|m| !iface.is_loopback && *m != [0; 6])
}

/// `00:16:3e:12:34:56`.
pub fn format_mac(m: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{FlowLogConfig, ResourceType, TrafficFilter};
    // Test-only: the registry's tests check that what it says of an ENI
    // (ids, visibility) puts it in the scopes it should be in, as the
    // instance stage reads them off the registry.
    use crate::instances::Scopes;
    use crate::test_builders::{addr, eni, flow_log, link, loopback, MAC_B};

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
        EniRegistry::from_parts(&[
            eni("eni-a", "vsw-1", EniMatch::Interface("eth0".into())),
            eni("eni-b", "vsw-2", EniMatch::Mac(MAC_B)),
            eni("eni-c", "vsw-1", EniMatch::Interface("eth9".into())),
        ])
        .unwrap()
    }

    /// The flow logs of [`two_plus_one`]'s tests.
    fn two_plus_one_flow_logs() -> Vec<FlowLogConfig> {
        vec![
            flow_log("vpc", ResourceType::Vpc, "vpc-1", TrafficFilter::All),
            flow_log("b", ResourceType::Eni, "eni-b", TrafficFilter::Accept),
            flow_log(
                "vsw1",
                ResourceType::VSwitch,
                "vsw-1",
                TrafficFilter::Reject,
            ),
        ]
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
        let mut r =
            EniRegistry::from_parts(&[eni("eni-lo", "vsw-1", EniMatch::Interface("lo".into()))])
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
        r.apply(&link(5, "other0", None), 0);
        r.apply(&addr(5, "10.9.0.1"), 0);
        assert!(r.takes_from_an_eni(&del_addr(2, "10.0.0.5")));
        assert!(!r.takes_from_an_eni(&del_addr(5, "10.9.0.1")), "no ENI's");
        assert!(!r.takes_from_an_eni(&del_addr(2, "10.0.0.99")), "not there");
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
        assert!(
            r.existed_during(a, 100, 100),
            "a window begun and closed in the second it appeared"
        );
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
    fn instances_are_computed_from_scopes() {
        let r = two_plus_one();
        let s = Scopes::of(&two_plus_one_flow_logs(), &r);
        let a = r.find("eni-a").unwrap();
        let b = r.find("eni-b").unwrap();
        let c = r.find("eni-c").unwrap();
        assert_eq!(s.instances_for(a), &[0, 2]);
        assert_eq!(s.instances_for(b), &[0, 1]);
        assert_eq!(s.instances_for(c), &[0, 2]);
        assert_eq!(s.instance_count(), 3);
        assert_eq!(s.enis_of_instance(0), &[a, b, c]);
        assert_eq!(s.enis_of_instance(1), &[b]);
        assert_eq!(s.enis_of_instance(2), &[a, c]);
        assert_eq!(s.traffic_of_instance(2), TrafficFilter::Reject);
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
        let err = EniRegistry::from_parts(&enis).err().unwrap();
        assert_eq!(err, EniError::TooMany { count: 65536 });
    }

    mod learnt {
        //! ENIs learnt from the ECS metadata service.

        use super::*;
        use crate::metadata::EcsEni;

        const M1: [u8; 6] = [0x00, 0x16, 0x3e, 0x00, 0x01, 0x01];
        const M2: [u8; 6] = [0x00, 0x16, 0x3e, 0x00, 0x01, 0x02];
        const M0: [u8; 6] = [0x00, 0x16, 0x3e, 0x00, 0x01, 0x00];

        /// Flow logs: 0 = VPC vpc-ecs, 1 = VSwitch vsw-9, 2 = ENI eni-a.
        fn flow_logs() -> Vec<FlowLogConfig> {
            vec![
                flow_log("vpc", ResourceType::Vpc, "vpc-ecs", TrafficFilter::All),
                flow_log("vsw", ResourceType::VSwitch, "vsw-9", TrafficFilter::All),
                flow_log("a", ResourceType::Eni, "eni-a", TrafficFilter::All),
            ]
        }

        /// A static eni-a on eth0 (vpc-1), whose log lines name the
        /// instances of [`flow_logs`] that capture an ENI.
        fn registry(unmapped: Unmapped) -> EniRegistry {
            let logs = flow_logs();
            let mut r = EniRegistry::from_parts(&[eni(
                "eni-a",
                "vsw-1",
                EniMatch::Interface("eth0".into()),
            )])
            .unwrap()
            .with_captured_by(Box::new(move |ids, v| {
                crate::instances::captured_by(&logs, ids, v)
            }));
            r.learn_from_ecs(unmapped);
            r
        }

        /// The instances of [`flow_logs`] that capture `eni` now.
        fn instances_for(r: &EniRegistry, eni: EniIndex) -> Vec<usize> {
            Scopes::of(&flow_logs(), r).instances_for(eni).to_vec()
        }

        fn snapshot(enis: &[([u8; 6], &str, &str)]) -> EcsSnapshot {
            let mut s = EcsSnapshot {
                instance_id: "i-ecs".into(),
                account_id: "5678".into(),
                ..EcsSnapshot::default()
            };
            for (mac, id, vsw) in enis {
                s.enis.insert(
                    *mac,
                    EcsEni {
                        eni_id: (*id).into(),
                        vpc_id: "vpc-ecs".into(),
                        vswitch_id: (*vsw).into(),
                    },
                );
            }
            s
        }

        fn update(s: EcsSnapshot, looked_for: &[[u8; 6]], retrying: &[[u8; 6]]) -> SnapshotUpdate {
            SnapshotUpdate {
                snapshot: s,
                looked_for: looked_for.to_vec(),
                retrying: retrying.to_vec(),
            }
        }

        #[test]
        fn an_interface_waits_for_its_ids_then_vpc_and_vswitch_scopes_pick_it_up() {
            let mut r = registry(Unmapped::Ignore);
            r.apply(&loopback(1), 0);
            r.apply(&link(2, "eth0", Some(M0)), 0);
            r.apply(&link(3, "eth1", Some(M1)), 0);
            r.apply(&addr(3, "10.0.9.5"), 0);
            // A new index after the static ones, for the MAC.
            let x = EniIndex::new(1).unwrap();
            assert_eq!(r.len(), 2);
            assert_eq!(r.take_metadata_requests(), vec![M1]);
            assert_eq!(r.pending_macs(), vec![M1]);
            // Its flows are its from the start; its records wait.
            assert_eq!(r.owner_of(ip("10.0.9.5")), Some(x));
            assert_eq!(r.by_ifindex(3), Some(x));
            assert_eq!(r.visibility(x), Visibility::Held);
            assert!(instances_for(&r, x).is_empty());
            assert_eq!(r.ids(x).eni_id, "-");

            let changed = r.apply_metadata(
                &update(
                    snapshot(&[(M1, "eni-x", "vsw-9"), (M0, "eni-from-service", "vsw-9")]),
                    &[M1],
                    &[],
                ),
                10,
            );
            assert_eq!(changed, vec![x]);
            assert_eq!(r.visibility(x), Visibility::Scoped);
            assert_eq!(
                **r.ids(x),
                EniIds {
                    eni_id: "eni-x".into(),
                    vswitch_id: "vsw-9".into(),
                    vpc_id: "vpc-ecs".into(),
                    vm_id: "i-ecs".into(),
                    account_id: "5678".into(),
                }
            );
            assert_eq!(instances_for(&r, x), [0, 1]);
            assert_eq!(Scopes::of(&flow_logs(), &r).enis_of_instance(0), &[x]);
            assert!(r.pending_macs().is_empty());
            // The static [[eni]] overrides what the service says of eth0.
            let a = r.find("eni-a").unwrap();
            assert_eq!(r.ifindex(a), Some(2));
            assert_eq!(r.ids(a).vpc_id, "vpc-1");
            assert_eq!(instances_for(&r, a), [2]);
            assert_eq!(r.find("eni-from-service"), None);
            assert!(r.describe(x).starts_with(
                "ENI eni-x (matched by mac 00:16:3e:00:01:01): vswitch vsw-9, vpc vpc-ecs, vm i-ecs, account 5678; \
                 ids from ecs; now interface eth1 (index 3); captured by: vpc, vsw"
            ));
            assert!(r.describe(a).contains("ids from static config"));
            // The same answer again changes nothing.
            let again = update(snapshot(&[(M1, "eni-x", "vsw-9")]), &[], &[]);
            assert!(r.apply_metadata(&again, 20).is_empty());
        }

        #[test]
        fn a_hot_plugged_interface_the_service_knows_is_an_eni_at_once() {
            let mut r = registry(Unmapped::Ignore);
            r.apply_metadata(&update(snapshot(&[(M2, "eni-y", "vsw-2")]), &[], &[]), 0);
            r.apply(&link(7, "eth2", Some(M2)), 50);
            let y = r.find("eni-y").unwrap();
            assert_eq!(r.visibility(y), Visibility::Scoped);
            assert_eq!(instances_for(&r, y), [0]);
            assert!(r.take_metadata_requests().is_empty());
            assert!(r.existed_during(y, 0, 600));
            // Gone: its flows are closed, it existed until then.
            assert!(r.takes_from_an_eni(&RouteEvent::LinkRemoved { index: 7 }));
            r.apply(&RouteEvent::LinkRemoved { index: 7 }, 70);
            assert_eq!(r.take_detached(), vec![y]);
            assert!(r.existed_during(y, 0, 600));
            assert!(!r.existed_during(y, 600, 1200));
            // Back (the same MAC): the same index.
            r.apply(&link(8, "eth2", Some(M2)), 900);
            assert_eq!(r.by_ifindex(8), Some(y));
            assert_eq!(r.len(), 2);
        }

        #[test]
        fn an_interface_the_service_does_not_list_is_ignored_or_reported() {
            let mut r = registry(Unmapped::Ignore);
            r.apply(&link(3, "docker0", Some(M1)), 0);
            r.apply(&addr(3, "172.17.0.1"), 0);
            let x = r.by_ifindex(3).unwrap();
            // Still being looked for: it waits.
            r.apply_metadata(&update(snapshot(&[]), &[M1], &[M1]), 1);
            assert_eq!(r.visibility(x), Visibility::Held);
            // Given up: not an ENI; its flows are closed.
            r.apply_metadata(&update(snapshot(&[]), &[M1], &[]), 60);
            assert_eq!(r.visibility(x), Visibility::Inactive);
            assert_eq!(r.by_ifindex(3), None);
            assert_eq!(r.owner_of(ip("172.17.0.1")), None);
            assert_eq!(r.take_detached(), vec![x]);
            assert!(r.describe(x).contains("not an ENI"));
            // Listed later after all: an ENI again, on the same interface.
            r.apply_metadata(
                &update(snapshot(&[(M1, "eni-late", "vsw-1")]), &[], &[]),
                300,
            );
            assert_eq!(r.by_ifindex(3), Some(x));
            assert_eq!(r.owner_of(ip("172.17.0.1")), Some(x));
            assert_eq!(r.ids(x).eni_id, "eni-late");

            let mut r = registry(Unmapped::Report);
            r.apply(&link(3, "docker0", Some(M1)), 0);
            let x = r.by_ifindex(3).unwrap();
            assert_eq!(r.visibility(x), Visibility::Everywhere);
            assert_eq!(
                instances_for(&r, x),
                [0, 1, 2],
                "scope unknown: every instance"
            );
            assert_eq!(r.ids(x).vm_id, "-");
            r.apply_metadata(&update(snapshot(&[]), &[M1], &[]), 60);
            assert_eq!(r.visibility(x), Visibility::Everywhere);
            assert_eq!(r.by_ifindex(3), Some(x));
            // What the service says of the instance is used.
            assert_eq!(
                (r.ids(x).eni_id.as_str(), r.ids(x).vm_id.as_str()),
                ("-", "i-ecs")
            );
            assert!(r.take_detached().is_empty());
        }

        #[test]
        fn a_static_eni_takes_its_interface_from_a_learnt_one() {
            let mut r = registry(Unmapped::Ignore);
            r.apply(&link(2, "wan0", Some(M0)), 0);
            let learnt = r.by_ifindex(2).unwrap();
            assert_ne!(r.ids(learnt).eni_id, "eni-a");
            let renamed = link(2, "eth0", Some(M0));
            assert!(r.takes_from_an_eni(&renamed));
            r.apply(&renamed, 10);
            assert_eq!(r.by_ifindex(2), r.find("eni-a"));
            assert_eq!(r.take_detached(), vec![learnt]);
            assert!(!r.takes_from_an_eni(&renamed), "an unrelated update");
        }

        #[test]
        fn loopback_and_interfaces_without_a_mac_are_never_learnt() {
            let mut r = registry(Unmapped::Report);
            r.apply(&loopback(1), 0);
            r.apply(&link(5, "wg0", None), 0);
            r.apply(&link(6, "dummy0", Some([0; 6])), 0);
            assert_eq!(r.len(), 1);
            assert!(r.take_metadata_requests().is_empty());
        }

        #[test]
        fn a_resync_forgets_what_is_gone() {
            let mut r = two_plus_one();
            r.apply(&link(2, "eth0", None), 0);
            r.apply(&addr(2, "10.0.0.5"), 0);
            r.apply(&addr(2, "10.0.0.6"), 0);
            r.apply(&link(3, "eth1", Some(MAC_B)), 0);
            r.apply(&addr(3, "10.0.1.7"), 0);
            // eth1 vanished and eth0 lost .6 while events were lost.
            r.resync(&[link(2, "eth0", None), addr(2, "10.0.0.5")], 50);
            let b = r.find("eni-b").unwrap();
            assert_eq!(r.ifindex(b), None);
            assert_eq!(r.take_detached(), vec![b]);
            assert_eq!(r.owner_of(ip("10.0.1.7")), None);
            assert_eq!(r.owner_of(ip("10.0.0.6")), None);
            assert!(!r.is_local(ip("10.0.0.6")));
            assert_eq!(r.owner_of(ip("10.0.0.5")), r.find("eni-a"));
        }
    }
}
