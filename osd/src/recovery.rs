//! Recovery in the background: once peering has left a PG active with copies that
//! miss objects, its primary brings those objects to every up copy one at a time,
//! under the PG's lock (client operations run between them), at most
//! `max_recovering_pgs` PGs at once.
//!
//! How one object is brought level depends on the pool (whole copies, or shards
//! rebuilt from `k` others): the backends implement [`ObjectRecovery`], and this
//! module never names them.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lcpfs_core::map::{ClusterMap, Pool};
use lcpfs_core::pg::PgId;

use crate::error::Result;
use crate::node::{Node, RecoveryStep};
use crate::pg::PgLog;

/// How long a PG whose recovery could not finish waits before it is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// How a pool's backend brings one object's newest data to every up copy of a PG
/// that misses it (implemented by the layer above, one per kind of pool).
#[tonic::async_trait]
pub trait ObjectRecovery: Sync {
    /// Brings `name` level on every up copy of the PG (peered, under its lock).
    async fn recover_object(
        &self,
        node: &Node,
        map: &ClusterMap,
        pool: &Pool,
        pg: PgId,
        log: &mut PgLog,
        name: &[u8],
    ) -> Result<()>;
}

/// Chooses the backend of a pool.
pub type Backends = fn(&Pool) -> &'static dyn ObjectRecovery;

/// Asks the background recovery to bring the PG's missing objects to every up
/// copy, if some copy misses any.
pub fn queue_recovery(node: &Node, pg: PgId, log: &mut PgLog) {
    node.recovery.note_backfill(pg, log, node.id);
    if log.degraded() {
        node.recovery.queue(pg);
    }
}

/// The configured pause between recovered objects.
pub async fn pause(node: &Node) {
    if !node.config.recovery_sleep.is_zero() {
        tokio::time::sleep(node.config.recovery_sleep).await;
    }
}

/// Recovers, in the background, the missing objects of the PGs peering left
/// degraded, until the node stops.
pub async fn recover_in_background(node: Arc<Node>, backends: Backends) {
    let Some(mut queue) = node.recovery.take_requests() else {
        return;
    };
    // The PGs being recovered, each with whether it was queued again meanwhile
    // (a new peering may have found more to recover after the task looked).
    let running: Arc<Mutex<HashMap<PgId, bool>>> = Arc::default();
    while let Some(pg) = queue.recv().await {
        if let Some(again) = running.lock().expect("recovering PGs").get_mut(&pg) {
            *again = true;
            continue;
        }
        running.lock().expect("recovering PGs").insert(pg, false);
        let (node, running) = (node.clone(), running.clone());
        tokio::spawn(async move {
            let unfinished = recover_pg(&node, backends, pg).await;
            let again = running
                .lock()
                .expect("recovering PGs")
                .remove(&pg)
                .unwrap_or(false);
            if unfinished {
                // An OSD did not answer or an object has no holder up: try
                // again later (a map change also peers and queues it again).
                tokio::time::sleep(RETRY_AFTER).await;
            }
            if unfinished || again {
                node.recovery.queue(pg);
            }
        });
    }
}

/// Recovers the PG's missing objects while this OSD stays its primary in the
/// interval it was peered in. True when some could not be recovered.
async fn recover_pg(node: &Node, backends: Backends, pg: PgId) -> bool {
    let table = &node.recovery;
    let mut recovering = table.recovering(pg, table.backfills(pg), true).await;
    let mut failed: BTreeSet<Vec<u8>> = BTreeSet::new();
    let mut first = true;
    loop {
        // Between objects, not before the first: the PG's state tells at
        // once whether a copy is being backfilled.
        if !std::mem::take(&mut first) {
            pause(node).await;
        }
        let map = node.current();
        let Some(pool) = map.pools.get(&pg.pool) else {
            return false;
        };
        let slot = node.pgs.slot(pg);
        // Peering waits for a recovery slot while it holds the PG lock, so
        // this task never waits for the lock while it holds a slot.
        let mut guard = match slot.try_lock() {
            Ok(guard) => guard,
            Err(_) => {
                drop(recovering);
                let guard = slot.lock().await;
                match table.try_recovering(pg) {
                    Some(mark) => {
                        recovering = mark;
                        guard
                    }
                    None => {
                        drop(guard);
                        recovering = table.recovering(pg, table.backfills(pg), true).await;
                        continue;
                    }
                }
            }
        };
        let Ok(log) = node.loaded(&mut guard, pg, pool).await else {
            return true;
        };
        table.mark(
            pg,
            RecoveryStep {
                backfill: table.note_backfill(pg, log, node.id),
                waiting: false,
                active: true,
            },
        );
        let up = match node.mapping(&map, pg) {
            Ok(mapping) if mapping.primary == Some(node.id) => mapping.up,
            _ => return false,
        };
        let interval = node.interval(pg);
        if log.peered.as_ref() != Some(&(interval, up.clone())) {
            // Peering again queues what is left.
            return false;
        }
        let next = log
            .missing
            .iter()
            .chain(log.peer_missing.values().flatten())
            .find(|name| !failed.contains(*name))
            .cloned();
        let Some(name) = next else {
            if failed.is_empty() {
                // Clean: every up copy holds every write of earlier intervals.
                node.intervals.forget_past(pg, interval, &up);
            }
            return !failed.is_empty();
        };
        if let Err(error) = backends(pool)
            .recover_object(node, &map, pool, pg, log, &name)
            .await
        {
            tracing::warn!(%pg, object = %String::from_utf8_lossy(&name), %error, "could not recover an object");
            failed.insert(name);
        }
    }
}
