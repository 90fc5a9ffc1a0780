//! A placement group in the OSD's engine store: one collection per PG, holding the
//! PG's objects (`o/NAME`) and its log (`m/pglog`, one omap entry per mutation).
//!
//! A mutation and its log entry are one engine transaction, so after a crash an OSD
//! has both or neither. The log orders the PG's mutations by a version the primary
//! assigns: a sequence number, and the epoch its interval as primary began. It
//! remembers which client request made each one, so a retried request is answered
//! instead of applied twice; the request ids of the newest [`DUPS_KEEP`] versions are
//! also kept apart (`m/dups`), so that a short log does not forget them. Two copies
//! whose newest entries agree on both hold the same history; otherwise [`catch_up`]
//! finds where they diverged.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use lcpfs_core::engine::{self, CollectionSettings, Compression, ListOptions, Store, Transaction};
use lcpfs_core::pg::PgId;
use lcpfs_proto::object_op::Op;
use lcpfs_proto::{
    KeyValue, ListEntry, LogEntry as WireEntry, ObjectOp, ObjectStat, ObjectState, OmapEntries,
    OmapEntry, OpResult, PendingWrite, ReadShardReply, ScrubObject, op_result,
};
use prost::Message;
use serde::{Deserialize, Serialize};

use crate::ec;

/// The object holding a PG's log in its collection.
const LOG_OBJECT: &[u8] = b"m/pglog";
/// Xattr of the log object naming the shard position an erasure-coded PG's copy
/// holds (4 bytes, little endian).
const SHARD_XATTR: &[u8] = b"shard";
/// Xattr of the log object: the interval (its first epoch) in which a peering
/// that brought this copy level last completed (8 bytes, little endian).
const ACTIVATED_XATTR: &str = "activated";
/// Xattr of the log object: the newest interval whose primary peered this copy.
const ACCEPTED_XATTR: &str = "accepted";
/// Xattrs of the log object: when the PG was last scrubbed and deep-scrubbed
/// (seconds since the Unix epoch, 8 bytes, little endian).
const SCRUBBED_XATTR: &str = "scrubbed";
const DEEP_SCRUBBED_XATTR: &str = "deep-scrubbed";
/// The object holding an erasure-coded PG's prepared, uncommitted shard write.
const PENDING_OBJECT: &[u8] = b"m/pending";
/// The object naming (as omap keys) the objects this copy's log is ahead of: the
/// log holds their newest mutations but this copy does not hold their data yet.
const MISSING_OBJECT: &[u8] = b"m/missing";
/// Prefix of client objects in a PG's collection (keeps them apart from the log).
const OBJECT_PREFIX: &[u8] = b"o/";
/// Log entries kept per PG by default (older ones are trimmed; a copy whose log
/// ends before the oldest kept entry is backfilled).
pub const LOG_KEEP: u64 = 2048;
/// The object holding, by version, the request ids (client and request number) of
/// recent mutations, kept further back than a short log (Ceph's PG log dups), so
/// that a retried request is recognised after a reload whatever the log's length.
const DUPS_OBJECT: &[u8] = b"m/dups";
/// Versions whose request ids a PG keeps in store and in memory to answer retries
/// (like Ceph's osd_pg_log_dups_tracked); the log's length when that is longer.
pub const DUPS_KEEP: u64 = 3000;

/// The engine collection of a PG, e.g. `pg.3.1f`.
pub fn collection(pg: PgId) -> String {
    format!("pg.{pg}")
}

/// The PGs this OSD holds a copy of, from its collections' names.
pub fn held(store: &Store) -> Vec<PgId> {
    store
        .collections()
        .iter()
        .filter_map(|info| info.name.strip_prefix("pg.")?.parse().ok())
        .collect()
}

/// Removes this OSD's copy of a PG (objects and log).
pub fn remove(store: &Store, pg: PgId) -> engine::Result<()> {
    match store.remove_collection(&collection(pg)) {
        Ok(()) | Err(engine::Error::NotFound(_)) => Ok(()),
        Err(error) => Err(error),
    }
}

fn object_key(name: &[u8]) -> Vec<u8> {
    [OBJECT_PREFIX, name].concat()
}

/// A PG's up set, one entry per position (erasure-coded pools leave a position
/// `None` while no up OSD holds that shard).
pub type UpSet = Vec<Option<u32>>;

/// One PG log entry as stored (the version is its omap key).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct LogEntry {
    name: Vec<u8>,
    client: String,
    tid: u64,
    #[serde(default)]
    epoch: u64,
}

fn encode_entry(entry: &WireEntry) -> (Vec<u8>, Vec<u8>) {
    let value = LogEntry {
        name: entry.name.clone(),
        client: entry.client.clone(),
        tid: entry.tid,
        epoch: entry.epoch,
    };
    (
        entry.version.to_be_bytes().to_vec(),
        serde_json::to_vec(&value).expect("log entries serialize"),
    )
}

fn decode_entry(pg: PgId, key: &[u8], value: &[u8]) -> engine::Result<WireEntry> {
    let version = decode_version(pg, key)?;
    let entry: LogEntry = serde_json::from_slice(value)
        .map_err(|e| engine::Error::Corrupt(format!("PG {pg} log entry {version}: {e}")))?;
    Ok(WireEntry {
        version,
        name: entry.name,
        client: entry.client,
        tid: entry.tid,
        epoch: entry.epoch,
    })
}

/// The dups omap entry of a mutation with a request id: version, then the request
/// number (8 bytes, big endian) and the client's name.
fn encode_request(entry: &WireEntry) -> (Vec<u8>, Vec<u8>) {
    let value = [&entry.tid.to_be_bytes()[..], entry.client.as_bytes()].concat();
    (entry.version.to_be_bytes().to_vec(), value)
}

fn decode_request(pg: PgId, version: u64, value: &[u8]) -> engine::Result<(String, u64)> {
    let corrupt = || engine::Error::Corrupt(format!("PG {pg} request id of version {version}"));
    let (tid, client) = value.split_first_chunk::<8>().ok_or_else(corrupt)?;
    let client = String::from_utf8(client.to_vec()).map_err(|_| corrupt())?;
    Ok((client, u64::from_be_bytes(*tid)))
}

/// The dups entries of those of `entries` that carry a request id.
fn requests_of<'a>(entries: impl IntoIterator<Item = &'a WireEntry>) -> Vec<(Vec<u8>, Vec<u8>)> {
    entries
        .into_iter()
        .filter(|entry| !entry.client.is_empty())
        .map(encode_request)
        .collect()
}

/// True when two log entries record the same mutation.
pub fn same_entry(a: &WireEntry, b: &WireEntry) -> bool {
    a.version == b.version && a.epoch == b.epoch && a.client == b.client && a.tid == b.tid
}

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
        *self = fresh;
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
    pub fn record(&mut self, entry: &WireEntry) {
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
    fn remember(&mut self, client: String, tid: u64, version: u64) {
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

/// Creates the PG's collection if this OSD does not have it yet.
pub fn ensure(store: &Store, pg: PgId, compression: Option<&str>) -> engine::Result<()> {
    let name = collection(pg);
    if store.collection(&name).is_ok() {
        return Ok(());
    }
    let compression = match compression {
        Some(algorithm) => algorithm.parse()?,
        None => Compression::Off,
    };
    let settings = CollectionSettings {
        compression,
        ..CollectionSettings::default()
    };
    match store.create_collection(&name, settings) {
        Ok(()) | Err(engine::Error::AlreadyExists(_)) => Ok(()),
        Err(error) => Err(error),
    }
}

/// Reads a PG's log from the store.
pub fn load(store: &Store, pg: PgId) -> engine::Result<PgLog> {
    let mut log = PgLog::default();
    let view = store.head(&collection(pg))?;
    if view.exists(DUPS_OBJECT)? {
        for (key, value) in view.omap_range(DUPS_OBJECT, None, None, 0)? {
            let version = decode_version(pg, &key)?;
            let (client, tid) = decode_request(pg, version, &value)?;
            log.remember(client, tid, version);
        }
    }
    for entry in log_since(store, pg, 0)?.0 {
        log.record(&entry);
    }
    log.accepted_interval = log_number(store, pg, ACCEPTED_XATTR)?;
    log.missing = missing(store, pg)?;
    Ok(log)
}

/// The objects this copy's log is ahead of (see [`PgLog::missing`]).
pub fn missing(store: &Store, pg: PgId) -> engine::Result<BTreeSet<Vec<u8>>> {
    let view = store.head(&collection(pg))?;
    if !view.exists(MISSING_OBJECT)? {
        return Ok(BTreeSet::new());
    }
    Ok(view
        .omap_range(MISSING_OBJECT, None, None, 0)?
        .into_iter()
        .map(|(name, _)| name)
        .collect())
}

/// Records `interval` as the newest whose primary peered this copy: writes and
/// pushes from older intervals stay refused after a restart.
pub fn set_accepted(store: &Store, pg: PgId, interval: u64) -> engine::Result<()> {
    set_log_numbers(store, pg, &[(ACCEPTED_XATTR, interval)])
}

/// The log entry recorded at `version` of the PG's log.
pub fn entry_at(store: &Store, pg: PgId, version: u64) -> engine::Result<Option<WireEntry>> {
    let view = store.head(&collection(pg))?;
    if !view.exists(LOG_OBJECT)? {
        return Ok(None);
    }
    let key = version.to_be_bytes();
    view.omap_get(LOG_OBJECT, &key)?
        .map(|value| decode_entry(pg, &key, &value))
        .transpose()
}

/// True for operations that change the object.
pub fn is_mutation(op: &Op) -> bool {
    !matches!(
        op,
        Op::Read(_) | Op::Stat(_) | Op::GetXattr(_) | Op::OmapGet(_) | Op::OmapRange(_)
    )
}

/// Applies the mutations of a request with its log entry, atomically and durably.
pub fn apply(
    store: &Store,
    pg: PgId,
    entry: &WireEntry,
    ops: &[ObjectOp],
    log_entries: u64,
) -> engine::Result<()> {
    // The same version twice: the same request (a retry after a cancelled call) is
    // already applied; another request means diverging histories.
    let version = entry.version;
    if let Some(held) = entry_at(store, pg, version)? {
        if same_entry(&held, entry) {
            return Ok(());
        }
        return Err(engine::Error::AlreadyExists(format!(
            "PG {pg} log version {version} holds another request"
        )));
    }
    store
        .commit(mutation(pg, entry, ops, log_entries))
        .map(|_| ())
}

/// The engine transaction of a mutation and its log entry; every eighth of
/// `log_entries` versions, it trims the log to the newest `log_entries`.
fn mutation(pg: PgId, entry: &WireEntry, ops: &[ObjectOp], log_entries: u64) -> Transaction {
    let version = entry.version;
    let key = object_key(&entry.name);
    let mut txn = Transaction::new(collection(pg));
    for op in ops.iter().filter_map(|op| op.op.as_ref()) {
        match op {
            Op::WriteFull(data) => txn.write_full(&key, data.clone()),
            Op::Write(write) => txn.write(&key, write.offset, write.data.clone()),
            Op::Append(data) => txn.append(&key, data.clone()),
            Op::Truncate(size) => txn.truncate(&key, *size),
            Op::Delete(_) => txn.remove(&key),
            // Setting an xattr or omap entries creates the object, as in librados.
            Op::SetXattr(pair) => {
                txn.create(&key, false)
                    .set_xattr(&key, pair.key.as_bytes(), &pair.value)
            }
            Op::RmXattr(xattr) => txn.rm_xattr(&key, xattr.as_bytes()),
            Op::OmapSet(set) => txn.create(&key, false).omap_set(
                &key,
                set.entries
                    .iter()
                    .map(|entry| (entry.key.clone(), entry.value.clone()))
                    .collect(),
            ),
            Op::OmapRm(rm) => txn.omap_rm(&key, rm.keys.clone()),
            Op::OmapClear(_) => txn.omap_clear(&key),
            Op::Read(_) | Op::Stat(_) | Op::GetXattr(_) | Op::OmapGet(_) | Op::OmapRange(_) => {
                continue;
            }
        };
    }
    txn.create(LOG_OBJECT, false)
        .omap_set(LOG_OBJECT, vec![encode_entry(entry)]);
    if version > log_entries && version.is_multiple_of((log_entries / 8).max(1)) {
        txn.omap_rm_range(
            LOG_OBJECT,
            &0u64.to_be_bytes(),
            &(version - log_entries).to_be_bytes(),
        );
    }
    let requests = requests_of([entry]);
    if !requests.is_empty() {
        txn.create(DUPS_OBJECT, false)
            .omap_set(DUPS_OBJECT, requests);
        let dups = DUPS_KEEP.max(log_entries);
        if version > dups && version.is_multiple_of(dups / 8) {
            txn.omap_rm_range(
                DUPS_OBJECT,
                &0u64.to_be_bytes(),
                &(version - dups).to_be_bytes(),
            );
        }
    }
    txn
}

/// Erasure-coded pools, phase one of a write: keeps this shard's part of a
/// mutation pending (durably, but not applied), and records which shard position
/// this copy holds.
pub fn prepare(
    store: &Store,
    pg: PgId,
    entry: &WireEntry,
    ops: &[ObjectOp],
    shard: u32,
) -> engine::Result<()> {
    if entry_at(store, pg, entry.version)?.is_some_and(|held| same_entry(&held, entry)) {
        return Ok(());
    }
    let pending = PendingWrite {
        entry: Some(entry.clone()),
        ops: ops.to_vec(),
    };
    let mut txn = Transaction::new(collection(pg));
    txn.write_full(PENDING_OBJECT, pending.encode_to_vec())
        .create(LOG_OBJECT, false)
        .set_xattr(LOG_OBJECT, SHARD_XATTR, &shard.to_le_bytes());
    store.commit(txn).map(|_| ())
}

/// The shard write this copy holds prepared, if any.
pub fn pending(store: &Store, pg: PgId) -> engine::Result<Option<PendingWrite>> {
    let view = store.head(&collection(pg))?;
    if !view.exists(PENDING_OBJECT)? {
        return Ok(None);
    }
    let bytes = view.read(PENDING_OBJECT, 0, u64::MAX)?;
    PendingWrite::decode(bytes.as_slice())
        .map(Some)
        .map_err(|e| engine::Error::Corrupt(format!("PG {pg} pending write: {e}")))
}

/// Erasure-coded pools, phase two: applies the pending write of `entry` with its
/// log entry (`commit`), or drops it. Committing a write already applied succeeds;
/// committing one this copy does not hold fails with `NotFound`.
pub fn resolve(
    store: &Store,
    pg: PgId,
    entry: &WireEntry,
    commit: bool,
    log_entries: u64,
) -> engine::Result<()> {
    let held = pending(store, pg)?.filter(|pending| {
        pending
            .entry
            .as_ref()
            .is_some_and(|held| same_entry(held, entry))
    });
    if commit && entry_at(store, pg, entry.version)?.is_some_and(|held| same_entry(&held, entry)) {
        return Ok(());
    }
    let Some(pending) = held else {
        if commit {
            return Err(engine::Error::NotFound(format!(
                "PG {pg} holds no prepared write at version {}",
                entry.version
            )));
        }
        return Ok(());
    };
    let mut txn = if commit {
        mutation(pg, entry, &pending.ops, log_entries)
    } else {
        Transaction::new(collection(pg))
    };
    txn.remove(PENDING_OBJECT);
    store.commit(txn).map(|_| ())
}

/// The shard position this copy of an erasure-coded PG holds (`None` for a copy
/// of a replicated PG, or one that holds nothing yet).
pub fn shard(store: &Store, pg: PgId) -> engine::Result<Option<u32>> {
    let view = store.head(&collection(pg))?;
    if !view.exists(LOG_OBJECT)? {
        return Ok(None);
    }
    Ok(view
        .xattr(LOG_OBJECT, SHARD_XATTR)?
        .and_then(|bytes| bytes.try_into().ok())
        .map(u32::from_le_bytes))
}

/// The interval in which this copy was last brought level by a completed
/// peering (0: never). Every write of the intervals before it is in this copy.
pub fn activated(store: &Store, pg: PgId) -> engine::Result<u64> {
    log_number(store, pg, ACTIVATED_XATTR)
}

/// Records that a peering in `interval` brought this copy level (kept only if
/// newer than the interval recorded).
pub fn set_activated(store: &Store, pg: PgId, interval: u64) -> engine::Result<()> {
    if activated(store, pg)? >= interval {
        return Ok(());
    }
    set_log_numbers(store, pg, &[(ACTIVATED_XATTR, interval)])
}

/// When the PG was last scrubbed and deep-scrubbed, as its primary recorded on
/// this copy, in seconds since the Unix epoch (0: never).
pub fn scrub_stamps(store: &Store, pg: PgId) -> engine::Result<(u64, u64)> {
    Ok((
        log_number(store, pg, SCRUBBED_XATTR)?,
        log_number(store, pg, DEEP_SCRUBBED_XATTR)?,
    ))
}

/// Records when the PG was last scrubbed and (when not 0) deep-scrubbed.
pub fn set_scrub_stamps(store: &Store, pg: PgId, scrubbed: u64, deep: u64) -> engine::Result<()> {
    let mut stamps = vec![(SCRUBBED_XATTR, scrubbed)];
    if deep > 0 {
        stamps.push((DEEP_SCRUBBED_XATTR, deep));
    }
    set_log_numbers(store, pg, &stamps)
}

/// A number kept as an xattr of the PG's log object (0 when absent).
fn log_number(store: &Store, pg: PgId, name: &str) -> engine::Result<u64> {
    let view = store.head(&collection(pg))?;
    if !view.exists(LOG_OBJECT)? {
        return Ok(0);
    }
    Ok(number_xattr(&view, LOG_OBJECT, name)?.unwrap_or(0))
}

fn set_log_numbers(store: &Store, pg: PgId, numbers: &[(&str, u64)]) -> engine::Result<()> {
    let mut txn = Transaction::new(collection(pg));
    txn.create(LOG_OBJECT, false);
    for (name, value) in numbers {
        txn.set_xattr(LOG_OBJECT, name.as_bytes(), &value.to_le_bytes());
    }
    store.commit(txn).map(|_| ())
}

/// A range of this copy's shard of an object, zero padded to `length`, with the
/// object's size and the version that last changed it.
pub fn read_shard(
    store: &Store,
    pg: PgId,
    name: &[u8],
    offset: u64,
    length: u64,
) -> engine::Result<ReadShardReply> {
    let key = object_key(name);
    let view = store.head(&collection(pg))?;
    if !view.exists(&key)? {
        return Ok(ReadShardReply::default());
    }
    let mut data = view.read(&key, offset, length)?;
    data.resize(length as usize, 0);
    Ok(ReadShardReply {
        exists: true,
        data,
        size: number_xattr(&view, &key, ec::SIZE_XATTR)?.unwrap_or(0),
        version: number_xattr(&view, &key, ec::VERSION_XATTR)?.unwrap_or(0),
    })
}

/// An xattr holding a number (8 bytes, little endian), if the object has it.
fn number_xattr(view: &engine::View<'_>, key: &[u8], name: &str) -> engine::Result<Option<u64>> {
    Ok(view
        .xattr(key, name.as_bytes())?
        .and_then(|bytes| bytes.try_into().ok())
        .map(u64::from_le_bytes))
}

/// An object's size: its engine size, or for a shard of an erasure-coded object,
/// the object's size kept beside the shard.
fn logical_size(view: &engine::View<'_>, key: &[u8], stored: u64) -> engine::Result<u64> {
    Ok(number_xattr(view, key, ec::SIZE_XATTR)?.unwrap_or(stored))
}

/// Runs the reads of a request (after its writes); one result per read.
pub fn read(
    store: &Store,
    pg: PgId,
    name: &[u8],
    ops: &[ObjectOp],
) -> engine::Result<Vec<OpResult>> {
    let key = object_key(name);
    let view = store.head(&collection(pg))?;
    let mut results = Vec::new();
    for op in ops.iter().filter_map(|op| op.op.as_ref()) {
        let result = match op {
            Op::Read(range) => {
                let length = if range.length == 0 {
                    u64::MAX
                } else {
                    range.length
                };
                op_result::Result::Data(view.read(&key, range.offset, length)?)
            }
            Op::Stat(_) => {
                let stat = view.stat(&key)?;
                op_result::Result::Stat(ObjectStat {
                    size: logical_size(&view, &key, stat.size)?,
                    mtime_ns: stat.mtime_ns,
                })
            }
            Op::GetXattr(xattr) => match view.xattr(&key, xattr.as_bytes())? {
                Some(value) => op_result::Result::Xattr(value),
                None => {
                    return Err(engine::Error::NotFound(format!(
                        "xattr {xattr:?} of {}",
                        String::from_utf8_lossy(name)
                    )));
                }
            },
            Op::OmapGet(get) => {
                let mut entries = Vec::new();
                for wanted in &get.keys {
                    if let Some(value) = view.omap_get(&key, wanted)? {
                        entries.push(OmapEntry {
                            key: wanted.clone(),
                            value,
                        });
                    }
                }
                op_result::Result::Omap(OmapEntries { entries })
            }
            Op::OmapRange(range) => op_result::Result::Omap(OmapEntries {
                entries: omap_range(&view, &key, range)?,
            }),
            _ => continue,
        };
        results.push(OpResult {
            result: Some(result),
        });
    }
    Ok(results)
}

/// The omap entries a range read asks for: keys after `start_after` that start
/// with `prefix`, up to the limit (0: no limit).
fn omap_range(
    view: &engine::View<'_>,
    key: &[u8],
    range: &lcpfs_proto::OmapRange,
) -> engine::Result<Vec<OmapEntry>> {
    let limit = range.limit as usize;
    let full = |entries: &Vec<OmapEntry>| limit > 0 && entries.len() >= limit;
    let mut entries = Vec::new();
    // Scanning starts after `start_after`, or at the prefix when that comes later
    // (a key equal to the prefix is the first of them).
    let mut after = range.start_after.clone();
    if range.start_after < range.prefix {
        if let Some(value) = view.omap_get(key, &range.prefix)? {
            entries.push(OmapEntry {
                key: range.prefix.clone(),
                value,
            });
        }
        after = range.prefix.clone();
    }
    while !full(&entries) {
        let page = view.omap_range(key, (!after.is_empty()).then_some(&after[..]), None, 256)?;
        let done = page.len() < 256;
        for (entry_key, value) in page {
            if !entry_key.starts_with(&range.prefix) || full(&entries) {
                return Ok(entries);
            }
            after.clone_from(&entry_key);
            entries.push(OmapEntry {
                key: entry_key,
                value,
            });
        }
        if done {
            break;
        }
    }
    Ok(entries)
}

/// The size of an object, or 0 if it (or this OSD's copy of the PG) does not exist.
pub fn size(store: &Store, pg: PgId, name: &[u8]) -> engine::Result<u64> {
    let view = match store.head(&collection(pg)) {
        Ok(view) => view,
        Err(engine::Error::NotFound(_)) => return Ok(0),
        Err(error) => return Err(error),
    };
    let key = object_key(name);
    match view.stat(&key) {
        Ok(stat) => logical_size(&view, &key, stat.size),
        Err(engine::Error::NotFound(_)) => Ok(0),
        Err(error) => Err(error),
    }
}

/// A PG's objects after `start_after`, sorted by name.
pub fn list(
    store: &Store,
    pg: PgId,
    start_after: &[u8],
    limit: usize,
) -> engine::Result<Vec<ListEntry>> {
    let view = match store.head(&collection(pg)) {
        Ok(view) => view,
        Err(engine::Error::NotFound(_)) => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    let options = ListOptions {
        prefix: OBJECT_PREFIX.to_vec(),
        start_after: (!start_after.is_empty()).then(|| object_key(start_after)),
        limit,
    };
    view.list(&options)?
        .into_iter()
        .map(|entry| {
            Ok(ListEntry {
                size: logical_size(&view, &entry.name_bytes, entry.size)?,
                name: entry.name_bytes[OBJECT_PREFIX.len()..].to_vec(),
                mtime_ns: entry.mtime_ns,
            })
        })
        .collect()
}

/// The PG's log entries after `since`, oldest first, and the oldest version kept (0
/// when the log is empty).
pub fn log_since(store: &Store, pg: PgId, since: u64) -> engine::Result<(Vec<WireEntry>, u64)> {
    let view = store.head(&collection(pg))?;
    if !view.exists(LOG_OBJECT)? {
        return Ok((Vec::new(), 0));
    }
    let oldest = view
        .omap_range(LOG_OBJECT, None, None, 1)?
        .first()
        .map(|(key, _)| decode_version(pg, key))
        .transpose()?
        .unwrap_or(0);
    let entries = view
        .omap_range(LOG_OBJECT, Some(&since.to_be_bytes()), None, 0)?
        .into_iter()
        .map(|(key, value)| decode_entry(pg, &key, &value))
        .collect::<engine::Result<_>>()?;
    Ok((entries, oldest))
}

fn decode_version(pg: PgId, key: &[u8]) -> engine::Result<u64> {
    key.try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| engine::Error::Corrupt(format!("PG {pg} log key of {} bytes", key.len())))
}

/// An object's current state in this OSD's copy of the PG.
pub fn state(store: &Store, pg: PgId, name: &[u8]) -> engine::Result<ObjectState> {
    let key = object_key(name);
    let view = store.head(&collection(pg))?;
    if !view.exists(&key)? {
        return Ok(ObjectState {
            name: name.to_vec(),
            exists: false,
            data: Vec::new(),
            xattrs: Vec::new(),
            omap: Vec::new(),
        });
    }
    let xattrs = view
        .xattrs(&key)?
        .into_iter()
        .map(|(key, value)| KeyValue {
            key: String::from_utf8_lossy(&key).into_owned(),
            value,
        })
        .collect();
    Ok(ObjectState {
        name: name.to_vec(),
        exists: true,
        data: view.read(&key, 0, u64::MAX)?,
        xattrs,
        omap: view
            .omap_range(&key, None, None, 0)?
            .into_iter()
            .map(|(key, value)| OmapEntry { key, value })
            .collect(),
    })
}

/// Every object name of this OSD's copy of the PG.
pub fn names(store: &Store, pg: PgId) -> engine::Result<Vec<Vec<u8>>> {
    Ok(list(store, pg, &[], 0)?
        .into_iter()
        .map(|entry| entry.name)
        .collect())
}

/// This OSD's scrub view of the PG's objects after `start_after` up to and
/// including `last` (empty: no end), at most `limit` (0: all). A copy that cannot
/// be read (a checksum error the engine could not heal) is reported with its error,
/// not as a failure of the whole scrub. The shards of an erasure-coded object hold
/// different bytes: their digests cover what they share (sizes and xattrs, which
/// include the object's version), and a deep scrub reads every byte of them (the
/// engine verifies each block's checksum) without hashing it.
pub fn scrub_map(
    store: &Store,
    pg: PgId,
    start_after: &[u8],
    last: &[u8],
    limit: usize,
    deep: bool,
) -> engine::Result<Vec<ScrubObject>> {
    let sharded = shard(store, pg)?.is_some();
    let mut objects = Vec::new();
    for entry in list(store, pg, start_after, limit)? {
        if !last.is_empty() && entry.name.as_slice() > last {
            break;
        }
        let (digest, error) = match digest(store, pg, &entry.name, deep, !sharded) {
            Ok(digest) => (digest, String::new()),
            Err(engine::Error::DataLoss(what)) => (Vec::new(), format!("read error: {what}")),
            Err(error) => return Err(error),
        };
        objects.push(ScrubObject {
            name: entry.name,
            size: entry.size,
            digest,
            error,
        });
    }
    Ok(objects)
}

/// BLAKE3 over an object's xattrs and, when `deep`, its omap and (with `data`) its
/// data, which a deep scrub reads in any case.
fn digest(store: &Store, pg: PgId, name: &[u8], deep: bool, data: bool) -> engine::Result<Vec<u8>> {
    const CHUNK: u64 = 4 << 20;
    let key = object_key(name);
    let view = store.head(&collection(pg))?;
    let mut hasher = blake3::Hasher::new();
    let field = |hasher: &mut blake3::Hasher, bytes: &[u8]| {
        hasher.update(&(bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    };
    for (key, value) in view.xattrs(&key)? {
        field(&mut hasher, &key);
        field(&mut hasher, &value);
    }
    if deep {
        let size = view.stat(&key)?.size;
        let mut offset = 0;
        while offset < size {
            let bytes = view.read(&key, offset, CHUNK)?;
            if data {
                hasher.update(&bytes);
            }
            offset += CHUNK;
        }
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = view.omap_range(&key, after.as_deref(), None, 1024)?;
            let done = page.len() < 1024;
            for (key, value) in page {
                field(&mut hasher, &key);
                field(&mut hasher, &value);
                after = Some(key);
            }
            if done {
                break;
            }
        }
    }
    Ok(hasher.finalize().as_bytes().to_vec())
}

/// What a copy of a PG receives to catch up, installed in one transaction.
#[derive(Debug, Default)]
pub struct Delivery {
    /// Objects as the sender holds them (installed whole; no longer missing).
    pub objects: Vec<ObjectState>,
    /// Log entries to record after the objects.
    pub entries: Vec<WireEntry>,
    /// Backfill: every object not named here is removed, and the copy takes the
    /// entries as its whole log.
    pub keep: Option<Vec<Vec<u8>>>,
    /// Log entries from this version on are dropped first (they diverged).
    pub rewind_from: Option<u64>,
    /// Erasure-coded pools: the shard position the copy holds.
    pub shard: Option<u32>,
    /// Objects whose newest data the copy does not hold after this delivery: the
    /// entries name their mutations, and their data follows later.
    pub missing: Vec<Vec<u8>>,
}

impl Delivery {
    /// Whole objects only.
    pub fn objects(objects: Vec<ObjectState>) -> Self {
        Delivery {
            objects,
            ..Delivery::default()
        }
    }
}

/// The objects a backfill from a copy names: those the copy holds and those it
/// misses (their newest data is elsewhere), sorted, each once.
pub fn backfill_names<'a>(
    mut held: Vec<Vec<u8>>,
    missing: impl IntoIterator<Item = &'a Vec<u8>>,
) -> Vec<Vec<u8>> {
    held.extend(missing.into_iter().cloned());
    held.sort_unstable();
    held.dedup();
    held
}

/// Installs a delivery in this OSD's copy of the PG, in one transaction.
pub fn install(store: &Store, pg: PgId, delivery: &Delivery) -> engine::Result<()> {
    let Delivery {
        objects,
        entries,
        keep,
        rewind_from,
        shard,
        missing,
    } = delivery;
    let view = store.head(&collection(pg))?;
    let mut txn = Transaction::new(collection(pg));
    if let Some(shard) = shard {
        txn.create(LOG_OBJECT, false)
            .set_xattr(LOG_OBJECT, SHARD_XATTR, &shard.to_le_bytes());
        if keep.is_some() && view.exists(PENDING_OBJECT)? {
            txn.remove(PENDING_OBJECT);
        }
    }
    let had_missing = view.exists(MISSING_OBJECT)?;
    for object in objects {
        let key = object_key(&object.name);
        let present = view.exists(&key)?;
        if had_missing && keep.is_none() {
            txn.omap_rm(MISSING_OBJECT, vec![object.name.clone()]);
        }
        if !object.exists {
            if present {
                txn.remove(&key);
            }
            continue;
        }
        txn.write_full(&key, object.data.clone());
        if present {
            for (old, _) in view.xattrs(&key)? {
                if !object.xattrs.iter().any(|pair| pair.key.as_bytes() == old) {
                    txn.rm_xattr(&key, &old);
                }
            }
        }
        for pair in &object.xattrs {
            txn.set_xattr(&key, pair.key.as_bytes(), &pair.value);
        }
        if present {
            txn.omap_clear(&key);
        }
        if !object.omap.is_empty() {
            txn.omap_set(
                &key,
                object
                    .omap
                    .iter()
                    .map(|entry| (entry.key.clone(), entry.value.clone()))
                    .collect(),
            );
        }
    }
    if let Some(keep) = keep {
        let kept: HashSet<&Vec<u8>> = keep
            .iter()
            .chain(objects.iter().map(|object| &object.name))
            .collect();
        for name in names(store, pg)? {
            if !kept.contains(&name) {
                txn.remove(&object_key(&name));
            }
        }
        // A backfilled copy takes the source's whole log, and nothing of its own:
        // not even the request ids of writes the source may never have had.
        txn.create(LOG_OBJECT, false).omap_clear(LOG_OBJECT);
        txn.create(DUPS_OBJECT, false).omap_clear(DUPS_OBJECT);
        if had_missing {
            txn.omap_clear(MISSING_OBJECT);
        }
    } else if let Some(from) = rewind_from {
        // Diverged writes were never acknowledged: a retry of one must apply it.
        for object in [LOG_OBJECT, DUPS_OBJECT] {
            txn.create(object, false).omap_rm_range(
                object,
                &from.to_be_bytes(),
                &u64::MAX.to_be_bytes(),
            );
        }
    }
    if !missing.is_empty() {
        let marks = missing
            .iter()
            .map(|name| (name.clone(), Vec::new()))
            .collect();
        txn.create(MISSING_OBJECT, false)
            .omap_set(MISSING_OBJECT, marks);
    }
    if !entries.is_empty() {
        let log = entries.iter().map(encode_entry).collect();
        txn.create(LOG_OBJECT, false).omap_set(LOG_OBJECT, log);
        let requests = requests_of(entries);
        if !requests.is_empty() {
            txn.create(DUPS_OBJECT, false)
                .omap_set(DUPS_OBJECT, requests);
        }
    }
    if txn.is_empty() {
        return Ok(());
    }
    store.commit(txn).map(|_| ())
}

/// What a stale copy of a PG needs to become level with an authoritative one.
#[derive(Debug, PartialEq)]
pub enum CatchUp {
    /// Nothing: the stale copy holds the same history.
    Level,
    /// The objects named, then the authoritative log entries from version `from`
    /// on (replacing the stale copy's entries from there, which diverged).
    Entries {
        from: u64,
        names: Vec<Vec<u8>>,
        entries: Vec<WireEntry>,
    },
    /// A full copy: the authoritative log does not reach back far enough.
    Backfill,
}

/// Compares a stale copy's log with the authoritative log (whose oldest kept
/// version is `auth_oldest`, 0 when empty) and says how to bring the stale copy
/// level: from the first version where the stale log holds an entry the
/// authoritative one does not (a write that was never acknowledged), or else
/// from the entry after the stale log's last.
pub fn catch_up(auth: &[WireEntry], auth_oldest: u64, stale: &[WireEntry]) -> CatchUp {
    let by_version: BTreeMap<u64, &WireEntry> =
        auth.iter().map(|entry| (entry.version, entry)).collect();
    let diverged = stale
        .iter()
        .filter(|entry| auth_oldest == 0 || entry.version >= auth_oldest)
        .find(|entry| {
            by_version
                .get(&entry.version)
                .is_none_or(|held| !same_entry(held, entry))
        })
        .map(|entry| entry.version);
    let stale_last = stale.last().map_or(0, |entry| entry.version);
    let from = diverged.unwrap_or(stale_last + 1);
    if diverged.is_none() && by_version.range(from..).next().is_none() {
        return CatchUp::Level;
    }
    if auth_oldest == 0 || from < auth_oldest {
        return CatchUp::Backfill;
    }
    let newer = |entries: &[WireEntry]| -> Vec<WireEntry> {
        entries
            .iter()
            .filter(|entry| entry.version >= from)
            .cloned()
            .collect()
    };
    let entries = newer(auth);
    let mut names: Vec<Vec<u8>> = Vec::new();
    for entry in newer(stale).iter().chain(&entries) {
        if !names.contains(&entry.name) {
            names.push(entry.name.clone());
        }
    }
    CatchUp::Entries {
        from,
        names,
        entries,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(version: u64, epoch: u64, name: &str) -> WireEntry {
        WireEntry {
            version,
            name: name.as_bytes().to_vec(),
            client: "c".into(),
            tid: version * 100 + epoch,
            epoch,
        }
    }

    fn names(list: &[&str]) -> Vec<Vec<u8>> {
        list.iter().map(|name| name.as_bytes().to_vec()).collect()
    }

    fn open(dir: &std::path::Path, create: bool) -> Store {
        use lcpfs_core::engine::{CreateSpec, DiskSource, OpenOptions, VdevKind};
        if !create {
            return Store::open(&dir.join("store"), &OpenOptions::default()).unwrap();
        }
        let disk = DiskSource::NewFile(dir.join("disk"), 64 << 20);
        Store::create(
            &dir.join("store"),
            &CreateSpec {
                vdevs: vec![(VdevKind::Single, vec![disk])],
                cache_device: None,
            },
        )
        .unwrap()
    }

    fn write_full(data: &[u8]) -> Vec<ObjectOp> {
        vec![ObjectOp {
            op: Some(Op::WriteFull(data.to_vec())),
        }]
    }

    #[test]
    fn retried_requests_are_known_past_a_short_log_and_forgotten_when_rewound() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), true);
        let pg = PgId::new(1, 0);
        ensure(&store, pg, None).unwrap();
        for version in 1..=100 {
            let name = format!("o{}", version % 7);
            apply(&store, pg, &entry(version, 3, &name), &write_full(b"x"), 16).unwrap();
        }
        let (log, oldest) = log_since(&store, pg, 0).unwrap();
        assert!(
            oldest > 50 && log.len() < 40,
            "the log keeps about 16 entries"
        );
        let tid = |version: u64| version * 100 + 3;
        let reloaded = load(&store, pg).unwrap();
        for version in [1, 40, 100] {
            assert_eq!(reloaded.applied("c", tid(version)), Some(version));
        }
        // Versions 91 on diverged: their requests were never acknowledged.
        install(
            &store,
            pg,
            &Delivery {
                rewind_from: Some(91),
                ..Delivery::default()
            },
        )
        .unwrap();
        let reloaded = load(&store, pg).unwrap();
        assert_eq!(reloaded.applied("c", tid(90)), Some(90));
        assert_eq!(reloaded.applied("c", tid(91)), None);
        assert_eq!(reloaded.applied("c", tid(100)), None);
        // A backfilled copy knows the requests of the log it takes, and no others.
        install(
            &store,
            pg,
            &Delivery {
                entries: vec![entry(200, 4, "o1")],
                keep: Some(Vec::new()),
                ..Delivery::default()
            },
        )
        .unwrap();
        let reloaded = load(&store, pg).unwrap();
        assert_eq!(reloaded.applied("c", 200 * 100 + 4), Some(200));
        assert_eq!(reloaded.applied("c", tid(40)), None);
    }

    #[test]
    fn a_prepared_write_waits_for_its_commit_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let pg = PgId::new(1, 0);
        let store = open(dir.path(), true);
        ensure(&store, pg, None).unwrap();
        let first = entry(1, 5, "a");
        prepare(&store, pg, &first, &write_full(b"one"), 2).unwrap();
        drop(store);

        // Prepared: durable, but not applied.
        let store = open(dir.path(), false);
        assert_eq!(shard(&store, pg).unwrap(), Some(2));
        let held = pending(&store, pg).unwrap().unwrap();
        assert!(same_entry(held.entry.as_ref().unwrap(), &first));
        assert_eq!(size(&store, pg, b"a").unwrap(), 0);
        assert_eq!(load(&store, pg).unwrap().last, 0);

        resolve(&store, pg, &first, true, LOG_KEEP).unwrap();
        assert_eq!(state(&store, pg, b"a").unwrap().data, b"one");
        assert_eq!(load(&store, pg).unwrap().last, 1);
        assert!(pending(&store, pg).unwrap().is_none());
        // A commit asked again (a retried phase two) finds it done.
        resolve(&store, pg, &first, true, LOG_KEEP).unwrap();

        // A write dropped leaves nothing; committing it then is refused.
        let second = entry(2, 5, "a");
        prepare(&store, pg, &second, &write_full(b"two"), 2).unwrap();
        resolve(&store, pg, &second, false, LOG_KEEP).unwrap();
        assert!(pending(&store, pg).unwrap().is_none());
        assert_eq!(state(&store, pg, b"a").unwrap().data, b"one");
        assert!(matches!(
            resolve(&store, pg, &second, true, LOG_KEEP),
            Err(engine::Error::NotFound(_))
        ));
    }

    #[test]
    fn a_copy_remembers_the_newest_primary_that_peered_it_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let pg = PgId::new(1, 0);
        let store = open(dir.path(), true);
        ensure(&store, pg, None).unwrap();
        set_accepted(&store, pg, 42).unwrap();
        drop(store);
        let store = open(dir.path(), false);
        let log = load(&store, pg).unwrap();
        assert_eq!(log.accepted_interval, 42);
        assert!(log.check_interval(41, pg).is_err());
        assert!(log.check_interval(42, pg).is_ok());
    }

    fn object(name: &str, data: &[u8]) -> ObjectState {
        ObjectState {
            name: name.as_bytes().to_vec(),
            exists: true,
            data: data.to_vec(),
            xattrs: Vec::new(),
            omap: Vec::new(),
        }
    }

    #[test]
    fn a_copy_remembers_the_objects_its_log_is_ahead_of_until_they_come() {
        let dir = tempfile::tempdir().unwrap();
        let pg = PgId::new(1, 0);
        let store = open(dir.path(), true);
        ensure(&store, pg, None).unwrap();
        apply(
            &store,
            pg,
            &entry(1, 5, "a"),
            &write_full(b"old a"),
            LOG_KEEP,
        )
        .unwrap();
        // The log takes entries 2 and 3 (objects a and b); their data comes later.
        let delivery = Delivery {
            entries: vec![entry(2, 5, "a"), entry(3, 5, "b")],
            rewind_from: Some(2),
            missing: names(&["a", "b"]),
            ..Delivery::default()
        };
        install(&store, pg, &delivery).unwrap();
        drop(store);

        let store = open(dir.path(), false);
        let log = load(&store, pg).unwrap();
        assert_eq!(log.last, 3);
        assert_eq!(log.missing, names(&["a", "b"]).into_iter().collect());
        assert!(log.degraded() && log.is_missing(b"a") && !log.is_missing(b"c"));
        install(&store, pg, &Delivery::objects(vec![object("a", b"new a")])).unwrap();
        assert_eq!(
            missing(&store, pg).unwrap(),
            names(&["b"]).into_iter().collect()
        );
        assert_eq!(state(&store, pg, b"a").unwrap().data, b"new a");

        // A backfill brings a whole copy: nothing is missing after it.
        let backfill = Delivery {
            objects: vec![object("a", b"new a"), object("b", b"b")],
            entries: vec![entry(2, 5, "a"), entry(3, 5, "b")],
            keep: Some(names(&["a", "b"])),
            ..Delivery::default()
        };
        install(&store, pg, &backfill).unwrap();
        let log = load(&store, pg).unwrap();
        assert!(
            !log.degraded(),
            "missing after a backfill: {:?}",
            log.missing
        );
        assert_eq!(log.last, 3);
    }

    #[test]
    fn equal_logs_are_level() {
        let log = vec![entry(1, 5, "a"), entry(2, 5, "b")];
        assert_eq!(catch_up(&log, 1, &log), CatchUp::Level);
        assert_eq!(catch_up(&[], 0, &[]), CatchUp::Level);
    }

    #[test]
    fn a_prefix_gets_the_missing_entries() {
        let auth = vec![entry(1, 5, "a"), entry(2, 5, "b"), entry(3, 7, "c")];
        let stale = vec![entry(1, 5, "a")];
        assert_eq!(
            catch_up(&auth, 1, &stale),
            CatchUp::Entries {
                from: 2,
                names: names(&["b", "c"]),
                entries: auth[1..].to_vec(),
            }
        );
    }

    #[test]
    fn a_divergent_tail_is_replaced_and_its_objects_recovered() {
        // The stale copy took writes 3 and 4 in epoch 5 that never reached the
        // others; the authoritative history wrote 3 in epoch 9.
        let auth = vec![entry(1, 5, "a"), entry(2, 5, "b"), entry(3, 9, "c")];
        let stale = vec![
            entry(1, 5, "a"),
            entry(2, 5, "b"),
            entry(3, 5, "x"),
            entry(4, 5, "y"),
        ];
        assert_eq!(
            catch_up(&auth, 1, &stale),
            CatchUp::Entries {
                from: 3,
                names: names(&["x", "y", "c"]),
                entries: vec![entry(3, 9, "c")],
            }
        );
    }

    #[test]
    fn a_longer_stale_log_is_rewound() {
        let auth = vec![entry(1, 5, "a")];
        let stale = vec![entry(1, 5, "a"), entry(2, 5, "b")];
        assert_eq!(
            catch_up(&auth, 1, &stale),
            CatchUp::Entries {
                from: 2,
                names: names(&["b"]),
                entries: Vec::new()
            }
        );
    }

    #[test]
    fn a_log_that_does_not_reach_back_means_backfill() {
        let auth = vec![entry(10, 5, "a"), entry(11, 5, "b")];
        assert_eq!(catch_up(&auth, 10, &[entry(3, 2, "z")]), CatchUp::Backfill);
        assert_eq!(catch_up(&auth, 10, &[]), CatchUp::Backfill);
        // An empty authoritative log and a stale one with writes: drop them all.
        assert_eq!(catch_up(&[], 0, &[entry(1, 2, "z")]), CatchUp::Backfill);
        // A log that starts at version 1 reaches back to an empty copy.
        assert!(matches!(
            catch_up(&[entry(1, 5, "a")], 1, &[]),
            CatchUp::Entries { from: 1, .. }
        ));
    }
}
