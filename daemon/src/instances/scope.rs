//! Scope: which ENIs a flow log instance captures, from the ENI's ids and
//! its standing with the metadata service. An ENI that appears later, or
//! whose ids the service gives later, is captured from the moment the
//! registry knows it: scopes are read off the registry when a window
//! closes, never kept beside it.

use flowlogd_plugin_api::EniIds;

use crate::config::{Config, FlowLogConfig, TrafficFilter};
use crate::eni::{EniError, EniIndex, EniRegistry, Visibility};

/// Whether instance `fl` captures an ENI with `ids` and `visibility`.
/// ENIs whose ids are unknown and reported with `-` ids (`unmapped =
/// "report"`) go to every instance; ENIs still waiting for their ids
/// (held) or found not to be ENIs go to none.
pub fn captures(fl: &FlowLogConfig, ids: &EniIds, visibility: Visibility) -> bool {
    match visibility {
        Visibility::Scoped => fl.covers(ids),
        Visibility::Everywhere => true,
        Visibility::Held | Visibility::Inactive => false,
    }
}

/// The names of the instances that capture an ENI with `ids` and
/// `visibility`, comma-separated, or `none`.
pub fn captured_by(flow_logs: &[FlowLogConfig], ids: &EniIds, visibility: Visibility) -> String {
    let names: Vec<&str> = flow_logs
        .iter()
        .filter(|fl| captures(fl, ids, visibility))
        .map(|fl| fl.name.as_str())
        .collect();
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

/// One line about an ENI for the log, with the instances of `flow_logs`
/// that capture it.
pub fn describe(reg: &EniRegistry, flow_logs: &[FlowLogConfig], eni: EniIndex) -> String {
    format!(
        "{}; captured by: {}",
        reg.describe(eni),
        captured_by(flow_logs, reg.ids(eni), reg.visibility(eni))
    )
}

/// The registry for `config`, whose log lines about an ENI name the
/// instances that capture it.
///
/// # Errors
/// As [`EniRegistry::new`].
pub fn registry_for(config: &Config) -> Result<EniRegistry, EniError> {
    let flow_logs = config.flow_logs.clone();
    Ok(
        EniRegistry::new(config)?.with_captured_by(Box::new(move |ids, visibility| {
            captured_by(&flow_logs, ids, visibility)
        })),
    )
}

/// Which instance captures which ENI of a registry at one moment (a
/// window's close), both ways.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scopes {
    filters: Vec<TrafficFilter>,
    /// Per instance, the ENIs it captures, in index order.
    enis: Vec<Vec<EniIndex>>,
    /// Per ENI (by index), the instances that capture it, in config order.
    instances: Vec<Vec<usize>>,
}

impl Scopes {
    /// The scopes of `flow_logs` over the ENIs of `reg` as they are now.
    pub fn of(flow_logs: &[FlowLogConfig], reg: &EniRegistry) -> Scopes {
        let mut scopes = Scopes {
            filters: flow_logs.iter().map(|fl| fl.traffic).collect(),
            enis: vec![Vec::new(); flow_logs.len()],
            instances: Vec::with_capacity(reg.len()),
        };
        for eni in reg.indices() {
            let (ids, visibility) = (reg.ids(eni), reg.visibility(eni));
            let mut of_eni = Vec::new();
            for (i, fl) in flow_logs.iter().enumerate() {
                if captures(fl, ids, visibility) {
                    scopes.enis[i].push(eni);
                    of_eni.push(i);
                }
            }
            scopes.instances.push(of_eni);
        }
        scopes
    }

    /// Number of flow log instances.
    pub fn instance_count(&self) -> usize {
        self.filters.len()
    }

    /// The instances (indices into `config.flow_logs`) that capture the
    /// ENI, in config order; none for an ENI the registry did not have.
    pub fn instances_for(&self, eni: EniIndex) -> &[usize] {
        self.instances.get(eni.get()).map_or(&[], Vec::as_slice)
    }

    /// The ENIs that instance `instance` captures, in index order.
    ///
    /// # Panics
    /// If there is no such instance.
    pub fn enis_of_instance(&self, instance: usize) -> &[EniIndex] {
        &self.enis[instance]
    }

    /// The traffic filter of instance `instance`.
    ///
    /// # Panics
    /// If there is no such instance.
    pub fn traffic_of_instance(&self, instance: usize) -> TrafficFilter {
        self.filters[instance]
    }
}
