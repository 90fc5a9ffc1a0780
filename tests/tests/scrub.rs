//! Scrub and repair over real OSD processes: bytes rotted on one OSD's disk (while
//! it is stopped) are found by a deep scrub, reported as PG_DAMAGED, rewritten by
//! `lcpfs pg repair`, and a second deep scrub is clean, with a stamp in `lcpfs pg
//! ls` that outlives a restart; a primary whose copy is unreadable serves a read
//! from a replica's copy and heals its own; a write to part of a replica's
//! unreadable copy succeeds and heals it.

use std::path::Path;
use std::time::Duration;

use lcpfs_client::objects::ObjectClient;
use lcpfs_core::map::ClusterMap;
use lcpfs_proto::object_op::Op;
use lcpfs_proto::{ObjectOp, WriteAt};
use lcpfs_tests::{
    MonCluster, cluster_with_pool, contents, current_epoch, http_get, osds_up, placement, rot,
    status_until, wait_for,
};

/// Stops OSD `id`, rots `data` on its disks, and starts it again.
async fn rot_on(cluster: &mut MonCluster, map: &ClusterMap, id: u32, data: &[u8]) {
    let index = cluster.osd_index(map, id);
    cluster.kill_osd(index);
    let dir = cluster.osds[&index].data.clone();
    assert!(
        rot(&dir, &data[data.len() / 2..data.len() / 2 + 4096]) > 0,
        "the object's bytes are on osd.{id}'s disks"
    );
    cluster.start_osd(index);
    osds_up(&cluster.client(), cluster.osds.len()).await;
}

fn lcpfs(cluster: &MonCluster, args: &[&str]) -> serde_json::Value {
    let args = [&["--json"], args].concat();
    let out = lcpfs_tests::lcpfs(cluster, Path::new("."), &args);
    serde_json::from_str(&out).expect("JSON output")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_scrub_finds_a_rotted_copy_and_repair_fixes_it() {
    let mut cluster = cluster_with_pool(3, &[]).await;
    let objects = ObjectClient::connect(cluster.client()).await.unwrap();
    let victim = contents("victim", 256 << 10);
    objects
        .put("data", b"victim", victim.clone())
        .await
        .unwrap();
    for n in 0..10 {
        let name = format!("bystander-{n}");
        objects
            .put("data", name.as_bytes(), contents(&name, 5000))
            .await
            .unwrap();
    }
    let map = objects.map();
    let (pg, up) = placement(&map, "data", b"victim");
    let mapped = lcpfs(&cluster, &["osd", "map", "data", "victim"]);
    assert_eq!(mapped["pg"], pg.to_string(), "{mapped}");
    assert_eq!(mapped["up"], serde_json::json!(up), "{mapped}");
    assert_eq!(mapped["primary"], up[0], "{mapped}");
    let replica = up[1];
    rot_on(&mut cluster, &map, replica, &victim).await;

    // A shallow scrub compares sizes and xattrs only: the rot is not seen.
    let report = lcpfs(&cluster, &["pg", "scrub", &pg.to_string()]);
    assert_eq!(report[0]["inconsistent"], serde_json::json!([]), "{report}");

    let report = lcpfs(&cluster, &["pg", "deep-scrub", &pg.to_string()]);
    let bad = report[0]["inconsistent"].as_array().unwrap();
    assert_eq!(bad.len(), 1, "{report}");
    assert_eq!(bad[0]["object"], "victim");
    assert_eq!(bad[0]["osd"], replica);
    assert!(
        bad[0]["reason"].as_str().unwrap().contains("read error"),
        "{report}"
    );
    assert_eq!(bad[0]["repaired"], false);
    let status = status_until(&cluster, "PG_DAMAGED reported", |status| {
        status.checks.contains_key("PG_DAMAGED")
    })
    .await;
    assert_eq!(status.pg_states.get("active+clean+inconsistent"), Some(&1));

    let report = lcpfs(&cluster, &["pg", "repair", &pg.to_string()]);
    let bad = report[0]["inconsistent"].as_array().unwrap();
    assert_eq!(bad.len(), 1, "{report}");
    assert_eq!(bad[0]["repaired"], true, "{report}");

    let report = lcpfs(&cluster, &["pg", "deep-scrub", &pg.to_string()]);
    assert_eq!(report[0]["inconsistent"], serde_json::json!([]), "{report}");
    assert!(report[0]["objects"].as_u64().unwrap() >= 1);
    status_until(&cluster, "PG_DAMAGED cleared", |status| {
        !status.checks.contains_key("PG_DAMAGED")
            && status.pg_states.get("active+clean") == Some(&16)
    })
    .await;
    assert_eq!(objects.get("data", b"victim").await.unwrap(), victim);

    // The rotted OSD's metrics show the checksum error its engine met, and the
    // primary's show the writes it served.
    let index = cluster.osd_index(&map, replica);
    let metrics = http_get(&cluster.osds[&index].metrics, "/metrics");
    let checksum_errors: u64 = metrics
        .lines()
        .filter(|line| {
            line.starts_with("lcpfs_osd_disk_errors") && line.contains("kind=\"checksum\"")
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(checksum_errors >= 1, "{metrics}");
    let primary = cluster.osd_index(&map, up[0]);
    let metrics = http_get(&cluster.osds[&primary].metrics, "/metrics");
    assert!(
        metrics.contains("lcpfs_osd_ops_total{kind=\"write_full\"}"),
        "{metrics}"
    );
    assert!(http_get(&cluster.osds[&primary].metrics, "/ready").contains("200 OK"));

    // `lcpfs osd scrub` covers every PG the OSD leads; all are clean now.
    let reports = lcpfs(&cluster, &["osd", "scrub", &replica.to_string(), "--deep"]);
    let reports = reports.as_array().unwrap();
    assert!(!reports.is_empty());
    for report in reports {
        assert_eq!(report["primary"], replica);
        assert_eq!(report["inconsistent"], serde_json::json!([]), "{report}");
    }

    // `lcpfs pg ls` shows when the PG was deep-scrubbed; the stamp is kept with
    // the PG's copies, so it outlives a restart of the primary.
    // Only a report made at map epoch `since` or later counts.
    let deep_scrubbed = |cluster: &MonCluster, since: u64| {
        let list = lcpfs(cluster, &["pg", "ls", "data"]);
        let entry = list
            .as_array()
            .unwrap()
            .iter()
            .find(|entry| entry["pgid"] == pg.to_string())
            .cloned()
            .unwrap_or_else(|| panic!("{pg} listed: {list}"));
        let reported = entry["reported_epoch"].as_u64().unwrap_or(0);
        (entry["state"] == "active+clean" && reported >= since)
            .then(|| entry["last_deep_scrub"].as_u64().unwrap())
            .filter(|&stamp| stamp > 0)
    };
    let stamp = wait_for("the deep scrub stamp", Duration::from_secs(30), || {
        std::future::ready(deep_scrubbed(&cluster, 0))
    })
    .await;
    let before = current_epoch(&cluster).await;
    cluster.kill_osd(primary);
    cluster.start_osd(primary);
    // The restarted primary's boot is a new epoch; its reports from then on
    // come from the restarted process.
    let booted = wait_for("the restart in the map", Duration::from_secs(30), || {
        let client = cluster.client();
        async move {
            let epoch = client.map(true).await.ok()?.epoch;
            (epoch > before).then_some(epoch)
        }
    })
    .await;
    osds_up(&cluster.client(), 3).await;
    let restarted = wait_for("the stamp reported again", Duration::from_secs(30), || {
        std::future::ready(deep_scrubbed(&cluster, booted))
    })
    .await;
    assert_eq!(restarted, stamp, "the deep scrub stamp survives a restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_with_an_unreadable_copy_reads_a_replica_and_heals() {
    let mut cluster = cluster_with_pool(3, &[]).await;
    let objects = ObjectClient::connect(cluster.client())
        .await
        .unwrap()
        .with_timeout(Duration::from_secs(30));
    let data = contents("precious", 300 << 10);
    objects
        .put("data", b"precious", data.clone())
        .await
        .unwrap();
    let map = objects.map();
    let (pg, up) = placement(&map, "data", b"precious");
    rot_on(&mut cluster, &map, up[0], &data).await;

    assert_eq!(objects.get("data", b"precious").await.unwrap(), data);
    let report = objects.scrub(pg, true, false).await.unwrap();
    assert_eq!(report.primary, up[0]);
    assert!(
        report.inconsistencies.is_empty(),
        "{:?}",
        report.inconsistencies
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_to_part_of_a_rotten_replica_copy_succeeds_and_heals_it() {
    let mut cluster = cluster_with_pool(3, &[]).await;
    let objects = ObjectClient::connect(cluster.client())
        .await
        .unwrap()
        .with_timeout(Duration::from_secs(30));
    let mut data = contents("patched", 300 << 10);
    objects.put("data", b"patched", data.clone()).await.unwrap();
    let map = objects.map();
    let (pg, up) = placement(&map, "data", b"patched");
    rot_on(&mut cluster, &map, up[1], &data).await;

    // The replica cannot read the bytes it keeps around the patch: it asks for
    // the object whole, and the write is acknowledged once it has it.
    let patch = b"a patch in the middle".to_vec();
    let offset = data.len() / 2 + 100;
    objects
        .operate(
            "data",
            b"patched",
            vec![ObjectOp {
                op: Some(Op::Write(WriteAt {
                    offset: offset as u64,
                    data: patch.clone(),
                })),
            }],
        )
        .await
        .unwrap();
    data[offset..offset + patch.len()].copy_from_slice(&patch);
    assert_eq!(objects.get("data", b"patched").await.unwrap(), data);
    let report = objects.scrub(pg, true, false).await.unwrap();
    assert!(
        report.inconsistencies.is_empty(),
        "{:?}",
        report.inconsistencies
    );
}
