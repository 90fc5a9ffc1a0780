//! The mutations of a client request at the PG's primary: refused while the PG
//! has fewer than `min_size` OSDs up (after a short wait for the map), when the
//! object would grow past the size limit, or when an OSD of the PG is full; then,
//! under the PG's lock and with the PG peered and the object recovered, applied
//! exactly once as one log entry on every up copy.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lcpfs_core::map::{ClusterMap, Pool};
use lcpfs_core::pg::PgId;
use lcpfs_proto::object_op::Op;
use lcpfs_proto::{ObjectOp, OpRequest};

use crate::backend::Backend;
use crate::error::{OsdError, Result};
use crate::node::Node;
use crate::peering::ensure_peered;
use crate::pg::{self, Entry};

/// How often a write waiting for an inactive PG looks at the map again.
const INACTIVE_POLL: Duration = Duration::from_millis(500);

/// Applies the mutations of `request` to the PG; returns the version they got.
pub async fn mutate(
    node: &Node,
    backend: &dyn Backend,
    map: &ClusterMap,
    pool: &Pool,
    pg: PgId,
    request: &OpRequest,
) -> Result<u64> {
    // A PG with fewer than min_size OSDs up does not take writes: wait a little
    // for the map to change, then refuse clearly.
    let waited_until = Instant::now() + node.config.inactive_wait;
    let mut map = Arc::new(map.clone());
    loop {
        let up = node.up_osds(&map, pg)?.len() as u32;
        if up >= pool.min_size() {
            break;
        }
        if Instant::now() >= waited_until {
            return Err(OsdError::Unavailable(format!(
                "PG {pg} is inactive: {up} of its OSDs are up, min_size is {}; the write was not applied",
                pool.min_size()
            )));
        }
        node.map_changed(INACTIVE_POLL).await;
        map = node.current();
    }
    check_sizes(node, pg, &request.name, &request.ops).await?;
    check_full(node, &map, pg, &request.ops)?;

    let slot = node.pgs.slot(pg);
    let mut guard = slot.lock().await;
    let log = node.loaded(&mut guard, pg, pool).await?;
    // Peering and recovery see one map: recovery trusts what peering found of
    // the up set's copies.
    let map = node.current();
    ensure_peered(node, backend, &map, pool, pg, log).await?;
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
