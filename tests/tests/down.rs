//! A PG whose newest acknowledged write lives only on OSDs that are down must not
//! go active without it: the OSDs of the interval that took the write are all
//! down, the PG's new up set (one OSD that missed the write and two that never
//! held the PG) reports the PG `down`, reads fail with an error saying so instead
//! of returning the older value, and once one of those OSDs comes back, the PG
//! takes the write from it and goes active with it. The OSD that missed the write
//! was itself stopped meanwhile: it learns the interval it missed from the epochs
//! it replays when it starts.

use std::time::Duration;

use lcpfs_client::objects::ObjectClient;
use lcpfs_core::monitor::Command;
use lcpfs_tests::{
    MonCluster, osd_listening, osds_up, placement, replicated_pool, start_with, status_until,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pg_waits_for_the_osds_holding_its_newest_write() {
    let cluster = MonCluster::new(&["a"], &["--osd-heartbeat-grace", "2"]);
    let mut cluster = start_with(cluster, 5, &replicated_pool("data", 1)).await;
    let client = cluster.client();
    let objects = ObjectClient::connect(client.clone()).await.unwrap();
    objects
        .put("data", b"ledger", b"first".to_vec())
        .await
        .unwrap();
    let map = client.map(true).await.unwrap();
    let (_, up) = placement(&map, "data", b"ledger");
    let [first, second, third] = up[..] else {
        panic!("three copies: {up:?}");
    };
    let [first_index, second_index, third_index] =
        [first, second, third].map(|id| cluster.osd_index(&map, id));

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
