//! `lcpfs-osd store <dir> bench`: the engine's speed beside baselines measured in the same
//! run on the same file system, so the numbers are ratios rather than noise.
//!
//! - large object write/read on `single` vs a raw file written with one fsync and read
//!   back; the same write on a 6-wide `raidz2` vs raw × 4/6 (the data share of a stripe);
//! - many small durable puts from concurrent writers vs raw RocksDB synced write batches
//!   at the same concurrency;
//! - BLAKE3, RAID-Z parity and ARC lookups per second on one core.

use std::fs::File;
use std::io::{Cursor, Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use lcpfs_engine::arc::{BlockKey, block_cache};
use lcpfs_engine::blkptr::{BlockCodec, BlockPtr};
use lcpfs_engine::{
    CollectionSettings, CreateSpec, Data, DiskSource, Store, Transaction, VdevKind,
};
use serde::Serialize;

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Bytes of the large object.
    pub large_bytes: u64,
    /// Number of small objects.
    pub small_objects: usize,
    /// Size of each small object.
    pub small_bytes: usize,
    /// Concurrent writers of small objects.
    pub writers: usize,
    /// Rounds of each large-object comparison (the median is reported).
    pub rounds: usize,
}

/// One measurement beside its baseline.
#[derive(Serialize, Debug, Clone)]
pub struct Comparison {
    /// What was measured.
    pub name: String,
    /// Unit of both numbers.
    pub unit: &'static str,
    /// The engine's rate.
    pub engine: f64,
    /// The baseline's rate (already scaled where the comparison asks for it).
    pub baseline: f64,
    /// engine / baseline.
    pub ratio: f64,
}

/// Everything the bench measured.
#[derive(Serialize, Debug, Clone)]
pub struct BenchReport {
    /// Engine against baselines.
    pub comparisons: Vec<Comparison>,
    /// BLAKE3 bytes per second on one core.
    pub blake3_bytes_per_sec: f64,
    /// RAID-Z (4+2) parity: data bytes encoded per second on one core.
    pub parity_bytes_per_sec: f64,
    /// ARC lookups per second on one core.
    pub arc_lookups_per_sec: f64,
}

struct Shared(Arc<Vec<u8>>);

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

fn random_bytes(len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(b"lcpfs bench")
        .finalize_xof()
        .fill(&mut out);
    out
}

fn rate(bytes: f64, started: Instant) -> f64 {
    bytes / started.elapsed().as_secs_f64()
}

fn compare(name: &str, unit: &'static str, engine: f64, baseline: f64) -> Comparison {
    Comparison {
        name: name.into(),
        unit,
        engine,
        baseline,
        ratio: engine / baseline,
    }
}

fn store(dir: &Path, kind: VdevKind, disks: usize, disk_size: u64) -> anyhow::Result<Store> {
    let sources = (0..disks)
        .map(|i| DiskSource::NewFile(dir.join(format!("disk{i}")), disk_size))
        .collect();
    let store = Store::create(
        &dir.join("store"),
        &CreateSpec {
            vdevs: vec![(kind, sources)],
            cache_device: None,
        },
    )?;
    store.create_collection("bench", CollectionSettings::default())?;
    Ok(store)
}

fn put_large(store: &Store, data: &Arc<Vec<u8>>) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut txn = Transaction::new("bench");
    let reader: Box<dyn Read + Send> = Box::new(Cursor::new(Shared(Arc::clone(data))));
    txn.write_full(
        b"large",
        Data::Sized {
            reader,
            len: data.len() as u64,
        },
    );
    store.commit(txn)?;
    Ok(rate(data.len() as f64, started))
}

/// Drops a file's pages from the page cache, so that the next read comes from the
/// device: both the raw baseline and the engine's disks get this before a read.
fn drop_cache(path: &Path) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd;
    let file = File::open(path)?;
    file.sync_all()?;
    // SAFETY: posix_fadvise only reads the descriptor, which `file` keeps open.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    anyhow::ensure!(rc == 0, "posix_fadvise failed with {rc}");
    Ok(())
}

/// One round of the large-object comparison: (raw write, engine write, raw read, engine
/// read) in bytes per second, on `disks` file disks of the given layout.
fn large_round(
    root: &Path,
    data: &Arc<Vec<u8>>,
    kind: VdevKind,
    disks: usize,
) -> anyhow::Result<[f64; 4]> {
    let raw_path = root.join("raw.bin");
    let started = Instant::now();
    let mut raw = File::create(&raw_path)?;
    for chunk in data.chunks(1 << 20) {
        raw.write_all(chunk)?;
    }
    raw.sync_all()?;
    let raw_write = rate(data.len() as f64, started);
    drop(raw);
    drop_cache(&raw_path)?;
    let started = Instant::now();
    let mut reader = File::open(&raw_path)?;
    let mut buf = vec![0u8; 1 << 20];
    while reader.read(&mut buf)? > 0 {}
    let raw_read = rate(data.len() as f64, started);
    std::fs::remove_file(&raw_path)?;

    let dir = root.join(kind.name());
    std::fs::create_dir_all(&dir)?;
    let columns = (disks - kind.parity()) as u64;
    let disk_size = data.len() as u64 / columns + data.len() as u64 / 4 + (64 << 20);
    let store = store(&dir, kind, disks, disk_size)?;
    let engine_write = put_large(&store, data)?;
    for i in 0..disks {
        drop_cache(&dir.join(format!("disk{i}")))?;
    }
    let started = Instant::now();
    let read = store
        .head("bench")?
        .read_to(b"large", 0, u64::MAX, &mut std::io::sink())?;
    let engine_read = rate(read as f64, started);
    drop(store);
    std::fs::remove_dir_all(&dir)?;
    Ok([raw_write, engine_write, raw_read, engine_read])
}

/// The round whose engine/baseline ratio (at `engine`/`raw` in the round) is the median.
fn median_round(rounds: &[[f64; 4]], raw: usize, engine: usize, scale: f64) -> (f64, f64) {
    let mut pairs: Vec<(f64, f64)> = rounds.iter().map(|r| (r[engine], r[raw] * scale)).collect();
    pairs.sort_by(|a, b| (a.0 / a.1).total_cmp(&(b.0 / b.1)));
    pairs[pairs.len() / 2]
}

/// Runs every measurement in scratch directories under `dir` (removed afterwards).
/// Large-object rounds run `rounds` times; each comparison reports its median round.
pub fn run(dir: &Path, options: &BenchOptions) -> anyhow::Result<BenchReport> {
    let scratch = tempfile::Builder::new()
        .prefix("lcpfs-bench-")
        .tempdir_in(dir)?;
    let root = scratch.path();
    let data = Arc::new(random_bytes(options.large_bytes as usize));
    let mut comparisons = Vec::new();
    let rounds = options.rounds.max(1);

    let single: Vec<[f64; 4]> = (0..rounds)
        .map(|_| large_round(root, &data, VdevKind::Single, 1))
        .collect::<anyhow::Result<_>>()?;
    let (engine, raw) = median_round(&single, 0, 1, 1.0);
    comparisons.push(compare(
        "large object write, single (vs raw write+fsync)",
        "B/s",
        engine,
        raw,
    ));
    let (engine, raw) = median_round(&single, 2, 3, 1.0);
    comparisons.push(compare(
        "large object read, single, cold (vs raw read)",
        "B/s",
        engine,
        raw,
    ));
    let raidz: Vec<[f64; 4]> = (0..rounds)
        .map(|_| large_round(root, &data, VdevKind::Raidz2, 6))
        .collect::<anyhow::Result<_>>()?;
    let (engine, raw) = median_round(&raidz, 0, 1, 4.0 / 6.0);
    comparisons.push(compare(
        "large object write, raidz2 6-wide (vs raw x 4/6)",
        "B/s",
        engine,
        raw,
    ));
    let (engine, raw) = median_round(&raidz, 2, 3, 1.0);
    comparisons.push(compare(
        "large object read, raidz2 6-wide, cold (vs raw read)",
        "B/s",
        engine,
        raw,
    ));

    // Small durable puts from concurrent writers, against raw synced RocksDB batches.
    let per_writer = options.small_objects / options.writers.max(1);
    let small = Arc::new(random_bytes(options.small_bytes));
    let db_dir = root.join("rocksdb");
    let db = Arc::new(rocksdb::DB::open_default(&db_dir)?);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for w in 0..options.writers {
            let db = Arc::clone(&db);
            let small = Arc::clone(&small);
            scope.spawn(move || {
                let mut sync = rocksdb::WriteOptions::default();
                sync.set_sync(true);
                for i in 0..per_writer {
                    let mut batch = rocksdb::WriteBatch::default();
                    batch.put(format!("{w}-{i}"), small.as_slice());
                    db.write_opt(batch, &sync).expect("raw RocksDB write");
                }
            });
        }
    });
    let raw_ops = rate((per_writer * options.writers) as f64, started);
    drop(db);
    let small_dir = root.join("small");
    std::fs::create_dir_all(&small_dir)?;
    let small_disk =
        (options.small_objects * options.small_bytes.max(4096)) as u64 * 2 + (64 << 20);
    let small_store = store(&small_dir, VdevKind::Single, 1, small_disk)?;
    let started = Instant::now();
    let failures: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..options.writers)
            .map(|w| {
                let small_store = &small_store;
                let small = Arc::clone(&small);
                scope.spawn(move || {
                    (0..per_writer)
                        .filter(|i| {
                            let mut txn = Transaction::new("bench");
                            txn.write_full(format!("{w}-{i}").as_bytes(), small.as_slice());
                            small_store.commit(txn).is_err()
                        })
                        .count()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(per_writer))
            .sum()
    });
    anyhow::ensure!(failures == 0, "{failures} small puts failed");
    let engine_ops = rate((per_writer * options.writers) as f64, started);
    comparisons.push(compare(
        &format!(
            "{} B durable puts, {} writers (vs RocksDB synced batches)",
            options.small_bytes, options.writers
        ),
        "ops/s",
        engine_ops,
        raw_ops,
    ));
    drop(small_store);

    // Per-core primitives.
    let sample = &data[..data.len().min(64 << 20)];
    let started = Instant::now();
    let mut rounds = 0;
    while started.elapsed().as_secs_f64() < 1.0 {
        std::hint::black_box(blake3::hash(sample));
        rounds += 1;
    }
    let blake3_bytes_per_sec = rate((rounds * sample.len()) as f64, started);

    let codec = reed_solomon_erasure::galois_8::ReedSolomon::new(4, 2)?;
    let column = 1 << 20;
    let mut shards: Vec<Vec<u8>> = (0..6)
        .map(|i| sample[i * column % sample.len()..][..column].to_vec())
        .collect();
    let started = Instant::now();
    let mut rounds = 0;
    while started.elapsed().as_secs_f64() < 1.0 {
        codec.encode(&mut shards)?;
        rounds += 1;
    }
    let parity_bytes_per_sec = rate((rounds * 4 * column) as f64, started);

    let cache = block_cache(64 << 20);
    let block = Arc::new(vec![0u8; 4096]);
    let keys: Vec<BlockKey> = (0..10_000u64)
        .map(|row| {
            BlockKey::of(&BlockPtr {
                vdev: 0,
                row,
                nrows: 1,
                lsize: 4096,
                psize: 4096,
                codec: BlockCodec::Raw,
                checksum: *blake3::hash(&row.to_le_bytes()).as_bytes(),
                birth: 1,
                dedup: false,
            })
        })
        .collect();
    for key in &keys {
        cache.insert(*key, Arc::clone(&block));
    }
    let started = Instant::now();
    let lookups = 5_000_000;
    for i in 0..lookups {
        std::hint::black_box(cache.get(&keys[i % keys.len()]));
    }
    let arc_lookups_per_sec = rate(lookups as f64, started);

    Ok(BenchReport {
        comparisons,
        blake3_bytes_per_sec,
        parity_bytes_per_sec,
        arc_lookups_per_sec,
    })
}
