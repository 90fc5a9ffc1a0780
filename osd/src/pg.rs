//! A placement group in the OSD's engine store: one collection per PG, holding the
//! PG's objects (`o/NAME`) and its log (`m/pglog`, one omap entry per mutation).
//!
//! A mutation and its log entry are one engine transaction, so after a crash an OSD
//! has both or neither. The log orders the PG's mutations by a sequence number the
//! primary assigns, and remembers which client request made each one, so a retried
//! request is answered instead of applied twice.

use std::collections::{HashMap, HashSet, VecDeque};

use lcpfs_core::engine::{self, CollectionSettings, Compression, ListOptions, Store, Transaction};
use lcpfs_core::pg::PgId;
use lcpfs_proto::object_op::Op;
use lcpfs_proto::{
    KeyValue, ListEntry, LogEntry as WireEntry, ObjectOp, ObjectStat, ObjectState, OpResult,
    op_result,
};
use serde::{Deserialize, Serialize};

/// The object holding a PG's log in its collection.
const LOG_OBJECT: &[u8] = b"m/pglog";
/// Prefix of client objects in a PG's collection (keeps them apart from the log).
const OBJECT_PREFIX: &[u8] = b"o/";
/// Log entries kept per PG (older ones are trimmed).
pub const LOG_KEEP: u64 = 2048;

/// The engine collection of a PG, e.g. `pg.3.1f`.
pub fn collection(pg: PgId) -> String {
    format!("pg.{pg}")
}

fn object_key(name: &[u8]) -> Vec<u8> {
    [OBJECT_PREFIX, name].concat()
}

/// One PG log entry.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct LogEntry {
    name: Vec<u8>,
    client: String,
    tid: u64,
}

/// What an OSD remembers of a PG's log in memory.
#[derive(Debug, Default)]
pub struct PgLog {
    /// Sequence number of the newest mutation applied here.
    pub last: u64,
    requests: HashMap<(String, u64), u64>,
    order: VecDeque<(String, u64)>,
    incomplete: HashSet<(String, u64)>,
    /// The interval (first epoch of an unchanged up set) and up set this PG was last
    /// peered in; `None` until then.
    pub peered: Option<(u64, Vec<u32>)>,
    /// Set while a change to the store is in flight: if the request is cancelled
    /// half-way, the next user reloads the log from the store instead of trusting
    /// this copy.
    pub dirty: bool,
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

    /// Records a mutation applied here.
    pub fn record(&mut self, version: u64, client: &str, tid: u64) {
        self.dirty = false;
        self.last = self.last.max(version);
        if client.is_empty() {
            return;
        }
        let request = (client.to_owned(), tid);
        self.requests.insert(request.clone(), version);
        self.order.push_back(request);
        while self.order.len() as u64 > LOG_KEEP {
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
    for entry in log_since(store, pg, 0)?.0 {
        log.record(entry.version, &entry.client, entry.tid);
    }
    Ok(log)
}

/// The request (client, request number) recorded at `version` of the PG's log.
pub fn entry_at(store: &Store, pg: PgId, version: u64) -> engine::Result<Option<(String, u64)>> {
    let view = store.head(&collection(pg))?;
    if !view.exists(LOG_OBJECT)? {
        return Ok(None);
    }
    match view.omap_get(LOG_OBJECT, &version.to_be_bytes())? {
        Some(value) => {
            let entry: LogEntry = serde_json::from_slice(&value)
                .map_err(|e| engine::Error::Corrupt(format!("PG {pg} log entry {version}: {e}")))?;
            Ok(Some((entry.client, entry.tid)))
        }
        None => Ok(None),
    }
}

/// True for operations that change the object.
pub fn is_mutation(op: &Op) -> bool {
    !matches!(op, Op::Read(_) | Op::Stat(_) | Op::GetXattr(_))
}

/// Applies the mutations of a request with its log entry, atomically and durably.
pub fn apply(
    store: &Store,
    pg: PgId,
    version: u64,
    name: &[u8],
    client: &str,
    tid: u64,
    ops: &[ObjectOp],
) -> engine::Result<()> {
    // The same version twice: the same request (a retry after a cancelled call) is
    // already applied; another request means diverging histories.
    if let Some((holder, holder_tid)) = entry_at(store, pg, version)? {
        if holder == client && holder_tid == tid {
            return Ok(());
        }
        return Err(engine::Error::AlreadyExists(format!(
            "PG {pg} log version {version} holds another request"
        )));
    }
    let key = object_key(name);
    let mut txn = Transaction::new(collection(pg));
    for op in ops.iter().filter_map(|op| op.op.as_ref()) {
        match op {
            Op::WriteFull(data) => txn.write_full(&key, data.clone()),
            Op::Write(write) => txn.write(&key, write.offset, write.data.clone()),
            Op::Append(data) => txn.append(&key, data.clone()),
            Op::Truncate(size) => txn.truncate(&key, *size),
            Op::Delete(_) => txn.remove(&key),
            Op::SetXattr(pair) => txn.set_xattr(&key, pair.key.as_bytes(), &pair.value),
            Op::RmXattr(xattr) => txn.rm_xattr(&key, xattr.as_bytes()),
            Op::Read(_) | Op::Stat(_) | Op::GetXattr(_) => continue,
        };
    }
    let entry = LogEntry {
        name: name.to_vec(),
        client: client.to_owned(),
        tid,
    };
    let entry = serde_json::to_vec(&entry).expect("log entries serialize");
    txn.create(LOG_OBJECT, false)
        .omap_set(LOG_OBJECT, vec![(version.to_be_bytes().to_vec(), entry)]);
    if version > LOG_KEEP && version.is_multiple_of(256) {
        txn.omap_rm_range(
            LOG_OBJECT,
            &0u64.to_be_bytes(),
            &(version - LOG_KEEP).to_be_bytes(),
        );
    }
    store.commit(txn).map(|_| ())
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
                    size: stat.size,
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
            _ => continue,
        };
        results.push(OpResult {
            result: Some(result),
        });
    }
    Ok(results)
}

/// The size of an object, or 0 if it does not exist.
pub fn size(store: &Store, pg: PgId, name: &[u8]) -> engine::Result<u64> {
    let view = store.head(&collection(pg))?;
    match view.stat(&object_key(name)) {
        Ok(stat) => Ok(stat.size),
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
    Ok(view
        .list(&options)?
        .into_iter()
        .map(|entry| ListEntry {
            name: entry.name_bytes[OBJECT_PREFIX.len()..].to_vec(),
            size: entry.size,
            mtime_ns: entry.mtime_ns,
        })
        .collect())
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
    let mut entries = Vec::new();
    for (key, value) in view.omap_range(LOG_OBJECT, Some(&since.to_be_bytes()), None, 0)? {
        let version = decode_version(pg, &key)?;
        let entry: LogEntry = serde_json::from_slice(&value)
            .map_err(|e| engine::Error::Corrupt(format!("PG {pg} log entry {version}: {e}")))?;
        entries.push(WireEntry {
            version,
            name: entry.name,
            client: entry.client,
            tid: entry.tid,
        });
    }
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
    })
}

/// Every object name of this OSD's copy of the PG.
pub fn names(store: &Store, pg: PgId) -> engine::Result<Vec<Vec<u8>>> {
    Ok(list(store, pg, &[], 0)?
        .into_iter()
        .map(|entry| entry.name)
        .collect())
}

/// Installs pushed or pulled objects and log entries in one transaction; with
/// `keep`, removes every other object (backfill).
pub fn install(
    store: &Store,
    pg: PgId,
    objects: &[ObjectState],
    entries: &[WireEntry],
    keep: Option<&[Vec<u8>]>,
) -> engine::Result<()> {
    let view = store.head(&collection(pg))?;
    let mut txn = Transaction::new(collection(pg));
    for object in objects {
        let key = object_key(&object.name);
        let present = view.exists(&key)?;
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
    }
    if let Some(keep) = keep {
        for name in names(store, pg)? {
            if !keep.contains(&name) && !objects.iter().any(|object| object.name == name) {
                txn.remove(&object_key(&name));
            }
        }
    }
    if keep.is_some() {
        // A backfilled copy takes the source's whole log, and nothing of its own.
        txn.create(LOG_OBJECT, false).omap_clear(LOG_OBJECT);
    }
    if !entries.is_empty() {
        let log: Vec<(Vec<u8>, Vec<u8>)> = entries
            .iter()
            .map(|entry| {
                let value = LogEntry {
                    name: entry.name.clone(),
                    client: entry.client.clone(),
                    tid: entry.tid,
                };
                (
                    entry.version.to_be_bytes().to_vec(),
                    serde_json::to_vec(&value).expect("log entries serialize"),
                )
            })
            .collect();
        txn.create(LOG_OBJECT, false).omap_set(LOG_OBJECT, log);
    }
    if txn.is_empty() {
        return Ok(());
    }
    store.commit(txn).map(|_| ())
}
