//! Config errors, each naming the file, line, column and key.

use std::fmt;
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
    /// The file is readable but wrong at a place.
    Invalid {
        path: PathBuf,
        location: Option<Location>,
        key: Option<String>,
        message: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, source } => {
                write!(f, "{}: cannot read config: {source}", path.display())
            }
            ConfigError::Invalid {
                path,
                location,
                key,
                message,
            } => {
                write!(f, "{}", path.display())?;
                if let Some(loc) = location {
                    write!(f, ":{loc}")?;
                }
                write!(f, ": ")?;
                if let Some(key) = key {
                    write!(f, "{key}: ")?;
                }
                f.write_str(message)
            }
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Read { source, .. } => Some(source),
            ConfigError::Invalid { .. } => None,
        }
    }
}
