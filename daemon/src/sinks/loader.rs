//! Finding a plugin file, checking it is safe to load, and checking its ABI.
//!
//! The daemon runs with CAP_NET_ADMIN and loads plugins into its own
//! process, so a plugin file, or a directory on its path, that anyone but
//! root (or the daemon's own user) can change is a privilege escalation:
//! such plugins are refused (see trusted_path.rs), and the file checked is
//! the file loaded, through its open descriptor.

use std::ffi::CStr;
use std::fmt;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use flowlogd_plugin_api::abi::{
    DescriptorFn, FfiDescriptor, ABI_MAJOR, ABI_MINOR, DESCRIPTOR_SYMBOL,
};

use super::trusted_path::{open_trusted, ComponentKind, TrustedFile, UnsafeReason};

/// Why a plugin was not loaded.
#[derive(Debug)]
pub enum LoadError {
    NotFound {
        plugin: String,
        tried: Vec<PathBuf>,
    },
    /// A component of the plugin's path (a directory, a symbolic link, or
    /// the file itself) that someone other than root or the daemon's user
    /// could change, or a file that is not a regular file.
    Unsafe {
        path: PathBuf,
        component: PathBuf,
        kind: ComponentKind,
        reason: UnsafeReason,
    },
    Open {
        path: PathBuf,
        reason: String,
    },
    MissingSymbol {
        path: PathBuf,
    },
    AbiMismatch {
        path: PathBuf,
        found_major: u16,
        found_minor: u16,
    },
    /// Same major, but a minor this daemon does not know: the plugin would
    /// read record fields past the end of the records it is handed.
    AbiNewer {
        path: PathBuf,
        found_minor: u16,
    },
    BadDescriptor {
        path: PathBuf,
        reason: String,
    },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::NotFound { plugin, tried } => {
                let tried: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
                write!(f, "plugin \"{plugin}\" not found (looked for {})", tried.join(", "))
            }
            LoadError::Unsafe {
                path,
                component,
                kind,
                reason,
            } => {
                write!(f, "{}: refused: ", path.display())?;
                write_unsafe(f, path, component, *kind, reason)
            }
            LoadError::Open { path, reason } => write!(f, "{}: cannot load: {reason}", path.display()),
            LoadError::MissingSymbol { path } => write!(
                f,
                "{}: refused: not a flowlogd sink plugin (no `flowlogd_sink_descriptor` symbol)",
                path.display()
            ),
            LoadError::AbiMismatch {
                path,
                found_major,
                found_minor,
            } => write!(
                f,
                "{}: refused: plugin ABI version {found_major}.{found_minor}, this flowlogd speaks ABI {ABI_MAJOR}.x; \
                 rebuild the plugin against this version's flowlogd_sink.h / flowlogd-plugin-api",
                path.display()
            ),
            LoadError::AbiNewer { path, found_minor } => write!(
                f,
                "{}: refused: plugin ABI version {ABI_MAJOR}.{found_minor} is newer than this flowlogd's \
                 ABI {ABI_MAJOR}.{ABI_MINOR}: it would read record fields this flowlogd does not pass; \
                 upgrade flowlogd or rebuild the plugin against this version's flowlogd_sink.h / \
                 flowlogd-plugin-api",
                path.display()
            ),
            LoadError::BadDescriptor { path, reason } => {
                write!(f, "{}: refused: invalid descriptor: {reason}", path.display())
            }
        }
    }
}

impl std::error::Error for LoadError {}

/// "file is writable by others (mode 0646); run `chmod go-w PATH`", naming
/// the component unless it is the plugin path itself.
fn write_unsafe(
    f: &mut fmt::Formatter<'_>,
    path: &Path,
    component: &Path,
    kind: ComponentKind,
    reason: &UnsafeReason,
) -> fmt::Result {
    let what = match kind {
        ComponentKind::File => "file",
        ComponentKind::Directory => "directory",
        ComponentKind::Symlink => "symbolic link",
    };
    if component == path {
        write!(f, "{what}")?;
    } else {
        write!(f, "{what} {}", component.display())?;
    }
    let at = component.display();
    match reason {
        UnsafeReason::Writable { mode } => {
            let who = if mode & 0o020 != 0 && mode & 0o002 != 0 {
                "group and others"
            } else if mode & 0o020 != 0 {
                "its group"
            } else {
                "others"
            };
            write!(f, " is writable by {who} (mode {mode:04o})")?;
            if kind == ComponentKind::Directory {
                write!(
                    f,
                    " without the sticky bit, so they can swap the plugin; run `chmod go-w {at}`"
                )
            } else {
                write!(f, "; run `chmod go-w {at}`")
            }
        }
        UnsafeReason::Owner { uid, euid: 0 } => write!(
            f,
            " is owned by uid {uid}, not root, and flowlogd runs as root; run `chown root {at}`"
        ),
        UnsafeReason::Owner { uid, euid } => write!(
            f,
            " is owned by uid {uid}, neither root nor flowlogd's own user (uid {euid}); \
             run `chown root {at}`"
        ),
        UnsafeReason::NotRegularFile => write!(f, " is not a regular file"),
        UnsafeReason::TooManySymlinks => write!(
            f,
            " is one symbolic link too many (more than 40 on the way to the plugin)"
        ),
    }
}

/// The file `plugin` (from a sink's `plugin = ...`) refers to: an absolute
/// path as is, a name as `<plugin_dir>/<name>.so` or, as cargo names
/// cdylibs, `<plugin_dir>/libflowlogd_sink_<name>.so`.
///
/// # Errors
/// [`LoadError::NotFound`] listing the paths tried.
pub fn resolve_plugin(plugin_dir: &Path, plugin: &str) -> Result<PathBuf, LoadError> {
    let candidates = if plugin.starts_with('/') {
        vec![PathBuf::from(plugin)]
    } else {
        vec![
            plugin_dir.join(format!("{plugin}.so")),
            plugin_dir.join(format!("libflowlogd_sink_{}.so", plugin.replace('-', "_"))),
        ]
    };
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or(LoadError::NotFound {
            plugin: plugin.to_owned(),
            tried: candidates,
        })
}

/// A loaded plugin library and its checked descriptor.
pub struct PluginLibrary {
    pub path: PathBuf,
    pub name: String,
    pub version: String,
    pub abi_minor: u16,
    descriptor: *const FfiDescriptor,
    // Keeps the code the descriptor points into mapped. Instances hold an
    // Arc<PluginLibrary>, so the library is unloaded only after every
    // instance has been closed.
    _library: libloading::Library,
}

// SAFETY: the descriptor is immutable static data of the loaded library,
// which stays loaded as long as this struct lives.
unsafe impl Send for PluginLibrary {}
// SAFETY: as above; nothing in it is mutated after load.
unsafe impl Sync for PluginLibrary {}

impl PluginLibrary {
    /// Opens the file through a trusted path (see trusted_path.rs), loads
    /// that open file, looks up its descriptor and
    /// checks the ABI version and the descriptor's functions.
    ///
    /// # Errors
    /// A typed [`LoadError`] for each reason a plugin is refused.
    pub fn load(path: &Path) -> Result<Arc<PluginLibrary>, LoadError> {
        let trusted = open_trusted(path)?;
        Self::load_opened(path, trusted)
    }

    /// Loads the file `open_trusted` opened (through its descriptor, so a
    /// rename since then changes nothing) and checks it as `load` says.
    fn load_opened(path: &Path, trusted: TrustedFile) -> Result<Arc<PluginLibrary>, LoadError> {
        let by_descriptor = descriptor_path(trusted.file.as_raw_fd());
        // SAFETY: loading a library runs its initialisers. We load the very
        // file `open_trusted` opened and checked (root's or ours, not
        // writable by others, reached through directories only root or we
        // can change); `trusted.file` keeps the descriptor open until
        // dlopen has returned.
        let library =
            unsafe { libloading::Library::new(&by_descriptor) }.map_err(|e| LoadError::Open {
                path: path.to_owned(),
                reason: format!("loading it through {by_descriptor}: {e}"),
            })?;
        drop(trusted);
        // SAFETY: the symbol, if present, has the type the ABI defines.
        let descriptor_fn: DescriptorFn =
            match unsafe { library.get::<DescriptorFn>(DESCRIPTOR_SYMBOL) } {
                Ok(sym) => *sym,
                Err(_) => {
                    return Err(LoadError::MissingSymbol {
                        path: path.to_owned(),
                    })
                }
            };
        // SAFETY: a plugin's descriptor function takes no arguments and
        // returns a pointer to static data.
        let descriptor = unsafe { descriptor_fn() };
        let bad = |reason: &str| LoadError::BadDescriptor {
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        if descriptor.is_null() {
            return Err(bad("flowlogd_sink_descriptor() returned NULL"));
        }
        // SAFETY: non-null, and the first three fields (the versions and
        // size) exist in every ABI version, so reading them is sound even
        // before we know the plugin's major version.
        let (major, minor, size) = unsafe {
            (
                (*descriptor).abi_major,
                (*descriptor).abi_minor,
                (*descriptor).struct_size,
            )
        };
        if major != ABI_MAJOR {
            return Err(LoadError::AbiMismatch {
                path: path.to_owned(),
                found_major: major,
                found_minor: minor,
            });
        }
        // Older minors load: their records are a prefix of ours (fields are
        // only appended). A newer one expects fields we do not fill.
        if minor > ABI_MINOR {
            return Err(LoadError::AbiNewer {
                path: path.to_owned(),
                found_minor: minor,
            });
        }
        if (size as usize) < std::mem::size_of::<FfiDescriptor>() {
            return Err(bad(&format!(
                "struct_size {size} is smaller than ABI {ABI_MAJOR}.0's {}",
                std::mem::size_of::<FfiDescriptor>()
            )));
        }
        // SAFETY: same major version and large enough: the layout is ours.
        let d = unsafe { &*descriptor };
        if d.open.is_none() || d.write.is_none() || d.flush.is_none() || d.close.is_none() {
            return Err(bad("open, write, flush and close must all be set"));
        }
        let c_string = |p: *const std::ffi::c_char, what: &str| -> Result<String, LoadError> {
            if p.is_null() {
                return Err(bad(&format!("{what} is NULL")));
            }
            // SAFETY: non-null, and the ABI says it is a NUL-terminated
            // static string.
            Ok(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
        };
        let name = c_string(d.name, "name")?;
        let version = c_string(d.version, "version")?;
        Ok(Arc::new(PluginLibrary {
            path: path.to_owned(),
            name,
            version,
            abi_minor: minor,
            descriptor,
            _library: library,
        }))
    }

    pub(super) fn descriptor(&self) -> &FfiDescriptor {
        // SAFETY: checked in `load`; the library is kept loaded by `self`.
        unsafe { &*self.descriptor }
    }
}

/// `/proc/self/fd/<fd>`, spelled differently at every call.
///
/// glibc's dlopen returns an already loaded library whose name is the same
/// string, without opening the file; descriptor numbers are reused, so a
/// second plugin opened as the same fd number would get the first one back.
/// The path between `/proc` and `self` encodes a per-process counter in
/// 32 tokens of `/` (bit 0) or `/.` (bit 1), which the kernel resolves to the
/// same `/proc/self` and glibc sees as distinct names. (The same file loaded
/// twice is still shared: glibc also compares device and inode.)
fn descriptor_path(fd: std::os::fd::RawFd) -> String {
    static LOADS: AtomicU32 = AtomicU32::new(0);
    let n = LOADS.fetch_add(1, Ordering::Relaxed);
    let mut path = String::from("/proc");
    for bit in 0..32 {
        path.push_str(if n >> bit & 1 == 1 { "/." } else { "/" });
    }
    path.push_str(&format!("/self/fd/{fd}"));
    path
}

/// What `flowlogd plugins` reports for one file of the plugin directory.
pub struct ScannedPlugin {
    pub path: PathBuf,
    pub result: Result<Arc<PluginLibrary>, LoadError>,
}

/// Loads every `*.so` in `dir` (sorted by file name) to report on it.
///
/// # Errors
/// The I/O error if the directory cannot be read.
pub fn scan_plugin_dir(dir: &Path) -> std::io::Result<Vec<ScannedPlugin>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "so"))
        .collect();
    paths.sort();
    Ok(paths
        .into_iter()
        .map(|path| ScannedPlugin {
            result: PluginLibrary::load(&path),
            path,
        })
        .collect())
}

#[cfg(test)]
mod tests;
