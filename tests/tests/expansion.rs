//! PGs that move wholly to OSDs that hold nothing of them (every copy at once, as
//! when OSDs join or leave in one map change): the new primary must find the data
//! on the OSDs that held the PG before, not serve an empty PG. An erasure-coded
//! pool grown from three OSDs to six, one at a time, ends clean with every object.

use std::collections::BTreeMap;
use std::time::Duration;

use lcpfs_client::objects::ObjectClient;
use lcpfs_core::crush::pg_mapping;
use lcpfs_core::map::ClusterMap;
use lcpfs_core::monitor::Command;
use lcpfs_core::pg::PgId;
use lcpfs_tests::{
    MonCluster, clean_since, cluster_with_pool, contents, current_epoch, erasure_pool, http_get,
    osds_up, start_with, wait_for,
};

/// All 16 PGs active+clean after the map's latest change.
async fn all_clean(cluster: &MonCluster) {
    clean_since(cluster, current_epoch(cluster).await, 16).await;
}

/// The PGs of `pool` none of whose copies stays where it was between `before`
/// and `after`: no OSD in both up sets (for erasure coding, none at the same
/// shard position).
fn moved_wholly(before: &ClusterMap, after: &ClusterMap, pool: &str) -> usize {
    let pool = after.pool_by_name(pool).unwrap();
    (0..pool.pg_num)
        .filter(|&seed| {
            let pg = PgId::new(pool.id, seed);
            let old = pg_mapping(before, pg).unwrap().up;
            let new = pg_mapping(after, pg).unwrap().up;
            if pool.is_erasure() {
                old.iter().zip(&new).all(|(old, new)| old != new)
            } else {
                new.iter().all(|osd| !old.contains(osd))
            }
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicated_objects_survive_their_pgs_moving_wholly() {
    let mut cluster = cluster_with_pool(3, &[]).await;
    survive_wholesale_moves(&mut cluster, "data").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_coded_objects_survive_their_pgs_moving_wholly() {
    let cluster = MonCluster::new(&["a"], &["--osd-heartbeat-grace", "2"]);
    let pool = erasure_pool("ec", 2, 1, 16);
    let mut cluster = start_with(cluster, 3, &pool).await;
    survive_wholesale_moves(&mut cluster, "ec").await;
}

/// Writes objects to `pool` (16 PGs) on three OSDs; three more join, and once
/// the first three removed the copies they no longer hold, the new ones are
/// marked out in one map change, so that PGs move wholly back: every object must
/// still read back.
async fn survive_wholesale_moves(cluster: &mut MonCluster, pool_name: &str) {
    let objects = ObjectClient::connect(cluster.client()).await.unwrap();
    let mut written = BTreeMap::new();
    for n in 0..80 {
        let name = format!("object-{n:03}");
        let data = contents(&name, 1000 + n * 997);
        objects
            .put(pool_name, name.as_bytes(), data.clone())
            .await
            .unwrap();
        written.insert(name, data);
    }

    // Three OSDs join; once the PGs are clean on them, the OSDs that no longer
    // hold a PG remove their copies.
    for index in 3..6 {
        cluster.start_osd(index);
    }
    osds_up(&cluster.client(), 6).await;
    all_clean(cluster).await;
    let grown = cluster.client().map(true).await.unwrap();
    for index in 0..3 {
        let id = cluster.osd_id(&grown, index);
        let pool = grown.pool_by_name(pool_name).unwrap();
        let held = (0..pool.pg_num)
            .filter(|&seed| {
                pg_mapping(&grown, PgId::new(pool.id, seed))
                    .unwrap()
                    .up
                    .contains(&Some(id))
            })
            .count();
        let metrics = cluster.osds[&index].metrics.clone();
        wait_for("strays removed", Duration::from_secs(30), || {
            let metrics = metrics.clone();
            async move {
                let page = http_get(&metrics, "/metrics");
                page.lines()
                    .any(|line| line == format!("lcpfs_osd_pg_copies {held}"))
                    .then_some(())
            }
        })
        .await;
    }

    // The new OSDs are marked out in one map change: the PGs that lived only on
    // them return wholly to OSDs that removed their copies.
    let new_ids: Vec<u32> = grown
        .osds
        .iter()
        .filter(|(_, osd)| (3..6).any(|index| cluster.osds[&index].addr == osd.addr))
        .map(|(id, _)| *id)
        .collect();
    cluster
        .client()
        .run(&Command::OsdOut { ids: new_ids })
        .await
        .unwrap();
    let shrunk = cluster.client().map(true).await.unwrap();
    let moved = moved_wholly(&grown, &shrunk, pool_name);
    // Three replicas over three hosts move wholly back for some PG; a 2+1 code
    // keeps some shard in place on these maps, and checks the growth above.
    if !shrunk.pool_by_name(pool_name).unwrap().is_erasure() {
        assert!(moved > 0, "some PG moves wholly back to the first OSDs");
    }
    all_clean(cluster).await;
    for (name, data) in &written {
        let read = objects.get(pool_name, name.as_bytes()).await;
        assert!(
            read.as_ref().is_ok_and(|read| read == data),
            "{name} reads back after {moved} PGs moved wholly: {:?}",
            read.map(|read| read.len())
        );
    }
}
