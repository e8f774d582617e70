//! The syslog sink through the real daemon, received by a real rsyslogd:
//! every record arrives whole, in order and exactly once over the unix
//! socket, UDP and TCP, in RFC 3164 and RFC 5424, as text and as JSON, with
//! the configured PRI, tag and hostname; a restart of rsyslog mid-stream
//! loses nothing; `check-config` points at bad options.
//!
//! Each test runs its own rsyslogd (`rsyslogd -n -f CONF -i PIDFILE`) on a
//! socket in its scratch directory and on loopback ports that were free,
//! with no rule but one that writes what it receives, as JSON lines, to a
//! file in that directory. It never touches /dev/log or the system's files,
//! and is stopped by its exact pid, also when a test fails.

use std::fmt::Write as _;
use std::io::Read;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use flowlogd_tests::*;
use serde_json::{json, Value};

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}
const SIGTERM: i32 = 15;

/// What rsyslog reports of each message (its parsed properties).
const RSYSLOG_TEMPLATE: &str = r#"template(name="received" type="list" option.jsonf="on") {
  property(outname="pri" name="pri" format="jsonf")
  property(outname="hostname" name="hostname" format="jsonf")
  property(outname="tag" name="syslogtag" format="jsonf")
  property(outname="app" name="app-name" format="jsonf")
  property(outname="procid" name="procid" format="jsonf")
  property(outname="msgid" name="msgid" format="jsonf")
  property(outname="input" name="inputname" format="jsonf")
  property(outname="msg" name="msg" format="jsonf")
}"#;

/// A port free for both TCP and UDP on 127.0.0.1 when we looked.
fn free_port() -> u16 {
    for _ in 0..50 {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both TCP and UDP in 50 tries");
}

/// Waits for `child` to exit, at most `timeout`.
fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One rsyslogd of a test, killed by its pid when dropped.
struct Rsyslog {
    dir: PathBuf,
    conf: PathBuf,
    /// Where rsyslogd's stock-parsed socket is (like /dev/log: the special
    /// parser for syslog(3)'s format, no hostname parsed).
    socket: PathBuf,
    /// A socket parsed by the regular parsers (RFC 5424 and hostnames).
    socket_5424: PathBuf,
    port: u16,
    output: PathBuf,
    child: Option<Child>,
}

impl Rsyslog {
    fn start(dir: &Path) -> Rsyslog {
        let port = free_port();
        let mut r = Rsyslog {
            dir: dir.to_owned(),
            conf: dir.join("rsyslog.conf"),
            socket: dir.join("log.sock"),
            socket_5424: dir.join("log5424.sock"),
            port,
            output: dir.join("received.jsonl"),
            child: None,
        };
        let conf = format!(
            "global(workDirectory=\"{dir}\" preserveFQDN=\"on\" maxMessageSize=\"64k\")\n\
             module(load=\"imuxsock\" SysSock.Use=\"off\")\n\
             input(type=\"imuxsock\" Socket=\"{sock}\" RateLimit.Interval=\"0\")\n\
             input(type=\"imuxsock\" Socket=\"{sock5424}\" RateLimit.Interval=\"0\" UseSpecialParser=\"off\" ParseHostname=\"on\")\n\
             module(load=\"imudp\")\n\
             input(type=\"imudp\" address=\"127.0.0.1\" port=\"{port}\" rcvbufSize=\"16m\")\n\
             module(load=\"imtcp\")\n\
             input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\")\n\
             {RSYSLOG_TEMPLATE}\n\
             action(type=\"omfile\" file=\"{out}\" template=\"received\")\n",
            dir = dir.display(),
            sock = r.socket.display(),
            sock5424 = r.socket_5424.display(),
            out = r.output.display(),
        );
        std::fs::write(&r.conf, conf).unwrap();
        r.run();
        r
    }

    /// Starts rsyslogd on the config and waits (bounded) until it listens.
    fn run(&mut self) {
        assert!(self.child.is_none(), "rsyslogd already running");
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("rsyslogd.stderr"))
            .unwrap();
        let child = Command::new("rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(&self.conf)
            .arg("-i")
            .arg(self.dir.join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("run rsyslogd (install rsyslog: scripts/install-test-deps.sh)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let child = self.child.as_mut().unwrap();
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                panic!(
                    "rsyslogd exited at start ({status}):\n{}",
                    self.diagnostics()
                );
            }
            let ready = self.socket.exists()
                && self.socket_5424.exists()
                && TcpStream::connect(("127.0.0.1", self.port)).is_ok();
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "rsyslogd not listening after 10 s:\n{}",
                self.diagnostics()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM to our rsyslogd's pid, and waits (bounded) for it to exit.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: kill(2) with the pid of our own child, which has not been
        // reaped yet, so the pid cannot have been reused.
        unsafe { kill(child.id() as i32, SIGTERM) };
        if wait_exit(&mut child, Duration::from_secs(10)).is_none() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("rsyslogd did not exit within 10 s of SIGTERM");
        }
    }

    /// The messages received so far from `app`, in order.
    fn received(&self, app: &str) -> Vec<Value> {
        let Ok(text) = std::fs::read_to_string(&self.output) else {
            return Vec::new();
        };
        // rsyslog may be writing the last line as we read.
        let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
        complete
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str::<Value>(l)
                    .unwrap_or_else(|e| panic!("rsyslog wrote {l:?}: {e}"))
            })
            .filter(|v| v["app"] == app)
            .collect()
    }

    /// Waits (bounded) until at least `n` messages of each of `apps` arrived.
    #[track_caller]
    fn wait_for(&self, apps: &[&str], n: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let counts: Vec<usize> = apps.iter().map(|a| self.received(a).len()).collect();
            if counts.iter().all(|c| *c >= n) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "after 20 s rsyslog has {counts:?} messages of {apps:?}, expected {n} each\n{}",
                self.diagnostics()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn diagnostics(&self) -> String {
        format!(
            "--- rsyslogd stderr\n{}--- received\n{}",
            std::fs::read_to_string(self.dir.join("rsyslogd.stderr")).unwrap_or_default(),
            std::fs::read_to_string(&self.output).unwrap_or_default()
        )
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: as in `stop`.
            unsafe { kill(child.id() as i32, SIGTERM) };
            if wait_exit(&mut child, Duration::from_secs(5)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// One syslog sink of a test's daemon config.
struct SinkCase {
    /// The sink's name and its app_name.
    name: &'static str,
    /// "unix", "unix5424" (the socket parsing RFC 5424), "udp" or "tcp".
    transport: &'static str,
    format: &'static str,
    message: &'static str,
    facility: &'static str,
    /// `None`: the default, "info".
    severity: Option<&'static str>,
    /// `None`: the default, the machine's hostname.
    hostname: Option<&'static str>,
}

impl SinkCase {
    fn toml(&self, r: &Rsyslog) -> String {
        let mut s = format!("[sinks.{}]\nplugin = \"syslog\"\n", self.name);
        match self.transport {
            "unix" => writeln!(s, "socket_path = \"{}\"", r.socket.display()).unwrap(),
            "unix5424" => writeln!(s, "socket_path = \"{}\"", r.socket_5424.display()).unwrap(),
            t => writeln!(s, "transport = \"{t}\"\naddress = \"127.0.0.1:{}\"", r.port).unwrap(),
        }
        writeln!(
            s,
            "format = \"{}\"\nmessage = \"{}\"\nfacility = \"{}\"\napp_name = \"{}\"",
            self.format, self.message, self.facility, self.name
        )
        .unwrap();
        if let Some(sev) = self.severity {
            writeln!(s, "severity = \"{sev}\"").unwrap();
        }
        if let Some(h) = self.hostname {
            writeln!(s, "hostname = \"{h}\"").unwrap();
        }
        s.push('\n');
        s
    }

    fn pri(&self) -> u32 {
        let facility = match self.facility {
            "kern" => 0,
            "user" => 1,
            "daemon" => 3,
            "auth" => 4,
            f => {
                16 + f
                    .strip_prefix("local")
                    .and_then(|n| n.parse::<u32>().ok())
                    .expect("facility of a case")
            }
        };
        let severity = [
            "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
        ]
        .iter()
        .position(|s| *s == self.severity.unwrap_or("info"))
        .expect("severity of a case") as u32;
        facility * 8 + severity
    }
}

/// The machine's hostname, as the sink's default and rsyslog see it.
fn machine_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_owned()
}

/// The design's 18 fields of a record as text, from its JSON form.
fn expected_text(record: &Value) -> String {
    const FIELDS: [&str; 18] = [
        "version",
        "vswitch-id",
        "vm-id",
        "vpc-id",
        "account-id",
        "eni-id",
        "srcaddr",
        "srcport",
        "dstaddr",
        "dstport",
        "protocol",
        "direction",
        "packets",
        "bytes",
        "start",
        "end",
        "log-status",
        "action",
    ];
    FIELDS
        .iter()
        .map(|f| match &record[*f] {
            Value::Null => "-".to_owned(),
            Value::String(s) if s.is_empty() => "-".to_owned(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `n` records of eni-1 starting at sample number `from`, with a NODATA and
/// an IPv6 REJECT record carrying a rule among them.
fn records(from: usize, n: usize) -> Vec<Value> {
    let mut records: Vec<Value> = sample_records("eni-1", "vpc-1", from + n).split_off(from);
    if n >= 10 {
        records[3] = json!({
            "version": 1, "vswitch-id": "vsw-test", "vm-id": "i-test", "vpc-id": "vpc-1",
            "account-id": "1234567890", "eni-id": "eni-1",
            "srcaddr": null, "srcport": null, "dstaddr": null, "dstport": null, "protocol": null,
            "direction": null, "packets": null, "bytes": null,
            "start": 1_700_000_400, "end": 1_700_001_000 + from as u64, "log-status": "NODATA", "action": null
        });
        records[7] = json!({
            "version": 1, "vswitch-id": "vsw-test", "vm-id": "i-test", "vpc-id": "vpc-1",
            "account-id": "1234567890", "eni-id": "eni-1",
            "srcaddr": "2001:db8::7", "srcport": 40022 + from as u64, "dstaddr": "2001:db8::1", "dstport": 22,
            "protocol": 6, "direction": "in", "packets": 3, "bytes": 240,
            "start": 1_700_000_400, "end": 1_700_001_000, "log-status": "OK", "action": "REJECT",
            "rule": "sg-test:deny-ssh"
        });
    }
    records
}

/// A daemon config whose one flow log feeds every sink of `cases`.
fn daemon_config(
    tmp: &TempDir,
    r: &Rsyslog,
    cases: &[SinkCase],
    shutdown_timeout_secs: u32,
) -> PathBuf {
    let names: Vec<&str> = cases.iter().map(|c| c.name).collect();
    let mut config = DaemonConfig::new(&plugin_dir(tmp))
        .shutdown_timeout_secs(shutdown_timeout_secs)
        .eni("eni-1", "eth0", "vpc-1")
        .flow_log(FlowLog::eni("all", "eni-1").sinks(&names));
    for c in cases {
        config = config.toml(&c.toml(r));
    }
    config.write(&tmp.join("flowlogd.toml"))
}

/// Starts `flowlogd replay --config CFG RECORDS` in the background.
fn spawn_replay(cfg: &Path, input: &Path) -> Child {
    Command::new(flowlogd_bin())
        .args([
            "replay",
            "--config",
            cfg.to_str().unwrap(),
            input.to_str().unwrap(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run flowlogd")
}

/// Waits (bounded) for a replay to finish; its status and stderr.
fn finish_replay(mut child: Child, timeout: Duration) -> (ExitStatus, String) {
    // Drain stderr in a thread: the daemon logs at debug level, and a full
    // pipe would block it.
    let mut pipe = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = pipe.read_to_string(&mut s);
        s
    });
    let status = match wait_exit(&mut child, timeout) {
        Some(s) => s,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "flowlogd replay did not finish within {timeout:?}\n{}",
                reader.join().unwrap()
            );
        }
    };
    (status, reader.join().unwrap())
}

/// Asserts that rsyslog received exactly `expected`, in order, each once, as
/// `case` should have sent them from process `pid`.
#[track_caller]
fn expect_received(r: &Rsyslog, case: &SinkCase, pid: u32, expected: &[Value]) {
    let got = r.received(case.name);
    assert_eq!(
        got.len(),
        expected.len(),
        "sink {}: received {} messages, expected {}\n{}",
        case.name,
        got.len(),
        expected.len(),
        r.diagnostics()
    );
    let rfc3164 = case.format == "rfc3164";
    let hostname = case.hostname.map_or_else(machine_hostname, str::to_owned);
    for (i, (m, record)) in got.iter().zip(expected).enumerate() {
        let at = format!("sink {}, message {i}: {m}", case.name);
        assert_eq!(m["pri"], case.pri().to_string(), "{at}");
        assert_eq!(m["procid"], pid.to_string(), "{at}");
        if rfc3164 {
            assert_eq!(m["tag"], format!("{}[{pid}]:", case.name), "{at}");
            assert_eq!(m["msgid"], "-", "{at}");
        } else {
            assert_eq!(m["tag"], format!("{}[{pid}]", case.name), "{at}");
            assert_eq!(m["msgid"], "1", "{at}");
        }
        // Over the stock-parsed socket the message has no hostname and
        // rsyslog stamps its own: the same machine's.
        let host = m["hostname"].as_str().unwrap();
        assert!(
            host == hostname || host.starts_with(&format!("{hostname}.")),
            "{at}\nhostname {hostname:?}"
        );
        // RFC 3164's MSG keeps the space after the tag's colon.
        let msg = m["msg"].as_str().unwrap();
        let body = if rfc3164 {
            msg.strip_prefix(' ')
                .unwrap_or_else(|| panic!("{at}: no space before the message"))
        } else {
            msg
        };
        match case.message {
            "text" => assert_eq!(body, expected_text(record), "{at}"),
            _ => {
                let parsed: Value =
                    serde_json::from_str(body).unwrap_or_else(|e| panic!("{at}: not JSON: {e}"));
                assert_eq!(&parsed, record, "{at}");
            }
        }
    }
}

/// Replays `n` records through `cases` into a fresh rsyslogd and checks
/// what each sink's messages became there.
fn deliver_through(label: &str, cases: &[SinkCase], n: usize) {
    let tmp = TempDir::new(label);
    let r = Rsyslog::start(tmp.path());
    let cfg = daemon_config(&tmp, &r, cases, 10);
    let input = tmp.join("records.jsonl");
    let records = records(0, n);
    write_json_lines(&input, &records);
    let child = spawn_replay(&cfg, &input);
    let pid = child.id();
    let (status, stderr) = finish_replay(child, Duration::from_secs(60));
    assert!(status.success(), "{status}\n{stderr}");
    let names: Vec<&str> = cases.iter().map(|c| c.name).collect();
    r.wait_for(&names, n);
    for case in cases {
        expect_received(&r, case, pid, &records);
    }
}

#[test]
fn every_record_arrives_once_in_order_over_the_unix_socket() {
    deliver_through(
        "syslog-unix",
        &[
            // The defaults: rfc3164 text, local0.info, to the stock socket.
            SinkCase {
                name: "u3t",
                transport: "unix",
                format: "rfc3164",
                message: "text",
                facility: "local0",
                severity: None,
                hostname: None,
            },
            SinkCase {
                name: "u3j",
                transport: "unix",
                format: "rfc3164",
                message: "json",
                facility: "local7",
                severity: Some("notice"),
                hostname: None,
            },
            SinkCase {
                name: "u5t",
                transport: "unix5424",
                format: "rfc5424",
                message: "text",
                facility: "daemon",
                severity: Some("warning"),
                hostname: None,
            },
            SinkCase {
                name: "u5j",
                transport: "unix5424",
                format: "rfc5424",
                message: "json",
                facility: "user",
                severity: Some("debug"),
                hostname: Some("vm-u5j.example"),
            },
        ],
        300,
    );
}

#[test]
fn every_record_arrives_once_in_order_over_udp() {
    // UDP itself promises nothing (see the sink's README): 400 datagrams
    // come at once here, so rsyslog's receive buffer is made large enough
    // (rcvbufSize) to hold them all.
    deliver_through(
        "syslog-udp",
        &[
            SinkCase {
                name: "d3t",
                transport: "udp",
                format: "rfc3164",
                message: "text",
                facility: "local1",
                severity: Some("err"),
                hostname: Some("vm-d3t"),
            },
            SinkCase {
                name: "d3j",
                transport: "udp",
                format: "rfc3164",
                message: "json",
                facility: "kern",
                severity: Some("crit"),
                hostname: None,
            },
            SinkCase {
                name: "d5t",
                transport: "udp",
                format: "rfc5424",
                message: "text",
                facility: "auth",
                severity: Some("alert"),
                hostname: Some("vm-d5t"),
            },
            SinkCase {
                name: "d5j",
                transport: "udp",
                format: "rfc5424",
                message: "json",
                facility: "local5",
                severity: Some("emerg"),
                hostname: None,
            },
        ],
        100,
    );
}

#[test]
fn every_record_arrives_once_in_order_over_tcp() {
    deliver_through(
        "syslog-tcp",
        &[
            SinkCase {
                name: "t3t",
                transport: "tcp",
                format: "rfc3164",
                message: "text",
                facility: "local2",
                severity: None,
                hostname: Some("vm-t3t"),
            },
            SinkCase {
                name: "t3j",
                transport: "tcp",
                format: "rfc3164",
                message: "json",
                facility: "local3",
                severity: Some("warning"),
                hostname: None,
            },
            SinkCase {
                name: "t5t",
                transport: "tcp",
                format: "rfc5424",
                message: "text",
                facility: "local4",
                severity: Some("notice"),
                hostname: None,
            },
            SinkCase {
                name: "t5j",
                transport: "tcp",
                format: "rfc5424",
                message: "json",
                facility: "local6",
                severity: Some("debug"),
                hostname: Some("vm-t5j"),
            },
        ],
        // More than one of the host's write chunks (1024 records).
        2500,
    );
}

/// With `fields`, the message bodies rsyslog receives are the listed
/// fields: text space separated with `-` for none, JSON with the listed
/// keys in order and `null`.
#[test]
fn message_bodies_follow_the_field_list() {
    let tmp = TempDir::new("syslog-fields");
    let r = Rsyslog::start(tmp.path());
    let case = |name, message| SinkCase {
        name,
        transport: "tcp",
        format: "rfc5424",
        message,
        facility: "local5",
        severity: None,
        hostname: Some("vm-fields"),
    };
    let cases = [case("ft", "text"), case("fj", "json")];
    let list = "fields = [\"eni-id\", \"type\", \"srcport\", \"tcp-flags\", \"rule\"]";
    let mut config = DaemonConfig::new(&plugin_dir(&tmp))
        .eni("eni-1", "eth0", "vpc-1")
        .flow_log(FlowLog::eni("all", "eni-1").sinks(&["ft", "fj"]));
    for c in &cases {
        config = config.toml(&format!("{}\n{list}\n\n", c.toml(&r).trim_end()));
    }
    let cfg = config.write(&tmp.join("flowlogd.toml"));
    let mut records = records(0, 10);
    records[0]["tcp-flags"] = json!(3);
    let input = tmp.join("records.jsonl");
    write_json_lines(&input, &records);
    let (status, stderr) = finish_replay(spawn_replay(&cfg, &input), Duration::from_secs(60));
    assert!(status.success(), "{status}\n{stderr}");
    r.wait_for(&["ft", "fj"], records.len());

    let bodies = |app| -> Vec<String> {
        r.received(app)
            .iter()
            .map(|m| m["msg"].as_str().unwrap().to_owned())
            .collect()
    };
    let port = |i: usize| records[i]["srcport"].to_string();
    let text = bodies("ft");
    assert_eq!(text.len(), records.len(), "{}", r.diagnostics());
    assert_eq!(text[0], format!("eni-1 IPv4 {} 3 -", port(0)));
    assert_eq!(text[1], format!("eni-1 IPv4 {} - -", port(1)));
    assert_eq!(text[3], "eni-1 - - - -", "NODATA");
    assert_eq!(text[7], "eni-1 IPv6 40022 - sg-test:deny-ssh", "REJECT");
    let json = bodies("fj");
    assert_eq!(json.len(), records.len(), "{}", r.diagnostics());
    assert_eq!(
        json[0],
        format!(
            "{{\"eni-id\":\"eni-1\",\"type\":\"IPv4\",\"srcport\":{},\"tcp-flags\":3,\"rule\":null}}",
            port(0)
        )
    );
    assert_eq!(
        json[3],
        "{\"eni-id\":\"eni-1\",\"type\":null,\"srcport\":null,\"tcp-flags\":null,\"rule\":null}"
    );
    assert_eq!(
        json[7],
        "{\"eni-id\":\"eni-1\",\"type\":\"IPv6\",\"srcport\":40022,\"tcp-flags\":null,\"rule\":\"sg-test:deny-ssh\"}"
    );
}

#[test]
fn restarting_rsyslog_mid_stream_loses_nothing() {
    let tmp = TempDir::new("syslog-restart");
    let mut r = Rsyslog::start(tmp.path());
    let cases = [
        SinkCase {
            name: "tcp",
            transport: "tcp",
            format: "rfc5424",
            message: "json",
            facility: "local0",
            severity: None,
            hostname: Some("vm-restart"),
        },
        SinkCase {
            name: "unix",
            transport: "unix",
            format: "rfc3164",
            message: "json",
            facility: "local0",
            severity: None,
            hostname: None,
        },
    ];
    // Long enough for the host's backoff (0.1, 0.2, 0.4, 0.8, 1.6, 3.2 s)
    // to outlast the outage.
    let cfg = daemon_config(&tmp, &r, &cases, 30);
    const N: usize = 300;
    let batch1 = records(0, N);
    let batch2 = records(N, N);
    let input1 = tmp.join("batch1.jsonl");
    let input2 = tmp.join("batch2.jsonl");
    write_json_lines(&input1, &batch1);
    write_json_lines(&input2, &batch2);

    let first = spawn_replay(&cfg, &input1);
    let pid1 = first.id();
    let (status, stderr) = finish_replay(first, Duration::from_secs(60));
    assert!(status.success(), "{status}\n{stderr}");
    r.wait_for(&["tcp", "unix"], N);

    // rsyslog goes down; the second batch comes while it is down.
    r.stop();
    let second = spawn_replay(&cfg, &input2);
    let pid2 = second.id();
    std::thread::sleep(Duration::from_millis(1500));
    r.run();
    let (status, stderr) = finish_replay(second, Duration::from_secs(60));
    assert!(status.success(), "{status}\n{stderr}");
    for sink in ["tcp", "unix"] {
        // The outage was reported, by the plugin and by the host's retries.
        assert!(
            stderr.contains(&format!("sink {sink}: cannot connect to ")),
            "{sink}:\n{stderr}"
        );
        assert!(
            stderr.contains(&format!(
                "sink {sink}: write failed (attempt 1), retrying in "
            )),
            "{sink}:\n{stderr}"
        );
        assert!(
            stderr.contains(&format!("sink {sink}: delivering to ")),
            "{sink}:\n{stderr}"
        );
    }

    r.wait_for(&["tcp", "unix"], 2 * N);
    for case in &cases {
        let got = r.received(case.name);
        assert_eq!(got.len(), 2 * N, "sink {}\n{}", case.name, r.diagnostics());
        // Batch 1 from the first process, then batch 2 from the second.
        let (got1, got2) = got.split_at(N);
        for (part, pid) in [(got1, pid1.to_string()), (got2, pid2.to_string())] {
            assert!(
                part.iter()
                    .all(|m| m["procid"].as_str() == Some(pid.as_str())),
                "sink {}: {part:?}",
                case.name
            );
        }
        let bodies: Vec<Value> = got
            .iter()
            .map(|m| serde_json::from_str(m["msg"].as_str().unwrap().trim_start()).unwrap())
            .collect();
        let expected: Vec<Value> = batch1.iter().chain(&batch2).cloned().collect();
        assert_eq!(bodies, expected, "sink {}", case.name);
    }
}

/// `<tmp>/flowlogd.toml`: ENI eni-1, one flow log to one syslog sink `sl`
/// whose options are `options` (TOML lines).
fn syslog_config(tmp: &TempDir, plugins: &Path, options: &str) -> PathBuf {
    DaemonConfig::new(plugins)
        .eni("eni-1", "eth0", "vpc-1")
        .flow_log(FlowLog::eni("all", "eni-1").sinks(&["sl"]))
        .toml(&format!("[sinks.sl]\nplugin = \"syslog\"\n{options}"))
        .write(&tmp.join("flowlogd.toml"))
}

/// Runs `check-config` on a config with one syslog sink whose options are
/// `options`, and returns (stderr, the line of `key` in the config).
fn check_config_error(label: &str, options: &str, key: &str) -> (String, usize, PathBuf) {
    let tmp = TempDir::new(label);
    let cfg = syslog_config(&tmp, &plugin_dir(&tmp), options);
    let o = flowlogd(&["check-config", "--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let line = line_starting_with(&cfg, key);
    (
        String::from_utf8_lossy(&o.stderr).trim().to_owned(),
        line,
        cfg,
    )
}

#[test]
fn check_config_reports_bad_syslog_options_at_their_line() {
    let (err, line, cfg) = check_config_error(
        "syslog-transport",
        "transport = \"carrier-pigeon\"\n",
        "transport",
    );
    assert_eq!(
        err,
        format!(
            "flowlogd: {}:{line}:1: sinks.sl.transport: expected \"unix\", \"udp\" or \"tcp\", got \"carrier-pigeon\"",
            cfg.display()
        )
    );

    // A missing key has no line of its own: the error points at the sink's
    // name in its table header, `[sinks.sl]` (column 8).
    let (err, line, cfg) =
        check_config_error("syslog-no-address", "transport = \"udp\"\n", "[sinks.sl]");
    assert_eq!(
        err,
        format!(
            "flowlogd: {}:{line}:8: sinks.sl.address: required with transport = \"udp\": the syslog server as \"host:port\"",
            cfg.display()
        )
    );

    let (err, line, cfg) = check_config_error(
        "syslog-bad-address",
        "transport = \"tcp\"\naddress = \"logs.example.com\"\n",
        "address",
    );
    assert_eq!(
        err,
        format!(
            "flowlogd: {}:{line}:1: sinks.sl.address: expected \"host:port\" (the port is missing), got \"logs.example.com\"",
            cfg.display()
        )
    );

    let (err, line, cfg) =
        check_config_error("syslog-facility", "facility = \"local8\"\n", "facility");
    assert_eq!(
        err,
        format!(
            "flowlogd: {}:{line}:1: sinks.sl.facility: expected one of \"kern\", \"user\", \"mail\", \"daemon\", \
             \"auth\", \"syslog\", \"lpr\", \"news\", \"uucp\", \"cron\", \"authpriv\", \"ftp\", \"local0\", \"local1\", \
             \"local2\", \"local3\", \"local4\", \"local5\", \"local6\", \"local7\", got \"local8\"",
            cfg.display()
        )
    );

    // An unknown key is refused too (deny_unknown_fields).
    let (err, line, cfg) = check_config_error("syslog-unknown", "port = 514\n", "port");
    assert!(
        err.starts_with(&format!(
            "flowlogd: {}:{line}:1: sinks.sl.port: unknown field `port`",
            cfg.display()
        )),
        "{err}"
    );
}

#[test]
fn check_config_accepts_a_syslog_sink_without_connecting() {
    let tmp = TempDir::new("syslog-check-ok");
    let plugins = plugin_dir(&tmp);
    // Nothing listens there and the name does not resolve: check-config
    // checks the options only.
    let cfg = syslog_config(
        &tmp,
        &plugins,
        "transport = \"tcp\"\naddress = \"syslog.invalid:6514\"\nformat = \"rfc5424\"\n",
    );
    let o = flowlogd(&["check-config", "--config", cfg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let expected = format!(
        "  sl: plugin \"syslog\" -> {} (syslog 0.1.0, ABI 1.1), options OK",
        plugins.join("syslog.so").display()
    );
    assert!(
        out.contains(&expected),
        "missing {expected:?} in\n{}",
        text(&o)
    );
}
