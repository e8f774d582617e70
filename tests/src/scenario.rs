//! The preamble of a privileged end-to-end test, once: a scratch directory
//! with the plugins, namespace `a` (where the daemon runs) joined to `b` by
//! a veth pair, more namespaces joined to `a` where a test needs them, the
//! daemon's config ([`DaemonConfig`]) and the daemon started in `a`.
//!
//! Cleanup is that of the parts: each namespace is deleted by its exact
//! name, the scratch directory removed, on drop (also when the test
//! panics). Declare the processes a test starts (daemon, traffic) after
//! its scenario, so that they are dropped (killed) first.

use std::path::{Path, PathBuf};

use crate::daemon_config::DaemonConfig;
use crate::netns::{veth_pair, DaemonProcess, Netns, VethEnd};
use crate::{plugin_dir, TempDir};

/// Namespaces, veths and a scratch directory of one test.
#[derive(Debug)]
pub struct Scenario {
    /// The daemon's namespace.
    pub a: Netns,
    /// The peer at the other end of `a`'s first veth pair.
    pub b: Netns,
    /// `a`'s end of the pair to `b`.
    pub ea: VethEnd,
    /// `b`'s end of the pair to `a`.
    pub eb: VethEnd,
    /// More namespaces joined to `a`, in the order they were asked for.
    pub peers: Vec<Peer>,
    /// The scratch directory: configs, logs, records.
    pub tmp: TempDir,
    /// The workspace's plugins, copied into `tmp`.
    pub plugins: PathBuf,
}

/// A namespace joined to `a` by a veth pair of its own.
#[derive(Debug)]
pub struct Peer {
    pub ns: Netns,
    /// `a`'s end of the pair.
    pub local: VethEnd,
    /// The peer's end.
    pub remote: VethEnd,
}

/// What [`Scenario::builder`] is to build.
#[derive(Debug)]
pub struct ScenarioBuilder {
    label: String,
    namespaces: (String, String),
    veth: (String, String, u8),
    peers: Vec<(String, String, String, u8)>,
}

impl Scenario {
    /// A scenario whose scratch directory is labelled `label`; by default
    /// its namespaces are `<label>a` and `<label>b` and the veth pair is
    /// `veth-a` (in a) / `veth-b` (in b) in subnet 1 (see [`veth_pair`]).
    pub fn builder(label: &str) -> ScenarioBuilder {
        ScenarioBuilder {
            label: label.to_owned(),
            namespaces: (format!("{label}a"), format!("{label}b")),
            veth: ("veth-a".into(), "veth-b".into(), 1),
            peers: Vec::new(),
        }
    }

    /// A file in the scratch directory.
    pub fn path(&self, file: &str) -> PathBuf {
        self.tmp.join(file)
    }

    /// A config for the daemon of this scenario: its plugins and state
    /// directory, nothing else yet.
    pub fn config(&self) -> DaemonConfig {
        DaemonConfig::new(&self.plugins)
    }

    /// Writes `config` to `<tmp>/<file>` and returns the path.
    #[track_caller]
    pub fn write_config(&self, file: &str, config: &DaemonConfig) -> PathBuf {
        config.write(&self.path(file))
    }

    /// `flowlogd run --config <config>` in `a`, its log in `<tmp>/<log>`;
    /// returns once it captures (see [`DaemonProcess::start`]).
    #[track_caller]
    pub fn start_daemon(&self, config: &Path, log: &str) -> DaemonProcess {
        DaemonProcess::start(&self.a, config, &self.path(log))
    }
}

impl ScenarioBuilder {
    /// The namespaces' labels (`Netns::new` adds the pid and a counter).
    pub fn namespaces(mut self, a: &str, b: &str) -> ScenarioBuilder {
        self.namespaces = (a.to_owned(), b.to_owned());
        self
    }

    /// The veth pair between `a` and `b`: its interface in `a`, in `b`,
    /// and its subnet.
    pub fn veth(mut self, a_if: &str, b_if: &str, subnet: u8) -> ScenarioBuilder {
        self.veth = (a_if.to_owned(), b_if.to_owned(), subnet);
        self
    }

    /// One more namespace `label`, joined to `a` by a veth pair (`a_if` in
    /// `a`, `peer_if` in it) in `subnet`.
    pub fn peer(mut self, label: &str, a_if: &str, peer_if: &str, subnet: u8) -> ScenarioBuilder {
        self.peers.push((
            label.to_owned(),
            a_if.to_owned(),
            peer_if.to_owned(),
            subnet,
        ));
        self
    }

    /// Creates the scratch directory with the plugins, the namespaces and
    /// the veth pairs.
    ///
    /// # Panics
    /// If a namespace or veth cannot be made (not root, no iproute2), or
    /// the workspace is not built; whatever was made is removed.
    #[track_caller]
    pub fn build(self) -> Scenario {
        let tmp = TempDir::new(&self.label);
        let plugins = plugin_dir(&tmp);
        let a = Netns::new(&self.namespaces.0);
        let b = Netns::new(&self.namespaces.1);
        let (a_if, b_if, subnet) = &self.veth;
        let (ea, eb) = veth_pair(&a, a_if, &b, b_if, *subnet);
        let peers = self
            .peers
            .iter()
            .map(|(label, a_if, peer_if, subnet)| {
                let ns = Netns::new(label);
                let (local, remote) = veth_pair(&a, a_if, &ns, peer_if, *subnet);
                Peer { ns, local, remote }
            })
            .collect();
        Scenario {
            a,
            b,
            ea,
            eb,
            peers,
            tmp,
            plugins,
        }
    }
}
