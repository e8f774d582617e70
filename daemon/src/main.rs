//! flowlogd: VPC flow logs for a Linux VM from its own netfilter state.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use flowlogd::config::Config;
use flowlogd::model::MacAddr;
use flowlogd::{
    capture, config, control, eni, instances, logger, metadata, run_marker, sinks, startup,
    tracking,
};

/// VPC flow logs for this VM, from its own conntrack and firewall state.
#[derive(Parser)]
#[command(name = "flowlogd", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon in the foreground, logging to stderr.
    Run {
        /// The config file.
        #[arg(long, short, default_value = "/etc/flowlogd.toml")]
        config: PathBuf,
    },
    /// Validate the config (and every sink's options) and print a summary.
    CheckConfig {
        /// The config file.
        #[arg(long, short, default_value = "/etc/flowlogd.toml")]
        config: PathBuf,
    },
    /// List the plugins in the plugin directory, and those refused, with why.
    Plugins {
        /// The config file (for `daemon.plugin_dir`).
        #[arg(long, short, default_value = "/etc/flowlogd.toml")]
        config: PathBuf,
    },
    /// Remove the nftables table inet flowlogd from this network namespace.
    /// The daemon leaves it in place at exit so that a restart loses
    /// nothing; the package's removal runs this. Refused while a flowlogd
    /// with the config's state_dir is running.
    RemoveTrackingTable {
        /// The config file (for `daemon.state_dir`, to see whether a daemon runs).
        #[arg(long, short, default_value = "/etc/flowlogd.toml")]
        config: PathBuf,
    },
    /// Push records from a JSON-lines file (the JSON output format) through
    /// the configured flow logs and sinks, flush, and exit. For testing sinks
    /// and for re-sending records a sink missed.
    Replay {
        /// The config file.
        #[arg(long, short, default_value = "/etc/flowlogd.toml")]
        config: PathBuf,
        /// JSON-lines file of records; `-` for standard input.
        records: PathBuf,
    },
    /// Ask the running daemon (its control socket in state_dir) how it
    /// is: version, uptime, config, ENIs, the open window, sinks, losses.
    /// Exits 1 when no daemon runs. Root or the daemon's user only.
    Status {
        #[command(flatten)]
        socket: SocketArgs,
        /// Print the daemon's answer as JSON, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// A live view of the open window from the running daemon: top flows,
    /// top rejected sources with the rule that dropped them, per-ENI
    /// totals; a new frame every second until interrupted.
    Top {
        #[command(flatten)]
        socket: SocketArgs,
        /// Print one frame and exit.
        #[arg(long)]
        once: bool,
        /// Rank flows by bytes or packets.
        #[arg(long, value_enum, default_value = "bytes")]
        by: TopBy,
        /// Flows and rejected sources to show (at most 20: what the daemon keeps).
        #[arg(short = 'n', default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=20))]
        n: u16,
    },
}

/// Where the control socket is: `state_dir` of the config, or given.
#[derive(clap::Args)]
struct SocketArgs {
    /// The config file (for `daemon.state_dir`).
    #[arg(long, short, default_value = "/etc/flowlogd.toml")]
    config: PathBuf,
    /// The daemon's state directory (instead of reading the config).
    #[arg(long)]
    state_dir: Option<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum TopBy {
    Bytes,
    Packets,
}

/// Exit codes: 0 success, 1 a runtime failure, 2 an unusable config.
const EXIT_RUNTIME: u8 = 1;
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    logger::init(log::LevelFilter::Info);
    match cli.command {
        Command::CheckConfig { config } => check_config(&config),
        Command::Plugins { config } => plugins(&config),
        Command::Replay { config, records } => replay(&config, &records),
        Command::Run { config } => run(&config),
        Command::RemoveTrackingTable { config } => remove_tracking_table(&config),
        Command::Status { socket, json } => status(&socket, json),
        Command::Top {
            socket,
            once,
            by,
            n,
        } => top(&socket, once, by, usize::from(n)),
    }
}

/// The control socket's path, from `--state-dir` or the config.
fn control_socket(args: &SocketArgs) -> Result<PathBuf, ExitCode> {
    let state_dir = match &args.state_dir {
        Some(dir) => dir.clone(),
        None => load_config(&args.config)?.daemon.state_dir,
    };
    Ok(state_dir.join(control::SOCKET_NAME))
}

fn status(args: &SocketArgs, json: bool) -> ExitCode {
    let socket = match control_socket(args) {
        Ok(s) => s,
        Err(code) => return code,
    };
    match control::fetch_status(&socket) {
        Ok((_, answer)) if json => {
            println!("{}", answer.trim());
            ExitCode::SUCCESS
        }
        Ok((reply, _)) => {
            print!("{}", control::render_status(&reply));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("flowlogd: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

fn top(args: &SocketArgs, once: bool, by: TopBy, n: usize) -> ExitCode {
    use std::io::{IsTerminal, Write};
    let socket = match control_socket(args) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let order = match by {
        TopBy::Bytes => control::TopOrder::Bytes,
        TopBy::Packets => control::TopOrder::Packets,
    };
    let tty = std::io::stdout().is_terminal();
    loop {
        let frame = match control::fetch_top(&socket) {
            Ok(reply) => control::render_top(&reply, order, n),
            Err(e) => {
                eprintln!("flowlogd: {e}");
                return ExitCode::from(EXIT_RUNTIME);
            }
        };
        let mut out = std::io::stdout().lock();
        // A terminal gets each frame on a cleared screen; a pipe gets
        // frames one after another, a blank line between.
        let shown = if once {
            write!(out, "{frame}")
        } else if tty {
            write!(out, "\x1b[H\x1b[2J{frame}")
        } else {
            writeln!(out, "{frame}")
        };
        if shown.and_then(|()| out.flush()).is_err() || once {
            // A closed pipe (`| head`) ends the view.
            return ExitCode::SUCCESS;
        }
        drop(out);
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn remove_tracking_table(path: &std::path::Path) -> ExitCode {
    // A config that does not load (edited, or half removed with the
    // package) must not keep the table in place: only the check for a
    // running daemon needs it.
    match config::load(path) {
        Ok(config) => {
            if let Some(m) = run_marker::running_daemon(&config.daemon.state_dir) {
                eprintln!(
                    "flowlogd: flowlogd (pid {}) is running with state_dir {}: stop it first (removing the table \
                     under it would stop connection tracking)",
                    m.pid,
                    config.daemon.state_dir.display()
                );
                return ExitCode::from(EXIT_RUNTIME);
            }
        }
        Err(e) => eprintln!("flowlogd: {e}; not checking whether a daemon is running"),
    }
    // The security groups' table goes too: without a daemon reading its
    // queue it would keep passing (bypass) or dropping new connections.
    let sg = match flowlogd::enforcement::remove_table() {
        Ok(true) => {
            println!("removed nftables table inet flowlogd_sg (security groups) from this network namespace");
            ExitCode::SUCCESS
        }
        Ok(false) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flowlogd: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    };
    if sg != ExitCode::SUCCESS {
        return sg;
    }
    match tracking::remove_table() {
        Ok(true) => {
            println!("removed nftables table inet flowlogd from this network namespace");
            ExitCode::SUCCESS
        }
        Ok(false) => {
            println!(
                "no nftables table inet flowlogd in this network namespace: nothing to remove"
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("flowlogd: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

fn load_config(path: &std::path::Path) -> Result<Config, ExitCode> {
    config::load(path).map_err(|e| {
        eprintln!("flowlogd: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

fn check_config(path: &std::path::Path) -> ExitCode {
    let config = match load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let state_dir_line = match startup::check_state_dir(&config, false) {
        Ok(line) => line,
        Err(e) => {
            eprintln!("flowlogd: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let sink_lines = match startup::check_sinks(&config) {
        Ok(lines) => lines,
        Err(e) => {
            eprintln!("flowlogd: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let d = &config.daemon;
    println!("{}: OK", config.path.display());
    println!(
        "capture window: {} s, aligned to the wall clock; max_flows {}; nflog groups {:?}",
        d.capture_window_secs, d.max_flows, d.nflog_groups
    );
    if let Some(group) = config.tcp_flags_group() {
        println!(
            "tcp-flags: a sink's field list names it: table inet flowlogd will copy TCP SYN, FIN and RST \
             headers to NFLOG group {group}"
        );
    }
    println!("{state_dir_line}");
    print_enis(&config);
    println!("flow logs:");
    for f in &config.flow_logs {
        println!(
            "  {}: {} {}, traffic {}, sinks {}",
            f.name,
            f.resource_type.as_str(),
            f.resource_id,
            f.traffic.as_str(),
            f.sinks.join(", ")
        );
    }
    for line in flowlogd::security_groups::check_config_lines(&config) {
        println!("{line}");
    }
    println!("sinks:");
    for line in sink_lines {
        println!("{line}");
    }
    print_tracking_report(&config);
    ExitCode::SUCCESS
}

/// The flow logs that capture an ENI with `ids`, known from the config or
/// the metadata service, by name.
fn captured_by(config: &Config, ids: &flowlogd_plugin_api::EniIds) -> String {
    instances::captured_by(&config.flow_logs, ids, eni::Visibility::Scoped)
}

/// Each ENI, its ids, where they come from and which flow logs capture it.
/// With the metadata service, it is asked once with a short timeout; a
/// service that does not answer is reported, not an error (`run` retries).
fn print_enis(config: &Config) {
    let ecs = match &config.metadata {
        config::MetadataSource::Static => {
            println!("metadata: static (the [[eni]] tables)");
            None
        }
        config::MetadataSource::Ecs(ecs) => {
            println!(
                "metadata: ecs at {} (fetched again every {} s; interfaces it does not describe: {}); [[eni]] tables \
                 override it",
                ecs.base_url,
                ecs.ttl_secs,
                ecs.unmapped.as_str()
            );
            Some(ecs)
        }
    };
    println!("ENIs:");
    for e in &config.enis {
        let matcher = match &e.matcher {
            config::EniMatch::Interface(name) => format!("interface {name}"),
            config::EniMatch::Mac(m) => format!("mac {m}"),
        };
        println!(
            "  {} ({matcher}): vswitch {}, vpc {}, vm {}, account {}; captured by: {}; ids from static config",
            e.ids.eni_id,
            e.ids.vswitch_id,
            e.ids.vpc_id,
            e.ids.vm_id,
            e.ids.account_id,
            captured_by(config, &e.ids)
        );
    }
    let Some(ecs) = ecs else {
        return;
    };
    let timeout = Duration::from_secs(1);
    let snapshot = match metadata::fetch_once(ecs, timeout) {
        Ok(s) => s,
        Err(e) => {
            println!(
                "  (metadata service not reachable, asked once with a {} s timeout: {e}; `run` retries with backoff \
                 and learns the ENIs when it answers)",
                timeout.as_secs()
            );
            return;
        }
    };
    // Which interface of this host has which MAC, to say which interface
    // each ENI is and which [[eni]] overrides it.
    let interfaces = local_interfaces();
    let name_of = |mac: &MacAddr| {
        interfaces
            .iter()
            .find(|(_, m)| m == mac)
            .map(|(n, _)| n.as_str())
    };
    let static_for = |mac: &MacAddr, name: Option<&str>| {
        config.enis.iter().find(|e| match &e.matcher {
            config::EniMatch::Mac(m) => m == mac,
            config::EniMatch::Interface(n) => Some(n.as_str()) == name,
        })
    };
    for (mac, e) in &snapshot.enis {
        let name = name_of(mac);
        let at = match name {
            Some(n) => format!("mac {mac}, interface {n}"),
            None => format!("mac {mac}, no interface on this host"),
        };
        if let Some(s) = static_for(mac, name) {
            println!(
                "  {} ({at}): described by the metadata service, overridden by [[eni]] {}",
                e.eni_id, s.ids.eni_id
            );
            continue;
        }
        let ids = flowlogd_plugin_api::EniIds {
            eni_id: e.eni_id.clone(),
            vswitch_id: e.vswitch_id.clone(),
            vpc_id: e.vpc_id.clone(),
            vm_id: snapshot.instance_id.clone(),
            account_id: snapshot.account_id.clone(),
        };
        println!(
            "  {} ({at}): vswitch {}, vpc {}, vm {}, account {}; captured by: {}; ids from ecs",
            ids.eni_id,
            ids.vswitch_id,
            ids.vpc_id,
            ids.vm_id,
            ids.account_id,
            captured_by(config, &ids)
        );
    }
    for (name, mac) in &interfaces {
        if snapshot.enis.contains_key(mac) || static_for(mac, Some(name)).is_some() {
            continue;
        }
        let fate = match ecs.unmapped {
            config::Unmapped::Ignore => "ignored (unmapped = \"ignore\")".to_owned(),
            config::Unmapped::Report => format!(
                "reported with - ids (unmapped = \"report\"); captured by: {}",
                instances::captured_by(
                    &config.flow_logs,
                    &flowlogd_plugin_api::EniIds::default(),
                    eni::Visibility::Everywhere
                )
            ),
        };
        println!("  interface {name} (mac {mac}): not described by the metadata service; {fate}");
    }
}

/// This host's interfaces with an Ethernet address, from sysfs, by name.
fn local_interfaces() -> Vec<(String, MacAddr)> {
    let Ok(dir) = std::fs::read_dir("/sys/class/net") else {
        return Vec::new();
    };
    let mut out: Vec<(String, MacAddr)> = dir
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let address = std::fs::read_to_string(entry.path().join("address")).ok()?;
            let mac = MacAddr::parse(address.trim())?;
            (name != "lo" && !mac.is_zero()).then_some((name, mac))
        })
        .collect();
    out.sort();
    out
}

/// What `run` will do about connection tracking in this namespace.
fn print_tracking_report(config: &Config) {
    let d = &config.daemon;
    println!("connection tracking (this network namespace):");
    if d.install_tracking_table {
        println!(
            "  at start: installs nftables table inet flowlogd (a `ct state` rule, no verdicts); it stays after exit \
             so restarts lose nothing (`flowlogd remove-tracking-table` removes it)"
        );
    } else {
        println!("  install_tracking_table = false: the host firewall must reference `ct` or nothing is tracked");
    }
    let sysctls = tracking::read_sysctls();
    for (name, value) in [
        ("nf_conntrack_acct", sysctls.acct),
        ("nf_conntrack_timestamp", sysctls.timestamp),
        ("nf_conntrack_events", sysctls.events),
    ] {
        let state = match value {
            Some(true) => "1".to_owned(),
            Some(false) if d.enable_conntrack_accounting => {
                "not 1; run sets it to 1 (enable_conntrack_accounting = true)".to_owned()
            }
            Some(false) => format!(
                "not 1; run will REFUSE to start: set net.netfilter.{name}=1 (sysctl -w net.netfilter.{name}=1, or a \
                 file in /etc/sysctl.d/), or set daemon.enable_conntrack_accounting = true"
            ),
            None => "not present yet (nf_conntrack not loaded; loaded at start)".to_owned(),
        };
        println!("  net.netfilter.{name} = {state}");
    }
}

fn plugins(path: &std::path::Path) -> ExitCode {
    let config = match load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let dir = &config.daemon.plugin_dir;
    let scanned = match sinks::scan_plugin_dir(dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "flowlogd: {}: cannot read plugin directory: {e}",
                dir.display()
            );
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    println!("plugins in {}:", dir.display());
    let mut refused = Vec::new();
    for p in &scanned {
        match &p.result {
            Ok(lib) => println!(
                "  {} {} (ABI {}.{}) {}",
                lib.name,
                lib.version,
                flowlogd_plugin_api::abi::ABI_MAJOR,
                lib.abi_minor,
                p.path.display()
            ),
            Err(e) => refused.push(e.to_string()),
        }
    }
    if scanned.iter().all(|p| p.result.is_err()) {
        println!("  (none)");
    }
    if !refused.is_empty() {
        println!("refused:");
        for r in refused {
            println!("  {r}");
        }
    }
    ExitCode::SUCCESS
}

fn replay(config_path: &std::path::Path, records_path: &std::path::Path) -> ExitCode {
    let config = match load_config(config_path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    logger::init(config.daemon.log_level);
    let reader: Box<dyn BufRead> = if records_path == std::path::Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        match std::fs::File::open(records_path) {
            Ok(f) => Box::new(std::io::BufReader::new(f)),
            Err(e) => {
                eprintln!("flowlogd: {}: {e}", records_path.display());
                return ExitCode::from(EXIT_RUNTIME);
            }
        }
    };
    let mut records = Vec::new();
    for (n, line) in reader.lines().enumerate() {
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                eprintln!("flowlogd: {}: {e}", records_path.display());
                return ExitCode::from(EXIT_RUNTIME);
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        match flowlogd_plugin_api::format::parse_json(&line) {
            Ok(r) => records.push(r),
            Err(e) => {
                eprintln!("flowlogd: {}:{}: {e}", records_path.display(), n + 1);
                return ExitCode::from(EXIT_RUNTIME);
            }
        }
    }
    // No spool: replay is a one-off push, and a running daemon may hold
    // the spools; what the sinks do not take is reported (exit 1).
    let mut dispatcher = match startup::start_sinks(&config, None) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("flowlogd: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let routed = instances::route_records(&config, &records);
    let routed_count: usize = routed.iter().map(|(_, r)| r.len()).sum();
    instances::dispatch_instance_records(&config, &dispatcher, routed);
    dispatcher.flush_all(flowlogd_plugin_api::abi::FLUSH_WINDOW_END);
    let lost = startup::stop_sinks(
        &mut dispatcher,
        Duration::from_secs(config.daemon.shutdown_timeout_secs.into()),
    );
    log::info!(
        "replayed {} records ({} routed to flow log instances)",
        records.len(),
        routed_count
    );
    if lost > 0 {
        ExitCode::from(EXIT_RUNTIME)
    } else {
        ExitCode::SUCCESS
    }
}

fn run(path: &std::path::Path) -> ExitCode {
    let config = match load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    logger::init(config.daemon.log_level);
    log::info!(
        "flowlogd {} starting with {}",
        env!("CARGO_PKG_VERSION"),
        config.path.display()
    );
    startup::keep_large_allocations_mapped();
    match capture::run(config) {
        Ok(0) => {
            log::info!("stopped");
            ExitCode::SUCCESS
        }
        Ok(lost) => {
            log::error!(
                "stopped; {lost} records could not be delivered to their sinks (see above)"
            );
            ExitCode::from(EXIT_RUNTIME)
        }
        Err(capture::RunError::Config(e)) => {
            log::error!("{e}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(e) => {
            log::error!("{e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}
