//! The receiving side of the calls between OSDs: what a replica (or shard, or an
//! OSD of an earlier interval) does when a PG's primary replicates a write, asks
//! for its info, log, objects or scrub map, pushes objects and markers, or commits
//! an erasure-coded write. The sending side is [`crate::peers`].
//!
//! Every handler that changes a copy refuses a primary of an interval older than
//! the newest that peered it.

use lcpfs_proto::{
    EcCommitReply, EcCommitRequest, PgInfoReply, PgLogRequest, PgRef, PullRequest, PushReply,
    PushRequest, ReadShardReply, ReadShardRequest, ReplicateRequest, ScrubMapRequest, ScrubObject,
};

use crate::error::{OsdError, Result};
use crate::node::{self, Node};
use crate::peering::{accept_interval, info_of};
use crate::pg::{self, Delivery, Entry, entry};
use lcpfs_core::crush::primary;
use lcpfs_proto::connections::OSD_MAX_MESSAGE;

/// Takes a mutation (or, for an erasure-coded pool, one shard's part of it, held
/// pending until [`handle_ec_commit`]) from the PG's primary.
pub async fn handle_replicate(node: &Node, request: ReplicateRequest) -> Result<u64> {
    let map = node.map_at_least(request.epoch).await?;
    let pool = node::pool(&map, request.pool)?.clone();
    let pg = node::pg_of(&pool, request.pg_seed)?;
    node.check_member(&pool, pg, &request.name)?;
    let slot = node.pgs.slot(pg);
    let mut guard = slot.lock().await;
    let log = node.loaded(&mut guard, pg, &pool).await?;
    let entry = Entry {
        version: request.version,
        name: request.name.clone(),
        client: request.client.clone(),
        tid: request.tid,
        epoch: request.version_epoch,
    };
    if entry.version <= log.last {
        // Already here: only if it is the same write (histories agree).
        let version = entry.version;
        let held = node
            .on_store(move |store| pg::entry_at(store, pg, version))
            .await?;
        if !held.is_some_and(|held| held.same(&entry)) {
            return Err(OsdError::Diverged(format!(
                "osd.{} holds another write at version {version} of PG {pg}: the PG must peer again",
                node.id
            )));
        }
    } else {
        log.check_interval(entry.epoch, pg)
            .map_err(|message| node.stale(message))?;
        if entry.version > log.last.saturating_add(1) {
            // Entries are missing here: the primary must bring this OSD level.
            return Err(OsdError::Behind(format!(
                "osd.{} has PG {pg} only up to version {}",
                node.id, log.last
            )));
        }
        let (applied, ops) = (entry.clone(), request.ops);
        if request.prepare {
            // Erasure-coded pools: applied only on EcCommit.
            let shard = request
                .shard
                .ok_or_else(|| OsdError::Invalid("a prepared write names no shard".into()))?;
            node.on_store(move |store| pg::prepare(store, pg, &applied, &ops, shard))
                .await?;
        } else {
            log.dirty = true;
            let log_entries = node.config.pg_log_entries;
            match node
                .on_store(move |store| pg::apply(store, pg, &applied, &ops, log_entries))
                .await
            {
                Ok(()) => log.record(&entry),
                // A write to part of a copy rotten beyond what this OSD's disks
                // heal: the primary brings the log level, pushes the object
                // whole, and sends the write again.
                Err(OsdError::DataLoss(why)) => {
                    return Err(OsdError::Behind(format!(
                        "osd.{} cannot read its copy of '{}' of PG {pg} to change part of it: {why}",
                        node.id,
                        String::from_utf8_lossy(&entry.name)
                    )));
                }
                Err(error) => return Err(error),
            }
        }
    }
    tracing::debug!(
        %pg,
        client = %entry.client,
        tid = entry.tid,
        object = %String::from_utf8_lossy(&entry.name),
        version = entry.version,
        interval = entry.epoch,
        prepare = request.prepare,
        "took a write"
    );
    Ok(node.current().epoch)
}

/// This OSD's info of its copy of a PG, for a primary peering it (or, with
/// `reference.probe`, asking an OSD of an earlier interval).
pub async fn handle_pg_info(node: &Node, reference: PgRef) -> Result<PgInfoReply> {
    let map = node.map_at_least(reference.epoch).await?;
    let pool = node::pool(&map, reference.pool)?.clone();
    let pg = node::pg_of(&pool, reference.pg_seed)?;
    if reference.probe {
        // Read from the store without the PG lock (which a peering of this copy
        // may hold while it asks the prober), and without creating a copy.
        let log = node
            .on_store(move |store| {
                if store.collection(&pg::collection(pg)).is_err() {
                    return Ok(None);
                }
                pg::load(store, pg).map(Some)
            })
            .await?;
        return match log {
            Some(log) => info_of(node, pg, &log, false).await,
            None => Ok(PgInfoReply {
                epoch: map.epoch,
                leases: node.leases.granted_left(),
                ..PgInfoReply::default()
            }),
        };
    }
    let slot = node.pgs.slot(pg);
    let mut guard = slot.lock().await;
    let log = node.loaded(&mut guard, pg, &pool).await?;
    // A primary peering this copy: older primaries are refused from now on.
    accept_interval(node, pg, log, reference.interval).await?;
    let up = node.mapping(&map, pg)?.up;
    let clean = primary(&up) == Some(node.id)
        && up.iter().flatten().count() as u32 >= pool.size()
        && log.peered == Some((node.interval(pg), up))
        && !log.degraded();
    info_of(node, pg, log, clean).await
}

/// This OSD's log entries of a PG after `request.since`.
pub async fn handle_pg_log(node: &Node, request: PgLogRequest) -> Result<Vec<Entry>> {
    let (_, pg) = node.checked_pg(request.pg).await?;
    let since = request.since;
    let (entries, _) = node
        .on_store(move |store| pg::log_since(store, pg, since))
        .await?;
    Ok(entries)
}

/// Whole objects of this OSD's copy of a PG; refused for an object the copy
/// marks missing (see [`pg::pull`]).
pub async fn handle_pull(
    node: &Node,
    request: PullRequest,
) -> Result<Vec<lcpfs_proto::ObjectState>> {
    let (_, pg) = node.checked_pg(request.pg).await?;
    node.on_store(move |store| pg::pull(store, pg, &request.names))
        .await
}

/// Installs what a primary pushes into this OSD's copy of a PG: objects, log
/// entries (a backfill's whole log, or a rewind), missing marks, and markers
/// (`activated`, scrub stamps).
pub async fn handle_push(node: &Node, request: PushRequest) -> Result<PushReply> {
    let (pool, pg) = node.checked_pg(request.pg).await?;
    // The log a split PG starts with names objects of its sibling PGs too: their
    // absence may be pushed, never their data.
    for object in request.objects.iter().filter(|object| object.exists) {
        node.check_member(&pool, pg, &object.name)?;
    }
    let slot = node.pgs.slot(pg);
    let mut guard = slot.lock().await;
    let log = node.loaded(&mut guard, pg, &pool).await?;
    log.check_interval(request.interval, pg)
        .map_err(|message| node.stale(message))?;
    let delivery = Delivery {
        objects: request.objects,
        entries: entry::from_wire(request.entries),
        keep: request.full.then_some(request.keep),
        rewind_from: (request.rewind_from > 0).then_some(request.rewind_from),
        shard: request.shard,
        missing: request.missing,
    };
    let reload =
        delivery.keep.is_some() || delivery.rewind_from.is_some() || !delivery.missing.is_empty();
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
    let fresh = node
        .on_store(move |store| -> lcpfs_engine::Result<_> {
            pg::install(store, pg, &delivery)?;
            Ok(if reload {
                Some(pg::load(store, pg)?)
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
        let activated = request.activated;
        node.on_store(move |store| pg::set_activated(store, pg, activated))
            .await?;
    }
    if request.scrubbed > 0 {
        let (scrubbed, deep) = (request.scrubbed, request.deep_scrubbed);
        node.on_store(move |store| pg::set_scrub_stamps(store, pg, scrubbed, deep))
            .await?;
    }
    Ok(PushReply {
        last: log.last,
        missing: log.missing.iter().cloned().collect(),
    })
}

/// This OSD's scrub view of a range of a PG's objects.
pub async fn handle_scrub_map(node: &Node, request: ScrubMapRequest) -> Result<Vec<ScrubObject>> {
    let (pool, pg) = node.checked_pg(request.pg).await?;
    // Under the PG lock, so the map matches the primary's (writes are ordered by
    // the same lock on the primary, and replicas apply them in order).
    let slot = node.pgs.slot(pg);
    let mut guard = slot.lock().await;
    node.loaded(&mut guard, pg, &pool).await?;
    node.on_store(move |store| {
        pg::scrub_map(
            store,
            pg,
            &request.start_after,
            &request.last,
            request.limit as usize,
            request.deep,
        )
    })
    .await
}

/// Phase two of an erasure-coded write at this shard: commit it, or drop it.
/// Returns the copy's newest version, and whether it misses the written object
/// afterwards (see [`pg::resolve`]).
pub async fn handle_ec_commit(node: &Node, request: EcCommitRequest) -> Result<EcCommitReply> {
    let reference = request.pg.unwrap_or_default();
    let entry = Entry::from(
        request
            .entry
            .ok_or_else(|| OsdError::Invalid("no log entry given".into()))?,
    );
    let (pool, pg) = node.checked_pg(request.pg).await?;
    node.check_member(&pool, pg, &entry.name)?;
    let slot = node.pgs.slot(pg);
    let mut guard = slot.lock().await;
    let log = node.loaded(&mut guard, pg, &pool).await?;
    log.check_interval(reference.interval, pg)
        .map_err(|message| node.stale(message))?;
    log.dirty = true;
    let log_entries = node.config.pg_log_entries;
    let (resolved, commit) = (entry.clone(), request.commit);
    if commit {
        crate::crash::point("crash-ec-shard-commit");
    }
    let missing = node
        .on_store(move |store| pg::resolve(store, pg, &resolved, commit, log_entries))
        .await?;
    if commit {
        log.record(&entry);
    }
    if missing {
        log.missing.insert(entry.name);
    }
    log.dirty = false;
    Ok(EcCommitReply {
        last: log.last,
        missing,
    })
}

/// A byte range of this OSD's shard of an object.
pub async fn handle_read_shard(node: &Node, request: ReadShardRequest) -> Result<ReadShardReply> {
    let (_, pg) = node.checked_pg(request.pg).await?;
    if request.length > OSD_MAX_MESSAGE as u64 / 2 {
        return Err(OsdError::Invalid(format!(
            "a shard read of {} bytes is above the {}-byte limit",
            request.length,
            OSD_MAX_MESSAGE / 2
        )));
    }
    node.on_store(move |store| {
        pg::read_shard(store, pg, &request.name, request.offset, request.length)
    })
    .await
}
