//! The one rule for ids and names that end up in records, log lines and
//! file names: ENI, VSwitch, VPC, VM and account ids (from the config or
//! the metadata service), flow log and sink names.
//!
//! Records are written as space-separated text lines, syslog lines and
//! CSV: an id with a space, a newline or a NUL in it would forge a field or
//! a whole record. Cloud ids are short printable ASCII (`eni-bp1...`,
//! `1234567890123456`), so anything else is a mistake or an attack.

use std::fmt;

/// Longest id accepted, in bytes. Alibaba Cloud ids are under 32 bytes and
/// flow log names at most 128 characters; a longer value is no id.
pub const MAX_ID_LEN: usize = 128;

/// Why a value is not a usable id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdError {
    Empty,
    TooLong {
        len: usize,
    },
    /// A byte that is not printable ASCII (`!`..=`~`): whitespace, a
    /// control character, or non-ASCII. The char and its byte offset.
    Unprintable {
        at: usize,
        c: char,
    },
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdError::Empty => f.write_str("expected a non-empty id"),
            IdError::TooLong { len } => {
                write!(
                    f,
                    "{len} bytes long, longer than the {MAX_ID_LEN} an id may have"
                )
            }
            IdError::Unprintable { at, c } => write!(
                f,
                "'{}' at byte {at}: ids are printable ASCII without whitespace (they are fields of \
                 text records and log lines)",
                c.escape_debug()
            ),
        }
    }
}

impl std::error::Error for IdError {}

/// Whether `s` is a usable id: 1..=[`MAX_ID_LEN`] bytes of printable
/// ASCII other than space.
///
/// # Errors
/// The first reason it is not, as an [`IdError`].
pub fn check_id(s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if let Some((at, c)) = s.char_indices().find(|(_, c)| !c.is_ascii_graphic()) {
        return Err(IdError::Unprintable { at, c });
    }
    if s.len() > MAX_ID_LEN {
        return Err(IdError::TooLong { len: s.len() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloud_ids_pass() {
        for id in [
            "eni-bp1b2c0jvnj0g17b****",
            "1234567890123456",
            "-",
            "vpc_1.a:b/c",
        ] {
            assert_eq!(check_id(id), Ok(()), "{id}");
        }
        assert_eq!(check_id(&"a".repeat(MAX_ID_LEN)), Ok(()));
    }

    #[test]
    fn separators_controls_and_non_ascii_are_refused() {
        assert_eq!(check_id(""), Err(IdError::Empty));
        assert_eq!(
            check_id("vpc adv"),
            Err(IdError::Unprintable { at: 3, c: ' ' })
        );
        assert_eq!(
            check_id("vpc\nINJECT"),
            Err(IdError::Unprintable { at: 3, c: '\n' })
        );
        assert_eq!(
            check_id("a\0"),
            Err(IdError::Unprintable { at: 1, c: '\0' })
        );
        assert_eq!(
            check_id("a\t"),
            Err(IdError::Unprintable { at: 1, c: '\t' })
        );
        assert_eq!(
            check_id("\u{7f}"),
            Err(IdError::Unprintable { at: 0, c: '\u{7f}' })
        );
        assert_eq!(
            check_id("vpc-\u{202e}1"),
            Err(IdError::Unprintable {
                at: 4,
                c: '\u{202e}'
            })
        );
        assert_eq!(
            check_id(&"a".repeat(MAX_ID_LEN + 1)),
            Err(IdError::TooLong {
                len: MAX_ID_LEN + 1
            })
        );
        assert_eq!(
            IdError::Unprintable { at: 3, c: '\n' }.to_string(),
            "'\\n' at byte 3: ids are printable ASCII without whitespace (they are fields of text \
             records and log lines)"
        );
    }
}
