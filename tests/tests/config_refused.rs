//! Configs the daemon must refuse, as a careless operator or an attacker
//! would hand them over (issue #13): `/dev/null` and an empty file (what
//! `ExecStartPre` sees of a truncated `/etc/flowlogd.toml`), a FIFO (which
//! nobody ever writes), and an id with a newline meant to forge a record
//! line in the text output. None needs root.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use flowlogd_tests::*;

/// `flowlogd <args>`, killed and failed if it has not exited within 5 s.
#[track_caller]
fn flowlogd_within_5s(args: &[&str]) -> Output {
    let mut child = Command::new(flowlogd_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run flowlogd");
    let deadline = Instant::now() + Duration::from_secs(5);
    while child.try_wait().expect("wait for flowlogd").is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let o = child.wait_with_output().expect("reap flowlogd");
            panic!(
                "flowlogd {args:?} still running after 5 s; killed\n{}",
                text(&o)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("collect flowlogd's output")
}

#[track_caller]
fn assert_config_error(o: &Output, expected_stderr: &str) {
    assert_eq!(o.status.code(), Some(2), "{}", text(o));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr).trim_end(),
        expected_stderr,
        "{}",
        text(o)
    );
}

#[test]
fn dev_null_is_not_a_config() {
    let o = flowlogd_within_5s(&["check-config", "--config", "/dev/null"]);
    assert_config_error(
        &o,
        "flowlogd: /dev/null: not a regular file (a character device); the config must be a regular file",
    );
}

#[test]
fn an_empty_or_cut_short_config_is_refused() {
    let tmp = TempDir::new("config-empty");
    let plugins = plugin_dir(&tmp);
    let cfg = tmp.join("flowlogd.toml");
    let no_flow_log = format!(
        "flowlogd: {}:1:1: flow_log: no [[flow_log]] table, so nothing would be captured (is the file empty \
         or cut short?); add one with name, resource_type, resource_id and sinks",
        cfg.display()
    );
    std::fs::write(&cfg, "").unwrap();
    for command in ["check-config", "run"] {
        let o = flowlogd_within_5s(&[command, "--config", cfg.to_str().unwrap()]);
        assert_config_error(&o, &no_flow_log);
    }
    // Cut off after the [[eni]] tables, as a full disk leaves it.
    let full = config_with(
        &plugins,
        &format!(
            "{}[[flow_log]]\nname = \"all\"\nresource_type = \"vpc\"\nresource_id = \"vpc-1\"\nsinks = [\"local\"]\n\n\
             [sinks.local]\nplugin = \"file\"\npath = \"{}\"\n",
            eni_toml("eni-1", "eth0", "vpc-1"),
            tmp.join("flow.log").display()
        ),
    );
    std::fs::write(&cfg, &full).unwrap();
    let o = flowlogd_within_5s(&["check-config", "--config", cfg.to_str().unwrap()]);
    assert!(
        o.status.success(),
        "the whole file is a good config\n{}",
        text(&o)
    );
    std::fs::write(&cfg, &full[..full.find("[[flow_log]]").unwrap()]).unwrap();
    let o = flowlogd_within_5s(&["check-config", "--config", cfg.to_str().unwrap()]);
    assert_config_error(&o, &no_flow_log);
}

#[test]
fn a_fifo_config_is_refused_at_once() {
    let tmp = TempDir::new("config-fifo");
    let fifo = tmp.join("flowlogd.toml");
    let made = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success());
    let expected = format!(
        "flowlogd: {}: not a regular file (a FIFO); the config must be a regular file",
        fifo.display()
    );
    // Nobody ever opens it for writing: a blocking open would wait forever.
    for command in ["check-config", "run"] {
        let o = flowlogd_within_5s(&[command, "--config", fifo.to_str().unwrap()]);
        assert_config_error(&o, &expected);
    }
}

/// The config of one ENI whose `vpc_id` is written as `vpc_id_toml` (TOML
/// string syntax), with a text file sink writing to `out`.
fn config_with_vpc_id(tmp: &TempDir, vpc_id_toml: &str, out: &Path) -> std::path::PathBuf {
    let plugins = plugin_dir(tmp);
    let cfg = tmp.join("flowlogd.toml");
    let eni = eni_toml("eni-1", "eth0", "vpc-1").replace("vpc_id = \"vpc-1\"", vpc_id_toml);
    std::fs::write(
        &cfg,
        config_with(
            &plugins,
            &format!(
                "{eni}[[flow_log]]\nname = \"all\"\nresource_type = \"eni\"\nresource_id = \"eni-1\"\nsinks = [\"local\"]\n\n\
                 [sinks.local]\nplugin = \"file\"\npath = \"{}\"\nformat = \"text\"\n",
                out.display()
            ),
        ),
    )
    .unwrap();
    cfg
}

#[test]
fn an_id_with_an_injected_record_line_is_refused() {
    let tmp = TempDir::new("config-inject");
    let out = tmp.join("flow.log");
    let records = tmp.join("records.jsonl");
    write_json_lines(&records, &sample_records("eni-1", "vpc-1", 1));

    // The control: a plain id goes through, one record, one line.
    let cfg = config_with_vpc_id(&tmp, "vpc_id = \"vpc-1\"", &out);
    let o = flowlogd_within_5s(&[
        "replay",
        "--config",
        cfg.to_str().unwrap(),
        records.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 1);
    std::fs::remove_file(&out).unwrap();

    // The attack: the id carries a second record line.
    let cfg = config_with_vpc_id(
        &tmp,
        "vpc_id = \"vpc-1\\n1 vsw-x i-x vpc-x 1 eni-x 6.6.6.6 1 7.7.7.7 2 6 out 1 1 1 2 OK ACCEPT\"",
        &out,
    );
    let line = line_starting_with(&cfg, "vpc_id");
    let expected = format!(
        "flowlogd: {}:{line}:10: eni.vpc_id: got \"vpc-1\\n1 vsw-x i-x vpc-x 1 eni-x 6.6.6.6 1 7.7.7.7 2 6 out 1 1 \
         1 2 OK ACCEPT\": '\\n' at byte 5: ids are printable ASCII without whitespace (they are fields of text \
         records and log lines)",
        cfg.display()
    );
    for args in [
        vec!["check-config", "--config", cfg.to_str().unwrap()],
        vec![
            "replay",
            "--config",
            cfg.to_str().unwrap(),
            records.to_str().unwrap(),
        ],
    ] {
        let o = flowlogd_within_5s(&args);
        assert_config_error(&o, &expected);
    }
    assert!(!out.exists(), "nothing was written");
}
