//! Whole objects streamed to and from the OSDs in 4 MiB messages: a large object
//! and an empty one make the round trip through the library and the `lcpfs`
//! command, and a malformed stream (no request, more or fewer bytes than it
//! announced, above the size limit) is refused without changing the object.
//! Striped objects are read whole, one version at a time, while they are rewritten.

use std::collections::BTreeSet;
use std::sync::Arc;

use lcpfs_client::objects::ObjectClient;
use lcpfs_client::striper::{Layout, Striper, head_name};
use lcpfs_proto::object_op::Op;
use lcpfs_proto::osd_client::OsdClient;
use lcpfs_proto::{DataChunk, KeyValue, ObjectOp, OpRequest};
use lcpfs_tests::{cluster_with_pool, contents, lcpfs, placement};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_stream_whole_and_bad_streams_change_nothing() {
    let cluster = cluster_with_pool(3, &["--max-object-mib", "32"]).await;
    let objects = ObjectClient::connect(cluster.client()).await.unwrap();

    // 18 MiB and a bit: five messages each way.
    let big = contents("big", (18 << 20) + 4321);
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = sent.clone();
    objects
        .put_streamed("data", b"big", big.clone(), move |done| {
            counter.fetch_max(done, std::sync::atomic::Ordering::SeqCst);
        })
        .await
        .unwrap();
    assert_eq!(
        sent.load(std::sync::atomic::Ordering::SeqCst),
        big.len() as u64
    );
    let mut read = Vec::new();
    let mut heard = Vec::new();
    let size = objects
        .get_to("data", b"big", &mut read, |done, size| {
            heard.push((done, size))
        })
        .await
        .unwrap();
    assert_eq!(size, big.len() as u64);
    assert!(read == big, "the streamed read returns the object");
    assert_eq!(heard.len(), 5, "one progress report per message: {heard:?}");
    assert!(objects.get("data", b"big").await.unwrap() == big);

    objects
        .put_streamed("data", b"empty", Vec::new(), |_| {})
        .await
        .unwrap();
    let mut read = Vec::new();
    assert_eq!(
        objects
            .get_to("data", b"empty", &mut read, |_, _| {})
            .await
            .unwrap(),
        0
    );
    assert_eq!(objects.stat("data", b"empty").await.unwrap().size, 0);

    // Above the limit: refused before the data is sent.
    let error = objects
        .put_streamed("data", b"huge", vec![1; 33 << 20], |_| {})
        .await
        .unwrap_err();
    assert!(
        format!("{error:#}").contains("object size limit"),
        "{error:#}"
    );

    // Malformed streams straight to the primary: each is refused, and the object
    // keeps its data.
    let map = cluster.ready().await;
    let (pg, up) = placement(&map, "data", b"big");
    let addr = map.osds[&up[0]].addr.clone();
    let mut osd = OsdClient::connect(format!("http://{addr}")).await.unwrap();
    let request = OpRequest {
        epoch: map.epoch,
        pool: pg.pool,
        name: b"big".to_vec(),
        client: "streams-test".into(),
        tid: 1,
        ops: Vec::new(),
        abandoned: Vec::new(),
    };
    let chunk = |request: Option<OpRequest>, size: u64, data: &[u8]| DataChunk {
        request,
        size,
        epoch: 0,
        data: data.to_vec(),
    };
    let bad_streams = [
        (vec![chunk(None, 3, b"abc")], "carries no request"),
        (
            vec![
                chunk(Some(request.clone()), 3, b"ab"),
                chunk(None, 0, b"cd"),
            ],
            "more than the 3 bytes",
        ),
        (
            vec![chunk(Some(request.clone()), 10, b"abc")],
            "ended after 3 of the 10 bytes",
        ),
        (
            vec![chunk(Some(request.clone()), 40 << 20, b"abc")],
            "object size limit",
        ),
    ];
    for (chunks, expected) in bad_streams {
        let status = osd
            .write_stream(tokio_stream::iter(chunks))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(expected), "{status:?}");
    }
    let mut with_ops = request.clone();
    with_ops.ops = vec![lcpfs_proto::ObjectOp {
        op: Some(lcpfs_proto::object_op::Op::Stat(true)),
    }];
    let status = osd.read_stream(with_ops).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        objects.get("data", b"big").await.unwrap() == big,
        "unchanged"
    );

    // The command line streams a whole object both ways.
    let dir = tempfile::tempdir().unwrap();
    let file = contents("file", (9 << 20) + 1);
    std::fs::write(dir.path().join("in"), &file).unwrap();
    let lcpfs = |args: &[&str]| lcpfs(&cluster, dir.path(), args);
    lcpfs(&["put", "data", "file", "in"]);
    lcpfs(&["get", "data", "file", "out"]);
    assert!(std::fs::read(dir.path().join("out")).unwrap() == file);
    assert!(objects.get("data", b"file").await.unwrap() == file);
}

/// Version `k` of the striped object: its own size and its own byte throughout.
fn version(k: u8) -> Vec<u8> {
    vec![k; (3 << 20) + (k as usize % 4) * 700_000 + 17]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_striped_object_reads_as_one_version_while_it_is_rewritten() {
    let cluster = cluster_with_pool(3, &[]).await;
    let objects = Arc::new(ObjectClient::connect(cluster.client()).await.unwrap());
    let striper = Arc::new(Striper::new(objects.clone(), "data").with_piece_size(512 << 10));
    striper
        .write(b"film", &version(1)[..], |_| {})
        .await
        .unwrap();

    let writer = {
        let striper = striper.clone();
        tokio::spawn(async move {
            for k in 2..=25 {
                striper.write(b"film", &version(k)[..], |_| {}).await?;
            }
            anyhow::Ok(())
        })
    };
    let (mut versions, mut replaced) = (BTreeSet::new(), 0);
    while !writer.is_finished() {
        let mut read = Vec::new();
        match striper.read(b"film", &mut read, |_| {}).await {
            Ok(size) => {
                assert_eq!(size as usize, read.len());
                let k = read[0];
                assert!(
                    read == version(k),
                    "a read mixed versions: {} bytes starting with version {k}",
                    read.len()
                );
                versions.insert(k);
            }
            Err(error) => {
                assert!(
                    format!("{error:#}").contains("replaced by a newer version"),
                    "{error:#}"
                );
                replaced += 1;
            }
        }
    }
    writer.await.unwrap().unwrap();
    assert!(
        versions.len() >= 2,
        "reads saw versions {versions:?} only ({replaced} were replaced): they did not overlap the writes"
    );
    let mut read = Vec::new();
    striper.read(b"film", &mut read, |_| {}).await.unwrap();
    assert!(read == version(25));
    // Only the last version's pieces remain.
    let layout = striper.layout(b"film").await.unwrap();
    let (stated, mtime_ns) = striper.stat(b"film").await.unwrap();
    assert_eq!((stated, layout.size), (layout, version(25).len() as u64));
    assert!(mtime_ns > 0);
    let mut names: Vec<Vec<u8>> = objects
        .list("data")
        .await
        .unwrap()
        .into_iter()
        .map(|entry| entry.name.into_bytes())
        .filter(|name| name.starts_with(b"film."))
        .collect();
    names.sort();
    let mut expected: Vec<Vec<u8>> = (0..layout.pieces())
        .map(|index| layout.piece_name(b"film", index))
        .collect();
    expected.sort();
    assert_eq!(names, expected);

    // An object striped before generations: a head without one, pieces named by
    // index alone. It reads, and writing it again moves it to generations.
    let legacy = Layout {
        size: (1 << 20) + 5,
        piece_size: 512 << 10,
        generation: 0,
    };
    let old = contents("legacy", legacy.size as usize);
    for index in 1..legacy.pieces() {
        let start = (index * legacy.piece_size) as usize;
        let end = (start + legacy.piece_size as usize).min(old.len());
        objects
            .put(
                "data",
                &legacy.piece_name(b"legacy", index),
                old[start..end].to_vec(),
            )
            .await
            .unwrap();
    }
    let set = |key: &str, value: u64| ObjectOp {
        op: Some(Op::SetXattr(KeyValue {
            key: key.to_owned(),
            value: value.to_string().into_bytes(),
        })),
    };
    objects
        .operate(
            "data",
            &head_name(b"legacy"),
            vec![
                ObjectOp {
                    op: Some(Op::WriteFull(old[..legacy.piece_size as usize].to_vec())),
                },
                set("striper.size", legacy.size),
                set("striper.piece_size", legacy.piece_size),
            ],
        )
        .await
        .unwrap();
    assert_eq!(striper.layout(b"legacy").await.unwrap(), legacy);
    let mut read = Vec::new();
    striper.read(b"legacy", &mut read, |_| {}).await.unwrap();
    assert!(read == old);
    striper
        .write(b"legacy", &version(3)[..], |_| {})
        .await
        .unwrap();
    assert_ne!(striper.layout(b"legacy").await.unwrap().generation, 0);
    for index in 1..legacy.pieces() {
        let gone = objects
            .stat("data", &legacy.piece_name(b"legacy", index))
            .await
            .unwrap_err();
        assert!(format!("{gone:#}").contains("does not exist"), "{gone:#}");
    }
    let mut read = Vec::new();
    striper.read(b"legacy", &mut read, |_| {}).await.unwrap();
    assert!(read == version(3));
}

/// The pieces of striped object `name` (head included) in pool `data`.
async fn pieces_of(objects: &ObjectClient, name: &str) -> Vec<String> {
    let prefix = format!("{name}.");
    objects
        .list("data")
        .await
        .unwrap()
        .into_iter()
        .map(|entry| entry.name)
        .filter(|object| object.starts_with(&prefix))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_striped_removal_cut_short_leaves_nothing_to_read_and_is_finished_later() {
    let cluster = cluster_with_pool(3, &[]).await;
    let objects = Arc::new(ObjectClient::connect(cluster.client()).await.unwrap());
    let striper = Striper::new(objects.clone(), "data").with_piece_size(512 << 10);
    for name in [&b"reel"[..], b"tape"] {
        striper.write(name, &version(2)[..], |_| {}).await.unwrap();
    }
    let layout = striper.layout(b"reel").await.unwrap();
    assert_eq!(
        pieces_of(&objects, "reel").await.len() as u64,
        layout.pieces()
    );

    // A removal stopped (the client died) after its first step and one piece:
    // the object is gone at once, not a torn object missing a piece.
    let marked = vec![
        ObjectOp {
            op: Some(Op::RmXattr("striper.size".to_owned())),
        },
        ObjectOp {
            op: Some(Op::SetXattr(KeyValue {
                key: "striper.removing".to_owned(),
                value: layout.size.to_string().into_bytes(),
            })),
        },
    ];
    for name in [&b"reel"[..], b"tape"] {
        let layout = striper.layout(name).await.unwrap();
        objects
            .operate("data", &head_name(name), marked.clone())
            .await
            .unwrap();
        objects
            .remove("data", &layout.piece_name(name, layout.pieces() - 1))
            .await
            .unwrap();
    }
    let error = striper
        .read(b"reel", &mut Vec::new(), |_| {})
        .await
        .unwrap_err();
    assert!(format!("{error:#}").contains("does not exist"), "{error:#}");

    // Removing it again finishes the job; writing the other name again takes
    // what its removal left behind.
    striper.remove(b"reel").await.unwrap();
    assert_eq!(pieces_of(&objects, "reel").await, Vec::<String>::new());
    let error = striper.remove(b"reel").await.unwrap_err();
    assert!(format!("{error:#}").contains("does not exist"), "{error:#}");
    striper
        .write(b"tape", &version(3)[..], |_| {})
        .await
        .unwrap();
    let layout = striper.layout(b"tape").await.unwrap();
    assert_eq!(
        pieces_of(&objects, "tape").await.len() as u64,
        layout.pieces()
    );
    let mut read = Vec::new();
    striper.read(b"tape", &mut read, |_| {}).await.unwrap();
    assert!(read == version(3));
}
