//! Objects in a replicated pool over real OSD processes: of 1,000 objects of mixed
//! sizes, every acknowledged write reads back byte-exact through an OSD killed
//! mid-stream; once it is marked out, and again once it returns, every object has
//! all its copies on the OSDs' disks; a PG without
//! min_size OSDs refuses writes clearly; appends through a killed primary are
//! neither lost nor doubled; omap and xattrs travel with the data.

use std::collections::BTreeMap;
use std::time::Duration;

use lcpfs_client::objects::ObjectClient;
use lcpfs_core::map::Pool;
use lcpfs_core::pg::object_to_pg;
use lcpfs_engine::{OpenOptions, Store};
use lcpfs_tests::{
    MonCluster, appends_survive_a_killed_primary, clean_since, cluster_with_pool, contents,
    current_epoch, http_get, lcpfs, osds_up, placement, start_with_pool, status_until, wait_for,
};

/// Size of object number `n`: mostly small, every 40th 1 MiB, every 125th 8 MiB.
fn mixed_size(n: usize) -> usize {
    if n % 125 == 7 {
        8 << 20
    } else if n % 40 == 3 {
        1 << 20
    } else {
        [0, 1, 100, 4095, 4096, 20_000, 65_537][n % 7]
    }
}

/// Counts, through the engine of each (stopped) OSD, the intact copies of every
/// object and asserts there are `copies` of each.
fn assert_copies_on_disk(
    cluster: &MonCluster,
    indexes: &[u32],
    pool: &Pool,
    written: &BTreeMap<String, Vec<u8>>,
    copies: usize,
) {
    let stores: Vec<Store> = indexes
        .iter()
        .map(|index| Store::open(&cluster.osds[index].data, &OpenOptions::default()).unwrap())
        .collect();
    for (name, data) in written {
        let pg = object_to_pg(pool, name.as_bytes());
        let key = [b"o/".as_slice(), name.as_bytes()].concat();
        let found = stores
            .iter()
            .filter(|store| {
                store
                    .head(&format!("pg.{pg}"))
                    .and_then(|view| view.read(&key, 0, u64::MAX))
                    .is_ok_and(|read| read == *data)
            })
            .count();
        assert_eq!(
            found, copies,
            "{name} (PG {pg}) has {found} intact copies on disk"
        );
    }
}

/// All 16 PGs active+clean after the map's latest change.
async fn all_clean(cluster: &MonCluster) {
    let status = clean_since(cluster, current_epoch(cluster).await, 16).await;
    assert!(!status.checks.contains_key("PG_DEGRADED"), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_an_osd_killed_mid_stream_and_marked_out() {
    let mut cluster = MonCluster::new(
        &["a"],
        &["--osd-heartbeat-grace", "2", "--osd-down-out-interval", "3"],
    );
    cluster.osd_disk_size = "1G".to_owned();
    let mut cluster = start_with_pool(cluster, 4).await;
    let objects = ObjectClient::connect(cluster.client()).await.unwrap();
    let mut written = BTreeMap::new();
    for n in 0..1000 {
        if n == 300 {
            cluster.kill_osd(1);
        }
        let name = format!("object-{n:04}");
        let data = contents(&name, mixed_size(n));
        objects
            .put("data", name.as_bytes(), data.clone())
            .await
            .unwrap_or_else(|error| panic!("put {name}: {error:#}"));
        written.insert(name, data);
    }
    for (name, data) in &written {
        let read = objects.get("data", name.as_bytes()).await.unwrap();
        assert!(read == *data, "{name} reads back byte-exact");
    }

    // The monitors mark the dead OSD out: its PGs map to the other three, which
    // recover every object to three copies.
    wait_for("osd marked out", Duration::from_secs(30), || {
        let client = cluster.client();
        async move {
            let map = client.map(true).await.ok()?;
            map.osds
                .values()
                .any(|osd| !osd.up && !osd.in_)
                .then_some(())
        }
    })
    .await;
    all_clean(&cluster).await;
    let pool = objects.map().pool_by_name("data").unwrap().clone();
    for index in [0, 2, 3] {
        cluster.kill_osd(index);
    }
    assert_copies_on_disk(&cluster, &[0, 2, 3], &pool, &written, 3);
    for index in [0, 2, 3] {
        cluster.start_osd(index);
    }
    osds_up(&cluster.client(), 3).await;

    // The killed OSD comes back (and in): where it is primary again it first takes
    // the newer history from its peers, and it receives what it missed.
    cluster.start_osd(1);
    osds_up(&cluster.client(), 4).await;
    for (name, data) in &written {
        let read = objects.get("data", name.as_bytes()).await.unwrap();
        assert!(
            read == *data,
            "{name} reads back byte-exact after the OSD returned"
        );
    }
    all_clean(&cluster).await;
    let listed: Vec<String> = objects
        .list("data")
        .await
        .unwrap()
        .into_iter()
        .map(|entry| entry.name)
        .collect();
    assert_eq!(listed, written.keys().cloned().collect::<Vec<_>>());
    // The OSD that held copies while the returned one was out removes them.
    wait_for("stray PG copies removed", Duration::from_secs(60), || {
        let held: u64 = cluster
            .osds
            .values()
            .filter_map(|osd| {
                http_get(&osd.metrics, "/metrics").lines().find_map(|line| {
                    line.strip_prefix("lcpfs_osd_pg_copies ")?
                        .parse::<u64>()
                        .ok()
                })
            })
            .sum();
        async move { (held == 16 * 3).then_some(()) }
    })
    .await;
    drop(objects);
    for index in 0..4 {
        cluster.kill_osd(index);
    }
    assert_copies_on_disk(&cluster, &[0, 1, 2, 3], &pool, &written, 3);
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

    // Data above the object size limit goes in pieces, through the command line.
    let dir = tempfile::tempdir().unwrap();
    let big = contents("big", (5 << 20) + 12_345);
    std::fs::write(dir.path().join("big"), &big).unwrap();
    let lcpfs = |args: &[&str]| lcpfs(&cluster, dir.path(), args);
    let error = objects.put("data", b"big", big.clone()).await.unwrap_err();
    assert!(format!("{error:#}").contains("--striper"), "{error:#}");
    lcpfs(&[
        "put",
        "--striper",
        "--piece-size",
        "1M",
        "data",
        "big",
        "big",
    ]);
    lcpfs(&["get", "--striper", "data", "big", "copy"]);
    assert!(std::fs::read(dir.path().join("copy")).unwrap() == big);
    assert!(lcpfs(&["stat", "--striper", "data", "big"]).contains(&format!("size {}", big.len())));
    let pieces = |listing: String| {
        listing
            .lines()
            .filter(|name| name.starts_with("big."))
            .count()
    };
    assert_eq!(pieces(lcpfs(&["ls", "data"])), 6);
    // A shorter version leaves no stale pieces behind.
    std::fs::write(dir.path().join("small"), b"short now").unwrap();
    lcpfs(&[
        "put",
        "--striper",
        "--piece-size",
        "1M",
        "data",
        "big",
        "small",
    ]);
    assert_eq!(
        lcpfs(&["get", "--striper", "data", "big", "-"]),
        "short now"
    );
    assert_eq!(pieces(lcpfs(&["ls", "data"])), 1);
    lcpfs(&["rm", "--striper", "data", "big"]);
    assert_eq!(pieces(lcpfs(&["ls", "data"])), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_through_a_killed_primary_are_neither_lost_nor_doubled() {
    let mut cluster = cluster_with_pool(4, &[]).await;
    appends_survive_a_killed_primary(&mut cluster, "data", 16).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn omap_and_xattrs_are_replicated_with_the_data() {
    let mut cluster = cluster_with_pool(3, &[]).await;
    let objects = ObjectClient::connect(cluster.client())
        .await
        .unwrap()
        .with_timeout(Duration::from_secs(30));
    let pairs = |list: &[(&str, &str)]| -> Vec<(Vec<u8>, Vec<u8>)> {
        list.iter()
            .map(|(key, value)| (key.as_bytes().to_vec(), value.as_bytes().to_vec()))
            .collect()
    };
    objects
        .omap_set(
            "data",
            b"dir",
            pairs(&[("a/1", "x"), ("a/2", "y"), ("b/1", "z"), ("a", "p")]),
        )
        .await
        .unwrap();
    assert_eq!(
        objects
            .omap_range("data", b"dir", b"", b"a", 0)
            .await
            .unwrap(),
        pairs(&[("a", "p"), ("a/1", "x"), ("a/2", "y")])
    );
    assert_eq!(
        objects
            .omap_range("data", b"dir", b"a/1", b"a", 0)
            .await
            .unwrap(),
        pairs(&[("a/2", "y")])
    );
    assert_eq!(
        objects
            .omap_range("data", b"dir", b"", b"", 2)
            .await
            .unwrap(),
        pairs(&[("a", "p"), ("a/1", "x")])
    );
    assert_eq!(
        objects
            .omap_get("data", b"dir", vec![b"a/2".to_vec(), b"nope".to_vec()])
            .await
            .unwrap(),
        pairs(&[("a/2", "y")])
    );
    objects
        .omap_rm("data", b"dir", vec![b"a/1".to_vec()])
        .await
        .unwrap();
    objects
        .set_xattr("data", b"dir", "owner", b"alice".to_vec())
        .await
        .unwrap();

    // The primary dies: the next one serves the same omap and xattrs.
    let map = objects.map();
    let (_, up) = placement(&map, "data", b"dir");
    cluster.kill_osd(cluster.osd_index(&map, up[0]));
    osds_up(&cluster.client(), 2).await;
    assert_eq!(
        objects
            .omap_range("data", b"dir", b"", b"", 0)
            .await
            .unwrap(),
        pairs(&[("a", "p"), ("a/2", "y"), ("b/1", "z")])
    );
    assert_eq!(
        objects.get_xattr("data", b"dir", "owner").await.unwrap(),
        b"alice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_out_of_date_peer_requests_get_errors() {
    use lcpfs_proto::osd_client::OsdClient;
    use lcpfs_proto::{
        EchoMessage, ObjectOp, OpRequest, PgRef, PushRequest, ReplicateRequest, object_op,
    };
    use tokio::io::AsyncWriteExt;

    let cluster = cluster_with_pool(3, &[]).await;
    let objects = ObjectClient::connect(cluster.client())
        .await
        .unwrap()
        .with_timeout(Duration::from_secs(10));
    objects
        .put("data", b"keep", b"kept".to_vec())
        .await
        .unwrap();
    let map = objects.map();
    let pool = map.pool_by_name("data").unwrap().id;
    let (pg, up) = placement(&map, "data", b"keep");
    let addr = |id: u32| format!("http://{}", map.osds[&id].addr);
    let mut primary = OsdClient::connect(addr(up[0])).await.unwrap();
    let mut replica = OsdClient::connect(addr(up[1])).await.unwrap();
    fn code<T>(result: Result<tonic::Response<T>, tonic::Status>) -> tonic::Code {
        match result {
            Ok(_) => panic!("a bad request was accepted"),
            Err(status) => status.code(),
        }
    }

    // Not a protobuf of the expected type: the bytes of an Echo sent as an Op.
    let mut grpc = tonic::client::Grpc::new(
        tonic::transport::Endpoint::from_shared(addr(up[0]))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    grpc.ready().await.unwrap();
    let garbage = EchoMessage {
        payload: vec![0xff; 64],
    };
    let status = grpc
        .unary::<_, EchoMessage, _>(
            tonic::Request::new(garbage),
            tonic::codegen::http::uri::PathAndQuery::from_static("/lcpfs.v1.Osd/Op"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_ne!(status.code(), tonic::Code::Ok);
    // Not even HTTP/2.
    let mut raw = tokio::net::TcpStream::connect(&map.osds[&up[0]].addr)
        .await
        .unwrap();
    raw.write_all(b"GET / HTTP/1.0\r\n\r\n\x00\x01garbage")
        .await
        .ok();
    drop(raw);

    let op = |ops: Vec<object_op::Op>, epoch: u64| OpRequest {
        epoch,
        pool,
        name: b"keep".to_vec(),
        client: "tester".into(),
        tid: 1,
        ops: ops
            .into_iter()
            .map(|op| ObjectOp { op: Some(op) })
            .collect(),
        abandoned: Vec::new(),
    };
    // An operation without a kind; an offset at the end of the address space.
    let request = OpRequest {
        ops: vec![ObjectOp { op: None }],
        ..op(Vec::new(), map.epoch)
    };
    assert_eq!(
        code(primary.op(request).await),
        tonic::Code::InvalidArgument
    );
    let huge = object_op::Op::Write(lcpfs_proto::WriteAt {
        offset: u64::MAX - 1,
        data: b"xx".to_vec(),
    });
    assert_eq!(
        code(primary.op(op(vec![huge], map.epoch)).await),
        tonic::Code::InvalidArgument
    );
    // The wrong OSD, at an old epoch: told to refresh, with its epoch.
    let status = replica
        .op(op(vec![object_op::Op::Stat(true)], 1))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(status.metadata().get("lcpfs-epoch").is_some());
    // Peer requests naming PGs that do not exist, and a write far ahead of the log.
    let missing_pg = PgRef {
        epoch: map.epoch,
        pool,
        pg_seed: 9999,
        interval: 0,
        probe: false,
    };
    assert_eq!(
        code(replica.pg_info(missing_pg).await),
        tonic::Code::InvalidArgument
    );
    let push = PushRequest {
        pg: Some(PgRef {
            pool: 4242,
            ..missing_pg
        }),
        ..PushRequest::default()
    };
    assert_eq!(
        code(replica.push_objects(push).await),
        tonic::Code::NotFound
    );
    let ahead = ReplicateRequest {
        epoch: map.epoch,
        pool,
        pg_seed: pg.seed,
        version: 1 << 40,
        name: b"keep".to_vec(),
        client: "tester".into(),
        tid: 7,
        ops: vec![ObjectOp {
            op: Some(object_op::Op::WriteFull(b"forged".to_vec())),
        }],
        version_epoch: u64::MAX,
        ..ReplicateRequest::default()
    };
    assert_eq!(
        code(replica.replicate(ahead).await),
        tonic::Code::OutOfRange
    );

    // Everyone still serves, and nothing changed.
    assert_eq!(objects.get("data", b"keep").await.unwrap(), b"kept");
    let status = status_until(&cluster, "all PGs active+clean", |status| {
        status.pg_states.get("active+clean") == Some(&16)
    })
    .await;
    assert_eq!(status.osds_up, 3, "{status:?}");
}
