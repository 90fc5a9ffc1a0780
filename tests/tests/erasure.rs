//! Erasure-coded pools over real OSD processes: objects written, overwritten at
//! offsets, appended to and truncated read back like an in-memory model says;
//! with two OSDs of a 4+2 pool dead every object is still readable, and once they
//! are marked out the lost shards are rebuilt on the others, checked shard by
//! shard through the engines; a shard rotted on one OSD's disk is found by deep
//! scrub and rebuilt by repair, and so is a parity shard holding other bytes
//! (found by re-encoding the data shards); appends through a primary killed
//! mid-write are neither lost nor doubled; a write over a rotted shard is
//! acknowledged, read back and the shard rebuilt; a shard that missed a write
//! unnoticed is never read with the newer ones, but rebuilt; a PG whose shards
//! miss objects serves while they are rebuilt, an object at a time.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use lcpfs_client::objects::ObjectClient;
use lcpfs_core::map::ClusterMap;
use lcpfs_core::monitor::Command;
use lcpfs_core::pg::{PgId, object_to_pg};
use lcpfs_engine::{OpenOptions, Store, Transaction};
use lcpfs_osd::backend::erasure::codec::Code;
use lcpfs_proto::object_op::Op;
use lcpfs_proto::{ObjectOp, WriteAt};
use lcpfs_tests::{
    MonCluster, appends_survive_a_killed_primary, clean_since, contents, current_epoch,
    erasure_pool, osd_listening, osds_up, pgs_serve_while_they_recover, rot, start_with, wait_for,
};

async fn cluster(osds: u32, pool: Command, mon_flags: &[&str]) -> MonCluster {
    let mut cluster = MonCluster::new(&["a"], mon_flags);
    cluster.osd_disk_size = "512M".to_owned();
    start_with(cluster, osds, &pool).await
}

fn write_at(offset: u64, data: Vec<u8>) -> ObjectOp {
    ObjectOp {
        op: Some(Op::Write(WriteAt { offset, data })),
    }
}

fn truncate(size: u64) -> ObjectOp {
    ObjectOp {
        op: Some(Op::Truncate(size)),
    }
}

/// Object sizes around the stripe and unit boundaries of a 4+2 code.
fn size_of(n: usize) -> usize {
    [
        0,
        1,
        4095,
        4096,
        16_383,
        16_384,
        16_385,
        100_000,
        1 << 20,
        3 << 20,
    ][n % 10]
}

/// Writes objects, overwrites parts of some, appends to and truncates others,
/// and returns what each should now hold.
async fn write_objects(
    objects: &ObjectClient,
    pool: &str,
    prefix: &str,
    count: usize,
) -> BTreeMap<String, Vec<u8>> {
    let mut model = BTreeMap::new();
    for n in 0..count {
        let name = format!("{prefix}-{n:03}");
        let mut data = contents(&name, size_of(n));
        objects
            .put(pool, name.as_bytes(), data.clone())
            .await
            .unwrap();
        match n % 4 {
            1 => {
                let patch = contents(&format!("{name}-patch"), 5000);
                let offset = (data.len() / 3) as u64;
                objects
                    .operate(pool, name.as_bytes(), vec![write_at(offset, patch.clone())])
                    .await
                    .unwrap();
                let end = offset as usize + patch.len();
                if data.len() < end {
                    data.resize(end, 0);
                }
                data[offset as usize..end].copy_from_slice(&patch);
            }
            2 => {
                let more = contents(&format!("{name}-more"), 10_000);
                objects
                    .append(pool, name.as_bytes(), more.clone())
                    .await
                    .unwrap();
                data.extend_from_slice(&more);
            }
            3 => {
                let size = data.len() / 2 + 7;
                objects
                    .operate(pool, name.as_bytes(), vec![truncate(size as u64)])
                    .await
                    .unwrap();
                data.resize(size, 0);
            }
            _ => {}
        }
        model.insert(name, data);
    }
    model
}

async fn assert_reads(objects: &ObjectClient, pool: &str, model: &BTreeMap<String, Vec<u8>>) {
    for (name, data) in model {
        let read = objects
            .get(pool, name.as_bytes())
            .await
            .unwrap_or_else(|error| panic!("get {name}: {error:#}"));
        assert!(
            read == *data,
            "{name} reads back byte-exact ({} bytes, expected {})",
            read.len(),
            data.len()
        );
        let stat = objects.stat(pool, name.as_bytes()).await.unwrap();
        assert_eq!(stat.size, data.len() as u64, "{name} size");
    }
}

/// Checks, through the engines of the (stopped) OSDs `indexes`, that every object
/// has each of its `k + m` shards intact on some OSD.
fn assert_shards_on_disk(
    cluster: &MonCluster,
    indexes: &[u32],
    pool: &lcpfs_core::map::Pool,
    code: Code,
    model: &BTreeMap<String, Vec<u8>>,
) {
    let stores: Vec<Store> = indexes
        .iter()
        .map(|index| Store::open(&cluster.osds[index].data, &OpenOptions::default()).unwrap())
        .collect();
    for (name, data) in model {
        let pg = object_to_pg(pool, name.as_bytes());
        let mut padded = data.clone();
        padded.resize(code.shard_size(data.len() as u64) as usize * code.k, 0);
        let expected = code.encode(&padded).unwrap();
        let key = [b"o/".as_slice(), name.as_bytes()].concat();
        let mut intact: Vec<u32> = stores
            .iter()
            .filter_map(|store| {
                let shard = lcpfs_osd::pg::shard(store, pg).ok()??;
                let held = store
                    .head(&format!("pg.{pg}"))
                    .ok()?
                    .read(&key, 0, u64::MAX)
                    .ok()?;
                (held == expected[shard as usize]).then_some(shard)
            })
            .collect();
        intact.sort_unstable();
        intact.dedup();
        assert_eq!(
            intact.len(),
            code.k + code.m,
            "{name} (PG {pg}) has intact shards {intact:?} on disk"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_4_2_pool_serves_through_two_dead_osds_and_rebuilds_their_shards() {
    let mut cluster = cluster(
        8,
        erasure_pool("ec", 4, 2, 8),
        &["--osd-heartbeat-grace", "2"],
    )
    .await;
    let objects = ObjectClient::connect(cluster.client()).await.unwrap();
    let mut model = write_objects(&objects, "ec", "first", 40).await;
    assert_reads(&objects, "ec", &model).await;
    let listed: BTreeMap<String, u64> = objects
        .list("ec")
        .await
        .unwrap()
        .into_iter()
        .map(|entry| (entry.name, entry.size))
        .collect();
    let sizes: BTreeMap<String, u64> = model
        .iter()
        .map(|(name, data)| (name.clone(), data.len() as u64))
        .collect();
    assert_eq!(listed, sizes, "the listing gives every object's own size");
    let error = objects
        .omap_set("ec", b"first-000", vec![(b"k".to_vec(), b"v".to_vec())])
        .await
        .unwrap_err();
    assert!(format!("{error:#}").contains("erasure-coded"), "{error:#}");

    // Two OSDs die, the primary of the first object's PG among them: every object
    // is still readable from the four shards left of each.
    let map = objects.map();
    let (_, up) = lcpfs_tests::placement(&map, "ec", b"first-000");
    let dead = [up[0], up[1]];
    let dead_indexes: Vec<u32> = dead.iter().map(|&id| cluster.osd_index(&map, id)).collect();
    for &index in &dead_indexes {
        cluster.kill_osd(index);
    }
    wait_for("the dead OSDs marked down", Duration::from_secs(30), || {
        let client = cluster.client();
        async move {
            let map = client.map(true).await.ok()?;
            dead.iter()
                .all(|id| map.osds.get(id).is_some_and(|osd| !osd.up))
                .then_some(())
        }
    })
    .await;
    assert_reads(&objects, "ec", &model).await;

    // Marked out, their shards are rebuilt on the other OSDs, and writes go on.
    cluster
        .client()
        .run(&Command::OsdOut { ids: dead.to_vec() })
        .await
        .unwrap();
    model.extend(write_objects(&objects, "ec", "second", 10).await);
    assert_reads(&objects, "ec", &model).await;
    clean_since(&cluster, current_epoch(&cluster).await, 8).await;
    let pool = objects.map().pool_by_name("ec").unwrap().clone();
    let live: Vec<u32> = (0..8)
        .filter(|index| !dead_indexes.contains(index))
        .collect();
    for &index in &live {
        cluster.kill_osd(index);
    }
    assert_shards_on_disk(&cluster, &live, &pool, Code { k: 4, m: 2 }, &model);
}

/// A deterministic choice in `0..n` for step `step`.
fn pick(step: usize, salt: &str, n: usize) -> usize {
    let hash = blake3::hash(format!("{step}-{salt}").as_bytes());
    (u64::from_le_bytes(hash.as_bytes()[..8].try_into().unwrap()) % n as u64) as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2_1_pool_matches_a_model_and_repair_rebuilds_a_rotted_shard() {
    let mut cluster = cluster(
        4,
        erasure_pool("ec", 2, 1, 4),
        &["--osd-heartbeat-grace", "2"],
    )
    .await;
    let objects = ObjectClient::connect(cluster.client()).await.unwrap();
    let mut model: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for step in 0..160 {
        let name = format!("object-{}", pick(step, "name", 10));
        let data = contents(&format!("{step}"), pick(step, "size", 40_000));
        let current = model.get(&name).cloned();
        match pick(step, "op", 5) {
            0 => {
                objects
                    .put("ec", name.as_bytes(), data.clone())
                    .await
                    .unwrap();
                model.insert(name, data);
            }
            1 => {
                let offset = pick(step, "offset", 50_000);
                objects
                    .operate(
                        "ec",
                        name.as_bytes(),
                        vec![write_at(offset as u64, data.clone())],
                    )
                    .await
                    .unwrap();
                let object = model.entry(name).or_default();
                if object.len() < offset + data.len() {
                    object.resize(offset + data.len(), 0);
                }
                object[offset..offset + data.len()].copy_from_slice(&data);
            }
            2 => {
                objects
                    .append("ec", name.as_bytes(), data.clone())
                    .await
                    .unwrap();
                model.entry(name).or_default().extend_from_slice(&data);
            }
            3 => {
                let size = pick(step, "truncate", 60_000);
                objects
                    .operate("ec", name.as_bytes(), vec![truncate(size as u64)])
                    .await
                    .unwrap();
                model.entry(name).or_default().resize(size, 0);
            }
            _ => {
                let removed = objects.remove("ec", name.as_bytes()).await;
                assert_eq!(
                    removed.is_ok(),
                    current.is_some(),
                    "remove {name}: {removed:?}"
                );
                model.remove(&name);
            }
        }
    }
    assert_reads(&objects, "ec", &model).await;
    let listed: Vec<String> = objects
        .list("ec")
        .await
        .unwrap()
        .into_iter()
        .map(|entry| entry.name)
        .collect();
    assert_eq!(listed, model.keys().cloned().collect::<Vec<_>>());

    objects
        .set_xattr("ec", b"big", "owner", b"me".to_vec())
        .await
        .unwrap();
    assert_eq!(
        objects.get_xattr("ec", b"big", "owner").await.unwrap(),
        b"me"
    );
    let reserved = objects.set_xattr("ec", b"big", "lcpfs.size", vec![0]).await;
    assert!(format!("{:#}", reserved.unwrap_err()).contains("reserved"));

    // Rot, on the OSD holding data shard 1 of an object, the bytes of its second
    // unit: a read decodes them from the other shards and rebuilds the shard.
    let big = contents("big", 64 << 10);
    objects.put("ec", b"big", big.clone()).await.unwrap();
    let map = objects.map();
    let (pg, up) = lcpfs_tests::placement(&map, "ec", b"big");
    rot_shard(&mut cluster, &map, up[1], &big[4096..8192]).await;
    assert!(
        objects.get("ec", b"big").await.unwrap() == big,
        "big reads back through the rot"
    );
    let report = objects.scrub(pg, true, false).await.unwrap();
    assert!(
        report.inconsistencies.is_empty(),
        "the read rebuilt the shard: {report:?}"
    );

    // Rotted again and not read: deep scrub finds the shard unreadable, repair
    // rebuilds it.
    rot_shard(&mut cluster, &map, up[1], &big[4096..8192]).await;
    deep_scrub_finds_and_repair_fixes(&objects, pg, up[1], "read error").await;
    assert!(objects.get("ec", b"big").await.unwrap() == big);

    // The parity shard holds other bytes, written through its engine (so its
    // checksums hold): a shallow scrub sees nothing, a deep scrub re-encodes
    // the data shards and names it, repair rebuilds it.
    while_stopped(&mut cluster, &map, up[2], |dir| {
        let store = Store::open(dir, &OpenOptions::default()).unwrap();
        let mut txn = Transaction::new(format!("pg.{pg}"));
        txn.write_full(b"o/big", contents("not the parity", 32 << 10));
        store.commit(txn).unwrap();
    })
    .await;
    let report = objects.scrub(pg, false, false).await.unwrap();
    assert!(report.inconsistencies.is_empty(), "{report:?}");
    deep_scrub_finds_and_repair_fixes(&objects, pg, up[2], "does not match").await;
    assert!(objects.get("ec", b"big").await.unwrap() == big);

    // Rotted, then written in part: the shard's commit cannot read the bytes it
    // keeps, so that copy takes the write without the object, marked missing.
    // The write is acknowledged (the other shards hold it), reads decode from
    // the others (never "no object", never a disagreement), and recovery
    // rebuilds the shard. A replica's shard first, then the primary's own.
    let mut big = big;
    for (position, unit) in [(1, 1), (0, 0)] {
        let unit = unit * 4096;
        rot_shard(&mut cluster, &map, up[position], &big[unit..unit + 4096]).await;
        let patch = format!("patch over shard {position}").into_bytes();
        objects
            .operate(
                "ec",
                b"big",
                vec![write_at(unit as u64 + 10, patch.clone())],
            )
            .await
            .unwrap();
        big[unit + 10..unit + 10 + patch.len()].copy_from_slice(&patch);
        assert!(
            objects.get("ec", b"big").await.unwrap() == big,
            "big reads back after a write over shard {position}'s rot"
        );
        wait_for("the shard rebuilt", Duration::from_secs(30), || async {
            let report = objects.scrub(pg, true, false).await.ok()?;
            report.inconsistencies.is_empty().then_some(())
        })
        .await;
    }
    assert!(objects.get("ec", b"big").await.unwrap() == big);

    // A shard that missed a write unnoticed: data shard 1 of an object is put
    // back to what it held before the last write (its bytes and version), its
    // copy's log left as it is. A read never combines it with the newer shards
    // (the object keeps its size, so only the version tells them apart): the
    // shard is rebuilt and the read returns the newest bytes.
    let before = contents("lagging, before", 64 << 10);
    objects.put("ec", b"lag", before).await.unwrap();
    let (pg, up) = lcpfs_tests::placement(&map, "ec", b"lag");
    let (old_bytes, old_version) = while_stopped(&mut cluster, &map, up[1], |dir| {
        let store = Store::open(dir, &OpenOptions::default()).unwrap();
        let view = store.head(&format!("pg.{pg}")).unwrap();
        let version = view.xattr(b"o/lag", b"lcpfs.version").unwrap().unwrap();
        (view.read(b"o/lag", 0, u64::MAX).unwrap(), version)
    })
    .await;
    let after = contents("lagging, after", 64 << 10);
    objects.put("ec", b"lag", after.clone()).await.unwrap();
    while_stopped(&mut cluster, &map, up[1], |dir| {
        let store = Store::open(dir, &OpenOptions::default()).unwrap();
        let mut txn = Transaction::new(format!("pg.{pg}"));
        txn.write_full(b"o/lag", old_bytes)
            .set_xattr(b"o/lag", b"lcpfs.version", &old_version);
        store.commit(txn).unwrap();
    })
    .await;
    assert!(
        objects.get("ec", b"lag").await.unwrap() == after,
        "the newest bytes, never the lagging shard's"
    );
    let report = objects.scrub(pg, true, false).await.unwrap();
    assert!(
        report.inconsistencies.is_empty(),
        "the lagging shard was rebuilt: {report:?}"
    );
}

/// Stops `osd`, rots `bytes` (a unit of its shard) wherever its disks hold them,
/// and starts it again.
async fn rot_shard(cluster: &mut MonCluster, map: &ClusterMap, osd: u32, bytes: &[u8]) {
    let rotted = while_stopped(cluster, map, osd, |dir| rot(dir, bytes)).await;
    assert!(rotted > 0, "the bytes are on osd.{osd}'s disks");
}

/// Stops `osd`, runs `work` on its data directory, and starts it again; returns
/// once it is up and listening.
async fn while_stopped<T>(
    cluster: &mut MonCluster,
    map: &ClusterMap,
    osd: u32,
    work: impl FnOnce(&Path) -> T,
) -> T {
    let index = cluster.osd_index(map, osd);
    cluster.kill_osd(index);
    let done = work(&cluster.osds[&index].data);
    cluster.start_osd(index);
    osds_up(&cluster.client(), cluster.osds.len()).await;
    osd_listening(cluster, index).await;
    done
}

/// A deep scrub of `pg` finds one bad shard, on `osd`, for a reason containing
/// `reason`; repair rebuilds it and a second deep scrub is clean.
async fn deep_scrub_finds_and_repair_fixes(
    objects: &ObjectClient,
    pg: PgId,
    osd: u32,
    reason: &str,
) {
    let report = objects.scrub(pg, true, false).await.unwrap();
    assert_eq!(report.inconsistencies.len(), 1, "{report:?}");
    assert_eq!(report.inconsistencies[0].osd, osd);
    assert!(
        report.inconsistencies[0].reason.contains(reason),
        "{report:?}"
    );
    let report = objects.scrub(pg, true, true).await.unwrap();
    assert!(
        report.inconsistencies.iter().all(|bad| bad.repaired),
        "{report:?}"
    );
    let report = objects.scrub(pg, true, false).await.unwrap();
    assert!(report.inconsistencies.is_empty(), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_through_a_killed_primary_are_neither_lost_nor_doubled() {
    // Killed between or inside the two phases of a write: the next primary
    // settles what it left prepared, and the client's retry is answered once. The
    // dead OSD is marked out soon, so that its PGs have min_size shards again.
    let mon_flags = ["--osd-heartbeat-grace", "2", "--osd-down-out-interval", "3"];
    let mut cluster = cluster(4, erasure_pool("ec", 2, 1, 4), &mon_flags).await;
    appends_survive_a_killed_primary(&mut cluster, "ec", 4).await;
}

/// An erasure-coded PG whose shards miss objects goes active at once: a read or
/// write of an object rebuilds that object's missing shards first (a read
/// gathers shards, so it waits for them too), and background recovery does the
/// rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_coded_pg_serves_while_its_shards_recover() {
    let mut cluster = MonCluster::new(&["a"], &["--osd-heartbeat-grace", "2"]);
    cluster.osd_disk_size = "512M".to_owned();
    cluster.osd_flags = vec!["--recovery-sleep".to_owned(), "30".to_owned()];
    // 2+2 over 4 OSDs: every PG has a shard on every OSD, and stays writable
    // (min_size 3) with one of them down.
    let mut cluster = start_with(cluster, 4, &erasure_pool("ec", 2, 2, 4)).await;
    // The primary of the first object's PG lags: its own copy misses objects.
    let map = cluster.ready().await;
    let (_, up) = lcpfs_tests::placement(&map, "ec", b"object-00");
    let lagging = cluster.osd_index(&map, up[0]);
    pgs_serve_while_they_recover(&mut cluster, ("ec", 4), (24, 1), lagging, "recover").await;
}

/// A shard's OSD that missed more writes than the PG log keeps
/// (`--pg-log-entries 16`) is backfilled when it returns: it takes every object's
/// shard, rebuilt from the others, and loses the objects removed meanwhile, so
/// that every shard on disk matches the code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_that_missed_more_than_the_log_keeps_is_backfilled() {
    let mut cluster = MonCluster::new(&["a"], &["--osd-heartbeat-grace", "2"]);
    cluster.osd_disk_size = "512M".to_owned();
    cluster.osd_flags = ["--pg-log-entries", "16"].map(String::from).to_vec();
    cluster.osd_log_filter = Some("warn,lcpfs_osd::backend=info".to_owned());
    // 2+2 over 4 OSDs and one PG: a shard on every OSD, writable (min_size 3)
    // with one of them down.
    let mut cluster = start_with(cluster, 4, &erasure_pool("ec", 2, 2, 1)).await;
    let client = cluster.client();
    let objects = ObjectClient::connect(client.clone()).await.unwrap();
    let mut model = write_objects(&objects, "ec", "before", 8).await;

    let map = objects.map();
    let (_, up) = lcpfs_tests::placement(&map, "ec", b"before-000");
    let (primary, away) = (up[0], up[1]);
    let away_index = cluster.osd_index(&map, away);
    cluster.kill_osd(away_index);
    client
        .run(&Command::OsdDown { ids: vec![away] })
        .await
        .unwrap();
    model.extend(write_objects(&objects, "ec", "during", 24).await);
    for name in ["before-000", "before-001", "before-002"] {
        objects.remove("ec", name.as_bytes()).await.unwrap();
        model.remove(name);
    }

    cluster.start_osd(away_index);
    osd_listening(&cluster, away_index).await;
    osds_up(&client, 4).await;
    clean_since(&cluster, current_epoch(&cluster).await, 1).await;
    let primary_log = cluster.osd_log(cluster.osd_index(&map, primary));
    assert!(
        primary_log.contains(&format!("osd={away}")) && primary_log.contains("backfill=true"),
        "the returning shard was backfilled, not caught up from the log"
    );
    assert_reads(&objects, "ec", &model).await;

    let pool = map.pool_by_name("ec").unwrap().clone();
    let all: Vec<u32> = (0..4).collect();
    for &index in &all {
        cluster.kill_osd(index);
    }
    assert_shards_on_disk(&cluster, &all, &pool, Code { k: 2, m: 2 }, &model);
    let store = Store::open(&cluster.osds[&away_index].data, &OpenOptions::default()).unwrap();
    let pg = object_to_pg(&pool, b"before-000");
    let view = store.head(&format!("pg.{pg}")).unwrap();
    assert!(
        !view.exists(b"o/before-000").unwrap(),
        "an object removed while the shard was away is gone from it"
    );
}
