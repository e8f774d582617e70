//! The Log Service sink through the real daemon, checked by the official
//! Alibaba Cloud Log Service Python SDK: tests/fixtures/logservice_endpoint.py
//! verifies each request's signature with the SDK's signing code, its
//! Content-MD5, decompresses and decodes it with the SDK's lz4 and
//! protobuf classes, and writes down every log it accepted; it can answer
//! with injected faults. Every record must arrive exactly once, with every
//! field; busy and quota answers are retried without resending what was
//! accepted; a bad signature is rejected without a retry storm; the secret
//! never shows.

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use flowlogd_tests::*;
use serde_json::{json, Map, Value};

const PROJECT: &str = "flowlogd-test";
const LOGSTORE: &str = "flow-log";
const ACCESS_KEY_ID: &str = "LTAI5tFlowlogdTestKey";
/// Recognisable, so that a leak anywhere in the daemon's output is found.
const SECRET: &str = "FlowlogdTestSecret-7f3a9c2e-DO-NOT-LEAK";
const STS_TOKEN: &str = "CAIS-FlowlogdTestToken-81b0d4";
/// Bounds the wait for the endpoint to listen (it imports the SDK first).
const ENDPOINT_START_TIMEOUT: Duration = Duration::from_secs(30);

/// The official SDK must be installed (scripts/install-test-deps.sh).
#[track_caller]
fn require_sdk() {
    let ok = Command::new("python3")
        .args([
            "-c",
            "import aliyun.log.auth, aliyun.log.log_logs_pb2, lz4.block",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "the Alibaba Cloud Log Service Python SDK is missing: run scripts/install-test-deps.sh \
         (python3 -m pip install aliyun-log-python-sdk lz4)"
    );
}

/// The fixture endpoint as a child process, killed by its pid on drop
/// (also when the test fails).
struct SdkEndpoint {
    child: Child,
    port: u16,
    logs: PathBuf,
    requests: PathBuf,
    stderr: PathBuf,
}

struct EndpointArgs<'a> {
    secret: &'a str,
    security_token: Option<&'a str>,
    faults: &'a str,
}

impl Default for EndpointArgs<'_> {
    fn default() -> Self {
        EndpointArgs {
            secret: SECRET,
            security_token: None,
            faults: "",
        }
    }
}

impl SdkEndpoint {
    fn start(tmp: &TempDir, label: &str, args: EndpointArgs<'_>) -> SdkEndpoint {
        require_sdk();
        let script = workspace_root().join("tests/fixtures/logservice_endpoint.py");
        let logs = tmp.join(&format!("{label}-logs.jsonl"));
        let requests = tmp.join(&format!("{label}-requests.jsonl"));
        let stderr = tmp.join(&format!("{label}-endpoint.stderr"));
        let mut cmd = Command::new("python3");
        cmd.arg(&script)
            .arg("--out")
            .arg(&logs)
            .arg("--requests")
            .arg(&requests)
            .args(["--project", PROJECT, "--logstore", LOGSTORE])
            .args(["--access-key-id", ACCESS_KEY_ID])
            .args(["--access-key-secret", args.secret])
            .args(["--faults", args.faults]);
        if let Some(token) = args.security_token {
            cmd.args(["--security-token", token]);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("run python3");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let mut endpoint = SdkEndpoint {
            child,
            port: 0,
            logs,
            requests,
            stderr,
        };
        let line = rx.recv_timeout(ENDPOINT_START_TIMEOUT).unwrap_or_default();
        endpoint.port = line
            .trim()
            .strip_prefix("listening on 127.0.0.1:")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "the endpoint did not start within {ENDPOINT_START_TIMEOUT:?} (said {line:?}):\n{}",
                    endpoint.stderr_text()
                )
            });
        endpoint
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every log the endpoint accepted.
    fn logs(&self) -> Vec<Value> {
        read_json_records(&self.logs)
    }

    /// Every request the endpoint got, with its answer.
    fn requests(&self) -> Vec<Value> {
        read_json_records(&self.requests)
    }

    fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for SdkEndpoint {
    fn drop(&mut self) {
        // Child::kill signals exactly this child's pid.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A daemon config: ENI eni-1, one flow log to sink `sls` with `options`.
fn write_config(tmp: &TempDir, options: &str) -> PathBuf {
    DaemonConfig::new(&plugin_dir(tmp))
        .eni("eni-1", "eth0", "vpc-1")
        .flow_log(FlowLog::eni("all", "eni-1").sinks(&["sls"]))
        .toml(&format!("[sinks.sls]\nplugin = \"logservice\"\n{options}"))
        .write(&tmp.join("flowlogd.toml"))
}

/// A secret file holding `SECRET`, mode `mode`.
fn secret_file(tmp: &TempDir, name: &str, content: &str, mode: u32) -> PathBuf {
    let p = tmp.join(name);
    std::fs::write(&p, format!("{content}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

/// The sink's options for `endpoint`, secret from a 0600 file.
fn sink_options(tmp: &TempDir, endpoint: &SdkEndpoint, extra: &str) -> String {
    let secret = secret_file(tmp, "sls.secret", SECRET, 0o600);
    format!(
        "endpoint = \"{}\"\nproject = \"{PROJECT}\"\nlogstore = \"{LOGSTORE}\"\n\
         access_key_id = \"{ACCESS_KEY_ID}\"\naccess_key_secret_file = \"{}\"\n{extra}",
        endpoint.url(),
        secret.display()
    )
}

fn replay(cfg: &Path, input: &Path) -> Output {
    flowlogd(&[
        "replay",
        "--config",
        cfg.to_str().unwrap(),
        input.to_str().unwrap(),
    ])
}

#[track_caller]
fn assert_no_secret(o: &Output) {
    for stream in [&o.stdout, &o.stderr] {
        let s = String::from_utf8_lossy(stream);
        assert!(!s.contains(SECRET), "the secret leaked:\n{}", text(o));
        assert!(
            !s.contains(STS_TOKEN),
            "the security token leaked:\n{}",
            text(o)
        );
    }
}

/// The contents Log Service should hold for an input record: every field
/// as a string, `-` for JSON null (NODATA/SKIPDATA flow fields) and for
/// an unknown (empty) id, `rule` only when there is one.
fn expected_contents(record: &Value) -> Value {
    let mut m = Map::new();
    for (k, v) in record.as_object().unwrap() {
        let s = match v {
            Value::Null => "-".to_owned(),
            Value::String(s) if s.is_empty() => "-".to_owned(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        m.insert(k.clone(), Value::String(s));
    }
    Value::Object(m)
}

/// Asserts the endpoint accepted exactly `records`, once each, all fields
/// intact, each log's time its record's start.
#[track_caller]
fn expect_delivered(endpoint: &SdkEndpoint, records: &[Value]) {
    let logs = endpoint.logs();
    for log in &logs {
        let start = log["contents"]["start"].as_str().unwrap();
        assert_eq!(log["time"].to_string(), start, "{log}");
    }
    let contents: Vec<Value> = logs.iter().map(|l| l["contents"].clone()).collect();
    let expected: Vec<Value> = records.iter().map(expected_contents).collect();
    expect_records(&contents, &expected);
}

/// 100 OK records plus a NODATA record (unknown vswitch) and a REJECT
/// record with its rule.
fn varied_records() -> Vec<Value> {
    let mut records = sample_records("eni-1", "vpc-1", 100);
    records.push(json!({
        "version": 1, "vswitch-id": "", "vm-id": "i-test", "vpc-id": "vpc-1", "account-id": "1234567890",
        "eni-id": "eni-1", "srcaddr": null, "srcport": null, "dstaddr": null, "dstport": null,
        "protocol": null, "direction": null, "packets": null, "bytes": null,
        "start": 1_700_001_000, "end": 1_700_001_600, "log-status": "NODATA", "action": null
    }));
    records.push(json!({
        "version": 1, "vswitch-id": "vsw-test", "vm-id": "i-test", "vpc-id": "vpc-1",
        "account-id": "1234567890", "eni-id": "eni-1", "srcaddr": "2001:db8::7", "srcport": 51000,
        "dstaddr": "2001:db8::1", "dstport": 22, "protocol": 6, "direction": "in", "packets": 3,
        "bytes": 240, "start": 1_700_000_400, "end": 1_700_001_000, "log-status": "OK",
        "action": "REJECT", "rule": "sg-web:deny-ssh"
    }));
    records
}

#[test]
fn every_record_arrives_once_signed_with_all_fields() {
    let tmp = TempDir::new("sls-all");
    let endpoint = SdkEndpoint::start(&tmp, "all", EndpointArgs::default());
    let cfg = write_config(&tmp, &sink_options(&tmp, &endpoint, ""));
    let records = varied_records();
    let input = tmp.join("records.jsonl");
    write_json_lines(&input, &records);

    let o = replay(&cfg, &input);
    assert!(
        o.status.success(),
        "{}\n--- endpoint\n{}",
        text(&o),
        endpoint.stderr_text()
    );
    assert_no_secret(&o);
    expect_delivered(&endpoint, &records);

    // One request (the batch fits), accepted: the SDK verified its
    // signature and Content-MD5 and decoded it.
    let requests = endpoint.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0]["status"], 200, "{requests:?}");
    let h = &requests[0]["headers"];
    assert_eq!(h["host"], format!("{PROJECT}.127.0.0.1"));
    assert_eq!(h["content-type"], "application/x-protobuf");
    assert_eq!(h["x-log-apiversion"], "0.6.0");
    assert_eq!(h["x-log-signaturemethod"], "hmac-sha1");
    assert_eq!(h["x-log-compresstype"], "lz4");
    assert_eq!(h["x-log-bodyrawsize"], requests[0]["rawsize"].to_string());
    assert!(h["authorization"]
        .as_str()
        .unwrap()
        .starts_with(&format!("LOG {ACCESS_KEY_ID}:")));
    assert!(h.get("x-acs-security-token").is_none(), "{h}");

    // Topic, source and tags.
    for log in endpoint.logs() {
        assert_eq!(log["topic"], "flowlog");
        let source = log["source"].as_str().unwrap();
        assert!(
            source.parse::<Ipv4Addr>().is_ok(),
            "source {source:?} is not an IPv4 address"
        );
        assert_eq!(
            log["tags"],
            json!({ "flowlogd_version": env!("CARGO_PKG_VERSION") })
        );
    }
}

/// With `fields`, each log holds exactly the listed keys, each with its
/// text-form value (`-` for none): the extras a record carries (read by
/// `replay` from its input), `type` from the source address, `rule` where
/// the record has one.
#[test]
fn a_field_list_gives_each_log_exactly_its_keys() {
    let tmp = TempDir::new("sls-fields");
    let endpoint = SdkEndpoint::start(&tmp, "fields", EndpointArgs::default());
    const LIST: [&str; 7] = [
        "eni-id",
        "type",
        "srcaddr",
        "pkt-srcaddr",
        "bytes",
        "tcp-flags",
        "rule",
    ];
    let quoted: Vec<String> = LIST.iter().map(|n| format!("\"{n}\"")).collect();
    let cfg = write_config(
        &tmp,
        &sink_options(
            &tmp,
            &endpoint,
            &format!("fields = [{}]\n", quoted.join(", ")),
        ),
    );
    let mut records = varied_records();
    records[0]["pkt-srcaddr"] = json!("192.0.2.44");
    records[0]["tcp-flags"] = json!(19);
    let input = tmp.join("records.jsonl");
    write_json_lines(&input, &records);
    let o = replay(&cfg, &input);
    assert!(
        o.status.success(),
        "{}\n--- endpoint\n{}",
        text(&o),
        endpoint.stderr_text()
    );
    let token = |v: Option<&Value>| match v {
        None | Some(Value::Null) => "-".to_owned(),
        Some(Value::String(s)) if s.is_empty() => "-".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    let expected: Vec<Value> = records
        .iter()
        .map(|r| {
            let mut m = Map::new();
            for field in LIST {
                let v = match field {
                    "type" => match r["srcaddr"].as_str() {
                        None => "-".to_owned(),
                        Some(a) if a.contains(':') => "IPv6".to_owned(),
                        Some(_) => "IPv4".to_owned(),
                    },
                    _ => token(r.get(field)),
                };
                m.insert(field.to_owned(), Value::String(v));
            }
            Value::Object(m)
        })
        .collect();
    assert_eq!(expected[0]["tcp-flags"], "19");
    assert_eq!(expected[101]["rule"], "sg-web:deny-ssh");
    assert_eq!(expected[100]["type"], "-");
    let contents: Vec<Value> = endpoint
        .logs()
        .iter()
        .map(|l| l["contents"].clone())
        .collect();
    expect_records(&contents, &expected);
}

#[test]
fn an_sts_token_and_a_secret_from_the_environment_are_signed() {
    let tmp = TempDir::new("sls-sts");
    let endpoint = SdkEndpoint::start(
        &tmp,
        "sts",
        EndpointArgs {
            security_token: Some(STS_TOKEN),
            ..EndpointArgs::default()
        },
    );
    let token = secret_file(&tmp, "sts.token", STS_TOKEN, 0o600);
    let cfg = write_config(
        &tmp,
        &format!(
            "endpoint = \"{}\"\nproject = \"{PROJECT}\"\nlogstore = \"{LOGSTORE}\"\n\
             access_key_id = \"{ACCESS_KEY_ID}\"\naccess_key_secret_env = \"FLOWLOGD_TEST_SLS_SECRET\"\n\
             security_token_file = \"{}\"\ntopic = \"vpc-flow\"\nsource = \"vm-test-1\"\n",
            endpoint.url(),
            token.display()
        ),
    );
    let records = sample_records("eni-1", "vpc-1", 20);
    let input = tmp.join("records.jsonl");
    write_json_lines(&input, &records);
    let o = Command::new(flowlogd_bin())
        .args([
            "replay",
            "--config",
            cfg.to_str().unwrap(),
            input.to_str().unwrap(),
        ])
        .env("FLOWLOGD_TEST_SLS_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}\n--- endpoint\n{}",
        text(&o),
        endpoint.stderr_text()
    );
    assert_no_secret(&o);
    expect_delivered(&endpoint, &records);
    let logs = endpoint.logs();
    assert_eq!(logs[0]["headers"]["x-acs-security-token"], STS_TOKEN);
    assert!(logs
        .iter()
        .all(|l| l["topic"] == "vpc-flow" && l["source"] == "vm-test-1"));
}

#[test]
fn busy_and_quota_answers_are_retried_without_resending_accepted_logs() {
    let tmp = TempDir::new("sls-faults");
    // The batch of 250 records goes as 3 requests of at most 100 logs. The
    // first is accepted, then the second meets a busy server, a used-up
    // quota, is accepted, and the third meets an internal error first.
    let endpoint = SdkEndpoint::start(
        &tmp,
        "faults",
        EndpointArgs {
            faults: "ok,ServerBusy,WriteQuotaExceed,ok,InternalServerError",
            ..EndpointArgs::default()
        },
    );
    let cfg = write_config(
        &tmp,
        &sink_options(&tmp, &endpoint, "max_batch_records = 100\n"),
    );
    let records = sample_records("eni-1", "vpc-1", 250);
    let input = tmp.join("records.jsonl");
    write_json_lines(&input, &records);

    let o = replay(&cfg, &input);
    assert!(
        o.status.success(),
        "{}\n--- endpoint\n{}",
        text(&o),
        endpoint.stderr_text()
    );
    assert_no_secret(&o);
    // Exactly once: the logs of the first request were not sent again.
    expect_delivered(&endpoint, &records);

    let requests = endpoint.requests();
    let answers: Vec<String> = requests
        .iter()
        .map(|r| format!("{} {}", r["status"], r["errorCode"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(
        answers,
        [
            "200 ",
            "503 ServerBusy",
            "403 WriteQuotaExceed",
            "200 ",
            "500 InternalServerError",
            "200 "
        ],
        "{requests:?}"
    );
    let logs_per_request: Vec<u64> = requests
        .iter()
        .map(|r| r["logs"].as_u64().unwrap())
        .collect();
    assert_eq!(logs_per_request, [100, 0, 0, 100, 0, 50]);

    let err = String::from_utf8_lossy(&o.stderr);
    for expected in [
        "sink sls: write failed (attempt 1), retrying in 100 ms: PutLogs to flowlogd-test/flow-log: HTTP 503 \
         ServerBusy: The server is busy, please try again later.",
        "HTTP 403 WriteQuotaExceed: Project write quota exceed",
        "HTTP 500 InternalServerError: Internal server error.",
        "100 of the batch's 250 records were accepted before and are not sent again",
        "sink sls: write succeeded after 3 retries",
        "sink sls: 250 records delivered, 3 retries",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in\n{err}");
    }
}

#[test]
fn a_wrong_secret_is_rejected_once_per_batch_without_retrying() {
    let tmp = TempDir::new("sls-badsig");
    // The endpoint knows the real secret; the sink signs with another.
    let endpoint = SdkEndpoint::start(&tmp, "badsig", EndpointArgs::default());
    let wrong = secret_file(&tmp, "wrong.secret", "not-the-secret", 0o600);
    let cfg = write_config(
        &tmp,
        &format!(
            "endpoint = \"{}\"\nproject = \"{PROJECT}\"\nlogstore = \"{LOGSTORE}\"\n\
             access_key_id = \"{ACCESS_KEY_ID}\"\naccess_key_secret_file = \"{}\"\n",
            endpoint.url(),
            wrong.display()
        ),
    );
    // The host hands the sink 1500 records as two batches (1024 + 476).
    let records = sample_records("eni-1", "vpc-1", 1500);
    let input = tmp.join("records.jsonl");
    write_json_lines(&input, &records);

    let o = replay(&cfg, &input);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(endpoint.logs().is_empty());
    // No retry storm: one request per batch.
    let requests = endpoint.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    for r in &requests {
        assert_eq!(r["status"], 401);
        assert_eq!(r["errorCode"], "SignatureNotMatch");
        let message = r["errorMessage"].as_str().unwrap();
        assert!(message.starts_with("signature "), "{message}");
        let expected =
            format!("sink sls: write rejected, not retrying: PutLogs to {PROJECT}/{LOGSTORE}: HTTP 401 SignatureNotMatch: {message}");
        assert!(err.contains(&expected), "missing {expected:?} in\n{err}");
    }
    assert!(
        err.contains("1500 NOT delivered (0 dropped on a full queue, 0 dropped on a full or failing spool, 1500 rejected by the sink"),
        "{err}"
    );
    assert!(!err.contains("retrying in"), "{err}");
    assert!(!err.contains("not-the-secret"), "{err}");
    assert_no_secret(&o);
}

#[test]
fn more_than_4096_records_go_in_requests_of_at_most_4096_logs() {
    for (label, max, options) in [
        ("default", 4096, ""),
        ("small", 300, "max_batch_records = 300\n"),
    ] {
        let tmp = TempDir::new(&format!("sls-batch-{label}"));
        let endpoint = SdkEndpoint::start(&tmp, label, EndpointArgs::default());
        let cfg = write_config(&tmp, &sink_options(&tmp, &endpoint, options));
        let records = sample_records("eni-1", "vpc-1", 5000);
        let input = tmp.join("records.jsonl");
        write_json_lines(&input, &records);
        let o = replay(&cfg, &input);
        assert!(
            o.status.success(),
            "{}\n--- endpoint\n{}",
            text(&o),
            endpoint.stderr_text()
        );
        assert_no_secret(&o);
        expect_delivered(&endpoint, &records);
        let requests = endpoint.requests();
        let sizes: Vec<u64> = requests
            .iter()
            .map(|r| r["logs"].as_u64().unwrap())
            .collect();
        assert!(requests.iter().all(|r| r["status"] == 200), "{requests:?}");
        assert!(sizes.iter().all(|&n| n <= max), "{label}: {sizes:?}");
        assert_eq!(sizes.iter().sum::<u64>(), 5000);
        // The host hands over at most 1024 records per write; the sink
        // splits each write further when its limit is lower.
        let expected_requests = if max >= 1024 { 5 } else { 4 * 4 + 4 };
        assert_eq!(sizes.len(), expected_requests, "{label}: {sizes:?}");
    }
}

#[test]
fn the_secret_never_appears_in_the_daemons_output() {
    let tmp = TempDir::new("sls-leak");
    // Success, retry and rejection paths, at log level debug.
    let endpoint = SdkEndpoint::start(
        &tmp,
        "leak",
        EndpointArgs {
            security_token: Some(STS_TOKEN),
            faults: "ServerBusy,ok,Unauthorized",
            ..EndpointArgs::default()
        },
    );
    let token = secret_file(&tmp, "sts.token", STS_TOKEN, 0o600);
    let cfg = write_config(
        &tmp,
        &sink_options(
            &tmp,
            &endpoint,
            &format!("security_token_file = \"{}\"\n", token.display()),
        ),
    );
    let input = tmp.join("records.jsonl");
    write_json_lines(&input, &sample_records("eni-1", "vpc-1", 1500));
    let check = flowlogd(&["check-config", "--config", cfg.to_str().unwrap()]);
    assert!(check.status.success(), "{}", text(&check));
    assert_no_secret(&check);
    let o = replay(&cfg, &input);
    // The second batch was refused (Unauthorized).
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("HTTP 503 ServerBusy"), "{err}");
    assert!(err.contains("HTTP 401 Unauthorized"), "{err}");
    assert_no_secret(&o);
    assert_eq!(endpoint.logs().len(), 1024);
}

/// `flowlogd check-config` on a config whose sink has `options`: exit 2,
/// and the one error line, which must be `sinks.sls.<key>: <message>` at
/// the line starting with `line_of` (the option's, or for a missing
/// option the sink table's, where the daemon points at the table's name).
#[track_caller]
fn expect_check_error(tmp: &TempDir, options: &str, key: &str, line_of: &str, message: &str) {
    let column = if line_of.starts_with('[') {
        "[sinks.".len() + 1
    } else {
        1
    };
    let cfg = write_config(tmp, options);
    let o = flowlogd(&["check-config", "--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert_no_secret(&o);
    let line = line_starting_with(&cfg, line_of);
    assert_eq!(
        String::from_utf8_lossy(&o.stderr).trim(),
        format!(
            "flowlogd: {}:{line}:{column}: sinks.sls.{key}: {message}",
            cfg.display()
        )
    );
}

#[test]
fn check_config_reports_bad_logservice_options_at_their_key() {
    let tmp = TempDir::new("sls-check");
    let good = secret_file(&tmp, "good.secret", SECRET, 0o600);
    let open = secret_file(&tmp, "open.secret", SECRET, 0o644);
    let missing = tmp.join("missing.secret");
    let directory = tmp.join("secret-dir");
    std::fs::create_dir(&directory).unwrap();
    let base = |endpoint: &str, logstore: bool, secret: &Path| {
        format!(
            "endpoint = \"{endpoint}\"\nproject = \"{PROJECT}\"\n{}access_key_id = \"{ACCESS_KEY_ID}\"\n\
             access_key_secret_file = \"{}\"\n",
            if logstore {
                format!("logstore = \"{LOGSTORE}\"\n")
            } else {
                String::new()
            },
            secret.display()
        )
    };

    // A valid one checks, without connecting anywhere (nothing listens).
    let cfg = write_config(
        &tmp,
        &base("https://cn-hangzhou.log.aliyuncs.com", true, &good),
    );
    let o = flowlogd(&["check-config", "--config", cfg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("sls: plugin \"logservice\""),
        "{}",
        text(&o)
    );

    expect_check_error(
        &tmp,
        &base("ftp://cn-hangzhou.log.aliyuncs.com", true, &good),
        "endpoint",
        "endpoint",
        "expected an endpoint like \"https://cn-hangzhou.log.aliyuncs.com\", \"cn-hangzhou.log.aliyuncs.com\" \
         or \"http://127.0.0.1:8080\", got \"ftp://cn-hangzhou.log.aliyuncs.com\" (scheme must be http or https)",
    );
    expect_check_error(
        &tmp,
        &base("https://cn-hangzhou.log.aliyuncs.com", false, &good),
        "logstore",
        "[sinks.sls]",
        "missing field `logstore`",
    );
    expect_check_error(
        &tmp,
        &base("https://cn-hangzhou.log.aliyuncs.com", true, &missing),
        "access_key_secret_file",
        "access_key_secret_file",
        &format!(
            "cannot read {}: No such file or directory (os error 2)",
            missing.display()
        ),
    );
    expect_check_error(
        &tmp,
        &base("https://cn-hangzhou.log.aliyuncs.com", true, &directory),
        "access_key_secret_file",
        "access_key_secret_file",
        &format!("cannot read {}: not a regular file", directory.display()),
    );
    expect_check_error(
        &tmp,
        &base("https://cn-hangzhou.log.aliyuncs.com", true, &open),
        "access_key_secret_file",
        "access_key_secret_file",
        &format!(
            "{0} has mode 0644: it is readable or writable by group or others, and it holds a credential; \
             refusing it: run `chmod 600 {0}`",
            open.display()
        ),
    );
}
