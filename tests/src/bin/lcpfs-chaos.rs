//! `lcpfs-chaos`: faults at random against the compose cluster while clients write,
//! then a check that nothing acknowledged was lost (`make chaos`).
//!
//! Clients each own a set of objects (in the replicated pool `data` and the
//! erasure-coded pool `ec`) and write, overwrite, append to, delete and read them
//! with unique values, keeping a history: for each object, the values it may hold
//! given every acknowledged operation (one, unless an operation failed and may or may
//! not have been applied). A read whose value is not one of them is an anomaly: a
//! lost write, a resurrected delete, a torn object, a failed write seen and then
//! gone. Clients also read each other's objects: such a read must return a value
//! the object held at some moment while the read ran (linearizability, with the
//! owner's operations as the register's history), so a stale read from a primary
//! that was replaced is an anomaly, reported with the operations around it.
//!
//! Meanwhile faults are injected at random, one at a time, for a set time: kill -9 a
//! container, stop and start it, pause it (SIGSTOP to every process), disconnect it
//! from the network (a partition of one or two nodes), cut one link (one way, or
//! both ways between two nodes that still reach everyone else), corrupt bytes on an
//! OSD's disk (while it is stopped), fill an OSD (the full ratio lowered just below
//! its use), kill the monitor leader; and operator actions under load: double a
//! pool's pg_num (its PGs split while clients write; kept), mark an OSD out and in
//! again (its data moves away and back), reweight an OSD to half and back, lower
//! the replicated pool's min_size to 1 and raise it again. Afterwards every fault is healed
//! and the cluster must be HEALTH_OK with every PG active+clean within a deadline;
//! every object must read back with its last acknowledged value; a deep scrub
//! before any repair must find every copy and shard agreeing (unless bytes were
//! corrupted on purpose), and after a deep scrub with repair, a second one too. The report gives
//! the counts and the seed; the same seed replays the same faults and operations.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use lcpfs_client::mon_client::MonClient;
use lcpfs_client::objects::ObjectClient;
use lcpfs_core::monitor::{ClusterStatus, Command as MonCommand, HealthStatus, OsdUsage, Query};
use lcpfs_core::pg::PgId;
use lcpfs_tests::contents;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::process::Command as Process;
use tokio::sync::Mutex;

#[derive(Parser, Debug)]
#[command(about = "Chaos against the compose cluster, with a history checker")]
struct Args {
    /// How long to inject faults, in seconds.
    #[arg(long, default_value_t = 600)]
    duration: u64,
    /// Seed of the faults and the operations (default: random, printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Objects each client owns.
    #[arg(long, default_value_t = 12)]
    objects: usize,
    /// Fault kinds to draw from.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "kill,stop,pause,partition,link,corrupt,fill,leader,split,out,reweight,min-size"
    )]
    faults: Vec<Fault>,
    /// How long a fault lasts before it is healed, at most, in seconds.
    #[arg(long, default_value_t = 20)]
    fault_seconds: u64,
    /// How long the healed cluster may take to be HEALTH_OK and clean, in seconds.
    #[arg(long, default_value_t = 600)]
    recovery_timeout: u64,
    /// The run fails with fewer writes (write_full, append, delete) acknowledged:
    /// a run whose writes all failed proves nothing.
    #[arg(long, default_value_t = 50)]
    min_acked: u64,
    /// The run fails with fewer faults injected.
    #[arg(long, default_value_t = 3)]
    min_faults: u64,
    /// Monitor addresses of the compose cluster.
    #[arg(
        long,
        default_value = "10.77.0.11:6789,10.77.0.12:6789,10.77.0.13:6789"
    )]
    mon: String,
    /// The compose project.
    #[arg(long, default_value = "lcpfs")]
    project: String,
    /// TLS directory of a client certificate of the cluster (default:
    /// $LCPFS_TLS_DIR; plain connections without either).
    #[arg(long)]
    tls_dir: Option<std::path::PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
enum Fault {
    Kill,
    Stop,
    Pause,
    Partition,
    Corrupt,
    Fill,
    Leader,
    Split,
    Out,
    Link,
    Reweight,
    MinSize,
}

/// The largest pg_num the `split` fault grows a pool to.
const MAX_PG_NUM: u32 = 256;

/// What the checker knows of one object: the values it may hold (`None`: absent).
type Possible = Vec<Option<Vec<u8>>>;

#[derive(Default)]
struct Counts {
    acked: BTreeMap<&'static str, u64>,
    failed: BTreeMap<&'static str, u64>,
    anomalies: Vec<String>,
}

/// One client's objects and what it did to them.
struct Client {
    objects: ObjectClient,
    names: Vec<(String, String)>,
    history: BTreeMap<String, Possible>,
    rng: StdRng,
    /// Every client's operations, for reads of the objects of others.
    timelines: Timelines,
    /// Every client's objects.
    everyone: Arc<Vec<(String, String)>>,
}

/// Per object (`pool/name`), every operation its owner ran on it, in order.
type Timelines = Arc<std::sync::Mutex<BTreeMap<String, Vec<Step>>>>;

/// One operation on an object: when it began, when it ended (`None`: it runs),
/// and the values the object may hold after it (while it runs: before or after).
struct Step {
    kind: &'static str,
    began: Instant,
    ended: Option<Instant>,
    after: Possible,
}

/// What a client means to do to one of its objects.
enum Planned {
    Read,
    WriteFull(Vec<u8>),
    Append(Vec<u8>),
    Delete,
}

/// `values` with each of `more` not among them added.
fn union(mut values: Possible, more: &Possible) -> Possible {
    for value in more {
        if !values.contains(value) {
            values.push(value.clone());
        }
    }
    values
}

/// The values a read that ran from `began` to `ended` may return, linearizably:
/// what the object held before the read began, and what it held after each
/// operation that ran (at least partly) while the read did.
fn readable(steps: &[Step], began: Instant, ended: Instant) -> Possible {
    let before = steps
        .iter()
        .rev()
        .find(|step| step.ended.is_some_and(|end| end < began))
        .map_or_else(|| vec![None], |step| step.after.clone());
    steps
        .iter()
        .filter(|step| step.began < ended && step.ended.is_none_or(|end| end >= began))
        .fold(before, |allowed, step| union(allowed, &step.after))
}

/// The operations of `steps` that ran while a read from `began` to `ended` did
/// (and the one before), for an anomaly's report.
fn around(steps: &[Step], began: Instant, ended: Instant, origin: Instant) -> String {
    let at = |instant: Instant| instant.saturating_duration_since(origin).as_secs_f64();
    let first = steps
        .iter()
        .rposition(|step| step.ended.is_some_and(|end| end < began))
        .unwrap_or(0);
    steps[first..]
        .iter()
        .filter(|step| step.began < ended)
        .map(|step| {
            let end = step
                .ended
                .map_or("running".to_owned(), |end| format!("{:.3}", at(end)));
            let values: Vec<String> = step.after.iter().map(describe).collect();
            format!(
                "{} {:.3}-{end} s -> [{}]",
                step.kind,
                at(step.began),
                values.join(" | ")
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

impl Counts {
    fn record(&mut self, kind: &'static str, ok: bool) {
        let table = if ok {
            &mut self.acked
        } else {
            &mut self.failed
        };
        *table.entry(kind).or_default() += 1;
    }
}

impl Client {
    /// One operation: mostly on one of this client's objects, checked against
    /// its history; sometimes a read of another client's object, checked against
    /// what that client did meanwhile.
    async fn step(&mut self, step: u64, counts: &Mutex<Counts>, origin: Instant) {
        if self.rng.random_range(0..6) == 0 {
            return self.observe(counts, origin).await;
        }
        let (pool, name) = self.names[self.rng.random_range(0..self.names.len())].clone();
        let possible = self
            .history
            .entry(name.clone())
            .or_insert_with(|| vec![None])
            .clone();
        // An object whose state is uncertain is read before it changes further.
        let choice = if possible.len() > 1 {
            0
        } else {
            self.rng.random_range(0..10)
        };
        let value = |size: usize| contents(&format!("{name}-{step}"), size);
        let planned = match choice {
            0..=3 => Planned::Read,
            4..=6 => Planned::WriteFull(value(self.rng.random_range(0..48_000))),
            7..=8 => Planned::Append(value(self.rng.random_range(1..3_000))),
            _ => Planned::Delete,
        };
        let (kind, applied): (&'static str, Possible) = match &planned {
            Planned::Read => ("read", possible.clone()),
            Planned::WriteFull(data) => ("write_full", vec![Some(data.clone())]),
            Planned::Append(data) => (
                "append",
                possible
                    .iter()
                    .map(|old| {
                        let mut new = old.clone().unwrap_or_default();
                        new.extend_from_slice(data);
                        Some(new)
                    })
                    .collect(),
            ),
            Planned::Delete => ("delete", vec![None]),
        };
        let key = format!("{pool}/{name}");
        self.timelines
            .lock()
            .expect("timelines")
            .entry(key.clone())
            .or_default()
            .push(Step {
                kind,
                began: Instant::now(),
                ended: None,
                after: union(possible.clone(), &applied),
            });
        let (outcome, next): (anyhow::Result<()>, Possible) = match planned {
            Planned::Read => {
                let read = read_value(&self.objects, &pool, &name).await;
                if let Ok(read) = &read
                    && !possible.contains(read)
                {
                    counts.lock().await.anomalies.push(format!(
                        "{pool}/{name}: read {} that no acknowledged history gives ({} possible; \
                         map epoch {})",
                        describe(read),
                        possible.len(),
                        self.objects.map().epoch
                    ));
                }
                let next = match &read {
                    Ok(read) => vec![read.clone()],
                    Err(_) => possible.clone(),
                };
                (read.map(|_| ()), next)
            }
            Planned::WriteFull(data) => {
                let result = self.objects.put(&pool, name.as_bytes(), data).await;
                (result, applied)
            }
            Planned::Append(data) => {
                let result = self.objects.append(&pool, name.as_bytes(), data).await;
                (result, applied)
            }
            Planned::Delete => {
                let result = self.objects.remove(&pool, name.as_bytes()).await;
                let missing = matches!(&result, Err(error) if format!("{error:#}").contains("does not exist"));
                if missing && !possible.contains(&None) {
                    counts.lock().await.anomalies.push(format!(
                        "{pool}/{name}: delete found no object, yet it was written"
                    ));
                }
                let result = if missing { Ok(()) } else { result };
                (result, applied)
            }
        };
        let ok = outcome.is_ok();
        // Failed: it may or may not have been applied.
        let state = if ok || kind == "read" {
            next
        } else {
            union(possible, &next)
        };
        if let Some(last) = self
            .timelines
            .lock()
            .expect("timelines")
            .get_mut(&key)
            .and_then(|steps| steps.last_mut())
        {
            last.ended = Some(Instant::now());
            last.after = state.clone();
        }
        self.history.insert(name, state);
        counts.lock().await.record(kind, ok);
    }

    /// Reads another client's object and checks the value against what its owner
    /// did before and during the read.
    async fn observe(&mut self, counts: &Mutex<Counts>, origin: Instant) {
        let others: Vec<&(String, String)> = self
            .everyone
            .iter()
            .filter(|entry| !self.names.contains(entry))
            .collect();
        if others.is_empty() {
            return;
        }
        let (pool, name) = others[self.rng.random_range(0..others.len())].clone();
        let began = Instant::now();
        let read = read_value(&self.objects, &pool, &name).await;
        let ended = Instant::now();
        let anomaly = read.as_ref().ok().and_then(|read| {
            let key = format!("{pool}/{name}");
            let timelines = self.timelines.lock().expect("timelines");
            let steps = timelines.get(&key).map_or(&[][..], Vec::as_slice);
            (!readable(steps, began, ended).contains(read)).then(|| {
                format!(
                    "{key}: another client read {} at {:.3}-{:.3} s (map epoch {}), which \
                     neither the object's value before nor any operation during that read \
                     gives: {}",
                    describe(read),
                    began.saturating_duration_since(origin).as_secs_f64(),
                    ended.saturating_duration_since(origin).as_secs_f64(),
                    self.objects.map().epoch,
                    around(steps, began, ended, origin)
                )
            })
        });
        let mut counts = counts.lock().await;
        counts.anomalies.extend(anomaly);
        counts.record("read_other", read.is_ok());
    }
}

/// An object's value (`None`: absent), or the error that kept it from being read.
async fn read_value(
    objects: &ObjectClient,
    pool: &str,
    name: &str,
) -> anyhow::Result<Option<Vec<u8>>> {
    match objects.get(pool, name.as_bytes()).await {
        Ok(data) => Ok(Some(data)),
        Err(error) if format!("{error:#}").contains("does not exist") => Ok(None),
        Err(error) => Err(error),
    }
}

fn describe(value: &Option<Vec<u8>>) -> String {
    match value {
        None => "no object".to_owned(),
        Some(data) => format!(
            "{} bytes ({})",
            data.len(),
            &blake3::hash(data).to_hex()[..12]
        ),
    }
}

/// The compose cluster's containers, by service name.
struct Cluster {
    containers: BTreeMap<String, String>,
    network: String,
}

async fn docker(args: &[&str]) -> anyhow::Result<String> {
    let output = Process::new("docker")
        .args(args)
        .output()
        .await
        .context("running docker")?;
    if !output.status.success() {
        bail!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

impl Cluster {
    async fn find(project: &str) -> anyhow::Result<Cluster> {
        let label = format!("label=com.docker.compose.project={project}");
        let listing = docker(&[
            "ps",
            "-a",
            "--filter",
            &label,
            "--format",
            "{{.ID}} {{.Label \"com.docker.compose.service\"}}",
        ])
        .await?;
        let containers: BTreeMap<String, String> = listing
            .lines()
            .filter_map(|line| line.split_once(' '))
            .filter(|(_, service)| service.starts_with("mon-") || service.starts_with("osd-"))
            .map(|(id, service)| (service.to_owned(), id.to_owned()))
            .collect();
        if containers.is_empty() {
            bail!("no containers of compose project {project:?}: run `make cluster-up` first");
        }
        let network = docker(&["network", "ls", "--filter", &label, "--format", "{{.Name}}"])
            .await?
            .lines()
            .next()
            .context("the compose project has no network")?
            .to_owned();
        Ok(Cluster {
            containers,
            network,
        })
    }

    fn id(&self, service: &str) -> &str {
        &self.containers[service]
    }

    fn osds(&self) -> Vec<String> {
        self.containers
            .keys()
            .filter(|name| name.starts_with("osd-"))
            .cloned()
            .collect()
    }

    async fn ip(&self, service: &str) -> anyhow::Result<String> {
        let format = format!(
            "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}",
            self.network
        );
        docker(&["inspect", "-f", &format, self.id(service)]).await
    }

    /// The host directory of an OSD's volume.
    async fn volume(&self, service: &str) -> anyhow::Result<PathBuf> {
        let source = docker(&[
            "inspect",
            "-f",
            "{{range .Mounts}}{{.Source}}{{end}}",
            self.id(service),
        ])
        .await?;
        Ok(PathBuf::from(source))
    }

    /// Starts, unpauses and reconnects every container.
    async fn heal_all(&self, ips: &BTreeMap<String, String>) {
        for (service, id) in &self.containers {
            let _ = docker(&["unpause", id]).await;
            if let Some(ip) = ips.get(service) {
                let _ = docker(&["network", "connect", "--ip", ip, &self.network, id]).await;
            }
            let _ = docker(&["start", id]).await;
            // Links cut inside the container's namespace (it holds no other rules).
            if let Ok(pid) = self.pid(service).await {
                let _ = iptables(&pid, &["-F"]).await;
            }
        }
    }

    /// The host PID of a running container's first process.
    async fn pid(&self, service: &str) -> anyhow::Result<String> {
        let pid = docker(&["inspect", "-f", "{{.State.Pid}}", self.id(service)]).await?;
        if pid == "0" {
            bail!("{service} is not running");
        }
        Ok(pid)
    }
}

/// Overwrites 4 KiB at a random place holding data in the largest file under
/// `dir` (an OSD's disk image). Returns the file and offset.
fn corrupt(dir: &Path, rng: &mut StdRng) -> anyhow::Result<(PathBuf, u64)> {
    use std::os::unix::fs::FileExt;
    let mut largest: Option<(u64, PathBuf)> = None;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                pending.push(entry?.path());
            }
        } else {
            let size = path.metadata()?.len();
            if largest.as_ref().is_none_or(|(best, _)| size > *best) {
                largest = Some((size, path));
            }
        }
    }
    let (size, path) = largest.context("the OSD volume holds no file")?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)?;
    let mut chunk = vec![0u8; 1 << 20];
    let mut used = Vec::new();
    let mut offset = 0;
    while offset < size {
        let read = file.read_at(&mut chunk, offset)?;
        if read == 0 {
            break;
        }
        if chunk[..read].iter().any(|&byte| byte != 0) {
            used.push(offset);
        }
        offset += read as u64;
    }
    // Past the labels at the start: data, not what makes the disk recognisable.
    let candidates: Vec<u64> = used.into_iter().filter(|&at| at >= 4 << 20).collect();
    if candidates.is_empty() {
        bail!("no data on {} yet", path.display());
    }
    let at = candidates[rng.random_range(0..candidates.len())] + rng.random_range(0..256u64) * 4096;
    let garbage: Vec<u8> = (0..4096).map(|_| rng.random()).collect();
    file.write_all_at(&garbage, at)?;
    file.sync_all()?;
    Ok((path, at))
}

async fn status(mon: &MonClient) -> Option<ClusterStatus> {
    mon.query(&Query::Status).await.ok()
}

/// Waits until the cluster is HEALTH_OK with every PG active+clean.
async fn settled(mon: &MonClient, timeout: Duration) -> anyhow::Result<Duration> {
    let began = Instant::now();
    loop {
        if let Some(status) = status(mon).await {
            // Clean as of the current map: a report from before the heal (the
            // monitors keep them a while) says nothing of after it.
            let clean = status.pg_states.get("active+clean").copied() == Some(status.pgs)
                && status.pg_states_since >= status.epoch;
            if clean && status.health == HealthStatus::Ok {
                return Ok(began.elapsed());
            }
            if began.elapsed() > timeout {
                bail!(
                    "not HEALTH_OK and clean after {timeout:?}: health {:?} {:?}, PGs {:?}",
                    status.health,
                    status.checks.keys().collect::<Vec<_>>(),
                    status.pg_states
                );
            }
        } else if began.elapsed() > timeout {
            bail!("no monitor answered within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Waits until the pools the workload uses exist (the compose setup jobs create
/// them once the OSDs are up).
async fn pools_exist(mon: &MonClient, timeout: Duration) -> anyhow::Result<()> {
    let began = Instant::now();
    loop {
        if let Ok(map) = mon.map(true).await
            && ["data", "ec"]
                .iter()
                .all(|pool| map.pool_by_name(pool).is_some())
        {
            return Ok(());
        }
        if began.elapsed() > timeout {
            bail!(
                "the pools data and ec do not exist after {timeout:?}: is the compose cluster up?"
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(rand::random);
    println!(
        "lcpfs-chaos: seed {seed}, {} s of faults from {:?}",
        args.duration, args.faults
    );
    let mon = MonClient::from_flags(Some(&args.mon), args.tls_dir.as_deref())?
        .with_timeout(Duration::from_secs(30));
    let cluster = Cluster::find(&args.project).await?;
    let mut ips = BTreeMap::new();
    for service in cluster.containers.keys() {
        ips.insert(service.clone(), cluster.ip(service).await?);
    }
    pools_exist(&mon, Duration::from_secs(args.recovery_timeout)).await?;
    settled(&mon, Duration::from_secs(args.recovery_timeout)).await?;

    let counts = Arc::new(Mutex::new(Counts::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let steps = Arc::new(AtomicU64::new(0));
    let timelines = Timelines::default();
    let owned = |c: usize| -> Vec<(String, String)> {
        (0..args.objects)
            .map(|i| {
                let pool = if i % 2 == 0 { "data" } else { "ec" };
                (pool.to_owned(), format!("chaos-{seed}-c{c}-{i}"))
            })
            .collect()
    };
    let everyone = Arc::new((0..args.clients).flat_map(owned).collect::<Vec<_>>());
    let origin = Instant::now();
    let mut workers = Vec::new();
    for c in 0..args.clients {
        let objects = ObjectClient::connect(mon.clone())
            .await?
            .with_timeout(Duration::from_secs(30));
        let mut client = Client {
            objects,
            names: owned(c),
            history: BTreeMap::new(),
            rng: StdRng::seed_from_u64(seed ^ (c as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            timelines: timelines.clone(),
            everyone: everyone.clone(),
        };
        let (counts, stop, steps) = (counts.clone(), stop.clone(), steps.clone());
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let step = steps.fetch_add(1, Ordering::SeqCst);
                client.step(step, &counts, origin).await;
            }
            client
        }));
    }

    let mut rng = StdRng::seed_from_u64(seed);
    let mut injected: BTreeMap<String, u64> = BTreeMap::new();
    let began = Instant::now();
    while began.elapsed() < Duration::from_secs(args.duration) {
        let fault = args.faults[rng.random_range(0..args.faults.len())];
        let hold = Duration::from_secs(rng.random_range(3..=args.fault_seconds.max(3)));
        let services: Vec<String> = cluster.containers.keys().cloned().collect();
        let target = services[rng.random_range(0..services.len())].clone();
        let done = inject(&cluster, &mon, fault, &target, hold, &ips, &mut rng).await;
        match done {
            Ok(what) => {
                println!("[{:>4} s] {what}", began.elapsed().as_secs());
                *injected
                    .entry(format!("{fault:?}").to_lowercase())
                    .or_default() += 1;
            }
            Err(error) => println!(
                "[{:>4} s] {fault:?} not injected: {error:#}",
                began.elapsed().as_secs()
            ),
        }
        // Let the cluster notice the heal before the next fault.
        tokio::time::sleep(Duration::from_secs(rng.random_range(2..8))).await;
    }
    cluster.heal_all(&ips).await;
    // Faults may have failed an OSD often enough for the monitors to hold it
    // down (flap damping); the operator lets every OSD back once the incident
    // is over.
    if let Err(error) = unhold_all(&mon).await {
        println!("could not let held OSDs back: {error:#}");
    }
    stop.store(true, Ordering::SeqCst);
    let mut clients = Vec::new();
    for worker in workers {
        clients.push(worker.await?);
    }
    println!(
        "faults over after {} s; waiting for HEALTH_OK and every PG active+clean",
        began.elapsed().as_secs()
    );
    let recovery = settled(&mon, Duration::from_secs(args.recovery_timeout)).await;

    // Every object holds a value its acknowledged history allows.
    let mut verified = 0;
    for client in &mut clients {
        for (pool, name) in client.names.clone() {
            let possible = client
                .history
                .get(&name)
                .cloned()
                .unwrap_or_else(|| vec![None]);
            let read = match read_value(&client.objects, &pool, &name).await {
                Ok(read) => read,
                Err(error) => {
                    counts.lock().await.anomalies.push(format!(
                        "{pool}/{name}: unreadable after healing: {error:#}"
                    ));
                    continue;
                }
            };
            if !possible.contains(&read) {
                counts.lock().await.anomalies.push(format!(
                    "{pool}/{name}: holds {} after healing, which no acknowledged history gives",
                    describe(&read)
                ));
            }
            verified += 1;
        }
    }

    // Every copy and shard of every object compared directly, by a deep scrub
    // before any repair: copies that disagree are an anomaly (unless bytes were
    // corrupted on purpose, which only repair may fix). Then a deep scrub with
    // repair, and one that must find every copy agreeing.
    let objects = &clients[0].objects;
    let map = objects.map();
    let corrupted = injected.contains_key("corrupt");
    let mut divergent = 0;
    let mut repaired = 0;
    let mut inconsistent = Vec::new();
    for pool in map.pools.values() {
        for seed in 0..pool.pg_num {
            let pg = PgId::new(pool.id, seed);
            match objects.scrub(pg, true, false).await {
                Ok(report) => {
                    divergent += report.inconsistencies.len();
                    if !corrupted && !report.inconsistencies.is_empty() {
                        inconsistent.push(format!(
                            "PG {pg}: copies disagree before any repair: {:?}",
                            report.inconsistencies
                        ));
                    }
                }
                Err(error) => inconsistent.push(format!("PG {pg}: deep scrub failed: {error:#}")),
            }
            match objects.scrub(pg, true, true).await {
                Ok(report) => {
                    repaired += report
                        .inconsistencies
                        .iter()
                        .filter(|bad| bad.repaired)
                        .count()
                }
                Err(error) => inconsistent.push(format!("PG {pg}: repair failed: {error:#}")),
            }
            match objects.scrub(pg, true, false).await {
                Ok(report) if report.inconsistencies.is_empty() => {}
                Ok(report) => inconsistent.push(format!("PG {pg}: {:?}", report.inconsistencies)),
                Err(error) => inconsistent.push(format!("PG {pg}: deep scrub failed: {error:#}")),
            }
        }
    }

    let counts = counts.lock().await;
    // A run that did too little passes vacuously: it fails instead.
    let mut too_little = Vec::new();
    let writes: u64 = ["write_full", "append", "delete"]
        .iter()
        .filter_map(|kind| counts.acked.get(*kind))
        .sum();
    if writes < args.min_acked {
        too_little.push(format!(
            "only {writes} writes acknowledged (at least {} wanted)",
            args.min_acked
        ));
    }
    let faults: u64 = injected.values().sum();
    if faults < args.min_faults {
        too_little.push(format!(
            "only {faults} faults injected (at least {} wanted)",
            args.min_faults
        ));
    }
    let owned = args.clients * args.objects;
    if verified < owned {
        too_little.push(format!("only {verified} of {owned} objects verified"));
    }
    println!("\nlcpfs-chaos report (seed {seed})");
    println!("  operations acknowledged: {:?}", counts.acked);
    println!(
        "  operations failed (allowed during faults): {:?}",
        counts.failed
    );
    println!("  faults injected: {injected:?}");
    match &recovery {
        Ok(took) => println!(
            "  time to HEALTH_OK and active+clean after healing: {} s",
            took.as_secs()
        ),
        Err(error) => println!("  recovery: {error:#}"),
    }
    println!("  objects verified after healing: {verified}");
    println!("  copies found disagreeing before any repair: {divergent}");
    println!("  copies repaired by the final deep scrub: {repaired}");
    println!(
        "  anomalies: {}",
        counts.anomalies.len() + inconsistent.len()
    );
    for anomaly in counts.anomalies.iter().chain(&inconsistent) {
        println!("    {anomaly}");
    }
    for shortfall in &too_little {
        println!("  too little done: {shortfall}");
    }
    if recovery.is_err()
        || !counts.anomalies.is_empty()
        || !inconsistent.is_empty()
        || !too_little.is_empty()
    {
        bail!("chaos found problems; replay with --seed {seed}");
    }
    println!("passed; replay with --seed {seed}");
    Ok(())
}

/// Lets every OSD the monitors hold down for flapping boot again, retrying while
/// the monitors cannot take the change.
async fn unhold_all(mon: &MonClient) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let unhold = async {
            let ids = mon.map(true).await?.osds.keys().copied().collect();
            mon.run(&MonCommand::OsdUnhold { ids }).await
        };
        match unhold.await {
            Ok(_) => return Ok(()),
            Err(error) if Instant::now() > deadline => return Err(error),
            Err(_) => tokio::time::sleep(Duration::from_secs(2)).await,
        }
    }
}

/// The full ratio the compose cluster runs with, set again after a `fill` fault.
const FULL_RATIO: f64 = 0.95;

/// Runs `command` on the monitors, retrying for up to two minutes while they
/// cannot take it (their leader may be under a fault of its own).
async fn run_retrying(mon: &MonClient, command: &MonCommand) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match mon.run(command).await {
            Ok(_) => return Ok(()),
            Err(error) if Instant::now() >= deadline => {
                return Err(error.context(format!("{command:?}")));
            }
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

/// Runs `iptables ARGS` in the network namespace of the process `pid` (a
/// container's), from the host.
async fn iptables(pid: &str, args: &[&str]) -> anyhow::Result<()> {
    let output = Process::new("nsenter")
        .args(["-t", pid, "-n", "iptables"])
        .args(args)
        .output()
        .await
        .context("running nsenter")?;
    if !output.status.success() {
        bail!(
            "iptables {} in the namespace of {pid}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Injects one fault, holds it, heals it; says what it did.
async fn inject(
    cluster: &Cluster,
    mon: &MonClient,
    fault: Fault,
    target: &str,
    hold: Duration,
    ips: &BTreeMap<String, String>,
    rng: &mut StdRng,
) -> anyhow::Result<String> {
    let id = cluster.id(target).to_owned();
    let held = hold.as_secs();
    match fault {
        Fault::Kill => {
            docker(&["kill", "-s", "KILL", &id]).await?;
            tokio::time::sleep(hold).await;
            docker(&["start", &id]).await?;
            Ok(format!("kill -9 {target}, started again after {held} s"))
        }
        Fault::Stop => {
            docker(&["stop", "-t", "20", &id]).await?;
            tokio::time::sleep(hold).await;
            docker(&["start", &id]).await?;
            Ok(format!("stopped {target} for {held} s"))
        }
        Fault::Pause => {
            docker(&["pause", &id]).await?;
            tokio::time::sleep(hold).await;
            docker(&["unpause", &id]).await?;
            Ok(format!("paused {target} for {held} s"))
        }
        Fault::Partition => {
            let mut targets = vec![target.to_owned()];
            if rng.random_bool(0.3) {
                let others: Vec<&String> = cluster
                    .containers
                    .keys()
                    .filter(|name| *name != target)
                    .collect();
                targets.push(others[rng.random_range(0..others.len())].clone());
            }
            for service in &targets {
                docker(&[
                    "network",
                    "disconnect",
                    &cluster.network,
                    cluster.id(service),
                ])
                .await?;
            }
            tokio::time::sleep(hold).await;
            for service in &targets {
                docker(&[
                    "network",
                    "connect",
                    "--ip",
                    &ips[service],
                    &cluster.network,
                    cluster.id(service),
                ])
                .await?;
            }
            Ok(format!(
                "partitioned {} for {held} s",
                targets.join(" and ")
            ))
        }
        Fault::Link => {
            // One link cut, not a whole node: the target stops hearing one
            // peer (one way), or the two stop hearing each other, while both
            // still reach everyone else.
            let others: Vec<&String> = cluster
                .containers
                .keys()
                .filter(|name| *name != target)
                .collect();
            let peer = others[rng.random_range(0..others.len())].clone();
            let both_ways = rng.random_bool(0.5);
            let pid = cluster.pid(target).await?;
            let peer_ip = ips[&peer].as_str();
            let mut rules = vec![["INPUT", "-s", peer_ip, "-j", "DROP"]];
            if both_ways {
                rules.push(["OUTPUT", "-d", peer_ip, "-j", "DROP"]);
            }
            for rule in &rules {
                iptables(&pid, &[&["-I"][..], &rule[..]].concat()).await?;
            }
            tokio::time::sleep(hold).await;
            for rule in &rules {
                iptables(&pid, &[&["-D"][..], &rule[..]].concat()).await?;
            }
            let how = if both_ways {
                format!("cut the link between {target} and {peer}")
            } else {
                format!("{target} stopped hearing {peer} (one way)")
            };
            Ok(format!("{how} for {held} s"))
        }
        Fault::Reweight => {
            let map = mon.map(true).await?;
            let ins: Vec<u32> = map
                .osds
                .values()
                .filter(|osd| osd.in_)
                .map(|osd| osd.id)
                .collect();
            let osd = ins[rng.random_range(0..ins.len())];
            let reweight = |reweight| MonCommand::OsdReweight { id: osd, reweight };
            mon.run(&reweight(0.5)).await?;
            tokio::time::sleep(hold).await;
            run_retrying(mon, &reweight(1.0)).await?;
            Ok(format!("osd.{osd} reweighted to 0.5 for {held} s, then 1"))
        }
        Fault::MinSize => {
            let min_size = |value: &str| MonCommand::PoolSet {
                name: "data".to_owned(),
                key: "min_size".to_owned(),
                value: value.to_owned(),
            };
            mon.run(&min_size("1")).await?;
            tokio::time::sleep(hold).await;
            run_retrying(mon, &min_size("2")).await?;
            Ok(format!("pool data at min_size 1 for {held} s, then 2"))
        }
        Fault::Corrupt => {
            let osds = cluster.osds();
            let osd = osds[rng.random_range(0..osds.len())].clone();
            let id = cluster.id(&osd).to_owned();
            let volume = cluster.volume(&osd).await?;
            docker(&["stop", "-t", "20", &id]).await?;
            let result = corrupt(&volume, rng);
            docker(&["start", &id]).await?;
            let (file, at) = result?;
            Ok(format!(
                "corrupted 4 KiB of {osd}'s disk ({} at {at})",
                file.display()
            ))
        }
        Fault::Fill => {
            let usage: Vec<OsdUsage> = mon.query(&Query::OsdDf).await?;
            let used = |osd: &OsdUsage| osd.used_bytes as f64 / osd.size_bytes as f64;
            let fullest = usage
                .iter()
                .filter(|osd| osd.up && osd.size_bytes > 0)
                .max_by(|a, b| used(a).total_cmp(&used(b)))
                .context("no OSD reports its disk space")?;
            // The full ratio just below its use: full, as far as the cluster knows.
            let ratio = used(fullest) * 0.99;
            mon.run(&MonCommand::OsdSetFullRatio { ratio }).await?;
            tokio::time::sleep(hold).await;
            run_retrying(mon, &MonCommand::OsdSetFullRatio { ratio: FULL_RATIO }).await?;
            Ok(format!(
                "filled osd.{} ({:.3}% used): full ratio {ratio:.6} for {held} s",
                fullest.id,
                used(fullest) * 100.0
            ))
        }
        Fault::Split => {
            let map = mon.map(true).await?;
            let name = ["data", "ec"][rng.random_range(0..2)];
            let pool = map
                .pool_by_name(name)
                .with_context(|| format!("no pool {name}"))?;
            let pg_num = pool.pg_num * 2;
            if pg_num > MAX_PG_NUM {
                bail!("pool {name} has {} PGs already", pool.pg_num);
            }
            mon.run(&MonCommand::PoolSet {
                name: name.into(),
                key: "pg_num".into(),
                value: pg_num.to_string(),
            })
            .await?;
            tokio::time::sleep(hold).await;
            Ok(format!(
                "pool {name}: pg_num {} -> {pg_num}, {held} s of splits under load",
                pool.pg_num
            ))
        }
        Fault::Out => {
            let map = mon.map(true).await?;
            let ins: Vec<u32> = map
                .osds
                .values()
                .filter(|osd| osd.in_)
                .map(|osd| osd.id)
                .collect();
            let osd = ins[rng.random_range(0..ins.len())];
            mon.run(&MonCommand::OsdOut { ids: vec![osd] }).await?;
            tokio::time::sleep(hold).await;
            run_retrying(mon, &MonCommand::OsdIn { ids: vec![osd] }).await?;
            Ok(format!("osd.{osd} out for {held} s, then in"))
        }
        Fault::Leader => {
            let leader = status(mon)
                .await
                .and_then(|status| status.leader)
                .context("no monitor leader known")?;
            let service = format!("mon-{leader}");
            let id = cluster
                .containers
                .get(&service)
                .context("the leader is not a compose monitor")?;
            docker(&["kill", "-s", "KILL", id]).await?;
            tokio::time::sleep(hold).await;
            docker(&["start", id]).await?;
            Ok(format!(
                "kill -9 the monitor leader {service}, started again after {held} s"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_may_return_the_value_before_it_or_one_written_while_it_ran() {
        let origin = Instant::now();
        let at = |ms| origin + Duration::from_millis(ms);
        let value = |byte: u8| Some(vec![byte]);
        let write = |began, ended, after| Step {
            kind: "write_full",
            began,
            ended,
            after,
        };
        let steps = [
            write(at(0), Some(at(10)), vec![value(1)]),
            write(at(20), Some(at(30)), vec![value(2)]),
            write(at(40), None, vec![value(2), value(3)]),
        ];
        assert_eq!(readable(&[], at(0), at(1)), vec![None]);
        assert_eq!(readable(&steps, at(12), at(15)), vec![value(1)]);
        // The second write ran while the read did: either value.
        assert_eq!(readable(&steps, at(25), at(35)), vec![value(1), value(2)]);
        // It had ended before the read began: the older value is stale.
        assert_eq!(readable(&steps, at(31), at(35)), vec![value(2)]);
        assert_eq!(readable(&steps, at(45), at(50)), vec![value(2), value(3)]);
        assert!(around(&steps, at(31), at(35), origin).starts_with("write_full 0.020-0.030 s"));
    }
}
