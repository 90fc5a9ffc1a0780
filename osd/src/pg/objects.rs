//! Reading a PG's objects from this OSD's copy: client reads, listings, whole
//! object states for recovery, shard ranges of erasure-coded objects, and the
//! scrub maps (sizes, xattrs and content digests) that scrub compares.

use lcpfs_core::pg::PgId;
use lcpfs_engine::{self as engine, ListOptions, Store};
use lcpfs_proto::object_op::Op;
use lcpfs_proto::{
    KeyValue, ListEntry, ObjectOp, ObjectStat, ObjectState, OmapEntries, OmapEntry, OpResult,
    ReadShardReply, ScrubObject, op_result,
};

use super::store::{
    OBJECT_PREFIX, SIZE_XATTR, VERSION_XATTR, collection, is_mutation, marked_missing,
    number_xattr, object_key, shard,
};
use crate::error::OsdError;

/// Bytes `offset..offset + length` of this copy's shard of an erasure-coded
/// object (padded with zeros), with the object's size and the version that last
/// changed it. A shard the copy marks missing is refused, like [`pull`]: the
/// reader takes another shard instead of an old or absent one.
pub fn read_shard(
    store: &Store,
    pg: PgId,
    name: &[u8],
    offset: u64,
    length: u64,
) -> Result<ReadShardReply, OsdError> {
    let view = store.head(&collection(pg))?;
    refuse_missing(&view, pg, name)?;
    let key = object_key(name);
    if !view.exists(&key)? {
        return Ok(ReadShardReply::default());
    }
    let mut data = view.read(&key, offset, length)?;
    data.resize(length as usize, 0);
    Ok(ReadShardReply {
        exists: true,
        data,
        size: number_xattr(&view, &key, SIZE_XATTR)?.unwrap_or(0),
        version: number_xattr(&view, &key, VERSION_XATTR)?.unwrap_or(0),
    })
}

/// An object's size: its engine size, or for a shard of an erasure-coded object,
/// the object's size kept beside the shard.
fn logical_size(view: &engine::View<'_>, key: &[u8], stored: u64) -> engine::Result<u64> {
    Ok(number_xattr(view, key, SIZE_XATTR)?.unwrap_or(stored))
}

/// Runs the reads of a request (after its writes); one result per read. Reading
/// an object that does not exist fails with [`OsdError::NoObject`].
pub fn read(
    store: &Store,
    pg: PgId,
    name: &[u8],
    ops: &[ObjectOp],
) -> Result<Vec<OpResult>, OsdError> {
    let key = object_key(name);
    let view = store.head(&collection(pg))?;
    let reads = ops
        .iter()
        .filter_map(|op| op.op.as_ref())
        .any(|op| !is_mutation(op));
    if reads && !view.exists(&key)? {
        return Err(OsdError::NoObject(name.to_vec()));
    }
    let mut results = Vec::new();
    for op in ops.iter().filter_map(|op| op.op.as_ref()) {
        let result = match op {
            Op::Read(range) => {
                let length = if range.length == 0 {
                    u64::MAX
                } else {
                    range.length
                };
                op_result::Result::Data(view.read(&key, range.offset, length)?)
            }
            Op::Stat(_) => {
                let stat = view.stat(&key)?;
                op_result::Result::Stat(ObjectStat {
                    size: logical_size(&view, &key, stat.size)?,
                    mtime_ns: stat.mtime_ns,
                })
            }
            Op::GetXattr(xattr) => match view.xattr(&key, xattr.as_bytes())? {
                Some(value) => op_result::Result::Xattr(value),
                None => {
                    return Err(OsdError::NotFound(format!(
                        "not found: xattr {xattr:?} of {}",
                        String::from_utf8_lossy(name)
                    )));
                }
            },
            Op::OmapGet(get) => {
                let mut entries = Vec::new();
                for wanted in &get.keys {
                    if let Some(value) = view.omap_get(&key, wanted)? {
                        entries.push(OmapEntry {
                            key: wanted.clone(),
                            value,
                        });
                    }
                }
                op_result::Result::Omap(OmapEntries { entries })
            }
            Op::OmapRange(range) => op_result::Result::Omap(OmapEntries {
                entries: omap_range(&view, &key, range)?,
            }),
            _ => continue,
        };
        results.push(OpResult {
            result: Some(result),
        });
    }
    Ok(results)
}

/// The omap entries a range read asks for: keys after `start_after` that start
/// with `prefix`, up to the limit (0: no limit).
fn omap_range(
    view: &engine::View<'_>,
    key: &[u8],
    range: &lcpfs_proto::OmapRange,
) -> engine::Result<Vec<OmapEntry>> {
    let limit = range.limit as usize;
    let full = |entries: &Vec<OmapEntry>| limit > 0 && entries.len() >= limit;
    let mut entries = Vec::new();
    // Scanning starts after `start_after`, or at the prefix when that comes later
    // (a key equal to the prefix is the first of them).
    let mut after = range.start_after.clone();
    if range.start_after < range.prefix {
        if let Some(value) = view.omap_get(key, &range.prefix)? {
            entries.push(OmapEntry {
                key: range.prefix.clone(),
                value,
            });
        }
        after = range.prefix.clone();
    }
    while !full(&entries) {
        let page = view.omap_range(key, (!after.is_empty()).then_some(&after[..]), None, 256)?;
        let done = page.len() < 256;
        for (entry_key, value) in page {
            if !entry_key.starts_with(&range.prefix) || full(&entries) {
                return Ok(entries);
            }
            after.clone_from(&entry_key);
            entries.push(OmapEntry {
                key: entry_key,
                value,
            });
        }
        if done {
            break;
        }
    }
    Ok(entries)
}

/// The size of an object, or 0 if it (or this OSD's copy of the PG) does not exist.
pub fn size(store: &Store, pg: PgId, name: &[u8]) -> engine::Result<u64> {
    let view = match store.head(&collection(pg)) {
        Ok(view) => view,
        Err(engine::Error::NotFound(_)) => return Ok(0),
        Err(error) => return Err(error),
    };
    let key = object_key(name);
    match view.stat(&key) {
        Ok(stat) => logical_size(&view, &key, stat.size),
        Err(engine::Error::NotFound(_)) => Ok(0),
        Err(error) => Err(error),
    }
}

/// A PG's objects after `start_after`, sorted by name.
pub fn list(
    store: &Store,
    pg: PgId,
    start_after: &[u8],
    limit: usize,
) -> engine::Result<Vec<ListEntry>> {
    let view = match store.head(&collection(pg)) {
        Ok(view) => view,
        Err(engine::Error::NotFound(_)) => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    let options = ListOptions {
        prefix: OBJECT_PREFIX.to_vec(),
        start_after: (!start_after.is_empty()).then(|| object_key(start_after)),
        limit,
    };
    view.list(&options)?
        .into_iter()
        .map(|entry| {
            Ok(ListEntry {
                size: logical_size(&view, &entry.name_bytes, entry.size)?,
                name: entry.name_bytes[OBJECT_PREFIX.len()..].to_vec(),
                mtime_ns: entry.mtime_ns,
            })
        })
        .collect()
}

/// Whole objects of this copy for another OSD to take (recovery, repair). An
/// object the copy marks missing is refused: what it holds of it is older than
/// its log, and a copy that took it (an absent object, or an old version) would
/// lose the newest write.
pub fn pull(store: &Store, pg: PgId, names: &[Vec<u8>]) -> Result<Vec<ObjectState>, OsdError> {
    let view = store.head(&collection(pg))?;
    let mut objects = Vec::with_capacity(names.len());
    for name in names {
        refuse_missing(&view, pg, name)?;
        objects.push(state(store, pg, name)?);
    }
    Ok(objects)
}

/// Fails with [`OsdError::Behind`] when the copy seen through `view` marks object
/// `name` missing.
fn refuse_missing(view: &engine::View<'_>, pg: PgId, name: &[u8]) -> Result<(), OsdError> {
    if marked_missing(view, name)? {
        return Err(OsdError::Behind(format!(
            "this copy of PG {pg} misses the newest data of object '{}'",
            String::from_utf8_lossy(name)
        )));
    }
    Ok(())
}

/// An object's current state in this OSD's copy of the PG.
pub fn state(store: &Store, pg: PgId, name: &[u8]) -> engine::Result<ObjectState> {
    let key = object_key(name);
    let view = store.head(&collection(pg))?;
    if !view.exists(&key)? {
        return Ok(ObjectState {
            name: name.to_vec(),
            exists: false,
            data: Vec::new(),
            xattrs: Vec::new(),
            omap: Vec::new(),
        });
    }
    let xattrs = view
        .xattrs(&key)?
        .into_iter()
        .map(|(key, value)| KeyValue {
            key: String::from_utf8_lossy(&key).into_owned(),
            value,
        })
        .collect();
    Ok(ObjectState {
        name: name.to_vec(),
        exists: true,
        data: view.read(&key, 0, u64::MAX)?,
        xattrs,
        omap: view
            .omap_range(&key, None, None, 0)?
            .into_iter()
            .map(|(key, value)| OmapEntry { key, value })
            .collect(),
    })
}

/// Every object name of this OSD's copy of the PG.
pub fn names(store: &Store, pg: PgId) -> engine::Result<Vec<Vec<u8>>> {
    Ok(list(store, pg, &[], 0)?
        .into_iter()
        .map(|entry| entry.name)
        .collect())
}

/// This OSD's scrub view of the PG's objects after `start_after` up to and
/// including `last` (empty: no end), at most `limit` (0: all). A copy that cannot
/// be read (a checksum error the engine could not heal) is reported with its error,
/// not as a failure of the whole scrub. The shards of an erasure-coded object hold
/// different bytes: their digests cover what they share (sizes and xattrs, which
/// include the object's version), and a deep scrub reads every byte of them (the
/// engine verifies each block's checksum) without hashing it.
pub fn scrub_map(
    store: &Store,
    pg: PgId,
    start_after: &[u8],
    last: &[u8],
    limit: usize,
    deep: bool,
) -> engine::Result<Vec<ScrubObject>> {
    let sharded = shard(store, pg)?.is_some();
    let mut objects = Vec::new();
    for entry in list(store, pg, start_after, limit)? {
        if !last.is_empty() && entry.name.as_slice() > last {
            break;
        }
        let (digest, error) = match digest(store, pg, &entry.name, deep, !sharded) {
            Ok(digest) => (digest, String::new()),
            Err(engine::Error::DataLoss(what)) => (Vec::new(), format!("read error: {what}")),
            Err(error) => return Err(error),
        };
        objects.push(ScrubObject {
            name: entry.name,
            size: entry.size,
            digest,
            error,
        });
    }
    Ok(objects)
}

/// BLAKE3 over an object's xattrs and, when `deep`, its omap and (with `data`) its
/// data, which a deep scrub reads in any case.
fn digest(store: &Store, pg: PgId, name: &[u8], deep: bool, data: bool) -> engine::Result<Vec<u8>> {
    const CHUNK: u64 = 4 << 20;
    let key = object_key(name);
    let view = store.head(&collection(pg))?;
    let mut hasher = blake3::Hasher::new();
    let field = |hasher: &mut blake3::Hasher, bytes: &[u8]| {
        hasher.update(&(bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    };
    for (key, value) in view.xattrs(&key)? {
        field(&mut hasher, &key);
        field(&mut hasher, &value);
    }
    if deep {
        let size = view.stat(&key)?.size;
        let mut offset = 0;
        while offset < size {
            let bytes = view.read(&key, offset, CHUNK)?;
            if data {
                hasher.update(&bytes);
            }
            offset += CHUNK;
        }
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = view.omap_range(&key, after.as_deref(), None, 1024)?;
            let done = page.len() < 1024;
            for (key, value) in page {
                field(&mut hasher, &key);
                field(&mut hasher, &value);
                after = Some(key);
            }
            if done {
                break;
            }
        }
    }
    Ok(hasher.finalize().as_bytes().to_vec())
}
