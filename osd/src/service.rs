//! The OSD's gRPC service: client operations at a PG's primary, replication of each
//! mutation to the rest of the PG's up set, and listing.
//!
//! A mutation is acknowledged only when every OSD of the PG's current up set has it
//! durable (at least `min_size` of them); a replica that stops answering holds the
//! write until the monitors mark it down and the map drops it from the up set, or the
//! replication deadline passes and the client gets an error to retry.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use lcpfs_core::crush::{PgMapping, pg_mapping, primary};
use lcpfs_core::engine::{self, Store};
use lcpfs_core::map::{ClusterMap, Pool, PoolKind};
use lcpfs_core::pg::{PgId, object_to_pg};
use lcpfs_proto::object_op::Op;
use lcpfs_proto::op_result;
use lcpfs_proto::osd_client::OsdClient;
use lcpfs_proto::osd_server::Osd;
use lcpfs_proto::tls::{self, Tls};
use lcpfs_proto::{
    DataChunk, EcCommitReply, EcCommitRequest, EchoMessage, Inconsistency, KeyValue, ListReply,
    ListRequest, LogEntry, ObjectOp, ObjectState, OpReply, OpRequest, PgInfoReply, PgLogReply,
    PgLogRequest, PgRef, PullReply, PullRequest, PushReply, PushRequest, ReadShardReply,
    ReadShardRequest, ReplicateReply, ReplicateRequest, ScrubMapReply, ScrubMapRequest,
    ScrubObject, ScrubReply, ScrubRequest,
};
use tokio::sync::watch;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

use crate::ec;
use crate::intervals::Intervals;
use crate::metrics::OsdMetrics;
use crate::pg::{self, CatchUp, Delivery, PgLog, UpSet};
use crate::scrub;

mod erasure;

/// Metadata key carrying the replying OSD's map epoch on errors.
pub const EPOCH_HEADER: &str = "lcpfs-epoch";

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
    /// How often each PG is scrubbed (object lists, sizes, xattrs).
    pub scrub_interval: Duration,
    /// How often each PG is deep-scrubbed (every byte read and compared).
    pub deep_scrub_interval: Duration,
    /// Whether scheduled scrubs repair the bad copies they find.
    pub auto_repair: bool,
    /// Pause between objects recovered or backfilled, to leave the disks and the
    /// network to client I/O (like Ceph's `osd_recovery_sleep`).
    pub recovery_sleep: Duration,
    /// PGs this OSD, as their primary, brings level at once (like Ceph's
    /// `osd_max_backfills`); others wait their turn.
    pub max_recovering_pgs: usize,
    /// Log entries kept per PG (like Ceph's `osd_max_pg_log_entries`): a copy
    /// that missed more writes than this is backfilled.
    pub pg_log_entries: u64,
    /// Where the PG intervals this OSD saw are saved, so that a restarted OSD
    /// still knows them (`None`: kept in memory only).
    pub intervals_file: Option<std::path::PathBuf>,
    /// Mutual TLS for connections to peer OSDs (`None`: plain connections).
    pub tls: Option<Tls>,
}

impl Default for OsdConfig {
    fn default() -> Self {
        OsdConfig {
            max_object_size: 128 << 20,
            replicate_deadline: Duration::from_secs(30),
            inactive_wait: Duration::from_secs(10),
            scrub_interval: Duration::from_secs(24 * 3600),
            deep_scrub_interval: Duration::from_secs(7 * 24 * 3600),
            auto_repair: false,
            recovery_sleep: Duration::ZERO,
            max_recovering_pgs: 2,
            pg_log_entries: pg::LOG_KEEP,
            intervals_file: None,
            tls: None,
        }
    }
}

/// One running OSD's service state.
pub struct OsdService {
    id: u32,
    store: Arc<Store>,
    map: watch::Receiver<Arc<ClusterMap>>,
    pgs: Mutex<HashMap<PgId, Arc<tokio::sync::Mutex<Option<PgLog>>>>>,
    /// Every PG's intervals as this OSD saw them.
    intervals: Intervals,
    peers: Mutex<HashMap<String, OsdClient<Channel>>>,
    /// Scrub history of the PGs this OSD is (or was) primary for.
    scrubs: Mutex<HashMap<PgId, ScrubStamp>>,
    /// PGs whose last peering found them down (see `check_not_down`).
    down: Mutex<HashSet<PgId>>,
    /// PGs bringing a copy level, or waiting for a recovery slot to.
    recovering: Mutex<HashMap<PgId, Recovery>>,
    /// The PGs whose recovery backfills a copy, as their logs last said (for
    /// the state of a PG waiting for a recovery slot).
    backfilling: Mutex<HashSet<PgId>>,
    /// One per PG allowed to move objects at once (`max_recovering_pgs`).
    recovery_slots: Arc<tokio::sync::Semaphore>,
    /// PGs peering left with missing objects, for the background recovery.
    recovery_queue: tokio::sync::mpsc::UnboundedSender<PgId>,
    /// The other end, taken by [`Self::recover_in_background`].
    recovery_requests: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<PgId>>>,
    config: OsdConfig,
    /// Counters and histograms served at `/metrics`.
    pub metrics: OsdMetrics,
}

/// When a PG was last scrubbed and what the scrub found.
#[derive(Clone, Debug)]
struct ScrubStamp {
    last: SystemTime,
    last_deep: SystemTime,
    /// Bad copies the last scrub found and did not repair.
    inconsistent: usize,
    /// Set while a scrub runs (true for a deep one).
    running: Option<bool>,
}

/// A PG's place in recovery.
#[derive(Clone, Copy, Debug)]
struct Recovery {
    /// Every object is sent (the copy's log did not reach back far enough).
    backfill: bool,
    /// Waiting for one of the OSD's recovery slots.
    waiting: bool,
    /// The PG is active meanwhile: objects are recovered one at a time in the
    /// background, and a client operation on a missing one recovers it first.
    active: bool,
}

impl Recovery {
    /// The PG state word for it.
    fn step(&self) -> &'static str {
        match (self.backfill, self.waiting) {
            (true, true) => "backfill_wait",
            (true, false) => "backfilling",
            (false, true) => "recovery_wait",
            (false, false) => "recovering",
        }
    }
}

/// Holds a recovery slot and clears the PG's recovery mark when recovery ends,
/// however it ends.
struct RecoveryMark<'a> {
    service: &'a OsdService,
    pg: PgId,
    _slot: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Drop for RecoveryMark<'_> {
    fn drop(&mut self) {
        self.service
            .recovering
            .lock()
            .expect("recovery table")
            .remove(&self.pg);
    }
}

/// Objects compared per scrub chunk (the PG lock is held for one chunk at a time).
const SCRUB_CHUNK: usize = 64;

/// Bytes per message of a streamed object (`ReadStream`, `WriteStream`).
pub const STREAM_CHUNK: usize = 4 << 20;

/// A whole object's data as the chunks of a `ReadStream` reply; the first
/// carries the object's size and the epoch.
pub struct ReadChunks {
    data: Vec<u8>,
    /// Where the next chunk starts; `None` before the first (an empty object is
    /// one empty chunk).
    offset: Option<usize>,
    epoch: u64,
}

impl Iterator for ReadChunks {
    type Item = Result<DataChunk, Status>;

    fn next(&mut self) -> Option<Self::Item> {
        let start = match self.offset {
            Some(offset) if offset >= self.data.len() => return None,
            Some(offset) => offset,
            None => 0,
        };
        let end = (start + STREAM_CHUNK).min(self.data.len());
        let size = if self.offset.is_none() {
            self.data.len() as u64
        } else {
            0
        };
        self.offset = Some(end);
        Some(Ok(DataChunk {
            request: None,
            size,
            epoch: self.epoch,
            data: self.data[start..end].to_vec(),
        }))
    }
}

/// The refusal of a write that would make an object larger than the limit.
fn too_big(size: u64, limit: u64) -> Status {
    Status::invalid_argument(format!(
        "the object would be {size} bytes, above the {limit}-byte object size limit; store it in pieces (lcpfs put --striper)"
    ))
}

/// Seconds since the Unix epoch, as scrub stamps are kept and reported (0 for a
/// time before it).
fn unix_seconds(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
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

/// A PG named at `map`'s epoch, for requests that do not peer it.
fn pg_ref(map: &ClusterMap, pg: PgId) -> PgRef {
    PgRef {
        epoch: map.epoch,
        pool: pg.pool,
        pg_seed: pg.seed,
        interval: 0,
        probe: false,
    }
}

/// Every entry of a peer's log of a PG.
async fn whole_log(
    client: &mut OsdClient<Channel>,
    reference: PgRef,
) -> Result<Vec<LogEntry>, Status> {
    Ok(client
        .pg_log(PgLogRequest {
            pg: Some(reference),
            since: 0,
        })
        .await?
        .into_inner()
        .entries)
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
        let (recovery_queue, recovery_requests) = tokio::sync::mpsc::unbounded_channel();
        OsdService {
            id,
            store,
            map,
            pgs: Mutex::new(HashMap::new()),
            intervals: Intervals::new(config.intervals_file.clone()),
            peers: Mutex::new(HashMap::new()),
            scrubs: Mutex::new(HashMap::new()),
            recovering: Mutex::new(HashMap::new()),
            backfilling: Mutex::new(HashSet::new()),
            recovery_slots: Arc::new(tokio::sync::Semaphore::new(
                config.max_recovering_pgs.max(1),
            )),
            recovery_queue,
            recovery_requests: Mutex::new(Some(recovery_requests)),
            down: Mutex::new(HashSet::new()),
            config,
            metrics: OsdMetrics::new().expect("OSD metrics register once"),
        }
    }

    /// Records the up set of every PG in `map`, which must be observed before it is
    /// published to the service: a PG whose up set changed (or any PG, when epochs
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

    /// The up OSDs this one shares a PG with in the map it follows.
    pub fn heartbeat_peers(&self) -> Vec<u32> {
        let map = self.current();
        let mut peers = self.intervals.neighbours(self.id);
        peers.retain(|osd| map.osds.get(osd).is_some_and(|info| info.up));
        peers
    }

    /// Pings OSD `osd` (an empty echo).
    pub async fn ping(&self, osd: u32) -> Result<(), Status> {
        let mut client = self.peer_client(&self.current(), osd)?;
        client.echo(EchoMessage::default()).await?;
        Ok(())
    }

    /// How many PG copies this OSD's store holds.
    pub fn pg_copies(&self) -> usize {
        pg::held(&self.store).len()
    }

    /// True when the map this OSD follows says it is up.
    pub fn is_up(&self) -> bool {
        self.current().osds.get(&self.id).is_some_and(|osd| osd.up)
    }

    /// Counts a served request in the metrics.
    fn account(&self, request: &OpRequest, results: &[lcpfs_proto::OpResult], began: Instant) {
        let mut mutation = false;
        for op in request.ops.iter().filter_map(|op| op.op.as_ref()) {
            let (kind, written) = match op {
                Op::WriteFull(data) => ("write_full", data.len()),
                Op::Write(write) => ("write", write.data.len()),
                Op::Append(data) => ("append", data.len()),
                Op::Truncate(_) => ("truncate", 0),
                Op::Delete(_) => ("delete", 0),
                Op::SetXattr(pair) => ("set_xattr", pair.value.len()),
                Op::RmXattr(_) => ("rm_xattr", 0),
                Op::OmapSet(set) => (
                    "omap_set",
                    set.entries
                        .iter()
                        .map(|entry| entry.key.len() + entry.value.len())
                        .sum(),
                ),
                Op::OmapRm(_) => ("omap_rm", 0),
                Op::OmapClear(_) => ("omap_clear", 0),
                Op::Read(_) => ("read", 0),
                Op::Stat(_) => ("stat", 0),
                Op::GetXattr(_) => ("get_xattr", 0),
                Op::OmapGet(_) => ("omap_get", 0),
                Op::OmapRange(_) => ("omap_range", 0),
            };
            mutation |= pg::is_mutation(op);
            self.metrics.ops.with_label_values(&[kind]).inc();
            self.metrics
                .bytes
                .with_label_values(&["in"])
                .inc_by(written as u64);
        }
        let read: usize = results
            .iter()
            .filter_map(|result| result.result.as_ref())
            .map(|result| match result {
                op_result::Result::Data(data) => data.len(),
                op_result::Result::Xattr(value) => value.len(),
                op_result::Result::Omap(omap) => omap
                    .entries
                    .iter()
                    .map(|entry| entry.key.len() + entry.value.len())
                    .sum(),
                op_result::Result::Stat(_) => 0,
            })
            .sum();
        self.metrics
            .bytes
            .with_label_values(&["out"])
            .inc_by(read as u64);
        self.metrics
            .latency
            .with_label_values(&[if mutation { "write" } else { "read" }])
            .observe(began.elapsed().as_secs_f64());
    }

    fn interval(&self, pg: PgId) -> u64 {
        self.intervals.start(pg)
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
            let mut log = blocking(move || {
                pg::ensure(&store, pg, compression.as_deref())?;
                pg::load(&store, pg)
            })
            .await?;
            // A half-done change is not trusted: the PG peers again, but it still
            // refuses the primaries it refused before.
            log.accepted_interval = log
                .accepted_interval
                .max(guard.as_ref().map_or(0, |old| old.accepted_interval));
            **guard = Some(log);
        }
        Ok(guard.as_mut().expect("loaded above"))
    }

    fn peer(&self, addr: &str) -> Result<OsdClient<Channel>, Status> {
        let mut peers = self.peers.lock().expect("peer table");
        if let Some(client) = peers.get(addr) {
            return Ok(client.clone());
        }
        let channel = tls::endpoint(addr, self.config.tls.as_ref())
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
                return Err(too_big(end, limit));
            }
        }
        Ok(())
    }

    /// Sends a mutation to the other OSDs of the PG's up set until each has it, or
    /// has left the up set, or the deadline passes.
    /// Returns how many other OSDs of the (current) up set hold the write.
    async fn replicate(
        &self,
        request: ReplicateRequest,
        pool_id: u32,
        log: &mut PgLog,
    ) -> Result<usize, Status> {
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
            if self.interval(pg) != request.version_epoch {
                // The up set changed: the next request peers the new one, which
                // brings every OSD of it level with this write.
                return Err(Status::unavailable(format!(
                    "PG {pg} changed its OSDs during the write; retry"
                )));
            }
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
                        behind.push(osd);
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
            for &osd in &behind {
                // Level with this log (which holds the write) and then holding the
                // written object, the replica takes the write again as a retry.
                let caught_up = match self.recover_replica(&map, pg, osd, log).await {
                    Ok(()) => self.recover_object(&map, pg, log, &request.name).await,
                    Err(status) => Err(status),
                };
                if let Err(status) = caught_up {
                    failed.push((osd, status));
                }
            }
            pending = failed
                .iter()
                .map(|(osd, _)| *osd)
                .chain(behind.iter().copied())
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
    /// history among the up OSDs (pulling what this primary misses or holds
    /// diverged), then brings every other up OSD level with it. Runs under the PG
    /// lock, so no client operation sees the PG before it is level.
    async fn ensure_peered(
        &self,
        map: &ClusterMap,
        pool: &Pool,
        pg: PgId,
        log: &mut PgLog,
    ) -> Result<(), Status> {
        let PgMapping { up, primary, .. } = self.mapping(map, pg)?;
        // A request that waited (for the map to give the PG min_size OSDs) may
        // find this OSD no longer primary: peering here would fight the primary.
        if primary != Some(self.id) {
            return Err(self.stale(format!(
                "osd.{} is not the primary of PG {pg} at epoch {}",
                self.id, map.epoch
            )));
        }
        let interval = self.interval(pg);
        if log.peered.as_ref() == Some(&(interval, up.clone())) {
            return Ok(());
        }
        let reference = PgRef {
            epoch: map.epoch,
            pool: pool.id,
            pg_seed: pg.seed,
            interval,
            probe: false,
        };
        self.accept_interval(pg, log, interval).await?;
        if pool.is_erasure() {
            self.peer_erasure(map, pool, pg, log, &up, reference)
                .await?;
        } else {
            self.peer_replicated(map, pool, pg, log, &up, reference)
                .await?;
        }
        // Every up OSD now holds every write this one has.
        self.activate(map, pg, &up, interval).await?;
        log.clear_incomplete();
        // Until every up copy holds every object, the OSDs of earlier intervals
        // stay asked (see `prior_holders`): up copies that miss objects are not
        // their holders yet (like Ceph, which keeps past intervals back to the
        // PG's last clean epoch).
        if !log.degraded() {
            self.intervals.forget_past(pg, interval, &up);
        }
        log.peered = Some((interval, up));
        self.queue_recovery(pg, log);
        Ok(())
    }

    /// Raises the newest interval whose primary peered this copy, in memory and
    /// in the store: older primaries are refused from now on, even after a
    /// restart of this OSD.
    async fn accept_interval(
        &self,
        pg: PgId,
        log: &mut PgLog,
        interval: u64,
    ) -> Result<(), Status> {
        if interval <= log.accepted_interval {
            return Ok(());
        }
        let store = self.store.clone();
        blocking(move || pg::set_accepted(&store, pg, interval)).await?;
        log.accepted_interval = interval;
        Ok(())
    }

    /// Peers a replicated PG: takes the newest history among the up OSDs and the
    /// OSDs of earlier intervals, then brings every up OSD's log level with it.
    /// Objects a copy misses after that are recovered once the PG is active (see
    /// [`Self::recover_object`]); those only an OSD outside the up set holds are
    /// pulled here first.
    async fn peer_replicated(
        &self,
        map: &ClusterMap,
        pool: &Pool,
        pg: PgId,
        log: &mut PgLog,
        up: &UpSet,
        reference: PgRef,
    ) -> Result<(), Status> {
        let mut infos = Vec::new();
        for &osd in up.iter().flatten().filter(|&&osd| osd != self.id) {
            infos.push((osd, self.peer_info(map, pg, osd, reference).await?));
        }
        let prior = self.probe_prior(map, pg, up, reference).await?;
        let own = self.info_of(pg, log, false).await?;
        self.check_not_down(
            map,
            pool,
            pg,
            std::iter::once(&own).chain(infos.iter().chain(&prior).map(|(_, info)| info)),
        )?;
        // The newest history wins, wherever it is: its last entry has the greatest
        // (epoch, version).
        if let Some((source, info)) = infos
            .iter()
            .chain(&prior)
            .filter(|(_, info)| (info.last_epoch, info.last) > (log.last_epoch, log.last))
            .max_by_key(|(_, info)| (info.last_epoch, info.last))
        {
            tracing::info!(%pg, source, from = log.last, to = info.last, "pulling newer PG history");
            let lazy = up.contains(&Some(*source));
            self.pull(map, pg, (*source, &info.missing), lazy, log)
                .await?;
        }
        log.peer_missing.clear();
        for (osd, info) in &infos {
            log.peer_missing
                .insert(*osd, info.missing.iter().cloned().collect());
            if (info.last_epoch, info.last) != (log.last_epoch, log.last) {
                self.recover_replica(map, pg, *osd, log).await?;
            }
        }
        // What no up copy holds is brought in now, if an OSD outside the up set
        // holds it; what nobody holds stays unfound.
        for name in log.unfound() {
            if let Err(status) = self.recover_object(map, pg, log, &name).await {
                tracing::warn!(%pg, object = %String::from_utf8_lossy(&name), error = %status.message(), "object unfound");
            }
        }
        Ok(())
    }

    /// The OSDs outside the up set (of the PG's earlier intervals) that hold the
    /// newest data of `name`, with their infos: their logs are prefixes of this
    /// one that reach the object's newest entry, and they do not miss it.
    async fn prior_holders(
        &self,
        map: &ClusterMap,
        pg: PgId,
        name: &[u8],
    ) -> Result<Vec<(u32, PgInfoReply)>, Status> {
        let up = self.mapping(map, pg)?.up;
        let store = self.store.clone();
        let (entries, _) = blocking(move || pg::log_since(&store, pg, 0)).await?;
        // The object's newest entry; none when its last change is older than
        // this log (a backfilled copy misses every object).
        let newest = entries
            .iter()
            .rev()
            .find(|entry| entry.name == name)
            .map_or(0, |entry| entry.version);
        let reference = PgRef {
            probe: true,
            ..pg_ref(map, pg)
        };
        let mut holders = Vec::new();
        for osd in self.intervals.prior_osds(map, pg, &up, self.id) {
            let Ok(info) = self.peer_info(map, pg, osd, reference).await else {
                continue;
            };
            let prefix = entries
                .iter()
                .any(|entry| entry.version == info.last && entry.epoch == info.last_epoch);
            if prefix && info.last >= newest && !info.missing.iter().any(|held| held == name) {
                holders.push((osd, info));
            }
        }
        Ok(holders)
    }

    /// Records, here and on every other up OSD, that peering in `interval`
    /// brought the PG's copies level: its earlier intervals need not be asked
    /// again, whatever happens to their OSDs.
    async fn activate(
        &self,
        map: &ClusterMap,
        pg: PgId,
        up: &UpSet,
        interval: u64,
    ) -> Result<(), Status> {
        let store = self.store.clone();
        blocking(move || pg::set_activated(&store, pg, interval)).await?;
        let push = PushRequest {
            interval,
            activated: interval,
            ..PushRequest::default()
        };
        match self
            .push_to_peers(map, pg, up, push)
            .await
            .into_iter()
            .next()
        {
            Some((_, status)) => Err(status),
            None => Ok(()),
        }
    }

    /// Sends `push` (a marker for the PG's copies, such as `activated` or scrub
    /// stamps) to every other OSD of `up`; returns those that did not take it.
    async fn push_to_peers(
        &self,
        map: &ClusterMap,
        pg: PgId,
        up: &UpSet,
        push: PushRequest,
    ) -> Vec<(u32, Status)> {
        let push = PushRequest {
            pg: Some(pg_ref(map, pg)),
            ..push
        };
        let mut failures = Vec::new();
        for &osd in up.iter().flatten().filter(|&&osd| osd != self.id) {
            let pushed = match self.peer_client(map, osd) {
                Ok(mut client) => client.push_objects(push.clone()).await.map(|_| ()),
                Err(status) => Err(status),
            };
            if let Err(status) = pushed {
                failures.push((osd, status));
            }
        }
        failures
    }

    /// Fails (and marks the PG `down`) while an earlier interval of the PG may
    /// hold acknowledged writes that none of the answering copies (`infos`, this
    /// OSD's among them) has: one whose OSDs are down, not enough of them up to
    /// read its writes (one copy; `k` shards), and not all marked lost. Intervals
    /// before the newest one in which an answering copy was brought level are
    /// not asked: that copy holds their writes.
    fn check_not_down<'a>(
        &self,
        map: &ClusterMap,
        pool: &Pool,
        pg: PgId,
        infos: impl IntoIterator<Item = &'a PgInfoReply>,
    ) -> Result<(), Status> {
        let since = infos
            .into_iter()
            .map(|info| info.activated.max(info.last_epoch))
            .max()
            .unwrap_or(0);
        let unreachable = self.intervals.unreachable(
            map,
            pg,
            since,
            pool.min_size(),
            pool.shards_needed() as u32,
        );
        let mut down = self.down.lock().expect("down PGs");
        if unreachable.is_empty() {
            down.remove(&pg);
            return Ok(());
        }
        down.insert(pg);
        let waited: Vec<String> = unreachable
            .iter()
            .map(|interval| {
                let osds: Vec<String> = interval
                    .up
                    .iter()
                    .flatten()
                    .map(|osd| format!("osd.{osd}"))
                    .collect();
                format!("[{}] from epoch {}", osds.join(", "), interval.start)
            })
            .collect();
        Err(Status::unavailable(format!(
            "PG {pg} is down: it may hold acknowledged writes only OSDs that are down have \
             (up sets {}); start one of them, or, if they cannot come back, give their \
             writes up with `lcpfs osd lost`",
            waited.join("; ")
        )))
    }

    /// A peer's info of its copy of the PG (`reference.probe`: an OSD of an
    /// earlier interval, which may hold none), for peering: going active without
    /// hearing from an OSD that may hold the newest acknowledged write could lose
    /// it, so peering waits for it (or for the map to mark it down).
    async fn peer_info(
        &self,
        map: &ClusterMap,
        pg: PgId,
        osd: u32,
        reference: PgRef,
    ) -> Result<PgInfoReply, Status> {
        let mut client = self.peer_client(map, osd)?;
        match client.pg_info(reference).await {
            Ok(reply) => Ok(reply.into_inner()),
            Err(status) => Err(Status::unavailable(format!(
                "PG {pg} is peering: osd.{osd} did not answer ({})",
                status.message()
            ))),
        }
    }

    /// The infos of the PG's copies on the up OSDs of its earlier intervals that
    /// are not in `up` (asked without making them create a copy).
    async fn probe_prior(
        &self,
        map: &ClusterMap,
        pg: PgId,
        up: &UpSet,
        reference: PgRef,
    ) -> Result<Vec<(u32, PgInfoReply)>, Status> {
        let probe = PgRef {
            probe: true,
            ..reference
        };
        let mut prior = Vec::new();
        for osd in self.intervals.prior_osds(map, pg, up, self.id) {
            prior.push((osd, self.peer_info(map, pg, osd, probe).await?));
        }
        Ok(prior)
    }

    /// Marks the PG as recovering (or backfilling; `active`: recovering objects
    /// in the background while it serves) until the returned guard drops, once
    /// one of the OSD's `max_recovering_pgs` slots is free; until then it is
    /// `recovery_wait` (`backfill_wait`).
    async fn recovering(&self, pg: PgId, backfill: bool, active: bool) -> RecoveryMark<'_> {
        self.mark_recovery(
            pg,
            Recovery {
                backfill,
                waiting: true,
                active,
            },
        );
        let mut guard = RecoveryMark {
            service: self,
            pg,
            _slot: None,
        };
        guard._slot = Some(
            self.recovery_slots
                .clone()
                .acquire_owned()
                .await
                .expect("the recovery slots are never closed"),
        );
        self.mark_recovery(
            pg,
            Recovery {
                backfill,
                waiting: false,
                active,
            },
        );
        guard
    }

    /// Background recovery's mark, if a recovery slot is free now.
    fn try_recovering(&self, pg: PgId) -> Option<RecoveryMark<'_>> {
        let slot = self.recovery_slots.clone().try_acquire_owned().ok()?;
        self.mark_recovery(
            pg,
            Recovery {
                backfill: self.backfills(pg),
                waiting: false,
                active: true,
            },
        );
        Some(RecoveryMark {
            service: self,
            pg,
            _slot: Some(slot),
        })
    }

    fn mark_recovery(&self, pg: PgId, recovery: Recovery) {
        self.recovering
            .lock()
            .expect("recovery table")
            .insert(pg, recovery);
    }

    /// The configured pause between recovered objects.
    async fn recovery_pause(&self) {
        if !self.config.recovery_sleep.is_zero() {
            tokio::time::sleep(self.config.recovery_sleep).await;
        }
    }

    /// Every object name of `osd`'s copy of the PG.
    async fn peer_names(
        &self,
        client: &mut OsdClient<Channel>,
        map: &ClusterMap,
        pg: PgId,
    ) -> Result<Vec<Vec<u8>>, Status> {
        let mut names = Vec::new();
        loop {
            let page = client
                .list(ListRequest {
                    epoch: map.epoch,
                    pool: pg.pool,
                    pg_seed: pg.seed,
                    start_after: names.last().cloned().unwrap_or_default(),
                    limit: 1000,
                })
                .await?
                .into_inner()
                .entries;
            let done = page.len() < 1000;
            names.extend(page.into_iter().map(|entry| entry.name));
            if done {
                return Ok(names);
            }
        }
    }

    /// Makes this OSD's copy of the PG level with `source`'s newer history. With
    /// `lazy` (the source stays up), it takes the log entries it misses and marks
    /// their objects missing, to be recovered after the PG goes active; otherwise
    /// it pulls those objects first. When the log does not reach back that far,
    /// every object is pulled first (backfill). Objects the source itself misses
    /// (`source_missing`) stay missing here.
    async fn pull(
        &self,
        map: &ClusterMap,
        pg: PgId,
        (source, source_missing): (u32, &[Vec<u8>]),
        lazy: bool,
        log: &mut PgLog,
    ) -> Result<(), Status> {
        let mut client = self.peer_client(map, source)?;
        let reference = pg_ref(map, pg);
        let theirs = whole_log(&mut client, reference).await?;
        let their_oldest = theirs.first().map_or(0, |entry| entry.version);
        let store = self.store.clone();
        let (mine, _) = blocking(move || pg::log_since(&store, pg, 0)).await?;
        let mut delivery = Delivery::default();
        let pulled = match pg::catch_up(&theirs, their_oldest, &mine) {
            CatchUp::Level => return Ok(()),
            CatchUp::Backfill => {
                let names = pg::backfill_names(
                    self.peer_names(&mut client, map, pg).await?,
                    source_missing,
                );
                delivery.entries = theirs;
                delivery.keep = Some(names.clone());
                if lazy {
                    // Every object is compared after the PG goes active.
                    log.backfilled.insert(self.id);
                    delivery.missing = names;
                    Vec::new()
                } else {
                    delivery.missing = source_missing.to_vec();
                    // The source's stale data of what it misses is not taken.
                    names
                        .into_iter()
                        .filter(|name| !source_missing.contains(name))
                        .collect()
                }
            }
            CatchUp::Entries {
                from,
                names,
                entries,
            } => {
                delivery.entries = entries;
                delivery.rewind_from = Some(from);
                let (unavailable, available): (Vec<_>, Vec<_>) = names
                    .into_iter()
                    .partition(|name| lazy || source_missing.contains(name));
                delivery.missing = unavailable;
                available
            }
        };
        if !pulled.is_empty() {
            let _recovering = self.recovering(pg, delivery.keep.is_some(), false).await;
            log.dirty = true;
            for name in pulled {
                self.recovery_pause().await;
                self.metrics.recovered_objects.inc();
                let objects = client
                    .pull_objects(PullRequest {
                        pg: Some(reference),
                        names: vec![name],
                    })
                    .await?
                    .into_inner()
                    .objects;
                let store = self.store.clone();
                blocking(move || pg::install(&store, pg, &Delivery::objects(objects))).await?;
            }
        }
        self.install_here(pg, delivery, log).await
    }

    /// Installs a delivery in this OSD's copy of the PG and reloads its log.
    async fn install_here(
        &self,
        pg: PgId,
        delivery: Delivery,
        log: &mut PgLog,
    ) -> Result<(), Status> {
        log.dirty = true;
        let store = self.store.clone();
        let fresh = blocking(move || {
            pg::install(&store, pg, &delivery)?;
            pg::load(&store, pg)
        })
        .await?;
        log.reloaded(fresh);
        Ok(())
    }

    /// This OSD's info of its copy of a PG whose log is `log`, as peering asks for
    /// it: how far the log reaches back, the interval the copy was last brought
    /// level in, and for an erasure-coded PG, the shard it holds and its pending
    /// write.
    async fn info_of(&self, pg: PgId, log: &PgLog, clean: bool) -> Result<PgInfoReply, Status> {
        let store = self.store.clone();
        let (oldest, shard, pending, activated) = blocking(move || {
            Ok((
                pg::log_since(&store, pg, u64::MAX)?.1,
                pg::shard(&store, pg)?,
                pg::pending(&store, pg)?.and_then(|pending| pending.entry),
                pg::activated(&store, pg)?,
            ))
        })
        .await?;
        Ok(PgInfoReply {
            epoch: self.current().epoch,
            last: log.last,
            oldest,
            last_epoch: log.last_epoch,
            clean,
            shard,
            pending,
            activated,
            missing: log.missing.iter().cloned().collect(),
        })
    }

    /// The push that installs `delivery` in a peer's copy of the PG, from this
    /// primary's interval.
    fn push_request(&self, map: &ClusterMap, pg: PgId, delivery: Delivery) -> PushRequest {
        let Delivery {
            objects,
            entries,
            keep,
            rewind_from,
            shard,
            missing,
        } = delivery;
        PushRequest {
            pg: Some(pg_ref(map, pg)),
            objects,
            entries,
            full: keep.is_some(),
            keep: keep.unwrap_or_default(),
            rewind_from: rewind_from.unwrap_or(0),
            interval: self.interval(pg),
            shard,
            missing,
            ..PushRequest::default()
        }
    }

    /// Brings replica `osd`'s log level with this OSD's: the entries it misses or
    /// holds diverged, with their objects marked missing there (recovered after
    /// the PG goes active; [`PgLog::peer_missing`] names them). When this log
    /// does not reach back that far, every object is pushed first (backfill).
    async fn recover_replica(
        &self,
        map: &ClusterMap,
        pg: PgId,
        osd: u32,
        log: &mut PgLog,
    ) -> Result<(), Status> {
        let mut client = self.peer_client(map, osd)?;
        let theirs = whole_log(&mut client, pg_ref(map, pg)).await?;
        let store = self.store.clone();
        let (mine, my_oldest) = blocking(move || pg::log_since(&store, pg, 0)).await?;
        let mut delivery = Delivery::default();
        match pg::catch_up(&mine, my_oldest, &theirs) {
            CatchUp::Level => return Ok(()),
            CatchUp::Backfill => {
                // The replica takes the whole log, keeps only the objects named
                // (this copy's and those it misses itself), and every one of
                // them is compared and sent after the PG goes active.
                let store = self.store.clone();
                let held = blocking(move || pg::names(&store, pg)).await?;
                let names = pg::backfill_names(held, &log.missing);
                tracing::info!(%pg, osd, objects = names.len(), "backfilling replica");
                log.backfilled.insert(osd);
                delivery.entries = mine;
                delivery.keep = Some(names.clone());
                delivery.missing = names;
            }
            CatchUp::Entries {
                from,
                names,
                entries,
            } => {
                tracing::info!(%pg, osd, rewind_from = from, objects = names.len(), "replica log brought level");
                delivery.entries = entries;
                delivery.rewind_from = Some(from);
                delivery.missing = names;
            }
        }
        let reply = client
            .push_objects(self.push_request(map, pg, delivery))
            .await?
            .into_inner();
        log.peer_missing
            .insert(osd, reply.missing.into_iter().collect());
        self.queue_recovery(pg, log);
        Ok(())
    }

    /// Brings one object's newest data to every up copy of the PG that misses it:
    /// pulled to this primary from an up OSD that holds it, then pushed to the
    /// others. A client operation on a missing object waits for this, not for
    /// the whole PG's recovery.
    async fn recover_object(
        &self,
        map: &ClusterMap,
        pg: PgId,
        log: &mut PgLog,
        name: &[u8],
    ) -> Result<(), Status> {
        if !log.is_missing(name) {
            return Ok(());
        }
        if let Some(pool) = map.pools.get(&pg.pool)
            && pool.is_erasure()
        {
            return self.recover_shards(map, pool, pg, log, name).await;
        }
        let up: Vec<u32> = self.mapping(map, pg)?.up.into_iter().flatten().collect();
        if log.missing.contains(name) {
            let mut failures = Vec::new();
            let holders = up.iter().filter(|&&osd| {
                osd != self.id
                    && log
                        .peer_missing
                        .get(&osd)
                        .is_some_and(|names| !names.contains(name))
            });
            let mut found = None;
            for &osd in holders {
                match self.object_state(map, pg, name, osd).await {
                    Ok(state) => {
                        found = Some(state);
                        break;
                    }
                    Err(status) => failures.push(format!("osd.{osd}: {}", status.message())),
                }
            }
            if found.is_none() {
                for (osd, _) in self.prior_holders(map, pg, name).await? {
                    match self.object_state(map, pg, name, osd).await {
                        Ok(state) => {
                            found = Some(state);
                            break;
                        }
                        Err(status) => failures.push(format!("osd.{osd}: {}", status.message())),
                    }
                }
            }
            let Some(state) = found else {
                return Err(Status::unavailable(format!(
                    "object '{}' of PG {pg} is unfound: no up OSD holds its newest version{}; \
                     start the OSDs that held it",
                    String::from_utf8_lossy(name),
                    if failures.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", failures.join("; "))
                    }
                )));
            };
            let store = self.store.clone();
            blocking(move || pg::install(&store, pg, &Delivery::objects(vec![state]))).await?;
            log.missing.remove(name);
            self.metrics.recovered_objects.inc();
        }
        let lacking: Vec<u32> = log
            .peer_missing
            .iter()
            .filter(|(osd, names)| up.contains(osd) && names.contains(name))
            .map(|(osd, _)| *osd)
            .collect();
        if lacking.is_empty() {
            return Ok(());
        }
        let store = self.store.clone();
        let owned = name.to_vec();
        let state = blocking(move || pg::state(&store, pg, &owned)).await?;
        for osd in lacking {
            self.peer_client(map, osd)?
                .push_objects(self.push_request(map, pg, Delivery::objects(vec![state.clone()])))
                .await?;
            if let Some(names) = log.peer_missing.get_mut(&osd) {
                names.remove(name);
            }
            self.metrics.recovered_objects.inc();
        }
        Ok(())
    }

    /// Asks the background recovery (see [`Self::recover_in_background`]) to
    /// bring the PG's missing objects to every up copy.
    fn queue_recovery(&self, pg: PgId, log: &mut PgLog) {
        self.note_backfill(pg, log);
        if log.degraded() {
            // The receiver lives as long as the service.
            let _ = self.recovery_queue.send(pg);
        }
    }

    /// Records whether the PG's recovery backfills a copy; returns it.
    fn note_backfill(&self, pg: PgId, log: &mut PgLog) -> bool {
        let backfill = log.backfilling(self.id);
        let mut backfilling = self.backfilling.lock().expect("backfilling PGs");
        if backfill {
            backfilling.insert(pg);
        } else {
            backfilling.remove(&pg);
        }
        backfill
    }

    /// True when the PG's recovery backfills a copy, as its log last said.
    fn backfills(&self, pg: PgId) -> bool {
        self.backfilling
            .lock()
            .expect("backfilling PGs")
            .contains(&pg)
    }

    /// Recovers, in the background, the missing objects of the PGs peering left
    /// degraded: one object at a time under the PG lock (client operations run
    /// between them), at most `max_recovering_pgs` PGs at once.
    pub async fn recover_in_background(self: Arc<Self>) {
        let Some(mut queue) = self
            .recovery_requests
            .lock()
            .expect("recovery queue")
            .take()
        else {
            return;
        };
        // The PGs being recovered, each with whether it was queued again meanwhile
        // (a new peering may have found more to recover after the task looked).
        let running: Arc<Mutex<HashMap<PgId, bool>>> = Arc::default();
        while let Some(pg) = queue.recv().await {
            if let Some(again) = running.lock().expect("recovering PGs").get_mut(&pg) {
                *again = true;
                continue;
            }
            running.lock().expect("recovering PGs").insert(pg, false);
            let (service, running) = (self.clone(), running.clone());
            tokio::spawn(async move {
                let unfinished = service.recover_pg(pg).await;
                let again = running
                    .lock()
                    .expect("recovering PGs")
                    .remove(&pg)
                    .unwrap_or(false);
                if unfinished {
                    // An OSD did not answer or an object has no holder up: try
                    // again later (a map change also peers and queues it again).
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
                if unfinished || again {
                    let _ = service.recovery_queue.send(pg);
                }
            });
        }
    }

    /// Recovers the PG's missing objects while this OSD stays its primary in the
    /// interval it was peered in. True when some could not be recovered.
    async fn recover_pg(&self, pg: PgId) -> bool {
        let mut recovering = self.recovering(pg, self.backfills(pg), true).await;
        let mut failed: BTreeSet<Vec<u8>> = BTreeSet::new();
        let mut first = true;
        loop {
            // Between objects, not before the first: the PG's state tells at
            // once whether a copy is being backfilled.
            if !std::mem::take(&mut first) {
                self.recovery_pause().await;
            }
            let map = self.current();
            let Some(pool) = map.pools.get(&pg.pool) else {
                return false;
            };
            let lock = self.pg_lock(pg);
            // Peering waits for a recovery slot while it holds the PG lock, so
            // this task never waits for the lock while it holds a slot.
            let mut guard = match lock.try_lock() {
                Ok(guard) => guard,
                Err(_) => {
                    drop(recovering);
                    let guard = lock.lock().await;
                    match self.try_recovering(pg) {
                        Some(mark) => {
                            recovering = mark;
                            guard
                        }
                        None => {
                            drop(guard);
                            recovering = self.recovering(pg, self.backfills(pg), true).await;
                            continue;
                        }
                    }
                }
            };
            let Ok(log) = self.loaded(&mut guard, pg, pool).await else {
                return true;
            };
            self.mark_recovery(
                pg,
                Recovery {
                    backfill: self.note_backfill(pg, log),
                    waiting: false,
                    active: true,
                },
            );
            let up = match self.mapping(&map, pg) {
                Ok(mapping) if mapping.primary == Some(self.id) => mapping.up,
                _ => return false,
            };
            let interval = self.interval(pg);
            if log.peered.as_ref() != Some(&(interval, up.clone())) {
                // Peering again queues what is left.
                return false;
            }
            let next = log
                .missing
                .iter()
                .chain(log.peer_missing.values().flatten())
                .find(|name| !failed.contains(*name))
                .cloned();
            let Some(name) = next else {
                if failed.is_empty() {
                    // Clean: every up copy holds every write of earlier intervals.
                    self.intervals.forget_past(pg, interval, &up);
                }
                return !failed.is_empty();
            };
            if let Err(status) = self.recover_object(&map, pg, log, &name).await {
                tracing::warn!(%pg, object = %String::from_utf8_lossy(&name), error = %status.message(), "could not recover an object");
                failed.insert(name);
            }
        }
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
            let scrub = self.scrubs.lock().expect("scrub table").get(&pg).cloned();
            let scrubbing = scrub.as_ref().and_then(|stamp| stamp.running);
            let recovering = self
                .recovering
                .lock()
                .expect("recovery table")
                .get(&pg)
                .copied();
            let members = up.iter().flatten().count() as u32;
            let mut state = if members < pool.min_size() {
                "inactive".to_owned()
            } else if self.down.lock().expect("down PGs").contains(&pg) {
                // Waits for an OSD of an earlier interval (see `check_not_down`).
                "down".to_owned()
            } else {
                let lock = self.pg_lock(pg);
                // A scrub holds the lock a chunk at a time, and only scrubs a peered
                // PG, as background recovery recovers objects of an active one;
                // otherwise a busy lock means a request or peering is running.
                // Seen: (peered, some copy misses objects).
                let seen = match lock.try_lock() {
                    Ok(guard) => Some(guard.as_ref().map_or((false, false), |log| {
                        (
                            log.peered.as_ref() == Some(&(interval, up.clone())),
                            log.degraded(),
                        )
                    })),
                    Err(_) if scrubbing.is_some() => Some((true, false)),
                    Err(_) if recovering.is_some_and(|recovery| recovery.active) => {
                        Some((true, true))
                    }
                    Err(_) => None,
                };
                let undersized = if members < pool.size() {
                    "+undersized"
                } else {
                    ""
                };
                match (seen, recovering) {
                    (Some((true, true)), Some(recovery)) if recovery.active => {
                        format!("active+{}{undersized}+degraded", recovery.step())
                    }
                    (Some((true, degraded)), _) if degraded || !undersized.is_empty() => {
                        format!("active{undersized}+degraded")
                    }
                    (Some((true, _)), _) => "active+clean".to_owned(),
                    // Client I/O on the PG waits while copies are brought level.
                    (_, Some(recovery)) => format!("{}+degraded", recovery.step()),
                    (Some((false, _)), None) => "peering".to_owned(),
                    (None, None) => continue,
                }
            };
            match scrubbing {
                Some(true) => state.push_str("+scrubbing+deep"),
                Some(false) => state.push_str("+scrubbing"),
                None => {}
            }
            if scrub.as_ref().is_some_and(|stamp| stamp.inconsistent > 0) {
                state.push_str("+inconsistent");
            }
            stats.push(lcpfs_proto::PgStat {
                pool: pg.pool,
                seed: pg.seed,
                state,
                last_scrub: scrub.as_ref().map_or(0, |stamp| unix_seconds(stamp.last)),
                last_deep_scrub: scrub
                    .as_ref()
                    .map_or(0, |stamp| unix_seconds(stamp.last_deep)),
            });
        }
        stats
    }

    /// The PGs this OSD is primary for in the last observed map, with their up sets
    /// and the epochs their intervals began, in PG order.
    fn led_pgs(&self) -> Vec<(PgId, UpSet, u64)> {
        self.intervals.led_by(self.id)
    }

    /// Peers, in the background, every PG this OSD is primary for whenever the map
    /// changes, so PGs without client traffic are brought level too.
    pub async fn peer_on_map_changes(self: Arc<Self>) {
        let mut map = self.map.clone();
        loop {
            let current = map.borrow_and_update().clone();
            let mut failed = false;
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
                    failed = true;
                    tracing::warn!(%pg, error = %status, "peering failed; retrying");
                }
            }
            // After a failure, try again soon even if the map does not change.
            let retry = if failed {
                Duration::from_secs(2)
            } else {
                Duration::MAX
            };
            if let Ok(Err(_)) = tokio::time::timeout(retry, map.changed()).await {
                return;
            }
        }
    }

    /// Scrubs a PG this OSD is primary for: compares every up OSD's copy of each
    /// object (sizes and xattrs; with `deep`, content digests of every byte), a
    /// chunk of objects at a time under the PG lock. The authoritative copy is the
    /// one most copies agree on (the primary's on a tie); with `repair`, the others
    /// are rewritten from it.
    pub async fn scrub_pg(&self, pg: PgId, deep: bool, repair: bool) -> Result<ScrubReply, Status> {
        let map = self.current();
        let pool = self.pool(&map, pg.pool)?.clone();
        let pg = self.pg_of(&pool, pg.seed)?;
        if self.mapping(&map, pg)?.primary != Some(self.id) {
            return Err(self.stale(format!(
                "osd.{} is not the primary of PG {pg} at epoch {}",
                self.id, map.epoch
            )));
        }
        self.load_scrub_stamp(pg).await;
        self.scrub_stamp(pg, |stamp| stamp.running = Some(deep));
        let result = self.scrub_chunks(&pool, pg, deep, repair).await;
        let now = SystemTime::now();
        self.scrub_stamp(pg, |stamp| {
            stamp.running = None;
            if let Ok(report) = &result {
                stamp.inconsistent = report
                    .inconsistencies
                    .iter()
                    .filter(|bad| !bad.repaired)
                    .count();
                stamp.last = now;
                if deep {
                    stamp.last_deep = now;
                }
            }
        });
        if result.is_ok() {
            self.record_scrub(pg, deep, now).await;
        }
        let report = result?;
        tracing::info!(
            %pg,
            deep,
            objects = report.objects,
            inconsistent = report.inconsistencies.len(),
            repaired = report.inconsistencies.iter().filter(|bad| bad.repaired).count(),
            "scrubbed"
        );
        Ok(report)
    }

    /// Changes the PG's scrub stamp (loaded by [`Self::load_scrub_stamp`] first,
    /// or taken as now).
    fn scrub_stamp(&self, pg: PgId, change: impl FnOnce(&mut ScrubStamp)) {
        let mut scrubs = self.scrubs.lock().expect("scrub table");
        let now = SystemTime::now();
        change(scrubs.entry(pg).or_insert(ScrubStamp {
            last: now,
            last_deep: now,
            inconsistent: 0,
            running: None,
        }));
    }

    /// Loads, the first time this OSD leads the PG, when it was last scrubbed and
    /// deep-scrubbed, as recorded on this copy; a copy with nothing recorded (a
    /// new PG) counts as scrubbed now.
    async fn load_scrub_stamp(&self, pg: PgId) {
        if self.scrubs.lock().expect("scrub table").contains_key(&pg) {
            return;
        }
        let store = self.store.clone();
        let recorded = blocking(move || pg::scrub_stamps(&store, pg))
            .await
            .unwrap_or_default();
        let at = |seconds: u64| {
            if seconds > 0 {
                SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
            } else {
                SystemTime::now()
            }
        };
        self.scrubs
            .lock()
            .expect("scrub table")
            .entry(pg)
            .or_insert(ScrubStamp {
                last: at(recorded.0),
                last_deep: at(recorded.1),
                inconsistent: 0,
                running: None,
            });
    }

    /// Records a completed scrub on this copy and every other up copy, so that a
    /// restarted OSD, or the next primary, keeps to the schedule.
    async fn record_scrub(&self, pg: PgId, deep: bool, at: SystemTime) {
        let seconds = unix_seconds(at);
        let (scrubbed, deep_scrubbed) = (seconds, if deep { seconds } else { 0 });
        let store = self.store.clone();
        let mut failures = Vec::new();
        if let Err(status) =
            blocking(move || pg::set_scrub_stamps(&store, pg, scrubbed, deep_scrubbed)).await
        {
            failures.push(format!("osd.{}: {}", self.id, status.message()));
        }
        let map = self.current();
        let up = self
            .mapping(&map, pg)
            .map(|mapping| mapping.up)
            .unwrap_or_default();
        let push = PushRequest {
            interval: self.interval(pg),
            scrubbed,
            deep_scrubbed,
            ..PushRequest::default()
        };
        for (osd, status) in self.push_to_peers(&map, pg, &up, push).await {
            failures.push(format!("osd.{osd}: {}", status.message()));
        }
        if !failures.is_empty() {
            tracing::warn!(%pg, failures = %failures.join("; "), "scrub stamps not recorded everywhere");
        }
    }

    async fn scrub_chunks(
        &self,
        pool: &Pool,
        pg: PgId,
        deep: bool,
        repair: bool,
    ) -> Result<ScrubReply, Status> {
        let mut report = ScrubReply {
            primary: self.id,
            ..ScrubReply::default()
        };
        let mut start_after = Vec::new();
        loop {
            let lock = self.pg_lock(pg);
            let mut guard = lock.lock().await;
            let map = self.current();
            let log = self.loaded(&mut guard, pg, pool).await?;
            self.ensure_peered(&map, pool, pg, log).await?;
            if log.degraded() {
                // Copies that miss objects would be found inconsistent, and a repair
                // could take an older copy for the good one.
                return Err(Status::unavailable(format!(
                    "PG {pg} is recovering: some of its copies miss objects; scrub it once it is clean"
                )));
            }
            report.epoch = map.epoch;
            let store = self.store.clone();
            let after = start_after.clone();
            let mine =
                blocking(move || pg::scrub_map(&store, pg, &after, &[], SCRUB_CHUNK, deep)).await?;
            let done = mine.len() < SCRUB_CHUNK;
            // Every copy is compared over the same range of names.
            let last = match mine.last() {
                Some(object) if !done => object.name.clone(),
                _ => Vec::new(),
            };
            let up: Vec<u32> = self.mapping(&map, pg)?.up.into_iter().flatten().collect();
            let mut copies: BTreeMap<Vec<u8>, HashMap<u32, ScrubObject>> = BTreeMap::new();
            for object in mine {
                copies
                    .entry(object.name.clone())
                    .or_default()
                    .insert(self.id, object);
            }
            for &osd in up.iter().filter(|&&osd| osd != self.id) {
                let reply = self
                    .peer_client(&map, osd)?
                    .scrub_map(ScrubMapRequest {
                        pg: Some(pg_ref(&map, pg)),
                        deep,
                        start_after: start_after.clone(),
                        last: last.clone(),
                        limit: 0,
                    })
                    .await
                    .map_err(|status| {
                        Status::unavailable(format!(
                            "scrub of PG {pg}: osd.{osd} did not answer ({})",
                            status.message()
                        ))
                    })?;
                for object in reply.into_inner().objects {
                    copies
                        .entry(object.name.clone())
                        .or_default()
                        .insert(osd, object);
                }
            }
            for (name, held) in copies {
                let (authority, mut bad) = scrub::judge(&up, &held, self.id, deep);
                // Shards that agree on their metadata are checked against the
                // code: each one's bytes are verified by its engine, but a shard
                // can still hold bytes of another write.
                if let Some(object) = authority.and_then(|osd| held.get(&osd))
                    && deep
                    && pool.is_erasure()
                    && bad.is_empty()
                {
                    bad = self
                        .check_parity(&map, pool, pg, &name, object.size)
                        .await?;
                }
                report.objects += 1;
                report.bytes += authority
                    .and_then(|osd| held.get(&osd))
                    .map_or(0, |object| object.size);
                let mut found: Vec<Inconsistency> = bad
                    .into_iter()
                    .map(|(osd, reason)| Inconsistency {
                        name: name.clone(),
                        osd,
                        reason,
                        repaired: false,
                    })
                    .collect();
                if repair && pool.is_erasure() {
                    self.repair_shards(&map, pool, pg, &name, &mut found, log)
                        .await?;
                } else if repair && let Some(authority) = authority {
                    self.repair_copies(&map, pg, &name, authority, &mut found)
                        .await?;
                }
                report.inconsistencies.extend(found);
            }
            if done {
                return Ok(report);
            }
            start_after = last;
        }
    }

    /// Rewrites the bad copies of one object from the authoritative one; marks
    /// each copy it rewrote as repaired.
    async fn repair_copies(
        &self,
        map: &ClusterMap,
        pg: PgId,
        name: &[u8],
        authority: u32,
        bad: &mut [Inconsistency],
    ) -> Result<(), Status> {
        if bad.is_empty() {
            return Ok(());
        }
        let good = self.object_state(map, pg, name, authority).await?;
        let interval = self.interval(pg);
        for copy in bad.iter_mut() {
            if copy.osd == self.id {
                let store = self.store.clone();
                let objects = vec![good.clone()];
                blocking(move || pg::install(&store, pg, &Delivery::objects(objects))).await?;
            } else {
                self.peer_client(map, copy.osd)?
                    .push_objects(PushRequest {
                        pg: Some(pg_ref(map, pg)),
                        objects: vec![good.clone()],
                        interval,
                        ..PushRequest::default()
                    })
                    .await?;
            }
            tracing::warn!(%pg, osd = copy.osd, object = %String::from_utf8_lossy(name), reason = %copy.reason, "repaired a bad copy");
            copy.repaired = true;
        }
        Ok(())
    }

    /// An object's state in `osd`'s copy of the PG.
    async fn object_state(
        &self,
        map: &ClusterMap,
        pg: PgId,
        name: &[u8],
        osd: u32,
    ) -> Result<ObjectState, Status> {
        if osd == self.id {
            let store = self.store.clone();
            let name = name.to_vec();
            return blocking(move || pg::state(&store, pg, &name)).await;
        }
        self.peer_client(map, osd)?
            .pull_objects(PullRequest {
                pg: Some(pg_ref(map, pg)),
                names: vec![name.to_vec()],
            })
            .await?
            .into_inner()
            .objects
            .pop()
            .ok_or_else(|| Status::internal(format!("osd.{osd} sent no object")))
    }

    /// Replaces this OSD's unreadable copy of an object with a peer's: the engine
    /// could not heal it from its own disks (a checksum error without redundancy).
    async fn repair_from_peers(
        &self,
        map: &ClusterMap,
        pg: PgId,
        name: &[u8],
        log: &PgLog,
    ) -> Result<(), Status> {
        let up: Vec<u32> = self.mapping(map, pg)?.up.into_iter().flatten().collect();
        let mut last_error = Status::data_loss(format!("no other OSD of PG {pg} is up"));
        // A copy that misses the object's newest data holds an older version.
        let holders = up.iter().filter(|&&osd| {
            osd != self.id
                && !log
                    .peer_missing
                    .get(&osd)
                    .is_some_and(|names| names.contains(name))
        });
        for &osd in holders {
            match self.object_state(map, pg, name, osd).await {
                Ok(good) => {
                    let store = self.store.clone();
                    blocking(move || pg::install(&store, pg, &Delivery::objects(vec![good])))
                        .await?;
                    tracing::warn!(%pg, from = osd, object = %String::from_utf8_lossy(name), "replaced an unreadable copy");
                    return Ok(());
                }
                Err(status) => last_error = status,
            }
        }
        Err(Status::data_loss(format!(
            "object '{}' is unreadable here and no peer could supply it: {}",
            String::from_utf8_lossy(name),
            last_error.message()
        )))
    }

    /// Removes, every few seconds, this OSD's copies of PGs it is no longer in the
    /// up set of (after a remap) and of pools that no longer exist.
    pub async fn remove_strays(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let store = self.store.clone();
            let Ok(held) = blocking(move || Ok(pg::held(&store))).await else {
                continue;
            };
            for pg in held {
                match self.stray_removable(pg).await {
                    Ok(true) => {
                        if let Err(status) = self.remove_stray(pg).await {
                            tracing::warn!(%pg, error = %status.message(), "could not remove a stray PG copy");
                        }
                    }
                    Ok(false) => {}
                    Err(status) => {
                        tracing::debug!(%pg, error = %status.message(), "stray PG copy kept for now");
                    }
                }
            }
        }
    }

    /// True when this OSD's copy of `pg` can go: its pool is gone, or the OSD is
    /// out of the PG's up set, the PG is active+clean without it, and its primary's
    /// log holds this copy's newest write (so nothing is lost with it).
    async fn stray_removable(&self, pg: PgId) -> Result<bool, Status> {
        let map = self.current();
        let Some(pool) = map.pools.get(&pg.pool) else {
            return Ok(true);
        };
        if pg.seed >= pool.pg_num {
            return Ok(false);
        }
        let mapping = self.mapping(&map, pg)?;
        if mapping.up.contains(&Some(self.id)) {
            return Ok(false);
        }
        let Some(primary) = mapping.primary else {
            return Ok(false);
        };
        let (last, last_epoch) = {
            let lock = self.pg_lock(pg);
            let mut guard = lock.lock().await;
            let log = self.loaded(&mut guard, pg, pool).await?;
            (log.last, log.last_epoch)
        };
        let mut client = self.peer_client(&map, primary)?;
        let info = client.pg_info(pg_ref(&map, pg)).await?.into_inner();
        if !info.clean {
            return Ok(false);
        }
        if last == 0 || info.oldest > last {
            // Nothing written here, or the primary's history has moved on past it.
            return Ok(true);
        }
        let theirs = client
            .pg_log(PgLogRequest {
                pg: Some(pg_ref(&map, pg)),
                since: last - 1,
            })
            .await?
            .into_inner()
            .entries;
        Ok(theirs
            .first()
            .is_some_and(|entry| entry.version == last && entry.epoch == last_epoch))
    }

    /// Removes this OSD's copy of `pg` unless the map moved it back here meanwhile.
    async fn remove_stray(&self, pg: PgId) -> Result<(), Status> {
        let lock = self.pg_lock(pg);
        let mut guard = lock.lock().await;
        let map = self.current();
        if map.pools.contains_key(&pg.pool) && self.mapping(&map, pg)?.up.contains(&Some(self.id)) {
            return Ok(());
        }
        let store = self.store.clone();
        blocking(move || pg::remove(&store, pg)).await?;
        *guard = None;
        tracing::info!(%pg, "removed a stray PG copy");
        Ok(())
    }

    /// Scrubs, one at a time, the PGs this OSD leads whose scrub or deep scrub is
    /// due, repairing what they find when `auto_repair` is set.
    pub async fn scrub_on_schedule(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            for (pg, _, _) in self.led_pgs() {
                self.load_scrub_stamp(pg).await;
                let mut due = None;
                let since = |at: SystemTime| at.elapsed().unwrap_or_default();
                self.scrub_stamp(pg, |stamp| {
                    if since(stamp.last_deep) >= self.config.deep_scrub_interval {
                        due = Some(true);
                    } else if since(stamp.last) >= self.config.scrub_interval {
                        due = Some(false);
                    }
                });
                let Some(deep) = due else { continue };
                if let Err(status) = self.scrub_pg(pg, deep, self.config.auto_repair).await {
                    tracing::warn!(%pg, deep, error = %status.message(), "scheduled scrub failed; retrying later");
                }
            }
        }
    }

    /// Refuses a request that writes (anything but removals) to a PG one of whose
    /// up OSDs the monitors marked full: the space left is kept for recovery, and
    /// deletes still free space.
    fn check_full(&self, map: &ClusterMap, pg: PgId, request: &OpRequest) -> Result<(), Status> {
        let removes_only = request
            .ops
            .iter()
            .filter_map(|op| op.op.as_ref())
            .filter(|op| pg::is_mutation(op))
            .all(|op| {
                matches!(
                    op,
                    Op::Delete(_) | Op::RmXattr(_) | Op::OmapRm(_) | Op::OmapClear(_)
                )
            });
        if removes_only {
            return Ok(());
        }
        let full: Vec<String> = self
            .mapping(map, pg)?
            .up
            .iter()
            .flatten()
            .filter(|osd| map.osds.get(osd).is_some_and(|info| info.full))
            .map(|osd| format!("osd.{osd}"))
            .collect();
        if full.is_empty() {
            return Ok(());
        }
        Err(Status::resource_exhausted(format!(
            "PG {pg} takes no writes: {} full (past the monitors' full ratio); the write was \
             not applied: delete data or add OSDs",
            full.join(", ")
        )))
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
        self.check_full(&map, pg, request)?;

        let lock = self.pg_lock(pg);
        let mut guard = lock.lock().await;
        let log = self.loaded(&mut guard, pg, pool).await?;
        // Peering and recovery see one map: recovery trusts what peering found
        // of the up set's copies.
        let map = self.current();
        self.ensure_peered(&map, pool, pg, log).await?;
        // Every up copy holds the object's newest data before it changes.
        self.recover_object(&map, pg, log, &request.name).await?;
        // A retried request is answered with its version; if it had not reached every
        // replica yet, it is replicated again (never applied twice). Peering a new
        // interval brings every replica level, so an incomplete request always
        // belongs to the current interval.
        let interval = log.peered.as_ref().map_or(0, |(interval, _)| *interval);
        let (version, fresh) = match log.applied(&request.client, request.tid) {
            Some(version) if !log.incomplete(&request.client, request.tid) => return Ok(version),
            Some(version) => (version, false),
            None => (log.last.saturating_add(1), true),
        };
        let entry = LogEntry {
            version,
            name: request.name.clone(),
            client: request.client.clone(),
            tid: request.tid,
            epoch: interval,
        };
        if pool.is_erasure() {
            return self.write_erasure(pool, pg, request, log, entry).await;
        }
        // Applied here first: an operation the engine refuses (a missing object, a bad
        // offset) is refused before any replica sees it. Until every replica has it,
        // the request stays marked incomplete, so a retry (even after this call is
        // cancelled) replicates it again instead of answering early.
        if fresh {
            log.dirty = true;
            let (store, log_entries) = (self.store.clone(), self.config.pg_log_entries);
            let (applied, ops) = (entry.clone(), request.ops.clone());
            match blocking(move || pg::apply(&store, pg, &applied, &ops, log_entries)).await {
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
            log.record(&entry);
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
                    version_epoch: interval,
                    ..ReplicateRequest::default()
                },
                pool.id,
                log,
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
        let began = Instant::now();
        let request = request.into_inner();
        if request.name.is_empty() {
            return Err(Status::invalid_argument("object name is empty"));
        }
        if request.ops.iter().any(|op| op.op.is_none()) {
            return Err(Status::invalid_argument("an operation has no kind"));
        }
        let reserved = request.ops.iter().find_map(|op| match &op.op {
            Some(Op::SetXattr(KeyValue { key, .. }) | Op::RmXattr(key))
                if key.starts_with(ec::RESERVED_XATTR_PREFIX) =>
            {
                Some(key)
            }
            _ => None,
        });
        if let Some(key) = reserved {
            return Err(Status::invalid_argument(format!(
                "xattr names starting with '{}' are reserved for LCPFS ({key:?})",
                ec::RESERVED_XATTR_PREFIX
            )));
        }
        let map = self.map_at_least(request.epoch).await?;
        let pool = self.pool(&map, request.pool)?.clone();
        let omap = request.ops.iter().any(|op| {
            matches!(
                op.op,
                Some(
                    Op::OmapSet(_)
                        | Op::OmapRm(_)
                        | Op::OmapClear(_)
                        | Op::OmapGet(_)
                        | Op::OmapRange(_)
                )
            )
        });
        if pool.is_erasure() && omap {
            return Err(Status::invalid_argument(format!(
                "pool '{}' is erasure-coded: omap operations need a replicated pool",
                pool.name
            )));
        }
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
            let map = self.current();
            self.ensure_peered(&map, &pool, pg, log).await?;
            // A replicated read needs only this copy; an erasure-coded one reads
            // the other shards too.
            let lacking = if pool.is_erasure() {
                log.is_missing(&request.name)
            } else {
                log.missing.contains(&request.name)
            };
            if lacking {
                self.recover_object(&map, pg, log, &request.name).await?;
            }
            if pool.is_erasure() {
                return self
                    .read_erasure(&pool, pg, &request, log)
                    .await
                    .map_err(missing)
                    .map(|results| {
                        self.account(&request, &results, began);
                        Response::new(OpReply {
                            epoch: self.current().epoch,
                            results,
                            version,
                        })
                    });
            }
            let read = || {
                let store = self.store.clone();
                let (name, ops) = (request.name.clone(), request.ops.clone());
                blocking(move || pg::read(&store, pg, &name, &ops))
            };
            match read().await {
                Err(status) if status.code() == tonic::Code::DataLoss => {
                    self.repair_from_peers(&self.current(), pg, &request.name, log)
                        .await?;
                    read().await.map_err(missing)?
                }
                result => result.map_err(missing)?,
            }
        } else {
            Vec::new()
        };
        self.account(&request, &results, began);
        Ok(Response::new(OpReply {
            epoch: self.current().epoch,
            results,
            version,
        }))
    }

    type ReadStreamStream = tokio_stream::Iter<ReadChunks>;

    async fn read_stream(
        &self,
        request: Request<OpRequest>,
    ) -> Result<Response<Self::ReadStreamStream>, Status> {
        let mut request = request.into_inner();
        if !request.ops.is_empty() {
            return Err(Status::invalid_argument(
                "a streamed read names only the object: it reads the whole of it",
            ));
        }
        request.ops = vec![ObjectOp {
            op: Some(Op::Read(lcpfs_proto::ReadRange {
                offset: 0,
                length: 0,
            })),
        }];
        let reply = Osd::op(self, Request::new(request)).await?.into_inner();
        let Some(op_result::Result::Data(data)) = reply
            .results
            .into_iter()
            .next()
            .and_then(|result| result.result)
        else {
            return Err(Status::internal("the read of the object returned no data"));
        };
        Ok(Response::new(tokio_stream::iter(ReadChunks {
            data,
            offset: None,
            epoch: reply.epoch,
        })))
    }

    async fn write_stream(
        &self,
        request: Request<Streaming<DataChunk>>,
    ) -> Result<Response<OpReply>, Status> {
        let mut chunks = request.into_inner();
        let first = chunks
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("the write stream sent nothing"))?;
        let mut request = first.request.ok_or_else(|| {
            Status::invalid_argument("the first chunk of a write stream carries no request")
        })?;
        if !request.ops.is_empty() {
            return Err(Status::invalid_argument(
                "a streamed write names only the object: it replaces the whole of it",
            ));
        }
        let (size, limit) = (first.size, self.config.max_object_size);
        if size > limit {
            return Err(too_big(size, limit));
        }
        let mut data = Vec::with_capacity(size as usize);
        data.extend_from_slice(&first.data);
        loop {
            if data.len() as u64 > size {
                return Err(Status::invalid_argument(format!(
                    "the write stream sent more than the {size} bytes it announced; nothing was written"
                )));
            }
            match chunks.message().await? {
                Some(chunk) => data.extend_from_slice(&chunk.data),
                None => break,
            }
        }
        if data.len() as u64 != size {
            return Err(Status::invalid_argument(format!(
                "the write stream ended after {} of the {size} bytes it announced; nothing was written",
                data.len()
            )));
        }
        request.ops = vec![ObjectOp {
            op: Some(Op::WriteFull(data)),
        }];
        Osd::op(self, Request::new(request)).await
    }

    async fn replicate(
        &self,
        request: Request<ReplicateRequest>,
    ) -> Result<Response<ReplicateReply>, Status> {
        tls::require(&request, &["osd"], "Osd.Replicate")?;
        let request = request.into_inner();
        let map = self.map_at_least(request.epoch).await?;
        let pool = self.pool(&map, request.pool)?.clone();
        let pg = self.pg_of(&pool, request.pg_seed)?;
        let lock = self.pg_lock(pg);
        let mut guard = lock.lock().await;
        let log = self.loaded(&mut guard, pg, &pool).await?;
        let entry = LogEntry {
            version: request.version,
            name: request.name.clone(),
            client: request.client.clone(),
            tid: request.tid,
            epoch: request.version_epoch,
        };
        if entry.version <= log.last {
            // Already here: only if it is the same write (histories agree).
            let store = self.store.clone();
            let version = entry.version;
            let held = blocking(move || pg::entry_at(&store, pg, version)).await?;
            if !held.is_some_and(|held| pg::same_entry(&held, &entry)) {
                return Err(Status::aborted(format!(
                    "osd.{} holds another write at version {version} of PG {pg}: the PG must peer again",
                    self.id
                )));
            }
        } else {
            log.check_interval(entry.epoch, pg)
                .map_err(|message| self.stale(message))?;
            if entry.version > log.last.saturating_add(1) {
                // Entries are missing here: the primary must bring this OSD level.
                return Err(Status::out_of_range(format!(
                    "osd.{} has PG {pg} only up to version {}",
                    self.id, log.last
                )));
            }
            let store = self.store.clone();
            let (applied, ops) = (entry.clone(), request.ops.clone());
            if request.prepare {
                // Erasure-coded pools: applied only on EcCommit.
                let shard = request
                    .shard
                    .ok_or_else(|| Status::invalid_argument("a prepared write names no shard"))?;
                blocking(move || pg::prepare(&store, pg, &applied, &ops, shard)).await?;
            } else {
                log.dirty = true;
                let log_entries = self.config.pg_log_entries;
                blocking(move || pg::apply(&store, pg, &applied, &ops, log_entries)).await?;
                log.record(&entry);
            }
        }
        Ok(Response::new(ReplicateReply {
            epoch: self.current().epoch,
        }))
    }

    async fn pg_info(&self, request: Request<PgRef>) -> Result<Response<PgInfoReply>, Status> {
        tls::require(&request, &["osd"], "Osd.PgInfo")?;
        let reference = request.into_inner();
        let map = self.map_at_least(reference.epoch).await?;
        let pool = self.pool(&map, reference.pool)?.clone();
        let pg = self.pg_of(&pool, reference.pg_seed)?;
        if reference.probe {
            // Read from the store without the PG lock (which a peering of this
            // copy may hold while it asks the prober), and without creating a copy.
            let store = self.store.clone();
            let log = blocking(move || {
                if store.collection(&pg::collection(pg)).is_err() {
                    return Ok(None);
                }
                pg::load(&store, pg).map(Some)
            })
            .await?;
            let info = match log {
                Some(log) => self.info_of(pg, &log, false).await?,
                None => PgInfoReply {
                    epoch: map.epoch,
                    ..PgInfoReply::default()
                },
            };
            return Ok(Response::new(info));
        }
        let lock = self.pg_lock(pg);
        let mut guard = lock.lock().await;
        let log = self.loaded(&mut guard, pg, &pool).await?;
        // A primary peering this copy: older primaries are refused from now on.
        self.accept_interval(pg, log, reference.interval).await?;
        let up = self.mapping(&map, pg)?.up;
        let clean = primary(&up) == Some(self.id)
            && up.iter().flatten().count() as u32 >= pool.size()
            && log.peered == Some((self.interval(pg), up))
            && !log.degraded();
        Ok(Response::new(self.info_of(pg, log, clean).await?))
    }

    async fn pg_log(&self, request: Request<PgLogRequest>) -> Result<Response<PgLogReply>, Status> {
        tls::require(&request, &["osd"], "Osd.PgLog")?;
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
        tls::require(&request, &["osd"], "Osd.PullObjects")?;
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
        tls::require(&request, &["osd"], "Osd.PushObjects")?;
        let request = request.into_inner();
        let (pool, pg) = self.checked_pg(request.pg).await?;
        let lock = self.pg_lock(pg);
        let mut guard = lock.lock().await;
        let log = self.loaded(&mut guard, pg, &pool).await?;
        log.check_interval(request.interval, pg)
            .map_err(|message| self.stale(message))?;
        let delivery = Delivery {
            objects: request.objects,
            entries: request.entries,
            keep: request.full.then_some(request.keep),
            rewind_from: (request.rewind_from > 0).then_some(request.rewind_from),
            shard: request.shard,
            missing: request.missing,
        };
        let reload = delivery.keep.is_some()
            || delivery.rewind_from.is_some()
            || !delivery.missing.is_empty();
        let entries = if reload {
            Vec::new()
        } else {
            delivery.entries.clone()
        };
        let names: Vec<Vec<u8>> = delivery
            .objects
            .iter()
            .map(|object| object.name.clone())
            .collect();
        log.dirty = true;
        let store = self.store.clone();
        let fresh = blocking(move || {
            pg::install(&store, pg, &delivery)?;
            Ok(if reload {
                Some(pg::load(&store, pg)?)
            } else {
                None
            })
        })
        .await?;
        match fresh {
            Some(fresh) => log.reloaded(fresh),
            None => {
                for entry in &entries {
                    log.record(entry);
                }
                for name in &names {
                    log.missing.remove(name);
                }
                log.dirty = false;
            }
        }
        if request.activated > 0 {
            let store = self.store.clone();
            blocking(move || pg::set_activated(&store, pg, request.activated)).await?;
        }
        if request.scrubbed > 0 {
            let store = self.store.clone();
            let (scrubbed, deep) = (request.scrubbed, request.deep_scrubbed);
            blocking(move || pg::set_scrub_stamps(&store, pg, scrubbed, deep)).await?;
        }
        Ok(Response::new(PushReply {
            last: log.last,
            missing: log.missing.iter().cloned().collect(),
        }))
    }

    async fn scrub_map(
        &self,
        request: Request<ScrubMapRequest>,
    ) -> Result<Response<ScrubMapReply>, Status> {
        tls::require(&request, &["osd"], "Osd.ScrubMap")?;
        let request = request.into_inner();
        let (pool, pg) = self.checked_pg(request.pg).await?;
        // Under the PG lock, so the map matches the primary's (writes are ordered
        // by the same lock on the primary, and replicas apply them in order).
        let lock = self.pg_lock(pg);
        let mut guard = lock.lock().await;
        self.loaded(&mut guard, pg, &pool).await?;
        let store = self.store.clone();
        let objects = blocking(move || {
            pg::scrub_map(
                &store,
                pg,
                &request.start_after,
                &request.last,
                request.limit as usize,
                request.deep,
            )
        })
        .await?;
        Ok(Response::new(ScrubMapReply { objects }))
    }

    async fn scrub(&self, request: Request<ScrubRequest>) -> Result<Response<ScrubReply>, Status> {
        let request = request.into_inner();
        let map = self.map_at_least(request.epoch).await?;
        let pool = self.pool(&map, request.pool)?.clone();
        let pg = self.pg_of(&pool, request.pg_seed)?;
        self.scrub_pg(pg, request.deep, request.repair)
            .await
            .map(Response::new)
    }

    async fn ec_commit(
        &self,
        request: Request<EcCommitRequest>,
    ) -> Result<Response<EcCommitReply>, Status> {
        tls::require(&request, &["osd"], "Osd.EcCommit")?;
        let request = request.into_inner();
        let reference = request.pg.unwrap_or_default();
        let entry = request
            .entry
            .ok_or_else(|| Status::invalid_argument("no log entry given"))?;
        let (pool, pg) = self.checked_pg(request.pg).await?;
        let lock = self.pg_lock(pg);
        let mut guard = lock.lock().await;
        let log = self.loaded(&mut guard, pg, &pool).await?;
        log.check_interval(reference.interval, pg)
            .map_err(|message| self.stale(message))?;
        log.dirty = true;
        let (store, log_entries) = (self.store.clone(), self.config.pg_log_entries);
        let resolved = entry.clone();
        blocking(move || pg::resolve(&store, pg, &resolved, request.commit, log_entries)).await?;
        if request.commit {
            log.record(&entry);
        }
        log.dirty = false;
        Ok(Response::new(EcCommitReply { last: log.last }))
    }

    async fn read_shard(
        &self,
        request: Request<ReadShardRequest>,
    ) -> Result<Response<ReadShardReply>, Status> {
        tls::require(&request, &["osd"], "Osd.ReadShard")?;
        let request = request.into_inner();
        let (_, pg) = self.checked_pg(request.pg).await?;
        if request.length > MAX_MESSAGE as u64 / 2 {
            return Err(Status::invalid_argument(format!(
                "a shard read of {} bytes is above the {}-byte limit",
                request.length,
                MAX_MESSAGE / 2
            )));
        }
        let store = self.store.clone();
        let reply = blocking(move || {
            pg::read_shard(&store, pg, &request.name, request.offset, request.length)
        })
        .await?;
        Ok(Response::new(reply))
    }

    async fn echo(&self, request: Request<EchoMessage>) -> Result<Response<EchoMessage>, Status> {
        Ok(Response::new(request.into_inner()))
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
            let current = self.current();
            self.ensure_peered(&current, &pool, pg, log).await?;
            // Objects this copy misses would be listed wrongly (or not at all):
            // an up copy that misses nothing lists them, or else they are
            // recovered here first.
            if !log.missing.is_empty() {
                let complete = log
                    .peer_missing
                    .iter()
                    .find(|(_, names)| names.is_empty())
                    .map(|(osd, _)| *osd);
                if let Some(osd) = complete {
                    let mut client = self.peer_client(&current, osd)?;
                    let reply = client.list(request).await?.into_inner();
                    return Ok(Response::new(reply));
                }
            }
            let missing: Vec<Vec<u8>> = log.missing.iter().cloned().collect();
            for name in missing {
                self.recover_object(&current, pg, log, &name).await?;
            }
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
