//! Monitor quorum under failure: real `lcpfs-mon` processes on loopback.

use std::time::Duration;

use lcpfs_client::mon_client::{MonClient, OsdBoot};
use lcpfs_core::map::ClusterMap;
use lcpfs_core::monitor::{Command, CommandOutcome};
use lcpfs_tests::{MonCluster, erasure_pool, replicated_pool, wait_for};

fn pool(name: &str) -> Command {
    replicated_pool(name, 16)
}

async fn boot_osds(client: &MonClient, hosts: u32) {
    for host in 0..hosts {
        client
            .osd_boot(&OsdBoot {
                uuid: format!("uuid-{host}"),
                addr: format!("127.0.0.1:{}", 7000 + host),
                host: format!("host{host}"),
                zone: String::new(),
                device_class: "ssd".into(),
                weight: 1.0,
            })
            .await
            .expect("osd boot");
    }
}

async fn map_of(cluster: &MonCluster, name: &str) -> ClusterMap {
    cluster.client_of(name).map(false).await.expect("map")
}

/// Waits until monitor `name` has applied the map at `epoch` exactly like `expected`.
async fn caught_up(cluster: &MonCluster, name: &str, expected: &ClusterMap) {
    let client = cluster.client_of(name).with_timeout(Duration::from_secs(1));
    wait_for(
        &format!("mon.{name} at epoch {}", expected.epoch),
        Duration::from_secs(30),
        || {
            let client = client.clone();
            async move { client.map(false).await.ok().filter(|map| map == expected) }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_monitors_survive_leader_loss_and_refuse_without_quorum() {
    let mut cluster = MonCluster::new(&["a", "b", "c"], &["--quorum-timeout", "2"]);
    cluster.bootstrap(&["a", "b", "c"]);
    let map = cluster.ready().await;
    assert_eq!(
        map.monitors.len(),
        3,
        "bootstrap map lists the initial monitors"
    );
    let client = cluster.client();
    boot_osds(&client, 3).await;
    client
        .run(&pool("before"))
        .await
        .expect("pool before failover");

    // Kill the leader: the other two elect a new one that serves changes.
    let old_leader = cluster.leader().await;
    cluster.kill(&old_leader);
    let new_leader = cluster.leader().await;
    assert_ne!(new_leader, old_leader);
    client
        .run(&pool("after"))
        .await
        .expect("pool after failover");

    // The old leader restarts from its data directory alone and catches up.
    let latest = client.map(true).await.unwrap();
    cluster.start(&old_leader, &[]);
    caught_up(&cluster, &old_leader, &latest).await;

    // Kill both followers: the leader refuses changes and applies nothing.
    let leader = cluster.leader().await;
    let followers: Vec<String> = cluster
        .mons
        .keys()
        .filter(|n| **n != leader)
        .cloned()
        .collect();
    let before = map_of(&cluster, &leader).await;
    for follower in &followers {
        cluster.kill(follower);
    }
    let lone = cluster
        .client_of(&leader)
        .with_timeout(Duration::from_secs(4));
    let error = lone.run(&pool("refused")).await.expect_err("no quorum");
    assert!(
        error.to_string().contains("no quorum"),
        "error names the missing quorum: {error:#}"
    );
    assert_eq!(
        map_of(&cluster, &leader).await,
        before,
        "nothing half-applied"
    );

    // Everyone restarts: the map is exactly what it was, without the refused pool.
    let all: Vec<String> = cluster.mons.keys().cloned().collect();
    cluster.kill(&leader);
    for name in &all {
        cluster.start(name, &[]);
    }
    let after = cluster.ready().await;
    assert_eq!(after, before, "epoch and content survive a full restart");
    assert!(after.pool_by_name("refused").is_none());
    for name in &all {
        caught_up(&cluster, name, &before).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_monitor_catches_up_from_a_snapshot_after_compaction() {
    let mut cluster = MonCluster::new(&["a", "b", "c"], &["--snapshot-every", "50"]);
    cluster.bootstrap(&["a", "b", "c"]);
    cluster.ready().await;
    let leader = cluster.leader().await;
    let lagging = cluster
        .mons
        .keys()
        .find(|n| **n != leader)
        .cloned()
        .unwrap();
    cluster.kill(&lagging);
    let client = cluster.client();
    boot_osds(&client, 3).await;
    for n in 0..400 {
        let command = if n % 4 == 0 {
            Command::AuthAdd {
                entity: format!("client.user{n}"),
            }
        } else {
            Command::OsdReweight {
                id: n % 3,
                reweight: f64::from(n % 7 + 1) / 8.0,
            }
        };
        client.run(&command).await.expect("change");
    }
    let latest = client.map(true).await.unwrap();
    assert!(
        latest.epoch > 300,
        "hundreds of map changes: epoch {}",
        latest.epoch
    );
    // The leader compacted its log past what the lagging monitor has: only a
    // snapshot can bring it up to date.
    let purged = wait_for(
        "log compaction on the leader",
        Duration::from_secs(30),
        || {
            let leader = cluster.client_of(&leader);
            async move {
                let (_, reply) = leader.ping_all().await.pop()?;
                reply
                    .filter(|reply| reply.purged_index > 100)
                    .map(|reply| reply.purged_index)
            }
        },
    )
    .await;
    assert!(purged > 100);
    cluster.start(&lagging, &[]);
    caught_up(&cluster, &lagging, &latest).await;
    let auth_of = |name: &str| {
        let client = cluster.client_of(name);
        async move {
            client
                .query::<Vec<lcpfs_core::monitor::AuthEntity>>(
                    &lcpfs_core::monitor::Query::AuthList,
                )
                .await
                .unwrap()
        }
    };
    let keys = auth_of(&lagging).await;
    assert_eq!(
        keys.len(),
        101,
        "100 clients and the admin, installed from the snapshot"
    );
    assert_eq!(
        keys,
        auth_of(&leader).await,
        "the same keys on every monitor"
    );

    // A full restart of every monitor keeps everything.
    let names: Vec<String> = cluster.mons.keys().cloned().collect();
    for name in &names {
        cluster.kill(name);
    }
    for name in &names {
        cluster.start(name, &[]);
    }
    assert_eq!(cluster.ready().await, latest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_commands_say_why_and_change_nothing() {
    let mut cluster = MonCluster::new(&["a"], &[]);
    cluster.bootstrap(&["a"]);
    cluster.ready().await;
    let client = cluster.client();
    boot_osds(&client, 3).await;
    let before = client.map(true).await.unwrap();
    let ec_too_wide = erasure_pool("wide", 4, 2, 16);
    for (command, expected) in [
        (
            ec_too_wide,
            "needs 6 distinct hosts but the cluster has only 3",
        ),
        (
            Command::PoolSet {
                name: "missing".into(),
                key: "pg_num".into(),
                value: "64".into(),
            },
            "does not exist",
        ),
        (Command::OsdRm { ids: vec![0] }, "is up"),
        (
            Command::AuthAdd {
                entity: "nobody".into(),
            },
            "invalid entity name",
        ),
    ] {
        match client.command(&command).await.unwrap() {
            CommandOutcome::Refused { reason } => {
                assert!(reason.contains(expected), "{command:?}: {reason}")
            }
            done => panic!("{command:?} was not refused: {done:?}"),
        }
    }
    assert_eq!(client.map(true).await.unwrap(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_old_leader_gives_no_older_map_and_rejoins() {
    let mut cluster = MonCluster::new(&["a", "b", "c"], &["--quorum-timeout", "2"]);
    cluster.bootstrap(&["a", "b", "c"]);
    cluster.ready().await;
    boot_osds(&cluster.client(), 3).await;

    // The leader is cut off (frozen, not killed: it still believes it leads when
    // it wakes); the other two elect a leader and go on without it.
    let old = cluster.leader().await;
    cluster.signal_mon(&old, "STOP");
    let others: Vec<String> = cluster
        .mons
        .iter()
        .filter(|(name, _)| **name != old)
        .map(|(_, mon)| mon.addr.clone())
        .collect();
    let survivors = MonClient::with_tls(&others, cluster.client_tls()).unwrap();
    for n in 0..20 {
        survivors
            .run(&pool(&format!("while-cut-off-{n}")))
            .await
            .expect("the majority commits without the old leader");
    }
    let latest = survivors.map(true).await.unwrap();

    // Woken, it is asked at once by a client that saw the newer map: it answers
    // with that map or newer (having caught up), or sends the client elsewhere;
    // never with the map it had.
    cluster.signal_mon(&old, "CONT");
    let informed = cluster.client_of(&old).with_epoch(latest.epoch);
    match informed.map(false).await {
        Ok(map) => assert!(
            map.epoch >= latest.epoch,
            "mon.{old} gave epoch {} to a client that had seen {}",
            map.epoch,
            latest.epoch
        ),
        Err(error) => assert!(error.to_string().contains("older than epoch"), "{error:#}"),
    }

    // A change sent to it is committed by the quorum (it forwards or has
    // stepped down), never applied by it alone; every monitor ends with one map.
    cluster
        .client_of(&old)
        .run(&pool("through-the-old-leader"))
        .await
        .expect("committed through the quorum");
    let after = survivors.map(true).await.unwrap();
    assert!(after.pool_by_name("through-the-old-leader").is_some());
    assert!(after.pool_by_name("while-cut-off-19").is_some());
    for name in ["a", "b", "c"] {
        caught_up(&cluster, name, &after).await;
    }
}
