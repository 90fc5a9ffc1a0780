//! The faults `lcpfs-chaos` injects into the compose cluster, and how each is
//! healed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use lcpfs_client::mon_client::MonClient;
use lcpfs_core::monitor::{Command as MonCommand, OsdUsage, Query};
use rand::Rng;
use rand::rngs::StdRng;
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
}

/// The largest pg_num the `split` fault grows a pool to.
pub(crate) const MAX_PG_NUM: u32 = 256;

/// The compose cluster's containers, by service name.
pub(crate) struct Cluster {
    pub(crate) containers: BTreeMap<String, String>,
    pub(crate) network: String,
}

/// Runs `program ARGS` on the host; its standard output, trimmed.
async fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = Process::new(program)
        .args(args)
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
    pub(crate) async fn find(project: &str) -> anyhow::Result<Cluster> {
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

    pub(crate) async fn ip(&self, service: &str) -> anyhow::Result<String> {
        let format = format!(
            "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}",
            self.network
        );
        docker(&["inspect", "-f", &format, self.id(service)]).await
    }

    /// The host directory of an OSD's volume.
    pub(crate) async fn volume(&self, service: &str) -> anyhow::Result<PathBuf> {
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
    pub(crate) async fn heal_all(&self, ips: &BTreeMap<String, String>) {
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
    pub(crate) async fn pid(&self, service: &str) -> anyhow::Result<String> {
        let pid = docker(&["inspect", "-f", "{{.State.Pid}}", self.id(service)]).await?;
        if pid == "0" {
            bail!("{service} is not running");
        }
        Ok(pid)
    }
}

/// Overwrites 4 KiB at a random place holding data in the largest file under
/// `dir` (an OSD's disk image). Returns the file and offset.
pub(crate) fn corrupt(dir: &Path, rng: &mut StdRng) -> anyhow::Result<(PathBuf, u64)> {
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
