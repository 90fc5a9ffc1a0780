//! Reading objects: a [`View`] of a collection's head or of one of its snapshots, and
//! what it answers (existence, stat, data, listings, xattrs, omap).
//!
//! Every call reads its metadata on one consistent RocksDB snapshot, so it sees each
//! transaction whole or not at all; a data read also holds an allocator pin, so no block
//! it reads can be freed and rewritten under it. A view of a snapshot that has since
//! been destroyed reads nothing.

use std::collections::BTreeMap;

use serde::Serialize;

use super::blkptr::BlockPtr;
use super::catalog::{CollectionInfo, coll_info_key};
use super::error::{Error, IoContext, Result};
use super::keys::{self, ObjectRecord};
use super::parallel::parallel_map;
use super::store::Store;
use super::view::{Lineage, Reader};

/// Bytes beyond which a read streams from the disks past the cache (see
/// `Shared::stream_blocks`); shorter reads go through it.
const STREAM_BYTES: u64 = 8 << 20;

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

impl Store {
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
            let blocks = parallel_map(pointers, |(index, bp)| {
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
