//! The capture's sources: opening them (the tracking table and the
//! sysctls that make conntrack report, the conntrack event and dump sockets,
//! rtnetlink, NFLOG) while start-up has its privileges, dropping all but
//! CAP_NET_ADMIN after, and registering them, the signalfd and the metadata
//! worker's waker with the loop's `Poll` under their tokens.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use mio::unix::SourceFd;
use mio::{Interest, Poll, Token, Waker};

use super::enforce::Enforcement;
use super::error::{io_err, RunError};
use super::state::Capture;
use crate::config::Config;
use crate::netlink::{
    ConntrackDumper, ConntrackEvents, EventSubscription, EventsConfig, NflogConfig, NflogSocket,
    RouteWatcher,
};
use crate::privileges;
use crate::signals::SignalFd;
use crate::tracking::{self, TrackingTable};

/// The conntrack events the daemon subscribes to. DESTROY carries the
/// final counters; NEW adds nothing the window dumps do not give, and every
/// subscribed event type costs the kernel on the packet path. (The replay
/// tier reads it to feed the flow table what the daemon would receive.)
pub const EVENT_SUBSCRIPTION: EventSubscription = EventSubscription {
    new: false,
    update: false,
    destroy: true,
};

pub(super) const CONNTRACK: Token = Token(0);
pub(super) const ROUTE: Token = Token(1);
pub(super) const SIGNALS: Token = Token(2);
pub(super) const NFLOG: Token = Token(3);
/// The metadata worker has an update for the loop.
pub(super) const METADATA: Token = Token(4);
/// The conntrack dump socket, read in slices while a dump runs.
pub(super) const DUMP: Token = Token(5);
/// The security groups' NFQUEUE.
pub(super) const ENFORCEMENT: Token = Token(6);

/// Bytes of each dropped packet NFLOG copies to us: an IPv6 header with a
/// few extension headers and the transport ports fit; the record's size
/// comes from the IP header, not from the copy.
const NFLOG_COPY_RANGE: u32 = 128;

/// rtnetlink traffic is tiny (links and addresses); 1 MiB absorbs a burst of
/// hot-plugged interfaces.
const ROUTE_RCVBUF_BYTES: usize = 1 << 20;

/// The sockets capture reads, opened with the privileges start-up has.
pub(super) struct Sources {
    /// The nftables table that makes the namespace track connections, if
    /// the daemon installs it.
    pub(super) tracking_table: Option<TrackingTable>,
    pub(super) events: ConntrackEvents,
    pub(super) dumper: ConntrackDumper,
    pub(super) route: RouteWatcher,
    /// NFLOG, if groups are configured.
    pub(super) nflog: Option<NflogSocket>,
    /// The security groups' queue and table, if the config has groups.
    pub(super) enforcement: Option<Enforcement>,
}

impl Sources {
    /// Installs the tracking table (if configured), sets the sysctls and
    /// opens every socket, logging what it got.
    ///
    /// # Errors
    /// A [`RunError`] naming what could not be installed or opened.
    pub(super) fn open(config: &Config) -> Result<Sources, RunError> {
        // Tracking before the sysctls: the sysctl files exist only once
        // nf_conntrack is loaded, which the table (or the socket) does.
        let tracking_table = if config.daemon.install_tracking_table {
            let t = TrackingTable::install_with_tcp_flags(config.tcp_flags_group())
                .map_err(RunError::Tracking)?;
            if t.found_existing() {
                log::info!(
                    "nftables table inet flowlogd (a `ct state` rule, no verdicts) was in place, left by the previous \
                     run so tracking did not stop; renewed it"
                );
            } else {
                log::info!(
                    "installed nftables table inet flowlogd (a `ct state` rule, no verdicts) so this namespace tracks \
                     connections; it stays across restarts (`flowlogd remove-tracking-table` removes it)"
                );
            }
            Some(t)
        } else {
            log::info!(
                "install_tracking_table = false: relying on the host firewall to reference `ct`{}",
                if tracking::table_present() {
                    "; a table inet flowlogd from an earlier run is still in place (`flowlogd remove-tracking-table` \
                     removes it)"
                } else {
                    ""
                }
            );
            None
        };
        // The event socket is opened before the baseline dump, so that no
        // DESTROY between the dump and the subscription is missed.
        let events = ConntrackEvents::open(&EventsConfig {
            subscription: EVENT_SUBSCRIPTION,
            receive_buffer_bytes: config.daemon.conntrack_rcvbuf_bytes as usize,
            reliable: config.daemon.conntrack_reliable_events,
        })
        .map_err(io_err(
            "cannot open the conntrack event socket (needs CAP_NET_ADMIN)",
        ))?;
        let report = tracking::ensure_sysctls(config.daemon.enable_conntrack_accounting)
            .map_err(RunError::Tracking)?;
        for name in &report.enabled {
            let why = if *name == "nf_conntrack_events" {
                "so every connection reports its final counters"
            } else {
                "per-connection counters and timestamps need it"
            };
            log::info!("set net.netfilter.{name}=1 ({why})");
        }
        log::info!(
            "conntrack events: DESTROY, receive buffer {} bytes, reliable delivery {}",
            events.receive_buffer_granted(),
            if config.daemon.conntrack_reliable_events {
                "on"
            } else {
                "off"
            }
        );
        let dumper =
            ConntrackDumper::open().map_err(io_err("cannot open the conntrack dump socket"))?;
        let route = RouteWatcher::open(ROUTE_RCVBUF_BYTES)
            .map_err(io_err("cannot open the rtnetlink socket"))?;
        let nflog = open_nflog(config)?;
        let enforcement = super::enforce::open(config)?;
        Ok(Sources {
            tracking_table,
            events,
            dumper,
            route,
            nflog,
            enforcement,
        })
    }
}

/// The NFLOG socket, bound to the drop groups and to the tcp-flags group
/// if a sink's field list names tcp-flags; `None` with neither.
fn open_nflog(config: &Config) -> Result<Option<NflogSocket>, RunError> {
    let tcp_flags_group = config.tcp_flags_group();
    if config.daemon.nflog_groups.is_empty() {
        log::info!("no NFLOG groups configured (daemon.nflog_groups): no REJECT records");
        if tcp_flags_group.is_none() {
            return Ok(None);
        }
    }
    let socket = NflogSocket::open(&NflogConfig {
        groups: config.daemon.nflog_groups.clone(),
        tcp_flags_group,
        copy_range: NFLOG_COPY_RANGE,
        receive_buffer_bytes: config.daemon.nflog_rcvbuf_bytes as usize,
    })
    .map_err(io_err("cannot bind the NFLOG groups"))?;
    if !config.daemon.nflog_groups.is_empty() {
        log::info!(
            "NFLOG groups {:?} (drops logged with prefix flowlogd:<security-group>:<rule> become REJECT records{}), \
             receive buffer {} bytes",
            config.daemon.nflog_groups,
            if config.daemon.nflog_require_prefix { "; other prefixes are ignored and counted" } else { "" },
            socket.receive_buffer_granted()
        );
    }
    if let Some(group) = tcp_flags_group {
        log::info!(
            "tcp-flags: a sink's field list names it, so TCP SYN, FIN and RST packets are logged to NFLOG group \
             {group} by table inet flowlogd's tcp_flags_* chains (one copy of the headers per control packet)"
        );
        if !socket.tcp_flags_conntrack() {
            log::warn!(
                "tcp-flags: this kernel cannot attach conntrack entries to NFLOG messages \
                 (CONFIG_NETFILTER_NETLINK_GLUE_CT): flags are placed by the packets' headers, exact except for \
                 packets arriving on NAT'd connections, whose flags cannot be placed; windows with those are \
                 marked SKIPDATA for their ENI"
            );
        }
    }
    Ok(Some(socket))
}

/// Registers the capture's sockets and `signals` with `poll`, and returns
/// the waker for the metadata worker.
///
/// # Errors
/// A [`RunError`] naming what could not be registered.
pub(super) fn register(
    poll: &Poll,
    capture: &mut Capture,
    signals: &SignalFd,
) -> Result<Arc<Waker>, RunError> {
    let registry = poll.registry();
    registry
        .register(
            &mut SourceFd(&capture.events.as_raw_fd()),
            CONNTRACK,
            Interest::READABLE,
        )
        .map_err(io_err("cannot poll the conntrack socket"))?;
    registry
        .register(
            &mut SourceFd(&capture.route.as_raw_fd()),
            ROUTE,
            Interest::READABLE,
        )
        .map_err(io_err("cannot poll the rtnetlink socket"))?;
    registry
        .register(
            &mut SourceFd(&signals.as_raw_fd()),
            SIGNALS,
            Interest::READABLE,
        )
        .map_err(io_err("cannot poll the signalfd"))?;
    if let Some((socket, _)) = &capture.nflog {
        registry
            .register(
                &mut SourceFd(&socket.as_raw_fd()),
                NFLOG,
                Interest::READABLE,
            )
            .map_err(io_err("cannot poll the NFLOG socket"))?;
    }
    if let Some(e) = &capture.enforcement {
        registry
            .register(
                &mut SourceFd(&e.enforcer.as_raw_fd()),
                ENFORCEMENT,
                Interest::READABLE,
            )
            .map_err(io_err("cannot poll the NFQUEUE socket"))?;
    }
    // The baseline used the dump socket blocking; from here on the loop
    // reads it in slices. A socket replaced since is registered anew.
    let _ = capture.dumper.take_reopened();
    register_dumper(poll, &capture.dumper).map_err(io_err("cannot poll the dump socket"))?;
    Ok(Arc::new(
        Waker::new(registry, METADATA).map_err(io_err("cannot create the event loop's waker"))?,
    ))
}

/// A dump socket replaced since the last look (the dumper reopens it after
/// an error) is registered anew.
pub(super) fn register_reopened_dumper(poll: &Poll, dumper: &mut ConntrackDumper) {
    if dumper.take_reopened() {
        if let Err(e) = register_dumper(poll, dumper) {
            log::error!("cannot poll the new dump socket: {e}; dumps are read when other sockets wake the loop");
        }
    }
}

/// Registers the dump socket, if there is one, for readability.
fn register_dumper(poll: &Poll, dumper: &ConntrackDumper) -> io::Result<()> {
    let fd = dumper.as_raw_fd();
    if fd < 0 {
        return Ok(());
    }
    poll.registry()
        .register(&mut SourceFd(&fd), DUMP, Interest::READABLE)
}

/// Keeps only CAP_NET_ADMIN (and becomes `daemon.user`), and checks that
/// `state_dir` (made at start, `startup::check_state_dir`, owned by that
/// user) is writable by whoever the daemon is then.
pub(super) fn drop_privileges(config: &Config) -> Result<(), RunError> {
    let (state_dir, user) = (&config.daemon.state_dir, config.daemon.user.as_ref());
    let report = privileges::keep_only_net_admin(user).map_err(RunError::Privileges)?;
    log::info!("{report}");
    privileges::check_state_dir(state_dir, user).map_err(RunError::Privileges)
}
