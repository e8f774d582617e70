//! Loading plugins: the C and Rust examples load and write, and the daemon
//! refuses a wrong ABI, a file that is not a plugin, unsafe permissions, a
//! plugin directory others can write, and never loads a file swapped in
//! after the check.

use std::os::unix::fs::PermissionsExt;

use flowlogd_tests::netns::Netns;
use flowlogd_tests::plugin_swap::{build_named_sink, exchange};
use flowlogd_tests::*;

/// `<tmp>/flowlogd.toml`: ENI eni-1, one flow log of vpc-1 to the sinks
/// `sink_names`, whose tables are `sinks`.
fn example_config(
    tmp: &TempDir,
    plugins: &std::path::Path,
    sinks: &str,
    sink_names: &[&str],
) -> std::path::PathBuf {
    DaemonConfig::new(plugins)
        .eni("eni-1", "eth0", "vpc-1")
        .flow_log(FlowLog::vpc("all", "vpc-1").sinks(sink_names))
        .toml(sinks)
        .write(&tmp.join("flowlogd.toml"))
}

/// `flowlogd check-config` refuses `cfg` (exit 2), saying `why`.
#[track_caller]
fn assert_check_config_refuses(cfg: &std::path::Path, why: &str) {
    let o = flowlogd(&["check-config", "--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(why),
        "{}",
        text(&o)
    );
}

/// Builds the C example against the header in `include`, checks that
/// `flowlogd plugins` lists it as ABI `1.<minor>`, and replays records
/// (with the minor-1 extras, which the daemon reads and passes on) into it:
/// it writes the 18 fields of each.
fn c_example_loads_and_writes_csv(label: &str, include: &std::path::Path, minor: u16) {
    let tmp = TempDir::new(label);
    let plugins = plugin_dir(&tmp);
    build_c_plugin_against(
        include,
        &workspace_root().join("examples/sink-c/csv_sink.c"),
        &plugins.join("csv.so"),
        &[],
    );
    let out = tmp.join("flows.csv");
    let cfg = example_config(
        &tmp,
        &plugins,
        &format!(
            "[sinks.csv]\nplugin = \"csv\"\npath = \"{}\"\n",
            out.display()
        ),
        &["csv"],
    );
    let listed = flowlogd(&["plugins", "--config", cfg.to_str().unwrap()]);
    assert!(listed.status.success(), "{}", text(&listed));
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains(&format!("  csv 0.1.0 (ABI 1.{minor})")),
        "{}",
        text(&listed)
    );

    let mut records = sample_records("eni-1", "vpc-1", 3);
    for r in &mut records {
        r["pkt-srcaddr"] = "192.0.2.9".into();
        r["flow-start"] = 1_700_000_401.into();
        r["tcp-flags"] = 19.into();
    }
    let input = tmp.join("records.jsonl");
    write_json_lines(&input, &records);
    let o = flowlogd(&[
        "replay",
        "--config",
        cfg.to_str().unwrap(),
        input.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let csv = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 4, "{csv}");
    assert!(lines[0].starts_with("version,vswitch-id,vm-id,"), "{csv}");
    assert_eq!(
        lines[1],
        "1,vsw-test,i-test,vpc-1,1234567890,eni-1,10.0.0.1,10000,10.0.0.2,443,6,out,1,60,1700000400,1700001000,OK,ACCEPT"
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("sink csv: csv sink opened"),
        "{}",
        text(&o)
    );
}

#[test]
fn c_example_plugin_loads_and_writes_csv() {
    c_example_loads_and_writes_csv(
        "c-example",
        &workspace_root().join("plugin-api/include"),
        flowlogd_plugin_api::abi::ABI_MINOR,
    );
}

/// A plugin built against ABI 1.0 (the old header) keeps loading and gets
/// the 18 fields, from a daemon whose records carry the 1.1 extras.
#[test]
fn an_abi_1_0_plugin_still_loads_and_writes_the_18_fields() {
    c_example_loads_and_writes_csv("c-example-1-0", &abi_1_0_include(), 0);
}

/// A 1.0 plugin would get `fields` as an option it does not know: the
/// daemon refuses that config at the key, in check-config and at start.
#[test]
fn fields_for_an_abi_1_0_plugin_is_a_located_error() {
    let tmp = TempDir::new("c-example-1-0-fields");
    let plugins = plugin_dir(&tmp);
    let so = plugins.join("csv.so");
    build_c_plugin_against(
        &abi_1_0_include(),
        &workspace_root().join("examples/sink-c/csv_sink.c"),
        &so,
        &[],
    );
    let cfg = example_config(
        &tmp,
        &plugins,
        &format!(
            "[sinks.csv]\nplugin = \"csv\"\npath = \"{}\"\nfields = [\"srcaddr\", \"bytes\"]\n",
            tmp.join("flows.csv").display()
        ),
        &["csv"],
    );
    let expected = format!(
        "{}:{}:1: sinks.csv.fields: plugin \"csv\" ({}) speaks ABI 1.0, which has no field \
         lists; remove `fields` (the plugin writes what it was built to write) or rebuild the \
         plugin against ABI 1.1 or later",
        cfg.display(),
        line_starting_with(&cfg, "fields"),
        so.display()
    );
    let o = flowlogd(&["check-config", "--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr).trim(),
        format!("flowlogd: {expected}")
    );
    // `replay` starts the sinks as `run` does, through the same check.
    let input = tmp.join("records.jsonl");
    write_json_lines(&input, &sample_records("eni-1", "vpc-1", 1));
    let o = flowlogd(&[
        "replay",
        "--config",
        cfg.to_str().unwrap(),
        input.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(&expected),
        "{}",
        text(&o)
    );
    assert!(!tmp.join("flows.csv").exists(), "the 1.0 plugin was opened");
}

#[test]
fn a_newer_abi_minor_is_refused() {
    let tmp = TempDir::new("newer-minor");
    let plugins = plugin_dir(&tmp);
    build_c_plugin(
        &workspace_root().join("tests/fixtures/newer_minor_sink.c"),
        &plugins.join("newer.so"),
        &[],
    );
    let cfg = example_config(&tmp, &plugins, "[sinks.x]\nplugin = \"newer\"\n", &["x"]);
    let minor = flowlogd_plugin_api::abi::ABI_MINOR;
    assert_check_config_refuses(
        &cfg,
        &format!(
            "sinks.x: {}: refused: plugin ABI version 1.{} is newer than this flowlogd's ABI \
             1.{minor}: it would read record fields this flowlogd does not pass; upgrade \
             flowlogd or rebuild the plugin",
            plugins.join("newer.so").display(),
            minor + 1
        ),
    );
}

#[test]
fn c_example_plugin_option_errors_point_at_the_key() {
    let tmp = TempDir::new("c-example-bad");
    let plugins = plugin_dir(&tmp);
    build_c_plugin(
        &workspace_root().join("examples/sink-c/csv_sink.c"),
        &plugins.join("csv.so"),
        &[],
    );
    let cfg = example_config(
        &tmp,
        &plugins,
        "[sinks.csv]\nplugin = \"csv\"\npath = \"/tmp/x.csv\"\ncolour = \"blue\"\n",
        &["csv"],
    );
    let o = flowlogd(&["check-config", "--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let line_of_colour = line_starting_with(&cfg, "colour");
    assert_eq!(
        String::from_utf8_lossy(&o.stderr).trim(),
        format!(
            "flowlogd: {}:{line_of_colour}:1: sinks.csv.colour: unknown option `colour`, expected `path`",
            cfg.display()
        )
    );
}

#[test]
fn rust_example_plugin_loads_and_summarises_windows() {
    let tmp = TempDir::new("rust-example");
    let plugins = plugin_dir(&tmp);
    let out = tmp.join("stats.log");
    let cfg = example_config(
        &tmp,
        &plugins,
        &format!(
            "[sinks.stats]\nplugin = \"window-stats\"\npath = \"{}\"\n",
            out.display()
        ),
        &["stats"],
    );
    let records = sample_records("eni-1", "vpc-1", 4);
    let input = tmp.join("records.jsonl");
    write_json_lines(&input, &records);
    let o = flowlogd(&[
        "replay",
        "--config",
        cfg.to_str().unwrap(),
        input.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    // packets 1+2+3+4, bytes 60 * that.
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "1700000400 1700001000 eni-1 records=4 accept_packets=10 accept_bytes=600 reject_packets=0 reject_bytes=0\n"
    );
}

#[test]
fn wrong_abi_major_is_refused() {
    let tmp = TempDir::new("bad-abi");
    let plugins = plugin_dir(&tmp);
    build_c_plugin(
        &workspace_root().join("tests/fixtures/bad_abi_sink.c"),
        &plugins.join("bad-abi.so"),
        &[],
    );
    let cfg = example_config(&tmp, &plugins, "[sinks.x]\nplugin = \"bad-abi\"\n", &["x"]);
    let o = flowlogd(&["check-config", "--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!(
            "sinks.x: {}: refused: plugin ABI version 99.0, this flowlogd speaks ABI 1.x",
            plugins.join("bad-abi.so").display()
        )),
        "{}",
        text(&o)
    );
    // `plugins` lists it among the refused, with the reason, and still
    // lists the good ones.
    let o = flowlogd(&["plugins", "--config", cfg.to_str().unwrap()]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(&format!(
            "  file 0.1.0 (ABI 1.{})",
            flowlogd_plugin_api::abi::ABI_MINOR
        )),
        "{}",
        text(&o)
    );
    assert!(out.contains("refused:\n"), "{}", text(&o));
    assert!(
        out.contains("bad-abi.so: refused: plugin ABI version 99.0"),
        "{}",
        text(&o)
    );
}

#[test]
fn shared_object_without_descriptor_is_refused() {
    let tmp = TempDir::new("no-descriptor");
    let plugins = plugin_dir(&tmp);
    build_c_plugin(
        &workspace_root().join("tests/fixtures/no_descriptor.c"),
        &plugins.join("other.so"),
        &[],
    );
    let cfg = example_config(&tmp, &plugins, "[sinks.x]\nplugin = \"other\"\n", &["x"]);
    assert_check_config_refuses(
        &cfg,
        "refused: not a flowlogd sink plugin (no `flowlogd_sink_descriptor` symbol)",
    );
}

#[test]
fn group_or_world_writable_plugin_is_refused() {
    let tmp = TempDir::new("perm");
    let plugins = plugin_dir(&tmp);
    let so = plugins.join("file.so");
    let cfg = example_config(
        &tmp,
        &plugins,
        "[sinks.local]\nplugin = \"file\"\npath = \"/tmp/x.log\"\n",
        &["local"],
    );
    for (mode, who) in [
        (0o666, "group and others"),
        (0o664, "its group"),
        (0o646, "others"),
    ] {
        std::fs::set_permissions(&so, std::fs::Permissions::from_mode(mode)).unwrap();
        assert_check_config_refuses(
            &cfg,
            &format!(
                "{}: refused: file is writable by {who} (mode {mode:04o}); run `chmod go-w {}`",
                so.display(),
                so.display()
            ),
        );
    }
    std::fs::set_permissions(&so, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = flowlogd(&["check-config", "--config", cfg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn plugin_not_owned_by_root_is_refused_when_running_as_root() {
    if !require_root("plugin_not_owned_by_root_is_refused_when_running_as_root") {
        return;
    }
    let tmp = TempDir::new("owner");
    let plugins = plugin_dir(&tmp);
    let so = plugins.join("file.so");
    std::os::unix::fs::chown(&so, Some(65534), None).unwrap();
    let cfg = example_config(
        &tmp,
        &plugins,
        "[sinks.local]\nplugin = \"file\"\npath = \"/tmp/x.log\"\n",
        &["local"],
    );
    assert_check_config_refuses(
        &cfg,
        &format!(
            "{}: refused: file is owned by uid 65534, not root, and flowlogd runs as root",
            so.display()
        ),
    );
}

#[test]
fn missing_plugin_names_the_paths_tried() {
    let tmp = TempDir::new("missing");
    let plugins = plugin_dir(&tmp);
    let cfg = example_config(&tmp, &plugins, "[sinks.x]\nplugin = \"kafka\"\n", &["x"]);
    let o = flowlogd(&["check-config", "--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let line = line_starting_with(&cfg, "[sinks.x]");
    assert_eq!(
        String::from_utf8_lossy(&o.stderr).trim(),
        format!(
            "flowlogd: {}:{line}:8: sinks.x: plugin = \"kafka\": plugin \"kafka\" not found (looked for {}, {})",
            cfg.display(),
            plugins.join("kafka.so").display(),
            plugins.join("libflowlogd_sink_kafka.so").display()
        )
    );
}

/// The attack of issue #13: a root-owned plugin in a directory anyone can
/// write (anyone can swap it for their own file). check-config, `plugins`
/// and `run` refuse it, naming the directory.
#[test]
fn plugin_in_a_world_writable_directory_is_refused_naming_the_directory() {
    if !require_root("plugin_in_a_world_writable_directory_is_refused_naming_the_directory") {
        return;
    }
    let tmp = TempDir::new("dir-0777");
    let plugins = plugin_dir(&tmp);
    std::fs::set_permissions(&plugins, std::fs::Permissions::from_mode(0o777)).unwrap();
    let so = plugins.join("file.so");
    let cfg = example_config(
        &tmp,
        &plugins,
        &format!(
            "[sinks.local]\nplugin = \"file\"\npath = \"{}\"\n",
            tmp.join("out.log").display()
        ),
        &["local"],
    );
    let why = format!(
        "{}: refused: directory {} is writable by group and others (mode 0777) without the sticky bit, \
         so they can swap the plugin; run `chmod go-w {}`",
        so.display(),
        plugins.display(),
        plugins.display()
    );
    assert_check_config_refuses(&cfg, &why);

    let o = flowlogd(&["plugins", "--config", cfg.to_str().unwrap()]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("  (none)\nrefused:\n"), "{}", text(&o));
    assert!(out.contains(&format!("  {why}\n")), "{}", text(&o));

    // `run`, in a namespace of its own, must stop before capturing.
    let ns = Netns::new("plugdir");
    let mut child = ns
        .command(flowlogd_bin())
        .args(["run", "--config", cfg.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    if child.try_wait().unwrap().is_none() {
        child.kill().unwrap();
        let _ = child.wait();
        panic!("flowlogd run started with a plugin in a 0777 directory");
    }
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(&why),
        "{}",
        text(&o)
    );

    // A symlink from a safe place into that directory is no way around it.
    let link = tmp.join("linked-plugins");
    std::os::unix::fs::symlink(&plugins, &link).unwrap();
    let cfg = example_config(
        &tmp,
        &link,
        "[sinks.local]\nplugin = \"file\"\npath = \"/tmp/x.log\"\n",
        &["local"],
    );
    assert_check_config_refuses(
        &cfg,
        &format!(
            "refused: directory {} is writable by group and others",
            plugins.display()
        ),
    );
}

/// The swap race of issue #13, measured at 75 of 200 runs before the fix:
/// a thread exchanges the real testsink plugin with an "evil" library whose
/// constructor writes a marker, while `check-config` loads testsink. The
/// directory is root's and 0755, so only the final open, check and load
/// are raced (the test is root, so it can swap there); the evil file is
/// writable by others, which the check refuses, so a run either loads the
/// real plugin or refuses the evil one, and the marker never appears.
#[test]
fn a_plugin_swapped_during_check_config_never_runs_the_other_file() {
    if !require_root("a_plugin_swapped_during_check_config_never_runs_the_other_file") {
        return;
    }
    let tmp = TempDir::new("swap");
    let plugins = plugin_dir(&tmp);
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&plugins, std::fs::Permissions::from_mode(0o755)).unwrap();
    let marker = tmp.join("evil-constructor-ran");
    let evil = plugins.join("evil.so");
    build_named_sink(&evil, "evil", Some(&marker));
    std::fs::set_permissions(&evil, std::fs::Permissions::from_mode(0o646)).unwrap();
    let victim = plugins.join("testsink.so");
    let cfg = example_config(
        &tmp,
        &plugins,
        &format!(
            "[sinks.out]\nplugin = \"testsink\"\npath = \"{}\"\n",
            tmp.join("out.jsonl").display()
        ),
        &["out"],
    );
    let o = flowlogd(&["check-config", "--config", cfg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swapper = {
        let (victim, evil, stop) = (victim.clone(), evil.clone(), stop.clone());
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
            let mut swaps = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed)
                && std::time::Instant::now() < deadline
            {
                assert!(exchange(&victim, &evil));
                swaps += 1;
            }
            swaps
        })
    };
    let (mut loaded, mut refused) = (0, 0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    for _ in 0..200 {
        if std::time::Instant::now() > deadline {
            break;
        }
        let o = flowlogd(&["check-config", "--config", cfg.to_str().unwrap()]);
        if o.status.success() {
            loaded += 1;
        } else {
            assert!(
                String::from_utf8_lossy(&o.stderr).contains(&format!(
                    "{}: refused: file is writable by others (mode 0646)",
                    victim.display()
                )),
                "{}",
                text(&o)
            );
            refused += 1;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    assert!(
        swaps > 0 && loaded + refused >= 20,
        "{swaps} swaps, {loaded} loaded, {refused} refused"
    );
    assert!(
        !marker.exists(),
        "the evil constructor ran ({loaded} loaded, {refused} refused before it)"
    );
}
