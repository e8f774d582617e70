//! The fields a sink writes, by name: [`Field`] is one of them, and
//! [`FieldList`] is the ordered list a sink's `fields = [...]` option names
//! (the design's 18 fields when the option is absent).
//!
//! The names are the Alibaba Cloud flow log's for the 18 fields and AWS VPC
//! flow logs' for the ones it adds (`pkt-srcaddr`, `flow-start`,
//! `tcp-flags`, `type`, ...), so a collector set up for either recognises
//! them.

use crate::sink::{Options, SinkError};

/// One field a record can be written with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Field {
    Version,
    VswitchId,
    VmId,
    VpcId,
    AccountId,
    EniId,
    Srcaddr,
    Srcport,
    Dstaddr,
    Dstport,
    Protocol,
    Direction,
    Packets,
    Bytes,
    Start,
    End,
    LogStatus,
    Action,
    /// The packet's source on the other side of NAT (ABI minor 1).
    PktSrcaddr,
    /// The packet's destination on the other side of NAT (ABI minor 1).
    PktDstaddr,
    /// The flow's first moment within the window (ABI minor 1).
    FlowStart,
    /// The flow's last moment within the window (ABI minor 1).
    FlowEnd,
    /// TCP flags seen in the window, AWS encoding (ABI minor 1).
    TcpFlags,
    /// `IPv4` or `IPv6`, the family of `srcaddr`.
    Type,
    /// The firewall rule that decided the flow, when known.
    Rule,
}

impl Field {
    /// Every field, the design's 18 first and in their order.
    pub const ALL: [Field; 25] = [
        Field::Version,
        Field::VswitchId,
        Field::VmId,
        Field::VpcId,
        Field::AccountId,
        Field::EniId,
        Field::Srcaddr,
        Field::Srcport,
        Field::Dstaddr,
        Field::Dstport,
        Field::Protocol,
        Field::Direction,
        Field::Packets,
        Field::Bytes,
        Field::Start,
        Field::End,
        Field::LogStatus,
        Field::Action,
        Field::PktSrcaddr,
        Field::PktDstaddr,
        Field::FlowStart,
        Field::FlowEnd,
        Field::TcpFlags,
        Field::Type,
        Field::Rule,
    ];

    /// The design's 18 fields in output order: the default list.
    pub const DEFAULT: [Field; 18] = [
        Field::Version,
        Field::VswitchId,
        Field::VmId,
        Field::VpcId,
        Field::AccountId,
        Field::EniId,
        Field::Srcaddr,
        Field::Srcport,
        Field::Dstaddr,
        Field::Dstport,
        Field::Protocol,
        Field::Direction,
        Field::Packets,
        Field::Bytes,
        Field::Start,
        Field::End,
        Field::LogStatus,
        Field::Action,
    ];

    /// The field's name: its JSON and Log Service key, and what
    /// `fields = [...]` lists.
    pub fn name(self) -> &'static str {
        match self {
            Field::Version => "version",
            Field::VswitchId => "vswitch-id",
            Field::VmId => "vm-id",
            Field::VpcId => "vpc-id",
            Field::AccountId => "account-id",
            Field::EniId => "eni-id",
            Field::Srcaddr => "srcaddr",
            Field::Srcport => "srcport",
            Field::Dstaddr => "dstaddr",
            Field::Dstport => "dstport",
            Field::Protocol => "protocol",
            Field::Direction => "direction",
            Field::Packets => "packets",
            Field::Bytes => "bytes",
            Field::Start => "start",
            Field::End => "end",
            Field::LogStatus => "log-status",
            Field::Action => "action",
            Field::PktSrcaddr => "pkt-srcaddr",
            Field::PktDstaddr => "pkt-dstaddr",
            Field::FlowStart => "flow-start",
            Field::FlowEnd => "flow-end",
            Field::TcpFlags => "tcp-flags",
            Field::Type => "type",
            Field::Rule => "rule",
        }
    }

    /// The field named `name`, if there is one.
    pub fn from_name(name: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Whether the value comes from a record field of ABI minor 1 (a plugin
    /// built against minor 0 never sees it).
    pub fn needs_minor_1(self) -> bool {
        matches!(
            self,
            Field::PktSrcaddr
                | Field::PktDstaddr
                | Field::FlowStart
                | Field::FlowEnd
                | Field::TcpFlags
        )
    }
}

/// The option key a sink's field list is given under.
pub const FIELDS_KEY: &str = "fields";

/// Why a list of names is not a field list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldListError(pub String);

impl std::fmt::Display for FieldListError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FieldListError {}

/// The fields a sink writes, in order: at least one, none twice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldList {
    fields: Vec<Field>,
    /// Whether `fields` is the design's 18: the writers then take their
    /// fixed fast path (and JSON keeps adding `rule` when a record has
    /// one, as it always did).
    is_default: bool,
}

impl Default for FieldList {
    fn default() -> Self {
        FieldList {
            fields: Field::DEFAULT.to_vec(),
            is_default: true,
        }
    }
}

impl FieldList {
    /// The list of `names`, in their order.
    ///
    /// # Errors
    /// An empty list, an unknown name (the message lists the known ones) or
    /// a name given twice.
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<FieldList, FieldListError> {
        if names.is_empty() {
            return Err(FieldListError(
                "expected at least one field name, got an empty list (leave `fields` out for \
                 the default 18 fields)"
                    .into(),
            ));
        }
        let mut fields = Vec::with_capacity(names.len());
        for name in names {
            let name = name.as_ref();
            let field = Field::from_name(name).ok_or_else(|| {
                let known: Vec<&str> = Field::ALL.iter().map(|f| f.name()).collect();
                FieldListError(format!(
                    "unknown field {name:?}; known fields: {}",
                    known.join(", ")
                ))
            })?;
            if fields.contains(&field) {
                return Err(FieldListError(format!("field {name:?} is listed twice")));
            }
            fields.push(field);
        }
        let is_default = fields == Field::DEFAULT;
        Ok(FieldList { fields, is_default })
    }

    /// The sink's `fields` option, or the default list when it has none:
    /// what a Rust plugin calls to honour `fields` in one line.
    ///
    /// # Errors
    /// [`SinkError::config`] on `fields` when it is not an array of
    /// strings or not a valid list (see [`FieldList::parse`]).
    pub fn from_options(options: &Options) -> Result<FieldList, SinkError> {
        let Some(toml_text) = options.get_toml(FIELDS_KEY) else {
            return Ok(FieldList::default());
        };
        let names = parse_names(toml_text)
            .ok_or_else(|| SinkError::config(FIELDS_KEY, "expected an array of field names"))?;
        FieldList::parse(&names).map_err(|e| SinkError::config(FIELDS_KEY, e.0))
    }

    /// The list from a sink's `fields` option as its own options struct
    /// deserialized it (`Option<Vec<String>>`, `None` when absent: the
    /// default list), for sinks that read every option with serde.
    ///
    /// # Errors
    /// [`SinkError::config`] on `fields` (see [`FieldList::parse`]).
    pub fn from_option(names: Option<&[String]>) -> Result<FieldList, SinkError> {
        match names {
            Some(names) => FieldList::parse(names).map_err(|e| SinkError::config(FIELDS_KEY, e.0)),
            None => Ok(FieldList::default()),
        }
    }

    /// The fields in output order.
    pub fn fields(&self) -> &[Field] {
        &self.fields
    }

    /// Whether this is the design's 18 fields in their order.
    pub fn is_default(&self) -> bool {
        self.is_default
    }

    /// Whether any field needs a record of ABI minor 1.
    pub fn needs_minor_1(&self) -> bool {
        self.fields.iter().any(|f| f.needs_minor_1())
    }
}

/// The strings of a TOML array value, `None` if it is anything else.
fn parse_names(toml_text: &str) -> Option<Vec<String>> {
    let doc: toml::Table = toml::from_str(&format!("v = {toml_text}")).ok()?;
    doc.get("v")?
        .as_array()?
        .iter()
        .map(|v| v.as_str().map(str::to_owned))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_the_default_is_the_design_order() {
        for f in Field::ALL {
            assert_eq!(Field::from_name(f.name()), Some(f));
        }
        let names: Vec<&str> = Field::DEFAULT.iter().map(|f| f.name()).collect();
        assert_eq!(names, crate::format::FIELD_NAMES);
        assert_eq!(Field::from_name("Version"), None);
        assert_eq!(Field::from_name("tcp_flags"), None);
    }

    #[test]
    fn parse_keeps_order_and_knows_the_default() {
        let l = FieldList::parse(&["tcp-flags", "srcaddr", "type"]).unwrap();
        assert_eq!(l.fields(), [Field::TcpFlags, Field::Srcaddr, Field::Type]);
        assert!(!l.is_default());
        assert!(l.needs_minor_1());
        assert!(FieldList::parse(&crate::format::FIELD_NAMES)
            .unwrap()
            .is_default());
        assert_eq!(
            FieldList::parse(&crate::format::FIELD_NAMES).unwrap(),
            FieldList::default()
        );
        assert!(!FieldList::default().needs_minor_1());
        assert!(!FieldList::parse(&["rule", "type"]).unwrap().needs_minor_1());
    }

    #[test]
    fn parse_refuses_empty_unknown_and_duplicates() {
        let none: [&str; 0] = [];
        assert!(FieldList::parse(&none)
            .unwrap_err()
            .0
            .contains("empty list"));
        let e = FieldList::parse(&["srcaddr", "src-addr"]).unwrap_err();
        assert!(
            e.0.starts_with("unknown field \"src-addr\"; known fields: version,"),
            "{e}"
        );
        assert!(e.0.ends_with("type, rule"), "{e}");
        let e = FieldList::parse(&["srcaddr", "bytes", "srcaddr"]).unwrap_err();
        assert_eq!(e.0, "field \"srcaddr\" is listed twice");
    }

    #[test]
    fn from_options_reads_the_fields_key() {
        let opts = |t: &str| Options::from_toml_table(&toml::from_str(t).unwrap());
        assert_eq!(
            FieldList::from_options(&opts("path = \"/x\"")).unwrap(),
            FieldList::default()
        );
        assert_eq!(
            FieldList::from_options(&opts("fields = [\"type\", \"rule\"]"))
                .unwrap()
                .fields(),
            [Field::Type, Field::Rule]
        );
        let e = FieldList::from_options(&opts("fields = \"srcaddr\"")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("fields"));
        let e = FieldList::from_options(&opts("fields = [\"nope\"]")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("fields"));
        assert!(e.message.contains("unknown field \"nope\""), "{e}");
    }
}
