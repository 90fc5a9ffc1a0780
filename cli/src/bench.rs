//! `lcpfs bench POOL SECONDS write|seq|rand`: the cluster's speed, like `rados bench`.
//!
//! `write` stores objects of one block size from several concurrent writers for the
//! given time; `seq` and `rand` read back the objects a `write --no-cleanup` left,
//! in order or at random. Every second prints a progress line; the summary gives
//! bandwidth, IOPS and latency (average, p50, p99). With `--baseline`, the same run
//! also measures what the cluster's numbers should be read against: a raw local
//! file written in blocks of the same size with an fsync after each (the disk), and
//! an echo of the same payload from the same OSDs (the network and gRPC, no storage).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use lcpfs_core::size::{human, parse_size};
use rand::Rng;
use serde::Serialize;
use serde_json::json;

use lcpfs_client::mon_client::MonClient;
use lcpfs_client::objects::ObjectClient;

/// Object that records what the last `write --no-cleanup` left, for `seq`/`rand`.
const METADATA_OBJECT: &[u8] = b"benchmark_last_metadata";

/// What a bench run does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Write new objects.
    Write,
    /// Read the objects of the last write, in order.
    Seq,
    /// Read the objects of the last write, at random.
    Rand,
}

/// Arguments of `lcpfs bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Pool to write to or read from.
    pub pool: String,
    /// How long to run, in seconds.
    pub seconds: f64,
    /// write, seq or rand.
    #[arg(value_enum)]
    pub mode: Mode,
    /// Concurrent operations.
    #[arg(short = 't', long, default_value_t = 16)]
    pub threads: usize,
    /// Object size for writes (e.g. 4K, 4M).
    #[arg(short = 'b', long, default_value = "4M")]
    pub block_size: String,
    /// Keep the written objects (for a later seq or rand run).
    #[arg(long)]
    pub no_cleanup: bool,
    /// Also measure, in the same run, a raw fsync'd file write of the same blocks
    /// and an echo of the same payload from the OSDs.
    #[arg(long)]
    pub baseline: bool,
    /// Folder for the raw file of `--baseline` (the disk the cluster's data is on).
    #[arg(long, default_value = ".")]
    pub baseline_dir: PathBuf,
}

/// Operations finished and their latencies.
#[derive(Default)]
struct Tally {
    ops: AtomicU64,
    bytes: AtomicU64,
}

/// The outcome of one timed run.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// What was measured.
    pub what: String,
    /// Seconds the run took.
    pub seconds: f64,
    /// Operations completed.
    pub ops: u64,
    /// Bytes moved.
    pub bytes: u64,
    /// MiB per second.
    pub mib_per_second: f64,
    /// Operations per second.
    pub iops: f64,
    /// Latency in milliseconds: average, median and 99th percentile.
    pub latency_ms_avg: f64,
    pub latency_ms_p50: f64,
    pub latency_ms_p99: f64,
}

impl Summary {
    fn new(what: &str, elapsed: Duration, bytes: u64, mut latencies: Vec<Duration>) -> Self {
        latencies.sort_unstable();
        let seconds = elapsed.as_secs_f64().max(1e-9);
        let ms = |duration: Duration| duration.as_secs_f64() * 1000.0;
        let percentile = |p: f64| {
            latencies
                .get(((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1))
                .map_or(0.0, |latency| ms(*latency))
        };
        let ops = latencies.len() as u64;
        Summary {
            what: what.to_owned(),
            seconds,
            ops,
            bytes,
            mib_per_second: bytes as f64 / seconds / (1 << 20) as f64,
            iops: ops as f64 / seconds,
            latency_ms_avg: if ops == 0 {
                0.0
            } else {
                latencies.iter().map(|latency| ms(*latency)).sum::<f64>() / ops as f64
            },
            latency_ms_p50: percentile(0.50),
            latency_ms_p99: percentile(0.99),
        }
    }

    fn text(&self) -> String {
        format!(
            "{}: {:.2} s, {} ops, {}, {:.1} MiB/s, {:.0} IOPS, latency avg {:.2} ms, p50 {:.2} ms, p99 {:.2} ms",
            self.what,
            self.seconds,
            self.ops,
            human(self.bytes),
            self.mib_per_second,
            self.iops,
            self.latency_ms_avg,
            self.latency_ms_p50,
            self.latency_ms_p99
        )
    }
}

/// Name of object `n` of a bench run.
fn object_name(n: u64) -> Vec<u8> {
    format!("benchmark_data_object{n}").into_bytes()
}

/// Runs `op(n)` from `threads` workers for `duration` (or until `limit` ops),
/// printing a progress line each second unless `quiet`.
async fn timed<F, Fut>(
    what: &str,
    threads: usize,
    duration: Duration,
    limit: Option<u64>,
    quiet: bool,
    op: F,
) -> anyhow::Result<Summary>
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<u64>> + Send,
{
    let op = Arc::new(op);
    let tally = Arc::new(Tally::default());
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..threads.max(1) {
        let (op, tally, next) = (op.clone(), tally.clone(), next.clone());
        workers.spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if limit.is_some_and(|limit| n >= limit) {
                    break;
                }
                let began = Instant::now();
                let bytes = op(n).await?;
                latencies.push(began.elapsed());
                tally.ops.fetch_add(1, Ordering::Relaxed);
                tally.bytes.fetch_add(bytes, Ordering::Relaxed);
            }
            anyhow::Ok(latencies)
        });
    }
    let progress = (!quiet).then(|| {
        let tally = tally.clone();
        tokio::spawn(async move {
            eprintln!("  sec      ops    MiB/s  cur MiB/s");
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            let mut previous = 0;
            for second in 1.. {
                tick.tick().await;
                let bytes = tally.bytes.load(Ordering::Relaxed);
                let mib = |bytes: u64, seconds: f64| bytes as f64 / seconds / (1 << 20) as f64;
                eprintln!(
                    "{second:5} {:8} {:8.1} {:10.1}",
                    tally.ops.load(Ordering::Relaxed),
                    mib(bytes, second as f64),
                    mib(bytes - previous, 1.0)
                );
                previous = bytes;
            }
        })
    });
    let mut latencies = Vec::new();
    let mut failure = None;
    while let Some(done) = workers.join_next().await {
        match done.context("bench worker")? {
            Ok(mut part) => latencies.append(&mut part),
            Err(error) => {
                failure.get_or_insert(error);
            }
        }
    }
    let elapsed = start.elapsed();
    if let Some(progress) = progress {
        progress.abort();
    }
    if let Some(error) = failure {
        return Err(error);
    }
    Ok(Summary::new(
        what,
        elapsed,
        tally.bytes.load(Ordering::Relaxed),
        latencies,
    ))
}

/// Raw local writes of `block` bytes, each followed by an fsync, into a file in
/// `dir`, from one writer for `duration`.
async fn raw_file_baseline(
    dir: &Path,
    block: usize,
    duration: Duration,
) -> anyhow::Result<Summary> {
    let path = dir.join(format!(".lcpfs-bench-{}", std::process::id()));
    let file = std::fs::File::create(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    let file = Arc::new(std::sync::Mutex::new(file));
    let data = Arc::new(payload(block));
    let result = timed(
        "raw fsync'd file write",
        1,
        duration,
        None,
        true,
        move |_| {
            let (file, data) = (file.clone(), data.clone());
            async move {
                tokio::task::spawn_blocking(move || {
                    let mut file = file.lock().expect("baseline file");
                    file.write_all(&data)?;
                    file.sync_data()?;
                    anyhow::Ok(data.len() as u64)
                })
                .await?
            }
        },
    )
    .await;
    std::fs::remove_file(&path).ok();
    result
}

/// Bytes that neither compress nor dedup.
fn payload(size: usize) -> Vec<u8> {
    let mut data = vec![0u8; size];
    rand::rng().fill(&mut data[..]);
    data
}

/// Runs `lcpfs bench`.
pub async fn run(mon: MonClient, args: BenchArgs, json_output: bool) -> anyhow::Result<String> {
    let block = usize::try_from(parse_size(&args.block_size).map_err(anyhow::Error::msg)?)?;
    if block == 0 {
        bail!("--block-size must be at least 1 byte");
    }
    let duration = Duration::try_from_secs_f64(args.seconds)
        .ok()
        .filter(|duration| !duration.is_zero())
        .context("SECONDS must be a positive number")?;
    let objects = Arc::new(ObjectClient::connect(mon).await?);
    let pool = args.pool.clone();
    let mut summaries = Vec::new();
    match args.mode {
        Mode::Write => {
            let data = Arc::new(payload(block));
            let (client, target) = (objects.clone(), pool.clone());
            let summary = timed(
                "write",
                args.threads,
                duration,
                None,
                json_output,
                move |n| {
                    let (client, target, data) = (client.clone(), target.clone(), data.clone());
                    async move {
                        client.put(&target, &object_name(n), data.to_vec()).await?;
                        Ok(data.len() as u64)
                    }
                },
            )
            .await?;
            let count = summary.ops;
            summaries.push(summary);
            if args.no_cleanup {
                let metadata = json!({ "objects": count, "block_size": block });
                objects
                    .put(&pool, METADATA_OBJECT, metadata.to_string().into_bytes())
                    .await?;
            } else {
                cleanup(&objects, &pool, count).await?;
            }
        }
        Mode::Seq | Mode::Rand => {
            let metadata = objects.get(&pool, METADATA_OBJECT).await.with_context(|| {
                format!(
                    "nothing to read: run `lcpfs bench {pool} SECONDS write --no-cleanup` first"
                )
            })?;
            let metadata: serde_json::Value = serde_json::from_slice(&metadata)
                .context("the bench metadata object is not JSON")?;
            let count = metadata["objects"].as_u64().unwrap_or(0);
            if count == 0 {
                bail!("the last bench write left no objects");
            }
            let random = args.mode == Mode::Rand;
            let (client, target) = (objects.clone(), pool.clone());
            let limit = (!random).then_some(count);
            let what = if random { "rand read" } else { "seq read" };
            let summary = timed(what, args.threads, duration, limit, json_output, move |n| {
                let (client, target) = (client.clone(), target.clone());
                let index = if random {
                    rand::rng().random_range(0..count)
                } else {
                    n
                };
                async move { Ok(client.get(&target, &object_name(index)).await?.len() as u64) }
            })
            .await?;
            summaries.push(summary);
        }
    }
    if args.baseline {
        summaries.push(raw_file_baseline(&args.baseline_dir, block, duration).await?);
        let data = Arc::new(payload(block));
        let (client, target) = (objects.clone(), pool.clone());
        let echo = timed("gRPC echo", args.threads, duration, None, true, move |n| {
            let (client, target, data) = (client.clone(), target.clone(), data.clone());
            async move {
                client.echo(&target, &object_name(n), data.to_vec()).await?;
                Ok(data.len() as u64)
            }
        })
        .await?;
        summaries.push(echo);
    }
    if json_output {
        return Ok(serde_json::to_string_pretty(&summaries)?);
    }
    let mut out: Vec<String> = summaries.iter().map(Summary::text).collect();
    if let [cluster, raw, echo] = &summaries[..] {
        out.push(format!(
            "ratios: {:.2}x the raw disk's MiB/s, {:.2}x the echo's IOPS, p99 {:.1}x the echo's",
            cluster.mib_per_second / raw.mib_per_second.max(1e-9),
            cluster.iops / echo.iops.max(1e-9),
            cluster.latency_ms_p99 / echo.latency_ms_p99.max(1e-9),
        ));
    }
    Ok(out.join("\n"))
}

/// Removes the objects of a write run.
async fn cleanup(objects: &Arc<ObjectClient>, pool: &str, count: u64) -> anyhow::Result<()> {
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (objects, pool, next) = (objects.clone(), pool.to_owned(), next.clone());
        workers.spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= count {
                    return anyhow::Ok(());
                }
                objects.remove(&pool, &object_name(n)).await?;
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done.context("cleanup worker")??;
    }
    Ok(())
}
