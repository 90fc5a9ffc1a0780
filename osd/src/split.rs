//! PG splits on this OSD: when a pool's pg_num grows, every copy this OSD holds
//! of the pool's PGs is split into the new children (see [`crate::pg::split`])
//! before the OSD acts on the map that grew it, and, on start, before it serves at
//! all (the map may have grown while it was stopped).
//!
//! Splitting before the map is published is what keeps every object readable and
//! listed exactly once: requests for a child wait for that map, and work on a
//! parent begun under the smaller pg_num is refused once the split begins
//! ([`Node::loaded`]), so no write lands in a parent after its objects moved.

use std::time::Duration;

use lcpfs_core::map::{ClusterMap, Pool};
use lcpfs_core::pg::{PgId, split_children};
use lcpfs_engine::Store;

use crate::error::Result;
use crate::node::Node;
use crate::pg;

/// How soon a split that failed (a full or failing disk) is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Splits every PG copy in `store` whose pool has grown past the pg_num it was
/// split for, as `map` has them; returns how many copies were split. Run on start,
/// before the OSD serves.
pub fn split_held(store: &Store, map: &ClusterMap) -> Result<usize> {
    let mut split = 0;
    for pg in pg::held(store) {
        let Some(pool) = map.pools.get(&pg.pool) else {
            continue;
        };
        if pg.seed >= pool.pg_num {
            continue;
        }
        let children = pg::split(store, pg, pool.pg_num, pool.compression.as_deref())?;
        if !children.is_empty() {
            tracing::info!(%pg, children = children.len(), pg_num = pool.pg_num, "split a PG");
            split += 1;
        }
    }
    Ok(split)
}

/// Splits this OSD's copies of the PGs of every pool whose pg_num `map` grows,
/// before the map is published. A split that fails is retried until it succeeds:
/// the OSD cannot act on the map before.
pub async fn split_for_map(node: &Node, map: &ClusterMap) {
    for pool in map.pools.values() {
        let before = node.begin_split(pool.id, pool.pg_num);
        if before == 0 || before >= pool.pg_num {
            continue;
        }
        for seed in 0..before {
            let pg = PgId::new(pool.id, seed);
            while let Err(error) = split_pg(node, pg, pool, before).await {
                tracing::error!(%pg, %error, "cannot split the PG; retrying");
                tokio::time::sleep(RETRY_AFTER).await;
            }
        }
        tracing::info!(
            pool = %pool.name,
            from = before,
            to = pool.pg_num,
            epoch = map.epoch,
            "split the pool's PGs"
        );
    }
}

/// Splits this OSD's copy of `pg` (if it holds one) under the locks of the PG
/// and its children, which load afresh (and peer again) on their next use.
async fn split_pg(node: &Node, pg: PgId, pool: &Pool, before: u32) -> Result<()> {
    let slot = node.pgs.slot(pg);
    let mut guard = slot.lock().await;
    let children = split_children(pg, before, pool.pg_num);
    let mut child_slots = Vec::new();
    for child in &children {
        child_slots.push(node.pgs.slot(*child));
    }
    let mut child_guards = Vec::new();
    for slot in &child_slots {
        child_guards.push(slot.lock().await);
    }
    let (pg_num, compression) = (pool.pg_num, pool.compression.clone());
    let split = node
        .on_store(move |store| {
            if store.collection(&pg::collection(pg)).is_err() {
                return Ok(Vec::new());
            }
            pg::split(store, pg, pg_num, compression.as_deref())
        })
        .await?;
    if !split.is_empty() {
        *guard = None;
        for child in &mut child_guards {
            **child = None;
        }
        tracing::debug!(%pg, children = split.len(), pg_num, "split a PG");
    }
    Ok(())
}
