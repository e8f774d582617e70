//! The commands' side of the control socket: one request, one answer, and
//! the plain text `flowlogd status` and `flowlogd top` print.

use std::fmt::{self, Write as _};
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::reply::{StatusReply, TopReply};
use super::view::TopRecord;
use crate::logger::utc;

/// How long the client waits for the daemon's answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest answer read (a status of many ENIs and sinks is tens of KB).
const MAX_ANSWER_BYTES: u64 = 16 << 20;

/// Why a command could not show what the daemon says.
#[derive(Debug)]
pub enum ClientError {
    /// Nothing listens: no socket file, or a socket nobody answers on.
    NotRunning {
        path: PathBuf,
    },
    /// The daemon answered with an error (a refusal among them).
    Daemon {
        message: String,
    },
    Io {
        path: PathBuf,
        source: io::Error,
    },
    BadAnswer {
        path: PathBuf,
        why: String,
    },
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::NotRunning { path } => write!(
                f,
                "flowlogd is not running (no control socket at {})",
                path.display()
            ),
            ClientError::Daemon { message } => write!(f, "the daemon says: {message}"),
            ClientError::Io { path, source } => {
                write!(f, "control socket {}: {source}", path.display())
            }
            ClientError::BadAnswer { path, why } => {
                write!(
                    f,
                    "control socket {}: unexpected answer: {why}",
                    path.display()
                )
            }
        }
    }
}

impl std::error::Error for ClientError {}

/// Sends `request` and returns the answer's JSON text.
fn ask(socket: &Path, request: &str) -> Result<String, ClientError> {
    let io_err = |source| ClientError::Io {
        path: socket.to_owned(),
        source,
    };
    let mut stream = UnixStream::connect(socket).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => ClientError::NotRunning {
            path: socket.to_owned(),
        },
        _ => io_err(e),
    })?;
    stream
        .set_read_timeout(Some(ANSWER_TIMEOUT))
        .map_err(io_err)?;
    stream
        .set_write_timeout(Some(ANSWER_TIMEOUT))
        .map_err(io_err)?;
    // The daemon may refuse before reading: a failed write is not the end.
    let _ = stream.write_all(format!("{request}\n").as_bytes());
    let mut answer = String::new();
    stream
        .take(MAX_ANSWER_BYTES)
        .read_to_string(&mut answer)
        .map_err(io_err)?;
    let value: serde_json::Value =
        serde_json::from_str(answer.trim()).map_err(|e| ClientError::BadAnswer {
            path: socket.to_owned(),
            why: e.to_string(),
        })?;
    if let Some(message) = value.get("error").and_then(|m| m.as_str()) {
        return Err(ClientError::Daemon {
            message: message.to_owned(),
        });
    }
    Ok(answer)
}

fn parse<T: serde::de::DeserializeOwned>(socket: &Path, answer: &str) -> Result<T, ClientError> {
    serde_json::from_str(answer.trim()).map_err(|e| ClientError::BadAnswer {
        path: socket.to_owned(),
        why: e.to_string(),
    })
}

/// The daemon's status: the parsed answer and its JSON text.
///
/// # Errors
/// [`ClientError`]; [`ClientError::NotRunning`] when nothing listens.
pub fn fetch_status(socket: &Path) -> Result<(StatusReply, String), ClientError> {
    let answer = ask(socket, "status")?;
    Ok((parse(socket, &answer)?, answer))
}

/// The open window's leaders.
///
/// # Errors
/// As [`fetch_status`].
pub fn fetch_top(socket: &Path) -> Result<TopReply, ClientError> {
    let answer = ask(socket, "top")?;
    parse(socket, &answer)
}

fn duration(secs: i64) -> String {
    let s = secs.max(0);
    match (s / 86_400, s % 86_400 / 3600, s % 3600 / 60, s % 60) {
        (0, 0, 0, sec) => format!("{sec}s"),
        (0, 0, m, sec) => format!("{m}m{sec:02}s"),
        (0, h, m, sec) => format!("{h}h{m:02}m{sec:02}s"),
        (d, h, m, _) => format!("{d}d{h:02}h{m:02}m"),
    }
}

/// `flowlogd status` as text.
pub fn render_status(s: &StatusReply) -> String {
    let now = s.now_unix;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "flowlogd {} (pid {}), up {} since {}",
        s.version,
        s.pid,
        duration(s.uptime_secs),
        utc(s.started_unix)
    );
    let _ = writeln!(
        o,
        "config {}, loaded {} ({} ago)",
        s.config.path.display(),
        utc(s.config.loaded_unix),
        duration(now - s.config.loaded_unix)
    );
    let _ = writeln!(o, "\nENIs ({}):", s.enis.len());
    for e in &s.enis {
        let _ = writeln!(
            o,
            "  {}  interface {}  vswitch {}  vpc {}  vm {}  account {}\n    flow logs: {}",
            e.eni_id,
            e.interface.as_deref().unwrap_or("none now"),
            e.vswitch_id,
            e.vpc_id,
            e.vm_id,
            e.account_id,
            if e.flow_logs.is_empty() {
                "none".to_owned()
            } else {
                e.flow_logs.join(", ")
            }
        );
    }
    let w = &s.window;
    let _ = writeln!(
        o,
        "\nopen window {} - {} (closes in {}): {} records so far, sums {} bytes, {} live connections",
        utc(w.start_unix),
        utc(w.end_unix),
        duration(w.end_unix - now),
        w.records,
        w.sums_bytes,
        w.connections
    );
    let _ = writeln!(o, "\nsinks ({}):", s.sinks.len());
    for k in &s.sinks {
        let _ = writeln!(
            o,
            "  {}  queued {}  spool {} records ({} bytes)  delivered {}  retries {}  rejected {}  dropped {}  \
             last error {}",
            k.name,
            k.queued_records,
            k.spool_records,
            k.spool_bytes,
            k.delivered,
            k.retries,
            k.rejected,
            k.dropped,
            k.last_error_unix.map_or("never".to_owned(), utc)
        );
    }
    let _ = writeln!(o, "\nflow logs (records since start):");
    if s.flow_logs.is_empty() {
        let _ = writeln!(o, "  none emitted yet");
    }
    for f in &s.flow_logs {
        let _ = writeln!(
            o,
            "  {}  ACCEPT {}  REJECT {}  NODATA {}  SKIPDATA {}",
            f.name, f.accept, f.reject, f.nodata, f.skipdata
        );
    }
    let l = &s.loss;
    let _ = writeln!(
        o,
        "\nloss since start: conntrack overruns {}, malformed {}, resyncs {}; lost connections {}; table full \
         drops {}; route overruns {}; nflog overruns {}, sequence gaps {}, malformed {}, foreign prefix {}; \
         SKIPDATA windows {}",
        l.conntrack_overruns,
        l.conntrack_malformed,
        l.conntrack_resyncs,
        l.lost_connections,
        l.table_full_drops,
        l.route_overruns,
        l.nflog_overruns,
        l.nflog_sequence_gaps,
        l.nflog_malformed,
        l.nflog_foreign_prefix,
        l.skipdata_windows
    );
    o
}

/// What `top` ranks flows by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopOrder {
    Bytes,
    Packets,
}

fn protocol_name(p: u8) -> String {
    match p {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "icmp6".into(),
        132 => "sctp".into(),
        n => n.to_string(),
    }
}

fn endpoint(addr: std::net::IpAddr, port: u16, protocol: u8) -> String {
    let has_ports = matches!(protocol, 6 | 17 | 132 | 136 | 33);
    match (addr, has_ports) {
        (std::net::IpAddr::V6(a), true) => format!("[{a}]:{port}"),
        (a, true) => format!("{a}:{port}"),
        (a, false) => a.to_string(),
    }
}

fn flow_line(o: &mut String, r: &TopRecord) {
    let _ = writeln!(
        o,
        "  {:>12} {:>10}  {:<5} {:<3} {:<6} {} -> {}  {}",
        r.bytes,
        r.packets,
        protocol_name(r.protocol),
        r.direction,
        r.action,
        endpoint(r.src, r.src_port, r.protocol),
        endpoint(r.dst, r.dst_port, r.protocol),
        r.eni
    );
}

/// One frame of `flowlogd top`: at most `n` flows by `order`, the top
/// rejected sources with their rules, per-ENI totals.
pub fn render_top(t: &TopReply, order: TopOrder, n: usize) -> String {
    let now = t.now_unix;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "open window {} - {} (closes in {}), counts as of {}",
        utc(t.window_start_unix),
        utc(t.window_end_unix),
        duration(t.window_end_unix - now),
        utc(t.snapshot_unix as i64)
    );
    let (flows, by) = match order {
        TopOrder::Bytes => (&t.top.by_bytes, "bytes"),
        TopOrder::Packets => (&t.top.by_packets, "packets"),
    };
    let _ = writeln!(o, "\ntop flows by {by}:");
    let _ = writeln!(
        o,
        "  {:>12} {:>10}  {:<5} {:<3} {:<6} SOURCE -> DESTINATION  ENI",
        "BYTES", "PACKETS", "PROTO", "DIR", "ACTION"
    );
    if flows.is_empty() {
        let _ = writeln!(o, "  (none yet in this window)");
    }
    for r in flows.iter().take(n) {
        flow_line(&mut o, r);
    }
    let _ = writeln!(o, "\ntop rejected sources:");
    let _ = writeln!(
        o,
        "  {:>10} {:>12}  {:<5} SOURCE -> DESTINATION  ENI  RULE",
        "PACKETS", "BYTES", "PROTO"
    );
    if t.top.rejects.is_empty() {
        let _ = writeln!(o, "  (none yet in this window)");
    }
    for r in t.top.rejects.iter().take(n) {
        let _ = writeln!(
            o,
            "  {:>10} {:>12}  {:<5} {} -> {}  {}  rule {}",
            r.packets,
            r.bytes,
            protocol_name(r.protocol),
            endpoint(r.src, r.src_port, r.protocol),
            endpoint(r.dst, r.dst_port, r.protocol),
            r.eni,
            r.rule.as_deref().unwrap_or("-")
        );
    }
    let _ = writeln!(o, "\nper ENI:");
    if t.top.enis.is_empty() {
        let _ = writeln!(o, "  (no traffic yet in this window)");
    }
    for e in &t.top.enis {
        let _ = writeln!(
            o,
            "  {}  in {} packets {} bytes  out {} packets {} bytes  rejected {} packets",
            e.eni, e.packets_in, e.bytes_in, e.packets_out, e.bytes_out, e.rejected_packets
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::TopView;

    #[test]
    fn nothing_listening_is_not_running() {
        let path = std::env::temp_dir().join(format!("flowlogd-nosock-{}", std::process::id()));
        let e = fetch_status(&path).unwrap_err();
        assert!(matches!(e, ClientError::NotRunning { .. }), "{e}");
        assert_eq!(
            e.to_string(),
            format!(
                "flowlogd is not running (no control socket at {})",
                path.display()
            )
        );
    }

    #[test]
    fn a_top_frame_shows_flows_rejects_with_their_rule_and_enis() {
        let rec = |action: &str, port: u16, packets: u64, rule: Option<&str>| TopRecord {
            eni: "eni-a".into(),
            direction: "in".into(),
            action: action.into(),
            src: "10.0.0.2".parse().unwrap(),
            src_port: 40000,
            dst: "10.0.0.1".parse().unwrap(),
            dst_port: port,
            protocol: 17,
            packets,
            bytes: packets * 100,
            rule: rule.map(str::to_owned),
        };
        let t = TopReply {
            protocol: 1,
            now_unix: 1000,
            snapshot_unix: 999.5,
            window_start_unix: 600,
            window_end_unix: 1200,
            top: TopView {
                by_bytes: vec![
                    rec("ACCEPT", 53, 4, None),
                    rec("REJECT", 161, 2, Some("sg:deny")),
                ],
                by_packets: vec![],
                rejects: vec![rec("REJECT", 161, 2, Some("sg:deny"))],
                enis: vec![],
            },
        };
        let frame = render_top(&t, TopOrder::Bytes, 1);
        assert!(
            frame.contains("udp   in  ACCEPT 10.0.0.2:40000 -> 10.0.0.1:53  eni-a"),
            "{frame}"
        );
        assert!(
            !frame.contains("REJECT 10.0.0.2:40000 -> 10.0.0.1:161"),
            "{frame}"
        );
        assert!(
            frame.contains("10.0.0.2:40000 -> 10.0.0.1:161  eni-a  rule sg:deny"),
            "{frame}"
        );
        assert!(frame.contains("closes in 3m20s"), "{frame}");
    }
}
