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
use lcpfs_core::map::{ClusterMap, Pool};
use lcpfs_core::pg::{PgId, split_parent};
use serde::{Deserialize, Serialize};

use crate::pg::UpSet;

/// One interval of a PG: its up set, the epoch it began, the smallest min_size
/// its pool had during it (0: not recorded, in intervals saved before it was),
/// and whether it may have gone active: its primary was recorded up through its
/// start (`up_thru`) before it ended, or this OSD could not see (an interval that
/// never went active took no writes and served no reads).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub up: UpSet,
    pub start: u64,
    #[serde(default)]
    pub min_size: u32,
    #[serde(default = "may_have")]
    pub went_rw: bool,
}

/// Intervals saved before `went_rw` was recorded may have gone active.
fn may_have() -> bool {
    true
}

/// True when `map` records the primary of `up` up through `start`: a PG of the
/// interval that began at `start` may have gone active.
fn recorded_up_thru(map: &ClusterMap, up: &UpSet, start: u64) -> bool {
    primary(up)
        .and_then(|osd| map.osds.get(&osd))
        .is_some_and(|osd| osd.up_thru >= start)
}

/// The smaller of two recorded min_sizes (0 is not recorded).
fn lowest(a: u32, b: u32) -> u32 {
    match (a, b) {
        (0, other) | (other, 0) => other,
        (a, b) => a.min(b),
    }
}

/// Adds an ended interval to a PG's earlier ones, kept compact and complete (like
/// Ceph's PastIntervals): what peering asks of an earlier interval depends only
/// on its OSDs, whether it began after a copy was brought level, and its
/// min_size, so intervals of one up set are kept as one, with the newest start
/// and the smallest min_size. The history is then at most one interval per up
/// set the PG had since it was last clean, however long the map churned.
fn remember(history: &mut Vec<Interval>, ended: Interval) {
    let mut merged = ended;
    history.retain(|old| {
        if old.up != merged.up {
            return true;
        }
        merged.start = merged.start.max(old.start);
        merged.min_size = lowest(merged.min_size, old.min_size);
        merged.went_rw |= old.went_rw;
        false
    });
    history.push(merged);
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
    /// Per pool: its pg_num in the last map observed.
    pg_nums: HashMap<u32, u32>,
    /// Per PG: its primary in the last map observed, and the epoch since which
    /// it has been (Ceph's same_primary_since). Not saved: after a restart it
    /// counts from the first map observed.
    primaries: HashMap<PgId, (Option<u32>, u64)>,
}

impl State {
    /// The histories the PGs that `map` splits off start with: each its parent's
    /// earlier intervals and the parent's interval until this map, and whether
    /// they went unseen.
    fn split_histories(&self, map: &ClusterMap) -> HashMap<PgId, (Vec<Interval>, bool)> {
        let mut inherited = HashMap::new();
        for pool in map.pools.values() {
            let Some(&before) = self.pg_nums.get(&pool.id) else {
                continue;
            };
            for seed in before..pool.pg_num {
                let child = PgId::new(pool.id, seed);
                let parent = split_parent(child, before);
                let mut history = self.past.get(&parent).cloned().unwrap_or_default();
                history.extend(self.current.get(&parent).cloned());
                inherited.insert(child, (history, self.unknown.contains(&parent)));
            }
        }
        inherited
    }
}

/// Each pool's pg_num in `map`.
fn pg_nums(map: &ClusterMap) -> HashMap<u32, u32> {
    map.pools
        .values()
        .map(|pool| (pool.id, pool.pg_num))
        .collect()
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
        state.pg_nums = pg_nums(&saved.map);
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
        let inherited = state.split_histories(map);
        let State {
            current,
            past,
            unknown,
            pg_nums: known_pg_nums,
            primaries,
            ..
        } = &mut *state;
        current.retain(|pg, _| exists(pg));
        primaries.retain(|pg, _| exists(pg));
        past.retain(|pg, _| exists(pg));
        unknown.retain(exists);
        // A PG split off another in this map holds its parent's objects on its
        // parent's OSDs: it starts with its parent's history, so that peering
        // asks them.
        for (child, (history, unseen)) in inherited {
            past.insert(child, history);
            if unseen {
                unknown.insert(child);
            }
        }
        *known_pg_nums = pg_nums(map);
        for pool in map.pools.values() {
            let Ok(placement) = PoolPlacement::new(map, pool.id) else {
                continue;
            };
            let min_size = pool.min_size();
            for seed in 0..pool.pg_num {
                let up = placement.map_pg(seed).up;
                let pg = PgId::new(pool.id, seed);
                let leader = primary(&up);
                match primaries.get(&pg) {
                    Some((held, _)) if contiguous && *held == leader => {}
                    _ => {
                        primaries.insert(pg, (leader, map.epoch));
                    }
                }
                let entry = current.entry(pg).or_insert_with(|| Interval {
                    up: up.clone(),
                    start: map.epoch,
                    min_size,
                    went_rw: !contiguous,
                });
                // An interval may have acknowledged writes with the smallest
                // min_size the pool had during it, once its primary was recorded
                // up through its start in one of its maps.
                entry.min_size = lowest(entry.min_size, min_size);
                if contiguous && entry.up == up {
                    entry.went_rw |= recorded_up_thru(map, &entry.up, entry.start);
                }
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
                            min_size,
                            went_rw: !contiguous,
                        },
                    );
                    if ended.up != entry.up {
                        remember(past.entry(pg).or_default(), ended);
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

    /// The epoch since which the PG has had the primary it has in the last
    /// observed map (the last observed epoch when unknown).
    pub fn primary_since(&self, pg: PgId) -> u64 {
        let state = self.state();
        state
            .primaries
            .get(&pg)
            .map_or(state.epoch, |(_, since)| *since)
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
    /// that peering cannot do without while one of their down OSDs is not marked
    /// lost. Of those that may have gone active (see [`Interval`]): those with at
    /// least the min_size of their time OSDs (today's, where it was not
    /// recorded), which may have acknowledged writes (each held by all of them),
    /// of which fewer than the pool needs to read an object are up now; and, for
    /// erasure-coded pools, which serve reads with `k` shards, those of at least
    /// `k` OSDs none of which is up, so none can say how long the read lease it
    /// granted their primary lasts (see [`crate::lease`]).
    pub fn unreachable(
        &self,
        map: &ClusterMap,
        pool: &Pool,
        pg: PgId,
        since: u64,
    ) -> Vec<Interval> {
        let state = self.state();
        let up = |osd: &u32| map.osds.get(osd).is_some_and(|info| info.up);
        let waited_for = |osd: &u32| map.osds.get(osd).is_some_and(|info| !info.up && !info.lost);
        let needed = pool.shards_needed() as u32;
        state
            .past
            .get(&pg)
            .into_iter()
            .flatten()
            .filter(|interval| interval.start >= since && interval.went_rw)
            .filter(|interval| {
                let min_size = match interval.min_size {
                    0 => pool.min_size(),
                    then => then,
                };
                let members = interval.members().count() as u32;
                let reachable = interval.members().filter(up).count() as u32;
                let wrote = members >= min_size && reachable < needed;
                let read = pool.is_erasure() && members >= pool.read_size() && reachable == 0;
                wrote || read
            })
            .filter(|interval| interval.members().any(|osd| waited_for(&osd)))
            .cloned()
            .collect()
    }

    /// The primaries of the PG's earlier intervals from the one that began at
    /// epoch `since` on that may have gone active, each with its interval's
    /// OSDs.
    pub fn past_primaries(&self, pg: PgId, since: u64) -> Vec<(u32, Vec<u32>)> {
        let state = self.state();
        state
            .past
            .get(&pg)
            .into_iter()
            .flatten()
            .filter(|interval| interval.start >= since && interval.went_rw)
            .filter_map(|interval| Some((primary(&interval.up)?, interval.members().collect())))
            .collect()
    }

    /// True when the PG's earlier intervals went unseen (epochs skipped).
    pub fn unknown(&self, pg: PgId) -> bool {
        self.state().unknown.contains(&pg)
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

    /// The PG's current primary is recorded up through its interval (it went
    /// active and may take writes), in a map `intervals` observes.
    fn went_active(map: &mut ClusterMap, intervals: &Intervals, pg: PgId) {
        let primary = pg_mapping(map, pg).unwrap().primary.unwrap();
        map.set_up_thru(primary, intervals.start(pg)).unwrap();
        intervals.observe(map);
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
    fn the_primary_counts_from_the_epoch_it_took_the_pg_over() {
        let (mut map, pg) = cluster();
        let intervals = Intervals::new(None);
        intervals.observe(&map);
        let first = map.epoch;
        assert_eq!(intervals.primary_since(pg), first);
        let [a, _, c] = up(&map, pg)[..] else {
            panic!("three copies")
        };
        // A replica leaves: a new interval, the same primary.
        map.mark_down(c).unwrap();
        intervals.observe(&map);
        assert!(intervals.start(pg) > first);
        assert_eq!(intervals.primary_since(pg), first);
        // The primary leaves and comes back: it counts from its return.
        map.mark_down(a).unwrap();
        intervals.observe(&map);
        map.mark_up(a).unwrap();
        intervals.observe(&map);
        assert_eq!(up(&map, pg)[0], a);
        assert_eq!(intervals.primary_since(pg), map.epoch);
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
        went_active(&mut map, &intervals, pg);
        for change in [
            ClusterMap::mark_down as fn(&mut ClusterMap, u32) -> _,
            ClusterMap::mark_out,
        ] {
            for osd in [a, b] {
                change(&mut map, osd).unwrap();
                intervals.observe(&map);
            }
        }
        let blocking =
            |map: &ClusterMap, since| intervals.unreachable(map, &map.pools[&pg.pool], pg, since);
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
        let took_writes = before.start(pg);
        went_active(&mut map, &before, pg);
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
        let blocked = after.unreachable(&map, &map.pools[&pg.pool], pg, took_writes);
        assert_eq!(blocked.len(), 1, "{blocked:?}");
        assert_eq!(blocked[0].up, vec![Some(a), Some(b)]);
        assert_eq!(blocked[0].start, took_writes);

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

    #[test]
    fn a_pg_split_off_another_asks_its_parents_osds() {
        let (mut map, parent) = cluster();
        let intervals = Intervals::new(None);
        intervals.observe(&map);
        let held = up(&map, parent);
        // Peered: the parent's history is known from here on.
        let held_set = pg_mapping(&map, parent).unwrap().up;
        intervals.forget_past(parent, intervals.start(parent), &held_set);
        map.set_pg_num(parent.pool, 4).unwrap();
        intervals.observe(&map);
        for seed in 1..4 {
            let child = PgId::new(parent.pool, seed);
            let child_up = pg_mapping(&map, child).unwrap().up;
            let mut expected: Vec<u32> = held
                .iter()
                .copied()
                .filter(|osd| !child_up.contains(&Some(*osd)))
                .collect();
            expected.sort_unstable();
            assert_eq!(
                intervals.prior_osds(&map, child, &child_up, 99),
                expected,
                "{child} asks the OSDs that hold its objects"
            );
            // Those OSDs going down blocks the child as it blocks the parent.
            let mut down = map.clone();
            for &osd in &held {
                down.mark_down(osd).unwrap();
                intervals.observe(&down);
            }
            assert!(
                !intervals
                    .unreachable(&down, &down.pools[&child.pool], child, 0)
                    .is_empty()
            );
        }
    }

    #[test]
    fn the_history_stays_complete_and_compact_however_long_the_map_churns() {
        let (mut map, pg) = cluster();
        let intervals = Intervals::new(None);
        intervals.observe(&map);
        let [a, ..] = up(&map, pg)[..] else {
            panic!("three copies")
        };
        let first_down = map.epoch + 1;
        for _ in 0..50 {
            map.mark_down(a).unwrap();
            intervals.observe(&map);
            map.mark_up(a).unwrap();
            intervals.observe(&map);
        }
        let past = intervals.state().past.get(&pg).cloned().unwrap_or_default();
        assert_eq!(past.len(), 2, "one interval per up set: {past:?}");
        assert!(past.iter().all(|interval| interval.start > first_down + 90));
        assert!(past.iter().any(|interval| interval.up.contains(&Some(a))));
        assert!(past.iter().any(|interval| !interval.up.contains(&Some(a))));
    }

    #[test]
    fn an_interval_is_judged_by_the_min_size_of_its_time() {
        let (mut map, pg) = cluster();
        let intervals = Intervals::new(None);
        intervals.observe(&map);
        let [a, b, c] = up(&map, pg)[..] else {
            panic!("three copies")
        };
        // min_size 1 while only `a` and `b` are up: an interval of two may have
        // taken writes; then `c` alone.
        map.set_pool_size(pg.pool, 3, 1).unwrap();
        map.mark_down(c).unwrap();
        intervals.observe(&map);
        let took_writes = intervals.start(pg);
        went_active(&mut map, &intervals, pg);
        map.mark_down(b).unwrap();
        intervals.observe(&map);
        map.mark_down(a).unwrap();
        intervals.observe(&map);
        map.mark_up(c).unwrap();
        map.set_pool_size(pg.pool, 3, 3).unwrap();
        intervals.observe(&map);
        // Today's min_size (3) would call the two-OSD interval harmless.
        let blocked = intervals.unreachable(&map, &map.pools[&pg.pool], pg, took_writes);
        assert!(
            blocked.iter().any(|interval| interval.start == took_writes),
            "{blocked:?}"
        );
    }

    #[test]
    fn an_interval_whose_primary_was_never_recorded_up_through_it_blocks_nothing() {
        // `a` and `b` of an interval of two (min_size 2) die, with `a` recorded up
        // through it or not (it died before it could peer).
        let history = |recorded: bool| {
            let (mut map, pg) = cluster();
            let intervals = Intervals::new(None);
            intervals.observe(&map);
            let [a, b, c] = up(&map, pg)[..] else {
                panic!("three copies")
            };
            map.mark_down(c).unwrap();
            intervals.observe(&map);
            let start = intervals.start(pg);
            if recorded {
                went_active(&mut map, &intervals, pg);
            }
            for osd in [a, b] {
                map.mark_down(osd).unwrap();
                intervals.observe(&map);
            }
            let blocking = intervals.unreachable(&map, &map.pools[&pg.pool], pg, start);
            (blocking, intervals.past_primaries(pg, start), [a, b])
        };
        let (blocking, primaries, _) = history(false);
        assert!(blocking.is_empty(), "{blocking:?}");
        assert!(primaries.is_empty(), "{primaries:?}");
        let (blocking, primaries, [a, b]) = history(true);
        assert_eq!(blocking.len(), 1, "{blocking:?}");
        assert_eq!(primaries, vec![(a, vec![a, b])]);
    }
}
