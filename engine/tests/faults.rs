//! The engine under faults: bitrot on every layout at and past its limit, a full store,
//! a missing disk (degraded open, replace, resilver), and a second opener.

use std::fs::OpenOptions as FileOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use lcpfs_engine::{Error, OpenOptions, Store, Transaction, VdevKind};
use rand::{Rng, SeedableRng, rngs::StdRng};

mod common;

use common::{create, disk_paths, reopen};

const DISK_SIZE: u64 = 32 << 20;
/// Bytes at each end of a disk that hold labels.
const LABEL_AREA: u64 = 16 << 10;

fn content(i: usize) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(i as u64);
    let len = rng.random_range(1..300_000);
    (0..len).map(|_| rng.random()).collect()
}

fn put(store: &Store, name: &str, data: Vec<u8>) -> Result<u64, Error> {
    let mut txn = Transaction::new("c");
    txn.write_full(name.as_bytes(), data);
    store.commit(txn)
}

fn smash(path: &Path, offset: u64, len: usize, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let garbage: Vec<u8> = (0..len).map(|_| rng.random()).collect();
    let file = FileOptions::new().write(true).open(path).unwrap();
    file.write_all_at(&garbage, offset).unwrap();
}

fn checksum_errors(store: &Store) -> u64 {
    store
        .status()
        .vdevs
        .iter()
        .flat_map(|v| &v.disks)
        .map(|d| d.checksum_errors)
        .sum()
}

/// Damages `tolerable` disks at random places: every read is right, errors are counted,
/// scrub repairs, a second scrub is clean. Then damages one disk more than the layout can
/// lose, over the same region: damaged objects fail with data loss, never wrong bytes.
fn bitrot(kind: VdevKind, width: usize, tolerable: usize) {
    let dir = tempfile::tempdir().unwrap();
    let objects = 40;
    {
        let store = create(dir.path(), kind, width, DISK_SIZE);
        for i in 0..objects {
            put(&store, &format!("o{i}"), content(i)).unwrap();
        }
    }
    let disks = disk_paths(dir.path(), width);
    let mut rng = StdRng::seed_from_u64(width as u64 * 31 + tolerable as u64);
    let used = 1 << 20;
    for (n, disk) in disks.iter().take(tolerable).enumerate() {
        for k in 0..20 {
            let offset = LABEL_AREA + rng.random_range(0..used);
            smash(
                disk,
                offset,
                rng.random_range(1..20_000),
                (n * 100 + k) as u64,
            );
        }
    }
    let store = reopen(dir.path());
    for i in 0..objects {
        let data = store
            .head("c")
            .unwrap()
            .read(format!("o{i}").as_bytes(), 0, u64::MAX)
            .unwrap();
        assert!(
            data == content(i),
            "object o{i} reads back wrong on {kind:?}"
        );
    }
    assert!(checksum_errors(&store) > 0, "damage must be counted");
    let stop = AtomicBool::new(false);
    let first = store.scrub(&stop, |_| {}).unwrap();
    assert_eq!(first.unrecoverable_blocks, 0);
    let second = store.scrub(&stop, |_| {}).unwrap();
    assert_eq!(
        second.repaired_blocks, 0,
        "the first scrub left damage: {second:?}"
    );
    assert_eq!(second.unrecoverable_blocks, 0);
    assert_eq!(second.leaked_rows, 0);
    drop(store);

    // One disk more than the layout tolerates, over the same region of each.
    for (n, disk) in disks.iter().take(tolerable + 1).enumerate() {
        smash(disk, LABEL_AREA + (1 << 20), 1 << 20, 1000 + n as u64);
    }
    let store = reopen(dir.path());
    let mut lost = Vec::new();
    for i in 0..objects {
        match store
            .head("c")
            .unwrap()
            .read(format!("o{i}").as_bytes(), 0, u64::MAX)
        {
            Ok(data) => assert!(data == content(i), "o{i} returned wrong bytes on {kind:?}"),
            Err(Error::DataLoss(_)) => lost.push(format!("o{i}")),
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert!(
        !lost.is_empty(),
        "damage past the limit must lose something on {kind:?}"
    );
    assert!(
        lost.len() < objects,
        "objects outside the damage must survive on {kind:?}"
    );
    let report = store.scrub(&stop, |_| {}).unwrap();
    let mut damaged: Vec<String> = report
        .damaged_objects
        .iter()
        .map(|d| d.object.clone())
        .collect();
    damaged.sort();
    lost.sort();
    assert_eq!(
        damaged, lost,
        "scrub names exactly the objects that cannot be read"
    );
}

#[test]
fn bitrot_raidz2_six_disks() {
    bitrot(VdevKind::Raidz2, 6, 2);
}

#[test]
fn bitrot_raidz1() {
    bitrot(VdevKind::Raidz1, 4, 1);
}

#[test]
fn bitrot_raidz3() {
    bitrot(VdevKind::Raidz3, 7, 3);
}

#[test]
fn bitrot_mirror() {
    bitrot(VdevKind::Mirror, 2, 1);
}

#[test]
fn bitrot_single_fails_with_data_loss_never_wrong_bytes() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = create(dir.path(), VdevKind::Single, 1, DISK_SIZE);
        put(&store, "o", content(1)).unwrap();
    }
    smash(&disk_paths(dir.path(), 1)[0], LABEL_AREA + 100, 10, 5);
    let store = reopen(dir.path());
    let outcome = store.head("c").unwrap().read(b"o", 0, u64::MAX);
    assert!(
        matches!(outcome, Err(Error::DataLoss(_))),
        "got {outcome:?}"
    );
}

/// A read longer than the cache's share streams from the disks past the cache: it
/// still verifies every block, repairs what the layout's redundancy can (so that a
/// scrub afterwards finds nothing left to repair), and fails with data loss rather
/// than return wrong bytes where nothing can rebuild a block.
#[test]
fn a_streamed_read_repairs_damage_and_never_returns_wrong_bytes() {
    let mut rng = StdRng::seed_from_u64(77);
    let big: Vec<u8> = (0..12 << 20).map(|_| rng.random()).collect();
    for (kind, width) in [
        (VdevKind::Raidz1, 3),
        (VdevKind::Mirror, 2),
        (VdevKind::Single, 1),
    ] {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = create(dir.path(), kind, width, DISK_SIZE);
            put(&store, "big", big.clone()).unwrap();
        }
        // The first disk holds a full copy or the first data column of every block.
        let first_disk = &disk_paths(dir.path(), width)[0];
        for k in 0..10 {
            let offset = LABEL_AREA + rng.random_range(0..6 << 20);
            smash(first_disk, offset, 5_000, k);
        }
        let store = reopen(dir.path());
        let mut out = Vec::new();
        let read = store
            .head("c")
            .unwrap()
            .read_to(b"big", 0, u64::MAX, &mut out);
        assert!(out[..] == big[..out.len()], "{kind:?} returned wrong bytes");
        if kind == VdevKind::Single {
            assert!(matches!(read, Err(Error::DataLoss(_))), "got {read:?}");
            continue;
        }
        assert_eq!(read.unwrap(), big.len() as u64);
        assert!(checksum_errors(&store) > 0, "damage must be counted");
        let report = store.scrub(&AtomicBool::new(false), |_| {}).unwrap();
        assert_eq!(
            (report.repaired_blocks, report.unrecoverable_blocks),
            (0, 0),
            "the streamed read left damage on {kind:?}: {report:?}"
        );
    }
}

#[test]
fn full_store_refuses_writes_cleanly_and_still_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let store = create(dir.path(), VdevKind::Single, 1, 4 << 20);
    let big = vec![7u8; 1 << 20];
    let mut written = Vec::new();
    let failure = loop {
        let name = format!("o{}", written.len());
        match put(&store, &name, big.clone()) {
            Ok(_) => written.push(name),
            Err(e) => break e,
        }
        assert!(written.len() < 10, "a 4 MiB disk cannot hold 10 MiB");
    };
    assert!(matches!(failure, Error::NoSpace(_)), "got {failure}");
    let failed = format!("o{}", written.len());
    assert!(
        !store.head("c").unwrap().exists(failed.as_bytes()).unwrap(),
        "a failed write leaves nothing"
    );
    // Overwriting an object with more than fits keeps the old content.
    let outcome = put(&store, &written[0], vec![1u8; 3 << 20]);
    assert!(matches!(outcome, Err(Error::NoSpace(_))));
    assert_eq!(
        store
            .head("c")
            .unwrap()
            .read(written[0].as_bytes(), 0, u64::MAX)
            .unwrap(),
        big
    );
    // Deletes work on the full store and make room again.
    for name in &written {
        let mut txn = Transaction::new("c");
        txn.remove(name.as_bytes());
        store.commit(txn).unwrap();
    }
    put(&store, "after", big.clone()).unwrap();
    let report = store.scrub(&AtomicBool::new(false), |_| {}).unwrap();
    assert_eq!(report.leaked_rows, 0);
}

#[test]
fn missing_disk_opens_degraded_and_replace_resilvers() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = create(dir.path(), VdevKind::Raidz1, 3, DISK_SIZE);
        for i in 0..10 {
            put(&store, &format!("o{i}"), content(i)).unwrap();
        }
    }
    let disks = disk_paths(dir.path(), 3);
    std::fs::remove_file(&disks[1]).unwrap();
    let store = reopen(dir.path());
    assert_eq!(store.status().state, "DEGRADED");
    for i in 0..10 {
        assert!(
            store
                .head("c")
                .unwrap()
                .read(format!("o{i}").as_bytes(), 0, u64::MAX)
                .unwrap()
                == content(i)
        );
    }
    put(&store, "written-degraded", content(99)).unwrap();
    let replacement = dir.path().join("new-disk");
    let report = store
        .replace_disk(disks[1].to_str().unwrap(), &replacement, Some(DISK_SIZE))
        .unwrap();
    assert_eq!(report.unrecoverable_blocks, 0);
    assert!(report.repaired_blocks >= 11);
    assert_eq!(store.status().state, "ONLINE");
    drop(store);
    // The rebuilt disk now carries its share: lose another one and read everything.
    std::fs::remove_file(&disks[2]).unwrap();
    let store = reopen(dir.path());
    assert_eq!(store.status().state, "DEGRADED");
    for i in 0..10 {
        assert!(
            store
                .head("c")
                .unwrap()
                .read(format!("o{i}").as_bytes(), 0, u64::MAX)
                .unwrap()
                == content(i)
        );
    }
    assert!(
        store
            .head("c")
            .unwrap()
            .read(b"written-degraded", 0, u64::MAX)
            .unwrap()
            == content(99)
    );
    drop(store);
    // Two of three gone is more than raidz1 can serve: the open says so.
    std::fs::remove_file(&replacement).unwrap();
    match Store::open(&dir.path().join("store"), &OpenOptions::default()) {
        Err(Error::Unavailable(message)) => assert!(message.contains("lost more disks")),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a raidz1 with two disks gone must not open"),
    }
}

/// Writes go on while a missing disk is replaced, and then while its replacements are
/// replaced: every block, written before a new disk was attached or after, ends up on
/// it, so a scrub afterwards repairs nothing and
/// the store then serves everything with another disk gone.
#[test]
fn a_disk_replaced_under_writes_gets_every_block() {
    let dir = tempfile::tempdir().unwrap();
    drop(create(dir.path(), VdevKind::Raidz1, 3, 64 << 20));
    let disks = disk_paths(dir.path(), 3);
    std::fs::remove_file(&disks[0]).unwrap();
    let store = reopen(dir.path());
    let stop = AtomicBool::new(false);
    let written = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let mut written = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || written < 8 {
                let data = vec![written as u8; 1 << 20];
                put(&store, &format!("w{written}"), data).unwrap();
                written += 1;
            }
            written
        });
        // The missing disk, then its replacements in turn.
        let mut current = disks[0].clone();
        for k in 0..4 {
            let replacement = dir.path().join(format!("new-disk{k}"));
            let report = store
                .replace_disk(current.to_str().unwrap(), &replacement, Some(64 << 20))
                .unwrap();
            assert_eq!(report.unrecoverable_blocks, 0);
            current = replacement;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        writer.join().unwrap()
    });
    let report = store.scrub(&AtomicBool::new(false), |_| {}).unwrap();
    assert_eq!(
        (report.repaired_blocks, report.unrecoverable_blocks),
        (0, 0),
        "the replaced disk missed blocks: {report:?}"
    );
    drop(store);
    std::fs::remove_file(&disks[1]).unwrap();
    let store = reopen(dir.path());
    for i in 0..written {
        let data = store
            .head("c")
            .unwrap()
            .read(format!("w{i}").as_bytes(), 0, u64::MAX)
            .unwrap();
        assert!(data == vec![i as u8; 1 << 20], "w{i} reads back wrong");
    }
}

#[test]
fn a_second_opener_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = create(dir.path(), VdevKind::Single, 1, DISK_SIZE);
    match Store::open(&dir.path().join("store"), &OpenOptions::default()) {
        Err(Error::Locked(..)) => {}
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("two openers at once"),
    }
    drop(store);
    reopen(dir.path());
}

#[test]
fn scrub_runs_beside_writers_and_can_be_stopped() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::{Duration, Instant};
    const WRITES: usize = 400;
    let dir = tempfile::tempdir().unwrap();
    // Small disks, so the allocator wraps around and reuses freed rows within the test.
    let store = Arc::new(create(dir.path(), VdevKind::Raidz1, 3, 24 << 20));
    for i in 0..20 {
        put(&store, &format!("base{i}"), content(i)).unwrap();
    }
    // Writers overwrite while scrubs run: freed rows must not be reused under the scrub
    // (it would "repair" live data with stale bytes).
    let done = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (store, done, written) = (Arc::clone(&store), Arc::clone(&done), Arc::clone(&written));
        std::thread::spawn(move || {
            let mut i = 0;
            while !done.load(Ordering::Relaxed) {
                put(&store, &format!("base{}", i % 20), content(1000 + i)).unwrap();
                i += 1;
                written.store(i, Ordering::Relaxed);
            }
            i
        })
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut scrubs = 0;
    while written.load(Ordering::Relaxed) < WRITES || scrubs < 2 {
        assert!(
            Instant::now() < deadline,
            "writers stalled beside the scrub"
        );
        // A slow scrub (as on a big store) gives the writers time to wrap the
        // allocator around while it holds old block pointers.
        let slow = |_| std::thread::sleep(Duration::from_millis(2));
        let report = store.scrub(&AtomicBool::new(false), slow).unwrap();
        assert_eq!(report.unrecoverable_blocks, 0, "{report:?}");
        assert_eq!(
            report.repaired_blocks, 0,
            "a scrub beside writers found damage: {report:?}"
        );
        scrubs += 1;
    }
    done.store(true, Ordering::Relaxed);
    let written = writer.join().unwrap();
    for n in 0..20 {
        let latest = (0..written).filter(|i| i % 20 == n).max().unwrap();
        let data = store
            .head("c")
            .unwrap()
            .read(format!("base{n}").as_bytes(), 0, u64::MAX)
            .unwrap();
        assert!(
            data == content(1000 + latest),
            "base{n} is not its last write"
        );
    }
    let at_rest = store.scrub(&AtomicBool::new(false), |_| {}).unwrap();
    assert_eq!(at_rest.leaked_rows, 0);
    // A stop request ends a scrub early and says so.
    let stop = AtomicBool::new(false);
    let report = store
        .scrub(&stop, |checked| {
            if checked == 3 {
                stop.store(true, Ordering::Relaxed);
            }
        })
        .unwrap();
    assert!(report.stopped);
    assert!(report.checked_blocks < at_rest.checked_blocks);
}
