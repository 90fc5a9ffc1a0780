//! Recovery is throttled: an OSD brings at most `--max-recovering-pgs` PGs level
//! at once as their primary, the others wait their turn (`recovery_wait`), and
//! client reads of every PG during it get every object back.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use lcpfs_client::objects::ObjectClient;
use lcpfs_core::monitor::{ClusterStatus, Query};
use lcpfs_tests::{cluster_with_pool, contents, osd_listening, osds_up, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_osd_recovers_one_pg_at_a_time_and_the_rest_wait() {
    let mut cluster =
        cluster_with_pool(3, &["--max-recovering-pgs", "1", "--recovery-sleep", "0.1"]).await;
    let client = cluster.client();
    let objects = Arc::new(ObjectClient::connect(client.clone()).await.unwrap());

    // One OSD misses 160 writes spread over the 16 PGs.
    cluster.kill_osd(2);
    osds_up(&client, 2).await;
    let mut written = BTreeMap::new();
    for n in 0..160 {
        let name = format!("object-{n:03}");
        let data = contents(&name, 2000 + n);
        objects
            .put("data", name.as_bytes(), data.clone())
            .await
            .unwrap();
        written.insert(name, data);
    }

    // It returns, and clients read every object at once: each primary has many
    // PGs to bring level and one slot.
    cluster.start_osd(2);
    osd_listening(&cluster, 2).await;
    osds_up(&client, 3).await;
    let mut readers = tokio::task::JoinSet::new();
    for (name, data) in written.clone() {
        let objects = objects.clone();
        readers.spawn(async move {
            let read = objects.get("data", name.as_bytes()).await;
            assert!(
                read.as_ref().is_ok_and(|read| *read == data),
                "{name} reads back during recovery: {:?}",
                read.map(|read| read.len())
            );
        });
    }
    let busiest = Arc::new(AtomicU64::new(0));
    let waited = Arc::new(AtomicBool::new(false));
    wait_for("every PG active+clean", Duration::from_secs(120), || {
        let (client, busiest, waited) = (client.clone(), busiest.clone(), waited.clone());
        async move {
            let status: ClusterStatus = client.query(&Query::Status).await.ok()?;
            let count = |prefix: &str| -> u64 {
                status
                    .pg_states
                    .iter()
                    .filter(|(state, _)| state.starts_with(prefix))
                    .map(|(_, count)| count)
                    .sum()
            };
            busiest.fetch_max(count("recovering") + count("backfilling"), Ordering::SeqCst);
            if count("recovery_wait") + count("backfill_wait") > 0 {
                waited.store(true, Ordering::SeqCst);
            }
            (status.pg_states.get("active+clean") == Some(&16)).then_some(())
        }
    })
    .await;
    while let Some(reader) = readers.join_next().await {
        reader.unwrap();
    }
    let busiest = busiest.load(Ordering::SeqCst);
    assert!(
        busiest <= 3,
        "at most one PG recovering per primary, {busiest} seen"
    );
    assert!(
        waited.load(Ordering::SeqCst),
        "PGs waited for a recovery slot"
    );
}
