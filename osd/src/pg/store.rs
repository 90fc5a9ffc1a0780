//! A PG's copy in the OSD's engine store: one collection per PG, holding the PG's
//! objects (`o/NAME`) and its log (`m/pglog`, one omap entry per mutation), with
//! the markers peering keeps beside them (shard position, accepted and activated
//! intervals, scrub stamps, missing objects, a pending erasure-coded write).
//!
//! A mutation and its log entry are one engine transaction, so after a crash an OSD
//! has both or neither. The log orders the PG's mutations by a version the primary
//! assigns: a sequence number, and the epoch its interval as primary began. It
//! remembers which client request made each one, so a retried request is answered
//! instead of applied twice; the request ids of the newest [`DUPS_KEEP`] versions are
//! also kept apart (`m/dups`), so that a short log does not forget them.

use std::collections::BTreeSet;

use lcpfs_core::pg::PgId;
use lcpfs_engine::{self as engine, CollectionSettings, Compression, Store, Transaction};
use lcpfs_proto::object_op::Op;
use lcpfs_proto::{ObjectOp, PendingWrite};
use prost::Message;
use serde::{Deserialize, Serialize};

use super::entry::Entry;
use super::log::{DUPS_KEEP, PgLog};
use crate::error::OsdError;

/// The object holding a PG's log in its collection.
pub(super) const LOG_OBJECT: &[u8] = b"m/pglog";
/// Xattr of the log object naming the shard position an erasure-coded PG's copy
/// holds (4 bytes, little endian).
pub(super) const SHARD_XATTR: &[u8] = b"shard";
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
pub(super) const PENDING_OBJECT: &[u8] = b"m/pending";
/// The object naming (as omap keys) the objects this copy's log is ahead of: the
/// log holds their newest mutations but this copy does not hold their data yet.
pub(super) const MISSING_OBJECT: &[u8] = b"m/missing";
/// Prefix of client objects in a PG's collection (keeps them apart from the log).
pub(super) const OBJECT_PREFIX: &[u8] = b"o/";
/// Log entries kept per PG by default (older ones are trimmed; a copy whose log
/// ends before the oldest kept entry is backfilled).
pub const LOG_KEEP: u64 = 2048;
/// Xattr holding an object's size on each of its shards (8 bytes, little endian).
pub const SIZE_XATTR: &str = "lcpfs.size";
/// Xattr holding the PG log version that last changed the object, on each shard:
/// shards gathered for one read must agree on it.
pub const VERSION_XATTR: &str = "lcpfs.version";
/// Xattr names starting with this are LCPFS's own; clients cannot set them.
pub const RESERVED_XATTR_PREFIX: &str = "lcpfs.";
/// The object holding, by version, the request ids (client and request number) of
/// recent mutations, kept further back than a short log (Ceph's PG log dups), so
/// that a retried request is recognised after a reload whatever the log's length.
pub(super) const DUPS_OBJECT: &[u8] = b"m/dups";

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

pub(super) fn object_key(name: &[u8]) -> Vec<u8> {
    [OBJECT_PREFIX, name].concat()
}

/// One PG log entry as stored (the version is its omap key).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct StoredEntry {
    name: Vec<u8>,
    client: String,
    tid: u64,
    #[serde(default)]
    epoch: u64,
}

pub(super) fn encode_entry(entry: &Entry) -> (Vec<u8>, Vec<u8>) {
    let value = StoredEntry {
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

fn decode_entry(pg: PgId, key: &[u8], value: &[u8]) -> engine::Result<Entry> {
    let version = decode_version(pg, key)?;
    let entry: StoredEntry = serde_json::from_slice(value)
        .map_err(|e| engine::Error::Corrupt(format!("PG {pg} log entry {version}: {e}")))?;
    Ok(Entry {
        version,
        name: entry.name,
        client: entry.client,
        tid: entry.tid,
        epoch: entry.epoch,
    })
}

/// The dups omap entry of a mutation with a request id: version, then the request
/// number (8 bytes, big endian) and the client's name.
fn encode_request(entry: &Entry) -> (Vec<u8>, Vec<u8>) {
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
pub(super) fn requests_of<'a>(
    entries: impl IntoIterator<Item = &'a Entry>,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    entries
        .into_iter()
        .filter(|entry| !entry.client.is_empty())
        .map(encode_request)
        .collect()
}

/// Adds to `txn` missing marks for the PG's objects `names`.
pub(super) fn mark_missing(txn: &mut Transaction, names: &[Vec<u8>]) {
    let marks = names
        .iter()
        .map(|name| (name.clone(), Vec::new()))
        .collect();
    txn.create(MISSING_OBJECT, false)
        .omap_set(MISSING_OBJECT, marks);
}

/// Creates the PG's collection if this OSD does not have it yet, recorded as
/// split for a pool of `pg_num` PGs (see [`super::split`]).
pub fn ensure(
    store: &Store,
    pg: PgId,
    compression: Option<&str>,
    pg_num: u32,
) -> engine::Result<()> {
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
        Ok(()) => {
            let mut txn = Transaction::new(name);
            super::split::record_split(&mut txn, pg_num);
            store.commit(txn).map(|_| ())
        }
        Err(engine::Error::AlreadyExists(_)) => Ok(()),
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

/// True when the copy of a PG seen through `view` marks object `name` missing:
/// what it holds of it is older than its log says.
pub(super) fn marked_missing(view: &engine::View<'_>, name: &[u8]) -> engine::Result<bool> {
    Ok(view.exists(MISSING_OBJECT)? && view.omap_get(MISSING_OBJECT, name)?.is_some())
}

/// Records `interval` as the newest whose primary peered this copy: writes and
/// pushes from older intervals stay refused after a restart.
pub fn set_accepted(store: &Store, pg: PgId, interval: u64) -> engine::Result<()> {
    set_log_numbers(store, pg, &[(ACCEPTED_XATTR, interval)])
}

/// The log entry recorded at `version` of the PG's log.
pub fn entry_at(store: &Store, pg: PgId, version: u64) -> engine::Result<Option<Entry>> {
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
/// An operation that needs the object (removing it or one of its xattrs) on an
/// object that does not exist fails with [`OsdError::NoObject`].
pub fn apply(
    store: &Store,
    pg: PgId,
    entry: &Entry,
    ops: &[ObjectOp],
    log_entries: u64,
) -> Result<(), OsdError> {
    // The same version twice: the same request (a retry after a cancelled call) is
    // already applied; another request means diverging histories.
    let version = entry.version;
    if let Some(held) = entry_at(store, pg, version)? {
        if held.same(entry) {
            return Ok(());
        }
        return Err(OsdError::AlreadyExists(format!(
            "PG {pg} log version {version} holds another request"
        )));
    }
    // The PG's collection exists (the caller loaded the PG), so what the engine
    // does not find is the object.
    match store.commit(mutation(pg, entry, ops, log_entries)) {
        Ok(_) => Ok(()),
        Err(engine::Error::NotFound(_)) => Err(OsdError::NoObject(entry.name.clone())),
        Err(error) => Err(error.into()),
    }
}

/// The engine transaction of a mutation and its log entry; every eighth of
/// `log_entries` versions, it trims the log to the newest `log_entries`.
fn mutation(pg: PgId, entry: &Entry, ops: &[ObjectOp], log_entries: u64) -> Transaction {
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
    entry: &Entry,
    ops: &[ObjectOp],
    shard: u32,
) -> engine::Result<()> {
    match entry_at(store, pg, entry.version)? {
        Some(held) if held.same(entry) => return Ok(()),
        Some(held) => return Err(diverged(pg, &held, entry)),
        None => {}
    }
    let pending = PendingWrite {
        entry: Some(entry.clone().into()),
        ops: ops.to_vec(),
    };
    let mut txn = Transaction::new(collection(pg));
    txn.write_full(PENDING_OBJECT, pending.encode_to_vec())
        .create(LOG_OBJECT, false)
        .set_xattr(LOG_OBJECT, SHARD_XATTR, &shard.to_le_bytes());
    store.commit(txn).map(|_| ())
}

/// The refusal of a shard write at a version this copy's log holds another
/// write at: applied over it, the write's part of the stripes would mix with
/// the other write's. Only a message from before the last peering can ask it
/// (peering rewinds such entries); the primary peers again.
fn diverged(pg: PgId, held: &Entry, entry: &Entry) -> engine::Error {
    engine::Error::Unavailable(format!(
        "PG {pg} holds another write at version {} (of '{}', epoch {}) than the one sent (of '{}', epoch {}); peer again",
        entry.version,
        String::from_utf8_lossy(&held.name),
        held.epoch,
        String::from_utf8_lossy(&entry.name),
        entry.epoch
    ))
}

/// The shard write this copy holds prepared, if any.
pub fn pending(store: &Store, pg: PgId) -> engine::Result<Option<PendingWrite>> {
    let view = store.head(&collection(pg))?;
    if !view.exists(PENDING_OBJECT)? {
        return Ok(None);
    }
    let bytes = match view.read(PENDING_OBJECT, 0, u64::MAX) {
        Ok(bytes) => bytes,
        // Rotten on a disk that could not heal it: this copy holds the write as
        // one that never reached it does, and peering treats it so (the shard is
        // rebuilt from the others if the write goes ahead). Failing instead would
        // keep the PG from ever peering.
        Err(engine::Error::DataLoss(why)) => {
            tracing::warn!(%pg, "the prepared write is unreadable, so not held: {why}");
            return Ok(None);
        }
        Err(error) => return Err(error),
    };
    PendingWrite::decode(bytes.as_slice())
        .map(Some)
        .map_err(|e| engine::Error::Corrupt(format!("PG {pg} pending write: {e}")))
}

/// Erasure-coded pools, phase two: applies the pending write of `entry` with its
/// log entry (`commit`), or drops it. Committing a write already applied succeeds;
/// committing one this copy does not hold fails with `NotFound`. Returns whether
/// this copy misses the written object afterwards (its shard was unreadable, so
/// the copy took the entry without it): the caller's in-memory log and the
/// primary must learn it.
pub fn resolve(
    store: &Store,
    pg: PgId,
    entry: &Entry,
    commit: bool,
    log_entries: u64,
) -> engine::Result<bool> {
    let held = pending(store, pg)?.filter(|pending| {
        pending
            .entry
            .clone()
            .is_some_and(|held| Entry::from(held).same(entry))
    });
    if commit && let Some(logged) = entry_at(store, pg, entry.version)? {
        if !logged.same(entry) {
            return Err(diverged(pg, &logged, entry));
        }
        return marked_missing(&store.head(&collection(pg))?, &entry.name);
    }
    let Some(pending) = held else {
        if commit {
            return Err(engine::Error::NotFound(format!(
                "PG {pg} holds no prepared write at version {}",
                entry.version
            )));
        }
        return Ok(false);
    };
    let mut txn = if commit {
        mutation(pg, entry, &pending.ops, log_entries)
    } else {
        Transaction::new(collection(pg))
    };
    txn.remove(PENDING_OBJECT);
    match store.commit(txn) {
        Ok(_) => Ok(false),
        // The write changes part of an object that rotted beyond what this
        // OSD's own disks heal: the copy takes the entry without the object,
        // marked missing, and recovery rebuilds it from the other copies.
        // Failing instead would fail the commit again at every peering.
        Err(engine::Error::DataLoss(why)) if commit => {
            tracing::warn!(%pg, object = %String::from_utf8_lossy(&entry.name), "unreadable, so marked missing as the write commits: {why}");
            let mut txn = mutation(pg, entry, &[], log_entries);
            txn.remove(&object_key(&entry.name)).remove(PENDING_OBJECT);
            mark_missing(&mut txn, std::slice::from_ref(&entry.name));
            store.commit(txn).map(|_| true)
        }
        Err(error) => Err(error),
    }
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

/// An xattr holding a number (8 bytes, little endian), if the object has it.
pub(super) fn number_xattr(
    view: &engine::View<'_>,
    key: &[u8],
    name: &str,
) -> engine::Result<Option<u64>> {
    Ok(view
        .xattr(key, name.as_bytes())?
        .and_then(|bytes| bytes.try_into().ok())
        .map(u64::from_le_bytes))
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

/// The PG's log entries after `since`, oldest first, and the oldest version kept (0
/// when the log is empty).
pub fn log_since(store: &Store, pg: PgId, since: u64) -> engine::Result<(Vec<Entry>, u64)> {
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

/// The version of the newest entry of the PG's log that changed object `name`
/// (`None` when the log keeps none): the version its newest data must have.
pub fn newest_logged(store: &Store, pg: PgId, name: &[u8]) -> engine::Result<Option<u64>> {
    Ok(log_since(store, pg, 0)?
        .0
        .into_iter()
        .filter(|entry| entry.name == name)
        .map(|entry| entry.version)
        .max())
}

fn decode_version(pg: PgId, key: &[u8]) -> engine::Result<u64> {
    key.try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| engine::Error::Corrupt(format!("PG {pg} log key of {} bytes", key.len())))
}

#[cfg(test)]
mod tests {
    use lcpfs_proto::ObjectState;

    use super::*;
    use crate::pg::{Delivery, install, pull, size, state};

    fn entry(version: u64, epoch: u64, name: &str) -> Entry {
        Entry {
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
        if create {
            return crate::pg::test_store(dir);
        }
        Store::open(&dir.join("store"), &lcpfs_engine::OpenOptions::default()).unwrap()
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
        ensure(&store, pg, None, 1).unwrap();
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
    fn request_ids_are_kept_for_the_dups_window_and_no_longer() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), true);
        let pg = PgId::new(1, 0);
        ensure(&store, pg, None, 1).unwrap();
        let newest = DUPS_KEEP + DUPS_KEEP / 4;
        for version in 1..=newest {
            let name = format!("o{}", version % 5);
            apply(&store, pg, &entry(version, 3, &name), &write_full(b"x"), 16).unwrap();
        }
        let tid = |version: u64| version * 100 + 3;
        let reloaded = load(&store, pg).unwrap();
        // A retry within the newest DUPS_KEEP versions is answered, not applied
        // again, long after the 16-entry log forgot it...
        for version in [newest - DUPS_KEEP + 1, newest - 1000, newest] {
            assert_eq!(reloaded.applied("c", tid(version)), Some(version));
        }
        // ...and the ids of older ones are dropped, in the store as in memory,
        // so neither grows with the PG's age.
        assert_eq!(reloaded.applied("c", tid(1)), None);
        let kept = store
            .head(&collection(pg))
            .unwrap()
            .omap_range(DUPS_OBJECT, None, None, 0)
            .unwrap()
            .len() as u64;
        assert!(
            (DUPS_KEEP..=DUPS_KEEP + DUPS_KEEP / 8).contains(&kept),
            "{kept} request ids kept in the store"
        );
    }

    #[test]
    fn a_prepared_write_waits_for_its_commit_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let pg = PgId::new(1, 0);
        let store = open(dir.path(), true);
        ensure(&store, pg, None, 1).unwrap();
        let first = entry(1, 5, "a");
        prepare(&store, pg, &first, &write_full(b"one"), 2).unwrap();
        drop(store);

        // Prepared: durable, but not applied.
        let store = open(dir.path(), false);
        assert_eq!(shard(&store, pg).unwrap(), Some(2));
        let held = pending(&store, pg).unwrap().unwrap();
        assert!(Entry::from(held.entry.unwrap()).same(&first));
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
    fn a_shard_write_at_a_version_the_log_holds_another_write_at_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let pg = PgId::new(1, 0);
        let store = open(dir.path(), true);
        ensure(&store, pg, None, 1).unwrap();
        let held = entry(1, 5, "a");
        prepare(&store, pg, &held, &write_full(b"held"), 1).unwrap();
        resolve(&store, pg, &held, true, LOG_KEEP).unwrap();

        // Another write at the same version, as a message from before the last
        // peering would bring: neither held pending nor applied over the first.
        let other = entry(1, 6, "a");
        let append = vec![ObjectOp {
            op: Some(Op::Write(lcpfs_proto::WriteAt {
                offset: 4,
                data: b"+other".to_vec(),
            })),
        }];
        assert!(matches!(
            prepare(&store, pg, &other, &append, 1),
            Err(engine::Error::Unavailable(_))
        ));
        assert!(pending(&store, pg).unwrap().is_none());
        assert!(matches!(
            resolve(&store, pg, &other, true, LOG_KEEP),
            Err(engine::Error::Unavailable(_))
        ));
        assert_eq!(state(&store, pg, b"a").unwrap().data, b"held");
        assert!(
            entry_at(&store, pg, 1)
                .unwrap()
                .is_some_and(|e| e.same(&held))
        );
    }

    #[test]
    fn a_rotten_prepared_write_is_not_held_and_does_not_block_the_pg() {
        let dir = tempfile::tempdir().unwrap();
        let pg = PgId::new(1, 0);
        let store = open(dir.path(), true);
        ensure(&store, pg, None, 1).unwrap();
        let marker = crate::pg::incompressible(4096, 0);
        prepare(&store, pg, &entry(1, 5, "a"), &write_full(&marker), 2).unwrap();
        drop(store);
        crate::pg::rot_on_disk(dir.path(), &marker);

        let store = open(dir.path(), false);
        assert!(pending(&store, pg).unwrap().is_none());
        assert!(load(&store, pg).is_ok());
        // The next write is prepared and committed over it.
        let next = entry(1, 6, "a");
        prepare(&store, pg, &next, &write_full(b"two"), 2).unwrap();
        resolve(&store, pg, &next, true, LOG_KEEP).unwrap();
        assert_eq!(state(&store, pg, b"a").unwrap().data, b"two");
    }

    #[test]
    fn a_write_committed_over_a_rotten_object_leaves_it_missing_not_stuck() {
        let dir = tempfile::tempdir().unwrap();
        let pg = PgId::new(1, 0);
        let store = open(dir.path(), true);
        ensure(&store, pg, None, 1).unwrap();
        let data = crate::pg::incompressible(8192, 3);
        apply(&store, pg, &entry(1, 1, "a"), &write_full(&data), LOG_KEEP).unwrap();
        drop(store);
        crate::pg::rot_on_disk(dir.path(), &data);

        let store = open(dir.path(), false);
        let next = entry(2, 1, "a");
        let partial = vec![ObjectOp {
            op: Some(Op::Write(lcpfs_proto::WriteAt {
                offset: 10,
                data: b"patch".to_vec(),
            })),
        }];
        prepare(&store, pg, &next, &partial, 2).unwrap();
        assert!(
            resolve(&store, pg, &next, true, LOG_KEEP).unwrap(),
            "not reported missing"
        );
        assert!(pending(&store, pg).unwrap().is_none());
        assert!(
            entry_at(&store, pg, 2)
                .unwrap()
                .is_some_and(|e| e.same(&next))
        );
        assert!(!state(&store, pg, b"a").unwrap().exists);
        assert!(missing(&store, pg).unwrap().contains(b"a".as_slice()));
        // Committed once: the same commit again is answered, not applied, and
        // still says the object is missing (the first answer may have been lost).
        assert!(resolve(&store, pg, &next, true, LOG_KEEP).unwrap());
    }

    #[test]
    fn a_copy_remembers_the_newest_primary_that_peered_it_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let pg = PgId::new(1, 0);
        let store = open(dir.path(), true);
        ensure(&store, pg, None, 1).unwrap();
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
        ensure(&store, pg, None, 1).unwrap();
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
        // What this copy holds of a missing object is never handed to another:
        // neither its old data nor the absence of one it never had.
        for name in ["a", "b"] {
            let refused = pull(&store, pg, &names(&[name]));
            assert!(
                matches!(refused, Err(OsdError::Behind(_))),
                "pulled {name}: {refused:?}"
            );
        }
        let absent = pull(&store, pg, &names(&["c"])).unwrap();
        assert!(!absent[0].exists);
        install(&store, pg, &Delivery::objects(vec![object("a", b"new a")])).unwrap();
        assert_eq!(pull(&store, pg, &names(&["a"])).unwrap()[0].data, b"new a");
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
}
