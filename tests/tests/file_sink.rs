//! The file sink through the real daemon: both formats byte for byte against
//! the golden files, rotation that loses nothing, and a sink directory
//! removed while the daemon runs.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flowlogd_tests::netns::{DaemonProcess, LineProcess, Netns};
use flowlogd_tests::*;
use serde_json::Value;

const TRAFFIC: &str = env!("CARGO_BIN_EXE_flowlogd-traffic");

const GOLDEN_ENIS: &str = "[[eni]]\nid = \"eni-bp1a2b3c4d\"\ninterface = \"eth0\"\nvswitch_id = \"vsw-bp1e5f6g\"\n\
vpc_id = \"vpc-bp1h7i8j\"\nvm_id = \"i-bp1k9l0m\"\naccount_id = \"1234567890123456\"\n\n\
[[eni]]\nid = \"eni-bp1n1o2p\"\ninterface = \"eth1\"\nvswitch_id = \"vsw-bp1e5f6g\"\n\
vpc_id = \"vpc-bp1h7i8j\"\nvm_id = \"i-bp1k9l0m\"\naccount_id = \"1234567890123456\"\n\n\
[[flow_log]]\nname = \"vpc\"\nresource_type = \"vpc\"\nresource_id = \"vpc-bp1h7i8j\"\nsinks = [\"local\"]\n\n";

/// `<tmp>/flowlogd.toml`: the golden ENIs and their flow log into the file
/// sink `local`, whose options (after `plugin = "file"`) are `options`.
fn golden_config(tmp: &TempDir, plugins: &Path, options: &str) -> PathBuf {
    DaemonConfig::new(plugins)
        .toml(GOLDEN_ENIS)
        .toml(&format!("[sinks.local]\nplugin = \"file\"\n{options}"))
        .write(&tmp.join("flowlogd.toml"))
}

fn replay_golden(format: &str) -> String {
    let tmp = TempDir::new(&format!("golden-{format}"));
    let plugins = plugin_dir(&tmp);
    let out = tmp.join("logs/flow.log");
    let cfg = golden_config(
        &tmp,
        &plugins,
        &format!("path = \"{}\"\nformat = \"{format}\"\n", out.display()),
    );
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
    let cfg = DaemonConfig::new(&plugins)
        .eni("eni-1", "eth0", "vpc-1")
        .flow_log(FlowLog::eni("all", "eni-1").sinks(&["local"]))
        .toml(&format!(
            "[sinks.local]\nplugin = \"file\"\npath = \"{}\"\nformat = \"json\"\nrotate_bytes = 65536\nrotate_keep = 1000\n",
            out.display()
        ))
        .write(&tmp.join("flowlogd.toml"));
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
    let cfg = golden_config(&tmp, &plugins, "path = \"/var/log/flowlogd/flow.log\"\n");
    let o = flowlogd(&["check-config", "--config", cfg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    for expected in [
        format!("{}: OK", cfg.display()),
        "  eni-bp1a2b3c4d (interface eth0): vswitch vsw-bp1e5f6g, vpc vpc-bp1h7i8j, vm i-bp1k9l0m, account 1234567890123456; captured by: vpc".to_owned(),
        "  vpc: vpc vpc-bp1h7i8j, traffic all, sinks local".to_owned(),
        format!("  local: plugin \"file\" -> {} (file 0.1.0, ABI 1.1), options OK", plugins.join("file.so").display()),
    ] {
        assert!(out.contains(&expected), "missing {expected:?} in\n{}", text(&o));
    }
}

#[test]
fn check_config_reports_a_file_sink_option_error_at_its_line() {
    let tmp = TempDir::new("bad-format");
    let plugins = plugin_dir(&tmp);
    let log_dir = tmp.join("logs");
    let cfg = golden_config(
        &tmp,
        &plugins,
        &format!(
            "path = \"{}/flow.log\"\nformat = \"xml\"\n",
            log_dir.display()
        ),
    );
    let o = flowlogd(&["check-config", "--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let line = line_starting_with(&cfg, "format");
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
    // The summary of what the shipped file configures: exactly its one
    // ENI, flow log and file sink, the sink's options accepted by the
    // built plugin. (The lines after it depend on this host's sysctls.)
    let out = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], format!("{}: OK", cfg.display()), "{}", text(&o));
    let section = |header: &str| -> Vec<&str> {
        let at = lines
            .iter()
            .position(|l| *l == header)
            .unwrap_or_else(|| panic!("no {header:?} in\n{out}"));
        lines[at + 1..]
            .iter()
            .take_while(|l| l.starts_with("  "))
            .copied()
            .collect()
    };
    assert_eq!(
        section("ENIs:"),
        ["  eni-primary (interface eth0): vswitch vsw-unset, vpc vpc-unset, vm i-unset, account 0; \
          captured by: all-traffic; ids from static config"]
    );
    assert_eq!(
        section("flow logs:"),
        ["  all-traffic: vpc vpc-unset, traffic all, sinks local"]
    );
    assert_eq!(
        section("sinks:"),
        [format!(
            "  local: plugin \"file\" -> {} (file 0.1.0, ABI 1.1), options OK",
            plugins.join("file.so").display()
        )]
    );
    assert_eq!(String::from_utf8_lossy(&o.stderr), "");
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

/// Datagrams per UDP flow, and their payload (IPv4: 28 + payload bytes each).
const DATAGRAMS: u64 = 1000;
const PAYLOAD: u64 = 100;

/// Sends one UDP flow of `DATAGRAMS` from `from` to `target`; returns the
/// client's port.
#[track_caller]
fn udp_flow(from: &Netns, target: &str) -> u16 {
    let mut c = LineProcess::traffic(
        from,
        TRAFFIC,
        &[
            "udp-client",
            target,
            &DATAGRAMS.to_string(),
            &PAYLOAD.to_string(),
            "0",
        ],
    );
    let port = c.expect_number("local", Duration::from_secs(20)) as u16;
    c.expect_line("done", Duration::from_secs(20));
    c.finish(Duration::from_secs(20));
    port
}

/// (records, packets, bytes) of the arriving UDP records from client port
/// `port`.
fn flow_sum(records: &[Value], port: u16) -> (usize, u64, u64) {
    records
        .iter()
        .filter(|r| r["protocol"] == 17 && r["direction"] == "in" && r["srcport"] == port)
        .fold((0, 0, 0), |(n, p, b), r| {
            (
                n + 1,
                p + r["packets"].as_u64().unwrap(),
                b + r["bytes"].as_u64().unwrap(),
            )
        })
}

/// Polls `file` until client port `port`'s records sum to `DATAGRAMS`
/// packets; panics with the daemon's log after `timeout`.
#[track_caller]
fn wait_for_flow(daemon: &mut DaemonProcess, file: &Path, port: u16, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let (_, packets, _) = flow_sum(&read_json_records(file), port);
        if packets >= DATAGRAMS {
            return;
        }
        if let Some(status) = daemon.exited() {
            panic!("flowlogd exited ({status}):\n{}", daemon.log());
        }
        assert!(
            Instant::now() < deadline,
            "{} has {packets} of port {port}'s {DATAGRAMS} packets after {timeout:?}:\n{}",
            file.display(),
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The issue's scenario: the sink's directory is removed (`rm -rf`) while
/// the daemon runs. Before the fix the sink went on writing into the
/// deleted file and the summary said "delivered". Now every record of the
/// traffic after the removal is in the recreated file, exactly once, none
/// went into the deleted file, and the log says what happened.
#[test]
fn directory_removed_while_running_records_go_to_the_recreated_file() {
    if !require_root("directory_removed_while_running_records_go_to_the_recreated_file") {
        return;
    }
    let s = Scenario::builder("dir-removed")
        .namespaces("rmdira", "rmdirb")
        .veth("veth-a", "veth-b", 42)
        .build();
    let (a, b, a_end) = (&s.a, &s.b, &s.ea);
    let logs = s.path("logs");
    let out = logs.join("flow.jsonl");
    let config = s
        .config()
        .window_secs(2)
        .eni("eni-a", "veth-a", "vpc-r")
        .flow_log(FlowLog::vpc("all", "vpc-r").sinks(&["local"]))
        .json_sink("local", &out);
    let cfg = s.write_config("flowlogd.toml", &config);
    let mut daemon = s.start_daemon(&cfg, "daemon.log");
    let target = format!("{}:5400", a_end.v4);
    let mut server = LineProcess::traffic(a, TRAFFIC, &["udp-sink", &target]);
    server.expect_line("listening", Duration::from_secs(10));

    let before = udp_flow(b, &target);
    wait_for_flow(&mut daemon, &out, before, Duration::from_secs(20));
    // Held open, so the deleted file can still be read at the end.
    let deleted = std::fs::File::open(&out).unwrap();
    std::fs::remove_dir_all(&logs).unwrap();
    let after = udp_flow(b, &target);
    let kernel: Vec<_> = a
        .conntrack()
        .into_iter()
        .filter(|e| e.protocol == 17 && (e.orig.sport == before || e.orig.sport == after))
        .map(|e| (e.orig.sport, e.orig.packets, e.orig.bytes))
        .collect();
    let sent = (DATAGRAMS, DATAGRAMS * (28 + PAYLOAD));
    assert_eq!(kernel.len(), 2, "one conntrack entry per flow: {kernel:?}");
    for (port, packets, bytes) in &kernel {
        assert_eq!((*packets, *bytes), sent, "kernel counters of port {port}");
    }
    wait_for_flow(&mut daemon, &out, after, Duration::from_secs(20));
    daemon.stop();
    let log = daemon.log();

    let recreated = read_json_records(&out);
    let old: Vec<Value> = std::io::read_to_string(deleted)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Every packet after the removal is in the recreated file, once.
    let (n, packets, bytes) = flow_sum(&recreated, after);
    assert!(n >= 1, "no record of port {after} in {}", out.display());
    assert_eq!(
        (packets, bytes),
        sent,
        "port {after} in the recreated file\n{log}"
    );
    // None of them went into the deleted file, and the flow before the
    // removal is whole there and not repeated in the new file.
    assert_eq!(
        flow_sum(&old, after).0,
        0,
        "records after the removal in the deleted file"
    );
    assert_eq!((flow_sum(&old, before).1, flow_sum(&old, before).2), sent);
    assert_eq!(flow_sum(&recreated, before).0, 0, "{recreated:#?}");
    // Every record the daemon counts as delivered is in one of the files
    // (more than delivered only if a batch raced the removal: it is then
    // in both, at least once).
    let delivered: usize = log
        .lines()
        .find_map(|l| {
            l.split("sink local: ")
                .nth(1)?
                .strip_suffix(" retries")?
                .split_once(" records delivered, ")
                .map(|(n, _)| n.parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no delivery summary in the log:\n{log}"));
    assert!(
        old.len() + recreated.len() >= delivered,
        "{} + {} records in the files, {delivered} delivered\n{log}",
        old.len(),
        recreated.len()
    );
    // Said once each, naming the path.
    let said = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(
        said(&format!(
            "sink local: {} was deleted while open",
            out.display()
        )),
        1,
        "{log}"
    );
    assert_eq!(
        said(&format!(
            "sink local: directory {} was removed; created it again with mode 0750",
            logs.display()
        )),
        1,
        "{log}"
    );
}
