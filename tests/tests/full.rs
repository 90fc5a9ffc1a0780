//! OSDs whose disks fill up: past the monitors' full ratio they are marked full,
//! health says OSD_FULL, and their PGs refuse writes with a clear error while
//! reads and deletes go on; every acknowledged object still reads back, and once
//! deletes bring the disks below the ratio, writes are taken again.

use std::collections::BTreeMap;

use lcpfs_client::objects::ObjectClient;
use lcpfs_core::monitor::HealthStatus;
use lcpfs_tests::{MonCluster, contents, start_with_pool, status_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_osds_take_deletes_but_no_writes_and_lose_nothing() {
    let mut cluster = MonCluster::new(
        &["a"],
        &[
            "--osd-heartbeat-grace",
            "2",
            "--mon-osd-full-ratio",
            "0.15",
            "--mon-osd-nearfull-ratio",
            "0.1",
        ],
    );
    // Room past the ratio for the writes made before the flag reaches the map.
    cluster.osd_disk_size = "256M".into();
    let cluster = start_with_pool(cluster, 3).await;
    let objects = ObjectClient::connect(cluster.client()).await.unwrap();

    // Every object has a copy on each of the three OSDs: write until refused.
    let mut written = BTreeMap::new();
    let refusal = loop {
        let name = format!("filler-{:03}", written.len());
        let data = contents(&name, 1 << 20);
        match objects.put("data", name.as_bytes(), data.clone()).await {
            Ok(()) => {
                written.insert(name, data);
            }
            Err(error) => break format!("{error:#}"),
        }
        assert!(written.len() < 200, "256 MiB disks never filled");
    };
    assert!(
        refusal.contains("takes no writes") && refusal.contains("full"),
        "the refusal says why: {refusal}"
    );
    assert!(
        written.len() >= 20,
        "only {} MiB went in before: {refusal}",
        written.len()
    );
    let status = status_until(&cluster, "OSD_FULL reported", |status| {
        status.checks.contains_key("OSD_FULL")
    })
    .await;
    assert_eq!(status.health, HealthStatus::Err);

    // Reads go on, and nothing acknowledged is lost.
    for (name, data) in &written {
        assert!(
            objects.get("data", name.as_bytes()).await.unwrap() == *data,
            "{name} reads back"
        );
    }

    // Deletes are taken, and free enough space for writes to resume.
    let names: Vec<String> = written.keys().cloned().collect();
    for name in &names[..names.len() * 2 / 3] {
        objects.remove("data", name.as_bytes()).await.unwrap();
        written.remove(name);
    }
    status_until(&cluster, "OSD_FULL cleared", |status| {
        !status.checks.contains_key("OSD_FULL")
    })
    .await;
    let data = contents("after", 1 << 20);
    objects
        .put("data", b"after", data.clone())
        .await
        .expect("writes resume once below the full ratio");
    assert!(objects.get("data", b"after").await.unwrap() == data);
    for (name, data) in &written {
        assert!(objects.get("data", name.as_bytes()).await.unwrap() == *data);
    }
}
