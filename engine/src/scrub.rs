//! Scrub and resilver: walk every block pointer of every collection (heads and the older
//! versions snapshots keep), check or rebuild each block.
//!
//! Scrub reads every copy and column of each block (parity included), verifies it
//! against the block's checksum, and rewrites what is damaged from what is good. It
//! holds an allocator pin for its whole run, so no block it looks at can be freed and
//! reused under it while writers go on. It also accounts space: the rows the allocator
//! says are in use must equal the rows the block pointers reference; any difference is
//! reported as leaked (or doubly used) rows.
//!
//! Resilver, after a disk is replaced, rebuilds that disk's column of every block of its
//! vdev from the other disks.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde::Serialize;

use super::blkptr::BlockPtr;
use super::error::{Error, Result};
use super::keys;
use super::store::Store;
use super::vdev::Extent;
use super::view::Reader;

/// An object with a block that could not be rebuilt.
#[derive(Serialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DamagedObject {
    /// Collection name.
    pub collection: String,
    /// Object name.
    pub object: String,
    /// Whether the damaged block belongs to an older version kept for a snapshot.
    pub in_snapshot: bool,
}

/// What a scrub or resilver found and did.
#[derive(Serialize, Clone, Debug, Default)]
pub struct ScrubReport {
    /// Blocks checked.
    pub checked_blocks: u64,
    /// Stored bytes checked.
    pub checked_bytes: u64,
    /// Blocks with at least one damaged copy or column that was rewritten.
    pub repaired_blocks: u64,
    /// Blocks that could not be rebuilt.
    pub unrecoverable_blocks: u64,
    /// Objects with unrecoverable blocks.
    pub damaged_objects: Vec<DamagedObject>,
    /// Rows in use according to the allocator.
    pub allocated_rows: u64,
    /// Rows referenced by block pointers.
    pub referenced_rows: u64,
    /// Allocated rows no block pointer references (0 on a healthy store at rest).
    pub leaked_rows: i64,
    /// Whether it was stopped before the end.
    pub stopped: bool,
    /// Wall time.
    pub seconds: f64,
}

struct BlockRef {
    coll: String,
    object: Vec<u8>,
    in_snapshot: bool,
    bp: BlockPtr,
}

/// Calls `f` for every block pointer in the store.
/// Block pointers a walk reads under one RocksDB snapshot and one allocator pin.
/// Between chunks the pin is let go, so a long scrub holds back the reuse of freed rows
/// for one chunk's worth of time, not for its whole run.
const WALK_CHUNK: usize = 64;

/// Calls `f` for every block pointer in the store, each while its rows are pinned.
fn walk_blocks(store: &Store, mut f: impl FnMut(BlockRef) -> Result<()>) -> Result<()> {
    for info in store.collections() {
        for (tag, in_snapshot) in [(b'H', false), (b'O', true)] {
            let base = keys::coll_prefix(tag, info.id);
            let mut prefix = base.clone();
            prefix.push(keys::KIND_BLOCK);
            let end = keys::prefix_end(&prefix);
            let mut start = prefix.clone();
            loop {
                let _pin = store.shared.alloc.pin();
                let reader = Reader::new(&store.shared.db);
                let mut last = None;
                for pair in reader.range(&start, &end).take(WALK_CHUNK) {
                    let (key, value) = pair?;
                    let item = if in_snapshot {
                        keys::unescape_item(&key[base.len()..])?.0
                    } else {
                        key[base.len()..].to_vec()
                    };
                    let bp = if in_snapshot {
                        keys::decode_versioned(&value)?.1
                    } else {
                        keys::Version::decode(&value)?.value
                    };
                    if let Some(bp) = bp {
                        f(BlockRef {
                            coll: info.name.clone(),
                            object: object_of(&item)?,
                            in_snapshot,
                            bp: BlockPtr::decode(&bp)?,
                        })?;
                    }
                    last = Some(key);
                }
                match last {
                    Some(mut key) => {
                        key.push(0);
                        start = key;
                    }
                    None => break,
                }
            }
        }
    }
    Ok(())
}

/// The object name inside a block item: kind(1) len(4) name index(8).
fn object_of(item: &[u8]) -> Result<Vec<u8>> {
    if item.len() < 13 {
        return Err(Error::Corrupt("short block item".into()));
    }
    let len = u32::from_be_bytes(item[1..5].try_into().expect("4 bytes")) as usize;
    item.get(5..5 + len)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| Error::Corrupt("block item with a bad name length".into()))
}

fn extent(bp: &BlockPtr) -> Extent<'_> {
    Extent {
        row: bp.row,
        nrows: bp.nrows,
        psize: bp.psize,
        checksum: &bp.checksum,
    }
}

/// Scrubs the whole store. `stop` ends it early; `progress` hears the blocks checked.
pub fn scrub(
    store: &Store,
    stop: &AtomicBool,
    mut progress: impl FnMut(u64),
) -> Result<ScrubReport> {
    let started = Instant::now();
    let mut report = ScrubReport::default();
    let mut damaged = BTreeSet::new();
    let mut shared_seen = HashSet::new();
    let outcome = walk_blocks(store, |block| {
        if stop.load(Ordering::Relaxed) {
            return Err(Error::Stopped);
        }
        // A dedup'd block is referenced many times but stored (and checked) once.
        if block.bp.dedup && !shared_seen.insert((block.bp.vdev, block.bp.row)) {
            return Ok(());
        }
        let vdev = store
            .shared
            .vdevs
            .get(block.bp.vdev as usize)
            .ok_or_else(|| Error::Corrupt(format!("block pointer names vdev {}", block.bp.vdev)))?;
        let check = vdev.check_block(&extent(&block.bp))?;
        report.checked_blocks += 1;
        report.checked_bytes += block.bp.psize as u64;
        report.referenced_rows += block.bp.nrows as u64;
        if check.repaired > 0 {
            report.repaired_blocks += 1;
        }
        if check.unrecoverable {
            report.unrecoverable_blocks += 1;
            damaged.insert(DamagedObject {
                collection: block.coll,
                object: String::from_utf8_lossy(&block.object).into_owned(),
                in_snapshot: block.in_snapshot,
            });
        }
        progress(report.checked_blocks);
        Ok(())
    });
    match outcome {
        Ok(()) => {}
        Err(Error::Stopped) => report.stopped = true,
        Err(e) => return Err(e),
    }
    let total: u64 = store.shared.alloc.total_rows().iter().sum();
    let free: u64 = store.shared.alloc.durable_free_rows().iter().sum();
    report.allocated_rows = total - free;
    report.leaked_rows = report.allocated_rows as i64 - report.referenced_rows as i64;
    report.damaged_objects = damaged.into_iter().collect();
    report.seconds = started.elapsed().as_secs_f64();
    store.persist_counters()?;
    Ok(report)
}

/// Rebuilds disk `child` of vdev `v` from the vdev's other disks.
pub(crate) fn resilver(store: &Store, v: usize, child: usize) -> Result<ScrubReport> {
    let started = Instant::now();
    let vdev = &store.shared.vdevs[v];
    let mut report = ScrubReport::default();
    let mut damaged = BTreeSet::new();
    let mut shared_seen = HashSet::new();
    walk_blocks(store, |block| {
        if block.bp.vdev as usize != v
            || (block.bp.dedup && !shared_seen.insert((block.bp.vdev, block.bp.row)))
        {
            return Ok(());
        }
        report.checked_blocks += 1;
        report.checked_bytes += block.bp.psize as u64;
        if vdev.rebuild_on(child, &extent(&block.bp))? {
            report.repaired_blocks += 1;
        } else {
            report.unrecoverable_blocks += 1;
            damaged.insert(DamagedObject {
                collection: block.coll,
                object: String::from_utf8_lossy(&block.object).into_owned(),
                in_snapshot: block.in_snapshot,
            });
        }
        Ok(())
    })?;
    vdev.sync()?;
    report.damaged_objects = damaged.into_iter().collect();
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

impl Store {
    /// Writes the disks' error counters durably.
    pub(crate) fn persist_counters(&self) -> Result<()> {
        let mut batch = rocksdb::WriteBatch::default();
        self.shared.put_counters(&mut batch);
        let mut options = rocksdb::WriteOptions::default();
        options.set_sync(true);
        self.shared.db.write_opt(batch, &options)?;
        Ok(())
    }

    /// Scrubs the store (see [`scrub`]).
    pub fn scrub(&self, stop: &AtomicBool, progress: impl FnMut(u64)) -> Result<ScrubReport> {
        scrub(self, stop, progress)
    }
}
