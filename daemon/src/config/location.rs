//! Turning byte offsets from toml's spans into `line:col` and key paths.

use std::fmt;

/// A position in the config file, 1-based, as editors show it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub col: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

impl Location {
    /// The line and column of byte `offset` in `src` (columns count chars).
    pub fn of_offset(src: &str, offset: usize) -> Location {
        let offset = offset.min(src.len());
        let before = &src[..floor_char_boundary(src, offset)];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = before[line_start..].chars().count() + 1;
        Location { line, col }
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Best-effort dotted key path (`daemon.capture_window_secs`) of the key or
/// value at `offset`, from the nearest table header above it and the key at
/// the start of its line. Used for toml's own errors, which carry a span but
/// not the key.
pub fn key_path_at(src: &str, offset: usize) -> Option<String> {
    let offset = floor_char_boundary(src, offset.min(src.len()));
    let line_start = src[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line_end = src[offset..].find('\n').map_or(src.len(), |i| offset + i);
    let line = &src[line_start..line_end];
    let trimmed = line.trim_start();
    let header = |l: &str| -> Option<String> {
        let l = l.trim();
        let inner = l
            .strip_prefix("[[")
            .and_then(|r| r.split("]]").next())
            .or_else(|| l.strip_prefix('[').and_then(|r| r.split(']').next()))?;
        Some(inner.trim().to_owned())
    };
    if trimmed.starts_with('[') {
        return header(trimmed);
    }
    let key = trimmed.split('=').next()?.trim().trim_matches('"');
    if key.is_empty() || key.starts_with('#') {
        return None;
    }
    let table = src[..line_start].lines().rev().find_map(|l| {
        let t = l.trim_start();
        if t.starts_with('[') {
            header(t)
        } else {
            None
        }
    });
    Some(match table {
        Some(t) => format!("{t}.{key}"),
        None => key.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based() {
        let src = "a = 1\nbb = 2\n";
        assert_eq!(Location::of_offset(src, 0), Location { line: 1, col: 1 });
        assert_eq!(Location::of_offset(src, 11), Location { line: 2, col: 6 });
    }

    #[test]
    fn key_path_uses_the_enclosing_table() {
        let src = "[daemon]\ncapture_window_secs = 0\n[[eni]]\nid = 3\n";
        assert_eq!(
            key_path_at(src, 31).as_deref(),
            Some("daemon.capture_window_secs")
        );
        assert_eq!(key_path_at(src, src.len() - 2).as_deref(), Some("eni.id"));
    }
}
