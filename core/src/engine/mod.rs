//! The LCPFS engine: a copy-on-write, self-healing object store on one node's disks.
//!
//! Layers, bottom up, after ZFS (SPA → DMU) with BlueStore's lesson that metadata
//! belongs in a proven key-value store:
//! - [`vdev`]: disks grouped into top-level vdevs (single, mirror, raidz1/2/3), labels,
//!   checksum-verified reads that rebuild and rewrite damaged copies;
//! - [`arc`]: the adaptive replacement cache of decoded blocks;
//! - [`l2arc`]: an optional cache device that keeps what the ARC evicts, across restarts;
//! - [`alloc`]: which rows are free, persisted in the same batch as the metadata, with
//!   frees deferred until no reader can still see the old block;
//! - [`blkptr`]: block pointers (location, sizes, codec, BLAKE3, birth txg) and
//!   per-block compression;
//! - [`dedup`]: the table of blocks by content that lets identical blocks be stored once;
//! - [`keys`] and [`view`]: metadata in RocksDB, versioned so that snapshots and clones
//!   are instant and share blocks;
//! - [`txn`]: transactions over objects (data, xattrs, omap) that commit atomically;
//! - [`commit`]: group commit (one disk flush and one synced RocksDB batch for many
//!   writers);
//! - [`scrub`]: walks every block pointer, verifies, repairs, accounts space.
//!
//! The engine knows nothing of the network, of placement groups or of Raft: the OSD puts
//! its replication log into the same [`Transaction`] as the data it logs.

pub mod alloc;
pub mod arc;
pub mod blkptr;
pub mod commit;
pub mod dedup;
pub mod error;
pub mod keys;
pub mod l2arc;
pub mod scrub;
mod store;
pub mod txn;
pub mod vdev;
pub mod view;

use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};

use rocksdb::{DB, WriteBatch};

pub use blkptr::Compression;
pub use error::{Error, Result};
pub use store::{
    CollectionInfo, CollectionSettings, CreateSpec, DEFAULT_RECORD_SIZE, DiskSource, DiskStatus,
    ListOptions, ObjectEntry, ObjectStat, OpenOptions, Origin, PoolStatus, SnapshotInfo, Store,
    VdevStatus, View,
};
pub use txn::{Data, Transaction};
pub use vdev::VdevKind;

use alloc::{Allocator, Run};
use blkptr::BlockPtr;
use vdev::{Extent, Vdev};

/// Blocks a streaming read has on their way from the disks at once.
const STREAM_DEPTH: usize = 8;
/// RocksDB key of the last committed transaction group.
pub(crate) const KEY_LAST_TXG: &[u8] = b"glast_txg";

/// What the store's threads share: metadata, disks, allocator.
pub(crate) struct Shared {
    pub db: DB,
    pub vdevs: Vec<Vdev>,
    pub alloc: Arc<Allocator>,
    pub cache: arc::BlockCache,
    pub l2: Option<Arc<l2arc::L2Cache>>,
    /// Transactions being prepared or committed (see [`InFlight`]).
    pub transactions: InFlight,
    last_txg: AtomicU64,
}

impl Shared {
    /// The durable free extents as RocksDB holds them.
    pub fn durable_extents(&self) -> Result<Vec<Run>> {
        let reader = view::Reader::new(&self.db);
        reader
            .prefix(b"a")
            .map(|pair| {
                let (k, v) = pair?;
                alloc::decode_extent(&k, &v)
            })
            .collect()
    }

    /// Adds every disk's error counters to a batch.
    pub fn put_counters(&self, batch: &mut WriteBatch) {
        for disk in self.vdevs.iter().flat_map(|v| &v.disks) {
            let c = &disk.counters;
            let mut value = Vec::with_capacity(24);
            for counter in [&c.read_errors, &c.write_errors, &c.checksum_errors] {
                value.extend_from_slice(&counter.load(Ordering::Relaxed).to_le_bytes());
            }
            batch.put(counter_key(disk.guid), value);
        }
    }

    /// The last txg known committed.
    pub fn last_txg(&self) -> u64 {
        self.last_txg.load(Ordering::Acquire)
    }

    fn note_txg(&self, txg: u64) {
        self.last_txg.fetch_max(txg, Ordering::AcqRel);
    }

    /// Reads, verifies and decodes one block, through the cache.
    pub fn read_block(&self, bp: &BlockPtr) -> Result<Arc<Vec<u8>>> {
        let key = arc::BlockKey::of(bp);
        if let Some(block) = self.cache.get(&key) {
            return Ok(block);
        }
        let from_l2 = self.l2.as_ref().and_then(|l2| l2.get(&key));
        let block = Arc::new(match from_l2 {
            Some(block) => block,
            None => {
                let (vdev, extent) = self.locate(bp)?;
                blkptr::decompress(bp.codec, vdev.read_block(&extent)?, bp.lsize as usize)?
            }
        });
        let evicted = self.cache.insert(key, Arc::clone(&block));
        if let Some(l2) = &self.l2 {
            for (key, block) in evicted {
                l2.offer(key, block);
            }
        }
        Ok(block)
    }

    fn locate<'b>(&self, bp: &'b BlockPtr) -> Result<(&Vdev, Extent<'b>)> {
        let vdev = self
            .vdevs
            .get(bp.vdev as usize)
            .ok_or_else(|| Error::Corrupt(format!("block pointer names vdev {}", bp.vdev)))?;
        let extent = Extent {
            row: bp.row,
            nrows: bp.nrows,
            psize: bp.psize,
            checksum: &bp.checksum,
        };
        Ok((vdev, extent))
    }

    /// Streams blocks in order for a long sequential read: `pointer` names each index's
    /// block (`None`: a hole), `each` gets its decoded bytes (empty for a hole).
    ///
    /// Blocks the cache holds come from it. The others are read by one thread, in
    /// order, straight from the disks into memory recycled from the blocks before them
    /// (a sequential reader keeps the disks' read-ahead working and touches no fresh
    /// memory), while this thread verifies each one, repairs it from the vdev's
    /// redundancy when it fails, and hands it on. They are not added to the cache: a
    /// large sequential read would only push out blocks worth keeping, and the page
    /// cache keeps the disks' bytes for a second pass.
    pub fn stream_blocks(
        &self,
        indexes: RangeInclusive<u64>,
        mut pointer: impl FnMut(u64) -> Result<Option<BlockPtr>>,
        mut each: impl FnMut(u64, &[u8]) -> Result<()>,
    ) -> Result<()> {
        enum Next {
            Hole,
            Cached(Arc<Vec<u8>>),
            Disk(BlockPtr),
        }
        std::thread::scope(|scope| {
            let (requests, to_read) = mpsc::sync_channel::<(BlockPtr, Vec<u8>)>(STREAM_DEPTH);
            let (done, reads) = mpsc::sync_channel(STREAM_DEPTH);
            scope.spawn(move || {
                for (bp, spare) in to_read {
                    let stored = self
                        .locate(&bp)
                        .and_then(|(vdev, extent)| vdev.read_stored(&extent, spare));
                    if done.send(stored).is_err() {
                        break;
                    }
                }
            });
            let mut queue = VecDeque::new();
            let mut reading = 0;
            let mut spares: Vec<Vec<u8>> = Vec::new();
            let mut following = *indexes.start();
            loop {
                while following <= *indexes.end()
                    && reading < STREAM_DEPTH
                    && queue.len() < 2 * STREAM_DEPTH
                {
                    let next = match pointer(following)? {
                        None => Next::Hole,
                        Some(bp) => match self.cached(&bp) {
                            Some(block) => Next::Cached(block),
                            None => {
                                let spare = spares.pop().unwrap_or_default();
                                requests.send((bp, spare)).map_err(|_| {
                                    Error::Invalid("the block reader stopped".into())
                                })?;
                                reading += 1;
                                Next::Disk(bp)
                            }
                        },
                    };
                    queue.push_back((following, next));
                    following += 1;
                }
                let Some((index, next)) = queue.pop_front() else {
                    return Ok(());
                };
                match next {
                    Next::Hole => each(index, &[])?,
                    Next::Cached(block) => each(index, &block)?,
                    Next::Disk(bp) => {
                        reading -= 1;
                        let stored = reads
                            .recv()
                            .map_err(|_| Error::Invalid("the block reader stopped".into()))??;
                        let (vdev, extent) = self.locate(&bp)?;
                        let stored = match stored {
                            Some(stored) if extent.verifies(&stored) => stored,
                            _ => vdev.read_repairing(&extent)?,
                        };
                        let block = blkptr::decompress(bp.codec, stored, bp.lsize as usize)?;
                        each(index, &block)?;
                        spares.push(block);
                    }
                }
            }
        })
    }

    /// A block from the cache or the cache device, if either holds it.
    fn cached(&self, bp: &BlockPtr) -> Option<Arc<Vec<u8>>> {
        let key = arc::BlockKey::of(bp);
        self.cache
            .get(&key)
            .or_else(|| Some(Arc::new(self.l2.as_ref()?.get(&key)?)))
    }
}

/// Transactions in flight, by the generation they started in. Replacing a disk attaches
/// the new one, starts a generation, and waits for the transactions of the earlier ones
/// to end: their blocks may have skipped the new disk, and once they are committed the
/// resilver that follows finds them. No transaction ever waits for a replace.
#[derive(Default)]
pub(crate) struct InFlight {
    state: Mutex<Generations>,
    ended: Condvar,
}

#[derive(Default)]
struct Generations {
    current: u64,
    /// Transactions in flight per generation; generations with none are removed.
    active: BTreeMap<u64, usize>,
}

impl InFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, Generations> {
        self.state.lock().expect("transactions lock poisoned")
    }

    /// Counts a transaction in the current generation until the guard drops.
    pub fn enter(&self) -> Transacting<'_> {
        let mut state = self.lock();
        let generation = state.current;
        *state.active.entry(generation).or_default() += 1;
        Transacting {
            owner: self,
            generation,
        }
    }

    /// Starts a new generation and waits until every transaction of the earlier ones
    /// has ended.
    pub fn drain(&self) {
        let mut state = self.lock();
        state.current += 1;
        let current = state.current;
        while state.active.range(..current).next().is_some() {
            state = self.ended.wait(state).expect("transactions lock poisoned");
        }
    }
}

/// A transaction counted by [`InFlight`].
pub(crate) struct Transacting<'a> {
    owner: &'a InFlight,
    generation: u64,
}

impl Drop for Transacting<'_> {
    fn drop(&mut self) {
        let mut state = self.owner.lock();
        if let Some(count) = state.active.get_mut(&self.generation) {
            *count -= 1;
            if *count == 0 {
                state.active.remove(&self.generation);
            }
        }
        drop(state);
        self.owner.ended.notify_all();
    }
}

/// RocksDB key of a disk's error counters.
pub(crate) fn counter_key(guid: u64) -> Vec<u8> {
    let mut key = vec![b'e'];
    key.extend_from_slice(&guid.to_be_bytes());
    key
}

/// Maps `f` over `items` on up to four threads, keeping the order; one item runs inline.
pub(crate) fn parallel_map<T: Send, U: Send>(items: Vec<T>, f: impl Fn(T) -> U + Sync) -> Vec<U> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(4);
    if items.len() <= 1 || threads == 1 {
        return items.into_iter().map(f).collect();
    }
    let mut slots: Vec<Option<U>> = (0..items.len()).map(|_| None).collect();
    let mut queues: Vec<Vec<(usize, T)>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, item) in items.into_iter().enumerate() {
        queues[i % threads].push((i, item));
    }
    let f = &f;
    std::thread::scope(|scope| {
        let workers: Vec<_> = queues
            .into_iter()
            .map(|queue| {
                scope.spawn(move || {
                    queue
                        .into_iter()
                        .map(|(i, item)| (i, f(item)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for worker in workers {
            for (i, out) in worker.join().expect("a block worker panicked") {
                slots[i] = Some(out);
            }
        }
    });
    slots
        .into_iter()
        .map(|slot| slot.expect("every slot filled"))
        .collect()
}
