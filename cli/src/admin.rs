//! The administrative commands of `lcpfs`: `status`, `osd`, `pool`, `pg`, `auth`,
//! `mon` and `map`, each printing text for people or, with `--json`, JSON for
//! scripts.

use std::fmt::Write as _;

use anyhow::bail;
use clap::{Args, Subcommand};
use lcpfs_core::map::{ClusterMap, CrushItem, PoolKind, PoolSpec, WEIGHT_ONE};
use lcpfs_core::monitor::{AuthEntity, ClusterStatus, Command, OsdUsage, PgSummary, Query};
use serde_json::json;

use lcpfs_core::crush::pg_mapping;
use lcpfs_core::pg::PgId;
use lcpfs_core::size::human;
use lcpfs_proto::ScrubReply;

use lcpfs_client::mon_client::MonClient;
use lcpfs_client::objects::ObjectClient;

/// `lcpfs osd ...`
#[derive(Subcommand, Debug)]
pub enum OsdCommand {
    /// The CRUSH hierarchy with each OSD's state and weights.
    Tree,
    /// Each OSD's disk space, use and PG count.
    Df,
    /// Where an object lives: its PG, the PG's up OSDs and primary (like `ceph
    /// osd map`), computed from the current map.
    Map {
        /// Pool name.
        pool: String,
        /// Object name.
        object: String,
    },
    /// Set the fraction of an OSD's disk space past which it is marked full
    /// (its PGs then take deletes only).
    SetFullRatio {
        /// A fraction in (0, 1], e.g. 0.95.
        ratio: f64,
    },
    /// Set the fraction of an OSD's disk space past which health warns.
    SetNearfullRatio {
        /// A fraction in (0, 1], e.g. 0.85.
        ratio: f64,
    },
    /// Mark OSDs out (their data moves to others).
    Out {
        /// OSD ids.
        #[arg(required = true)]
        ids: Vec<u32>,
    },
    /// Mark OSDs in.
    In {
        /// OSD ids.
        #[arg(required = true)]
        ids: Vec<u32>,
    },
    /// Mark OSDs down.
    Down {
        /// OSD ids.
        #[arg(required = true)]
        ids: Vec<u32>,
    },
    /// Declare down OSDs' data lost: PGs that wait for them (state `down`) go on
    /// without them, giving up the writes only they held.
    Lost {
        /// OSD ids.
        #[arg(required = true)]
        ids: Vec<u32>,
        /// Confirms that the writes only these OSDs hold may be lost.
        #[arg(long)]
        yes_i_really_mean_it: bool,
    },
    /// Let OSDs held down for flapping (health OSD_FLAPPING) boot again now,
    /// before their hold ends.
    Unhold {
        /// OSD ids.
        #[arg(required = true)]
        ids: Vec<u32>,
    },
    /// Remove OSDs (they must be down).
    Rm {
        /// OSD ids.
        #[arg(required = true)]
        ids: Vec<u32>,
    },
    /// Set an OSD's reweight in [0, 1].
    Reweight {
        /// OSD id.
        id: u32,
        /// New reweight.
        reweight: f64,
    },
    /// Scrub every PG the OSD is primary for, now.
    Scrub {
        /// OSD id.
        id: u32,
        /// Read every byte and compare content digests.
        #[arg(long)]
        deep: bool,
        /// Rewrite bad copies from good ones.
        #[arg(long)]
        repair: bool,
    },
}

/// `lcpfs pg ...`
#[derive(Subcommand, Debug)]
pub enum PgCommand {
    /// Every PG with its state, up set, primary and when it was last scrubbed.
    Ls {
        /// Only this pool's PGs.
        pool: Option<String>,
    },
    /// Compare a PG's copies: object lists, sizes and xattrs.
    Scrub {
        /// PG id, POOL.SEED (hex), e.g. 1.a.
        pgid: PgId,
    },
    /// Compare a PG's copies byte for byte (content digests).
    DeepScrub {
        /// PG id, POOL.SEED (hex), e.g. 1.a.
        pgid: PgId,
    },
    /// Deep-scrub a PG and rewrite its bad copies from good ones.
    Repair {
        /// PG id, POOL.SEED (hex), e.g. 1.a.
        pgid: PgId,
    },
}

/// `lcpfs pool create` arguments.
#[derive(Args, Debug)]
pub struct PoolCreateArgs {
    /// Pool name.
    pub name: String,
    /// Copies (replicated pool).
    #[arg(long, conflicts_with = "ec")]
    pub size: Option<u32>,
    /// Copies needed for I/O (replicated pool; default size - size/3, 2 for size 3).
    #[arg(long, conflicts_with = "ec")]
    pub min_size: Option<u32>,
    /// Erasure coding, K+M (e.g. 4+2).
    #[arg(long)]
    pub ec: Option<String>,
    /// Placement groups.
    #[arg(long, default_value_t = 128)]
    pub pg_num: u32,
    /// Failure domain: osd, host or zone.
    #[arg(long, default_value = "host")]
    pub failure_domain: String,
    /// Only OSDs of this device class.
    #[arg(long)]
    pub device_class: Option<String>,
    /// Compression: lz4 or zstd.
    #[arg(long)]
    pub compression: Option<String>,
    /// Succeed without change when a pool of this name exists (for scripts and
    /// deployments that run the same setup on every start).
    #[arg(long)]
    pub exist_ok: bool,
}

/// `lcpfs pool ...`
#[derive(Subcommand, Debug)]
pub enum PoolCommand {
    /// Create a pool.
    Create(PoolCreateArgs),
    /// List pools.
    Ls,
    /// Change a setting: pg_num, size, min_size or compression.
    Set {
        /// Pool name.
        name: String,
        /// Setting.
        key: String,
        /// Value.
        value: String,
    },
    /// Remove a pool and all its data.
    Rm {
        /// Pool name.
        name: String,
        /// Confirms that the pool's data may be destroyed.
        #[arg(long)]
        yes_i_really_mean_it: bool,
    },
}

/// `lcpfs auth ...`
#[derive(Subcommand, Debug)]
pub enum AuthCommand {
    /// Create an entity (client.NAME, osd.N, mds.NAME) with a new key.
    Add {
        /// Entity name.
        entity: String,
    },
    /// List entities.
    Ls,
    /// Remove an entity.
    Rm {
        /// Entity name.
        entity: String,
    },
    /// Print an entity's keyring.
    Get {
        /// Entity name.
        entity: String,
    },
}

/// `lcpfs mon ...`
#[derive(Subcommand, Debug)]
pub enum MonCommand {
    /// Monitors, quorum and leader.
    Stat,
    /// Add a monitor (start `lcpfs-mon --id NAME --addr ADDR --data DIR` first).
    Add {
        /// Monitor name.
        name: String,
        /// Its address, IP:port.
        addr: String,
    },
    /// Remove a monitor from the quorum.
    Remove {
        /// Monitor name.
        name: String,
    },
}

/// `lcpfs map ...`
#[derive(Subcommand, Debug)]
pub enum MapCommand {
    /// Print the current cluster map (JSON).
    Get {
        /// Include every change acknowledged before this call (read-index).
        #[arg(long)]
        linearizable: bool,
    },
    /// Follow the map: one line per epoch with its digest (BLAKE3 of the map's JSON).
    Watch {
        /// Stop after this many epochs.
        #[arg(long)]
        count: Option<u64>,
    },
}

fn done(json_output: bool, epoch: u64, message: &str, value: Option<serde_json::Value>) -> String {
    if json_output {
        json!({ "epoch": epoch, "message": message, "value": value }).to_string()
    } else {
        format!("{message} (epoch {epoch})")
    }
}

/// Runs `lcpfs osd ...`.
pub async fn osd(
    client: &MonClient,
    command: OsdCommand,
    json_output: bool,
) -> anyhow::Result<String> {
    let command = match command {
        OsdCommand::Tree => {
            let map = client.map(false).await?;
            return osd_tree(&map, json_output);
        }
        OsdCommand::Df => {
            let usage: Vec<OsdUsage> = client.query(&Query::OsdDf).await?;
            return osd_df(&usage, json_output);
        }
        OsdCommand::Map { pool, object } => {
            let map = client.map(false).await?;
            return osd_map(&map, &pool, &object, json_output);
        }
        OsdCommand::SetFullRatio { ratio } => Command::OsdSetFullRatio { ratio },
        OsdCommand::SetNearfullRatio { ratio } => Command::OsdSetNearfullRatio { ratio },
        OsdCommand::Out { ids } => Command::OsdOut { ids },
        OsdCommand::In { ids } => Command::OsdIn { ids },
        OsdCommand::Down { ids } => Command::OsdDown { ids },
        OsdCommand::Lost {
            ids,
            yes_i_really_mean_it,
        } => {
            if !yes_i_really_mean_it {
                bail!(
                    "marking an OSD lost gives up every write only it holds; \
                     add --yes-i-really-mean-it if it cannot come back"
                );
            }
            Command::OsdLost { ids }
        }
        OsdCommand::Unhold { ids } => Command::OsdUnhold { ids },
        OsdCommand::Rm { ids } => Command::OsdRm { ids },
        OsdCommand::Reweight { id, reweight } => Command::OsdReweight { id, reweight },
        OsdCommand::Scrub { id, deep, repair } => {
            return osd_scrub(client, id, deep, repair, json_output).await;
        }
    };
    let (epoch, message, value) = client.run(&command).await?;
    Ok(done(json_output, epoch, &message, value))
}

/// `lcpfs osd map POOL OBJECT`: the object's PG, up set and primary in `map`.
fn osd_map(
    map: &ClusterMap,
    pool_name: &str,
    object: &str,
    json_output: bool,
) -> anyhow::Result<String> {
    let Some(pool) = map.pool_by_name(pool_name) else {
        bail!("pool '{pool_name}' does not exist (epoch {})", map.epoch);
    };
    let pg = lcpfs_core::pg::object_to_pg(pool, object.as_bytes());
    let mapping = pg_mapping(map, pg)?;
    let osd = |osd: &Option<u32>| osd.map_or("none".to_owned(), |id| id.to_string());
    if json_output {
        return Ok(json!({
            "epoch": map.epoch,
            "pool": pool.name,
            "pool_id": pool.id,
            "object": object,
            "pg": pg.to_string(),
            "up": mapping.up,
            "primary": mapping.primary,
        })
        .to_string());
    }
    let up: Vec<String> = mapping.up.iter().map(osd).collect();
    Ok(format!(
        "epoch {} pool '{}' ({}) object '{object}' -> pg {pg} -> up [{}] primary {}",
        map.epoch,
        pool.name,
        pool.id,
        up.join(","),
        mapping
            .primary
            .map_or("none".to_owned(), |id| format!("osd.{id}"))
    ))
}

/// `lcpfs osd scrub N`: scrubs, one after another, the PGs whose primary is osd.N.
async fn osd_scrub(
    client: &MonClient,
    id: u32,
    deep: bool,
    repair: bool,
    json_output: bool,
) -> anyhow::Result<String> {
    let objects = ObjectClient::connect(client.clone()).await?;
    let map = objects.map();
    if !map.osds.contains_key(&id) {
        bail!("osd.{id} does not exist (epoch {})", map.epoch);
    }
    let mut led = Vec::new();
    for pool in map.pools.values() {
        for seed in 0..pool.pg_num {
            let pg = PgId::new(pool.id, seed);
            if pg_mapping(&map, pg).is_ok_and(|mapping| mapping.primary == Some(id)) {
                led.push(pg);
            }
        }
    }
    let mut reports = Vec::new();
    for pg in led {
        reports.push((pg, objects.scrub(pg, deep, repair).await?));
    }
    scrub_reports(&reports, deep, json_output)
}

/// Runs a `lcpfs pg` command.
pub async fn pg(
    client: MonClient,
    command: PgCommand,
    json_output: bool,
) -> anyhow::Result<String> {
    let (pg, deep, repair) = match command {
        PgCommand::Ls { pool } => {
            let list: Vec<PgSummary> = client.query(&Query::PgList { pool }).await?;
            return pg_list(&list, json_output);
        }
        PgCommand::Scrub { pgid } => (pgid, false, false),
        PgCommand::DeepScrub { pgid } => (pgid, true, false),
        PgCommand::Repair { pgid } => (pgid, true, true),
    };
    let objects = ObjectClient::connect(client).await?;
    let report = objects.scrub(pg, deep, repair).await?;
    scrub_reports(&[(pg, report)], deep, json_output)
}

/// `lcpfs osd df`: one line per OSD, like `ceph osd df`.
fn osd_df(usage: &[OsdUsage], json_output: bool) -> anyhow::Result<String> {
    if json_output {
        return Ok(serde_json::to_string_pretty(usage)?);
    }
    let mut out = format!(
        "{:>4}  {:<16} {:<14} {:>10} {:>10} {:>6} {:>5}\n",
        "ID", "HOST", "STATE", "SIZE", "USED", "%USE", "PGS"
    );
    for osd in usage {
        let state = [
            if osd.up { "up" } else { "down" },
            if osd.in_ { "" } else { ",out" },
            if osd.full { ",full" } else { "" },
        ]
        .concat();
        let percent = if osd.size_bytes > 0 {
            format!(
                "{:.1}",
                osd.used_bytes as f64 * 100.0 / osd.size_bytes as f64
            )
        } else {
            "-".to_owned()
        };
        let _ = writeln!(
            out,
            "{:>4}  {:<16} {:<14} {:>10} {:>10} {:>6} {:>5}",
            osd.id,
            osd.host,
            state,
            human(osd.size_bytes),
            human(osd.used_bytes),
            percent,
            osd.pgs
        );
    }
    Ok(out.trim_end().to_owned())
}

/// `lcpfs pg ls`: one line per PG, like `ceph pg ls`.
fn pg_list(list: &[PgSummary], json_output: bool) -> anyhow::Result<String> {
    if json_output {
        return Ok(serde_json::to_string_pretty(list)?);
    }
    let stamp = |seconds: u64| {
        chrono::DateTime::from_timestamp(seconds as i64, 0)
            .filter(|_| seconds > 0)
            .map_or_else(
                || "-".to_owned(),
                |at| at.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            )
    };
    let mut out = format!(
        "{:<8} {:<32} {:<16} {:>7}  {:<20}  {}\n",
        "PG", "STATE", "UP", "PRIMARY", "SCRUB_STAMP", "DEEP_SCRUB_STAMP"
    );
    for pg in list {
        let up: Vec<String> = pg
            .up
            .iter()
            .map(|osd| osd.map_or("-".to_owned(), |osd| osd.to_string()))
            .collect();
        let _ = writeln!(
            out,
            "{:<8} {:<32} {:<16} {:>7}  {:<20}  {}",
            pg.pgid,
            pg.state,
            format!("[{}]", up.join(",")),
            pg.primary.map_or("-".to_owned(), |osd| osd.to_string()),
            stamp(pg.last_scrub),
            stamp(pg.last_deep_scrub)
        );
    }
    Ok(out.trim_end().to_owned())
}

/// Scrub reports, one paragraph per PG: what was compared and each bad copy.
fn scrub_reports(
    reports: &[(PgId, ScrubReply)],
    deep: bool,
    json_output: bool,
) -> anyhow::Result<String> {
    if json_output {
        let list: Vec<_> = reports
            .iter()
            .map(|(pg, report)| {
                json!({
                    "pgid": pg.to_string(),
                    "deep": deep,
                    "epoch": report.epoch,
                    "primary": report.primary,
                    "objects": report.objects,
                    "bytes": report.bytes,
                    "inconsistent": report.inconsistencies.iter().map(|bad| json!({
                        "object": String::from_utf8_lossy(&bad.name),
                        "osd": bad.osd,
                        "reason": bad.reason,
                        "repaired": bad.repaired,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        return Ok(serde_json::to_string_pretty(&list)?);
    }
    let mut out = String::new();
    for (pg, report) in reports {
        let bad = report.inconsistencies.len();
        let repaired = report
            .inconsistencies
            .iter()
            .filter(|bad| bad.repaired)
            .count();
        let _ = write!(
            out,
            "PG {pg} {} by osd.{} at epoch {}: {} objects, {}, ",
            if deep { "deep-scrubbed" } else { "scrubbed" },
            report.primary,
            report.epoch,
            report.objects,
            human(report.bytes),
        );
        let _ = match (bad, repaired) {
            (0, _) => writeln!(out, "consistent"),
            (bad, 0) => writeln!(out, "{bad} inconsistent"),
            (bad, repaired) => writeln!(out, "{bad} inconsistent, {repaired} repaired"),
        };
        for copy in &report.inconsistencies {
            let _ = writeln!(
                out,
                "  object '{}' on osd.{}: {}{}",
                String::from_utf8_lossy(&copy.name),
                copy.osd,
                copy.reason,
                if copy.repaired { " (repaired)" } else { "" }
            );
        }
    }
    Ok(out.trim_end().to_owned())
}

fn weight(fixed: u64) -> String {
    format!("{:.5}", fixed as f64 / WEIGHT_ONE as f64)
}

/// `lcpfs osd tree`: the hierarchy like `ceph osd tree`.
pub fn osd_tree(map: &ClusterMap, json_output: bool) -> anyhow::Result<String> {
    if json_output {
        return Ok(serde_json::to_string_pretty(&json!({
            "epoch": map.epoch,
            "osds": map.osds.values().collect::<Vec<_>>(),
        }))?);
    }
    let hierarchy = map.crush_hierarchy(None)?;
    let mut out = format!(
        "{:>4}  {:<6} {:>9}  {:<24} {:<7} {:>8}\n",
        "ID", "CLASS", "WEIGHT", "TYPE NAME", "STATUS", "REWEIGHT"
    );
    let mut stack = vec![(CrushItem::Bucket(hierarchy.root), 0usize)];
    while let Some((item, depth)) = stack.pop() {
        let indent = "    ".repeat(depth);
        match item {
            CrushItem::Bucket(id) => {
                let bucket = &hierarchy.buckets[&id];
                let _ = writeln!(
                    out,
                    "{id:>4}  {:<6} {:>9}  {:<24}",
                    "",
                    weight(bucket.weight),
                    format!("{indent}{} {}", bucket.kind, bucket.name)
                );
                for (child, _) in bucket.children.iter().rev() {
                    stack.push((*child, depth + 1));
                }
            }
            CrushItem::Osd(id) => {
                let osd = &map.osds[&id];
                let _ = writeln!(
                    out,
                    "{id:>4}  {:<6} {:>9}  {:<24} {:<7} {:>8.5}",
                    osd.device_class,
                    format!("{:.5}", osd.weight),
                    format!("{indent}osd.{id}"),
                    format!(
                        "{}{}{}",
                        if osd.up { "up" } else { "down" },
                        if osd.in_ { "" } else { ",out" },
                        if osd.lost { ",lost" } else { "" }
                    ),
                    if osd.in_ { osd.reweight } else { 0.0 }
                );
            }
        }
    }
    Ok(out.trim_end().to_owned())
}

/// Runs `lcpfs pool ...`.
pub async fn pool(
    client: &MonClient,
    command: PoolCommand,
    json_output: bool,
) -> anyhow::Result<String> {
    let command = match command {
        PoolCommand::Create(args) => {
            if args.exist_ok {
                let map = client.map(true).await?;
                if map.pool_by_name(&args.name).is_some() {
                    let message = format!("pool '{}' already exists", args.name);
                    return Ok(done(json_output, map.epoch, &message, None));
                }
            }
            Command::PoolCreate {
                spec: pool_spec(args)?,
            }
        }
        PoolCommand::Ls => {
            let map = client.map(false).await?;
            return pool_list(&map, json_output);
        }
        PoolCommand::Set { name, key, value } => Command::PoolSet { name, key, value },
        PoolCommand::Rm {
            name,
            yes_i_really_mean_it,
        } => {
            if !yes_i_really_mean_it {
                bail!(
                    "removing pool '{name}' destroys all its data; add --yes-i-really-mean-it to confirm"
                );
            }
            Command::PoolRm { name }
        }
    };
    let (epoch, message, value) = client.run(&command).await?;
    Ok(done(json_output, epoch, &message, value))
}

fn pool_spec(args: PoolCreateArgs) -> anyhow::Result<PoolSpec> {
    let kind = match &args.ec {
        Some(ec) => crate::crush_tool::erasure(ec)?,
        None => {
            let size = args.size.unwrap_or(3);
            let min_size = args.min_size.unwrap_or(size - size / 3);
            PoolKind::Replicated { size, min_size }
        }
    };
    let failure_domain = crate::crush_tool::failure_domain(&args.failure_domain)?;
    if let Some(compression) = &args.compression
        && !matches!(compression.as_str(), "lz4" | "zstd")
    {
        bail!("unknown compression {compression:?}: use lz4 or zstd");
    }
    Ok(PoolSpec {
        name: args.name,
        kind,
        pg_num: args.pg_num,
        failure_domain,
        device_class: args.device_class,
        compression: args.compression,
    })
}

fn pool_list(map: &ClusterMap, json_output: bool) -> anyhow::Result<String> {
    if json_output {
        return Ok(serde_json::to_string_pretty(
            &map.pools.values().collect::<Vec<_>>(),
        )?);
    }
    let mut out = format!(
        "{:>4}  {:<16} {:<14} {:>7}  {:<8} {:<8} {}\n",
        "ID", "NAME", "TYPE", "PG_NUM", "DOMAIN", "CLASS", "COMPRESSION"
    );
    for pool in map.pools.values() {
        let kind = match pool.kind {
            PoolKind::Replicated { size, min_size } => format!("replicated {size}/{min_size}"),
            PoolKind::Erasure { k, m } => format!("erasure {k}+{m}"),
        };
        let _ = writeln!(
            out,
            "{:>4}  {:<16} {:<14} {:>7}  {:<8} {:<8} {}",
            pool.id,
            pool.name,
            kind,
            pool.pg_num,
            pool.failure_domain.to_string(),
            pool.device_class.as_deref().unwrap_or("-"),
            pool.compression.as_deref().unwrap_or("none")
        );
    }
    Ok(out.trim_end().to_owned())
}

/// Runs `lcpfs auth ...`.
pub async fn auth(
    client: &MonClient,
    command: AuthCommand,
    json_output: bool,
) -> anyhow::Result<String> {
    let command = match command {
        AuthCommand::Ls => {
            let entities: Vec<AuthEntity> = client.query(&Query::AuthList).await?;
            if json_output {
                return Ok(serde_json::to_string_pretty(&entities)?);
            }
            return Ok(entities
                .iter()
                .map(AuthEntity::keyring)
                .collect::<String>()
                .trim_end()
                .to_owned());
        }
        AuthCommand::Get { entity } => {
            let entity: AuthEntity = client.query(&Query::AuthGet { entity }).await?;
            if json_output {
                return Ok(serde_json::to_string_pretty(&entity)?);
            }
            return Ok(entity.keyring().trim_end().to_owned());
        }
        AuthCommand::Add { entity } => Command::AuthAdd { entity },
        AuthCommand::Rm { entity } => Command::AuthRm { entity },
    };
    let (epoch, message, value) = client.run(&command).await?;
    Ok(done(json_output, epoch, &message, value))
}

/// Runs `lcpfs mon ...`.
pub async fn mon(
    client: &MonClient,
    command: MonCommand,
    json_output: bool,
) -> anyhow::Result<String> {
    let command = match command {
        MonCommand::Stat => {
            let status: ClusterStatus = client.query(&Query::Status).await?;
            if json_output {
                return Ok(serde_json::to_string_pretty(&json!({
                    "epoch": status.epoch,
                    "term": status.term,
                    "leader": status.leader,
                    "monitors": status.monitors,
                }))?);
            }
            return Ok(mon_line(&status));
        }
        MonCommand::Add { name, addr } => Command::MonAdd { name, addr },
        MonCommand::Remove { name } => Command::MonRemove { name },
    };
    let (epoch, message, value) = client.run(&command).await?;
    Ok(done(json_output, epoch, &message, value))
}

fn mon_line(status: &ClusterStatus) -> String {
    let quorum: Vec<&str> = status
        .monitors
        .iter()
        .filter(|mon| mon.reachable && mon.voter)
        .map(|mon| mon.name.as_str())
        .collect();
    let all: Vec<String> = status
        .monitors
        .iter()
        .map(|mon| format!("{}={}", mon.name, mon.addr))
        .collect();
    format!(
        "{} mons at {{{}}}, term {}, leader {}, quorum {}",
        status.monitors.len(),
        all.join(","),
        status.term,
        status.leader.as_deref().unwrap_or("(none)"),
        quorum.join(",")
    )
}

/// Runs `lcpfs status`.
pub async fn status(client: &MonClient, json_output: bool) -> anyhow::Result<String> {
    let status: ClusterStatus = client.query(&Query::Status).await?;
    if json_output {
        return Ok(serde_json::to_string_pretty(&status)?);
    }
    let mut out = String::new();
    let _ = writeln!(out, "  cluster:");
    let _ = writeln!(out, "    id:     {}", status.fsid);
    let _ = writeln!(out, "    health: {}", status.health);
    for (name, check) in &status.checks {
        let _ = writeln!(out, "            {name}: {}", check.summary);
    }
    let _ = writeln!(out, "\n  services:");
    let quorum: Vec<&str> = status
        .monitors
        .iter()
        .filter(|mon| mon.reachable && mon.voter)
        .map(|mon| mon.name.as_str())
        .collect();
    let _ = writeln!(
        out,
        "    mon: {} daemons, quorum {} (leader {}, term {})",
        status.monitors.len(),
        quorum.join(","),
        status.leader.as_deref().unwrap_or("none"),
        status.term
    );
    let _ = writeln!(
        out,
        "    osd: {} osds: {} up, {} in",
        status.osds, status.osds_up, status.osds_in
    );
    let _ = writeln!(out, "\n  data:");
    let _ = writeln!(out, "    pools: {} pools, {} pgs", status.pools, status.pgs);
    if !status.pg_states.is_empty() {
        let states: Vec<String> = status
            .pg_states
            .iter()
            .map(|(state, count)| format!("{count} {state}"))
            .collect();
        let _ = writeln!(out, "    pgs:   {}", states.join(", "));
    }
    let _ = write!(out, "    map:   epoch {}", status.epoch);
    Ok(out)
}

/// Runs `lcpfs map ...`; `watch` prints as it goes.
pub async fn map(client: &MonClient, command: MapCommand) -> anyhow::Result<String> {
    match command {
        MapCommand::Get { linearizable } => {
            let map = client.map(linearizable).await?;
            Ok(serde_json::to_string_pretty(&map)?)
        }
        MapCommand::Watch { count } => {
            let mut watch = client.subscribe(None).await?;
            let mut seen = 0;
            while count.is_none_or(|count| seen < count) {
                let Some(map) = watch.next().await? else {
                    bail!("the monitor closed the subscription");
                };
                let digest = blake3::hash(&serde_json::to_vec(map)?);
                println!("{} {}", map.epoch, digest.to_hex());
                seen += 1;
            }
            Ok(String::new())
        }
    }
}
