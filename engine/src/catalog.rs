//! The catalog of collections: what a collection, its settings, snapshots and lineage
//! are, how their records are keyed in RocksDB, and the in-memory [`Catalog`] that the
//! store looks collections up in.
//!
//! A collection's record is keyed `c` + id, and its name `C` + name; the catalog is
//! loaded from the records when the store opens. Each open collection carries a gate:
//! transactions enter it shared, while snapshot, rollback, clone and removal enter it
//! alone so that they never see a transaction half-way.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use rocksdb::DB;
use serde::{Deserialize, Serialize};

use super::blkptr::Compression;
use super::error::{Error, Result};
use super::keys::{self, CollId};
use super::view::Reader;

/// Default block size of new objects: 1 MiB, as ZFS's recordsize for large files.
pub const DEFAULT_RECORD_SIZE: u32 = 1 << 20;
/// RocksDB key of the next collection id.
pub(crate) const KEY_NEXT_COLL: &[u8] = b"gnext_collection";

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

/// RocksDB key of a collection's record.
pub(crate) fn coll_info_key(id: CollId) -> Vec<u8> {
    keys::coll_prefix(b'c', id)
}

/// RocksDB key of a collection's name, mapping it to its id.
pub(crate) fn coll_name_key(name: &str) -> Vec<u8> {
    let mut key = vec![b'C'];
    key.extend_from_slice(name.as_bytes());
    key
}

/// A collection in memory: its record and the gate transactions pass.
pub(crate) struct Coll {
    pub info: RwLock<CollectionInfo>,
    /// Transactions hold it shared until committed; snapshot, rollback, clone and
    /// removal hold it exclusively, so they see no transaction half-way.
    gate: RwLock<()>,
    /// Set (under the exclusive gate) once the collection is removed, so that callers
    /// that looked it up before and waited on the gate do not act on it.
    removed: AtomicBool,
}

impl Coll {
    pub fn new(info: CollectionInfo) -> Self {
        Coll {
            info: RwLock::new(info),
            gate: RwLock::new(()),
            removed: AtomicBool::new(false),
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

    /// Marks the collection removed; the caller holds the exclusive gate.
    pub fn mark_removed(&self) {
        self.removed.store(true, Ordering::Release);
    }

    /// A copy of its record.
    pub fn info(&self) -> CollectionInfo {
        self.info.read().expect("collection lock poisoned").clone()
    }
}

/// The open collections, by name and by id.
#[derive(Default)]
pub(crate) struct Catalog {
    pub by_name: BTreeMap<String, CollId>,
    pub by_id: HashMap<CollId, Arc<Coll>>,
}

impl Catalog {
    /// Loads every collection record from the metadata.
    pub fn load(db: &DB) -> Result<Catalog> {
        let mut catalog = Catalog::default();
        let reader = Reader::new(db);
        for pair in reader.prefix(b"c") {
            let (_, value) = pair?;
            let info: CollectionInfo = serde_json::from_slice(&value)
                .map_err(|e| Error::Corrupt(format!("collection record: {e}")))?;
            catalog.by_name.insert(info.name.clone(), info.id);
            catalog.by_id.insert(info.id, Arc::new(Coll::new(info)));
        }
        Ok(catalog)
    }
}

/// Checks a collection or snapshot name.
pub(crate) fn check_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 255 || name.contains(['@', '/', '\0']) {
        return Err(Error::Invalid(format!(
            "{what} name {name:?} must be 1-255 bytes without '@', '/' or NUL"
        )));
    }
    Ok(())
}
