//! Traffic of known shape for flowlogd's end-to-end tests, run inside a
//! test's network namespace (`ip netns exec <ns> flowlogd-traffic ...`).
//!
//! Every mode says on stdout, one line at a time, what the test waits for
//! (`listening <port>`, `connected <local port>`, `ok ...`), so the test
//! never has to guess when a peer is ready or a transfer is done. Every
//! blocking call has a timeout, so a lost peer ends the process instead of
//! hanging the test.
//!
//! ```text
//! tcp-server ADDR:PORT            accept one connection; serve transfers until EOF
//! tcp-client ADDR:PORT            connect; read commands from stdin:
//!                                   xfer N R   send N bytes, receive R bytes back
//!                                   close      shut down, read to EOF, exit
//! udp-server ADDR:PORT N R S      receive N datagrams, then send R of S bytes back
//! udp-client ADDR:PORT N S R      send N datagrams of S bytes, then receive R back
//! udp-sink ADDR:PORT              receive and discard datagrams until killed
//! udp-flow ADDR:PORT S            one socket (one 5-tuple); read commands from stdin:
//!                                   send K     send K datagrams of S bytes
//!                                   close      exit
//! udp-burst ADDR:PORT N S PORT0   N one-datagram flows of S bytes, from source
//!                                 ports PORT0, PORT0+1, ... (distinct 5-tuples)
//! udp-flows ADDR:PORT N P S PORT0 N flows of P datagrams of S bytes each,
//!                                 from source ports PORT0, PORT0+1, ...
//! ```
//!
//! The TCP transfer protocol: the client sends a 16-byte header (N and R as
//! big-endian u64) and N bytes; the server reads them and answers with R
//! bytes. Sizes on the wire are thus N + 16 and R, plus TCP/IP overhead,
//! which the tests take from the kernel's conntrack counters.

use std::io::{self, BufRead, Read, Write};
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket,
};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// The longest any single wait may take: peers are in the same host.
const IO_TIMEOUT: Duration = Duration::from_secs(20);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("tcp-server") => tcp_server(&args[1..]),
        Some("tcp-client") => tcp_client(&args[1..]),
        Some("udp-server") => udp_server(&args[1..]),
        Some("udp-client") => udp_client(&args[1..]),
        Some("udp-sink") => udp_sink(&args[1..]),
        Some("udp-flow") => udp_flow(&args[1..]),
        Some("udp-burst") => udp_burst(&args[1..]),
        Some("udp-flows") => udp_flows(&args[1..]),
        _ => Err("usage: flowlogd-traffic tcp-server|tcp-client|udp-server|udp-client|udp-sink|udp-burst|udp-flows ...".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flowlogd-traffic: {e}");
            ExitCode::FAILURE
        }
    }
}

type Result<T> = std::result::Result<T, String>;

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    let s = args
        .get(i)
        .ok_or_else(|| format!("missing argument {what}"))?;
    s.parse().map_err(|e| format!("{what} {s:?}: {e}"))
}

fn ctx(what: &str) -> impl FnOnce(io::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// Prints a line and flushes it at once: the test reads stdout line by line.
fn say(line: &str) -> Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(ctx("stdout"))
}

fn tcp_server(args: &[String]) -> Result<()> {
    let addr: SocketAddr = arg(args, 0, "ADDR:PORT")?;
    let listener = TcpListener::bind(addr).map_err(ctx("bind"))?;
    let port = listener.local_addr().map_err(ctx("local_addr"))?.port();
    say(&format!("listening {port}"))?;
    let (mut conn, peer) = listener.accept().map_err(ctx("accept"))?;
    conn.set_read_timeout(Some(IO_TIMEOUT))
        .map_err(ctx("timeout"))?;
    say(&format!("accepted {peer}"))?;
    let (mut received, mut sent) = (0u64, 0u64);
    loop {
        let mut header = [0u8; 16];
        if !read_exact_or_eof(&mut conn, &mut header)? {
            break;
        }
        let n = u64::from_be_bytes(header[..8].try_into().unwrap_or_default());
        let r = u64::from_be_bytes(header[8..].try_into().unwrap_or_default());
        copy_in(&mut conn, n)?;
        copy_out(&mut conn, r)?;
        received += n;
        sent += r;
    }
    conn.shutdown(Shutdown::Write).map_err(ctx("shutdown"))?;
    say(&format!("done received={received} sent={sent}"))
}

fn tcp_client(args: &[String]) -> Result<()> {
    let addr: SocketAddr = arg(args, 0, "ADDR:PORT")?;
    let mut conn = TcpStream::connect_timeout(&addr, IO_TIMEOUT).map_err(ctx("connect"))?;
    conn.set_read_timeout(Some(IO_TIMEOUT))
        .map_err(ctx("timeout"))?;
    let port = conn.local_addr().map_err(ctx("local_addr"))?.port();
    say(&format!("connected {port}"))?;
    let stdin = io::stdin();
    for line in stdin.lock().lines() {
        let line = line.map_err(ctx("stdin"))?;
        let words: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        match words.first().map(String::as_str) {
            Some("xfer") => {
                let n: u64 = arg(&words, 1, "N")?;
                let r: u64 = arg(&words, 2, "R")?;
                let mut header = [0u8; 16];
                header[..8].copy_from_slice(&n.to_be_bytes());
                header[8..].copy_from_slice(&r.to_be_bytes());
                conn.write_all(&header).map_err(ctx("send"))?;
                copy_out(&mut conn, n)?;
                copy_in(&mut conn, r)?;
                say(&format!("ok {n} {r}"))?;
            }
            Some("close") | None => break,
            Some(other) => return Err(format!("unknown command {other:?}")),
        }
    }
    conn.shutdown(Shutdown::Write).map_err(ctx("shutdown"))?;
    let mut rest = Vec::new();
    conn.read_to_end(&mut rest).map_err(ctx("read to EOF"))?;
    if !rest.is_empty() {
        return Err(format!("{} unexpected bytes before EOF", rest.len()));
    }
    say("closed")
}

/// Reads exactly `buf.len()` bytes; `false` on EOF before the first byte.
fn read_exact_or_eof(conn: &mut TcpStream, buf: &mut [u8]) -> Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match conn.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err("EOF inside a header".into()),
            Ok(k) => got += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("receive: {e}")),
        }
    }
    Ok(true)
}

fn copy_in(conn: &mut TcpStream, mut n: u64) -> Result<()> {
    let mut buf = [0u8; 16384];
    while n > 0 {
        let want = buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
        match conn.read(&mut buf[..want]) {
            Ok(0) => return Err(format!("EOF with {n} bytes still expected")),
            Ok(k) => n -= k as u64,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("receive: {e}")),
        }
    }
    Ok(())
}

fn copy_out(conn: &mut TcpStream, mut n: u64) -> Result<()> {
    let buf = [0x5au8; 16384];
    while n > 0 {
        let k = buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
        conn.write_all(&buf[..k]).map_err(ctx("send"))?;
        n -= k as u64;
    }
    Ok(())
}

/// A UDP socket on an ephemeral port of the family of `peer`.
fn udp_for(peer: &SocketAddr, port: u16) -> Result<UdpSocket> {
    let local: IpAddr = match peer {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let s = UdpSocket::bind((local, port)).map_err(|e| format!("bind port {port}: {e}"))?;
    s.set_read_timeout(Some(IO_TIMEOUT))
        .map_err(ctx("timeout"))?;
    Ok(s)
}

fn udp_server(args: &[String]) -> Result<()> {
    let addr: SocketAddr = arg(args, 0, "ADDR:PORT")?;
    let count: u64 = arg(args, 1, "N")?;
    let replies: u64 = arg(args, 2, "R")?;
    let reply_size: usize = arg(args, 3, "S")?;
    let s = UdpSocket::bind(addr).map_err(ctx("bind"))?;
    s.set_read_timeout(Some(IO_TIMEOUT))
        .map_err(ctx("timeout"))?;
    let port = s.local_addr().map_err(ctx("local_addr"))?.port();
    say(&format!("listening {port}"))?;
    let mut buf = [0u8; 65536];
    let mut peer = None;
    for i in 0..count {
        let (_, from) = s
            .recv_from(&mut buf)
            .map_err(|e| format!("datagram {}: {e}", i + 1))?;
        if peer.is_some_and(|p| p != from) {
            return Err(format!("datagram from a second peer {from}"));
        }
        peer = Some(from);
    }
    if let Some(peer) = peer {
        let payload = vec![0x5au8; reply_size];
        for _ in 0..replies {
            s.send_to(&payload, peer).map_err(ctx("send"))?;
        }
    }
    say(&format!("done received={count} sent={replies}"))
}

fn udp_client(args: &[String]) -> Result<()> {
    let peer: SocketAddr = arg(args, 0, "ADDR:PORT")?;
    let count: u64 = arg(args, 1, "N")?;
    let size: usize = arg(args, 2, "S")?;
    let replies: u64 = arg(args, 3, "R")?;
    let s = udp_for(&peer, 0)?;
    s.connect(peer).map_err(ctx("connect"))?;
    let port = s.local_addr().map_err(ctx("local_addr"))?.port();
    say(&format!("local {port}"))?;
    let payload = vec![0xa5u8; size];
    for _ in 0..count {
        s.send(&payload).map_err(ctx("send"))?;
    }
    let mut buf = [0u8; 65536];
    for i in 0..replies {
        s.recv(&mut buf)
            .map_err(|e| format!("reply {}: {e}", i + 1))?;
    }
    say(&format!("done sent={count} received={replies}"))
}

/// One UDP flow that lives as long as the process, sending when told: a
/// test can send on the same 5-tuple before, during and after something
/// it does to the daemon.
fn udp_flow(args: &[String]) -> Result<()> {
    let peer: SocketAddr = arg(args, 0, "ADDR:PORT")?;
    let size: usize = arg(args, 1, "S")?;
    let s = udp_for(&peer, 0)?;
    s.connect(peer).map_err(ctx("connect"))?;
    let port = s.local_addr().map_err(ctx("local_addr"))?.port();
    say(&format!("local {port}"))?;
    let payload = vec![0xa5u8; size];
    for line in io::stdin().lock().lines() {
        let line = line.map_err(ctx("stdin"))?;
        let words: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        match words.first().map(String::as_str) {
            Some("send") => {
                let k: u64 = arg(&words, 1, "K")?;
                for _ in 0..k {
                    s.send(&payload).map_err(ctx("send"))?;
                }
                say(&format!("sent {k}"))?;
            }
            Some("close") | None => break,
            Some(other) => return Err(format!("unknown command {other:?}")),
        }
    }
    Ok(())
}

fn udp_sink(args: &[String]) -> Result<()> {
    let addr: SocketAddr = arg(args, 0, "ADDR:PORT")?;
    let s = UdpSocket::bind(addr).map_err(ctx("bind"))?;
    // Generous: the test kills the sink when done; this only bounds an orphan.
    s.set_read_timeout(Some(Duration::from_secs(300)))
        .map_err(ctx("timeout"))?;
    let port = s.local_addr().map_err(ctx("local_addr"))?.port();
    say(&format!("listening {port}"))?;
    let mut buf = [0u8; 65536];
    loop {
        match s.recv_from(&mut buf) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("receive: {e}")),
        }
    }
}

fn udp_burst(args: &[String]) -> Result<()> {
    let peer: SocketAddr = arg(args, 0, "ADDR:PORT")?;
    let flows: u16 = arg(args, 1, "N")?;
    let size: usize = arg(args, 2, "S")?;
    let first: u16 = arg(args, 3, "PORT0")?;
    if u32::from(first) + u32::from(flows) > 65536 {
        return Err("source ports run past 65535".into());
    }
    let payload = vec![0xa5u8; size];
    let started = Instant::now();
    for i in 0..flows {
        // One socket per flow, closed at once: a fixed source port per flow
        // makes every 5-tuple distinct (an ephemeral port could repeat).
        let s = udp_for(&peer, first + i)?;
        s.send_to(&payload, peer)
            .map_err(|e| format!("send from port {}: {e}", first + i))?;
    }
    say(&format!(
        "sent {flows} in {} ms",
        started.elapsed().as_millis()
    ))
}

fn udp_flows(args: &[String]) -> Result<()> {
    let peer: SocketAddr = arg(args, 0, "ADDR:PORT")?;
    let flows: u16 = arg(args, 1, "N")?;
    let packets: u64 = arg(args, 2, "P")?;
    let size: usize = arg(args, 3, "S")?;
    let first: u16 = arg(args, 4, "PORT0")?;
    if u32::from(first) + u32::from(flows) > 65536 {
        return Err("source ports run past 65535".into());
    }
    let sockets = (0..flows)
        .map(|i| udp_for(&peer, first + i))
        .collect::<Result<Vec<_>>>()?;
    let payload = vec![0xa5u8; size];
    // Round robin: every flow stays alive (recently used) until the end.
    // A pause between rounds keeps the receiving veth's backlog (1000
    // packets by default) from dropping datagrams before conntrack sees
    // them, so what was sent is what the kernel counts.
    for round in 0..packets {
        if round > 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
        for (i, s) in sockets.iter().enumerate() {
            s.send_to(&payload, peer)
                .map_err(|e| format!("send from port {}: {e}", usize::from(first) + i))?;
        }
    }
    say(&format!("sent {}", u64::from(flows) * packets))
}
