//! A netlink socket: non-blocking event reads in batches (recvmmsg, see
//! `batch_recv`), single reads into one reused buffer for the synchronous
//! request/dump exchange that the conntrack and route dumps share.

use std::io;
use std::os::unix::io::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use netlink_packet_core::{
    NetlinkBuffer, NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP, NLMSG_OVERRUN, NLM_F_DUMP_INTR,
};
use netlink_sys::{Socket, SocketAddr};

use super::batch_recv::{
    BatchRead, BatchReceiver, ReceiveSlots, Slot, KERNEL_PORT_ID, RECEIVE_BUFFER_LEN,
};
use super::stats::DrainStats;

// include/uapi/linux/netlink.h
const NLMSG_HDRLEN: usize = 16;
const NLMSG_ALIGNTO: usize = 4;

/// Knobs of a netlink socket, applied once at open.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SocketOptions {
    /// Multicast groups to join (NETLINK_ADD_MEMBERSHIP), by group number.
    pub groups: Vec<u32>,
    /// Kernel receive buffer (SO_RCVBUFFORCE, falling back to SO_RCVBUF),
    /// in bytes; `None` keeps the system default (net.core.rmem_default).
    pub receive_buffer_bytes: Option<usize>,
    /// NETLINK_NO_ENOBUFS: the kernel stops reporting ENOBUFS to this
    /// socket when it drops messages for it.
    pub no_enobufs: bool,
    /// NETLINK_BROADCAST_ERROR: a failed delivery to this socket is reported
    /// back to the kernel code that broadcast the message.
    pub broadcast_error: bool,
    /// Reads block; `receive_timeout` (SO_RCVTIMEO) bounds each read.
    pub blocking: bool,
    pub receive_timeout: Option<Duration>,
    /// Buffers of `drain_messages`, which reads a batch of datagrams per
    /// system call. `recv` and `dump` always use one buffer of
    /// [`RECEIVE_BUFFER_LEN`].
    pub receive_slots: ReceiveSlots,
}

/// The outcome of one read.
#[derive(Debug, PartialEq, Eq)]
pub enum Received<'a> {
    /// One datagram; it may hold several netlink messages.
    Datagram(&'a [u8]),
    /// Nothing queued (EAGAIN), or the receive timeout passed.
    WouldBlock,
    /// ENOBUFS: the socket's receive queue was full and the kernel dropped
    /// messages meant for it. The messages still queued can be read next.
    Overrun,
    /// A datagram another process sent (port id `sender`), not the
    /// kernel: skipped unparsed, the first one per socket logged. Read on.
    Foreign { sender: u32 },
}

/// A netlink socket bound to an address the kernel picks, optionally
/// subscribed to multicast groups.
#[derive(Debug)]
pub struct NetlinkSocket {
    socket: Socket,
    port_id: u32,
    /// The buffer of `recv` (one datagram at a time), allocated by the
    /// first `recv`: event sockets that are only drained never need it.
    buf: Vec<u8>,
    /// The slots of `drain_messages` (a batch at a time).
    batch: BatchReceiver,
    receive_buffer_granted: usize,
    /// Datagrams from other processes skipped so far, by either read: only
    /// the first one is logged.
    foreign: u64,
    /// The only sender of data: the kernel, except in tests.
    trusted_sender: u32,
}

impl NetlinkSocket {
    /// Open a socket of netlink `protocol` (`netlink_sys::protocols`).
    ///
    /// # Errors
    ///
    /// Any failing socket call: joining a multicast group needs
    /// CAP_NET_ADMIN for the netfilter groups (EPERM otherwise).
    pub fn open(protocol: isize, options: &SocketOptions) -> io::Result<Self> {
        let mut socket = Socket::new(protocol)?;
        let addr = socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        socket.set_non_blocking(!options.blocking)?;
        if let Some(timeout) = options.receive_timeout {
            set_receive_timeout(socket.as_raw_fd(), timeout)?;
        }
        if options.no_enobufs {
            socket.set_no_enobufs(true)?;
        }
        if options.broadcast_error {
            socket.set_broadcast_error(true)?;
        }
        for &group in &options.groups {
            socket.add_membership(group)?;
        }
        let mut this = NetlinkSocket {
            port_id: addr.port_number(),
            socket,
            buf: Vec::new(),
            batch: BatchReceiver::new(options.receive_slots),
            receive_buffer_granted: 0,
            foreign: 0,
            trusted_sender: KERNEL_PORT_ID,
        };
        this.receive_buffer_granted = match options.receive_buffer_bytes {
            Some(bytes) => this.set_receive_buffer(bytes)?,
            None => this.socket.get_rx_buf_sz()?,
        };
        Ok(this)
    }

    /// Ask for a kernel receive buffer of `bytes`. SO_RCVBUFFORCE (needs
    /// CAP_NET_ADMIN) ignores net.core.rmem_max; without the capability
    /// SO_RCVBUF is capped at rmem_max. Returns the size the kernel reports
    /// afterwards, which is twice what was granted (socket(7): the kernel
    /// doubles the value for its bookkeeping).
    ///
    /// # Errors
    ///
    /// When both setsockopt calls fail.
    pub fn set_receive_buffer(&mut self, bytes: usize) -> io::Result<usize> {
        // The kernel doubles the int it is given; keep the double in range.
        let value = bytes.min(i32::MAX as usize / 2) as libc::c_int;
        let fd = self.socket.as_raw_fd();
        if setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, value).is_err() {
            setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, value)?;
        }
        self.receive_buffer_granted = self.socket.get_rx_buf_sz()?;
        Ok(self.receive_buffer_granted)
    }

    /// After an overrun: twice the buffer, if still under `max_bytes`
    /// (`daemon.rcvbuf_max_bytes`), so that the next burst of the same size
    /// fits. Logs what it did, naming the socket `what`; a failure to grow
    /// is logged and the socket goes on with the buffer it has.
    pub fn grow_receive_buffer(&mut self, max_bytes: u64, what: &str) {
        let granted = self.receive_buffer_granted;
        if let Some(bigger) = grown_buffer(granted, max_bytes) {
            match self.set_receive_buffer(bigger) {
                Ok(now) => {
                    log::warn!("{what}: receive buffer grown from {granted} to {now} bytes")
                }
                Err(e) => log::warn!("{what}: cannot grow the receive buffer: {e}"),
            }
        }
    }

    /// Switch between blocking and non-blocking reads (a socket that was
    /// configured with blocking request/ACK exchanges joins the event loop).
    ///
    /// # Errors
    /// The fcntl error.
    pub fn set_non_blocking(&self, non_blocking: bool) -> io::Result<()> {
        self.socket.set_non_blocking(non_blocking)
    }

    /// The receive buffer size as the kernel last reported it (doubled).
    pub fn receive_buffer_granted(&self) -> usize {
        self.receive_buffer_granted
    }

    /// Send one request to the kernel.
    ///
    /// # Errors
    ///
    /// The send(2) error; a short send is reported as `WriteZero`.
    pub fn send(&self, request: &[u8]) -> io::Result<()> {
        let sent = self.socket.send(request, 0)?;
        if sent != request.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("netlink send wrote {sent} of {} bytes", request.len()),
            ));
        }
        Ok(())
    }

    /// Read one datagram into the socket's buffer. EINTR is retried. A
    /// datagram from another process is not handed out: it is counted and
    /// reported as [`Received::Foreign`].
    ///
    /// # Errors
    ///
    /// Errors of recv(2) other than EAGAIN, EINTR and ENOBUFS (which are
    /// results), and `InvalidData` when a datagram was larger than the
    /// buffer and therefore cut.
    pub fn recv(&mut self) -> io::Result<Received<'_>> {
        if self.buf.is_empty() {
            self.buf = vec![0; RECEIVE_BUFFER_LEN];
        }
        loop {
            // MSG_TRUNC makes recv return the datagram's real length, so a
            // datagram larger than the buffer is detected, not parsed cut.
            match self
                .socket
                .recv_from(&mut &mut self.buf[..], libc::MSG_TRUNC)
            {
                // Checked first: a forged datagram is not even measured.
                Ok((_, from)) if from.port_number() != self.trusted_sender => {
                    let sender = from.port_number();
                    self.on_foreign("netlink socket", sender);
                    return Ok(Received::Foreign { sender });
                }
                Ok((len, _)) if len > self.buf.len() => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "netlink datagram of {len} bytes exceeds the {} byte buffer",
                            self.buf.len()
                        ),
                    ))
                }
                Ok((len, _)) => return Ok(Received::Datagram(&self.buf[..len])),
                Err(e) => match e.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::ENOBUFS) => return Ok(Received::Overrun),
                    _ if e.kind() == io::ErrorKind::WouldBlock => return Ok(Received::WouldBlock),
                    _ => return Err(e),
                },
            }
        }
    }

    /// Reads datagrams until none is queued or `budget` datagrams are read,
    /// and hands every netlink message in them to `on_message`. Counts
    /// messages, overruns (ENOBUFS), malformed headers and cut datagrams
    /// (as parse errors) and read errors in the returned stats; sets
    /// `more_pending` when the budget ran out, because readiness will not
    /// be reported again for what is still queued. `what` names the socket
    /// in logs.
    ///
    /// Reads never block (MSG_DONTWAIT), also on a socket opened blocking,
    /// and fill up to `SocketOptions::receive_slots` datagrams per system
    /// call. An overrun report uses up one datagram of the budget, as
    /// when each read was one recv(2).
    pub fn drain_messages(
        &mut self,
        what: &str,
        budget: usize,
        mut on_message: impl FnMut(Message<'_>, &mut DrainStats),
    ) -> DrainStats {
        let mut stats = DrainStats::default();
        let fd = self.socket.as_raw_fd();
        let mut left = budget;
        while left > 0 {
            // A short batch does not mean the queue is empty: recvmmsg also
            // stops at an error (a dropped multicast), returns what it read
            // and reports the error on the next call. Only EAGAIN ends the
            // drain.
            match self.batch.read(fd, left) {
                // At least one: the loop ends however the kernel answers.
                Ok(BatchRead::Datagrams(n)) => left = left.saturating_sub(n.max(1)),
                Ok(BatchRead::WouldBlock) => return stats,
                Ok(BatchRead::Overrun) => {
                    stats.overruns += 1;
                    left -= 1;
                    continue;
                }
                Err(e) => {
                    log::warn!("{what}: read failed: {e}");
                    stats.read_errors += 1;
                    return stats;
                }
            }
            for slot in self.batch.datagrams() {
                let datagram = match slot {
                    Slot::Datagram(d) => d,
                    Slot::Foreign { sender } => {
                        // Not kernel state: skipped unparsed. Nothing the
                        // kernel sent was lost, so no window is marked
                        // SKIPDATA for it; the count shows in the window line.
                        stats.foreign += 1;
                        self.foreign += 1;
                        if self.foreign == 1 {
                            log_first_foreign(what, sender);
                        }
                        continue;
                    }
                    Slot::Truncated { len } => {
                        // Cut by the kernel: its messages are lost.
                        log::warn!(
                            "{what}: netlink datagram of {len} bytes exceeds the {} byte receive slot",
                            self.batch.slots().len
                        );
                        stats.parse_errors += 1;
                        continue;
                    }
                };
                for message in Messages::new(datagram) {
                    stats.messages += 1;
                    let Ok(message) = message else {
                        stats.parse_errors += 1;
                        break;
                    };
                    on_message(message, &mut stats);
                }
            }
        }
        stats.more_pending = true;
        stats
    }

    /// The port id the kernel bound this socket to (replies carry it).
    pub fn port_id(&self) -> u32 {
        self.port_id
    }

    /// Treat datagrams from `port_id` as the kernel's. The daemon never
    /// calls it: tests/tests/netlink_sockets.rs does, to queue datagrams
    /// from a user socket the way the kernel queues events.
    pub fn trust_sender(&mut self, port_id: u32) {
        self.trusted_sender = port_id;
        self.batch.trust_sender(port_id);
    }

    fn on_foreign(&mut self, what: &str, sender: u32) {
        self.foreign += 1;
        if self.foreign == 1 {
            log_first_foreign(what, sender);
        }
    }

    /// Send a dump `request` (its header's sequence number is `seq`) and
    /// hand every reply message to `on_message` until NLMSG_DONE.
    /// Messages of other sequence numbers (left over from an earlier,
    /// aborted exchange) are skipped.
    ///
    /// The socket must be blocking with a receive timeout, so that the
    /// `limits` are checked at least once per timeout.
    ///
    /// # Errors
    ///
    /// As [`DumpReader::on_datagram`], plus the send and receive errors. After
    /// an error the socket may still hold the rest of the dump: do not reuse
    /// it for another dump (the kernel answers EBUSY while one is running).
    pub fn dump(
        &mut self,
        request: &[u8],
        seq: u32,
        limits: DumpLimits,
        mut on_message: impl FnMut(&[u8]),
    ) -> io::Result<DumpProgress> {
        self.send(request)?;
        let mut reader = DumpReader::new(seq, self.port_id, limits);
        loop {
            reader.check_limits()?;
            let datagram = match self.recv()? {
                Received::Datagram(d) => d,
                Received::WouldBlock => continue,
                // A dump is flow-controlled by the kernel (the next skb is
                // only built when this socket has room), so this can only be
                // a stale error from an earlier multicast subscription.
                Received::Overrun => continue,
                Received::Foreign { .. } => continue,
            };
            if let DumpStatus::Done(progress) = reader.on_datagram(datagram, &mut on_message)? {
                return Ok(progress);
            }
        }
    }
}

/// Whether a dump exchange is over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DumpStatus {
    /// More replies are to come.
    Running,
    /// NLMSG_DONE arrived.
    Done(DumpProgress),
}

/// The reply side of one dump exchange, fed one datagram at a time: the
/// blocking [`NetlinkSocket::dump`] and the conntrack dump that the event
/// loop reads in slices share it.
#[derive(Debug)]
pub struct DumpReader {
    seq: u32,
    port_id: u32,
    limits: DumpLimits,
    started: Instant,
    progress: DumpProgress,
}

impl DumpReader {
    /// For the replies to the request with sequence number `seq`, sent
    /// from the socket bound to `port_id`, just now.
    pub fn new(seq: u32, port_id: u32, limits: DumpLimits) -> Self {
        DumpReader {
            seq,
            port_id,
            limits,
            started: Instant::now(),
            progress: DumpProgress::default(),
        }
    }

    /// # Errors
    ///
    /// `TimedOut` once the exchange has run longer than its time limit.
    pub fn check_limits(&self) -> io::Result<()> {
        if self.started.elapsed() > self.limits.time_limit {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "netlink dump not finished after {:?} ({} messages)",
                    self.limits.time_limit, self.progress.messages
                ),
            ));
        }
        Ok(())
    }

    /// Hands every data message of `datagram` that answers this exchange to
    /// `on_message`; messages of other sequence numbers (left over from an
    /// earlier, aborted exchange) are skipped.
    ///
    /// # Errors
    ///
    /// An NLMSG_ERROR reply or an error code in NLMSG_DONE as the
    /// corresponding OS error; `TimedOut` when the message limit is
    /// exceeded; `InvalidData` for a reply that is not a netlink message.
    pub fn on_datagram(
        &mut self,
        datagram: &[u8],
        mut on_message: impl FnMut(&[u8]),
    ) -> io::Result<DumpStatus> {
        for message in Messages::new(datagram) {
            let Ok(message) = message else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "malformed netlink header in a dump reply",
                ));
            };
            if message.seq != self.seq || (message.port_id != self.port_id && message.port_id != 0)
            {
                continue;
            }
            if message.flags & NLM_F_DUMP_INTR != 0 {
                self.progress.interrupted = true;
            }
            match message.message_type {
                NLMSG_DONE => {
                    // The kernel puts the dump's final errno in DONE.
                    let code = payload_i32(message.payload).unwrap_or(0);
                    if code < 0 {
                        return Err(io::Error::from_raw_os_error(-code));
                    }
                    return Ok(DumpStatus::Done(self.progress));
                }
                NLMSG_ERROR => {
                    let code = payload_i32(message.payload).unwrap_or(-libc::EIO);
                    if code < 0 {
                        return Err(io::Error::from_raw_os_error(-code));
                    }
                    // An ACK (code 0) ends nothing in a dump; ignore it.
                }
                NLMSG_NOOP | NLMSG_OVERRUN => {}
                _ => {
                    self.progress.messages += 1;
                    if self.progress.messages > self.limits.max_messages {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!(
                                "netlink dump exceeded {} messages without NLMSG_DONE",
                                self.limits.max_messages
                            ),
                        ));
                    }
                    on_message(message.bytes);
                }
            }
        }
        Ok(DumpStatus::Running)
    }
}

impl AsRawFd for NetlinkSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

/// Bounds of one dump exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DumpLimits {
    pub time_limit: Duration,
    pub max_messages: u64,
}

/// What a dump exchange saw besides its messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DumpProgress {
    /// Data messages handed to the callback.
    pub messages: u64,
    /// Some reply carried NLM_F_DUMP_INTR: the table changed under the dump
    /// in a way the kernel could detect, entries may be missing or doubled.
    pub interrupted: bool,
}

/// One netlink message inside a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    /// The whole message, header included, without trailing alignment.
    pub bytes: &'a [u8],
    pub payload: &'a [u8],
    pub message_type: u16,
    pub flags: u16,
    pub seq: u32,
    pub port_id: u32,
}

/// The messages of one datagram, in order. A malformed header ends the
/// iteration with one `Err` (nothing after it can be located).
pub struct Messages<'a> {
    rest: &'a [u8],
}

impl<'a> Messages<'a> {
    pub fn new(datagram: &'a [u8]) -> Self {
        Messages { rest: datagram }
    }
}

/// A netlink header whose length field does not fit the datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MalformedHeader;

impl<'a> Iterator for Messages<'a> {
    type Item = Result<Message<'a>, MalformedHeader>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let Ok(buffer) = NetlinkBuffer::new_checked(self.rest) else {
            self.rest = &[];
            return Some(Err(MalformedHeader));
        };
        let len = buffer.length() as usize;
        let message = Message {
            bytes: &self.rest[..len],
            payload: &self.rest[NLMSG_HDRLEN..len],
            message_type: buffer.message_type(),
            flags: buffer.flags(),
            seq: buffer.sequence_number(),
            port_id: buffer.port_number(),
        };
        let advance = (len + NLMSG_ALIGNTO - 1) & !(NLMSG_ALIGNTO - 1);
        self.rest = self.rest.get(advance..).unwrap_or(&[]);
        Some(Ok(message))
    }
}

/// The first datagram from another process on a socket is logged with its
/// sender; later ones only count (shown at each window close), so that a
/// flood of forgeries cannot flood the log.
/// After an overrun: twice the buffer (the kernel reports double what it
/// grants, so asking for the reported size doubles it), if under `max`.
fn grown_buffer(granted: usize, max: u64) -> Option<usize> {
    let max = usize::try_from(max).unwrap_or(usize::MAX);
    (granted < max).then(|| granted.min(max / 2))
}

fn log_first_foreign(what: &str, sender: u32) {
    log::warn!(
        "{what}: ignored a netlink datagram from port id {sender}, another process, not the kernel; further ones \
         are counted in the window line"
    );
}

fn payload_i32(payload: &[u8]) -> Option<i32> {
    let bytes: [u8; 4] = payload.get(..4)?.try_into().ok()?;
    Some(i32::from_ne_bytes(bytes))
}

fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` lives across the call and its size is passed with it.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn set_receive_timeout(fd: RawFd, timeout: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: `tv` lives across the call and its size is passed with it.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: u16, flags: u16, payload: &[u8]) -> Vec<u8> {
        let len = NLMSG_HDRLEN + payload.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&flags.to_ne_bytes());
        m.extend_from_slice(&7u32.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(payload);
        while m.len() % 4 != 0 {
            m.push(0);
        }
        m
    }

    #[test]
    fn an_overrun_doubles_the_buffer_up_to_the_maximum() {
        // The kernel reports double what it grants: asking for the reported
        // size doubles the buffer.
        assert_eq!(grown_buffer(4 << 20, 64 << 20), Some(4 << 20));
        // Near the maximum, the ask is half of it (granted as the maximum).
        assert_eq!(grown_buffer(48 << 20, 64 << 20), Some(32 << 20));
        // At or past the maximum: no growth.
        assert_eq!(grown_buffer(64 << 20, 64 << 20), None);
        assert_eq!(grown_buffer(80 << 20, 64 << 20), None);
    }

    #[test]
    fn messages_splits_a_multipart_datagram() {
        let mut datagram = message(0x100, 2, &[1, 2, 3]);
        datagram.extend(message(NLMSG_DONE, 2, &0i32.to_ne_bytes()));
        let parsed: Vec<_> = Messages::new(&datagram).collect();
        assert_eq!(parsed.len(), 2);
        let first = parsed[0].unwrap();
        assert_eq!(first.message_type, 0x100);
        assert_eq!(first.payload, &[1, 2, 3]);
        assert_eq!(first.bytes.len(), NLMSG_HDRLEN + 3);
        assert_eq!(parsed[1].unwrap().message_type, NLMSG_DONE);
    }

    #[test]
    fn messages_stops_at_a_bad_length() {
        let mut datagram = message(0x100, 0, &[0; 8]);
        // Claims 4 KiB in a 24-byte datagram.
        datagram[..4].copy_from_slice(&4096u32.to_ne_bytes());
        let parsed: Vec<_> = Messages::new(&datagram).collect();
        assert_eq!(parsed, vec![Err(MalformedHeader)]);
        // Shorter than a header.
        let parsed: Vec<_> = Messages::new(&datagram[..10]).collect();
        assert_eq!(parsed, vec![Err(MalformedHeader)]);
        // Length field below the header size.
        datagram[..4].copy_from_slice(&3u32.to_ne_bytes());
        let parsed: Vec<_> = Messages::new(&datagram).collect();
        assert_eq!(parsed, vec![Err(MalformedHeader)]);
    }

    #[test]
    fn empty_socket_would_block_and_buffer_is_granted() {
        // NETLINK_ROUTE without groups needs no privilege.
        let options = SocketOptions {
            receive_buffer_bytes: Some(256 * 1024),
            ..SocketOptions::default()
        };
        let mut socket = NetlinkSocket::open(netlink_sys::protocols::NETLINK_ROUTE, &options)
            .expect("open NETLINK_ROUTE socket");
        assert!(socket.receive_buffer_granted() >= 2 * 1024);
        assert_eq!(socket.recv().unwrap(), Received::WouldBlock);
    }
}
