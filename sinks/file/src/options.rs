//! The sink's options (`[sinks.<name>]` without `plugin`), validated at open.

use std::path::PathBuf;

use flowlogd_plugin_api::{FieldList, Options, SinkError};
use serde::Deserialize;

/// Below this, rotation would happen every few records: almost certainly a
/// typo (a size in KiB or MiB written as bytes).
pub const MIN_ROTATE_BYTES: u64 = 4096;
/// A bound on how many renames one rotation may do.
pub const MAX_ROTATE_KEEP: u32 = 1000;

const fn default_rotate_bytes() -> u64 {
    100 * 1024 * 1024
}
const fn default_rotate_keep() -> u32 {
    5
}
fn default_format() -> String {
    "text".to_owned()
}
fn default_file_mode() -> String {
    "0640".to_owned()
}

/// The options as written. `format` and `file_mode` stay strings here so
/// that a bad value gets our message rather than serde's.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileOptions {
    /// Optional only to serde: `Options::deserialize` attributes a missing
    /// field to whichever key comes first in the table (toml gives that
    /// error the whole table's span), so we report it ourselves.
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default = "default_format")]
    pub format: String,
    #[serde(default = "default_rotate_bytes")]
    pub rotate_bytes: u64,
    #[serde(default = "default_rotate_keep")]
    pub rotate_keep: u32,
    #[serde(default = "default_file_mode")]
    pub file_mode: String,
    /// The fields of each line, in order; absent: the design's 18.
    #[serde(default)]
    pub fields: Option<Vec<String>>,
}

/// How each record becomes a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// The listed fields, space separated (`format::write_text_fields`).
    Text,
    /// One JSON object per line (`format::write_json_fields`).
    Json,
}

/// The validated options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileConfig {
    pub path: PathBuf,
    pub format: Format,
    /// 0 = never rotate.
    pub rotate_bytes: u64,
    pub rotate_keep: u32,
    pub file_mode: u32,
    pub fields: FieldList,
}

impl FileConfig {
    /// Parses and validates the sink's options.
    ///
    /// # Errors
    /// [`SinkError::config`] naming the offending key.
    pub fn from_options(options: &Options) -> Result<FileConfig, SinkError> {
        let raw: FileOptions = options.deserialize()?;
        let raw_path = raw
            .path
            .ok_or_else(|| SinkError::config("path", "missing field `path`"))?;
        let path = PathBuf::from(&raw_path);
        if !path.is_absolute() {
            return Err(SinkError::config(
                "path",
                format!("expected an absolute path, got {raw_path:?}"),
            ));
        }
        let format = match raw.format.as_str() {
            "text" => Format::Text,
            "json" => Format::Json,
            other => {
                return Err(SinkError::config(
                    "format",
                    format!("expected \"text\" or \"json\", got {other:?}"),
                ))
            }
        };
        if raw.rotate_bytes != 0 && raw.rotate_bytes < MIN_ROTATE_BYTES {
            return Err(SinkError::config(
                "rotate_bytes",
                format!(
                    "expected 0 (never rotate) or at least {MIN_ROTATE_BYTES}, got {}",
                    raw.rotate_bytes
                ),
            ));
        }
        if !(1..=MAX_ROTATE_KEEP).contains(&raw.rotate_keep) {
            return Err(SinkError::config(
                "rotate_keep",
                format!("expected 1 to {MAX_ROTATE_KEEP}, got {}", raw.rotate_keep),
            ));
        }
        let file_mode = parse_mode(&raw.file_mode).ok_or_else(|| {
            SinkError::config(
                "file_mode",
                format!(
                    "expected an octal permission mode like \"0640\" (at most \"0777\"), got {:?}",
                    raw.file_mode
                ),
            )
        })?;
        let fields = FieldList::from_option(raw.fields.as_deref())?;
        Ok(FileConfig {
            path,
            format,
            rotate_bytes: raw.rotate_bytes,
            rotate_keep: raw.rotate_keep,
            file_mode,
            fields,
        })
    }
}

/// "0640" or "640" -> 0o640. Setuid, setgid and sticky bits make no sense on
/// a log file, so anything above 0o777 is refused.
fn parse_mode(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 4 || !s.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    u32::from_str_radix(s, 8).ok().filter(|m| *m <= 0o777)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(parse_mode("0640"), Some(0o640));
        assert_eq!(parse_mode("600"), Some(0o600));
        assert_eq!(parse_mode("4755"), None);
        assert_eq!(parse_mode("0x64"), None);
        assert_eq!(parse_mode("0689"), None);
        assert_eq!(parse_mode(""), None);
    }
}
