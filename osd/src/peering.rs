//! Peering: before a PG serves in a new interval (its up set changed), its primary
//! makes every up copy hold every acknowledged write, from the up set's copies and
//! from the OSDs of the PG's earlier intervals, or keeps the PG `down` while an
//! interval that may hold writes nobody else has cannot be asked.
//!
//! [`ensure_peered`] is the transition, the same for every pool; how the newest
//! history is found and copies are brought level differs between replicated and
//! erasure-coded pools, and the backends implement it ([`PeeringBackend`]). This
//! module also holds what both backends ask of a PG's copies: their infos, the
//! earlier intervals' holders of an object, markers pushed to every copy.

use std::sync::Arc;
use std::time::Duration;

use lcpfs_core::map::{ClusterMap, Pool};
use lcpfs_core::pg::PgId;
use lcpfs_proto::{ObjectState, PgInfoReply, PgRef, PushRequest};

use crate::error::{OsdError, Result};
use crate::lease;
use crate::node::Node;
use crate::peers::{fan_out, pg_ref};
use crate::pg::{self, Delivery, Entry, PgLog, UpSet, entry};
use crate::recovery::{ObjectRecovery, queue_recovery};

/// How soon a PG whose peering failed is peered again, without a map change.
const RETRY_AFTER: Duration = Duration::from_secs(2);

/// How often the PGs are looked at without a map change: a PG left to peer again
/// by a write that failed half-way is brought level even if no client comes back
/// to it.
const SWEEP: Duration = Duration::from_secs(5);

/// How a pool's backend peers a PG (implemented by the layer above, one per kind
/// of pool).
#[tonic::async_trait]
pub trait PeeringBackend: ObjectRecovery {
    /// Takes the newest history among the PG's copies (the up set's, and with
    /// `reference` naming the new interval, its earlier intervals' OSDs) and brings
    /// every up copy's log level with it; objects a copy misses afterwards are
    /// recovered once the PG is active.
    #[allow(clippy::too_many_arguments)]
    async fn peer(
        &self,
        node: &Node,
        map: &ClusterMap,
        pool: &Pool,
        pg: PgId,
        log: &mut PgLog,
        up: &UpSet,
        reference: PgRef,
    ) -> Result<()>;
}

/// Chooses the peering of a pool.
pub type Backends = fn(&Pool) -> &'static dyn PeeringBackend;

/// Peers the PG if its up set changed since it was last peered, then brings every
/// other up OSD level with the newest history. Runs under the PG lock, so no
/// client operation sees the PG before it is level.
pub async fn ensure_peered(
    node: &Node,
    backend: &dyn PeeringBackend,
    map: &ClusterMap,
    pool: &Pool,
    pg: PgId,
    log: &mut PgLog,
) -> Result<()> {
    let mapping = node.mapping(map, pg)?;
    // A request that waited (for the map to give the PG min_size OSDs) may
    // find this OSD no longer primary: peering here would fight the primary.
    if mapping.primary != Some(node.id) {
        return Err(node.not_primary(pg, map));
    }
    let up = mapping.up;
    let interval = node.interval(pg);
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
    accept_interval(node, pg, log, interval).await?;
    backend
        .peer(node, map, pool, pg, log, &up, reference)
        .await?;
    // The monitors record this primary up through the interval before the PG
    // goes active: an interval they never recorded so took no writes and served
    // no reads, and later peerings need not wait for its OSDs.
    node.wait_up_thru(interval).await?;
    if node.interval(pg) != interval {
        return Err(OsdError::Unavailable(format!(
            "PG {pg} changed its OSDs while it peered; retry"
        )));
    }
    // Every up OSD now holds every write this one has.
    activate(node, map, pg, &up, interval).await?;
    log.clear_incomplete();
    // Until every up copy holds every object, the OSDs of earlier intervals
    // stay asked (see `prior_holders`): up copies that miss objects are not
    // their holders yet (like Ceph, which keeps past intervals back to the
    // PG's last clean epoch).
    if !log.degraded() {
        node.intervals.forget_past(pg, interval, &up);
    }
    log.peered = Some((interval, up));
    queue_recovery(node, pg, log);
    Ok(())
}

/// Peers, in the background, every PG this OSD is primary for whenever the map
/// changes (and every [`SWEEP`]), so PGs without client traffic are brought level
/// too.
pub async fn peer_on_map_changes(node: Arc<Node>, backends: Backends) {
    let mut watch = node.map_watch();
    loop {
        let current = watch.borrow_and_update().clone();
        let mut failed = false;
        for (pg, _, _) in node.led_pgs() {
            let Some(pool) = current.pools.get(&pg.pool) else {
                continue;
            };
            let slot = node.pgs.slot(pg);
            let mut guard = slot.lock().await;
            let result = match node.loaded(&mut guard, pg, pool).await {
                Ok(log) => ensure_peered(&node, backends(pool), &current, pool, pg, log).await,
                Err(error) => Err(error),
            };
            if let Err(error) = result {
                failed = true;
                tracing::warn!(%pg, %error, "peering failed; retrying");
            }
        }
        // After a failure, try again soon even if the map does not change.
        let retry = if failed { RETRY_AFTER } else { SWEEP };
        if let Ok(Err(_)) = tokio::time::timeout(retry, watch.changed()).await {
            return;
        }
    }
}

/// Raises the newest interval whose primary peered this copy, in memory and in
/// the store: older primaries are refused from now on, even after a restart of
/// this OSD.
pub async fn accept_interval(node: &Node, pg: PgId, log: &mut PgLog, interval: u64) -> Result<()> {
    if interval <= log.accepted_interval {
        return Ok(());
    }
    node.on_store(move |store| pg::set_accepted(store, pg, interval))
        .await?;
    log.accepted_interval = interval;
    Ok(())
}

/// Records, here and on every other up OSD, that peering in `interval` brought
/// the PG's copies level: its earlier intervals need not be asked again,
/// whatever happens to their OSDs.
async fn activate(
    node: &Node,
    map: &ClusterMap,
    pg: PgId,
    up: &UpSet,
    interval: u64,
) -> Result<()> {
    node.on_store(move |store| pg::set_activated(store, pg, interval))
        .await?;
    let push = PushRequest {
        interval,
        activated: interval,
        ..PushRequest::default()
    };
    match push_to_peers(node, map, pg, up, push)
        .await
        .into_iter()
        .next()
    {
        Some((_, error)) => Err(error),
        None => Ok(()),
    }
}

/// Sends `push` (a marker for the PG's copies, such as `activated` or scrub
/// stamps) to every other OSD of `up` at once; returns those that did not take it.
pub async fn push_to_peers(
    node: &Node,
    map: &ClusterMap,
    pg: PgId,
    up: &UpSet,
    push: PushRequest,
) -> Vec<(u32, OsdError)> {
    let push = PushRequest {
        pg: Some(pg_ref(map, pg)),
        ..push
    };
    let others = up.iter().flatten().copied().filter(|&osd| osd != node.id);
    let map = Arc::new(map.clone());
    let answers = fan_out(others, |osd| {
        let (map, push) = (map.clone(), push.clone());
        let peers = node.peers.clone();
        async move { peers.send_push(&map, osd, push).await.map(|_| ()) }
    })
    .await;
    answers
        .into_iter()
        .filter_map(|(osd, answer)| answer.err().map(|error| (osd, error)))
        .collect()
}

/// The newest history peering may adopt among the infos of a PG's copies, as the
/// (interval epoch, version) of its last entry: the newest of the copies brought
/// level in the newest interval that went active (their `activated`, Ceph's
/// last_epoch_started). A copy whose history is newer than that holds writes
/// that no later active interval took, so none was acknowledged: a primary that
/// applied a write, failed to replicate it and stopped, while the others went
/// active without it and served reads of the value before it. Adopting that
/// history when the primary comes back would change what clients already read;
/// its copy is rolled back instead. Every acknowledged write is held by the
/// copies of the newest active interval: that interval's peering took it in.
pub fn adoptable<'a>(infos: impl IntoIterator<Item = &'a PgInfoReply>) -> (u64, u64) {
    let infos: Vec<&PgInfoReply> = infos.into_iter().collect();
    let newest_active = infos.iter().map(|info| info.activated).max().unwrap_or(0);
    infos
        .iter()
        .filter(|info| info.activated == newest_active)
        .map(|info| history_point(info))
        .max()
        .unwrap_or_default()
}

/// Where a copy's history ends: its last entry's (interval epoch, version).
pub fn history_point(info: &PgInfoReply) -> (u64, u64) {
    (info.last_epoch, info.last)
}

/// Fails (and marks the PG `down`) while an earlier interval of the PG may hold
/// acknowledged writes that none of the answering copies (`infos`, this OSD's
/// among them) has: one whose OSDs are down, not enough of them up to read its
/// writes (one copy; `k` shards), and not all marked lost. Intervals before the
/// newest one in which an answering copy was brought level are not asked: that
/// copy holds their writes. Otherwise sets when the PG may take writes again
/// ([`PgLog::writable_after`]): once the read leases of its earlier primaries
/// have run out.
pub fn check_not_down<'a>(
    node: &Node,
    map: &ClusterMap,
    pool: &Pool,
    pg: PgId,
    log: &mut PgLog,
    infos: impl IntoIterator<Item = &'a PgInfoReply>,
) -> Result<()> {
    let infos: Vec<&PgInfoReply> = infos.into_iter().collect();
    let since = infos
        .iter()
        .map(|info| info.activated.max(info.last_epoch))
        .max()
        .unwrap_or(0);
    let unreachable = node.intervals.unreachable(map, pool, pg, since);
    if unreachable.is_empty() {
        node.down.lock().expect("down PGs").remove(&pg);
        log.writable_after = lease::writable_after(node, map, pg, since, infos);
        return Ok(());
    }
    node.down.lock().expect("down PGs").insert(pg);
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
    Err(OsdError::Unavailable(format!(
        "PG {pg} is down: it may hold acknowledged writes only OSDs that are down have \
         (up sets {}); start one of them, or, if they cannot come back, give their \
         writes up with `lcpfs osd lost`",
        waited.join("; ")
    )))
}

/// A peer's info of its copy of the PG (`reference.probe`: an OSD of an earlier
/// interval, which may hold none), for peering: going active without hearing
/// from an OSD that may hold the newest acknowledged write could lose it, so
/// peering waits for it (or for the map to mark it down).
pub async fn peer_info(
    node: &Node,
    map: &ClusterMap,
    pg: PgId,
    osd: u32,
    reference: PgRef,
) -> Result<PgInfoReply> {
    node.peers
        .send_pg_info(map, osd, reference)
        .await
        .map_err(|error| {
            OsdError::Unavailable(format!(
                "PG {pg} is peering: osd.{osd} did not answer ({error})"
            ))
        })
}

/// The infos of the PG's copies on the up OSDs of its earlier intervals that are
/// not in `up` (asked without making them create a copy).
pub async fn probe_prior(
    node: &Node,
    map: &ClusterMap,
    pg: PgId,
    up: &UpSet,
    reference: PgRef,
) -> Result<Vec<(u32, PgInfoReply)>> {
    let probe = PgRef {
        probe: true,
        ..reference
    };
    let mut prior = Vec::new();
    for osd in node.intervals.prior_osds(map, pg, up, node.id) {
        prior.push((osd, peer_info(node, map, pg, osd, probe).await?));
    }
    Ok(prior)
}

/// The OSDs outside the up set (of the PG's earlier intervals) that hold the
/// newest data of `name`, with their infos: their logs are prefixes of this one
/// that reach the object's newest entry, and they do not miss it.
pub async fn prior_holders(
    node: &Node,
    map: &ClusterMap,
    pg: PgId,
    name: &[u8],
) -> Result<Vec<(u32, PgInfoReply)>> {
    let up = node.mapping(map, pg)?.up;
    let (entries, _) = node
        .on_store(move |store| pg::log_since(store, pg, 0))
        .await?;
    // The object's newest entry; none when its last change is older than this
    // log (a backfilled copy misses every object).
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
    for osd in node.intervals.prior_osds(map, pg, &up, node.id) {
        let Ok(info) = peer_info(node, map, pg, osd, reference).await else {
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

/// This OSD's info of its copy of a PG whose log is `log`, as peering asks for
/// it: how far the log reaches back, the interval the copy was last brought
/// level in, and for an erasure-coded PG, the shard it holds and its pending
/// write.
pub async fn info_of(node: &Node, pg: PgId, log: &PgLog, clean: bool) -> Result<PgInfoReply> {
    let (oldest, shard, pending, activated) = node
        .on_store(move |store| -> lcpfs_engine::Result<_> {
            Ok((
                pg::log_since(store, pg, u64::MAX)?.1,
                pg::shard(store, pg)?,
                pg::pending(store, pg)?.and_then(|pending| pending.entry),
                pg::activated(store, pg)?,
            ))
        })
        .await?;
    Ok(PgInfoReply {
        epoch: node.current().epoch,
        last: log.last,
        oldest,
        last_epoch: log.last_epoch,
        clean,
        shard,
        pending,
        activated,
        missing: log.missing.iter().cloned().collect(),
        leases: node.leases.granted_left(),
    })
}

/// Installs a delivery in this OSD's copy of the PG and reloads its log.
pub async fn install_here(
    node: &Node,
    pg: PgId,
    delivery: Delivery,
    log: &mut PgLog,
) -> Result<()> {
    log.dirty = true;
    let fresh = node
        .on_store(move |store| -> lcpfs_engine::Result<_> {
            pg::install(store, pg, &delivery)?;
            pg::load(store, pg)
        })
        .await?;
    log.reloaded(fresh);
    Ok(())
}

/// The push that installs `delivery` in a peer's copy of the PG, from this
/// primary's interval.
pub fn push_request(node: &Node, map: &ClusterMap, pg: PgId, delivery: Delivery) -> PushRequest {
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
        entries: entry::to_wire(entries),
        full: keep.is_some(),
        keep: keep.unwrap_or_default(),
        rewind_from: rewind_from.unwrap_or(0),
        interval: node.interval(pg),
        shard,
        missing,
        ..PushRequest::default()
    }
}

/// An object's state in `osd`'s copy of the PG (this OSD's own, or a peer's).
pub async fn object_state(
    node: &Node,
    map: &ClusterMap,
    pg: PgId,
    name: &[u8],
    osd: u32,
) -> Result<ObjectState> {
    let name = name.to_vec();
    if osd == node.id {
        return node
            .on_store(move |store| pg::state(store, pg, &name))
            .await;
    }
    node.peers
        .send_pull(map, osd, pg, vec![name])
        .await?
        .pop()
        .ok_or_else(|| OsdError::Internal(format!("osd.{osd} sent no object")))
}

/// The log entries of `osd`'s copy of a PG (this OSD's own, or a peer's), and the
/// oldest version it keeps.
pub async fn log_of(
    node: &Node,
    map: &ClusterMap,
    pg: PgId,
    osd: u32,
) -> Result<(Vec<Entry>, u64)> {
    if osd == node.id {
        return node
            .on_store(move |store| pg::log_since(store, pg, 0))
            .await;
    }
    let entries = node.peers.send_pg_log(map, osd, pg, 0).await?;
    let oldest = entries.first().map_or(0, |entry| entry.version);
    Ok((entries, oldest))
}
