//! A config reload keeps the flow table and the open window: what the
//! table attributed and the window's sums carry over, renumbered for the
//! new ENI registry; the new config governs what is emitted from then on.

use super::{key_of, Attribution, FlowTable};
use crate::eni::{EniIndex, EniRegistry};
use crate::flows::window::Clock;
use crate::model::ConntrackEntry;

/// What a reload did to the open window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Renumbered {
    /// Sums of ENIs the new config no longer has: dropped with them.
    pub sums_dropped: usize,
    /// Connections all of whose ENIs are gone: kept, owned by nobody
    /// (as after [`FlowTable::detach`]), so that a later dump or DESTROY
    /// does not count them again from zero.
    pub flows_detached: usize,
}

impl Attribution {
    fn renumber(self, to: &[Option<EniIndex>]) -> Attribution {
        let map = |e: Option<EniIndex>| e.and_then(|e| to.get(e.get()).copied().flatten());
        Attribution {
            inbound: map(self.inbound),
            outbound: map(self.outbound),
        }
    }
}

impl<C: Clock> FlowTable<C> {
    /// A reload replaced the ENI registry: ENI `i` of the old one is
    /// `to[i]` of the new one, or gone (`None`). The open window's sums,
    /// its loss marks and every connection's ENIs are renumbered.
    pub fn renumber_enis(&mut self, to: &[Option<EniIndex>]) -> Renumbered {
        // The usual reload keeps the ENIs as they were: nothing to rebuild
        // (the window's sums can be millions).
        if to.iter().enumerate().all(|(i, &t)| t == EniIndex::new(i)) {
            return Renumbered::default();
        }
        let mut r = Renumbered {
            sums_dropped: self.agg.renumber_enis(to),
            flows_detached: 0,
        };
        if let Some(c) = &mut self.closing {
            // Not expected (a reload finishes a close first).
            r.sums_dropped += c.agg.renumber_enis(to);
        }
        for f in self.flows.values_mut() {
            let was_detached = f.enis.is_detached();
            f.enis = f.enis.renumber(to);
            if f.enis.is_detached() && !was_detached {
                r.flows_detached += 1;
            }
        }
        for (f, _) in self.presumed_lost.values_mut() {
            f.enis = f.enis.renumber(to);
        }
        r
    }

    /// The window length and the table bound of a reloaded config. The
    /// open window keeps its bounds (its end stays the boundary it was
    /// opened with); the new length applies from the next window on. A
    /// smaller bound than the connections tracked now drops none of them:
    /// new ones are refused until the table is under it.
    pub fn set_limits(&mut self, window_secs: u32, max_flows: u64) {
        self.window_secs = window_secs.max(1);
        self.max_flows = usize::try_from(max_flows).unwrap_or(usize::MAX);
    }

    /// One line of the dump a reload makes with the new registry `new`. A
    /// connection the table knows, or one an ENI of the old registry
    /// `old` owned (created since the last dump), is harvested as at any
    /// dump: nothing it carried is lost. One that only the new config
    /// makes ours is baselined: what it carried before the reload was not
    /// captured, as at start-up.
    pub fn on_reload_dump_entry(
        &mut self,
        old: &EniRegistry,
        new: &EniRegistry,
        e: &ConntrackEntry,
    ) {
        let key = key_of(e);
        let ours_before = self.flows.contains_key(&key)
            || self.presumed_lost.contains_key(&key)
            || Attribution::of(old, e).is_some();
        if ours_before {
            self.on_dump_entry(new, e);
        } else {
            self.baseline(new, e);
        }
    }
}

impl<C: Clock> FlowTable<C> {
    /// When the open window began (Unix seconds).
    pub fn window_start(&self) -> i64 {
        self.window.start
    }
}
