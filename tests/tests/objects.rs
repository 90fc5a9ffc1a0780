//! Objects in a replicated pool over real OSD processes: every acknowledged write
//! reads back byte-exact through an OSD killed mid-stream, and once it returns and
//! its PGs peer, every object has all its copies on the OSDs' disks; a PG without
//! min_size OSDs refuses writes clearly.

use std::collections::BTreeMap;
use std::time::Duration;

use lcpfs_client::mon_client::MonClient;
use lcpfs_client::objects::ObjectClient;
use lcpfs_core::engine::{OpenOptions, Store};
use lcpfs_core::monitor::{ClusterStatus, Query};
use lcpfs_core::pg::object_to_pg;
use lcpfs_tests::{MonCluster, replicated_pool, wait_for};

/// Deterministic contents for object `name` of `size` bytes.
fn contents(name: &str, size: usize) -> Vec<u8> {
    let mut data = vec![0u8; size];
    blake3::Hasher::new()
        .update(name.as_bytes())
        .finalize_xof()
        .fill(&mut data);
    data
}

async fn osds_up(client: &MonClient, count: usize) {
    wait_for(&format!("{count} OSDs up"), Duration::from_secs(30), || {
        let client = client.clone();
        async move {
            let map = client.map(true).await.ok()?;
            (map.osds.values().filter(|osd| osd.up).count() == count).then_some(())
        }
    })
    .await;
}

/// Waits until the monitors' status satisfies `check` (PG states arrive from the
/// primaries every couple of seconds).
async fn status_until(
    cluster: &MonCluster,
    what: &str,
    check: impl Fn(&ClusterStatus) -> bool,
) -> ClusterStatus {
    let client = cluster.client();
    let check = &check;
    wait_for(what, Duration::from_secs(30), || {
        let client = client.clone();
        async move {
            let status: ClusterStatus = client.query(&Query::Status).await.ok()?;
            check(&status).then_some(status)
        }
    })
    .await
}

async fn cluster_with_pool(osds: u32, osd_flags: &[&str]) -> MonCluster {
    let mut cluster = MonCluster::new(&["a"], &["--osd-heartbeat-grace", "2"]);
    cluster.osd_flags = osd_flags.iter().map(|flag| flag.to_string()).collect();
    cluster.bootstrap(&["a"]);
    cluster.ready().await;
    for index in 0..osds {
        cluster.start_osd(index);
    }
    let client = cluster.client();
    osds_up(&client, osds as usize).await;
    client
        .run(&replicated_pool("data", 16))
        .await
        .expect("pool");
    cluster
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_an_osd_killed_mid_stream() {
    let mut cluster = cluster_with_pool(4, &[]).await;
    let objects = ObjectClient::connect(cluster.client()).await.unwrap();
    let sizes = [0, 1, 4095, 4096, 65_537, 300_000, 1 << 20];
    let mut written = BTreeMap::new();
    for n in 0..90 {
        if n == 30 {
            cluster.kill_osd(1);
        }
        let name = format!("object-{n:03}");
        let data = contents(&name, sizes[n % sizes.len()]);
        objects
            .put("data", name.as_bytes(), data.clone())
            .await
            .unwrap_or_else(|error| panic!("put {name}: {error:#}"));
        written.insert(name, (n, data));
    }
    for (name, (_, data)) in &written {
        let read = objects.get("data", name.as_bytes()).await.unwrap();
        assert!(read == *data, "{name} reads back byte-exact");
    }

    // The killed OSD comes back: its PGs peer, it receives what it missed, and where
    // it is primary again it first takes the newer history from its peers.
    cluster.start_osd(1);
    osds_up(&cluster.client(), 4).await;
    for (name, (_, data)) in &written {
        let read = objects.get("data", name.as_bytes()).await.unwrap();
        assert!(
            read == *data,
            "{name} reads back byte-exact after the OSD returned"
        );
    }
    let status = status_until(&cluster, "all PGs active+clean", |status| {
        status.pg_states.get("active+clean") == Some(&16) && status.pg_states.len() == 1
    })
    .await;
    assert!(!status.checks.contains_key("PG_DEGRADED"), "{status:?}");
    let listed: Vec<String> = objects
        .list("data")
        .await
        .unwrap()
        .into_iter()
        .map(|entry| entry.name)
        .collect();
    assert_eq!(listed, written.keys().cloned().collect::<Vec<_>>());

    // The copies on disk, through the engine of each (stopped) OSD.
    let map = objects.map();
    let pool = map.pool_by_name("data").unwrap().clone();
    drop(objects);
    for index in 0..4 {
        cluster.kill_osd(index);
    }
    let stores: Vec<Store> = (0..4)
        .map(|index| Store::open(&cluster.osds[&index].data, &OpenOptions::default()).unwrap())
        .collect();
    for (name, (n, data)) in &written {
        let pg = object_to_pg(&pool, name.as_bytes());
        let key = [b"o/".as_slice(), name.as_bytes()].concat();
        let copies = stores
            .iter()
            .filter(|store| {
                store
                    .head(&format!("pg.{pg}"))
                    .and_then(|view| view.read(&key, 0, u64::MAX))
                    .is_ok_and(|read| read == *data)
            })
            .count();
        assert_eq!(
            copies, 3,
            "{name} (PG {pg}, written as number {n}) has {copies} intact copies on disk"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_to_a_pg_below_min_size_fail_clearly() {
    let mut cluster = cluster_with_pool(4, &["--pg-inactive-wait", "1"]).await;
    cluster.kill_osd(0);
    cluster.kill_osd(1);
    let client = cluster.client();
    osds_up(&client, 2).await;
    let status = status_until(&cluster, "degraded and inactive PGs reported", |status| {
        status.pg_states.contains_key("inactive")
            && status.pg_states.contains_key("active+undersized+degraded")
    })
    .await;
    assert!(status.checks.contains_key("PG_DEGRADED"), "{status:?}");
    assert!(status.checks.contains_key("PG_AVAILABILITY"), "{status:?}");
    let objects = ObjectClient::connect(client)
        .await
        .unwrap()
        .with_timeout(Duration::from_secs(4));
    let mut refused = 0;
    let mut acknowledged = Vec::new();
    for n in 0..40 {
        let name = format!("late-{n}");
        match objects
            .put("data", name.as_bytes(), contents(&name, 100))
            .await
        {
            Ok(()) => acknowledged.push(name),
            Err(error) => {
                let message = format!("{error:#}");
                assert!(
                    message.contains("is inactive") && message.contains("min_size is 2"),
                    "{message}"
                );
                refused += 1;
            }
        }
        if refused >= 2 {
            break;
        }
    }
    assert!(refused >= 1, "some PG had only one of its OSDs up");

    // The OSDs come back: nothing acknowledged is lost.
    cluster.start_osd(0);
    cluster.start_osd(1);
    osds_up(&cluster.client(), 4).await;
    let objects = objects.with_timeout(Duration::from_secs(30));
    for name in &acknowledged {
        assert_eq!(
            objects.get("data", name.as_bytes()).await.unwrap(),
            contents(name, 100),
            "{name} survives"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_errors_and_the_osds_keep_serving() {
    let cluster = cluster_with_pool(3, &["--max-object-mib", "1"]).await;
    let objects = ObjectClient::connect(cluster.client())
        .await
        .unwrap()
        .with_timeout(Duration::from_secs(10));
    let error = objects.put("data", b"", b"x".to_vec()).await.unwrap_err();
    assert!(
        format!("{error:#}").contains("object name is empty"),
        "{error:#}"
    );
    let error = objects.put("nope", b"x", b"x".to_vec()).await.unwrap_err();
    assert!(
        format!("{error:#}").contains("pool 'nope' does not exist"),
        "{error:#}"
    );
    let error = objects.get("data", b"missing").await.unwrap_err();
    assert!(
        format!("{error:#}").contains("object 'missing' does not exist in pool 'data'"),
        "{error:#}"
    );
    let error = objects
        .put("data", b"big", vec![7; 2 << 20])
        .await
        .unwrap_err();
    assert!(
        format!("{error:#}").contains("object size limit"),
        "{error:#}"
    );
    let error = objects.remove("data", b"missing").await.unwrap_err();
    assert!(format!("{error:#}").contains("does not exist"), "{error:#}");
    objects
        .put("data", b"fine", b"still serving".to_vec())
        .await
        .unwrap();
    objects
        .append("data", b"fine", b"!".to_vec())
        .await
        .unwrap();
    assert_eq!(
        objects.get("data", b"fine").await.unwrap(),
        b"still serving!"
    );
    assert_eq!(objects.stat("data", b"fine").await.unwrap().size, 14);
}
