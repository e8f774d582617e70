//! The control socket's server: `state_dir/control.sock`, one thread, one
//! connection at a time, a request line and one JSON answer.
//!
//! Who may ask: root and the daemon's own user, checked on every
//! connection with SO_PEERCRED (the kernel's record of the peer's
//! credentials at connect), whatever the file's mode says. The socket is
//! also mode 0660 in a directory that is the daemon's, so others normally
//! cannot reach it at all; the check holds should an operator open either
//! up. A refusal is answered (so the client can say why), counted and
//! logged at most once a minute (a local user could otherwise fill the
//! log).
//!
//! Bounds: a request is one line of at most [`MAX_REQUEST_BYTES`], read
//! within [`REQUEST_TIMEOUT`]; the answer is written with the same
//! timeout. A client that stalls delays the next one by at most that long
//! and never reaches the capture loop.

use std::fmt;
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};

use super::reply::{Process, StatusReply, TopReply};
use crate::flows::{Clock, SystemClock};
use crate::metrics::{read_bounded, SnapshotCell};
use crate::sinks::SinkProbe;
use crate::state_file;

/// The socket's name in `state_dir`.
pub const SOCKET_NAME: &str = "control.sock";
/// The longest request line: `status` or `top`, with room to grow.
pub const MAX_REQUEST_BYTES: usize = 256;
/// The longest a client may take to send its request, and to take the
/// answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Refusals are logged at most this often.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Why the control socket could not be set up (a start-up error).
#[derive(Debug)]
pub enum ControlSocketError {
    /// Something that is not a stale socket of this daemon's is in the way.
    InTheWay {
        path: PathBuf,
        what: String,
    },
    /// Another daemon answers on it.
    InUse {
        path: PathBuf,
    },
    Io {
        path: PathBuf,
        source: io::Error,
    },
}

impl fmt::Display for ControlSocketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlSocketError::InTheWay { path, what } => write!(
                f,
                "control socket {}: {what}; not removing it (only a socket of the daemon's user or root is \
                 removed): remove it by hand",
                path.display()
            ),
            ControlSocketError::InUse { path } => write!(
                f,
                "control socket {}: another flowlogd answers on it (the same state_dir is in use)",
                path.display()
            ),
            ControlSocketError::Io { path, source } => {
                write!(f, "control socket {}: {source}", path.display())
            }
        }
    }
}

impl std::error::Error for ControlSocketError {}

/// The control socket, bound, and what it serves from.
pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
    cell: Arc<SnapshotCell>,
    process: Process,
    /// The daemon's uid, besides root, allowed to ask.
    daemon_uid: u32,
}

/// Removes the socket file when dropped: a daemon that stopped cleanly
/// leaves none behind.
pub struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        // Only what is still a socket of ours (not a file put there since).
        if std::fs::symlink_metadata(&self.0).is_ok_and(|m| is_ours(&m)) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// Whether `m` (from `symlink_metadata`) is a socket owned by this
/// process's user or root.
fn is_ours(m: &std::fs::Metadata) -> bool {
    let me = state_file::euid();
    m.file_type().is_socket() && (m.uid() == me || m.uid() == 0)
}

impl ControlServer {
    /// Binds `state_dir/control.sock` (mode 0660, owned by the daemon's
    /// user: bound after the privileges were dropped). A socket left by a
    /// daemon that died is removed first, if it is a socket of the
    /// daemon's user or root and nobody answers on it; anything else in
    /// the way is an error, never removed. `state_dir` was checked
    /// ([`state_file::check_dir`]): only the daemon's user or root can
    /// create entries in it.
    ///
    /// # Errors
    /// [`ControlSocketError`].
    pub fn bind(
        state_dir: &Path,
        cell: Arc<SnapshotCell>,
        started_unix: i64,
    ) -> Result<(ControlServer, SocketFile), ControlSocketError> {
        let path = state_dir.join(SOCKET_NAME);
        let io_err = |source| ControlSocketError::Io {
            path: path.clone(),
            source,
        };
        match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(e)),
            Ok(m) => {
                if !is_ours(&m) {
                    let what = if m.file_type().is_socket() {
                        format!("a socket of uid {}", m.uid())
                    } else if m.file_type().is_symlink() {
                        "a symlink".to_owned()
                    } else {
                        "not a socket".to_owned()
                    };
                    return Err(ControlSocketError::InTheWay { path, what });
                }
                if UnixStream::connect(&path).is_ok() {
                    return Err(ControlSocketError::InUse { path });
                }
                std::fs::remove_file(&path).map_err(io_err)?;
            }
        }
        let listener = UnixListener::bind(&path).map_err(io_err)?;
        let file = SocketFile(path.clone());
        // Connecting needs write permission on the socket: until this
        // chmod only the owner has it under the usual umask, and the peer
        // check applies anyway.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660)).map_err(io_err)?;
        Ok((
            ControlServer {
                listener,
                path,
                cell,
                process: Process {
                    pid: std::process::id(),
                    started_unix,
                },
                daemon_uid: state_file::euid(),
            },
            file,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves on a thread of its own for the rest of the process.
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub fn spawn(self) -> io::Result<()> {
        std::thread::Builder::new()
            .name("control".into())
            .spawn(move || self.serve())
            .map(|_| ())
    }

    fn serve(self) {
        let mut refusals = Refusals::default();
        for conn in self.listener.incoming() {
            match conn {
                Ok(stream) => {
                    if let Err(e) = self.answer(stream, &mut refusals) {
                        log::debug!("control: a request failed: {e}");
                    }
                }
                Err(e) => {
                    // Out of descriptors and the like: do not spin.
                    log::warn!("control: accept failed: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    fn answer(&self, mut stream: UnixStream, refusals: &mut Refusals) -> io::Result<()> {
        stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
        stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
        let uid = getsockopt(&stream, PeerCredentials)
            .map_err(io::Error::from)?
            .uid();
        // Read (bounded) even from a peer about to be refused: closing a
        // unix socket with unread data resets the connection, and the
        // client would see that instead of the refusal.
        let request = read_request(&mut stream);
        if !allowed(uid, self.daemon_uid) {
            refusals.note(uid, self.daemon_uid);
            let body = error_body(&format!(
                "permission denied: uid {uid} is neither root nor the daemon's user (uid {})",
                self.daemon_uid
            ));
            return send(&mut stream, &body);
        }
        let now = SystemClock.now_unix();
        let body = match request {
            Ok(line) => match line.trim() {
                "status" => {
                    let snapshot = self.cell.latest();
                    let sinks: Vec<_> = snapshot.sinks.iter().map(SinkProbe::read).collect();
                    let reply = StatusReply::of(&snapshot, &sinks, self.process, now);
                    serde_json::to_string(&reply).map_err(io::Error::other)?
                }
                "top" => serde_json::to_string(&TopReply::of(&self.cell.latest(), now))
                    .map_err(io::Error::other)?,
                other => error_body(&format!(
                    "unknown request {:?}: status or top",
                    other.chars().take(40).collect::<String>()
                )),
            },
            Err(e) => error_body(&format!("bad request: {e}")),
        };
        send(&mut stream, &body)
    }
}

/// Root and the daemon's own user may ask; nobody else.
fn allowed(uid: u32, daemon_uid: u32) -> bool {
    uid == 0 || uid == daemon_uid
}

#[derive(Default)]
struct Refusals {
    count: u64,
    logged: Option<Instant>,
    logged_count: u64,
}

impl Refusals {
    fn note(&mut self, uid: u32, daemon_uid: u32) {
        self.count += 1;
        if self
            .logged
            .is_none_or(|t| t.elapsed() >= REFUSAL_LOG_INTERVAL)
        {
            log::warn!(
                "control: refused a connection from uid {uid} (only root and the daemon's user, uid {daemon_uid}, \
                 may ask); {} refused since the last such line",
                self.count - self.logged_count
            );
            self.logged = Some(Instant::now());
            self.logged_count = self.count;
        }
    }
}

fn error_body(message: &str) -> String {
    serde_json::json!({ "error": message }).to_string()
}

fn send(stream: &mut UnixStream, body: &str) -> io::Result<()> {
    stream.write_all(body.as_bytes())?;
    stream.write_all(b"\n")?;
    stream.flush()
}

/// One line of at most [`MAX_REQUEST_BYTES`], within [`REQUEST_TIMEOUT`]
/// in all (each read is bounded by the socket's timeout too).
fn read_request(stream: &mut UnixStream) -> io::Result<String> {
    let line = read_bounded(stream, MAX_REQUEST_BYTES, REQUEST_TIMEOUT, |line| {
        line.contains(&b'\n')
    })?;
    let end = line.iter().position(|&b| b == b'\n').unwrap_or(line.len());
    if end > MAX_REQUEST_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "request too long",
        ));
    }
    String::from_utf8(line[..end].to_vec())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8"))
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn exchange(dir: &Path, request: &[u8]) -> String {
        let mut c = UnixStream::connect(dir.join(SOCKET_NAME)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(request).unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        out
    }

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("flowlogd-control-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn root_and_the_daemon_user_only() {
        assert!(allowed(0, 998));
        assert!(allowed(998, 998));
        assert!(!allowed(65534, 998));
        assert!(!allowed(1000, 0));
    }

    #[test]
    fn requests_are_answered_with_json_and_a_stale_socket_is_replaced() {
        let dir = scratch("serve");
        // A socket left by a daemon that died: nobody listens on it.
        drop(UnixListener::bind(dir.join(SOCKET_NAME)).unwrap());
        let cell = Arc::new(SnapshotCell::default());
        cell.publish(crate::metrics::Snapshot {
            window_start: 600,
            window_end: 1200,
            counters: crate::metrics::LoopCounters {
                lost_connections: 3,
                ..Default::default()
            },
            ..Default::default()
        });
        let (server, file) = ControlServer::bind(&dir, cell, 100).unwrap();
        let mode = std::fs::metadata(dir.join(SOCKET_NAME)).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o660);
        // A second daemon on the same directory is refused while this one answers.
        server.spawn().unwrap();
        let again = ControlServer::bind(&dir, Arc::new(SnapshotCell::default()), 0);
        assert!(matches!(again, Err(ControlSocketError::InUse { .. })));

        let status: serde_json::Value = serde_json::from_str(&exchange(&dir, b"status\n")).unwrap();
        assert_eq!(status["window"]["start_unix"], 600);
        assert_eq!(status["loss"]["lost_connections"], 3);
        assert_eq!(status["pid"], std::process::id());
        let top: serde_json::Value = serde_json::from_str(&exchange(&dir, b"top\n")).unwrap();
        assert_eq!(top["window_end_unix"], 1200);
        let bad: serde_json::Value = serde_json::from_str(&exchange(&dir, b"walk\n")).unwrap();
        assert!(
            bad["error"].as_str().unwrap().contains("unknown request"),
            "{bad}"
        );
        let long = vec![b'x'; MAX_REQUEST_BYTES + 10];
        let bad: serde_json::Value = serde_json::from_str(&exchange(&dir, &long)).unwrap();
        assert!(bad["error"].as_str().unwrap().contains("too long"), "{bad}");
        drop(file);
        assert!(!dir.join(SOCKET_NAME).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn what_is_not_a_socket_is_never_removed() {
        let dir = scratch("inway");
        std::fs::write(dir.join(SOCKET_NAME), "precious").unwrap();
        let e = ControlServer::bind(&dir, Arc::new(SnapshotCell::default()), 0)
            .err()
            .expect("refused");
        assert!(e.to_string().contains("not a socket"), "{e}");
        assert_eq!(
            std::fs::read_to_string(dir.join(SOCKET_NAME)).unwrap(),
            "precious"
        );
        std::fs::remove_file(dir.join(SOCKET_NAME)).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.join(SOCKET_NAME)).unwrap();
        let e = ControlServer::bind(&dir, Arc::new(SnapshotCell::default()), 0)
            .err()
            .expect("refused");
        assert!(e.to_string().contains("symlink"), "{e}");
        assert!(std::fs::symlink_metadata(dir.join(SOCKET_NAME)).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
