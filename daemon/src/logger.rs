//! Logging to stderr, the way systemd wants it: when stderr is the journal
//! (JOURNAL_STREAM is set) each line starts with a `<N>` syslog priority and
//! no timestamp (journald adds its own); otherwise a UTC timestamp and level.

use std::io::Write;

struct StderrLogger {
    journal: bool,
}

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = if self.journal {
            let prio = match record.level() {
                log::Level::Error => 3,
                log::Level::Warn => 4,
                log::Level::Info => 6,
                log::Level::Debug | log::Level::Trace => 7,
            };
            format!("<{prio}>{}\n", record.args())
        } else {
            format!("{} {:<5} {}\n", utc_now(), record.level(), record.args())
        };
        // One write call per line so lines from sink threads do not interleave.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

fn utc_now() -> String {
    utc(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64))
}

/// Unix second `secs` as `YYYY-MM-DDTHH:MM:SSZ`, without pulling in a
/// date crate.
pub fn utc(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Installs the logger; later calls only change the level.
pub fn init(level: log::LevelFilter) {
    static LOGGER: std::sync::OnceLock<StderrLogger> = std::sync::OnceLock::new();
    let logger = LOGGER.get_or_init(|| StderrLogger {
        journal: std::env::var_os("JOURNAL_STREAM").is_some(),
    });
    let _ = log::set_logger(logger);
    log::set_max_level(level);
}
