//! `lcpfs crush test`: how CRUSH spreads a pool's PGs over OSDs, and how much data moves
//! when an OSD is added or marked out — for a cluster map in a JSON file, or a synthetic
//! cluster described by flags (`--hosts 10 --osds-per-host 4`).

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use lcpfs_core::crush::{self, SyntheticCluster};
use lcpfs_core::map::{BucketType, ClusterMap, PoolKind};

/// Arguments of `lcpfs crush test`.
#[derive(Args, Debug)]
pub struct CrushTestArgs {
    /// A cluster map (JSON, as the monitors store it); without it a synthetic cluster
    /// is built from the flags below.
    #[arg(long)]
    pub map: Option<PathBuf>,
    /// The pool to test, by name (with --map; default: the first pool).
    #[arg(long)]
    pub pool: Option<String>,
    /// Synthetic cluster: hosts.
    #[arg(long, default_value_t = 10)]
    pub hosts: u32,
    /// Synthetic cluster: OSDs per host.
    #[arg(long, default_value_t = 4)]
    pub osds_per_host: u32,
    /// Synthetic cluster: zones the hosts are spread over (0: none).
    #[arg(long, default_value_t = 0)]
    pub zones: u32,
    /// Synthetic pool: copies of a replicated pool.
    #[arg(long, default_value_t = 3)]
    pub size: u32,
    /// Synthetic pool: erasure coding as K+M (e.g. 4+2) instead of replicas.
    #[arg(long)]
    pub ec: Option<String>,
    /// Synthetic pool: failure domain (osd, host, zone).
    #[arg(long, default_value = "host")]
    pub failure_domain: String,
    /// PGs to map.
    #[arg(long, default_value_t = 1024)]
    pub pg_num: u32,
}

/// A failure domain as typed on the command line: `osd`, `host` or `zone`.
pub(crate) fn failure_domain(name: &str) -> anyhow::Result<BucketType> {
    Ok(match name {
        "osd" => BucketType::Osd,
        "host" => BucketType::Host,
        "zone" => BucketType::Zone,
        other => bail!("unknown failure domain {other:?}: use osd, host or zone"),
    })
}

fn pool_kind(args: &CrushTestArgs) -> anyhow::Result<PoolKind> {
    match &args.ec {
        None => Ok(PoolKind::Replicated {
            size: args.size,
            min_size: args.size.div_ceil(2).max(1),
        }),
        Some(spec) => erasure(spec),
    }
}

/// An erasure code as typed on the command line: `K+M`, e.g. `4+2`.
pub(crate) fn erasure(spec: &str) -> anyhow::Result<PoolKind> {
    let (k, m) = spec
        .split_once('+')
        .and_then(|(k, m)| Some((k.trim().parse().ok()?, m.trim().parse().ok()?)))
        .with_context(|| format!("--ec {spec:?} is not K+M (e.g. 4+2)"))?;
    Ok(PoolKind::Erasure { k, m })
}

/// Runs `lcpfs crush test` and returns what to print.
pub fn run(args: &CrushTestArgs, json: bool) -> anyhow::Result<String> {
    let (map, pool) = match &args.map {
        Some(path) => {
            let text =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let map: ClusterMap = serde_json::from_slice(&text)
                .with_context(|| format!("{} is not a cluster map", path.display()))?;
            let pool = match &args.pool {
                Some(name) => map.pools.values().find(|p| &p.name == name).map(|p| p.id),
                None => map.pools.keys().next().copied(),
            }
            .with_context(|| {
                format!(
                    "the map has no pool {}",
                    args.pool.as_deref().unwrap_or("at all")
                )
            })?;
            (map, pool)
        }
        None => crush::synthetic_map(&SyntheticCluster {
            zones: args.zones,
            hosts: args.hosts,
            osds_per_host: args.osds_per_host,
            pool: pool_kind(args)?,
            failure_domain: failure_domain(&args.failure_domain)?,
            pg_num: args.pg_num,
            ..SyntheticCluster::default()
        })
        .context("building the synthetic cluster")?,
    };
    let report = crush::utilization_report(&map, pool, args.pg_num).context("mapping the PGs")?;
    if json {
        Ok(serde_json::to_string_pretty(&report)?)
    } else {
        Ok(report.to_string())
    }
}
