//! Raw file -> validated plain structs, with an error for the first problem
//! found, naming file, line, column and key.

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use flowlogd_plugin_api::fields::FIELDS_KEY;
use flowlogd_plugin_api::{EniIds, Field, FieldList};
use toml::Spanned;

use super::location::key_path_at;
use super::read::read_config;
use super::schema::*;
use super::security_groups::{validate_security_groups, EnforcementConfig, SecurityGroupConfig};
use super::sink_fields::field_list_problem;
use super::{ConfigError, Location};
use crate::http_url::HttpUrl;
use crate::ids::{check_id, IdError};
use crate::model::MacAddr;

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub path: PathBuf,
    pub daemon: DaemonConfig,
    /// Where ENI ids come from besides the `[[eni]]` tables.
    pub metadata: MetadataSource,
    /// `[metrics] listen`: the Prometheus endpoint's address; `None` (an
    /// empty string in the file) turns it off.
    pub metrics_listen: Option<std::net::SocketAddr>,
    pub enis: Vec<EniConfig>,
    pub flow_logs: Vec<FlowLogConfig>,
    /// Sorted by name.
    pub sinks: Vec<SinkConfig>,
    /// `[enforcement]` (its defaults when absent).
    pub enforcement: EnforcementConfig,
    /// `[[security_group]]` tables in file order; none: nothing enforced.
    pub security_groups: Vec<SecurityGroupConfig>,
}

#[derive(Clone, Debug)]
pub struct DaemonConfig {
    pub capture_window_secs: u32,
    pub plugin_dir: PathBuf,
    pub state_dir: PathBuf,
    pub nflog_groups: Vec<u16>,
    pub max_flow_logs: u32,
    pub max_flows: u64,
    pub log_level: log::LevelFilter,
    /// Turn on nf_conntrack_acct / nf_conntrack_timestamp if they are off.
    pub enable_conntrack_accounting: bool,
    /// Install the daemon's own nftables table so that the namespace tracks
    /// connections; off when the host firewall already references `ct`.
    pub install_tracking_table: bool,
    pub sink_queue_records: u64,
    pub shutdown_timeout_secs: u32,
    /// Cap of each sink's spool directory (`state_dir/spool/<sink>`).
    pub spool_max_bytes: u64,
    /// Cap of the open window's sums; reached, they are emitted early.
    pub window_memory_bytes: u64,
    /// Receive buffer of the conntrack event socket.
    pub conntrack_rcvbuf_bytes: u64,
    /// Ask the kernel to keep a connection until its DESTROY event is
    /// delivered (NETLINK_BROADCAST_ERROR), so final counters are never lost.
    pub conntrack_reliable_events: bool,
    /// Ignore (and count) NFLOG packets whose prefix is not
    /// `flowlogd:<security-group>:<rule>`.
    pub nflog_require_prefix: bool,
    pub nflog_rcvbuf_bytes: u64,
    /// The NFLOG group the daemon's tcp-flags rules log TCP control packets
    /// to; bound only when some sink's field list names `tcp-flags`
    /// ([`Config::tcp_flags_group`]).
    pub tcp_flags_nflog_group: u16,
    /// Receive buffers grow (doubling) after an overrun, up to this.
    pub rcvbuf_max_bytes: u64,
    /// The user the daemon switches to after start-up, if one is set.
    pub user: Option<DaemonUser>,
}

/// `daemon.user`, as the system's user database has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaemonUser {
    pub name: String,
    pub uid: u32,
    /// The user's primary group.
    pub gid: u32,
}

/// `[metadata] source`: the `[[eni]]` tables only, or those plus the ECS
/// instance metadata service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetadataSource {
    Static,
    Ecs(EcsConfig),
}

/// The ECS instance metadata service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EcsConfig {
    /// `.../latest/meta-data/`, always ending in `/`.
    pub base_url: HttpUrl,
    /// Fetched metadata is fetched again after this long.
    pub ttl_secs: u32,
    pub unmapped: Unmapped,
}

/// What becomes of an interface that the metadata service does not
/// describe (yet).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unmapped {
    /// Not an ENI: no records (its records wait while the service has not
    /// answered yet).
    Ignore,
    /// An ENI with `-` for the ids nobody knows, captured by every flow log
    /// instance (its scope is unknown).
    Report,
}

impl Unmapped {
    pub fn as_str(self) -> &'static str {
        match self {
            Unmapped::Ignore => "ignore",
            Unmapped::Report => "report",
        }
    }
}

/// How an `[[eni]]` finds its interface.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum EniMatch {
    Interface(String),
    Mac(MacAddr),
}

#[derive(Clone, Debug)]
pub struct EniConfig {
    pub ids: EniIds,
    pub matcher: EniMatch,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResourceType {
    Eni,
    VSwitch,
    Vpc,
}

impl ResourceType {
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceType::Eni => "eni",
            ResourceType::VSwitch => "vswitch",
            ResourceType::Vpc => "vpc",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrafficFilter {
    All,
    Accept,
    Reject,
}

impl TrafficFilter {
    pub fn as_str(self) -> &'static str {
        match self {
            TrafficFilter::All => "all",
            TrafficFilter::Accept => "accept",
            TrafficFilter::Reject => "reject",
        }
    }
}

#[derive(Clone, Debug)]
pub struct FlowLogConfig {
    pub name: String,
    pub resource_type: ResourceType,
    pub resource_id: String,
    pub traffic: TrafficFilter,
    pub sinks: Vec<String>,
}

impl FlowLogConfig {
    /// Whether this instance captures the ENI with these ids.
    pub fn covers(&self, eni: &EniIds) -> bool {
        let id = match self.resource_type {
            ResourceType::Eni => &eni.eni_id,
            ResourceType::VSwitch => &eni.vswitch_id,
            ResourceType::Vpc => &eni.vpc_id,
        };
        *id == self.resource_id
    }
}

#[derive(Clone, Debug)]
pub struct SinkConfig {
    pub name: String,
    /// As written: a name in `plugin_dir` or an absolute path.
    pub plugin: String,
    /// Everything but `plugin`, for the plugin to validate.
    pub options: toml::Table,
    /// Where each option key is, to point at it when the plugin objects.
    pub option_locations: BTreeMap<String, Location>,
    /// Where `[sinks.<name>]` is.
    pub location: Location,
}

impl SinkConfig {
    /// Whether this sink's field list names `tcp-flags` (which needs the
    /// daemon's own NFLOG rules).
    pub fn wants_tcp_flags(&self) -> bool {
        self.field_list().fields().contains(&Field::TcpFlags)
    }
}

impl Config {
    /// The NFLOG group of the daemon's tcp-flags rules, if some sink's
    /// field list names `tcp-flags`: the capture follows from the field
    /// lists (no switch of its own), since every control packet logged
    /// costs a copy to userspace.
    pub fn tcp_flags_group(&self) -> Option<u16> {
        self.sinks
            .iter()
            .any(SinkConfig::wants_tcp_flags)
            .then_some(self.daemon.tcp_flags_nflog_group)
    }

    /// With `source = "ecs"`: whether interfaces without metadata are
    /// ignored (their records held while the service has not answered).
    pub fn metadata_unmapped_is_ignore(&self) -> bool {
        match &self.metadata {
            MetadataSource::Ecs(e) => e.unmapped == Unmapped::Ignore,
            MetadataSource::Static => true,
        }
    }

    /// An error about `key` of sink `sink`, located in the file: used when a
    /// plugin rejects its options at start-up.
    pub fn sink_option_error(
        &self,
        sink: &SinkConfig,
        key: Option<&str>,
        message: &str,
    ) -> ConfigError {
        let location = key
            .and_then(|k| sink.option_locations.get(k).copied())
            .or(Some(sink.location));
        ConfigError::Invalid {
            path: self.path.clone(),
            location,
            key: Some(match key {
                Some(k) => format!("sinks.{}.{k}", sink.name),
                None => format!("sinks.{}", sink.name),
            }),
            message: message.to_owned(),
        }
    }
}

impl SinkConfig {
    /// The sink's field list: its `fields` option (checked when the config
    /// was validated), or the default 18 fields. For the daemon's own
    /// decisions (which sources a field needs); the plugin reads the same
    /// option itself.
    pub fn field_list(&self) -> FieldList {
        let names: Option<Vec<&str>> = self
            .options
            .get(FIELDS_KEY)
            .and_then(toml::Value::as_array)
            .and_then(|a| a.iter().map(toml::Value::as_str).collect());
        names
            .and_then(|n| FieldList::parse(&n).ok())
            .unwrap_or_default()
    }
}

/// Reads and validates the config at `path`.
///
/// # Errors
/// What [`read_config`] refuses, otherwise [`ConfigError::Invalid`] for
/// the first problem found.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let src = read_config(path)?;
    parse(path, &src)
}

/// Validates config text `src` that was read from `path`.
///
/// # Errors
/// [`ConfigError::Invalid`] for the first problem found.
pub fn parse(path: &Path, src: &str) -> Result<Config, ConfigError> {
    let cx = Cx { path, src };
    let raw: RawConfig = toml::from_str(src).map_err(|e| cx.toml_error(&e))?;
    validate(&cx, raw)
}

pub(super) struct Cx<'a> {
    pub(super) path: &'a Path,
    pub(super) src: &'a str,
}

impl Cx<'_> {
    pub(super) fn err(
        &self,
        span: Range<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        // Spans of defaulted values are 0..0: those errors have no place
        // in the file, only a key.
        let location = (span != (0..0)).then(|| Location::of_offset(self.src, span.start));
        ConfigError::Invalid {
            path: self.path.to_owned(),
            location,
            key: Some(key.into()),
            message: message.into(),
        }
    }

    /// An error at `location` rather than at a value: for what is missing,
    /// which has no place of its own.
    fn err_at(
        &self,
        location: Location,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_owned(),
            location: Some(location),
            key: Some(key.into()),
            message: message.into(),
        }
    }

    /// `v` if it is an id or name that may go into records, log lines and
    /// file names (see [`crate::ids`]), otherwise an error at it.
    pub(super) fn id(&self, v: &Spanned<String>, key: &str) -> Result<String, ConfigError> {
        check_id(v.get_ref()).map_err(|why| {
            let message = match why {
                IdError::Unprintable { .. } => format!("got \"{}\": {why}", v.get_ref()),
                IdError::Empty | IdError::TooLong { .. } => why.to_string(),
            };
            self.err(v.span(), key, message)
        })?;
        Ok(v.get_ref().clone())
    }

    /// `v` if it is an absolute path without control characters.
    fn absolute_path(&self, v: &Spanned<String>, key: &str) -> Result<PathBuf, ConfigError> {
        let p = v.get_ref();
        if let Some(c) = p.chars().find(|c| c.is_control()) {
            return Err(self.err(
                v.span(),
                key,
                format!("got \"{p}\": '{}' in a path", c.escape_debug()),
            ));
        }
        if !p.starts_with('/') {
            return Err(self.err(
                v.span(),
                key,
                format!(
                    "expected an absolute path, got \"{p}\" (a relative one would depend on the \
                     directory flowlogd is started in)"
                ),
            ));
        }
        Ok(PathBuf::from(p))
    }

    fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        let span = e.span();
        let location = span
            .as_ref()
            .map(|s| Location::of_offset(self.src, s.start));
        let key = span.as_ref().and_then(|s| key_path_at(self.src, s.start));
        // toml's messages end in a newline and sometimes repeat the key;
        // keep the first line, which says what is wrong and what was expected.
        let message = e
            .message()
            .trim()
            .lines()
            .next()
            .unwrap_or("invalid TOML")
            .to_owned();
        ConfigError::Invalid {
            path: self.path.to_owned(),
            location,
            key,
            message,
        }
    }

    pub(super) fn int_in(
        &self,
        v: &Spanned<i64>,
        key: &str,
        range: std::ops::RangeInclusive<i64>,
    ) -> Result<i64, ConfigError> {
        if range.contains(v.get_ref()) {
            Ok(*v.get_ref())
        } else {
            Err(self.err(
                v.span(),
                key,
                format!(
                    "expected an integer in {}..={}, got {}",
                    range.start(),
                    range.end(),
                    v.get_ref()
                ),
            ))
        }
    }
}

fn validate(cx: &Cx<'_>, raw: RawConfig) -> Result<Config, ConfigError> {
    let daemon = validate_daemon(cx, &raw.daemon)?;
    let metadata = validate_metadata(cx, &raw.metadata)?;
    let metrics_listen = validate_metrics_listen(cx, &raw.metrics.listen)?;
    let enis = validate_enis(cx, &raw.eni)?;
    let sinks = validate_sinks(cx, &raw.sinks)?;
    check_tcp_flags_capture(cx, &raw.daemon, &daemon, &sinks)?;
    require_something_to_capture(cx, &raw, &metadata)?;
    let flow_logs = validate_flow_logs(
        cx,
        &raw.flow_log,
        &enis,
        &metadata,
        &sinks,
        daemon.max_flow_logs,
    )?;
    let (enforcement, security_groups) = validate_security_groups(cx, &raw, &enis, &metadata)?;
    Ok(Config {
        path: cx.path.to_owned(),
        daemon,
        metadata,
        metrics_listen,
        enis,
        flow_logs,
        sinks,
        enforcement,
        security_groups,
    })
}

/// When a sink's field list names `tcp-flags`, the daemon logs TCP control
/// packets to `daemon.tcp_flags_nflog_group` from rules in its own table:
/// the group must not be one the firewall's drop rules log to (each packet
/// would be read as a REJECT), and the table must be the daemon's to
/// install.
fn check_tcp_flags_capture(
    cx: &Cx<'_>,
    raw: &RawDaemon,
    daemon: &DaemonConfig,
    sinks: &[SinkConfig],
) -> Result<(), ConfigError> {
    let Some(sink) = sinks.iter().find(|s| s.wants_tcp_flags()) else {
        return Ok(());
    };
    let group = daemon.tcp_flags_nflog_group;
    if let Some(pos) = daemon.nflog_groups.iter().position(|g| *g == group) {
        let key = "daemon.tcp_flags_nflog_group";
        let written = raw.tcp_flags_nflog_group.span();
        let message = format!(
            "group {group} is also in daemon.nflog_groups: the tcp-flags rules (for sink {}'s field list) \
             need a group of their own; choose another",
            sink.name
        );
        return Err(if written == (0..0) {
            cx.err(
                raw.nflog_groups[pos].span(),
                "daemon.nflog_groups",
                format!("{message} (daemon.tcp_flags_nflog_group is {group} by default)"),
            )
        } else {
            cx.err(written, key, message)
        });
    }
    if !daemon.install_tracking_table {
        let location = sink
            .option_locations
            .get("fields")
            .copied()
            .unwrap_or(sink.location);
        return Err(cx.err_at(
            location,
            format!("sinks.{}.fields", sink.name),
            "tcp-flags needs the daemon's nftables table inet flowlogd, where it logs TCP control packets, \
             but daemon.install_tracking_table = false; set it to true or leave tcp-flags out",
        ));
    }
    Ok(())
}

/// An empty or cut-short file parses (every table is optional to serde)
/// but captures nothing: the unit's `check-config` must stop it.
fn require_something_to_capture(
    cx: &Cx<'_>,
    raw: &RawConfig,
    metadata: &MetadataSource,
) -> Result<(), ConfigError> {
    let start = Location { line: 1, col: 1 };
    if raw.flow_log.is_empty() {
        return Err(cx.err_at(
            start,
            "flow_log",
            "no [[flow_log]] table, so nothing would be captured (is the file empty or cut short?); \
             add one with name, resource_type, resource_id and sinks",
        ));
    }
    if raw.eni.is_empty() && *metadata == MetadataSource::Static {
        let source = raw.metadata.source.span();
        let location = if source == (0..0) {
            start
        } else {
            Location::of_offset(cx.src, source.start)
        };
        return Err(cx.err_at(
            location,
            "eni",
            "no [[eni]] table, and with metadata.source = \"static\" ENIs come only from [[eni]] \
             tables; add one (id, interface or mac, vswitch_id, vpc_id, vm_id, account_id) or set \
             metadata.source = \"ecs\"",
        ));
    }
    Ok(())
}

fn validate_daemon(cx: &Cx<'_>, d: &RawDaemon) -> Result<DaemonConfig, ConfigError> {
    let capture_window_secs = cx.int_in(
        &d.capture_window_secs,
        "daemon.capture_window_secs",
        1..=3600,
    )? as u32;
    let max_flow_logs = cx.int_in(&d.max_flow_logs, "daemon.max_flow_logs", 1..=1000)? as u32;
    let max_flows = cx.int_in(&d.max_flows, "daemon.max_flows", 1..=100_000_000)? as u64;
    let sink_queue_records = cx.int_in(
        &d.sink_queue_records,
        "daemon.sink_queue_records",
        1..=100_000_000,
    )? as u64;
    let shutdown_timeout_secs = cx.int_in(
        &d.shutdown_timeout_secs,
        "daemon.shutdown_timeout_secs",
        0..=3600,
    )? as u32;
    let spool_max_bytes = cx.int_in(
        &d.spool_max_bytes,
        "daemon.spool_max_bytes",
        (1 << 20)..=(1 << 50),
    )? as u64;
    let window_memory_bytes = cx.int_in(
        &d.window_memory_bytes,
        "daemon.window_memory_bytes",
        (1 << 20)..=(1 << 40),
    )? as u64;
    let conntrack_rcvbuf_bytes = cx.int_in(
        &d.conntrack_rcvbuf_bytes,
        "daemon.conntrack_rcvbuf_bytes",
        4096..=(1 << 31),
    )? as u64;
    let nflog_rcvbuf_bytes = cx.int_in(
        &d.nflog_rcvbuf_bytes,
        "daemon.nflog_rcvbuf_bytes",
        4096..=(1 << 31),
    )? as u64;
    let rcvbuf_max_bytes = cx.int_in(
        &d.rcvbuf_max_bytes,
        "daemon.rcvbuf_max_bytes",
        4096..=(1 << 31),
    )? as u64;
    let tcp_flags_nflog_group = cx.int_in(
        &d.tcp_flags_nflog_group,
        "daemon.tcp_flags_nflog_group",
        0..=65535,
    )? as u16;
    let mut nflog_groups = Vec::new();
    for g in &d.nflog_groups {
        let n = cx.int_in(g, "daemon.nflog_groups", 0..=65535)? as u16;
        if nflog_groups.contains(&n) {
            return Err(cx.err(
                g.span(),
                "daemon.nflog_groups",
                format!("group {n} is listed twice"),
            ));
        }
        nflog_groups.push(n);
    }
    let log_level = match d.log_level.get_ref().as_str() {
        "error" => log::LevelFilter::Error,
        "warn" => log::LevelFilter::Warn,
        "info" => log::LevelFilter::Info,
        "debug" => log::LevelFilter::Debug,
        "trace" => log::LevelFilter::Trace,
        other => {
            return Err(cx.err(
                d.log_level.span(),
                "daemon.log_level",
                format!("expected one of \"error\", \"warn\", \"info\", \"debug\", \"trace\", got \"{other}\""),
            ))
        }
    };
    let user = d.user.as_ref().map(|u| validate_user(cx, u)).transpose()?;
    let plugin_dir = cx.absolute_path(&d.plugin_dir, "daemon.plugin_dir")?;
    let state_dir = cx.absolute_path(&d.state_dir, "daemon.state_dir")?;
    Ok(DaemonConfig {
        capture_window_secs,
        plugin_dir,
        state_dir,
        nflog_groups,
        max_flow_logs,
        max_flows,
        log_level,
        enable_conntrack_accounting: d.enable_conntrack_accounting,
        install_tracking_table: d.install_tracking_table,
        sink_queue_records,
        shutdown_timeout_secs,
        spool_max_bytes,
        window_memory_bytes,
        conntrack_rcvbuf_bytes,
        conntrack_reliable_events: d.conntrack_reliable_events,
        nflog_require_prefix: d.nflog_require_prefix,
        nflog_rcvbuf_bytes,
        tcp_flags_nflog_group,
        rcvbuf_max_bytes,
        user,
    })
}

/// `metrics.listen`: `""` (off) or an IP address and port. A host name is
/// refused: the daemon would have to resolve it at start, and what it
/// binds would then depend on DNS.
fn validate_metrics_listen(
    cx: &Cx<'_>,
    v: &Spanned<String>,
) -> Result<Option<std::net::SocketAddr>, ConfigError> {
    let s = v.get_ref();
    if s.is_empty() {
        return Ok(None);
    }
    match s.parse::<std::net::SocketAddr>() {
        Ok(addr) => Ok(Some(addr)),
        Err(_) => Err(cx.err(
            v.span(),
            "metrics.listen",
            format!(
                "expected an IP address and port (\"127.0.0.1:9750\", \"[::1]:9750\") or \"\" to turn \
                 metrics off, got \"{}\"",
                s.escape_debug()
            ),
        )),
    }
}

/// `daemon.user` must name a user of this system: the daemon switches to
/// it only after start-up, when a missing user could no longer be told to
/// the operator as a config error.
fn validate_user(cx: &Cx<'_>, u: &Spanned<String>) -> Result<DaemonUser, ConfigError> {
    let name = u.get_ref();
    let err = |message: String| cx.err(u.span(), "daemon.user", message);
    if name.is_empty() || name.contains('\0') {
        return Err(err(format!("expected a user name, got {name:?}")));
    }
    match nix::unistd::User::from_name(name) {
        Ok(Some(user)) => Ok(DaemonUser {
            name: name.clone(),
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
        }),
        Ok(None) => Err(err(format!(
            "no user {name:?} on this system (create it, e.g. `useradd --system {name}`, or remove the key to \
             stay the user the daemon was started as)"
        ))),
        Err(e) => Err(err(format!("cannot look up user {name:?}: {e}"))),
    }
}

fn validate_metadata(cx: &Cx<'_>, m: &RawMetadata) -> Result<MetadataSource, ConfigError> {
    match m.source.get_ref().as_str() {
        "static" => {
            // These keys do nothing without the service: say so rather than
            // let an operator believe unmapped interfaces are reported.
            let unused = [
                m.base_url.as_ref().map(|v| ("base_url", v.span())),
                m.ttl_secs.as_ref().map(|v| ("ttl_secs", v.span())),
                m.unmapped.as_ref().map(|v| ("unmapped", v.span())),
            ];
            match unused.into_iter().flatten().next() {
                Some((key, span)) => Err(cx.err(
                    span,
                    format!("metadata.{key}"),
                    "only used with source = \"ecs\" (source is \"static\")",
                )),
                None => Ok(MetadataSource::Static),
            }
        }
        "ecs" => {
            let base_url = match &m.base_url {
                None => HttpUrl::parse(DEFAULT_ECS_BASE_URL).expect("the default URL parses"),
                Some(u) => HttpUrl::parse(u.get_ref())
                    .map_err(|why| cx.err(u.span(), "metadata.base_url", why))?,
            };
            let ttl_secs = match &m.ttl_secs {
                None => default_ecs_ttl_secs(),
                Some(t) => cx.int_in(t, "metadata.ttl_secs", 1..=86_400)? as u32,
            };
            let unmapped = match m.unmapped.as_ref().map(|u| (u, u.get_ref().as_str())) {
                None | Some((_, "ignore")) => Unmapped::Ignore,
                Some((_, "report")) => Unmapped::Report,
                Some((u, other)) => {
                    return Err(cx.err(
                        u.span(),
                        "metadata.unmapped",
                        format!("expected \"ignore\" or \"report\", got \"{other}\""),
                    ))
                }
            };
            Ok(MetadataSource::Ecs(EcsConfig {
                base_url,
                ttl_secs,
                unmapped,
            }))
        }
        other => Err(cx.err(
            m.source.span(),
            "metadata.source",
            format!("expected \"static\" or \"ecs\", got \"{other}\""),
        )),
    }
}

fn validate_enis(cx: &Cx<'_>, raw: &[Spanned<RawEni>]) -> Result<Vec<EniConfig>, ConfigError> {
    let mut ids = HashSet::new();
    let mut matchers = HashSet::new();
    let mut out = Vec::new();
    for e in raw {
        let r = e.get_ref();
        let id = &cx.id(&r.id, "eni.id")?;
        let eni_ids = EniIds {
            eni_id: id.clone(),
            vswitch_id: cx.id(&r.vswitch_id, "eni.vswitch_id")?,
            vpc_id: cx.id(&r.vpc_id, "eni.vpc_id")?,
            vm_id: cx.id(&r.vm_id, "eni.vm_id")?,
            account_id: cx.id(&r.account_id, "eni.account_id")?,
        };
        if !ids.insert(id.clone()) {
            return Err(cx.err(r.id.span(), "eni.id", format!("duplicate ENI id \"{id}\"")));
        }
        let matcher = match (&r.interface, &r.mac) {
            (Some(i), None) => {
                check_interface_name(i.get_ref())
                    .map_err(|why| cx.err(i.span(), "eni.interface", why))?;
                if !matchers.insert(EniMatch::Interface(i.get_ref().clone())) {
                    return Err(cx.err(
                        i.span(),
                        "eni.interface",
                        format!("interface \"{}\" belongs to another [[eni]] already", i.get_ref()),
                    ));
                }
                EniMatch::Interface(i.get_ref().clone())
            }
            (None, Some(m)) => {
                let mac = MacAddr::parse(m.get_ref()).ok_or_else(|| {
                    cx.err(
                        m.span(),
                        "eni.mac",
                        format!("expected a MAC address like \"00:16:3e:12:34:56\", got \"{}\"", m.get_ref()),
                    )
                })?;
                if !matchers.insert(EniMatch::Mac(mac)) {
                    return Err(cx.err(
                        m.span(),
                        "eni.mac",
                        format!("MAC \"{}\" belongs to another [[eni]] already", m.get_ref()),
                    ));
                }
                EniMatch::Mac(mac)
            }
            (Some(i), Some(_)) => {
                return Err(cx.err(i.span(), "eni.interface", "set either `interface` or `mac`, not both"))
            }
            (None, None) => {
                return Err(cx.err(
                    e.span(),
                    "eni",
                    format!("ENI \"{id}\" needs `interface = \"<name>\"` or `mac = \"<xx:xx:xx:xx:xx:xx>\"`"),
                ))
            }
        };
        out.push(EniConfig {
            ids: eni_ids,
            matcher,
        });
    }
    Ok(out)
}

/// Linux's rule for interface names (`dev_valid_name`): 1..=15 bytes
/// (IFNAMSIZ - 1), not `.` or `..`, no `/`, `:` or whitespace. A name the
/// kernel cannot have would silently match nothing. Control characters
/// are refused too: a NUL would end the name early in the kernel.
fn check_interface_name(name: &str) -> Result<(), String> {
    const IFNAMSIZ: usize = 16;
    if name.is_empty() || name == "." || name == ".." {
        return Err(format!("expected an interface name, got \"{name}\""));
    }
    if let Some((at, c)) = name
        .char_indices()
        .find(|&(_, c)| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "got \"{name}\": '{}' at byte {at}; Linux interface names have no '/', ':', whitespace \
             or control characters",
            c.escape_debug()
        ));
    }
    if name.len() >= IFNAMSIZ {
        return Err(format!(
            "\"{name}\" is {} bytes long; Linux interface names have at most {} (IFNAMSIZ - 1)",
            name.len(),
            IFNAMSIZ - 1
        ));
    }
    Ok(())
}

fn validate_sinks(cx: &Cx<'_>, raw: &RawSinks) -> Result<Vec<SinkConfig>, ConfigError> {
    let mut out = Vec::new();
    for (name, table) in raw {
        // Sink names go into log lines and spool directory names.
        cx.id(name, "sinks")?;
        let key = format!("sinks.{}", name.get_ref());
        let mut plugin = None;
        let mut options = toml::Table::new();
        let mut option_locations = BTreeMap::new();
        for (k, v) in table.get_ref() {
            if k.get_ref() == "plugin" {
                match v.get_ref() {
                    toml::Value::String(s) if !s.is_empty() && !s.contains(char::is_control) => {
                        plugin = Some(s.clone())
                    }
                    _ => {
                        return Err(cx.err(
                            v.span(),
                            format!("{key}.plugin"),
                            "expected a plugin name (a file in daemon.plugin_dir) or an absolute path to a .so",
                        ))
                    }
                }
            } else {
                if k.get_ref() == FIELDS_KEY {
                    if let Some((span, message)) = field_list_problem(cx.src, v) {
                        return Err(cx.err(span, format!("{key}.fields"), message));
                    }
                }
                options.insert(k.get_ref().clone(), v.get_ref().clone());
                option_locations.insert(
                    k.get_ref().clone(),
                    Location::of_offset(cx.src, k.span().start),
                );
            }
        }
        let plugin = plugin.ok_or_else(|| {
            cx.err(
                table.span(),
                key.clone(),
                "missing `plugin`: expected a plugin name (a file in daemon.plugin_dir) or an absolute path to a .so",
            )
        })?;
        if plugin.contains('/') && !plugin.starts_with('/') {
            return Err(cx.err(
                table.span(),
                format!("{key}.plugin"),
                format!("expected a plugin name or an absolute path, got the relative path \"{plugin}\""),
            ));
        }
        out.push(SinkConfig {
            name: name.get_ref().clone(),
            plugin,
            options,
            option_locations,
            location: Location::of_offset(cx.src, name.span().start),
        });
    }
    Ok(out)
}

fn validate_flow_logs(
    cx: &Cx<'_>,
    raw: &[Spanned<RawFlowLog>],
    enis: &[EniConfig],
    metadata: &MetadataSource,
    sinks: &[SinkConfig],
    max_flow_logs: u32,
) -> Result<Vec<FlowLogConfig>, ConfigError> {
    let mut names = HashSet::new();
    let mut out = Vec::new();
    for (i, f) in raw.iter().enumerate() {
        if i as u32 >= max_flow_logs {
            return Err(cx.err(
                f.span(),
                "flow_log",
                format!(
                    "{} flow logs are configured, more than daemon.max_flow_logs = {max_flow_logs}",
                    raw.len()
                ),
            ));
        }
        let r = f.get_ref();
        let name = &cx.id(&r.name, "flow_log.name")?;
        if !names.insert(name.clone()) {
            return Err(cx.err(
                r.name.span(),
                "flow_log.name",
                format!("duplicate flow log name \"{name}\""),
            ));
        }
        let resource_type = match r.resource_type.get_ref().as_str() {
            "eni" => ResourceType::Eni,
            "vswitch" => ResourceType::VSwitch,
            "vpc" => ResourceType::Vpc,
            other => {
                return Err(cx.err(
                    r.resource_type.span(),
                    "flow_log.resource_type",
                    format!("expected \"eni\", \"vswitch\" or \"vpc\", got \"{other}\""),
                ))
            }
        };
        let resource_id = cx.id(&r.resource_id, "flow_log.resource_id")?;
        let field = match resource_type {
            ResourceType::Eni => "id",
            ResourceType::VSwitch => "vswitch_id",
            ResourceType::Vpc => "vpc_id",
        };
        let flow_log = FlowLogConfig {
            name: name.clone(),
            resource_type,
            resource_id: resource_id.clone(),
            traffic: match r.traffic.get_ref().as_str() {
                "all" => TrafficFilter::All,
                "accept" => TrafficFilter::Accept,
                "reject" => TrafficFilter::Reject,
                other => {
                    return Err(cx.err(
                        r.traffic.span(),
                        "flow_log.traffic",
                        format!("expected \"all\", \"accept\" or \"reject\", got \"{other}\""),
                    ))
                }
            },
            sinks: r
                .sinks
                .get_ref()
                .iter()
                .map(|s| s.get_ref().clone())
                .collect(),
        };
        // With the metadata service, ENIs (and their VSwitches and VPCs) are
        // learnt at run time: an id no [[eni]] has may be one only the
        // service knows.
        if *metadata == MetadataSource::Static && !enis.iter().any(|e| flow_log.covers(&e.ids)) {
            return Err(cx.err(
                r.resource_id.span(),
                "flow_log.resource_id",
                format!("no [[eni]] has {field} = \"{resource_id}\""),
            ));
        }
        if r.sinks.get_ref().is_empty() {
            return Err(cx.err(
                r.sinks.span(),
                "flow_log.sinks",
                "expected at least one sink name",
            ));
        }
        for s in r.sinks.get_ref() {
            if !sinks.iter().any(|k| k.name == *s.get_ref()) {
                let known: Vec<String> = sinks.iter().map(|k| format!("\"{}\"", k.name)).collect();
                return Err(cx.err(
                    s.span(),
                    "flow_log.sinks",
                    format!(
                        "no [sinks.{}] table (configured sinks: {})",
                        s.get_ref(),
                        if known.is_empty() {
                            "none".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ),
                ));
            }
        }
        out.push(flow_log);
    }
    Ok(out)
}
