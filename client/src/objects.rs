//! Objects in pools: the client side of the OSD protocol.
//!
//! An [`ObjectClient`] follows the cluster map from the monitors, computes each
//! object's PG and primary OSD itself (the same CRUSH as every daemon), and talks
//! straight to the primary. A request that meets a stale map, a moving primary or a
//! dead OSD is retried (with the same request id, so a mutation is never applied
//! twice) until it succeeds or the deadline passes. A request whose outcome the
//! client never learned (it failed, or its caller dropped it) is named in the
//! client's next request for the object, so that it cannot run after that one
//! should it still reach the OSD: one client's requests for an object apply in
//! the order they were made.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use lcpfs_client::mon_client::MonClient;
//! use lcpfs_client::objects::ObjectClient;
//!
//! let mon = MonClient::new(&["127.0.0.1:6789".to_owned()])?;
//! let objects = ObjectClient::connect(mon).await?;
//! objects.put("data", b"greeting", b"hello".to_vec()).await?;
//! assert_eq!(objects.get("data", b"greeting").await?, b"hello");
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use lcpfs_core::crush::pg_mapping;
use lcpfs_core::map::{ClusterMap, Pool};
use lcpfs_core::pg::{PgId, object_to_pg};
use lcpfs_proto::connections::{OsdConnections, STREAM_CHUNK};
use lcpfs_proto::object_op::Op;
use lcpfs_proto::osd_client::OsdClient;
use lcpfs_proto::{
    DataChunk, EchoMessage, ListRequest, ObjectOp, ObjectStat, OmapEntries, OmapEntry, OmapKeys,
    OmapRange, OpReply, OpRequest, ScrubReply, ScrubRequest, op_result,
};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tonic::transport::Channel;

use crate::mon_client::MonClient;

const NO_ATTEMPT: &str = "no attempt";

/// How many unsettled requests the client names per object, newest first.
const ABANDONED_KEEP: usize = 64;

/// Requests whose outcome the client never learned, by (pool id, object name).
type Abandoned = Mutex<HashMap<(u32, Vec<u8>), Vec<u64>>>;

/// An object in a listing.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ObjectEntry {
    /// Object name (lossy UTF-8).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: u64,
}

/// A connection to the cluster's objects.
pub struct ObjectClient {
    map: watch::Receiver<Arc<ClusterMap>>,
    osds: OsdConnections,
    client_id: String,
    next_tid: AtomicU64,
    abandoned: Abandoned,
    timeout: Duration,
    follower: tokio::task::JoinHandle<()>,
}

/// A request under way: unless it is settled, dropping it records it as
/// abandoned, to be named by the next request for its object.
struct Unsettled<'a> {
    abandoned: &'a Abandoned,
    object: (u32, Vec<u8>),
    tid: u64,
    /// The requests abandoned before this one, which it names.
    names: Vec<u64>,
    settled: bool,
}

impl<'a> Unsettled<'a> {
    fn new(abandoned: &'a Abandoned, pool: u32, name: &[u8], tid: u64) -> Self {
        let object = (pool, name.to_vec());
        let names = abandoned
            .lock()
            .expect("abandoned requests")
            .get(&object)
            .cloned()
            .unwrap_or_default();
        Unsettled {
            abandoned,
            object,
            tid,
            names,
            settled: false,
        }
    }

    /// The request succeeded: its OSD learned the requests it named, and ran
    /// them before it or never will.
    fn succeeded(mut self) {
        self.settled = true;
        let mut abandoned = self.abandoned.lock().expect("abandoned requests");
        if let Some(tids) = abandoned.get_mut(&self.object) {
            tids.retain(|tid| !self.names.contains(tid));
            if tids.is_empty() {
                abandoned.remove(&self.object);
            }
        }
    }
}

impl Drop for Unsettled<'_> {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let mut abandoned = self.abandoned.lock().expect("abandoned requests");
        let tids = abandoned.entry(self.object.clone()).or_default();
        tids.push(self.tid);
        if tids.len() > ABANDONED_KEEP {
            tids.remove(0);
        }
    }
}

impl Drop for ObjectClient {
    fn drop(&mut self) {
        self.follower.abort();
    }
}

impl ObjectClient {
    /// Connects through the monitors and starts following the map.
    pub async fn connect(mon: MonClient) -> anyhow::Result<Self> {
        let map = mon
            .map(false)
            .await
            .context("cannot fetch the cluster map")?;
        let (sender, receiver) = watch::channel(Arc::new(map));
        let tls = mon.tls().cloned();
        let follower = tokio::spawn(follow(mon, sender));
        let mut id = [0u8; 8];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut id);
        Ok(ObjectClient {
            map: receiver,
            osds: OsdConnections::new(tls, None),
            client_id: format!("client.{:016x}", u64::from_le_bytes(id)),
            next_tid: AtomicU64::new(1),
            abandoned: Abandoned::default(),
            timeout: Duration::from_secs(60),
            follower,
        })
    }

    /// Sets how long one operation may take, retries included.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The map this client works from.
    pub fn map(&self) -> Arc<ClusterMap> {
        self.map.borrow().clone()
    }

    fn pool(&self, map: &ClusterMap, name: &str) -> anyhow::Result<Pool> {
        map.pool_by_name(name)
            .cloned()
            .ok_or_else(|| anyhow!("pool '{name}' does not exist (epoch {})", map.epoch))
    }

    fn osd(&self, addr: &str) -> anyhow::Result<OsdClient<Channel>> {
        self.osds
            .get(addr)
            .with_context(|| format!("bad OSD address {addr:?} in the map"))
    }

    /// The primary OSD of `pg` under `map` and a connection to it; `None` when no
    /// OSD of the PG is up.
    fn primary(
        &self,
        map: &ClusterMap,
        pg: PgId,
    ) -> anyhow::Result<Option<(u32, OsdClient<Channel>)>> {
        let mapping = pg_mapping(map, pg).map_err(|error| anyhow!("placement of {pg}: {error}"))?;
        let Some(primary) = mapping.primary else {
            return Ok(None);
        };
        let addr = map
            .osds
            .get(&primary)
            .map(|osd| osd.addr.clone())
            .unwrap_or_default();
        Ok(Some((primary, self.osd(&addr)?)))
    }

    /// Waits (briefly) for a map newer than `epoch`.
    async fn newer_map(&self, epoch: u64) {
        let mut map = self.map.clone();
        let _ = tokio::time::timeout(
            Duration::from_millis(500),
            map.wait_for(|map| map.epoch > epoch),
        )
        .await;
    }

    /// Sends `call` to the primary of the PG `locate` picks from the current map,
    /// again after a stale map, a moving primary or a dead OSD, until it succeeds,
    /// fails for good, or the client's deadline passes. One attempt may take at
    /// most `attempt_limit`.
    async fn at_primary<T, F, Fut>(
        &self,
        locate: impl Fn(&ClusterMap) -> anyhow::Result<PgId>,
        attempt_limit: Duration,
        mut call: F,
    ) -> anyhow::Result<T>
    where
        F: FnMut(OsdClient<Channel>, &ClusterMap, PgId) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline = Instant::now() + self.timeout;
        let mut last_error = String::from(NO_ATTEMPT);
        while Instant::now() < deadline {
            let map = self.map();
            let pg = locate(&map)?;
            let Some((primary, client)) = self.primary(&map, pg)? else {
                last_error = format!("PG {pg} has no OSD up");
                self.newer_map(map.epoch).await;
                continue;
            };
            let remaining = deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(100))
                .min(attempt_limit);
            match tokio::time::timeout(remaining, call(client, &map, pg)).await {
                Ok(Ok(reply)) => return Ok(reply.into_inner()),
                Ok(Err(status)) => match status.code() {
                    tonic::Code::FailedPrecondition
                    | tonic::Code::Unavailable
                    | tonic::Code::Unknown
                    | tonic::Code::Cancelled
                    | tonic::Code::DeadlineExceeded => {
                        last_error = format!("osd.{primary}: {}", status.message());
                        self.newer_map(map.epoch).await;
                    }
                    tonic::Code::NotFound => bail!("{}", status.message()),
                    _ => bail!("osd.{primary}: {}", status.message()),
                },
                Err(_) if last_error == NO_ATTEMPT => {
                    last_error = format!("osd.{primary} did not answer in time");
                }
                Err(_) => {}
            }
        }
        bail!(
            "could not complete the request within {:?}: {last_error}",
            self.timeout
        )
    }

    /// Request `tid` of this client for object `name` of `pg`, under `map`,
    /// naming the requests for the object it gave up before (`abandoned`).
    fn request(
        &self,
        map: &ClusterMap,
        pg: PgId,
        name: &[u8],
        (tid, abandoned): (u64, &[u64]),
        ops: Vec<ObjectOp>,
    ) -> OpRequest {
        OpRequest {
            epoch: map.epoch,
            pool: pg.pool,
            name: name.to_vec(),
            client: self.client_id.clone(),
            tid,
            ops,
            abandoned: abandoned.to_vec(),
        }
    }

    /// A new request for object `name` of pool `pool_name`, unsettled until it
    /// succeeds.
    fn unsettled(&self, pool_name: &str, name: &[u8]) -> anyhow::Result<Unsettled<'_>> {
        let pool = self.pool(&self.map(), pool_name)?.id;
        let tid = self.next_tid.fetch_add(1, Ordering::Relaxed);
        Ok(Unsettled::new(&self.abandoned, pool, name, tid))
    }

    /// Runs operations on one object at its PG's primary, atomically.
    pub async fn operate(
        &self,
        pool_name: &str,
        name: &[u8],
        ops: Vec<ObjectOp>,
    ) -> anyhow::Result<OpReply> {
        let unsettled = self.unsettled(pool_name, name)?;
        let locate = |map: &ClusterMap| Ok(object_to_pg(&self.pool(map, pool_name)?, name));
        // One stuck primary must not use up the whole deadline.
        let reply = self
            .at_primary(locate, Duration::from_secs(20), |mut client, map, pg| {
                let request = self.request(
                    map,
                    pg,
                    name,
                    (unsettled.tid, &unsettled.names),
                    ops.clone(),
                );
                async move { client.op(request).await }
            })
            .await?;
        unsettled.succeeded();
        Ok(reply)
    }

    /// Scrubs a PG at its primary (with `deep`, every byte; with `repair`, bad
    /// copies are rewritten from good ones) and returns what it found. A scrub
    /// may run long: only reaching the primary is bounded by the client's deadline.
    pub async fn scrub(&self, pg: PgId, deep: bool, repair: bool) -> anyhow::Result<ScrubReply> {
        let map = self.map();
        let pool = map
            .pools
            .get(&pg.pool)
            .ok_or_else(|| anyhow!("pool {} does not exist (epoch {})", pg.pool, map.epoch))?;
        if pg.seed >= pool.pg_num {
            bail!(
                "pool '{}' has {} PGs; there is no PG {pg}",
                pool.name,
                pool.pg_num
            );
        }
        self.at_primary(
            |_| Ok(pg),
            Duration::from_secs(24 * 3600),
            |mut client, map, pg| {
                let request = ScrubRequest {
                    epoch: map.epoch,
                    pool: pg.pool,
                    pg_seed: pg.seed,
                    deep,
                    repair,
                };
                async move { client.scrub(request).await }
            },
        )
        .await
    }

    /// Sends `payload` to the primary of object `name` and back, storing nothing:
    /// the network and gRPC cost of a request on the same path as a write.
    pub async fn echo(&self, pool_name: &str, name: &[u8], payload: Vec<u8>) -> anyhow::Result<()> {
        let locate = |map: &ClusterMap| Ok(object_to_pg(&self.pool(map, pool_name)?, name));
        self.at_primary(locate, Duration::from_secs(20), |mut client, _, _| {
            let message = EchoMessage {
                payload: payload.clone(),
            };
            async move { client.echo(message).await }
        })
        .await?;
        Ok(())
    }

    /// Writes a whole object (replacing it).
    pub async fn put(&self, pool: &str, name: &[u8], data: Vec<u8>) -> anyhow::Result<()> {
        self.operate(pool, name, vec![op(Op::WriteFull(data))])
            .await?;
        Ok(())
    }

    /// Writes a whole object (replacing it) like [`Self::put`], sent to the OSD in
    /// chunks of 4 MiB so that no message holds a large object whole.
    /// `progress` hears how many bytes have gone out (from 0 again when a retry
    /// starts over).
    pub async fn put_streamed(
        &self,
        pool_name: &str,
        name: &[u8],
        data: Vec<u8>,
        progress: impl Fn(u64) + Send + Sync + 'static,
    ) -> anyhow::Result<()> {
        let unsettled = self.unsettled(pool_name, name)?;
        let locate = |map: &ClusterMap| Ok(object_to_pg(&self.pool(map, pool_name)?, name));
        let (data, progress) = (Arc::new(data), Arc::new(progress));
        self.at_primary(locate, self.timeout, |mut client, map, pg| {
            let ids = (unsettled.tid, unsettled.names.as_slice());
            let request = self.request(map, pg, name, ids, Vec::new());
            let (data, progress) = (data.clone(), progress.clone());
            let size = data.len();
            // An empty object is one empty chunk.
            let chunks =
                tokio_stream::iter((0..size.div_ceil(STREAM_CHUNK).max(1)).map(move |index| {
                    let start = index * STREAM_CHUNK;
                    let end = (start + STREAM_CHUNK).min(size);
                    progress(end as u64);
                    DataChunk {
                        request: (index == 0).then(|| request.clone()),
                        size: size as u64,
                        epoch: 0,
                        data: data[start..end].to_vec(),
                    }
                }));
            async move { client.write_stream(chunks).await }
        })
        .await?;
        unsettled.succeeded();
        Ok(())
    }

    /// Reads a whole object into `out` as it arrives from the OSD, in chunks of
    /// 4 MiB, and returns its size; `progress` hears (bytes written, size). A
    /// read that breaks off half-way fails, with part of the object in `out`.
    pub async fn get_to<W: AsyncWrite + Unpin>(
        &self,
        pool_name: &str,
        name: &[u8],
        out: &mut W,
        mut progress: impl FnMut(u64, u64),
    ) -> anyhow::Result<u64> {
        let tid = self.next_tid.fetch_add(1, Ordering::Relaxed);
        let locate = |map: &ClusterMap| Ok(object_to_pg(&self.pool(map, pool_name)?, name));
        let mut chunks = self
            .at_primary(locate, self.timeout, |mut client, map, pg| {
                let request = self.request(map, pg, name, (tid, &[]), Vec::new());
                async move { client.read_stream(request).await }
            })
            .await?;
        let (mut size, mut done) = (None, 0);
        let broke_off = |done: u64, size: Option<u64>| {
            format!(
                "the read of '{}' broke off after {done} of {} bytes",
                String::from_utf8_lossy(name),
                size.unwrap_or(0)
            )
        };
        while let Some(chunk) = chunks
            .message()
            .await
            .with_context(|| broke_off(done, size))?
        {
            let size = *size.get_or_insert(chunk.size);
            out.write_all(&chunk.data).await?;
            done += chunk.data.len() as u64;
            progress(done, size);
        }
        match size {
            Some(size) if size == done => {
                out.flush().await?;
                Ok(size)
            }
            _ => bail!("{}", broke_off(done, size)),
        }
    }

    /// Appends to an object (creating it).
    pub async fn append(&self, pool: &str, name: &[u8], data: Vec<u8>) -> anyhow::Result<()> {
        self.operate(pool, name, vec![op(Op::Append(data))]).await?;
        Ok(())
    }

    /// Runs one reading operation and returns its result.
    async fn read_one(
        &self,
        pool: &str,
        name: &[u8],
        read: Op,
    ) -> anyhow::Result<op_result::Result> {
        let reply = self.operate(pool, name, vec![op(read)]).await?;
        reply
            .results
            .into_iter()
            .next()
            .and_then(|result| result.result)
            .ok_or_else(|| anyhow!("the OSD sent no result"))
    }

    /// Reads `length` bytes at `offset` (length 0: to the end).
    pub async fn read(
        &self,
        pool: &str,
        name: &[u8],
        offset: u64,
        length: u64,
    ) -> anyhow::Result<Vec<u8>> {
        let range = lcpfs_proto::ReadRange { offset, length };
        match self.read_one(pool, name, Op::Read(range)).await? {
            op_result::Result::Data(data) => Ok(data),
            _ => bail!("the OSD sent no data"),
        }
    }

    /// Reads a whole object.
    pub async fn get(&self, pool: &str, name: &[u8]) -> anyhow::Result<Vec<u8>> {
        self.read(pool, name, 0, 0).await
    }

    /// Size and modification time of an object.
    pub async fn stat(&self, pool: &str, name: &[u8]) -> anyhow::Result<ObjectStat> {
        match self.read_one(pool, name, Op::Stat(true)).await? {
            op_result::Result::Stat(stat) => Ok(stat),
            _ => bail!("the OSD sent no stat"),
        }
    }

    /// Sets an extended attribute (creating the object).
    pub async fn set_xattr(
        &self,
        pool: &str,
        name: &[u8],
        key: &str,
        value: Vec<u8>,
    ) -> anyhow::Result<()> {
        let pair = lcpfs_proto::KeyValue {
            key: key.to_owned(),
            value,
        };
        self.operate(pool, name, vec![op(Op::SetXattr(pair))])
            .await?;
        Ok(())
    }

    /// An extended attribute's value.
    pub async fn get_xattr(&self, pool: &str, name: &[u8], key: &str) -> anyhow::Result<Vec<u8>> {
        match self
            .read_one(pool, name, Op::GetXattr(key.to_owned()))
            .await?
        {
            op_result::Result::Xattr(value) => Ok(value),
            _ => bail!("the OSD sent no xattr"),
        }
    }

    /// Sets omap entries (creating the object).
    pub async fn omap_set(
        &self,
        pool: &str,
        name: &[u8],
        entries: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> anyhow::Result<()> {
        let entries = entries
            .into_iter()
            .map(|(key, value)| OmapEntry { key, value })
            .collect();
        self.operate(pool, name, vec![op(Op::OmapSet(OmapEntries { entries }))])
            .await?;
        Ok(())
    }

    /// Removes omap entries.
    pub async fn omap_rm(&self, pool: &str, name: &[u8], keys: Vec<Vec<u8>>) -> anyhow::Result<()> {
        self.operate(pool, name, vec![op(Op::OmapRm(OmapKeys { keys }))])
            .await?;
        Ok(())
    }

    /// The values of some omap keys (absent keys are left out).
    pub async fn omap_get(
        &self,
        pool: &str,
        name: &[u8],
        keys: Vec<Vec<u8>>,
    ) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.omap_read(pool, name, Op::OmapGet(OmapKeys { keys }))
            .await
    }

    /// Omap entries in key order: after `start_after`, starting with `prefix`, at
    /// most `limit` (0: all).
    pub async fn omap_range(
        &self,
        pool: &str,
        name: &[u8],
        start_after: &[u8],
        prefix: &[u8],
        limit: u32,
    ) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let range = OmapRange {
            start_after: start_after.to_vec(),
            prefix: prefix.to_vec(),
            limit,
        };
        self.omap_read(pool, name, Op::OmapRange(range)).await
    }

    async fn omap_read(
        &self,
        pool: &str,
        name: &[u8],
        read: Op,
    ) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        match self.read_one(pool, name, read).await? {
            op_result::Result::Omap(omap) => Ok(omap
                .entries
                .into_iter()
                .map(|entry| (entry.key, entry.value))
                .collect()),
            _ => bail!("the OSD sent no omap entries"),
        }
    }

    /// Removes an object.
    pub async fn remove(&self, pool: &str, name: &[u8]) -> anyhow::Result<()> {
        self.operate(pool, name, vec![op(Op::Delete(true))]).await?;
        Ok(())
    }

    /// Every object of a pool, sorted by name.
    pub async fn list(&self, pool_name: &str) -> anyhow::Result<Vec<ObjectEntry>> {
        // A pool whose pg_num grows meanwhile is listed again from the start:
        // its objects move between PGs.
        'listing: loop {
            let map = self.map();
            let pool = self.pool(&map, pool_name)?;
            let mut entries = Vec::new();
            for seed in 0..pool.pg_num {
                let pg = PgId::new(pool.id, seed);
                match self.list_pg(pg, pool.pg_num).await? {
                    Some(page) => entries.extend(page),
                    None => continue 'listing,
                }
            }
            entries.sort_by(|a, b| a.name.cmp(&b.name));
            return Ok(entries);
        }
    }

    /// The objects of `pg`, or `None` when the pool's pg_num changed from
    /// `pg_num` meanwhile.
    async fn list_pg(&self, pg: PgId, pg_num: u32) -> anyhow::Result<Option<Vec<ObjectEntry>>> {
        let deadline = Instant::now() + self.timeout;
        let mut entries = Vec::new();
        let mut start_after = Vec::new();
        loop {
            let map = self.map();
            if map.pools.get(&pg.pool).map(|pool| pool.pg_num) != Some(pg_num) {
                return Ok(None);
            }
            let Some((primary, mut client)) = self.primary(&map, pg)? else {
                if Instant::now() >= deadline {
                    bail!("PG {pg} has no OSD up");
                }
                self.newer_map(map.epoch).await;
                continue;
            };
            let request = ListRequest {
                epoch: map.epoch,
                pool: pg.pool,
                pg_seed: pg.seed,
                start_after: start_after.clone(),
                limit: 1000,
                pg_num,
            };
            match client.list(request).await {
                Ok(reply) => {
                    let page = reply.into_inner().entries;
                    let done = page.len() < 1000;
                    if let Some(last) = page.last() {
                        start_after = last.name.clone();
                    }
                    entries.extend(page.into_iter().map(|entry| ObjectEntry {
                        name: String::from_utf8_lossy(&entry.name).into_owned(),
                        size: entry.size,
                        mtime_ns: entry.mtime_ns,
                    }));
                    if done {
                        return Ok(Some(entries));
                    }
                }
                Err(_) if Instant::now() < deadline => self.newer_map(map.epoch).await,
                Err(status) => bail!("listing {pg} on osd.{primary}: {}", status.message()),
            }
        }
    }
}

fn op(op: Op) -> ObjectOp {
    ObjectOp { op: Some(op) }
}

/// Keeps `sender` at the newest map, resubscribing after a monitor fails.
async fn follow(mon: MonClient, sender: watch::Sender<Arc<ClusterMap>>) {
    loop {
        let have = (**sender.borrow()).clone();
        if let Ok(mut watch) = mon.subscribe(Some(have)).await {
            while let Ok(Some(map)) = watch.next().await {
                sender.send_replace(Arc::new(map.clone()));
            }
        }
        if sender.is_closed() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_never_settled_is_named_by_the_next_ones_until_one_succeeds() {
        let abandoned = Abandoned::default();
        let names = |tid: u64, name: &[u8]| {
            let next = Unsettled::new(&abandoned, 1, name, tid);
            let names = next.names.clone();
            next.succeeded();
            names
        };
        // One dropped by its caller, one that failed.
        drop(Unsettled::new(&abandoned, 1, b"a", 7));
        let failed = Unsettled::new(&abandoned, 1, b"a", 8);
        assert_eq!(failed.names, vec![7]);
        drop(failed);

        // The next request names both; another object's names neither.
        let next = Unsettled::new(&abandoned, 1, b"a", 9);
        assert_eq!(next.names, vec![7, 8]);
        assert!(names(10, b"b").is_empty());
        // One given up while `next` ran is not among those it named: it stays
        // after `next` succeeds, and only it.
        drop(Unsettled::new(&abandoned, 1, b"a", 11));
        next.succeeded();
        assert_eq!(names(12, b"a"), vec![11]);
        assert!(names(13, b"a").is_empty());
        assert!(abandoned.lock().unwrap().is_empty(), "nothing left to name");
    }
}
