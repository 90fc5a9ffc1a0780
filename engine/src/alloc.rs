//! The space allocator: which rows of each vdev are free.
//!
//! Free space is a set of extents per vdev, kept twice:
//! - the *durable* map is what RocksDB holds (`a` keys); the committer changes it only
//!   inside the same write batch as the metadata that starts or stops referencing the
//!   space, so a crash can neither leak nor double-use a row;
//! - the *available* map is what may be handed out now: the durable map minus rows
//!   handed to transactions still in flight, minus rows freed by a committed transaction
//!   that a reader may still be looking at.
//!
//! Rows freed by a commit are not reusable at once: a reader that fetched the old block
//! pointer before the commit may still read them, and a scrub may still repair them.
//! [`Allocator::pin`] returns a guard for such readers; freed rows become available only
//! when every reader that could have seen them has let go. This is what makes
//! copy-on-write safe: a live block is never overwritten, and neither is a block someone
//! is reading.
//!
//! A slice of each vdev (1/32, as ZFS's slop space) is kept back from writes, so a full
//! store can still commit deletes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::error::{Error, Result};

/// One run of rows on one vdev.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Run {
    /// Vdev index.
    pub vdev: u32,
    /// First row.
    pub row: u64,
    /// Number of rows.
    pub nrows: u64,
}

/// The RocksDB key of a durable free extent.
pub(crate) fn extent_key(vdev: u32, start: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(13);
    key.push(b'a');
    key.extend_from_slice(&vdev.to_be_bytes());
    key.extend_from_slice(&start.to_be_bytes());
    key
}

/// Decodes an `a` key and its value.
pub(crate) fn decode_extent(key: &[u8], value: &[u8]) -> Result<Run> {
    if key.len() != 13 || value.len() != 8 {
        return Err(Error::Corrupt("malformed free-space record".into()));
    }
    Ok(Run {
        vdev: u32::from_be_bytes(key[1..5].try_into().expect("4 bytes")),
        row: u64::from_be_bytes(key[5..13].try_into().expect("8 bytes")),
        nrows: u64::from_le_bytes(value.try_into().expect("8 bytes")),
    })
}

type Extents = BTreeMap<u64, u64>;
/// Changes to durable extents: key → new length, or `None` for removed.
pub(crate) type ExtentChanges = BTreeMap<(u32, u64), Option<u64>>;

fn insert(
    map: &mut Extents,
    mut start: u64,
    mut len: u64,
    vdev: u32,
    log: &mut Option<&mut ExtentChanges>,
) {
    if let Some((&prev, &prev_len)) = map.range(..start).next_back()
        && prev + prev_len == start
    {
        map.remove(&prev);
        record(log, vdev, prev, None);
        start = prev;
        len += prev_len;
    }
    if let Some(&next_len) = map.get(&(start + len)) {
        map.remove(&(start + len));
        record(log, vdev, start + len, None);
        len += next_len;
    }
    map.insert(start, len);
    record(log, vdev, start, Some(len));
}

fn remove(
    map: &mut Extents,
    start: u64,
    len: u64,
    vdev: u32,
    log: &mut Option<&mut ExtentChanges>,
) -> bool {
    let Some((&ext, &ext_len)) = map.range(..=start).next_back() else {
        return false;
    };
    if ext + ext_len < start + len {
        return false;
    }
    map.remove(&ext);
    record(log, vdev, ext, None);
    if ext < start {
        map.insert(ext, start - ext);
        record(log, vdev, ext, Some(start - ext));
    }
    if start + len < ext + ext_len {
        map.insert(start + len, ext + ext_len - start - len);
        record(log, vdev, start + len, Some(ext + ext_len - start - len));
    }
    true
}

fn record(log: &mut Option<&mut ExtentChanges>, vdev: u32, start: u64, len: Option<u64>) {
    if let Some(log) = log {
        log.insert((vdev, start), len);
    }
}

#[derive(Debug)]
struct State {
    available: Vec<Extents>,
    available_rows: Vec<u64>,
    durable: Vec<Extents>,
    cursor: Vec<u64>,
    /// Reader pins: generation → number of readers that started in it.
    readers: BTreeMap<u64, usize>,
    generation: u64,
    /// Runs freed by commits, tagged with the generation of the commit.
    deferred: Vec<(u64, Run)>,
}

/// Space allocator shared by all writers of a store.
#[derive(Debug)]
pub struct Allocator {
    state: Mutex<State>,
    total_rows: Vec<u64>,
}

/// Holds back reuse of freed rows while a reader may still look at them.
#[derive(Debug)]
pub struct Pin {
    allocator: Arc<Allocator>,
    generation: u64,
}

impl Drop for Pin {
    fn drop(&mut self) {
        let mut state = self.allocator.lock();
        if let Some(count) = state.readers.get_mut(&self.generation) {
            *count -= 1;
            if *count == 0 {
                state.readers.remove(&self.generation);
            }
        }
        release_deferred(&mut state);
    }
}

fn release_deferred(state: &mut State) {
    let oldest_reader = state.readers.keys().next().copied().unwrap_or(u64::MAX);
    let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut state.deferred)
        .into_iter()
        .partition(|(generation, _)| *generation < oldest_reader);
    state.deferred = waiting;
    for (_, run) in ready {
        make_available(state, run);
    }
}

fn make_available(state: &mut State, run: Run) {
    let v = run.vdev as usize;
    insert(
        &mut state.available[v],
        run.row,
        run.nrows,
        run.vdev,
        &mut None,
    );
    state.available_rows[v] += run.nrows;
}

impl Allocator {
    /// Builds the allocator from the durable free extents; `total_rows` per vdev.
    pub(crate) fn new(
        total_rows: Vec<u64>,
        extents: impl IntoIterator<Item = Run>,
    ) -> Result<Self> {
        let vdevs = total_rows.len();
        let mut durable = vec![Extents::new(); vdevs];
        let mut rows = vec![0; vdevs];
        for run in extents {
            let v = run.vdev as usize;
            if v >= vdevs || run.row + run.nrows > total_rows[v] {
                return Err(Error::Corrupt(format!(
                    "free extent {run:?} outside the vdev"
                )));
            }
            durable[v].insert(run.row, run.nrows);
            rows[v] += run.nrows;
        }
        Ok(Allocator {
            state: Mutex::new(State {
                available: durable.clone(),
                available_rows: rows,
                durable,
                cursor: vec![0; vdevs],
                readers: BTreeMap::new(),
                generation: 0,
                deferred: Vec::new(),
            }),
            total_rows,
        })
    }

    /// The durable extents of a freshly created pool: every row of every vdev free.
    pub(crate) fn fresh_extents(total_rows: &[u64]) -> Vec<Run> {
        total_rows
            .iter()
            .enumerate()
            .filter(|(_, rows)| **rows > 0)
            .map(|(v, rows)| Run {
                vdev: v as u32,
                row: 0,
                nrows: *rows,
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("allocator lock poisoned")
    }

    /// Pins freed rows for a reader (see the module doc).
    pub fn pin(self: &Arc<Self>) -> Pin {
        let mut state = self.lock();
        let generation = state.generation;
        *state.readers.entry(generation).or_default() += 1;
        Pin {
            allocator: Arc::clone(self),
            generation,
        }
    }

    /// Hands out rows for a block. `rows_for(vdev)` says how many rows the block needs on
    /// each vdev. Picks the vdev with the most free space outside its reserve.
    pub fn allocate(
        &self,
        rows_for: impl Fn(u32) -> u64,
        usable: impl Fn(u32) -> bool,
    ) -> Result<Run> {
        let mut state = self.lock();
        let mut best: Option<(u32, u64)> = None;
        for v in 0..self.total_rows.len() {
            let vdev = v as u32;
            if !usable(vdev) {
                continue;
            }
            let reserve = self.total_rows[v] / 32;
            let spare = state.available_rows[v].saturating_sub(reserve);
            if spare >= rows_for(vdev) && best.is_none_or(|(_, s)| spare > s) {
                best = Some((vdev, spare));
            }
        }
        let Some((vdev, _)) = best else {
            return Err(Error::NoSpace(format!(
                "no vdev has {} free rows outside its reserve",
                rows_for(0)
            )));
        };
        let v = vdev as usize;
        let need = rows_for(vdev);
        let cursor = state.cursor[v];
        let found = state.available[v]
            .range(cursor..)
            .chain(state.available[v].range(..cursor))
            .find(|(_, len)| **len >= need)
            .map(|(start, _)| *start);
        let Some(start) = found else {
            return Err(Error::NoSpace(format!(
                "vdev {vdev} is too fragmented for a run of {need} rows"
            )));
        };
        remove(&mut state.available[v], start, need, vdev, &mut None);
        state.available_rows[v] -= need;
        state.cursor[v] = start + need;
        Ok(Run {
            vdev,
            row: start,
            nrows: need,
        })
    }

    /// Returns rows that were handed out but never committed.
    pub fn release(&self, runs: &[Run]) {
        let mut state = self.lock();
        for run in runs {
            make_available(&mut state, *run);
        }
    }

    /// Applies a group's allocations and frees to the durable map, returning the
    /// changed extents to write in the group's batch.
    pub(crate) fn durable_changes(
        &self,
        allocated: &[Run],
        freed: &[Run],
    ) -> Result<ExtentChanges> {
        // A run from damaged metadata must fail the commit, not the allocator.
        for run in allocated.iter().chain(freed) {
            let inside = self.total_rows.get(run.vdev as usize).is_some_and(|&rows| {
                run.nrows > 0
                    && run
                        .row
                        .checked_add(run.nrows)
                        .is_some_and(|end| end <= rows)
            });
            if !inside {
                return Err(Error::Corrupt(format!("run {run:?} lies outside its vdev")));
            }
        }
        let mut state = self.lock();
        let mut log = ExtentChanges::new();
        for run in allocated {
            if !remove(
                &mut state.durable[run.vdev as usize],
                run.row,
                run.nrows,
                run.vdev,
                &mut Some(&mut log),
            ) {
                return Err(Error::Corrupt(format!(
                    "allocated {run:?} is not free on disk"
                )));
            }
        }
        for run in freed {
            insert(
                &mut state.durable[run.vdev as usize],
                run.row,
                run.nrows,
                run.vdev,
                &mut Some(&mut log),
            );
        }
        Ok(log)
    }

    /// Re-reads the durable map after a failed commit.
    pub(crate) fn reset_durable(&self, extents: impl IntoIterator<Item = Run>) {
        let mut state = self.lock();
        for map in &mut state.durable {
            map.clear();
        }
        for run in extents {
            state.durable[run.vdev as usize].insert(run.row, run.nrows);
        }
    }

    /// Makes rows freed by a durable commit reusable once no reader can see them.
    pub(crate) fn freed_after_commit(&self, freed: &[Run]) {
        let mut state = self.lock();
        let generation = state.generation;
        state
            .deferred
            .extend(freed.iter().map(|run| (generation, *run)));
        state.generation += 1;
        release_deferred(&mut state);
    }

    /// Free rows per vdev as the durable map has them.
    pub fn durable_free_rows(&self) -> Vec<u64> {
        let state = self.lock();
        state.durable.iter().map(|m| m.values().sum()).collect()
    }

    /// Every durable free run, in order (used by scrub's leak check).
    pub fn durable_runs(&self) -> Vec<Run> {
        let state = self.lock();
        state
            .durable
            .iter()
            .enumerate()
            .flat_map(|(v, m)| {
                m.iter().map(move |(&row, &nrows)| Run {
                    vdev: v as u32,
                    row,
                    nrows,
                })
            })
            .collect()
    }

    /// Rows per vdev.
    pub fn total_rows(&self) -> &[u64] {
        &self.total_rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn runs_outside_the_vdev_fail_the_commit_not_the_allocator() {
        let alloc = Allocator::new(vec![64], Allocator::fresh_extents(&[64])).unwrap();
        let bad = Run {
            vdev: 0,
            row: u64::MAX - 1,
            nrows: 4,
        };
        assert!(matches!(
            alloc.durable_changes(&[], &[bad]),
            Err(Error::Corrupt(_))
        ));
        let other_vdev = Run {
            vdev: 7,
            row: 0,
            nrows: 1,
        };
        assert!(alloc.durable_changes(&[], &[other_vdev]).is_err());
        assert_eq!(alloc.durable_runs(), Allocator::fresh_extents(&[64]));
    }

    #[test]
    fn freed_rows_wait_for_readers() {
        let alloc = Arc::new(Allocator::new(vec![64], Allocator::fresh_extents(&[64])).unwrap());
        let run = alloc.allocate(|_| 62, |_| true).unwrap();
        alloc.durable_changes(&[run], &[]).unwrap();
        alloc.freed_after_commit(&[]);
        assert!(
            alloc.allocate(|_| 1, |_| true).is_err(),
            "only the reserve is left"
        );
        let pin = alloc.pin();
        alloc.durable_changes(&[], &[run]).unwrap();
        alloc.freed_after_commit(&[run]);
        assert!(
            alloc.allocate(|_| 1, |_| true).is_err(),
            "a reader still pins the run"
        );
        drop(pin);
        assert!(alloc.allocate(|_| 1, |_| true).is_ok());
    }

    proptest! {
        /// Allocations never overlap each other or leave the vdev, and freeing all
        /// restores one extent per vdev.
        #[test]
        fn allocations_are_disjoint(sizes in proptest::collection::vec(1u64..20, 1..60)) {
            let total = vec![500u64, 300];
            let alloc = Allocator::new(total.clone(), Allocator::fresh_extents(&total)).unwrap();
            let mut runs = Vec::new();
            for n in sizes {
                if let Ok(run) = alloc.allocate(|_| n, |_| true) {
                    runs.push(run);
                }
            }
            let mut owned = std::collections::HashSet::new();
            for run in &runs {
                prop_assert!(run.row + run.nrows <= total[run.vdev as usize]);
                for r in run.row..run.row + run.nrows {
                    prop_assert!(owned.insert((run.vdev, r)), "row handed out twice");
                }
            }
            alloc.durable_changes(&runs, &[]).unwrap();
            alloc.durable_changes(&[], &runs).unwrap();
            prop_assert_eq!(alloc.durable_runs(), Allocator::fresh_extents(&total));
        }
    }
}
