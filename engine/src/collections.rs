//! Collections, snapshots and clones, as ZFS has datasets, snapshots and clones: creating
//! and removing collections, taking, destroying and rolling back to snapshots, cloning
//! a snapshot into a new collection, and the space each snapshot holds.
//!
//! Each change is one metadata transaction through the committer; the blocks it frees
//! go back to the allocator in the same batch. A snapshot copies nothing: it is a txg in
//! the collection's record, and the older versions it still sees are kept until it is
//! destroyed (see [`super::view`]).

use std::sync::Arc;

use super::alloc::Run;
use super::blkptr::{BlockPtr, Compression};
use super::catalog::{
    Coll, CollectionInfo, CollectionSettings, KEY_NEXT_COLL, Origin, SnapshotInfo, check_name,
    coll_info_key, coll_name_key,
};
use super::commit::{MetaOp, Prepared};
use super::dedup::DedupChanges;
use super::error::{Error, Result};
use super::keys::{self, CollId};
use super::store::{Store, now_ns};
use super::vdev;
use super::view::{Lineage, Reader};

/// Largest block size a collection may have.
const MAX_RECORD_SIZE: u32 = 16 << 20;

impl Store {
    /// The open collection named `name`.
    pub(crate) fn coll(&self, name: &str) -> Result<Arc<Coll>> {
        let catalog = self.catalog.read().expect("catalog lock poisoned");
        catalog
            .by_name
            .get(name)
            .and_then(|id| catalog.by_id.get(id))
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("collection {name:?}")))
    }

    /// The open collection with id `id`, which metadata references (so it must exist).
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
        coll.mark_removed();
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
}

/// Calls `f` for every block pointer a collection itself holds (head and older versions).
fn for_each_own_block(
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
