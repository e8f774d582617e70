//! The file sink through its `Sink` implementation, in temporary directories.

use std::ffi::{c_int, c_void};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use flowlogd_plugin_api::abi::{FfiHost, FfiRecord, FfiStr, LOG_WARN};
use flowlogd_plugin_api::{
    Action, Direction, EniIds, ErrorKind, FlowExtras, FlowFields, FlowRecord, FlushFlags, Host,
    LogStatus, Options, RecordView, Sink, SinkError,
};
use flowlogd_sink_file::FileSink;

/// A directory under the system temp dir, removed when dropped (also when
/// the test fails).
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "flowlogd-sink-file-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn options(toml_text: &str) -> Options {
    Options::from_toml_table(&toml_text.parse::<toml::Table>().unwrap())
}

fn open(toml_text: &str) -> Result<FileSink, SinkError> {
    FileSink::open(&Host::standalone("test"), &options(toml_text))
}

fn open_at(path: &Path, extra: &str) -> FileSink {
    open(&format!("path = {:?}\n{extra}", path.to_str().unwrap())).unwrap()
}

fn try_write(sink: &mut FileSink, records: &[FlowRecord]) -> Result<(), SinkError> {
    let ffi: Vec<FfiRecord> = records.iter().map(FlowRecord::to_ffi).collect();
    // SAFETY: `records` owns the strings `ffi` points to and outlives the views.
    let views: Vec<RecordView<'_>> = ffi.iter().map(|r| unsafe { RecordView::new(r) }).collect();
    sink.write(&views)
}

fn write(sink: &mut FileSink, records: &[FlowRecord]) {
    try_write(sink, records).unwrap();
}

fn eni(eni_id: &str) -> Arc<EniIds> {
    Arc::new(EniIds {
        eni_id: eni_id.into(),
        vswitch_id: "vsw-bp1e5f6g".into(),
        vpc_id: "vpc-bp1h7i8j".into(),
        vm_id: "i-bp1k9l0m".into(),
        account_id: "1234567890123456".into(),
    })
}

/// The batch of tests/golden/records.{txt,jsonl}.
fn golden_records() -> Vec<FlowRecord> {
    let (start, end) = (1_700_000_400, 1_700_001_000);
    vec![
        FlowRecord {
            eni: eni("eni-bp1a2b3c4d"),
            flow: Some(FlowFields {
                srcaddr: "192.168.0.10".parse().unwrap(),
                srcport: 52314,
                dstaddr: "203.0.113.5".parse().unwrap(),
                dstport: 443,
                protocol: 6,
                direction: Direction::Out,
                packets: 12,
                bytes: 3456,
                action: Action::Accept,
                extras: Default::default(),
            }),
            start,
            end,
            log_status: LogStatus::Ok,
            rule: None,
        },
        FlowRecord {
            eni: eni("eni-bp1a2b3c4d"),
            flow: Some(FlowFields {
                srcaddr: "2001:db8:0:1:0:0:0:10".parse().unwrap(),
                srcport: 40123,
                dstaddr: "2001:db8::5".parse().unwrap(),
                dstport: 161,
                protocol: 17,
                direction: Direction::In,
                packets: 3,
                bytes: 258,
                action: Action::Reject,
                extras: Default::default(),
            }),
            start,
            end,
            log_status: LogStatus::Ok,
            rule: Some(Arc::from("flowlogd-sg:drop-snmp")),
        },
        FlowRecord {
            eni: eni("eni-bp1n1o2p"),
            flow: None,
            start,
            end,
            log_status: LogStatus::NoData,
            rule: None,
        },
        FlowRecord {
            eni: eni("eni-bp1a2b3c4d"),
            flow: None,
            start,
            end,
            log_status: LogStatus::SkipData,
            rule: None,
        },
    ]
}

/// Record `i` of a numbered sequence: `i` is its packet count, and the
/// other numbers vary so that lines differ in length.
fn numbered(i: u64) -> FlowRecord {
    FlowRecord {
        eni: eni("eni-bp1a2b3c4d"),
        flow: Some(FlowFields {
            srcaddr: "10.0.0.1".parse().unwrap(),
            srcport: (i % 65536) as u16,
            dstaddr: "10.0.0.2".parse().unwrap(),
            dstport: 443,
            protocol: 6,
            direction: Direction::Out,
            packets: i,
            bytes: i * i * 977,
            action: Action::Accept,
            extras: Default::default(),
        }),
        start: 1_700_000_400,
        end: 1_700_001_000,
        log_status: LogStatus::Ok,
        rule: None,
    }
}

/// The packet count of a text line of `numbered`.
fn number_of(line: &str) -> u64 {
    let fields: Vec<&str> = line.split(' ').collect();
    assert_eq!(fields.len(), 18, "not a whole record: {line:?}");
    fields[12].parse().unwrap()
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn rotated(path: &Path, k: u32) -> PathBuf {
    PathBuf::from(format!("{}.{k}", path.display()))
}

/// The rotated files path.k .. path.1 that exist, oldest first, then path.
fn files_oldest_first(path: &Path) -> Vec<PathBuf> {
    let mut k = 1;
    while rotated(path, k).exists() {
        k += 1;
    }
    let mut files: Vec<PathBuf> = (1..k).rev().map(|k| rotated(path, k)).collect();
    files.push(path.to_owned());
    files
}

/// Writes `count` numbered records starting at `first`, in batches of
/// varying size.
fn write_numbered(sink: &mut FileSink, first: u64, count: u64) {
    let mut i = first;
    let mut batch_no = 0u64;
    while i < first + count {
        let size = (batch_no * 37 % 97 + 1).min(first + count - i);
        let batch: Vec<FlowRecord> = (i..i + size).map(numbered).collect();
        write(sink, &batch);
        i += size;
        batch_no += 1;
    }
}

#[test]
fn text_matches_golden_file() {
    let dir = TempDir::new("golden-text");
    let path = dir.join("flow.log");
    let mut sink = open_at(&path, "");
    write(&mut sink, &golden_records());
    drop(sink);
    assert_eq!(read(&path), include_str!("golden/records.txt"));
}

#[test]
fn json_matches_golden_file() {
    let dir = TempDir::new("golden-json");
    let path = dir.join("flow.jsonl");
    let mut sink = open_at(&path, r#"format = "json""#);
    write(&mut sink, &golden_records());
    drop(sink);
    assert_eq!(read(&path), include_str!("golden/records.jsonl"));
}

#[test]
fn each_batch_is_in_the_file_when_write_returns() {
    let dir = TempDir::new("batch-flushed");
    let path = dir.join("flow.log");
    let mut sink = open_at(&path, "");
    write(&mut sink, &golden_records());
    // Not dropped, not flushed: a reader (tail -f) sees the whole batch.
    assert_eq!(read(&path), include_str!("golden/records.txt"));
    sink.flush(FlushFlags {
        window_end: true,
        reopen: false,
    })
    .unwrap();
}

#[test]
fn rotation_loses_duplicates_and_splits_nothing() {
    const N: u64 = 5000;
    let dir = TempDir::new("rotation");
    let path = dir.join("flow.log");
    let mut sink = open_at(&path, "rotate_bytes = 4096\nrotate_keep = 1000");
    write_numbered(&mut sink, 0, N);
    drop(sink);

    let files = files_oldest_first(&path);
    assert!(
        files.len() > 100,
        "expected many rotations, got {} files",
        files.len()
    );
    let mut numbers = Vec::new();
    for file in &files {
        let text = read(file);
        assert!(
            text.len() <= 4096,
            "{} has {} bytes",
            file.display(),
            text.len()
        );
        assert!(text.ends_with('\n'), "{} ends mid-line", file.display());
        numbers.extend(text.lines().map(number_of));
    }
    assert_eq!(numbers, (0..N).collect::<Vec<_>>());
}

#[test]
fn rotate_keep_deletes_older_files() {
    let dir = TempDir::new("keep");
    let path = dir.join("flow.log");
    // Left by an earlier run with a larger rotate_keep.
    fs::write(rotated(&path, 4), "stale\n").unwrap();
    fs::write(rotated(&path, 5), "stale\n").unwrap();
    let mut sink = open_at(&path, "rotate_bytes = 4096\nrotate_keep = 3");
    write_numbered(&mut sink, 0, 500);
    drop(sink);

    let files = files_oldest_first(&path);
    assert_eq!(
        files,
        [
            rotated(&path, 3),
            rotated(&path, 2),
            rotated(&path, 1),
            path.clone()
        ]
    );
    assert!(!rotated(&path, 5).exists());
    // What is kept is the newest records, whole and in order.
    let numbers: Vec<u64> = files
        .iter()
        .flat_map(|f| read(f).lines().map(number_of).collect::<Vec<_>>())
        .collect();
    assert_eq!(*numbers.last().unwrap(), 499);
    assert!(numbers.len() < 500);
    assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1));
}

#[test]
fn reopen_after_the_file_was_moved_away() {
    let dir = TempDir::new("reopen");
    let path = dir.join("flow.log");
    let moved = dir.join("flow.log-20231114");
    let log = CapturedLog::default();
    let mut sink = open_logged(&path, "", &log);
    write_numbered(&mut sink, 0, 10);
    // logrotate (without copytruncate) renames the file, then signals us.
    fs::rename(&path, &moved).unwrap();
    sink.flush(FlushFlags {
        window_end: true,
        reopen: true,
    })
    .unwrap();
    write_numbered(&mut sink, 10, 7);
    drop(sink);

    assert_eq!(numbers_in(&moved), (0..10).collect::<Vec<_>>());
    assert_eq!(numbers_in(&path), (10..17).collect::<Vec<_>>());
    // Asked for: nothing to warn about.
    assert_eq!(log.warnings(), Vec::<String>::new());
}

#[test]
fn appends_to_an_existing_file() {
    let dir = TempDir::new("append");
    let path = dir.join("flow.log");
    fs::write(&path, "written by an earlier run\n").unwrap();
    let mut sink = open_at(&path, "");
    write(&mut sink, &golden_records());
    drop(sink);
    assert_eq!(
        read(&path),
        format!(
            "written by an earlier run\n{}",
            include_str!("golden/records.txt")
        )
    );
}

#[test]
fn existing_size_counts_toward_rotation() {
    let dir = TempDir::new("existing-size");
    let path = dir.join("flow.log");
    let earlier = "x".repeat(4000) + "\n";
    fs::write(&path, &earlier).unwrap();
    let mut sink = open_at(&path, "rotate_bytes = 4096");
    write(&mut sink, &golden_records()[..1]);
    drop(sink);
    assert_eq!(read(&rotated(&path, 1)), earlier);
    assert_eq!(
        read(&path),
        include_str!("golden/records.txt")
            .lines()
            .next()
            .unwrap()
            .to_owned()
            + "\n"
    );
}

#[test]
fn creates_the_directory_and_the_file_with_their_modes() {
    let dir = TempDir::new("modes");
    let path = dir.join("a/b/flow.log");
    let mut sink = open_at(&path, r#"file_mode = "0604""#);
    write(&mut sink, &golden_records());
    drop(sink);
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    // The umask may narrow the directory's 0750 but never widen it.
    assert_eq!(mode(&dir.join("a/b")) & !0o750, 0);
    // The file gets exactly the configured mode, whatever the umask.
    assert_eq!(mode(&path), 0o604);
}

#[track_caller]
fn assert_config_error(toml_text: &str, key: &str, message: &str) {
    let e = open(toml_text).err().expect("open should fail");
    assert_eq!(e.kind, ErrorKind::Rejected, "{e}");
    assert_eq!((e.key.as_deref(), e.message.as_str()), (Some(key), message));
}

#[test]
fn config_errors_name_the_key() {
    assert_config_error(
        "path = \"/tmp/flow.log\"\ncolour = \"red\"",
        "colour",
        "unknown field `colour`, expected one of `path`, `format`, `rotate_bytes`, `rotate_keep`, `file_mode`, `fields`",
    );
    assert_config_error(
        "path = \"/tmp/flow.log\"\nformat = \"xml\"",
        "format",
        r#"expected "text" or "json", got "xml""#,
    );
    assert_config_error(
        r#"path = "logs/flow.log""#,
        "path",
        r#"expected an absolute path, got "logs/flow.log""#,
    );
    assert_config_error(
        r#"path = """#,
        "path",
        r#"expected an absolute path, got """#,
    );
    assert_config_error(r#"format = "text""#, "path", "missing field `path`");
    assert_config_error(
        "path = \"/tmp/flow.log\"\nrotate_bytes = 1000",
        "rotate_bytes",
        "expected 0 (never rotate) or at least 4096, got 1000",
    );
    assert_config_error(
        "path = \"/tmp/flow.log\"\nrotate_keep = 0",
        "rotate_keep",
        "expected 1 to 1000, got 0",
    );
    assert_config_error(
        "path = \"/tmp/flow.log\"\nfile_mode = \"rw-r-----\"",
        "file_mode",
        r#"expected an octal permission mode like "0640" (at most "0777"), got "rw-r-----""#,
    );
    assert_config_error(
        "path = \"/tmp/flow.log\"\nfields = [\"srcaddr\", \"src-port\"]",
        "fields",
        "unknown field \"src-port\"; known fields: version, vswitch-id, vm-id, vpc-id, \
         account-id, eni-id, srcaddr, srcport, dstaddr, dstport, protocol, direction, packets, \
         bytes, start, end, log-status, action, pkt-srcaddr, pkt-dstaddr, flow-start, flow-end, \
         tcp-flags, type, rule",
    );
    assert_config_error(
        "path = \"/tmp/flow.log\"\nfields = []",
        "fields",
        "expected at least one field name, got an empty list (leave `fields` out for the \
         default 18 fields)",
    );
    assert_config_error(
        "path = \"/tmp/flow.log\"\nfields = [\"bytes\", \"bytes\"]",
        "fields",
        "field \"bytes\" is listed twice",
    );
    assert_config_error(
        "path = \"/tmp/flow.log\"\nfields = \"bytes\"",
        "fields",
        "invalid type: string \"bytes\", expected a sequence",
    );
}

/// The golden records, the first with the minor-1 extras filled in.
fn golden_records_with_extras() -> Vec<FlowRecord> {
    let mut records = golden_records();
    records[0].flow.as_mut().unwrap().extras = FlowExtras {
        pkt_srcaddr: Some("100.64.0.7".parse().unwrap()),
        pkt_dstaddr: Some("203.0.113.5".parse().unwrap()),
        flow_start: Some(1_700_000_412),
        flow_end: Some(1_700_000_414),
        tcp_flags: Some(19),
    };
    records
}

const LISTED: &str = r#"fields = ["type", "srcaddr", "pkt-srcaddr", "pkt-dstaddr", "flow-start", "flow-end", "tcp-flags", "bytes", "log-status", "eni-id", "rule"]"#;

#[test]
fn text_writes_the_listed_fields_in_order() {
    let dir = TempDir::new("fields-text");
    let path = dir.join("flow.log");
    let mut sink = open_at(&path, LISTED);
    write(&mut sink, &golden_records_with_extras());
    drop(sink);
    assert_eq!(
        read(&path),
        "IPv4 192.168.0.10 100.64.0.7 203.0.113.5 1700000412 1700000414 19 3456 OK eni-bp1a2b3c4d -\n\
         IPv6 2001:db8:0:1::10 - - - - - 258 OK eni-bp1a2b3c4d flowlogd-sg:drop-snmp\n\
         - - - - - - - - NODATA eni-bp1n1o2p -\n\
         - - - - - - - - SKIPDATA eni-bp1a2b3c4d -\n"
    );
}

#[test]
fn json_writes_the_listed_keys_in_order() {
    let dir = TempDir::new("fields-json");
    let path = dir.join("flow.jsonl");
    let mut sink = open_at(&path, &format!("format = \"json\"\n{LISTED}"));
    write(&mut sink, &golden_records_with_extras());
    drop(sink);
    assert_eq!(
        read(&path),
        r#"{"type":"IPv4","srcaddr":"192.168.0.10","pkt-srcaddr":"100.64.0.7","pkt-dstaddr":"203.0.113.5","flow-start":1700000412,"flow-end":1700000414,"tcp-flags":19,"bytes":3456,"log-status":"OK","eni-id":"eni-bp1a2b3c4d","rule":null}
{"type":"IPv6","srcaddr":"2001:db8:0:1::10","pkt-srcaddr":null,"pkt-dstaddr":null,"flow-start":null,"flow-end":null,"tcp-flags":null,"bytes":258,"log-status":"OK","eni-id":"eni-bp1a2b3c4d","rule":"flowlogd-sg:drop-snmp"}
{"type":null,"srcaddr":null,"pkt-srcaddr":null,"pkt-dstaddr":null,"flow-start":null,"flow-end":null,"tcp-flags":null,"bytes":null,"log-status":"NODATA","eni-id":"eni-bp1n1o2p","rule":null}
{"type":null,"srcaddr":null,"pkt-srcaddr":null,"pkt-dstaddr":null,"flow-start":null,"flow-end":null,"tcp-flags":null,"bytes":null,"log-status":"SKIPDATA","eni-id":"eni-bp1a2b3c4d","rule":null}
"#
    );
}

/// The default list, written out, is the default: the same bytes as no
/// `fields` at all (with JSON's `rule` only where a record has one).
#[test]
fn the_18_fields_listed_are_the_golden_output() {
    let names: Vec<String> = flowlogd_plugin_api::format::FIELD_NAMES
        .iter()
        .map(|n| format!("{n:?}"))
        .collect();
    let listed = format!("fields = [{}]", names.join(", "));
    for (format, golden) in [
        ("text", include_str!("golden/records.txt")),
        ("json", include_str!("golden/records.jsonl")),
    ] {
        let dir = TempDir::new("fields-default");
        let path = dir.join("flow.log");
        let mut sink = open_at(&path, &format!("format = \"{format}\"\n{listed}"));
        write(&mut sink, &golden_records_with_extras());
        drop(sink);
        assert_eq!(read(&path), golden, "{format}");
    }
}

#[test]
fn open_fails_when_the_directory_cannot_be_created() {
    let dir = TempDir::new("no-dir");
    fs::write(dir.join("file"), "").unwrap();
    let parent = dir.join("file/logs");
    let e = open(&format!(
        "path = {:?}",
        parent.join("flow.log").to_str().unwrap()
    ))
    .err()
    .expect("open should fail");
    assert_eq!(e.key.as_deref(), Some("path"));
    assert_eq!(
        e.message,
        format!(
            "cannot create directory {}: Not a directory (os error 20)",
            parent.display()
        )
    );
}

#[test]
fn write_errors_ask_for_a_retry_and_name_the_file() {
    // /dev/full accepts the open and fails every write with ENOSPC.
    let mut sink = open(r#"path = "/dev/full""#).unwrap();
    let e = try_write(&mut sink, &golden_records()).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Retry);
    assert_eq!(
        e.message,
        "cannot write /dev/full: No space left on device (os error 28)"
    );
    // The retry resumes: everything is buffered, only the flush is repeated.
    assert_eq!(try_write(&mut sink, &golden_records()).unwrap_err(), e);
}

/// The host's log as a test sees it: each line the sink logged, with its
/// level.
#[derive(Default)]
struct CapturedLog(Mutex<Vec<(c_int, String)>>);

impl CapturedLog {
    fn warnings(&self) -> Vec<String> {
        let lines = self.0.lock().unwrap();
        lines
            .iter()
            .filter(|(level, _)| *level == LOG_WARN)
            .map(|(_, line)| line.clone())
            .collect()
    }
}

unsafe extern "C" fn capture(ctx: *mut c_void, level: c_int, msg: *const u8, len: usize) {
    // SAFETY: ctx is the CapturedLog given to `open_logged`, which outlives
    // the sink; the sink passes `len` readable bytes.
    let (log, bytes) = unsafe {
        (
            &*(ctx as *const CapturedLog),
            std::slice::from_raw_parts(msg, len),
        )
    };
    let line = String::from_utf8_lossy(bytes).into_owned();
    log.0.lock().unwrap().push((level, line));
}

/// Opens the sink at `path` with a host whose log goes to `log`.
fn open_logged(path: &Path, extra: &str, log: &CapturedLog) -> FileSink {
    let ffi = FfiHost {
        struct_size: std::mem::size_of::<FfiHost>() as u32,
        sink_name: FfiStr::new("local"),
        daemon_version: FfiStr::new("test"),
        log: Some(capture),
        log_ctx: log as *const CapturedLog as *mut c_void,
        abi_minor: flowlogd_plugin_api::abi::ABI_MINOR,
    };
    // SAFETY: `ffi` is valid and its strings are 'static.
    let host = unsafe { Host::from_ffi(&ffi) };
    let options = options(&format!("path = {:?}\n{extra}", path.to_str().unwrap()));
    FileSink::open(&host, &options).unwrap()
}

fn numbers_in(path: &Path) -> Vec<u64> {
    read(path).lines().map(number_of).collect()
}

const WINDOW_END: FlushFlags = FlushFlags {
    window_end: true,
    reopen: false,
};

#[test]
fn records_after_the_directory_is_removed_go_to_a_recreated_directory() {
    let dir = TempDir::new("dir-removed");
    let logs = dir.join("logs");
    let path = logs.join("flow.log");
    let log = CapturedLog::default();
    let mut sink = open_logged(&path, "", &log);
    write_numbered(&mut sink, 0, 100);
    fs::remove_dir_all(&logs).unwrap();
    // Several batches (write_numbered varies their size), as the host sends.
    write_numbered(&mut sink, 100, 900);
    sink.flush(WINDOW_END).unwrap();

    let after = numbers_in(&path);
    assert_eq!(after.len(), 900);
    assert_eq!(after, (100..1000).collect::<Vec<_>>());
    let mode = fs::metadata(&logs).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode & !0o750, 0, "directory mode {mode:o}");
    assert_eq!(log.warnings(), dir_removed_warnings(&path, &logs));
}

/// The two warnings of a removed directory (`logs`, holding `path`): the
/// open file deleted, the directory created again.
fn dir_removed_warnings(path: &Path, logs: &Path) -> [String; 2] {
    [
        format!(
            "{p} was deleted while open (the file or its directory was removed); \
             opening a new {p}, and the batch being written, if any, is written again there",
            p = path.display()
        ),
        format!(
            "directory {} was removed; created it again with mode 0750 as at start",
            logs.display()
        ),
    ]
}

#[test]
fn a_window_end_notices_a_removed_directory_without_a_write() {
    let dir = TempDir::new("dir-removed-idle");
    let logs = dir.join("logs");
    let path = logs.join("flow.log");
    let log = CapturedLog::default();
    let mut sink = open_logged(&path, "", &log);
    write_numbered(&mut sink, 0, 10);
    fs::remove_dir_all(&logs).unwrap();
    sink.flush(WINDOW_END).unwrap();
    // The operator finds the file back at window close, before any record.
    assert_eq!(read(&path), "");
    assert_eq!(log.warnings(), dir_removed_warnings(&path, &logs));
    write_numbered(&mut sink, 10, 5);
    assert_eq!(numbers_in(&path), (10..15).collect::<Vec<_>>());
    assert_eq!(log.warnings(), dir_removed_warnings(&path, &logs));
}

#[test]
fn a_directory_that_cannot_be_recreated_asks_for_a_retry_and_keeps_the_batch() {
    let dir = TempDir::new("dir-blocked");
    let logs = dir.join("logs");
    let path = logs.join("flow.log");
    let log = CapturedLog::default();
    let mut sink = open_logged(&path, "", &log);
    write_numbered(&mut sink, 0, 10);
    fs::remove_dir_all(&logs).unwrap();
    // A file where the directory was: the path cannot be written.
    fs::write(&logs, "").unwrap();
    let batch: Vec<FlowRecord> = (10..20).map(numbered).collect();
    let e = try_write(&mut sink, &batch).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Retry);
    assert_eq!(
        e.message,
        format!(
            "cannot stat {}: Not a directory (os error 20)",
            path.display()
        )
    );
    // Fixed: the host's retry of the same batch lands whole in a new file.
    fs::remove_file(&logs).unwrap();
    write(&mut sink, &batch);
    assert_eq!(numbers_in(&path), (10..20).collect::<Vec<_>>());
    assert_eq!(log.warnings(), dir_removed_warnings(&path, &logs));
}

#[test]
fn records_after_the_file_is_moved_away_go_to_a_new_file() {
    let dir = TempDir::new("moved");
    let path = dir.join("flow.log");
    let moved = dir.join("flow.log-20231114");
    let log = CapturedLog::default();
    let mut sink = open_logged(&path, "", &log);
    write_numbered(&mut sink, 0, 100);
    // logrotate without postrotate (no reopen signal): renamed, nobody told us.
    fs::rename(&path, &moved).unwrap();
    write_numbered(&mut sink, 100, 400);

    assert_eq!(numbers_in(&moved), (0..100).collect::<Vec<_>>());
    let after = numbers_in(&path);
    assert_eq!(after.len(), 400);
    assert_eq!(after, (100..500).collect::<Vec<_>>());
    assert_eq!(
        log.warnings(),
        [format!(
            "{p} was moved away without a reopen; what was written is in the moved \
             file, new records go to {p}",
            p = path.display()
        )]
    );
}

#[test]
fn records_after_the_file_is_replaced_go_to_the_new_file() {
    let dir = TempDir::new("replaced");
    let path = dir.join("flow.log");
    let moved = dir.join("flow.log.1");
    let log = CapturedLog::default();
    let mut sink = open_logged(&path, "", &log);
    write_numbered(&mut sink, 0, 100);
    // logrotate's `create`: renamed, and a new empty file in its place.
    fs::rename(&path, &moved).unwrap();
    fs::write(&path, "").unwrap();
    write_numbered(&mut sink, 100, 400);

    assert_eq!(numbers_in(&moved), (0..100).collect::<Vec<_>>());
    assert_eq!(numbers_in(&path), (100..500).collect::<Vec<_>>());
    assert_eq!(log.warnings().len(), 1, "{:?}", log.warnings());
    assert!(
        log.warnings()[0].contains("was replaced by another file without a reopen"),
        "{:?}",
        log.warnings()
    );
}

#[test]
fn records_after_another_file_is_renamed_over_it_go_to_that_file() {
    let dir = TempDir::new("renamed-over");
    let path = dir.join("flow.log");
    let other = dir.join("flow.log.new");
    let log = CapturedLog::default();
    let mut sink = open_logged(&path, "", &log);
    write_numbered(&mut sink, 0, 100);
    // The rename deletes the file we have open.
    fs::write(&other, "").unwrap();
    fs::rename(&other, &path).unwrap();
    write_numbered(&mut sink, 100, 400);

    assert_eq!(numbers_in(&path), (100..500).collect::<Vec<_>>());
    assert_eq!(log.warnings().len(), 1, "{:?}", log.warnings());
    assert!(log.warnings()[0].contains("was deleted while open"));
}

#[test]
fn rotation_goes_on_after_the_directory_is_removed() {
    const N: u64 = 3000;
    let dir = TempDir::new("rotation-dir-removed");
    let logs = dir.join("logs");
    let path = logs.join("flow.log");
    let log = CapturedLog::default();
    let mut sink = open_logged(&path, "rotate_bytes = 4096\nrotate_keep = 1000", &log);
    write_numbered(&mut sink, 0, 500);
    fs::remove_dir_all(&logs).unwrap();
    write_numbered(&mut sink, 500, N - 500);
    drop(sink);

    let files = files_oldest_first(&path);
    assert!(
        files.len() > 20,
        "expected rotations, got {} files",
        files.len()
    );
    let numbers: Vec<u64> = files.iter().flat_map(|f| numbers_in(f)).collect();
    assert_eq!(numbers, (500..N).collect::<Vec<_>>());
    assert_eq!(log.warnings(), dir_removed_warnings(&path, &logs));
}

#[test]
fn reopen_after_the_file_was_deleted_does_not_warn() {
    let dir = TempDir::new("reopen-deleted");
    let path = dir.join("flow.log");
    let log = CapturedLog::default();
    let mut sink = open_logged(&path, "", &log);
    write_numbered(&mut sink, 0, 10);
    fs::remove_file(&path).unwrap();
    sink.flush(FlushFlags {
        window_end: false,
        reopen: true,
    })
    .unwrap();
    write_numbered(&mut sink, 10, 5);
    assert_eq!(numbers_in(&path), (10..15).collect::<Vec<_>>());
    assert_eq!(log.warnings(), Vec::<String>::new());
}
