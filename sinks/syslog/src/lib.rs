//! flowlogd's syslog sink: one syslog message per flow log record, to the
//! local syslog socket, or to a syslog server over UDP or TCP, in RFC 3164
//! or RFC 5424 format, with the record's text or JSON form as the message.
//!
//! ```toml
//! [sinks.syslog]
//! plugin = "syslog"
//! transport = "unix"          # or "udp", "tcp"
//! socket_path = "/dev/log"    # unix only
//! # address = "logs.example.com:514"   # udp and tcp: required
//! format = "rfc3164"          # or "rfc5424"
//! facility = "local0"         # kern .. local7
//! severity = "info"           # emerg .. debug
//! app_name = "flowlogd"       # the tag / APP-NAME
//! # hostname = "vm-1"         # default: the machine's hostname
//! message = "text"            # or "json"
//! ```
//!
//! No record is lost to a syslog daemon that is down or restarting, within
//! the limits the README spells out: the sink holds no records of its own. A
//! failed send returns `Retry` and the daemon keeps the batch in its bounded
//! queue and calls again with backoff; the next call reconnects. A batch
//! that failed part way resumes at the first record not handed to the
//! socket, so a retry duplicates nothing. TCP framing and what each
//! transport can and cannot guarantee are described in [`connection`] and in
//! the README.

pub mod connection;
mod message;
mod options;

use flowlogd_plugin_api::{FlushFlags, Host, HostLog, Options, RecordView, Sink, SinkError};

use connection::{Connection, Frames, PeerState};
use message::MessageBuilder;
pub use options::{
    Address, MessageFormat, SyslogConfig, SyslogFormat, SyslogOptions, Transport,
    DEFAULT_SOCKET_PATH, FACILITY_NAMES, SEVERITY_NAMES,
};

/// Used when the machine's hostname cannot go into a syslog header
/// (unreadable, empty, or not printable ASCII).
const FALLBACK_HOSTNAME: &str = "localhost";

/// The syslog sink.
pub struct SyslogSink {
    transport: Transport,
    messages: MessageBuilder,
    log: HostLog,
    /// `None` until the first successful connect, and after any failure:
    /// the next write reconnects.
    connection: Option<Connection>,
    /// The batch a failed write left partly sent.
    pending: Option<PendingBatch>,
    /// Whether the last attempt failed (so the outage was already logged,
    /// and the recovery will be).
    down: bool,
    /// Reused between batches.
    frames: Frames,
    message: Vec<u8>,
}

/// A batch whose write failed, by its records' message bodies (the headers'
/// timestamps differ between attempts), and how many of them the socket
/// took.
struct PendingBatch {
    bodies: Vec<String>,
    sent: usize,
}

impl Sink for SyslogSink {
    /// Validates the options and tries to connect once. A daemon that is
    /// not up yet does not fail the start: records wait in the host's queue
    /// until it is.
    fn open(host: &Host, options: &Options) -> Result<Self, SinkError> {
        let config = SyslogConfig::from_options(options)?;
        let hostname = config.sends_hostname().then(|| {
            config
                .hostname
                .clone()
                .or_else(options::machine_hostname)
                .unwrap_or_else(|| {
                    host.log.warn(&format!(
                        "the machine's hostname is unusable in a syslog header; sending \"{FALLBACK_HOSTNAME}\" (set `hostname`)"
                    ));
                    FALLBACK_HOSTNAME.to_owned()
                })
        });
        let mut sink = SyslogSink {
            messages: MessageBuilder::new(&config, hostname),
            transport: config.transport,
            log: host.log,
            connection: None,
            pending: None,
            down: false,
            frames: Frames::default(),
            message: Vec::new(),
        };
        match Connection::open(&sink.transport) {
            Ok(c) => sink.connection = Some(c),
            Err(e) => {
                sink.down = true;
                sink.log.warn(&format!(
                    "cannot connect to {} yet: {e}; records wait in the daemon's queue until it is up",
                    sink.transport
                ));
            }
        }
        Ok(sink)
    }

    /// Checks the options without resolving or connecting (`check-config`).
    fn check(_host: &Host, options: &Options) -> Result<(), SinkError> {
        SyslogConfig::from_options(options).map(|_| ())
    }

    /// Sends one message per record. On failure the connection is dropped
    /// and `Retry` returned; the host's retry of the same batch resumes
    /// after the records already sent.
    fn write(&mut self, records: &[RecordView<'_>]) -> Result<(), SinkError> {
        let bodies: Vec<String> = records.iter().map(|r| self.messages.body(r)).collect();
        let start = match self.pending.take() {
            Some(p) if p.bodies == bodies => p.sent,
            // The host moved on from that batch (it does so only when it
            // gives up at shutdown, and counts what it gave up): nothing of
            // it is half-sent, since a failed stream is closed.
            Some(_) | None => 0,
        };
        match self.send_from(&bodies, start) {
            Ok(()) => {
                if self.down {
                    self.down = false;
                    self.log
                        .info(&format!("delivering to {} again", self.transport));
                }
                Ok(())
            }
            Err((sent, message)) => {
                self.pending = Some(PendingBatch { bodies, sent });
                self.down = true;
                Err(SinkError::retry(message))
            }
        }
    }

    /// Messages go to the socket as they are written, so there is nothing
    /// to push. A reopen (SIGHUP) drops the connection: the next write
    /// connects again, resolving the server's name anew.
    fn flush(&mut self, flags: FlushFlags) -> Result<(), SinkError> {
        if flags.reopen && self.connection.take().is_some() {
            self.log.info(&format!(
                "reopening: reconnecting to {} at the next write",
                self.transport
            ));
        }
        Ok(())
    }
}

impl SyslogSink {
    /// Sends `bodies[start..]`. On failure returns how many of `bodies`
    /// (counting from 0) were handed to the socket, and why the rest was not.
    fn send_from(&mut self, bodies: &[String], start: usize) -> Result<(), (usize, String)> {
        if start == bodies.len() {
            return Ok(());
        }
        self.ensure_connected().map_err(|m| (start, m))?;
        let connection = self.connection.as_mut().expect("connected above");
        let framing = connection.framing();
        self.frames.clear();
        for body in &bodies[start..] {
            self.message.clear();
            // Writing to a Vec does not fail; should the crate ever fail, the
            // batch is retried rather than lost.
            self.messages
                .write(&mut self.message, body)
                .map_err(|e| (start, format!("cannot format a syslog message: {e}")))?;
            self.frames.push(framing, &self.message);
        }
        match connection.send(&self.frames) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.connection = None;
                let sent = start + e.sent;
                let message = format!(
                    "sending to {} failed after {sent} of {} records of the batch: {}",
                    self.transport,
                    bodies.len(),
                    e.error
                );
                self.log.warn(&format!(
                    "{message}; the retry resends from record {} on a new connection",
                    sent + 1
                ));
                Err((sent, message))
            }
        }
    }

    /// Makes sure there is a connection the peer has not closed.
    fn ensure_connected(&mut self) -> Result<(), String> {
        if let Some(c) = &self.connection {
            match c.peer_state() {
                PeerState::Open => return Ok(()),
                PeerState::ClosedClean => self.log.info(&format!(
                    "{} closed the connection (restarted?) after reading everything sent; reconnecting",
                    self.transport
                )),
                // The records of the last batch (or batches) sent on this
                // connection may not have been read: loss is never silent.
                PeerState::ClosedLosing(why) => self.log.warn(&format!(
                    "{} dropped the connection ({why}): records sent just before may have been lost; reconnecting",
                    self.transport
                )),
            }
            self.connection = None;
        }
        match Connection::open(&self.transport) {
            Ok(c) => {
                self.connection = Some(c);
                Ok(())
            }
            Err(e) => {
                let message = format!("cannot connect to {}: {e}", self.transport);
                // Logged once per outage; the host logs its retries.
                if !self.down {
                    self.log.warn(&message);
                }
                Err(message)
            }
        }
    }
}

flowlogd_plugin_api::export_sink!(SyslogSink, "syslog");

#[cfg(test)]
mod tests {
    use super::*;
    use flowlogd_plugin_api::{
        Action, Direction, EniIds, ErrorKind, FlowFields, FlowRecord, LogStatus,
    };
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};
    use std::sync::Arc;
    use std::time::Duration;

    fn records(n: usize) -> Vec<FlowRecord> {
        let eni = Arc::new(EniIds {
            eni_id: "eni-1".into(),
            vswitch_id: "vsw-1".into(),
            vpc_id: "vpc-1".into(),
            vm_id: "i-1".into(),
            account_id: "123".into(),
        });
        (0..n)
            .map(|i| FlowRecord {
                eni: Arc::clone(&eni),
                flow: Some(FlowFields {
                    srcaddr: "10.0.0.1".parse().unwrap(),
                    srcport: 10_000 + i as u16,
                    dstaddr: "10.0.0.2".parse().unwrap(),
                    dstport: 443,
                    protocol: 6,
                    direction: Direction::Out,
                    packets: 1,
                    bytes: 60,
                    action: Action::Accept,
                    extras: Default::default(),
                }),
                start: 1_700_000_400,
                end: 1_700_001_000,
                log_status: LogStatus::Ok,
                rule: None,
            })
            .collect()
    }

    /// Calls `f` with views of `records` (as the host's write does).
    fn with_views<T>(records: &[FlowRecord], f: impl FnOnce(&[RecordView<'_>]) -> T) -> T {
        let ffi: Vec<_> = records.iter().map(FlowRecord::to_ffi).collect();
        // SAFETY: `records` (whose strings the FFI records borrow) outlive
        // the views.
        let views: Vec<RecordView<'_>> =
            ffi.iter().map(|r| unsafe { RecordView::new(r) }).collect();
        f(&views)
    }

    fn write(sink: &mut SyslogSink, records: &[FlowRecord]) -> Result<(), SinkError> {
        with_views(records, |v| sink.write(v))
    }

    fn tcp_sink(port: u16) -> SyslogSink {
        let table: toml::Table = toml::from_str(&format!(
            "transport = \"tcp\"\naddress = \"127.0.0.1:{port}\"\nformat = \"rfc5424\"\nhostname = \"h\""
        ))
        .unwrap();
        SyslogSink::open(&Host::standalone("t"), &Options::from_toml_table(&table)).unwrap()
    }

    /// Reads octet-counted frames until `n` arrived (bounded by a timeout),
    /// returning their message parts after the header's 7 fields.
    fn read_frames(peer: &mut TcpStream, n: usize) -> Vec<String> {
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut data = Vec::new();
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while out.len() < n {
            let got = peer.read(&mut buf).expect("frames within 5 s");
            assert!(got > 0, "peer closed after {} frames", out.len());
            data.extend_from_slice(&buf[..got]);
            loop {
                let text = String::from_utf8_lossy(&data).into_owned();
                let Some((len, rest)) = text.split_once(' ') else {
                    break;
                };
                let len: usize = len.parse().unwrap();
                if rest.len() < len {
                    break;
                }
                let frame = &rest[..len];
                out.push(frame.splitn(8, ' ').nth(7).unwrap().to_owned());
                data.drain(..text.len() - rest.len() + len);
            }
        }
        out
    }

    /// The next connection to `listener`, waiting at most 5 s.
    fn accept(listener: &TcpListener) -> TcpStream {
        listener.set_nonblocking(true).unwrap();
        for _ in 0..500 {
            match listener.accept() {
                Ok((peer, _)) => {
                    peer.set_nonblocking(false).unwrap();
                    return peer;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
        panic!("no connection within 5 s");
    }

    fn texts(records: &[FlowRecord]) -> Vec<String> {
        with_views(records, |v| {
            v.iter().map(flowlogd_plugin_api::format::to_text).collect()
        })
    }

    #[test]
    fn a_server_restart_between_batches_loses_nothing() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut sink = tcp_sink(port);
        let all = records(20);
        let (first, second) = all.split_at(10);
        write(&mut sink, first).unwrap();
        let mut peer = accept(&listener);
        assert_eq!(read_frames(&mut peer, 10), texts(first));
        // The server goes away between batches. Without the check before
        // writing, the next batch would go into the dead connection and
        // vanish without an error.
        drop(peer);
        std::thread::sleep(Duration::from_millis(50));
        write(&mut sink, second).unwrap();
        let mut peer = accept(&listener);
        assert_eq!(read_frames(&mut peer, 10), texts(second));
    }

    #[test]
    fn a_server_that_is_down_gets_the_batch_when_it_is_back() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut sink = tcp_sink(port);
        let batch = records(5);
        let e = write(&mut sink, &batch).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Retry);
        assert!(
            e.message
                .starts_with(&format!("cannot connect to tcp 127.0.0.1:{port}: ")),
            "{e}"
        );
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        write(&mut sink, &batch).unwrap();
        drop(sink);
        let mut peer = accept(&listener);
        assert_eq!(read_frames(&mut peer, 5), texts(&batch));
        let mut rest = Vec::new();
        peer.read_to_end(&mut rest).unwrap();
        assert!(
            rest.is_empty(),
            "more than the batch: {:?}",
            String::from_utf8_lossy(&rest)
        );
    }

    #[test]
    fn a_retried_batch_resumes_after_what_was_sent() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut sink = tcp_sink(listener.local_addr().unwrap().port());
        let batch = records(6);
        // As a send failing after the third record leaves it.
        let bodies = texts(&batch);
        sink.pending = Some(PendingBatch { bodies, sent: 3 });
        sink.down = true;
        write(&mut sink, &batch).unwrap();
        assert!(sink.pending.is_none() && !sink.down);
        // A different batch after that starts at its beginning.
        sink.pending = Some(PendingBatch {
            bodies: vec!["something else".into()],
            sent: 1,
        });
        let other = records(2);
        write(&mut sink, &other).unwrap();
        drop(sink);
        let mut peer = accept(&listener);
        let mut expected = texts(&batch)[3..].to_vec();
        expected.extend(texts(&other));
        assert_eq!(read_frames(&mut peer, 5), expected);
    }

    #[test]
    fn check_has_no_side_effects_and_names_keys() {
        let table: toml::Table =
            toml::from_str("transport = \"tcp\"\naddress = \"no-such-host.invalid:514\"").unwrap();
        // A name is not resolved by check.
        SyslogSink::check(&Host::standalone("t"), &Options::from_toml_table(&table)).unwrap();
        let table: toml::Table = toml::from_str("transport = \"udp\"").unwrap();
        let e = SyslogSink::check(&Host::standalone("t"), &Options::from_toml_table(&table))
            .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("address"));
    }
}
