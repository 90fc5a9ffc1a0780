//! What a copy of a PG receives to catch up with its primary (objects, log
//! entries, a backfill's list of names, a rewind point, missing marks), installed
//! in one engine transaction.

use std::collections::HashSet;

use lcpfs_core::pg::PgId;
use lcpfs_engine::{self as engine, Store, Transaction};
use lcpfs_proto::ObjectState;

use super::entry::Entry;

use super::objects::names;
use super::store::{
    DUPS_OBJECT, LOG_OBJECT, MISSING_OBJECT, PENDING_OBJECT, SHARD_XATTR, collection, encode_entry,
    mark_missing, object_key, requests_of,
};

/// What a copy of a PG receives to catch up, installed in one transaction.
#[derive(Debug, Default)]
pub struct Delivery {
    /// Objects as the sender holds them (installed whole; no longer missing).
    pub objects: Vec<ObjectState>,
    /// Log entries to record after the objects.
    pub entries: Vec<Entry>,
    /// Backfill: every object not named here is removed, and the copy takes the
    /// entries as its whole log.
    pub keep: Option<Vec<Vec<u8>>>,
    /// Log entries from this version on are dropped first (they diverged).
    pub rewind_from: Option<u64>,
    /// Erasure-coded pools: the shard position the copy holds.
    pub shard: Option<u32>,
    /// Objects whose newest data the copy does not hold after this delivery: the
    /// entries name their mutations, and their data follows later.
    pub missing: Vec<Vec<u8>>,
}

impl Delivery {
    /// Whole objects only.
    pub fn objects(objects: Vec<ObjectState>) -> Self {
        Delivery {
            objects,
            ..Delivery::default()
        }
    }
}

/// The objects a backfill from a copy names: those the copy holds and those it
/// misses (their newest data is elsewhere), sorted, each once.
pub fn backfill_names<'a>(
    mut held: Vec<Vec<u8>>,
    missing: impl IntoIterator<Item = &'a Vec<u8>>,
) -> Vec<Vec<u8>> {
    held.extend(missing.into_iter().cloned());
    held.sort_unstable();
    held.dedup();
    held
}

/// Installs a delivery in this OSD's copy of the PG, in one transaction.
pub fn install(store: &Store, pg: PgId, delivery: &Delivery) -> engine::Result<()> {
    let Delivery {
        objects,
        entries,
        keep,
        rewind_from,
        shard,
        missing,
    } = delivery;
    let view = store.head(&collection(pg))?;
    let mut txn = Transaction::new(collection(pg));
    if let Some(shard) = shard {
        txn.create(LOG_OBJECT, false)
            .set_xattr(LOG_OBJECT, SHARD_XATTR, &shard.to_le_bytes());
        if keep.is_some() && view.exists(PENDING_OBJECT)? {
            txn.remove(PENDING_OBJECT);
        }
    }
    let had_missing = view.exists(MISSING_OBJECT)?;
    for object in objects {
        if had_missing && keep.is_none() {
            txn.omap_rm(MISSING_OBJECT, vec![object.name.clone()]);
        }
        put_object(&mut txn, &view, object)?;
    }
    if let Some(keep) = keep {
        let kept: HashSet<&Vec<u8>> = keep
            .iter()
            .chain(objects.iter().map(|object| &object.name))
            .collect();
        for name in names(store, pg)? {
            if !kept.contains(&name) {
                txn.remove(&object_key(&name));
            }
        }
        // A backfilled copy takes the source's whole log, and nothing of its own:
        // not even the request ids of writes the source may never have had.
        txn.create(LOG_OBJECT, false).omap_clear(LOG_OBJECT);
        txn.create(DUPS_OBJECT, false).omap_clear(DUPS_OBJECT);
        if had_missing {
            txn.omap_clear(MISSING_OBJECT);
        }
    } else if let Some(from) = rewind_from {
        // Diverged writes were never acknowledged: a retry of one must apply it.
        for object in [LOG_OBJECT, DUPS_OBJECT] {
            txn.create(object, false).omap_rm_range(
                object,
                &from.to_be_bytes(),
                &u64::MAX.to_be_bytes(),
            );
        }
    }
    if !missing.is_empty() {
        mark_missing(&mut txn, missing);
    }
    if !entries.is_empty() {
        let log = entries.iter().map(encode_entry).collect();
        txn.create(LOG_OBJECT, false).omap_set(LOG_OBJECT, log);
        let requests = requests_of(entries);
        if !requests.is_empty() {
            txn.create(DUPS_OBJECT, false)
                .omap_set(DUPS_OBJECT, requests);
        }
    }
    if txn.is_empty() {
        return Ok(());
    }
    store.commit(txn).map(|_| ())
}

/// Adds to `txn` what makes the object in `view`'s collection exactly `object`
/// (its data, xattrs and omap; removed when it does not exist).
pub(super) fn put_object(
    txn: &mut Transaction,
    view: &engine::View<'_>,
    object: &ObjectState,
) -> engine::Result<()> {
    let key = object_key(&object.name);
    let present = view.exists(&key)?;
    if !object.exists {
        if present {
            txn.remove(&key);
        }
        return Ok(());
    }
    txn.write_full(&key, object.data.clone());
    if present {
        for (old, _) in view.xattrs(&key)? {
            if !object.xattrs.iter().any(|pair| pair.key.as_bytes() == old) {
                txn.rm_xattr(&key, &old);
            }
        }
    }
    for pair in &object.xattrs {
        txn.set_xattr(&key, pair.key.as_bytes(), &pair.value);
    }
    if present {
        txn.omap_clear(&key);
    }
    if !object.omap.is_empty() {
        txn.omap_set(
            &key,
            object
                .omap
                .iter()
                .map(|entry| (entry.key.clone(), entry.value.clone()))
                .collect(),
        );
    }
    Ok(())
}
