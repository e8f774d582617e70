//! mark -> rule name for ACCEPT records, across reloads and restarts.
//!
//! A connection keeps the conntrack mark of the rule that accepted it for
//! its whole life, which may outlast the rule: a reload that removes the
//! rule, or a restart with a new config. So the names of earlier configs
//! are kept (in memory, and in `state_dir/sg-marks` for the next run), up
//! to [`MAX_REMEMBERED_NAMES`] besides the current config's.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;

use super::marks::{
    default_rule_name, RuleMark, DEFAULT_EGRESS_ACCEPT_MARK, DEFAULT_INGRESS_DROP_MARK, MARK_FLAG,
};
use super::policy::Policy;
use crate::ids::check_id;
use crate::state_file;

/// The file in `state_dir`.
pub const MARK_NAMES_FILE: &str = "sg-marks";
/// Names of rules no longer configured that are remembered, the most
/// recently configured first. A connection outlives its rule by at most
/// the conntrack timeout (5 days for an established TCP connection by
/// default); 4096 names are many more rules than a host drops in that
/// time, and the file stays under 1 MiB (names are ids of at most 2 x 128
/// bytes).
pub const MAX_REMEMBERED_NAMES: usize = 4096;
const HEADER: &str = "# flowlogd sg-marks 1: mark(hex) generation name";
/// A file larger than this is no file of ours (4096 + the current rules,
/// about 280 bytes a line at most, with room for many current rules).
const MAX_FILE_BYTES: u64 = 8 << 20;

#[derive(Clone, Debug)]
struct Known {
    name: Arc<str>,
    /// The [`MarkNames::learn`] call that last saw it; the oldest are
    /// forgotten first.
    generation: u64,
}

/// Conntrack mark -> rule name, for the current and earlier configs.
#[derive(Clone, Debug, Default)]
pub struct MarkNames {
    known: HashMap<u32, Known>,
    generation: u64,
}

/// Why `sg-marks` could not be read; the daemon logs it and starts with
/// the current config's names only.
#[derive(Debug)]
pub enum MarkNamesError {
    Io(io::Error),
    /// Not the daemon's own file (see [`state_file::check_own_file`]).
    NotOurs(String),
    TooLarge,
    Malformed {
        line: usize,
    },
}

impl fmt::Display for MarkNamesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MarkNamesError::Io(e) => write!(f, "{e}"),
            MarkNamesError::NotOurs(why) => write!(f, "{why}: not trusted"),
            MarkNamesError::TooLarge => {
                write!(f, "larger than {} MiB: not read", MAX_FILE_BYTES >> 20)
            }
            MarkNamesError::Malformed { line } => write!(f, "malformed at line {line}"),
        }
    }
}

impl std::error::Error for MarkNamesError {}

impl MarkNames {
    /// The name of the rule whose mark is `mark`; `None` for a mark
    /// without [`MARK_FLAG`] (not ours) or one never learnt.
    pub fn name_of(&self, mark: u32) -> Option<Arc<str>> {
        if mark & MARK_FLAG == 0 {
            return None;
        }
        if mark == DEFAULT_EGRESS_ACCEPT_MARK || mark == DEFAULT_INGRESS_DROP_MARK {
            return Some(default_rule_name());
        }
        self.known.get(&mark).map(|k| Arc::clone(&k.name))
    }

    /// Adds the rules of `policy` (the config at start and after each
    /// reload), keeping earlier names up to [`MAX_REMEMBERED_NAMES`].
    pub fn learn(&mut self, policy: &Policy) {
        self.generation += 1;
        for RuleMark { mark, name } in policy.rule_marks() {
            self.known.insert(
                *mark,
                Known {
                    name: Arc::clone(name),
                    generation: self.generation,
                },
            );
        }
        self.forget_oldest(policy.rule_marks().len());
    }

    /// Names known (the defaults not counted).
    pub fn len(&self) -> usize {
        self.known.len()
    }

    fn forget_oldest(&mut self, current: usize) {
        let limit = MAX_REMEMBERED_NAMES + current;
        if self.known.len() <= limit {
            return;
        }
        let mut by_age: Vec<(u64, u32)> =
            self.known.iter().map(|(m, k)| (k.generation, *m)).collect();
        by_age.sort_unstable();
        let excess = self.known.len() - limit;
        for (_, mark) in by_age.into_iter().take(excess) {
            self.known.remove(&mark);
        }
    }

    /// Reads `state_dir/sg-marks`; none there: nothing known.
    ///
    /// # Errors
    /// Why the file cannot be used.
    pub fn load(state_dir: &Path) -> Result<MarkNames, MarkNamesError> {
        let path = state_dir.join(MARK_NAMES_FILE);
        let file = match state_file::open_nofollow(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(MarkNames::default()),
            Err(e) => return Err(MarkNamesError::Io(state_file::with_path(&path)(e))),
        };
        state_file::check_own_file(&file).map_err(MarkNamesError::NotOurs)?;
        let mut text = String::new();
        file.take(MAX_FILE_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(|e| MarkNamesError::Io(state_file::with_path(&path)(e)))?;
        if text.len() as u64 > MAX_FILE_BYTES {
            return Err(MarkNamesError::TooLarge);
        }
        Self::parse(&text)
    }

    fn parse(text: &str) -> Result<MarkNames, MarkNamesError> {
        let mut lines = text.lines().enumerate();
        if lines.next().map(|(_, l)| l) != Some(HEADER) {
            return Err(MarkNamesError::Malformed { line: 1 });
        }
        let mut names = MarkNames::default();
        for (i, line) in lines {
            let malformed = MarkNamesError::Malformed { line: i + 1 };
            let mut parts = line.splitn(3, ' ');
            let (Some(mark), Some(generation), Some(name)) =
                (parts.next(), parts.next(), parts.next())
            else {
                return Err(malformed);
            };
            let mark = u32::from_str_radix(mark, 16)
                .map_err(|_| MarkNamesError::Malformed { line: i + 1 })?;
            let generation: u64 = generation
                .parse()
                .map_err(|_| MarkNamesError::Malformed { line: i + 1 })?;
            // Names go into records: only what config validation lets in.
            if mark & MARK_FLAG == 0 || check_id(name).is_err() {
                return Err(malformed);
            }
            names.generation = names.generation.max(generation);
            names.known.insert(
                mark,
                Known {
                    name: name.into(),
                    generation,
                },
            );
        }
        names.forget_oldest(0);
        Ok(names)
    }

    /// Writes `state_dir/sg-marks` atomically (a crash leaves the old file
    /// or the new one), oldest first.
    ///
    /// # Errors
    /// The I/O error, with the path.
    pub fn save(&self, state_dir: &Path) -> io::Result<()> {
        state_file::write_atomically(state_dir, MARK_NAMES_FILE, self.to_text().as_bytes(), 0o600)
    }

    fn to_text(&self) -> String {
        let mut entries: Vec<(&u32, &Known)> = self.known.iter().collect();
        entries.sort_unstable_by_key(|(m, k)| (k.generation, **m));
        let mut out = String::with_capacity(64 + entries.len() * 48);
        out.push_str(HEADER);
        out.push('\n');
        for (mark, k) in entries {
            out.push_str(&format!("{mark:08x} {} {}\n", k.generation, k.name));
        }
        out
    }
}
