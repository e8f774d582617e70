//! How the daemon runs another program (today only `nft`).
//!
//! The daemon's environment may hold secrets a sink reads at open (the
//! Log Service key in `FLOWLOGD_LOGSERVICE_ACCESS_KEY_SECRET`), and
//! variables that change how a program behaves (`LD_PRELOAD`, `NFT_*`,
//! locale). A child needs none of them: it gets a fixed PATH and the C
//! locale, so its output and errors read the same on every host, and no
//! standard input unless the caller pipes one.

use std::ffi::OsStr;
use std::process::{Command, Stdio};

/// The PATH a child gets: the system's directories only.
pub const PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// A command for `program` with a minimal environment (`PATH` and
/// `LC_ALL=C`, nothing inherited) and standard input from /dev/null.
pub fn minimal_command(program: impl AsRef<OsStr>) -> Command {
    let mut command = Command::new(program);
    command
        .env_clear()
        .env("PATH", PATH)
        .env("LC_ALL", "C")
        .stdin(Stdio::null());
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The environment a child started by `minimal_command` sees, as
    /// printed by env(1), while the daemon's holds a Log Service secret.
    #[test]
    fn a_child_does_not_inherit_the_daemons_environment() {
        // Set for this whole test process; no other test reads it.
        std::env::set_var("FLOWLOGD_LOGSERVICE_ACCESS_KEY_SECRET", "secret-xyz");
        let out = minimal_command("/usr/bin/env").output().expect("run env");
        assert!(out.status.success());
        let mut lines: Vec<String> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        lines.sort();
        assert_eq!(
            lines,
            ["LC_ALL=C".to_owned(), format!("PATH={PATH}"),],
            "exactly the two variables, no secret"
        );
    }
}
