//! What `lcpfs crush test` runs: a made-up cluster ([`SyntheticCluster`]), and a report
//! of how evenly one pool's PGs spread over its OSDs and how many shards move when an
//! OSD is added or marked out ([`utilization_report`]), so that an operator can judge a
//! layout before building it.

use std::collections::BTreeMap;
use std::fmt;

use super::placement::{CrushError, PoolPlacement};
use crate::map::{BucketType, ClusterMap, MapError, OsdInfo, PoolKind, PoolSpec};

/// Parameters of a made-up cluster for `lcpfs crush test`.
#[derive(Clone, Debug, PartialEq)]
pub struct SyntheticCluster {
    /// Zones; hosts are spread over them round-robin. 0 puts every host in the default zone.
    pub zones: u32,
    /// Hosts in total.
    pub hosts: u32,
    /// OSDs on each host.
    pub osds_per_host: u32,
    /// CRUSH weight of every OSD.
    pub osd_weight: f64,
    /// The one pool created in the map.
    pub pool: PoolKind,
    /// Its failure domain.
    pub failure_domain: BucketType,
    /// Its pg_num.
    pub pg_num: u32,
}

impl Default for SyntheticCluster {
    /// Ten hosts of four 1-TiB OSDs, a 3-way replicated pool over hosts, 1024 PGs.
    fn default() -> Self {
        SyntheticCluster {
            zones: 0,
            hosts: 10,
            osds_per_host: 4,
            osd_weight: 1.0,
            pool: PoolKind::Replicated {
                size: 3,
                min_size: 2,
            },
            failure_domain: BucketType::Host,
            pg_num: 1024,
        }
    }
}

/// Builds the map a [`SyntheticCluster`] describes; returns it with its pool's id.
///
/// OSD `h * osds_per_host + i` is the `i`-th OSD of host `host{h}`; all are up and in.
pub fn synthetic_map(params: &SyntheticCluster) -> Result<(ClusterMap, u32), MapError> {
    let mut map = ClusterMap::new("synthetic");
    for host in 0..params.hosts {
        for index in 0..params.osds_per_host {
            let id = host
                .checked_mul(params.osds_per_host)
                .and_then(|first| first.checked_add(index))
                .ok_or(MapError::OsdIdTooLarge(u32::MAX))?;
            map.add_osd(OsdInfo {
                zone: (params.zones > 0).then(|| format!("zone{}", host % params.zones)),
                weight: params.osd_weight,
                ..OsdInfo::new(
                    id,
                    format!("127.0.0.1:{}", 6800u64 + u64::from(id)),
                    format!("host{host}"),
                )
            })?;
        }
    }
    let (pool, _) = map.create_pool(PoolSpec {
        name: "synthetic".to_owned(),
        kind: params.pool,
        pg_num: params.pg_num,
        failure_domain: params.failure_domain,
        device_class: None,
        compression: None,
    })?;
    Ok((map, pool))
}

/// PG count of one OSD against its weight share.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct OsdUtilization {
    /// OSD id.
    pub osd: u32,
    /// PG shards placed on it.
    pub pgs: u64,
    /// Shards it would hold if placement followed `weight * reweight` exactly.
    pub expected: f64,
    /// `(pgs - expected) / expected`, in percent.
    pub deviation_pct: f64,
}

/// How much data one simulated change moved.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Movement {
    /// The OSD added or marked out.
    pub osd: u32,
    /// Shards whose OSD changed.
    pub shards_moved: u64,
    /// Shards placed in total before the change.
    pub shards_total: u64,
    /// `shards_moved / shards_total`, in percent.
    pub moved_pct: f64,
    /// What an ideal placement would move, in percent.
    pub expected_pct: f64,
}

/// What `lcpfs crush test` prints: balance and movement of one pool's placement.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct UtilizationReport {
    /// Pool id.
    pub pool: u32,
    /// PGs mapped (seeds `0..num_pgs`).
    pub num_pgs: u32,
    /// Shards CRUSH could not place (too few usable failure domains).
    pub unplaced_shards: u64,
    /// Every OSD that can hold the pool's data, by id.
    pub per_osd: Vec<OsdUtilization>,
    /// Adding one OSD of average weight on a new host.
    pub moved_on_add: Option<Movement>,
    /// Marking the lowest-numbered OSD out.
    pub moved_on_remove: Option<Movement>,
}

fn map_all(placement: &PoolPlacement, num_pgs: u32) -> Vec<Vec<Option<u32>>> {
    (0..num_pgs)
        .map(|seed| placement.map_pg(seed).crush)
        .collect()
}

/// Shards that changed OSD between two CRUSH results of the same PG: set difference
/// for replicated pools (order is not data movement), positions for erasure coding.
fn shards_moved(erasure: bool, before: &[Option<u32>], after: &[Option<u32>]) -> u64 {
    if erasure {
        before
            .iter()
            .zip(after)
            .filter(|(old, new)| new.is_some() && old != new)
            .count() as u64
    } else {
        after
            .iter()
            .flatten()
            .filter(|&&osd| !before.contains(&Some(osd)))
            .count() as u64
    }
}

fn movement(
    osd: u32,
    erasure: bool,
    before: &[Vec<Option<u32>>],
    after: &[Vec<Option<u32>>],
    expected_pct: f64,
) -> Movement {
    let shards_total: u64 = before
        .iter()
        .map(|pg| pg.iter().flatten().count() as u64)
        .sum();
    let shards_moved = before
        .iter()
        .zip(after)
        .map(|(old, new)| shards_moved(erasure, old, new))
        .sum();
    Movement {
        osd,
        shards_moved,
        shards_total,
        moved_pct: percent(shards_moved as f64, shards_total as f64),
        expected_pct,
    }
}

fn percent(part: f64, whole: f64) -> f64 {
    if whole > 0.0 {
        100.0 * part / whole
    } else {
        0.0
    }
}

/// Maps PGs `0..num_pgs` of `pool_id` and reports balance, then simulates adding an
/// OSD and marking one out and reports how many shards move.
pub fn utilization_report(
    map: &ClusterMap,
    pool_id: u32,
    num_pgs: u32,
) -> Result<UtilizationReport, CrushError> {
    let placement = PoolPlacement::new(map, pool_id)?;
    let erasure = placement.pool().is_erasure();
    let before = map_all(&placement, num_pgs);
    let mut counts: BTreeMap<u32, u64> = BTreeMap::new();
    for osd in before.iter().flatten().flatten() {
        *counts.entry(*osd).or_default() += 1;
    }
    let placed: u64 = counts.values().sum();
    let wanted = u64::from(num_pgs) * u64::from(placement.pool().size());

    // Effective weights of the OSDs this pool can use.
    let eligible: Vec<&OsdInfo> = placement
        .hierarchy()
        .osd_location
        .keys()
        .filter_map(|id| map.osds.get(id))
        .collect();
    let effective = |osd: &OsdInfo| {
        if osd.in_ {
            osd.weight * osd.reweight
        } else {
            0.0
        }
    };
    let total_effective: f64 = eligible.iter().map(|osd| effective(osd)).sum();
    let per_osd = eligible
        .iter()
        .filter(|osd| effective(osd) > 0.0)
        .map(|osd| {
            let pgs = counts.get(&osd.id).copied().unwrap_or(0);
            let expected = placed as f64 * effective(osd) / total_effective;
            OsdUtilization {
                osd: osd.id,
                pgs,
                expected,
                deviation_pct: percent(pgs as f64 - expected, expected),
            }
        })
        .collect::<Vec<_>>();

    let in_osds: Vec<&&OsdInfo> = eligible.iter().filter(|osd| effective(osd) > 0.0).collect();
    let moved_on_add = match in_osds.first() {
        None => None,
        Some(template) => {
            let weight = in_osds.iter().map(|osd| osd.weight).sum::<f64>() / in_osds.len() as f64;
            let new_id = map.osds.keys().next_back().map_or(0, |&id| id + 1);
            let mut grown = map.clone();
            grown.add_osd(OsdInfo {
                zone: template.zone.clone(),
                device_class: template.device_class.clone(),
                weight,
                ..OsdInfo::new(new_id, "", format!("crush-test-new-host-{new_id}"))
            })?;
            let after = map_all(&PoolPlacement::new(&grown, pool_id)?, num_pgs);
            let total_crush: f64 = in_osds.iter().map(|osd| osd.weight).sum();
            Some(movement(
                new_id,
                erasure,
                &before,
                &after,
                percent(weight, total_crush + weight),
            ))
        }
    };
    let moved_on_remove = match in_osds.first() {
        None => None,
        Some(victim) => {
            let mut shrunk = map.clone();
            shrunk.mark_out(victim.id)?;
            let after = map_all(&PoolPlacement::new(&shrunk, pool_id)?, num_pgs);
            let held = counts.get(&victim.id).copied().unwrap_or(0);
            Some(movement(
                victim.id,
                erasure,
                &before,
                &after,
                percent(held as f64, placed as f64),
            ))
        }
    };
    Ok(UtilizationReport {
        pool: pool_id,
        num_pgs,
        unplaced_shards: wanted.saturating_sub(placed),
        per_osd,
        moved_on_add,
        moved_on_remove,
    })
}

impl fmt::Display for UtilizationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "pool {}: {} PGs mapped", self.pool, self.num_pgs)?;
        if self.unplaced_shards > 0 {
            writeln!(
                f,
                "{} shards could not be placed (too few failure domains)",
                self.unplaced_shards
            )?;
        }
        writeln!(
            f,
            "{:>8} {:>8} {:>10} {:>9}",
            "osd", "pgs", "expected", "dev%"
        )?;
        for row in &self.per_osd {
            writeln!(
                f,
                "{:>8} {:>8} {:>10.1} {:>+9.2}",
                format!("osd.{}", row.osd),
                row.pgs,
                row.expected,
                row.deviation_pct
            )?;
        }
        if let Some(worst) = self
            .per_osd
            .iter()
            .map(|row| row.deviation_pct.abs())
            .reduce(f64::max)
        {
            writeln!(f, "largest deviation: {worst:.2}%")?;
        }
        for (what, movement) in [
            ("adding osd", &self.moved_on_add),
            ("marking out osd", &self.moved_on_remove),
        ] {
            if let Some(movement) = movement {
                writeln!(
                    f,
                    "{what}.{}: {} of {} shards move ({:.2}%, ideal {:.2}%)",
                    movement.osd,
                    movement.shards_moved,
                    movement.shards_total,
                    movement.moved_pct,
                    movement.expected_pct
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_counts_every_shard_and_the_real_movement() {
        let (map, pool) = synthetic_map(&SyntheticCluster::default()).unwrap();
        let report = utilization_report(&map, pool, 10_000).unwrap();
        assert_eq!(report.per_osd.len(), 40);
        assert_eq!(report.unplaced_shards, 0);
        assert_eq!(
            report.per_osd.iter().map(|row| row.pgs).sum::<u64>(),
            30_000
        );
        for row in &report.per_osd {
            assert!((row.expected - 750.0).abs() < 1e-9);
            assert!(
                row.deviation_pct.abs() < 4.5 * 100.0 * (750.0f64).sqrt() / 750.0,
                "{row:?}"
            );
        }
        let removed = report.moved_on_remove.clone().unwrap();
        assert_eq!(removed.osd, 0);
        assert_eq!(removed.shards_moved, report.per_osd[0].pgs);
        let added = report.moved_on_add.clone().unwrap();
        assert_eq!(added.osd, 40);
        assert!(
            added.moved_pct > 0.5 * added.expected_pct
                && added.moved_pct < 1.5 * added.expected_pct,
            "{added:?}"
        );
        let text = report.to_string();
        assert!(text.contains("osd.39"), "{text}");
        assert!(text.contains("marking out osd.0"), "{text}");
    }
}
