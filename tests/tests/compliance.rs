//! The plugin compliance harness: every sink the project builds is loaded
//! straight through the C ABI (not through the daemon) and must: export a
//! descriptor of this ABI major with every function set; accept a valid
//! config in `check` and `open`; refuse an invalid one with a message and
//! the offending key, in `check` and in `open`; write a batch of every kind
//! of record; flush at a window end and for a reopen; close. A plugin built
//! from the ABI 1.0 header (tests/fixtures/abi-1.0) goes through the same
//! steps, and must read the 18 fields of records a 1.1 plugin reads.

use std::ffi::{c_int, c_void, CStr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use flowlogd_plugin_api::abi::*;
use flowlogd_plugin_api::sink::FfiOptions;
use flowlogd_plugin_api::{
    format, Action, Direction, EniIds, FlowExtras, FlowFields, FlowRecord, LogStatus, RecordView,
};
use flowlogd_tests::*;

/// A plugin under test: its file, a valid and an invalid option set, and
/// the key the invalid set gets wrong.
struct Case {
    name: &'static str,
    file: PathBuf,
    valid: toml::Table,
    invalid: toml::Table,
    bad_key: &'static str,
    /// Writes reach a peer that is not there in this harness (network
    /// sinks): RETRY is then the right answer to `write`.
    write_may_retry: bool,
}

fn table(src: &str) -> toml::Table {
    src.parse()
        .unwrap_or_else(|e| panic!("bad test table {src:?}: {e}"))
}

fn cases(tmp: &TempDir) -> Vec<Case> {
    let out = |f: &str| tmp.join(f).display().to_string();
    let c_plugin = tmp.join("csv.so");
    build_c_plugin(
        &workspace_root().join("examples/sink-c/csv_sink.c"),
        &c_plugin,
        &[],
    );
    let c_plugin_1_0 = tmp.join("csv-abi-1.0.so");
    build_c_plugin_against(
        &abi_1_0_include(),
        &workspace_root().join("examples/sink-c/csv_sink.c"),
        &c_plugin_1_0,
        &[],
    );
    let secret = tmp.join("secret");
    std::fs::write(&secret, "compliance-secret").unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let logservice = format!(
        "endpoint = \"http://127.0.0.1:9\"\nproject = \"flowlogd-test\"\naccess_key_id = \"id\"\naccess_key_secret_file = \"{}\"",
        secret.display()
    );
    vec![
        Case {
            name: "syslog",
            file: cdylib("flowlogd_sink_syslog"),
            // Port 9 (discard) on loopback: nobody listens, so a send may
            // be refused: RETRY is a valid answer.
            valid: table("transport = \"udp\"\naddress = \"127.0.0.1:9\""),
            invalid: table("transport = \"pigeon\""),
            bad_key: "transport",
            write_may_retry: true,
        },
        Case {
            name: "ipfix",
            file: cdylib("flowlogd_sink_ipfix"),
            // Port 9 (discard) on loopback: nobody listens, so a send may
            // be refused: RETRY is a valid answer.
            valid: table("collector = \"127.0.0.1:9\"\nenterprise_number = 32473"),
            invalid: table("collector = \"127.0.0.1:9\""),
            bad_key: "enterprise_number",
            write_may_retry: true,
        },
        Case {
            name: "logservice",
            file: cdylib("flowlogd_sink_logservice"),
            // Nothing listens on 127.0.0.1:9: writes answer RETRY.
            valid: table(&format!("{logservice}\nlogstore = \"flowlog\"")),
            invalid: table(&logservice),
            bad_key: "logstore",
            write_may_retry: true,
        },
        Case {
            name: "file",
            file: cdylib("flowlogd_sink_file"),
            valid: table(&format!(
                "path = \"{}\"\nformat = \"json\"",
                out("file.jsonl")
            )),
            invalid: table(&format!(
                "path = \"{}\"\nformat = \"xml\"",
                out("file.jsonl")
            )),
            bad_key: "format",
            write_may_retry: false,
        },
        Case {
            name: "window-stats",
            file: cdylib("flowlogd_sink_window_stats"),
            valid: table(&format!("path = \"{}\"", out("stats.log"))),
            invalid: table("path = \"relative.log\""),
            bad_key: "path",
            write_may_retry: false,
        },
        Case {
            name: "testsink",
            file: cdylib("flowlogd_testsink"),
            valid: table(&format!("path = \"{}\"", out("test.jsonl"))),
            invalid: table(&format!("path = \"{}\"\nbogus = 1", out("test.jsonl"))),
            bad_key: "bogus",
            write_may_retry: false,
        },
        Case {
            name: "csv",
            file: c_plugin,
            valid: table(&format!("path = \"{}\"", out("flows.csv"))),
            invalid: table(&format!(
                "path = \"{}\"\ncolour = \"blue\"",
                out("flows.csv")
            )),
            bad_key: "colour",
            write_may_retry: false,
        },
        // The same C source built against the ABI 1.0 header.
        Case {
            name: "csv",
            file: c_plugin_1_0,
            valid: table(&format!("path = \"{}\"", out("flows-1.0.csv"))),
            invalid: table(&format!(
                "path = \"{}\"\ncolour = \"blue\"",
                out("flows-1.0.csv")
            )),
            bad_key: "colour",
            write_may_retry: false,
        },
    ]
}

/// Options as the daemon passes them.
fn options(t: &toml::Table) -> FfiOptions {
    FfiOptions::from_table(t)
}

fn host() -> FfiHost {
    FfiHost {
        struct_size: std::mem::size_of::<FfiHost>() as u32,
        sink_name: FfiStr::new("compliance"),
        daemon_version: FfiStr::new("test"),
        log: None,
        log_ctx: std::ptr::null_mut(),
        abi_minor: ABI_MINOR,
    }
}

/// One record of every kind: OK ACCEPT (IPv4), OK REJECT with a rule
/// (IPv6), NODATA, SKIPDATA.
fn records() -> Vec<FlowRecord> {
    let eni = Arc::new(EniIds {
        eni_id: "eni-c".into(),
        vswitch_id: "vsw-c".into(),
        vpc_id: "vpc-c".into(),
        vm_id: "i-c".into(),
        account_id: "1".into(),
    });
    let flow = |src: &str, dst: &str, action| FlowFields {
        srcaddr: src.parse().unwrap(),
        srcport: 1234,
        dstaddr: dst.parse().unwrap(),
        dstport: 443,
        protocol: 6,
        direction: Direction::Out,
        packets: 3,
        bytes: 180,
        action,
        extras: Default::default(),
    };
    let rec = |flow, log_status, rule: Option<&str>| FlowRecord {
        eni: Arc::clone(&eni),
        flow,
        start: 1_700_000_400,
        end: 1_700_001_000,
        log_status,
        rule: rule.map(Arc::from),
    };
    vec![
        rec(
            Some(flow("10.0.0.1", "10.0.0.2", Action::Accept)),
            LogStatus::Ok,
            None,
        ),
        rec(
            Some(flow("fd00::1", "fd00::2", Action::Reject)),
            LogStatus::Ok,
            Some("sg-c:deny"),
        ),
        rec(None, LogStatus::NoData, None),
        rec(None, LogStatus::SkipData, None),
    ]
}

fn descriptor(lib: &libloading::Library, path: &Path) -> &'static FfiDescriptor {
    // SAFETY: the symbol has the ABI's type; the library outlives the use
    // (the caller keeps `lib` alive for the whole test).
    let f: libloading::Symbol<'_, DescriptorFn> = unsafe { lib.get(DESCRIPTOR_SYMBOL) }
        .unwrap_or_else(|e| panic!("{}: no descriptor: {e}", path.display()));
    // SAFETY: the descriptor function takes nothing and returns static data.
    let d = unsafe { f() };
    assert!(!d.is_null(), "{}: NULL descriptor", path.display());
    // SAFETY: non-null pointer to the plugin's static descriptor.
    unsafe { &*d }
}

#[track_caller]
fn expect_config_error(status: c_int, err: &FfiError, case: &Case, what: &str) {
    assert_eq!(
        status, STATUS_REJECTED,
        "{}: {what} accepted an invalid config",
        case.name
    );
    assert!(
        !err.message().is_empty(),
        "{}: {what} gave no message",
        case.name
    );
    assert_eq!(
        err.key().as_deref(),
        Some(case.bad_key),
        "{}: {what}: {}",
        case.name,
        err.message()
    );
}

#[test]
fn every_built_sink_complies_with_the_abi() {
    let tmp = TempDir::new("compliance");
    for case in cases(&tmp) {
        // SAFETY: loading a plugin the workspace built, as the daemon does.
        let lib = unsafe { libloading::Library::new(&case.file) }.unwrap();
        let d = descriptor(&lib, &case.file);
        assert_eq!(d.abi_major, ABI_MAJOR, "{}", case.name);
        assert!(
            d.struct_size as usize >= std::mem::size_of::<FfiDescriptor>(),
            "{}",
            case.name
        );
        // SAFETY: the descriptor's name is a NUL-terminated static string.
        let name = unsafe { CStr::from_ptr(d.name) }.to_str().unwrap();
        assert_eq!(name, case.name);
        let (open, write, flush, close) = (
            d.open.unwrap(),
            d.write.unwrap(),
            d.flush.unwrap(),
            d.close.unwrap(),
        );
        let host = host();

        if let Some(check) = d.check {
            let valid = options(&case.valid);
            let mut err = FfiError::new();
            // SAFETY: valid pointers for the call, as the header documents.
            let status = unsafe { check(&host, valid.as_ptr(), valid.len(), &mut err) };
            assert_eq!(
                status,
                STATUS_OK,
                "{}: check refused a valid config: {}",
                case.name,
                err.message()
            );
            let invalid = options(&case.invalid);
            let mut err = FfiError::new();
            // SAFETY: as above.
            let status = unsafe { check(&host, invalid.as_ptr(), invalid.len(), &mut err) };
            expect_config_error(status, &err, &case, "check");
        }

        let invalid = options(&case.invalid);
        let mut instance: *mut c_void = std::ptr::null_mut();
        let mut err = FfiError::new();
        // SAFETY: as above; `instance` is an out-pointer.
        let status = unsafe {
            open(
                &host,
                invalid.as_ptr(),
                invalid.len(),
                &mut instance,
                &mut err,
            )
        };
        expect_config_error(status, &err, &case, "open");

        let valid = options(&case.valid);
        let mut err = FfiError::new();
        // SAFETY: as above.
        let status = unsafe { open(&host, valid.as_ptr(), valid.len(), &mut instance, &mut err) };
        assert_eq!(
            status,
            STATUS_OK,
            "{}: open refused a valid config: {}",
            case.name,
            err.message()
        );

        let recs = records();
        let ffi: Vec<FfiRecord> = recs.iter().map(FlowRecord::to_ffi).collect();
        let ptrs: Vec<*const FfiRecord> = ffi.iter().map(|r| r as *const FfiRecord).collect();
        let mut err = FfiError::new();
        // SAFETY: the instance is open; the records live for the call.
        let status = unsafe { write(instance, ptrs.as_ptr(), ptrs.len(), &mut err) };
        let allowed = if case.write_may_retry {
            STATUS_RETRY
        } else {
            STATUS_OK
        };
        assert!(
            status == STATUS_OK || status == allowed,
            "{}: write answered {status}: {}",
            case.name,
            err.message()
        );
        for flags in [FLUSH_WINDOW_END, FLUSH_REOPEN, 0] {
            let mut err = FfiError::new();
            // SAFETY: the instance is open.
            let status = unsafe { flush(instance, flags, &mut err) };
            assert!(
                status == STATUS_OK || status == allowed,
                "{}: flush({flags}) answered {status}: {}",
                case.name,
                err.message()
            );
        }
        // SAFETY: closed exactly once, before the library is dropped.
        unsafe { close(instance) };
        drop(lib);
    }
}

/// Loads the plugin at `file`, opens it with `options`, writes `records`,
/// flushes at a window end and closes it: the daemon's calls, straight
/// through the C ABI. Returns the descriptor's ABI minor.
fn run_plugin(file: &Path, options: &toml::Table, records: &[FlowRecord]) -> u16 {
    // SAFETY: loading a plugin the test built, as the daemon does.
    let lib = unsafe { libloading::Library::new(file) }.unwrap();
    let d = descriptor(&lib, file);
    assert_eq!(d.abi_major, ABI_MAJOR, "{}", file.display());
    let minor = d.abi_minor;
    let opts = FfiOptions::from_table(options);
    let host = host();
    let mut instance: *mut c_void = std::ptr::null_mut();
    let mut err = FfiError::new();
    // SAFETY: valid pointers for the call, as the header documents.
    let status =
        unsafe { d.open.unwrap()(&host, opts.as_ptr(), opts.len(), &mut instance, &mut err) };
    assert_eq!(status, STATUS_OK, "{}: {}", file.display(), err.message());
    let ffi: Vec<FfiRecord> = records.iter().map(FlowRecord::to_ffi).collect();
    let ptrs: Vec<*const FfiRecord> = ffi.iter().map(|r| r as *const FfiRecord).collect();
    // SAFETY: the instance is open; the records live for the call.
    let status = unsafe { d.write.unwrap()(instance, ptrs.as_ptr(), ptrs.len(), &mut err) };
    assert_eq!(status, STATUS_OK, "{}: {}", file.display(), err.message());
    // SAFETY: the instance is open.
    let status = unsafe { d.flush.unwrap()(instance, FLUSH_WINDOW_END, &mut err) };
    assert_eq!(status, STATUS_OK, "{}: {}", file.display(), err.message());
    // SAFETY: closed exactly once, before the library is dropped.
    unsafe { d.close.unwrap()(instance) };
    drop(lib);
    minor
}

/// Records of every kind whose flows carry every minor-1 extra: what a
/// host of minor 1 hands every plugin, whatever minor it was built for.
fn records_with_extras() -> Vec<FlowRecord> {
    let mut recs = records();
    for (i, r) in recs.iter_mut().enumerate() {
        if let Some(f) = r.flow.as_mut() {
            f.extras = FlowExtras {
                pkt_srcaddr: Some(format!("192.0.2.{i}").parse().unwrap()),
                pkt_dstaddr: Some("2001:db8::77".parse().unwrap()),
                flow_start: Some(1_700_000_401 + i as i64),
                flow_end: Some(1_700_000_500),
                tcp_flags: Some(TCP_FLAG_SYN | TCP_FLAG_FIN),
            };
        }
    }
    recs
}

/// A plugin built from the ABI 1.0 header loads, and reads exactly the 18
/// fields of the records a 1.1 build of the same source reads: the host's
/// records (extras filled, 248 bytes) start with the 1.0 record (192
/// bytes), so the older plugin sees the same values and nothing else. The
/// values are checked against the host's own text form of each record.
#[test]
fn an_abi_1_0_plugin_reads_the_18_fields_a_1_1_plugin_reads() {
    let tmp = TempDir::new("compliance-abi-1-0");
    let source = workspace_root().join("examples/sink-c/csv_sink.c");
    let (so_1_0, so_1_1) = (tmp.join("csv-1.0.so"), tmp.join("csv-1.1.so"));
    build_c_plugin_against(&abi_1_0_include(), &source, &so_1_0, &[]);
    build_c_plugin(&source, &so_1_1, &[]);
    let recs = records_with_extras();
    assert!(recs
        .iter()
        .filter_map(|r| r.flow)
        .all(|f| f.extras.tcp_flags.is_some()));

    let mut outputs = Vec::new();
    for (so, expected_minor) in [(&so_1_0, 0), (&so_1_1, ABI_MINOR)] {
        let out = tmp.join(&format!("minor-{expected_minor}.csv"));
        let options = table(&format!("path = \"{}\"", out.display()));
        assert_eq!(
            run_plugin(so, &options, &recs),
            expected_minor,
            "{}",
            so.display()
        );
        outputs.push(std::fs::read_to_string(&out).unwrap());
    }
    assert_eq!(
        outputs[0], outputs[1],
        "1.0 and 1.1 builds read different fields"
    );

    let mut lines = outputs[0].lines();
    assert_eq!(lines.next(), Some(format::FIELD_NAMES.join(",").as_str()));
    let lines: Vec<&str> = lines.collect();
    assert_eq!(lines.len(), recs.len(), "{}", outputs[0]);
    for (line, r) in lines.iter().zip(&recs) {
        let ffi = r.to_ffi();
        // SAFETY: `r` owns the strings `ffi` points to.
        let text = format::to_text(&unsafe { RecordView::new(&ffi) });
        let fields: Vec<&str> = line.split(',').collect();
        assert_eq!(fields.len(), 18, "{line}");
        assert_eq!(fields, text.split(' ').collect::<Vec<_>>(), "{line}");
    }
}
