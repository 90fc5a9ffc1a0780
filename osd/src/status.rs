//! What this OSD reports of the PGs it leads: each one's state in Ceph's words
//! (`active+clean`, `active+recovering+degraded`, `peering`, `down`, ...), with
//! its scrub stamps, for the monitors and for `/metrics`.

use lcpfs_engine::PoolStatus;
use lcpfs_proto::PgStat;

use crate::metrics::{OsdMetrics, Scrape};
use crate::node::Node;
use crate::scrub::unix_seconds;

/// The states of the PGs this OSD is primary for, for the monitors. A PG busy
/// with a request is left out of this round.
pub fn pg_states(node: &Node) -> Vec<PgStat> {
    let map = node.current();
    let mut stats = Vec::new();
    for (pg, up, interval) in node.led_pgs() {
        let Some(pool) = map.pools.get(&pg.pool) else {
            continue;
        };
        let scrub = node.scrubs.lock().expect("scrub table").get(&pg).cloned();
        let scrubbing = scrub.as_ref().and_then(|stamp| stamp.running);
        let recovering = node.recovery.step(pg);
        let members = up.iter().flatten().count() as u32;
        let mut state = if members < pool.min_size() {
            "inactive".to_owned()
        } else if node.down.lock().expect("down PGs").contains(&pg) {
            // Waits for an OSD of an earlier interval (see `check_not_down`).
            "down".to_owned()
        } else {
            let slot = node.pgs.slot(pg);
            // A scrub holds the lock a chunk at a time, and only scrubs a peered
            // PG, as background recovery recovers objects of an active one;
            // otherwise a busy lock means a request or peering is running.
            // Seen: (peered, some copy misses objects).
            let seen = match slot.try_lock() {
                Ok(guard) => Some(guard.as_ref().map_or((false, false), |log| {
                    (
                        log.peered.as_ref() == Some(&(interval, up.clone())),
                        log.degraded(),
                    )
                })),
                Err(_) if scrubbing.is_some() => Some((true, false)),
                Err(_) if recovering.is_some_and(|recovery| recovery.active) => Some((true, true)),
                Err(_) => None,
            };
            let undersized = if members < pool.size() {
                "+undersized"
            } else {
                ""
            };
            match (seen, recovering) {
                (Some((true, true)), Some(recovery)) if recovery.active => {
                    format!("active+{}{undersized}+degraded", recovery.word())
                }
                (Some((true, degraded)), _) if degraded || !undersized.is_empty() => {
                    format!("active{undersized}+degraded")
                }
                (Some((true, _)), _) => "active+clean".to_owned(),
                // Client I/O on the PG waits while copies are brought level.
                (_, Some(recovery)) => format!("{}+degraded", recovery.word()),
                (Some((false, _)), None) => "peering".to_owned(),
                (None, None) => continue,
            }
        };
        match scrubbing {
            Some(true) => state.push_str("+scrubbing+deep"),
            Some(false) => state.push_str("+scrubbing"),
            None => {}
        }
        if scrub.as_ref().is_some_and(|stamp| stamp.inconsistent > 0) {
            state.push_str("+inconsistent");
        }
        stats.push(PgStat {
            pool: pg.pool,
            seed: pg.seed,
            state,
            last_scrub: scrub.as_ref().map_or(0, |stamp| unix_seconds(stamp.last)),
            last_deep_scrub: scrub
                .as_ref()
                .map_or(0, |stamp| unix_seconds(stamp.last_deep)),
        });
    }
    stats
}

impl Scrape for Node {
    fn metrics(&self) -> &OsdMetrics {
        &self.metrics
    }

    fn pg_states(&self) -> Vec<PgStat> {
        pg_states(self)
    }

    fn pg_copies(&self) -> usize {
        Node::pg_copies(self)
    }

    fn store_status(&self) -> PoolStatus {
        Node::store_status(self)
    }

    fn is_up(&self) -> bool {
        Node::is_up(self)
    }
}
