//! The store: opening and creating, collections, snapshots and clones, reads, status.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use rocksdb::{BlockBasedOptions, DB, Options};
use serde::{Deserialize, Serialize};

use super::alloc::{Allocator, Run};
use super::blkptr::{BlockPtr, Compression};
use super::commit::{self, MetaOp, Prepared, Submission};
use super::dedup::DedupChanges;
use super::error::{Error, IoContext, Result};
use super::keys::{self, CollId, ObjectRecord};
use super::vdev::{self, DiskConfig, Vdev, VdevConfig, VdevKind};
use super::view::{Lineage, Reader};
use super::{Shared, counter_key};

/// Default block size of new objects: 1 MiB, as ZFS's recordsize for large files.
pub const DEFAULT_RECORD_SIZE: u32 = 1 << 20;
const MAX_RECORD_SIZE: u32 = 16 << 20;
/// Longest object name, in bytes.
pub const MAX_OBJECT_NAME: usize = 4096;
const KEY_CONFIG: &[u8] = b"gconfig";
const KEY_NEXT_COLL: &[u8] = b"gnext_collection";
const OBJECT_LOCK_STRIPES: usize = 1024;
/// Bytes beyond which a read streams from the disks past the cache (see
/// `Shared::stream_blocks`); shorter reads go through it.
const STREAM_BYTES: u64 = 8 << 20;

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

/// Per-collection settings.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct CollectionSettings {
    /// Block compression.
    pub compression: Compression,
    /// Whether identical blocks are stored once.
    pub dedup: bool,
    /// Block size of new objects.
    pub record_size: u32,
}

impl Default for CollectionSettings {
    fn default() -> Self {
        CollectionSettings {
            compression: Compression::Off,
            dedup: false,
            record_size: DEFAULT_RECORD_SIZE,
        }
    }
}

/// Where a clone came from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The origin collection's id.
    pub coll: CollId,
    /// The origin collection's name.
    pub collection: String,
    /// The snapshot cloned.
    pub snapshot: String,
    /// The snapshot's txg.
    pub txg: u64,
}

/// A snapshot of a collection.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Its name, unique within the collection.
    pub name: String,
    /// The txg it was taken at: it sees every transaction up to this one.
    pub txg: u64,
    /// When it was taken, nanoseconds since the Unix epoch.
    pub created_ns: u64,
    /// Collections cloned from it (it cannot be destroyed while they exist).
    pub clones: Vec<CollId>,
}

/// A collection: a named set of objects with its settings, snapshots and lineage.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct CollectionInfo {
    /// Internal id (keys are prefixed with it).
    pub id: CollId,
    /// Unique name.
    pub name: String,
    /// Settings.
    pub settings: CollectionSettings,
    /// For a clone, what it was cloned from.
    pub origin: Option<Origin>,
    /// Snapshots, oldest first.
    pub snapshots: Vec<SnapshotInfo>,
    /// When it was created, nanoseconds since the Unix epoch.
    pub created_ns: u64,
}

fn coll_info_key(id: CollId) -> Vec<u8> {
    keys::coll_prefix(b'c', id)
}

fn coll_name_key(name: &str) -> Vec<u8> {
    let mut key = vec![b'C'];
    key.extend_from_slice(name.as_bytes());
    key
}

pub(crate) struct Coll {
    pub info: RwLock<CollectionInfo>,
    /// Transactions hold it shared until committed; snapshot, rollback, clone and
    /// removal hold it exclusively, so they see no transaction half-way.
    gate: RwLock<()>,
    /// Set (under the exclusive gate) once the collection is removed, so that callers
    /// that looked it up before and waited on the gate do not act on it.
    removed: std::sync::atomic::AtomicBool,
}

impl Coll {
    fn new(info: CollectionInfo) -> Self {
        Coll {
            info: RwLock::new(info),
            gate: RwLock::new(()),
            removed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn check_present(&self) -> Result<()> {
        if self.removed.load(Ordering::Acquire) {
            return Err(Error::NotFound(format!(
                "collection {:?} (removed)",
                self.info().name
            )));
        }
        Ok(())
    }

    /// Enters the collection for a transaction.
    pub fn enter_shared(&self) -> Result<std::sync::RwLockReadGuard<'_, ()>> {
        let gate = self.gate.read().expect("gate poisoned");
        self.check_present()?;
        Ok(gate)
    }

    /// Enters the collection alone (snapshot, rollback, clone, removal, settings).
    pub fn enter_exclusive(&self) -> Result<std::sync::RwLockWriteGuard<'_, ()>> {
        let gate = self.gate.write().expect("gate poisoned");
        self.check_present()?;
        Ok(gate)
    }

    pub fn info(&self) -> CollectionInfo {
        self.info.read().expect("collection lock poisoned").clone()
    }
}

#[derive(Default)]
struct Catalog {
    by_name: BTreeMap<String, CollId>,
    by_id: HashMap<CollId, Arc<Coll>>,
}

/// An open LCPFS engine store.
pub struct Store {
    dir: PathBuf,
    pub(crate) shared: Arc<Shared>,
    config: Mutex<PoolConfig>,
    catalog: RwLock<Catalog>,
    next_txg: AtomicU64,
    next_coll: Mutex<CollId>,
    queue: Mutex<Option<SyncSender<Submission>>>,
    committer: Mutex<Option<JoinHandle<()>>>,
    object_locks: Vec<Mutex<()>>,
    /// Held by every transaction that may change the dedup table (see `dedup`).
    dedup: Mutex<()>,
    _lock: File,
}

/// Status of one disk.
#[derive(Serialize, Clone, Debug)]
pub struct DiskStatus {
    /// Path.
    pub path: PathBuf,
    /// Label id.
    pub guid: String,
    /// ONLINE or FAULTED.
    pub state: vdev::DiskState,
    /// Why it is faulted.
    pub problem: Option<String>,
    /// Failed reads.
    pub read_errors: u64,
    /// Failed writes.
    pub write_errors: u64,
    /// Checksum mismatches found.
    pub checksum_errors: u64,
}

/// Status of one top-level vdev.
#[derive(Serialize, Clone, Debug)]
pub struct VdevStatus {
    /// Position.
    pub index: u32,
    /// Layout.
    pub kind: VdevKind,
    /// ONLINE, DEGRADED or FAULTED.
    pub state: &'static str,
    /// Usable bytes.
    pub size_bytes: u64,
    /// Free usable bytes.
    pub free_bytes: u64,
    /// Disks.
    pub disks: Vec<DiskStatus>,
}

/// Status of the whole store, like `zpool status` and `zpool list`.
#[derive(Serialize, Clone, Debug)]
pub struct PoolStatus {
    /// Pool id.
    pub pool_id: String,
    /// ONLINE, DEGRADED or FAULTED.
    pub state: &'static str,
    /// Usable bytes.
    pub size_bytes: u64,
    /// Free usable bytes.
    pub free_bytes: u64,
    /// Number of collections.
    pub collections: usize,
    /// Last committed txg.
    pub txg: u64,
    /// Block cache counters.
    pub cache: super::arc::ArcStats,
    /// Cache device counters.
    pub cache_device: Option<super::l2arc::L2Stats>,
    /// Vdevs.
    pub vdevs: Vec<VdevStatus>,
}

/// One object in a listing.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct ObjectEntry {
    /// Name (lossy UTF-8 when the name is not UTF-8; see `name_bytes`).
    pub name: String,
    /// Raw name.
    #[serde(skip)]
    pub name_bytes: Vec<u8>,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: u64,
}

/// Listing options: a prefix, where to start, how many.
#[derive(Clone, Debug, Default)]
pub struct ListOptions {
    /// Only names starting with this.
    pub prefix: Vec<u8>,
    /// Only names sorting after this one.
    pub start_after: Option<Vec<u8>>,
    /// At most this many (0: no limit).
    pub limit: usize,
}

/// An object's metadata.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct ObjectStat {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: u64,
    /// Block size.
    pub block_size: u32,
    /// Blocks stored (holes excluded).
    pub blocks: u64,
    /// Bytes stored on disk for its blocks (after compression, before parity).
    pub stored_bytes: u64,
    /// Extended attributes.
    pub xattrs: BTreeMap<String, String>,
    /// Number of omap entries.
    pub omap_entries: u64,
}

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

fn new_id() -> u64 {
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

fn check_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 255 || name.contains(['@', '/', '\0']) {
        return Err(Error::Invalid(format!(
            "{what} name {name:?} must be 1-255 bytes without '@', '/' or NUL"
        )));
    }
    Ok(())
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
                super::l2arc::L2Cache::open(path, Some(*size))?.close();
                Some(path.clone())
            }
            Some(DiskSource::Existing(path)) => {
                super::l2arc::L2Cache::open(path, None)?.close();
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
        batch.put(super::KEY_LAST_TXG, 0u64.to_le_bytes());
        batch.put(KEY_NEXT_COLL, 1u64.to_le_bytes());
        for run in Allocator::fresh_extents(&rows) {
            batch.put(
                super::alloc::extent_key(run.vdev, run.row),
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
        let last_txg = read_u64(super::KEY_LAST_TXG)?;
        let next_coll = read_u64(KEY_NEXT_COLL)?;
        let total_rows: Vec<u64> = vdevs.iter().map(|v| v.rows).collect();
        let extents = {
            let reader = Reader::new(&db);
            reader
                .prefix(b"a")
                .map(|pair| {
                    let (k, v) = pair?;
                    super::alloc::decode_extent(&k, &v)
                })
                .collect::<Result<Vec<Run>>>()?
        };
        let alloc = Arc::new(Allocator::new(total_rows, extents)?);
        let mut catalog = Catalog::default();
        {
            let reader = Reader::new(&db);
            for pair in reader.prefix(b"c") {
                let (_, value) = pair?;
                let info: CollectionInfo = serde_json::from_slice(&value)
                    .map_err(|e| Error::Corrupt(format!("collection record: {e}")))?;
                catalog.by_name.insert(info.name.clone(), info.id);
                catalog.by_id.insert(info.id, Arc::new(Coll::new(info)));
            }
        }
        // A cache device that fails to open costs speed, not data: warn and go on.
        let l2 = config.cache_device.as_ref().and_then(|path| {
            super::l2arc::L2Cache::open(path, None)
                .inspect_err(|e| tracing::warn!("cache device {} not used: {e}", path.display()))
                .ok()
        });
        let shared = Arc::new(Shared {
            l2,
            db,
            vdevs,
            alloc,
            cache: super::arc::block_cache(options.cache_bytes),
            transactions: super::InFlight::default(),
            last_txg: AtomicU64::new(last_txg),
        });
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

    pub(crate) fn coll(&self, name: &str) -> Result<Arc<Coll>> {
        let catalog = self.catalog.read().expect("catalog lock poisoned");
        catalog
            .by_name
            .get(name)
            .and_then(|id| catalog.by_id.get(id))
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("collection {name:?}")))
    }

    fn coll_by_id(&self, id: CollId) -> Result<Arc<Coll>> {
        self.catalog
            .read()
            .expect("catalog lock poisoned")
            .by_id
            .get(&id)
            .cloned()
            .ok_or_else(|| Error::Corrupt(format!("collection id {id} is referenced but missing")))
    }

    /// The chain of versions a read of `info` at `at` goes through.
    pub(crate) fn lineage(&self, info: &CollectionInfo, at: Option<u64>) -> Result<Lineage> {
        let origin = match &info.origin {
            None => None,
            Some(origin) => {
                let parent = self.coll_by_id(origin.coll)?.info();
                Some(Box::new(self.lineage(&parent, Some(origin.txg))?))
            }
        };
        Ok(Lineage {
            coll: info.id,
            at,
            origin,
        })
    }

    /// Creates a collection.
    pub fn create_collection(&self, name: &str, settings: CollectionSettings) -> Result<()> {
        check_name("collection", name)?;
        if settings.record_size < vdev::SECTOR as u32
            || settings.record_size > MAX_RECORD_SIZE
            || !settings.record_size.is_power_of_two()
        {
            return Err(Error::Invalid(format!(
                "record size {} must be a power of two between 4 KiB and 16 MiB",
                settings.record_size
            )));
        }
        self.add_collection(name, settings, None)
    }

    fn add_collection(
        &self,
        name: &str,
        settings: CollectionSettings,
        origin: Option<Origin>,
    ) -> Result<()> {
        let mut catalog = self.catalog.write().expect("catalog lock poisoned");
        if catalog.by_name.contains_key(name) {
            return Err(Error::AlreadyExists(format!("collection {name:?}")));
        }
        let mut next = self
            .next_coll
            .lock()
            .expect("collection counter lock poisoned");
        let id = *next;
        let info = CollectionInfo {
            id,
            name: name.to_string(),
            settings,
            origin: origin.clone(),
            snapshots: Vec::new(),
            created_ns: now_ns(),
        };
        let mut ops = vec![
            MetaOp::Put(
                coll_info_key(id),
                serde_json::to_vec(&info).expect("info serializes"),
            ),
            MetaOp::Put(coll_name_key(name), id.to_be_bytes().to_vec()),
            MetaOp::Put(KEY_NEXT_COLL.to_vec(), (id + 1).to_le_bytes().to_vec()),
        ];
        let parent = match &origin {
            Some(origin) => {
                let parent = catalog.by_id.get(&origin.coll).cloned().ok_or_else(|| {
                    Error::NotFound(format!("collection {:?}", origin.collection))
                })?;
                let mut parent_info = parent.info();
                let snapshot = parent_info
                    .snapshots
                    .iter_mut()
                    .find(|s| s.name == origin.snapshot)
                    .ok_or_else(|| {
                        Error::NotFound(format!(
                            "snapshot {}@{}",
                            origin.collection, origin.snapshot
                        ))
                    })?;
                snapshot.clones.push(id);
                ops.push(MetaOp::Put(
                    coll_info_key(parent_info.id),
                    serde_json::to_vec(&parent_info).expect("info serializes"),
                ));
                Some((parent, parent_info))
            }
            None => None,
        };
        let txg = self.next_txg();
        self.submit(Prepared {
            txg,
            ops,
            ..Default::default()
        })?;
        *next = id + 1;
        if let Some((parent, parent_info)) = parent {
            *parent.info.write().expect("collection lock poisoned") = parent_info;
        }
        catalog.by_name.insert(name.to_string(), id);
        catalog.by_id.insert(id, Arc::new(Coll::new(info)));
        Ok(())
    }

    /// Every collection, by name.
    pub fn collections(&self) -> Vec<CollectionInfo> {
        let catalog = self.catalog.read().expect("catalog lock poisoned");
        catalog
            .by_name
            .values()
            .filter_map(|id| catalog.by_id.get(id))
            .map(|c| c.info())
            .collect()
    }

    /// One collection's settings, snapshots and lineage.
    pub fn collection(&self, name: &str) -> Result<CollectionInfo> {
        Ok(self.coll(name)?.info())
    }

    /// Changes a collection's compression; it applies to blocks written from now on.
    /// (Dedup and record size are fixed when a collection is created.)
    pub fn set_compression(&self, name: &str, compression: Compression) -> Result<()> {
        let coll = self.coll(name)?;
        let _gate = coll.enter_exclusive()?;
        let mut info = coll.info();
        info.settings.compression = compression;
        self.commit_info(&coll, info, Vec::new(), Vec::new())
    }

    /// Commits metadata changes together with a collection's new record, then makes the
    /// new record the one in memory.
    fn commit_info(
        &self,
        coll: &Coll,
        info: CollectionInfo,
        mut ops: Vec<MetaOp>,
        freed: Vec<Run>,
    ) -> Result<()> {
        ops.push(MetaOp::Put(
            coll_info_key(info.id),
            serde_json::to_vec(&info).expect("info serializes"),
        ));
        let txg = self.next_txg();
        self.submit(Prepared {
            txg,
            ops,
            freed,
            ..Default::default()
        })?;
        *coll.info.write().expect("collection lock poisoned") = info;
        Ok(())
    }

    /// Removes a collection, its objects and snapshots, freeing their space. Refused
    /// while a clone depends on one of its snapshots.
    pub fn remove_collection(&self, name: &str) -> Result<()> {
        let coll = self.coll(name)?;
        let _gate = coll.enter_exclusive()?;
        let info = coll.info();
        if let Some(s) = info.snapshots.iter().find(|s| !s.clones.is_empty()) {
            return Err(Error::Invalid(format!(
                "snapshot {name}@{} has clones; remove them first",
                s.name
            )));
        }
        let _dedup = self.dedup_lock(info.settings.dedup);
        let mut freed = Vec::new();
        let mut dedup = DedupChanges::default();
        {
            let reader = Reader::new(&self.shared.db);
            for_each_own_block(&reader, info.id, |bp| {
                freed.extend(dedup.release(&reader, &bp)?);
                Ok(())
            })?;
        }
        let mut ops = dedup.into_ops();
        for tag in [b'H', b'O', b'D'] {
            let prefix = keys::coll_prefix(tag, info.id);
            ops.push(MetaOp::DeleteRange(
                prefix.clone(),
                keys::prefix_end(&prefix),
            ));
        }
        ops.push(MetaOp::Delete(coll_info_key(info.id)));
        ops.push(MetaOp::Delete(coll_name_key(name)));
        // The origin's record changes too: hold its gate so no snapshot, clone or
        // other removal rewrites that record at the same time (child, then parent:
        // no path takes them the other way round).
        let parent_coll = match &info.origin {
            Some(origin) => Some(self.coll_by_id(origin.coll)?),
            None => None,
        };
        let _parent_gate = parent_coll
            .as_ref()
            .map(|p| p.enter_exclusive())
            .transpose()?;
        let parent = match parent_coll.as_ref() {
            Some(parent) => {
                let mut parent_info = parent.info();
                for snapshot in &mut parent_info.snapshots {
                    snapshot.clones.retain(|c| *c != info.id);
                }
                ops.push(MetaOp::Put(
                    coll_info_key(parent_info.id),
                    serde_json::to_vec(&parent_info).expect("info serializes"),
                ));
                Some((parent, parent_info))
            }
            None => None,
        };
        let txg = self.next_txg();
        self.submit(Prepared {
            txg,
            ops,
            freed,
            ..Default::default()
        })?;
        if let Some((parent, parent_info)) = parent {
            *parent.info.write().expect("collection lock poisoned") = parent_info;
        }
        coll.removed.store(true, Ordering::Release);
        let mut catalog = self.catalog.write().expect("catalog lock poisoned");
        catalog.by_name.remove(name);
        catalog.by_id.remove(&info.id);
        Ok(())
    }

    /// Takes a snapshot: instant, no data copied. It sees every transaction committed on
    /// the collection before it.
    pub fn snapshot(&self, coll_name: &str, snapshot: &str) -> Result<SnapshotInfo> {
        check_name("snapshot", snapshot)?;
        let coll = self.coll(coll_name)?;
        let _gate = coll.enter_exclusive()?;
        let mut info = coll.info();
        if info.snapshots.iter().any(|s| s.name == snapshot) {
            return Err(Error::AlreadyExists(format!(
                "snapshot {coll_name}@{snapshot}"
            )));
        }
        let txg = self.next_txg();
        let snap = SnapshotInfo {
            name: snapshot.to_string(),
            txg,
            created_ns: now_ns(),
            clones: Vec::new(),
        };
        info.snapshots.push(snap.clone());
        self.submit(Prepared {
            txg,
            ops: vec![MetaOp::Put(
                coll_info_key(info.id),
                serde_json::to_vec(&info).expect("info serializes"),
            )],
            ..Default::default()
        })?;
        *coll.info.write().expect("collection lock poisoned") = info;
        Ok(snap)
    }

    /// Destroys a snapshot, freeing the blocks only it referenced. Refused while it has
    /// clones.
    pub fn destroy_snapshot(&self, coll_name: &str, snapshot: &str) -> Result<()> {
        let coll = self.coll(coll_name)?;
        let _gate = coll.enter_exclusive()?;
        let mut info = coll.info();
        let at = info
            .snapshots
            .iter()
            .position(|s| s.name == snapshot)
            .ok_or_else(|| Error::NotFound(format!("snapshot {coll_name}@{snapshot}")))?;
        if !info.snapshots[at].clones.is_empty() {
            return Err(Error::Invalid(format!(
                "snapshot {coll_name}@{snapshot} has clones; remove them first"
            )));
        }
        let _dedup = self.dedup_lock(info.settings.dedup);
        let (ops, freed) = self.release_snapshot(&info, at)?;
        info.snapshots.remove(at);
        self.commit_info(&coll, info, ops, freed)
    }

    /// The metadata changes and frees that destroying snapshot `at` of `info` needs: the
    /// older versions that died after it (before the next snapshot) and were born after
    /// the previous one were seen by it alone.
    fn release_snapshot(
        &self,
        info: &CollectionInfo,
        at: usize,
    ) -> Result<(Vec<MetaOp>, Vec<Run>)> {
        let s = info.snapshots[at].txg;
        let previous = if at > 0 {
            info.snapshots[at - 1].txg
        } else {
            0
        };
        let next = info.snapshots.get(at + 1).map_or(u64::MAX, |n| n.txg);
        let (ops, freed, _) = self.unique_versions(info.id, s, previous, next, true)?;
        Ok((ops, freed))
    }

    /// Versions that died in `(s, next]` and were born after `previous`: those only the
    /// snapshot at `s` sees. Returns the deletions (when `collect_ops`), the runs to free,
    /// and their stored bytes.
    fn unique_versions(
        &self,
        coll: CollId,
        s: u64,
        previous: u64,
        next: u64,
        collect_ops: bool,
    ) -> Result<(Vec<MetaOp>, Vec<Run>, u64)> {
        let reader = Reader::new(&self.shared.db);
        let mut start = keys::coll_prefix(b'D', coll);
        start.extend_from_slice(&(s + 1).to_be_bytes());
        let mut end = keys::coll_prefix(b'D', coll);
        match next.checked_add(1) {
            Some(after) => end.extend_from_slice(&after.to_be_bytes()),
            None => end = keys::prefix_end(&end),
        }
        let mut ops = Vec::new();
        let mut freed = Vec::new();
        let mut dedup = DedupChanges::default();
        let mut bytes = 0;
        for pair in reader.range(&start, &end) {
            let (key, _) = pair?;
            let (_, birth, item) = keys::split_dead_key(&key)?;
            if birth <= previous {
                continue;
            }
            let old = keys::old_key(coll, item, birth);
            if item.first() == Some(&keys::KIND_BLOCK)
                && let Some(value) = reader.raw_get(&old)?
                && let (_, Some(bp)) = keys::decode_versioned(&value)?
            {
                let bp = BlockPtr::decode(&bp)?;
                bytes += bp.psize as u64;
                freed.extend(dedup.release(&reader, &bp)?);
            }
            if collect_ops {
                ops.push(MetaOp::Delete(old));
                ops.push(MetaOp::Delete(key));
            }
        }
        ops.extend(dedup.into_ops());
        Ok((ops, freed, bytes))
    }

    /// Snapshots of a collection with their space: `referenced` bytes they see and
    /// `unique` bytes that destroying them would free.
    pub fn snapshots(&self, coll_name: &str) -> Result<Vec<(SnapshotInfo, u64, u64)>> {
        let info = self.coll(coll_name)?.info();
        let mut out = Vec::new();
        for (at, snap) in info.snapshots.iter().enumerate() {
            let previous = if at > 0 {
                info.snapshots[at - 1].txg
            } else {
                0
            };
            let next = info.snapshots.get(at + 1).map_or(u64::MAX, |n| n.txg);
            let (_, _, unique) = self.unique_versions(info.id, snap.txg, previous, next, false)?;
            let referenced = self.referenced_bytes(&self.lineage(&info, Some(snap.txg))?)?;
            out.push((snap.clone(), referenced, unique));
        }
        Ok(out)
    }

    fn referenced_bytes(&self, lineage: &Lineage) -> Result<u64> {
        let reader = Reader::new(&self.shared.db);
        let mut total = 0;
        for pair in reader.scan(lineage, &[keys::KIND_BLOCK], None) {
            let (_, value) = pair?;
            total += BlockPtr::decode(&value)?.psize as u64;
        }
        Ok(total)
    }

    /// Rolls a collection back to a snapshot. Newer snapshots must be destroyed first,
    /// or pass `destroy_newer` to destroy them (refused if they have clones).
    pub fn rollback(&self, coll_name: &str, snapshot: &str, destroy_newer: bool) -> Result<()> {
        let coll = self.coll(coll_name)?;
        let _gate = coll.enter_exclusive()?;
        let mut info = coll.info();
        let at = info
            .snapshots
            .iter()
            .position(|s| s.name == snapshot)
            .ok_or_else(|| Error::NotFound(format!("snapshot {coll_name}@{snapshot}")))?;
        let newer: Vec<String> = info.snapshots[at + 1..]
            .iter()
            .map(|s| s.name.clone())
            .collect();
        if !newer.is_empty() && !destroy_newer {
            return Err(Error::Invalid(format!(
                "snapshots newer than {snapshot} exist ({}); destroy them or roll back with destroy_newer",
                newer.join(", ")
            )));
        }
        if let Some(s) = info.snapshots[at + 1..]
            .iter()
            .find(|s| !s.clones.is_empty())
        {
            return Err(Error::Invalid(format!(
                "snapshot {coll_name}@{} has clones",
                s.name
            )));
        }
        // Everything born after the snapshot goes (its blocks are freed); every older
        // version that was alive at the snapshot and died since comes back to the head.
        info.snapshots.truncate(at + 1);
        let s = info.snapshots[at].txg;
        let _dedup = self.dedup_lock(info.settings.dedup);
        let mut ops = Vec::new();
        let mut freed = Vec::new();
        let mut dedup = DedupChanges::default();
        {
            let reader = Reader::new(&self.shared.db);
            let head_prefix = keys::coll_prefix(b'H', info.id);
            for pair in reader.prefix(&head_prefix) {
                let (key, value) = pair?;
                let version = keys::Version::decode(&value)?;
                if version.birth <= s {
                    continue;
                }
                if key.get(head_prefix.len()) == Some(&keys::KIND_BLOCK)
                    && let Some(bp) = &version.value
                {
                    freed.extend(dedup.release(&reader, &BlockPtr::decode(bp)?)?);
                }
                ops.push(MetaOp::Delete(key));
            }
            let mut start = keys::coll_prefix(b'D', info.id);
            start.extend_from_slice(&(s + 1).to_be_bytes());
            let end = keys::prefix_end(&keys::coll_prefix(b'D', info.id));
            for pair in reader.range(&start, &end) {
                let (key, _) = pair?;
                let (_, birth, item) = keys::split_dead_key(&key)?;
                let old = keys::old_key(info.id, item, birth);
                let Some(value) = reader.raw_get(&old)? else {
                    return Err(Error::Corrupt("death index names a missing version".into()));
                };
                let (_, value) = keys::decode_versioned(&value)?;
                if birth <= s {
                    ops.push(MetaOp::Put(
                        keys::head_key(info.id, item),
                        keys::Version { birth, value }.encode(),
                    ));
                } else if item.first() == Some(&keys::KIND_BLOCK)
                    && let Some(bp) = &value
                {
                    freed.extend(dedup.release(&reader, &BlockPtr::decode(bp)?)?);
                }
                ops.push(MetaOp::Delete(old));
                ops.push(MetaOp::Delete(key));
            }
        }
        ops.extend(dedup.into_ops());
        self.commit_info(&coll, info, ops, freed)
    }

    /// Clones a snapshot into a new writable collection: instant, sharing every block.
    pub fn clone_snapshot(&self, coll_name: &str, snapshot: &str, new_name: &str) -> Result<()> {
        check_name("collection", new_name)?;
        let coll = self.coll(coll_name)?;
        let _gate = coll.enter_exclusive()?;
        let info = coll.info();
        let snap = info
            .snapshots
            .iter()
            .find(|s| s.name == snapshot)
            .ok_or_else(|| Error::NotFound(format!("snapshot {coll_name}@{snapshot}")))?;
        let origin = Origin {
            coll: info.id,
            collection: info.name.clone(),
            snapshot: snap.name.clone(),
            txg: snap.txg,
        };
        self.add_collection(new_name, info.settings, Some(origin))
    }

    /// A read view of the live collection.
    pub fn head(&self, coll_name: &str) -> Result<View<'_>> {
        let info = self.coll(coll_name)?.info();
        Ok(View {
            store: self,
            lineage: self.lineage(&info, None)?,
        })
    }

    /// A read view of a snapshot.
    pub fn at_snapshot(&self, coll_name: &str, snapshot: &str) -> Result<View<'_>> {
        let info = self.coll(coll_name)?.info();
        let snap = info
            .snapshots
            .iter()
            .find(|s| s.name == snapshot)
            .ok_or_else(|| Error::NotFound(format!("snapshot {coll_name}@{snapshot}")))?;
        Ok(View {
            store: self,
            lineage: self.lineage(&info, Some(snap.txg))?,
        })
    }

    /// Pool layout, disk health and error counters, space.
    pub fn status(&self) -> PoolStatus {
        let free_rows = self.shared.alloc.durable_free_rows();
        let vdevs: Vec<VdevStatus> = self
            .shared
            .vdevs
            .iter()
            .map(|v| {
                let bytes_per_row = v.usable_bytes() / v.rows.max(1);
                VdevStatus {
                    index: v.index,
                    kind: v.kind,
                    state: v.state(),
                    size_bytes: v.usable_bytes(),
                    free_bytes: free_rows[v.index as usize] * bytes_per_row,
                    disks: v
                        .disks
                        .iter()
                        .map(|d| DiskStatus {
                            path: d.path(),
                            guid: format!("{:016x}", d.guid),
                            state: d.state(),
                            problem: d.problem(),
                            read_errors: d.counters.read_errors.load(Ordering::Relaxed),
                            write_errors: d.counters.write_errors.load(Ordering::Relaxed),
                            checksum_errors: d.counters.checksum_errors.load(Ordering::Relaxed),
                        })
                        .collect(),
                }
            })
            .collect();
        let state = if vdevs.iter().any(|v| v.state == "FAULTED") {
            "FAULTED"
        } else if vdevs.iter().any(|v| v.state == "DEGRADED") {
            "DEGRADED"
        } else {
            "ONLINE"
        };
        PoolStatus {
            pool_id: self
                .config
                .lock()
                .expect("config lock poisoned")
                .pool_id
                .clone(),
            state,
            size_bytes: vdevs.iter().map(|v| v.size_bytes).sum(),
            free_bytes: vdevs.iter().map(|v| v.free_bytes).sum(),
            collections: self
                .catalog
                .read()
                .expect("catalog lock poisoned")
                .by_name
                .len(),
            txg: self.shared.last_txg(),
            cache: self.shared.cache.stats(),
            cache_device: self.shared.l2.as_ref().map(|l2| l2.stats()),
            vdevs,
        }
    }

    /// Replaces a disk (by path or guid) with a new one and resilvers it: every block of
    /// its vdev is rebuilt onto the new disk from the others. `create_size` makes a new
    /// file disk of that size; otherwise `new_path` must exist.
    pub fn replace_disk(
        &self,
        old: &str,
        new_path: &Path,
        create_size: Option<u64>,
    ) -> Result<super::scrub::ScrubReport> {
        let mut config = self.config.lock().expect("config lock poisoned").clone();
        let (v, child) = config
            .vdevs
            .iter()
            .enumerate()
            .find_map(|(v, vd)| {
                vd.disks
                    .iter()
                    .position(|d| d.path.as_os_str() == old || format!("{:016x}", d.guid) == old)
                    .map(|c| (v, c))
            })
            .ok_or_else(|| Error::NotFound(format!("disk {old}")))?;
        let vdev = &self.shared.vdevs[v];
        if vdev.kind.redundancy(vdev.disks.len()) == 0 {
            return Err(Error::Invalid(format!(
                "disk {old} is in a {} vdev, which has no redundancy to rebuild it from",
                vdev.kind.name()
            )));
        }
        let old_config = config.vdevs[v].disks[child].clone();
        let size = create_size.unwrap_or(old_config.size);
        let identity = vdev::DiskIdentity {
            pool_id: &config.pool_id,
            vdev: v as u32,
            child: child as u32,
            kind: vdev.kind,
            width: vdev.disks.len() as u32,
            guid: new_id(),
        };
        let new_config = vdev::format_disk(new_path, create_size.map(|_| size), &identity)?;
        if new_config.size < old_config.size {
            return Err(Error::Invalid(format!(
                "the new disk has {} bytes; it needs at least {}",
                new_config.size, old_config.size
            )));
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(new_path)
            .ctx(|| format!("opening {}", new_path.display()))?;
        // The old guid stays so that counters and allocations keep their meaning; the
        // labels carry the new one and the configuration follows.
        config.vdevs[v].disks[child] = DiskConfig {
            size: old_config.size,
            ..new_config.clone()
        };
        let disk = &vdev.disks[child];
        disk.attach(new_path.to_path_buf(), file);
        // Blocks written from now on reach the new disk; those of transactions already
        // under way may have skipped it: once they have ended, the walk finds them.
        self.shared.transactions.drain();
        let report = super::scrub::resilver(self, v, child)?;
        let txg = self.next_txg();
        self.submit(Prepared {
            txg,
            ops: vec![MetaOp::Put(
                KEY_CONFIG.to_vec(),
                serde_json::to_vec(&config).expect("config serializes"),
            )],
            ..Default::default()
        })?;
        *self.config.lock().expect("config lock poisoned") = config;
        Ok(report)
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

/// Calls `f` for every block pointer a collection itself holds (head and older versions).
pub(crate) fn for_each_own_block(
    reader: &Reader<'_>,
    coll: CollId,
    mut f: impl FnMut(BlockPtr) -> Result<()>,
) -> Result<()> {
    let head = keys::coll_prefix(b'H', coll);
    let mut block_heads = head.clone();
    block_heads.push(keys::KIND_BLOCK);
    for pair in reader.prefix(&block_heads) {
        let (_, value) = pair?;
        if let Some(bp) = keys::Version::decode(&value)?.value {
            f(BlockPtr::decode(&bp)?)?;
        }
    }
    let mut block_olds = keys::coll_prefix(b'O', coll);
    block_olds.push(keys::KIND_BLOCK);
    for pair in reader.prefix(&block_olds) {
        let (_, value) = pair?;
        if let (_, Some(bp)) = keys::decode_versioned(&value)? {
            f(BlockPtr::decode(&bp)?)?;
        }
    }
    Ok(())
}

/// A read-only view of a collection's head or of one of its snapshots.
pub struct View<'a> {
    pub(crate) store: &'a Store,
    pub(crate) lineage: Lineage,
}

impl View<'_> {
    /// A consistent read of the metadata in which this view still exists: a view of a
    /// snapshot that has since been destroyed (or rolled past) reads nothing.
    fn reader(&self) -> Result<Reader<'_>> {
        let reader = Reader::new(&self.store.shared.db);
        let record = reader
            .raw_get(&coll_info_key(self.lineage.coll))?
            .ok_or_else(|| Error::NotFound("collection (removed)".into()))?;
        if let Some(at) = self.lineage.at {
            let info: CollectionInfo = serde_json::from_slice(&record)
                .map_err(|e| Error::Corrupt(format!("collection record: {e}")))?;
            if !info.snapshots.iter().any(|s| s.txg == at) {
                return Err(Error::NotFound(format!(
                    "snapshot of {} (destroyed)",
                    info.name
                )));
            }
        }
        Ok(reader)
    }

    fn record(&self, reader: &Reader<'_>, name: &[u8]) -> Result<ObjectRecord> {
        let bytes = reader
            .get(&self.lineage, &keys::object_item(name))?
            .ok_or_else(|| {
                Error::NotFound(format!("object {:?}", String::from_utf8_lossy(name)))
            })?;
        ObjectRecord::decode(&bytes)
    }

    /// Whether an object exists.
    pub fn exists(&self, name: &[u8]) -> Result<bool> {
        let reader = self.reader()?;
        Ok(reader
            .get(&self.lineage, &keys::object_item(name))?
            .is_some())
    }

    /// An object's size, times, block counts, xattrs.
    pub fn stat(&self, name: &[u8]) -> Result<ObjectStat> {
        let reader = self.reader()?;
        let record = self.record(&reader, name)?;
        let mut blocks = 0;
        let mut stored_bytes = 0;
        for pair in reader.scan(
            &self.lineage,
            &keys::sub_prefix(keys::KIND_BLOCK, name),
            None,
        ) {
            let (_, value) = pair?;
            blocks += 1;
            stored_bytes += BlockPtr::decode(&value)?.psize as u64;
        }
        let xattrs = self
            .xattrs_with(&reader, name)?
            .into_iter()
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(&k).into_owned(),
                    String::from_utf8_lossy(&v).into_owned(),
                )
            })
            .collect();
        let omap_entries = reader
            .scan(
                &self.lineage,
                &keys::sub_prefix(keys::KIND_OMAP, name),
                None,
            )
            .count() as u64;
        Ok(ObjectStat {
            size: record.size,
            mtime_ns: record.mtime_ns,
            block_size: record.block_size,
            blocks,
            stored_bytes,
            xattrs,
            omap_entries,
        })
    }

    /// Reads `len` bytes at `offset` (short at the end of the object).
    pub fn read(&self, name: &[u8], offset: u64, len: u64) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.read_to(name, offset, len, &mut out)?;
        Ok(out)
    }

    /// Streams `len` bytes at `offset` into `sink`; returns the bytes written. A read of
    /// up to [`STREAM_BYTES`] fetches its blocks at once through the cache, verified on
    /// every core; a longer one streams them from the disks (see
    /// `Shared::stream_blocks`).
    pub fn read_to(
        &self,
        name: &[u8],
        offset: u64,
        len: u64,
        sink: &mut dyn std::io::Write,
    ) -> Result<u64> {
        let _pin = self.store.shared.alloc.pin();
        let reader = self.reader()?;
        let record = self.record(&reader, name)?;
        let end = offset.saturating_add(len).min(record.size);
        if offset >= end {
            return Ok(0);
        }
        let bs = record.block_size as u64;
        let (first, last) = (offset / bs, (end - 1) / bs);
        let pointer = |index: u64| -> Result<Option<BlockPtr>> {
            reader
                .get(&self.lineage, &keys::block_item(name, index))?
                .map(|bp| BlockPtr::decode(&bp))
                .transpose()
        };
        let mut out = Emitter {
            sink,
            position: offset,
            end,
            block_size: bs,
        };
        let shared = &self.store.shared;
        if end - offset <= STREAM_BYTES {
            let pointers = (first..=last)
                .map(|index| Ok((index, pointer(index)?)))
                .collect::<Result<Vec<_>>>()?;
            let blocks = super::parallel_map(pointers, |(index, bp)| {
                Ok::<_, Error>((index, bp.map(|bp| shared.read_block(&bp)).transpose()?))
            });
            for block in blocks {
                let (index, data) = block?;
                out.emit(index, data.as_deref().map_or(&[], Vec::as_slice))?;
            }
        } else {
            shared.stream_blocks(first..=last, pointer, |index, data| out.emit(index, data))?;
        }
        Ok(end - offset)
    }

    /// Lists objects, sorted by name.
    pub fn list(&self, options: &ListOptions) -> Result<Vec<ObjectEntry>> {
        let reader = self.reader()?;
        let prefix = keys::object_item(&options.prefix);
        let after = options.start_after.as_ref().map(|a| keys::object_item(a));
        let mut out = Vec::new();
        for pair in reader.scan(&self.lineage, &prefix, after.as_deref()) {
            let (item, value) = pair?;
            let record = ObjectRecord::decode(&value)?;
            let name_bytes = item[1..].to_vec();
            out.push(ObjectEntry {
                name: String::from_utf8_lossy(&name_bytes).into_owned(),
                name_bytes,
                size: record.size,
                mtime_ns: record.mtime_ns,
            });
            if options.limit > 0 && out.len() == options.limit {
                break;
            }
        }
        Ok(out)
    }

    fn xattrs_with(&self, reader: &Reader<'_>, name: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let prefix = keys::sub_prefix(keys::KIND_XATTR, name);
        reader
            .scan(&self.lineage, &prefix, None)
            .map(|pair| pair.map(|(item, value)| (item[prefix.len()..].to_vec(), value)))
            .collect()
    }

    /// All xattrs of an object.
    pub fn xattrs(&self, name: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let reader = self.reader()?;
        self.record(&reader, name)?;
        self.xattrs_with(&reader, name)
    }

    /// One xattr.
    pub fn xattr(&self, name: &[u8], key: &[u8]) -> Result<Option<Vec<u8>>> {
        let reader = self.reader()?;
        self.record(&reader, name)?;
        reader.get(
            &self.lineage,
            &keys::keyed_item(keys::KIND_XATTR, name, key),
        )
    }

    /// One omap value.
    pub fn omap_get(&self, name: &[u8], key: &[u8]) -> Result<Option<Vec<u8>>> {
        let reader = self.reader()?;
        self.record(&reader, name)?;
        reader.get(&self.lineage, &keys::keyed_item(keys::KIND_OMAP, name, key))
    }

    /// Omap entries with keys after `start_after` (all when `None`) and before `end`
    /// (unbounded when `None`), at most `limit` (0: no limit).
    pub fn omap_range(
        &self,
        name: &[u8],
        start_after: Option<&[u8]>,
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let reader = self.reader()?;
        self.record(&reader, name)?;
        let prefix = keys::sub_prefix(keys::KIND_OMAP, name);
        let after = start_after.map(|a| keys::keyed_item(keys::KIND_OMAP, name, a));
        let mut out = Vec::new();
        for pair in reader.scan(&self.lineage, &prefix, after.as_deref()) {
            let (item, value) = pair?;
            let key = item[prefix.len()..].to_vec();
            if end.is_some_and(|end| key.as_slice() >= end) {
                break;
            }
            out.push((key, value));
            if limit > 0 && out.len() == limit {
                break;
            }
        }
        Ok(out)
    }
}

/// Writes an object's blocks to a sink in order, clipped to the range read: a block
/// shorter than the record size, or absent, reads as zeros up to where the range ends.
struct Emitter<'w> {
    sink: &'w mut dyn std::io::Write,
    position: u64,
    end: u64,
    block_size: u64,
}

impl Emitter<'_> {
    fn emit(&mut self, index: u64, data: &[u8]) -> Result<()> {
        let block_start = index * self.block_size;
        let block_end = (block_start + self.block_size).min(self.end);
        let from = (self.position - block_start) as usize;
        let to = (block_end - block_start) as usize;
        let have = data.len().min(to);
        if from < have {
            self.sink
                .write_all(&data[from..have])
                .ctx(|| "writing object data".into())?;
        }
        let zeros = to - have.max(from);
        if zeros > 0 {
            self.sink
                .write_all(&vec![0u8; zeros])
                .ctx(|| "writing object data".into())?;
        }
        self.position = block_end;
        Ok(())
    }
}
