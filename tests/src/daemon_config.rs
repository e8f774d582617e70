//! The daemon's config for a test, built table by table: the `[daemon]`
//! table every test needs (plugin and state directories, debug log, a short
//! shutdown), the test's own `[daemon]` keys, then its ENIs, flow logs and
//! sinks. One writer of this TOML, so a test says only what is particular
//! to it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// A daemon config under construction. [`DaemonConfig::text`] is the file.
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    plugin_dir: PathBuf,
    state_dir: PathBuf,
    shutdown_timeout_secs: u32,
    daemon_keys: String,
    body: String,
}

impl DaemonConfig {
    /// A config loading plugins from `plugin_dir`, with `state_dir` the
    /// directory `state/` beside it: daemons of one test share it (a
    /// restart finds its handoff), tests running in parallel never do.
    pub fn new(plugin_dir: &Path) -> DaemonConfig {
        DaemonConfig {
            plugin_dir: plugin_dir.to_owned(),
            state_dir: beside(plugin_dir, "state"),
            shutdown_timeout_secs: 5,
            daemon_keys: String::new(),
            body: String::new(),
        }
    }

    /// The state directory is `<name>/` beside the plugin directory
    /// instead: for a second daemon running at the same time (a sink's
    /// spool is one daemon's at a time).
    pub fn state_dir(mut self, name: &str) -> DaemonConfig {
        self.state_dir = beside(&self.plugin_dir, name);
        self
    }

    /// `shutdown_timeout_secs` in `[daemon]` (5 unless set: tests wait for
    /// a stop, so a short one).
    pub fn shutdown_timeout_secs(mut self, secs: u32) -> DaemonConfig {
        self.shutdown_timeout_secs = secs;
        self
    }

    /// `capture_window_secs` in `[daemon]`.
    pub fn window_secs(self, secs: i64) -> DaemonConfig {
        self.daemon_key(&format!("capture_window_secs = {secs}"))
    }

    /// More `[daemon]` keys, as TOML lines (`sink_queue_records = 2000`).
    pub fn daemon_key(mut self, lines: &str) -> DaemonConfig {
        self.daemon_keys.push_str(lines);
        self.daemon_keys.push('\n');
        self
    }

    /// One `[[eni]]` table (see [`crate::eni_toml`]).
    pub fn eni(mut self, id: &str, interface: &str, vpc: &str) -> DaemonConfig {
        self.body.push_str(&crate::eni_toml(id, interface, vpc));
        self
    }

    /// One `[[flow_log]]` table.
    pub fn flow_log(mut self, flow_log: FlowLog) -> DaemonConfig {
        self.body.push_str(&flow_log.toml());
        self
    }

    /// A file sink `name` writing JSON lines to `path`.
    pub fn json_sink(self, name: &str, path: &Path) -> DaemonConfig {
        self.toml(&format!(
            "[sinks.{name}]\nplugin = \"file\"\npath = \"{}\"\nformat = \"json\"\n\n",
            path.display()
        ))
    }

    /// Tables written out by the test (a sink with particular options,
    /// `[metadata]`), appended as they are.
    pub fn toml(mut self, tables: &str) -> DaemonConfig {
        self.body.push_str(tables);
        self
    }

    /// The config file's text.
    pub fn text(&self) -> String {
        format!(
            "{}{}\n{}",
            daemon_table(
                &self.plugin_dir,
                &self.state_dir,
                self.shutdown_timeout_secs
            ),
            self.daemon_keys,
            self.body
        )
    }

    /// Writes the config to `path` and returns the path.
    #[track_caller]
    pub fn write(&self, path: &Path) -> PathBuf {
        std::fs::write(path, self.text())
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path.to_owned()
    }
}

/// One `[[flow_log]]` table: its name, scope and traffic, and its sinks.
#[derive(Clone, Debug)]
pub struct FlowLog {
    name: String,
    resource_type: &'static str,
    resource_id: String,
    traffic: Option<String>,
    sinks: Vec<String>,
}

impl FlowLog {
    /// A flow log of every ENI of VPC `vpc`.
    pub fn vpc(name: &str, vpc: &str) -> FlowLog {
        FlowLog::new(name, "vpc", vpc)
    }

    /// A flow log of ENI `eni` only.
    pub fn eni(name: &str, eni: &str) -> FlowLog {
        FlowLog::new(name, "eni", eni)
    }

    fn new(name: &str, resource_type: &'static str, resource_id: &str) -> FlowLog {
        FlowLog {
            name: name.to_owned(),
            resource_type,
            resource_id: resource_id.to_owned(),
            traffic: None,
            sinks: Vec::new(),
        }
    }

    /// `traffic = "<traffic>"` (`all`, `accept`, `reject`); without it the
    /// daemon's default.
    pub fn traffic(mut self, traffic: &str) -> FlowLog {
        self.traffic = Some(traffic.to_owned());
        self
    }

    /// Records go to the sinks `names`.
    pub fn sinks(mut self, names: &[&str]) -> FlowLog {
        self.sinks.extend(names.iter().map(|s| (*s).to_owned()));
        self
    }

    fn toml(&self) -> String {
        let mut t = format!(
            "[[flow_log]]\nname = \"{}\"\nresource_type = \"{}\"\nresource_id = \"{}\"\n",
            self.name, self.resource_type, self.resource_id
        );
        if let Some(traffic) = &self.traffic {
            let _ = writeln!(t, "traffic = \"{traffic}\"");
        }
        let sinks: Vec<String> = self.sinks.iter().map(|s| format!("\"{s}\"")).collect();
        let _ = writeln!(t, "sinks = [{}]\n", sinks.join(", "));
        t
    }
}

/// `<name>` beside `dir`.
fn beside(dir: &Path, name: &str) -> PathBuf {
    dir.parent().unwrap_or(dir).join(name)
}

/// The `[daemon]` table's keys every test config has.
fn daemon_table(plugin_dir: &Path, state_dir: &Path, shutdown_timeout_secs: u32) -> String {
    format!(
        "[daemon]\nplugin_dir = \"{}\"\nstate_dir = \"{}\"\nlog_level = \"debug\"\n\
         shutdown_timeout_secs = {shutdown_timeout_secs}\n",
        plugin_dir.display(),
        state_dir.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_tables_in_order() {
        let text = DaemonConfig::new(Path::new("/t/plugins"))
            .window_secs(2)
            .daemon_key("sink_queue_records = 2000")
            .eni("eni-a", "eth-b", "vpc-1")
            .flow_log(FlowLog::vpc("all", "vpc-1").traffic("all").sinks(&["out"]))
            .flow_log(FlowLog::eni("one", "eni-a").sinks(&["out", "other"]))
            .json_sink("out", Path::new("/t/a.jsonl"))
            .text();
        assert_eq!(
            text,
            "[daemon]\nplugin_dir = \"/t/plugins\"\nstate_dir = \"/t/state\"\nlog_level = \"debug\"\n\
             shutdown_timeout_secs = 5\ncapture_window_secs = 2\nsink_queue_records = 2000\n\n\
             [[eni]]\nid = \"eni-a\"\ninterface = \"eth-b\"\nvswitch_id = \"vsw-test\"\nvpc_id = \"vpc-1\"\n\
             vm_id = \"i-test\"\naccount_id = \"1234567890\"\n\n\
             [[flow_log]]\nname = \"all\"\nresource_type = \"vpc\"\nresource_id = \"vpc-1\"\ntraffic = \"all\"\n\
             sinks = [\"out\"]\n\n\
             [[flow_log]]\nname = \"one\"\nresource_type = \"eni\"\nresource_id = \"eni-a\"\n\
             sinks = [\"out\", \"other\"]\n\n\
             [sinks.out]\nplugin = \"file\"\npath = \"/t/a.jsonl\"\nformat = \"json\"\n\n"
        );
    }

    #[test]
    fn a_second_daemon_gets_its_own_state_dir() {
        let text = DaemonConfig::new(Path::new("/t/plugins"))
            .state_dir("state-b")
            .text();
        assert!(text.contains("state_dir = \"/t/state-b\"\n"), "{text}");
    }
}
