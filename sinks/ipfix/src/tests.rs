//! The sink over real sockets on loopback: what a collector receives,
//! decoded by `test_records::decode`.

use std::io::Read;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use flowlogd_plugin_api::{Action, FlowRecord, LogStatus};

use super::*;
use crate::test_records::{decode, flow_record, status_record, with_views, Decoded};

fn sink(options: &str) -> IpfixSink {
    let table: toml::Table = toml::from_str(options).unwrap();
    IpfixSink::open(&Host::standalone("t"), &Options::from_toml_table(&table)).unwrap()
}

fn records(n: usize) -> Vec<FlowRecord> {
    (0..n)
        .map(|i| match i % 4 {
            3 => status_record(LogStatus::NoData),
            2 => flow_record(
                "2001:db8::1",
                i as u16,
                "2001:db8::2",
                22,
                Action::Reject,
                Some("sg:deny-ssh"),
            ),
            _ => flow_record("10.0.0.1", i as u16, "10.0.0.2", 53, Action::Accept, None),
        })
        .collect()
}

fn write(sink: &mut IpfixSink, records: &[FlowRecord]) -> Result<(), SinkError> {
    with_views(records, |v| sink.write(v))
}

/// The datagrams that arrive within 300 ms of each other.
fn datagrams(s: &UdpSocket) -> Vec<Decoded> {
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    while let Ok(n) = s.recv(&mut buf) {
        out.push(decode(&buf[..n]));
        assert!(out.len() < 10_000, "runaway");
    }
    out
}

fn data_records(messages: &[Decoded]) -> usize {
    messages.iter().map(|m| m.records.len()).sum()
}

fn template_sets(messages: &[Decoded]) -> usize {
    messages
        .iter()
        .flat_map(|m| &m.sets)
        .filter(|s| s.0 == 2)
        .count()
}

#[test]
fn udp_templates_first_then_records_counted_in_sequence_numbers() {
    let collector = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = collector.local_addr().unwrap().port();
    let mut s = sink(&format!(
        "collector = \"127.0.0.1:{port}\"\nenterprise_number = 32473\nobservation_domain_id = 9"
    ));
    let at_open = datagrams(&collector);
    assert_eq!(at_open.len(), 1, "the templates, at open");
    assert_eq!(at_open[0].sets, vec![(2, 5)]);
    assert_eq!(at_open[0].domain, 9);

    write(&mut s, &records(100)).unwrap();
    write(&mut s, &records(7)).unwrap();
    let got = datagrams(&collector);
    assert_eq!(data_records(&got), 107);
    assert_eq!(template_sets(&got), 0, "refresh not due yet");
    let mut expected_seq = 0u32;
    for m in &got {
        assert!(m.length <= 1400);
        assert_eq!(m.sequence, expected_seq);
        expected_seq += m.records.len() as u32;
    }
    // Templates per record: v4 ACCEPT, v4, v6 REJECT, NODATA.
    let templates: Vec<u16> = got[0].records.iter().take(4).map(|r| r.0).collect();
    assert_eq!(templates, [256, 256, 257, 260]);
}

#[test]
fn udp_templates_are_sent_again_after_the_refresh_interval() {
    let collector = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = collector.local_addr().unwrap().port();
    let mut s = sink(&format!(
        "collector = \"127.0.0.1:{port}\"\nenterprise_number = 32473\ntemplate_refresh_secs = 1"
    ));
    assert_eq!(template_sets(&datagrams(&collector)), 1);
    write(&mut s, &records(3)).unwrap();
    assert_eq!(template_sets(&datagrams(&collector)), 0);
    std::thread::sleep(Duration::from_millis(1100));
    write(&mut s, &records(3)).unwrap();
    let got = datagrams(&collector);
    assert_eq!(template_sets(&got), 1, "refreshed");
    assert_eq!(got[0].sets[0], (2, 5), "templates before the records");
    assert_eq!(got[0].sequence, 3, "templates do not count");
    assert_eq!(data_records(&got), 3);
}

/// The next connection to `listener`, waiting at most 5 s.
fn accept(listener: &TcpListener) -> TcpStream {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match listener.accept() {
            Ok((peer, _)) => {
                peer.set_nonblocking(false).unwrap();
                return peer;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "no connection within 5 s");
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// Reads messages from a stream until `records` data records arrived
/// (bounded by a timeout).
fn read_messages(peer: &mut TcpStream, records: usize) -> Vec<Decoded> {
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut data = Vec::new();
    let mut out: Vec<Decoded> = Vec::new();
    let mut buf = [0u8; 65536];
    while data_records(&out) < records || out.is_empty() {
        let n = peer.read(&mut buf).expect("messages within 5 s");
        assert!(n > 0, "peer closed after {} records", data_records(&out));
        data.extend_from_slice(&buf[..n]);
        while data.len() >= 4 {
            let len = u16::from_be_bytes([data[2], data[3]]) as usize;
            if data.len() < len {
                break;
            }
            out.push(decode(&data[..len]));
            data.drain(..len);
        }
    }
    out
}

#[test]
fn tcp_a_collector_restart_between_batches_gets_templates_and_loses_nothing() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut s = sink(&format!(
        "transport = \"tcp\"\ncollector = \"127.0.0.1:{port}\"\nenterprise_number = 32473"
    ));
    let mut peer = accept(&listener);
    write(&mut s, &records(3000)).unwrap();
    let got = read_messages(&mut peer, 3000);
    assert_eq!(got[0].sets, vec![(2, 5)], "templates first");
    assert_eq!(data_records(&got), 3000);
    assert!(got.len() > 2, "3000 records need several 64 KiB messages");
    // The collector goes away between batches. Without the check before
    // writing, the next batch would go into the dead connection and
    // vanish without an error.
    drop(peer);
    std::thread::sleep(Duration::from_millis(50));
    write(&mut s, &records(10)).unwrap();
    let mut peer = accept(&listener);
    let got = read_messages(&mut peer, 10);
    assert_eq!(
        got[0].sets,
        vec![(2, 5)],
        "templates again on the new connection"
    );
    assert_eq!(got[1].sequence, 0, "a new session counts from 0");
    assert_eq!(data_records(&got), 10);
}

#[test]
fn tcp_a_collector_that_is_down_gets_a_retry_and_the_batch_later() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let mut s = sink(&format!(
        "transport = \"tcp\"\ncollector = \"127.0.0.1:{port}\"\nenterprise_number = 32473"
    ));
    let err = write(&mut s, &records(5)).unwrap_err();
    assert_eq!(err.kind, flowlogd_plugin_api::ErrorKind::Retry, "{err:?}");
    assert!(err.message.contains("cannot connect"), "{}", err.message);
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    write(&mut s, &records(5)).unwrap();
    let mut peer = accept(&listener);
    let got = read_messages(&mut peer, 5);
    assert_eq!(got[0].sets, vec![(2, 5)]);
    assert_eq!(data_records(&got), 5);
}

/// IPv4 records whose packet counts are 0..n: each one recognisable.
fn numbered(n: usize) -> Vec<FlowRecord> {
    (0..n)
        .map(|i| {
            let mut r = flow_record("10.0.0.1", i as u16, "10.0.0.2", 53, Action::Accept, None);
            r.flow.as_mut().unwrap().packets = i as u64;
            r
        })
        .collect()
}

/// The packet counts of decoded IPv4 flow records, in order.
fn packet_counts(messages: &[Decoded]) -> Vec<u64> {
    messages
        .iter()
        .flat_map(|m| &m.records)
        .map(|(t, r)| {
            assert_eq!(*t, TEMPLATE_FLOW_V4);
            u64::from_be_bytes(r[13..21].try_into().unwrap())
        })
        .collect()
}

/// Reads to EOF; returns the whole messages (a cut one at the end is
/// dropped, as a collector does).
fn read_to_end(peer: &mut TcpStream) -> Vec<Decoded> {
    peer.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut data = Vec::new();
    peer.read_to_end(&mut data).expect("EOF within 10 s");
    let mut out = Vec::new();
    let mut at = 0;
    while data.len() - at >= 4 {
        let len = u16::from_be_bytes([data[at + 2], data[at + 3]]) as usize;
        if data.len() - at < len {
            break;
        }
        out.push(decode(&data[at..at + len]));
        at += len;
    }
    out
}

#[test]
fn tcp_a_write_that_fails_part_way_resumes_after_the_whole_messages_sent() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut s = sink(&format!(
        "transport = \"tcp\"\ncollector = \"127.0.0.1:{port}\"\nenterprise_number = 32473"
    ));
    let mut first = accept(&listener);
    // The collector does not read: the socket buffers fill and the send
    // times out part way through the batch (26 MB: more than loopback TCP
    // buffers hold, at most 4 MiB sending and 6 MiB receiving by default).
    let batch = numbered(200_000);
    let err = write(&mut s, &batch).unwrap_err();
    assert_eq!(err.kind, flowlogd_plugin_api::ErrorKind::Retry, "{err:?}");
    // The failed session is closed: the collector gets what was written.
    let got_first = read_to_end(&mut first);
    let sent_first = packet_counts(&got_first);
    assert!(
        !sent_first.is_empty() && sent_first.len() < batch.len(),
        "{} records in whole messages before the failure",
        sent_first.len()
    );
    assert!(
        err.message
            .contains(&format!("after {} of 200000 records", sent_first.len())),
        "{}",
        err.message
    );
    // The host's retry of the same batch: a new session, templates first,
    // then exactly the records not sent in whole messages.
    let collector = std::thread::spawn(move || {
        let mut second = accept(&listener);
        read_to_end(&mut second)
    });
    write(&mut s, &batch).unwrap();
    drop(s);
    let got_second = collector.join().unwrap();
    assert_eq!(got_second[0].sets, vec![(2, 5)]);
    assert_eq!(got_second[1].sequence, 0);
    let mut all = sent_first;
    all.extend(packet_counts(&got_second));
    assert_eq!(all.len(), batch.len(), "each record once");
    assert_eq!(all, (0..200_000).collect::<Vec<u64>>());
}
