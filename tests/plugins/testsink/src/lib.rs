//! A sink for flowlogd's tests. It appends each record as a JSON line to
//! `path`, and can misbehave on demand so the tests can check the daemon's
//! side of the contract: a slow sink does not block others, RETRY is
//! retried, REJECTED and panics are counted and reported, a sink that is
//! down for a while gets its records from the spool. It honours `fields`
//! as a custom Rust plugin would, with `Options::field_list`.

use std::io::Write;
use std::time::Duration;

use flowlogd_plugin_api::{
    format, FieldList, FlushFlags, Host, HostLog, Options, RecordView, Sink, SinkError,
};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestOptions {
    path: String,
    /// Sleep this long in every write, before writing.
    #[serde(default)]
    delay_ms: u64,
    /// Answer RETRY to this many write calls first.
    #[serde(default)]
    fail_first_writes: u32,
    /// Answer REJECTED to every write.
    #[serde(default)]
    reject: bool,
    /// Panic in write.
    #[serde(default)]
    panic_in_write: bool,
    /// Answer RETRY to every write while this file exists: a sink that is
    /// down for as long as a test says.
    #[serde(default)]
    down_while_exists: Option<String>,
    /// Declared so `deny_unknown_fields` lets it through; read with
    /// `Options::field_list`.
    #[serde(default)]
    #[allow(dead_code)]
    fields: Option<serde::de::IgnoredAny>,
}

struct TestSink {
    options: TestOptions,
    fields: FieldList,
    failures_left: u32,
    log: HostLog,
}

impl Sink for TestSink {
    fn open(host: &Host, options: &Options) -> Result<Self, SinkError> {
        let fields = options.field_list()?;
        let options: TestOptions = options.deserialize()?;
        if !options.path.starts_with('/') {
            return Err(SinkError::config("path", "expected an absolute path"));
        }
        Ok(TestSink {
            failures_left: options.fail_first_writes,
            options,
            fields,
            log: host.log,
        })
    }

    fn check(_host: &Host, options: &Options) -> Result<(), SinkError> {
        options.field_list()?;
        options.deserialize::<TestOptions>().map(|_| ())
    }

    fn write(&mut self, records: &[RecordView<'_>]) -> Result<(), SinkError> {
        if self.options.panic_in_write {
            panic!("testsink was told to panic");
        }
        if self.options.reject {
            return Err(SinkError::rejected("testsink rejects everything"));
        }
        if let Some(flag) = &self.options.down_while_exists {
            if std::path::Path::new(flag).exists() {
                return Err(SinkError::retry(format!(
                    "testsink is down while {flag} exists"
                )));
            }
        }
        if self.failures_left > 0 {
            self.failures_left -= 1;
            return Err(SinkError::retry(format!(
                "testsink failing on purpose ({} more)",
                self.failures_left
            )));
        }
        std::thread::sleep(Duration::from_millis(self.options.delay_ms));
        let mut out = String::new();
        for r in records {
            format::write_json_fields(&mut out, r, &self.fields);
            out.push('\n');
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.options.path)
            .map_err(|e| SinkError::retry(format!("{}: {e}", self.options.path)))?;
        f.write_all(out.as_bytes())
            .map_err(|e| SinkError::retry(format!("{}: {e}", self.options.path)))?;
        self.log.debug(&format!("wrote {} records", records.len()));
        Ok(())
    }

    fn flush(&mut self, _flags: FlushFlags) -> Result<(), SinkError> {
        Ok(())
    }
}

flowlogd_plugin_api::export_sink!(TestSink, "testsink");
