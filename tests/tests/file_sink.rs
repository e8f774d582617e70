//! The file sink through the real daemon: both formats byte for byte against
//! the golden files, and rotation that loses nothing.

use flowlogd_tests::*;

const GOLDEN_ENIS: &str = "[[eni]]\nid = \"eni-bp1a2b3c4d\"\ninterface = \"eth0\"\nvswitch_id = \"vsw-bp1e5f6g\"\n\
vpc_id = \"vpc-bp1h7i8j\"\nvm_id = \"i-bp1k9l0m\"\naccount_id = \"1234567890123456\"\n\n\
[[eni]]\nid = \"eni-bp1n1o2p\"\ninterface = \"eth1\"\nvswitch_id = \"vsw-bp1e5f6g\"\n\
vpc_id = \"vpc-bp1h7i8j\"\nvm_id = \"i-bp1k9l0m\"\naccount_id = \"1234567890123456\"\n\n\
[[flow_log]]\nname = \"vpc\"\nresource_type = \"vpc\"\nresource_id = \"vpc-bp1h7i8j\"\nsinks = [\"local\"]\n\n";

fn replay_golden(format: &str) -> String {
    let tmp = TempDir::new(&format!("golden-{format}"));
    let plugins = plugin_dir(&tmp);
    let out = tmp.join("logs/flow.log");
    let cfg = tmp.join("flowlogd.toml");
    std::fs::write(
        &cfg,
        config_with(
            &plugins,
            &format!(
                "{GOLDEN_ENIS}[sinks.local]\nplugin = \"file\"\npath = \"{}\"\nformat = \"{format}\"\n",
                out.display()
            ),
        ),
    )
    .unwrap();
    let golden_json = workspace_root().join("sinks/file/tests/golden/records.jsonl");
    let o = flowlogd(&[
        "replay",
        "--config",
        cfg.to_str().unwrap(),
        golden_json.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    std::fs::read_to_string(&out).unwrap()
}

#[test]
fn text_output_matches_golden_file() {
    let golden =
        std::fs::read_to_string(workspace_root().join("sinks/file/tests/golden/records.txt"))
            .unwrap();
    assert_eq!(replay_golden("text"), golden);
}

#[test]
fn json_output_matches_golden_file() {
    let golden =
        std::fs::read_to_string(workspace_root().join("sinks/file/tests/golden/records.jsonl"))
            .unwrap();
    assert_eq!(replay_golden("json"), golden);
}

#[test]
fn rotation_through_the_daemon_loses_nothing() {
    let tmp = TempDir::new("rotate");
    let plugins = plugin_dir(&tmp);
    let out = tmp.join("flow.log");
    let cfg = tmp.join("flowlogd.toml");
    std::fs::write(
        &cfg,
        config_with(
            &plugins,
            &format!(
                "{}[[flow_log]]\nname = \"all\"\nresource_type = \"eni\"\nresource_id = \"eni-1\"\nsinks = [\"local\"]\n\n\
                 [sinks.local]\nplugin = \"file\"\npath = \"{}\"\nformat = \"json\"\nrotate_bytes = 65536\nrotate_keep = 1000\n",
                eni_toml("eni-1", "eth0", "vpc-1"),
                out.display()
            ),
        ),
    )
    .unwrap();
    const N: usize = 3000;
    let records = sample_records("eni-1", "vpc-1", N);
    let input = tmp.join("records.jsonl");
    write_json_lines(&input, &records);
    let o = flowlogd(&[
        "replay",
        "--config",
        cfg.to_str().unwrap(),
        input.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));

    let mut found = Vec::new();
    let mut rotated = 0;
    for k in (1..=1000).rev() {
        let p = tmp.join(&format!("flow.log.{k}"));
        if p.exists() {
            rotated += 1;
            assert!(std::fs::metadata(&p).unwrap().len() <= 65536);
            found.extend(read_json_records(&p));
        }
    }
    found.extend(read_json_records(&out));
    assert!(rotated >= 5, "expected several rotations, got {rotated}");
    // Exactly the N records, in order, none lost or repeated.
    assert_eq!(found.len(), N);
    assert_eq!(found, records);
}

#[test]
fn check_config_prints_the_summary() {
    let tmp = TempDir::new("summary");
    let plugins = plugin_dir(&tmp);
    let cfg = tmp.join("flowlogd.toml");
    std::fs::write(
        &cfg,
        config_with(
            &plugins,
            &format!("{GOLDEN_ENIS}[sinks.local]\nplugin = \"file\"\npath = \"/var/log/flowlogd/flow.log\"\n"),
        ),
    )
    .unwrap();
    let o = flowlogd(&["check-config", "--config", cfg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    for expected in [
        format!("{}: OK", cfg.display()),
        "  eni-bp1a2b3c4d (interface eth0): vswitch vsw-bp1e5f6g, vpc vpc-bp1h7i8j, vm i-bp1k9l0m, account 1234567890123456; captured by: vpc".to_owned(),
        "  vpc: vpc vpc-bp1h7i8j, traffic all, sinks local".to_owned(),
        format!("  local: plugin \"file\" -> {} (file 0.1.0, ABI 1.0), options OK", plugins.join("file.so").display()),
    ] {
        assert!(out.contains(&expected), "missing {expected:?} in\n{}", text(&o));
    }
}

#[test]
fn check_config_reports_a_file_sink_option_error_at_its_line() {
    let tmp = TempDir::new("bad-format");
    let plugins = plugin_dir(&tmp);
    let cfg = tmp.join("flowlogd.toml");
    let log_dir = tmp.join("logs");
    std::fs::write(
        &cfg,
        config_with(
            &plugins,
            &format!(
                "{GOLDEN_ENIS}[sinks.local]\nplugin = \"file\"\npath = \"{}/flow.log\"\nformat = \"xml\"\n",
                log_dir.display()
            ),
        ),
    )
    .unwrap();
    let o = flowlogd(&["check-config", "--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let line = std::fs::read_to_string(&cfg)
        .unwrap()
        .lines()
        .position(|l| l.starts_with("format"))
        .unwrap()
        + 1;
    assert_eq!(
        String::from_utf8_lossy(&o.stderr).trim(),
        format!(
            "flowlogd: {}:{line}:1: sinks.local.format: expected \"text\" or \"json\", got \"xml\"",
            cfg.display()
        )
    );
    // Checking has no side effects: the sink's directory was not created.
    assert!(!log_dir.exists());
}

#[test]
fn shipped_sample_config_checks_against_built_plugins() {
    // The shipped config, with plugin_dir pointed at the built plugins.
    let tmp = TempDir::new("shipped");
    let plugins = plugin_dir(&tmp);
    let shipped = std::fs::read_to_string(workspace_root().join("etc/flowlogd.toml")).unwrap();
    let cfg = tmp.join("flowlogd.toml");
    std::fs::write(
        &cfg,
        shipped.replace(
            "plugin_dir = \"/usr/lib/flowlogd/sinks\"",
            &format!("plugin_dir = \"{}\"", plugins.display()),
        ),
    )
    .unwrap();
    let o = flowlogd(&["check-config", "--config", cfg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn version_and_help() {
    let o = flowlogd(&["--version"]);
    assert!(o.status.success());
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "flowlogd 0.1.0");
    let o = flowlogd(&["--help"]);
    let out = String::from_utf8_lossy(&o.stdout);
    for cmd in ["run", "check-config", "plugins", "replay"] {
        assert!(out.contains(&format!("  {cmd} ")), "{out}");
    }
}
