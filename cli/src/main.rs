//! `lcpfs`: the LCPFS command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use lcpfs_cli::admin::{
    self, AuthCommand, MapCommand, MonCommand, OsdCommand, PgCommand, PoolCommand,
};
use lcpfs_cli::bench::{self, BenchArgs};
use lcpfs_cli::certs::{self, CertCommand};
use lcpfs_cli::crush_tool::{self, CrushTestArgs};
use lcpfs_cli::dev::{self, DevArgs};
use lcpfs_cli::object_cmd::{self, ObjectCommand};
use lcpfs_client::mon_client::{MonClient, keyring_path};

#[derive(Parser)]
#[command(name = "lcpfs", version, about = "LCPFS command line")]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Options of every command that talks to the monitors.
#[derive(clap::Args)]
struct Global {
    /// Monitor addresses, HOST:PORT[,HOST:PORT...] (default: $LCPFS_MON).
    #[arg(long, global = true)]
    mon: Option<String>,
    /// Keyring file holding this client's key (default: $LCPFS_KEYRING).
    #[arg(long, global = true)]
    keyring: Option<PathBuf>,
    /// Entity whose key is used from the keyring.
    #[arg(
        long = "name",
        id = "keyring_entity",
        global = true,
        default_value = "client.admin"
    )]
    keyring_entity: String,
    /// TLS directory (ca.crt, tls.crt, tls.key) for a cluster that runs with TLS
    /// (default: $LCPFS_TLS_DIR; plain connections without either).
    #[arg(long, global = true)]
    tls_dir: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Seconds a request may take, retries across monitors included.
    #[arg(long, global = true, env = "LCPFS_TIMEOUT", default_value_t = 15.0)]
    timeout: f64,
}

#[derive(Subcommand)]
enum Command {
    /// Start a local cluster on loopback (monitors, OSDs, a pool) until Ctrl-C.
    Dev(DevArgs),
    /// Cluster health and summary, like `ceph -s`.
    Status,
    /// OSD states and weights.
    #[command(subcommand)]
    Osd(OsdCommand),
    /// Pools.
    #[command(subcommand)]
    Pool(PoolCommand),
    /// Placement groups: scrub and repair.
    #[command(subcommand)]
    Pg(PgCommand),
    /// The cluster CA and the certificates it issues, for clusters that run with TLS.
    #[command(subcommand)]
    Cert(CertCommand),
    /// Auth entities and their keys.
    #[command(subcommand)]
    Auth(AuthCommand),
    /// Monitors.
    #[command(subcommand)]
    Mon(MonCommand),
    /// The cluster map.
    #[command(subcommand)]
    Map(MapCommand),
    /// CRUSH placement tools.
    #[command(subcommand)]
    Crush(CrushCommand),
    #[command(flatten)]
    Object(ObjectCommand),
    /// Measure write or read speed, like `rados bench`.
    Bench(BenchArgs),
}

#[derive(Subcommand)]
enum CrushCommand {
    /// PGs per OSD, deviation from the weight share, and data moved when an OSD is
    /// added or marked out (like `crushtool --test --show-utilization`).
    Test(CrushTestArgs),
}

fn connect(cli: &Global) -> anyhow::Result<MonClient> {
    let timeout = Duration::try_from_secs_f64(cli.timeout)
        .map_err(|_| anyhow::anyhow!("--timeout must be a positive number of seconds"))?;
    let client =
        MonClient::from_flags(cli.mon.as_deref(), cli.tls_dir.as_deref())?.with_timeout(timeout);
    match keyring_path(cli.keyring.clone()) {
        Some(path) => client.with_keyring(&path, &cli.keyring_entity),
        None => Ok(client),
    }
}

async fn run(cli: Cli) -> anyhow::Result<String> {
    let Cli { global, command } = cli;
    let json = global.json;
    match command {
        Command::Dev(args) => dev::run(args).await,
        Command::Status => admin::status(&connect(&global)?, json).await,
        Command::Osd(command) => admin::osd(&connect(&global)?, command, json).await,
        Command::Pool(command) => admin::pool(&connect(&global)?, command, json).await,
        Command::Pg(command) => admin::pg(connect(&global)?, command, json).await,
        Command::Cert(command) => certs::run(command).await,
        Command::Auth(command) => admin::auth(&connect(&global)?, command, json).await,
        Command::Mon(command) => admin::mon(&connect(&global)?, command, json).await,
        Command::Map(command) => admin::map(&connect(&global)?, command).await,
        Command::Crush(CrushCommand::Test(args)) => crush_tool::run(&args, json),
        Command::Object(command) => object_cmd::run(connect(&global)?, command, json).await,
        Command::Bench(args) => bench::run(connect(&global)?, args, json).await,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("lcpfs: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(text) => {
            if !text.is_empty() {
                println!("{text}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("lcpfs: {e:#}");
            ExitCode::FAILURE
        }
    }
}
