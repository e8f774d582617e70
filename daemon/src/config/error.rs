//! Config errors, each naming the file, line, column and key.

use std::fmt::{self, Write as _};
use std::path::PathBuf;

use super::Location;

/// Why a config file is not usable.
#[derive(Debug)]
pub enum ConfigError {
    /// The file could not be read.
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The path is no regular file (a FIFO, a device, a directory, a
    /// socket): reading it could block forever or never end.
    NotRegular { path: PathBuf, kind: &'static str },
    /// The file is larger than any config; it was not read.
    TooLarge { path: PathBuf, limit: u64 },
    /// The file is readable but wrong at a place.
    Invalid {
        path: PathBuf,
        location: Option<Location>,
        key: Option<String>,
        message: String,
    },
}

/// Writes `s` with control and other unprintable characters escaped
/// (`\n`, `\u{1b}`): values from the config reach a terminal and the
/// journal, where a raw newline forges a line and an escape sequence
/// rewrites the screen. Quotes and backslashes stay as they are so that
/// messages read naturally.
struct Escaped<'a>(&'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '"' | '\'' | '\\' => f.write_char(c)?,
                c => write!(f, "{}", c.escape_debug())?,
            }
        }
        Ok(())
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, source } => {
                let path = path.to_string_lossy();
                write!(f, "{}: cannot read config: {source}", Escaped(&path))
            }
            ConfigError::NotRegular { path, kind } => {
                let path = path.to_string_lossy();
                write!(
                    f,
                    "{}: not a regular file ({kind}); the config must be a regular file",
                    Escaped(&path)
                )
            }
            ConfigError::TooLarge { path, limit } => {
                let path = path.to_string_lossy();
                write!(
                    f,
                    "{}: larger than {} MiB, more than any config; not read",
                    Escaped(&path),
                    limit >> 20
                )
            }
            ConfigError::Invalid {
                path,
                location,
                key,
                message,
            } => {
                write!(f, "{}", Escaped(&path.to_string_lossy()))?;
                if let Some(loc) = location {
                    write!(f, ":{loc}")?;
                }
                write!(f, ": ")?;
                if let Some(key) = key {
                    write!(f, "{}: ", Escaped(key))?;
                }
                write!(f, "{}", Escaped(message))
            }
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Read { source, .. } => Some(source),
            ConfigError::NotRegular { .. }
            | ConfigError::TooLarge { .. }
            | ConfigError::Invalid { .. } => None,
        }
    }
}
