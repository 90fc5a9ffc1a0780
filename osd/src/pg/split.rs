//! Splitting this OSD's copy of a PG when its pool's pg_num grows (Ceph's PG
//! split). Object names hash to PG seeds by `stable_mod` (see
//! [`lcpfs_core::pg`]), so after a growth every object either stays in its PG or
//! moves to one of that PG's children: the split moves the objects, locally, into
//! the children's collections, and gives each child the parent's history. Peering
//! and backfill then carry the children to the OSDs CRUSH chooses for them.
//!
//! Each child starts with a copy of the parent's whole log (versions, request ids
//! for retries), its markers (accepted and activated intervals, shard position,
//! scrub stamps), the missing marks and pending erasure-coded write of its own
//! objects. The log keeps the entries of objects that went to other PGs: peering
//! compares the children's logs exactly as it compared the parent's, and an entry
//! of an object a PG does not hold reads, to recovery, as a removal (the object
//! is absent on every copy). Trimming drops them in time.
//!
//! The split is idempotent and safe to stop at any point: objects are copied to a
//! child before they are removed from the parent, and the pg_num the copy is split
//! for is recorded in the parent last. An OSD splits every copy it holds before it
//! acts on a map with the larger pg_num (and on start, before it serves).

use std::collections::{BTreeMap, BTreeSet};

use lcpfs_core::pg::{PgId, hash_to_pg_seed, object_hash, split_children};
use lcpfs_engine::{self as engine, Store, Transaction};
use lcpfs_proto::ObjectState;
use prost::Message;

use super::delivery::put_object;
use super::entry::Entry;
use super::objects::{names, state};
use super::store::{
    DUPS_OBJECT, LOG_OBJECT, MISSING_OBJECT, PENDING_OBJECT, collection, ensure, mark_missing,
    missing, object_key, pending,
};

/// Xattr of the log object: the pool's pg_num this copy's objects are sorted for
/// (4 bytes, little endian; absent in copies made before splits were recorded).
pub(super) const PG_NUM_XATTR: &[u8] = b"pg_num";

/// Objects, and bytes of them, moved to a child per pair of transactions.
const BATCH_OBJECTS: usize = 64;
const BATCH_BYTES: usize = 64 << 20;

/// The pg_num this copy of the PG is split for (0: not recorded).
pub fn split_for(store: &Store, pg: PgId) -> engine::Result<u32> {
    let view = store.head(&collection(pg))?;
    if !view.exists(LOG_OBJECT)? {
        return Ok(0);
    }
    Ok(view
        .xattr(LOG_OBJECT, PG_NUM_XATTR)?
        .and_then(|bytes| bytes.try_into().ok())
        .map_or(0, u32::from_le_bytes))
}

/// Adds to `txn` the record that the copy is split for `pg_num`.
pub(super) fn record_split(txn: &mut Transaction, pg_num: u32) {
    txn.create(LOG_OBJECT, false)
        .set_xattr(LOG_OBJECT, PG_NUM_XATTR, &pg_num.to_le_bytes());
}

/// Splits this OSD's copy of `pg` for a pool of `pg_num` PGs (`compression`: the
/// pool's, for the children's collections). Returns the children that received
/// objects or history; nothing when the copy is already split for `pg_num`.
pub fn split(
    store: &Store,
    pg: PgId,
    pg_num: u32,
    compression: Option<&str>,
) -> engine::Result<Vec<PgId>> {
    let recorded = split_for(store, pg)?;
    if recorded == pg_num {
        return Ok(Vec::new());
    }
    let home = |name: &[u8]| PgId::new(pg.pool, hash_to_pg_seed(object_hash(name), pg_num));
    let mut moved: BTreeMap<PgId, Vec<Vec<u8>>> = BTreeMap::new();
    for name in names(store, pg)? {
        let child = home(&name);
        if child != pg {
            moved.entry(child).or_default().push(name);
        }
    }
    let mut missing_in: BTreeMap<PgId, Vec<Vec<u8>>> = BTreeMap::new();
    for name in missing(store, pg)? {
        let child = home(&name);
        if child != pg {
            missing_in.entry(child).or_default().push(name);
        }
    }
    let pending = pending(store, pg)?;
    let pending_in = pending
        .as_ref()
        .and_then(|write| write.entry.clone())
        .map(|entry| home(&Entry::from(entry).name))
        .filter(|child| *child != pg);
    // Every child gets the parent's history, also one that receives no object:
    // its copies' logs must still be comparable with the parent's.
    let mut children: BTreeSet<PgId> = if (1..pg_num).contains(&recorded) {
        split_children(pg, recorded, pg_num).into_iter().collect()
    } else {
        BTreeSet::new()
    };
    children.extend(moved.keys().chain(missing_in.keys()).copied());
    children.extend(pending_in);

    let view = store.head(&collection(pg))?;
    let log = copy_of(&view, LOG_OBJECT)?;
    let dups = copy_of(&view, DUPS_OBJECT)?;
    for &child in &children {
        ensure(store, child, compression, pg_num)?;
        let mut txn = Transaction::new(collection(child));
        for (object, (xattrs, omap)) in [(LOG_OBJECT, &log), (DUPS_OBJECT, &dups)] {
            txn.create(object, false);
            for (key, value) in xattrs {
                txn.set_xattr(object, key, value);
            }
            if !omap.is_empty() {
                txn.omap_set(object, omap.clone());
            }
        }
        record_split(&mut txn, pg_num);
        if let Some(names) = missing_in.get(&child) {
            mark_missing(&mut txn, names);
        }
        if let Some(write) = pending.as_ref().filter(|_| pending_in == Some(child)) {
            txn.write_full(PENDING_OBJECT, write.encode_to_vec());
        }
        store.commit(txn)?;
        let names = moved.get(&child).map_or(&[][..], Vec::as_slice);
        let mut next = 0;
        while next < names.len() {
            let (mut batch, mut rotten, mut bytes) = (Vec::new(), Vec::new(), 0);
            while next < names.len()
                && batch.len() + rotten.len() < BATCH_OBJECTS
                && bytes < BATCH_BYTES
            {
                let name = &names[next];
                next += 1;
                match state(store, pg, name) {
                    Ok(object) => {
                        bytes += object.data.len();
                        batch.push(object);
                    }
                    // Rotten beyond what this OSD's own disks can heal: the child
                    // gets it as missing, and recovery brings it from another
                    // copy. Failing instead would keep the PG from ever splitting.
                    Err(engine::Error::DataLoss(why)) => {
                        tracing::warn!(%pg, %child, "an unreadable object moves as missing: {why}");
                        rotten.push(name.clone());
                    }
                    Err(error) => return Err(error),
                }
            }
            move_objects(store, pg, child, &batch, &rotten)?;
        }
    }
    let mut txn = Transaction::new(collection(pg));
    let gone: Vec<Vec<u8>> = missing_in.into_values().flatten().collect();
    if !gone.is_empty() {
        txn.omap_rm(MISSING_OBJECT, gone);
    }
    if pending_in.is_some() {
        txn.remove(PENDING_OBJECT);
    }
    record_split(&mut txn, pg_num);
    store.commit(txn)?;
    Ok(children.into_iter().collect())
}

/// The xattrs and omap of one of the PG's own objects (the log, the request
/// ids), empty when it does not exist.
type Copy = (Vec<(Vec<u8>, Vec<u8>)>, Vec<(Vec<u8>, Vec<u8>)>);

fn copy_of(view: &engine::View<'_>, object: &[u8]) -> engine::Result<Copy> {
    if !view.exists(object)? {
        return Ok((Vec::new(), Vec::new()));
    }
    let xattrs = view
        .xattrs(object)?
        .into_iter()
        .filter(|(key, _)| key != PG_NUM_XATTR)
        .collect();
    Ok((xattrs, view.omap_range(object, None, None, 0)?))
}

/// Moves objects of `pg` to `child`: copied there, then removed here. The
/// `rotten` ones, which could not be read, are marked missing there instead.
fn move_objects(
    store: &Store,
    pg: PgId,
    child: PgId,
    objects: &[ObjectState],
    rotten: &[Vec<u8>],
) -> engine::Result<()> {
    let view = store.head(&collection(child))?;
    let mut txn = Transaction::new(collection(child));
    for object in objects {
        put_object(&mut txn, &view, object)?;
    }
    if !rotten.is_empty() {
        mark_missing(&mut txn, rotten);
    }
    store.commit(txn)?;
    let mut txn = Transaction::new(collection(pg));
    for name in objects.iter().map(|object| &object.name).chain(rotten) {
        txn.remove(&object_key(name));
    }
    store.commit(txn).map(|_| ())
}

#[cfg(test)]
mod tests {
    use lcpfs_proto::ObjectOp;
    use lcpfs_proto::object_op::Op;

    use super::*;
    use crate::pg::{
        Delivery, activated, apply, install, load, log_since, set_accepted, set_activated,
        test_store,
    };

    const POOL: u32 = 1;

    fn home(name: &[u8], pg_num: u32) -> PgId {
        PgId::new(POOL, hash_to_pg_seed(object_hash(name), pg_num))
    }

    /// PG 1.1 of a pool of 2 PGs, holding `count` objects (one write each, with
    /// a request id) and a missing mark for one of them.
    fn parent(store: &Store, count: usize) -> (PgId, Vec<Vec<u8>>) {
        let pg = PgId::new(POOL, 1);
        ensure(store, pg, None, 2).unwrap();
        let names: Vec<Vec<u8>> = (0..)
            .map(|n| format!("object-{n}").into_bytes())
            .filter(|name| home(name, 2) == pg)
            .take(count)
            .collect();
        for (version, name) in (1..).zip(&names) {
            let entry = Entry {
                version,
                name: name.clone(),
                client: "client.a".into(),
                tid: version,
                epoch: 7,
            };
            let ops = [ObjectOp {
                op: Some(Op::WriteFull(name.repeat(3))),
            }];
            apply(store, pg, &entry, &ops, 4096).unwrap();
        }
        set_accepted(store, pg, 7).unwrap();
        set_activated(store, pg, 7).unwrap();
        let marked = Delivery {
            missing: vec![names[0].clone()],
            ..Delivery::default()
        };
        install(store, pg, &marked).unwrap();
        (pg, names)
    }

    /// Every object is in exactly its PG under `pg_num`, with its data.
    fn assert_sorted(store: &Store, names: &[Vec<u8>], pg_num: u32, pgs: &[PgId]) {
        for name in names {
            let holders: Vec<PgId> = pgs
                .iter()
                .copied()
                .filter(|pg| state(store, *pg, name).unwrap().exists)
                .collect();
            assert_eq!(holders, vec![home(name, pg_num)], "{name:?}");
            let held = state(store, home(name, pg_num), name).unwrap();
            assert_eq!(held.data, name.repeat(3));
        }
    }

    #[test]
    fn a_split_moves_each_object_to_its_child_with_the_parents_history() {
        let dir = tempfile::tempdir().unwrap();
        let store = test_store(dir.path());
        let (pg, names) = parent(&store, 150);
        let children = split(&store, pg, 8, None).unwrap();
        assert_eq!(children, split_children(pg, 2, 8));
        let all: Vec<PgId> = [pg].into_iter().chain(children.iter().copied()).collect();
        assert_sorted(&store, &names, 8, &all);

        let (parent_log, _) = log_since(&store, pg, 0).unwrap();
        for &child in &children {
            assert_eq!(split_for(&store, child).unwrap(), 8);
            let (log, _) = log_since(&store, child, 0).unwrap();
            assert_eq!(log, parent_log, "{child} starts with the parent's log");
            let loaded = load(&store, child).unwrap();
            assert_eq!(loaded.last, names.len() as u64);
            assert_eq!(loaded.accepted_interval, 7);
            assert_eq!(activated(&store, child).unwrap(), 7);
            // A retry of any request the parent applied is recognised.
            assert_eq!(loaded.applied("client.a", 3), Some(3));
        }
        // The missing mark went with its object.
        let marked = home(&names[0], 8);
        for &pg in &all {
            assert_eq!(
                missing(&store, pg).unwrap().contains(&names[0]),
                pg == marked,
                "{pg}"
            );
        }
        assert_eq!(split_for(&store, pg).unwrap(), 8);
        assert!(split(&store, pg, 8, None).unwrap().is_empty(), "done once");
    }

    #[test]
    fn a_split_stopped_half_way_completes_when_run_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = test_store(dir.path());
        let (pg, names) = parent(&store, 150);
        let children = split(&store, pg, 4, None).unwrap();
        // As if the OSD stopped after copying a batch to the child, before it
        // removed the batch from the parent and recorded the split.
        let moved: Vec<ObjectState> = names
            .iter()
            .filter(|name| home(name, 4) != pg)
            .take(10)
            .map(|name| state(&store, home(name, 4), name).unwrap())
            .collect();
        assert!(!moved.is_empty());
        install(&store, pg, &Delivery::objects(moved)).unwrap();
        let mut txn = Transaction::new(collection(pg));
        record_split(&mut txn, 2);
        store.commit(txn).unwrap();

        assert_eq!(split(&store, pg, 4, None).unwrap(), children);
        let all: Vec<PgId> = [pg].into_iter().chain(children).collect();
        assert_sorted(&store, &names, 4, &all);
    }

    #[test]
    fn an_unreadable_object_moves_to_its_child_as_missing() {
        let dir = tempfile::tempdir().unwrap();
        let store = test_store(dir.path());
        let (pg, names) = parent(&store, 40);
        let rotten = (0..)
            .map(|n| format!("rotten-{n}").into_bytes())
            .find(|name| home(name, 2) == pg && home(name, 8) != pg)
            .unwrap();
        let data = crate::pg::incompressible(8192, 7);
        let entry = Entry {
            version: 1000,
            name: rotten.clone(),
            client: "client.a".into(),
            tid: 1000,
            epoch: 7,
        };
        let ops = [ObjectOp {
            op: Some(Op::WriteFull(data.clone())),
        }];
        apply(&store, pg, &entry, &ops, 4096).unwrap();
        drop(store);
        crate::pg::rot_on_disk(dir.path(), &data);

        let store = Store::open(&dir.path().join("store"), &Default::default()).unwrap();
        let children = split(&store, pg, 8, None).unwrap();
        let all: Vec<PgId> = [pg].into_iter().chain(children).collect();
        assert_sorted(&store, &names, 8, &all);
        let child = home(&rotten, 8);
        for &pg in &all {
            assert!(!state(&store, pg, &rotten).unwrap().exists, "{pg}");
            assert_eq!(
                missing(&store, pg).unwrap().contains(&rotten),
                pg == child,
                "{pg}: recovery brings the object from another copy"
            );
        }
        assert_eq!(split_for(&store, pg).unwrap(), 8);
    }

    #[test]
    fn splits_compose_across_growths_missed_while_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let store = test_store(dir.path());
        let (pg, names) = parent(&store, 100);
        // 2 → 6 → 16 seen at once.
        let children = split(&store, pg, 16, None).unwrap();
        assert_eq!(children, split_children(pg, 2, 16));
        let all: Vec<PgId> = [pg].into_iter().chain(children).collect();
        assert_sorted(&store, &names, 16, &all);
    }
}
