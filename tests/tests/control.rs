//! The control socket end to end: the daemon in a namespace with known
//! traffic (a UDP flow it accepts, ended with `conntrack -D` so its
//! counters arrive, and UDP datagrams a drop rule logs to NFLOG with a
//! rule prefix); `flowlogd status --json` must list the ENI with its ids
//! and flow logs, the sinks and the open window, and `flowlogd top --once`
//! must show the flow with its exact packets and bytes and the rejected
//! source with its rule. Then who may ask: with the socket's file
//! permissions opened up, a user that is neither root nor the daemon's
//! user is refused by the peer check; the daemon's user and root are
//! answered. Without a daemon, both commands say so and exit 1.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use flowlogd_tests::netns::{udp_accepted_and_dropped, DaemonProcess};
use flowlogd_tests::*;
use serde_json::Value;

const TRAFFIC: &str = env!("CARGO_BIN_EXE_flowlogd-traffic");

/// A drop rule that logs to NFLOG group 100 with flowlogd's prefix.
const RULES: &str = r#"table inet ctltest {
	chain input {
		type filter hook input priority filter; policy accept;
		udp dport 1161 counter log group 100 prefix "flowlogd:sg-ctl:deny-snmp" drop
	}
}
"#;

/// IPv4 + UDP headers: a datagram of `s` bytes is `s + 28` on the wire.
const UDP4_OVERHEAD: u64 = 28;

/// Namespace `a` (the daemon, ENI eni-ctl, the drop rule) and `b`; flow
/// logs `all` (sink `all`) and `rejects` (REJECT only, sink `rej`). A
/// one-hour window (the longest), so the traffic stays in the open window
/// while the test looks; a test that meets a window's close tries again.
fn lab(label: &str, user: Option<&str>) -> (Scenario, DaemonProcess, PathBuf) {
    let s = Scenario::builder(label)
        .veth("veth-a", "veth-b", 48)
        .build();
    let rules = s.path("rules.nft");
    std::fs::write(&rules, RULES).unwrap();
    s.a.exec_ok(&["nft", "-f", rules.to_str().unwrap()]);
    // The sinks write where the daemon's user may.
    let out = s.path("out");
    std::fs::create_dir(&out).unwrap();
    if user.is_some() {
        std::os::unix::fs::chown(&out, Some(65534), Some(65534)).unwrap();
    }
    let mut config = s
        .config()
        .window_secs(3600)
        .daemon_key("nflog_groups = [100]");
    if let Some(u) = user {
        config = config.daemon_key(&format!("user = \"{u}\""));
    }
    let config = config
        .eni("eni-ctl", "veth-a", "vpc-ctl")
        .flow_log(FlowLog::vpc("all", "vpc-ctl").sinks(&["all"]))
        .flow_log(
            FlowLog::eni("rejects", "eni-ctl")
                .traffic("reject")
                .sinks(&["rej"]),
        )
        .json_sink("all", &out.join("all.jsonl"))
        .json_sink("rej", &out.join("rej.jsonl"));
    let cfg = s.write_config("flowlogd.toml", &config);
    let daemon = s.start_daemon(&cfg, "daemon.log");
    (s, daemon, cfg)
}

/// The state directory the test configs use (see `DaemonConfig::new`).
fn state_dir(s: &Scenario) -> PathBuf {
    s.plugins.parent().unwrap().join("state")
}

/// `flowlogd <args>` as `uid` (none: as the test, root), through a copy
/// of the binary any user can run (the target directory may not be).
fn flowlogd_as(s: &Scenario, uid: Option<u32>, args: &[&str]) -> Output {
    let bin = s.path("flowlogd-copy");
    if !bin.exists() {
        // Copied by a child process: a file this process held open for
        // writing would be inherited by a child another test thread
        // forks meanwhile, and executing the copy would then fail with
        // ETXTBSY until that child execs.
        let o = std::process::Command::new("install")
            .args(["-m", "0755"])
            .arg(flowlogd_bin())
            .arg(&bin)
            .output()
            .unwrap();
        assert!(o.status.success(), "install: {}", text(&o));
    }
    let mut cmd = match uid {
        Some(uid) => {
            let mut c = std::process::Command::new("setpriv");
            c.arg(format!("--reuid={uid}"))
                .arg(format!("--regid={uid}"))
                .arg("--clear-groups")
                .arg(&bin);
            c
        }
        None => std::process::Command::new(&bin),
    };
    cmd.args(args).output().expect("run flowlogd")
}

/// `status --json` as root; the answer parsed.
#[track_caller]
fn status_json(s: &Scenario, cfg: &Path) -> Value {
    let o = flowlogd_as(
        s,
        None,
        &["status", "--json", "--config", cfg.to_str().unwrap()],
    );
    assert!(o.status.success(), "status --json:\n{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}:\n{}", text(&o)))
}

/// `top --once` as root, with more arguments.
#[track_caller]
fn top_once(s: &Scenario, cfg: &Path, more: &[&str]) -> String {
    let mut args = vec!["top", "--once", "--config", cfg.to_str().unwrap()];
    args.extend_from_slice(more);
    let o = flowlogd_as(s, None, &args);
    assert!(o.status.success(), "top --once:\n{}", text(&o));
    String::from_utf8(o.stdout).unwrap()
}

/// What the test sent in one try, to the ports of that try.
struct Sent {
    drop_port: u16,
    window_start: i64,
}

/// Accepted UDP to `port` (4 datagrams of 60 bytes in, 2 of 40 back),
/// ended by `conntrack -D` so its DESTROY brings the counters; 5 dropped
/// datagrams of 10 bytes to 1161.
fn send_traffic(s: &Scenario, port: u16) {
    let _server = udp_accepted_and_dropped(&s.a, &s.b, TRAFFIC, &s.ea.v4.to_string(), port);
    s.a.exec_ok(&["conntrack", "-D", "-p", "udp", "--dport", &port.to_string()]);
}

/// The `top --once` lines (the flow in, its reply out, the rejected
/// source) that the traffic to `port` must give, in `top`'s format: each
/// is two parts around the client's source port.
fn expected_lines(s: &Scenario, port: u16) -> [(String, String); 3] {
    let (a4, b4) = (s.ea.v4.to_string(), s.eb.v4.to_string());
    [
        (
            format!(
                "{:>12} {:>10}  udp   in  ACCEPT {b4}:",
                4 * (60 + UDP4_OVERHEAD),
                4
            ),
            format!(" -> {a4}:{port}  eni-ctl"),
        ),
        (
            format!(
                "{:>12} {:>10}  udp   out ACCEPT {a4}:{port} -> {b4}:",
                2 * (40 + UDP4_OVERHEAD),
                2
            ),
            "  eni-ctl".to_owned(),
        ),
        (
            format!("{:>10} {:>12}  udp   {b4}:", 5, 5 * (10 + UDP4_OVERHEAD)),
            format!(" -> {a4}:1161  eni-ctl  rule sg-ctl:deny-snmp"),
        ),
    ]
}

/// Sends the traffic and waits (bounded: 10 s; the loop publishes every
/// 500 ms) until `top` shows all of it. `None` if the window closed
/// meanwhile (the sums started again): the caller tries again.
fn send_and_see(s: &Scenario, cfg: &Path, port: u16) -> Option<(Sent, String)> {
    let before = status_json(s, cfg);
    let window_start = before["window"]["start_unix"].as_i64().unwrap();
    send_traffic(s, port);
    let expected = expected_lines(s, port);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let frame = top_once(s, cfg, &[]);
        let now = status_json(s, cfg);
        if now["window"]["start_unix"].as_i64().unwrap() != window_start {
            return None;
        }
        let shown = |(a, b): &(String, String)| {
            frame
                .lines()
                .any(|f| f.contains(a.as_str()) && f.ends_with(b.as_str()))
        };
        if expected.iter().all(shown) {
            let sent = Sent {
                drop_port: 1161,
                window_start,
            };
            return Some((sent, frame));
        }
        assert!(
            Instant::now() < deadline,
            "top never showed\n{expected:#?}\nlast frame:\n{frame}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn status_and_top_show_the_enis_sinks_flows_and_rejects_sent() {
    if !require_root("status_and_top_show_the_enis_sinks_flows_and_rejects_sent") {
        return;
    }
    let (s, mut daemon, cfg) = lab("ctl", None);
    // Two tries at most: a window closing during the first starts the
    // sums again.
    let (sent, frame) = send_and_see(&s, &cfg, 5300)
        .or_else(|| send_and_see(&s, &cfg, 5310))
        .expect("two windows closed while the test sent its traffic");
    // Exactly the flows sent, nothing counted twice: three records, and
    // the per-ENI totals are their sums.
    let in_bytes = 4 * (60 + UDP4_OVERHEAD) + 5 * (10 + UDP4_OVERHEAD);
    let out_bytes = 2 * (40 + UDP4_OVERHEAD);
    let totals = format!(
        "  eni-ctl  in 9 packets {in_bytes} bytes  out 2 packets {out_bytes} bytes  rejected 5 packets"
    );
    assert!(frame.contains(&totals), "no {totals:?} in\n{frame}");
    let flow_lines = frame
        .lines()
        .skip_while(|l| !l.starts_with("top flows by bytes"))
        .skip(2)
        .take_while(|l| !l.is_empty())
        .count();
    assert_eq!(flow_lines, 3, "{frame}");
    // By packets, the rejected datagrams (5) lead.
    let by_packets = top_once(&s, &cfg, &["--by", "packets", "-n", "1"]);
    let first = by_packets
        .lines()
        .skip_while(|l| !l.starts_with("top flows by packets"))
        .nth(2)
        .unwrap();
    assert!(
        first.contains("REJECT") && first.contains(&format!(":{}", sent.drop_port)),
        "{by_packets}"
    );

    // status --json: the ENI with its ids, interface and flow logs; the
    // sinks; the open window with what it summed; the config; the process.
    let st = status_json(&s, &cfg);
    assert_eq!(st["pid"], daemon.pid(), "{st:#}");
    assert_eq!(st["config"]["path"], cfg.to_str().unwrap(), "{st:#}");
    let enis = st["enis"].as_array().unwrap();
    assert_eq!(enis.len(), 1, "{st:#}");
    assert_eq!(enis[0]["eni_id"], "eni-ctl");
    assert_eq!(enis[0]["vpc_id"], "vpc-ctl");
    assert_eq!(enis[0]["vswitch_id"], "vsw-test");
    assert_eq!(enis[0]["interface"], "veth-a");
    assert_eq!(
        enis[0]["flow_logs"],
        serde_json::json!(["all", "rejects"]),
        "{st:#}"
    );
    let sinks: Vec<&str> = st["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(sinks, ["all", "rej"], "{st:#}");
    assert_eq!(st["window"]["start_unix"], sent.window_start);
    assert_eq!(
        st["window"]["end_unix"].as_i64().unwrap() % 3600,
        0,
        "{st:#}"
    );
    assert_eq!(st["window"]["records"], 3, "{st:#}");
    assert!(st["window"]["sums_bytes"].as_u64().unwrap() > 0, "{st:#}");
    assert_eq!(st["loss"]["conntrack_overruns"], 0, "{st:#}");
    // The text form says the same, for a person.
    let o = flowlogd_as(&s, None, &["status", "--config", cfg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("  eni-ctl  interface veth-a  vswitch vsw-test  vpc vpc-ctl"),
        "{out}"
    );
    assert!(out.contains("    flow logs: all, rejects\n"), "{out}");
    assert!(out.contains(": 3 records so far, sums "), "{out}");
    assert!(out.contains(&format!("pid {}", daemon.pid())), "{out}");

    // A reload that takes updates when the config was loaded.
    let loaded = st["config"]["loaded_unix"].as_i64().unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let kill = std::process::Command::new("kill")
        .args(["-HUP", &daemon.pid().to_string()])
        .output()
        .unwrap();
    assert!(kill.status.success());
    daemon.wait_for_log("reloaded:", Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(5);
    while status_json(&s, &cfg)["config"]["loaded_unix"]
        .as_i64()
        .unwrap()
        <= loaded
    {
        assert!(
            Instant::now() < deadline,
            "loaded_unix not updated by the reload"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Stopped, the daemon leaves no socket, and both commands say so.
    daemon.stop();
    assert!(!state_dir(&s).join("control.sock").exists());
    for args in [&["status"][..], &["top", "--once"][..]] {
        let mut a = args.to_vec();
        a.extend(["--config", cfg.to_str().unwrap()]);
        let o = flowlogd_as(&s, None, &a);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        let msg = format!(
            "flowlogd is not running (no control socket at {})",
            state_dir(&s).join("control.sock").display()
        );
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(&msg),
            "{}",
            text(&o)
        );
        assert!(o.stdout.is_empty(), "{}", text(&o));
    }
}

#[test]
fn the_socket_answers_root_and_the_daemon_user_only() {
    if !require_root("the_socket_answers_root_and_the_daemon_user_only") {
        return;
    }
    // The daemon runs as nobody (uid 65534, which Debian has).
    let (s, mut daemon, _) = lab("ctlu", Some("nobody"));
    let dir = state_dir(&s);
    let sock = dir.join("control.sock");
    let meta = std::fs::symlink_metadata(&sock).unwrap();
    assert_eq!(meta.uid(), 65534, "the socket is the daemon user's");
    assert_eq!(meta.mode() & 0o777, 0o660);
    let dir_arg = dir.to_str().unwrap();
    // Root and the daemon's user are answered.
    for uid in [None, Some(65534)] {
        let o = flowlogd_as(&s, uid, &["status", "--json", "--state-dir", dir_arg]);
        assert!(o.status.success(), "uid {uid:?}:\n{}", text(&o));
        let st: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(st["enis"][0]["eni_id"], "eni-ctl", "{st:#}");
    }
    // Open the file permissions up, so that only the peer check stands
    // between another user and the answer.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711)).unwrap();
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    for args in [&["status", "--json"][..], &["top", "--once"][..]] {
        let mut a = args.to_vec();
        a.extend(["--state-dir", dir_arg]);
        let o = flowlogd_as(&s, Some(4242), &a);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(
                "the daemon says: permission denied: uid 4242 is neither root nor the daemon's user (uid 65534)"
            ),
            "{}",
            text(&o)
        );
        assert!(o.stdout.is_empty(), "{}", text(&o));
    }
    daemon.wait_for_log(
        "control: refused a connection from uid 4242",
        Duration::from_secs(5),
    );
    daemon.stop();
}
