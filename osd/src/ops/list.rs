//! Listing a PG's objects, a page at a time. A primary lists only after peering,
//! so the listing has every object; objects its own copy misses are listed by an
//! up copy that misses nothing, or recovered here first. A listing for another
//! pg_num than this OSD's map has is refused: its objects may be in other PGs.

use lcpfs_proto::{ListReply, ListRequest};

use crate::backend;
use crate::error::Result;
use crate::lease;
use crate::node::{self, Node};
use crate::peering::ensure_peered;
use crate::pg;

/// Objects per page when the request sets no limit.
const DEFAULT_PAGE: usize = 1000;

/// One page of the PG's objects after `request.start_after`.
pub async fn list(node: &Node, request: ListRequest) -> Result<ListReply> {
    let map = node.map_at_least(request.epoch).await?;
    let pool = node::pool(&map, request.pool)?.clone();
    let pg = node::pg_of(&pool, request.pg_seed)?;
    if request.pg_num != 0 && request.pg_num != pool.pg_num {
        return Err(node.stale(format!(
            "pool '{}' has {} PGs at epoch {}, not {}: list it again",
            pool.name, pool.pg_num, map.epoch, request.pg_num
        )));
    }
    let primary = node.mapping(&map, pg)?.primary == Some(node.id);
    if primary {
        let backend = backend::of(&pool);
        let slot = node.pgs.slot(pg);
        let mut guard = slot.lock().await;
        let log = node.loaded(&mut guard, pg, &pool).await?;
        let current = node.current();
        ensure_peered(node, backend, &current, &pool, pg, log).await?;
        if !log.missing.is_empty() {
            let complete = log
                .peer_missing
                .iter()
                .find(|(_, names)| names.is_empty())
                .map(|(osd, _)| *osd);
            if let Some(osd) = complete {
                let page = node.peers.send_list(&current, osd, request).await?;
                lease::check_readable(node, &pool, pg).await?;
                return Ok(page);
            }
        }
        let missing: Vec<Vec<u8>> = log.missing.iter().cloned().collect();
        for name in missing {
            backend
                .recover_object(node, &current, &pool, pg, log, &name)
                .await?;
        }
    }
    let limit = match request.limit {
        0 => DEFAULT_PAGE,
        limit => limit as usize,
    };
    let entries = node
        .on_store(move |store| pg::list(store, pg, &request.start_after, limit))
        .await?;
    if primary {
        lease::check_readable(node, &pool, pg).await?;
    }
    Ok(ListReply {
        epoch: map.epoch,
        entries,
    })
}
