//! `lcpfs`: the LCPFS command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lcpfs_client::crush_tool::{self, CrushTestArgs};

#[derive(Parser)]
#[command(name = "lcpfs", version, about = "LCPFS command line")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// CRUSH placement tools.
    #[command(subcommand)]
    Crush(CrushCommand),
}

#[derive(Subcommand)]
enum CrushCommand {
    /// PGs per OSD, deviation from the weight share, and data moved when an OSD is
    /// added or marked out (like `crushtool --test --show-utilization`).
    Test(CrushTestArgs),
}

fn main() -> ExitCode {
    let outcome = match Cli::parse().command {
        Command::Crush(CrushCommand::Test(args)) => crush_tool::run(&args),
    };
    match outcome {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("lcpfs: {e:#}");
            ExitCode::FAILURE
        }
    }
}
