//! Read leases (Ceph's `readable_until`): a primary cut off from the cluster must
//! not go on answering reads from its own copy while a new primary takes writes.
//!
//! Every OSD asks the OSDs it shares PGs with for a lease at each heartbeat, and
//! serves a PG's reads only while every other up OSD of the PG has granted it
//! one that has not run out (a read that finds one run out asks again at once).
//! An OSD grants nothing to an OSD whose map is older than its own: that one may
//! no longer be the primary it thinks it is. A new primary, before it takes
//! writes, waits out the leases that the OSDs it peered with granted to the
//! primaries of the PG's earlier intervals that are down and so could not be
//! told (an OSD that answered the peering knows the new map and stops on its
//! own). A crashed OSD's leases have run out by the time failures mark it down
//! (a lease is shorter than the heartbeat grace), and a stopping OSD gives its
//! leases back, so the wait only costs time when an OSD is cut off, or marked
//! down by hand, while it still runs.
//!
//! Times are each OSD's monotonic clock: a lease runs from the moment the
//! primary asked for it, which is before the granting OSD counts it from, so the
//! primary's lease always ends first.

use std::time::{Duration, Instant};

use lcpfs_core::map::{ClusterMap, Pool};
use lcpfs_core::pg::PgId;
use lcpfs_proto::{LeaseReply, LeaseRequest, PgInfoReply};

use crate::error::{OsdError, Result};
use crate::node::Node;
use crate::peers::fan_out;

/// Ceph's `osd_pool_default_read_lease_ratio`: a lease lasts this share of the
/// heartbeat grace, so a crashed OSD's leases run out before it is marked down.
pub const LEASE_RATIO: f64 = 0.8;

/// How long a read waits for the peers it asked again to renew its lease.
const RENEW_WAIT: Duration = Duration::from_secs(2);

/// The answer to a peer's lease request.
pub fn handle_lease(node: &Node, request: LeaseRequest) -> LeaseReply {
    let epoch = node.current().epoch;
    if request.release {
        node.leases.release(request.osd);
        return LeaseReply {
            granted: false,
            epoch,
        };
    }
    let granted = request.epoch >= epoch && !node.leases.given_up();
    if granted {
        node.leases
            .grant(request.osd, Duration::from_millis(request.duration_ms));
    }
    LeaseReply { granted, epoch }
}

/// Sends `request` to each of `osds` at once, each answer within `wait`; returns
/// each one's reply with the moment it was asked.
async fn ask_all(
    node: &Node,
    osds: Vec<u32>,
    request: LeaseRequest,
    wait: Duration,
) -> Vec<(u32, Result<(LeaseReply, Instant)>)> {
    let map = node.current();
    fan_out(osds, |osd| {
        let (peers, map) = (node.peers.clone(), map.clone());
        async move {
            let asked = Instant::now();
            let reply = tokio::time::timeout(wait, peers.send_lease(&map, osd, request))
                .await
                .map_err(|_| OsdError::Unavailable(format!("osd.{osd} did not answer")))??;
            Ok((reply, asked))
        }
    })
    .await
}

/// Asks each of `osds` for a read lease (the heartbeat between OSDs sharing PGs,
/// and a read whose lease ran out), each within `wait`, and keeps those
/// granted; returns whether each one answered, granting or not.
pub async fn renew(node: &Node, osds: Vec<u32>, wait: Duration) -> Vec<(u32, bool)> {
    let request = LeaseRequest {
        osd: node.id,
        epoch: node.current().epoch,
        duration_ms: node.leases.duration().as_millis() as u64,
        release: false,
    };
    let answers = ask_all(node, osds, request, wait).await;
    answers
        .into_iter()
        .map(|(osd, answer)| match answer {
            Ok((reply, asked)) => {
                if reply.granted && !node.leases.given_up() {
                    node.leases.held_from(osd, asked);
                }
                (osd, true)
            }
            Err(_) => (osd, false),
        })
        .collect()
}

/// Gives back every lease this OSD holds (it is stopping), so that new primaries
/// need not wait them out.
pub async fn release_all(node: &Node) {
    node.leases.give_up();
    let map = node.current();
    let release = LeaseRequest {
        osd: node.id,
        epoch: map.epoch,
        duration_ms: 0,
        release: true,
    };
    let peers: Vec<u32> = map
        .osds
        .iter()
        .filter(|(id, info)| info.up && **id != node.id)
        .map(|(id, _)| *id)
        .collect();
    ask_all(node, peers, release, RENEW_WAIT).await;
}

/// Fails unless this OSD may answer a read of the PG now: it is still the PG's
/// primary in its newest map, and every other up OSD of the PG has granted it a
/// lease that has not run out (those that have are asked again at once).
/// Checked after the read, so what it returns was read while the lease held.
pub async fn check_readable(node: &Node, pool: &Pool, pg: PgId) -> Result<()> {
    let map = node.current();
    let mapping = node.mapping(&map, pg)?;
    if mapping.primary != Some(node.id) {
        return Err(node.not_primary(pg, &map));
    }
    if node.leases.given_up() {
        return Err(OsdError::Unavailable(format!(
            "osd.{} is stopping; retry at the PG's next primary",
            node.id
        )));
    }
    let others: Vec<u32> = mapping
        .up
        .iter()
        .flatten()
        .copied()
        .filter(|&osd| osd != node.id)
        .collect();
    if (others.len() as u32) < pool.read_size().saturating_sub(1) {
        return Err(OsdError::Unavailable(format!(
            "PG {pg} is inactive: {} of its OSDs are up, {} are needed to read; retry",
            others.len() + 1,
            pool.read_size()
        )));
    }
    let expired = node.leases.expired(&others);
    if expired.is_empty() {
        return Ok(());
    }
    renew(node, expired, RENEW_WAIT).await;
    let still: Vec<String> = node
        .leases
        .expired(&others)
        .into_iter()
        .map(|osd| format!("osd.{osd}"))
        .collect();
    if still.is_empty() {
        return Ok(());
    }
    Err(OsdError::Unavailable(format!(
        "PG {pg}: osd.{} cannot serve reads, its read lease from {} ran out (it may \
         have been replaced by a newer primary); retry",
        node.id,
        still.join(", ")
    )))
}

/// When a new primary of the PG may take writes: once every read lease that
/// the peered copies (`infos`, this OSD's among them) granted to a down primary
/// of the PG's earlier intervals since `since` has run out. A down primary
/// whose interval's other OSDs are all down too (so none could say) is given a
/// whole lease. `None`: at once.
pub fn writable_after<'a>(
    node: &Node,
    map: &ClusterMap,
    pg: PgId,
    since: u64,
    infos: impl IntoIterator<Item = &'a PgInfoReply>,
) -> Option<Instant> {
    let infos: Vec<&PgInfoReply> = infos.into_iter().collect();
    let down = |osd: u32| map.osds.get(&osd).is_none_or(|info| !info.up && !info.lost);
    let reported = |osd: u32| {
        infos
            .iter()
            .filter_map(|info| info.leases.get(&osd).copied())
            .max()
            .map(Duration::from_millis)
    };
    let mut wait = Duration::ZERO;
    for (primary, members) in node.intervals.past_primaries(pg, since) {
        if primary == node.id || !down(primary) {
            continue;
        }
        let someone_knows = members
            .iter()
            .any(|&osd| osd != primary && map.osds.get(&osd).is_some_and(|info| info.up));
        let left = match reported(primary) {
            Some(left) => left,
            None if someone_knows => Duration::ZERO,
            None => node.leases.duration(),
        };
        wait = wait.max(left);
    }
    if node.intervals.unknown(pg) {
        // The PG's earlier primaries went unseen: any down OSD may be one.
        for osd in map.osds.keys().copied().filter(|&osd| down(osd)) {
            wait = wait.max(reported(osd).unwrap_or_default());
        }
    }
    (!wait.is_zero()).then(|| Instant::now() + wait)
}
