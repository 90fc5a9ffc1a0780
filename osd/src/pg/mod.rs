//! A placement group on this OSD: its copy in the engine store ([`store`] for the
//! log and markers, [`objects`] for reading objects, [`delivery`] for what a copy
//! receives to catch up), its log's entries ([`entry`]), what the OSD keeps of it
//! in memory ([`log`]), the pure
//! comparison of two copies' logs ([`catch_up`]), the split of a copy when its
//! pool's pg_num grows ([`split`]), and the [`Registry`] that gives every PG one
//! lock and every object its queue of client requests, and remembers the
//! requests their clients gave up.
//!
//! Everything above this module works on a PG through its lock: a request, a
//! peering or a recovery step holds it while it reads or changes the PG.

pub mod catch_up;
pub mod delivery;
pub mod entry;
pub mod log;
pub mod objects;
pub mod split;
pub mod store;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lcpfs_core::map::Pool;
use lcpfs_core::pg::PgId;
use lcpfs_engine::Store;

pub use catch_up::{CatchUp, catch_up};
pub use delivery::{Delivery, backfill_names, install};
pub use entry::Entry;
pub use log::{PgLog, UpSet};
pub use objects::{list, names, pull, read, read_shard, scrub_map, size, state};
pub use split::{split, split_for};
pub use store::{
    LOG_KEEP, RESERVED_XATTR_PREFIX, SIZE_XATTR, VERSION_XATTR, activated, apply, collection,
    ensure, entry_at, held, is_mutation, load, log_since, newest_logged, pending, prepare, remove,
    resolve, scrub_stamps, set_accepted, set_activated, set_scrub_stamps, shard,
};

use crate::error::{OsdError, Result};

/// A PG's lock and, once loaded, its in-memory state.
pub type PgSlot = Arc<tokio::sync::Mutex<Option<PgLog>>>;

/// A locked PG, as the holder of its lock sees it.
pub type PgGuard<'a> = tokio::sync::MutexGuard<'a, Option<PgLog>>;

/// The queue of one object's client requests at its PG's primary.
type Queue = Arc<tokio::sync::Mutex<()>>;

/// How long a request its client gave up stays refused: far longer than one
/// can spend on its way to the OSD.
const ABANDONED_KEEP: Duration = Duration::from_secs(600);

/// Every PG this OSD has touched since it started, each behind its own lock, and
/// the queues of the objects client requests are running or waiting for.
#[derive(Default)]
pub struct Registry {
    pgs: Mutex<HashMap<PgId, PgSlot>>,
    queues: Mutex<HashMap<(u32, Vec<u8>), Queue>>,
    /// By client, the requests it gave up, as its next requests said, and since
    /// when.
    abandoned: Mutex<HashMap<String, HashMap<u64, Instant>>>,
}

impl Registry {
    /// The lock of `pg` (made on first use).
    pub fn slot(&self, pg: PgId) -> PgSlot {
        self.pgs
            .lock()
            .expect("PG registry")
            .entry(pg)
            .or_default()
            .clone()
    }

    /// Records that `client` gave up its requests `tids` (see
    /// [`Self::abandoned`]); forgets those recorded long ago.
    pub fn abandon(&self, client: &str, tids: &[u64]) {
        if tids.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut abandoned = self.abandoned.lock().expect("abandoned requests");
        abandoned.retain(|_, requests| {
            requests.retain(|_, since| now.duration_since(*since) < ABANDONED_KEEP);
            !requests.is_empty()
        });
        let requests = abandoned.entry(client.to_owned()).or_default();
        requests.extend(tids.iter().map(|&tid| (tid, now)));
    }

    /// True when the client of a request gave it up before it took its turn:
    /// a later request of the client for the object said so, and may have run
    /// already, so this one must not run after it. (Asked of every request:
    /// looked up without copying the client's name.)
    pub fn abandoned(&self, client: &str, tid: u64) -> bool {
        self.abandoned
            .lock()
            .expect("abandoned requests")
            .get(client)
            .is_some_and(|requests| requests.contains_key(&tid))
    }

    /// Waits for the turn of a client request at object `name` of pool `pool`:
    /// after every request for it that reached this OSD before. Held for the
    /// whole request (its waits for a newer map and for the PG to become active
    /// included), so one client's requests for an object run in the order they
    /// came, even when the client gave one up and sent the next.
    pub async fn turn(&self, pool: u32, name: &[u8]) -> Turn<'_> {
        let key = (pool, name.to_vec());
        let queue = self
            .queues
            .lock()
            .expect("object queues")
            .entry(key.clone())
            .or_default()
            .clone();
        let guard = queue.clone().lock_owned().await;
        Turn {
            registry: self,
            key,
            queue,
            guard: Some(guard),
        }
    }
}

/// A client request's turn at its object (see [`Registry::turn`]); the object's
/// queue is forgotten when no request holds or waits for it.
pub struct Turn<'a> {
    registry: &'a Registry,
    key: (u32, Vec<u8>),
    queue: Queue,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.guard.take();
        let mut queues = self.registry.queues.lock().expect("object queues");
        // The registry's and this turn's: no request waits for the object.
        if Arc::strong_count(&self.queue) == 2 {
            queues.remove(&self.key);
        }
    }
}

/// Runs engine work on tokio's blocking pool, off the executor's threads.
pub async fn blocking<T, E>(work: impl FnOnce() -> Result<T, E> + Send + 'static) -> Result<T>
where
    T: Send + 'static,
    E: Into<OsdError> + Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| OsdError::Internal(format!("engine task failed: {error}")))?
        .map_err(Into::into)
}

/// The PG's in-memory state under its lock, loaded from the store (and the
/// collection created) on first use, or again after a change that did not finish.
pub async fn loaded<'a>(
    store: &Arc<Store>,
    guard: &'a mut PgGuard<'_>,
    pg: PgId,
    pool: &Pool,
) -> Result<&'a mut PgLog> {
    if guard.as_ref().is_none_or(|log| log.dirty) {
        let store = store.clone();
        let (compression, pg_num) = (pool.compression.clone(), pool.pg_num);
        let mut log = blocking(move || {
            ensure(&store, pg, compression.as_deref(), pg_num)?;
            load(&store, pg)
        })
        .await?;
        // A half-done change is not trusted: the PG peers again, but it still
        // refuses the primaries it refused before.
        log.accepted_interval = log
            .accepted_interval
            .max(guard.as_ref().map_or(0, |old| old.accepted_interval));
        **guard = Some(log);
    }
    Ok(guard.as_mut().expect("loaded above"))
}

/// A new store on one 64 MiB file disk in `dir`, for the PG layer's tests.
#[cfg(test)]
pub(crate) fn test_store(dir: &std::path::Path) -> Store {
    use lcpfs_engine::{CreateSpec, DiskSource, VdevKind};
    let disk = DiskSource::NewFile(dir.join("disk"), 64 << 20);
    Store::create(
        &dir.join("store"),
        &CreateSpec {
            vdevs: vec![(VdevKind::Single, vec![disk])],
            cache_device: None,
        },
    )
    .unwrap()
}

/// Bytes no compressor shrinks, to find them again on a test store's disk.
#[cfg(test)]
pub(crate) fn incompressible(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// Flips a byte of `data` where it lies on the disk of the (closed) test store in
/// `dir`, as bit rot would: a later read of it fails its checksum.
#[cfg(test)]
pub(crate) fn rot_on_disk(dir: &std::path::Path, data: &[u8]) {
    use std::os::unix::fs::FileExt;
    let image = std::fs::read(dir.join("disk")).unwrap();
    let disk = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("disk"))
        .unwrap();
    let at = image
        .windows(data.len())
        .position(|window| window == data)
        .expect("the data on the disk")
        + data.len() / 2;
    disk.write_all_at(&[image[at] ^ 0xff], at as u64).unwrap();
}
