//! A PG whose newest acknowledged write lives only on OSDs that are down must not
//! go active without it: the OSDs of the interval that took the write are all
//! down, the PG's new up set (one OSD that missed the write and two that never
//! held the PG) reports the PG `down`, reads fail with an error saying so instead
//! of returning the older value, and once one of those OSDs comes back, the PG
//! takes the write from it and goes active with it. The OSD that missed the write
//! was itself stopped meanwhile: it learns the interval it missed from the epochs
//! it replays when it starts. An interval that never went active, on the other
//! hand, keeps nothing down.

use std::time::Duration;

use lcpfs_client::objects::ObjectClient;
use lcpfs_core::monitor::Command;
use lcpfs_tests::{
    MonCluster, osd_listening, osds_up, placement, replicated_pool, start_with, status_until,
};

/// Writes "first" to object `ledger` of pool `data`; returns the ids of the OSDs
/// of its PG (primary first) and their indexes in `cluster`.
async fn ledger(cluster: &MonCluster, objects: &ObjectClient) -> ([u32; 3], [u32; 3]) {
    objects
        .put("data", b"ledger", b"first".to_vec())
        .await
        .unwrap();
    let map = cluster.client().map(true).await.unwrap();
    let (_, up) = placement(&map, "data", b"ledger");
    let ids: [u32; 3] = up[..].try_into().expect("three copies");
    (ids, ids.map(|id| cluster.osd_index(&map, id)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pg_waits_for_the_osds_holding_its_newest_write() {
    let cluster = MonCluster::new(&["a"], &["--osd-heartbeat-grace", "2"]);
    let mut cluster = start_with(cluster, 5, &replicated_pool("data", 1)).await;
    let client = cluster.client();
    let objects = ObjectClient::connect(client.clone()).await.unwrap();
    let ([first, second, third], [first_index, second_index, third_index]) =
        ledger(&cluster, &objects).await;

    // The third copy stops; the write that follows is acknowledged by the other
    // two alone.
    cluster.kill_osd(third_index);
    client
        .run(&Command::OsdDown { ids: vec![third] })
        .await
        .unwrap();
    objects
        .put("data", b"ledger", b"second".to_vec())
        .await
        .unwrap();

    // Both OSDs that hold "second" stop and leave; the third comes back and the
    // PG maps to it and two OSDs that never held it.
    cluster.kill_osd(first_index);
    cluster.kill_osd(second_index);
    client
        .run(&Command::OsdDown {
            ids: vec![first, second],
        })
        .await
        .unwrap();
    client
        .run(&Command::OsdOut {
            ids: vec![first, second],
        })
        .await
        .unwrap();
    cluster.start_osd(third_index);
    osds_up(&client, 3).await;
    status_until(&cluster, "the PG down", |status| {
        status.pg_states.get("down") == Some(&1)
    })
    .await;
    let impatient = ObjectClient::connect(client.clone())
        .await
        .unwrap()
        .with_timeout(Duration::from_secs(3));
    let error = impatient
        .get("data", b"ledger")
        .await
        .expect_err("a down PG serves nothing");
    assert!(
        format!("{error:#}").contains("is down"),
        "the error says why: {error:#}"
    );

    // One OSD that holds "second" returns (still out): the PG takes the write
    // from it and goes active with it.
    cluster.start_osd(first_index);
    osd_listening(&cluster, first_index).await;
    osds_up(&client, 4).await;
    status_until(&cluster, "the PG active+clean", |status| {
        status.pg_states.get("active+clean") == Some(&1)
    })
    .await;
    assert_eq!(
        objects.get("data", b"ledger").await.unwrap(),
        b"second",
        "the newest acknowledged write survives"
    );
}

/// An interval whose primary never had the monitors record it up through the
/// interval (`up_thru`) never went active, so it took no writes: when its OSDs
/// are gone, the PG does not wait for them. Here the primary is frozen when the
/// interval begins, so it cannot peer in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pg_does_not_wait_for_an_interval_that_never_went_active() {
    // Long timers: the test marks OSDs down itself.
    let mut cluster = MonCluster::new(&["a"], &["--osd-heartbeat-grace", "600"]);
    cluster.osd_flags = ["--osd-heartbeat-grace", "600"].map(String::from).to_vec();
    let mut cluster = start_with(cluster, 4, &replicated_pool("data", 1)).await;
    let client = cluster.client();
    let objects = ObjectClient::connect(client.clone())
        .await
        .unwrap()
        .with_timeout(Duration::from_secs(30));
    let ([first, second, third], [first_index, second_index, third_index]) =
        ledger(&cluster, &objects).await;

    // The primary freezes, then the third copy stops: the interval of the first
    // two (min_size of them) begins, but its primary cannot go active in it.
    cluster.signal_osd(first_index, "STOP");
    cluster.kill_osd(third_index);
    let down = |ids: Vec<u32>| Command::OsdDown { ids };
    client.run(&down(vec![third])).await.unwrap();
    client.run(&down(vec![first])).await.unwrap();
    cluster.kill_osd(second_index);
    client.run(&down(vec![second])).await.unwrap();
    client
        .run(&Command::OsdOut {
            ids: vec![first, second],
        })
        .await
        .unwrap();
    cluster.kill_osd(first_index);

    // The third copy returns beside an OSD that never held the PG: nothing was
    // written after "first", and the PG serves it.
    cluster.start_osd(third_index);
    osds_up(&client, 2).await;
    assert_eq!(objects.get("data", b"ledger").await.unwrap(), b"first");
    objects
        .put("data", b"ledger", b"second".to_vec())
        .await
        .unwrap();
    assert_eq!(objects.get("data", b"ledger").await.unwrap(), b"second");
}
