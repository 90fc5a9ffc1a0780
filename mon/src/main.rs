//! `lcpfs-mon`: the LCPFS monitor daemon.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use lcpfs_mon::daemon::{MonOptions, run};
use lcpfs_mon::monitor::MonConfig;
use lcpfs_mon::types::FlapRule;
use lcpfs_proto::tls::Tls;

/// LCPFS monitor: holds the cluster map in a Raft quorum.
///
/// First start of a new cluster (on each initial monitor, same member list):
///   lcpfs-mon --id a --data DIR --addr 127.0.0.1:6789 --initial-members a=127.0.0.1:6789,b=...,c=...
/// A monitor joining an existing cluster: start it with --id and --addr only, then
/// run `lcpfs mon add NAME ADDR`. Later starts need only --data DIR.
#[derive(Parser)]
#[command(name = "lcpfs-mon", version)]
struct Args {
    /// Monitor name (first start only).
    #[arg(long = "id")]
    name: Option<String>,
    /// Data directory.
    #[arg(long)]
    data: PathBuf,
    /// Address the cluster reaches this monitor at, IP:PORT or NAME:PORT (first
    /// start only).
    #[arg(long)]
    addr: Option<String>,
    /// Bootstrap a new cluster with these monitors: NAME=IP:PORT,...
    #[arg(long, value_delimiter = ',', value_parser = member)]
    initial_members: Vec<(String, String)>,
    /// Listen here (e.g. 0.0.0.0:6789) instead of on --addr, which may then be a
    /// DNS name (a Kubernetes pod's stable name).
    #[arg(long)]
    bind: Option<SocketAddr>,
    /// Serve Prometheus /metrics and /health on this address.
    #[arg(long)]
    metrics_addr: Option<SocketAddr>,
    /// Seconds without heartbeat before an OSD is marked down.
    #[arg(long, default_value_t = 20.0)]
    osd_heartbeat_grace: f64,
    /// Seconds an OSD stays down before it is marked out.
    #[arg(long, default_value_t = 600.0)]
    osd_down_out_interval: f64,
    /// Seconds a change may wait for a quorum before it is refused.
    #[arg(long, default_value_t = 5.0)]
    quorum_timeout: f64,
    /// An OSD whose disks are fuller than this fraction is marked full: the PGs
    /// on it take deletes only (like Ceph's mon_osd_full_ratio).
    #[arg(long, default_value_t = 0.95)]
    mon_osd_full_ratio: f64,
    /// An OSD fuller than this fraction is reported in health (OSD_NEARFULL).
    #[arg(long, default_value_t = 0.85)]
    mon_osd_nearfull_ratio: f64,
    /// An OSD that failures (silence, its peers' reports) mark down this many
    /// times within --osd-flap-window is held down for --osd-flap-hold instead
    /// of booting again at once (flap damping; 0: never held).
    #[arg(long, default_value_t = 5)]
    osd_flap_limit: u32,
    /// Seconds within which --osd-flap-limit mark-downs hold an OSD down.
    #[arg(long, default_value_t = 600.0)]
    osd_flap_window: f64,
    /// Seconds a flapping OSD is held down (`lcpfs osd unhold` ends it sooner).
    #[arg(long, default_value_t = 600.0)]
    osd_flap_hold: f64,
    /// Snapshot the state (and compact the log) every this many entries.
    #[arg(long, default_value_t = 1000)]
    snapshot_every: u64,
    /// TLS directory (ca.crt, tls.crt, tls.key): mutual TLS with every peer and
    /// client (default: $LCPFS_TLS_DIR; plain connections without either).
    #[arg(long)]
    tls_dir: Option<PathBuf>,
}

fn member(text: &str) -> Result<(String, String), String> {
    let (name, addr) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not NAME=IP:PORT"))?;
    if name.is_empty() || addr.is_empty() {
        return Err(format!("{text:?} is not NAME=IP:PORT"));
    }
    Ok((name.to_owned(), addr.to_owned()))
}

fn seconds(value: f64, flag: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|duration| !duration.is_zero())
        .ok_or_else(|| format!("{flag} must be a positive number of seconds"))
}

fn ratio(value: f64, flag: &str) -> Result<f64, String> {
    lcpfs_mon::state::check_ratio(value)
        .map(|()| value)
        .map_err(|error| format!("{flag}: {error}"))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,openraft=off".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let args = Args::parse();
    let config = (|| -> Result<MonConfig, String> {
        Ok(MonConfig {
            osd_heartbeat_grace: seconds(args.osd_heartbeat_grace, "--osd-heartbeat-grace")?,
            osd_down_out_interval: seconds(args.osd_down_out_interval, "--osd-down-out-interval")?,
            quorum_timeout: seconds(args.quorum_timeout, "--quorum-timeout")?,
            full_ratio: ratio(args.mon_osd_full_ratio, "--mon-osd-full-ratio")?,
            nearfull_ratio: ratio(args.mon_osd_nearfull_ratio, "--mon-osd-nearfull-ratio")?,
            flap: FlapRule {
                limit: args.osd_flap_limit,
                window_ms: seconds(args.osd_flap_window, "--osd-flap-window")?.as_millis() as u64,
                hold_ms: seconds(args.osd_flap_hold, "--osd-flap-hold")?.as_millis() as u64,
            },
            tls: Tls::from_flag(args.tls_dir.as_deref()).map_err(|error| error.to_string())?,
            ..MonConfig::default()
        })
    })();
    let config = match config {
        Ok(config) => config,
        Err(error) => {
            eprintln!("lcpfs-mon: {error}");
            return ExitCode::from(2);
        }
    };
    let initial_members: BTreeMap<String, String> = args.initial_members.into_iter().collect();
    let options = MonOptions {
        name: args.name,
        data: args.data,
        addr: args.addr,
        initial_members,
        metrics_addr: args.metrics_addr,
        bind: args.bind,
        snapshot_every: args.snapshot_every,
        config,
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("lcpfs-mon: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("lcpfs-mon: {error:#}");
            ExitCode::FAILURE
        }
    }
}
