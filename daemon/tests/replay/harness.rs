//! Replays a captured netlink fixture through the daemon's own stages, in
//! the order the capture loop (`capture/build.rs`, `capture/state.rs`, `capture/closer.rs`) calls
//! them, with a clock the test sets: parse -> ENI registry -> flow table /
//! REJECT capture -> window close -> records per flow log instance.
//!
//! Every call into the daemon is in this file, so that when a stage moves
//! only this file changes; the tests in `replay.rs` see windows of records.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use flowlogd::config::{self, Config};
use flowlogd::eni::EniRegistry;
use flowlogd::flows::{Clock, FlowTable};
use flowlogd::instances::InstanceDrain;
use flowlogd::model::{ConntrackEntry, ConntrackKind};
use flowlogd::netlink::parsers::{
    parse_conntrack_message, parse_nflog_packet, parse_route_message, Messages,
};
use flowlogd::netlink::EventSubscription;
use flowlogd::rejects::RejectCapture;
use flowlogd_plugin_api::FlowRecord;

/// NFNL_SUBSYS_ULOG << 8 | NFULNL_MSG_PACKET: a logged packet.
const NFLOG_PACKET: u16 = 4 << 8;
/// Most records per chunk. The loop's bound (`EMIT_CHUNK_RECORDS`, or less
/// for small sink queues) is larger; two makes a window of a few records
/// come out in several chunks, as a large window does in the daemon.
const CHUNK_RECORDS: usize = 2;

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/netlink")
}

/// The time, set by the replay: the loop reads the wall clock, the replay
/// moves it to each window's deadline when the capture closed the window.
#[derive(Debug)]
pub struct ReplayClock(Cell<i64>);

impl Clock for ReplayClock {
    fn now_unix(&self) -> i64 {
        self.0.get()
    }
}

/// One closed window: its bounds as the table closed it, and the records
/// each flow log instance got (indexed like `config.flow_logs`).
#[derive(Debug)]
pub struct ClosedWindow {
    pub start: i64,
    pub end: i64,
    pub per_instance: Vec<Vec<FlowRecord>>,
}

/// The capture state the loop builds at start-up, fed from a fixture.
pub struct Replay {
    pub config: Config,
    clock: Rc<ReplayClock>,
    registry: EniRegistry,
    table: FlowTable<Rc<ReplayClock>>,
    rejects: RejectCapture,
    /// The dump being replayed (its number in the fixture).
    dump: Option<u32>,
    pub windows: Vec<ClosedWindow>,
}

impl Replay {
    /// Start-up as `capture::run` does it, at Unix second `now`, with the
    /// config parsed from `toml` by the daemon's loader.
    pub fn start(toml: &str, now: i64) -> Replay {
        let config = config::parse(Path::new("/etc/flowlogd.toml"), toml)
            .unwrap_or_else(|e| panic!("test config refused: {e}"));
        let clock = Rc::new(ReplayClock(Cell::new(now)));
        let registry = flowlogd::instances::registry_for(&config).expect("ENI registry");
        let mut table = FlowTable::new(
            Rc::clone(&clock),
            config.daemon.capture_window_secs,
            config.daemon.max_flows,
        )
        .with_window_memory_bytes(config.daemon.window_memory_bytes);
        table.start_first_window_at(now);
        let rejects = RejectCapture::new(config.daemon.nflog_require_prefix);
        Replay {
            config,
            clock,
            registry,
            table,
            rejects,
            dump: None,
            windows: Vec::new(),
        }
    }

    /// Replays every message of fixture `name` (`<source>:<what> <hex>`
    /// lines, see tests/fixtures/netlink/README.md) in order. The capture
    /// read each dump to its end before it read events again, so an event
    /// after a dump's `done` line is applied after that dump ends; the
    /// loop would apply one that arrived during the dump before it ends
    /// (`end_dump` drains first), which a fixture cannot tell apart.
    pub fn run_fixture(&mut self, name: &str) {
        let path = fixtures().join(name);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        for line in text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let (label, hex) = line.split_once(' ').expect("`<label> <hex>` line");
            let (source, what) = label.split_once(':').expect("`<source>:<what>` label");
            self.message(source, what, &from_hex(hex));
        }
        assert!(self.dump.is_none(), "{name} ends inside a dump");
    }

    fn message(&mut self, source: &str, what: &str, bytes: &[u8]) {
        match source {
            "route" => self.route(bytes),
            "ct" => {
                let entry = parse_conntrack_message(bytes).expect("conntrack event");
                if subscribed(&entry) {
                    self.table.on_event(&self.registry, &entry);
                }
            }
            "nflog" => {
                let message = Messages::new(bytes).next().expect("one message").unwrap();
                assert_eq!(message.message_type, NFLOG_PACKET);
                let (packet, _seq) = parse_nflog_packet(message.payload).expect("NFLOG packet");
                self.rejects
                    .on_packet(&self.registry, &mut self.table, &packet);
            }
            dump => {
                let n: u32 = dump
                    .strip_prefix("dump")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("unknown source {source}"));
                self.dump_message(n, what, bytes);
            }
        }
        assert!(
            !self.table.has_spill(),
            "the default memory bound was reached: the replay does not emit early"
        );
    }

    /// `drain_route` and `after_registry_change`.
    fn route(&mut self, bytes: &[u8]) {
        let Some(event) = parse_route_message(bytes).expect("rtnetlink message") else {
            return;
        };
        // The loop harvests an ENI's flows with a dump before it loses an
        // address or its interface; a fixture with such an event would need
        // that dump captured at that point.
        assert!(
            !self.registry.takes_from_an_eni(&event),
            "the fixture takes from an ENI, which the replay cannot harvest: {event:?}"
        );
        self.registry.apply(&event, self.clock.now_unix());
        for eni in self.registry.take_detached() {
            self.table.detach(eni);
        }
        let _ = self.registry.take_metadata_requests();
    }

    /// Dump 0 is the start-up baseline (`Capture::baseline`); every later
    /// one closes the open window at its deadline (`begin_close`,
    /// `start_dump`, `read_dump_slice`, `end_dump`, `emit_closed_window`).
    fn dump_message(&mut self, n: u32, what: &str, bytes: &[u8]) {
        if self.dump != Some(n) {
            assert!(self.dump.is_none(), "dump {n} starts inside another");
            self.dump = Some(n);
            if n > 0 {
                let deadline = self.table.next_deadline();
                self.clock.0.set(deadline);
                self.table.begin_close(deadline);
            }
            self.table.begin_dump();
        }
        match what {
            "entry" => {
                let mut entry: ConntrackEntry = parse_conntrack_message(bytes).expect("dump line");
                // As the dumper does: replies look like UPDATE events.
                entry.kind = ConntrackKind::Dump;
                if n == 0 {
                    self.table.baseline(&self.registry, &entry);
                } else {
                    self.table.on_dump_entry(&self.registry, &entry);
                }
            }
            "done" => {
                self.dump = None;
                if n == 0 {
                    // The baseline defines what is known; nothing is missing yet.
                    self.table.end_dump(false);
                } else {
                    self.table.end_dump(true);
                    self.emit_closed_window();
                }
            }
            other => panic!("unknown dump line {other}"),
        }
    }

    /// The closed window's records, chunk by chunk, as the loop sends them
    /// to the instances' sinks.
    fn emit_closed_window(&mut self) {
        let drain = self
            .table
            .finish_close(&self.registry)
            .expect("a window was closing");
        let mut drain = InstanceDrain::new(drain, &self.config.flow_logs, &self.registry);
        let mut per_instance = vec![Vec::new(); self.config.flow_logs.len()];
        let (mut start, mut end) = (None, None);
        while let Some(chunk) = drain.next_chunk(CHUNK_RECORDS) {
            for (instance, records) in &chunk.instances {
                for r in records.iter() {
                    // Every record carries its window's bounds.
                    assert_eq!(*start.get_or_insert(r.start), r.start);
                    assert_eq!(*end.get_or_insert(r.end), r.end);
                }
                per_instance[*instance].extend(records.iter().cloned());
            }
        }
        self.windows.push(ClosedWindow {
            start: start.expect("a closed window has records (NODATA at least)"),
            end: end.expect("a closed window has records"),
            per_instance,
        });
    }
}

/// Whether the daemon's event socket receives `entry`: the capture joined
/// every conntrack group, the daemon joins the groups of
/// `capture::EVENT_SUBSCRIPTION` (DESTROY only: NEW and UPDATE carry no counters and no
/// timestamps, so the dumps and DESTROY give all the table needs).
fn subscribed(entry: &ConntrackEntry) -> bool {
    const DAEMON: EventSubscription = flowlogd::capture::EVENT_SUBSCRIPTION;
    match entry.kind {
        ConntrackKind::New => DAEMON.new,
        ConntrackKind::Update => DAEMON.update,
        ConntrackKind::Destroy => DAEMON.destroy,
        ConntrackKind::Dump => panic!("a dump line among the events"),
    }
}

fn from_hex(hex: &str) -> Vec<u8> {
    assert!(hex.len() % 2 == 0, "odd hex length");
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex digit"))
        .collect()
}
