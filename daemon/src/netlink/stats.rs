//! What a drain or a dump of a netlink socket saw, for the caller's
//! loss accounting.

/// Counts from one `drain` call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrainStats {
    /// Netlink messages read.
    pub messages: u64,
    /// Entries or events handed to the callback.
    pub entries: u64,
    /// Messages that could not be parsed (counted, skipped).
    pub parse_errors: u64,
    /// ENOBUFS reads: the kernel dropped events for this socket. How many
    /// is unknown; resynchronise with a dump.
    pub overruns: u64,
    /// Reads that failed with another error; the drain stopped there.
    pub read_errors: u64,
    /// Datagrams another process sent (sender port id not 0), skipped
    /// unparsed. Not a loss: nothing the kernel sent was dropped.
    pub foreign: u64,
    /// The drain stopped at its budget with data still queued. Readiness
    /// will not be reported again for it: call `drain` again soon.
    pub more_pending: bool,
}

/// Counts from one dump.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DumpStats {
    pub messages: u64,
    pub entries: u64,
    pub parse_errors: u64,
    /// NLM_F_DUMP_INTR was set on some reply: entries may be missing or
    /// repeated. (ctnetlink's table dump never sets it as of 6.18, it
    /// resumes by entry id instead; rtnetlink's link and address dumps do.)
    pub interrupted: bool,
}
