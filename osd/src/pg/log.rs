//! What an OSD keeps of a PG in memory between requests: the head of its log, the
//! client requests it applied (to answer retries), the peering state of its
//! interval and which copies miss which objects.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::time::Instant;

use lcpfs_core::pg::PgId;

use super::entry::Entry;

/// Versions whose request ids a PG keeps in store and in memory to answer retries
/// (like Ceph's osd_pg_log_dups_tracked); the log's length when that is longer.
pub const DUPS_KEEP: u64 = 3000;

/// A PG's up set, one entry per position (erasure-coded pools leave a position
/// `None` while no up OSD holds that shard).
pub type UpSet = Vec<Option<u32>>;

/// What an OSD remembers of a PG's log in memory.
#[derive(Debug, Default)]
pub struct PgLog {
    /// Sequence number of the newest mutation applied here.
    pub last: u64,
    /// The epoch of that mutation's version.
    pub last_epoch: u64,
    requests: HashMap<(String, u64), u64>,
    order: VecDeque<(String, u64)>,
    incomplete: HashSet<(String, u64)>,
    /// The interval (first epoch of an unchanged up set) and up set this PG was last
    /// peered in; `None` until then.
    pub peered: Option<(u64, UpSet)>,
    /// The newest interval whose primary peered this copy: writes and pushes from
    /// older intervals are refused.
    pub accepted_interval: u64,
    /// Set while a change to the store is in flight: if the request is cancelled
    /// half-way, the next user reloads the log from the store instead of trusting
    /// this copy.
    pub dirty: bool,
    /// The objects this copy's log is ahead of (kept in the store): their newest
    /// data is still to be recovered from another copy.
    pub missing: BTreeSet<Vec<u8>>,
    /// On a primary, the objects each other up OSD's copy misses, as peering
    /// found them; kept for the interval in `peered`.
    pub peer_missing: BTreeMap<u32, BTreeSet<Vec<u8>>>,
    /// On a primary, the OSDs (this one among them) whose copies peering
    /// backfilled (every object of theirs was marked missing, to be compared
    /// and sent again) and that may still miss objects.
    pub backfilled: BTreeSet<u32>,
    /// On a primary, when the PG may take writes after its last peering: once
    /// the read leases of its earlier primaries have run out (`None`: now).
    pub writable_after: Option<Instant>,
}

impl PgLog {
    /// The version a client request already got, if it was applied here.
    pub fn applied(&self, client: &str, tid: u64) -> Option<u64> {
        self.requests.get(&(client.to_owned(), tid)).copied()
    }

    /// True when the request was applied here but not yet by every replica.
    pub fn incomplete(&self, client: &str, tid: u64) -> bool {
        self.incomplete.contains(&(client.to_owned(), tid))
    }

    /// Marks whether a request applied here still has to reach some replicas.
    pub fn set_incomplete(&mut self, client: &str, tid: u64, incomplete: bool) {
        let request = (client.to_owned(), tid);
        if incomplete {
            self.incomplete.insert(request);
        } else {
            self.incomplete.remove(&request);
        }
    }

    /// Takes the log just reloaded from the store, keeping what the store does not
    /// hold: the peering state.
    pub fn reloaded(&mut self, fresh: PgLog) {
        let (peered, accepted) = (self.peered.take(), self.accepted_interval);
        let peer_missing = std::mem::take(&mut self.peer_missing);
        let backfilled = std::mem::take(&mut self.backfilled);
        let writable_after = self.writable_after.take();
        *self = fresh;
        self.writable_after = writable_after;
        self.peered = peered;
        self.accepted_interval = accepted;
        self.peer_missing = peer_missing;
        self.backfilled = backfilled;
    }

    /// True while a backfilled copy (see `backfilled`) of an up OSD still
    /// misses objects; forgets the others. `me` is this OSD.
    pub fn backfilling(&mut self, me: u32) -> bool {
        let (missing, peer_missing) = (&self.missing, &self.peer_missing);
        self.backfilled.retain(|osd| {
            if *osd == me {
                !missing.is_empty()
            } else {
                peer_missing.get(osd).is_some_and(|names| !names.is_empty())
            }
        });
        !self.backfilled.is_empty()
    }

    /// True when some up copy (this one, or a peer's as peering found it) misses
    /// the newest data of an object.
    pub fn degraded(&self) -> bool {
        !self.missing.is_empty() || self.peer_missing.values().any(|names| !names.is_empty())
    }

    /// The objects this copy misses that every peer copy misses too: no up OSD
    /// holds their newest data.
    pub fn unfound(&self) -> Vec<Vec<u8>> {
        self.missing
            .iter()
            .filter(|name| {
                self.peer_missing
                    .values()
                    .all(|names| names.contains(*name))
            })
            .cloned()
            .collect()
    }

    /// True when an up copy misses the newest data of `name`.
    pub fn is_missing(&self, name: &[u8]) -> bool {
        self.missing.contains(name) || self.peer_missing.values().any(|names| names.contains(name))
    }

    /// Refuses a write or push from a primary of an interval older than the newest
    /// that peered this copy.
    pub fn check_interval(&self, interval: u64, pg: PgId) -> Result<(), String> {
        if interval < self.accepted_interval {
            return Err(format!(
                "PG {pg} was peered in the interval of epoch {}; a primary of epoch {interval} is stale",
                self.accepted_interval
            ));
        }
        Ok(())
    }

    /// Forgets which requests were incomplete: peering brought every up OSD level.
    pub fn clear_incomplete(&mut self) {
        self.incomplete.clear();
    }

    /// Records a mutation applied here.
    pub fn record(&mut self, entry: &Entry) {
        self.dirty = false;
        if entry.version >= self.last {
            self.last = entry.version;
            self.last_epoch = entry.epoch;
        }
        if !entry.client.is_empty() {
            self.remember(entry.client.clone(), entry.tid, entry.version);
        }
    }

    /// Remembers the version a client request got, for a retry to be answered.
    pub(super) fn remember(&mut self, client: String, tid: u64, version: u64) {
        let request = (client, tid);
        if self.requests.insert(request.clone(), version).is_none() {
            self.order.push_back(request);
        }
        while self.order.len() as u64 > DUPS_KEEP {
            if let Some(old) = self.order.pop_front() {
                self.requests.remove(&old);
            }
        }
    }
}
