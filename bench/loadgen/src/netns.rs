//! Opening sockets in the other namespace (the "VM" side): the generator
//! runs in its own namespace, and the sockets that keep the VM side quiet
//! (a UDP socket so that no ICMP port-unreachable answers the flows, the
//! TCP listener) live in the VM's. A socket stays in the namespace it was
//! created in, so the thread switches there, creates it, and switches back.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// While alive, the calling thread is in another network namespace; on
/// drop it returns to the one it came from.
pub struct InNetns {
    home: File,
}

impl InNetns {
    /// Moves the calling thread into the namespace `ip netns add <name>`
    /// created (`/run/netns/<name>`).
    ///
    /// # Errors
    /// Opening either namespace file or setns(2) (needs CAP_SYS_ADMIN).
    pub fn enter(name: &str) -> io::Result<InNetns> {
        if name.is_empty() || name.contains('/') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name:?} is not a namespace name"),
            ));
        }
        // /proc/thread-self: setns moves only this thread, so the way back
        // is this thread's namespace, not the process leader's.
        let home = File::open("/proc/thread-self/ns/net")?;
        let target = File::open(format!("/run/netns/{name}"))
            .map_err(|e| io::Error::new(e.kind(), format!("/run/netns/{name}: {e}")))?;
        setns(&target)?;
        Ok(InNetns { home })
    }
}

impl Drop for InNetns {
    fn drop(&mut self) {
        if let Err(e) = setns(&self.home) {
            // Staying in the wrong namespace would send the traffic from
            // the VM side: better to stop here.
            eprintln!("loadgen: cannot return to the original network namespace: {e}");
            std::process::abort();
        }
    }
}

fn setns(ns: &File) -> io::Result<()> {
    // SAFETY: setns(2) on a valid, open namespace file descriptor; it
    // changes only the calling thread's namespace.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
