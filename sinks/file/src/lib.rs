//! flowlogd's file sink: flow log records as text or JSON lines in a file
//! that rotates by size, by rename, so that log collectors tailing it
//! (Logtail, Filebeat) lose nothing.
//!
//! ```toml
//! [sinks.local]
//! plugin = "file"
//! path = "/var/log/flowlogd/flow.log"   # required, absolute
//! format = "text"                       # or "json"
//! rotate_bytes = 104857600              # 0 = never rotate; else >= 4096
//! rotate_keep = 5                       # flow.log.1 .. flow.log.5
//! file_mode = "0640"
//! fields = ["srcaddr", "dstaddr", "bytes"]  # optional; default: the 18 fields
//! ```
//!
//! A file removed, moved away or replaced behind the sink's back (`rm -rf`
//! of its directory, logrotate without a reopen) is noticed before the next
//! batch and at each window end, logged as a warning, and replaced by a new
//! file at `path`; no batch is reported written into a deleted file (see
//! `rotating_file`).

mod file_identity;
mod options;
mod rotating_file;

use flowlogd_plugin_api::{
    format, FieldList, FlushFlags, Host, Options, RecordView, Sink, SinkError,
};

pub use options::{FileConfig, FileOptions, Format, MAX_ROTATE_KEEP, MIN_ROTATE_BYTES};
use rotating_file::RotatingFile;

/// The file sink: one line per record, `\n`-terminated.
pub struct FileSink {
    format: Format,
    fields: FieldList,
    file: RotatingFile,
    /// The current batch's lines, kept between batches to reuse the memory.
    lines: String,
}

impl Sink for FileSink {
    fn open(host: &Host, options: &Options) -> Result<Self, SinkError> {
        let config = FileConfig::from_options(options)?;
        // Attributed to `path`: whatever stops us creating or opening the
        // file (permissions, a missing mount, a directory there) is fixed
        // there or next to it.
        let file = RotatingFile::open(&config, host.log)
            .map_err(|e| SinkError::config("path", e.to_string()))?;
        Ok(FileSink {
            format: config.format,
            fields: config.fields,
            file,
            lines: String::new(),
        })
    }

    /// Checks the options without creating anything (`check-config`).
    fn check(_host: &Host, options: &Options) -> Result<(), SinkError> {
        FileConfig::from_options(options).map(|_| ())
    }

    /// Formats the whole batch, then writes it and flushes, so `tail -f`
    /// sees whole batches. A retry of a batch that failed part way resumes
    /// where it stopped. The path is checked before each batch and the
    /// file after it, so a file moved away gets no further batch and no
    /// batch is reported written into a deleted file (see `rotating_file`).
    fn write(&mut self, records: &[RecordView<'_>]) -> Result<(), SinkError> {
        self.lines.clear();
        for r in records {
            match self.format {
                Format::Text => format::write_text_fields(&mut self.lines, r, &self.fields),
                Format::Json => format::write_json_fields(&mut self.lines, r, &self.fields),
            }
            self.lines.push('\n');
        }
        self.file
            .write_batch(self.lines.as_bytes())
            .map_err(|e| SinkError::retry(e.to_string()))
    }

    fn flush(&mut self, flags: FlushFlags) -> Result<(), SinkError> {
        // The path is checked at each window end: if the file went away
        // during a quiet window, the operator hears of it now and finds a
        // new file (and directory) at the path. Not when a reopen was asked
        // for: then a moved file is expected, and the reopen follows it.
        if flags.window_end && !flags.reopen {
            self.file
                .follow_path()
                .map_err(|e| SinkError::retry(e.to_string()))?;
        }
        // Sync before a reopen, so the window's records are durable in the
        // file they were written to.
        if flags.window_end {
            self.file
                .sync()
                .map_err(|e| SinkError::retry(e.to_string()))?;
        }
        let result = if flags.reopen {
            self.file.reopen()
        } else {
            self.file.flush()
        };
        result.map_err(|e| SinkError::retry(e.to_string()))
    }
}

flowlogd_plugin_api::export_sink!(FileSink, "file");
