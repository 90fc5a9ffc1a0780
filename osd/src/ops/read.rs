//! The reads of a client request at the PG's primary, after its mutations: under
//! the PG's lock, with the PG peered and the object recovered where the read needs
//! it, answered by the pool's backend, and returned only if this OSD still held
//! its read lease when the read was done (see [`crate::lease`]).

use lcpfs_core::map::Pool;
use lcpfs_core::pg::PgId;
use lcpfs_proto::{OpRequest, OpResult};

use crate::backend::Backend;
use crate::error::Result;
use crate::lease;
use crate::node::Node;
use crate::peering::ensure_peered;

use super::write::sent_to_this_primary;

/// Runs the reads of `request` on the PG; one result per read.
pub async fn read(
    node: &Node,
    backend: &dyn Backend,
    pool: &Pool,
    pg: PgId,
    request: &OpRequest,
) -> Result<Vec<OpResult>> {
    let slot = node.pgs.slot(pg);
    let mut guard = slot.lock().await;
    let log = node.loaded(&mut guard, pg, pool).await?;
    let map = node.current();
    ensure_peered(node, backend, &map, pool, pg, log).await?;
    sent_to_this_primary(node, pg, request)?;
    if backend.read_waits_for(log, &request.name) {
        backend
            .recover_object(node, &map, pool, pg, log, &request.name)
            .await?;
    }
    let results = backend.read(node, &map, pool, pg, request, log).await?;
    lease::check_readable(node, pool, pg).await?;
    Ok(results)
}
