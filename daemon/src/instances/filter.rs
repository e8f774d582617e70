//! The traffic filter: which records an instance takes by their action.

use flowlogd_plugin_api::{Action, FlowRecord};

use crate::config::TrafficFilter;

/// Whether an instance with `filter` takes OK records of `action`.
pub fn takes_action(filter: TrafficFilter, action: Action) -> bool {
    match filter {
        TrafficFilter::All => true,
        TrafficFilter::Accept => action == Action::Accept,
        TrafficFilter::Reject => action == Action::Reject,
    }
}

/// Whether an instance with `filter` takes `record`. NODATA and SKIPDATA
/// records go to every instance: they say something about the ENI, not
/// about one kind of traffic.
pub fn takes_record(filter: TrafficFilter, record: &FlowRecord) -> bool {
    match &record.flow {
        None => true,
        Some(f) => takes_action(filter, f.action),
    }
}

/// Whether an ENI that had OK records of these actions in a window had
/// any that an instance with `filter` takes. One that had none is idle as
/// far as that instance's readers can tell (NODATA), whatever traffic the
/// filter dropped.
pub fn had_traffic_for(filter: TrafficFilter, had_accept: bool, had_reject: bool) -> bool {
    (had_accept && takes_action(filter, Action::Accept))
        || (had_reject && takes_action(filter, Action::Reject))
}
