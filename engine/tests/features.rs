//! Dedup, compression, snapshot space accounting and the cache device, end to end.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use lcpfs_engine::{
    CollectionSettings, Compression, CreateSpec, DiskSource, OpenOptions, Store, Transaction,
    VdevKind,
};

fn create(dir: &Path, cache_device: Option<DiskSource>) -> Store {
    let disks = vec![DiskSource::NewFile(dir.join("disk0"), 64 << 20)];
    Store::create(
        &dir.join("store"),
        &CreateSpec {
            vdevs: vec![(VdevKind::Single, disks)],
            cache_device,
        },
    )
    .unwrap()
}

fn put(store: &Store, coll: &str, name: &str, data: &[u8]) {
    let mut txn = Transaction::new(coll);
    txn.write_full(name.as_bytes(), data);
    store.commit(txn).unwrap();
}

fn remove(store: &Store, coll: &str, name: &str) {
    let mut txn = Transaction::new(coll);
    txn.remove(name.as_bytes());
    store.commit(txn).unwrap();
}

fn allocated_rows(store: &Store) -> u64 {
    let report = store.scrub(&AtomicBool::new(false), |_| {}).unwrap();
    assert_eq!(report.leaked_rows, 0, "{report:?}");
    report.allocated_rows
}

fn noise(len: usize, seed: u8) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(&[seed])
        .finalize_xof()
        .fill(&mut out);
    out
}

#[test]
fn dedup_stores_identical_blocks_once_and_frees_with_the_last_reference() {
    let dir = tempfile::tempdir().unwrap();
    let store = create(dir.path(), None);
    let settings = CollectionSettings {
        dedup: true,
        record_size: 128 << 10,
        ..Default::default()
    };
    store.create_collection("d", settings).unwrap();
    let data = noise(1 << 20, 1);
    put(&store, "d", "first", &data);
    let one_copy = allocated_rows(&store);
    assert_eq!(one_copy, 256, "1 MiB in 4 KiB rows");
    for i in 0..9 {
        put(&store, "d", &format!("copy{i}"), &data);
    }
    assert_eq!(
        allocated_rows(&store),
        one_copy,
        "ten identical objects take the space of one"
    );
    // Shares survive snapshots and deletes until the last reference goes.
    store.snapshot("d", "keep").unwrap();
    for i in 0..9 {
        remove(&store, "d", &format!("copy{i}"));
    }
    remove(&store, "d", "first");
    assert_eq!(
        allocated_rows(&store),
        one_copy,
        "the snapshot still references the blocks"
    );
    assert!(
        store
            .at_snapshot("d", "keep")
            .unwrap()
            .read(b"copy3", 0, u64::MAX)
            .unwrap()
            == data
    );
    store.destroy_snapshot("d", "keep").unwrap();
    assert_eq!(allocated_rows(&store), 0);
    drop(store);
    // The table itself is durable.
    let store = Store::open(&dir.path().join("store"), &OpenOptions::default()).unwrap();
    put(&store, "d", "again", &data);
    put(&store, "d", "again2", &data);
    assert_eq!(allocated_rows(&store), one_copy);
}

#[test]
fn compression_stores_less_and_snapshots_account_unique_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let store = create(dir.path(), None);
    let settings = CollectionSettings {
        compression: Compression::Zstd(3),
        ..Default::default()
    };
    store.create_collection("z", settings).unwrap();
    let text: Vec<u8> = b"the quick brown fox jumps over the lazy dog. ".repeat(50_000);
    put(&store, "z", "text", &text);
    let stat = store.head("z").unwrap().stat(b"text").unwrap();
    assert_eq!(stat.size, text.len() as u64);
    assert!(
        stat.stored_bytes * 10 < text.len() as u64,
        "zstd stores {} of {}",
        stat.stored_bytes,
        text.len()
    );
    let random = noise(1 << 20, 2);
    put(&store, "z", "random", &random);
    assert!(
        store
            .head("z")
            .unwrap()
            .stat(b"random")
            .unwrap()
            .stored_bytes
            >= 1 << 20,
        "incompressible data stays raw"
    );
    store.snapshot("z", "s1").unwrap();
    remove(&store, "z", "random");
    let snapshots = store.snapshots("z").unwrap();
    let (_, referenced, unique) = &snapshots[0];
    assert!(*referenced >= (1 << 20) + stat.stored_bytes);
    assert_eq!(
        *unique,
        1 << 20,
        "only the deleted object is unique to the snapshot"
    );
}

#[test]
fn the_cache_device_serves_evicted_blocks_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cache = DiskSource::NewFile(dir.path().join("l2"), 32 << 20);
    let small_arc = OpenOptions {
        cache_bytes: 1 << 20,
        ..OpenOptions::default()
    };
    {
        let store = create(dir.path(), Some(cache));
        store
            .create_collection(
                "c",
                CollectionSettings {
                    record_size: 64 << 10,
                    ..Default::default()
                },
            )
            .unwrap();
        for i in 0..8 {
            put(&store, "c", &format!("o{i}"), &noise(1 << 20, i));
        }
    }
    let store = Store::open(&dir.path().join("store"), &small_arc).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    // Reading 8 MiB through a 1 MiB ARC evicts into the cache device; the feed is
    // asynchronous, so read until it holds most of the blocks.
    loop {
        for i in 0..8 {
            assert!(
                store
                    .head("c")
                    .unwrap()
                    .read(format!("o{i}").as_bytes(), 0, u64::MAX)
                    .unwrap()
                    == noise(1 << 20, i)
            );
        }
        if store.status().cache_device.unwrap().blocks >= 64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the cache device never filled: {:?}",
            store.status().cache_device
        );
    }
    drop(store);
    let store = Store::open(&dir.path().join("store"), &small_arc).unwrap();
    for i in 0..8 {
        assert!(
            store
                .head("c")
                .unwrap()
                .read(format!("o{i}").as_bytes(), 0, u64::MAX)
                .unwrap()
                == noise(1 << 20, i)
        );
    }
    let l2 = store.status().cache_device.unwrap();
    assert!(
        l2.hits >= 32,
        "blocks came from the cache device after the restart: {l2:?}"
    );
    assert_eq!(l2.bad_records, 0);
}

#[test]
fn removing_clones_at_once_keeps_the_origin_record_right() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(create(dir.path(), None));
    for round in 0..20 {
        let origin = format!("p{round}");
        store
            .create_collection(&origin, CollectionSettings::default())
            .unwrap();
        put(&store, &origin, "o", b"data");
        store.snapshot(&origin, "s").unwrap();
        store
            .clone_snapshot(&origin, "s", &format!("{origin}-a"))
            .unwrap();
        store
            .clone_snapshot(&origin, "s", &format!("{origin}-b"))
            .unwrap();
        let removers: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|c| {
                let (store, name) = (std::sync::Arc::clone(&store), format!("{origin}-{c}"));
                std::thread::spawn(move || store.remove_collection(&name).unwrap())
            })
            .collect();
        for remover in removers {
            remover.join().unwrap();
        }
        assert!(
            store.collection(&origin).unwrap().snapshots[0]
                .clones
                .is_empty()
        );
        store.destroy_snapshot(&origin, "s").unwrap();
        store.remove_collection(&origin).unwrap();
    }
    assert_eq!(allocated_rows(&store), 0);
}

#[test]
fn writes_racing_a_collection_removal_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(create(dir.path(), None));
    for round in 0..10 {
        let name = format!("x{round}");
        store
            .create_collection(&name, CollectionSettings::default())
            .unwrap();
        let writer = {
            let (store, name) = (std::sync::Arc::clone(&store), name.clone());
            std::thread::spawn(move || {
                let mut i = 0;
                loop {
                    let mut txn = Transaction::new(name.as_str());
                    txn.write_full(format!("o{i}").as_bytes(), noise(20_000, i as u8));
                    match store.commit(txn) {
                        Ok(_) => i += 1,
                        Err(lcpfs_engine::Error::NotFound(_)) => return i,
                        Err(e) => panic!("unexpected error {e}"),
                    }
                }
            })
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while store
            .head(&name)
            .unwrap()
            .list(&Default::default())
            .unwrap()
            .len()
            < 3
        {
            assert!(Instant::now() < deadline, "the writer made no progress");
        }
        store.remove_collection(&name).unwrap();
        writer.join().unwrap();
    }
    assert!(store.collections().is_empty());
    assert_eq!(
        allocated_rows(&store),
        0,
        "a write after the removal left rows behind"
    );
}

#[test]
fn a_view_of_a_destroyed_snapshot_reads_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = create(dir.path(), None);
    store
        .create_collection("c", CollectionSettings::default())
        .unwrap();
    put(&store, "c", "o", b"old");
    store.snapshot("c", "s").unwrap();
    let view = store.at_snapshot("c", "s").unwrap();
    assert_eq!(view.read(b"o", 0, 10).unwrap(), b"old");
    put(&store, "c", "o", b"new");
    store.destroy_snapshot("c", "s").unwrap();
    assert!(matches!(
        view.read(b"o", 0, 10),
        Err(lcpfs_engine::Error::NotFound(_))
    ));
    assert_eq!(store.head("c").unwrap().read(b"o", 0, 10).unwrap(), b"new");
}

/// A read longer than the cache's share streams past it: holes read as zeros, blocks
/// the cache holds come from it, the rest from the disks, all in order; a range
/// starting and ending inside blocks is clipped right.
#[test]
fn a_streamed_read_fills_holes_and_uses_cached_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let store = create(dir.path(), None);
    store
        .create_collection(
            "s",
            CollectionSettings {
                record_size: 64 << 10,
                ..Default::default()
            },
        )
        .unwrap();
    let data = noise(10 << 20, 9);
    let hole = (12 << 20)..(20 << 20);
    let mut txn = Transaction::new("s");
    txn.write(b"sparse", 0, data.clone())
        .write(b"sparse", hole.end, data.clone());
    store.commit(txn).unwrap();
    let mut expected = data.clone();
    expected.resize(hole.end as usize, 0);
    expected.extend_from_slice(&data);

    let view = store.head("s").unwrap();
    // Some blocks in the cache first, from short reads here and there.
    for offset in [0u64, 3 << 20, 25 << 20] {
        assert_eq!(
            view.read(b"sparse", offset, 100_000).unwrap(),
            expected[offset as usize..offset as usize + 100_000]
        );
    }
    assert!(view.read(b"sparse", 0, u64::MAX).unwrap() == expected);
    let (from, to) = (70_001usize, expected.len() - 12_345);
    assert!(
        view.read(b"sparse", from as u64, (to - from) as u64)
            .unwrap()
            == expected[from..to]
    );
}
