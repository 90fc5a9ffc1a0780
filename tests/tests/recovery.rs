//! Recovery is throttled: an OSD brings at most `--max-recovering-pgs` PGs level
//! at once as their primary, the others wait their turn (`recovery_wait`), and
//! client reads of every PG during it get every object back. PGs serve while
//! they recover or backfill: an operation on a missing object waits for that
//! object only.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use lcpfs_client::objects::ObjectClient;
use lcpfs_core::monitor::{ClusterStatus, Command, Query};
use lcpfs_core::pg::PgId;
use lcpfs_tests::{
    MonCluster, cluster_with_pool, contents, osd_listening, osds_up, pgs_serve_while_they_recover,
    placement, replicated_pool, start_with, wait_for,
};

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
                    .filter(|(state, _)| state.split('+').any(|part| part == prefix))
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

/// A PG whose copies miss objects goes active at once and recovers them in the
/// background; a client operation on a missing object waits for that object
/// only. osd.2 misses 48 objects, as a replica and, for about a third of the
/// PGs, as their primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_io_waits_for_the_object_not_the_whole_pg() {
    let mut cluster = cluster_with_pool(3, &["--recovery-sleep", "30"]).await;
    pgs_serve_while_they_recover(&mut cluster, ("data", 16), (48, 1), 2, "recover").await;
}

/// A copy that missed more writes than the PG log keeps is backfilled: it takes
/// the whole log and every object is compared and sent again, after the PG goes
/// active, so clients are served meanwhile. The returning OSD leads one PG
/// (its own copy is backfilled from a replica) and is a replica of another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfilled_copy_serves_while_it_fills() {
    let mut cluster = MonCluster::new(&["a"], &["--osd-heartbeat-grace", "2"]);
    cluster.osd_flags = ["--recovery-sleep", "30", "--pg-log-entries", "16"]
        .map(str::to_owned)
        .to_vec();
    let mut cluster = start_with(cluster, 3, &replicated_pool("data", 4)).await;
    let map = cluster.ready().await;
    let (_, up) = placement(&map, "data", b"object-00");
    let lagging = up[0];
    let led = (0..4)
        .map(|seed| {
            let pg = PgId::new(map.pool_by_name("data").unwrap().id, seed);
            lcpfs_core::crush::pg_mapping(&map, pg).unwrap().primary
        })
        .filter(|primary| *primary == Some(lagging))
        .count();
    assert!(led < 4, "osd.{lagging} is a replica of some PG");
    let index = cluster.osd_index(&map, lagging);
    // 24 objects over 4 PGs, each written 12 times: about 72 entries per PG,
    // far more than the 16 kept.
    pgs_serve_while_they_recover(&mut cluster, ("data", 4), (24, 12), index, "backfill").await;
}

/// An object whose newest data only OSDs leaving the PG hold is taken from them
/// when the PG moves: the copy that stays misses it, and the new OSDs have
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_only_departing_osds_hold_is_taken_from_them() {
    // No background recovery here: only peering and client operations move objects.
    let mut cluster = cluster_with_pool(5, &["--recovery-sleep", "3600"]).await;
    let client = cluster.client();
    let objects = ObjectClient::connect(client.clone()).await.unwrap();
    let map = cluster.ready().await;
    // An object whose third OSD becomes its primary once the first two are out.
    let (name, up) = (0..)
        .map(|n| format!("only-there-{n}"))
        .find_map(|name| {
            let (pg, up) = placement(&map, "data", name.as_bytes());
            let mut moved = map.clone();
            for osd in &up[..2] {
                moved.osds.get_mut(osd).unwrap().in_ = false;
            }
            let primary = lcpfs_core::crush::pg_mapping(&moved, pg).unwrap().primary;
            (up.len() == 3 && primary == Some(up[2])).then_some((name, up))
        })
        .unwrap();
    objects
        .put("data", name.as_bytes(), b"first".to_vec())
        .await
        .unwrap();

    // The third copy misses the second version (and keeps missing it).
    let third = cluster.osd_index(&map, up[2]);
    cluster.kill_osd(third);
    osds_up(&client, 4).await;
    objects
        .put("data", name.as_bytes(), b"second".to_vec())
        .await
        .unwrap();
    cluster.start_osd(third);
    osd_listening(&cluster, third).await;
    osds_up(&client, 5).await;
    wait_for(
        "the third copy back in the PG",
        Duration::from_secs(30),
        || {
            let objects = &objects;
            let name = name.clone();
            async move { objects.stat("data", name.as_bytes()).await.ok() }
        },
    )
    .await;

    // The two copies that hold it leave; the one that misses it leads the PG.
    client
        .run(&Command::OsdOut {
            ids: up[..2].to_vec(),
        })
        .await
        .unwrap();
    assert_eq!(
        objects.get("data", name.as_bytes()).await.unwrap(),
        b"second",
        "the newest version comes from the departing OSDs"
    );
}
