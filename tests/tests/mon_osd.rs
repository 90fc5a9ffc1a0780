//! OSD lifecycle in the monitors: boot, heartbeat grace, down-out interval, failure
//! reports from two hosts that share a PG with the accused.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lcpfs_client::mon_client::{MonClient, OsdBoot};
use lcpfs_tests::{MonCluster, replicated_pool, wait_for};

fn boot(host: u32) -> OsdBoot {
    OsdBoot {
        uuid: format!("uuid-{host}"),
        addr: format!("127.0.0.1:{}", 7100 + host),
        host: format!("host{host}"),
        zone: String::new(),
        device_class: "hdd".into(),
        weight: 1.0,
    }
}

async fn osd_state(client: &MonClient, id: u32) -> (bool, bool) {
    let map = client.map(true).await.expect("map");
    let osd = &map.osds[&id];
    (osd.up, osd.in_)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_osds_go_down_then_out_and_come_back_on_boot() {
    let mut cluster = MonCluster::new(
        &["a"],
        &["--osd-heartbeat-grace", "3", "--osd-down-out-interval", "5"],
    );
    cluster.bootstrap(&["a"]);
    cluster.ready().await;
    let client = cluster.client();
    for host in 0..3 {
        assert_eq!(
            client.osd_boot(&boot(host)).await.unwrap(),
            host,
            "ids from 0"
        );
    }
    // osd.0 and osd.1 send heartbeats; osd.2 is silent.
    let beating = Arc::new(Mutex::new(BTreeSet::from([0u32, 1])));
    let heart = {
        let client = client.clone();
        let beating = beating.clone();
        tokio::spawn(async move {
            loop {
                let ids: Vec<u32> = beating.lock().unwrap().iter().copied().collect();
                for id in ids {
                    client.osd_heartbeat(id, 0, 0).await.ok();
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    wait_for("osd.2 down", Duration::from_secs(20), || {
        let client = client.clone();
        async move { (osd_state(&client, 2).await == (false, true)).then_some(()) }
    })
    .await;
    assert_eq!(
        osd_state(&client, 0).await,
        (true, true),
        "beating OSDs stay up"
    );
    wait_for("osd.2 out", Duration::from_secs(20), || {
        let client = client.clone();
        async move { (osd_state(&client, 2).await == (false, false)).then_some(()) }
    })
    .await;

    // Booting again brings back the same id, up and in (it was marked out by the
    // timer, not by an operator).
    beating.lock().unwrap().insert(2);
    assert_eq!(client.osd_boot(&boot(2)).await.unwrap(), 2);
    assert_eq!(osd_state(&client, 2).await, (true, true));

    // Only an OSD sharing a PG with the accused is heard: with no pool, none is.
    let unheard = client.report_failure(0, 1).await.unwrap_err();
    assert!(unheard.to_string().contains("shares no PG"), "{unheard:#}");
    client.run(&replicated_pool("data", 8)).await.unwrap();

    // One host reporting osd.1 is not enough; a second host is.
    client.report_failure(0, 1).await.unwrap();
    client.report_failure(0, 1).await.unwrap();
    assert_eq!(osd_state(&client, 1).await, (true, true));
    client.report_failure(2, 1).await.unwrap();
    assert!(!osd_state(&client, 1).await.0, "two hosts reported osd.1");
    heart.abort();

    // An operator's out is not undone by a boot.
    client
        .run(&lcpfs_core::monitor::Command::OsdOut { ids: vec![0] })
        .await
        .unwrap();
    client.osd_boot(&boot(0)).await.unwrap();
    assert_eq!(osd_state(&client, 0).await, (true, false));
}
