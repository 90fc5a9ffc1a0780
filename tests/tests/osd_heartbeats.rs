//! OSDs heartbeat the peers they share PGs with: one that freezes (SIGSTOP) is
//! reported by its peers on other hosts and marked down long before the monitors'
//! own heartbeat grace would; thawed, it boots again. An OSD asked to stop marks
//! itself down first.

use lcpfs_tests::{MonCluster, osds_up, start_with_pool};

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
