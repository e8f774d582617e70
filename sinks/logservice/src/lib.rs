//! flowlogd's Alibaba Cloud Log Service sink: flow log records sent with
//! the PutLogs API, one `Log` per record (keys are the design's field
//! names), as lz4-compressed protobuf `LogGroup`s, signed with the
//! AccessKey (signature v1, HMAC-SHA1), over HTTPS (rustls).
//!
//! ```toml
//! [sinks.sls]
//! plugin = "logservice"
//! endpoint = "https://cn-hangzhou.log.aliyuncs.com"   # or a bare host (https)
//! project = "my-project"                             # required
//! logstore = "flow-log"                              # required
//! access_key_id = "LTAI..."                          # required
//! access_key_secret_file = "/etc/flowlogd/sls.secret"  # mode 0600; or:
//! # access_key_secret_env = "FLOWLOGD_LOGSERVICE_ACCESS_KEY_SECRET"  (the default)
//! # security_token_file = "/run/flowlogd/sts.token"   # STS; or security_token_env
//! topic = "flowlog"
//! # source = "192.0.2.10"                             # default: the VM's primary IPv4
//! max_batch_records = 4096                           # logs per request, at most 4096
//! max_batch_bytes = 3145728                          # uncompressed bytes per request
//! timeout_secs = 10
//! ```
//!
//! Every `LogGroup` carries the daemon version as the tag
//! `flowlogd_version`; the ENI is the `eni-id` field of each log, since one
//! request may hold several ENIs' records.
//!
//! Why these crates: the wire format and the signature are Alibaba's own
//! crates (`aliyun-log-sdk-protobuf`, `aliyun-log-sdk-sign`), so the bytes
//! and the string-to-sign are the ones Alibaba maintains, not a re-reading
//! of the docs. (The protobuf crate builds `prost-build` as a build
//! dependency, used only for its own tests: a few seconds of build time.)
//! lz4 is `lz4_flex` (pure Rust, raw block as PutLogs wants), HTTP is
//! `ureq` (blocking, rustls): the sink has its own worker thread, so an
//! async runtime would buy nothing.
//!
//! Errors: network errors, HTTP 5xx and 429, and the errorCodes ServerBusy,
//! WriteQuotaExceed, ShardWriteQuotaExceed, InternalServerError and
//! RequestTimeout are RETRY (the host backs off); other answers (bad
//! signature, unknown project or logstore, invalid body...) are REJECTED
//! with the service's errorCode and errorMessage, without retrying.

mod credentials;
mod log_group;
mod options;
mod put_logs;
mod source_addr;

use flowlogd_plugin_api::{
    FlowRecord, FlushFlags, Host, HostLog, Options, RecordView, Sink, SinkError,
};

use credentials::Credentials;
pub use log_group::contents;
use log_group::GroupMeta;
pub use options::{
    CredentialSource, Endpoint, LogServiceConfig, LogServiceOptions, MAX_BATCH_BYTES,
    MAX_BATCH_RECORDS,
};
pub use put_logs::is_retryable;
use put_logs::{jitter, PutLogsClient, PutLogsError};

/// The Log Service sink. Sends synchronously in `write`: nothing is
/// buffered between calls, so `flush` has nothing to do.
pub struct LogServiceSink {
    log: HostLog,
    client: PutLogsClient,
    meta: GroupMeta,
    max_batch_records: usize,
    max_batch_bytes: usize,
    /// A batch that failed after some of its requests were accepted.
    partial: Option<PartialBatch>,
    /// The kind of the last failure logged and how many requests failed
    /// since the last success: an outage is logged when it starts and when
    /// it changes, not at every retry.
    failing: Option<(String, u64)>,
}

/// A batch whose write failed part way, and how many of its records Log
/// Service already accepted. When the host retries the same batch, as it
/// does after RETRY, sending resumes after them: no log is sent twice. A
/// different batch (the host gave up on this one) starts from scratch.
struct PartialBatch {
    records: Vec<FlowRecord>,
    accepted: usize,
}

impl PartialBatch {
    fn is_batch(&self, records: &[RecordView<'_>]) -> bool {
        self.records.len() == records.len()
            && self
                .records
                .iter()
                .zip(records)
                .all(|(mine, theirs)| *mine == theirs.to_owned_record())
    }
}

impl Sink for LogServiceSink {
    fn open(host: &Host, options: &Options) -> Result<Self, SinkError> {
        let config = LogServiceConfig::from_options(options)?;
        let credentials = Credentials::load(&config)?;
        let has_token = credentials.security_token.is_some();
        let source = config.source.clone().unwrap_or_else(|| {
            source_addr::primary_ipv4().map_or_else(|| "127.0.0.1".to_owned(), |a| a.to_string())
        });
        let version = if host.daemon_version.is_empty() {
            env!("CARGO_PKG_VERSION")
        } else {
            &host.daemon_version
        };
        let client = PutLogsClient::new(
            &config,
            credentials,
            &format!(
                "flowlogd/{version} flowlogd-sink-logservice/{}",
                env!("CARGO_PKG_VERSION")
            ),
        );
        if !config.endpoint.https && !config.endpoint.is_loopback() {
            // The signature protects the credentials and the body's
            // integrity, not its privacy.
            host.log.warn(&format!(
                "endpoint {} is plain http: flow records cross the network unencrypted; use https",
                client.url()
            ));
        }
        // The host prefixes every plugin log line with `sink <name>: `.
        host.log.info(&format!(
            "Log Service project {}, logstore {} at {} (AccessKey ID {}{}, topic {:?}, source {})",
            config.project,
            config.logstore,
            client.url(),
            config.access_key_id,
            if has_token { " with STS token" } else { "" },
            config.topic,
            source
        ));
        Ok(LogServiceSink {
            log: host.log,
            client,
            meta: GroupMeta {
                topic: config.topic,
                source,
                tags: vec![("flowlogd_version".to_owned(), version.to_owned())],
                fields: config.fields,
            },
            max_batch_records: config.max_batch_records,
            max_batch_bytes: config.max_batch_bytes,
            partial: None,
            failing: None,
        })
    }

    /// Checks the options and the credential files, without connecting.
    fn check(_host: &Host, options: &Options) -> Result<(), SinkError> {
        let config = LogServiceConfig::from_options(options)?;
        Credentials::check(&config)
    }

    /// Sends the batch in requests of at most `max_batch_records` logs and
    /// about `max_batch_bytes` bytes, in order; stops at the first failure.
    fn write(&mut self, records: &[RecordView<'_>]) -> Result<(), SinkError> {
        let resume_at = match self.partial.take() {
            Some(p) if p.is_batch(records) => p.accepted,
            _ => 0,
        };
        let requests = log_group::split(
            records,
            &self.meta,
            self.max_batch_records,
            self.max_batch_bytes,
        );
        let mut accepted = resume_at;
        for request in requests {
            if request.records.end <= resume_at {
                continue;
            }
            let raw = request
                .group
                .encode()
                .map_err(|e| SinkError::rejected(format!("cannot encode the LogGroup: {e}")))?;
            match self.client.put(&raw) {
                Ok(request_id) => {
                    accepted = request.records.end;
                    // The request id is what Alibaba's support asks for.
                    self.log.debug(&format!(
                        "PutLogs accepted {} logs (request id {request_id})",
                        request.records.len()
                    ));
                    if let Some((_, failed)) = self.failing.take() {
                        self.log.info(&format!(
                            "PutLogs succeeded again after {failed} failed request{}",
                            if failed == 1 { "" } else { "s" }
                        ));
                    }
                }
                Err(e) => {
                    self.log_failure(&e, request.records.len(), accepted, records.len());
                    if !e.retry {
                        return Err(SinkError::rejected(e.message));
                    }
                    if accepted > 0 {
                        self.partial = Some(PartialBatch {
                            records: records.iter().map(RecordView::to_owned_record).collect(),
                            accepted,
                        });
                    }
                    std::thread::sleep(jitter());
                    return Err(SinkError::retry(e.message));
                }
            }
        }
        Ok(())
    }

    fn flush(&mut self, _flags: FlushFlags) -> Result<(), SinkError> {
        Ok(())
    }
}

impl LogServiceSink {
    /// Logs a failed request, once per kind of failure in a row.
    fn log_failure(&mut self, e: &PutLogsError, logs: usize, accepted: usize, batch: usize) {
        let repeated = match &mut self.failing {
            Some((kind, failed)) => {
                *failed += 1;
                std::mem::replace(kind, e.kind.clone()) == e.kind
            }
            None => {
                self.failing = Some((e.kind.clone(), 1));
                false
            }
        };
        if repeated {
            return;
        }
        let already = match (accepted, e.retry) {
            (0, _) => String::new(),
            (_, true) => format!(
                "; {accepted} of the batch's {batch} records were accepted before and are not sent again"
            ),
            // The ABI has no partial status: the host counts them all.
            (_, false) => format!(
                "; {accepted} of the batch's {batch} records were accepted before, the rest are not delivered"
            ),
        };
        self.log.warn(&format!(
            "PutLogs of {logs} records failed ({}): {}{already}",
            if e.retry {
                "will retry"
            } else {
                "not retrying"
            },
            e.message
        ));
    }
}

flowlogd_plugin_api::export_sink!(LogServiceSink, "logservice");
