//! The file's shape, as serde reads it. Values that later checks point at
//! are `Spanned`, so an error can name their line and column. Defaults are
//! `const fn`s so the documented defaults live in one place.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub daemon: RawDaemon,
    #[serde(default)]
    pub metadata: RawMetadata,
    #[serde(default)]
    pub metrics: RawMetrics,
    #[serde(default)]
    pub eni: Vec<Spanned<RawEni>>,
    #[serde(default)]
    pub flow_log: Vec<Spanned<RawFlowLog>>,
    /// `[sinks.<name>]`: `plugin` plus the plugin's own options, which only
    /// the plugin can validate; keys keep their spans so the plugin's
    /// errors can be pointed at.
    #[serde(default)]
    pub sinks: RawSinks,
    /// `[enforcement]`: how the security groups are enforced; only used
    /// when a `[[security_group]]` exists.
    #[serde(default)]
    pub enforcement: Option<Spanned<RawEnforcement>>,
    #[serde(default)]
    pub security_group: Vec<Spanned<RawSecurityGroup>>,
}

/// `[sinks.<name>]` tables: name -> (key -> value), every part located.
pub type RawSinks = BTreeMap<Spanned<String>, Spanned<RawSinkTable>>;
pub type RawSinkTable = BTreeMap<Spanned<String>, Spanned<toml::Value>>;

pub const fn default_capture_window_secs() -> u32 {
    600
}
pub const fn default_max_flow_logs() -> u32 {
    10
}
pub const fn default_max_flows() -> u64 {
    1_000_000
}
pub const fn default_true() -> bool {
    true
}
/// Records a sink's queue holds before new records are counted as dropped:
/// about 50 MB of records, several windows of a busy VM.
pub const fn default_sink_queue_records() -> u64 {
    262_144
}
/// Each sink's durable spool on disk: about 5M records of spilled
/// windows, hours of a busy VM's output while its sink is down.
pub const fn default_spool_max_bytes() -> u64 {
    1 << 30
}
/// The windows' sums: at this bound they are emitted early as records of
/// the same window, so a flood of distinct 5-tuples cannot exhaust memory.
/// Each window gets half, which holds about 1.8M IPv4 sums (a table of 2^21
/// slots of 33 bytes, which may not double past its half).
pub const fn default_window_memory_bytes() -> u64 {
    256 << 20
}
fn spanned_spool_max_bytes() -> Spanned<i64> {
    Spanned::new(0..0, default_spool_max_bytes() as i64)
}
fn spanned_window_memory_bytes() -> Spanned<i64> {
    Spanned::new(0..0, default_window_memory_bytes() as i64)
}
/// How long shutdown waits for sinks to deliver what they hold.
pub const fn default_shutdown_timeout_secs() -> u32 {
    10
}
pub fn default_plugin_dir() -> Spanned<String> {
    Spanned::new(0..0, "/usr/lib/flowlogd/sinks".into())
}
pub fn default_state_dir() -> Spanned<String> {
    Spanned::new(0..0, "/var/lib/flowlogd".into())
}
pub fn default_nflog_groups() -> Vec<Spanned<i64>> {
    Vec::new()
}
pub fn default_log_level() -> Spanned<String> {
    Spanned::new(0..0, "info".into())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDaemon {
    #[serde(default = "spanned_window")]
    pub capture_window_secs: Spanned<i64>,
    #[serde(default = "default_plugin_dir")]
    pub plugin_dir: Spanned<String>,
    #[serde(default = "default_state_dir")]
    pub state_dir: Spanned<String>,
    #[serde(default = "default_nflog_groups")]
    pub nflog_groups: Vec<Spanned<i64>>,
    #[serde(default = "spanned_max_flow_logs")]
    pub max_flow_logs: Spanned<i64>,
    #[serde(default = "spanned_max_flows")]
    pub max_flows: Spanned<i64>,
    #[serde(default = "default_log_level")]
    pub log_level: Spanned<String>,
    #[serde(default = "default_true")]
    pub enable_conntrack_accounting: bool,
    #[serde(default = "default_true")]
    pub install_tracking_table: bool,
    #[serde(default = "spanned_sink_queue_records")]
    pub sink_queue_records: Spanned<i64>,
    #[serde(default = "spanned_shutdown_timeout")]
    pub shutdown_timeout_secs: Spanned<i64>,
    #[serde(default = "spanned_spool_max_bytes")]
    pub spool_max_bytes: Spanned<i64>,
    #[serde(default = "spanned_window_memory_bytes")]
    pub window_memory_bytes: Spanned<i64>,
    #[serde(default = "spanned_conntrack_rcvbuf")]
    pub conntrack_rcvbuf_bytes: Spanned<i64>,
    #[serde(default = "default_true")]
    pub conntrack_reliable_events: bool,
    #[serde(default = "spanned_rcvbuf_max")]
    pub rcvbuf_max_bytes: Spanned<i64>,
    #[serde(default = "default_true")]
    pub nflog_require_prefix: bool,
    #[serde(default = "spanned_nflog_rcvbuf")]
    pub nflog_rcvbuf_bytes: Spanned<i64>,
    #[serde(default = "spanned_tcp_flags_nflog_group")]
    pub tcp_flags_nflog_group: Spanned<i64>,
    /// The user to run as once start-up is done (started as root); unset:
    /// the user it was started as.
    #[serde(default)]
    pub user: Option<Spanned<String>>,
}

/// The NFLOG socket's receive buffer: a flood of dropped packets (a port
/// scan, a SYN flood) arrives faster than any other input.
pub const fn default_nflog_rcvbuf_bytes() -> u64 {
    32 << 20
}
fn spanned_nflog_rcvbuf() -> Spanned<i64> {
    Spanned::new(0..0, default_nflog_rcvbuf_bytes() as i64)
}

/// The NFLOG group of the daemon's own tcp-flags rules (used only when some
/// sink's field list names `tcp-flags`). High, so that it is out of the way
/// of the small numbers firewalls' drop rules usually log to.
pub const fn default_tcp_flags_nflog_group() -> u16 {
    65000
}
fn spanned_tcp_flags_nflog_group() -> Spanned<i64> {
    Spanned::new(0..0, default_tcp_flags_nflog_group().into())
}

/// The conntrack event socket's receive buffer. DESTROY events arrive in
/// bursts when the kernel's garbage collector reaps expired entries (tens
/// of thousands at once); 64 MiB holds several hundred thousand.
pub const fn default_conntrack_rcvbuf_bytes() -> u64 {
    64 << 20
}
/// After an overrun a socket's receive buffer is doubled, up to this.
pub const fn default_rcvbuf_max_bytes() -> u64 {
    256 << 20
}
fn spanned_rcvbuf_max() -> Spanned<i64> {
    Spanned::new(0..0, default_rcvbuf_max_bytes() as i64)
}
fn spanned_conntrack_rcvbuf() -> Spanned<i64> {
    Spanned::new(0..0, default_conntrack_rcvbuf_bytes() as i64)
}

fn spanned_window() -> Spanned<i64> {
    Spanned::new(0..0, default_capture_window_secs().into())
}
fn spanned_max_flow_logs() -> Spanned<i64> {
    Spanned::new(0..0, default_max_flow_logs().into())
}
fn spanned_max_flows() -> Spanned<i64> {
    Spanned::new(0..0, default_max_flows() as i64)
}
fn spanned_sink_queue_records() -> Spanned<i64> {
    Spanned::new(0..0, default_sink_queue_records() as i64)
}
fn spanned_shutdown_timeout() -> Spanned<i64> {
    Spanned::new(0..0, default_shutdown_timeout_secs().into())
}

impl Default for RawDaemon {
    fn default() -> Self {
        RawDaemon {
            capture_window_secs: spanned_window(),
            plugin_dir: default_plugin_dir(),
            state_dir: default_state_dir(),
            nflog_groups: default_nflog_groups(),
            max_flow_logs: spanned_max_flow_logs(),
            max_flows: spanned_max_flows(),
            log_level: default_log_level(),
            enable_conntrack_accounting: true,
            install_tracking_table: true,
            sink_queue_records: spanned_sink_queue_records(),
            shutdown_timeout_secs: spanned_shutdown_timeout(),
            spool_max_bytes: spanned_spool_max_bytes(),
            window_memory_bytes: spanned_window_memory_bytes(),
            conntrack_rcvbuf_bytes: spanned_conntrack_rcvbuf(),
            conntrack_reliable_events: true,
            rcvbuf_max_bytes: spanned_rcvbuf_max(),
            nflog_require_prefix: true,
            nflog_rcvbuf_bytes: spanned_nflog_rcvbuf(),
            tcp_flags_nflog_group: spanned_tcp_flags_nflog_group(),
            user: None,
        }
    }
}

/// `[metadata]`: where ENI ids come from. Keys other than `source` are
/// `Option`s so that validation can tell "not written" from a default (they
/// only mean something with `source = "ecs"`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetadata {
    #[serde(default = "default_metadata_source")]
    pub source: Spanned<String>,
    pub base_url: Option<Spanned<String>>,
    pub ttl_secs: Option<Spanned<i64>>,
    pub unmapped: Option<Spanned<String>>,
}

fn default_metadata_source() -> Spanned<String> {
    Spanned::new(0..0, "static".into())
}

impl Default for RawMetadata {
    fn default() -> Self {
        RawMetadata {
            source: default_metadata_source(),
            base_url: None,
            ttl_secs: None,
            unmapped: None,
        }
    }
}

/// `[metrics]`: where the Prometheus endpoint listens.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    #[serde(default = "default_metrics_listen")]
    pub listen: Spanned<String>,
}

/// On by default, on loopback only: the counters say nothing about flows,
/// but nothing off the machine needs to read them unless told.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9750";

fn default_metrics_listen() -> Spanned<String> {
    Spanned::new(0..0, DEFAULT_METRICS_LISTEN.into())
}

impl Default for RawMetrics {
    fn default() -> Self {
        RawMetrics {
            listen: default_metrics_listen(),
        }
    }
}

/// The Alibaba Cloud ECS instance metadata service, as every ECS instance
/// reaches it (a link-local style address served by the hypervisor).
pub const DEFAULT_ECS_BASE_URL: &str = "http://100.100.100.200/latest/meta-data/";
/// How long fetched metadata is used before it is fetched again.
pub const fn default_ecs_ttl_secs() -> u32 {
    300
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEni {
    pub id: Spanned<String>,
    pub interface: Option<Spanned<String>>,
    pub mac: Option<Spanned<String>>,
    pub vswitch_id: Spanned<String>,
    pub vpc_id: Spanned<String>,
    pub vm_id: Spanned<String>,
    pub account_id: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFlowLog {
    pub name: Spanned<String>,
    pub resource_type: Spanned<String>,
    pub resource_id: Spanned<String>,
    #[serde(default = "default_traffic")]
    pub traffic: Spanned<String>,
    pub sinks: Spanned<Vec<Spanned<String>>>,
}

fn default_traffic() -> Spanned<String> {
    Spanned::new(0..0, "all".into())
}

/// The NFQUEUE the security groups' first packets go to when
/// `[enforcement] queue` is not set.
pub const fn default_enforcement_queue() -> u16 {
    100
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEnforcement {
    pub queue: Option<Spanned<i64>>,
    pub on_daemon_down: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSecurityGroup {
    pub id: Spanned<String>,
    /// A list of ENI ids or the string `"all"`: a `Value`, checked by hand,
    /// since serde's untagged enums lose the spans errors point at.
    pub enis: Spanned<toml::Value>,
    #[serde(default)]
    pub rule: Vec<Spanned<RawSgRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSgRule {
    pub id: Spanned<String>,
    pub direction: Spanned<String>,
    pub policy: Spanned<String>,
    pub priority: Spanned<i64>,
    pub protocol: Spanned<String>,
    pub port_range: Spanned<String>,
    pub cidr: Spanned<String>,
    pub description: Option<Spanned<String>>,
}
