//! Growing a pool's pg_num splits its PGs: every object stays readable, with its
//! newest data, and is listed exactly once, while the PGs split and move and
//! after; a write during the split is never lost, and an overwrite after it
//! leaves one version. Lowering pg_num is refused.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use lcpfs_client::objects::ObjectClient;
use lcpfs_core::monitor::Command;
use lcpfs_tests::{
    MonCluster, clean_since, contents, current_epoch, erasure_pool, replicated_pool, start_with,
};
use tokio::sync::Mutex;

fn set_pg_num(pool: &str, pg_num: u32) -> Command {
    Command::PoolSet {
        name: pool.into(),
        key: "pg_num".into(),
        value: pg_num.to_string(),
    }
}

/// Every object of `written` reads back as written, and the pool lists each of
/// them exactly once (and nothing else).
async fn check_all(objects: &ObjectClient, pool: &str, written: &BTreeMap<String, Vec<u8>>) {
    for (name, data) in written {
        let read = objects.get(pool, name.as_bytes()).await;
        assert!(
            read.as_ref().is_ok_and(|read| read == data),
            "{name} reads back: {:?}",
            read.map(|read| read.len())
        );
    }
    let listed: Vec<String> = objects
        .list(pool)
        .await
        .unwrap()
        .into_iter()
        .map(|entry| entry.name)
        .collect();
    let expected: Vec<String> = written.keys().cloned().collect();
    assert_eq!(listed, expected, "each object listed once");
}

/// Writes objects to `pool` (4 PGs), grows it to 16 PGs while a writer keeps
/// overwriting some of them, and checks every object during and after.
async fn split_under_writes(cluster: &MonCluster, pool: &str) {
    let objects = Arc::new(ObjectClient::connect(cluster.client()).await.unwrap());
    let mut written = BTreeMap::new();
    for n in 0..120 {
        let name = format!("object-{n:03}");
        let data = contents(&name, 100 + n * 131);
        objects
            .put(pool, name.as_bytes(), data.clone())
            .await
            .unwrap();
        written.insert(name, data);
    }

    // A writer overwrites the first twenty objects in turn until told to stop;
    // what it was told succeeded is what must read back.
    let acked = Arc::new(Mutex::new(written.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (objects, acked, stop) = (objects.clone(), acked.clone(), stop.clone());
        let pool = pool.to_owned();
        tokio::spawn(async move {
            let mut round = 0usize;
            let mut writes = 0;
            while !stop.load(Ordering::SeqCst) {
                let name = format!("object-{:03}", round % 20);
                let data = contents(&format!("{name}-{round}"), 2000 + round);
                // The entry is held while the write runs: a write in flight may
                // be applied or not, and is checked only once answered.
                let mut acked = acked.lock().await;
                if objects
                    .put(&pool, name.as_bytes(), data.clone())
                    .await
                    .is_ok()
                {
                    acked.insert(name, data);
                    writes += 1;
                }
                round += 1;
            }
            writes
        })
    };

    cluster.client().run(&set_pg_num(pool, 16)).await.unwrap();
    // Read during the split, through the client's retries on the new map.
    check_all(&objects, pool, &acked.lock().await.clone()).await;
    clean_since(cluster, current_epoch(cluster).await, 16).await;
    stop.store(true, Ordering::SeqCst);
    let writes = writer.await.unwrap();
    assert!(writes > 0, "the writer got writes through during the split");
    let mut written = acked.lock().await.clone();
    check_all(&objects, pool, &written).await;

    // Overwrites after the split leave one version of each object.
    for (name, data) in written.iter_mut().take(40) {
        *data = contents(&format!("{name}-after"), 777);
        objects
            .put(pool, name.as_bytes(), data.clone())
            .await
            .unwrap();
    }
    check_all(&objects, pool, &written).await;

    let lowered = cluster.client().run(&set_pg_num(pool, 8)).await;
    assert!(
        lowered
            .as_ref()
            .is_err_and(|error| error.to_string().contains("merging PGs")),
        "{lowered:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_pool_splits_its_pgs_without_losing_or_doubling_an_object() {
    let cluster = MonCluster::new(&["a"], &["--osd-heartbeat-grace", "2"]);
    let cluster = start_with(cluster, 4, &replicated_pool("data", 4)).await;
    split_under_writes(&cluster, "data").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_coded_pool_splits_its_pgs_without_losing_or_doubling_an_object() {
    let cluster = MonCluster::new(&["a"], &["--osd-heartbeat-grace", "2"]);
    let pool = erasure_pool("ec", 2, 1, 4);
    let cluster = start_with(cluster, 4, &pool).await;
    split_under_writes(&cluster, "ec").await;
}
