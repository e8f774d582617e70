//! The config file: TOML, then every check of the schema. A bad file must
//! give a `ConfigError` with its location, never a panic.
#![no_main]

use std::path::Path;

use flowlogd::config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(src) = std::str::from_utf8(bytes) {
        if let Err(e) = config::parse(Path::new("fuzz.toml"), src) {
            // Formatting the error walks the source to find line and key.
            let _ = e.to_string();
        }
    }
});
