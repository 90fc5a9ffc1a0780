//! The faults `lcpfs-chaos` injects into the compose cluster, and how each is
//! healed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use lcpfs_client::mon_client::MonClient;
use lcpfs_core::monitor::{Command as MonCommand, OsdUsage, Query};
use rand::Rng;
use rand::rngs::StdRng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command as Process;

use crate::status;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub(crate) enum Fault {
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
    Double,
    Reweight,
    MinSize,
    Disk,
    Slow,
    Flush,
    Power,
    Join,
    DownOut,
    Crash,
}

/// How long the `down-out` fault keeps an OSD stopped: past the 30 s down-out
/// interval the chaos cluster's monitors run with (LCPFS_DOWN_OUT_INTERVAL).
const DOWN_OUT_HOLD: Duration = Duration::from_secs(45);

/// How long the faults that need a moment to happen (`flush`, `power`, `crash`)
/// wait for it, at least.
const HAPPEN_WITHIN: Duration = Duration::from_secs(30);

/// The compose service of the spare OSD that the `join` fault adds.
const SPARE_OSD: &str = "osd-6";

/// Every failpoint a fault may set, turned off when the run heals everything.
const FAILPOINTS: [&str; 6] = [
    "disk-read",
    "disk-write",
    "disk-sync",
    "crash-ec-prepared",
    "crash-ec-shard-commit",
    "crash-replicated-applied",
];

/// The port of every compose OSD's metrics endpoint, where a chaos build takes
/// its failpoints.
const METRICS_PORT: u16 = 9284;

/// The largest pg_num the `split` fault grows a pool to.
pub(crate) const MAX_PG_NUM: u32 = 256;

/// The compose cluster's containers, by service name.
pub(crate) struct Cluster {
    pub(crate) containers: BTreeMap<String, String>,
    /// Each container's address on the cluster network, read at the start (a
    /// container disconnected by a fault is put back at the same one).
    pub(crate) ips: BTreeMap<String, String>,
    pub(crate) network: String,
    project: String,
    /// The command that runs compose on the cluster's file (split at spaces).
    compose: String,
}

/// Runs `program ARGS` on the host; its standard output, trimmed.
async fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    run_with(program, args, &[]).await
}

/// Runs `program ARGS` on the host with the variables `env` set; its standard
/// output, trimmed.
async fn run_with(program: &str, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<String> {
    let output = Process::new(program)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .await
        .with_context(|| format!("running {program}"))?;
    if !output.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Runs `docker ARGS`.
pub(crate) async fn docker(args: &[&str]) -> anyhow::Result<String> {
    run("docker", args).await
}

impl Cluster {
    pub(crate) async fn find(project: &str, compose: &str) -> anyhow::Result<Cluster> {
        let mut cluster = Cluster {
            containers: BTreeMap::new(),
            ips: BTreeMap::new(),
            network: String::new(),
            project: project.to_owned(),
            compose: compose.to_owned(),
        };
        cluster.refresh().await?;
        Ok(cluster)
    }

    /// Reads the project's containers, network and addresses again (after a
    /// container was added).
    async fn refresh(&mut self) -> anyhow::Result<()> {
        let project = self.project.as_str();
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
        self.containers = containers;
        self.network = network;
        for service in self.containers.keys().cloned().collect::<Vec<_>>() {
            if !self.ips.contains_key(&service) {
                let ip = self.ip(&service).await?;
                self.ips.insert(service, ip);
            }
        }
        Ok(())
    }

    pub(crate) fn id(&self, service: &str) -> &str {
        &self.containers[service]
    }

    pub(crate) fn osds(&self) -> Vec<String> {
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

    /// Starts, unpauses and reconnects every container.
    pub(crate) async fn heal_all(&self) {
        for (service, id) in &self.containers {
            let _ = docker(&["unpause", id]).await;
            if service.starts_with("osd-") {
                for failpoint in FAILPOINTS {
                    let _ = self.failpoint(service, failpoint, "off").await;
                }
            }
            if let Some(ip) = self.ips.get(service) {
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
    pub(crate) async fn pid(&self, service: &str) -> anyhow::Result<String> {
        let pid = docker(&["inspect", "-f", "{{.State.Pid}}", self.id(service)]).await?;
        if pid == "0" {
            bail!("{service} is not running");
        }
        Ok(pid)
    }

    /// Sets a failpoint of the OSD `service` (a chaos build's), through its
    /// metrics endpoint: `PUT /failpoints/NAME` with the actions as the body.
    pub(crate) async fn failpoint(
        &self,
        service: &str,
        name: &str,
        actions: &str,
    ) -> anyhow::Result<()> {
        let ip = self
            .ips
            .get(service)
            .context("no address for the service")?;
        let request = format!(
            "PUT /failpoints/{name} HTTP/1.1\r\nHost: {ip}\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{actions}",
            actions.len()
        );
        let exchange = async {
            let mut stream = tokio::net::TcpStream::connect((ip.as_str(), METRICS_PORT)).await?;
            stream.write_all(request.as_bytes()).await?;
            let mut reply = String::new();
            stream.read_to_string(&mut reply).await?;
            anyhow::Ok(reply)
        };
        let reply = tokio::time::timeout(Duration::from_secs(5), exchange)
            .await
            .context("no answer")??;
        let status = reply.lines().next().unwrap_or_default();
        if status.split(' ').nth(1) == Some("404") {
            bail!("{service} has no failpoints: is it the chaos build (make chaos-image)?");
        }
        if status.split(' ').nth(1) != Some("200") {
            bail!("{service} refused failpoint {name}={actions}: {reply}");
        }
        Ok(())
    }

    /// When the container last started, as docker reports it.
    async fn started_at(&self, service: &str) -> anyhow::Result<String> {
        docker(&["inspect", "-f", "{{.State.StartedAt}}", self.id(service)]).await
    }

    /// Whether the spare OSD has joined (it joins once).
    pub(crate) fn spare_joined(&self) -> bool {
        self.containers.contains_key(SPARE_OSD)
    }

    /// Starts the spare OSD of the compose file and takes it into this cluster.
    async fn join_spare(&mut self) -> anyhow::Result<()> {
        if self.spare_joined() {
            bail!("{SPARE_OSD} has joined already");
        }
        let mut words = self.compose.split_whitespace();
        let program = words.next().context("no compose command")?;
        let mut args: Vec<&str> = words.collect();
        args.extend(["up", "-d", "--no-deps", SPARE_OSD]);
        run_with(program, &args, &[("COMPOSE_PROFILES", "spare")]).await?;
        self.refresh().await
    }
}

/// An OSD container, drawn at random.
fn random_osd(cluster: &Cluster, rng: &mut StdRng) -> String {
    let osds = cluster.osds();
    osds[rng.random_range(0..osds.len())].clone()
}

/// An OSD that is in, drawn at random.
async fn random_in_osd(mon: &MonClient, rng: &mut StdRng) -> anyhow::Result<u32> {
    let map = mon.map(true).await?;
    let ins: Vec<u32> = map
        .osds
        .values()
        .filter(|osd| osd.in_)
        .map(|osd| osd.id)
        .collect();
    anyhow::ensure!(!ins.is_empty(), "no OSD is in");
    Ok(ins[rng.random_range(0..ins.len())])
}

/// The full ratio the compose cluster runs with, set again after a `fill` fault.
pub(crate) const FULL_RATIO: f64 = 0.95;

/// Runs `command` on the monitors, retrying for up to two minutes while they
/// cannot take it (their leader may be under a fault of its own).
pub(crate) async fn run_retrying(mon: &MonClient, command: &MonCommand) -> anyhow::Result<()> {
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
pub(crate) async fn iptables(pid: &str, args: &[&str]) -> anyhow::Result<()> {
    let command = [&["-t", pid, "-n", "iptables"][..], args].concat();
    run("nsenter", &command).await.map(|_| ())
}

/// Injects one fault, holds it, heals it; says what it did.
pub(crate) async fn inject(
    cluster: &mut Cluster,
    mon: &MonClient,
    fault: Fault,
    target: &str,
    hold: Duration,
    rng: &mut StdRng,
) -> anyhow::Result<String> {
    let ips = cluster.ips.clone();
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
        Fault::Double => {
            // Two OSDs at once: PGs on both keep fewer than min_size copies up
            // and stop taking writes until one is back; nothing acknowledged
            // may be lost.
            let osds = cluster.osds();
            let first = osds[rng.random_range(0..osds.len())].clone();
            let others: Vec<&String> = osds.iter().filter(|osd| **osd != first).collect();
            let second = others[rng.random_range(0..others.len())].clone();
            for service in [&first, &second] {
                docker(&["pause", cluster.id(service)]).await?;
            }
            tokio::time::sleep(hold).await;
            for service in [&first, &second] {
                docker(&["unpause", cluster.id(service)]).await?;
            }
            Ok(format!("paused {first} and {second} together for {held} s"))
        }
        Fault::Reweight => {
            let osd = random_in_osd(mon, rng).await?;
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
            // Bit rot: a tenth of the OSD's disk writes store a flipped byte while
            // reporting success; reads and scrubs must find every one by checksum.
            let osd = random_osd(cluster, rng);
            cluster
                .failpoint(&osd, "disk-write", "10%return(corrupt)")
                .await?;
            tokio::time::sleep(hold).await;
            cluster.failpoint(&osd, "disk-write", "off").await?;
            Ok(format!(
                "bit rot in 10% of {osd}'s disk writes for {held} s"
            ))
        }
        Fault::Disk => {
            let osd = random_osd(cluster, rng);
            let (failpoint, actions, what) = [
                ("disk-read", "20%return", "a fifth of its disk reads fail"),
                (
                    "disk-read",
                    "20%return(corrupt)",
                    "a fifth of its disk reads return a flipped byte",
                ),
                ("disk-write", "5%return", "one disk write in twenty fails"),
            ][rng.random_range(0..3)];
            cluster.failpoint(&osd, failpoint, actions).await?;
            tokio::time::sleep(hold).await;
            cluster.failpoint(&osd, failpoint, "off").await?;
            Ok(format!("{osd}: {what}, for {held} s"))
        }
        Fault::Slow => {
            let osd = random_osd(cluster, rng);
            cluster.failpoint(&osd, "disk-sync", "sleep(1500)").await?;
            tokio::time::sleep(hold).await;
            cluster.failpoint(&osd, "disk-sync", "off").await?;
            Ok(format!(
                "{osd}: every disk flush stalled 1.5 s, for {held} s"
            ))
        }
        Fault::Flush | Fault::Power | Fault::Crash => {
            // The next flush of the OSD's disk fails (its store suspends and the
            // OSD stops), or cuts the power (unflushed writes dropped, the process
            // gone), or the OSD crashes at the worst moment of a write (between
            // the two phases of an erasure-coded write, or with a replicated write
            // applied on the primary alone); docker restarts it. Counted only when
            // it happened.
            let osd = random_osd(cluster, rng);
            let (failpoint, actions, what) = match fault {
                Fault::Flush => ("disk-sync", "1*return", "a disk flush failed"),
                Fault::Power => ("disk-sync", "return(power-loss)", "power cut"),
                _ => [
                    (
                        "crash-ec-prepared",
                        "return",
                        "crashed with an erasure-coded write prepared",
                    ),
                    (
                        "crash-ec-shard-commit",
                        "return",
                        "crashed as a shard committed",
                    ),
                    (
                        "crash-replicated-applied",
                        "return",
                        "crashed with a write on the primary alone",
                    ),
                ][rng.random_range(0..3)],
            };
            let started = cluster.started_at(&osd).await?;
            cluster.failpoint(&osd, failpoint, actions).await?;
            // A crash point needs a write of the right kind to pass by.
            let hold = hold.max(HAPPEN_WITHIN);
            let held = hold.as_secs();
            let deadline = Instant::now() + hold;
            while Instant::now() < deadline && cluster.started_at(&osd).await? == started {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            if cluster.started_at(&osd).await? == started {
                cluster.failpoint(&osd, failpoint, "off").await?;
                bail!("{osd} did not reach {failpoint} within {held} s");
            }
            docker(&["start", cluster.id(&osd)]).await?;
            Ok(format!("{osd}: {what}; the OSD stopped and restarted"))
        }
        Fault::DownOut => {
            // Down long enough for the monitors to mark it out: its PGs move to
            // other OSDs while clients write, and back when it returns.
            let osd = random_osd(cluster, rng);
            let ins = || async {
                anyhow::Ok(mon.map(true).await?.osds.values().filter(|o| o.in_).count())
            };
            let before = ins().await?;
            docker(&["stop", "-t", "20", cluster.id(&osd)]).await?;
            tokio::time::sleep(DOWN_OUT_HOLD).await;
            let after = ins().await;
            docker(&["start", cluster.id(&osd)]).await?;
            if after? >= before {
                bail!(
                    "{osd} was not marked out within {} s",
                    DOWN_OUT_HOLD.as_secs()
                );
            }
            Ok(format!(
                "stopped {osd} for {} s, past the down-out interval",
                DOWN_OUT_HOLD.as_secs()
            ))
        }
        Fault::Join => {
            cluster.join_spare().await?;
            tokio::time::sleep(hold).await;
            Ok(format!(
                "{SPARE_OSD} joined on a new host; {held} s of data moving under load"
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
            let osd = random_in_osd(mon, rng).await?;
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
