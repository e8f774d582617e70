//! Dispatch through real loaded plugins: a slow sink does not hold up a fast
//! one; RETRY is retried; rejected, panicking and overflowing sinks are
//! counted and reported, never silently dropped.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flowlogd_tests::*;

struct Setup {
    tmp: TempDir,
    cfg: PathBuf,
    input: PathBuf,
    records: Vec<serde_json::Value>,
}

fn setup(label: &str, daemon_extra: &str, sinks: &str, sink_names: &str, n: usize) -> Setup {
    let tmp = TempDir::new(label);
    let plugins = plugin_dir(&tmp);
    let cfg = tmp.join("flowlogd.toml");
    let sinks = sinks.replace("@TMP@", tmp.path().to_str().unwrap());
    std::fs::write(
        &cfg,
        format!(
            "[daemon]\nplugin_dir = \"{}\"\n{daemon_extra}\n\n{}[[flow_log]]\nname = \"all\"\nresource_type = \"eni\"\n\
             resource_id = \"eni-1\"\nsinks = [{sink_names}]\n\n{sinks}",
            plugins.display(),
            eni_toml("eni-1", "eth0", "vpc-1")
        ),
    )
    .unwrap();
    let records = sample_records("eni-1", "vpc-1", n);
    let input = tmp.join("records.jsonl");
    write_json_lines(&input, &records);
    Setup {
        tmp,
        cfg,
        input,
        records,
    }
}

fn replay(s: &Setup) -> std::process::Output {
    flowlogd(&[
        "replay",
        "--config",
        s.cfg.to_str().unwrap(),
        s.input.to_str().unwrap(),
    ])
}

#[test]
fn slow_sink_does_not_block_a_fast_one() {
    let s = setup(
        "slow-fast",
        "shutdown_timeout_secs = 20",
        "[sinks.slow]\nplugin = \"testsink\"\npath = \"@TMP@/slow.jsonl\"\ndelay_ms = 4000\n\n\
         [sinks.fast]\nplugin = \"file\"\npath = \"@TMP@/fast.jsonl\"\nformat = \"json\"\n",
        "\"slow\", \"fast\"",
        100,
    );
    let started = Instant::now();
    let mut child = Command::new(flowlogd_bin())
        .args([
            "replay",
            "--config",
            s.cfg.to_str().unwrap(),
            s.input.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The fast sink has everything while the slow one is still asleep in
    // its first write (it sleeps 4 s before writing anything).
    let fast_path = s.tmp.join("fast.jsonl");
    let mut fast_done_at = None;
    for _ in 0..300 {
        if read_json_records(&fast_path).len() == s.records.len() {
            fast_done_at = Some(started.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let slow_written_then = s.tmp.join("slow.jsonl").exists();
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{stderr}");
    let fast_done_at = fast_done_at
        .unwrap_or_else(|| panic!("fast sink did not get the records in 3 s\n{stderr}"));
    assert!(
        !slow_written_then,
        "the slow sink wrote before the fast one finished"
    );
    assert!(
        fast_done_at < Duration::from_millis(3500),
        "fast sink took {fast_done_at:?}"
    );
    // And the slow one got everything in the end.
    expect_records(&read_json_records(&s.tmp.join("slow.jsonl")), &s.records);
    expect_records(&read_json_records(&fast_path), &s.records);
}

#[test]
fn transient_failures_are_retried_until_delivered() {
    let s = setup(
        "retry",
        "",
        "[sinks.flaky]\nplugin = \"testsink\"\npath = \"@TMP@/out.jsonl\"\nfail_first_writes = 3\n",
        "\"flaky\"",
        10,
    );
    let o = replay(&s);
    assert!(o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(
            "sink flaky: write failed (attempt 1), retrying in 100 ms: testsink failing on purpose"
        ),
        "{err}"
    );
    assert!(
        err.contains("sink flaky: write succeeded after 3 retries"),
        "{err}"
    );
    assert!(
        err.contains("sink flaky: 10 records delivered, 3 retries"),
        "{err}"
    );
    expect_records(&read_json_records(&s.tmp.join("out.jsonl")), &s.records);
}

#[test]
fn rejected_records_are_counted_and_reported() {
    let s = setup(
        "reject",
        "",
        "[sinks.r]\nplugin = \"testsink\"\npath = \"@TMP@/out.jsonl\"\nreject = true\n",
        "\"r\"",
        7,
    );
    let o = replay(&s);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("sink r: write rejected, not retrying: testsink rejects everything"),
        "{err}"
    );
    assert!(
        err.contains("sink r: 0 records delivered, 7 NOT delivered (0 dropped on a full queue, 0 dropped on a full or failing spool, \
             7 rejected by the sink, 0 still undelivered at shutdown, 0 in corrupt spool batches)"),
        "{err}"
    );
}

#[test]
fn a_panicking_plugin_is_caught_at_the_boundary() {
    let s = setup(
        "panic",
        "",
        "[sinks.p]\nplugin = \"testsink\"\npath = \"@TMP@/out.jsonl\"\npanic_in_write = true\n",
        "\"p\"",
        3,
    );
    let o = replay(&s);
    // Exit code 1 (records not delivered), not a crash by signal.
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("sink p: write rejected, not retrying: plugin panicked in write: testsink was told to panic"), "{err}");
    assert!(err.contains("3 rejected by the sink"), "{err}");
}

#[test]
fn a_full_queue_counts_and_reports_dropped_records() {
    let s = setup(
        "queue-full",
        "sink_queue_records = 5",
        "[sinks.q]\nplugin = \"testsink\"\npath = \"@TMP@/out.jsonl\"\n",
        "\"q\"",
        20,
    );
    let o = replay(&s);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(
            "sink q: queue full (5 records), dropped a batch of 20 records (20 dropped so far)"
        ),
        "{err}"
    );
    assert!(err.contains("20 NOT delivered (20 dropped on a full queue, 0 dropped on a full or failing spool, 0 rejected by the sink, \
         0 still undelivered at shutdown, 0 in corrupt spool batches)"), "{err}");
    assert!(read_json_records(&s.tmp.join("out.jsonl")).is_empty());
}

#[test]
fn a_sink_still_failing_at_shutdown_is_reported() {
    let s = setup(
        "down-at-shutdown",
        "shutdown_timeout_secs = 1",
        "[sinks.down]\nplugin = \"testsink\"\npath = \"@TMP@/out.jsonl\"\nfail_first_writes = 1000000\n",
        "\"down\"",
        4,
    );
    let started = Instant::now();
    let o = replay(&s);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}",
        started.elapsed()
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("sink down: write still failing at shutdown"),
        "{err}"
    );
    assert!(err.contains("4 NOT delivered (0 dropped on a full queue, 0 dropped on a full or failing spool, 0 rejected by the sink, \
         4 still undelivered at shutdown, 0 in corrupt spool batches)"), "{err}");
}
