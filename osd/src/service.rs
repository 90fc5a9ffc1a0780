//! The OSD's gRPC service: client operations at a PG's primary, replication of each
//! mutation to the rest of the PG's up set, and listing.
//!
//! A mutation is acknowledged only when every OSD of the PG's current up set has it
//! durable (at least `min_size` of them); a replica that stops answering holds the
//! write until the monitors mark it down and the map drops it from the up set, or the
//! replication deadline passes and the client gets an error to retry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lcpfs_core::crush::{PgMapping, pg_mapping};
use lcpfs_core::engine::{self, Store};
use lcpfs_core::map::{ClusterMap, Pool};
use lcpfs_core::pg::{PgId, object_to_pg};
use lcpfs_proto::object_op::Op;
use lcpfs_proto::osd_client::OsdClient;
use lcpfs_proto::osd_server::Osd;
use lcpfs_proto::{
    ListReply, ListRequest, LogEntry, ObjectOp, OpReply, OpRequest, PgInfoReply, PgLogReply,
    PgLogRequest, PgRef, PullReply, PullRequest, PushReply, PushRequest, ReplicateReply,
    ReplicateRequest,
};
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use crate::pg::{self, PgLog};

/// Metadata key carrying the replying OSD's map epoch on errors.
pub const EPOCH_HEADER: &str = "lcpfs-epoch";

/// Metadata key carrying a replica's newest log version when it is behind.
const LAST_HEADER: &str = "lcpfs-last";

/// Largest gRPC message an OSD sends or accepts.
pub const MAX_MESSAGE: usize = 256 << 20;

/// Limits of an OSD.
#[derive(Clone, Debug)]
pub struct OsdConfig {
    /// Largest object, in bytes.
    pub max_object_size: u64,
    /// How long a mutation may wait for its replicas.
    pub replicate_deadline: Duration,
    /// How long a write waits for a PG with fewer than `min_size` OSDs up.
    pub inactive_wait: Duration,
}

impl Default for OsdConfig {
    fn default() -> Self {
        OsdConfig {
            max_object_size: 128 << 20,
            replicate_deadline: Duration::from_secs(30),
            inactive_wait: Duration::from_secs(10),
        }
    }
}

/// One running OSD's service state.
pub struct OsdService {
    id: u32,
    store: Arc<Store>,
    map: watch::Receiver<Arc<ClusterMap>>,
    pgs: Mutex<HashMap<PgId, Arc<tokio::sync::Mutex<Option<PgLog>>>>>,
    /// Per PG: its up set in the last map observed, and the epoch that up set began.
    intervals: Mutex<HashMap<PgId, (Vec<u32>, u64)>>,
    /// Epoch of the last map observed.
    observed_epoch: Mutex<u64>,
    peers: Mutex<HashMap<String, OsdClient<Channel>>>,
    config: OsdConfig,
}

fn engine_status(error: engine::Error) -> Status {
    match error {
        engine::Error::NotFound(what) => Status::not_found(format!("not found: {what}")),
        engine::Error::AlreadyExists(what) => Status::already_exists(what),
        engine::Error::Invalid(what) => Status::invalid_argument(what),
        engine::Error::NoSpace(what) => Status::resource_exhausted(format!("OSD full: {what}")),
        engine::Error::DataLoss(what) => Status::data_loss(what),
        other => Status::internal(other.to_string()),
    }
}

/// The object names of log entries, each once, in log order.
fn distinct_names(entries: &[LogEntry]) -> Vec<Vec<u8>> {
    let mut names: Vec<Vec<u8>> = Vec::new();
    for entry in entries {
        if !names.contains(&entry.name) {
            names.push(entry.name.clone());
        }
    }
    names
}

/// Errors worth retrying: the peer is down, busy, or behind on the map.
fn transient(status: &Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable
            | tonic::Code::Unknown
            | tonic::Code::Cancelled
            | tonic::Code::DeadlineExceeded
            | tonic::Code::FailedPrecondition
    )
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> engine::Result<T> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| Status::internal(format!("engine task failed: {error}")))?
        .map_err(engine_status)
}

impl OsdService {
    /// The service of OSD `id` over its store, following `map`.
    pub fn new(
        id: u32,
        store: Arc<Store>,
        map: watch::Receiver<Arc<ClusterMap>>,
        config: OsdConfig,
    ) -> Self {
        OsdService {
            id,
            store,
            map,
            pgs: Mutex::new(HashMap::new()),
            intervals: Mutex::new(HashMap::new()),
            observed_epoch: Mutex::new(0),
            peers: Mutex::new(HashMap::new()),
            config,
        }
    }

    /// Records the up set of every PG in `map`, which must be observed before it is
    /// published to the service: a PG whose up set changed (or any PG, when epochs
    /// were skipped) starts a new interval and is peered again before it serves.
    pub fn observe(&self, map: &ClusterMap) {
        let mut observed = self.observed_epoch.lock().expect("observed epoch");
        let contiguous = *observed + 1 == map.epoch;
        let mut intervals = self.intervals.lock().expect("intervals");
        intervals.retain(|pg, _| {
            map.pools
                .get(&pg.pool)
                .is_some_and(|pool| !pool.is_erasure() && pg.seed < pool.pg_num)
        });
        for pool in map.pools.values().filter(|pool| !pool.is_erasure()) {
            let Ok(placement) = lcpfs_core::crush::PoolPlacement::new(map, pool.id) else {
                continue;
            };
            for seed in 0..pool.pg_num {
                let up: Vec<u32> = placement.map_pg(seed).up.into_iter().flatten().collect();
                let pg = PgId::new(pool.id, seed);
                let entry = intervals
                    .entry(pg)
                    .or_insert_with(|| (up.clone(), map.epoch));
                if !contiguous || entry.0 != up {
                    *entry = (up, map.epoch);
                }
            }
        }
        *observed = map.epoch;
    }

    fn interval(&self, pg: PgId) -> u64 {
        self.intervals
            .lock()
            .expect("intervals")
            .get(&pg)
            .map_or(0, |(_, epoch)| *epoch)
    }

    fn current(&self) -> Arc<ClusterMap> {
        self.map.borrow().clone()
    }

    /// The map at `epoch` or newer: a sender ahead of this OSD makes it wait for the
    /// newer map first.
    async fn map_at_least(&self, epoch: u64) -> Result<Arc<ClusterMap>, Status> {
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

    fn stale(&self, message: String) -> Status {
        let mut status = Status::failed_precondition(message);
        if let Ok(value) = self.current().epoch.to_string().parse() {
            status.metadata_mut().insert(EPOCH_HEADER, value);
        }
        status
    }

    fn pool<'a>(&self, map: &'a ClusterMap, pool: u32) -> Result<&'a Pool, Status> {
        let pool = map.pools.get(&pool).ok_or_else(|| {
            Status::not_found(format!("pool {pool} does not exist at epoch {}", map.epoch))
        })?;
        if pool.is_erasure() {
            return Err(Status::unimplemented(format!(
                "pool '{}' is erasure-coded; this OSD serves replicated pools only",
                pool.name
            )));
        }
        Ok(pool)
    }

    /// The PG `seed` of `pool`, checked against the pool's pg_num.
    fn pg_of(&self, pool: &Pool, seed: u32) -> Result<PgId, Status> {
        if seed >= pool.pg_num {
            return Err(Status::invalid_argument(format!(
                "pool '{}' has {} PGs; there is no PG seed {seed}",
                pool.name, pool.pg_num
            )));
        }
        Ok(PgId::new(pool.id, seed))
    }

    /// The pool and PG a peer request names, checked against the map at the
    /// sender's epoch or newer.
    async fn checked_pg(&self, reference: Option<PgRef>) -> Result<(Pool, PgId), Status> {
        let reference = reference.ok_or_else(|| Status::invalid_argument("no PG given"))?;
        let map = self.map_at_least(reference.epoch).await?;
        let pool = self.pool(&map, reference.pool)?.clone();
        let pg = self.pg_of(&pool, reference.pg_seed)?;
        Ok((pool, pg))
    }

    fn mapping(&self, map: &ClusterMap, pg: PgId) -> Result<PgMapping, Status> {
        pg_mapping(map, pg).map_err(|error| Status::internal(format!("placement of {pg}: {error}")))
    }

    fn pg_lock(&self, pg: PgId) -> Arc<tokio::sync::Mutex<Option<PgLog>>> {
        self.pgs
            .lock()
            .expect("pg table")
            .entry(pg)
            .or_default()
            .clone()
    }

    /// The PG's log, loaded from the store (and the collection created) on first use.
    async fn loaded<'a>(
        &self,
        guard: &'a mut tokio::sync::MutexGuard<'_, Option<PgLog>>,
        pg: PgId,
        pool: &Pool,
    ) -> Result<&'a mut PgLog, Status> {
        if guard.as_ref().is_none_or(|log| log.dirty) {
            let store = self.store.clone();
            let compression = pool.compression.clone();
            let log = blocking(move || {
                pg::ensure(&store, pg, compression.as_deref())?;
                pg::load(&store, pg)
            })
            .await?;
            **guard = Some(log);
        }
        Ok(guard.as_mut().expect("loaded above"))
    }

    fn peer(&self, addr: &str) -> Result<OsdClient<Channel>, Status> {
        let mut peers = self.peers.lock().expect("peer table");
        if let Some(client) = peers.get(addr) {
            return Ok(client.clone());
        }
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|_| Status::internal(format!("bad OSD address {addr:?} in the map")))?
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .connect_lazy();
        let client = OsdClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        peers.insert(addr.to_owned(), client.clone());
        Ok(client)
    }

    /// Checks the sizes a request's writes would give the object.
    async fn check_sizes(&self, pg: PgId, name: &[u8], ops: &[ObjectOp]) -> Result<(), Status> {
        let limit = self.config.max_object_size;
        let too_big = |size: u64| {
            Status::invalid_argument(format!(
                "the object would be {size} bytes, above the {limit}-byte object size limit; split it (the client's striper does)"
            ))
        };
        let mut current = None;
        for op in ops.iter().filter_map(|op| op.op.as_ref()) {
            let end = match op {
                Op::WriteFull(data) => data.len() as u64,
                Op::Write(write) => write.offset.saturating_add(write.data.len() as u64),
                Op::Truncate(size) => *size,
                Op::Append(data) => {
                    let size = match current {
                        Some(size) => size,
                        None => {
                            let store = self.store.clone();
                            let name = name.to_vec();
                            blocking(move || pg::size(&store, pg, &name)).await?
                        }
                    };
                    size.saturating_add(data.len() as u64)
                }
                _ => continue,
            };
            current = Some(end);
            if end > limit {
                return Err(too_big(end));
            }
        }
        Ok(())
    }

    /// Sends a mutation to the other OSDs of the PG's up set until each has it, or
    /// has left the up set, or the deadline passes.
    /// Returns how many other OSDs of the (current) up set hold the write.
    async fn replicate(&self, request: ReplicateRequest, pool_id: u32) -> Result<usize, Status> {
        let pg = PgId::new(pool_id, request.pg_seed);
        let deadline = Instant::now() + self.config.replicate_deadline;
        let mut acked: Vec<u32> = Vec::new();
        let mut pending: Vec<u32> = self
            .mapping(&self.current(), pg)?
            .up
            .into_iter()
            .flatten()
            .filter(|&osd| osd != self.id)
            .collect();
        while !pending.is_empty() {
            let map = self.current();
            let up: Vec<u32> = self.mapping(&map, pg)?.up.into_iter().flatten().collect();
            pending.retain(|osd| up.contains(osd));
            let mut sends = tokio::task::JoinSet::new();
            for &osd in &pending {
                let addr = map
                    .osds
                    .get(&osd)
                    .map(|info| info.addr.clone())
                    .unwrap_or_default();
                let mut client = self.peer(&addr)?;
                let mut request = request.clone();
                request.epoch = map.epoch;
                sends.spawn(async move { (osd, client.replicate(request).await) });
            }
            let mut failed = Vec::new();
            let mut behind = Vec::new();
            while let Some(done) = sends.join_next().await {
                match done {
                    Ok((osd, Ok(_))) => acked.push(osd),
                    Ok((osd, Err(status))) if status.code() == tonic::Code::OutOfRange => {
                        let last = status
                            .metadata()
                            .get(LAST_HEADER)
                            .and_then(|value| value.to_str().ok()?.parse().ok())
                            .unwrap_or(0);
                        behind.push((osd, last));
                    }
                    Ok((osd, Err(status))) => failed.push((osd, status)),
                    Err(error) => {
                        return Err(Status::internal(format!("replication task: {error}")));
                    }
                }
            }
            if let Some((osd, status)) = failed.iter().find(|(_, status)| !transient(status)) {
                return Err(Status::internal(format!(
                    "replica osd.{osd} refused a write its primary applied: {}",
                    status.message()
                )));
            }
            for &(osd, last) in &behind {
                if let Err(status) = self.recover_replica(&map, pg, osd, last).await {
                    failed.push((osd, status));
                }
            }
            pending = failed
                .iter()
                .map(|(osd, _)| *osd)
                .chain(behind.iter().map(|(osd, _)| *osd))
                .collect();
            pending.sort_unstable();
            pending.dedup();
            if let Some(&osd) = pending.first() {
                if Instant::now() >= deadline {
                    let reason = failed
                        .first()
                        .map_or("it is behind".to_owned(), |(_, status)| {
                            status.message().to_owned()
                        });
                    return Err(Status::unavailable(format!(
                        "replica osd.{osd} did not store the write in time ({reason}); the write may be partly applied: retry it"
                    )));
                }
                if !failed.is_empty() {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        let up: Vec<u32> = self
            .mapping(&self.current(), pg)?
            .up
            .into_iter()
            .flatten()
            .collect();
        acked.retain(|osd| up.contains(osd));
        acked.sort_unstable();
        acked.dedup();
        Ok(acked.len())
    }

    fn peer_client(&self, map: &ClusterMap, osd: u32) -> Result<OsdClient<Channel>, Status> {
        let addr = map
            .osds
            .get(&osd)
            .map(|info| info.addr.clone())
            .ok_or_else(|| Status::internal(format!("osd.{osd} is not in the map")))?;
        self.peer(&addr)
    }

    /// Peers the PG if its up set changed since it was last peered: takes the newest
    /// history among the up OSDs (pulling what this primary misses), then brings
    /// every other up OSD level with it. Runs under the PG lock, so no client
    /// operation sees the PG before it is level.
    async fn ensure_peered(
        &self,
        map: &ClusterMap,
        pool: &Pool,
        pg: PgId,
        log: &mut PgLog,
    ) -> Result<(), Status> {
        let up: Vec<u32> = self.mapping(map, pg)?.up.into_iter().flatten().collect();
        let interval = self.interval(pg);
        if log.peered.as_ref() == Some(&(interval, up.clone())) {
            return Ok(());
        }
        let reference = PgRef {
            epoch: map.epoch,
            pool: pool.id,
            pg_seed: pg.seed,
        };
        let mut infos = Vec::new();
        for &osd in up.iter().filter(|&&osd| osd != self.id) {
            let mut client = self.peer_client(map, osd)?;
            match client.pg_info(reference).await {
                Ok(reply) => {
                    let reply = reply.into_inner();
                    infos.push((osd, reply.last, reply.oldest));
                }
                Err(status) => {
                    // Going active without hearing from every up OSD could miss
                    // the newest acknowledged write: wait for it or for the map to
                    // drop it.
                    return Err(Status::unavailable(format!(
                        "PG {pg} is peering: osd.{osd} did not answer ({})",
                        status.message()
                    )));
                }
            }
        }
        // The newest history wins: pull what this OSD misses from its holder.
        if let Some(&(source, last, oldest)) = infos
            .iter()
            .filter(|(_, last, _)| *last > log.last)
            .max_by_key(|(_, last, _)| *last)
        {
            tracing::info!(%pg, source, from = log.last, to = last, "pulling newer PG history");
            self.pull(map, pg, source, log, oldest).await?;
        }
        for &(osd, last, _) in &infos {
            if last < log.last {
                self.recover_replica(map, pg, osd, last).await?;
            }
        }
        log.peered = Some((interval, up));
        Ok(())
    }

    /// Pulls from `source` the objects and log entries this OSD misses.
    async fn pull(
        &self,
        map: &ClusterMap,
        pg: PgId,
        source: u32,
        log: &mut PgLog,
        source_oldest: u64,
    ) -> Result<(), Status> {
        let mut client = self.peer_client(map, source)?;
        let reference = PgRef {
            epoch: map.epoch,
            pool: pg.pool,
            pg_seed: pg.seed,
        };
        // A log that does not reach back to ours means a full copy (backfill).
        let backfill = source_oldest == 0 || source_oldest > log.last.saturating_add(1);
        let since = if backfill { 0 } else { log.last };
        let entries = client
            .pg_log(PgLogRequest {
                pg: Some(reference),
                since,
            })
            .await?
            .into_inner()
            .entries;
        let names: Vec<Vec<u8>> = if backfill {
            let mut names = Vec::new();
            let mut start_after = Vec::new();
            loop {
                let page = client
                    .list(ListRequest {
                        epoch: map.epoch,
                        pool: pg.pool,
                        pg_seed: pg.seed,
                        start_after: start_after.clone(),
                        limit: 1000,
                    })
                    .await?
                    .into_inner()
                    .entries;
                let done = page.len() < 1000;
                names.extend(page.into_iter().map(|entry| entry.name));
                match names.last() {
                    Some(last) if !done => start_after = last.clone(),
                    _ => break,
                }
            }
            names
        } else {
            distinct_names(&entries)
        };
        for name in &names {
            let objects = client
                .pull_objects(PullRequest {
                    pg: Some(reference),
                    names: vec![name.clone()],
                })
                .await?
                .into_inner()
                .objects;
            let store = self.store.clone();
            blocking(move || pg::install(&store, pg, &objects, &[], None)).await?;
        }
        let store = self.store.clone();
        let keep = backfill.then(|| names.clone());
        let recorded = entries.clone();
        log.dirty = true;
        blocking(move || pg::install(&store, pg, &[], &recorded, keep.as_deref())).await?;
        if backfill {
            let store = self.store.clone();
            let peered = log.peered.take();
            *log = blocking(move || pg::load(&store, pg)).await?;
            log.peered = peered;
        } else {
            for entry in &entries {
                log.record(entry.version, &entry.client, entry.tid);
            }
        }
        Ok(())
    }

    /// Brings replica `osd`, whose log ends at `their_last`, level with this OSD:
    /// the objects named in the log entries it misses (or, when this log does not
    /// reach back that far, every object: backfill), then the entries.
    async fn recover_replica(
        &self,
        map: &ClusterMap,
        pg: PgId,
        osd: u32,
        their_last: u64,
    ) -> Result<(), Status> {
        let store = self.store.clone();
        let (entries, oldest) = blocking(move || pg::log_since(&store, pg, their_last)).await?;
        if entries.is_empty() {
            return Ok(());
        }
        let backfill = oldest > their_last.saturating_add(1);
        let (entries, names) = if backfill {
            let store = self.store.clone();
            blocking(move || {
                let (all, _) = pg::log_since(&store, pg, 0)?;
                Ok((all, pg::names(&store, pg)?))
            })
            .await?
        } else {
            let names = distinct_names(&entries);
            (entries, names)
        };
        tracing::info!(%pg, osd, from = their_last, backfill, objects = names.len(), "recovering replica");
        let mut client = self.peer_client(map, osd)?;
        let reference = PgRef {
            epoch: map.epoch,
            pool: pg.pool,
            pg_seed: pg.seed,
        };
        for name in &names {
            let store = self.store.clone();
            let name = name.clone();
            let object = blocking(move || pg::state(&store, pg, &name)).await?;
            client
                .push_objects(PushRequest {
                    pg: Some(reference),
                    objects: vec![object],
                    entries: Vec::new(),
                    full: false,
                    keep: Vec::new(),
                })
                .await?;
        }
        client
            .push_objects(PushRequest {
                pg: Some(reference),
                objects: Vec::new(),
                entries,
                full: backfill,
                keep: if backfill { names } else { Vec::new() },
            })
            .await?;
        Ok(())
    }

    /// The states of the PGs this OSD is primary for, for the monitors. A PG busy
    /// with a request is left out of this round.
    pub fn pg_states(&self) -> Vec<lcpfs_proto::PgStat> {
        let map = self.current();
        let mut stats = Vec::new();
        for (pg, up, interval) in self.led_pgs() {
            let Some(pool) = map.pools.get(&pg.pool) else {
                continue;
            };
            let state = if (up.len() as u32) < pool.min_size() {
                "inactive"
            } else {
                let lock = self.pg_lock(pg);
                let Ok(guard) = lock.try_lock() else {
                    continue;
                };
                let peered = guard
                    .as_ref()
                    .is_some_and(|log| log.peered.as_ref() == Some(&(interval, up.clone())));
                if !peered {
                    "peering"
                } else if (up.len() as u32) < pool.size() {
                    "active+undersized+degraded"
                } else {
                    "active+clean"
                }
            };
            stats.push(lcpfs_proto::PgStat {
                pool: pg.pool,
                seed: pg.seed,
                state: state.to_owned(),
            });
        }
        stats
    }

    /// The PGs this OSD is primary for in the last observed map, with their up sets
    /// and the epochs their intervals began, in PG order.
    fn led_pgs(&self) -> Vec<(PgId, Vec<u32>, u64)> {
        let intervals = self.intervals.lock().expect("intervals");
        let mut led: Vec<(PgId, Vec<u32>, u64)> = intervals
            .iter()
            .filter(|(_, (up, _))| up.first() == Some(&self.id))
            .map(|(pg, (up, epoch))| (*pg, up.clone(), *epoch))
            .collect();
        led.sort_unstable_by_key(|(pg, _, _)| *pg);
        led
    }

    /// Peers, in the background, every PG this OSD is primary for whenever the map
    /// changes, so PGs without client traffic are brought level too.
    pub async fn peer_on_map_changes(self: Arc<Self>) {
        let mut map = self.map.clone();
        loop {
            let current = map.borrow_and_update().clone();
            for (pg, _, _) in self.led_pgs() {
                let Some(pool) = current.pools.get(&pg.pool) else {
                    continue;
                };
                let lock = self.pg_lock(pg);
                let mut guard = lock.lock().await;
                let result = match self.loaded(&mut guard, pg, pool).await {
                    Ok(log) => self.ensure_peered(&current, pool, pg, log).await,
                    Err(status) => Err(status),
                };
                if let Err(status) = result {
                    tracing::warn!(%pg, error = %status, "peering failed; retrying on the next map");
                }
            }
            if map.changed().await.is_err() {
                return;
            }
        }
    }

    async fn mutate(
        &self,
        map: &ClusterMap,
        pool: &Pool,
        pg: PgId,
        request: &OpRequest,
    ) -> Result<u64, Status> {
        // A PG with fewer than min_size OSDs up does not take writes: wait a little
        // for the map to change, then refuse clearly.
        let waited_until = Instant::now() + self.config.inactive_wait;
        let mut map = Arc::new(map.clone());
        loop {
            let up = self.mapping(&map, pg)?.up.into_iter().flatten().count() as u32;
            if up >= pool.min_size() {
                break;
            }
            if Instant::now() >= waited_until {
                return Err(Status::unavailable(format!(
                    "PG {pg} is inactive: {up} of its OSDs are up, min_size is {}; the write was not applied",
                    pool.min_size()
                )));
            }
            let mut watch = self.map.clone();
            let _ = tokio::time::timeout(Duration::from_millis(500), watch.changed()).await;
            map = self.current();
        }
        self.check_sizes(pg, &request.name, &request.ops).await?;

        let lock = self.pg_lock(pg);
        let mut guard = lock.lock().await;
        let log = self.loaded(&mut guard, pg, pool).await?;
        self.ensure_peered(&self.current(), pool, pg, log).await?;
        // A retried request is answered with its version; if it had not reached every
        // replica yet, it is replicated again (never applied twice).
        let (version, fresh) = match log.applied(&request.client, request.tid) {
            Some(version) if !log.incomplete(&request.client, request.tid) => return Ok(version),
            Some(version) => (version, false),
            None => (log.last.saturating_add(1), true),
        };
        let store = self.store.clone();
        let (name, client, tid, ops) = (
            request.name.clone(),
            request.client.clone(),
            request.tid,
            request.ops.clone(),
        );
        // Applied here first: an operation the engine refuses (a missing object, a bad
        // offset) is refused before any replica sees it. Until every replica has it,
        // the request stays marked incomplete, so a retry (even after this call is
        // cancelled) replicates it again instead of answering early.
        if fresh {
            log.dirty = true;
            match blocking(move || pg::apply(&store, pg, version, &name, &client, tid, &ops)).await
            {
                Ok(()) => {}
                Err(status) if status.code() == tonic::Code::AlreadyExists => {
                    // The store's log is ahead of this copy: it reloads on next use.
                    return Err(Status::unavailable(format!(
                        "PG {pg} log changed under this request; retry"
                    )));
                }
                Err(status) => {
                    log.dirty = false;
                    return Err(status);
                }
            }
            log.record(version, &request.client, request.tid);
        }
        log.set_incomplete(&request.client, request.tid, true);
        let replicas = self
            .replicate(
                ReplicateRequest {
                    epoch: map.epoch,
                    pool: pool.id,
                    pg_seed: pg.seed,
                    version,
                    name: request.name.clone(),
                    client: request.client.clone(),
                    tid: request.tid,
                    ops: request.ops.clone(),
                },
                pool.id,
            )
            .await;
        match replicas {
            Ok(copies) if copies + 1 >= pool.min_size() as usize => {
                log.set_incomplete(&request.client, request.tid, false);
                Ok(version)
            }
            Ok(copies) => Err(Status::unavailable(format!(
                "PG {pg} has only {} copies of the write, below min_size {}; retry",
                copies + 1,
                pool.min_size()
            ))),
            Err(status) => {
                if !transient(&status) {
                    // A replica's history differs: peer again before the next write.
                    log.peered = None;
                }
                Err(status)
            }
        }
    }
}

#[tonic::async_trait]
impl Osd for OsdService {
    async fn op(&self, request: Request<OpRequest>) -> Result<Response<OpReply>, Status> {
        let request = request.into_inner();
        if request.name.is_empty() {
            return Err(Status::invalid_argument("object name is empty"));
        }
        if request.ops.iter().any(|op| op.op.is_none()) {
            return Err(Status::invalid_argument("an operation has no kind"));
        }
        let map = self.map_at_least(request.epoch).await?;
        let pool = self.pool(&map, request.pool)?.clone();
        let pg = object_to_pg(&pool, &request.name);
        let mapping = self.mapping(&map, pg)?;
        if mapping.primary != Some(self.id) {
            return Err(self.stale(format!(
                "osd.{} is not the primary of PG {pg} at epoch {} (primary: {})",
                self.id,
                map.epoch,
                mapping
                    .primary
                    .map_or("none".to_owned(), |osd| format!("osd.{osd}"))
            )));
        }
        let mutations = request
            .ops
            .iter()
            .any(|op| op.op.as_ref().is_some_and(pg::is_mutation));
        let missing = |status: Status| {
            if status.code() == tonic::Code::NotFound && status.message().contains("object \"o/") {
                Status::not_found(format!(
                    "object '{}' does not exist in pool '{}'",
                    String::from_utf8_lossy(&request.name),
                    pool.name
                ))
            } else {
                status
            }
        };
        let version = if mutations {
            self.mutate(&map, &pool, pg, &request)
                .await
                .map_err(missing)?
        } else {
            0
        };
        let reads = request
            .ops
            .iter()
            .any(|op| op.op.as_ref().is_some_and(|op| !pg::is_mutation(op)));
        let results = if reads {
            let lock = self.pg_lock(pg);
            let mut guard = lock.lock().await;
            let log = self.loaded(&mut guard, pg, &pool).await?;
            self.ensure_peered(&self.current(), &pool, pg, log).await?;
            let store = self.store.clone();
            let (name, ops) = (request.name.clone(), request.ops.clone());
            blocking(move || pg::read(&store, pg, &name, &ops))
                .await
                .map_err(missing)?
        } else {
            Vec::new()
        };
        Ok(Response::new(OpReply {
            epoch: self.current().epoch,
            results,
            version,
        }))
    }

    async fn replicate(
        &self,
        request: Request<ReplicateRequest>,
    ) -> Result<Response<ReplicateReply>, Status> {
        let request = request.into_inner();
        let map = self.map_at_least(request.epoch).await?;
        let pool = self.pool(&map, request.pool)?.clone();
        let pg = self.pg_of(&pool, request.pg_seed)?;
        let lock = self.pg_lock(pg);
        let mut guard = lock.lock().await;
        let log = self.loaded(&mut guard, pg, &pool).await?;
        if request.version > log.last.saturating_add(1) {
            // Entries are missing here: the primary must bring this OSD level first.
            let mut status = Status::out_of_range(format!(
                "osd.{} has PG {pg} only up to version {}",
                self.id, log.last
            ));
            if let Ok(value) = log.last.to_string().parse() {
                status.metadata_mut().insert(LAST_HEADER, value);
            }
            return Err(status);
        }
        if request.version <= log.last {
            // Already here: only if it is the same request (histories agree).
            let store = self.store.clone();
            let version = request.version;
            let held = blocking(move || pg::entry_at(&store, pg, version)).await?;
            if held
                .as_ref()
                .is_none_or(|(client, tid)| client != &request.client || *tid != request.tid)
            {
                return Err(Status::aborted(format!(
                    "osd.{} holds another write at version {version} of PG {pg}: the PG must peer again",
                    self.id
                )));
            }
        } else {
            log.dirty = true;
            let store = self.store.clone();
            let (version, name, client, tid, ops) = (
                request.version,
                request.name.clone(),
                request.client.clone(),
                request.tid,
                request.ops.clone(),
            );
            blocking(move || pg::apply(&store, pg, version, &name, &client, tid, &ops)).await?;
            log.record(request.version, &request.client, request.tid);
        }
        Ok(Response::new(ReplicateReply {
            epoch: self.current().epoch,
        }))
    }

    async fn pg_info(&self, request: Request<PgRef>) -> Result<Response<PgInfoReply>, Status> {
        let reference = request.into_inner();
        let map = self.map_at_least(reference.epoch).await?;
        let pool = self.pool(&map, reference.pool)?.clone();
        let pg = self.pg_of(&pool, reference.pg_seed)?;
        let lock = self.pg_lock(pg);
        let mut guard = lock.lock().await;
        let last = self.loaded(&mut guard, pg, &pool).await?.last;
        let store = self.store.clone();
        let (_, oldest) = blocking(move || pg::log_since(&store, pg, u64::MAX)).await?;
        Ok(Response::new(PgInfoReply {
            epoch: map.epoch,
            last,
            oldest,
        }))
    }

    async fn pg_log(&self, request: Request<PgLogRequest>) -> Result<Response<PgLogReply>, Status> {
        let request = request.into_inner();
        let (_, pg) = self.checked_pg(request.pg).await?;
        let store = self.store.clone();
        let (entries, _) = blocking(move || pg::log_since(&store, pg, request.since)).await?;
        Ok(Response::new(PgLogReply { entries }))
    }

    async fn pull_objects(
        &self,
        request: Request<PullRequest>,
    ) -> Result<Response<PullReply>, Status> {
        let request = request.into_inner();
        let (_, pg) = self.checked_pg(request.pg).await?;
        let store = self.store.clone();
        let objects = blocking(move || {
            request
                .names
                .iter()
                .map(|name| pg::state(&store, pg, name))
                .collect()
        })
        .await?;
        Ok(Response::new(PullReply { objects }))
    }

    async fn push_objects(
        &self,
        request: Request<PushRequest>,
    ) -> Result<Response<PushReply>, Status> {
        let request = request.into_inner();
        let (pool, pg) = self.checked_pg(request.pg).await?;
        let lock = self.pg_lock(pg);
        let mut guard = lock.lock().await;
        let log = self.loaded(&mut guard, pg, &pool).await?;
        let store = self.store.clone();
        let (objects, entries) = (request.objects, request.entries.clone());
        let keep = request.full.then_some(request.keep);
        log.dirty = true;
        blocking(move || pg::install(&store, pg, &objects, &entries, keep.as_deref())).await?;
        if request.full {
            let store = self.store.clone();
            *log = blocking(move || pg::load(&store, pg)).await?;
        } else {
            for entry in &request.entries {
                log.record(entry.version, &entry.client, entry.tid);
            }
            log.dirty = false;
        }
        Ok(Response::new(PushReply { last: log.last }))
    }

    async fn list(&self, request: Request<ListRequest>) -> Result<Response<ListReply>, Status> {
        let request = request.into_inner();
        let map = self.map_at_least(request.epoch).await?;
        let pool = self.pool(&map, request.pool)?.clone();
        let pg = self.pg_of(&pool, request.pg_seed)?;
        if self.mapping(&map, pg)?.primary == Some(self.id) {
            // A primary lists only after peering, so the listing has every object.
            let lock = self.pg_lock(pg);
            let mut guard = lock.lock().await;
            let log = self.loaded(&mut guard, pg, &pool).await?;
            self.ensure_peered(&self.current(), &pool, pg, log).await?;
        }
        let store = self.store.clone();
        let limit = if request.limit == 0 {
            1000
        } else {
            request.limit as usize
        };
        let entries = blocking(move || pg::list(&store, pg, &request.start_after, limit)).await?;
        Ok(Response::new(ListReply {
            epoch: map.epoch,
            entries,
        }))
    }
}
