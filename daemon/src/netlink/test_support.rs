//! The captured netlink fixtures, for the parser tests. The tests of the
//! sockets against the live kernel (root, a network namespace) are in
//! tests/tests/netlink_*.rs.

use std::path::PathBuf;

/// tests/fixtures/netlink/<name>
pub fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/netlink")
        .join(name)
}

/// A fixture file of captured messages: one message per line,
/// `<label> <hex>`; `#` lines are comments.
pub fn load_fixture(name: &str) -> Vec<(String, Vec<u8>)> {
    let path = fixture_path(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (label, hex) = l.split_once(' ').expect("`<label> <hex>` line");
            (label.to_string(), from_hex(hex.trim()))
        })
        .collect()
}

pub fn from_hex(hex: &str) -> Vec<u8> {
    assert!(hex.len() % 2 == 0, "odd hex length");
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex digit"))
        .collect()
}
