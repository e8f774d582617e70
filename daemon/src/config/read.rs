//! Reading the config file's text, refusing what is no config file: a FIFO
//! (whose open and read block until a writer comes, which may be never:
//! `check-config` in `ExecStartPre` would hang the unit), a device or
//! anything endless, and files larger than any config.

use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use super::{ConfigError, Location};

/// Largest config read. 1000 flow logs (the most `max_flow_logs` allows)
/// and a few hundred ENIs take well under 300 KiB.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The text of the config at `path`.
///
/// # Errors
/// [`ConfigError::Read`] if it cannot be opened or read,
/// [`ConfigError::NotRegular`] for anything but a regular file (after
/// symlinks), [`ConfigError::TooLarge`] above [`MAX_CONFIG_BYTES`], and
/// [`ConfigError::Invalid`] at the first byte that is not UTF-8.
pub fn read_config(path: &Path) -> Result<String, ConfigError> {
    let read_err = |source| ConfigError::Read {
        path: path.to_owned(),
        source,
    };
    // O_NONBLOCK: opening a FIFO for reading otherwise waits for a writer.
    // The file type is then checked on the open file, not on the path, so
    // a swap between the check and the read changes nothing.
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(read_err)?;
    let file_type = file.metadata().map_err(read_err)?.file_type();
    if !file_type.is_file() {
        let kind = if file_type.is_fifo() {
            "a FIFO"
        } else if file_type.is_dir() {
            "a directory"
        } else if file_type.is_char_device() {
            "a character device"
        } else if file_type.is_block_device() {
            "a block device"
        } else if file_type.is_socket() {
            "a socket"
        } else {
            "an unknown kind of file"
        };
        return Err(ConfigError::NotRegular {
            path: path.to_owned(),
            kind,
        });
    }
    // Through `take`: the size fstat reported may grow while we read.
    let mut bytes = Vec::new();
    (&mut file)
        .take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge {
            path: path.to_owned(),
            limit: MAX_CONFIG_BYTES,
        });
    }
    String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let text = std::str::from_utf8(&e.as_bytes()[..valid]).unwrap_or_default();
        ConfigError::Invalid {
            path: path.to_owned(),
            location: Some(Location::of_offset(text, valid)),
            key: None,
            message: "not UTF-8 (TOML files are UTF-8)".to_owned(),
        }
    })
}
