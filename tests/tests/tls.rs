//! A cluster that runs with mutual TLS: monitors, OSDs and clients all hold
//! certificates of one cluster CA; Raft between the monitors, replication between the
//! OSDs and every client request go over TLS, and nobody without a certificate of
//! that CA, or with a certificate for another name, gets an answer; a client's
//! certificate does not pass for a daemon's.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use lcpfs_cli::certs;
use lcpfs_client::objects::ObjectClient;
use lcpfs_core::monitor::{ClusterStatus, Query};
use lcpfs_proto::mon_raft_client::MonRaftClient;
use lcpfs_proto::monitor_client::MonitorClient;
use lcpfs_proto::osd_client::OsdClient;
use lcpfs_proto::tls;
use lcpfs_tests::{
    MonCluster, command, contents, free_port, lcpfs, osds_up, replicated_pool, wait_for,
};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tls_cluster_serves_its_own_and_refuses_everyone_else() {
    let mut cluster = MonCluster::new(&["a", "b", "c"], &["--osd-heartbeat-grace", "2"]).with_tls();
    cluster.bootstrap(&["a", "b", "c"]);
    cluster.ready().await;
    for index in 0..3 {
        cluster.start_osd(index);
    }
    let client = cluster.client();
    osds_up(&client, 3).await;
    client.run(&replicated_pool("data", 8)).await.expect("pool");

    // Every write is acknowledged only once all three copies have it: the primary
    // reached both replicas over TLS.
    let objects = ObjectClient::connect(client.clone()).await.unwrap();
    // The map it fetched may come from a monitor that has not applied the pool yet.
    wait_for(
        "pool data in the client's map",
        Duration::from_secs(30),
        || {
            let has_pool = objects.map().pool_by_name("data").is_some();
            async move { has_pool.then_some(()) }
        },
    )
    .await;
    for index in 0..12 {
        let name = format!("object-{index}");
        objects
            .put(
                "data",
                name.as_bytes(),
                contents(&name, 1000 + index * 5000),
            )
            .await
            .unwrap();
    }
    for index in 0..12 {
        let name = format!("object-{index}");
        assert_eq!(
            objects.get("data", name.as_bytes()).await.unwrap(),
            contents(&name, 1000 + index * 5000)
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let status = lcpfs(&cluster, dir.path(), &["status"]);
    assert!(status.contains("mon: 3 daemons, quorum"), "{status}");

    let first = cluster.addrs()[0].clone();
    let ca_dir = cluster.ca_dir().unwrap();
    let ca = std::fs::read(ca_dir.join(tls::CA_FILE)).unwrap();
    let own = cluster.client_tls();
    let client_dir = own.as_ref().unwrap().dir().to_owned();
    let stranger = dir.path().join("stranger");
    certs::create_ca(&stranger.join("ca")).unwrap();
    certs::issue(
        &stranger.join("ca"),
        &stranger.join("client"),
        "client.x",
        &[],
        1,
    )
    .unwrap();

    // To a monitor and to an OSD: the cluster's own certificate answers; no TLS, no
    // certificate, or a certificate of another CA (trusting the cluster's CA, so the
    // refusal is the server's) does not.
    // Each refusal is followed by an answer to the cluster's own certificate: the
    // server was up and refused, not down or slow.
    for (addr, monitor) in [(&first, true), (&cluster.osds[&0].addr, false)] {
        let own_answers = || async {
            let with_certificate = tls::endpoint(addr, own.as_ref()).unwrap();
            if let Err(error) = answers(with_certificate, monitor).await {
                panic!("{addr} did not answer its own: {error}");
            }
        };
        own_answers().await;
        let plain = tls::endpoint(addr, None).unwrap();
        refused(answers(plain, monitor).await, addr, "a plain client");
        own_answers().await;
        let anonymous = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca));
        refused(
            answers(https(addr, anonymous), monitor).await,
            addr,
            "a client without a certificate",
        );
        own_answers().await;
        let foreign = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&ca))
            .identity(identity(&stranger.join("client")));
        refused(
            answers(https(addr, foreign), monitor).await,
            addr,
            "a client of another CA",
        );
        own_answers().await;
    }

    // A client's certificate reads and writes objects but does not make it a
    // monitor or an OSD.
    let channel = tls::endpoint(&first, own.as_ref())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let vote = MonRaftClient::new(channel.clone())
        .vote(lcpfs_proto::RaftPayload::default())
        .await
        .unwrap_err();
    assert_eq!(vote.code(), tonic::Code::PermissionDenied, "{vote:?}");
    assert!(
        vote.message()
            .contains("client.test may not call MonRaft.Vote"),
        "{vote:?}"
    );
    let boot = MonitorClient::new(channel)
        .osd_boot(lcpfs_proto::OsdBootRequest::default())
        .await
        .unwrap_err();
    assert_eq!(boot.code(), tonic::Code::PermissionDenied, "{boot:?}");
    let osd = tls::endpoint(&cluster.osds[&0].addr, own.as_ref())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let push = OsdClient::new(osd)
        .push_objects(lcpfs_proto::PushRequest::default())
        .await
        .unwrap_err();
    assert_eq!(push.code(), tonic::Code::PermissionDenied, "{push:?}");
    assert!(push.message().contains("only osd.* may"), "{push:?}");

    // A monitor whose certificate names another host: the cluster's clients do not
    // take it for the monitor they dialled, though it answers those who dial that
    // other name.
    let impostor = dir.path().join("impostor");
    let addr = format!("127.0.0.1:{}", free_port());
    let other_host = "192.0.2.1";
    certs::issue(
        &ca_dir,
        &impostor.join("tls"),
        "mon.z",
        &[other_host.into()],
        1,
    )
    .unwrap();
    let mut child = command("lcpfs-mon")
        .args(["--id", "z", "--addr", &addr])
        .args(["--initial-members", &format!("z={addr}")])
        .arg("--data")
        .arg(impostor.join("data"))
        .arg("--tls-dir")
        .arg(impostor.join("tls"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let as_other_host = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&ca))
        .identity(identity(&client_dir))
        .domain_name(other_host);
    wait_for(
        "the monitor answering as 192.0.2.1",
        Duration::from_secs(30),
        || {
            let endpoint = https(&addr, as_other_host.clone());
            async move { answers(endpoint, true).await.ok() }
        },
    )
    .await;
    let as_dialled = tls::endpoint(&addr, own.as_ref()).unwrap();
    refused(
        answers(as_dialled, true).await,
        &addr,
        "a client dialling it by a name its certificate does not hold",
    );
    child.kill().ok();
    child.wait().ok();

    // The cluster still answers its own.
    let status: ClusterStatus = client.query(&Query::Status).await.unwrap();
    assert_eq!(status.osds_up, 3, "{status:?}");
}

/// An HTTPS endpoint for `addr` with `config`.
fn https(addr: &str, config: ClientTlsConfig) -> Endpoint {
    Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(config)
        .unwrap()
}

/// The certificate and key of a TLS directory.
fn identity(dir: &Path) -> Identity {
    let read = |file: &str| std::fs::read(dir.join(file)).unwrap();
    Identity::from_pem(read(tls::CERT_FILE), read(tls::KEY_FILE))
}

/// A monitor's `Ping` or an OSD's `Echo` through `endpoint`: `Ok` when it
/// answers, else the error with its causes.
async fn answers(endpoint: Endpoint, monitor: bool) -> Result<(), String> {
    let chain = |error: &dyn std::error::Error| {
        let mut text = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            text.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        text
    };
    let channel = endpoint
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|error| chain(&error))?;
    let answer = if monitor {
        MonitorClient::new(channel)
            .ping(lcpfs_proto::PingRequest::default())
            .await
            .map(|_| ())
    } else {
        OsdClient::new(channel)
            .echo(lcpfs_proto::EchoMessage::default())
            .await
            .map(|_| ())
    };
    answer.map_err(|status| chain(&status))
}

/// Asserts that `addr` refused `who`: an error that is a refusal, not a timeout
/// (a server that is slow or stopped refuses nothing).
fn refused(answer: Result<(), String>, addr: &str, who: &str) {
    let error = match answer {
        Ok(()) => panic!("{addr} answered {who}"),
        Err(error) => error,
    };
    let lowered = error.to_lowercase();
    assert!(
        !lowered.contains("timed out") && !lowered.contains("timeout"),
        "{addr} did not refuse {who}, it only did not answer in time: {error}"
    );
}

#[test]
fn the_daemons_say_which_tls_file_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = command("lcpfs-mon")
        .args(["--id", "a", "--addr", "127.0.0.1:1", "--data"])
        .arg(dir.path().join("mon"))
        .arg("--tls-dir")
        .arg(&empty)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&Path::new(&empty).join("ca.crt").display().to_string()),
        "{stderr}"
    );
}
