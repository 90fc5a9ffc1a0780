//! One client request at this OSD, the primary of its object's PG: checked,
//! run in its turn among the requests for its object, followed to the sender's
//! map epoch, its mutations applied ([`super::write`]) and then its reads answered
//! ([`super::read`]), and counted in the metrics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lcpfs_core::map::{ClusterMap, Pool};
use lcpfs_core::pg::{PgId, object_to_pg};
use lcpfs_proto::object_op::Op;
use lcpfs_proto::{KeyValue, OpReply, OpRequest, OpResult, op_result};

use super::{read, write};
use crate::backend;
use crate::error::{OsdError, Result};
use crate::node::{self, Node};
use crate::pg;

/// How often a request waiting for an inactive PG looks at the map again.
const INACTIVE_POLL: Duration = Duration::from_millis(500);

/// Runs a client's request at this OSD, the primary of the object's PG.
pub async fn op(node: &Node, request: OpRequest) -> Result<OpReply> {
    let began = Instant::now();
    check_request(&request)?;
    // One request at a time per object, in the order they came: a write the
    // client gave up on is settled before the client's next request for the
    // object runs, which may read or build on it. One given up that comes after
    // the next (delayed on its way, or in this OSD before its turn) never runs:
    // the next one named it.
    node.pgs.abandon(&request.client, &request.abandoned);
    let _turn = node.pgs.turn(request.pool, &request.name).await;
    if node.pgs.abandoned(&request.client, request.tid) {
        return Err(OsdError::Invalid(format!(
            "request {} of {} came after a later request of its client for '{}', which gave it up; it was not applied",
            request.tid,
            request.client,
            String::from_utf8_lossy(&request.name)
        )));
    }
    let map = node.map_at_least(request.epoch).await?;
    let pool = node::pool(&map, request.pool)?.clone();
    let backend = backend::of(&pool);
    backend.check_ops(&pool, &request.ops)?;
    let pg = object_to_pg(&pool, &request.name);
    let mapping = node.mapping(&map, pg)?;
    if mapping.primary != Some(node.id) {
        return Err(node.stale(format!(
            "osd.{} is not the primary of PG {pg} at epoch {} (primary: {})",
            node.id,
            map.epoch,
            mapping
                .primary
                .map_or("none".to_owned(), |osd| format!("osd.{osd}"))
        )));
    }
    let missing = |error: OsdError| named_in(error, &pool);
    let mutations = request
        .ops
        .iter()
        .any(|op| op.op.as_ref().is_some_and(pg::is_mutation));
    let up = mapping.up.iter().flatten().count();
    let map = wait_active(node, (map, up), &pool, pg, mutations).await?;
    let version = if mutations {
        write::mutate(node, backend, &map, &pool, pg, &request)
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
        read::read(node, backend, &pool, pg, &request)
            .await
            .map_err(missing)?
    } else {
        Vec::new()
    };
    // Every request served, at debug level: what a history checker's anomaly
    // is traced back through (which OSD served it, at which version).
    tracing::debug!(
        %pg,
        client = %request.client,
        tid = request.tid,
        object = %String::from_utf8_lossy(&request.name),
        version,
        epoch = map.epoch,
        mutations,
        "served"
    );
    account(node, &request, &results, began);
    Ok(OpReply {
        epoch: node.current().epoch,
        results,
        version,
    })
}

/// Waits a little (`--pg-inactive-wait`) for the map to give the PG enough up
/// OSDs for the request (`min_size` for a mutation, [`Pool::read_size`] for
/// reads), then refuses clearly: like Ceph, a PG below that is inactive.
/// `(map, up)`: the request's map and how many of the PG's OSDs it has up.
/// Returns the map it saw enough in.
async fn wait_active(
    node: &Node,
    (mut map, mut up): (Arc<ClusterMap>, usize),
    pool: &Pool,
    pg: PgId,
    mutations: bool,
) -> Result<Arc<ClusterMap>> {
    let (needed, what, outcome) = if mutations {
        (pool.min_size(), "min_size is", "the write was not applied")
    } else {
        (pool.read_size(), "reads need", "nothing was read")
    };
    let waited_until = Instant::now() + node.config.inactive_wait;
    loop {
        if up as u32 >= needed {
            return Ok(map);
        }
        if Instant::now() >= waited_until {
            return Err(OsdError::Unavailable(format!(
                "PG {pg} is inactive: {up} of its OSDs are up, {what} {needed}; {outcome}"
            )));
        }
        node.map_changed(INACTIVE_POLL).await;
        map = node.current();
        up = node.up_osds(&map, pg)?.len();
    }
}

/// Refuses a malformed request: no object name, an operation of no kind, or an
/// xattr name reserved for LCPFS.
fn check_request(request: &OpRequest) -> Result<()> {
    if request.name.is_empty() {
        return Err(OsdError::Invalid("object name is empty".into()));
    }
    if request.ops.iter().any(|op| op.op.is_none()) {
        return Err(OsdError::Invalid("an operation has no kind".into()));
    }
    let reserved = request.ops.iter().find_map(|op| match &op.op {
        Some(Op::SetXattr(KeyValue { key, .. }) | Op::RmXattr(key))
            if key.starts_with(pg::RESERVED_XATTR_PREFIX) =>
        {
            Some(key)
        }
        _ => None,
    });
    if let Some(key) = reserved {
        return Err(OsdError::Invalid(format!(
            "xattr names starting with '{}' are reserved for LCPFS ({key:?})",
            pg::RESERVED_XATTR_PREFIX
        )));
    }
    Ok(())
}

/// A missing object's refusal, naming its pool.
fn named_in(error: OsdError, pool: &Pool) -> OsdError {
    match error {
        OsdError::NoObject(name) => OsdError::NotFound(format!(
            "object '{}' does not exist in pool '{}'",
            String::from_utf8_lossy(&name),
            pool.name
        )),
        other => other,
    }
}

/// Counts a served request in the metrics.
fn account(node: &Node, request: &OpRequest, results: &[OpResult], began: Instant) {
    let metrics = &node.metrics;
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
        metrics.ops.with_label_values(&[kind]).inc();
        metrics
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
    metrics
        .bytes
        .with_label_values(&["out"])
        .inc_by(read as u64);
    metrics
        .latency
        .with_label_values(&[if mutation { "write" } else { "read" }])
        .observe(began.elapsed().as_secs_f64());
}
