//! Scrub at a PG's primary: every up OSD's copy of each object is compared (sizes
//! and xattrs; deep: content digests of every byte, and for shards, the code), a
//! chunk of objects at a time under the PG lock. The authoritative copy is the
//! one most copies agree on ([`verdict`]); with repair, the backend rewrites the
//! others from it. Scrubs run on demand and on schedule, and their stamps are kept
//! on every copy so a restarted OSD, or the next primary, keeps to the schedule.

pub mod verdict;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lcpfs_core::map::Pool;
use lcpfs_core::pg::PgId;
use lcpfs_proto::{Inconsistency, PushRequest, ScrubMapRequest, ScrubObject, ScrubReply};

use crate::backend;
use crate::error::{OsdError, Result};
use crate::node::{self, Node, ScrubStamp};
use crate::peering::{ensure_peered, push_to_peers};
use crate::peers::pg_ref;
use crate::pg;

/// Objects compared per scrub chunk (the PG lock is held for one chunk at a time).
const SCRUB_CHUNK: usize = 64;

/// How often the schedule looks for PGs whose scrub is due.
const SCHEDULE_TICK: Duration = Duration::from_secs(10);

/// Seconds since the Unix epoch, as scrub stamps are kept and reported (0 for a
/// time before it).
pub fn unix_seconds(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// Scrubs a PG this OSD is primary for (`deep`: every byte; `repair`: rewrite
/// the bad copies found) and reports what it found.
pub async fn scrub_pg(node: &Node, pg: PgId, deep: bool, repair: bool) -> Result<ScrubReply> {
    let map = node.current();
    let pool = node::pool(&map, pg.pool)?.clone();
    let pg = node::pg_of(&pool, pg.seed)?;
    if node.mapping(&map, pg)?.primary != Some(node.id) {
        return Err(node.not_primary(pg, &map));
    }
    load_stamp(node, pg).await;
    change_stamp(node, pg, |stamp| stamp.running = Some(deep));
    let result = scrub_chunks(node, &pool, pg, deep, repair).await;
    let now = SystemTime::now();
    change_stamp(node, pg, |stamp| {
        stamp.running = None;
        if let Ok(report) = &result {
            stamp.inconsistent = report
                .inconsistencies
                .iter()
                .filter(|bad| !bad.repaired)
                .count();
            stamp.last = now;
            if deep {
                stamp.last_deep = now;
            }
        }
    });
    if result.is_ok() {
        record(node, pg, deep, now).await;
    }
    let report = result?;
    tracing::info!(
        %pg,
        deep,
        objects = report.objects,
        inconsistent = report.inconsistencies.len(),
        repaired = report.inconsistencies.iter().filter(|bad| bad.repaired).count(),
        "scrubbed"
    );
    Ok(report)
}

/// Scrubs, one at a time, the PGs this OSD leads whose scrub or deep scrub is
/// due, repairing what they find when `auto_repair` is set.
pub async fn scrub_on_schedule(node: Arc<Node>) {
    let mut tick = tokio::time::interval(SCHEDULE_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for (pg, _, _) in node.led_pgs() {
            load_stamp(&node, pg).await;
            let mut due = None;
            let since = |at: SystemTime| at.elapsed().unwrap_or_default();
            change_stamp(&node, pg, |stamp| {
                if since(stamp.last_deep) >= node.config.deep_scrub_interval {
                    due = Some(true);
                } else if since(stamp.last) >= node.config.scrub_interval {
                    due = Some(false);
                }
            });
            let Some(deep) = due else { continue };
            if let Err(error) = scrub_pg(&node, pg, deep, node.config.auto_repair).await {
                tracing::warn!(%pg, deep, %error, "scheduled scrub failed; retrying later");
            }
        }
    }
}

/// Changes the PG's scrub stamp (loaded by [`load_stamp`] first, or taken as now).
fn change_stamp(node: &Node, pg: PgId, change: impl FnOnce(&mut ScrubStamp)) {
    let mut scrubs = node.scrubs.lock().expect("scrub table");
    let now = SystemTime::now();
    change(scrubs.entry(pg).or_insert(ScrubStamp {
        last: now,
        last_deep: now,
        inconsistent: 0,
        running: None,
    }));
}

/// Loads, the first time this OSD leads the PG, when it was last scrubbed and
/// deep-scrubbed, as recorded on this copy; a copy with nothing recorded (a new
/// PG) counts as scrubbed now.
async fn load_stamp(node: &Node, pg: PgId) {
    if node.scrubs.lock().expect("scrub table").contains_key(&pg) {
        return;
    }
    let recorded = node
        .on_store(move |store| pg::scrub_stamps(store, pg))
        .await
        .unwrap_or_default();
    let at = |seconds: u64| {
        if seconds > 0 {
            SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
        } else {
            SystemTime::now()
        }
    };
    node.scrubs
        .lock()
        .expect("scrub table")
        .entry(pg)
        .or_insert(ScrubStamp {
            last: at(recorded.0),
            last_deep: at(recorded.1),
            inconsistent: 0,
            running: None,
        });
}

/// Records a completed scrub on this copy and every other up copy.
async fn record(node: &Node, pg: PgId, deep: bool, at: SystemTime) {
    let seconds = unix_seconds(at);
    let (scrubbed, deep_scrubbed) = (seconds, if deep { seconds } else { 0 });
    let mut failures = Vec::new();
    if let Err(error) = node
        .on_store(move |store| pg::set_scrub_stamps(store, pg, scrubbed, deep_scrubbed))
        .await
    {
        failures.push(format!("osd.{}: {error}", node.id));
    }
    let map = node.current();
    let up = node
        .mapping(&map, pg)
        .map(|mapping| mapping.up)
        .unwrap_or_default();
    let push = PushRequest {
        interval: node.interval(pg),
        scrubbed,
        deep_scrubbed,
        ..PushRequest::default()
    };
    for (osd, error) in push_to_peers(node, &map, pg, &up, push).await {
        failures.push(format!("osd.{osd}: {error}"));
    }
    if !failures.is_empty() {
        tracing::warn!(%pg, failures = %failures.join("; "), "scrub stamps not recorded everywhere");
    }
}

/// Compares the PG's copies a chunk of objects at a time.
async fn scrub_chunks(
    node: &Node,
    pool: &Pool,
    pg: PgId,
    deep: bool,
    repair: bool,
) -> Result<ScrubReply> {
    let backend = backend::of(pool);
    let mut report = ScrubReply {
        primary: node.id,
        ..ScrubReply::default()
    };
    let mut start_after = Vec::new();
    loop {
        let slot = node.pgs.slot(pg);
        let mut guard = slot.lock().await;
        let map = node.current();
        let log = node.loaded(&mut guard, pg, pool).await?;
        ensure_peered(node, backend, &map, pool, pg, log).await?;
        if log.degraded() {
            // Copies that miss objects would be found inconsistent, and a repair
            // could take an older copy for the good one.
            return Err(OsdError::Unavailable(format!(
                "PG {pg} is recovering: some of its copies miss objects; scrub it once it is clean"
            )));
        }
        report.epoch = map.epoch;
        let after = start_after.clone();
        let mine = node
            .on_store(move |store| pg::scrub_map(store, pg, &after, &[], SCRUB_CHUNK, deep))
            .await?;
        let done = mine.len() < SCRUB_CHUNK;
        // Every copy is compared over the same range of names.
        let last = match mine.last() {
            Some(object) if !done => object.name.clone(),
            _ => Vec::new(),
        };
        let up = node.up_osds(&map, pg)?;
        let mut copies: BTreeMap<Vec<u8>, HashMap<u32, ScrubObject>> = BTreeMap::new();
        for object in mine {
            copies
                .entry(object.name.clone())
                .or_default()
                .insert(node.id, object);
        }
        for &osd in up.iter().filter(|&&osd| osd != node.id) {
            let request = ScrubMapRequest {
                pg: Some(pg_ref(&map, pg)),
                deep,
                start_after: start_after.clone(),
                last: last.clone(),
                limit: 0,
            };
            let objects = node
                .peers
                .send_scrub_map(&map, osd, request)
                .await
                .map_err(|error| {
                    OsdError::Unavailable(format!(
                        "scrub of PG {pg}: osd.{osd} did not answer ({error})"
                    ))
                })?;
            for object in objects {
                copies
                    .entry(object.name.clone())
                    .or_default()
                    .insert(osd, object);
            }
        }
        for (name, held) in copies {
            let (authority, mut bad) = verdict::judge(&up, &held, node.id, deep);
            let agreed = authority.and_then(|osd| held.get(&osd));
            // Copies that agree on what their digests cover may still differ in
            // what they cannot (shards: whether they fit the code).
            if let Some(object) = agreed
                && deep
                && bad.is_empty()
            {
                bad = backend
                    .check_deep(node, &map, pool, pg, &name, object.size)
                    .await?;
            }
            report.objects += 1;
            report.bytes += agreed.map_or(0, |object| object.size);
            let mut found: Vec<Inconsistency> = bad
                .into_iter()
                .map(|(osd, reason)| Inconsistency {
                    name: name.clone(),
                    osd,
                    reason,
                    repaired: false,
                })
                .collect();
            if repair {
                backend
                    .repair(node, &map, pool, pg, &name, authority, &mut found, log)
                    .await?;
            }
            report.inconsistencies.extend(found);
        }
        if done {
            return Ok(report);
        }
        start_after = last;
    }
}
