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
         `nflog_require_prefix`, `nflog_rcvbuf_bytes`"
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
    let static_src = format!(
        "{}{}",
        src.replace("\"ecs\"", "\"static\""),
        SECOND_ENI
    );
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
