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
//! container, stop and start it, pause it (SIGSTOP to every process), pause two
//! OSDs together, disconnect it from the network (a partition of one or two nodes),
//! cut one link (one way, or both ways between two nodes that still reach everyone
//! else), fill an OSD (the full ratio lowered just below its use), kill the monitor
//! leader. Through the failpoints of the chaos build (`make chaos-image`), an OSD's
//! disk misbehaves: bit rot in its writes, failing or corrupted reads, failing
//! writes, stalled flushes, a failed flush (the OSD stops itself) and a power cut
//! (its unflushed writes dropped, then the process gone); an OSD crashes at the
//! worst moment of a write (between the phases of an erasure-coded write, as a
//! shard commits, with a replicated write on the primary alone). And operator actions
//! under load: double a pool's pg_num (its PGs split while clients write; kept),
//! mark an OSD out and in again (its data moves away and back), reweight an OSD to
//! half and back, lower the replicated pool's min_size to 1 and raise it again,
//! add a spare OSD on a new host (kept); and an OSD down past the down-out
//! interval, so that the monitors mark it out and its data moves. Clients also give
//! one write in twenty up mid-request, as a client that dies would.
//!
//! Afterwards every fault is healed and the cluster must be HEALTH_OK with every PG
//! active+clean within a deadline; every object must read back with its last
//! acknowledged value; a deep scrub before any repair must find every copy and
//! shard agreeing (unless bytes were corrupted on purpose), and after a deep scrub
//! with repair, a second one too. The report gives the counts and the seed; the
//! same seed replays the same faults and operations.

mod faults;
mod history;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::{Parser, ValueEnum};
use lcpfs_client::mon_client::MonClient;
use lcpfs_client::objects::ObjectClient;
use lcpfs_core::monitor::{ClusterStatus, Command as MonCommand, HealthStatus, Query};
use lcpfs_core::pg::PgId;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tokio::sync::Mutex;

use faults::{Cluster, Fault, inject};
use history::{Client, Counts, Timelines, describe, read_value};

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
        default_value = "kill,stop,pause,double,partition,link,corrupt,fill,leader,split,out,reweight,min-size,disk,slow,flush,power,join,down-out,crash"
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
    /// The run fails unless every kind of `--faults` took effect at least once
    /// (for runs long enough to draw each: kinds are drawn in shuffled rounds).
    #[arg(long)]
    every_fault: bool,
    /// Never give a write up mid-request (by default one in twenty is, as a
    /// client that dies would: the OSD sees the request cancelled).
    #[arg(long)]
    no_abandon: bool,
    /// Monitor addresses of the compose cluster.
    #[arg(
        long,
        default_value = "10.77.0.11:6789,10.77.0.12:6789,10.77.0.13:6789"
    )]
    mon: String,
    /// The compose project.
    #[arg(long, default_value = "lcpfs")]
    project: String,
    /// How to run compose on the cluster's file (for the spare OSD `join` adds).
    #[arg(
        long,
        default_value = "docker-compose -p lcpfs -f deploy/compose/docker-compose.yml"
    )]
    compose: String,
    /// TLS directory of a client certificate of the cluster (default:
    /// $LCPFS_TLS_DIR; plain connections without either).
    #[arg(long)]
    tls_dir: Option<std::path::PathBuf>,
}

/// A fault kind's name, as `--faults` spells it.
fn fault_name(fault: Fault) -> String {
    fault
        .to_possible_value()
        .map_or_else(|| format!("{fault:?}"), |value| value.get_name().to_owned())
}

pub(crate) async fn status(mon: &MonClient) -> Option<ClusterStatus> {
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
    let mut cluster = Cluster::find(&args.project, &args.compose).await?;
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
            abandons: !args.no_abandon,
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
    // Kinds are drawn in rounds, each a shuffle of every kind, so that a run of
    // a round's length sees each once.
    let mut round: Vec<Fault> = Vec::new();
    let began = Instant::now();
    while began.elapsed() < Duration::from_secs(args.duration) {
        if round.is_empty() {
            round = args.faults.clone();
            round.shuffle(&mut rng);
        }
        let fault = round.pop().expect("a round holds every kind");
        if fault == Fault::Join && cluster.spare_joined() {
            continue;
        }
        let hold = Duration::from_secs(rng.random_range(3..=args.fault_seconds.max(3)));
        let services: Vec<String> = cluster.containers.keys().cloned().collect();
        let target = services[rng.random_range(0..services.len())].clone();
        let done = inject(&mut cluster, &mon, fault, &target, hold, &mut rng).await;
        match done {
            Ok(what) => {
                println!("[{:>4} s] {what}", began.elapsed().as_secs());
                *injected.entry(fault_name(fault)).or_default() += 1;
            }
            Err(error) => println!(
                "[{:>4} s] {fault:?} not injected: {error:#}",
                began.elapsed().as_secs()
            ),
        }
        // Let the cluster notice the heal before the next fault.
        tokio::time::sleep(Duration::from_secs(rng.random_range(2..8))).await;
    }
    cluster.heal_all().await;
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
    if args.every_fault {
        let missing: Vec<String> = args
            .faults
            .iter()
            .map(|fault| fault_name(*fault))
            .filter(|name| !injected.contains_key(name))
            .collect();
        if !missing.is_empty() {
            too_little.push(format!("faults never injected: {}", missing.join(", ")));
        }
    }
    let owned = args.clients * args.objects;
    if verified < owned {
        too_little.push(format!("only {verified} of {owned} objects verified"));
    }
    println!("\nlcpfs-chaos report (seed {seed})");
    println!("  operations acknowledged: {:?}", counts.acked);
    println!(
        "  operations failed (allowed during faults): {:?}, {} of them given up mid-request",
        counts.failed, counts.abandoned
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
