//! `[enforcement]` and `[[security_group]]`: the security groups flowlogd
//! enforces (Alibaba Cloud semantics, see README "Security groups"),
//! validated as pure data. The decisions are made by
//! [`crate::security_groups::Policy`].

use std::collections::{HashMap, HashSet};

use flowlogd_plugin_api::Direction;
use toml::Spanned;

use super::schema::{default_enforcement_queue, RawConfig, RawSecurityGroup, RawSgRule};
use super::validate::{Cx, EniConfig, MetadataSource};
use super::{ConfigError, Location};
use crate::security_groups::{mark_of, Cidr, CidrError};

/// `[enforcement]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnforcementConfig {
    /// The NFQUEUE number first packets are queued to.
    pub queue: u16,
    pub on_daemon_down: OnDaemonDown,
}

impl Default for EnforcementConfig {
    fn default() -> Self {
        EnforcementConfig {
            queue: default_enforcement_queue(),
            on_daemon_down: OnDaemonDown::Accept,
        }
    }
}

/// What becomes of new connections while no daemon reads the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnDaemonDown {
    /// `queue bypass`: they pass unchecked (fail open).
    Accept,
    /// They are dropped by the kernel (fail closed).
    Drop,
}

impl OnDaemonDown {
    pub fn as_str(self) -> &'static str {
        match self {
            OnDaemonDown::Accept => "accept",
            OnDaemonDown::Drop => "drop",
        }
    }
}

#[derive(Clone, Debug)]
pub struct SecurityGroupConfig {
    /// `sg-...`.
    pub id: String,
    pub enis: SgEnis,
    /// In file order.
    pub rules: Vec<SgRuleConfig>,
}

/// The ENIs a group applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SgEnis {
    /// `"all"`: every ENI the daemon knows, also ones learnt later.
    All,
    List(Vec<String>),
}

impl SgEnis {
    pub fn contains(&self, eni_id: &str) -> bool {
        match self {
            SgEnis::All => true,
            SgEnis::List(ids) => ids.iter().any(|i| i == eni_id),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RuleAction {
    Accept,
    Drop,
}

impl RuleAction {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleAction::Accept => "accept",
            RuleAction::Drop => "drop",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SgProtocol {
    Tcp,
    Udp,
    Icmp,
    Icmpv6,
    All,
}

impl SgProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            SgProtocol::Tcp => "tcp",
            SgProtocol::Udp => "udp",
            SgProtocol::Icmp => "icmp",
            SgProtocol::Icmpv6 => "icmpv6",
            SgProtocol::All => "all",
        }
    }

    /// Whether a packet of IANA protocol `proto` is this rule's.
    pub fn matches(self, proto: u8) -> bool {
        match self {
            SgProtocol::Tcp => proto == 6,
            SgProtocol::Udp => proto == 17,
            SgProtocol::Icmp => proto == 1,
            SgProtocol::Icmpv6 => proto == 58,
            SgProtocol::All => true,
        }
    }

    fn has_ports(self) -> bool {
        matches!(self, SgProtocol::Tcp | SgProtocol::Udp)
    }
}

/// `direction` as the plugin API's: ingress = in, egress = out.
pub fn direction_name(d: Direction) -> &'static str {
    match d {
        Direction::In => "ingress",
        Direction::Out => "egress",
    }
}

#[derive(Clone, Debug)]
pub struct SgRuleConfig {
    pub id: String,
    pub direction: Direction,
    pub policy: RuleAction,
    /// 1..=100, 1 first.
    pub priority: u8,
    pub protocol: SgProtocol,
    /// Destination ports `lo..=hi` (tcp, udp); `None` is `-1/-1`.
    pub ports: Option<(u16, u16)>,
    /// The peer: the source for ingress, the destination for egress.
    pub cidr: Cidr,
    pub description: Option<String>,
}

impl SgRuleConfig {
    /// `port_range` as written in the file.
    pub fn port_range(&self) -> String {
        match self.ports {
            Some((lo, hi)) => format!("{lo}/{hi}"),
            None => "-1/-1".to_owned(),
        }
    }
}

/// Longest `description` (Alibaba's limit): it is shown by `check-config`.
const MAX_DESCRIPTION_CHARS: usize = 256;

/// Checks `[enforcement]` and every `[[security_group]]`.
///
/// With `metadata.source = "static"` every id in `enis` must be an
/// `[[eni]]`'s; with the metadata service an ENI may be one only the
/// service knows (as for `[[flow_log]]`).
pub(super) fn validate_security_groups(
    cx: &Cx<'_>,
    raw: &RawConfig,
    enis: &[EniConfig],
    metadata: &MetadataSource,
) -> Result<(EnforcementConfig, Vec<SecurityGroupConfig>), ConfigError> {
    let enforcement = validate_enforcement(cx, raw)?;
    let mut ids = HashSet::new();
    let mut groups = Vec::new();
    // mark -> (rule name, where it is): two names on one mark would make
    // records name the wrong rule.
    let mut marks: HashMap<u32, (String, Location)> = HashMap::new();
    for g in &raw.security_group {
        let group = validate_group(cx, g.get_ref(), enis, metadata)?;
        if !ids.insert(group.id.clone()) {
            return Err(cx.err(
                g.get_ref().id.span(),
                "security_group.id",
                format!("duplicate security group id \"{}\"", group.id),
            ));
        }
        for (rule, raw_rule) in group.rules.iter().zip(&g.get_ref().rule) {
            let name = format!("{}:{}", group.id, rule.id);
            let here = Location::of_offset(cx.src, raw_rule.get_ref().id.span().start);
            if let Some((other, at)) = marks.get(&mark_of(&name)) {
                return Err(cx.err(
                    raw_rule.get_ref().id.span(),
                    "security_group.rule.id",
                    format!(
                        "rule \"{name}\" gets the same conntrack mark as rule \"{other}\" (line {}), so records \
                         could not tell them apart; rename one of them",
                        at.line
                    ),
                ));
            }
            marks.insert(mark_of(&name), (name, here));
        }
        groups.push(group);
    }
    Ok((enforcement, groups))
}

fn validate_enforcement(cx: &Cx<'_>, raw: &RawConfig) -> Result<EnforcementConfig, ConfigError> {
    let Some(e) = &raw.enforcement else {
        return Ok(EnforcementConfig::default());
    };
    if raw.security_group.is_empty() {
        return Err(cx.err(
            e.span(),
            "enforcement",
            "only used with a [[security_group]], and there is none; add one or remove [enforcement]",
        ));
    }
    let e = e.get_ref();
    let queue = match &e.queue {
        None => default_enforcement_queue(),
        Some(q) => cx.int_in(q, "enforcement.queue", 0..=65_535)? as u16,
    };
    let on_daemon_down = match e.on_daemon_down.as_ref().map(|v| (v, v.get_ref().as_str())) {
        None | Some((_, "accept")) => OnDaemonDown::Accept,
        Some((_, "drop")) => OnDaemonDown::Drop,
        Some((v, other)) => {
            return Err(cx.err(
                v.span(),
                "enforcement.on_daemon_down",
                format!(
                "expected \"accept\" (new connections pass while the daemon is down) or \"drop\" \
                     (they are dropped), got \"{other}\""
            ),
            ))
        }
    };
    Ok(EnforcementConfig {
        queue,
        on_daemon_down,
    })
}

/// An id that becomes part of a rule name `sg-id:rule-id`: a `:` in it
/// would make two different rules' names equal.
fn name_part(cx: &Cx<'_>, v: &Spanned<String>, key: &str) -> Result<String, ConfigError> {
    let id = cx.id(v, key)?;
    if id.contains(':') {
        return Err(cx.err(
            v.span(),
            key,
            format!("got \"{id}\": ':' separates the group from the rule in records' rule names"),
        ));
    }
    Ok(id)
}

fn validate_group(
    cx: &Cx<'_>,
    g: &RawSecurityGroup,
    enis: &[EniConfig],
    metadata: &MetadataSource,
) -> Result<SecurityGroupConfig, ConfigError> {
    let id = name_part(cx, &g.id, "security_group.id")?;
    if !id.starts_with("sg-") || id.len() == 3 {
        return Err(cx.err(
            g.id.span(),
            "security_group.id",
            format!("expected an id starting with \"sg-\" (like \"sg-web\"), got \"{id}\""),
        ));
    }
    let group_enis = validate_group_enis(cx, &g.enis, enis, metadata)?;
    let mut rule_ids = HashSet::new();
    let mut rules = Vec::new();
    for r in &g.rule {
        let rule = validate_rule(cx, r.get_ref())?;
        if !rule_ids.insert(rule.id.clone()) {
            return Err(cx.err(
                r.get_ref().id.span(),
                "security_group.rule.id",
                format!(
                    "duplicate rule id \"{}\" in security group \"{id}\"",
                    rule.id
                ),
            ));
        }
        rules.push(rule);
    }
    Ok(SecurityGroupConfig {
        id,
        enis: group_enis,
        rules,
    })
}

fn validate_group_enis(
    cx: &Cx<'_>,
    v: &Spanned<toml::Value>,
    enis: &[EniConfig],
    metadata: &MetadataSource,
) -> Result<SgEnis, ConfigError> {
    let key = "security_group.enis";
    let expected = "expected a list of ENI ids ([\"eni-1\", \"eni-2\"]) or \"all\"";
    let list = match v.get_ref() {
        toml::Value::String(s) if s == "all" => return Ok(SgEnis::All),
        toml::Value::Array(a) => a,
        toml::Value::String(s) => {
            return Err(cx.err(v.span(), key, format!("{expected}, got \"{s}\"")))
        }
        _ => return Err(cx.err(v.span(), key, expected)),
    };
    if list.is_empty() {
        return Err(cx.err(
            v.span(),
            key,
            format!("{expected}; an empty list applies the group to nothing"),
        ));
    }
    let mut out: Vec<String> = Vec::new();
    let mut searched_to = v.span().start;
    for item in list {
        let Some(id) = item.as_str() else {
            return Err(cx.err(v.span(), key, format!("{expected}; got {item} in the list")));
        };
        // The array's items carry no spans of their own: point at the
        // item's text inside the array when it can be found.
        let span = item_span(cx.src, v.span(), searched_to, id);
        if span != v.span() {
            searched_to = span.end;
        }
        let id = cx.id(&Spanned::new(span.clone(), id.to_owned()), key)?;
        if out.contains(&id) {
            return Err(cx.err(span, key, format!("ENI \"{id}\" is listed twice")));
        }
        if *metadata == MetadataSource::Static && !enis.iter().any(|e| e.ids.eni_id == id) {
            let known: Vec<String> = enis
                .iter()
                .map(|e| format!("\"{}\"", e.ids.eni_id))
                .collect();
            return Err(cx.err(
                span,
                key,
                format!(
                    "no [[eni]] has id = \"{id}\" (configured ENIs: {})",
                    known.join(", ")
                ),
            ));
        }
        out.push(id);
    }
    Ok(SgEnis::List(out))
}

/// The span of `"id"` inside the array at `array`, searched from byte
/// `from` on (past the items before it, so that a repeated id is found at
/// its second place), or the array's.
fn item_span(
    src: &str,
    array: std::ops::Range<usize>,
    from: usize,
    id: &str,
) -> std::ops::Range<usize> {
    let start = from.clamp(array.start, array.end);
    let text = src.get(start..array.end).unwrap_or("");
    for quoted in [format!("\"{id}\""), format!("'{id}'")] {
        if let Some(at) = text.find(&quoted) {
            return start + at..start + at + quoted.len();
        }
    }
    array
}

fn validate_rule(cx: &Cx<'_>, r: &RawSgRule) -> Result<SgRuleConfig, ConfigError> {
    let id = name_part(cx, &r.id, "security_group.rule.id")?;
    let direction = match r.direction.get_ref().as_str() {
        "ingress" => Direction::In,
        "egress" => Direction::Out,
        other => {
            return Err(cx.err(
                r.direction.span(),
                "security_group.rule.direction",
                format!("expected \"ingress\" or \"egress\", got \"{other}\""),
            ))
        }
    };
    let policy = match r.policy.get_ref().as_str() {
        "accept" => RuleAction::Accept,
        "drop" => RuleAction::Drop,
        other => {
            return Err(cx.err(
                r.policy.span(),
                "security_group.rule.policy",
                format!("expected \"accept\" or \"drop\", got \"{other}\""),
            ))
        }
    };
    let priority = cx.int_in(&r.priority, "security_group.rule.priority", 1..=100)? as u8;
    let protocol = match r.protocol.get_ref().as_str() {
        "tcp" => SgProtocol::Tcp,
        "udp" => SgProtocol::Udp,
        "icmp" => SgProtocol::Icmp,
        "icmpv6" => SgProtocol::Icmpv6,
        "all" => SgProtocol::All,
        other => {
            return Err(cx.err(
                r.protocol.span(),
                "security_group.rule.protocol",
                format!(
                    "expected \"tcp\", \"udp\", \"icmp\", \"icmpv6\" or \"all\", got \"{other}\""
                ),
            ))
        }
    };
    let ports = parse_port_range(protocol, r.port_range.get_ref())
        .map_err(|why| cx.err(r.port_range.span(), "security_group.rule.port_range", why))?;
    let cidr = Cidr::parse(r.cidr.get_ref()).map_err(|e| {
        let got = r.cidr.get_ref();
        let why = match e {
            CidrError::Malformed => format!(
                "expected an IPv4 or IPv6 network like \"10.0.0.0/8\", \"0.0.0.0/0\" or \"2001:db8::/32\" \
                 (one address: \"10.0.0.1/32\"), got \"{got}\""
            ),
            CidrError::HostBits { network } => {
                let one = if network.is_ipv4() { 32 } else { 128 };
                let addr = got.split('/').next().unwrap_or(got);
                format!(
                    "\"{got}\" has host bits set (bits after the prefix length); write \"{network}\" for the \
                     network or \"{addr}/{one}\" for the one address"
                )
            }
        };
        cx.err(r.cidr.span(), "security_group.rule.cidr", why)
    })?;
    // Such a rule could never match: say so rather than let it sit there.
    let family_mismatch = match protocol {
        SgProtocol::Icmp if !cidr.is_ipv4() => {
            Some("icmp is IPv4's; for an IPv6 cidr use \"icmpv6\"")
        }
        SgProtocol::Icmpv6 if cidr.is_ipv4() => {
            Some("icmpv6 is IPv6's; for an IPv4 cidr use \"icmp\"")
        }
        _ => None,
    };
    if let Some(why) = family_mismatch {
        return Err(cx.err(r.protocol.span(), "security_group.rule.protocol", why));
    }
    let description = match &r.description {
        None => None,
        Some(d) => {
            let text = d.get_ref();
            if text.chars().any(char::is_control) || text.chars().count() > MAX_DESCRIPTION_CHARS {
                return Err(cx.err(
                    d.span(),
                    "security_group.rule.description",
                    format!("expected at most {MAX_DESCRIPTION_CHARS} characters without control characters"),
                ));
            }
            Some(text.clone())
        }
    };
    Ok(SgRuleConfig {
        id,
        direction,
        policy,
        priority,
        protocol,
        ports,
        cidr,
        description,
    })
}

/// `"lo/hi"` for tcp and udp (1..=65535, lo <= hi), `"-1/-1"` for the
/// protocols without ports.
fn parse_port_range(protocol: SgProtocol, s: &str) -> Result<Option<(u16, u16)>, String> {
    if !protocol.has_ports() {
        return if s == "-1/-1" {
            Ok(None)
        } else {
            Err(format!(
                "protocol \"{}\" has no ports: expected \"-1/-1\", got \"{s}\"",
                protocol.as_str()
            ))
        };
    }
    let expected = format!(
        "expected \"lo/hi\" with ports in 1..=65535 for {} (\"22/22\", \"1/65535\")",
        protocol.as_str()
    );
    let port = |p: &str| -> Option<u16> {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        p.parse::<u16>().ok().filter(|p| *p >= 1)
    };
    let (lo, hi) = s
        .split_once('/')
        .and_then(|(lo, hi)| Some((port(lo)?, port(hi)?)))
        .ok_or_else(|| format!("{expected}, got \"{s}\""))?;
    if lo > hi {
        return Err(format!(
            "\"{s}\" is reversed: the first port must not be above the second (\"{hi}/{lo}\")"
        ));
    }
    Ok(Some((lo, hi)))
}
