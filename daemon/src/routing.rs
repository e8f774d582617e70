//! Which sinks a record goes to: through every flow log instance whose
//! scope covers the record's ENI and whose traffic filter takes it.

use std::sync::Arc;

use flowlogd_plugin_api::{Action, FlowRecord};

use crate::config::{Config, FlowLogConfig, TrafficFilter};
use crate::sinks::Dispatcher;

/// Whether an instance with `filter` takes `record`. NODATA and SKIPDATA
/// records go to every instance: they say something about the ENI, not
/// about one kind of traffic.
pub fn traffic_accepts(filter: TrafficFilter, record: &FlowRecord) -> bool {
    match (&record.flow, filter) {
        (None, _) | (_, TrafficFilter::All) => true,
        (Some(f), TrafficFilter::Accept) => f.action == Action::Accept,
        (Some(f), TrafficFilter::Reject) => f.action == Action::Reject,
    }
}

/// Whether flow log `fl` takes `record` (scope and traffic filter).
pub fn instance_takes(fl: &FlowLogConfig, record: &FlowRecord) -> bool {
    fl.covers(&record.eni) && traffic_accepts(fl.traffic, record)
}

/// Sends each instance's records to that instance's sinks: one batch per
/// sink, holding every record of every instance that names it (a record
/// that two instances send to the same sink is written twice, once per
/// instance, as the cloud's flow logs do).
pub fn dispatch_instance_records(
    config: &Config,
    dispatcher: &Dispatcher,
    per_instance: Vec<(usize, Vec<FlowRecord>)>,
) {
    let mut per_sink: Vec<Vec<FlowRecord>> = vec![Vec::new(); config.sinks.len()];
    for (instance, records) in per_instance {
        let Some(fl) = config.flow_logs.get(instance) else {
            continue;
        };
        for sink_name in &fl.sinks {
            if let Some(i) = config.sinks.iter().position(|s| &s.name == sink_name) {
                per_sink[i].extend(records.iter().cloned());
            }
        }
    }
    for (i, records) in per_sink.into_iter().enumerate() {
        if records.is_empty() {
            continue;
        }
        if let Some(d) = dispatcher.sink_index(&config.sinks[i].name) {
            dispatcher.send(d, Arc::new(records));
        }
    }
}

/// Routes free-standing records (replay) through the configured instances.
pub fn route_records(config: &Config, records: &[FlowRecord]) -> Vec<(usize, Vec<FlowRecord>)> {
    config
        .flow_logs
        .iter()
        .enumerate()
        .map(|(i, fl)| {
            (
                i,
                records
                    .iter()
                    .filter(|r| instance_takes(fl, r))
                    .cloned()
                    .collect::<Vec<_>>(),
            )
        })
        .filter(|(_, r)| !r.is_empty())
        .collect()
}
