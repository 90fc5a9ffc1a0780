//! The mutations of a client request at the PG's primary: refused when the
//! object would grow past the size limit, or when an OSD of the PG is full; then,
//! under the PG's lock, with the PG peered, the earlier primaries' read leases
//! run out and the object recovered, applied exactly once as one log entry on
//! every up copy.

use std::time::Instant;

use lcpfs_core::map::{ClusterMap, Pool};
use lcpfs_core::pg::PgId;
use lcpfs_proto::object_op::Op;
use lcpfs_proto::{ObjectOp, OpRequest};

use crate::backend::Backend;
use crate::error::{OsdError, Result};
use crate::node::Node;
use crate::peering::ensure_peered;
use crate::pg::{self, Entry};

/// Applies the mutations of `request` to the PG; returns the version they got.
pub async fn mutate(
    node: &Node,
    backend: &dyn Backend,
    map: &ClusterMap,
    pool: &Pool,
    pg: PgId,
    request: &OpRequest,
) -> Result<u64> {
    check_sizes(node, pg, &request.name, &request.ops).await?;
    check_full(node, map, pg, &request.ops)?;

    let slot = node.pgs.slot(pg);
    let mut guard = slot.lock().await;
    let log = node.loaded(&mut guard, pg, pool).await?;
    // Peering and recovery see one map: recovery trusts what peering found of
    // the up set's copies.
    let map = node.current();
    ensure_peered(node, backend, &map, pool, pg, log).await?;
    sent_to_this_primary(node, pg, request)?;
    // An earlier primary cut off from the cluster may still serve reads until its
    // lease runs out: no write may be acknowledged before then.
    // (Cleared only after the wait: a request cancelled during it leaves the
    // wait to the next one.)
    if let Some(until) = log.writable_after {
        if let Some(left) = until.checked_duration_since(Instant::now()) {
            tracing::info!(%pg, wait_ms = left.as_millis() as u64, "waiting out an earlier primary's read lease");
            tokio::time::sleep(left).await;
        }
        log.writable_after = None;
    }
    // Every up copy holds the object's newest data before it changes.
    backend
        .recover_object(node, &map, pool, pg, log, &request.name)
        .await?;
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
    let entry = Entry {
        version,
        name: request.name.clone(),
        client: request.client.clone(),
        tid: request.tid,
        epoch: interval,
    };
    backend
        .write(node, &map, pool, pg, request, log, entry, fresh)
        .await
}

/// Refuses a request its client sent with a map older than the epoch since
/// which this OSD has led the PG without a break (Ceph's same_primary_since):
/// meanwhile (while the request waited for its turn, for a map, for the PG to
/// become active, for peering) another OSD may have led the PG and served the
/// client's next requests, and a client that gave this one up must not see it
/// applied after them. A client still waiting sends it again with its newer map.
pub fn sent_to_this_primary(node: &Node, pg: PgId, request: &OpRequest) -> Result<()> {
    let since = node.intervals.primary_since(pg);
    if request.epoch >= since {
        return Ok(());
    }
    Err(node.stale(format!(
        "osd.{} leads PG {pg} since epoch {since}, after the request's epoch {}; it was not applied: retry",
        node.id, request.epoch
    )))
}

/// Checks the sizes a request's writes would give the object.
async fn check_sizes(node: &Node, pg: PgId, name: &[u8], ops: &[ObjectOp]) -> Result<()> {
    let limit = node.config.max_object_size;
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
                        let name = name.to_vec();
                        node.on_store(move |store| pg::size(store, pg, &name))
                            .await?
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

/// The refusal of a write that would make an object larger than the limit.
pub fn too_big(size: u64, limit: u64) -> OsdError {
    OsdError::Invalid(format!(
        "the object would be {size} bytes, above the {limit}-byte object size limit; store it in pieces (lcpfs put --striper)"
    ))
}

/// Refuses a request that writes (anything but removals) to a PG one of whose up
/// OSDs the monitors marked full: the space left is kept for recovery, and
/// deletes still free space.
fn check_full(node: &Node, map: &ClusterMap, pg: PgId, ops: &[ObjectOp]) -> Result<()> {
    if removes_only(ops) {
        return Ok(());
    }
    let full: Vec<String> = node
        .up_osds(map, pg)?
        .into_iter()
        .filter(|osd| map.osds.get(osd).is_some_and(|info| info.full))
        .map(|osd| format!("osd.{osd}"))
        .collect();
    if full.is_empty() {
        return Ok(());
    }
    Err(OsdError::Full(format!(
        "PG {pg} takes no writes: {} full (past the monitors' full ratio); the write was \
         not applied: delete data or add OSDs",
        full.join(", ")
    )))
}

/// True when a request's mutations only remove (objects, xattrs, omap entries).
fn removes_only(ops: &[ObjectOp]) -> bool {
    ops.iter()
        .filter_map(|op| op.op.as_ref())
        .filter(|op| pg::is_mutation(op))
        .all(|op| {
            matches!(
                op,
                Op::Delete(_) | Op::RmXattr(_) | Op::OmapRm(_) | Op::OmapClear(_)
            )
        })
}

#[cfg(test)]
mod tests {
    use lcpfs_proto::{KeyValue, ReadRange};

    use super::*;

    fn ops(list: Vec<Op>) -> Vec<ObjectOp> {
        list.into_iter()
            .map(|op| ObjectOp { op: Some(op) })
            .collect()
    }

    #[test]
    fn only_removals_pass_a_full_pg() {
        let read = Op::Read(ReadRange {
            offset: 0,
            length: 0,
        });
        assert!(removes_only(&ops(vec![Op::Delete(true), read.clone()])));
        assert!(removes_only(&ops(vec![Op::RmXattr("a".into())])));
        assert!(!removes_only(&ops(vec![
            Op::Delete(true),
            Op::Append(vec![1])
        ])));
        assert!(!removes_only(&ops(vec![Op::SetXattr(KeyValue {
            key: "a".into(),
            value: Vec::new(),
        })])));
    }

    #[test]
    fn too_big_names_the_limit_and_the_way_out() {
        let error = too_big(10, 5);
        assert!(
            matches!(&error, OsdError::Invalid(message) if message.contains("5-byte") && message.contains("--striper"))
        );
    }
}
