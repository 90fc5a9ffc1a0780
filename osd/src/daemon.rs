//! The OSD daemon: opens (on first start, creates) its engine store, boots with the
//! monitors, follows the cluster map, heartbeats, and serves the OSD protocol.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use lcpfs_client::mon_client::{MonClient, OsdBoot};
use lcpfs_core::crush::share_a_pg;
use lcpfs_core::map::ClusterMap;
use lcpfs_core::monitor::HELD_DOWN;
use lcpfs_engine::{OpenOptions, Store};
use lcpfs_proto::connections::OSD_MAX_MESSAGE;
use lcpfs_proto::osd_server::OsdServer as OsdGrpc;
use lcpfs_proto::tls;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::config::OsdConfig;
use crate::lease::{self, LEASE_RATIO};
use crate::node::Node;
use crate::server::OsdServer;
use crate::split::{split_for_map, split_held};
use crate::store_tool::layout_spec;
use crate::{backend, peering, recovery, scrub, status, strays};

/// Arguments of the daemon (`lcpfs-osd --data DIR --mon ADDR ...`).
#[derive(Args, Debug)]
pub struct DaemonArgs {
    /// Data directory: the engine store (metadata and file disks) and the OSD's identity.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Monitor addresses, HOST:PORT[,...] (default: $LCPFS_MON).
    #[arg(long)]
    pub mon: Option<String>,
    /// Address the cluster reaches this OSD at, IP:PORT or NAME:PORT (first start;
    /// recorded in the data directory).
    #[arg(long)]
    pub addr: Option<String>,
    /// CRUSH host of this OSD (first start; default: the machine's host name).
    #[arg(long)]
    pub host: Option<String>,
    /// CRUSH zone of the host.
    #[arg(long)]
    pub zone: Option<String>,
    /// Device class (hdd, ssd, nvme).
    #[arg(long, default_value = "hdd")]
    pub device_class: String,
    /// CRUSH weight (by convention the capacity in TiB).
    #[arg(long, default_value_t = 1.0)]
    pub weight: f64,
    /// First start: single, mirror, raidz1, raidz2 or raidz3 over the disks.
    #[arg(long, default_value = "single")]
    pub layout: String,
    /// First start: make this many file disks in the data directory.
    #[arg(long)]
    pub disks: Option<usize>,
    /// First start: size of each file disk.
    #[arg(long, default_value = "4G")]
    pub disk_size: String,
    /// First start: use this file or block device (repeat for each disk).
    #[arg(long = "disk")]
    pub disk_paths: Vec<PathBuf>,
    /// Largest object, in MiB.
    #[arg(long, default_value_t = 128)]
    pub max_object_mib: u64,
    /// Seconds between heartbeats to the monitors.
    #[arg(long, default_value_t = 1.0)]
    pub heartbeat_interval: f64,
    /// Seconds a write waits for a replica that does not store it (but is not
    /// marked down) before failing; the client retries it.
    #[arg(long, default_value_t = 30.0)]
    pub replicate_timeout: f64,
    /// Seconds a write waits for a PG with fewer than min_size OSDs up before failing.
    #[arg(long, default_value_t = 10.0)]
    pub pg_inactive_wait: f64,
    /// Hours between scrubs of each PG this OSD is primary for (object lists,
    /// sizes and xattrs compared across its OSDs).
    #[arg(long, default_value_t = 24.0)]
    pub scrub_interval_hours: f64,
    /// Hours between deep scrubs (every byte read, content digests compared).
    #[arg(long, default_value_t = 168.0)]
    pub deep_scrub_interval_hours: f64,
    /// Scheduled scrubs rewrite the bad copies they find from good ones (off: they
    /// report them, PG_DAMAGED, and `lcpfs pg repair` fixes them).
    #[arg(long)]
    pub scrub_auto_repair: bool,
    /// Seconds to pause between objects recovered or backfilled (0: none), leaving
    /// the disks and the network to client I/O.
    #[arg(long, default_value_t = 0.0)]
    pub recovery_sleep: f64,
    /// PGs this OSD brings level at once, as their primary (others wait:
    /// `recovery_wait` / `backfill_wait`).
    #[arg(long, default_value_t = 2)]
    pub max_recovering_pgs: usize,
    /// Log entries each PG keeps (older ones are trimmed); a copy that missed
    /// more writes than this is backfilled (every object compared) instead of
    /// recovering only the objects the entries name.
    #[arg(long, default_value_t = crate::pg::LOG_KEEP, value_parser = clap::value_parser!(u64).range(16..))]
    pub pg_log_entries: u64,
    /// Seconds a peer OSD (one sharing a PG) may go unanswered before this OSD
    /// reports it failed to the monitors (which mark it down once OSDs on two hosts
    /// report it).
    #[arg(long, default_value_t = 20.0)]
    pub osd_heartbeat_grace: f64,
    /// Seconds a read lease lasts (default: 0.8 × --osd-heartbeat-grace, and at
    /// least two heartbeats): a primary cut off from its peers stops serving
    /// reads this long after its last renewal, and a new primary may wait this
    /// long before taking writes. Keep it below the monitors'
    /// --osd-heartbeat-grace, so a crashed OSD's leases run out before it is
    /// marked down.
    #[arg(long)]
    pub read_lease: Option<f64>,
    /// Listen here (e.g. 0.0.0.0:6800) instead of on the address the map knows
    /// this OSD by, which may then be a DNS name (a Kubernetes pod's stable name).
    #[arg(long)]
    pub bind: Option<SocketAddr>,
    /// Serve Prometheus /metrics, /health and /ready on this address.
    #[arg(long)]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// TLS directory (ca.crt, tls.crt, tls.key): mutual TLS with clients, peers and
    /// monitors (default: $LCPFS_TLS_DIR; plain connections without either).
    #[arg(long)]
    pub tls_dir: Option<PathBuf>,
}

/// What an OSD keeps about itself in its data directory (`osd.json`).
#[derive(Debug, Serialize, Deserialize)]
struct Identity {
    uuid: String,
    addr: String,
    host: String,
}

fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Opens the store, creating it and the identity on first start.
fn open_or_create(data: &std::path::Path, args: &DaemonArgs) -> anyhow::Result<(Store, Identity)> {
    let identity_path = data.join("osd.json");
    if let Ok(bytes) = std::fs::read(&identity_path) {
        let identity: Identity = serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is damaged", identity_path.display()))?;
        if let Some(addr) = &args.addr
            && addr != &identity.addr
        {
            bail!(
                "this OSD serves on {} (recorded in {}); start it without --addr or with that address",
                identity.addr,
                identity_path.display()
            );
        }
        let store = Store::open(data, &OpenOptions::default())
            .with_context(|| format!("cannot open the OSD store in {}", data.display()))?;
        return Ok((store, identity));
    }
    let Some(addr) = args.addr.clone() else {
        bail!(
            "{} holds no OSD yet: give --addr IP:PORT for its first start",
            data.display()
        );
    };
    std::fs::create_dir_all(data).with_context(|| format!("cannot create {}", data.display()))?;
    let disks = if args.disks.is_none() && args.disk_paths.is_empty() {
        Some(1)
    } else {
        args.disks
    };
    let spec = layout_spec(
        data,
        &args.layout,
        disks,
        &args.disk_size,
        args.disk_paths.clone(),
        None,
        None,
    )
    .map_err(|error| anyhow::anyhow!(error))?;
    let store = Store::create(data, &spec)
        .with_context(|| format!("cannot create the OSD store in {}", data.display()))?;
    let mut uuid = [0u8; 16];
    rand::rng().fill_bytes(&mut uuid);
    let identity = Identity {
        uuid: uuid.iter().map(|b| format!("{b:02x}")).collect(),
        addr,
        host: args.host.clone().unwrap_or_else(host_name),
    };
    // Durable before the OSD registers under it: a power cut must not leave a
    // store whose identity is gone or torn.
    lcpfs_core::file::replace_private(&identity_path, &serde_json::to_vec_pretty(&identity)?)
        .with_context(|| format!("cannot write {}", identity_path.display()))?;
    Ok((store, identity))
}

/// How often an OSD the monitors hold down for flapping asks to boot again.
const HELD_RETRY: Duration = Duration::from_secs(5);

/// Boots with the monitors: retries failures ten times, and waits as long as
/// the monitors hold this OSD down for flapping.
async fn boot(mon: &MonClient, boot: &OsdBoot) -> anyhow::Result<u32> {
    let mut failures = 0;
    loop {
        match mon.osd_boot(boot).await {
            Ok(id) => return Ok(id),
            Err(error) if error.to_string().contains(HELD_DOWN) => {
                tracing::warn!(%error, "the monitors hold this OSD down; waiting");
                tokio::time::sleep(HELD_RETRY).await;
            }
            Err(error) if failures < 10 => {
                tracing::warn!(%error, "boot with the monitors failed; retrying");
                failures += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(error) => return Err(error).context("cannot boot with the monitors"),
        }
    }
}

/// Resolves, with the reason, once the store has stopped committing (a disk flush
/// failed): an OSD that can no longer make writes durable stops (fail-stop, as
/// Ceph's does), so that its PGs move to OSDs that can.
async fn store_failed(node: Arc<Node>) -> String {
    loop {
        if let Some(why) = node.store.suspended() {
            return why;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits for a stop request (Ctrl-C or SIGTERM) or a failed store (whose reason
/// goes into `failure`), gives back the read leases this OSD holds (it serves no
/// more reads), then asks the monitors to mark it down before it stops serving, so
/// clients and peers move to other OSDs at once instead of waiting out the
/// heartbeat grace or the leases.
async fn mark_down_on_shutdown(
    mon: MonClient,
    node: Arc<Node>,
    stopping: Arc<AtomicBool>,
    failure: Arc<OnceLock<String>>,
) {
    tokio::select! {
        () = lcpfs_core::shutdown::requested() => {}
        why = store_failed(node.clone()) => {
            tracing::error!("stopping: the store can no longer write ({why})");
            let _ = failure.set(why);
        }
    }
    stopping.store(true, Ordering::SeqCst);
    lease::release_all(&node).await;
    let id = node.id;
    let command = lcpfs_core::monitor::Command::OsdDown { ids: vec![id] };
    match tokio::time::timeout(Duration::from_secs(5), mon.run(&command)).await {
        Ok(Ok(_)) => tracing::info!(osd = id, "marked down for shutdown"),
        Ok(Err(error)) => {
            tracing::warn!(%error, "could not mark this OSD down; the monitors will notice")
        }
        Err(_) => tracing::warn!("the monitors did not answer the mark-down; they will notice"),
    }
}

/// Pings, every `interval`, the OSDs this one shares PGs with (each ping asks for
/// a read lease), and reports to the monitors each one that has not answered for
/// `grace` (again every `grace` while it stays silent and up in the map). Peers
/// see a network failure between OSDs that the monitors, reachable from both,
/// cannot.
async fn heartbeat_peers(
    node: Arc<Node>,
    mon: MonClient,
    id: u32,
    interval: Duration,
    grace: Duration,
) {
    let mut last_answer: HashMap<u32, Instant> = HashMap::new();
    let mut reported: HashMap<u32, Instant> = HashMap::new();
    loop {
        tokio::time::sleep(interval).await;
        let peers = node.heartbeat_peers();
        last_answer.retain(|osd, _| peers.contains(osd));
        reported.retain(|osd, _| peers.contains(osd));
        let now = Instant::now();
        let answers = lease::renew(&node, peers, interval.max(Duration::from_secs(1))).await;
        for (osd, answered) in answers {
            let last = last_answer.entry(osd).or_insert(now);
            if answered {
                *last = Instant::now();
                reported.remove(&osd);
                continue;
            }
            let silent = last.elapsed();
            let due = reported.get(&osd).is_none_or(|at| at.elapsed() >= grace);
            // The monitors count reports only from OSDs sharing a PG with the
            // accused (a peer of an earlier interval only is pinged, not reported).
            if silent >= grace && due && share_a_pg(&node.current(), id, osd) {
                tracing::warn!(
                    peer = osd,
                    silent_s = silent.as_secs_f64(),
                    "peer OSD does not answer; reporting it"
                );
                match mon.report_failure(id, osd).await {
                    Ok(()) => {
                        reported.insert(osd, Instant::now());
                    }
                    Err(error) => {
                        tracing::warn!(%error, peer = osd, "failure report not delivered")
                    }
                }
            }
        }
    }
}

/// Asks the monitors to record this OSD up through each epoch its peering needs
/// ([`Node::wait_up_thru`]), once per rise, again after a failure while the map
/// still lacks it.
async fn send_up_thru(mon: MonClient, node: Arc<Node>) {
    let mut wanted = node.up_thru_wanted();
    loop {
        let epoch = *wanted.borrow_and_update();
        let missing = node
            .current()
            .osds
            .get(&node.id)
            .is_some_and(|osd| osd.up && osd.up_thru < epoch);
        if missing && let Err(error) = mon.up_thru(node.id, epoch).await {
            tracing::warn!(%error, epoch, "could not have this OSD recorded up; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        if wanted.changed().await.is_err() {
            return;
        }
    }
}

/// Boots again while the map says this OSD is down but it runs (it was marked
/// down by mistake, or its heartbeats were late), unless it is stopping; while
/// the monitors hold it down for flapping, asks again every [`HELD_RETRY`].
async fn rejoin_when_marked_down(
    mon: MonClient,
    node: Arc<Node>,
    boot_info: OsdBoot,
    stopping: Arc<AtomicBool>,
) {
    let mut maps = node.map_watch();
    loop {
        if !node.is_up() && !stopping.load(Ordering::SeqCst) {
            tracing::warn!("the map marks osd.{} down; booting again", node.id);
            if let Err(error) = mon.osd_boot(&boot_info).await {
                tracing::warn!(%error, "boot failed");
                let _ = tokio::time::timeout(HELD_RETRY, maps.changed()).await;
                continue;
            }
        }
        if maps.changed().await.is_err() {
            return;
        }
    }
}

/// Follows the map from the monitors into `sender`.
async fn follow_map(mon: MonClient, sender: watch::Sender<Arc<ClusterMap>>, node: Arc<Node>) {
    let mut last: Option<ClusterMap> = Some((**sender.borrow()).clone());
    loop {
        let mut watch = match mon.subscribe(last.clone()).await {
            Ok(watch) => watch,
            Err(error) => {
                tracing::warn!(%error, "map subscription failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        while let Ok(Some(map)) = watch.next().await {
            let map = map.clone();
            last = Some(map.clone());
            split_for_map(&node, &map).await;
            node.observe(&map);
            sender.send_replace(Arc::new(map));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The file in the OSD's data folder holding the PG intervals it saw.
const INTERVALS_FILE: &str = "intervals.json";

/// Brings the PG intervals this OSD saved when it last ran up to `current`: the
/// epochs it missed come from the monitors one at a time (as far back as they
/// keep them), so that peering knows every interval, including those during which
/// this OSD was down. Returns the newest map observed.
async fn observe_missed_epochs(
    mon: &MonClient,
    node: &Node,
    current: ClusterMap,
) -> anyhow::Result<ClusterMap> {
    let saved = node.restore_intervals(&current)?;
    if let Some(saved) = saved.filter(|saved| saved.epoch < current.epoch) {
        let (from, to) = (saved.epoch, current.epoch);
        let replay = async {
            let mut watch = mon.subscribe(Some(saved)).await?;
            while let Some(map) = watch.next().await? {
                if map.epoch >= to {
                    node.observe(map);
                    return anyhow::Ok(map.clone());
                }
                node.observe_replayed(map);
            }
            bail!("the map subscription ended")
        };
        match tokio::time::timeout(Duration::from_secs(30), replay).await {
            Ok(Ok(map)) => {
                tracing::info!(
                    from,
                    to = map.epoch,
                    "observed the epochs missed while stopped"
                );
                return Ok(map);
            }
            Ok(Err(error)) => tracing::warn!(%error, from, "cannot replay the missed epochs"),
            Err(_) => tracing::warn!(from, "replaying the missed epochs timed out"),
        }
    }
    node.observe(&current);
    Ok(current)
}

/// How long the read leases this OSD asks for last: [`LEASE_RATIO`] of the
/// heartbeat grace, so that a crashed OSD's leases run out before its peers
/// report it, but at least two heartbeats, so that one late renewal does not
/// stop reads.
fn read_lease(grace: Duration, heartbeat: Duration) -> Duration {
    grace.mul_f64(LEASE_RATIO).max(heartbeat * 2)
}

/// Runs an OSD until the process is stopped.
pub async fn run(args: DaemonArgs) -> anyhow::Result<()> {
    let Some(data) = args.data.clone() else {
        bail!("give --data DIR (the OSD's store), or use `lcpfs-osd store` for the offline tool");
    };
    let heartbeat = Duration::try_from_secs_f64(args.heartbeat_interval)
        .ok()
        .filter(|interval| !interval.is_zero())
        .context("--heartbeat-interval must be a positive number of seconds")?;
    let grace = Duration::try_from_secs_f64(args.osd_heartbeat_grace)
        .context("--osd-heartbeat-grace must be a number of seconds")?;
    let mon = MonClient::from_flags(args.mon.as_deref(), args.tls_dir.as_deref())?;
    let (store, identity) = {
        let data = data.clone();
        tokio::task::block_in_place(|| open_or_create(&data, &args))?
    };
    let listen =
        lcpfs_core::net::listen_addr(&identity.addr, args.bind).map_err(anyhow::Error::msg)?;
    let boot_info = OsdBoot {
        uuid: identity.uuid.clone(),
        addr: identity.addr.clone(),
        host: identity.host.clone(),
        zone: args.zone.clone().unwrap_or_default(),
        device_class: args.device_class.clone(),
        weight: args.weight,
    };
    // Serve before booting: once the map says this OSD is up, peers send to it.
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let id = boot(&mon, &boot_info).await?;
    let map = mon
        .map(false)
        .await
        .context("cannot fetch the cluster map")?;
    let config = OsdConfig {
        max_object_size: args.max_object_mib.saturating_mul(1 << 20),
        replicate_deadline: Duration::try_from_secs_f64(args.replicate_timeout)
            .context("--replicate-timeout must be a number of seconds")?,
        inactive_wait: Duration::try_from_secs_f64(args.pg_inactive_wait)
            .context("--pg-inactive-wait must be a number of seconds")?,
        scrub_interval: Duration::try_from_secs_f64(args.scrub_interval_hours * 3600.0)
            .context("--scrub-interval-hours must be a number of hours")?,
        deep_scrub_interval: Duration::try_from_secs_f64(args.deep_scrub_interval_hours * 3600.0)
            .context("--deep-scrub-interval-hours must be a number of hours")?,
        auto_repair: args.scrub_auto_repair,
        recovery_sleep: Duration::try_from_secs_f64(args.recovery_sleep)
            .context("--recovery-sleep must be a number of seconds")?,
        max_recovering_pgs: args.max_recovering_pgs.max(1),
        pg_log_entries: args.pg_log_entries,
        intervals_file: Some(data.join(INTERVALS_FILE)),
        read_lease: match args.read_lease {
            Some(seconds) => Duration::try_from_secs_f64(seconds)
                .ok()
                .filter(|lease| !lease.is_zero())
                .context("--read-lease must be a positive number of seconds")?,
            None => read_lease(grace, heartbeat),
        },
        tls: mon.tls().cloned(),
    };
    let stopping = Arc::new(AtomicBool::new(false));
    // The pools may have grown while this OSD was stopped: its copies are split
    // before it serves anything.
    let split = tokio::task::block_in_place(|| split_held(&store, &map))
        .context("cannot split the PGs of pools whose pg_num grew")?;
    if split > 0 {
        tracing::info!(split, "split PG copies for the pools' pg_num");
    }
    let (sender, receiver) = watch::channel(Arc::new(map.clone()));
    let node = Arc::new(Node::new(id, Arc::new(store), receiver, config));
    let map = observe_missed_epochs(&mon, &node, map).await?;
    split_for_map(&node, &map).await;
    sender.send_replace(Arc::new(map));
    tokio::spawn(follow_map(mon.clone(), sender, node.clone()));
    tokio::spawn(rejoin_when_marked_down(
        mon.clone(),
        node.clone(),
        boot_info,
        stopping.clone(),
    ));
    tokio::spawn(send_up_thru(mon.clone(), node.clone()));
    tokio::spawn(peering::peer_on_map_changes(
        node.clone(),
        backend::peering_of,
    ));
    tokio::spawn(recovery::recover_in_background(
        node.clone(),
        backend::recovery_of,
    ));
    tokio::spawn(scrub::scrub_on_schedule(node.clone()));
    tokio::spawn(strays::remove_strays(node.clone()));
    tokio::spawn(heartbeat_peers(
        node.clone(),
        mon.clone(),
        id,
        heartbeat,
        grace,
    ));
    if let Some(addr) = args.metrics_addr {
        let node = node.clone();
        tokio::spawn(async move {
            if let Err(error) = crate::metrics::serve(addr, node).await {
                tracing::error!(%error, "metrics endpoint stopped");
            }
        });
    }
    {
        let mon = mon.clone();
        let reporter = node.clone();
        tokio::spawn(async move {
            let mut beats = 0u64;
            loop {
                tokio::time::sleep(heartbeat).await;
                let space = reporter.store_status();
                let used = space.size_bytes.saturating_sub(space.free_bytes);
                if let Err(error) = mon.osd_heartbeat(id, used, space.size_bytes).await {
                    tracing::warn!(%error, "heartbeat failed");
                }
                // PG states every other heartbeat, stamped with the epoch of the
                // map they were computed on (or an older one): the monitors trust
                // a report only for what happened before that epoch.
                beats += 1;
                if beats.is_multiple_of(2) {
                    let epoch = reporter.current().epoch;
                    let stats = status::pg_states(&reporter);
                    if let Err(error) = mon.pg_stats(id, epoch, stats).await {
                        tracing::warn!(%error, "PG state report failed");
                    }
                }
            }
        });
    }

    let shutdown_node = node.clone();
    let failure = Arc::new(OnceLock::new());
    tracing::info!(osd = id, addr = %identity.addr, "serving");
    eprintln!("osd.{id} serving on {}", identity.addr);
    let mut server = tls::server(mon.tls()).context("cannot set up TLS")?;
    server
        .add_service(
            OsdGrpc::new(OsdServer::new(node))
                .max_decoding_message_size(OSD_MAX_MESSAGE)
                .max_encoding_message_size(OSD_MAX_MESSAGE),
        )
        .serve_with_incoming_shutdown(
            // Small requests and replies go out at once (no Nagle delay).
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            mark_down_on_shutdown(mon, shutdown_node, stopping, failure.clone()),
        )
        .await
        .context("serving stopped")?;
    match failure.get() {
        Some(why) => bail!("the store can no longer write: {why}"),
        None => Ok(()),
    }
}
