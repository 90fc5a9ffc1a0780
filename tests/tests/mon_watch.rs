//! A Jepsen-style check of the map history seen by subscribers: while changes are
//! applied and monitors fail, every subscriber sees every epoch in order, without
//! gaps, with identical content for the same epoch.

use std::collections::BTreeMap;
use std::time::Duration;

use lcpfs_client::mon_client::{MonClient, OsdBoot};
use lcpfs_core::map::ClusterMap;
use lcpfs_core::monitor::Command;
use lcpfs_tests::MonCluster;

/// Follows the map through `first` (then any monitor after a failure) until `until`
/// epoch; returns epoch → digest of every map seen.
async fn watch(
    first: MonClient,
    any: MonClient,
    until: tokio::sync::watch::Receiver<u64>,
) -> Vec<(u64, String)> {
    let mut seen = Vec::new();
    let mut last: Option<ClusterMap> = None;
    let mut client = first;
    loop {
        let mut stream = match client.subscribe(last.clone()).await {
            Ok(stream) => stream,
            Err(_) => {
                client = any.clone();
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        loop {
            let target = *until.borrow();
            if target > 0 && last.as_ref().is_some_and(|map| map.epoch >= target) {
                return seen;
            }
            let next = tokio::time::timeout(Duration::from_secs(1), stream.next()).await;
            match next {
                Ok(Ok(Some(map))) => {
                    let digest = blake3::hash(&serde_json::to_vec(map).unwrap())
                        .to_hex()
                        .to_string();
                    seen.push((map.epoch, digest));
                    last = Some(map.clone());
                }
                Ok(Ok(None)) | Ok(Err(_)) => {
                    client = any.clone();
                    break;
                }
                Err(_) => {}
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_see_every_epoch_in_order_with_identical_content() {
    // Frequent snapshots: a restarted monitor catches up from one, and must still
    // serve its subscribers every epoch.
    let mut cluster = MonCluster::new(&["a", "b", "c"], &["--snapshot-every", "30"]);
    cluster.bootstrap(&["a", "b", "c"]);
    cluster.ready().await;
    let client = cluster.client();
    let (done, until) = tokio::sync::watch::channel(0u64);
    let watchers: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|name| {
            tokio::spawn(watch(
                cluster.client_of(name),
                client.clone(),
                until.clone(),
            ))
        })
        .collect();

    for host in 0..3 {
        client
            .osd_boot(&OsdBoot {
                uuid: format!("u{host}"),
                addr: format!("127.0.0.1:{}", 7200 + host),
                host: format!("h{host}"),
                zone: String::new(),
                device_class: "hdd".into(),
                weight: 1.0,
            })
            .await
            .unwrap();
    }
    // The leader is killed and restarted while changes go on.
    let leader = cluster.leader().await;
    for round in 0..120 {
        if round == 40 {
            cluster.kill(&leader);
        }
        if round == 80 {
            cluster.start(&leader, &[]);
        }
        let reweight = if round % 2 == 0 { 0.5 } else { 1.0 };
        client
            .run(&Command::OsdReweight { id: 0, reweight })
            .await
            .expect("reweight");
    }
    let last = client.map(true).await.unwrap().epoch;
    done.send_replace(last);

    let mut digests: BTreeMap<u64, String> = BTreeMap::new();
    for watcher in watchers {
        let seen = tokio::time::timeout(Duration::from_secs(60), watcher)
            .await
            .expect("watcher reaches the last epoch")
            .unwrap();
        assert!(seen.len() > 100, "saw {} epochs", seen.len());
        for pair in seen.windows(2) {
            assert_eq!(pair[1].0, pair[0].0 + 1, "epochs in order without gaps");
        }
        assert_eq!(seen.last().unwrap().0, last);
        for (epoch, digest) in seen {
            let agreed = digests.entry(epoch).or_insert_with(|| digest.clone());
            assert_eq!(*agreed, digest, "epoch {epoch} has one content");
        }
    }
}
