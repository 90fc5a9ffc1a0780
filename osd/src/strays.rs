//! Stray PG copies: after a remap, an OSD may hold copies of PGs it is no longer
//! in the up set of, or of pools that no longer exist. Each is removed once the
//! PG is clean without it and its primary's log holds this copy's newest write,
//! so nothing is lost with it.

use std::sync::Arc;
use std::time::Duration;

use lcpfs_core::pg::PgId;

use crate::error::Result;
use crate::node::Node;
use crate::peers::pg_ref;
use crate::pg;

/// How often this OSD looks for stray copies.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Removes, every few seconds, the stray PG copies this OSD holds.
pub async fn remove_strays(node: Arc<Node>) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Ok(held) = node
            .on_store(|store| Ok::<_, lcpfs_engine::Error>(pg::held(store)))
            .await
        else {
            continue;
        };
        for pg in held {
            match removable(&node, pg).await {
                Ok(true) => {
                    if let Err(error) = remove(&node, pg).await {
                        tracing::warn!(%pg, %error, "could not remove a stray PG copy");
                    }
                }
                Ok(false) => {}
                Err(error) => {
                    tracing::debug!(%pg, %error, "stray PG copy kept for now");
                }
            }
        }
    }
}

/// True when this OSD's copy of `pg` can go: its pool is gone, or the OSD is out
/// of the PG's up set, the PG is active+clean without it, and its primary's log
/// holds this copy's newest write.
async fn removable(node: &Node, pg: PgId) -> Result<bool> {
    let map = node.current();
    let Some(pool) = map.pools.get(&pg.pool) else {
        return Ok(true);
    };
    if pg.seed >= pool.pg_num {
        return Ok(false);
    }
    let mapping = node.mapping(&map, pg)?;
    if mapping.up.contains(&Some(node.id)) {
        return Ok(false);
    }
    let Some(primary) = mapping.primary else {
        return Ok(false);
    };
    let (last, last_epoch) = {
        let slot = node.pgs.slot(pg);
        let mut guard = slot.lock().await;
        let log = node.loaded(&mut guard, pg, pool).await?;
        (log.last, log.last_epoch)
    };
    let info = node
        .peers
        .send_pg_info(&map, primary, pg_ref(&map, pg))
        .await?;
    if !info.clean {
        return Ok(false);
    }
    if last == 0 || info.oldest > last {
        // Nothing written here, or the primary's history has moved on past it.
        return Ok(true);
    }
    let theirs = node.peers.send_pg_log(&map, primary, pg, last - 1).await?;
    Ok(theirs
        .first()
        .is_some_and(|entry| entry.version == last && entry.epoch == last_epoch))
}

/// Removes this OSD's copy of `pg` unless the map moved it back here meanwhile.
async fn remove(node: &Node, pg: PgId) -> Result<()> {
    let slot = node.pgs.slot(pg);
    let mut guard = slot.lock().await;
    let map = node.current();
    if map.pools.contains_key(&pg.pool) && node.mapping(&map, pg)?.up.contains(&Some(node.id)) {
        return Ok(());
    }
    node.on_store(move |store| pg::remove(store, pg)).await?;
    *guard = None;
    tracing::info!(%pg, "removed a stray PG copy");
    Ok(())
}
