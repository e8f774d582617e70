//! The C ABI between the daemon and a sink plugin.
//!
//! `include/flowlogd_sink.h` is the contract; these definitions mirror it
//! field for field and the `const` assertions at the bottom keep the sizes
//! and offsets equal on the platforms we build for. Rules that keep old
//! plugins working:
//!
//! - the descriptor starts with `abi_major`, `abi_minor` and `struct_size`;
//!   fields are only ever appended, and the host reads an appended field
//!   only when `struct_size` says the plugin has it;
//! - records are passed as an array of *pointers*, so appending a field to
//!   `flowlogd_record` does not change how an older plugin indexes a batch;
//! - a major version change means "incompatible": the host refuses the plugin;
//! - a plugin of a newer minor than the host's is refused too (it would read
//!   record fields past what the host fills); an older minor loads, and a
//!   1.0 plugin is never handed the `fields` option (the host refuses that
//!   config with a located error).
//!
//! Minor 1 appended, to `flowlogd_record`: `pkt_srcaddr`, `pkt_dstaddr`,
//! `tcp_flags`, `present`, `flow_start`, `flow_end`; to `flowlogd_host`:
//! `abi_minor`.

use std::ffi::{c_char, c_int, c_void};

/// Incremented on any incompatible change; the host refuses other majors.
pub const ABI_MAJOR: u16 = 1;
/// Incremented when fields are appended; older minors still load.
pub const ABI_MINOR: u16 = 1;
/// The symbol every plugin exports (`flowlogd_sink_descriptor`).
pub const DESCRIPTOR_SYMBOL: &[u8] = b"flowlogd_sink_descriptor\0";

/// `flowlogd_str`: a UTF-8 string that is *not* NUL-terminated.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FfiStr {
    pub ptr: *const u8,
    pub len: usize,
}

impl FfiStr {
    pub const EMPTY: FfiStr = FfiStr {
        ptr: std::ptr::null(),
        len: 0,
    };

    pub fn new(s: &str) -> FfiStr {
        FfiStr {
            ptr: s.as_ptr(),
            len: s.len(),
        }
    }

    /// # Safety
    /// `ptr` must point to `len` bytes of valid UTF-8 that live for `'a`
    /// (or `len` must be 0).
    pub unsafe fn as_str<'a>(&self) -> &'a str {
        if self.len == 0 || self.ptr.is_null() {
            return "";
        }
        // SAFETY: guaranteed by the caller (the host only passes `&str`s).
        unsafe { std::str::from_utf8_unchecked(std::slice::from_raw_parts(self.ptr, self.len)) }
    }
}

/// Address family of a `flowlogd_addr`: none (`-` in output), IPv4, IPv6.
pub const ADDR_NONE: u8 = 0;
pub const ADDR_IPV4: u8 = 4;
pub const ADDR_IPV6: u8 = 6;

/// `flowlogd_addr`: IPv4 in the first 4 bytes, IPv6 in all 16.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FfiAddr {
    pub family: u8,
    pub bytes: [u8; 16],
}

pub const DIRECTION_NONE: u8 = 0;
pub const DIRECTION_IN: u8 = 1;
pub const DIRECTION_OUT: u8 = 2;

pub const LOG_STATUS_OK: u8 = 0;
pub const LOG_STATUS_NODATA: u8 = 1;
pub const LOG_STATUS_SKIPDATA: u8 = 2;

pub const ACTION_NONE: u8 = 0;
pub const ACTION_ACCEPT: u8 = 1;
pub const ACTION_REJECT: u8 = 2;

/// `flowlogd_record`: one flow log record, the design's 18 fields in order,
/// then optional extras. For NODATA / SKIPDATA records the flow fields
/// (addresses, ports, protocol, direction, packets, bytes, action) carry no
/// value and are written as `-`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FfiRecord {
    pub version: u32,
    pub vswitch_id: FfiStr,
    pub vm_id: FfiStr,
    pub vpc_id: FfiStr,
    pub account_id: FfiStr,
    pub eni_id: FfiStr,
    pub srcaddr: FfiAddr,
    pub srcport: u16,
    pub dstaddr: FfiAddr,
    pub dstport: u16,
    pub protocol: u8,
    pub direction: u8,
    pub packets: u64,
    pub bytes: u64,
    pub start: i64,
    pub end: i64,
    pub log_status: u8,
    pub action: u8,
    /// Optional: the firewall rule that dropped REJECT traffic; empty if none.
    pub rule: FfiStr,
    // --- minor 1: appended, so a minor-0 plugin reads only what is above.
    /// The packet's source address on the other side of NAT (equal to
    /// `srcaddr` without NAT); `ADDR_NONE` if unknown.
    pub pkt_srcaddr: FfiAddr,
    /// The packet's destination address on the other side of NAT.
    pub pkt_dstaddr: FfiAddr,
    /// TCP flags seen in the window in this direction, AWS encoding
    /// (`TCP_FLAG_*`, OR-ed); meaningful when `present` has `HAS_TCP_FLAGS`.
    pub tcp_flags: u8,
    /// `HAS_*` bits: which of `flow_start`, `flow_end`, `tcp_flags` hold a value.
    pub present: u8,
    /// Unix seconds: when, within the window, the flow began to exist.
    pub flow_start: i64,
    /// Unix seconds: when, within the window, the flow last existed.
    pub flow_end: i64,
}

/// `present` bits of a minor-1 record.
pub const HAS_FLOW_START: u8 = 1;
pub const HAS_FLOW_END: u8 = 2;
pub const HAS_TCP_FLAGS: u8 = 4;

/// `tcp_flags` bits, as AWS VPC flow logs encode them.
pub const TCP_FLAG_FIN: u8 = 1;
pub const TCP_FLAG_SYN: u8 = 2;
pub const TCP_FLAG_RST: u8 = 4;
/// SYN and ACK in one packet (18 = SYN 2 + ACK 16); a plain ACK is not recorded.
pub const TCP_FLAG_SYN_ACK: u8 = 18;

/// `flowlogd_error`: a caller-owned buffer a plugin fills in on failure.
/// Both strings are NUL-terminated and truncated to fit.
#[repr(C)]
pub struct FfiError {
    /// What went wrong, for an operator.
    pub message: [c_char; 512],
    /// The option key the error is about (empty if none): the host points
    /// at that key's line and column in the config file.
    pub key: [c_char; 64],
}

impl FfiError {
    pub fn new() -> FfiError {
        FfiError {
            message: [0; 512],
            key: [0; 64],
        }
    }

    pub fn set(&mut self, message: &str, key: Option<&str>) {
        copy_truncated(&mut self.message, message);
        copy_truncated(&mut self.key, key.unwrap_or(""));
    }

    pub fn message(&self) -> String {
        read_c_buf(&self.message)
    }

    pub fn key(&self) -> Option<String> {
        let k = read_c_buf(&self.key);
        (!k.is_empty()).then_some(k)
    }
}

impl Default for FfiError {
    fn default() -> Self {
        Self::new()
    }
}

fn copy_truncated(dst: &mut [c_char], src: &str) {
    // Truncate on a char boundary so the text stays valid UTF-8.
    let mut n = src.len().min(dst.len() - 1);
    while !src.is_char_boundary(n) {
        n -= 1;
    }
    for (d, s) in dst.iter_mut().zip(src.as_bytes()[..n].iter()) {
        *d = *s as c_char;
    }
    dst[n] = 0;
}

fn read_c_buf(buf: &[c_char]) -> String {
    let bytes: Vec<u8> = buf
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Value kinds of a sink option.
pub const OPTION_STRING: u8 = 1;
pub const OPTION_INTEGER: u8 = 2;
pub const OPTION_FLOAT: u8 = 3;
pub const OPTION_BOOLEAN: u8 = 4;
/// Arrays, tables and datetimes: only `toml` is meaningful.
pub const OPTION_OTHER: u8 = 5;

/// `flowlogd_option`: one key of the sink's config table (every key but
/// `plugin`). `text` is the value as a C plugin wants it (a string
/// unquoted, a number or boolean as written); `toml` is the value as TOML.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FfiOption {
    pub key: FfiStr,
    pub kind: u8,
    pub text: FfiStr,
    pub toml: FfiStr,
}

/// Log levels for `flowlogd_host.log`.
pub const LOG_ERROR: c_int = 1;
pub const LOG_WARN: c_int = 2;
pub const LOG_INFO: c_int = 3;
pub const LOG_DEBUG: c_int = 4;

/// `flowlogd_host`: what the host offers a plugin at `open`. Valid until
/// `close` returns.
#[repr(C)]
pub struct FfiHost {
    pub struct_size: u32,
    /// The sink's name in the config (`[sinks.<name>]`).
    pub sink_name: FfiStr,
    /// The daemon's version string.
    pub daemon_version: FfiStr,
    /// Writes a line to the daemon's log, attributed to this sink.
    pub log:
        Option<unsafe extern "C" fn(ctx: *mut c_void, level: c_int, msg: *const u8, len: usize)>,
    pub log_ctx: *mut c_void,
    // --- minor 1: read only when `struct_size` covers it (`Host::from_ffi`).
    /// The host's [`ABI_MINOR`]: the record fields of that minor and older
    /// hold values. A host whose struct ends before this field is minor 0.
    pub abi_minor: u16,
}

/// Return codes of `open`, `write` and `flush`.
pub const STATUS_OK: c_int = 0;
/// Transient failure: the host keeps the batch and retries with backoff.
pub const STATUS_RETRY: c_int = 1;
/// Permanent failure: retrying will not help; the host counts the batch
/// as undelivered and reports it.
pub const STATUS_REJECTED: c_int = 2;

/// `flush` flags.
pub const FLUSH_WINDOW_END: u32 = 1;
/// The operator asked for a reopen (SIGHUP, e.g. after logrotate).
pub const FLUSH_REOPEN: u32 = 2;

pub type OpenFn = unsafe extern "C" fn(
    host: *const FfiHost,
    options: *const FfiOption,
    option_count: usize,
    instance: *mut *mut c_void,
    err: *mut FfiError,
) -> c_int;
pub type WriteFn = unsafe extern "C" fn(
    instance: *mut c_void,
    records: *const *const FfiRecord,
    count: usize,
    err: *mut FfiError,
) -> c_int;
pub type FlushFn =
    unsafe extern "C" fn(instance: *mut c_void, flags: u32, err: *mut FfiError) -> c_int;
pub type CloseFn = unsafe extern "C" fn(instance: *mut c_void);
pub type CheckFn = unsafe extern "C" fn(
    host: *const FfiHost,
    options: *const FfiOption,
    option_count: usize,
    err: *mut FfiError,
) -> c_int;

/// `flowlogd_sink_descriptor`: what `flowlogd_sink_descriptor()` returns.
#[repr(C)]
pub struct FfiDescriptor {
    pub abi_major: u16,
    pub abi_minor: u16,
    pub struct_size: u32,
    /// NUL-terminated plugin name, e.g. "file".
    pub name: *const c_char,
    /// NUL-terminated plugin version.
    pub version: *const c_char,
    pub open: Option<OpenFn>,
    pub write: Option<WriteFn>,
    pub flush: Option<FlushFn>,
    pub close: Option<CloseFn>,
    /// Optional: validates options without side effects (no files created,
    /// no connections); `flowlogd check-config` calls it. NULL if the plugin
    /// can only check its options in `open`.
    pub check: Option<CheckFn>,
}

// SAFETY: the descriptor is immutable static data (pointers to static
// strings and functions), so sharing it between threads is sound.
unsafe impl Sync for FfiDescriptor {}

/// The type of the exported `flowlogd_sink_descriptor` function.
pub type DescriptorFn = unsafe extern "C" fn() -> *const FfiDescriptor;

// Layout checks against the C header (LP64: x86_64, aarch64). The header
// carries the same numbers as _Static_asserts, so a change on one side
// alone fails a build.
#[cfg(target_pointer_width = "64")]
const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(size_of::<FfiStr>() == 16);
    assert!(size_of::<FfiAddr>() == 17);
    assert!(offset_of!(FfiRecord, srcaddr) == 88);
    assert!(offset_of!(FfiRecord, srcport) == 106);
    assert!(offset_of!(FfiRecord, dstaddr) == 108);
    assert!(offset_of!(FfiRecord, dstport) == 126);
    assert!(offset_of!(FfiRecord, protocol) == 128);
    assert!(offset_of!(FfiRecord, packets) == 136);
    assert!(offset_of!(FfiRecord, start) == 152);
    assert!(offset_of!(FfiRecord, log_status) == 168);
    assert!(offset_of!(FfiRecord, action) == 169);
    assert!(offset_of!(FfiRecord, rule) == 176);
    assert!(offset_of!(FfiRecord, pkt_srcaddr) == 192);
    assert!(offset_of!(FfiRecord, pkt_dstaddr) == 209);
    assert!(offset_of!(FfiRecord, tcp_flags) == 226);
    assert!(offset_of!(FfiRecord, present) == 227);
    assert!(offset_of!(FfiRecord, flow_start) == 232);
    assert!(offset_of!(FfiRecord, flow_end) == 240);
    assert!(size_of::<FfiRecord>() == 248);
    assert!(size_of::<FfiError>() == 576);
    assert!(size_of::<FfiOption>() == 56);
    assert!(offset_of!(FfiHost, abi_minor) == 56);
    assert!(size_of::<FfiHost>() == 64);
    assert!(size_of::<FfiDescriptor>() == 64);
};
