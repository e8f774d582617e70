//! An ENI's index in the registry, and why a registry cannot be built.

use std::fmt;
use std::num::NonZeroU16;

/// An ENI: its position in the registry, the config's `[[eni]]` tables
/// first, then ENIs learnt at run time in the order they appeared. Indices
/// are never reused while the registry lives (flows and window sums refer
/// to them); a reload builds a new registry. Two bytes, and
/// `Option<EniIndex>` is two bytes too, so the flow table can afford one
/// per direction of every live connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EniIndex(NonZeroU16);

impl EniIndex {
    /// The most ENIs a registry holds.
    pub const MAX_ENIS: usize = u16::MAX as usize;

    /// The index of the ENI at `position` in the registry, if it can be one.
    pub fn new(position: usize) -> Option<EniIndex> {
        u16::try_from(position + 1)
            .ok()
            .and_then(NonZeroU16::new)
            .map(EniIndex)
    }

    /// The position in the registry.
    pub fn get(self) -> usize {
        usize::from(self.0.get() - 1)
    }
}

/// Why a registry cannot be built.
#[derive(Debug, PartialEq, Eq)]
pub enum EniError {
    TooMany { count: usize },
}

impl fmt::Display for EniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EniError::TooMany { count } => write!(
                f,
                "{count} [[eni]] tables are configured; at most {} are supported",
                EniIndex::MAX_ENIS
            ),
        }
    }
}

impl std::error::Error for EniError {}
