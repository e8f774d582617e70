//! The safe side of the ABI for plugins written in Rust: implement [`Sink`]
//! and call [`export_sink!`](crate::export_sink). The generated C functions
//! catch every panic at the boundary and turn it into an error, because
//! unwinding into the host is undefined behaviour.

use std::ffi::{c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};

use serde::de::DeserializeOwned;

use crate::abi::*;
use crate::fields::FieldList;
use crate::record::RecordView;

/// Whether the host should retry a failed call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Transient (peer down, timeout): the host retries the batch.
    Retry,
    /// Permanent (bad config, refused by the peer): retrying will not help.
    Rejected,
}

/// A sink's error: a message for the operator, and the option key it is
/// about when there is one (the host then points at that key in the file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinkError {
    pub kind: ErrorKind,
    pub message: String,
    pub key: Option<String>,
}

impl SinkError {
    pub fn retry(message: impl Into<String>) -> SinkError {
        SinkError {
            kind: ErrorKind::Retry,
            message: message.into(),
            key: None,
        }
    }
    pub fn rejected(message: impl Into<String>) -> SinkError {
        SinkError {
            kind: ErrorKind::Rejected,
            message: message.into(),
            key: None,
        }
    }
    /// A configuration error about option `key`.
    pub fn config(key: &str, message: impl Into<String>) -> SinkError {
        SinkError {
            kind: ErrorKind::Rejected,
            message: message.into(),
            key: Some(key.to_owned()),
        }
    }
}

impl std::fmt::Display for SinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.key {
            Some(k) => write!(f, "{k}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for SinkError {}

/// The sink's options: its config table without `plugin`.
pub struct Options {
    entries: Vec<(String, u8, String, String)>,
}

impl Options {
    /// # Safety
    /// `ptr` must point to `count` valid `FfiOption`s whose strings are UTF-8.
    pub unsafe fn from_ffi(ptr: *const FfiOption, count: usize) -> Options {
        let slice = if count == 0 || ptr.is_null() {
            &[][..]
        } else {
            // SAFETY: guaranteed by the caller.
            unsafe { std::slice::from_raw_parts(ptr, count) }
        };
        let entries = slice
            .iter()
            .map(|o| {
                // SAFETY: guaranteed by the caller.
                unsafe {
                    (
                        o.key.as_str().to_owned(),
                        o.kind,
                        o.text.as_str().to_owned(),
                        o.toml.as_str().to_owned(),
                    )
                }
            })
            .collect();
        Options { entries }
    }

    /// Options from a TOML table (for tests and for in-process use).
    pub fn from_toml_table(table: &toml::Table) -> Options {
        let entries = table
            .iter()
            .map(|(k, v)| {
                let (kind, text, toml) = option_value(v);
                (k.clone(), kind, text, toml)
            })
            .collect();
        Options { entries }
    }

    /// The raw value text of `key` (strings unquoted).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|e| e.0 == key)
            .map(|e| e.2.as_str())
    }

    /// The value of `key` as TOML (an array as `["a", "b"]`).
    pub fn get_toml(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|e| e.0 == key)
            .map(|e| e.3.as_str())
    }

    /// The sink's field list (`fields = [...]`), the default 18 fields when
    /// the option is absent: see [`FieldList::from_options`].
    ///
    /// # Errors
    /// [`SinkError::config`] on `fields` when it is not a valid list.
    pub fn field_list(&self) -> Result<FieldList, SinkError> {
        FieldList::from_options(self)
    }

    /// Deserializes the options into `T` (use `#[serde(deny_unknown_fields)]`).
    ///
    /// # Errors
    /// A [`SinkError`] naming the offending key where serde can tell it.
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T, SinkError> {
        // Rebuild a TOML document, one key per line, so that the line of a
        // deserialization error tells which key it is about.
        let mut doc = String::new();
        let mut line_keys = Vec::new();
        for (key, _, _, toml_text) in &self.entries {
            doc.push_str(&toml::Value::String(key.clone()).to_string());
            doc.push_str(" = ");
            doc.push_str(toml_text);
            doc.push('\n');
            line_keys.push(key.clone());
        }
        toml::from_str::<T>(&doc).map_err(|e| {
            let message = e.message().trim().to_owned();
            // A missing key has no line of its own (toml points at the whole
            // table), so name it from the message; otherwise the line of the
            // error's span tells which key it is about.
            let key = message
                .strip_prefix("missing field `")
                .and_then(|rest| rest.split('`').next())
                .map(str::to_owned)
                .or_else(|| {
                    e.span().and_then(|span| {
                        let line = doc[..span.start.min(doc.len())].matches('\n').count();
                        line_keys.get(line).cloned()
                    })
                });
            SinkError {
                kind: ErrorKind::Rejected,
                message,
                key,
            }
        })
    }
}

/// How a host passes one option value (see `flowlogd_option`): its kind
/// (`OPTION_*`), its text (a string unquoted, anything else as TOML), and
/// the value as TOML.
pub fn option_value(v: &toml::Value) -> (u8, String, String) {
    let kind = match v {
        toml::Value::String(_) => OPTION_STRING,
        toml::Value::Integer(_) => OPTION_INTEGER,
        toml::Value::Float(_) => OPTION_FLOAT,
        toml::Value::Boolean(_) => OPTION_BOOLEAN,
        _ => OPTION_OTHER,
    };
    let text = match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    (kind, text, v.to_string())
}

/// A sink's options in the form `open` and `check` take, owning the
/// strings the `flowlogd_option`s point into (hosts and test harnesses).
pub struct FfiOptions {
    // The Strings' heap buffers do not move when this struct moves, so the
    // pointers in `options` stay valid as long as `_strings` lives.
    _strings: Vec<(String, String, String)>,
    options: Vec<FfiOption>,
}

impl FfiOptions {
    pub fn from_table(table: &toml::Table) -> FfiOptions {
        let mut kinds = Vec::with_capacity(table.len());
        let strings: Vec<(String, String, String)> = table
            .iter()
            .map(|(k, v)| {
                let (kind, text, toml) = option_value(v);
                kinds.push(kind);
                (k.clone(), text, toml)
            })
            .collect();
        let options = strings
            .iter()
            .zip(kinds)
            .map(|((k, text, toml), kind)| FfiOption {
                key: FfiStr::new(k),
                kind,
                text: FfiStr::new(text),
                toml: FfiStr::new(toml),
            })
            .collect();
        FfiOptions {
            _strings: strings,
            options,
        }
    }

    pub fn as_ptr(&self) -> *const FfiOption {
        self.options.as_ptr()
    }

    pub fn len(&self) -> usize {
        self.options.len()
    }

    pub fn is_empty(&self) -> bool {
        self.options.is_empty()
    }
}

/// A handle to the host's log, usable from any thread until `close`.
#[derive(Clone, Copy)]
pub struct HostLog {
    log: Option<unsafe extern "C" fn(*mut c_void, c_int, *const u8, usize)>,
    ctx: *mut c_void,
}

// SAFETY: the host promises its log callback may be called from any thread
// while the plugin instance is open.
unsafe impl Send for HostLog {}
// SAFETY: as above.
unsafe impl Sync for HostLog {}

impl HostLog {
    /// A log that writes to stderr (plugins used outside the daemon).
    pub fn stderr() -> HostLog {
        HostLog {
            log: None,
            ctx: std::ptr::null_mut(),
        }
    }

    fn emit(&self, level: c_int, msg: &str) {
        match self.log {
            // SAFETY: the callback and ctx come from the host and stay valid
            // until close (see `flowlogd_host` in the header).
            Some(f) => unsafe { f(self.ctx, level, msg.as_ptr(), msg.len()) },
            None => eprintln!("{msg}"),
        }
    }
    pub fn error(&self, msg: &str) {
        self.emit(LOG_ERROR, msg)
    }
    pub fn warn(&self, msg: &str) {
        self.emit(LOG_WARN, msg)
    }
    pub fn info(&self, msg: &str) {
        self.emit(LOG_INFO, msg)
    }
    pub fn debug(&self, msg: &str) {
        self.emit(LOG_DEBUG, msg)
    }
}

/// What the host tells a plugin at open.
pub struct Host {
    pub sink_name: String,
    pub daemon_version: String,
    pub log: HostLog,
    /// The host's ABI minor (`flowlogd_host.abi_minor`, 0 for a host that
    /// predates the field): the record fields of that minor and older hold
    /// values. A host of minor 0 passes records without the extras, so a
    /// plugin should not read [`FlowExtras`](crate::FlowExtras) from it.
    pub abi_minor: u16,
}

impl Host {
    /// # Safety
    /// `h` must be null or point to a valid `flowlogd_host` of any minor
    /// (its `struct_size` says how much of [`FfiHost`] it holds).
    pub unsafe fn from_ffi(h: *const FfiHost) -> Host {
        if h.is_null() {
            return Host::standalone("sink");
        }
        // Fields are read through the raw pointer, never as a `&FfiHost`:
        // an older host's struct ends before `abi_minor`.
        // SAFETY: guaranteed by the caller; `struct_size` is the first
        // field of every version.
        let struct_size = unsafe { (*h).struct_size } as usize;
        let abi_minor = if struct_size >= std::mem::offset_of!(FfiHost, abi_minor) + 2 {
            // SAFETY: the host's struct holds the field.
            unsafe { (*h).abi_minor }
        } else {
            0
        };
        // SAFETY: the fields of minor 0, in every host's struct; host
        // strings are valid UTF-8 for the call.
        unsafe {
            Host {
                abi_minor,
                sink_name: (*h).sink_name.as_str().to_owned(),
                daemon_version: (*h).daemon_version.as_str().to_owned(),
                log: HostLog {
                    log: (*h).log,
                    ctx: (*h).log_ctx,
                },
            }
        }
    }

    /// A host for using a plugin in-process (tests, tools).
    pub fn standalone(sink_name: &str) -> Host {
        Host {
            sink_name: sink_name.to_owned(),
            daemon_version: String::new(),
            log: HostLog::stderr(),
            abi_minor: ABI_MINOR,
        }
    }
}

/// Flags of a flush.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlushFlags {
    /// A capture window closed: make what was written durable (fsync).
    pub window_end: bool,
    /// Reopen outputs (SIGHUP, e.g. after logrotate moved the file).
    pub reopen: bool,
}

impl FlushFlags {
    pub fn from_bits(bits: u32) -> FlushFlags {
        FlushFlags {
            window_end: bits & FLUSH_WINDOW_END != 0,
            reopen: bits & FLUSH_REOPEN != 0,
        }
    }
}

/// A sink plugin written in Rust.
pub trait Sink: Sized + Send + 'static {
    /// Validates `options` and opens the output. Report every config error
    /// here, not at the first write.
    ///
    /// # Errors
    /// [`SinkError::config`] for a bad option, others for I/O.
    fn open(host: &Host, options: &Options) -> Result<Self, SinkError>;
    /// Validates `options` without side effects (no files created, no
    /// connections); `flowlogd check-config` calls it. The default accepts
    /// anything, leaving the checks to `open`.
    ///
    /// # Errors
    /// [`SinkError::config`] naming the bad option.
    fn check(host: &Host, options: &Options) -> Result<(), SinkError> {
        let _ = (host, options);
        Ok(())
    }
    /// Delivers a batch. On `Err(Retry)` the host sends the same batch again.
    ///
    /// # Errors
    /// Why the batch was not delivered.
    fn write(&mut self, records: &[RecordView<'_>]) -> Result<(), SinkError>;
    /// Pushes buffered output out (durably when `flags.window_end`).
    ///
    /// # Errors
    /// Why the flush failed.
    fn flush(&mut self, flags: FlushFlags) -> Result<(), SinkError>;
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_owned()
    }
}

fn report(err: *mut FfiError, e: &SinkError) -> c_int {
    if !err.is_null() {
        // SAFETY: the host passes a valid, exclusive error buffer.
        unsafe { (*err).set(&e.message, e.key.as_deref()) };
    }
    match e.kind {
        ErrorKind::Retry => STATUS_RETRY,
        ErrorKind::Rejected => STATUS_REJECTED,
    }
}

fn report_panic(err: *mut FfiError, what: &str, p: Box<dyn std::any::Any + Send>) -> c_int {
    let e = SinkError::rejected(format!("plugin panicked in {what}: {}", panic_message(p)));
    report(err, &e)
}

/// What `export_sink!`'s `open` hands the host as the instance: the sink
/// and the host's ABI minor, which says whether its records carry the
/// minor-1 extras (a host of minor 0 passes the shorter 1.0 record).
struct Instance<T> {
    sink: T,
    host_abi_minor: u16,
}

/// Generated `open` for `T` (used by `export_sink!`).
///
/// # Safety
/// Called by the host with the arguments the header documents.
#[doc(hidden)]
pub unsafe extern "C" fn ffi_open<T: Sink>(
    host: *const FfiHost,
    options: *const FfiOption,
    option_count: usize,
    instance: *mut *mut c_void,
    err: *mut FfiError,
) -> c_int {
    let result = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: arguments as documented in the header.
        let host = unsafe { Host::from_ffi(host) };
        // SAFETY: as above.
        let options = unsafe { Options::from_ffi(options, option_count) };
        T::open(&host, &options).map(|sink| Instance {
            sink,
            host_abi_minor: host.abi_minor,
        })
    }));
    match result {
        Ok(Ok(sink)) => {
            let boxed: Box<Instance<T>> = Box::new(sink);
            // SAFETY: `instance` is a valid out-pointer from the host.
            unsafe { *instance = Box::into_raw(boxed).cast() };
            STATUS_OK
        }
        Ok(Err(e)) => report(err, &e),
        Err(p) => report_panic(err, "open", p),
    }
}

/// Generated `check` for `T`.
///
/// # Safety
/// Called by the host with the arguments the header documents.
#[doc(hidden)]
pub unsafe extern "C" fn ffi_check<T: Sink>(
    host: *const FfiHost,
    options: *const FfiOption,
    option_count: usize,
    err: *mut FfiError,
) -> c_int {
    let result = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: arguments as documented in the header.
        let host = unsafe { Host::from_ffi(host) };
        // SAFETY: as above.
        let options = unsafe { Options::from_ffi(options, option_count) };
        T::check(&host, &options)
    }));
    match result {
        Ok(Ok(())) => STATUS_OK,
        Ok(Err(e)) => report(err, &e),
        Err(p) => report_panic(err, "check", p),
    }
}

/// Generated `write` for `T`.
///
/// # Safety
/// `instance` must come from `ffi_open::<T>`; records as in the header.
#[doc(hidden)]
pub unsafe extern "C" fn ffi_write<T: Sink>(
    instance: *mut c_void,
    records: *const *const FfiRecord,
    count: usize,
    err: *mut FfiError,
) -> c_int {
    let result = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `instance` is our Box<Instance<T>>, used by one thread
        // at a time.
        let instance = unsafe { &mut *instance.cast::<Instance<T>>() };
        let ptrs = if count == 0 || records.is_null() {
            &[][..]
        } else {
            // SAFETY: the host passes `count` valid record pointers.
            unsafe { std::slice::from_raw_parts(records, count) }
        };
        // SAFETY: each record and its strings live for the call; a host
        // of minor 0 passes 1.0 records, whose extras the views then
        // never read.
        let views: Vec<RecordView<'_>> = ptrs
            .iter()
            .map(|p| unsafe { RecordView::from_host(&**p, instance.host_abi_minor) })
            .collect();
        instance.sink.write(&views)
    }));
    match result {
        Ok(Ok(())) => STATUS_OK,
        Ok(Err(e)) => report(err, &e),
        Err(p) => report_panic(err, "write", p),
    }
}

/// Generated `flush` for `T`.
///
/// # Safety
/// `instance` must come from `ffi_open::<T>`.
#[doc(hidden)]
pub unsafe extern "C" fn ffi_flush<T: Sink>(
    instance: *mut c_void,
    flags: u32,
    err: *mut FfiError,
) -> c_int {
    let result = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `instance` is our Box<Instance<T>>, used by one thread
        // at a time.
        let instance = unsafe { &mut *instance.cast::<Instance<T>>() };
        instance.sink.flush(FlushFlags::from_bits(flags))
    }));
    match result {
        Ok(Ok(())) => STATUS_OK,
        Ok(Err(e)) => report(err, &e),
        Err(p) => report_panic(err, "flush", p),
    }
}

/// Generated `close` for `T`.
///
/// # Safety
/// `instance` must come from `ffi_open::<T>` and not be used afterwards.
#[doc(hidden)]
pub unsafe extern "C" fn ffi_close<T: Sink>(instance: *mut c_void) {
    // A panic in Drop is swallowed: there is nobody left to report it to
    // but the host's stderr, and unwinding into C is undefined behaviour.
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `instance` is our Box<Instance<T>>, closed exactly once.
        drop(unsafe { Box::from_raw(instance.cast::<Instance<T>>()) });
    }));
}

/// Exports `$ty: Sink` as a flowlogd sink plugin named `$name`.
///
/// ```ignore
/// flowlogd_plugin_api::export_sink!(MySink, "my-sink");
/// ```
#[macro_export]
macro_rules! export_sink {
    ($ty:ty, $name:expr) => {
        #[doc(hidden)]
        static FLOWLOGD_SINK_DESCRIPTOR: $crate::abi::FfiDescriptor = $crate::abi::FfiDescriptor {
            abi_major: $crate::abi::ABI_MAJOR,
            abi_minor: $crate::abi::ABI_MINOR,
            struct_size: ::std::mem::size_of::<$crate::abi::FfiDescriptor>() as u32,
            name: concat!($name, "\0").as_ptr() as *const ::std::ffi::c_char,
            version: concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr() as *const ::std::ffi::c_char,
            open: Some($crate::sink::ffi_open::<$ty>),
            write: Some($crate::sink::ffi_write::<$ty>),
            flush: Some($crate::sink::ffi_flush::<$ty>),
            close: Some($crate::sink::ffi_close::<$ty>),
            check: Some($crate::sink::ffi_check::<$ty>),
        };

        /// The plugin's entry point, looked up by name by the host.
        #[no_mangle]
        pub extern "C" fn flowlogd_sink_descriptor() -> *const $crate::abi::FfiDescriptor {
            &FLOWLOGD_SINK_DESCRIPTOR
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host of minor 0 passes a `flowlogd_host` that ends before
    /// `abi_minor`: the plugin reads 0 there, not the bytes after it.
    #[test]
    fn host_minor_comes_from_struct_size() {
        let mut ffi = FfiHost {
            struct_size: std::mem::size_of::<FfiHost>() as u32,
            sink_name: FfiStr::new("s"),
            daemon_version: FfiStr::new("v"),
            log: None,
            log_ctx: std::ptr::null_mut(),
            abi_minor: 7,
        };
        // SAFETY: `ffi` is valid and its strings are 'static.
        let host = unsafe { Host::from_ffi(&ffi) };
        assert_eq!((host.abi_minor, host.sink_name.as_str()), (7, "s"));
        ffi.struct_size = std::mem::offset_of!(FfiHost, abi_minor) as u32;
        // SAFETY: as above (the struct is larger than it claims).
        let host = unsafe { Host::from_ffi(&ffi) };
        assert_eq!((host.abi_minor, host.daemon_version.as_str()), (0, "v"));
        assert_eq!(Host::standalone("x").abi_minor, ABI_MINOR);
    }

    /// The extras each write saw, by the sink below.
    static SEEN: std::sync::Mutex<Vec<crate::FlowExtras>> = std::sync::Mutex::new(Vec::new());

    struct Probe;

    impl Sink for Probe {
        fn open(_: &Host, _: &Options) -> Result<Self, SinkError> {
            Ok(Probe)
        }
        fn write(&mut self, records: &[RecordView<'_>]) -> Result<(), SinkError> {
            let mut seen = SEEN.lock().unwrap();
            seen.extend(records.iter().map(|r| r.flow().unwrap().extras));
            Ok(())
        }
        fn flush(&mut self, _: FlushFlags) -> Result<(), SinkError> {
            Ok(())
        }
    }

    /// A Rust plugin opened by a host of minor 0 (whose `flowlogd_host`
    /// ends before `abi_minor`, and whose records end at `rule`) reads no
    /// extras; opened by a host of minor 1 it reads them.
    #[test]
    fn extras_are_read_only_from_a_host_that_passes_them() {
        let mut record = crate::FlowRecord {
            eni: Default::default(),
            flow: Some(crate::FlowFields {
                srcaddr: "10.0.0.1".parse().unwrap(),
                srcport: 1,
                dstaddr: "10.0.0.2".parse().unwrap(),
                dstport: 2,
                protocol: 6,
                direction: crate::Direction::In,
                packets: 1,
                bytes: 60,
                action: crate::Action::Accept,
                extras: Default::default(),
            }),
            start: 0,
            end: 600,
            log_status: crate::LogStatus::Ok,
            rule: None,
        };
        let extras = crate::FlowExtras {
            tcp_flags: Some(2),
            flow_start: Some(5),
            ..Default::default()
        };
        record.flow.as_mut().unwrap().extras = extras;
        let ffi = record.to_ffi();
        let ptrs = [&ffi as *const FfiRecord];
        for (struct_size, expected) in [
            (
                std::mem::offset_of!(FfiHost, abi_minor),
                crate::FlowExtras::default(),
            ),
            (std::mem::size_of::<FfiHost>(), extras),
        ] {
            let host = FfiHost {
                struct_size: struct_size as u32,
                sink_name: FfiStr::new("probe"),
                daemon_version: FfiStr::new("t"),
                log: None,
                log_ctx: std::ptr::null_mut(),
                abi_minor: ABI_MINOR,
            };
            let mut instance = std::ptr::null_mut();
            let mut err = FfiError::new();
            SEEN.lock().unwrap().clear();
            // SAFETY: valid arguments, as a host passes them; the record
            // and its strings outlive the calls.
            unsafe {
                assert_eq!(
                    ffi_open::<Probe>(&host, std::ptr::null(), 0, &mut instance, &mut err),
                    STATUS_OK
                );
                assert_eq!(
                    ffi_write::<Probe>(instance, ptrs.as_ptr(), 1, &mut err),
                    STATUS_OK
                );
                ffi_close::<Probe>(instance);
            }
            assert_eq!(
                *SEEN.lock().unwrap(),
                [expected],
                "struct_size {struct_size}"
            );
        }
    }
}
