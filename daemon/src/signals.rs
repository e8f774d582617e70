//! Signals as a file descriptor in the event loop (signalfd), so no work is
//! done inside a signal handler and the loop sees signals in order with its
//! other events.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// What the loop should do about a signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM / SIGINT: close the window early, flush, exit.
    Terminate,
    /// SIGHUP: reload the config, keeping the open window (and reopen
    /// outputs, as SIGUSR1 does).
    Reload,
    /// SIGUSR1: reopen outputs (logrotate), nothing else.
    Reopen,
}

/// A non-blocking signalfd for SIGTERM, SIGINT, SIGHUP and SIGUSR1.
pub struct SignalFd {
    fd: OwnedFd,
}

fn handled_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::sigaddset(&mut set, libc::SIGUSR1);
        set
    }
}

impl SignalFd {
    /// Blocks the signals for this thread (call before spawning threads, so
    /// they inherit the mask and the signals reach only the signalfd) and
    /// opens the signalfd.
    ///
    /// # Errors
    /// The OS error from sigprocmask or signalfd.
    pub fn open() -> io::Result<SignalFd> {
        let set = handled_set();
        // SAFETY: `set` is initialised; the old mask is not needed.
        if unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: -1 asks for a new fd; `set` is initialised.
        let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: signalfd returned a new fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(SignalFd { fd })
    }

    /// The next pending signal, or `None` when there is none.
    ///
    /// # Errors
    /// The OS error from read, other than EAGAIN.
    pub fn next(&mut self) -> io::Result<Option<Signal>> {
        loop {
            // SAFETY: signalfd_siginfo is plain old data.
            let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
            let size = std::mem::size_of::<libc::signalfd_siginfo>();
            // SAFETY: reading at most `size` bytes into `info`.
            let n = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    (&mut info as *mut libc::signalfd_siginfo).cast(),
                    size,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                return match e.kind() {
                    io::ErrorKind::WouldBlock => Ok(None),
                    io::ErrorKind::Interrupted => continue,
                    _ => Err(e),
                };
            }
            if n as usize != size {
                return Ok(None);
            }
            return Ok(match info.ssi_signo as i32 {
                libc::SIGTERM | libc::SIGINT => Some(Signal::Terminate),
                libc::SIGHUP => Some(Signal::Reload),
                libc::SIGUSR1 => Some(Signal::Reopen),
                _ => continue,
            });
        }
    }
}

impl AsRawFd for SignalFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
