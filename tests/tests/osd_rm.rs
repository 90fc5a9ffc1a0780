//! Removing an OSD: the monitors refuse `osd rm` while a PG may still need the
//! OSD's writes (it is in, or some PG has not been reported active+clean since it
//! left), allow it once every PG is clean without it or once it is declared lost,
//! and never give its id to another OSD.

use lcpfs_client::mon_client::MonClient;
use lcpfs_client::objects::ObjectClient;
use lcpfs_core::monitor::{Command, CommandOutcome};
use lcpfs_tests::{
    MonCluster, clean_since, contents, current_epoch, replicated_pool, start_with, wait_for,
};
use std::time::Duration;

async fn refused(client: &MonClient, command: Command, expected: &str) {
    match client.command(&command).await.unwrap() {
        CommandOutcome::Refused { reason } => {
            assert!(reason.contains(expected), "{command:?}: {reason}")
        }
        done => panic!("{command:?} was not refused: {done:?}"),
    }
}

async fn done(client: &MonClient, command: Command) {
    match client.command(&command).await.unwrap() {
        CommandOutcome::Done { .. } => {}
        refused => panic!("{command:?}: {refused:?}"),
    }
}

/// Stops OSD process `index` and waits for the map to mark it down.
async fn stop(cluster: &mut MonCluster, index: u32) -> u32 {
    let id = cluster.osd_id(&cluster.client().map(true).await.unwrap(), index);
    cluster.kill_osd(index);
    let client = cluster.client();
    done(&client, Command::OsdDown { ids: vec![id] }).await;
    wait_for("the OSD down", Duration::from_secs(10), || {
        let client = client.clone();
        async move {
            let map = client.map(true).await.ok()?;
            (!map.osds[&id].up).then_some(())
        }
    })
    .await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_osd_is_removed_only_once_no_pg_needs_it_and_its_id_is_never_reused() {
    let cluster = MonCluster::new(&["a"], &["--osd-heartbeat-grace", "2"]);
    let mut cluster = start_with(cluster, 4, &replicated_pool("data", 8)).await;
    let client = cluster.client();
    let objects = ObjectClient::connect(client.clone()).await.unwrap();
    for n in 0..20 {
        let name = format!("object-{n}");
        objects
            .put("data", name.as_bytes(), contents(&name, 3000))
            .await
            .unwrap();
    }

    // Down but in: its PGs wait for it.
    let first = stop(&mut cluster, 3).await;
    refused(&client, Command::OsdRm { ids: vec![first] }, "is in").await;
    // Out, and every PG clean on the other three: nothing needs it.
    done(&client, Command::OsdOut { ids: vec![first] }).await;
    clean_since(&cluster, current_epoch(&cluster).await, 8).await;
    wait_for("osd rm accepted", Duration::from_secs(20), || {
        let client = client.clone();
        async move {
            let command = Command::OsdRm { ids: vec![first] };
            matches!(
                client.command(&command).await,
                Ok(CommandOutcome::Done { .. })
            )
            .then_some(())
        }
    })
    .await;

    // A second OSD leaves: two copies of three remain, no PG can be clean, and
    // the OSD may hold writes the others lack until it is declared lost.
    let second = stop(&mut cluster, 2).await;
    done(&client, Command::OsdOut { ids: vec![second] }).await;
    refused(
        &client,
        Command::OsdRm { ids: vec![second] },
        "may hold writes",
    )
    .await;
    done(&client, Command::OsdLost { ids: vec![second] }).await;
    done(&client, Command::OsdRm { ids: vec![second] }).await;

    // A new OSD gets a new id, never a removed one's.
    cluster.start_osd(4);
    let newcomer = wait_for("the new OSD up", Duration::from_secs(30), || {
        let (client, addr) = (client.clone(), cluster.osds[&4].addr.clone());
        async move {
            let map = client.map(true).await.ok()?;
            map.osds
                .values()
                .find(|osd| osd.addr == addr && osd.up)
                .map(|osd| osd.id)
        }
    })
    .await;
    assert!(
        newcomer > first.max(second),
        "osd.{newcomer} reuses a removed id ({first}, {second})"
    );
    for n in 0..20 {
        let name = format!("object-{n}");
        assert_eq!(
            objects.get("data", name.as_bytes()).await.unwrap(),
            contents(&name, 3000)
        );
    }
}
