//! Who each ENI is: its ids and how an interface is recognised as it,
//! from the config's `[[eni]]` tables (which come first and win) or, with
//! `[metadata] source = "ecs"`, from the ECS metadata service by the MAC
//! of an interface no table matches. Until the service has answered, such
//! an ENI's records are held (`unmapped = "ignore"`) or reported with `-`
//! ids (`unmapped = "report"`).

use std::collections::HashMap;
use std::sync::Arc;

use flowlogd_plugin_api::EniIds;

use super::index::{EniError, EniIndex};
use crate::config::{EniConfig, EniMatch, Unmapped};
use crate::model::{EcsSnapshot, Interface, MacAddr, SnapshotUpdate};

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

struct Identity {
    ids: Arc<EniIds>,
    matcher: EniMatch,
    meta: Meta,
}

/// ENIs learnt from the ECS metadata service.
struct EcsState {
    unmapped: Unmapped,
    /// The last successful answer; kept when later fetches fail (stale ids
    /// are better than none).
    snapshot: Option<EcsSnapshot>,
    /// The learnt ENI of each MAC seen on an interface.
    by_mac: HashMap<MacAddr, EniIndex>,
    /// The registry is full: said once.
    full_logged: bool,
}

/// Every ENI's identity, by index.
pub(super) struct Identities {
    enis: Vec<Identity>,
    /// `[[eni]]` tables: the first `static_count` ENIs.
    static_count: usize,
    ecs: Option<EcsState>,
}

/// An ENI whose ids or standing the metadata service changed.
pub(super) struct Changed {
    pub(super) eni: EniIndex,
    /// It was an ENI (not [`Visibility::Inactive`]) before the change.
    pub(super) was_active: bool,
}

impl Identities {
    /// The `[[eni]]` tables' ENIs.
    pub(super) fn from_config(enis: &[EniConfig]) -> Result<Identities, EniError> {
        if enis.len() > EniIndex::MAX_ENIS {
            return Err(EniError::TooMany { count: enis.len() });
        }
        Ok(Identities {
            static_count: enis.len(),
            enis: enis
                .iter()
                .map(|e| Identity {
                    ids: Arc::new(e.ids.clone()),
                    matcher: e.matcher.clone(),
                    meta: Meta::Static,
                })
                .collect(),
            ecs: None,
        })
    }

    /// See [`super::EniRegistry::learn_from_ecs`].
    pub(super) fn learn_from_ecs(&mut self, unmapped: Unmapped) {
        self.ecs = Some(EcsState {
            unmapped,
            snapshot: None,
            by_mac: HashMap::new(),
            full_logged: false,
        });
    }

    pub(super) fn len(&self) -> usize {
        self.enis.len()
    }

    pub(super) fn ids(&self, eni: EniIndex) -> &Arc<EniIds> {
        &self.enis[eni.get()].ids
    }

    pub(super) fn find(&self, eni_id: &str) -> Option<EniIndex> {
        self.enis
            .iter()
            .position(|e| e.ids.eni_id == eni_id)
            .and_then(EniIndex::new)
    }

    pub(super) fn matcher(&self, eni: EniIndex) -> &EniMatch {
        &self.enis[eni.get()].matcher
    }

    pub(super) fn visibility(&self, eni: EniIndex) -> Visibility {
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

    /// Where the ENI's ids come from and what becomes of its records, for
    /// the log.
    pub(super) fn source(&self, eni: EniIndex) -> &'static str {
        match (self.enis[eni.get()].meta, self.visibility(eni)) {
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
        }
    }

    pub(super) fn is_static(&self, eni: EniIndex) -> bool {
        eni.get() < self.static_count
    }

    /// The `[[eni]]` tables' ENIs.
    pub(super) fn statics(&self) -> impl Iterator<Item = EniIndex> {
        (0..self.static_count).filter_map(EniIndex::new)
    }

    /// Whether interface `iface` is the ENI (by name or MAC), which must
    /// be an ENI at all.
    pub(super) fn matches(&self, eni: EniIndex, iface: &Interface) -> bool {
        !iface.is_loopback
            && self.visibility(eni) != Visibility::Inactive
            && match &self.enis[eni.get()].matcher {
                EniMatch::Interface(name) => *name == iface.name,
                EniMatch::Mac(mac) => iface.mac == Some(*mac),
            }
    }

    /// The ENI learnt for `iface`'s MAC, if any.
    pub(super) fn learnt_for(&self, iface: &Interface) -> Option<EniIndex> {
        let ecs = self.ecs.as_ref()?;
        ecs.by_mac.get(&candidate_mac(iface)?).copied()
    }

    /// A new ENI for an interface whose MAC has not been seen, if ENIs are
    /// learnt from the service: the ENI, and the MAC if the service must be
    /// asked about it.
    pub(super) fn learn(&mut self, iface: &Interface) -> Option<(EniIndex, Option<MacAddr>)> {
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
                    mac
                );
            }
            return None;
        };
        let known = ecs
            .snapshot
            .as_ref()
            .is_some_and(|s| s.enis.contains_key(&mac));
        let ids = self.ecs_ids(mac);
        self.enis.push(Identity {
            ids: Arc::new(ids),
            matcher: EniMatch::Mac(mac),
            meta: if known { Meta::Mapped } else { Meta::Pending },
        });
        self.ecs.as_mut()?.by_mac.insert(mac, eni);
        Some((eni, (!known).then_some(mac)))
    }

    /// See [`super::EniRegistry::pending_macs`].
    pub(super) fn pending_macs(&self) -> Vec<MacAddr> {
        let Some(ecs) = &self.ecs else {
            return Vec::new();
        };
        let mut macs: Vec<MacAddr> = ecs
            .by_mac
            .iter()
            .filter(|(_, &e)| self.enis[e.get()].meta == Meta::Pending)
            .map(|(&mac, _)| mac)
            .collect();
        macs.sort_unstable();
        macs
    }

    pub(super) fn metadata_snapshot(&self) -> Option<&EcsSnapshot> {
        self.ecs.as_ref().and_then(|e| e.snapshot.as_ref())
    }

    pub(super) fn adopt_snapshot(&mut self, snapshot: EcsSnapshot) {
        if let Some(ecs) = &mut self.ecs {
            ecs.snapshot = Some(snapshot);
        }
    }

    /// Takes in what the metadata service said: ENIs waiting for their ids
    /// get them (or are found not to be ENIs). Returns the ENIs whose ids
    /// or standing changed, in index order.
    pub(super) fn apply_metadata(&mut self, update: &SnapshotUpdate) -> Vec<Changed> {
        let Some(ecs) = &mut self.ecs else {
            return Vec::new();
        };
        ecs.snapshot = Some(update.snapshot.clone());
        let mut learnt: Vec<(MacAddr, EniIndex)> =
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
            changed.push(Changed { eni, was_active });
        }
        changed
    }

    /// The ids the service gives the ENI of `mac`, `-` for what it does
    /// not say.
    fn ecs_ids(&self, mac: MacAddr) -> EniIds {
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
}

/// The MAC by which the metadata service could know `iface`: loopback and
/// interfaces without an Ethernet address (tunnels, WireGuard) are no ENIs.
fn candidate_mac(iface: &Interface) -> Option<MacAddr> {
    iface.mac.filter(|m| !iface.is_loopback && !m.is_zero())
}
