//! Which sinks an instance's records go to: the sinks it names, one batch
//! per sink per chunk.

use std::sync::Arc;

use flowlogd_plugin_api::FlowRecord;

use super::drain::WindowChunk;
use super::filter::takes_record;
use super::scope::captures;
use crate::config::{Config, FlowLogConfig};
use crate::eni::Visibility;
use crate::sinks::Dispatcher;

/// Whether flow log `fl` takes a free-standing `record` (scope and traffic
/// filter): its ids are known, as an ENI's whose metadata is.
fn instance_takes(fl: &FlowLogConfig, record: &FlowRecord) -> bool {
    captures(fl, &record.eni, Visibility::Scoped) && takes_record(fl.traffic, record)
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
    let chunk = WindowChunk {
        instances: per_instance
            .into_iter()
            .map(|(i, records)| (i, Arc::new(records)))
            .collect(),
    };
    dispatch_chunk(config, dispatcher, &chunk);
}

/// Sends one chunk of a window's records to the sinks of the instances
/// that take them, as [`dispatch_instance_records`] does, without copying
/// where it can: a sink that only one instance's batch goes to gets that
/// batch's `Arc` itself.
pub fn dispatch_chunk(config: &Config, dispatcher: &Dispatcher, chunk: &WindowChunk) {
    for (sink, records) in sink_batches(config, chunk) {
        if let Some(d) = dispatcher.sink_index(&config.sinks[sink].name) {
            dispatcher.send(d, records);
        }
    }
}

/// Per sink (index into `config.sinks`, in that order) with anything to
/// write: the batches of the instances naming it, concatenated if there
/// are several, the batch itself if there is one.
fn sink_batches(config: &Config, chunk: &WindowChunk) -> Vec<(usize, Arc<Vec<FlowRecord>>)> {
    let mut per_sink: Vec<Vec<&Arc<Vec<FlowRecord>>>> = vec![Vec::new(); config.sinks.len()];
    for (instance, records) in &chunk.instances {
        let Some(fl) = config.flow_logs.get(*instance) else {
            continue;
        };
        if records.is_empty() {
            continue;
        }
        for sink_name in &fl.sinks {
            if let Some(i) = config.sinks.iter().position(|s| &s.name == sink_name) {
                per_sink[i].push(records);
            }
        }
    }
    per_sink
        .into_iter()
        .enumerate()
        .filter_map(|(i, batches)| match batches.as_slice() {
            [] => None,
            [one] => Some((i, Arc::clone(one))),
            several => {
                let n = several.iter().map(|b| b.len()).sum();
                let mut all = Vec::with_capacity(n);
                for b in several {
                    all.extend(b.iter().cloned());
                }
                Some((i, Arc::new(all)))
            }
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use flowlogd_plugin_api::{EniIds, LogStatus};

    use super::*;

    /// Instances 0 and 1 write to sink `both`; instance 1 also to `one`;
    /// instance 2 to `other`.
    const CONFIG: &str = r#"
[[eni]]
id = "eni-a"
interface = "eth0"
vswitch_id = "vsw-1"
vpc_id = "vpc-1"
vm_id = "i-1"
account_id = "123"

[[flow_log]]
name = "first"
resource_type = "vpc"
resource_id = "vpc-1"
sinks = ["both"]

[[flow_log]]
name = "second"
resource_type = "vpc"
resource_id = "vpc-1"
sinks = ["both", "one"]

[[flow_log]]
name = "third"
resource_type = "vpc"
resource_id = "vpc-1"
sinks = ["other"]

[sinks.both]
plugin = "file"
path = "/tmp/both.log"

[sinks.one]
plugin = "file"
path = "/tmp/one.log"

[sinks.other]
plugin = "file"
path = "/tmp/other.log"
"#;

    fn batch(eni_id: &str, n: usize) -> Arc<Vec<FlowRecord>> {
        let eni = Arc::new(EniIds {
            eni_id: eni_id.into(),
            ..EniIds::default()
        });
        Arc::new(
            (0..n)
                .map(|_| FlowRecord {
                    eni: Arc::clone(&eni),
                    flow: None,
                    start: 0,
                    end: 600,
                    log_status: LogStatus::NoData,
                    rule: None,
                })
                .collect(),
        )
    }

    #[test]
    fn a_sink_fed_by_one_instance_gets_its_batch_without_a_copy() {
        let config = crate::config::parse(Path::new("/etc/flowlogd.toml"), CONFIG).unwrap();
        let names: Vec<&str> = config.sinks.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["both", "one", "other"]);
        let (first, second, third) = (batch("eni-1", 2), batch("eni-2", 3), batch("eni-3", 1));
        let chunk = WindowChunk {
            instances: vec![
                (0, Arc::clone(&first)),
                (1, Arc::clone(&second)),
                (2, Arc::clone(&third)),
            ],
        };
        let out = sink_batches(&config, &chunk);
        let shape: Vec<(usize, usize)> = out.iter().map(|(s, b)| (*s, b.len())).collect();
        assert_eq!(shape, [(0, 5), (1, 3), (2, 1)]);
        // `both`: the two instances' records, each once per instance.
        let ids: Vec<&str> = out[0].1.iter().map(|r| r.eni.eni_id.as_str()).collect();
        assert_eq!(ids, ["eni-1", "eni-1", "eni-2", "eni-2", "eni-2"]);
        assert!(Arc::ptr_eq(&out[1].1, &second));
        assert!(Arc::ptr_eq(&out[2].1, &third));

        // One Vec shared by two instances that both write to `both`: the
        // sink still gets it twice, once per instance.
        let shared = WindowChunk {
            instances: vec![(0, Arc::clone(&first)), (1, Arc::clone(&first))],
        };
        let out = sink_batches(&config, &shared);
        let shape: Vec<(usize, usize)> = out.iter().map(|(s, b)| (*s, b.len())).collect();
        assert_eq!(shape, [(0, 4), (1, 2)]);
        assert!(Arc::ptr_eq(&out[1].1, &first));

        // Nothing for an instance the config does not have, nor empty batches.
        let stray = WindowChunk {
            instances: vec![(7, Arc::clone(&first)), (2, Arc::new(Vec::new()))],
        };
        assert!(sink_batches(&config, &stray).is_empty());
    }
}
