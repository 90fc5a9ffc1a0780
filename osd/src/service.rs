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
    ListReply, ListRequest, ObjectOp, OpReply, OpRequest, ReplicateReply, ReplicateRequest,
};
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use crate::pg::{self, PgLog};

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
            peers: Mutex::new(HashMap::new()),
            config,
        }
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
        if guard.is_none() {
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
    async fn replicate(&self, request: ReplicateRequest, pool_id: u32) -> Result<(), Status> {
        let pg = PgId::new(pool_id, request.pg_seed);
        let deadline = Instant::now() + self.config.replicate_deadline;
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
            while let Some(done) = sends.join_next().await {
                match done {
                    Ok((_, Ok(_))) => {}
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
            pending = failed.iter().map(|(osd, _)| *osd).collect();
            if let Some((osd, status)) = failed.first() {
                if Instant::now() >= deadline {
                    return Err(Status::unavailable(format!(
                        "replica osd.{osd} did not store the write in time ({}); the write may be partly applied: retry it",
                        status.message()
                    )));
                }
                tracing::debug!(osd, error = %status, "replication failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(())
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
        // A retried request is answered with its version; if it had not reached every
        // replica yet, it is replicated again (never applied twice).
        let (version, fresh) = match log.applied(&request.client, request.tid) {
            Some(version) if !log.incomplete(&request.client, request.tid) => return Ok(version),
            Some(version) => (version, false),
            None => (log.last + 1, true),
        };
        let store = self.store.clone();
        let (name, client, tid, ops) = (
            request.name.clone(),
            request.client.clone(),
            request.tid,
            request.ops.clone(),
        );
        // Applied here first: an operation the engine refuses (a missing object, a bad
        // offset) is refused before any replica sees it.
        if fresh {
            blocking(move || pg::apply(&store, pg, version, &name, &client, tid, &ops)).await?;
        }
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
        if fresh {
            log.record(version, &request.client, request.tid);
        }
        log.set_incomplete(&request.client, request.tid, replicas.is_err());
        replicas.map(|()| version)
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
            if status.code() == tonic::Code::NotFound && !status.message().contains("xattr") {
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
            let store = self.store.clone();
            let (name, ops) = (request.name.clone(), request.ops.clone());
            let compression = pool.compression.clone();
            blocking(move || {
                pg::ensure(&store, pg, compression.as_deref())?;
                pg::read(&store, pg, &name, &ops)
            })
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
        let pg = PgId::new(request.pool, request.pg_seed);
        let lock = self.pg_lock(pg);
        let mut guard = lock.lock().await;
        let log = self.loaded(&mut guard, pg, &pool).await?;
        if request.version > log.last {
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

    async fn list(&self, request: Request<ListRequest>) -> Result<Response<ListReply>, Status> {
        let request = request.into_inner();
        let map = self.map_at_least(request.epoch).await?;
        self.pool(&map, request.pool)?;
        let pg = PgId::new(request.pool, request.pg_seed);
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
