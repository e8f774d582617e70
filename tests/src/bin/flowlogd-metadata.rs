//! A stand-in for the Alibaba Cloud ECS instance metadata service, for
//! flowlogd's end-to-end tests: it serves the service's real paths under
//! `/latest/meta-data/` with the values given on the command line, inside
//! a test's network namespace (`ip netns exec <ns> flowlogd-metadata ...`).
//!
//! ```text
//! flowlogd-metadata ADDR:PORT INSTANCE_ID ACCOUNT_ID [MAC=ENI_ID,VPC_ID,VSWITCH_ID ...]
//! ```
//!
//! Served as the service does (plain text, no trailing newline):
//!
//! ```text
//! /latest/meta-data/instance-id
//! /latest/meta-data/owner-account-id
//! /latest/meta-data/network/interfaces/macs/            one "MAC/" a line
//! /latest/meta-data/network/interfaces/macs/MAC/network-interface-id
//! /latest/meta-data/network/interfaces/macs/MAC/vpc-id
//! /latest/meta-data/network/interfaces/macs/MAC/vswitch-id
//! ```
//!
//! Anything else is a 404. It prints `listening PORT`, then `GET PATH STATUS`
//! for each request, and exits when its stdin closes (the test dropping it)
//! or after ten minutes, whichever comes first.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

/// An orphaned server (a test killed hard) must not outlive it for long.
const LIFETIME: Duration = Duration::from_secs(600);
const IO_TIMEOUT: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flowlogd-metadata: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Vec<String>) -> Result<(), String> {
    let usage = "usage: flowlogd-metadata ADDR:PORT INSTANCE_ID ACCOUNT_ID [MAC=ENI_ID,VPC_ID,VSWITCH_ID ...]";
    let [addr, instance, account, enis @ ..] = args.as_slice() else {
        return Err(usage.into());
    };
    let addr: SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let base = "/latest/meta-data/";
    let mut docs = BTreeMap::new();
    docs.insert(format!("{base}instance-id"), instance.clone());
    docs.insert(format!("{base}owner-account-id"), account.clone());
    let mut listing = Vec::new();
    for e in enis {
        let (mac, ids) = e.split_once('=').ok_or(usage)?;
        let [eni, vpc, vsw] = ids.split(',').collect::<Vec<_>>()[..] else {
            return Err(usage.into());
        };
        listing.push(format!("{mac}/"));
        let dir = format!("{base}network/interfaces/macs/{mac}/");
        docs.insert(format!("{dir}network-interface-id"), eni.to_owned());
        docs.insert(format!("{dir}vpc-id"), vpc.to_owned());
        docs.insert(format!("{dir}vswitch-id"), vsw.to_owned());
    }
    docs.insert(
        format!("{base}network/interfaces/macs/"),
        listing.join("\n"),
    );

    let listener = TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    say(&format!("listening {port}"));
    std::thread::spawn(|| {
        // EOF (or an error) on stdin: the test is done with us.
        let _ = io::stdin().read_to_end(&mut Vec::new());
        std::process::exit(0);
    });
    std::thread::spawn(|| {
        std::thread::sleep(LIFETIME);
        std::process::exit(0);
    });
    for conn in listener.incoming() {
        match conn {
            Ok(c) => {
                if let Err(e) = serve(c, &docs) {
                    eprintln!("flowlogd-metadata: {e}");
                }
            }
            Err(e) => eprintln!("flowlogd-metadata: accept: {e}"),
        }
    }
    Ok(())
}

fn say(line: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// One request per connection, as flowlogd asks (`Connection: close`).
fn serve(mut c: TcpStream, docs: &BTreeMap<String, String>) -> io::Result<()> {
    c.set_read_timeout(Some(IO_TIMEOUT))?;
    c.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = c.read(&mut buf)?;
        if n == 0 || request.len() > 16 * 1024 {
            return Ok(());
        }
        request.extend_from_slice(&buf[..n]);
    }
    let request = String::from_utf8_lossy(&request);
    let mut words = request.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let (status, body) = match docs.get(path) {
        Some(v) if method == "GET" => ("200 OK", v.as_str()),
        _ => ("404 Not Found", "404 Not Found"),
    };
    say(&format!("{method} {path} {}", &status[..3]));
    write!(
        c,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    c.flush()
}
