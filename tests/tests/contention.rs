//! Clients that share objects, and copies that miss metadata: two clients
//! overwriting and appending to one object leave a value one of their histories
//! allows, each append exactly once and in each client's order, and copies that
//! agree; a copy that was down while an object's xattrs and omap changed is
//! brought level with them.

use std::sync::Arc;

use lcpfs_client::objects::ObjectClient;
use lcpfs_tests::{MonCluster, clean_since, cluster_with_pool, current_epoch, osds_up, placement};

/// A client of its own (its own request ids and connections).
async fn client(cluster: &MonCluster) -> Arc<ObjectClient> {
    Arc::new(ObjectClient::connect(cluster.client()).await.unwrap())
}

/// Deep-scrubs the PG of `name` and asserts every copy agrees.
async fn copies_agree(objects: &ObjectClient, name: &[u8]) {
    let (pg, _) = placement(&objects.map(), "data", name);
    let report = objects.scrub(pg, true, false).await.unwrap();
    assert!(
        report.inconsistencies.is_empty(),
        "PG {pg}: {:?}",
        report.inconsistencies
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_writing_one_object_leave_one_of_their_values_and_every_append_once() {
    let cluster = cluster_with_pool(3, &[]).await;
    let (first, second) = (client(&cluster).await, client(&cluster).await);

    // Overwrites: each client's writes follow one another, so the object ends
    // with the last write of one of the two.
    let overwrite = |objects: Arc<ObjectClient>, who: &'static str| {
        tokio::spawn(async move {
            for n in 0..60 {
                let value = format!("{who}-{n}").into_bytes();
                objects.put("data", b"shared", value).await.unwrap();
            }
        })
    };
    let (a, b) = (
        overwrite(first.clone(), "a"),
        overwrite(second.clone(), "b"),
    );
    a.await.unwrap();
    b.await.unwrap();
    let last = first.get("data", b"shared").await.unwrap();
    assert!(
        last == b"a-59" || last == b"b-59",
        "the object holds {:?}, which neither client wrote last",
        String::from_utf8_lossy(&last)
    );
    assert_eq!(second.get("data", b"shared").await.unwrap(), last);
    copies_agree(&first, b"shared").await;

    // Appends: every acknowledged line is there exactly once, each client's in
    // the order it appended them.
    let append = |objects: Arc<ObjectClient>, who: &'static str| {
        tokio::spawn(async move {
            for n in 0..60 {
                let line = format!("{who}{n:03}\n").into_bytes();
                objects.append("data", b"journal", line).await.unwrap();
            }
        })
    };
    let (a, b) = (append(first.clone(), "a"), append(second.clone(), "b"));
    a.await.unwrap();
    b.await.unwrap();
    let journal = String::from_utf8(first.get("data", b"journal").await.unwrap()).unwrap();
    let lines: Vec<&str> = journal.lines().collect();
    assert_eq!(lines.len(), 120, "{journal}");
    for who in ["a", "b"] {
        let own: Vec<String> = lines
            .iter()
            .filter(|line| line.starts_with(who))
            .map(|line| line.to_string())
            .collect();
        let expected: Vec<String> = (0..60).map(|n| format!("{who}{n:03}")).collect();
        assert_eq!(
            own, expected,
            "client {who}'s appends, once each and in order"
        );
    }
    copies_agree(&first, b"journal").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_that_missed_xattr_and_omap_changes_is_brought_level() {
    let mut cluster = cluster_with_pool(3, &[]).await;
    let objects = client(&cluster).await;
    objects
        .put("data", b"meta", b"payload".to_vec())
        .await
        .unwrap();
    objects
        .set_xattr("data", b"meta", "colour", b"red".to_vec())
        .await
        .unwrap();
    let entries = (0..50)
        .map(|n| {
            (
                format!("key-{n:02}").into_bytes(),
                format!("v{n}").into_bytes(),
            )
        })
        .collect();
    objects.omap_set("data", b"meta", entries).await.unwrap();

    // A replica of the object's PG is down while its metadata changes.
    let map = objects.map();
    let (_, up) = placement(&map, "data", b"meta");
    let replica = cluster.osd_index(&map, up[1]);
    cluster.kill_osd(replica);
    osds_up(&cluster.client(), 2).await;
    objects
        .set_xattr("data", b"meta", "colour", b"blue".to_vec())
        .await
        .unwrap();
    objects
        .set_xattr("data", b"meta", "shape", b"round".to_vec())
        .await
        .unwrap();
    let removed: Vec<Vec<u8>> = (0..25)
        .map(|n| format!("key-{n:02}").into_bytes())
        .collect();
    objects.omap_rm("data", b"meta", removed).await.unwrap();
    objects
        .omap_set(
            "data",
            b"meta",
            vec![(b"key-99".to_vec(), b"late".to_vec())],
        )
        .await
        .unwrap();

    // Back: recovery brings the copy level, and a deep scrub (which compares
    // xattrs and omap) finds every copy agreeing.
    cluster.start_osd(replica);
    osds_up(&cluster.client(), 3).await;
    clean_since(&cluster, current_epoch(&cluster).await, 16).await;
    copies_agree(&objects, b"meta").await;

    // With the primary gone, the revived copy (next in the up set) is primary
    // and serves the metadata it was brought.
    cluster.kill_osd(cluster.osd_index(&map, up[0]));
    osds_up(&cluster.client(), 2).await;
    assert_eq!(
        objects.get_xattr("data", b"meta", "colour").await.unwrap(),
        b"blue"
    );
    assert_eq!(
        objects.get_xattr("data", b"meta", "shape").await.unwrap(),
        b"round"
    );
    let omap = objects
        .omap_range("data", b"meta", b"", b"", 0)
        .await
        .unwrap();
    let keys: Vec<String> = omap
        .iter()
        .map(|(key, _)| String::from_utf8_lossy(key).into_owned())
        .collect();
    let mut expected: Vec<String> = (25..50).map(|n| format!("key-{n:02}")).collect();
    expected.push("key-99".into());
    assert_eq!(keys, expected);
}
