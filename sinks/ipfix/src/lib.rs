//! flowlogd's IPFIX sink: every flow log record as one IPFIX (RFC 7011)
//! data record to a flow collector (nfdump's nfcapd, pmacct's nfacctd,
//! ntopng, ElastiFlow, goflow2 ...), over UDP or TCP.
//!
//! ```toml
//! [sinks.collector]
//! plugin = "ipfix"
//! collector = "192.0.2.10:4739"   # required
//! enterprise_number = 32473       # required: the PEN of the non-IANA elements
//! transport = "udp"               # or "tcp"
//! observation_domain_id = 0
//! template_refresh_secs = 60      # udp: templates again at least this often
//! max_message_bytes = 1400        # udp: no datagram larger
//! ```
//!
//! The encoder is our own, not a crate: the crates that write IPFIX
//! (ipfixrw, flowscope's and netring's exporters) either build a
//! value-per-field tree per record (an allocation per field, on a path
//! that sends millions of records) or come inside a packet-capture
//! library; what is needed here is three small functions (a template
//! record, a data record, a message header), see `template`, `encode` and
//! `message`.
//!
//! Delivery: a batch is acknowledged (`write` returns `Ok`) when every
//! message holding it was taken by the socket. Over TCP that is the kernel
//! holding the bytes for retransmission; a failed write drops the
//! connection and returns `Retry`, the retry reconnects, announces the
//! templates again and resends from the first record not in a whole
//! message sent. Over UDP it is the datagram leaving: nothing tells
//! whether a collector received it (see the README).

mod encode;
mod message;
mod options;
mod template;
#[cfg(test)]
mod test_records;
pub mod transport;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flowlogd_plugin_api::{FlushFlags, Host, HostLog, Options, RecordView, Sink, SinkError};

pub use encode::{EncodedBatch, MAX_RECORD_BYTES, MAX_STRING_BYTES};
use message::{Header, Messages};
pub use options::{Address, IpfixConfig, Transport};
pub use template::{
    ENT_ACCOUNT_ID, ENT_ENI_ID, ENT_LOG_STATUS, ENT_RULE, ENT_VM_ID, ENT_VPC_ID, ENT_VSWITCH_ID,
    TEMPLATE_FLOW_V4, TEMPLATE_FLOW_V4_NAT, TEMPLATE_FLOW_V6, TEMPLATE_FLOW_V6_NAT,
    TEMPLATE_STATUS,
};
use transport::Connection;

/// The IPFIX sink.
pub struct IpfixSink {
    config: IpfixConfig,
    log: HostLog,
    /// `None` until the first successful connect, and after a failure:
    /// the next write connects again.
    session: Option<Session>,
    /// The batch a failed write left partly sent.
    pending: Option<PendingBatch>,
    /// Whether the last attempt failed (the outage was logged, and the
    /// recovery will be).
    down: bool,
    truncation_logged: bool,
    /// Reused between batches.
    batch: EncodedBatch,
    messages: Messages,
}

/// One transport session (RFC 7011 §8): its socket, the data records sent
/// in it (the sequence number) and when the templates were last sent.
struct Session {
    connection: Connection,
    sequence: u32,
    templates_sent: Option<Instant>,
}

/// A batch whose write failed: its encoded records and how many of them
/// went out in whole messages.
struct PendingBatch {
    batch: EncodedBatch,
    sent: usize,
}

impl Sink for IpfixSink {
    /// Validates the options, connects and sends the templates. A collector
    /// that is not up yet does not fail the start: records wait in the
    /// host's queue until it is (TCP), or are sent to where it will be (UDP).
    fn open(host: &Host, options: &Options) -> Result<Self, SinkError> {
        let config = IpfixConfig::from_options(options)?;
        let mut sink = IpfixSink {
            config,
            log: host.log,
            session: None,
            pending: None,
            down: false,
            truncation_logged: false,
            batch: EncodedBatch::default(),
            messages: Messages::default(),
        };
        if let Err(e) = sink.send_batch(0) {
            sink.down = true;
            sink.log.warn(&format!(
                "{e}; records wait in the daemon's queue until it is up"
            ));
        }
        Ok(sink)
    }

    /// Checks the options without resolving or connecting (`check-config`).
    fn check(_host: &Host, options: &Options) -> Result<(), SinkError> {
        IpfixConfig::from_options(options).map(|_| ())
    }

    /// Sends the batch's records. On failure the session is dropped and
    /// `Retry` returned; the host's retry of the same batch resumes after
    /// the records already sent in whole messages.
    fn write(&mut self, records: &[RecordView<'_>]) -> Result<(), SinkError> {
        self.batch.clear();
        for r in records {
            self.batch.push(r);
        }
        if self.batch.truncated > 0 && !self.truncation_logged {
            self.truncation_logged = true;
            self.log.warn(&format!(
                "{} string elements longer than {MAX_STRING_BYTES} bytes were cut to fit (not logged again)",
                self.batch.truncated
            ));
        }
        let start = match self.pending.take() {
            Some(p) if p.batch == self.batch => p.sent,
            // The host moved on from that batch (it does so only when it
            // gives up at shutdown, and counts what it gave up).
            Some(_) | None => 0,
        };
        match self.send_batch(start) {
            Ok(()) => {
                if self.down {
                    self.down = false;
                    self.log
                        .info(&format!("delivering to the {} again", self.config));
                }
                Ok(())
            }
            Err(e) => {
                let sent = start + e.records_sent;
                let message = format!(
                    "{} after {sent} of {} records of the batch",
                    e.message,
                    records.len()
                );
                if !self.down {
                    self.log.warn(&format!(
                        "{message}; the retry resends from record {} in a new session",
                        sent + 1
                    ));
                }
                self.down = true;
                self.pending = Some(PendingBatch {
                    batch: std::mem::take(&mut self.batch),
                    sent,
                });
                Err(SinkError::retry(message))
            }
        }
    }

    /// Messages go to the socket as they are written: nothing to push. A
    /// reopen (SIGHUP) ends the session: the next write connects again,
    /// resolving the collector's name anew, and announces the templates.
    fn flush(&mut self, flags: FlushFlags) -> Result<(), SinkError> {
        if flags.reopen && self.session.take().is_some() {
            self.log.info(&format!(
                "reopening: a new session to the {} at the next write",
                self.config
            ));
        }
        Ok(())
    }
}

/// Why a send failed, and how many of the records from the start given
/// went out in whole messages first.
struct SendFailure {
    message: String,
    records_sent: usize,
}

impl std::fmt::Display for SendFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl IpfixSink {
    /// Sends the templates if they are due, then `self.batch`'s records
    /// from `start`, in one go.
    fn send_batch(&mut self, start: usize) -> Result<(), SendFailure> {
        self.ensure_session()?;
        let config = &self.config;
        let session = self.session.as_mut().expect("ensured above");
        let header = Header {
            observation_domain_id: config.observation_domain_id,
            export_time: export_time(),
        };
        let refresh = Duration::from_secs(u64::from(config.template_refresh_secs));
        // RFC 7011 §8.3/§8.4: over TCP once per connection, over UDP again
        // after every refresh interval (checked at each write: the daemon
        // writes at least once a window, NODATA included).
        let templates_due = match (session.templates_sent, config.transport) {
            (None, _) => true,
            (Some(_), Transport::Tcp) => false,
            (Some(at), Transport::Udp) => at.elapsed() >= refresh,
        };
        self.messages.clear();
        if templates_due {
            self.messages
                .push_templates(header, session.sequence, config.enterprise_number, 0);
        }
        self.messages.push_records(
            header,
            session.sequence,
            &self.batch,
            start,
            config.max_message_bytes,
        );
        match session.connection.send(&self.messages) {
            Ok(notes) => {
                let sent = self.batch.records.len() - start;
                session.sequence = session.sequence.wrapping_add(sent as u32);
                if templates_due {
                    session.templates_sent = Some(Instant::now());
                }
                if notes.refused_earlier {
                    // A collector that was down may be back with no
                    // templates: announce them at the next write.
                    session.templates_sent = None;
                    self.log.warn(&format!(
                        "the {} refused earlier datagrams (ICMP port unreachable: not listening); records sent before this batch were lost",
                        self.config
                    ));
                }
                Ok(())
            }
            Err(e) => {
                self.session = None;
                Err(SendFailure {
                    message: format!("sending to the {} failed: {}", self.config, e.error),
                    records_sent: e.records_sent,
                })
            }
        }
    }

    /// The current session, after making sure a TCP collector has not
    /// closed it; a new one (sequence 0, templates due) otherwise.
    fn ensure_session(&mut self) -> Result<(), SendFailure> {
        if let Some(why) = self
            .session
            .as_ref()
            .and_then(|s| s.connection.peer_closed())
        {
            self.log.warn(&format!(
                "{} ({why}): records sent just before may have been lost; reconnecting",
                self.config
            ));
            self.session = None;
        }
        if self.session.is_none() {
            let connection = Connection::open(self.config.transport, &self.config.collector)
                .map_err(|e| SendFailure {
                    message: format!("cannot connect to the {}: {e}", self.config),
                    records_sent: 0,
                })?;
            self.session = Some(Session {
                connection,
                sequence: 0,
                templates_sent: None,
            });
        }
        Ok(())
    }
}

/// The message header's export time: Unix seconds, 32 bits (RFC 7011
/// §3.1; wraps in 2106).
fn export_time() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
}

flowlogd_plugin_api::export_sink!(IpfixSink, "ipfix");

#[cfg(test)]
mod tests;
