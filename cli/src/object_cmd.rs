//! `lcpfs put|get|ls|stat|rm`: objects in a pool, whole (streamed to and from the
//! OSD in 4 MiB messages) or (with `--striper`) in pieces, with a progress bar on
//! a terminal.

use std::sync::Arc;

use anyhow::Context;
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use lcpfs_core::size::parse_size;
use serde_json::json;

use lcpfs_client::mon_client::MonClient;
use lcpfs_client::objects::ObjectClient;
use lcpfs_client::striper::{DEFAULT_PIECE_SIZE, Striper};

/// `lcpfs put|get|ls|stat|rm`: objects in a pool.
#[derive(Subcommand, Debug)]
pub enum ObjectCommand {
    /// Store FILE (or standard input with `-`) as object NAME.
    Put {
        /// Pool.
        pool: String,
        /// Object name.
        name: String,
        /// File to read, `-` for standard input.
        file: String,
        /// Store it in pieces (any size; read it back with `get --striper`).
        #[arg(long)]
        striper: bool,
        /// Piece size with --striper (e.g. 4M).
        #[arg(long, default_value_t = DEFAULT_PIECE_SIZE.to_string())]
        piece_size: String,
    },
    /// Write object NAME to FILE (or standard output with `-`).
    Get {
        /// Pool.
        pool: String,
        /// Object name.
        name: String,
        /// File to write, `-` for standard output.
        file: String,
        /// NAME was stored with `put --striper`.
        #[arg(long)]
        striper: bool,
    },
    /// List a pool's objects.
    Ls {
        /// Pool.
        pool: String,
    },
    /// Size and modification time of an object.
    Stat {
        /// Pool.
        pool: String,
        /// Object name.
        name: String,
        /// NAME was stored with `put --striper`.
        #[arg(long)]
        striper: bool,
    },
    /// Remove an object.
    Rm {
        /// Pool.
        pool: String,
        /// Object name.
        name: String,
        /// NAME was stored with `put --striper` (all its pieces go).
        #[arg(long)]
        striper: bool,
    },
}

/// A byte progress bar on standard error, drawn only on a terminal.
fn progress_bar(total: Option<u64>) -> ProgressBar {
    let bar = total.map_or_else(ProgressBar::no_length, ProgressBar::new);
    if let Ok(style) = ProgressStyle::with_template(
        "{bytes:>10}/{total_bytes:10} [{wide_bar}] {binary_bytes_per_sec:>12} {eta:>4}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

fn put_report(json_output: bool, pool: &str, name: &str, size: u64) -> String {
    if json_output {
        json!({ "pool": pool, "name": name, "size": size }).to_string()
    } else {
        String::new()
    }
}

/// Runs an object command.
pub async fn run(
    client: MonClient,
    command: ObjectCommand,
    json_output: bool,
) -> anyhow::Result<String> {
    use std::io::Read;
    let objects = Arc::new(ObjectClient::connect(client).await?);
    match command {
        ObjectCommand::Put {
            pool,
            name,
            file,
            striper: true,
            piece_size,
        } => {
            let piece_size = parse_size(&piece_size).map_err(anyhow::Error::msg)?;
            let striper = Striper::new(objects, &pool).with_piece_size(piece_size);
            let size = if file == "-" {
                let bar = progress_bar(None);
                let size = striper
                    .write(name.as_bytes(), tokio::io::stdin(), |done| {
                        bar.set_position(done)
                    })
                    .await?;
                bar.finish_and_clear();
                size
            } else {
                let input = tokio::fs::File::open(&file)
                    .await
                    .with_context(|| format!("cannot read {file}"))?;
                let bar = progress_bar(Some(input.metadata().await?.len()));
                let size = striper
                    .write(name.as_bytes(), input, |done| bar.set_position(done))
                    .await?;
                bar.finish_and_clear();
                size
            };
            Ok(put_report(json_output, &pool, &name, size))
        }
        ObjectCommand::Put {
            pool, name, file, ..
        } => {
            let data = if file == "-" {
                let mut data = Vec::new();
                std::io::stdin().read_to_end(&mut data)?;
                data
            } else {
                std::fs::read(&file).with_context(|| format!("cannot read {file}"))?
            };
            let size = data.len() as u64;
            let bar = progress_bar(Some(size));
            let sent = bar.clone();
            objects
                .put_streamed(&pool, name.as_bytes(), data, move |done| {
                    sent.set_position(done)
                })
                .await?;
            bar.finish_and_clear();
            Ok(put_report(json_output, &pool, &name, size))
        }
        ObjectCommand::Get {
            pool,
            name,
            file,
            striper: true,
        } => {
            let striper = Striper::new(objects, &pool);
            let layout = striper.layout(name.as_bytes()).await?;
            let bar = progress_bar(Some(layout.size));
            if file == "-" {
                striper
                    .read(name.as_bytes(), tokio::io::stdout(), |done| {
                        bar.set_position(done)
                    })
                    .await?;
            } else {
                let mut output = tokio::fs::File::create(&file)
                    .await
                    .with_context(|| format!("cannot write {file}"))?;
                let read = striper
                    .read(name.as_bytes(), &mut output, |done| bar.set_position(done))
                    .await;
                if let Err(error) = read {
                    let _ = tokio::fs::remove_file(&file).await;
                    return Err(error);
                }
                output.sync_all().await?;
            }
            bar.finish_and_clear();
            Ok(String::new())
        }
        ObjectCommand::Get {
            pool, name, file, ..
        } => {
            let bar = progress_bar(None);
            let show = |done, size| {
                bar.set_length(size);
                bar.set_position(done);
            };
            if file == "-" {
                objects
                    .get_to(&pool, name.as_bytes(), &mut tokio::io::stdout(), show)
                    .await?;
            } else {
                let mut output = tokio::fs::File::create(&file)
                    .await
                    .with_context(|| format!("cannot write {file}"))?;
                let read = objects
                    .get_to(&pool, name.as_bytes(), &mut output, show)
                    .await;
                if let Err(error) = read {
                    // No part of an object is left behind as if it were the object.
                    let _ = tokio::fs::remove_file(&file).await;
                    return Err(error);
                }
                output.sync_all().await?;
            }
            bar.finish_and_clear();
            Ok(String::new())
        }
        ObjectCommand::Ls { pool } => {
            let entries = objects.list(&pool).await?;
            if json_output {
                return Ok(serde_json::to_string_pretty(&entries)?);
            }
            Ok(entries
                .iter()
                .map(|entry| entry.name.as_str())
                .collect::<Vec<_>>()
                .join("\n"))
        }
        ObjectCommand::Stat {
            pool,
            name,
            striper,
        } => {
            let (size, mtime_ns) = if striper {
                let (layout, mtime_ns) = Striper::new(objects.clone(), &pool)
                    .stat(name.as_bytes())
                    .await?;
                (layout.size, mtime_ns)
            } else {
                let stat = objects.stat(&pool, name.as_bytes()).await?;
                (stat.size, stat.mtime_ns)
            };
            Ok(if json_output {
                json!({ "pool": pool, "name": name, "size": size, "mtime_ns": mtime_ns })
                    .to_string()
            } else {
                format!("{pool}/{name} size {size} mtime_ns {mtime_ns}")
            })
        }
        ObjectCommand::Rm {
            pool,
            name,
            striper,
        } => {
            if striper {
                Striper::new(objects, &pool).remove(name.as_bytes()).await?;
            } else {
                objects.remove(&pool, name.as_bytes()).await?;
            }
            Ok(String::new())
        }
    }
}
