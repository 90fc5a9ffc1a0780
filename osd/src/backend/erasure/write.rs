//! The two-phase write of an erasure-coded PG at its primary: the stripes a
//! request changes are read, encoded anew, held pending by every up shard
//! (phase one) and then committed by every one (phase two). The client is
//! acknowledged only once every up shard committed.

use std::sync::Arc;

use lcpfs_core::map::ClusterMap;
use lcpfs_core::pg::PgId;
use lcpfs_proto::object_op::Op;
use lcpfs_proto::{
    EcCommitRequest, KeyValue, ObjectOp, OpRequest, PgRef, ReplicateRequest, WriteAt,
};

use super::codec::{self, Code, Edit, Edited, UNIT, members};
use super::read::{self, ShardCall};
use crate::error::{OsdError, Result};
use crate::node::Node;
use crate::peers::{fan_out, pg_ref};
use crate::pg::{self, Entry, PgLog, SIZE_XATTR, VERSION_XATTR};
use crate::recovery::queue_recovery;

fn op(op: Op) -> ObjectOp {
    ObjectOp { op: Some(op) }
}

/// The operations that turn shard `position` of an object into its part of
/// `edited`.
fn shard_ops(
    code: Code,
    edit: &Edit,
    edited: &Edited,
    piece: Vec<u8>,
    version: u64,
) -> Vec<ObjectOp> {
    let mut ops = Vec::new();
    if edited.recreated && edit.existed() {
        ops.push(op(Op::Delete(true)));
    }
    if !edited.exists {
        return ops;
    }
    if edited.recreated || !edit.existed() {
        ops.push(op(Op::WriteFull(piece)));
    } else if !piece.is_empty() {
        ops.push(op(Op::Write(WriteAt {
            offset: edit.stripes.start * UNIT,
            data: piece,
        })));
    }
    ops.push(op(Op::Truncate(code.shard_size(edited.size))));
    ops.extend(edited.xattr_ops.iter().cloned());
    for (key, value) in [(SIZE_XATTR, edited.size), (VERSION_XATTR, version)] {
        ops.push(op(Op::SetXattr(KeyValue {
            key: key.to_owned(),
            value: value.to_le_bytes().to_vec(),
        })));
    }
    ops
}

/// Applies a client's mutation to an erasure-coded PG (peered, under its lock)
/// as log entry `entry`: reads the stripes it changes, encodes them anew and
/// writes every up shard in two phases.
pub(super) async fn write(
    node: &Node,
    map: &ClusterMap,
    code: Code,
    pg: PgId,
    request: &OpRequest,
    log: &mut PgLog,
    entry: Entry,
) -> Result<u64> {
    let map = Arc::new(map.clone());
    let name = request.name.clone();
    let before = node
        .on_store(move |store| pg::read_shard(store, pg, &name, 0, 0))
        .await?;
    let edit = Edit::plan(code, before.exists, before.size, &request.ops)
        .map_err(|_| OsdError::NoObject(request.name.clone()))?;
    let old = if edit.read.is_empty() {
        Vec::new()
    } else {
        let primary = read::Identity::from(&before);
        let gathered = read::gather(
            node,
            &map,
            code,
            pg,
            &request.name,
            edit.stripes.clone(),
            primary,
            log,
        )
        .await?;
        codec::slice(code, &gathered.data, edit.stripes.start, edit.read.clone())
    };
    let edited = edit.apply(code, &old, &request.ops);
    let pieces = code.encode(&edited.stripes).map_err(OsdError::Internal)?;
    let shards = members(&node.mapping(&map, pg)?.up);
    let reference = PgRef {
        interval: entry.epoch,
        ..pg_ref(&map, pg)
    };

    // Phase one: every up shard holds its part pending.
    let answers = fan_out(shards.iter().map(|(_, osd)| *osd), |osd| {
        let position = shards
            .iter()
            .find(|(_, member)| *member == osd)
            .map_or(0, |(position, _)| *position);
        let ops = shard_ops(
            code,
            &edit,
            &edited,
            pieces[position].clone(),
            entry.version,
        );
        prepare_at(node, &map, pg, osd, position, &entry, ops)
    })
    .await;
    let prepared: Vec<u32> = answers
        .iter()
        .filter(|(_, answer)| answer.is_ok())
        .map(|(osd, _)| *osd)
        .collect();
    if let Some((osd, error)) = answers
        .into_iter()
        .find_map(|(osd, answer)| answer.err().map(|error| (osd, error)))
    {
        log.peered = None;
        for osd in prepared {
            let _ = resolve_at(node, &map, pg, osd, reference, &entry, false).await;
        }
        let message = format!(
            "PG {pg}: osd.{osd} did not take its shard of the write ({error}); the write was not applied"
        );
        // A refusal (a full disk, a bad request) is the client's answer;
        // anything else is worth a retry once the PG has peered again.
        return Err(match error {
            OsdError::Full(_) => OsdError::Full(message),
            OsdError::Invalid(_) => OsdError::Invalid(message),
            _ => OsdError::Unavailable(message),
        });
    }

    // Phase two: every shard applies it.
    crate::crash::point("crash-ec-prepared");
    log.dirty = true;
    let answers = fan_out(shards.iter().map(|(_, osd)| *osd), |osd| {
        resolve_at(node, &map, pg, osd, reference, &entry, true)
    })
    .await;
    let mut failed = None;
    let mut degraded = false;
    for (osd, answer) in answers {
        let missing = match answer {
            Ok(missing) => missing,
            Err(error) => {
                failed = Some(format!("osd.{osd}: {error}"));
                continue;
            }
        };
        if osd == node.id {
            log.record(&entry);
        }
        if missing {
            // Its shard was unreadable: the others hold the write, and
            // recovery rebuilds this one.
            degraded = true;
            if osd == node.id {
                log.missing.insert(entry.name.clone());
            } else {
                log.peer_missing
                    .entry(osd)
                    .or_default()
                    .insert(entry.name.clone());
            }
        }
    }
    if degraded {
        queue_recovery(node, pg, log);
    }
    if let Some(reason) = failed {
        // Peering again rolls the write forward on every shard.
        log.peered = None;
        return Err(OsdError::Unavailable(format!(
            "PG {pg}: the write is committed on some shards only ({reason}); retry"
        )));
    }
    Ok(entry.version)
}

/// Phase one of a write at shard `osd` (position `position`).
fn prepare_at(
    node: &Node,
    map: &Arc<ClusterMap>,
    pg: PgId,
    osd: u32,
    position: usize,
    entry: &Entry,
    ops: Vec<ObjectOp>,
) -> ShardCall<()> {
    let shard = position as u32;
    if osd == node.id {
        let (store, entry) = (node.store.clone(), entry.clone());
        return Box::pin(pg::blocking(move || {
            pg::prepare(&store, pg, &entry, &ops, shard)
        }));
    }
    let request = ReplicateRequest {
        epoch: map.epoch,
        pool: pg.pool,
        pg_seed: pg.seed,
        version: entry.version,
        name: entry.name.clone(),
        client: entry.client.clone(),
        tid: entry.tid,
        ops,
        version_epoch: entry.epoch,
        prepare: true,
        shard: Some(shard),
    };
    let (peers, map) = (node.peers.clone(), map.clone());
    Box::pin(async move { peers.send_replicate(&map, osd, request).await })
}

/// Phase two of a write at shard `osd`: commit it, or drop it. True when the
/// shard misses the written object afterwards (see [`pg::resolve`]).
pub(super) fn resolve_at(
    node: &Node,
    map: &Arc<ClusterMap>,
    pg: PgId,
    osd: u32,
    reference: PgRef,
    entry: &Entry,
    commit: bool,
) -> ShardCall<bool> {
    if osd == node.id {
        let (store, entry) = (node.store.clone(), entry.clone());
        let log_entries = node.config.pg_log_entries;
        return Box::pin(pg::blocking(move || {
            pg::resolve(&store, pg, &entry, commit, log_entries)
        }));
    }
    let request = EcCommitRequest {
        pg: Some(reference),
        entry: Some(entry.clone().into()),
        commit,
    };
    let (peers, map) = (node.peers.clone(), map.clone());
    Box::pin(async move { peers.send_ec_commit(&map, osd, request).await })
}
