//! `lcpfs-osd store <dir> <command>`: the offline tool for an OSD's engine store.
//!
//! Exit codes: 0 success, 1 a user error (bad arguments, missing object, no space, store
//! locked), 2 data loss (a block that cannot be rebuilt). Messages go to stderr.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use clap::{Args, Subcommand};
use lcpfs_engine::{
    self as engine, CollectionSettings, Compression, CreateSpec, Data, DiskSource, ListOptions,
    OpenOptions, Store, Transaction, VdevKind,
};

use lcpfs_core::size::{human, parse_size};

/// Arguments of `lcpfs-osd store`.
#[derive(Args, Debug)]
pub struct StoreArgs {
    /// The store's directory (metadata, lock, and file disks made by `create`).
    pub dir: PathBuf,
    #[command(subcommand)]
    pub command: StoreCommand,
}

/// The store tool's commands.
#[derive(Subcommand, Debug)]
pub enum StoreCommand {
    /// Create a store.
    Create {
        /// single, mirror, raidz1, raidz2 or raidz3.
        #[arg(long, default_value = "single")]
        layout: String,
        /// Make this many file disks inside the store directory.
        #[arg(long)]
        disks: Option<usize>,
        /// Size of each file disk made by --disks (e.g. 4G).
        #[arg(long, default_value = "1G")]
        disk_size: String,
        /// Use this file or block device (repeat for each disk); its contents are lost.
        #[arg(long = "disk")]
        disk_paths: Vec<PathBuf>,
        /// Disks per top-level vdev; several vdevs are striped (default: all in one,
        /// or one per disk for single).
        #[arg(long)]
        width: Option<usize>,
        /// A cache device (L2ARC): a faster file or device that keeps blocks the
        /// memory cache evicts, across restarts.
        #[arg(long)]
        cache_disk: Option<PathBuf>,
        /// Create the cache device as a file of this size.
        #[arg(long)]
        cache_size: Option<String>,
    },
    /// Layout, disk health, error counters and space.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Create, list, change or remove collections.
    #[command(subcommand)]
    Collection(CollectionCommand),
    /// Store an object from FILE or standard input; exits 0 only once it is durable.
    Put {
        coll: String,
        object: String,
        file: Option<PathBuf>,
    },
    /// Write an object to FILE or standard output.
    Get {
        coll: String,
        object: String,
        file: Option<PathBuf>,
        /// Read from this snapshot instead of the live collection.
        #[arg(long)]
        snapshot: Option<String>,
    },
    /// List objects, sorted by name.
    Ls {
        coll: String,
        #[arg(long, default_value = "")]
        prefix: String,
        #[arg(long)]
        start_after: Option<String>,
        #[arg(long, default_value_t = 0)]
        limit: usize,
        #[arg(long)]
        snapshot: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// An object's size, times, blocks and xattrs.
    Stat {
        coll: String,
        object: String,
        #[arg(long)]
        snapshot: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Remove an object.
    Rm { coll: String, object: String },
    /// Take a snapshot of a collection.
    Snapshot { coll: String, name: String },
    /// List a collection's snapshots with their space.
    Snapshots {
        coll: String,
        #[arg(long)]
        json: bool,
    },
    /// Roll a collection back to a snapshot.
    Rollback {
        coll: String,
        snapshot: String,
        /// Also destroy snapshots newer than it.
        #[arg(long)]
        destroy_newer: bool,
    },
    /// Clone a snapshot into a new collection.
    Clone {
        coll: String,
        snapshot: String,
        new_coll: String,
    },
    /// Destroy a snapshot.
    DestroySnapshot { coll: String, snapshot: String },
    /// Verify every block, repair what is damaged, report.
    Scrub {
        #[arg(long)]
        json: bool,
    },
    /// Measure the engine against raw file, raw RocksDB and per-core baselines, in
    /// scratch stores created (and removed) inside DIR.
    Bench {
        /// Size of the large object.
        #[arg(long, default_value = "256M")]
        large: String,
        /// Number of small objects.
        #[arg(long, default_value_t = 20_000)]
        small_objects: usize,
        /// Size of each small object.
        #[arg(long, default_value = "4K")]
        small_size: String,
        /// Concurrent writers of small objects.
        #[arg(long, default_value_t = 16)]
        writers: usize,
        /// Rounds of each large-object comparison; the median is reported.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        #[arg(long)]
        json: bool,
    },
    /// Replace a disk (path or guid) with a new one and rebuild it.
    Replace {
        old: String,
        new: PathBuf,
        /// Create NEW as a file disk of this size.
        #[arg(long)]
        size: Option<String>,
    },
}

/// Collection commands.
#[derive(Subcommand, Debug)]
pub enum CollectionCommand {
    /// Create a collection.
    Create {
        name: String,
        /// off, lz4, zstd, zstd-LEVEL or auto.
        #[arg(long, default_value = "off")]
        compression: String,
        /// Store identical blocks once.
        #[arg(long)]
        dedup: bool,
        /// Block size of new objects (power of two, 4K to 16M).
        #[arg(long, default_value = "1M")]
        record_size: String,
    },
    /// List collections.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Change a collection's compression (for blocks written from now on).
    Set {
        name: String,
        #[arg(long)]
        compression: String,
    },
    /// Remove a collection and everything in it.
    Rm { name: String },
}

/// A failure with the exit code it maps to.
struct Failure {
    code: u8,
    message: String,
}

impl From<engine::Error> for Failure {
    fn from(e: engine::Error) -> Self {
        let code = if matches!(e, engine::Error::DataLoss(_)) {
            2
        } else {
            1
        };
        Failure {
            code,
            message: e.to_string(),
        }
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure {
            code: 1,
            message: e.to_string(),
        }
    }
}

fn user_error(message: impl Into<String>) -> Failure {
    Failure {
        code: 1,
        message: message.into(),
    }
}

/// Runs one store command; prints errors and returns the exit code.
pub fn run(args: StoreArgs) -> ExitCode {
    match execute(&args.dir, args.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("lcpfs-osd store: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

fn open(dir: &Path) -> Result<Store, Failure> {
    Ok(Store::open(dir, &OpenOptions::default())?)
}

fn print_json(value: &impl serde::Serialize) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value).map_err(|e| user_error(e.to_string()))?;
    println!("{text}");
    Ok(())
}

fn execute(dir: &Path, command: StoreCommand) -> Result<(), Failure> {
    match command {
        StoreCommand::Create {
            layout,
            disks,
            disk_size,
            disk_paths,
            width,
            cache_disk,
            cache_size,
        } => {
            let cache = match (cache_disk, cache_size) {
                (None, None) => None,
                (None, Some(_)) => return Err(user_error("--cache-size needs --cache-disk")),
                (Some(path), None) => Some(DiskSource::Existing(path)),
                (Some(path), Some(size)) => Some(DiskSource::NewFile(
                    path,
                    parse_size(&size).map_err(user_error)?,
                )),
            };
            create(dir, &layout, disks, &disk_size, disk_paths, width, cache)
        }
        StoreCommand::Status { json } => {
            let store = open(dir)?;
            let status = store.status();
            if json {
                return print_json(&status);
            }
            println!("  pool: {}", status.pool_id);
            println!(" state: {}", status.state);
            println!(
                "  size: {}  free: {}  collections: {}  txg: {}",
                human(status.size_bytes),
                human(status.free_bytes),
                status.collections,
                status.txg
            );
            println!(
                " cache: {} of {} held, {} hits, {} misses",
                human(status.cache.bytes),
                human(status.cache.capacity),
                status.cache.hits,
                status.cache.misses
            );
            if let Some(l2) = &status.cache_device {
                println!(
                    "  l2arc: {} ({}), {} blocks, {} hits, {} misses",
                    l2.path.display(),
                    human(l2.capacity),
                    l2.blocks,
                    l2.hits,
                    l2.misses
                );
            }
            println!(
                "config:\n\n\t{:<40} {:<9} {:>5} {:>5} {:>5}",
                "NAME", "STATE", "READ", "WRITE", "CKSUM"
            );
            for vdev in &status.vdevs {
                println!(
                    "\t{:<40} {:<9}",
                    format!("{}-{}", vdev.kind.name(), vdev.index),
                    vdev.state
                );
                for disk in &vdev.disks {
                    let state = format!("{:?}", disk.state).to_uppercase();
                    println!(
                        "\t  {:<38} {:<9} {:>5} {:>5} {:>5}{}",
                        disk.path.display().to_string(),
                        state,
                        disk.read_errors,
                        disk.write_errors,
                        disk.checksum_errors,
                        disk.problem
                            .as_ref()
                            .map(|p| format!("  ({p})"))
                            .unwrap_or_default()
                    );
                }
            }
            Ok(())
        }
        StoreCommand::Collection(command) => collection(dir, command),
        StoreCommand::Put { coll, object, file } => {
            let store = open(dir)?;
            let data = match file.as_deref() {
                None => Data::UntilEof(Box::new(io::stdin())),
                Some(path) if path == Path::new("-") => Data::UntilEof(Box::new(io::stdin())),
                Some(path) => {
                    let file = File::open(path)
                        .map_err(|e| user_error(format!("cannot read {}: {e}", path.display())))?;
                    let len = file.metadata()?.len();
                    Data::Sized {
                        reader: Box::new(file),
                        len,
                    }
                }
            };
            let mut txn = Transaction::new(coll);
            txn.write_full(object.as_bytes(), data);
            store.commit(txn)?;
            Ok(())
        }
        StoreCommand::Get {
            coll,
            object,
            file,
            snapshot,
        } => {
            let store = open(dir)?;
            let view = view(&store, &coll, snapshot.as_deref())?;
            match file.as_deref() {
                None => write_object(&view, &object, &mut io::stdout().lock()),
                Some(path) if path == Path::new("-") => {
                    write_object(&view, &object, &mut io::stdout().lock())
                }
                Some(path) => {
                    let mut out = File::create(path)
                        .map_err(|e| user_error(format!("cannot write {}: {e}", path.display())))?;
                    write_object(&view, &object, &mut out)?;
                    out.sync_all()?;
                    Ok(())
                }
            }
        }
        StoreCommand::Ls {
            coll,
            prefix,
            start_after,
            limit,
            snapshot,
            json,
        } => {
            let store = open(dir)?;
            let view = view(&store, &coll, snapshot.as_deref())?;
            let entries = view.list(&ListOptions {
                prefix: prefix.into_bytes(),
                start_after: start_after.map(String::into_bytes),
                limit,
            })?;
            if json {
                return print_json(&entries);
            }
            let mut out = io::stdout().lock();
            for entry in entries {
                writeln!(out, "{:>12}  {}", entry.size, entry.name)?;
            }
            Ok(())
        }
        StoreCommand::Stat {
            coll,
            object,
            snapshot,
            json,
        } => {
            let store = open(dir)?;
            let view = view(&store, &coll, snapshot.as_deref())?;
            let stat = view.stat(object.as_bytes())?;
            if json {
                return print_json(&stat);
            }
            println!(
                "object: {object}\nsize: {}\nmtime_ns: {}\nblock size: {}\nblocks: {}\nstored: {}\nomap entries: {}",
                stat.size,
                stat.mtime_ns,
                stat.block_size,
                stat.blocks,
                stat.stored_bytes,
                stat.omap_entries
            );
            for (key, value) in &stat.xattrs {
                println!("xattr {key}: {value}");
            }
            Ok(())
        }
        StoreCommand::Rm { coll, object } => {
            let store = open(dir)?;
            let mut txn = Transaction::new(coll);
            txn.remove(object.as_bytes());
            store.commit(txn)?;
            Ok(())
        }
        StoreCommand::Snapshot { coll, name } => {
            let store = open(dir)?;
            let snap = store.snapshot(&coll, &name)?;
            println!("{coll}@{} at txg {}", snap.name, snap.txg);
            Ok(())
        }
        StoreCommand::Snapshots { coll, json } => {
            let store = open(dir)?;
            let snapshots = store.snapshots(&coll)?;
            if json {
                let rows: Vec<_> = snapshots
                    .iter()
                    .map(|(s, referenced, unique)| serde_json::json!({
                        "name": s.name, "txg": s.txg, "created_ns": s.created_ns,
                        "clones": s.clones.len(), "referenced_bytes": referenced, "unique_bytes": unique,
                    }))
                    .collect();
                return print_json(&rows);
            }
            println!(
                "{:<30} {:>8} {:>12} {:>12} {:>6}",
                "NAME", "TXG", "REFER", "UNIQUE", "CLONES"
            );
            for (s, referenced, unique) in snapshots {
                println!(
                    "{:<30} {:>8} {:>12} {:>12} {:>6}",
                    format!("{coll}@{}", s.name),
                    s.txg,
                    human(referenced),
                    human(unique),
                    s.clones.len()
                );
            }
            Ok(())
        }
        StoreCommand::Rollback {
            coll,
            snapshot,
            destroy_newer,
        } => {
            open(dir)?.rollback(&coll, &snapshot, destroy_newer)?;
            Ok(())
        }
        StoreCommand::Clone {
            coll,
            snapshot,
            new_coll,
        } => {
            open(dir)?.clone_snapshot(&coll, &snapshot, &new_coll)?;
            Ok(())
        }
        StoreCommand::DestroySnapshot { coll, snapshot } => {
            open(dir)?.destroy_snapshot(&coll, &snapshot)?;
            Ok(())
        }
        StoreCommand::Scrub { json } => {
            let store = open(dir)?;
            let stop = Arc::new(AtomicBool::new(false));
            let report = store.scrub(&stop, |_| {})?;
            if json {
                print_json(&report)?;
            } else {
                println!(
                    "scrub {} in {:.1}s: {} blocks ({}) checked, {} repaired, {} unrecoverable, {} leaked rows",
                    if report.stopped { "stopped" } else { "done" },
                    report.seconds,
                    report.checked_blocks,
                    human(report.checked_bytes),
                    report.repaired_blocks,
                    report.unrecoverable_blocks,
                    report.leaked_rows
                );
                for damaged in &report.damaged_objects {
                    println!(
                        "damaged: {}/{}{}",
                        damaged.collection,
                        damaged.object,
                        if damaged.in_snapshot {
                            " (in a snapshot)"
                        } else {
                            ""
                        }
                    );
                }
            }
            if report.unrecoverable_blocks > 0 {
                return Err(Failure {
                    code: 2,
                    message: format!(
                        "{} blocks could not be repaired",
                        report.unrecoverable_blocks
                    ),
                });
            }
            Ok(())
        }
        StoreCommand::Bench {
            large,
            small_objects,
            small_size,
            writers,
            rounds,
            json,
        } => {
            std::fs::create_dir_all(dir)?;
            let options = crate::bench::BenchOptions {
                large_bytes: parse_size(&large).map_err(user_error)?,
                small_objects,
                small_bytes: parse_size(&small_size).map_err(user_error)? as usize,
                writers,
                rounds,
            };
            let report =
                crate::bench::run(dir, &options).map_err(|e| user_error(format!("{e:#}")))?;
            if json {
                return print_json(&report);
            }
            println!(
                "{:<62} {:>14} {:>14} {:>7}",
                "measurement", "engine", "baseline", "ratio"
            );
            for c in &report.comparisons {
                let show = |v: f64| {
                    if c.unit == "B/s" {
                        format!("{}/s", human(v as u64))
                    } else {
                        format!("{v:.0} {}", c.unit)
                    }
                };
                println!(
                    "{:<62} {:>14} {:>14} {:>7.2}",
                    c.name,
                    show(c.engine),
                    show(c.baseline),
                    c.ratio
                );
            }
            println!(
                "BLAKE3 per core: {}/s",
                human(report.blake3_bytes_per_sec as u64)
            );
            println!(
                "RAID-Z parity (4+2) per core: {}/s",
                human(report.parity_bytes_per_sec as u64)
            );
            println!(
                "ARC lookups per second: {:.1} M",
                report.arc_lookups_per_sec / 1e6
            );
            Ok(())
        }
        StoreCommand::Replace { old, new, size } => {
            let store = open(dir)?;
            let size = size
                .map(|s| parse_size(&s))
                .transpose()
                .map_err(user_error)?;
            let report = store.replace_disk(&old, &new, size)?;
            println!(
                "resilvered {} blocks ({}) onto {} in {:.1}s, {} unrecoverable",
                report.repaired_blocks,
                human(report.checked_bytes),
                new.display(),
                report.seconds,
                report.unrecoverable_blocks
            );
            if report.unrecoverable_blocks > 0 {
                return Err(Failure {
                    code: 2,
                    message: "some blocks could not be rebuilt".into(),
                });
            }
            Ok(())
        }
    }
}

/// The live collection, or one of its snapshots.
fn view<'a>(
    store: &'a Store,
    coll: &str,
    snapshot: Option<&str>,
) -> Result<engine::View<'a>, Failure> {
    Ok(match snapshot {
        Some(s) => store.at_snapshot(coll, s)?,
        None => store.head(coll)?,
    })
}

fn write_object(view: &engine::View<'_>, object: &str, out: &mut dyn Write) -> Result<(), Failure> {
    view.read_to(object.as_bytes(), 0, u64::MAX, out)?;
    out.flush()?;
    Ok(())
}

/// The engine layout asked for by `--layout`, `--disks`/`--disk-size` or `--disk`,
/// and `--width`: shared by `store create` and the daemon's first start. File disks
/// are made under `DIR/disks`.
pub fn layout_spec(
    dir: &Path,
    layout: &str,
    disks: Option<usize>,
    disk_size: &str,
    disk_paths: Vec<PathBuf>,
    width: Option<usize>,
    cache_device: Option<DiskSource>,
) -> Result<CreateSpec, String> {
    let kind: VdevKind = layout.parse().map_err(|e: engine::Error| e.to_string())?;
    let sources: Vec<DiskSource> = match (disks, disk_paths.is_empty()) {
        (Some(_), false) => return Err("give either --disks N or --disk PATH, not both".into()),
        (None, true) => return Err("give --disks N (file disks) or --disk PATH (repeated)".into()),
        (Some(count), true) => {
            let size = parse_size(disk_size)?;
            std::fs::create_dir_all(dir.join("disks"))
                .map_err(|e| format!("cannot create {}: {e}", dir.join("disks").display()))?;
            (0..count)
                .map(|i| DiskSource::NewFile(dir.join("disks").join(format!("disk{i}.img")), size))
                .collect()
        }
        (None, false) => disk_paths.into_iter().map(DiskSource::Existing).collect(),
    };
    let width = width.unwrap_or(if kind == VdevKind::Single {
        1
    } else {
        sources.len()
    });
    if width == 0 || !sources.len().is_multiple_of(width) {
        return Err(format!(
            "{} disks do not split into vdevs of {width}",
            sources.len()
        ));
    }
    Ok(CreateSpec {
        vdevs: sources
            .chunks(width)
            .map(|chunk| (kind, chunk.to_vec()))
            .collect(),
        cache_device,
    })
}

fn create(
    dir: &Path,
    layout: &str,
    disks: Option<usize>,
    disk_size: &str,
    disk_paths: Vec<PathBuf>,
    width: Option<usize>,
    cache_device: Option<DiskSource>,
) -> Result<(), Failure> {
    let spec = layout_spec(
        dir,
        layout,
        disks,
        disk_size,
        disk_paths,
        width,
        cache_device,
    )
    .map_err(user_error)?;
    let kind = spec.vdevs[0].0;
    let store = Store::create(dir, &spec)?;
    let status = store.status();
    println!(
        "created store {} in {}: {} vdev(s) of {}, {} usable",
        status.pool_id,
        dir.display(),
        status.vdevs.len(),
        kind.name(),
        human(status.size_bytes)
    );
    Ok(())
}

fn collection(dir: &Path, command: CollectionCommand) -> Result<(), Failure> {
    let store = open(dir)?;
    match command {
        CollectionCommand::Create {
            name,
            compression,
            dedup,
            record_size,
        } => {
            let compression: Compression = compression.parse()?;
            let record_size = parse_size(&record_size).map_err(user_error)?;
            let record_size =
                u32::try_from(record_size).map_err(|_| user_error("record size too large"))?;
            store.create_collection(
                &name,
                CollectionSettings {
                    compression,
                    dedup,
                    record_size,
                },
            )?;
            Ok(())
        }
        CollectionCommand::Ls { json } => {
            let collections = store.collections();
            if json {
                return print_json(&collections);
            }
            println!(
                "{:<30} {:<10} {:<6} {:>8} {:>9}  ORIGIN",
                "NAME", "COMPRESS", "DEDUP", "RECORD", "SNAPSHOTS"
            );
            for c in collections {
                println!(
                    "{:<30} {:<10} {:<6} {:>8} {:>9}  {}",
                    c.name,
                    c.settings.compression.to_string(),
                    if c.settings.dedup { "on" } else { "off" },
                    human(c.settings.record_size as u64),
                    c.snapshots.len(),
                    c.origin
                        .map(|o| format!("{}@{}", o.collection, o.snapshot))
                        .unwrap_or_else(|| "-".into())
                );
            }
            Ok(())
        }
        CollectionCommand::Set { name, compression } => {
            store.set_compression(&name, compression.parse()?)?;
            Ok(())
        }
        CollectionCommand::Rm { name } => {
            store.remove_collection(&name)?;
            Ok(())
        }
    }
}
