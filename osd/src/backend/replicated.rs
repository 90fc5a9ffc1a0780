//! Replicated pools: every OSD of a PG's up set holds a whole copy of every object.
//!
//! A mutation is applied at the primary, then sent to every other up OSD; it is
//! acknowledged only when every OSD of the current up set has it durable (at least
//! `min_size` of them). A replica that stops answering holds the write until the
//! monitors mark it down and the map drops it from the up set, or the replication
//! deadline passes and the client gets an error to retry. Peering takes the
//! newest log among the copies and brings the others level by log entries, or by
//! backfill when the log does not reach back far enough.

use std::time::{Duration, Instant};

use lcpfs_core::map::{ClusterMap, Pool};
use lcpfs_core::pg::PgId;
use lcpfs_proto::{
    Inconsistency, ObjectOp, OpRequest, OpResult, PgInfoReply, PgRef, PushRequest, ReplicateRequest,
};

use super::pg_backend::Backend;
use crate::error::{OsdError, Result};
use crate::node::Node;
use crate::peering::{self, PeeringBackend, object_state, prior_holders};
use crate::peers::{fan_out, pg_ref};
use crate::pg::{self, CatchUp, Delivery, Entry, PgLog, UpSet};
use crate::recovery::{ObjectRecovery, pause, queue_recovery};

/// How long a replica that failed a write is left before it is sent again.
const RESEND_AFTER: Duration = Duration::from_millis(200);

/// The backend of replicated pools.
pub struct Replicated;

#[tonic::async_trait]
impl Backend for Replicated {
    fn check_ops(&self, _pool: &Pool, _ops: &[ObjectOp]) -> Result<()> {
        Ok(())
    }

    fn read_waits_for(&self, log: &PgLog, name: &[u8]) -> bool {
        // A read needs only this copy.
        log.missing.contains(name)
    }

    async fn write(
        &self,
        node: &Node,
        map: &ClusterMap,
        pool: &Pool,
        pg: PgId,
        request: &OpRequest,
        log: &mut PgLog,
        entry: Entry,
        fresh: bool,
    ) -> Result<u64> {
        // Applied here first: an operation the engine refuses (a missing object, a
        // bad offset) is refused before any replica sees it. Until every replica
        // has it, the request stays marked incomplete, so a retry (even after this
        // call is cancelled) replicates it again instead of answering early.
        if fresh {
            log.dirty = true;
            let log_entries = node.config.pg_log_entries;
            let apply = || {
                let (applied, ops) = (entry.clone(), request.ops.clone());
                node.on_store(move |store| pg::apply(store, pg, &applied, &ops, log_entries))
            };
            // A write to part of a rotten copy replaces it from a peer first.
            match repaired(node, map, pg, &request.name, log, apply).await {
                Ok(()) => {}
                Err(OsdError::AlreadyExists(_)) => {
                    // The store's log is ahead of this copy: it reloads on next use.
                    return Err(OsdError::Unavailable(format!(
                        "PG {pg} log changed under this request; retry"
                    )));
                }
                Err(error) => {
                    log.dirty = false;
                    return Err(error);
                }
            }
            log.record(&entry);
            crate::crash::point("crash-replicated-applied");
        }
        log.set_incomplete(&request.client, request.tid, true);
        let replication = ReplicateRequest {
            epoch: map.epoch,
            pool: pool.id,
            pg_seed: pg.seed,
            version: entry.version,
            name: request.name.clone(),
            client: request.client.clone(),
            tid: request.tid,
            ops: request.ops.clone(),
            version_epoch: entry.epoch,
            ..ReplicateRequest::default()
        };
        let outcome = match send_replicate_all(node, pool, pg, replication, log).await {
            Ok(copies) if copies + 1 >= pool.min_size() as usize => {
                log.set_incomplete(&request.client, request.tid, false);
                return Ok(entry.version);
            }
            Ok(copies) => OsdError::Unavailable(format!(
                "PG {pg} has only {} copies of the write, below min_size {}; retry",
                copies + 1,
                pool.min_size()
            )),
            Err(error) => error,
        };
        // Applied here but not on every up copy: the PG peers again before it
        // serves anything, which puts the write in every up copy's log, so a read
        // never returns a write that a new primary could then roll back.
        log.peered = None;
        Err(outcome)
    }

    async fn read(
        &self,
        node: &Node,
        map: &ClusterMap,
        _pool: &Pool,
        pg: PgId,
        request: &OpRequest,
        log: &mut PgLog,
    ) -> Result<Vec<OpResult>> {
        let read = || {
            let (name, ops) = (request.name.clone(), request.ops.clone());
            node.on_store(move |store| pg::read(store, pg, &name, &ops))
        };
        repaired(node, map, pg, &request.name, log, read).await
    }

    async fn check_deep(
        &self,
        _node: &Node,
        _map: &ClusterMap,
        _pool: &Pool,
        _pg: PgId,
        _name: &[u8],
        _size: u64,
    ) -> Result<Vec<(u32, String)>> {
        // Whole copies: their content digests say everything.
        Ok(Vec::new())
    }

    async fn repair(
        &self,
        node: &Node,
        map: &ClusterMap,
        _pool: &Pool,
        pg: PgId,
        name: &[u8],
        authority: Option<u32>,
        bad: &mut [Inconsistency],
        _log: &mut PgLog,
    ) -> Result<()> {
        let Some(authority) = authority else {
            return Ok(());
        };
        if bad.is_empty() {
            return Ok(());
        }
        let good = object_state(node, map, pg, name, authority).await?;
        let interval = node.interval(pg);
        for copy in bad.iter_mut() {
            if copy.osd == node.id {
                let objects = vec![good.clone()];
                node.on_store(move |store| pg::install(store, pg, &Delivery::objects(objects)))
                    .await?;
            } else {
                let push = PushRequest {
                    pg: Some(pg_ref(map, pg)),
                    objects: vec![good.clone()],
                    interval,
                    ..PushRequest::default()
                };
                node.peers.send_push(map, copy.osd, push).await?;
            }
            tracing::warn!(%pg, osd = copy.osd, object = %String::from_utf8_lossy(name), reason = %copy.reason, "repaired a bad copy");
            copy.repaired = true;
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl PeeringBackend for Replicated {
    async fn peer(
        &self,
        node: &Node,
        map: &ClusterMap,
        pool: &Pool,
        pg: PgId,
        log: &mut PgLog,
        up: &UpSet,
        reference: PgRef,
    ) -> Result<()> {
        let mut infos = Vec::new();
        for &osd in up.iter().flatten().filter(|&&osd| osd != node.id) {
            infos.push((
                osd,
                peering::peer_info(node, map, pg, osd, reference).await?,
            ));
        }
        let prior = peering::probe_prior(node, map, pg, up, reference).await?;
        let own = peering::info_of(node, pg, log, false).await?;
        peering::check_not_down(
            node,
            map,
            pool,
            pg,
            log,
            std::iter::once(&own).chain(infos.iter().chain(&prior).map(|(_, info)| info)),
        )?;
        if let Some((source, info)) = authoritative(&own, infos.iter().chain(&prior)) {
            tracing::info!(%pg, source, from = log.last, to = info.last, "pulling newer PG history");
            let lazy = up.contains(&Some(*source));
            pull(node, map, pg, (*source, &info.missing), lazy, log).await?;
        }
        log.peer_missing.clear();
        for (osd, info) in &infos {
            log.peer_missing
                .insert(*osd, info.missing.iter().cloned().collect());
            if (info.last_epoch, info.last) != (log.last_epoch, log.last) {
                recover_replica(node, map, pg, *osd, log).await?;
            }
        }
        // What no up copy holds is brought in now, if an OSD outside the up set
        // holds it; what nobody holds stays unfound.
        for name in log.unfound() {
            if let Err(error) = self.recover_object(node, map, pool, pg, log, &name).await {
                tracing::warn!(%pg, object = %String::from_utf8_lossy(&name), %error, "object unfound");
            }
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl ObjectRecovery for Replicated {
    /// Pulled to this primary from an up OSD that holds it (or one of an earlier
    /// interval), then pushed to the others. A client operation on a missing
    /// object waits for this, not for the whole PG's recovery.
    async fn recover_object(
        &self,
        node: &Node,
        map: &ClusterMap,
        _pool: &Pool,
        pg: PgId,
        log: &mut PgLog,
        name: &[u8],
    ) -> Result<()> {
        if !log.is_missing(name) {
            return Ok(());
        }
        let up = node.up_osds(map, pg)?;
        if log.missing.contains(name) {
            let mut failures = Vec::new();
            let holders: Vec<u32> = up
                .iter()
                .copied()
                .filter(|&osd| {
                    osd != node.id
                        && log
                            .peer_missing
                            .get(&osd)
                            .is_some_and(|names| !names.contains(name))
                })
                .collect();
            let mut found = None;
            for osd in holders {
                match object_state(node, map, pg, name, osd).await {
                    Ok(state) => {
                        found = Some(state);
                        break;
                    }
                    Err(error) => failures.push(format!("osd.{osd}: {error}")),
                }
            }
            if found.is_none() {
                for (osd, _) in prior_holders(node, map, pg, name).await? {
                    match object_state(node, map, pg, name, osd).await {
                        Ok(state) => {
                            found = Some(state);
                            break;
                        }
                        Err(error) => failures.push(format!("osd.{osd}: {error}")),
                    }
                }
            }
            let Some(state) = found else {
                return Err(OsdError::Unavailable(format!(
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
            node.on_store(move |store| pg::install(store, pg, &Delivery::objects(vec![state])))
                .await?;
            log.missing.remove(name);
            node.metrics.recovered_objects.inc();
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
        let local = || {
            let owned = name.to_vec();
            node.on_store(move |store| pg::state(store, pg, &owned))
        };
        // A rotten copy is replaced from a peer before it is pushed.
        let state = repaired(node, map, pg, name, log, local).await?;
        for osd in lacking {
            let push = peering::push_request(node, map, pg, Delivery::objects(vec![state.clone()]));
            node.peers.send_push(map, osd, push).await?;
            if let Some(names) = log.peer_missing.get_mut(&osd) {
                names.remove(name);
            }
            node.metrics.recovered_objects.inc();
        }
        Ok(())
    }
}

/// Sends a mutation to the other OSDs of the PG's up set until each has it, or
/// has left the up set, or the deadline passes. Returns how many other OSDs of
/// the (current) up set hold the write.
async fn send_replicate_all(
    node: &Node,
    pool: &Pool,
    pg: PgId,
    request: ReplicateRequest,
    log: &mut PgLog,
) -> Result<usize> {
    let deadline = Instant::now() + node.config.replicate_deadline;
    let mut acked: Vec<u32> = Vec::new();
    let mut pending: Vec<u32> = node
        .up_osds(&node.current(), pg)?
        .into_iter()
        .filter(|&osd| osd != node.id)
        .collect();
    while !pending.is_empty() {
        if node.interval(pg) != request.version_epoch {
            // The up set changed: the next request peers the new one, which
            // brings every OSD of it level with this write.
            return Err(OsdError::Unavailable(format!(
                "PG {pg} changed its OSDs during the write; retry"
            )));
        }
        let map = node.current();
        let up = node.up_osds(&map, pg)?;
        pending.retain(|osd| up.contains(osd));
        let answers = fan_out(pending.iter().copied(), |osd| {
            let (peers, map) = (node.peers.clone(), map.clone());
            let request = ReplicateRequest {
                epoch: map.epoch,
                ..request.clone()
            };
            async move { peers.send_replicate(&map, osd, request).await }
        })
        .await;
        let mut failed = Vec::new();
        let mut behind = Vec::new();
        for (osd, answer) in answers {
            match answer {
                Ok(()) => acked.push(osd),
                Err(OsdError::Behind(_)) => behind.push(osd),
                Err(error) => failed.push((osd, error)),
            }
        }
        if let Some((osd, error)) = failed.iter().find(|(_, error)| !error.is_transient()) {
            return Err(OsdError::Internal(format!(
                "replica osd.{osd} refused a write its primary applied: {error}"
            )));
        }
        for &osd in &behind {
            // Level with this log (which holds the write) and then holding the
            // written object, the replica takes the write again as a retry.
            let caught_up = match recover_replica(node, &map, pg, osd, log).await {
                Ok(()) => {
                    Replicated
                        .recover_object(node, &map, pool, pg, log, &request.name)
                        .await
                }
                Err(error) => Err(error),
            };
            if let Err(error) = caught_up {
                failed.push((osd, error));
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
                    .map_or("it is behind".to_owned(), |(_, error)| error.to_string());
                return Err(OsdError::Unavailable(format!(
                    "replica osd.{osd} did not store the write in time ({reason}); the write may be partly applied: retry it"
                )));
            }
            if !failed.is_empty() {
                tokio::time::sleep(RESEND_AFTER).await;
            }
        }
    }
    let up = node.up_osds(&node.current(), pg)?;
    acked.retain(|osd| up.contains(osd));
    acked.sort_unstable();
    acked.dedup();
    Ok(acked.len())
}

/// Makes this OSD's copy of the PG level with `source`'s newer history. With
/// `lazy` (the source stays up), it takes the log entries it misses and marks
/// their objects missing, to be recovered after the PG goes active; otherwise it
/// pulls those objects first. When the log does not reach back that far, every
/// object is pulled first (backfill). Objects the source itself misses
/// (`source_missing`) stay missing here.
async fn pull(
    node: &Node,
    map: &ClusterMap,
    pg: PgId,
    (source, source_missing): (u32, &[Vec<u8>]),
    lazy: bool,
    log: &mut PgLog,
) -> Result<()> {
    let theirs = node.peers.send_pg_log(map, source, pg, 0).await?;
    let their_oldest = theirs.first().map_or(0, |entry| entry.version);
    let (mine, _) = node
        .on_store(move |store| pg::log_since(store, pg, 0))
        .await?;
    let mut delivery = Delivery::default();
    let pulled = match pg::catch_up(&theirs, their_oldest, &mine) {
        CatchUp::Level => return Ok(()),
        CatchUp::Backfill => {
            let names = pg::backfill_names(
                node.peers.send_list_names(map, source, pg).await?,
                source_missing,
            );
            delivery.entries = theirs;
            delivery.keep = Some(names.clone());
            if lazy {
                // Every object is compared after the PG goes active.
                log.backfilled.insert(node.id);
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
        let _recovering = node
            .recovery
            .recovering(pg, delivery.keep.is_some(), false)
            .await;
        log.dirty = true;
        for name in pulled {
            pause(node).await;
            node.metrics.recovered_objects.inc();
            let objects = node.peers.send_pull(map, source, pg, vec![name]).await?;
            node.on_store(move |store| pg::install(store, pg, &Delivery::objects(objects)))
                .await?;
        }
    }
    peering::install_here(node, pg, delivery, log).await
}

/// Brings replica `osd`'s log level with this OSD's: the entries it misses or
/// holds diverged, with their objects marked missing there (recovered after the
/// PG goes active; [`PgLog::peer_missing`] names them). When this log does not
/// reach back that far, every object is pushed first (backfill).
async fn recover_replica(
    node: &Node,
    map: &ClusterMap,
    pg: PgId,
    osd: u32,
    log: &mut PgLog,
) -> Result<()> {
    let theirs = node.peers.send_pg_log(map, osd, pg, 0).await?;
    let (mine, my_oldest) = node
        .on_store(move |store| pg::log_since(store, pg, 0))
        .await?;
    let mut delivery = Delivery::default();
    match pg::catch_up(&mine, my_oldest, &theirs) {
        CatchUp::Level => return Ok(()),
        CatchUp::Backfill => {
            // The replica takes the whole log, keeps only the objects named
            // (this copy's and those it misses itself), and every one of them is
            // compared and sent after the PG goes active.
            let held = node.on_store(move |store| pg::names(store, pg)).await?;
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
    let reply = node
        .peers
        .send_push(map, osd, peering::push_request(node, map, pg, delivery))
        .await?;
    log.peer_missing
        .insert(osd, reply.missing.into_iter().collect());
    queue_recovery(node, pg, log);
    Ok(())
}

/// Runs `local`, an operation on this OSD's copy of object `name`; when the copy
/// is unreadable (a checksum error the engine could not heal from this OSD's own
/// disks), replaces it with a peer's and runs `local` once more. Reads, writes to
/// part of the object and pushes of it all go through here.
async fn repaired<T, F, Fut>(
    node: &Node,
    map: &ClusterMap,
    pg: PgId,
    name: &[u8],
    log: &PgLog,
    local: F,
) -> Result<T>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    match local().await {
        Err(OsdError::DataLoss(_)) => {
            repair_from_peers(node, map, pg, name, log).await?;
            local().await
        }
        result => result,
    }
}

/// Replaces this OSD's unreadable copy of an object with a peer's: the engine
/// could not heal it from its own disks (a checksum error without redundancy).
async fn repair_from_peers(
    node: &Node,
    map: &ClusterMap,
    pg: PgId,
    name: &[u8],
    log: &PgLog,
) -> Result<()> {
    let up = node.up_osds(map, pg)?;
    let mut last_error = OsdError::DataLoss(format!("no other OSD of PG {pg} is up"));
    // A copy that misses the object's newest data holds an older version.
    let holders = up.iter().filter(|&&osd| {
        osd != node.id
            && !log
                .peer_missing
                .get(&osd)
                .is_some_and(|names| names.contains(name))
    });
    for &osd in holders {
        match object_state(node, map, pg, name, osd).await {
            Ok(good) => {
                node.on_store(move |store| pg::install(store, pg, &Delivery::objects(vec![good])))
                    .await?;
                tracing::warn!(%pg, from = osd, object = %String::from_utf8_lossy(name), "replaced an unreadable copy");
                return Ok(());
            }
            Err(error) => last_error = error,
        }
    }
    Err(OsdError::DataLoss(format!(
        "object '{}' is unreadable here and no peer could supply it: {last_error}",
        String::from_utf8_lossy(name),
    )))
}

/// The copy whose history peering adopts when it is not this OSD's own (`own`):
/// the newest history that peering may adopt ([`peering::adoptable`]). The
/// newest is the one whose last entry has the greatest (interval epoch,
/// version): a longer log of an older interval loses to a shorter one of a newer
/// interval, whose copies never acknowledged its extra entries. A copy whose
/// history is past the adoptable one, this OSD's among them, is rolled back.
fn authoritative<'a>(
    own: &PgInfoReply,
    copies: impl Iterator<Item = &'a (u32, PgInfoReply)> + Clone,
) -> Option<&'a (u32, PgInfoReply)> {
    let point = peering::history_point;
    let limit = peering::adoptable(copies.clone().map(|(_, info)| info).chain([own]));
    let best = copies
        .filter(|(_, info)| point(info) <= limit)
        .max_by_key(|(_, info)| point(info))?;
    (point(&best.1) > point(own) || point(own) > limit).then_some(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(activated: u64, last_epoch: u64, last: u64) -> PgInfoReply {
        PgInfoReply {
            activated,
            last_epoch,
            last,
            ..PgInfoReply::default()
        }
    }

    fn chosen(own: &PgInfoReply, copies: &[(u32, PgInfoReply)]) -> Option<u32> {
        authoritative(own, copies.iter()).map(|(osd, _)| *osd)
    }

    #[test]
    fn peering_adopts_the_history_of_the_newest_interval_not_the_longest_log() {
        // osd.1 wrote alone in interval 5 (never acknowledged: min_size not met);
        // osd.2 took acknowledged writes in interval 9 after it.
        let copies = [
            (1, info(5, 5, 40)),
            (2, info(9, 9, 31)),
            (3, info(9, 9, 30)),
        ];
        assert_eq!(chosen(&info(5, 5, 30), &copies), Some(2));
        // Within one interval, the longer log.
        assert_eq!(chosen(&info(9, 9, 12), &copies[1..]), Some(2));
        // A primary whose own history is the newest pulls nothing.
        assert_eq!(chosen(&info(9, 9, 31), &copies), None);
        assert_eq!(chosen(&info(10, 10, 1), &copies), None);
        assert_eq!(chosen(&info(9, 9, 31), &[]), None);
    }

    #[test]
    fn a_write_no_later_active_interval_took_is_rolled_back_not_adopted() {
        // osd.1, primary of interval 5, applied version 31 and stopped before any
        // replica had it; osd.2 and osd.3 went active in interval 7 without it
        // and served reads of version 30. osd.1 is back as primary.
        let others = [(2, info(7, 4, 30)), (3, info(7, 4, 30))];
        assert_eq!(
            chosen(&info(5, 5, 31), &others),
            Some(3),
            "the primary's unacknowledged write must give way"
        );
        // The same write, seen from a primary of the active interval: not taken.
        let back = [(1, info(5, 5, 31)), (3, info(7, 4, 30))];
        assert_eq!(chosen(&info(7, 4, 30), &back), None);
        // Had interval 7 gone active with it (osd.2 pulled it then), it stays.
        let adopted = [(2, info(7, 5, 31)), (3, info(7, 5, 31))];
        assert_eq!(chosen(&info(5, 5, 31), &adopted), None);
        assert_eq!(chosen(&info(6, 4, 30), &adopted), Some(3));
    }
}
