//! Random operations against the engine and against a trivially correct in-memory model,
//! compared after every step and again after closing and reopening the store: data,
//! xattrs, omap, listings, snapshots, rollbacks and clones, with and without dedup.

use std::collections::BTreeMap;
use std::path::Path;

use lcpfs_engine::{
    CollectionSettings, Compression, CreateSpec, DiskSource, ListOptions, OpenOptions, Store,
    Transaction, VdevKind,
};
use proptest::prelude::*;

#[derive(Clone, Debug, Default, PartialEq)]
struct Object {
    data: Vec<u8>,
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    omap: BTreeMap<Vec<u8>, Vec<u8>>,
}

type Collection = BTreeMap<Vec<u8>, Object>;

#[derive(Default)]
struct Model {
    colls: BTreeMap<String, Collection>,
    snapshots: BTreeMap<(String, String), Collection>,
    /// Snapshot names per collection, oldest first.
    order: BTreeMap<String, Vec<String>>,
    clones: usize,
}

#[derive(Clone, Debug)]
enum Step {
    Write {
        obj: u8,
        offset: u16,
        len: u16,
        fill: u8,
    },
    WriteFull {
        obj: u8,
        len: u16,
        fill: u8,
    },
    Append {
        obj: u8,
        len: u16,
        fill: u8,
    },
    Truncate {
        obj: u8,
        size: u16,
    },
    Remove {
        obj: u8,
    },
    Xattr {
        obj: u8,
        key: u8,
        value: u8,
    },
    Omap {
        obj: u8,
        key: u8,
        value: Option<u8>,
    },
    Snapshot,
    Rollback,
    DestroyOldestSnapshot,
    Clone,
    Reopen,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0u8..6, 0u16..20_000, 0u16..12_000, any::<u8>())
            .prop_map(|(obj, offset, len, fill)| Step::Write { obj, offset, len, fill }),
        2 => (0u8..6, 0u16..12_000, any::<u8>()).prop_map(|(obj, len, fill)| Step::WriteFull { obj, len, fill }),
        2 => (0u8..6, 0u16..9_000, any::<u8>()).prop_map(|(obj, len, fill)| Step::Append { obj, len, fill }),
        2 => (0u8..6, 0u16..20_000).prop_map(|(obj, size)| Step::Truncate { obj, size }),
        1 => (0u8..6).prop_map(|obj| Step::Remove { obj }),
        1 => (0u8..6, 0u8..4, any::<u8>()).prop_map(|(obj, key, value)| Step::Xattr { obj, key, value }),
        2 => (0u8..6, 0u8..8, proptest::option::of(any::<u8>()))
            .prop_map(|(obj, key, value)| Step::Omap { obj, key, value }),
        1 => Just(Step::Snapshot),
        1 => Just(Step::Rollback),
        1 => Just(Step::DestroyOldestSnapshot),
        1 => Just(Step::Clone),
        1 => Just(Step::Reopen),
    ]
}

/// Bytes that differ along the buffer, so misplaced blocks show.
fn pattern(len: u16, fill: u8) -> Vec<u8> {
    (0..len as usize)
        .map(|i| fill.wrapping_add((i / 7) as u8))
        .collect()
}

fn name(obj: u8) -> Vec<u8> {
    format!("obj-{obj}").into_bytes()
}

fn create_store(dir: &Path) -> Store {
    let disks = (0..3)
        .map(|i| DiskSource::NewFile(dir.join(format!("disk{i}")), 64 << 20))
        .collect();
    Store::create(
        &dir.join("store"),
        &CreateSpec {
            vdevs: vec![(VdevKind::Raidz1, disks)],
            cache_device: None,
        },
    )
    .unwrap()
}

fn check(store: &Store, model: &Model) {
    let mut views = Vec::new();
    for (coll, objects) in &model.colls {
        views.push((store.head(coll).unwrap(), objects, format!("{coll} head")));
    }
    for ((coll, snap), objects) in &model.snapshots {
        views.push((
            store.at_snapshot(coll, snap).unwrap(),
            objects,
            format!("{coll}@{snap}"),
        ));
    }
    for (view, objects, label) in views {
        let listed: Vec<Vec<u8>> = view
            .list(&ListOptions::default())
            .unwrap()
            .into_iter()
            .map(|e| e.name_bytes)
            .collect();
        let expected: Vec<Vec<u8>> = objects.keys().cloned().collect();
        assert_eq!(listed, expected, "listing of {label}");
        for (obj, want) in objects {
            let data = view.read(obj, 0, u64::MAX).unwrap();
            assert_eq!(data.len(), want.data.len(), "size of {label} {obj:?}");
            assert!(data == want.data, "data of {label} {obj:?}");
            let xattrs: BTreeMap<_, _> = view.xattrs(obj).unwrap().into_iter().collect();
            assert_eq!(xattrs, want.xattrs, "xattrs of {label} {obj:?}");
            let omap: BTreeMap<_, _> = view
                .omap_range(obj, None, None, 0)
                .unwrap()
                .into_iter()
                .collect();
            assert_eq!(omap, want.omap, "omap of {label} {obj:?}");
        }
    }
}

fn run(steps: Vec<Step>, dedup: bool) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Some(create_store(dir.path()));
    // The fill patterns repeat across objects and versions, so dedup finds shares.
    let settings = CollectionSettings {
        compression: Compression::Auto,
        dedup,
        record_size: 4096,
    };
    store
        .as_ref()
        .unwrap()
        .create_collection("c0", settings)
        .unwrap();
    let mut model = Model::default();
    model.colls.insert("c0".into(), Collection::new());
    let mut snap_counter = 0;
    for (i, step) in steps.into_iter().enumerate() {
        let s = store.as_ref().unwrap();
        // Each step goes to the newest collection (a clone once one exists), and every
        // fourth to the first, so both lineages change.
        let coll = if i % 4 == 0 {
            "c0".to_string()
        } else {
            model.colls.keys().last().unwrap().clone()
        };
        let objects = model.colls.get_mut(&coll).unwrap();
        let mut txn = Transaction::new(coll.clone());
        match step {
            Step::Write {
                obj,
                offset,
                len,
                fill,
            } => {
                let data = pattern(len, fill);
                txn.write(&name(obj), offset as u64, data.clone());
                let o = objects.entry(name(obj)).or_default();
                let end = offset as usize + len as usize;
                if o.data.len() < end {
                    o.data.resize(end, 0);
                }
                o.data[offset as usize..end].copy_from_slice(&data);
            }
            Step::WriteFull { obj, len, fill } => {
                let data = pattern(len, fill);
                txn.write_full(&name(obj), data.clone());
                objects.entry(name(obj)).or_default().data = data;
            }
            Step::Append { obj, len, fill } => {
                let data = pattern(len, fill);
                txn.append(&name(obj), data.clone());
                objects
                    .entry(name(obj))
                    .or_default()
                    .data
                    .extend_from_slice(&data);
            }
            Step::Truncate { obj, size } => {
                txn.truncate(&name(obj), size as u64);
                objects
                    .entry(name(obj))
                    .or_default()
                    .data
                    .resize(size as usize, 0);
            }
            Step::Remove { obj } => {
                txn.remove(&name(obj));
                if objects.remove(&name(obj)).is_none() {
                    assert!(
                        s.commit(txn).is_err(),
                        "removing a missing object must fail"
                    );
                    continue;
                }
            }
            Step::Xattr { obj, key, value } => {
                txn.set_xattr(&name(obj), &[b'k', key], &[value]);
                objects
                    .entry(name(obj))
                    .or_default()
                    .xattrs
                    .insert(vec![b'k', key], vec![value]);
            }
            Step::Omap { obj, key, value } => {
                let o = objects.entry(name(obj)).or_default();
                match value {
                    Some(v) => {
                        txn.omap_set(&name(obj), vec![(vec![key], vec![v])]);
                        o.omap.insert(vec![key], vec![v]);
                    }
                    None => {
                        txn.omap_rm(&name(obj), vec![vec![key]]);
                        o.omap.remove(&vec![key]);
                    }
                }
            }
            Step::Snapshot => {
                snap_counter += 1;
                let snap = format!("s{snap_counter}");
                s.snapshot(&coll, &snap).unwrap();
                model
                    .snapshots
                    .insert((coll.clone(), snap.clone()), objects.clone());
                model.order.entry(coll.clone()).or_default().push(snap);
                continue;
            }
            Step::Rollback => {
                let Some(snap) = model.order.get(&coll).and_then(|o| o.last()).cloned() else {
                    continue;
                };
                s.rollback(&coll, &snap, false).unwrap();
                *objects = model.snapshots[&(coll.clone(), snap)].clone();
                continue;
            }
            Step::DestroyOldestSnapshot => {
                let Some(snap) = model.order.get(&coll).and_then(|o| o.first()).cloned() else {
                    continue;
                };
                let has_clones = !s.collection(&coll).unwrap().snapshots[0].clones.is_empty();
                let outcome = s.destroy_snapshot(&coll, &snap);
                if has_clones {
                    assert!(
                        outcome.is_err(),
                        "a snapshot with clones must not be destroyed"
                    );
                } else {
                    outcome.unwrap();
                    model.snapshots.remove(&(coll.clone(), snap));
                    model.order.get_mut(&coll).unwrap().remove(0);
                }
                continue;
            }
            Step::Clone => {
                let Some(snap) = model.order.get(&coll).and_then(|o| o.last()).cloned() else {
                    continue;
                };
                if model.clones >= 2 {
                    continue;
                }
                model.clones += 1;
                let new = format!("clone{}", model.clones);
                s.clone_snapshot(&coll, &snap, &new).unwrap();
                let content = model.snapshots[&(coll.clone(), snap)].clone();
                model.colls.insert(new, content);
                continue;
            }
            Step::Reopen => {
                drop(store.take());
                store =
                    Some(Store::open(&dir.path().join("store"), &OpenOptions::default()).unwrap());
                check(store.as_ref().unwrap(), &model);
                continue;
            }
        }
        s.commit(txn).unwrap();
    }
    let s = store.as_ref().unwrap();
    check(s, &model);
    let report = s.scrub(&Default::default(), |_| {}).unwrap();
    assert_eq!(report.unrecoverable_blocks, 0);
    assert_eq!(
        report.leaked_rows, 0,
        "every allocated row is referenced: {report:?}"
    );
    // Destroying everything must give every row back.
    let names: Vec<String> = model.colls.keys().rev().cloned().collect();
    for coll in names {
        s.remove_collection(&coll).unwrap();
    }
    let status = s.status();
    let report = s.scrub(&Default::default(), |_| {}).unwrap();
    assert_eq!(
        report.allocated_rows, 0,
        "rows leaked after removing everything: {status:?}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn engine_matches_model(steps in proptest::collection::vec(step(), 1..60), dedup in any::<bool>()) {
        run(steps, dedup);
    }
}
