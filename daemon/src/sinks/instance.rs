//! One open instance of a plugin: the safe wrapper around its C functions.

use std::ffi::{c_int, c_void};
use std::sync::Arc;

use flowlogd_plugin_api::abi::*;
use flowlogd_plugin_api::sink::FfiOptions;
use flowlogd_plugin_api::FlowRecord;

use super::loader::PluginLibrary;

/// What a plugin call answered.
#[derive(Debug, PartialEq, Eq)]
pub enum CallError {
    /// Transient; the same call may succeed later.
    Retry(String),
    /// Permanent; `key` is the option a config error is about.
    Rejected {
        message: String,
        key: Option<String>,
    },
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Retry(m) => f.write_str(m),
            CallError::Rejected {
                message,
                key: Some(k),
            } => write!(f, "{k}: {message}"),
            CallError::Rejected { message, key: None } => f.write_str(message),
        }
    }
}

/// The strings `flowlogd_host` points into, kept alive with the instance.
struct HostContext {
    sink_name: String,
    daemon_version: &'static str,
}

unsafe extern "C" fn host_log(ctx: *mut c_void, level: c_int, msg: *const u8, len: usize) {
    if ctx.is_null() || msg.is_null() {
        return;
    }
    // SAFETY: ctx is the HostContext we handed out, alive until close.
    let ctx = unsafe { &*(ctx as *const HostContext) };
    // SAFETY: the plugin passes `len` readable bytes; lossy decoding
    // tolerates invalid UTF-8 from C plugins.
    let text = String::from_utf8_lossy(unsafe { std::slice::from_raw_parts(msg, len) });
    let level = match level {
        LOG_ERROR => log::Level::Error,
        LOG_WARN => log::Level::Warn,
        LOG_INFO => log::Level::Info,
        _ => log::Level::Debug,
    };
    log::log!(level, "sink {}: {}", ctx.sink_name, text.trim_end());
}

/// The option list and host struct handed to `open` and `check`; owns the
/// strings the C structs point into.
struct FfiArgs {
    host_ctx: Box<HostContext>,
    options: FfiOptions,
}

impl FfiArgs {
    fn new(sink_name: &str, options: &toml::Table) -> FfiArgs {
        FfiArgs {
            host_ctx: Box::new(HostContext {
                sink_name: sink_name.to_owned(),
                daemon_version: env!("CARGO_PKG_VERSION"),
            }),
            options: FfiOptions::from_table(options),
        }
    }

    fn host(&self) -> FfiHost {
        FfiHost {
            struct_size: std::mem::size_of::<FfiHost>() as u32,
            sink_name: FfiStr::new(&self.host_ctx.sink_name),
            daemon_version: FfiStr::new(self.host_ctx.daemon_version),
            log: Some(host_log),
            log_ctx: &*self.host_ctx as *const HostContext as *mut c_void,
            abi_minor: ABI_MINOR,
        }
    }
}

/// Runs the plugin's side-effect-free option check, if it has one.
/// Returns `Ok(false)` when the plugin offers no check.
///
/// # Errors
/// The plugin's message and the option key it is about.
pub fn check_options(
    library: &PluginLibrary,
    sink_name: &str,
    options: &toml::Table,
) -> Result<bool, CallError> {
    let Some(check) = library.descriptor().check else {
        return Ok(false);
    };
    let args = FfiArgs::new(sink_name, options);
    let host = args.host();
    let mut err = FfiError::new();
    // SAFETY: every pointer is valid for the call; `err` is exclusive.
    let status = unsafe { check(&host, args.options.as_ptr(), args.options.len(), &mut err) };
    match status {
        STATUS_OK => Ok(true),
        _ => Err(CallError::Rejected {
            message: nonempty(err.message(), "check failed without a message"),
            key: err.key(),
        }),
    }
}

/// An open plugin instance. Closed on drop, before its library is released.
pub struct PluginInstance {
    instance: *mut c_void,
    // Boxed so the pointer handed to the plugin stays put when `self` moves.
    host_ctx: Box<HostContext>,
    // Declared last: dropped after `Drop::drop` has closed the instance.
    library: Arc<PluginLibrary>,
}

impl PluginInstance {
    /// Opens the plugin with the sink's options (everything but `plugin`).
    ///
    /// # Errors
    /// The plugin's message, and the option key it is about if any.
    pub fn open(
        library: Arc<PluginLibrary>,
        sink_name: &str,
        options: &toml::Table,
    ) -> Result<Self, CallError> {
        let args = FfiArgs::new(sink_name, options);
        let host = args.host();
        let open = library.descriptor().open.expect("checked at load");
        let mut instance: *mut c_void = std::ptr::null_mut();
        let mut err = FfiError::new();
        // SAFETY: every pointer is valid for the call; `instance` and `err`
        // are exclusive out-parameters.
        let status = unsafe {
            open(
                &host,
                args.options.as_ptr(),
                args.options.len(),
                &mut instance,
                &mut err,
            )
        };
        if status != STATUS_OK {
            return Err(CallError::Rejected {
                message: nonempty(err.message(), "open failed without a message"),
                key: err.key(),
            });
        }
        Ok(PluginInstance {
            instance,
            host_ctx: args.host_ctx,
            library,
        })
    }

    /// Writes one batch.
    ///
    /// # Errors
    /// [`CallError::Retry`] or [`CallError::Rejected`] as the plugin says.
    pub fn write(&mut self, records: &[FlowRecord]) -> Result<(), CallError> {
        let ffi: Vec<FfiRecord> = records.iter().map(FlowRecord::to_ffi).collect();
        let ptrs: Vec<*const FfiRecord> = ffi.iter().map(|r| r as *const FfiRecord).collect();
        let write = self.library.descriptor().write.expect("checked at load");
        let mut err = FfiError::new();
        // SAFETY: `ffi` borrows from `records`, and both outlive the call;
        // the instance is ours and used by this thread only.
        let status = unsafe { write(self.instance, ptrs.as_ptr(), ptrs.len(), &mut err) };
        status_to_result(status, &err, "write")
    }

    /// Flushes with `FLUSH_*` flags.
    ///
    /// # Errors
    /// As for [`Self::write`].
    pub fn flush(&mut self, flags: u32) -> Result<(), CallError> {
        let flush = self.library.descriptor().flush.expect("checked at load");
        let mut err = FfiError::new();
        // SAFETY: the instance is ours and used by this thread only.
        let status = unsafe { flush(self.instance, flags, &mut err) };
        status_to_result(status, &err, "flush")
    }
}

fn nonempty(s: String, default: &str) -> String {
    if s.is_empty() {
        default.to_owned()
    } else {
        s
    }
}

fn status_to_result(status: c_int, err: &FfiError, what: &str) -> Result<(), CallError> {
    match status {
        STATUS_OK => Ok(()),
        STATUS_RETRY => Err(CallError::Retry(nonempty(
            err.message(),
            &format!("{what} failed"),
        ))),
        _ => Err(CallError::Rejected {
            message: nonempty(err.message(), &format!("{what} failed")),
            key: err.key(),
        }),
    }
}

impl Drop for PluginInstance {
    fn drop(&mut self) {
        let close = self.library.descriptor().close.expect("checked at load");
        // SAFETY: the instance came from this library's open and is closed
        // exactly once; the library stays loaded until `self.library` drops
        // after this.
        unsafe { close(self.instance) };
        let _ = &self.host_ctx;
    }
}

// SAFETY: the ABI lets an instance move between threads as long as one
// thread at a time calls it; the worker thread owns it exclusively.
unsafe impl Send for PluginInstance {}
