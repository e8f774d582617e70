//! TCP connect/close flows: a client that opens connections at a target
//! rate, and a listener on the VM side that accepts and closes each one at
//! once. The listener closes first, so the client side never sits in
//! TIME_WAIT holding a port; each connection is one conntrack entry with a
//! full handshake and teardown in both directions.
//!
//! The kernel, not this code, decides how many packets a connection takes
//! (delayed ACKs, a FIN riding on an ACK), so the ground truth here is the
//! count of connections; the benchmark takes packets and bytes from nft
//! counters on the VM side.

use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::netns::InNetns;

/// Any one connect or read waits at most this long: the peer is on the
/// same host, so a longer wait means it is gone.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// What the client did.
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpTruth {
    /// Connections that completed: connected, saw the listener's FIN, closed.
    pub flows: u64,
    /// Attempts that failed (refused, timed out).
    pub failed: u64,
}

/// The VM side's listener, on its own thread inside `netns`.
pub struct Listener {
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicU64>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl Listener {
    /// Starts listening on `port` in `netns` (the current one if `None`),
    /// and returns once the socket is bound. The thread ends at `stop` or
    /// at `deadline`, whichever comes first.
    ///
    /// # Errors
    /// Entering the namespace or binding.
    pub fn start(netns: Option<&str>, port: u16, deadline: Instant) -> io::Result<Listener> {
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicU64::new(0));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop2, accepted2) = (Arc::clone(&stop), Arc::clone(&accepted));
        let netns = netns.map(str::to_owned);
        let thread = std::thread::spawn(move || -> io::Result<()> {
            let listener = {
                let _in = match netns.as_deref().map(InNetns::enter).transpose() {
                    Ok(guard) => guard,
                    Err(e) => {
                        let _ = ready_tx.send(Err(io::Error::new(e.kind(), e.to_string())));
                        return Err(e);
                    }
                };
                match TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))
                    .and_then(|l| l.set_nonblocking(true).map(|()| l))
                {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = ready_tx.send(Err(io::Error::new(e.kind(), e.to_string())));
                        return Err(e);
                    }
                }
            };
            let _ = ready_tx.send(Ok(()));
            while !stop2.load(Ordering::Relaxed) && Instant::now() < deadline {
                match listener.accept() {
                    // Dropping the stream closes it: the listener's FIN.
                    Ok((stream, _)) => {
                        drop(stream);
                        accepted2.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_micros(200));
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    // ECONNABORTED and the like: that connection is gone,
                    // the listener is fine.
                    Err(_) => {}
                }
            }
            Ok(())
        });
        match ready_rx.recv_timeout(IO_TIMEOUT) {
            Ok(Ok(())) => Ok(Listener {
                stop,
                accepted,
                thread: Some(thread),
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the TCP listener did not start",
            )),
        }
    }

    /// Stops the thread; returns how many connections it accepted.
    pub fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Opens and closes connections to `peer` at `per_sec` until `end`.
pub fn run_client(peer: SocketAddr, per_sec: u64, start: Instant, end: Instant) -> TcpTruth {
    let mut truth = TcpTruth::default();
    let mut buf = [0u8; 64];
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let due = (per_sec as f64 * (now - start).as_secs_f64()) as u64;
        if truth.flows + truth.failed >= due {
            std::thread::sleep(Duration::from_micros(500));
            continue;
        }
        let ok = TcpStream::connect_timeout(&peer, IO_TIMEOUT).and_then(|mut s| {
            s.set_read_timeout(Some(IO_TIMEOUT))?;
            // The listener closes at once: read to its FIN, then close.
            loop {
                match s.read(&mut buf) {
                    Ok(0) => return Ok(()),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        });
        match ok {
            Ok(()) => truth.flows += 1,
            Err(_) => truth.failed += 1,
        }
    }
    truth
}
