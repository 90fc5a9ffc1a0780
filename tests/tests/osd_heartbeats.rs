//! OSDs heartbeat the peers they share PGs with: one that freezes (SIGSTOP) is
//! reported by its peers on other hosts and marked down long before the monitors'
//! own heartbeat grace would; thawed, it boots again, unless it flapped too often
//! and the monitors hold it down. An OSD asked to stop marks itself down first.

use std::time::Duration;

use lcpfs_core::monitor::{ClusterStatus, Command, Query};
use lcpfs_tests::{MonCluster, osds_up, start_with_pool, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_osd_is_reported_by_its_peers_and_marked_down() {
    // The monitors alone would wait 120 s; the OSDs report a silent peer after 2 s.
    let mut cluster = MonCluster::new(&["a"], &["--osd-heartbeat-grace", "120"]);
    cluster.osd_flags = vec!["--osd-heartbeat-grace".into(), "2".into()];
    let cluster = start_with_pool(cluster, 4).await;
    let client = cluster.client();
    cluster.signal_osd(0, "STOP");
    // Marked down on its peers' reports, within the 30 s the wait allows.
    osds_up(&client, 3).await;
    cluster.signal_osd(0, "CONT");
    osds_up(&client, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_osd_marks_itself_down() {
    let mut cluster = MonCluster::new(&["a"], &["--osd-heartbeat-grace", "120"]);
    cluster.osd_flags = vec!["--osd-heartbeat-grace".into(), "60".into()];
    let cluster = start_with_pool(cluster, 3).await;
    let client = cluster.client();
    // SIGTERM, as docker stop and Kubernetes send it.
    cluster.signal_osd(1, "TERM");
    osds_up(&client, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_osd_that_flaps_is_held_down_until_an_operator_lets_it_back() {
    let mut cluster = MonCluster::new(
        &["a"],
        &[
            "--osd-heartbeat-grace",
            "120",
            "--osd-flap-limit",
            "2",
            "--osd-flap-hold",
            "3600",
        ],
    );
    cluster.osd_flags = vec!["--osd-heartbeat-grace".into(), "2".into()];
    let cluster = start_with_pool(cluster, 4).await;
    let client = cluster.client();
    let id = cluster.osd_id(&client.map(true).await.unwrap(), 0);
    // The first failure: thawed, it boots again.
    cluster.signal_osd(0, "STOP");
    osds_up(&client, 3).await;
    cluster.signal_osd(0, "CONT");
    osds_up(&client, 4).await;
    // The second within the window: thawed, it asks to boot and is refused.
    cluster.signal_osd(0, "STOP");
    osds_up(&client, 3).await;
    cluster.signal_osd(0, "CONT");
    wait_for("the OSD's boot refused", Duration::from_secs(30), || {
        let log = cluster.osd_log(0);
        async move { log.contains("is held down for").then_some(()) }
    })
    .await;
    let map = client.map(true).await.unwrap();
    assert!(!map.osds[&id].up, "a held OSD stays down");
    let status: ClusterStatus = client.query(&Query::Status).await.unwrap();
    let flapping = status
        .checks
        .get("OSD_FLAPPING")
        .map(|check| &check.summary);
    assert!(
        flapping.is_some_and(|summary| summary.contains(&format!("osd.{id}"))),
        "{:?}",
        status.checks
    );
    // Let back by an operator, it boots at its next try (every 5 s).
    client
        .run(&Command::OsdUnhold { ids: vec![id] })
        .await
        .unwrap();
    osds_up(&client, 4).await;
}
