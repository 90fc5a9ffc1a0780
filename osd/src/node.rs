//! One running OSD as the layers above see it: its id, engine store, the map it
//! follows, its PGs and their intervals, its peers, configuration and metrics,
//! and the small tables of per-PG progress that peering, recovery and scrub keep
//! and the PG states report (recovery slots and marks, scrub stamps, down PGs).
//!
//! A [`Node`] is wiring and state: the logic that uses it lives in the layers
//! above (peering, recovery, the backends, the client operations, scrub), each of
//! which takes it as a parameter.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use lcpfs_core::crush::{PgMapping, pg_mapping};
use lcpfs_core::map::{ClusterMap, Pool};
use lcpfs_core::pg::{PgId, object_to_pg};
use lcpfs_engine::{self as engine, Store};
use lcpfs_proto::PgRef;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

use crate::config::OsdConfig;
use crate::error::{OsdError, Result};
use crate::intervals::Intervals;
use crate::leases::Leases;
use crate::metrics::OsdMetrics;
use crate::peers::Peers;
use crate::pg::{self, PgLog, Registry, UpSet};

/// How long peering waits for the monitors to record its primary up through
/// the PG's interval.
pub const UP_THRU_WAIT: Duration = Duration::from_secs(10);

/// One running OSD's shared state.
pub struct Node {
    /// This OSD's id.
    pub id: u32,
    /// Its engine store.
    pub store: Arc<Store>,
    map: watch::Receiver<Arc<ClusterMap>>,
    /// Every PG's lock and in-memory state.
    pub pgs: Registry,
    /// Every PG's intervals as this OSD saw them.
    pub intervals: Intervals,
    /// Connections to the other OSDs.
    pub peers: Peers,
    /// Limits, intervals and throttles.
    pub config: OsdConfig,
    /// Counters and histograms served at `/metrics`.
    pub metrics: OsdMetrics,
    /// Read leases held from and granted to peers.
    pub leases: Leases,
    /// The newest epoch this OSD needs the monitors to record it up through
    /// (`up_thru`) before its PGs of an interval that began then go active; the
    /// daemon sends it to the monitors.
    up_thru_wanted: watch::Sender<u64>,
    /// PGs recovering or waiting for a recovery slot.
    pub recovery: RecoveryTable,
    /// Scrub history of the PGs this OSD is (or was) primary for.
    pub scrubs: Mutex<HashMap<PgId, ScrubStamp>>,
    /// PGs whose last peering found them down (waiting for an earlier interval's
    /// OSDs).
    pub down: Mutex<HashSet<PgId>>,
    /// Per pool, the pg_num this OSD's PG copies are split for: raised before a
    /// split begins, so that work on a PG under an older pg_num is refused.
    split_for: Mutex<HashMap<u32, u32>>,
}

impl Node {
    /// OSD `id` over its store, following `map`.
    pub fn new(
        id: u32,
        store: Arc<Store>,
        map: watch::Receiver<Arc<ClusterMap>>,
        config: OsdConfig,
    ) -> Self {
        let split_for = map
            .borrow()
            .pools
            .values()
            .map(|pool| (pool.id, pool.pg_num))
            .collect();
        Node {
            id,
            store,
            map,
            split_for: Mutex::new(split_for),
            pgs: Registry::default(),
            intervals: Intervals::new(config.intervals_file.clone()),
            peers: Peers::new(config.tls.clone()),
            recovery: RecoveryTable::new(config.max_recovering_pgs),
            scrubs: Mutex::new(HashMap::new()),
            down: Mutex::new(HashSet::new()),
            leases: Leases::new(config.read_lease),
            up_thru_wanted: watch::Sender::new(0),
            config,
            metrics: OsdMetrics::new().expect("OSD metrics register once"),
        }
    }

    /// Records the up set of every PG in `map`, which must be observed before it is
    /// published to the node: a PG whose up set changed (or any PG, when epochs
    /// were skipped) starts a new interval and is peered again before it serves.
    pub fn observe(&self, map: &ClusterMap) {
        self.intervals.observe(map);
    }

    /// Observes an epoch replayed on start, before the newest: the intervals are
    /// saved once, when the newest is observed.
    pub fn observe_replayed(&self, map: &ClusterMap) {
        self.intervals.record(map);
    }

    /// Restores the PG intervals an earlier run of this OSD saved; returns the last
    /// map it observed (see [`Intervals::restore`]).
    pub fn restore_intervals(&self, current: &ClusterMap) -> anyhow::Result<Option<ClusterMap>> {
        self.intervals.restore(current)
    }

    /// The engine store's status (space, per-disk errors).
    pub fn store_status(&self) -> engine::PoolStatus {
        self.store.status()
    }

    /// How many PG copies this OSD's store holds.
    pub fn pg_copies(&self) -> usize {
        pg::held(&self.store).len()
    }

    /// The up OSDs this one shares a PG with in the map it follows.
    pub fn heartbeat_peers(&self) -> Vec<u32> {
        let map = self.current();
        let mut peers = self.intervals.neighbours(self.id);
        peers.retain(|osd| map.osds.get(osd).is_some_and(|info| info.up));
        peers
    }

    /// True when the map this OSD follows says it is up.
    pub fn is_up(&self) -> bool {
        self.current().osds.get(&self.id).is_some_and(|osd| osd.up)
    }

    /// Waits (up to [`UP_THRU_WAIT`]) until the map records this OSD up through
    /// `epoch`, asking the monitors for it: before that, a PG this OSD leads in
    /// an interval that began at `epoch` may not go active (Ceph's `up_thru`), so
    /// that peering can tell the intervals that never went active.
    pub async fn wait_up_thru(&self, epoch: u64) -> Result<()> {
        let id = self.id;
        let recorded =
            |map: &Arc<ClusterMap>| map.osds.get(&id).is_some_and(|osd| osd.up_thru >= epoch);
        if recorded(&self.current()) {
            return Ok(());
        }
        self.up_thru_wanted.send_if_modified(|wanted| {
            let raise = *wanted < epoch;
            *wanted = (*wanted).max(epoch);
            raise
        });
        let mut map = self.map.clone();
        match tokio::time::timeout(UP_THRU_WAIT, map.wait_for(recorded)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(OsdError::Unavailable(format!(
                "the monitors have not recorded osd.{id} up through epoch {epoch} yet; retry"
            ))),
        }
    }

    /// The epochs this OSD needs recorded as up through, as they rise.
    pub fn up_thru_wanted(&self) -> watch::Receiver<u64> {
        self.up_thru_wanted.subscribe()
    }

    /// The map this OSD follows now.
    pub fn current(&self) -> Arc<ClusterMap> {
        self.map.borrow().clone()
    }

    /// Waits up to `wait` for the map to change.
    pub async fn map_changed(&self, wait: Duration) {
        let mut watch = self.map.clone();
        let _ = tokio::time::timeout(wait, watch.changed()).await;
    }

    /// A watch of the map, for a loop that acts on every change.
    pub fn map_watch(&self) -> watch::Receiver<Arc<ClusterMap>> {
        self.map.clone()
    }

    /// The map at `epoch` or newer: a sender ahead of this OSD makes it wait for the
    /// newer map first.
    pub async fn map_at_least(&self, epoch: u64) -> Result<Arc<ClusterMap>> {
        let mut map = self.map.clone();
        let wait = map.wait_for(|map| map.epoch >= epoch);
        match tokio::time::timeout(Duration::from_secs(5), wait).await {
            Ok(Ok(map)) => Ok(map.clone()),
            _ => Err(self.stale(format!(
                "osd.{} has not received map epoch {epoch} yet; retry",
                self.id
            ))),
        }
    }

    /// A refusal telling the sender to refresh its map (or find the new primary)
    /// and retry, carrying this OSD's epoch.
    pub fn stale(&self, message: String) -> OsdError {
        OsdError::Stale {
            message,
            epoch: self.current().epoch,
        }
    }

    /// The refusal of a request for a PG this OSD is not the primary of.
    pub fn not_primary(&self, pg: PgId, map: &ClusterMap) -> OsdError {
        self.stale(format!(
            "osd.{} is not the primary of PG {pg} at epoch {}",
            self.id, map.epoch
        ))
    }

    /// The epoch the PG's current interval began.
    pub fn interval(&self, pg: PgId) -> u64 {
        self.intervals.start(pg)
    }

    /// The PGs this OSD is primary for in the last observed map, with their up sets
    /// and the epochs their intervals began, in PG order.
    pub fn led_pgs(&self) -> Vec<(PgId, UpSet, u64)> {
        self.intervals.led_by(self.id)
    }

    /// Where `map` places the PG.
    pub fn mapping(&self, map: &ClusterMap, pg: PgId) -> Result<PgMapping> {
        pg_mapping(map, pg)
            .map_err(|error| OsdError::Internal(format!("placement of {pg}: {error}")))
    }

    /// The OSDs of the PG's up set in `map`.
    pub fn up_osds(&self, map: &ClusterMap, pg: PgId) -> Result<Vec<u32>> {
        Ok(self.mapping(map, pg)?.up.into_iter().flatten().collect())
    }

    /// The state of a PG under its lock (see [`pg::loaded`]). Refused when `pool`
    /// is from a map older than a growth of its pg_num that this OSD split its
    /// PGs for: the objects of the PG may have moved to its children.
    pub async fn loaded<'a>(
        &self,
        guard: &'a mut pg::PgGuard<'_>,
        pg: PgId,
        pool: &Pool,
    ) -> Result<&'a mut PgLog> {
        let split_for = self.split_for(pool.id);
        if pool.pg_num < split_for {
            return Err(self.stale(format!(
                "pool '{}' has {split_for} PGs now, not {}: PG {pg} was split",
                pool.name, pool.pg_num
            )));
        }
        pg::loaded(&self.store, guard, pg, pool).await
    }

    /// The pg_num this OSD's copies of the pool's PGs are split for (0: unknown).
    pub fn split_for(&self, pool: u32) -> u32 {
        self.split_for
            .lock()
            .expect("split pg_nums")
            .get(&pool)
            .copied()
            .unwrap_or(0)
    }

    /// Records that the pool's PGs are being split for `pg_num`; returns the
    /// pg_num they were split for before (0: the pool is new here).
    pub fn begin_split(&self, pool: u32, pg_num: u32) -> u32 {
        let mut split_for = self.split_for.lock().expect("split pg_nums");
        let before = split_for.get(&pool).copied().unwrap_or(0);
        split_for.insert(pool, before.max(pg_num));
        before
    }

    /// Runs `work` on this OSD's store, off the executor's threads.
    pub async fn on_store<T, E>(
        &self,
        work: impl FnOnce(&Store) -> std::result::Result<T, E> + Send + 'static,
    ) -> Result<T>
    where
        T: Send + 'static,
        E: Into<OsdError> + Send + 'static,
    {
        let store = self.store.clone();
        pg::blocking(move || work(&store)).await
    }
}

/// A pool of `map`, or the refusal of a request that names one that does not exist.
pub fn pool(map: &ClusterMap, pool: u32) -> Result<&Pool> {
    map.pools.get(&pool).ok_or_else(|| {
        OsdError::NotFound(format!("pool {pool} does not exist at epoch {}", map.epoch))
    })
}

/// The PG `seed` of `pool`, checked against the pool's pg_num.
pub fn pg_of(pool: &Pool, seed: u32) -> Result<PgId> {
    if seed >= pool.pg_num {
        return Err(OsdError::Invalid(format!(
            "pool '{}' has {} PGs; there is no PG seed {seed}",
            pool.name, pool.pg_num
        )));
    }
    Ok(PgId::new(pool.id, seed))
}

impl Node {
    /// Refuses a change to object `name` sent for `pg` by a peer whose map is
    /// older than a split of `pg`: the object belongs to a child of it now.
    pub fn check_member(&self, pool: &Pool, pg: PgId, name: &[u8]) -> Result<()> {
        let home = object_to_pg(pool, name);
        if home == pg {
            return Ok(());
        }
        Err(self.stale(format!(
            "object '{}' belongs to PG {home}, not {pg}, at epoch {}: the PG was split",
            String::from_utf8_lossy(name),
            self.current().epoch
        )))
    }

    /// The pool and PG a peer request names, checked against the map at the
    /// sender's epoch or newer.
    pub async fn checked_pg(&self, reference: Option<PgRef>) -> Result<(Pool, PgId)> {
        let reference = reference.ok_or_else(|| OsdError::Invalid("no PG given".into()))?;
        let map = self.map_at_least(reference.epoch).await?;
        let pool = pool(&map, reference.pool)?.clone();
        let pg = pg_of(&pool, reference.pg_seed)?;
        Ok((pool, pg))
    }
}

/// When a PG was last scrubbed and what the scrub found.
#[derive(Clone, Debug)]
pub struct ScrubStamp {
    /// When the last scrub finished.
    pub last: SystemTime,
    /// When the last deep scrub finished.
    pub last_deep: SystemTime,
    /// Bad copies the last scrub found and did not repair.
    pub inconsistent: usize,
    /// Set while a scrub runs (true for a deep one).
    pub running: Option<bool>,
}

/// A PG's place in recovery.
#[derive(Clone, Copy, Debug)]
pub struct RecoveryStep {
    /// Every object is sent (the copy's log did not reach back far enough).
    pub backfill: bool,
    /// Waiting for one of the OSD's recovery slots.
    pub waiting: bool,
    /// The PG is active meanwhile: objects are recovered one at a time in the
    /// background, and a client operation on a missing one recovers it first.
    pub active: bool,
}

impl RecoveryStep {
    /// The PG state word for it.
    pub fn word(&self) -> &'static str {
        match (self.backfill, self.waiting) {
            (true, true) => "backfill_wait",
            (true, false) => "backfilling",
            (false, true) => "recovery_wait",
            (false, false) => "recovering",
        }
    }
}

/// Which PGs are recovering, the slots that limit how many at once, and the
/// queue of PGs for background recovery.
pub struct RecoveryTable {
    steps: Mutex<HashMap<PgId, RecoveryStep>>,
    /// The PGs whose recovery backfills a copy, as their logs last said (for the
    /// state of a PG waiting for a recovery slot).
    backfilling: Mutex<HashSet<PgId>>,
    /// One per PG allowed to move objects at once (`max_recovering_pgs`).
    slots: Arc<Semaphore>,
    queue: mpsc::UnboundedSender<PgId>,
    requests: Mutex<Option<mpsc::UnboundedReceiver<PgId>>>,
}

/// Holds a recovery slot and clears the PG's recovery mark when recovery ends,
/// however it ends.
pub struct RecoveryMark<'a> {
    table: &'a RecoveryTable,
    pg: PgId,
    _slot: OwnedSemaphorePermit,
}

impl Drop for RecoveryMark<'_> {
    fn drop(&mut self) {
        self.table
            .steps
            .lock()
            .expect("recovery table")
            .remove(&self.pg);
    }
}

impl RecoveryTable {
    fn new(slots: usize) -> Self {
        let (queue, requests) = mpsc::unbounded_channel();
        RecoveryTable {
            steps: Mutex::new(HashMap::new()),
            backfilling: Mutex::new(HashSet::new()),
            slots: Arc::new(Semaphore::new(slots.max(1))),
            queue,
            requests: Mutex::new(Some(requests)),
        }
    }

    /// Marks the PG as recovering (or backfilling; `active`: recovering objects
    /// in the background while it serves) until the returned mark drops, once
    /// one of the OSD's `max_recovering_pgs` slots is free; until then it is
    /// `recovery_wait` (`backfill_wait`).
    pub async fn recovering(&self, pg: PgId, backfill: bool, active: bool) -> RecoveryMark<'_> {
        let step = RecoveryStep {
            backfill,
            waiting: true,
            active,
        };
        self.mark(pg, step);
        let slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("the recovery slots are never closed");
        self.mark(
            pg,
            RecoveryStep {
                waiting: false,
                ..step
            },
        );
        RecoveryMark {
            table: self,
            pg,
            _slot: slot,
        }
    }

    /// Background recovery's mark, if a recovery slot is free now.
    pub fn try_recovering(&self, pg: PgId) -> Option<RecoveryMark<'_>> {
        let slot = self.slots.clone().try_acquire_owned().ok()?;
        self.mark(
            pg,
            RecoveryStep {
                backfill: self.backfills(pg),
                waiting: false,
                active: true,
            },
        );
        Some(RecoveryMark {
            table: self,
            pg,
            _slot: slot,
        })
    }

    /// Sets the PG's recovery step.
    pub fn mark(&self, pg: PgId, step: RecoveryStep) {
        self.steps.lock().expect("recovery table").insert(pg, step);
    }

    /// The PG's recovery step, if it is recovering or waiting to.
    pub fn step(&self, pg: PgId) -> Option<RecoveryStep> {
        self.steps.lock().expect("recovery table").get(&pg).copied()
    }

    /// Records whether the PG's recovery backfills a copy (`me`: this OSD);
    /// returns it.
    pub fn note_backfill(&self, pg: PgId, log: &mut PgLog, me: u32) -> bool {
        let backfill = log.backfilling(me);
        let mut backfilling = self.backfilling.lock().expect("backfilling PGs");
        if backfill {
            backfilling.insert(pg);
        } else {
            backfilling.remove(&pg);
        }
        backfill
    }

    /// True when the PG's recovery backfills a copy, as its log last said.
    pub fn backfills(&self, pg: PgId) -> bool {
        self.backfilling
            .lock()
            .expect("backfilling PGs")
            .contains(&pg)
    }

    /// Asks the background recovery to bring the PG's missing objects to every up
    /// copy.
    pub fn queue(&self, pg: PgId) {
        // The receiver lives as long as the node.
        let _ = self.queue.send(pg);
    }

    /// The queue's receiving end, once: the background recovery takes it.
    pub fn take_requests(&self) -> Option<mpsc::UnboundedReceiver<PgId>> {
        self.requests.lock().expect("recovery queue").take()
    }
}
