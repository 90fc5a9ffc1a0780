//! Crash consistency: a writer process is killed with SIGKILL at random moments (and
//! aborted at the engine's crash points) while overwriting objects; after every reopen
//! each object holds exactly the last acknowledged version or the one in flight, never a
//! mix, and the allocator leaks nothing.
//!
//! The writer is this test binary itself, re-run with `--ignored --exact crash_writer`
//! and the store directory in `LCPFS_CRASH_DIR`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use lcpfs_engine::{
    CollectionSettings, Compression, CreateSpec, DiskSource, OpenOptions, Store, Transaction,
    VdevKind,
};
use rand::{Rng, SeedableRng, rngs::StdRng};

const NAMES: u64 = 30;

/// Version `version` of an object: a header naming it, then bytes derived from both.
fn content(name: u64, version: u64) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(name * 1_000_003 + version);
    let len = rng.random_range(16..200_000);
    let mut data: Vec<u8> = (0..len).map(|_| rng.random()).collect();
    data[..8].copy_from_slice(&version.to_le_bytes());
    data[8..16].copy_from_slice(&name.to_le_bytes());
    data
}

/// Runs only when re-invoked by `crash_rounds`: overwrites objects forever, printing
/// each acknowledged write.
#[test]
#[ignore = "run by crash_rounds as a child process"]
fn crash_writer() {
    let Ok(dir) = std::env::var("LCPFS_CRASH_DIR") else {
        return;
    };
    let start: u64 = std::env::var("LCPFS_CRASH_START").unwrap().parse().unwrap();
    let store = Store::open(Path::new(&dir), &OpenOptions::default()).unwrap();
    println!("ready");
    for version in start.. {
        let name = version % NAMES;
        let mut txn = Transaction::new("c");
        txn.write_full(format!("o{name}").as_bytes(), content(name, version));
        txn.set_xattr(
            format!("o{name}").as_bytes(),
            b"version",
            &version.to_le_bytes(),
        );
        store.commit(txn).unwrap();
        println!("acked {version}");
    }
}

#[test]
fn crash_rounds() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    {
        let disks = (0..3)
            .map(|i| DiskSource::NewFile(dir.path().join(format!("disk{i}")), 256 << 20))
            .collect();
        let store = Store::create(
            &store_dir,
            &CreateSpec {
                vdevs: vec![(VdevKind::Raidz1, disks)],
                cache_device: None,
            },
        )
        .unwrap();
        let settings = CollectionSettings {
            compression: Compression::Lz4,
            record_size: 32 << 10,
            ..Default::default()
        };
        store.create_collection("c", settings).unwrap();
    }
    let mut rng = StdRng::seed_from_u64(7);
    let mut acked: HashMap<u64, u64> = HashMap::new();
    let mut next_version = 0u64;
    let rounds = 24;
    for round in 0..rounds {
        let mut child = Command::new(std::env::current_exe().unwrap());
        child
            .args([
                "--ignored",
                "--exact",
                "crash_writer",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("LCPFS_CRASH_DIR", &store_dir)
            .env("LCPFS_CRASH_START", next_version.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        // libtest prints "test crash_writer ... " before the writer's first line.
        // Every fourth round dies at the engine's own crash point instead of a signal.
        let crash_point = round % 4 == 3;
        if crash_point {
            child.env(
                "LCPFS_CRASH_POINT",
                if round % 8 == 3 {
                    "after-data-flush"
                } else {
                    "after-commit"
                },
            );
        }
        let mut child = child.spawn().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (lines, lines_rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let kill_after = Duration::from_millis(rng.random_range(20..400));
        let mut killed_at = None;
        loop {
            match lines_rx.recv_timeout(Duration::from_millis(5)) {
                Ok(line) if line.ends_with("ready") => {
                    killed_at = Some(Instant::now() + kill_after)
                }
                Ok(line) => {
                    if let Some(v) = line.strip_prefix("acked ") {
                        let version: u64 = v.parse().unwrap();
                        acked.insert(version % NAMES, version);
                        next_version = version + 1;
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            }
            if !crash_point && killed_at.is_some_and(|t| Instant::now() >= t) {
                child.kill().unwrap();
                killed_at = None;
            }
            assert!(
                Instant::now() < deadline,
                "writer neither finished nor died in round {round}"
            );
        }
        child.wait().unwrap();
        reader.join().unwrap();
        // The write in flight when the writer died may or may not have committed.
        let in_flight = next_version;
        let store = Store::open(&store_dir, &OpenOptions::default()).unwrap();
        let view = store.head("c").unwrap();
        for name in 0..NAMES {
            let object = format!("o{name}");
            if !view.exists(object.as_bytes()).unwrap() {
                assert!(
                    !acked.contains_key(&name),
                    "acknowledged {object} is gone after round {round}"
                );
                continue;
            }
            let data = view.read(object.as_bytes(), 0, u64::MAX).unwrap();
            let version = u64::from_le_bytes(data[..8].try_into().unwrap());
            let allowed = acked.get(&name).copied() == Some(version)
                || (version == in_flight && version % NAMES == name);
            assert!(
                allowed,
                "{object} holds version {version}, acked {:?}, in flight {in_flight}",
                acked.get(&name)
            );
            assert!(
                data == content(name, version),
                "{object} version {version} is torn"
            );
            let xattr = view.xattr(object.as_bytes(), b"version").unwrap().unwrap();
            assert_eq!(
                xattr,
                version.to_le_bytes(),
                "data and xattr of {object} from different transactions"
            );
            acked.insert(name, version);
            if version == in_flight {
                next_version = in_flight + 1;
            }
        }
        let report = store.scrub(&AtomicBool::new(false), |_| {}).unwrap();
        assert_eq!(
            report.leaked_rows, 0,
            "rows leaked after round {round}: {report:?}"
        );
        assert_eq!(report.unrecoverable_blocks, 0);
    }
    assert!(
        acked.len() as u64 >= NAMES / 2,
        "the writer made too little progress to prove anything"
    );
}
