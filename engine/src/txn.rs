//! Transactions: any operations on objects of one collection, committed atomically.
//!
//! A transaction is prepared on the caller's thread: data blocks are compressed and
//! checksummed on every core and written to newly allocated rows (never over a live
//! block) by a background thread while the next batch is encoded, and the
//! metadata changes are computed against the collection's head as this transaction will
//! leave it. Then the committer makes it durable together with whatever else is waiting
//! (see [`super::commit`]). Until that batch is durable nothing refers to the new rows,
//! so a crash at any point leaves each object as it was before or after the transaction.
//!
//! When a transaction replaces an item (a block pointer, an xattr, an omap entry, the
//! object record), the old version is either freed, or kept as an older version when a
//! snapshot of the collection still sees it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::sync::Arc;

use super::alloc::Run;
use super::blkptr::{self, BlockPtr};
use super::catalog::CollectionSettings;
use super::commit::{MetaOp, Prepared};
use super::dedup::{self, DedupChanges};
use super::error::{Error, IoContext, Result};
use super::keys::{self, CollId, ObjectRecord};
use super::parallel::parallel_map;
use super::shared::Shared;
use super::store::{Store, now_ns};
use super::view::{Lineage, Reader};

/// Largest object size the engine accepts (far beyond any disk).
const MAX_OBJECT_SIZE: u64 = 1 << 60;
/// Longest object name, in bytes.
const MAX_OBJECT_NAME: usize = 4096;
/// Whole blocks a streaming write gathers before encoding them in parallel: enough to
/// keep every core busy, little enough to bound memory (a large write holds three
/// batches: one being written, one being encoded, and the buffers kept for the next).
const WRITE_BATCH: usize = 8;

/// A block compressed and checksummed, not yet placed on disk.
struct Encoded {
    index: u64,
    lsize: u32,
    codec: blkptr::BlockCodec,
    stored: Vec<u8>,
    checksum: [u8; 32],
}

impl Encoded {
    fn new(index: u64, data: Vec<u8>, compression: blkptr::Compression) -> Self {
        let lsize = data.len() as u32;
        let (codec, stored) = blkptr::compress(data, compression);
        Encoded {
            index,
            lsize,
            codec,
            checksum: *blake3::hash(&stored).as_bytes(),
            stored,
        }
    }

    fn pointer(&self, run: Run, birth: u64, dedup: bool) -> BlockPtr {
        BlockPtr {
            vdev: run.vdev,
            row: run.row,
            nrows: run.nrows as u32,
            lsize: self.lsize,
            psize: self.stored.len() as u32,
            codec: self.codec,
            checksum: self.checksum,
            birth,
            dedup,
        }
    }
}

/// Allocates rows for an encoded block and writes it there (not yet flushed). On a
/// failed write the rows go straight back.
fn place(shared: &Shared, block: &Encoded) -> Result<Run> {
    let run = shared.alloc.allocate(
        |v| shared.vdevs[v as usize].rows_for(block.stored.len()) as u64,
        |v| shared.vdevs[v as usize].state() != "FAULTED",
    )?;
    let written =
        shared.vdevs[run.vdev as usize].write_block(run.row, run.nrows as u32, &block.stored);
    if let Err(e) = written {
        shared.alloc.release(&[run]);
        return Err(e);
    }
    Ok(run)
}

/// Bytes to write: in memory, or streamed from a reader one block at a time, so that an
/// object's size is not bounded by memory.
pub enum Data {
    /// Bytes in memory.
    Bytes(Vec<u8>),
    /// Exactly `len` bytes from `reader`; fewer fails the transaction.
    Sized {
        /// Where the bytes come from.
        reader: Box<dyn Read + Send>,
        /// How many bytes to take.
        len: u64,
    },
    /// Everything `reader` yields until its end (a pipe, standard input).
    UntilEof(Box<dyn Read + Send>),
}

impl Data {
    /// The source and, when known, how many bytes it must yield.
    fn into_source(self) -> (Box<dyn Read + Send>, Option<u64>) {
        match self {
            Data::Bytes(bytes) => {
                let len = bytes.len() as u64;
                (Box::new(std::io::Cursor::new(bytes)), Some(len))
            }
            Data::Sized { reader, len } => (Box::new(reader.take(len)), Some(len)),
            Data::UntilEof(reader) => (reader, None),
        }
    }
}

/// Appends up to `limit` bytes from the source to `buf` (fewer only at its end);
/// returns how many.
fn read_up_to(source: &mut dyn Read, buf: &mut Vec<u8>, limit: usize) -> std::io::Result<usize> {
    source.take(limit as u64).read_to_end(buf)
}

impl From<Vec<u8>> for Data {
    fn from(bytes: Vec<u8>) -> Self {
        Data::Bytes(bytes)
    }
}

impl From<&[u8]> for Data {
    fn from(bytes: &[u8]) -> Self {
        Data::Bytes(bytes.to_vec())
    }
}

impl std::fmt::Debug for Data {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Data::Bytes(bytes) => write!(f, "Data::Bytes({} bytes)", bytes.len()),
            Data::Sized { len, .. } => write!(f, "Data::Sized({len} bytes)"),
            Data::UntilEof(_) => f.write_str("Data::UntilEof"),
        }
    }
}

#[derive(Debug)]
enum Op {
    Create {
        name: Vec<u8>,
        exclusive: bool,
    },
    Write {
        name: Vec<u8>,
        offset: u64,
        data: Data,
    },
    WriteFull {
        name: Vec<u8>,
        data: Data,
    },
    Append {
        name: Vec<u8>,
        data: Data,
    },
    Truncate {
        name: Vec<u8>,
        size: u64,
    },
    Remove {
        name: Vec<u8>,
    },
    SetXattr {
        name: Vec<u8>,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    RmXattr {
        name: Vec<u8>,
        key: Vec<u8>,
    },
    OmapSet {
        name: Vec<u8>,
        entries: Vec<(Vec<u8>, Vec<u8>)>,
    },
    OmapRm {
        name: Vec<u8>,
        keys: Vec<Vec<u8>>,
    },
    OmapRmRange {
        name: Vec<u8>,
        start: Vec<u8>,
        end: Vec<u8>,
    },
    OmapClear {
        name: Vec<u8>,
    },
}

impl Op {
    fn name(&self) -> &[u8] {
        match self {
            Op::Create { name, .. }
            | Op::Write { name, .. }
            | Op::WriteFull { name, .. }
            | Op::Append { name, .. }
            | Op::Truncate { name, .. }
            | Op::Remove { name }
            | Op::SetXattr { name, .. }
            | Op::RmXattr { name, .. }
            | Op::OmapSet { name, .. }
            | Op::OmapRm { name, .. }
            | Op::OmapRmRange { name, .. }
            | Op::OmapClear { name } => name,
        }
    }
}

/// Operations on objects of one collection, applied in order, all or nothing.
///
/// Writing to an object that does not exist creates it; removing one that does not
/// exist fails the whole transaction with [`Error::NotFound`].
#[derive(Debug)]
pub struct Transaction {
    coll: String,
    ops: Vec<Op>,
}

impl Transaction {
    /// An empty transaction on collection `coll`.
    pub fn new(coll: impl Into<String>) -> Self {
        Transaction {
            coll: coll.into(),
            ops: Vec::new(),
        }
    }

    /// Whether it holds no operations.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Creates an empty object; with `exclusive`, fails if it exists.
    pub fn create(&mut self, name: &[u8], exclusive: bool) -> &mut Self {
        self.ops.push(Op::Create {
            name: name.to_vec(),
            exclusive,
        });
        self
    }

    /// Writes bytes at an offset, extending the object as needed (gaps read as zeros).
    pub fn write(&mut self, name: &[u8], offset: u64, data: impl Into<Data>) -> &mut Self {
        self.ops.push(Op::Write {
            name: name.to_vec(),
            offset,
            data: data.into(),
        });
        self
    }

    /// Replaces the object's data (xattrs and omap stay).
    pub fn write_full(&mut self, name: &[u8], data: impl Into<Data>) -> &mut Self {
        self.ops.push(Op::WriteFull {
            name: name.to_vec(),
            data: data.into(),
        });
        self
    }

    /// Appends bytes at the end.
    pub fn append(&mut self, name: &[u8], data: impl Into<Data>) -> &mut Self {
        self.ops.push(Op::Append {
            name: name.to_vec(),
            data: data.into(),
        });
        self
    }

    /// Sets the size: shrinking drops data, growing adds zeros.
    pub fn truncate(&mut self, name: &[u8], size: u64) -> &mut Self {
        self.ops.push(Op::Truncate {
            name: name.to_vec(),
            size,
        });
        self
    }

    /// Removes the object with its xattrs and omap.
    pub fn remove(&mut self, name: &[u8]) -> &mut Self {
        self.ops.push(Op::Remove {
            name: name.to_vec(),
        });
        self
    }

    /// Sets an extended attribute.
    pub fn set_xattr(&mut self, name: &[u8], key: &[u8], value: &[u8]) -> &mut Self {
        self.ops.push(Op::SetXattr {
            name: name.to_vec(),
            key: key.to_vec(),
            value: value.to_vec(),
        });
        self
    }

    /// Removes an extended attribute.
    pub fn rm_xattr(&mut self, name: &[u8], key: &[u8]) -> &mut Self {
        self.ops.push(Op::RmXattr {
            name: name.to_vec(),
            key: key.to_vec(),
        });
        self
    }

    /// Sets omap entries.
    pub fn omap_set(&mut self, name: &[u8], entries: Vec<(Vec<u8>, Vec<u8>)>) -> &mut Self {
        self.ops.push(Op::OmapSet {
            name: name.to_vec(),
            entries,
        });
        self
    }

    /// Removes omap entries.
    pub fn omap_rm(&mut self, name: &[u8], keys: Vec<Vec<u8>>) -> &mut Self {
        self.ops.push(Op::OmapRm {
            name: name.to_vec(),
            keys,
        });
        self
    }

    /// Removes omap entries with keys in `[start, end)`.
    pub fn omap_rm_range(&mut self, name: &[u8], start: &[u8], end: &[u8]) -> &mut Self {
        self.ops.push(Op::OmapRmRange {
            name: name.to_vec(),
            start: start.to_vec(),
            end: end.to_vec(),
        });
        self
    }

    /// Removes every omap entry.
    pub fn omap_clear(&mut self, name: &[u8]) -> &mut Self {
        self.ops.push(Op::OmapClear {
            name: name.to_vec(),
        });
        self
    }
}

impl Store {
    /// Commits a transaction atomically and durably; returns its txg. On error nothing
    /// of it is applied.
    pub fn commit(&self, txn: Transaction) -> Result<u64> {
        let coll = self.coll(&txn.coll)?;
        let _gate = coll.enter_shared()?;
        let info = coll.info();
        let names: BTreeSet<Vec<u8>> = txn.ops.iter().map(|op| op.name().to_vec()).collect();
        for name in &names {
            if name.is_empty() || name.len() > MAX_OBJECT_NAME {
                return Err(Error::Invalid(format!(
                    "object names are 1-{MAX_OBJECT_NAME} bytes"
                )));
            }
        }
        let _dedup = self.dedup_lock(info.settings.dedup);
        let _locks = self.lock_objects(info.id, names.iter().map(Vec::as_slice));
        let _transacting = self.shared.transactions.enter();
        let txg = self.next_txg();
        let pin = self.shared.alloc.pin();
        let reader = Reader::new(&self.shared.db);
        let mut prep = Prep {
            store: self,
            reader,
            lineage: self.lineage(&info, None)?,
            coll: info.id,
            is_clone: info.origin.is_some(),
            latest_snapshot: info.snapshots.last().map_or(0, |s| s.txg),
            settings: info.settings,
            txg,
            now: now_ns(),
            overlay: BTreeMap::new(),
            allocated: HashMap::new(),
            dedup: DedupChanges::default(),
            freed: Vec::new(),
            vdevs_written: BTreeSet::new(),
            placing: None,
            spares: Vec::new(),
        };
        let outcome = txn.ops.into_iter().try_for_each(|op| prep.apply(op));
        let prepared = outcome.and_then(|()| prep.finish());
        let allocated: Vec<Run> = prep.allocated.values().copied().collect();
        drop(prep);
        drop(pin);
        match prepared {
            Ok(prepared) => self.submit(prepared),
            Err(e) => {
                self.shared.alloc.release(&allocated);
                Err(e)
            }
        }
    }
}

struct Prep<'s> {
    store: &'s Store,
    reader: Reader<'s>,
    lineage: Lineage,
    coll: CollId,
    is_clone: bool,
    latest_snapshot: u64,
    settings: CollectionSettings,
    txg: u64,
    now: u64,
    /// Items as this transaction leaves them (`None`: removed).
    overlay: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Rows written by this transaction and still referenced, by (vdev, row).
    allocated: HashMap<(u32, u64), Run>,
    dedup: DedupChanges,
    freed: Vec<Run>,
    vdevs_written: BTreeSet<u32>,
    /// The batch of blocks being written in the background, if any.
    placing: Option<Placing>,
    /// Buffers of blocks already written, to read the next blocks into: a large
    /// write then touches no fresh memory after its first batches.
    spares: Vec<Vec<u8>>,
}

/// A batch of an object's blocks being written to disk on a background thread.
struct Placing {
    name: Vec<u8>,
    worker: std::thread::JoinHandle<Vec<(Encoded, Result<Run>)>>,
}

impl Prep<'_> {
    fn get(&self, item: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.overlay.get(item) {
            Some(value) => Ok(value.clone()),
            None => self.reader.get(&self.lineage, item),
        }
    }

    fn set(&mut self, item: Vec<u8>, value: Option<Vec<u8>>) -> Result<()> {
        // A block this very transaction wrote and now replaces was never referenced by
        // anything durable: its rows go straight back.
        if item.first() == Some(&keys::KIND_BLOCK)
            && let Some(Some(previous)) = self.overlay.get(&item)
            && let Some(run) = self
                .dedup
                .release(&self.reader, &BlockPtr::decode(previous)?)?
            && let Some(run) = self.allocated.remove(&(run.vdev, run.row))
        {
            self.store.shared.alloc.release(&[run]);
        }
        self.overlay.insert(item, value);
        Ok(())
    }

    /// Items that exist with this prefix, as this transaction sees them.
    fn items(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>> {
        let mut items = BTreeSet::new();
        for pair in self.reader.scan(&self.lineage, prefix, None) {
            items.insert(pair?.0);
        }
        for (item, value) in self.overlay.range(prefix.to_vec()..) {
            if !item.starts_with(prefix) {
                break;
            }
            if value.is_some() {
                items.insert(item.clone());
            } else {
                items.remove(item);
            }
        }
        Ok(items.into_iter().collect())
    }

    fn record(&self, name: &[u8]) -> Result<Option<ObjectRecord>> {
        self.get(&keys::object_item(name))?
            .map(|bytes| ObjectRecord::decode(&bytes))
            .transpose()
    }

    fn record_or_new(&self, name: &[u8]) -> Result<ObjectRecord> {
        Ok(self.record(name)?.unwrap_or(ObjectRecord {
            size: 0,
            mtime_ns: self.now,
            block_size: self.settings.record_size,
        }))
    }

    fn put_record(&mut self, name: &[u8], mut record: ObjectRecord) -> Result<()> {
        record.mtime_ns = self.now;
        self.set(keys::object_item(name), Some(record.encode()))
    }

    fn read_block(&self, name: &[u8], index: u64) -> Result<Vec<u8>> {
        match self.get(&keys::block_item(name, index))? {
            Some(bp) => Ok(self
                .store
                .shared
                .read_block(&BlockPtr::decode(&bp)?)?
                .to_vec()),
            None => Ok(Vec::new()),
        }
    }

    /// Writes one block and points the object at it before returning.
    fn write_block(&mut self, name: &[u8], index: u64, data: Vec<u8>) -> Result<()> {
        self.queue_blocks(name, vec![(index, data)])
    }

    /// Compresses and checksums blocks on the machine's cores, then writes them to newly
    /// allocated rows. A full batch ([`WRITE_BATCH`]) is written on a background thread
    /// while the caller reads and encodes the next one, and [`Prep::finish_placing`]
    /// points the object's block items at it; a shorter batch, and every batch with
    /// dedup (each block may match one before it), is written here before returning.
    fn queue_blocks(&mut self, name: &[u8], batch: Vec<(u64, Vec<u8>)>) -> Result<()> {
        let blocks = batch.len();
        let compression = self.settings.compression;
        let encoded = parallel_map(batch, |(index, data)| {
            Encoded::new(index, data, compression)
        });
        self.finish_placing()?;
        if self.settings.dedup {
            for block in encoded {
                let key = (block.checksum, block.codec as u8, block.lsize);
                let bp = match self.dedup.add_ref(&self.reader, &key)? {
                    Some(entry) => dedup::pointer_to(&entry, &key, block.codec, self.txg),
                    None => {
                        let run = place(&self.store.shared, &block)?;
                        self.allocated.insert((run.vdev, run.row), run);
                        self.vdevs_written.insert(run.vdev);
                        self.dedup.insert(key, run, block.stored.len() as u32);
                        block.pointer(run, self.txg, true)
                    }
                };
                self.set(
                    keys::block_item(name, block.index),
                    Some(bp.encode().to_vec()),
                )?;
            }
            return Ok(());
        }
        // One thread places a batch in order: writes to one disk file serialize on its
        // inode lock anyway, and more writers would only steal the cores that encode the
        // next batch. A batch short of a full one is the last of its write (or a small
        // write): it is placed here, as a thread would only add its start-up.
        let shared = Arc::clone(&self.store.shared);
        let place_all = move || {
            encoded
                .into_iter()
                .map(|block| {
                    let run = place(&shared, &block);
                    (block, run)
                })
                .collect()
        };
        if blocks < WRITE_BATCH {
            return self.point_at(name, place_all());
        }
        let worker = std::thread::Builder::new()
            .name("lcpfs-place".into())
            .spawn(place_all)
            .ctx(|| "starting a block writer".into())?;
        self.placing = Some(Placing {
            name: name.to_vec(),
            worker,
        });
        Ok(())
    }

    /// Waits for the batch being placed in the background, if any, and points its
    /// object's block items at the rows it got.
    fn finish_placing(&mut self) -> Result<()> {
        let Some(Placing { name, worker }) = self.placing.take() else {
            return Ok(());
        };
        let placed = worker
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        self.point_at(&name, placed)
    }

    /// Points an object's block items at the rows its blocks were written to. Rows of
    /// blocks that were written are recorded even when another block of the batch
    /// failed, so that a failed transaction gives them all back.
    fn point_at(&mut self, name: &[u8], placed: Vec<(Encoded, Result<Run>)>) -> Result<()> {
        let mut first_error = None;
        let mut pointers = Vec::with_capacity(placed.len());
        for (block, run) in placed {
            match run {
                Ok(run) => {
                    self.allocated.insert((run.vdev, run.row), run);
                    self.vdevs_written.insert(run.vdev);
                    pointers.push((block.index, block.pointer(run, self.txg, false)));
                    if self.spares.len() < WRITE_BATCH {
                        self.spares.push(block.stored);
                    }
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        for (index, bp) in pointers {
            self.set(keys::block_item(name, index), Some(bp.encode().to_vec()))?;
        }
        Ok(())
    }

    fn apply(&mut self, op: Op) -> Result<()> {
        match op {
            Op::Create { name, exclusive } => match self.record(&name)? {
                Some(_) if exclusive => Err(Error::AlreadyExists(format!(
                    "object {:?}",
                    String::from_utf8_lossy(&name)
                ))),
                Some(_) => Ok(()),
                None => {
                    let record = self.record_or_new(&name)?;
                    self.put_record(&name, record)
                }
            },
            Op::Write { name, offset, data } => self.write(&name, offset, data),
            Op::WriteFull { name, data } => {
                self.truncate(&name, 0)?;
                self.write(&name, 0, data)
            }
            Op::Append { name, data } => {
                let size = self.record_or_new(&name)?.size;
                self.write(&name, size, data)
            }
            Op::Truncate { name, size } => self.truncate(&name, size),
            Op::Remove { name } => {
                if self.record(&name)?.is_none() {
                    return Err(Error::NotFound(format!(
                        "object {:?}",
                        String::from_utf8_lossy(&name)
                    )));
                }
                for kind in [keys::KIND_BLOCK, keys::KIND_XATTR, keys::KIND_OMAP] {
                    for item in self.items(&keys::sub_prefix(kind, &name))? {
                        self.set(item, None)?;
                    }
                }
                self.set(keys::object_item(&name), None)
            }
            Op::SetXattr { name, key, value } => {
                self.touch(&name)?;
                self.set(keys::keyed_item(keys::KIND_XATTR, &name, &key), Some(value))
            }
            Op::RmXattr { name, key } => {
                self.touch(&name)?;
                self.set(keys::keyed_item(keys::KIND_XATTR, &name, &key), None)
            }
            Op::OmapSet { name, entries } => {
                self.touch(&name)?;
                for (key, value) in entries {
                    self.set(keys::keyed_item(keys::KIND_OMAP, &name, &key), Some(value))?;
                }
                Ok(())
            }
            Op::OmapRm {
                name,
                keys: omap_keys,
            } => {
                self.touch(&name)?;
                for key in omap_keys {
                    self.set(keys::keyed_item(keys::KIND_OMAP, &name, &key), None)?;
                }
                Ok(())
            }
            Op::OmapRmRange { name, start, end } => {
                self.touch(&name)?;
                let prefix = keys::sub_prefix(keys::KIND_OMAP, &name);
                let (low, high) = (
                    keys::keyed_item(keys::KIND_OMAP, &name, &start),
                    keys::keyed_item(keys::KIND_OMAP, &name, &end),
                );
                for item in self.items(&prefix)? {
                    if item >= low && item < high {
                        self.set(item, None)?;
                    }
                }
                Ok(())
            }
            Op::OmapClear { name } => {
                self.touch(&name)?;
                for item in self.items(&keys::sub_prefix(keys::KIND_OMAP, &name))? {
                    self.set(item, None)?;
                }
                Ok(())
            }
        }
    }

    /// Creates the object if needed and bumps its mtime.
    fn touch(&mut self, name: &[u8]) -> Result<()> {
        let record = self.record_or_new(name)?;
        self.put_record(name, record)
    }

    fn write(&mut self, name: &[u8], offset: u64, data: Data) -> Result<()> {
        let written = self.stream_in(name, offset, data);
        let placed = self.finish_placing();
        written.and(placed)
    }

    /// Writes `data` at `offset`, whole blocks in batches placed in the background.
    fn stream_in(&mut self, name: &[u8], offset: u64, data: Data) -> Result<()> {
        let mut record = self.record_or_new(name)?;
        let (mut source, expected) = data.into_source();
        let too_big = || Error::Invalid(format!("a write ending past {MAX_OBJECT_SIZE} bytes"));
        if offset
            .checked_add(expected.unwrap_or(0))
            .is_none_or(|end| end > MAX_OBJECT_SIZE)
        {
            return Err(too_big());
        }
        let bs = record.block_size as u64;
        let mut position = offset;
        let mut whole_blocks = Vec::new();
        loop {
            let index = position / bs;
            let block_start = index * bs;
            let want = (block_start + bs - position) as usize;
            let mut chunk = match self.spares.pop() {
                Some(mut spare) => {
                    spare.clear();
                    spare
                }
                None => Vec::with_capacity(want),
            };
            let got = read_up_to(&mut source, &mut chunk, want)
                .ctx(|| "reading the data to write".into())?;
            if got == 0 {
                break;
            }
            let write_end = position + got as u64;
            if write_end > MAX_OBJECT_SIZE {
                return Err(too_big());
            }
            let logical_end = (block_start + bs).min(record.size.max(write_end));
            if position == block_start && write_end >= logical_end {
                whole_blocks.push((index, chunk));
                if whole_blocks.len() == WRITE_BATCH {
                    self.queue_blocks(name, std::mem::take(&mut whole_blocks))?;
                }
            } else {
                self.finish_placing()?;
                let mut content = self.read_block(name, index)?;
                let from = (position - block_start) as usize;
                let to = (write_end - block_start) as usize;
                if content.len() < to {
                    content.resize(to, 0);
                }
                content[from..to].copy_from_slice(&chunk);
                self.write_block(name, index, content)?;
            }
            position = write_end;
            if got < want {
                break;
            }
        }
        self.queue_blocks(name, whole_blocks)?;
        if let Some(len) = expected
            && position - offset != len
        {
            return Err(Error::Invalid(format!(
                "the data source ended after {} of {len} bytes",
                position - offset
            )));
        }
        record.size = record.size.max(position);
        self.put_record(name, record)
    }

    fn truncate(&mut self, name: &[u8], size: u64) -> Result<()> {
        if size > MAX_OBJECT_SIZE {
            return Err(Error::Invalid(format!("size past {MAX_OBJECT_SIZE} bytes")));
        }
        let mut record = self.record_or_new(name)?;
        if size < record.size {
            let bs = record.block_size as u64;
            let keep = size.div_ceil(bs);
            for item in self.items(&keys::sub_prefix(keys::KIND_BLOCK, name))? {
                if keys::block_index(&item)? >= keep {
                    self.set(item, None)?;
                }
            }
            let tail = (size % bs) as usize;
            if tail > 0 {
                let index = size / bs;
                let mut content = self.read_block(name, index)?;
                if content.len() > tail {
                    content.truncate(tail);
                    self.write_block(name, index, content)?;
                }
            }
        }
        record.size = size;
        self.put_record(name, record)
    }

    /// Turns the overlay into metadata changes: new head versions, and for each replaced
    /// version either an older version kept for a snapshot or freed rows.
    fn finish(&mut self) -> Result<Prepared> {
        let mut ops = Vec::with_capacity(self.overlay.len() * 2);
        let overlay = std::mem::take(&mut self.overlay);
        for (item, value) in overlay {
            let head_key = keys::head_key(self.coll, &item);
            let base = self.reader.head_version(self.coll, &item)?;
            match value {
                Some(value) => ops.push(MetaOp::Put(
                    head_key,
                    keys::Version {
                        birth: self.txg,
                        value: Some(value),
                    }
                    .encode(),
                )),
                None if self.is_clone => ops.push(MetaOp::Put(
                    head_key,
                    keys::Version {
                        birth: self.txg,
                        value: None,
                    }
                    .encode(),
                )),
                None if base.is_some() => ops.push(MetaOp::Delete(head_key)),
                None => {}
            }
            let Some(base) = base else { continue };
            let block = match (&base.value, item.first()) {
                (Some(bp), Some(&keys::KIND_BLOCK)) => Some(BlockPtr::decode(bp)?),
                _ => None,
            };
            if self.latest_snapshot >= base.birth {
                let psize = block.map_or(0, |bp| bp.psize as u64);
                ops.push(MetaOp::Put(
                    keys::old_key(self.coll, &item, base.birth),
                    keys::encode_versioned(self.txg, &base.value),
                ));
                ops.push(MetaOp::Put(
                    keys::dead_key(self.coll, self.txg, base.birth, &item),
                    psize.to_le_bytes().to_vec(),
                ));
            } else if let Some(bp) = block
                && let Some(run) = self.dedup.release(&self.reader, &bp)?
            {
                self.freed.push(run);
            }
        }
        ops.extend(std::mem::take(&mut self.dedup).into_ops());
        Ok(Prepared {
            txg: self.txg,
            ops,
            allocated: self.allocated.values().copied().collect(),
            freed: std::mem::take(&mut self.freed),
            vdevs_written: std::mem::take(&mut self.vdevs_written),
        })
    }
}
