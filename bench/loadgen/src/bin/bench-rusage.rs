//! Runs a command and, when it exits, writes what it cost as one JSON line
//! to a file: user and system CPU seconds and peak RSS, from wait4(2)'s
//! rusage. That covers the whole life of the process, its shutdown
//! included (flowlogd writes its last window's records after SIGTERM),
//! which /proc/<pid>/stat read before the signal would miss, and peak RSS
//! is the kernel's high-water mark (VmHWM), not a sample.
//!
//! ```text
//! bench-rusage OUT.json PIDFILE -- PROGRAM [ARGS...]
//! ```
//!
//! The child's pid goes to PIDFILE at once, so that the caller can signal
//! exactly that process. This wrapper ignores SIGTERM and SIGINT: they
//! are meant for the child, and the wrapper must outlive it to report.

use std::io::Write;
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let (out, pidfile, program, args) = match argv.as_slice() {
        [out, pidfile, dashes, program, args @ ..] if dashes == "--" => {
            (out, pidfile, program, args)
        }
        _ => {
            eprintln!("usage: bench-rusage OUT.json PIDFILE -- PROGRAM [ARGS...]");
            return ExitCode::from(2);
        }
    };
    // SAFETY: signal(2) setting SIG_IGN for two valid signal numbers; no
    // handler is installed. Ignored signals stay ignored across exec, so
    // the child gets the defaults back below.
    unsafe {
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
        libc::signal(libc::SIGINT, libc::SIG_IGN);
    }
    let mut cmd = Command::new(program);
    cmd.args(args);
    // SAFETY: pre_exec runs in the forked child before exec; signal(2) is
    // async-signal-safe.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::signal(libc::SIGTERM, libc::SIG_DFL);
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            Ok(())
        });
    }
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bench-rusage: cannot run {program}: {e}");
            return ExitCode::from(2);
        }
    };
    let pid = child.id() as libc::pid_t;
    if let Err(e) = std::fs::write(pidfile, format!("{pid}\n")) {
        eprintln!("bench-rusage: {pidfile}: {e}");
    }
    // SAFETY: rusage is plain data; all-zero is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: wait4 on our own child's pid with pointers to live locals.
        let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if rc == pid {
            break;
        }
        if rc < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            eprintln!("bench-rusage: wait4: {}", std::io::Error::last_os_error());
            return ExitCode::from(2);
        }
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let (code, signal) = if libc::WIFEXITED(status) {
        (Some(libc::WEXITSTATUS(status)), None)
    } else {
        (
            None,
            libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status)),
        )
    };
    let line = serde_json::json!({
        "pid": pid,
        "exit_code": code,
        "signal": signal,
        "utime_secs": secs(ru.ru_utime),
        "stime_secs": secs(ru.ru_stime),
        // Linux reports ru_maxrss in KiB.
        "maxrss_kib": ru.ru_maxrss,
    });
    let written = std::fs::File::create(out).and_then(|mut f| writeln!(f, "{line}"));
    if let Err(e) = written {
        eprintln!("bench-rusage: {out}: {e}");
        return ExitCode::from(2);
    }
    match code {
        Some(0) => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}
