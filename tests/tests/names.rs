//! Daemons known by DNS names: a monitor whose address is `localhost:PORT` (as a
//! Kubernetes pod is known by its stable name) listens on `--bind`, bootstraps,
//! and serves clients that reach it by that name.

use lcpfs_tests::MonCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monitor_known_by_name_serves_clients() {
    let mut cluster = MonCluster::new(&["a"], &[]);
    let port = {
        let mon = cluster.mons.get_mut("a").unwrap();
        let port = mon.addr.rsplit_once(':').unwrap().1.to_owned();
        mon.addr = format!("localhost:{port}");
        port
    };
    cluster.flags = vec!["--bind".into(), format!("127.0.0.1:{port}")];
    cluster.bootstrap(&["a"]);
    let map = cluster.ready().await;
    assert_eq!(
        map.monitors["a"].addr,
        format!("localhost:{port}"),
        "{map:?}"
    );
}
