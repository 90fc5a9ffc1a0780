//! Growing the monitor quorum from 1 to 3 to 5 and shrinking it to 3, while changes
//! keep being applied: every acknowledged change survives.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lcpfs_core::monitor::{AuthEntity, ClusterStatus, Command, Query};
use lcpfs_tests::{MonCluster, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_grows_and_shrinks_under_writes() {
    let mut cluster = MonCluster::new(&["a", "b", "c", "d", "e"], &[]);
    cluster.bootstrap(&["a"]);
    cluster.ready().await;
    let client = cluster.client();

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let client = client.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let entity = format!("client.w{n}");
                if client
                    .run(&Command::AuthAdd {
                        entity: entity.clone(),
                    })
                    .await
                    .is_ok()
                {
                    acknowledged.push(entity);
                }
                n += 1;
            }
            acknowledged
        })
    };

    for name in ["b", "c", "d", "e"] {
        cluster.start(name, &[]);
        let addr = cluster.mons[name].addr.clone();
        client
            .run(&Command::MonAdd {
                name: name.into(),
                addr,
            })
            .await
            .unwrap_or_else(|error| panic!("mon add {name}: {error:#}\n{}", cluster.log(name)));
    }
    let map = client.map(true).await.unwrap();
    assert_eq!(map.monitors.len(), 5);

    // Shrink to three, removing the leader itself and one other monitor.
    let leader = cluster.leader().await;
    let other = ["d", "e", "c"]
        .into_iter()
        .find(|name| *name != leader)
        .unwrap();
    for name in [leader.as_str(), other] {
        client
            .run(&Command::MonRemove { name: name.into() })
            .await
            .unwrap_or_else(|error| panic!("mon remove {name}: {error:#}"));
        cluster.kill(name);
    }
    stop.store(true, Ordering::Relaxed);
    let acknowledged = writer.await.unwrap();
    assert!(acknowledged.len() > 10, "writes went on during the changes");

    let status: ClusterStatus = client.query(&Query::Status).await.unwrap();
    let names: Vec<&str> = status
        .monitors
        .iter()
        .map(|mon| mon.name.as_str())
        .collect();
    assert_eq!(names.len(), 3, "three monitors remain: {names:?}");
    assert!(status.monitors.iter().all(|mon| mon.voter && mon.reachable));

    // The three remaining monitors hold a quorum with one of them stopped.
    let mut remaining: Vec<String> = status.monitors.iter().map(|mon| mon.name.clone()).collect();
    remaining.sort();
    cluster.kill(&remaining[0]);
    let survivors = cluster.client();
    let entities: Vec<AuthEntity> = wait_for("a quorum of two", Duration::from_secs(30), || {
        let survivors = survivors.clone();
        async move {
            survivors
                .run(&Command::AuthAdd {
                    entity: "client.after".into(),
                })
                .await
                .ok()?;
            survivors.query(&Query::AuthList).await.ok()
        }
    })
    .await;
    for entity in &acknowledged {
        assert!(
            entities.iter().any(|e| &e.entity == entity),
            "acknowledged {entity} was lost"
        );
    }
    let map = survivors.map(true).await.unwrap();
    let monitors: Vec<&String> = map.monitors.keys().collect();
    assert_eq!(monitors, remaining.iter().collect::<Vec<_>>());
}
