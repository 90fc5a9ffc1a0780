//! `lcpfs-osd`: the LCPFS object storage daemon and its offline store tool.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lcpfs_osd::store_tool::{self, StoreArgs};

#[derive(Parser)]
#[command(name = "lcpfs-osd", version, about = "LCPFS object storage daemon")]
struct Cli {
    #[command(subcommand)]
    command: Command,
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
        .init();
    match Cli::parse().command {
        Command::Store(args) => store_tool::run(args),
    }
}
