//! The store: creating and opening one, and the [`Store`] handle every operation goes
//! through.
//!
//! Creating formats the disks (labels and all), writes the pool configuration and the
//! free extents in one synced RocksDB batch, and opens the result. Opening reads the
//! configuration, opens each disk by its label (a vdev that has lost more disks than it
//! can is refused unless forced), loads the allocator and the catalog, and starts the
//! committer thread. The handle then hands out transaction group numbers, the object
//! locks and the dedup lock, and passes prepared transactions to the committer.
//!
//! The rest of the store's methods live beside their concern, in the modules that build
//! on this one: collections, snapshots and clones in `collections`, object reads in
//! `read`, status in `status`, disk replacement in `replace`, scrub in `scrub`,
//! transactions in `txn`.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use rocksdb::{BlockBasedOptions, DB, Options};
use serde::{Deserialize, Serialize};

use super::alloc::{self, Allocator, Run};
use super::arc::block_cache;
use super::catalog::{Catalog, KEY_NEXT_COLL};
use super::commit::{self, Prepared, Submission};
use super::error::{Error, IoContext, Result};
use super::keys::CollId;
use super::l2arc::L2Cache;
use super::shared::{KEY_LAST_TXG, Shared, counter_key};
use super::vdev::{self, Vdev, VdevConfig, VdevKind};
use super::view::Reader;

/// RocksDB key of the pool configuration.
pub(crate) const KEY_CONFIG: &[u8] = b"gconfig";
const OBJECT_LOCK_STRIPES: usize = 1024;

/// Where a disk of a new store comes from.
#[derive(Clone, Debug)]
pub enum DiskSource {
    /// Create a new file of this size.
    NewFile(PathBuf, u64),
    /// Use an existing file or block device (its contents are overwritten).
    Existing(PathBuf),
}

/// The layout of a new store: its top-level vdevs.
#[derive(Clone, Debug)]
pub struct CreateSpec {
    /// Top-level vdevs, striped.
    pub vdevs: Vec<(VdevKind, Vec<DiskSource>)>,
    /// A cache device (L2ARC): a file created at the size given, or an existing device.
    pub cache_device: Option<DiskSource>,
}

/// How to open a store.
#[derive(Clone, Debug)]
pub struct OpenOptions {
    /// Open even when a vdev cannot serve (reads of its blocks fail with data loss);
    /// for operators rescuing what is left.
    pub force: bool,
    /// Bytes of decoded blocks the ARC may hold.
    pub cache_bytes: usize,
}

/// Default size of the block cache.
pub const DEFAULT_CACHE_BYTES: usize = 256 << 20;

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            force: false,
            cache_bytes: DEFAULT_CACHE_BYTES,
        }
    }
}

/// Pool configuration persisted in RocksDB.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub(crate) struct PoolConfig {
    pub pool_id: String,
    pub vdevs: Vec<VdevConfig>,
    /// Cache device (L2ARC), if any.
    #[serde(default)]
    pub cache_device: Option<PathBuf>,
}

/// An open LCPFS engine store.
pub struct Store {
    dir: PathBuf,
    pub(crate) shared: Arc<Shared>,
    pub(crate) config: Mutex<PoolConfig>,
    pub(crate) catalog: RwLock<Catalog>,
    next_txg: AtomicU64,
    pub(crate) next_coll: Mutex<CollId>,
    queue: Mutex<Option<SyncSender<Submission>>>,
    committer: Mutex<Option<JoinHandle<()>>>,
    object_locks: Vec<Mutex<()>>,
    /// Held by every transaction that may change the dedup table (see `dedup`).
    dedup: Mutex<()>,
    _lock: File,
}

/// Now, in nanoseconds since the Unix epoch.
pub(crate) fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn db_options(create: bool) -> Options {
    let mut options = Options::default();
    options.create_if_missing(create);
    let mut table = BlockBasedOptions::default();
    table.set_bloom_filter(10.0, false);
    options.set_block_based_table_factory(&table);
    options.set_compression_type(rocksdb::DBCompressionType::Lz4);
    options
}

fn lock_dir(dir: &Path) -> Result<File> {
    let path = dir.join("lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .ctx(|| format!("opening lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Locked(dir.to_path_buf(), path)),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(Error::io(format!("locking {}", path.display()), e))
        }
    }
}

/// A fresh random-looking 64-bit id (pool ids, disk guids).
pub(crate) fn new_id() -> u64 {
    let mut seed = [0u8; 16];
    seed[..8].copy_from_slice(&now_ns().to_le_bytes());
    seed[8..12].copy_from_slice(&std::process::id().to_le_bytes());
    let stack = &seed as *const _ as usize;
    seed[12..16].copy_from_slice(&(stack as u32).to_le_bytes());
    u64::from_le_bytes(
        blake3::hash(&seed).as_bytes()[..8]
            .try_into()
            .expect("8 bytes"),
    )
}

impl Store {
    /// Creates a new store in `dir` (which must not hold one) and opens it.
    pub fn create(dir: &Path, spec: &CreateSpec) -> Result<Store> {
        if spec.vdevs.is_empty() {
            return Err(Error::Invalid("a store needs at least one vdev".into()));
        }
        for (kind, disks) in &spec.vdevs {
            if disks.len() < kind.min_width() {
                return Err(Error::Invalid(format!(
                    "{} needs at least {} disks, got {}",
                    kind.name(),
                    kind.min_width(),
                    disks.len()
                )));
            }
            if kind.parity() > 0 && disks.len() > 255 {
                return Err(Error::Invalid("a raidz vdev has at most 255 disks".into()));
            }
        }
        std::fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
        let lock = lock_dir(dir)?;
        let meta = dir.join("meta");
        if meta.exists() {
            return Err(Error::AlreadyExists(format!(
                "a store already exists in {}",
                dir.display()
            )));
        }
        let pool_id = format!("{:016x}", new_id());
        let mut vdevs = Vec::new();
        for (v, (kind, disks)) in spec.vdevs.iter().enumerate() {
            let mut configs = Vec::new();
            for (child, source) in disks.iter().enumerate() {
                let (path, size) = match source {
                    DiskSource::NewFile(path, size) => (path, Some(*size)),
                    DiskSource::Existing(path) => (path, None),
                };
                let identity = vdev::DiskIdentity {
                    pool_id: &pool_id,
                    vdev: v as u32,
                    child: child as u32,
                    kind: *kind,
                    width: disks.len() as u32,
                    guid: new_id(),
                };
                let config = vdev::format_disk(path, size, &identity)?;
                configs.push(config);
            }
            vdevs.push(VdevConfig {
                kind: *kind,
                disks: configs,
            });
        }
        let cache_device = match &spec.cache_device {
            None => None,
            Some(DiskSource::NewFile(path, size)) => {
                L2Cache::open(path, Some(*size))?.close();
                Some(path.clone())
            }
            Some(DiskSource::Existing(path)) => {
                L2Cache::open(path, None)?.close();
                Some(path.clone())
            }
        };
        let config = PoolConfig {
            pool_id,
            vdevs,
            cache_device,
        };
        let db = DB::open(&db_options(true), &meta)?;
        let rows: Vec<u64> = config
            .vdevs
            .iter()
            .map(|v| {
                v.disks
                    .iter()
                    .map(|d| d.size.saturating_sub(4 * 8192) / vdev::SECTOR)
                    .min()
                    .unwrap_or(0)
            })
            .collect();
        let mut batch = rocksdb::WriteBatch::default();
        batch.put(
            KEY_CONFIG,
            serde_json::to_vec(&config).expect("config serializes"),
        );
        batch.put(KEY_LAST_TXG, 0u64.to_le_bytes());
        batch.put(KEY_NEXT_COLL, 1u64.to_le_bytes());
        for run in Allocator::fresh_extents(&rows) {
            batch.put(
                alloc::extent_key(run.vdev, run.row),
                run.nrows.to_le_bytes(),
            );
        }
        let mut options = rocksdb::WriteOptions::default();
        options.set_sync(true);
        db.write_opt(batch, &options)?;
        drop(db);
        let mut readme = File::create(dir.join("README")).ctx(|| "writing store README".into())?;
        let _ = writeln!(
            readme,
            "LCPFS engine store. Metadata in meta/ (RocksDB), data on the disks it lists.\n\
             Inspect with: lcpfs-osd store {} status",
            dir.display()
        );
        Self::open_locked(dir, lock, &OpenOptions::default())
    }

    /// Opens an existing store. Fails with [`Error::Locked`] when another process has it
    /// open, and with [`Error::Unavailable`] when too many disks are missing (unless
    /// `options.force`).
    pub fn open(dir: &Path, options: &OpenOptions) -> Result<Store> {
        if !dir.join("meta").exists() {
            return Err(Error::NotFound(format!("no store in {}", dir.display())));
        }
        let lock = lock_dir(dir)?;
        Self::open_locked(dir, lock, options)
    }

    fn open_locked(dir: &Path, lock: File, options: &OpenOptions) -> Result<Store> {
        let db = DB::open(&db_options(false), dir.join("meta"))?;
        let config: PoolConfig = serde_json::from_slice(
            &db.get(KEY_CONFIG)?
                .ok_or_else(|| Error::Corrupt("store has no pool configuration".into()))?,
        )
        .map_err(|e| Error::Corrupt(format!("pool configuration: {e}")))?;
        let mut vdevs = Vec::new();
        for (v, vdev_config) in config.vdevs.iter().enumerate() {
            let disks = vdev_config
                .disks
                .iter()
                .map(|d| {
                    let disk = vdev::open_disk(d, &config.pool_id);
                    if let Ok(Some(counts)) = db.get(counter_key(d.guid))
                        && counts.len() == 24
                    {
                        let c = &disk.counters;
                        for (i, counter) in [&c.read_errors, &c.write_errors, &c.checksum_errors]
                            .into_iter()
                            .enumerate()
                        {
                            counter.store(
                                u64::from_le_bytes(
                                    counts[i * 8..i * 8 + 8].try_into().expect("8 bytes"),
                                ),
                                Ordering::Relaxed,
                            );
                        }
                    }
                    Arc::new(disk)
                })
                .collect();
            let vdev = Vdev::new(v as u32, vdev_config, disks)?;
            if vdev.state() == "FAULTED" && !options.force {
                let problems: Vec<String> = vdev
                    .disks
                    .iter()
                    .filter_map(|d| d.problem().map(|p| format!("{}: {p}", d.path().display())))
                    .collect();
                return Err(Error::Unavailable(format!(
                    "vdev {v} ({}) has lost more disks than it can: {}",
                    vdev.kind.name(),
                    problems.join("; ")
                )));
            }
            if vdev.state() == "DEGRADED" {
                tracing::warn!(vdev = v, "opening DEGRADED: a disk is missing or damaged");
            }
            vdevs.push(vdev);
        }
        let read_u64 = |key: &[u8]| -> Result<u64> {
            let bytes = db.get(key)?.ok_or_else(|| {
                Error::Corrupt(format!("missing {}", String::from_utf8_lossy(key)))
            })?;
            Ok(u64::from_le_bytes(
                bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| Error::Corrupt("bad counter".into()))?,
            ))
        };
        let last_txg = read_u64(KEY_LAST_TXG)?;
        let next_coll = read_u64(KEY_NEXT_COLL)?;
        let total_rows: Vec<u64> = vdevs.iter().map(|v| v.rows).collect();
        let extents = {
            let reader = Reader::new(&db);
            reader
                .prefix(b"a")
                .map(|pair| {
                    let (k, v) = pair?;
                    alloc::decode_extent(&k, &v)
                })
                .collect::<Result<Vec<Run>>>()?
        };
        let alloc = Arc::new(Allocator::new(total_rows, extents)?);
        let catalog = Catalog::load(&db)?;
        // A cache device that fails to open costs speed, not data: warn and go on.
        let l2 = config.cache_device.as_ref().and_then(|path| {
            L2Cache::open(path, None)
                .inspect_err(|e| tracing::warn!("cache device {} not used: {e}", path.display()))
                .ok()
        });
        let shared = Arc::new(Shared::new(
            db,
            vdevs,
            alloc,
            block_cache(options.cache_bytes),
            l2,
            last_txg,
        ));
        let (sender, receiver) = mpsc::sync_channel(1024);
        let committer_shared = Arc::clone(&shared);
        let committer = std::thread::Builder::new()
            .name("lcpfs-commit".into())
            .spawn(move || commit::run(committer_shared, receiver))
            .ctx(|| "starting the committer thread".into())?;
        Ok(Store {
            dir: dir.to_path_buf(),
            shared,
            config: Mutex::new(config),
            catalog: RwLock::new(catalog),
            next_txg: AtomicU64::new(last_txg + 1),
            next_coll: Mutex::new(next_coll),
            queue: Mutex::new(Some(sender)),
            committer: Mutex::new(Some(committer)),
            object_locks: (0..OBJECT_LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            dedup: Mutex::new(()),
            _lock: lock,
        })
    }

    /// The directory the store lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Why the store no longer commits anything, once a disk flush failed: the
    /// process that holds it should stop, and reopening it resumes from the last
    /// commit.
    pub fn suspended(&self) -> Option<String> {
        self.shared.suspended()
    }

    /// Hands a prepared transaction to the committer and waits until it is durable.
    pub(crate) fn submit(&self, prepared: Prepared) -> Result<u64> {
        let (reply, answer) = mpsc::sync_channel(1);
        let queue = self
            .queue
            .lock()
            .expect("queue lock poisoned")
            .clone()
            .ok_or_else(|| Error::Unavailable("store is closing".into()))?;
        if queue.send((prepared, reply)).is_err() {
            return Err(Error::Unavailable("the committer has stopped".into()));
        }
        answer
            .recv()
            .map_err(|_| Error::Unavailable("the committer stopped before answering".into()))?
    }

    /// Allocates the next transaction group number.
    pub(crate) fn next_txg(&self) -> u64 {
        self.next_txg.fetch_add(1, Ordering::AcqRel)
    }

    /// Locks the stripes of the named objects, in a fixed order so writers never deadlock.
    pub(crate) fn lock_objects<'n>(
        &self,
        coll: CollId,
        names: impl Iterator<Item = &'n [u8]>,
    ) -> Vec<std::sync::MutexGuard<'_, ()>> {
        let mut stripes: Vec<usize> = names
            .map(|name| {
                let mut hasher = blake3::Hasher::new();
                hasher.update(&coll.to_le_bytes());
                hasher.update(name);
                let hash = hasher.finalize();
                u64::from_le_bytes(hash.as_bytes()[..8].try_into().expect("8 bytes")) as usize
                    % OBJECT_LOCK_STRIPES
            })
            .collect();
        stripes.sort_unstable();
        stripes.dedup();
        stripes
            .into_iter()
            .map(|s| self.object_locks[s].lock().expect("object lock poisoned"))
            .collect()
    }

    /// The dedup lock, for a transaction on a collection with dedup on.
    pub(crate) fn dedup_lock(&self, dedup: bool) -> Option<std::sync::MutexGuard<'_, ()>> {
        dedup.then(|| self.dedup.lock().expect("dedup lock poisoned"))
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Some(l2) = &self.shared.l2 {
            l2.close();
        }
        self.queue.lock().expect("queue lock poisoned").take();
        if let Some(handle) = self
            .committer
            .lock()
            .expect("committer lock poisoned")
            .take()
        {
            let _ = handle.join();
        }
    }
}
