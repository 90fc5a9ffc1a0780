//! The intervals of every PG as this OSD saw them: an interval is a run of map
//! epochs over which a PG's up set stayed the same, named by its first epoch.
//!
//! Peering needs the PG's earlier intervals for two things. Their OSDs may hold
//! writes the current up set lacks (every copy of a PG can move at once), so they
//! are asked too. And an earlier interval that may have acknowledged writes, none
//! of whose OSDs is up now, may hold writes nobody else has: the PG is `down` and
//! waits for one of them to come back (or for an operator to mark them lost),
//! instead of going active without them. This is Ceph's prior set.
//!
//! The intervals are saved beside the store at each epoch, so an OSD that restarts
//! knows the intervals it saw before, and, resuming its map subscription from the
//! epoch it saved, sees every epoch it missed one at a time.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Mutex;

use lcpfs_core::crush::{PoolPlacement, primary};
use lcpfs_core::map::ClusterMap;
use lcpfs_core::pg::PgId;
use serde::{Deserialize, Serialize};

use crate::pg::UpSet;

/// Earlier intervals remembered per PG (the oldest are forgotten first).
const PAST_INTERVALS: usize = 16;

/// One interval of a PG: its up set and the epoch it began.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub up: UpSet,
    pub start: u64,
}

impl Interval {
    fn members(&self) -> impl Iterator<Item = u32> + '_ {
        self.up.iter().flatten().copied()
    }
}

#[derive(Default)]
struct State {
    /// Epoch of the last map observed.
    epoch: u64,
    /// Per PG: its interval in the last map observed.
    current: HashMap<PgId, Interval>,
    /// Per PG: its earlier intervals since it was last peered, oldest first.
    past: HashMap<PgId, Vec<Interval>>,
    /// PGs whose earlier intervals went unseen (epochs skipped).
    unknown: HashSet<PgId>,
}

/// What is saved: the last map observed and each PG's intervals.
#[derive(Serialize, Deserialize)]
struct Saved {
    map: ClusterMap,
    pgs: Vec<SavedPg>,
}

#[derive(Serialize, Deserialize)]
struct SavedPg {
    pg: PgId,
    current: Interval,
    past: Vec<Interval>,
    unknown: bool,
}

/// The PG intervals an OSD saw, optionally saved to a file.
pub struct Intervals {
    state: Mutex<State>,
    file: Option<PathBuf>,
}

impl Intervals {
    /// Intervals kept in memory and, with `file`, saved there at each epoch.
    pub fn new(file: Option<PathBuf>) -> Self {
        Intervals {
            state: Mutex::new(State::default()),
            file,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("PG intervals")
    }

    /// Restores the intervals saved by an earlier run; returns the last map that
    /// run observed, to follow the map on from up to `current`. `None` when
    /// nothing was saved, or what was saved is not an earlier map of this cluster.
    pub fn restore(&self, current: &ClusterMap) -> anyhow::Result<Option<ClusterMap>> {
        let Some(file) = &self.file else {
            return Ok(None);
        };
        let bytes = match std::fs::read(file) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(anyhow::anyhow!("cannot read {}: {error}", file.display())),
        };
        let saved: Saved = serde_json::from_slice(&bytes)
            .map_err(|error| anyhow::anyhow!("{} is damaged: {error}", file.display()))?;
        if saved.map.fsid != current.fsid || saved.map.epoch > current.epoch {
            tracing::warn!(
                saved = saved.map.epoch,
                current = current.epoch,
                "the saved PG intervals are not of this cluster's history; starting afresh"
            );
            return Ok(None);
        }
        let mut state = self.state();
        state.epoch = saved.map.epoch;
        for pg in saved.pgs {
            state.current.insert(pg.pg, pg.current);
            if !pg.past.is_empty() {
                state.past.insert(pg.pg, pg.past);
            }
            if pg.unknown {
                state.unknown.insert(pg.pg);
            }
        }
        Ok(Some(saved.map))
    }

    /// Records the up set of every PG in `map`, which must be observed before the
    /// OSD acts on it: a PG whose up set changed (or any PG, when epochs were
    /// skipped) starts a new interval. Saves the result when a file was given.
    /// Maps not newer than the last observed are ignored.
    pub fn observe(&self, map: &ClusterMap) {
        if self.record(map)
            && let Err(error) = self.save(&self.state(), map)
        {
            tracing::warn!(%error, "cannot save the PG intervals");
        }
    }

    /// [`Intervals::observe`] without saving, for the epochs replayed on start
    /// before the newest (saved once, with it). False when `map` is not newer
    /// than the last observed.
    pub fn record(&self, map: &ClusterMap) -> bool {
        let mut state = self.state();
        if map.epoch <= state.epoch {
            return false;
        }
        let contiguous = state.epoch + 1 == map.epoch;
        let exists = |pg: &PgId| {
            map.pools
                .get(&pg.pool)
                .is_some_and(|pool| pg.seed < pool.pg_num)
        };
        let State {
            current,
            past,
            unknown,
            ..
        } = &mut *state;
        current.retain(|pg, _| exists(pg));
        past.retain(|pg, _| exists(pg));
        unknown.retain(exists);
        for pool in map.pools.values() {
            let Ok(placement) = PoolPlacement::new(map, pool.id) else {
                continue;
            };
            for seed in 0..pool.pg_num {
                let up = placement.map_pg(seed).up;
                let pg = PgId::new(pool.id, seed);
                let entry = current.entry(pg).or_insert_with(|| Interval {
                    up: up.clone(),
                    start: map.epoch,
                });
                // With epochs skipped (this OSD just started, or fell behind),
                // earlier intervals went unseen; a PG first seen in the map that
                // follows the last observed is new and has none.
                if !contiguous {
                    unknown.insert(pg);
                }
                if !contiguous || entry.up != up {
                    let ended = std::mem::replace(
                        entry,
                        Interval {
                            up,
                            start: map.epoch,
                        },
                    );
                    let history = past.entry(pg).or_default();
                    if ended.up != entry.up && history.last() != Some(&ended) {
                        history.push(ended);
                        if history.len() > PAST_INTERVALS {
                            history.remove(0);
                        }
                    }
                }
            }
        }
        state.epoch = map.epoch;
        true
    }

    fn save(&self, state: &State, map: &ClusterMap) -> anyhow::Result<()> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let pgs = state
            .current
            .iter()
            .map(|(pg, current)| SavedPg {
                pg: *pg,
                current: current.clone(),
                past: state.past.get(pg).cloned().unwrap_or_default(),
                unknown: state.unknown.contains(pg),
            })
            .collect();
        let saved = Saved {
            map: map.clone(),
            pgs,
        };
        lcpfs_core::file::replace_private(file, &serde_json::to_vec(&saved)?)?;
        Ok(())
    }

    /// The first epoch of the PG's current interval (0 when not seen yet).
    pub fn start(&self, pg: PgId) -> u64 {
        self.state()
            .current
            .get(&pg)
            .map_or(0, |interval| interval.start)
    }

    /// The PGs `osd` is primary for in the last observed map, with their up sets
    /// and the epochs their intervals began, in PG order.
    pub fn led_by(&self, osd: u32) -> Vec<(PgId, UpSet, u64)> {
        let state = self.state();
        let mut led: Vec<(PgId, UpSet, u64)> = state
            .current
            .iter()
            .filter(|(_, interval)| primary(&interval.up) == Some(osd))
            .map(|(pg, interval)| (*pg, interval.up.clone(), interval.start))
            .collect();
        led.sort_unstable_by_key(|(pg, _, _)| *pg);
        led
    }

    /// The OSDs sharing a PG with `osd` in the last observed map.
    pub fn neighbours(&self, osd: u32) -> Vec<u32> {
        let state = self.state();
        let mut peers: Vec<u32> = state
            .current
            .values()
            .filter(|interval| interval.up.contains(&Some(osd)))
            .flat_map(|interval| interval.members())
            .filter(|&peer| peer != osd)
            .collect();
        peers.sort_unstable();
        peers.dedup();
        peers
    }

    /// The OSDs of the PG's earlier intervals that are up but not in `up`, other
    /// than `me`: they may hold writes the up set lacks. When the PG's earlier
    /// intervals went unseen, every up OSD.
    pub fn prior_osds(&self, map: &ClusterMap, pg: PgId, up: &UpSet, me: u32) -> Vec<u32> {
        let state = self.state();
        let candidates: Vec<u32> = if state.unknown.contains(&pg) {
            map.osds.keys().copied().collect()
        } else {
            state
                .past
                .get(&pg)
                .into_iter()
                .flatten()
                .flat_map(Interval::members)
                .collect()
        };
        let mut prior: Vec<u32> = candidates
            .into_iter()
            .filter(|osd| !up.contains(&Some(*osd)) && *osd != me)
            .filter(|osd| map.osds.get(osd).is_some_and(|info| info.up))
            .collect();
        prior.sort_unstable();
        prior.dedup();
        prior
    }

    /// The PG's earlier intervals, from the one that began at epoch `since` on,
    /// whose writes peering cannot see: intervals with at least `min_size` OSDs
    /// (they may have acknowledged writes, each held by all of them) of which
    /// fewer than `needed` are up now, while one that is down is not marked lost.
    pub fn unreachable(
        &self,
        map: &ClusterMap,
        pg: PgId,
        since: u64,
        min_size: u32,
        needed: u32,
    ) -> Vec<Interval> {
        let state = self.state();
        let up = |osd: &u32| map.osds.get(osd).is_some_and(|info| info.up);
        let waited_for = |osd: &u32| map.osds.get(osd).is_some_and(|info| !info.up && !info.lost);
        state
            .past
            .get(&pg)
            .into_iter()
            .flatten()
            .filter(|interval| interval.start >= since)
            .filter(|interval| interval.members().count() as u32 >= min_size)
            .filter(|interval| (interval.members().filter(up).count() as u32) < needed)
            .filter(|interval| interval.members().any(|osd| waited_for(&osd)))
            .cloned()
            .collect()
    }

    /// After peering in the interval that began at `start` with up set `up`, that
    /// up set holds the PG's newest history: its earlier intervals no longer
    /// matter, unless the PG has moved on meanwhile (then the intervals since are
    /// still needed).
    pub fn forget_past(&self, pg: PgId, start: u64, up: &UpSet) {
        let mut state = self.state();
        let current = state.current.get(&pg);
        if current.is_none_or(|current| current.start != start || current.up != *up) {
            return;
        }
        state.past.remove(&pg);
        state.unknown.remove(&pg);
    }
}

#[cfg(test)]
mod tests {
    use lcpfs_core::crush::pg_mapping;
    use lcpfs_core::map::{BucketType, OsdInfo, PoolKind, PoolSpec};

    use super::*;

    /// Five up OSDs on hosts of their own and a pool of one PG, 3 copies.
    fn cluster() -> (ClusterMap, PgId) {
        let mut map = ClusterMap::new("fsid");
        for id in 0..5 {
            map.add_osd(OsdInfo::new(
                id,
                format!("127.0.0.1:{}", 6800 + id),
                format!("h{id}"),
            ))
            .unwrap();
        }
        let (pool, _) = map
            .create_pool(PoolSpec {
                name: "data".into(),
                kind: PoolKind::Replicated {
                    size: 3,
                    min_size: 2,
                },
                pg_num: 1,
                failure_domain: BucketType::Host,
                device_class: None,
                compression: None,
            })
            .unwrap();
        (map, PgId::new(pool, 0))
    }

    fn up(map: &ClusterMap, pg: PgId) -> Vec<u32> {
        pg_mapping(map, pg)
            .unwrap()
            .up
            .into_iter()
            .flatten()
            .collect()
    }

    #[test]
    fn an_interval_whose_osds_are_all_down_blocks_until_one_returns_or_all_are_lost() {
        let (mut map, pg) = cluster();
        let intervals = Intervals::new(None);
        intervals.observe(&map);
        let [a, b, c] = up(&map, pg)[..] else {
            panic!("three copies")
        };
        map.mark_down(c).unwrap();
        intervals.observe(&map);
        let took_writes = intervals.start(pg);
        for change in [
            ClusterMap::mark_down as fn(&mut ClusterMap, u32) -> _,
            ClusterMap::mark_out,
        ] {
            for osd in [a, b] {
                change(&mut map, osd).unwrap();
                intervals.observe(&map);
            }
        }
        let blocking = |map: &ClusterMap, since| intervals.unreachable(map, pg, since, 2, 1);
        let blocked = blocking(&map, took_writes);
        assert_eq!(blocked.len(), 1, "{blocked:?}");
        assert_eq!(blocked[0].up, vec![Some(a), Some(b)]);
        assert_eq!(blocked[0].start, took_writes);
        // A copy brought level after that interval holds its writes.
        assert!(blocking(&map, map.epoch).is_empty());

        let mut lost = map.clone();
        lost.mark_lost(a).unwrap();
        assert_eq!(blocking(&lost, took_writes).len(), 1, "b may still return");
        lost.mark_lost(b).unwrap();
        assert!(blocking(&lost, took_writes).is_empty());

        let mut back = map.clone();
        back.mark_up(b).unwrap();
        assert!(blocking(&back, took_writes).is_empty());
        assert!(
            intervals
                .prior_osds(&back, pg, &pg_mapping(&back, pg).unwrap().up, 9)
                .contains(&b),
            "the returning OSD is asked"
        );
    }

    #[test]
    fn a_restarted_osd_knows_the_intervals_it_saw_and_replays_the_ones_it_missed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("intervals.json");
        let (mut map, pg) = cluster();
        let before = Intervals::new(Some(file.clone()));
        before.observe(&map);
        let [a, b, c] = up(&map, pg)[..] else {
            panic!("three copies")
        };
        map.mark_down(c).unwrap();
        before.observe(&map);
        let saved = map.clone();
        let copy = dir.path().join("copy.json");
        std::fs::copy(&file, &copy).unwrap();

        // Stopped while the OSDs of its last interval fail and leave.
        let mut missed = Vec::new();
        for change in [
            ClusterMap::mark_down as fn(&mut ClusterMap, u32) -> _,
            ClusterMap::mark_out,
        ] {
            for osd in [a, b] {
                change(&mut map, osd).unwrap();
                missed.push(map.clone());
            }
        }
        let after = Intervals::new(Some(file.clone()));
        assert_eq!(after.restore(&map).unwrap(), Some(saved.clone()));
        for epoch in &missed {
            after.observe(epoch);
        }
        let blocked = after.unreachable(&map, pg, saved.epoch, 2, 1);
        assert_eq!(blocked.len(), 1, "{blocked:?}");
        assert_eq!(blocked[0].up, vec![Some(a), Some(b)]);
        assert_eq!(blocked[0].start, saved.epoch);

        // Without the epochs in between, every up OSD is asked.
        let skipped = Intervals::new(Some(copy));
        skipped.restore(&map).unwrap();
        skipped.observe(&map);
        let current = pg_mapping(&map, pg).unwrap().up;
        let everyone: Vec<u32> = map
            .osds
            .values()
            .filter(|osd| osd.up && !current.contains(&Some(osd.id)))
            .map(|osd| osd.id)
            .collect();
        assert_eq!(skipped.prior_osds(&map, pg, &current, 9), everyone);

        let stranger = ClusterMap::new("another");
        assert_eq!(Intervals::new(Some(file)).restore(&stranger).unwrap(), None);
    }
}
