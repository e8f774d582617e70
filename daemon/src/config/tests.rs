//! Each config mistake an operator can make, with the exact message they see.

use std::path::Path;

use super::*;
use crate::config::validate::{MetadataSource, Unmapped};

const GOOD: &str = r#"
[daemon]
capture_window_secs = 600
plugin_dir = "/usr/lib/flowlogd/sinks"

[[eni]]
id = "eni-a"
interface = "eth0"
vswitch_id = "vsw-1"
vpc_id = "vpc-1"
vm_id = "i-1"
account_id = "123"

[[flow_log]]
name = "all"
resource_type = "vpc"
resource_id = "vpc-1"
traffic = "all"
sinks = ["local"]

[sinks.local]
plugin = "file"
path = "/var/log/flowlogd/flow.log"
format = "text"
"#;

#[track_caller]
fn error_of(src: &str) -> String {
    match parse(Path::new("/etc/flowlogd.toml"), src) {
        Ok(_) => panic!("config was accepted:\n{src}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn good_config_parses() {
    let c = parse(Path::new("/etc/flowlogd.toml"), GOOD).unwrap();
    assert_eq!(c.daemon.capture_window_secs, 600);
    assert_eq!(c.enis[0].matcher, EniMatch::Interface("eth0".into()));
    assert_eq!(c.flow_logs[0].resource_type, ResourceType::Vpc);
    assert_eq!(c.sinks[0].plugin, "file");
    assert_eq!(
        c.sinks[0].options.get("format").and_then(|v| v.as_str()),
        Some("text")
    );
    assert!(!c.sinks[0].options.contains_key("plugin"));
    assert_eq!(
        c.sinks[0].option_locations["format"],
        Location { line: 24, col: 1 }
    );
}

#[test]
fn shipped_sample_config_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../etc/flowlogd.toml");
    let c = load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(!c.flow_logs.is_empty());
}

#[test]
fn unknown_key() {
    let src = GOOD.replace(
        "capture_window_secs = 600",
        "capture_window_secs = 600\nwindow = 5",
    );
    assert_eq!(
        error_of(&src),
        "/etc/flowlogd.toml:4:1: daemon.window: unknown field `window`, expected one of `capture_window_secs`, \
         `plugin_dir`, `state_dir`, `nflog_groups`, `max_flow_logs`, `max_flows`, `log_level`, \
         `enable_conntrack_accounting`, `install_tracking_table`, `sink_queue_records`, `shutdown_timeout_secs`, \
         `spool_max_bytes`, `window_memory_bytes`, \
         `conntrack_rcvbuf_bytes`, `conntrack_reliable_events`, `rcvbuf_max_bytes`, \
         `nflog_require_prefix`, `nflog_rcvbuf_bytes`, `tcp_flags_nflog_group`, `user`"
    );
}

#[test]
fn user_is_looked_up() {
    let src = GOOD.replace(
        "capture_window_secs = 600",
        "capture_window_secs = 600\nuser = \"nobody\"",
    );
    let c = parse(Path::new("/etc/flowlogd.toml"), &src).unwrap();
    let user = c.daemon.user.expect("daemon.user");
    // nobody is 65534 on Debian and most distributions.
    assert_eq!((user.name.as_str(), user.uid), ("nobody", 65534));
    let unset = parse(Path::new("/etc/flowlogd.toml"), GOOD).unwrap();
    assert_eq!(unset.daemon.user, None);
}

#[test]
fn user_that_does_not_exist() {
    let src = GOOD.replace(
        "capture_window_secs = 600",
        "capture_window_secs = 600\nuser = \"flowlogd-no-such-user\"",
    );
    assert_eq!(
        error_of(&src),
        "/etc/flowlogd.toml:4:8: daemon.user: no user \"flowlogd-no-such-user\" on this system (create it, e.g. \
         `useradd --system flowlogd-no-such-user`, or remove the key to stay the user the daemon was started as)"
    );
    let empty = GOOD.replace(
        "capture_window_secs = 600",
        "capture_window_secs = 600\nuser = \"\"",
    );
    assert_eq!(
        error_of(&empty),
        "/etc/flowlogd.toml:4:8: daemon.user: expected a user name, got \"\""
    );
}

#[test]
fn unknown_key_in_eni() {
    let src = GOOD.replace(
        "vm_id = \"i-1\"",
        "vm_id = \"i-1\"\nzone = \"cn-hangzhou-h\"",
    );
    let e = error_of(&src);
    assert!(
        e.starts_with(
            "/etc/flowlogd.toml:12:1: eni.zone: unknown field `zone`, expected one of `id`"
        ),
        "{e}"
    );
}

#[test]
fn wrong_type() {
    let src = GOOD.replace("capture_window_secs = 600", "capture_window_secs = \"600\"");
    assert_eq!(
        error_of(&src),
        "/etc/flowlogd.toml:3:23: daemon.capture_window_secs: invalid type: string \"600\", expected i64"
    );
}

#[test]
fn missing_required_key() {
    let src = GOOD.replace("vpc_id = \"vpc-1\"\n", "");
    assert_eq!(
        error_of(&src),
        "/etc/flowlogd.toml:6:1: eni: missing field `vpc_id`"
    );
}

#[test]
fn flow_log_names_unknown_sink() {
    let src = GOOD.replace("sinks = [\"local\"]", "sinks = [\"local\", \"remote\"]");
    assert_eq!(
        error_of(&src),
        "/etc/flowlogd.toml:19:19: flow_log.sinks: no [sinks.remote] table (configured sinks: \"local\")"
    );
}

#[test]
fn flow_log_resource_no_eni_belongs_to() {
    let src = GOOD.replace("resource_id = \"vpc-1\"", "resource_id = \"vpc-2\"");
    assert_eq!(
        error_of(&src),
        "/etc/flowlogd.toml:17:15: flow_log.resource_id: no [[eni]] has vpc_id = \"vpc-2\""
    );
    let src = GOOD
        .replace("resource_type = \"vpc\"", "resource_type = \"eni\"")
        .replace("resource_id = \"vpc-1\"", "resource_id = \"eni-b\"");
    assert_eq!(
        error_of(&src),
        "/etc/flowlogd.toml:17:15: flow_log.resource_id: no [[eni]] has id = \"eni-b\""
    );
}

const SECOND_ENI: &str = r#"
[[eni]]
id = "eni-b"
interface = "eth1"
vswitch_id = "vsw-1"
vpc_id = "vpc-1"
vm_id = "i-1"
account_id = "123"
"#;

#[test]
fn duplicate_eni_id() {
    let src = format!("{GOOD}{}", SECOND_ENI.replace("eni-b", "eni-a"));
    assert_eq!(
        error_of(&src),
        "/etc/flowlogd.toml:27:6: eni.id: duplicate ENI id \"eni-a\""
    );
}

#[test]
fn duplicate_eni_interface() {
    let src = format!("{GOOD}{}", SECOND_ENI.replace("eth1", "eth0"));
    assert_eq!(
        error_of(&src),
        "/etc/flowlogd.toml:28:13: eni.interface: interface \"eth0\" belongs to another [[eni]] already"
    );
}

#[test]
fn eni_without_interface_or_mac() {
    let src = format!("{GOOD}{}", SECOND_ENI.replace("interface = \"eth1\"\n", ""));
    assert_eq!(
        error_of(&src),
        "/etc/flowlogd.toml:26:1: eni: ENI \"eni-b\" needs `interface = \"<name>\"` or `mac = \"<xx:xx:xx:xx:xx:xx>\"`"
    );
}

#[test]
fn bad_mac() {
    let src = format!(
        "{GOOD}{}",
        SECOND_ENI.replace("interface = \"eth1\"", "mac = \"00:16:3e:zz:34:56\"")
    );
    assert_eq!(
        error_of(&src),
        "/etc/flowlogd.toml:28:7: eni.mac: expected a MAC address like \"00:16:3e:12:34:56\", got \"00:16:3e:zz:34:56\""
    );
}

#[test]
fn window_out_of_range() {
    for bad in ["0", "3601", "-5"] {
        let src = GOOD.replace(
            "capture_window_secs = 600",
            &format!("capture_window_secs = {bad}"),
        );
        assert_eq!(
            error_of(&src),
            format!("/etc/flowlogd.toml:3:23: daemon.capture_window_secs: expected an integer in 1..=3600, got {bad}")
        );
    }
}

#[test]
fn more_flow_logs_than_allowed() {
    let extra = "\n[[flow_log]]\nname = \"second\"\nresource_type = \"eni\"\nresource_id = \"eni-a\"\nsinks = [\"local\"]\n";
    let src = format!(
        "{}{extra}",
        GOOD.replace(
            "capture_window_secs = 600",
            "capture_window_secs = 600\nmax_flow_logs = 1"
        )
    );
    assert_eq!(
        error_of(&src),
        "/etc/flowlogd.toml:27:1: flow_log: 2 flow logs are configured, more than daemon.max_flow_logs = 1"
    );
}

#[test]
fn bad_enum_values() {
    let src = GOOD.replace("traffic = \"all\"", "traffic = \"drops\"");
    assert_eq!(
        error_of(&src),
        "/etc/flowlogd.toml:18:11: flow_log.traffic: expected \"all\", \"accept\" or \"reject\", got \"drops\""
    );
    let src = GOOD.replace("resource_type = \"vpc\"", "resource_type = \"subnet\"");
    assert_eq!(
        error_of(&src),
        "/etc/flowlogd.toml:16:17: flow_log.resource_type: expected \"eni\", \"vswitch\" or \"vpc\", got \"subnet\""
    );
}

#[test]
fn sink_without_plugin() {
    let src = GOOD.replace("plugin = \"file\"\n", "");
    assert_eq!(
        error_of(&src),
        "/etc/flowlogd.toml:21:1: sinks.local: missing `plugin`: expected a plugin name (a file in \
         daemon.plugin_dir) or an absolute path to a .so"
    );
}

#[test]
fn toml_syntax_error_has_a_location() {
    let src = GOOD.replace("format = \"text\"", "format = \"text");
    assert_eq!(
        error_of(&src),
        "/etc/flowlogd.toml:24:15: sinks.local.format: invalid basic string, expected `\"`"
    );
}

#[test]
fn unreadable_file_names_the_path() {
    let e = load(Path::new("/nonexistent/flowlogd.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("/nonexistent/flowlogd.toml: cannot read config: "),
        "{e}"
    );
}

#[test]
fn plugin_errors_point_at_the_option() {
    let c = parse(Path::new("/etc/flowlogd.toml"), GOOD).unwrap();
    let e = c.sink_option_error(&c.sinks[0], Some("format"), "expected \"text\" or \"json\"");
    assert_eq!(
        e.to_string(),
        "/etc/flowlogd.toml:24:1: sinks.local.format: expected \"text\" or \"json\""
    );
}

#[test]
fn sink_fields_are_checked_by_the_daemon() {
    // Valid lists pass through to the plugin as an ordinary option.
    let src = format!("{GOOD}fields = [\"srcaddr\", \"tcp-flags\", \"type\"]\n");
    let c = parse(Path::new("/etc/flowlogd.toml"), &src).unwrap();
    assert_eq!(
        c.sinks[0].options["fields"].as_array().map(Vec::len),
        Some(3)
    );
    use flowlogd_plugin_api::{Field, FieldList};
    assert_eq!(
        c.sinks[0].field_list().fields(),
        [Field::Srcaddr, Field::TcpFlags, Field::Type]
    );
    let c = parse(Path::new("/etc/flowlogd.toml"), GOOD).unwrap();
    assert_eq!(c.sinks[0].field_list(), FieldList::default());
    // An unknown name: its own line and column in a multi-line array.
    let src = format!("{GOOD}fields = [\n  \"srcaddr\",\n  'tcp_flags',\n]\n");
    assert_eq!(
        error_of(&src),
        "/etc/flowlogd.toml:27:3: sinks.local.fields: unknown field \"tcp_flags\"; known fields: \
         version, vswitch-id, vm-id, vpc-id, account-id, eni-id, srcaddr, srcport, dstaddr, \
         dstport, protocol, direction, packets, bytes, start, end, log-status, action, \
         pkt-srcaddr, pkt-dstaddr, flow-start, flow-end, tcp-flags, type, rule"
    );
    // A duplicate: at its second occurrence.
    let src = format!("{GOOD}fields = [\"bytes\", \"srcaddr\", \"bytes\"]\n");
    assert_eq!(
        error_of(&src),
        "/etc/flowlogd.toml:25:31: sinks.local.fields: field \"bytes\" is listed twice"
    );
    let src = format!("{GOOD}fields = []\n");
    assert_eq!(
        error_of(&src),
        "/etc/flowlogd.toml:25:10: sinks.local.fields: expected at least one field name, got an \
         empty list (leave `fields` out for the default 18 fields)"
    );
    let src = format!("{GOOD}fields = \"srcaddr bytes\"\n");
    assert_eq!(
        error_of(&src),
        "/etc/flowlogd.toml:25:10: sinks.local.fields: expected an array of field names"
    );
    let src = format!("{GOOD}fields = [\"srcaddr\", 7]\n");
    assert_eq!(
        error_of(&src),
        "/etc/flowlogd.toml:25:10: sinks.local.fields: expected field names (strings), got 7"
    );
}

/// GOOD with a `[metadata]` table at its end (its keys on line 27 on).
fn with_metadata(table: &str) -> String {
    format!("{GOOD}\n[metadata]\n{table}")
}

#[test]
fn metadata_defaults_to_static() {
    let c = parse(Path::new("/etc/flowlogd.toml"), GOOD).unwrap();
    assert_eq!(c.metadata, MetadataSource::Static);
    let c = parse(
        Path::new("/etc/flowlogd.toml"),
        &with_metadata("source = \"static\"\n"),
    )
    .unwrap();
    assert_eq!(c.metadata, MetadataSource::Static);
}

#[test]
fn metadata_ecs_defaults() {
    let c = parse(
        Path::new("/etc/flowlogd.toml"),
        &with_metadata("source = \"ecs\"\n"),
    )
    .unwrap();
    let MetadataSource::Ecs(ecs) = c.metadata else {
        panic!("{:?}", c.metadata)
    };
    assert_eq!(
        ecs.base_url.to_string(),
        "http://100.100.100.200:80/latest/meta-data/"
    );
    assert_eq!((ecs.ttl_secs, ecs.unmapped), (300, Unmapped::Ignore));
    let c = parse(
        Path::new("/etc/flowlogd.toml"),
        &with_metadata(
            "source = \"ecs\"\nbase_url = \"http://127.0.0.1:8080/latest/meta-data\"\nttl_secs = 30\nunmapped = \"report\"\n",
        ),
    )
    .unwrap();
    let MetadataSource::Ecs(ecs) = c.metadata else {
        panic!("{:?}", c.metadata)
    };
    assert_eq!(
        ecs.base_url.to_string(),
        "http://127.0.0.1:8080/latest/meta-data/"
    );
    assert_eq!((ecs.ttl_secs, ecs.unmapped), (30, Unmapped::Report));
}

#[test]
fn with_ecs_eni_tables_are_optional_and_flow_logs_may_name_ids_only_the_service_knows() {
    let src = r#"
[metadata]
source = "ecs"

[[flow_log]]
name = "vpc"
resource_type = "vpc"
resource_id = "vpc-bp1only"
sinks = ["local"]

[[flow_log]]
name = "one"
resource_type = "eni"
resource_id = "eni-bp1only"
sinks = ["local"]

[sinks.local]
plugin = "file"
"#;
    let c = parse(Path::new("/etc/flowlogd.toml"), src).unwrap();
    assert!(c.enis.is_empty());
    assert_eq!(c.flow_logs.len(), 2);
    // Static metadata keeps the check.
    let static_src = format!("{}{}", src.replace("\"ecs\"", "\"static\""), SECOND_ENI);
    assert_eq!(
        error_of(&static_src),
        "/etc/flowlogd.toml:8:15: flow_log.resource_id: no [[eni]] has vpc_id = \"vpc-bp1only\""
    );
}

#[test]
fn metadata_errors() {
    for (table, expected) in [
        (
            "source = \"aws\"\n",
            "/etc/flowlogd.toml:27:10: metadata.source: expected \"static\" or \"ecs\", got \"aws\"",
        ),
        (
            "source = \"ecs\"\nbase_url = \"100.100.100.200/latest/meta-data/\"\n",
            "/etc/flowlogd.toml:28:12: metadata.base_url: expected an http:// URL like \
             \"http://100.100.100.200/latest/meta-data/\", got \"100.100.100.200/latest/meta-data/\"",
        ),
        (
            "source = \"ecs\"\nbase_url = \"https://100.100.100.200/latest/meta-data/\"\n",
            "/etc/flowlogd.toml:28:12: metadata.base_url: https is not supported (the ECS metadata service is \
             plain http on an address only the VM reaches), got \"https://100.100.100.200/latest/meta-data/\"",
        ),
        (
            "source = \"ecs\"\nbase_url = \"http://127.0.0.1:0/\"\n",
            "/etc/flowlogd.toml:28:12: metadata.base_url: expected an http:// URL like \
             \"http://100.100.100.200/latest/meta-data/\", got \"http://127.0.0.1:0/\"",
        ),
        (
            "source = \"ecs\"\nttl_secs = 0\n",
            "/etc/flowlogd.toml:28:12: metadata.ttl_secs: expected an integer in 1..=86400, got 0",
        ),
        (
            "source = \"ecs\"\nttl_secs = \"5m\"\n",
            "/etc/flowlogd.toml:28:12: metadata.ttl_secs: invalid type: string \"5m\", expected i64",
        ),
        (
            "source = \"ecs\"\nunmapped = \"drop\"\n",
            "/etc/flowlogd.toml:28:12: metadata.unmapped: expected \"ignore\" or \"report\", got \"drop\"",
        ),
        (
            "unmapped = \"report\"\n",
            "/etc/flowlogd.toml:27:12: metadata.unmapped: only used with source = \"ecs\" (source is \"static\")",
        ),
        (
            "source = \"static\"\nttl_secs = 60\n",
            "/etc/flowlogd.toml:28:12: metadata.ttl_secs: only used with source = \"ecs\" (source is \"static\")",
        ),
        (
            "source = \"ecs\"\nurl = \"http://x/\"\n",
            "/etc/flowlogd.toml:28:1: metadata.url: unknown field `url`, expected one of `source`, `base_url`, \
             `ttl_secs`, `unmapped`",
        ),
    ] {
        assert_eq!(error_of(&with_metadata(table)), expected, "{table}");
    }
}

// --- ids and names: one rule (crate::ids), located at the value ----------

const ID_RULE: &str =
    "ids are printable ASCII without whitespace (they are fields of text records and log lines)";

#[test]
fn an_injected_newline_in_an_id_is_refused_at_its_place() {
    // The attack of issue #13: a forged record line through the text output.
    let src = GOOD.replace("vpc_id = \"vpc-1\"", "vpc_id = \"vpc-1\\nINJECT 1 2 3\"");
    assert_eq!(
        error_of(&src),
        format!("/etc/flowlogd.toml:10:10: eni.vpc_id: got \"vpc-1\\nINJECT 1 2 3\": '\\n' at byte 5: {ID_RULE}")
    );
}

#[test]
fn every_id_and_name_from_the_config_follows_the_id_rule() {
    // (what is replaced, its key, the column its value starts at, line)
    let places = [
        ("id = \"eni-a\"", "eni.id", 7, 6),
        ("vswitch_id = \"vsw-1\"", "eni.vswitch_id", 9, 14),
        ("vpc_id = \"vpc-1\"", "eni.vpc_id", 10, 10),
        ("vm_id = \"i-1\"", "eni.vm_id", 11, 9),
        ("account_id = \"123\"", "eni.account_id", 12, 14),
        ("name = \"all\"", "flow_log.name", 15, 8),
        ("resource_id = \"vpc-1\"", "flow_log.resource_id", 17, 15),
    ];
    for (written, key, line, col) in places {
        let name = written.split(" = ").next().unwrap();
        for (bad, why) in [
            ("a b", format!("got \"a b\": ' ' at byte 1: {ID_RULE}")),
            (
                "a\\u0000b",
                format!("got \"a\\0b\": '\\0' at byte 1: {ID_RULE}"),
            ),
            (
                "a\\tb",
                format!("got \"a\\tb\": '\\t' at byte 1: {ID_RULE}"),
            ),
            (
                "a\\u001b[2Jb",
                format!("got \"a\\u{{1b}}[2Jb\": '\\u{{1b}}' at byte 1: {ID_RULE}"),
            ),
            ("vpc-é", format!("got \"vpc-é\": 'é' at byte 4: {ID_RULE}")),
            ("", "expected a non-empty id".to_owned()),
            (
                &"x".repeat(129),
                "129 bytes long, longer than the 128 an id may have".to_owned(),
            ),
        ] {
            let src = GOOD.replacen(written, &format!("{name} = \"{bad}\""), 1);
            assert_eq!(
                error_of(&src),
                format!("/etc/flowlogd.toml:{line}:{col}: {key}: {why}"),
                "{written} -> {bad}"
            );
        }
    }
    // 128 bytes is still an id.
    let long = "v".repeat(128);
    let src = GOOD.replace("vpc-1", &long);
    assert_eq!(
        parse(Path::new("/etc/flowlogd.toml"), &src).unwrap().enis[0]
            .ids
            .vpc_id,
        long
    );
}

#[test]
fn sink_names_follow_the_id_rule() {
    let src = GOOD
        .replace("[sinks.local]", "[sinks.\"lo cal\"]")
        .replace("sinks = [\"local\"]", "sinks = [\"lo cal\"]");
    assert_eq!(
        error_of(&src),
        format!("/etc/flowlogd.toml:21:8: sinks: got \"lo cal\": ' ' at byte 2: {ID_RULE}")
    );
    let src = GOOD
        .replace("[sinks.local]", "[sinks.\"a\\nb\"]")
        .replace("sinks = [\"local\"]", "sinks = [\"a\\nb\"]");
    assert_eq!(
        error_of(&src),
        format!("/etc/flowlogd.toml:21:8: sinks: got \"a\\nb\": '\\n' at byte 1: {ID_RULE}")
    );
}

// --- an empty or cut-short config ----------------------------------------

const NO_FLOW_LOG: &str = "/etc/flowlogd.toml:1:1: flow_log: no [[flow_log]] table, so nothing would be \
     captured (is the file empty or cut short?); add one with name, resource_type, resource_id and sinks";

#[test]
fn an_empty_config_is_refused() {
    for src in [
        "",
        "\n",
        "# nothing yet\n",
        "[daemon]\ncapture_window_secs = 60\n",
    ] {
        assert_eq!(error_of(src), NO_FLOW_LOG, "{src:?}");
    }
}

#[test]
fn a_config_cut_before_its_flow_logs_is_refused() {
    let cut = &GOOD[..GOOD.find("[[flow_log]]").unwrap()];
    assert_eq!(error_of(cut), NO_FLOW_LOG);
}

#[test]
fn static_metadata_without_an_eni_is_refused() {
    let no_eni = {
        let start = GOOD.find("[[eni]]").unwrap();
        let end = GOOD.find("[[flow_log]]").unwrap();
        format!("{}{}", &GOOD[..start], &GOOD[end..])
    };
    let why = "no [[eni]] table, and with metadata.source = \"static\" ENIs come only from [[eni]] tables; \
               add one (id, interface or mac, vswitch_id, vpc_id, vm_id, account_id) or set \
               metadata.source = \"ecs\"";
    // No [metadata]: static by default, located at the start.
    assert_eq!(
        error_of(&no_eni),
        format!("/etc/flowlogd.toml:1:1: eni: {why}")
    );
    // Written: located at the source.
    let src = format!("[metadata]\nsource = \"static\"\n{no_eni}");
    assert_eq!(
        error_of(&src),
        format!("/etc/flowlogd.toml:2:10: eni: {why}")
    );
    // With the metadata service, ENIs come from it.
    let src = format!("[metadata]\nsource = \"ecs\"\n{no_eni}");
    assert!(parse(Path::new("/etc/flowlogd.toml"), &src)
        .unwrap()
        .enis
        .is_empty());
}

// --- paths and interface names --------------------------------------------

#[test]
fn plugin_dir_and_state_dir_are_absolute() {
    let src = GOOD.replace(
        "plugin_dir = \"/usr/lib/flowlogd/sinks\"",
        "plugin_dir = \"sinks\"",
    );
    assert_eq!(
        error_of(&src),
        "/etc/flowlogd.toml:4:14: daemon.plugin_dir: expected an absolute path, got \"sinks\" (a relative \
         one would depend on the directory flowlogd is started in)"
    );
    let src = GOOD.replace(
        "plugin_dir = \"/usr/lib/flowlogd/sinks\"",
        "plugin_dir = \"/usr/lib/flowlogd/sinks\"\nstate_dir = \"\"",
    );
    assert_eq!(
        error_of(&src),
        "/etc/flowlogd.toml:5:13: daemon.state_dir: expected an absolute path, got \"\" (a relative \
         one would depend on the directory flowlogd is started in)"
    );
    let src = GOOD.replace(
        "plugin_dir = \"/usr/lib/flowlogd/sinks\"",
        "plugin_dir = \"/usr/lib/flowlogd/sinks\"\nstate_dir = \"./state\"",
    );
    assert_eq!(
        error_of(&src),
        "/etc/flowlogd.toml:5:13: daemon.state_dir: expected an absolute path, got \"./state\" (a relative \
         one would depend on the directory flowlogd is started in)"
    );
    let src = GOOD.replace(
        "plugin_dir = \"/usr/lib/flowlogd/sinks\"",
        "plugin_dir = \"/usr/lib/\\nflowlogd\"",
    );
    assert_eq!(
        error_of(&src),
        "/etc/flowlogd.toml:4:14: daemon.plugin_dir: got \"/usr/lib/\\nflowlogd\": '\\n' in a path"
    );
}

#[test]
fn interface_names_follow_the_kernel_rule() {
    let rule = "Linux interface names have no '/', ':', whitespace or control characters";
    for (bad, why) in [
        (
            "eth0123456789012",
            "\"eth0123456789012\" is 16 bytes long; Linux interface names have at most 15 (IFNAMSIZ - 1)"
                .to_owned(),
        ),
        ("../eth0", format!("got \"../eth0\": '/' at byte 2; {rule}")),
        ("eth 0", format!("got \"eth 0\": ' ' at byte 3; {rule}")),
        ("eth0:1", format!("got \"eth0:1\": ':' at byte 4; {rule}")),
        ("eth0\\u0000", format!("got \"eth0\\0\": '\\0' at byte 4; {rule}")),
        ("eth0\\n", format!("got \"eth0\\n\": '\\n' at byte 4; {rule}")),
        ("..", "expected an interface name, got \"..\"".to_owned()),
        ("", "expected an interface name, got \"\"".to_owned()),
    ] {
        let src = GOOD.replace("interface = \"eth0\"", &format!("interface = \"{bad}\""));
        assert_eq!(
            error_of(&src),
            format!("/etc/flowlogd.toml:8:13: eni.interface: {why}"),
            "{bad}"
        );
    }
    // 15 bytes is the longest name.
    let src = GOOD.replace("\"eth0\"", "\"eth012345678901\"");
    assert_eq!(
        parse(Path::new("/etc/flowlogd.toml"), &src).unwrap().enis[0].matcher,
        EniMatch::Interface("eth012345678901".into())
    );
}

// --- control characters are never echoed raw -------------------------------

#[test]
fn control_characters_from_the_config_are_escaped_in_errors() {
    let src = GOOD.replace(
        "capture_window_secs = 600",
        "capture_window_secs = 600\nlog_level = \"info\\u001b[2J\\r\\nforged\"",
    );
    assert_eq!(
        error_of(&src),
        "/etc/flowlogd.toml:4:13: daemon.log_level: expected one of \"error\", \"warn\", \"info\", \"debug\", \
         \"trace\", got \"info\\u{1b}[2J\\r\\nforged\""
    );
    // A quoted key reaches toml's own message.
    let src = GOOD.replace(
        "capture_window_secs = 600",
        "capture_window_secs = 600\n\"x\\u0007y\" = 1",
    );
    let e = error_of(&src);
    assert!(
        e.starts_with(
            "/etc/flowlogd.toml:4:1: daemon.x\\u0007y: unknown field `x\\u{7}y`, expected one of"
        ),
        "{e}"
    );
    let src = GOOD.replace("plugin = \"file\"", "plugin = \"fi\\u0007le\"");
    assert_eq!(
        error_of(&src),
        "/etc/flowlogd.toml:22:10: sinks.local.plugin: expected a plugin name (a file in daemon.plugin_dir) \
         or an absolute path to a .so"
    );
}

// --- what is read -----------------------------------------------------------

/// A fresh directory under the system's temporary directory.
fn temp_dir(label: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("flowlogd-config-{label}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_fifo_is_refused_without_waiting_for_a_writer() {
    let dir = temp_dir("fifo");
    let fifo = dir.join("flowlogd.toml");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path that lives across the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    // Without a writer a blocking open never returns: load on a thread,
    // bounded by a timeout, so that a regression fails instead of hanging.
    let (tx, rx) = std::sync::mpsc::channel();
    let path = fifo.clone();
    std::thread::spawn(move || {
        let _ = tx.send(load(&path).map(|_| ()).map_err(|e| e.to_string()));
    });
    let got = rx.recv_timeout(std::time::Duration::from_secs(5));
    if got.is_err() {
        // Unblock the thread's open before failing.
        let _ = std::fs::OpenOptions::new().write(true).open(&fifo);
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        got.expect("load of a FIFO did not return within 5 s"),
        Err(format!(
            "{}: not a regular file (a FIFO); the config must be a regular file",
            fifo.display()
        ))
    );
}

#[test]
fn devices_and_directories_are_refused() {
    assert_eq!(
        load(Path::new("/dev/null")).unwrap_err().to_string(),
        "/dev/null: not a regular file (a character device); the config must be a regular file"
    );
    let dir = temp_dir("dir");
    let e = load(&dir).unwrap_err().to_string();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        e,
        format!(
            "{}: not a regular file (a directory); the config must be a regular file",
            dir.display()
        )
    );
}

#[test]
fn a_file_larger_than_any_config_is_refused() {
    let dir = temp_dir("large");
    let path = dir.join("flowlogd.toml");
    // A valid config padded with comments to one byte over 1 MiB.
    let mut src = GOOD.to_owned();
    while src.len() < (1 << 20) {
        src.push_str("# padding padding padding padding padding padding padding padding\n");
    }
    src.truncate(1 << 20);
    src.pop();
    src.push('\n');
    std::fs::write(&path, &src).unwrap();
    assert!(load(&path).is_ok(), "exactly 1 MiB is read");
    src.push('\n');
    std::fs::write(&path, &src).unwrap();
    let e = load(&path).unwrap_err().to_string();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        e,
        format!(
            "{}: larger than 1 MiB, more than any config; not read",
            path.display()
        )
    );
}

#[test]
fn bytes_that_are_not_utf8_are_located() {
    let dir = temp_dir("utf8");
    let path = dir.join("flowlogd.toml");
    let mut bytes = GOOD.replace("\"vm-1\"", "\"i-1\"").into_bytes();
    let at = GOOD.find("i-1").unwrap();
    bytes[at] = 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let e = load(&path).unwrap_err().to_string();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        e,
        format!("{}:11:10: not UTF-8 (TOML files are UTF-8)", path.display())
    );
}

// --- [metrics] ---------------------------------------------------------

#[test]
fn metrics_listen_defaults_to_loopback_and_empty_turns_it_off() {
    let c = parse(Path::new("/etc/flowlogd.toml"), GOOD).unwrap();
    assert_eq!(c.metrics_listen, Some("127.0.0.1:9750".parse().unwrap()));
    for (table, expected) in [
        ("[metrics]\nlisten = \"\"\n", None),
        (
            "[metrics]\nlisten = \"[::1]:9100\"\n",
            Some("[::1]:9100".parse().unwrap()),
        ),
        (
            "[metrics]\nlisten = \"0.0.0.0:9750\"\n",
            Some("0.0.0.0:9750".parse().unwrap()),
        ),
    ] {
        let src = format!("{GOOD}\n{table}");
        let c = parse(Path::new("/etc/flowlogd.toml"), &src).unwrap();
        assert_eq!(c.metrics_listen, expected, "{table}");
    }
}

#[test]
fn a_metrics_listen_that_is_no_address_is_refused_at_its_value() {
    let line = GOOD.lines().count() + 2;
    for (value, got) in [
        ("localhost:9750", "localhost:9750"),
        ("127.0.0.1", "127.0.0.1"),
        ("127.0.0.1:99999", "127.0.0.1:99999"),
        ("9750", "9750"),
    ] {
        let src = format!("{GOOD}[metrics]\nlisten = \"{value}\"\n");
        assert_eq!(
            error_of(&src),
            format!(
                "/etc/flowlogd.toml:{line}:10: metrics.listen: expected an IP address and port \
                 (\"127.0.0.1:9750\", \"[::1]:9750\") or \"\" to turn metrics off, got \"{got}\""
            ),
            "{value}"
        );
    }
    let src = format!("{GOOD}[metrics]\nport = 9750\n");
    assert!(
        error_of(&src).contains("metrics.port: unknown field `port`, expected `listen`"),
        "{}",
        error_of(&src)
    );
}

/// GOOD with `fields` in the file sink's table naming tcp-flags, and
/// `daemon_lines` added to `[daemon]`.
fn with_tcp_flags(daemon_lines: &str) -> String {
    GOOD.replace(
        "capture_window_secs = 600",
        &format!("capture_window_secs = 600\n{daemon_lines}"),
    )
    .replace(
        "format = \"text\"",
        "format = \"text\"\nfields = [\"srcaddr\", \"tcp-flags\"]",
    )
}

#[test]
fn tcp_flags_group_follows_the_field_lists() {
    let path = Path::new("/etc/flowlogd.toml");
    assert_eq!(parse(path, GOOD).unwrap().tcp_flags_group(), None);
    let listed = parse(path, &with_tcp_flags("")).unwrap();
    assert_eq!(listed.tcp_flags_group(), Some(65000));
    let other = parse(path, &with_tcp_flags("tcp_flags_nflog_group = 7")).unwrap();
    assert_eq!(other.tcp_flags_group(), Some(7));
    let without = GOOD.replace(
        "format = \"text\"",
        "format = \"text\"\nfields = [\"srcaddr\", \"dstaddr\"]",
    );
    assert_eq!(parse(path, &without).unwrap().tcp_flags_group(), None);
}

#[test]
fn tcp_flags_group_colliding_with_a_drop_group() {
    assert_eq!(
        error_of(&with_tcp_flags("nflog_groups = [100]\ntcp_flags_nflog_group = 100")),
        "/etc/flowlogd.toml:5:25: daemon.tcp_flags_nflog_group: group 100 is also in daemon.nflog_groups: the \
         tcp-flags rules (for sink local's field list) need a group of their own; choose another"
    );
    assert_eq!(
        error_of(&with_tcp_flags("nflog_groups = [100, 65000]")),
        "/etc/flowlogd.toml:4:22: daemon.nflog_groups: group 65000 is also in daemon.nflog_groups: the \
         tcp-flags rules (for sink local's field list) need a group of their own; choose another \
         (daemon.tcp_flags_nflog_group is 65000 by default)"
    );
    // Without tcp-flags in a field list the group is not bound: no conflict.
    let unused = GOOD.replace(
        "capture_window_secs = 600",
        "capture_window_secs = 600\nnflog_groups = [65000]",
    );
    assert!(parse(Path::new("/etc/flowlogd.toml"), &unused).is_ok());
    assert_eq!(
        error_of(&with_tcp_flags("tcp_flags_nflog_group = 65536")),
        "/etc/flowlogd.toml:4:25: daemon.tcp_flags_nflog_group: expected an integer in 0..=65535, got 65536"
    );
}

#[test]
fn tcp_flags_without_the_daemons_table() {
    assert_eq!(
        error_of(&with_tcp_flags("install_tracking_table = false")),
        "/etc/flowlogd.toml:26:1: sinks.local.fields: tcp-flags needs the daemon's nftables table inet \
         flowlogd, where it logs TCP control packets, but daemon.install_tracking_table = false; set it to \
         true or leave tcp-flags out"
    );
}
