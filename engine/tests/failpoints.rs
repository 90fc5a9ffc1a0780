//! The engine on a failing disk, acted out through the failpoints of a chaos build
//! (`cargo test --release --workspace --features lcpfs-engine/failpoints --test
//! failpoints`, in `make test`): failed and
//! corrupted reads, bit rot on write, a failed flush and a power cut.
#![cfg(feature = "failpoints")]

use std::path::Path;
use std::process::Command;
use std::sync::atomic::AtomicBool;

use fail::FailScenario;
use lcpfs_engine::{Error, Store, Transaction, VdevKind};

mod common;

use common::reopen;

/// A new store on `width` disks of 32 MiB.
fn create(dir: &Path, kind: VdevKind, width: usize) -> Store {
    common::create(dir, kind, width, 32 << 20)
}

fn put(store: &Store, name: &str, data: &[u8]) -> Result<u64, Error> {
    let mut txn = Transaction::new("c");
    txn.write_full(name.as_bytes(), data.to_vec());
    store.commit(txn)
}

fn get(store: &Store, name: &str) -> Result<Vec<u8>, Error> {
    store.head("c")?.read(name.as_bytes(), 0, u64::MAX)
}

fn content(seed: u8) -> Vec<u8> {
    (0..200_000u32)
        .map(|i| (i.wrapping_mul(31) as u8) ^ seed)
        .collect()
}

fn disk_errors(store: &Store) -> (u64, u64) {
    let disks = store.status().vdevs.into_iter().flat_map(|v| v.disks);
    disks.fold((0, 0), |(read, checksum), disk| {
        (read + disk.read_errors, checksum + disk.checksum_errors)
    })
}

#[test]
fn failed_reads_lose_nothing_and_corrupted_reads_return_no_wrong_bytes() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    put(&create(dir.path(), VdevKind::Single, 1), "a", &content(1)).unwrap();

    let store = reopen(dir.path());
    fail::cfg("disk-read", "return").unwrap();
    assert!(matches!(get(&store, "a"), Err(Error::DataLoss(_))));
    assert!(disk_errors(&store).0 > 0, "the failed reads are counted");
    fail::cfg("disk-read", "return(corrupt)").unwrap();
    assert!(matches!(get(&store, "a"), Err(Error::DataLoss(_))));
    fail::remove("disk-read");
    assert_eq!(get(&store, "a").unwrap(), content(1));
    scenario.teardown();
}

#[test]
fn bit_rot_on_one_mirror_side_is_read_around_and_repaired() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    {
        let store = create(dir.path(), VdevKind::Mirror, 2);
        // Mirrors write the first disk first: its copies of the data rot.
        fail::cfg("disk-write", "1*return(corrupt)").unwrap();
        put(&store, "a", &content(2)).unwrap();
        fail::remove("disk-write");
    }
    let store = reopen(dir.path());
    assert_eq!(get(&store, "a").unwrap(), content(2));
    assert!(
        disk_errors(&store).1 > 0,
        "the rotten copy fails its checksum"
    );
    scenario.teardown();
}

#[test]
fn a_failed_flush_suspends_the_store_and_the_last_commit_survives() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    {
        let store = create(dir.path(), VdevKind::Single, 1);
        put(&store, "a", &content(3)).unwrap();
        assert_eq!(store.suspended(), None);
        fail::cfg("disk-sync", "1*return").unwrap();
        assert!(matches!(
            put(&store, "b", &content(4)),
            Err(Error::Unavailable(_))
        ));
        let why = store.suspended().expect("suspended after a failed flush");
        assert!(why.contains("flush"), "{why}");
        // Whatever the disk does next, this store commits nothing more.
        fail::remove("disk-sync");
        assert!(matches!(
            put(&store, "c", &content(5)),
            Err(Error::Unavailable(_))
        ));
    }
    let store = reopen(dir.path());
    assert_eq!(store.suspended(), None);
    assert_eq!(get(&store, "a").unwrap(), content(3));
    for lost in ["b", "c"] {
        assert!(matches!(get(&store, lost), Err(Error::NotFound(_))));
    }
    put(&store, "d", &content(6)).unwrap();
    assert_eq!(
        get(&reopen_after(store, dir.path()), "d").unwrap(),
        content(6)
    );
    scenario.teardown();
}

fn reopen_after(store: Store, dir: &Path) -> Store {
    drop(store);
    reopen(dir)
}

/// Runs only when re-invoked by `a_power_cut_keeps_every_commit`: commits one
/// object, then cuts the power at the next flush.
#[test]
#[ignore = "run by a_power_cut_keeps_every_commit as a child process"]
fn power_cut_writer() {
    let Ok(dir) = std::env::var("LCPFS_POWER_CUT_DIR") else {
        return;
    };
    let store = reopen(Path::new(&dir));
    put(&store, "kept", &content(7)).unwrap();
    fail::cfg("disk-sync", "return(power-loss)").unwrap();
    // Over the object committed before, then a new one: neither reaches the disk.
    let _ = put(&store, "a", &content(8));
    unreachable!("the power cut aborts the process");
}

#[test]
fn a_power_cut_keeps_every_commit() {
    let _scenario = FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    {
        let store = create(dir.path(), VdevKind::Raidz1, 3);
        put(&store, "a", &content(9)).unwrap();
    }
    let status = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "power_cut_writer",
            "--test-threads=1",
        ])
        .env("LCPFS_POWER_CUT_DIR", dir.path())
        .status()
        .unwrap();
    assert!(!status.success(), "the writer was to die at the power cut");
    let store = reopen(dir.path());
    assert_eq!(get(&store, "kept").unwrap(), content(7));
    assert_eq!(get(&store, "a").unwrap(), content(9));
    let scrub = store.scrub(&AtomicBool::new(false), |_| {}).unwrap();
    assert_eq!(
        scrub.repaired_blocks + scrub.unrecoverable_blocks,
        0,
        "{scrub:?}"
    );
    assert_eq!(scrub.leaked_rows, 0, "{scrub:?}");
}
