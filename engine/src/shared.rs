//! What the store's threads share: the metadata database, the disks, the allocator and
//! the block caches, with the block read path over them.
//!
//! Readers, transactions and the committer thread all hold one [`Shared`] (behind an
//! `Arc`). A block is read through the ARC and the cache device, or streamed in order
//! from the disks for a long sequential read; either way it is verified against its
//! checksum and repaired from the vdev's redundancy when the disks return bad bytes.

use std::collections::VecDeque;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, mpsc};

use rocksdb::{DB, WriteBatch};

use super::alloc::{self, Allocator, Run};
use super::arc::{BlockCache, BlockKey};
use super::blkptr::{self, BlockPtr};
use super::error::{Error, Result};
use super::inflight::InFlight;
use super::l2arc::L2Cache;
use super::vdev::{Extent, Vdev};
use super::view::Reader;

/// Blocks a streaming read has on their way from the disks at once.
const STREAM_DEPTH: usize = 8;
/// RocksDB key of the last committed transaction group.
pub(crate) const KEY_LAST_TXG: &[u8] = b"glast_txg";

/// What the store's threads share: metadata, disks, allocator.
pub(crate) struct Shared {
    pub db: DB,
    pub vdevs: Vec<Vdev>,
    pub alloc: Arc<Allocator>,
    pub cache: BlockCache,
    pub l2: Option<Arc<L2Cache>>,
    /// Transactions being prepared or committed (see [`InFlight`]).
    pub transactions: InFlight,
    last_txg: AtomicU64,
    /// Why the store stopped committing, once a disk flush failed (see
    /// [`Shared::suspend`]).
    suspended: OnceLock<String>,
}

impl Shared {
    /// The shared state of a store just opened, whose last committed txg is `last_txg`.
    pub fn new(
        db: DB,
        vdevs: Vec<Vdev>,
        alloc: Arc<Allocator>,
        cache: BlockCache,
        l2: Option<Arc<L2Cache>>,
        last_txg: u64,
    ) -> Self {
        Shared {
            db,
            vdevs,
            alloc,
            cache,
            l2,
            transactions: InFlight::default(),
            last_txg: AtomicU64::new(last_txg),
            suspended: OnceLock::new(),
        }
    }

    /// Stops every later commit, for good: after a failed flush the operating system
    /// may have dropped dirty pages of writes that a later flush would then report
    /// durable, so nothing written since can be trusted to be on disk. ZFS suspends
    /// its pool and BlueStore stops its OSD for the same reason; reopening the store
    /// starts again from the last commit, which only flushed data backs.
    pub fn suspend(&self, why: String) {
        if self.suspended.set(why).is_ok() {
            tracing::error!("store suspended: {}", self.suspended().unwrap_or_default());
        }
    }

    /// Why the store no longer commits, if it was suspended.
    pub fn suspended(&self) -> Option<String> {
        self.suspended.get().cloned()
    }

    /// The durable free extents as RocksDB holds them.
    pub fn durable_extents(&self) -> Result<Vec<Run>> {
        let reader = Reader::new(&self.db);
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

    /// Records that `txg` is committed.
    pub fn note_txg(&self, txg: u64) {
        self.last_txg.fetch_max(txg, Ordering::AcqRel);
    }

    /// Reads, verifies and decodes one block, through the cache.
    pub fn read_block(&self, bp: &BlockPtr) -> Result<Arc<Vec<u8>>> {
        let key = BlockKey::of(bp);
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
        let key = BlockKey::of(bp);
        self.cache
            .get(&key)
            .or_else(|| Some(Arc::new(self.l2.as_ref()?.get(&key)?)))
    }
}

/// RocksDB key of a disk's error counters.
pub(crate) fn counter_key(guid: u64) -> Vec<u8> {
    let mut key = vec![b'e'];
    key.extend_from_slice(&guid.to_be_bytes());
    key
}
