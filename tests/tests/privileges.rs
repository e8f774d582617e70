//! Started as root outside systemd, the daemon keeps only CAP_NET_ADMIN
//! once it captures: in the permitted, effective and bounding sets of
//! every thread, nothing inheritable or ambient, no_new_privs set. With
//! `daemon.user` it also becomes that user (here `nobody`, which Debian
//! has, so the test creates no system user). Capture, reload and shutdown
//! still work with what is left, and a reload that would need more than
//! that (a sink writing where the user may not) is refused, not fatal.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use flowlogd_tests::netns::{DaemonProcess, LineProcess, Netns};
use flowlogd_tests::*;
use serde_json::Value;

const TRAFFIC: &str = env!("CARGO_BIN_EXE_flowlogd-traffic");
/// UDP payload of each datagram; 128 bytes at the IP layer.
const PAYLOAD: u64 = 100;
const IP_BYTES: u64 = PAYLOAD + 8 + 20;
const SERVER_PORT: u16 = 5460;
const TIMEOUT: Duration = Duration::from_secs(10);
/// CAP_NET_ADMIN is capability 12: the mask /proc/PID/status shows.
const NET_ADMIN_ONLY: u64 = 1 << 12;
/// Debian's `nobody` and `nogroup`.
const NOBODY: u32 = 65534;

/// The capability and identity lines of one thread's status.
#[derive(Debug)]
struct ThreadCreds {
    task: String,
    cap_inh: u64,
    cap_prm: u64,
    cap_eff: u64,
    cap_bnd: u64,
    cap_amb: u64,
    no_new_privs: u64,
    /// Real, effective, saved and filesystem uid.
    uids: Vec<u32>,
    gids: Vec<u32>,
    groups: Vec<u32>,
}

/// Every thread of `pid`, from /proc/PID/task/*/status.
fn thread_creds(pid: u32) -> Vec<ThreadCreds> {
    let dir = format!("/proc/{pid}/task");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir}: {e}")) {
        let task = entry.unwrap().file_name().to_string_lossy().into_owned();
        let status = std::fs::read_to_string(format!("{dir}/{task}/status")).unwrap();
        let field = |name: &str| -> &str {
            status
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name}:")))
                .unwrap_or_else(|| panic!("no {name} in {dir}/{task}/status:\n{status}"))
                .trim()
        };
        let hex = |name: &str| u64::from_str_radix(field(name), 16).unwrap();
        let ids = |name: &str| -> Vec<u32> {
            field(name)
                .split_whitespace()
                .map(|n| n.parse().unwrap())
                .collect()
        };
        out.push(ThreadCreds {
            cap_inh: hex("CapInh"),
            cap_prm: hex("CapPrm"),
            cap_eff: hex("CapEff"),
            cap_bnd: hex("CapBnd"),
            cap_amb: hex("CapAmb"),
            no_new_privs: field("NoNewPrivs").parse().unwrap(),
            uids: ids("Uid"),
            gids: ids("Gid"),
            groups: ids("Groups"),
            task,
        });
    }
    out
}

/// Two namespaces joined by a veth pair; the daemon runs in `a` and
/// captures `veth-a`; `b` sends UDP to a sink in `a`.
struct Setup {
    tmp: TempDir,
    plugins: PathBuf,
    a: Netns,
    _b: Netns,
    _server: LineProcess,
    flow: LineProcess,
}

impl Setup {
    fn new(label: &str) -> Setup {
        let Scenario {
            a,
            b,
            ea: a_end,
            tmp,
            plugins,
            ..
        } = Scenario::builder(label)
            .veth("veth-a", "veth-b", 46)
            .build();
        let target = format!("{}:{SERVER_PORT}", a_end.v4);
        let mut server = LineProcess::traffic(&a, TRAFFIC, &["udp-sink", &target]);
        server.expect_line("listening", TIMEOUT);
        let mut flow =
            LineProcess::traffic(&b, TRAFFIC, &["udp-flow", &target, &PAYLOAD.to_string()]);
        flow.expect_number("local", TIMEOUT);
        Setup {
            tmp,
            plugins,
            a,
            _b: b,
            _server: server,
            flow,
        }
    }

    /// A config whose file sinks `(name, path)` get every record of the
    /// ENI as JSON lines; `user` sets `daemon.user`.
    fn config(&self, name: &str, user: Option<&str>, sinks: &[(&str, &Path)]) -> PathBuf {
        let names: Vec<&str> = sinks.iter().map(|(s, _)| *s).collect();
        let mut config = DaemonConfig::new(&self.plugins).window_secs(600);
        if let Some(u) = user {
            config = config.daemon_key(&format!("user = \"{u}\""));
        }
        config = config
            .eni("eni-a", "veth-a", "vpc-p")
            .flow_log(FlowLog::vpc("all", "vpc-p").sinks(&names));
        for (s, path) in sinks {
            config = config.json_sink(s, path);
        }
        config.write(&self.tmp.join(&format!("{name}.toml")))
    }

    fn start(&self, config: &Path) -> DaemonProcess {
        DaemonProcess::start(&self.a, config, &self.tmp.join("daemon.log"))
    }

    fn send(&mut self, k: u64) {
        self.flow.send_line(&format!("send {k}"));
        self.flow.expect_line(&format!("sent {k}"), TIMEOUT);
    }
}

/// Packets and bytes of the OK UDP records arriving on the ENI.
fn udp_in(records: &[Value]) -> (u64, u64) {
    records
        .iter()
        .filter(|r| r["log-status"] == "OK" && r["direction"] == "in" && r["protocol"] == 17)
        .fold((0, 0), |(p, b), r| {
            (
                p + r["packets"].as_u64().unwrap(),
                b + r["bytes"].as_u64().unwrap(),
            )
        })
}

/// Every thread holds CAP_NET_ADMIN only, as root or as `uid`.
#[track_caller]
fn assert_only_net_admin(d: &DaemonProcess, uid: u32, gid: u32) {
    let threads = thread_creds(d.pid());
    // The capture thread and at least the sink's worker.
    assert!(
        threads.len() >= 2,
        "the daemon runs its capture thread and a sink worker: {threads:#?}\n{}",
        d.log()
    );
    for t in &threads {
        let ctx = format!("thread {}: {t:#?}\n{}", t.task, d.log());
        assert_eq!(
            (t.cap_prm, t.cap_eff, t.cap_bnd),
            (NET_ADMIN_ONLY, NET_ADMIN_ONLY, NET_ADMIN_ONLY),
            "permitted, effective and bounding sets hold CAP_NET_ADMIN only\n{ctx}"
        );
        assert_eq!((t.cap_inh, t.cap_amb), (0, 0), "{ctx}");
        assert_eq!(t.no_new_privs, 1, "{ctx}");
        assert_eq!(
            t.uids,
            vec![uid; 4],
            "real, effective, saved, fs uid\n{ctx}"
        );
        assert_eq!(
            t.gids,
            vec![gid; 4],
            "real, effective, saved, fs gid\n{ctx}"
        );
        if uid != 0 {
            assert!(
                !t.groups.contains(&0),
                "root's supplementary groups are gone\n{ctx}"
            );
        }
    }
}

/// Started as root, without `daemon.user`: uid 0 stays, but every
/// capability except CAP_NET_ADMIN is gone from every thread once it
/// captures; the log says what was dropped. Capture works (100 datagrams
/// recorded exactly), a reload works, and SIGTERM stops it cleanly.
#[test]
fn root_keeps_only_net_admin() {
    if !require_root("root_keeps_only_net_admin") {
        return;
    }
    let mut s = Setup::new("prroot");
    let out = s.tmp.join("records.jsonl");
    let config = s.config("root", None, &[("out", &out)]);
    let mut d = s.start(&config);
    assert_only_net_admin(&d, 0, 0);
    assert!(
        d.log()
            .contains("privileges: keeping only CAP_NET_ADMIN; dropped "),
        "the log says what was dropped\n{}",
        d.log()
    );
    assert!(d.log().contains("CAP_SYS_ADMIN"), "{}", d.log());

    s.send(60);
    std::process::Command::new("kill")
        .args(["-HUP", &d.pid().to_string()])
        .status()
        .unwrap();
    d.wait_for_log("reloaded:", TIMEOUT);
    s.send(40);
    assert_only_net_admin(&d, 0, 0);
    d.stop();
    let records = read_json_records(&out);
    assert_eq!(
        udp_in(&records),
        (100, 100 * IP_BYTES),
        "capture works with CAP_NET_ADMIN alone\n{records:#?}\n{}",
        d.log()
    );
}

/// With `user = "nobody"`: the daemon creates the missing state_dir owned
/// by nobody, becomes nobody (uid, gid, no root groups) with CAP_NET_ADMIN
/// in every thread, records exactly what was sent, and writes its state
/// as nobody. A reload that adds a sink writing into a root-only directory
/// is refused with the reason, and the daemon carries on.
#[test]
fn user_nobody_keeps_net_admin_and_refuses_what_it_cannot_do() {
    if !require_root("user_nobody_keeps_net_admin_and_refuses_what_it_cannot_do") {
        return;
    }
    let mut s = Setup::new("pruser");
    let nobody_dir = s.tmp.join("nobody");
    std::fs::create_dir(&nobody_dir).unwrap();
    std::os::unix::fs::chown(&nobody_dir, Some(NOBODY), Some(NOBODY)).unwrap();
    let root_only = s.tmp.join("root-only");
    std::fs::create_dir(&root_only).unwrap();
    std::fs::set_permissions(&root_only, std::fs::Permissions::from_mode(0o700)).unwrap();
    let out = nobody_dir.join("records.jsonl");
    let state_dir = s.tmp.join("state");
    assert!(!state_dir.exists());

    let config = s.config("user", Some("nobody"), &[("out", &out)]);
    let mut d = s.start(&config);
    assert_only_net_admin(&d, NOBODY, NOBODY);
    assert!(
        d.log()
            .contains("; running as user nobody (uid 65534, gid 65534)"),
        "{}",
        d.log()
    );
    let meta = std::fs::metadata(&state_dir).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o777),
        (NOBODY, NOBODY, 0o700),
        "the daemon made state_dir nobody's\n{}",
        d.log()
    );

    s.send(70);
    // The new config adds a sink nobody cannot write: refused, the running
    // config stays.
    let more = s.config(
        "user",
        Some("nobody"),
        &[("out", &out), ("denied", &root_only.join("x.jsonl"))],
    );
    assert_eq!(more, config);
    std::process::Command::new("kill")
        .args(["-HUP", &d.pid().to_string()])
        .status()
        .unwrap();
    d.wait_for_log("reload refused, keeping the running config", TIMEOUT);
    assert!(
        !root_only.join("x.jsonl").exists(),
        "nothing was written as root\n{}",
        d.log()
    );
    s.send(30);
    assert_only_net_admin(&d, NOBODY, NOBODY);
    d.stop();

    let records = read_json_records(&out);
    assert_eq!(
        udp_in(&records),
        (100, 100 * IP_BYTES),
        "capture works as nobody with CAP_NET_ADMIN\n{records:#?}\n{}",
        d.log()
    );
    let handoff = std::fs::metadata(state_dir.join("conntrack-handoff")).unwrap();
    assert_eq!(
        handoff.uid(),
        NOBODY,
        "the handoff was written as nobody\n{}",
        d.log()
    );
}

/// `daemon.user` with a state_dir that user cannot write (root's, 0755):
/// the start stops once privileges are dropped, saying what to do, rather
/// than capture without a handoff or spool.
#[test]
fn state_dir_the_user_cannot_write_stops_the_start() {
    if !require_root("state_dir_the_user_cannot_write_stops_the_start") {
        return;
    }
    let s = Setup::new("prstate");
    let state_dir = s.tmp.join("state");
    std::fs::create_dir(&state_dir).unwrap();
    std::fs::set_permissions(&state_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let nobody_dir = s.tmp.join("nobody");
    std::fs::create_dir(&nobody_dir).unwrap();
    std::os::unix::fs::chown(&nobody_dir, Some(NOBODY), Some(NOBODY)).unwrap();
    let config = s.config(
        "user",
        Some("nobody"),
        &[("out", &nobody_dir.join("records.jsonl"))],
    );
    let mut child =
        s.a.command(flowlogd_bin())
            .arg("run")
            .arg("--config")
            .arg(&config)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
    let deadline = std::time::Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() >= deadline {
            // Our own child, by its handle: SIGKILL to its pid.
            let _ = child.kill();
            let _ = child.wait();
            panic!("flowlogd kept running with a state_dir nobody cannot write");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut log = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains(&format!(
            "state_dir {} is not writable by user nobody once privileges are dropped: chown it to nobody",
            state_dir.display()
        )),
        "{log}"
    );
    assert!(!log.contains("capturing:"), "{log}");
}
