//! Reads never go back in time: a primary cut off from the cluster stops
//! answering reads once its read lease runs out, and a new primary takes no
//! write before then, so a client still following an old map cannot read data
//! older than a write a newer primary acknowledged; and a write that failed
//! half-way is never read and then lost, nor read again once it was not, and a
//! write given up is settled before the client's next request for its object,
//! and never runs after it, however late it reaches the primary.

use std::time::Duration;

use lcpfs_client::objects::ObjectClient;
use lcpfs_core::map::ClusterMap;
use lcpfs_core::monitor::Command;
use lcpfs_proto::osd_client::OsdClient;
use lcpfs_proto::{ObjectOp, OpReply, OpRequest, ReadRange, object_op};
use lcpfs_tests::{MonCluster, erasure_pool, osds_up, placement, replicated_pool, wait_for};

/// A whole-object read of `name` in pool `data`, sent straight to `osd` by a
/// client whose map is `map` (it does not follow the monitors).
async fn read_at(map: &ClusterMap, osd: u32, name: &[u8]) -> Result<OpReply, tonic::Status> {
    op_at(
        map,
        osd,
        ("data", name),
        (1, whole_read()),
        Duration::from_secs(20),
    )
    .await
    .expect("the OSD answers")
}

/// A read of a whole object.
fn whole_read() -> object_op::Op {
    object_op::Op::Read(ReadRange {
        offset: 0,
        length: 0,
    })
}

/// Request number `tid` with operation `op` for object `name` of `pool`, sent
/// straight to `osd` by a client whose map is `map`; `None` when no answer came
/// within `limit` (the client gives the request up).
async fn op_at(
    map: &ClusterMap,
    osd: u32,
    object: (&str, &[u8]),
    (tid, op): (u64, object_op::Op),
    limit: Duration,
) -> Option<Result<OpReply, tonic::Status>> {
    naming_at(map, osd, object, (tid, op), &[], limit).await
}

/// Like [`op_at`], naming the requests for the object the client gave up
/// before (`abandoned`).
async fn naming_at(
    map: &ClusterMap,
    osd: u32,
    (pool, name): (&str, &[u8]),
    (tid, op): (u64, object_op::Op),
    abandoned: &[u64],
    limit: Duration,
) -> Option<Result<OpReply, tonic::Status>> {
    let mut client = OsdClient::connect(format!("http://{}", map.osds[&osd].addr))
        .await
        .expect("connect to the OSD");
    let request = OpRequest {
        epoch: map.epoch,
        pool: map.pool_by_name(pool).expect("the pool").id,
        name: name.to_vec(),
        client: "client.old-map".into(),
        tid,
        ops: vec![ObjectOp { op: Some(op) }],
        abandoned: abandoned.to_vec(),
    };
    tokio::time::timeout(limit, client.op(request))
        .await
        .ok()
        .map(|reply| reply.map(tonic::Response::into_inner))
}

/// The data a read reply carries.
fn data(reply: &OpReply) -> Vec<u8> {
    match reply
        .results
        .first()
        .and_then(|result| result.result.as_ref())
    {
        Some(lcpfs_proto::op_result::Result::Data(data)) => data.clone(),
        other => panic!("not a data result: {other:?}"),
    }
}

/// Waits until `client`'s map says `osd` is down.
async fn marked_down(client: &lcpfs_client::mon_client::MonClient, osd: u32) {
    wait_for(
        "the OSD marked down",
        Duration::from_secs(60),
        || async move {
            let map = client.map(true).await.ok()?;
            map.osds
                .get(&osd)
                .is_some_and(|info| !info.up)
                .then_some(())
        },
    )
    .await;
}

/// Three OSDs and pool `data`, with timers long enough that frozen OSDs stay up
/// in the map until the test marks them down, `osd_flags` besides, and the
/// OSDs logging what their client operations wait for.
async fn long_timers(osd_flags: &[&str]) -> MonCluster {
    let mut cluster = MonCluster::new(&["a"], &["--osd-heartbeat-grace", "600"]);
    cluster.osd_flags = [&["--osd-heartbeat-grace", "600"][..], osd_flags]
        .concat()
        .into_iter()
        .map(String::from)
        .collect();
    cluster.osd_log_filter = Some("warn,lcpfs_osd::ops=info".to_owned());
    lcpfs_tests::start_with_pool(cluster, 3).await
}

/// An object name whose PG's primary is `osd`.
fn led_by(map: &ClusterMap, osd: u32) -> Vec<u8> {
    (0..)
        .map(|n| format!("object-{n}").into_bytes())
        .find(|name| placement(map, "data", name).1.first() == Some(&osd))
        .expect("some object")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_cut_off_from_the_map_stops_serving_reads_once_its_lease_runs_out() {
    // Three monitors; osd 0 knows only monitor c, so stopping c cuts it off from
    // every newer map while it still reaches its peers and its clients (the
    // others know only a and b, which stay).
    let mut cluster = MonCluster::new(&["a", "b", "c"], &["--osd-heartbeat-grace", "2"]);
    cluster.bootstrap(&["a", "b", "c"]);
    cluster.ready().await;
    cluster.start_osd_following(0, &["c"]);
    cluster.start_osd_following(1, &["a", "b"]);
    cluster.start_osd_following(2, &["a", "b"]);
    let admin = cluster.client_of("a");
    osds_up(&admin, 3).await;
    admin.run(&replicated_pool("data", 8)).await.expect("pool");
    let objects = ObjectClient::connect(cluster.client_of("a"))
        .await
        .unwrap()
        .with_timeout(Duration::from_secs(60));
    // The client's first map may come from a monitor that has not applied the
    // pool yet.
    let old_map = wait_for("a map with the pool", Duration::from_secs(30), || async {
        let map = objects.map();
        map.pool_by_name("data").is_some().then_some(map)
    })
    .await;
    let cut_off = cluster.osd_id(&old_map, 0);
    let name = led_by(&old_map, cut_off);
    objects.put("data", &name, b"old".to_vec()).await.unwrap();
    let old_map = objects.map();
    assert_eq!(
        data(&read_at(&old_map, cut_off, &name).await.unwrap()),
        b"old"
    );

    // The primary freezes and loses its monitor; the others mark it down and a
    // new primary takes a write.
    cluster.signal_osd(0, "STOP");
    cluster.signal_mon("c", "STOP");
    marked_down(&admin, cut_off).await;
    objects.put("data", &name, b"new".to_vec()).await.unwrap();

    // Woken, it still has the map in which it leads the PG, and a client with
    // that map asks it: it must not answer with the overwritten data.
    cluster.signal_osd(0, "CONT");
    let error = read_at(&old_map, cut_off, &name)
        .await
        .expect_err("a cut-off primary answered a read");
    assert!(
        error.message().contains("read lease"),
        "{}",
        error.message()
    );

    // Back in touch with its monitor, it learns it was replaced (and, up again,
    // may lead the PG again, with the new data).
    cluster.signal_mon("c", "CONT");
    assert_eq!(objects.get("data", &name).await.unwrap(), b"new");
    wait_for("the old primary caught up", Duration::from_secs(60), || {
        let (map, name) = (old_map.clone(), name.clone());
        async move {
            match read_at(&map, cut_off, &name).await {
                Ok(reply) => {
                    assert_eq!(data(&reply), b"new", "a stale read");
                    Some(())
                }
                Err(status) => (status.code() == tonic::Code::FailedPrecondition).then_some(()),
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_failed_half_way_is_never_read_and_then_lost() {
    // A short wait for replicas, so that the write fails while the PG keeps
    // its OSDs.
    let mut cluster = long_timers(&["--replicate-timeout", "2"]).await;
    let objects = ObjectClient::connect(cluster.client())
        .await
        .unwrap()
        .with_timeout(Duration::from_secs(30));
    let map = objects.map();
    let (_, up) = placement(&map, "data", b"ledger");
    objects
        .put("data", b"ledger", b"old".to_vec())
        .await
        .unwrap();

    // Both replicas freeze: the primary applies the write, no replica stores it,
    // and the client is told it failed.
    let [primary, first, second] = [up[0], up[1], up[2]].map(|id| cluster.osd_index(&map, id));
    cluster.signal_osd(first, "STOP");
    cluster.signal_osd(second, "STOP");
    let impatient = ObjectClient::connect(cluster.client())
        .await
        .unwrap()
        .with_timeout(Duration::from_secs(5));
    let failed = impatient.put("data", b"ledger", b"new".to_vec()).await;
    assert!(
        failed.is_err(),
        "a write no replica stored was acknowledged"
    );

    // A read now must not see the failed write: the primary is the only copy
    // of it, and it is about to be lost.
    let seen = impatient.get("data", b"ledger").await;
    if let Ok(seen) = &seen {
        assert_eq!(seen, b"old", "the failed write was visible");
    }

    // The primary dies for good; the replicas carry on without it.
    cluster.kill_osd(primary);
    cluster.signal_osd(first, "CONT");
    cluster.signal_osd(second, "CONT");
    let admin = cluster.client();
    admin
        .run(&Command::OsdDown { ids: vec![up[0]] })
        .await
        .unwrap();
    osds_up(&admin, 2).await;
    assert_eq!(objects.get("data", b"ledger").await.unwrap(), b"old");

    // The primary comes back with the write on its disk, the newest entry of
    // any copy's log. The others went active without it and served the old
    // value: it is rolled back, never adopted.
    cluster.start_osd(primary);
    osds_up(&admin, 3).await;
    let back = lcpfs_tests::current_epoch(&cluster).await;
    lcpfs_tests::clean_since(&cluster, back, 16).await;
    assert_eq!(
        objects.get("data", b"ledger").await.unwrap(),
        b"old",
        "a write that failed came back after reads had not seen it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_given_up_is_settled_before_the_clients_next_request_for_the_object() {
    // An erasure-coded pool 2+1, which serves reads with two shards up and
    // takes writes with three; a write waits up to 10 s for the PG to take it.
    let cluster = long_timers(&[]).await;
    let admin = cluster.client();
    admin.run(&erasure_pool("ec", 2, 1, 8)).await.unwrap();
    let objects = ObjectClient::connect(cluster.client())
        .await
        .unwrap()
        .with_timeout(Duration::from_secs(60));
    objects.put("ec", b"note", b"old".to_vec()).await.unwrap();
    let map = objects.map();
    let (_, up) = placement(&map, "ec", b"note");

    // One shard freezes and is marked down: the PG has two of three up, enough
    // to serve reads and too few to take writes.
    let frozen = cluster.osd_index(&map, up[2]);
    cluster.signal_osd(frozen, "STOP");
    admin
        .run(&Command::OsdDown { ids: vec![up[2]] })
        .await
        .unwrap();
    marked_down(&admin, up[2]).await;
    let map = admin.map(true).await.unwrap();

    // A write waits for the PG to take writes; its client gives it up and
    // reads the object.
    let write = object_op::Op::WriteFull(b"new".to_vec());
    let given_up = op_at(
        &map,
        up[0],
        ("ec", b"note"),
        (1, write),
        Duration::from_secs(1),
    )
    .await;
    assert!(
        given_up.is_none(),
        "a write to a PG below min_size answered: {given_up:?}"
    );
    let seen = data(
        &op_at(
            &map,
            up[0],
            ("ec", b"note"),
            (2, whole_read()),
            Duration::from_secs(60),
        )
        .await
        .expect("the read answers")
        .expect("the read succeeds"),
    );

    // The shard comes back. Whatever the read saw (the write given up applied,
    // or refused before the read ran), the object keeps.
    cluster.signal_osd(frozen, "CONT");
    osds_up(&admin, 3).await;
    let back = lcpfs_tests::current_epoch(&cluster).await;
    lcpfs_tests::clean_since(&cluster, back, 24).await;
    assert_eq!(
        objects.get("ec", b"note").await.unwrap(),
        seen,
        "the write given up was applied after the client's next request read around it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_given_up_that_arrives_after_the_clients_next_one_is_not_applied() {
    let cluster = long_timers(&[]).await;
    let objects = ObjectClient::connect(cluster.client()).await.unwrap();
    objects
        .put("data", b"memo", b"kept".to_vec())
        .await
        .unwrap();
    let map = objects.map();
    let primary = placement(&map, "data", b"memo").1[0];
    let send = |tid: u64, op: object_op::Op, abandoned: &'static [u64]| {
        let map = map.clone();
        async move {
            naming_at(
                &map,
                primary,
                ("data", b"memo"),
                (tid, op),
                abandoned,
                Duration::from_secs(20),
            )
            .await
            .expect("the primary answers")
        }
    };

    // The client gave up request 1, a delete, and read the object with request
    // 2, naming it; the delete reaches the primary only after the read ran.
    let read = send(2, whole_read(), &[1])
        .await
        .expect("the read succeeds");
    assert_eq!(data(&read), b"kept");
    let late = send(1, object_op::Op::Delete(true), &[]).await;
    let refused = late.expect_err("the late delete was applied");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("gave it up"), "{refused:?}");
    assert_eq!(
        objects.get("data", b"memo").await.unwrap(),
        b"kept",
        "what the read saw stays"
    );

    // Requests not named run as before: one the client never gave up.
    send(3, object_op::Op::Delete(true), &[1])
        .await
        .expect("a request of its own is applied");
    assert!(objects.get("data", b"memo").await.is_err(), "deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_primary_waits_out_the_old_primarys_lease_before_its_first_write() {
    // Leases of 10 s, and the frozen primary marked down by hand at once: its
    // peers granted it a lease moments before, which the new primary must wait
    // out before it takes a write.
    let cluster = long_timers(&["--read-lease", "10"]).await;
    let objects = ObjectClient::connect(cluster.client())
        .await
        .unwrap()
        .with_timeout(Duration::from_secs(60));
    objects.put("data", b"key", b"old".to_vec()).await.unwrap();
    let old_map = objects.map();
    let (_, up) = placement(&old_map, "data", b"key");
    let old_index = cluster.osd_index(&old_map, up[0]);
    assert_eq!(
        data(&read_at(&old_map, up[0], b"key").await.unwrap()),
        b"old"
    );

    cluster.signal_osd(old_index, "STOP");
    let admin = cluster.client();
    admin
        .run(&Command::OsdDown { ids: vec![up[0]] })
        .await
        .unwrap();
    // The write goes to the new primary at once (sent to the frozen one, it
    // would wait out the lease in the client's retry instead).
    wait_for(
        "the client's map without the old primary",
        Duration::from_secs(30),
        || {
            let down = !objects.map().osds[&up[0]].up;
            async move { down.then_some(()) }
        },
    )
    .await;
    objects.put("data", b"key", b"new".to_vec()).await.unwrap();
    let new_primary = cluster.osd_index(&objects.map(), up[1]);
    assert!(
        cluster
            .osd_log(new_primary)
            .contains("waiting out an earlier primary's read lease"),
        "the new primary took the write without waiting out the old one's lease"
    );

    // The old primary, woken with its old map, answers no read from it.
    cluster.signal_osd(old_index, "CONT");
    if let Ok(reply) = read_at(&old_map, up[0], b"key").await {
        assert_eq!(data(&reply), b"new", "a stale read");
    }
    assert_eq!(objects.get("data", b"key").await.unwrap(), b"new");
}
