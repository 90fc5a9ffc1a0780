//! A harness for cluster tests: starts real `lcpfs-mon` processes on loopback ports in
//! a temporary directory, kills and restarts them, and waits for conditions with
//! deadlines (never fixed sleeps).
//!
//! The daemons are the release binaries next to the test executable (`cargo test
//! --release --workspace` builds them before running any test).

use std::collections::BTreeMap;
use std::future::Future;
use std::net::TcpListener;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lcpfs_cli::certs::LoopbackCa;
use lcpfs_client::mon_client::MonClient;
use lcpfs_core::monitor::{ClusterStatus, Query};
use lcpfs_proto::tls::Tls;

/// A command running workspace binary `name`, without the caller's
/// `LCPFS_TLS_DIR`: a test cluster runs with TLS only when it says so
/// ([`MonCluster::with_tls`]).
pub fn command(name: &str) -> Command {
    let mut command = Command::new(binary(name));
    command.env_remove(lcpfs_proto::tls::TLS_DIR_ENV);
    command
}

/// Path of a workspace binary (`lcpfs-mon`, `lcpfs`) built beside the test.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable is in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (cargo build --release --workspace)",
        path.display()
    );
    path
}

/// A free loopback port for a daemon to listen on: bound and released here, the
/// daemon binds it right after. Taken below the kernel's ephemeral range
/// (32768 and up), where the outgoing connections of every daemon and client get
/// their ports and could take it in between; each port is handed out once per
/// test process.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    // Test processes run one after another; each starts at its own offset.
    let offset = (std::process::id() % 600) as u16 * 20;
    loop {
        let port = 20000 + (offset + NEXT.fetch_add(1, Ordering::SeqCst) % 12000) % 12000;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Polls `check` until it returns `Some`, or panics naming `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The body of an HTTP GET of `path` on `addr` (status line and headers included).
pub fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("HTTP endpoint");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// Deterministic contents for object `name` of `size` bytes.
pub fn contents(name: &str, size: usize) -> Vec<u8> {
    let mut data = vec![0u8; size];
    blake3::Hasher::new()
        .update(name.as_bytes())
        .finalize_xof()
        .fill(&mut data);
    data
}

/// Waits until OSD `index` of `cluster` accepts connections (a restarted OSD the
/// map still shows up may not be serving yet).
pub async fn osd_listening(cluster: &MonCluster, index: u32) {
    let addr = cluster.osds[&index].addr.clone();
    wait_for("the OSD listening", Duration::from_secs(30), || {
        let addr = addr.clone();
        async move { tokio::net::TcpStream::connect(&addr).await.ok().map(|_| ()) }
    })
    .await;
}

/// Waits until exactly `count` OSDs are up in the map.
pub async fn osds_up(client: &MonClient, count: usize) {
    wait_for(&format!("{count} OSDs up"), Duration::from_secs(30), || {
        let client = client.clone();
        async move {
            let map = client.map(true).await.ok()?;
            (map.osds.values().filter(|osd| osd.up).count() == count).then_some(())
        }
    })
    .await;
}

/// Waits until the monitors' status satisfies `check` (PG states arrive from the
/// primaries every couple of seconds).
pub async fn status_until(
    cluster: &MonCluster,
    what: &str,
    check: impl Fn(&ClusterStatus) -> bool,
) -> ClusterStatus {
    let client = cluster.client();
    let mut last = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(status) = client.query::<ClusterStatus>(&Query::Status).await {
            if check(&status) {
                return status;
            }
            last = Some(status);
        }
        if Instant::now() >= deadline {
            panic!(
                "timed out after 30s waiting for {what}; last status: {:?}",
                last.map(|status| (status.pg_states, status.checks))
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until all `pgs` PGs are active+clean in reports their primaries made at
/// map epoch `epoch` or later: the monitors keep a report for 15 s, and one from
/// before an event (a restart, a map change) says nothing of after it.
pub async fn clean_since(cluster: &MonCluster, epoch: u64, pgs: u64) -> ClusterStatus {
    status_until(
        cluster,
        &format!("{pgs} PGs active+clean as of epoch {epoch}"),
        |status| {
            status.pg_states_since >= epoch
                && status.pg_states.get("active+clean") == Some(&pgs)
                && status.pg_states.len() == 1
        },
    )
    .await
}

/// The current map epoch, once every change acknowledged before is in it.
pub async fn current_epoch(cluster: &MonCluster) -> u64 {
    cluster.client().map(true).await.expect("the map").epoch
}

/// One monitor, `osds` OSDs (each on its own host, with `osd_flags`) and a
/// replicated pool `data` of 16 PGs.
pub async fn cluster_with_pool(osds: u32, osd_flags: &[&str]) -> MonCluster {
    let mut cluster = MonCluster::new(&["a"], &["--osd-heartbeat-grace", "2"]);
    cluster.osd_flags = osd_flags.iter().map(|flag| flag.to_string()).collect();
    start_with_pool(cluster, osds).await
}

/// Bootstraps `cluster`'s monitor `a`, starts `osds` OSDs and creates the
/// replicated pool `data` of 16 PGs.
pub async fn start_with_pool(cluster: MonCluster, osds: u32) -> MonCluster {
    start_with(cluster, osds, &replicated_pool("data", 16)).await
}

/// Bootstraps `cluster`'s monitor `a`, starts `osds` OSDs and creates a pool.
pub async fn start_with(
    mut cluster: MonCluster,
    osds: u32,
    pool: &lcpfs_core::monitor::Command,
) -> MonCluster {
    cluster.bootstrap(&["a"]);
    cluster.ready().await;
    for index in 0..osds {
        cluster.start_osd(index);
    }
    let client = cluster.client();
    osds_up(&client, osds as usize).await;
    client.run(pool).await.expect("pool");
    cluster
}

/// Appends 150 numbered lines to object `journal` of `pool` and kills its PG's
/// primary during them (the client retries the append in flight, with the same
/// request id, at the next primary); checks each line is there exactly once, in
/// order, then again once the old primary is back and all `pgs` PGs are
/// active+clean, and that a deep scrub of the PG finds every copy agreeing.
pub async fn appends_survive_a_killed_primary(cluster: &mut MonCluster, pool: &str, pgs: u64) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use lcpfs_client::objects::ObjectClient;

    let objects = Arc::new(
        ObjectClient::connect(cluster.client())
            .await
            .unwrap()
            .with_timeout(Duration::from_secs(60)),
    );
    let map = objects.map();
    let (pg, up) = placement(&map, pool, b"journal");
    let primary = cluster.osd_index(&map, up[0]);
    let line = |n: usize| format!("{n:04}\n").into_bytes();
    let appended = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (objects, appended, pool) = (objects.clone(), appended.clone(), pool.to_owned());
        tokio::spawn(async move {
            for n in 0..150 {
                objects.append(&pool, b"journal", line(n)).await?;
                appended.store(n + 1, Ordering::SeqCst);
            }
            anyhow::Ok(())
        })
    };
    wait_for("40 appends", Duration::from_secs(30), || {
        let appended = appended.clone();
        let stopped = writer.is_finished();
        async move { (stopped || appended.load(Ordering::SeqCst) >= 40).then_some(()) }
    })
    .await;
    assert!(
        !writer.is_finished(),
        "the writer stopped early: {:?}",
        writer.await
    );
    cluster.kill_osd(primary);
    writer.await.unwrap().expect("every append is acknowledged");
    let expected: Vec<u8> = (0..150).flat_map(line).collect();
    assert!(
        objects.get(pool, b"journal").await.unwrap() == expected,
        "each append is there exactly once, in order"
    );

    // The old primary returns with whatever it had applied alone; its history
    // is reconciled with the newer one, and every copy agrees.
    cluster.start_osd(primary);
    osds_up(&cluster.client(), cluster.osds.len()).await;
    clean_since(cluster, current_epoch(cluster).await, pgs).await;
    assert!(objects.get(pool, b"journal").await.unwrap() == expected);
    let report = objects.scrub(pg, true, false).await.unwrap();
    assert!(
        report.inconsistencies.is_empty(),
        "{:?}",
        report.inconsistencies
    );
}

/// The OSD of index `lagging` misses the second version of `count` objects of
/// `pool` (written `rewrites` times each; as a replica or shard, and as the
/// primary of the PGs it leads) and the removal of another, then returns with background recovery pausing
/// 30 s before each object (the cluster's OSDs run with `--recovery-sleep 30`).
/// Checks that the PGs go active while they recover (their state names
/// `step`: `recover` or `backfill`) and that operations on the missing objects
/// finish before that recovery could: half of them read their newest version
/// and take a third, and the pool lists every object with its size, while a PG
/// still reports `step`. Writing the other half
/// recovers the rest; then all `pgs` PGs are active+clean, a deep scrub finds
/// every copy agreeing and every object reads its third version.
pub async fn pgs_serve_while_they_recover(
    cluster: &mut MonCluster,
    (pool, pgs): (&str, u64),
    (count, rewrites): (usize, usize),
    lagging: u32,
    step: &str,
) {
    use lcpfs_client::objects::ObjectClient;
    use lcpfs_core::pg::PgId;

    let client = cluster.client();
    let objects = ObjectClient::connect(client.clone()).await.unwrap();
    let name = |n: usize| format!("object-{n:02}");
    let version = |n: usize, v: usize| contents(&format!("{}-v{v}", name(n)), 3000 + n * 997);
    for n in 0..count {
        objects
            .put(pool, name(n).as_bytes(), version(n, 0))
            .await
            .unwrap();
    }
    objects
        .put(pool, b"gone", b"removed".to_vec())
        .await
        .unwrap();
    cluster.kill_osd(lagging);
    let osds = cluster.osds.len();
    osds_up(&client, osds - 1).await;
    objects.remove(pool, b"gone").await.unwrap();
    for _ in 0..rewrites {
        for n in 0..count {
            objects
                .put(pool, name(n).as_bytes(), version(n, 1))
                .await
                .unwrap();
        }
    }
    cluster.start_osd(lagging);
    osd_listening(cluster, lagging).await;
    osds_up(&client, osds).await;
    let recovering_while_active = |status: &ClusterStatus| {
        status
            .pg_states
            .keys()
            .any(|state| state.starts_with("active+") && state.contains(step))
    };
    status_until(
        cluster,
        &format!("PGs active while they {step}"),
        recovering_while_active,
    )
    .await;

    // Half of the objects read their newest version (recovered first where the
    // read needs it) and take a third one.
    let half = count / 2;
    for n in 0..half {
        let read = objects.get(pool, name(n).as_bytes()).await.unwrap();
        assert!(
            read == version(n, 1),
            "{} reads its newest version",
            name(n)
        );
        objects
            .put(pool, name(n).as_bytes(), version(n, 2))
            .await
            .unwrap();
        let read = objects.get(pool, name(n).as_bytes()).await.unwrap();
        assert!(read == version(n, 2), "{} reads its third version", name(n));
    }
    let listed: Vec<(String, u64)> = objects
        .list(pool)
        .await
        .unwrap()
        .into_iter()
        .map(|entry| (entry.name, entry.size))
        .collect();
    let expected: Vec<(String, u64)> = (0..count)
        .map(|n| (name(n), version(n, 1).len() as u64))
        .collect();
    assert_eq!(listed, expected, "the listing while PGs recover");
    let status: ClusterStatus = client.query(&Query::Status).await.unwrap();
    assert!(
        recovering_while_active(&status),
        "the operations finished before the background recovery: {:?}",
        status.pg_states
    );

    // Writing the other half recovers the last missing objects; then every copy
    // agrees, byte for byte.
    for n in half..count {
        objects
            .put(pool, name(n).as_bytes(), version(n, 2))
            .await
            .unwrap();
    }
    status_until(cluster, "every PG active+clean", |status| {
        status.pg_states.get("active+clean") == Some(&pgs)
    })
    .await;
    let pool = objects.map().pool_by_name(pool).unwrap().clone();
    for seed in 0..pool.pg_num {
        let report = objects
            .scrub(PgId::new(pool.id, seed), true, false)
            .await
            .unwrap();
        assert!(
            report.inconsistencies.is_empty(),
            "PG {}.{seed:x}: {:?}",
            pool.id,
            report.inconsistencies
        );
    }
    for n in 0..count {
        let read = objects.get(&pool.name, name(n).as_bytes()).await.unwrap();
        assert!(read == version(n, 2), "{} reads its third version", name(n));
    }
    assert!(
        objects.get(&pool.name, b"gone").await.is_err(),
        "the object removed while the OSD was down stays removed"
    );
}

/// Runs the `lcpfs` command against `cluster` in `dir`, checks that it succeeds
/// and returns what it printed.
pub fn lcpfs(cluster: &MonCluster, dir: &Path, args: &[&str]) -> String {
    let out = command("lcpfs")
        .args(["--mon", &cluster.addrs().join(","), "--timeout", "60"])
        .args(cluster.client_tls_flags())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run lcpfs");
    assert!(
        out.status.success(),
        "lcpfs {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("lcpfs prints UTF-8")
}

/// The PG of object `name` in `pool` and its up set (primary first).
pub fn placement(
    map: &lcpfs_core::map::ClusterMap,
    pool: &str,
    name: &[u8],
) -> (lcpfs_core::pg::PgId, Vec<u32>) {
    let pool = map.pool_by_name(pool).expect("pool exists");
    let pg = lcpfs_core::pg::object_to_pg(pool, name);
    let up = lcpfs_core::crush::pg_mapping(map, pg)
        .expect("placement")
        .up
        .into_iter()
        .flatten()
        .collect();
    (pg, up)
}

/// One monitor process of a test cluster.
pub struct Mon {
    /// Name.
    pub name: String,
    /// Address, `127.0.0.1:port`.
    pub addr: String,
    /// Data directory.
    pub data: PathBuf,
    child: Option<Child>,
}

impl Mon {
    /// True while the process runs.
    pub fn running(&self) -> bool {
        self.child.is_some()
    }
}

/// The command creating a replicated pool (3 copies, min_size 2, failure domain
/// host).
pub fn replicated_pool(name: &str, pg_num: u32) -> lcpfs_core::monitor::Command {
    use lcpfs_core::map::{BucketType, PoolKind, PoolSpec};
    lcpfs_core::monitor::Command::PoolCreate {
        spec: PoolSpec {
            name: name.into(),
            kind: PoolKind::Replicated {
                size: 3,
                min_size: 2,
            },
            pg_num,
            failure_domain: BucketType::Host,
            device_class: None,
            compression: None,
        },
    }
}

/// The command creating an erasure-coded pool of `k` data and `m` coding shards
/// (failure domain host).
pub fn erasure_pool(name: &str, k: u32, m: u32, pg_num: u32) -> lcpfs_core::monitor::Command {
    use lcpfs_core::map::{BucketType, PoolKind, PoolSpec};
    lcpfs_core::monitor::Command::PoolCreate {
        spec: PoolSpec {
            name: name.into(),
            kind: PoolKind::Erasure { k, m },
            pg_num,
            failure_domain: BucketType::Host,
            device_class: None,
            compression: None,
        },
    }
}

/// One OSD process of a test cluster.
pub struct Osd {
    /// Address, `127.0.0.1:port`.
    pub addr: String,
    /// Address of its `/metrics`, `/health` and `/ready`.
    pub metrics: String,
    /// Data directory (its engine store).
    pub data: PathBuf,
    child: Option<Child>,
}

/// A set of monitors (and OSDs) on loopback.
pub struct MonCluster {
    /// The monitors by name.
    pub mons: BTreeMap<String, Mon>,
    /// The OSDs by the index they were started with (index i runs on host `hI`).
    pub osds: BTreeMap<u32, Osd>,
    /// Extra flags for every OSD.
    pub osd_flags: Vec<String>,
    /// The OSDs' log filter (`LCPFS_LOG`; their default, `warn`, when `None`).
    pub osd_log_filter: Option<String>,
    /// Size of each OSD's file disk (sparse), made on its first start.
    pub osd_disk_size: String,
    /// Extra flags for every monitor (timers).
    pub flags: Vec<String>,
    /// The cluster CA and the TLS of this test's client (`client.test`) when the
    /// cluster runs with TLS (see [`Self::with_tls`]).
    tls: Option<(LoopbackCa, Tls)>,
    dir: tempfile::TempDir,
}

impl MonCluster {
    /// Names and addresses for `names`, nothing started.
    pub fn new(names: &[&str], flags: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut cluster = MonCluster {
            mons: BTreeMap::new(),
            osds: BTreeMap::new(),
            osd_flags: Vec::new(),
            osd_log_filter: None,
            osd_disk_size: "256M".to_owned(),
            flags: flags.iter().map(|flag| flag.to_string()).collect(),
            tls: None,
            dir,
        };
        for name in names {
            cluster.define(name);
        }
        cluster
    }

    /// Runs every daemon and client of this cluster with mutual TLS: a new cluster
    /// CA, a certificate for each daemon (valid for 127.0.0.1) when it starts, and
    /// one for the test's clients.
    pub fn with_tls(mut self) -> Self {
        let ca = LoopbackCa::open_or_create(&self.dir.path().join("tls"))
            .expect("create the cluster CA");
        let client = ca
            .issue("client.test")
            .expect("issue the client's certificate");
        let client = Tls::load(&client).expect("load the client's TLS");
        self.tls = Some((ca, client));
        self
    }

    /// The cluster CA's directory, if the cluster runs with TLS.
    pub fn ca_dir(&self) -> Option<PathBuf> {
        self.tls.as_ref().map(|(ca, _)| ca.dir())
    }

    /// The TLS of this test's clients (`client.test`), if the cluster runs with TLS.
    pub fn client_tls(&self) -> Option<Tls> {
        self.tls.as_ref().map(|(_, client)| client.clone())
    }

    /// `--tls-dir DIR` with a new certificate for `entity` when the cluster runs
    /// with TLS, nothing otherwise.
    fn tls_flags(&self, entity: &str) -> Vec<String> {
        let Some((ca, _)) = &self.tls else {
            return Vec::new();
        };
        let dir = ca.issue(entity).expect("issue a certificate");
        vec!["--tls-dir".to_owned(), dir.display().to_string()]
    }

    /// `--tls-dir DIR` of this test's clients when the cluster runs with TLS.
    fn client_tls_flags(&self) -> Vec<String> {
        self.tls.as_ref().map_or_else(Vec::new, |(_, client)| {
            vec!["--tls-dir".to_owned(), client.dir().display().to_string()]
        })
    }

    /// Defines one more monitor (not started).
    pub fn define(&mut self, name: &str) {
        let data = self.dir.path().join(format!("mon.{name}"));
        self.mons.insert(
            name.to_owned(),
            Mon {
                name: name.to_owned(),
                addr: format!("127.0.0.1:{}", free_port()),
                data,
                child: None,
            },
        );
    }

    /// `--initial-members` for `names`.
    pub fn members(&self, names: &[&str]) -> String {
        names
            .iter()
            .map(|name| format!("{name}={}", self.mons[*name].addr))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts a monitor; `extra` are flags for this start only (e.g. bootstrap).
    pub fn start(&mut self, name: &str, extra: &[String]) {
        let tls = self.tls_flags(&format!("mon.{name}"));
        let mon = self.mons.get_mut(name).expect("monitor defined");
        assert!(mon.child.is_none(), "mon.{name} is already running");
        std::fs::create_dir_all(&mon.data).expect("monitor data directory");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(mon.data.join("stderr.log"))
            .expect("monitor log file");
        let child = command("lcpfs-mon")
            .args(["--id", name, "--addr", &mon.addr, "--data"])
            .arg(&mon.data)
            .args(&self.flags)
            .args(&tls)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start lcpfs-mon");
        mon.child = Some(child);
    }

    /// Starts `names` as the initial members of a new cluster.
    pub fn bootstrap(&mut self, names: &[&str]) {
        let members = self.members(names);
        for name in names {
            self.start(name, &["--initial-members".into(), members.clone()]);
        }
    }

    /// Starts OSD `index` (host `h{index}`, one 256 MiB file disk), creating its store
    /// on first start.
    pub fn start_osd(&mut self, index: u32) {
        let names: Vec<String> = self.mons.keys().cloned().collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        self.start_osd_following(index, &names);
    }

    /// Starts OSD `index` knowing only the monitors `names` (so that stopping
    /// them cuts it off from the map).
    pub fn start_osd_following(&mut self, index: u32, names: &[&str]) {
        let tls = self.tls_flags(&format!("osd.h{index}"));
        let data = self.dir.path().join(format!("osd.{index}"));
        let osd = self.osds.entry(index).or_insert_with(|| Osd {
            addr: format!("127.0.0.1:{}", free_port()),
            metrics: format!("127.0.0.1:{}", free_port()),
            data,
            child: None,
        });
        assert!(osd.child.is_none(), "osd {index} is already running");
        std::fs::create_dir_all(&osd.data).expect("osd data directory");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(osd.data.join("stderr.log"))
            .expect("osd log file");
        let mons: Vec<String> = names
            .iter()
            .map(|name| self.mons[*name].addr.clone())
            .collect();
        let host = format!("h{index}");
        // Below the monitors' grace the tests give (2 s): a killed OSD's read
        // leases run out before it is marked down (unless a test sets its own).
        let read_lease: &[&str] = if self.osd_flags.iter().any(|flag| flag == "--read-lease") {
            &[]
        } else {
            &["--read-lease", "1.5"]
        };
        let mut child = command("lcpfs-osd");
        if let Some(filter) = &self.osd_log_filter {
            child.env("LCPFS_LOG", filter);
        }
        let child = child
            .arg("--data")
            .arg(&osd.data)
            .args([
                "--mon",
                &mons.join(","),
                "--addr",
                &osd.addr,
                "--host",
                &host,
                "--metrics-addr",
                &osd.metrics,
            ])
            .args([
                "--disk-size",
                &self.osd_disk_size,
                "--heartbeat-interval",
                "0.5",
            ])
            .args(read_lease)
            .args(&self.osd_flags)
            .args(&tls)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start lcpfs-osd");
        osd.child = Some(child);
    }

    /// Sends `signal` (e.g. `STOP`, `CONT`) to OSD `index`'s process.
    pub fn signal_osd(&self, index: u32, signal: &str) {
        let child = self.osds[&index].child.as_ref().expect("the OSD runs");
        signal_pid(child.id(), signal);
    }

    /// Sends `signal` (e.g. `STOP`, `CONT`) to monitor `name`'s process.
    pub fn signal_mon(&self, name: &str, signal: &str) {
        let child = self.mons[name].child.as_ref().expect("the monitor runs");
        signal_pid(child.id(), signal);
    }

    /// Kills OSD `index` with SIGKILL.
    pub fn kill_osd(&mut self, index: u32) {
        if let Some(mut child) = self.osds.get_mut(&index).and_then(|osd| osd.child.take()) {
            child.kill().ok();
            child.wait().ok();
        }
    }

    /// Kills a monitor with SIGKILL.
    pub fn kill(&mut self, name: &str) {
        let mon = self.mons.get_mut(name).expect("monitor defined");
        if let Some(mut child) = mon.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }

    /// Addresses of all defined monitors.
    pub fn addrs(&self) -> Vec<String> {
        self.mons.values().map(|mon| mon.addr.clone()).collect()
    }

    /// A client of all defined monitors.
    pub fn client(&self) -> MonClient {
        MonClient::with_tls(&self.addrs(), self.client_tls())
            .expect("monitor addresses")
            .with_timeout(Duration::from_secs(20))
    }

    /// A client of one monitor only.
    pub fn client_of(&self, name: &str) -> MonClient {
        MonClient::with_tls(&[self.mons[name].addr.clone()], self.client_tls())
            .expect("monitor address")
            .with_timeout(Duration::from_secs(20))
    }

    /// The leader's name as the running monitors agree on it (a running one).
    pub async fn leader(&self) -> String {
        let client = self.client();
        let running: Vec<String> = self
            .mons
            .values()
            .filter(|mon| mon.running())
            .map(|mon| mon.name.clone())
            .collect();
        wait_for("a leader", Duration::from_secs(30), || {
            let client = client.clone();
            let running = running.clone();
            async move {
                let replies = client.ping_all().await;
                let leaders: Vec<String> = replies
                    .into_iter()
                    .filter_map(|(_, reply)| reply)
                    .map(|reply| reply.leader)
                    .collect();
                let first = leaders.first()?.clone();
                let agreed = leaders.iter().all(|leader| *leader == first);
                (agreed && running.contains(&first)).then_some(first)
            }
        })
        .await
    }

    /// Waits until the cluster is bootstrapped and serves linearizable reads.
    pub async fn ready(&self) -> lcpfs_core::map::ClusterMap {
        let client = self.client();
        wait_for("a bootstrapped map", Duration::from_secs(30), || {
            let client = client.clone();
            async move { client.map(true).await.ok() }
        })
        .await
    }

    /// The harness index of the OSD the map knows as `osd.id` (matched by address).
    pub fn osd_index(&self, map: &lcpfs_core::map::ClusterMap, id: u32) -> u32 {
        let addr = &map.osds[&id].addr;
        *self
            .osds
            .iter()
            .find(|(_, osd)| osd.addr == *addr)
            .unwrap_or_else(|| panic!("osd.{id} ({addr}) is not one of this cluster's OSDs"))
            .0
    }

    /// The id `map` gives OSD process `index` (matched by address).
    pub fn osd_id(&self, map: &lcpfs_core::map::ClusterMap, index: u32) -> u32 {
        let addr = &self.osds[&index].addr;
        map.osds
            .values()
            .find(|osd| osd.addr == *addr)
            .unwrap_or_else(|| panic!("OSD process {index} ({addr}) is not in the map"))
            .id
    }

    /// The stderr of a monitor, for failure messages.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.mons[name].data.join("stderr.log")).unwrap_or_default()
    }

    /// The stderr of OSD process `index`.
    pub fn osd_log(&self, index: u32) -> String {
        std::fs::read_to_string(self.osds[&index].data.join("stderr.log")).unwrap_or_default()
    }
}

impl Drop for MonCluster {
    fn drop(&mut self) {
        // A failing test shows the end of every daemon's log beside its panic.
        if std::thread::panicking() {
            let logs = self
                .mons
                .iter()
                .map(|(name, mon)| (format!("mon.{name}"), mon.data.join("stderr.log")))
                .chain(self.osds.iter().map(|(index, osd)| {
                    (format!("osd index {index}"), osd.data.join("stderr.log"))
                }));
            for (daemon, path) in logs {
                let log = std::fs::read_to_string(&path).unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                eprintln!("--- last lines of {daemon}'s log ---");
                for line in &lines[lines.len().saturating_sub(40)..] {
                    eprintln!("{line}");
                }
            }
        }
        let names: Vec<String> = self.mons.keys().cloned().collect();
        for name in names {
            self.kill(&name);
        }
        let osds: Vec<u32> = self.osds.keys().copied().collect();
        for index in osds {
            self.kill_osd(index);
        }
    }
}

/// Sends `signal` to a daemon's process.
/// Sends `signal` (`TERM`, `KILL`, `STOP`, ...) to process `pid`, with kill(1).
pub fn signal_pid(pid: u32, signal: &str) {
    let pid = pid.to_string();
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid}");
}

/// Overwrites with garbage, in the files under `dir`, every place where `needle`
/// is stored (live data, and copies left in freed space): bytes rotting on an
/// OSD's disk. Returns how many places it rotted.
pub fn rot(dir: &Path, needle: &[u8]) -> usize {
    let mut rotted = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                pending.push(entry.unwrap().path());
            }
            continue;
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let length = file.metadata().unwrap().len();
        let mut chunk = vec![0u8; 8 << 20];
        let mut offset = 0u64;
        while offset < length {
            let read = file.read_at(&mut chunk, offset).unwrap();
            if read == 0 {
                break;
            }
            let mut found = chunk[..read]
                .windows(needle.len())
                .enumerate()
                .filter(|(_, window)| *window == needle)
                .map(|(at, _)| at)
                .peekable();
            if found.peek().is_some() {
                for at in found.collect::<Vec<_>>() {
                    file.write_all_at(&vec![0x5a; needle.len()], offset + at as u64)
                        .unwrap();
                    rotted += 1;
                }
                file.sync_all().unwrap();
            }
            // Overlap chunks so a match across a boundary is not missed.
            offset += (read - needle.len().min(read)) as u64 + 1;
        }
    }
    rotted
}
