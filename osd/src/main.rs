//! `lcpfs-osd`: the LCPFS object storage daemon and its offline store tool.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lcpfs_osd::daemon::{self, DaemonArgs};
use lcpfs_osd::store_tool::{self, StoreArgs};

/// LCPFS object storage daemon.
///
/// First start (creates the store):
///   lcpfs-osd --data DIR --mon 127.0.0.1:6789 --addr 127.0.0.1:6800 --disks 1 --disk-size 4G
/// Later starts: lcpfs-osd --data DIR --mon 127.0.0.1:6789
#[derive(Parser)]
#[command(name = "lcpfs-osd", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    daemon: DaemonArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Work on an engine store offline: create, inspect, read, write, scrub, repair.
    Store(StoreArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LCPFS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    if let Some(Command::Store(args)) = cli.command {
        return store_tool::run(args);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("lcpfs-osd: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(daemon::run(cli.daemon)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("lcpfs-osd: {error:#}");
            ExitCode::FAILURE
        }
    }
}
