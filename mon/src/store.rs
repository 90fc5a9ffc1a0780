//! Durable Raft storage for the monitors: the log and the state machine, in one
//! RocksDB database under the monitor's data directory.
//!
//! Column families:
//! - `log`: log entries by index (big-endian keys, so RocksDB order is log order);
//! - `raft`: the vote, the committed log id and the last purged log id;
//! - `state`: the applied state (with its last applied log id and membership, written
//!   in the same batch, so a crash never separates them) and the latest snapshot;
//! - `history`: the map incrementals of recent epochs, for subscribers that are behind.
//!
//! Every write is synced before it is acknowledged: a monitor that said "stored" has
//! it on disk.

use std::fmt::Debug;
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use lcpfs_core::map::{ClusterMap, MapIncremental};
use lcpfs_core::monitor::CommandOutcome;
use openraft::storage::{LogFlushed, RaftLogStorage, RaftStateMachine};
use openraft::{
    Entry, EntryPayload, LogId, LogState, RaftLogReader, RaftSnapshotBuilder, Snapshot,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership, Vote,
};
use rocksdb::{ColumnFamilyDescriptor, DB, Options, WriteBatch, WriteOptions};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::state::MonState;
use crate::types::{MonNode, TypeConfig};

type StorageResult<T> = Result<T, StorageError<u64>>;

/// How many epochs of incrementals are kept for subscribers that are behind; one
/// further behind gets the full map.
pub const HISTORY_EPOCHS: u64 = 2048;

const CF_LOG: &str = "log";
const CF_RAFT: &str = "raft";
const CF_STATE: &str = "state";
const CF_HISTORY: &str = "history";

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_PURGED: &[u8] = b"purged";
const KEY_APPLIED: &[u8] = b"applied";
const KEY_SNAPSHOT: &[u8] = b"snapshot";

/// Opens (or creates) the monitor database at `path`.
pub fn open_db(path: &Path) -> anyhow::Result<Arc<DB>> {
    let mut options = Options::default();
    options.create_if_missing(true);
    options.create_missing_column_families(true);
    let families = [CF_LOG, CF_RAFT, CF_STATE, CF_HISTORY]
        .map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
    let db = DB::open_cf_descriptors(&options, path, families).map_err(|error| {
        anyhow::anyhow!(
            "cannot open the monitor database {}: {error}",
            path.display()
        )
    })?;
    Ok(Arc::new(db))
}

fn synced() -> WriteOptions {
    let mut options = WriteOptions::default();
    options.set_sync(true);
    options
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("monitor state serializes to JSON")
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, std::io::Error> {
    serde_json::from_slice(bytes).map_err(std::io::Error::other)
}

fn get<T: DeserializeOwned>(db: &DB, cf: &str, key: &[u8]) -> Result<Option<T>, std::io::Error> {
    let cf = db
        .cf_handle(cf)
        .expect("column family opened with the database");
    match db.get_cf(cf, key).map_err(std::io::Error::other)? {
        Some(bytes) => decode(&bytes).map(Some),
        None => Ok(None),
    }
}

/// The Raft log in RocksDB.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
}

impl LogStore {
    /// The log store of an opened monitor database.
    pub fn new(db: Arc<DB>) -> Self {
        LogStore { db }
    }

    fn log(&self) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(CF_LOG).expect("column family opened")
    }

    fn raft(&self) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(CF_RAFT).expect("column family opened")
    }

    fn put_raft<T: Serialize>(&self, key: &[u8], value: &T) -> Result<(), std::io::Error> {
        self.db
            .put_cf_opt(self.raft(), key, encode(value), &synced())
            .map_err(std::io::Error::other)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let start = match range.start_bound() {
            Bound::Included(&index) => index,
            Bound::Excluded(&index) => index + 1,
            Bound::Unbounded => 0,
        };
        let mut entries = Vec::new();
        let iter = self.db.iterator_cf(
            self.log(),
            rocksdb::IteratorMode::From(&start.to_be_bytes(), rocksdb::Direction::Forward),
        );
        for item in iter {
            let (key, value) = item.map_err(|e| StorageIOError::read_logs(&e))?;
            let index = u64::from_be_bytes(key.as_ref().try_into().unwrap_or([0xff; 8]));
            if !range.contains(&index) {
                break;
            }
            entries.push(decode(&value).map_err(|e| StorageIOError::read_logs(&e))?);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let last_purged_log_id: Option<LogId<u64>> =
            get(&self.db, CF_RAFT, KEY_PURGED).map_err(|e| StorageIOError::read_logs(&e))?;
        let last = self
            .db
            .iterator_cf(self.log(), rocksdb::IteratorMode::End)
            .next()
            .transpose()
            .map_err(|e| StorageIOError::read_logs(&e))?;
        let last_log_id = match last {
            Some((_, value)) => {
                let entry: Entry<TypeConfig> =
                    decode(&value).map_err(|e| StorageIOError::read_logs(&e))?;
                Some(entry.log_id)
            }
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> StorageResult<()> {
        self.put_raft(KEY_VOTE, vote)
            .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<u64>>> {
        get(&self.db, CF_RAFT, KEY_VOTE).map_err(|e| StorageIOError::read_vote(&e).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> StorageResult<()> {
        self.put_raft(KEY_COMMITTED, &committed)
            .map_err(|e| StorageIOError::write(&e).into())
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<u64>>> {
        let committed: Option<Option<LogId<u64>>> =
            get(&self.db, CF_RAFT, KEY_COMMITTED).map_err(|e| StorageIOError::read(&e))?;
        Ok(committed.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut batch = WriteBatch::default();
        for entry in entries {
            batch.put_cf(self.log(), entry.log_id.index.to_be_bytes(), encode(&entry));
        }
        let result = self
            .db
            .write_opt(batch, &synced())
            .map_err(std::io::Error::other);
        let reply = result
            .as_ref()
            .map(|_| ())
            .map_err(|e| std::io::Error::other(e.to_string()));
        callback.log_io_completed(reply);
        result.map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> StorageResult<()> {
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(
            self.log(),
            log_id.index.to_be_bytes(),
            u64::MAX.to_be_bytes(),
        );
        batch.delete_cf(self.log(), u64::MAX.to_be_bytes());
        self.db
            .write_opt(batch, &synced())
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> StorageResult<()> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.raft(), KEY_PURGED, encode(&log_id));
        batch.delete_range_cf(
            self.log(),
            0u64.to_be_bytes(),
            (log_id.index + 1).to_be_bytes(),
        );
        self.db
            .write_opt(batch, &synced())
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }
}

/// The applied state as persisted and as shipped in snapshots.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct AppliedState {
    state: MonState,
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, MonNode>,
}

/// What a snapshot carries: the applied state, and the map incrementals of the epochs
/// before it, so that a monitor installing it can still bring subscribers that are a
/// little behind up to date one epoch at a time.
#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    applied: AppliedState,
    history: Vec<MapIncremental>,
}

/// Incrementals a snapshot carries at most.
const SNAPSHOT_HISTORY: u64 = 512;

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<u64, MonNode>,
    data: Vec<u8>,
}

/// The state machine's data, shared between Raft (which applies entries) and the
/// monitor's services (which read the map and the auth table).
pub struct StateShared {
    db: Arc<DB>,
    applied: RwLock<AppliedState>,
    epoch: watch::Sender<u64>,
    snapshot_lock: Mutex<()>,
}

impl StateShared {
    /// A copy of the current map.
    pub fn map(&self) -> ClusterMap {
        self.applied.read().expect("state lock").state.map.clone()
    }

    /// Reads the current state.
    pub fn with_state<T>(&self, read: impl FnOnce(&MonState) -> T) -> T {
        read(&self.applied.read().expect("state lock").state)
    }

    /// The current map once its epoch reaches `epoch`, waiting up to `wait` for
    /// this monitor to apply it; the map it has after `wait` otherwise.
    pub async fn map_at_least(&self, epoch: u64, wait: Duration) -> ClusterMap {
        let mut epochs = self.watch_epoch();
        let _ = tokio::time::timeout(wait, epochs.wait_for(|&current| current >= epoch)).await;
        self.map()
    }

    /// Watches the map epoch: changes each time an entry changed the map.
    pub fn watch_epoch(&self) -> watch::Receiver<u64> {
        self.epoch.subscribe()
    }

    /// The incrementals from `from_epoch` to the current epoch, one per epoch, or
    /// `None` when some of them are no longer kept.
    pub fn history_since(&self, from_epoch: u64) -> Option<Vec<MapIncremental>> {
        let current = self.map().epoch;
        (from_epoch + 1..=current)
            .map(|epoch| self.incremental(epoch))
            .collect()
    }

    fn incremental(&self, to_epoch: u64) -> Option<MapIncremental> {
        let cf = self.db.cf_handle(CF_HISTORY).expect("column family opened");
        let bytes = self.db.get_cf(cf, to_epoch.to_be_bytes()).ok()??;
        decode(&bytes).ok()
    }

    /// The kept incrementals ending at `epoch`, oldest first, at most `most`.
    fn recent_history(&self, epoch: u64, most: u64) -> Vec<MapIncremental> {
        let mut history: Vec<MapIncremental> = (epoch.saturating_sub(most) + 1..=epoch)
            .rev()
            .map_while(|epoch| self.incremental(epoch))
            .collect();
        history.reverse();
        history
    }

    /// Stores a snapshot unless the stored one is newer (a snapshot built from an
    /// older state may finish after a newer one was installed).
    fn save_snapshot(
        &self,
        batch: &mut WriteBatch,
        meta: &SnapshotMeta<u64, MonNode>,
        data: Vec<u8>,
    ) -> Result<(), std::io::Error> {
        let stored: Option<StoredSnapshot> = get(&self.db, CF_STATE, KEY_SNAPSHOT)?;
        if stored.is_some_and(|stored| stored.meta.last_log_id > meta.last_log_id) {
            return Ok(());
        }
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        let state_cf = self.db.cf_handle(CF_STATE).expect("column family opened");
        batch.put_cf(state_cf, KEY_SNAPSHOT, encode(&stored));
        Ok(())
    }

    fn persist(
        &self,
        mut batch: WriteBatch,
        applied: &AppliedState,
        incrementals: &[MapIncremental],
    ) -> Result<(), rocksdb::Error> {
        let state_cf = self.db.cf_handle(CF_STATE).expect("column family opened");
        let history_cf = self.db.cf_handle(CF_HISTORY).expect("column family opened");
        batch.put_cf(state_cf, KEY_APPLIED, encode(applied));
        for incremental in incrementals {
            batch.put_cf(
                history_cf,
                incremental.to_epoch.to_be_bytes(),
                encode(incremental),
            );
        }
        let epoch = applied.state.map.epoch;
        if epoch > HISTORY_EPOCHS {
            batch.delete_range_cf(
                history_cf,
                0u64.to_be_bytes(),
                (epoch - HISTORY_EPOCHS).to_be_bytes(),
            );
        }
        self.db.write_opt(batch, &synced())
    }
}

/// The monitors' state machine: [`MonState`] kept in memory and in RocksDB.
#[derive(Clone)]
pub struct StateMachine {
    shared: Arc<StateShared>,
}

impl StateMachine {
    /// Loads the applied state of an opened monitor database.
    pub fn open(db: Arc<DB>) -> anyhow::Result<Self> {
        let applied: AppliedState = get(&db, CF_STATE, KEY_APPLIED)?.unwrap_or_default();
        let (epoch, _) = watch::channel(applied.state.map.epoch);
        Ok(StateMachine {
            shared: Arc::new(StateShared {
                db,
                applied: RwLock::new(applied),
                epoch,
                snapshot_lock: Mutex::new(()),
            }),
        })
    }

    /// The state, for readers.
    pub fn shared(&self) -> Arc<StateShared> {
        self.shared.clone()
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let _one_at_a_time = self.shared.snapshot_lock.lock().expect("snapshot lock");
        let applied = self.shared.applied.read().expect("state lock").clone();
        let history = self
            .shared
            .recent_history(applied.state.map.epoch, SNAPSHOT_HISTORY);
        let body = SnapshotBody {
            applied: applied.clone(),
            history,
        };
        let data = encode(&body);
        let snapshot_id = match applied.last_applied {
            Some(log_id) => format!(
                "{}-{}-{}",
                log_id.leader_id,
                log_id.index,
                crate::types::now_ms()
            ),
            None => format!("empty-{}", crate::types::now_ms()),
        };
        let meta = SnapshotMeta {
            last_log_id: applied.last_applied,
            last_membership: applied.membership.clone(),
            snapshot_id,
        };
        let mut batch = WriteBatch::default();
        self.shared
            .save_snapshot(&mut batch, &meta, data.clone())
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        self.shared
            .db
            .write_opt(batch, &synced())
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(Option<LogId<u64>>, StoredMembership<u64, MonNode>)> {
        let applied = self.shared.applied.read().expect("state lock");
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<CommandOutcome>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut next = self.shared.applied.read().expect("state lock").clone();
        let mut outcomes = Vec::new();
        let mut incrementals = Vec::new();
        for entry in entries {
            next.last_applied = Some(entry.log_id);
            let outcome = match entry.payload {
                EntryPayload::Normal(proposal) => {
                    let applied = next.state.apply(&proposal);
                    incrementals.extend(applied.incrementals);
                    applied.outcome
                }
                EntryPayload::Membership(membership) => {
                    next.membership = StoredMembership::new(Some(entry.log_id), membership);
                    noop(&next.state)
                }
                EntryPayload::Blank => noop(&next.state),
            };
            outcomes.push(outcome);
        }
        self.shared
            .persist(WriteBatch::default(), &next, &incrementals)
            .map_err(|e| StorageIOError::write_state_machine(&e))?;
        let epoch = next.state.map.epoch;
        *self.shared.applied.write().expect("state lock") = next;
        self.shared.epoch.send_replace(epoch);
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, MonNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let data = snapshot.into_inner();
        let SnapshotBody {
            mut applied,
            history,
        } = decode(&data).map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        applied.last_applied = meta.last_log_id;
        applied.membership = meta.last_membership.clone();
        let _one_at_a_time = self.shared.snapshot_lock.lock().expect("snapshot lock");
        // One batch: the state, the snapshot and its history. Incrementals kept from
        // before stay: they were committed, so they are part of the same history.
        let mut batch = WriteBatch::default();
        self.shared
            .save_snapshot(&mut batch, meta, data)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        self.shared
            .persist(batch, &applied, &history)
            .map_err(|e| StorageIOError::write_state_machine(&e))?;
        let epoch = applied.state.map.epoch;
        *self.shared.applied.write().expect("state lock") = applied;
        self.shared.epoch.send_replace(epoch);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let stored: Option<StoredSnapshot> = get(&self.shared.db, CF_STATE, KEY_SNAPSHOT)
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(stored.map(|stored| Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        }))
    }
}

fn noop(state: &MonState) -> CommandOutcome {
    CommandOutcome::Done {
        epoch: state.map.epoch,
        message: String::new(),
        value: None,
    }
}
