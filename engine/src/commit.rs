//! Group commit: the one thread that makes transactions durable.
//!
//! Writers prepare their transaction on their own thread (data blocks written to newly
//! allocated rows, metadata changes computed), then hand it here and wait. The committer
//! takes every transaction that is waiting, flushes the disks they wrote, and commits all
//! their metadata, the allocator's changes and the last txg in one synced RocksDB write
//! batch. Many writers thus share one flush and one sync. Only after the batch is durable
//! are the rows the group freed handed back to the allocator. A failed flush suspends
//! the store: no later group commits (see [`Shared::suspend`]).
//!
//! Crash points: with `LCPFS_CRASH_POINT=after-data-flush` (or `after-commit`) in the
//! environment, the process aborts at that step of its first group commit. The crash
//! tests use it to prove that a crash between the data flush and the metadata commit
//! leaves every object as it was before.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};

use rocksdb::{WriteBatch, WriteOptions};

use super::alloc::{self, Run};
use super::error::{Error, Result};
use super::shared::{KEY_LAST_TXG, Shared};
use super::vdev::{self, Disk};

/// One metadata change.
#[derive(Debug, Clone)]
pub enum MetaOp {
    /// Set a key.
    Put(Vec<u8>, Vec<u8>),
    /// Remove a key.
    Delete(Vec<u8>),
    /// Remove every key in `[start, end)`.
    DeleteRange(Vec<u8>, Vec<u8>),
}

/// A transaction ready to commit.
#[derive(Debug, Default)]
pub struct Prepared {
    /// Transaction group.
    pub txg: u64,
    /// Metadata changes, applied in order.
    pub ops: Vec<MetaOp>,
    /// Rows this transaction newly references.
    pub allocated: Vec<Run>,
    /// Rows this transaction stops referencing.
    pub freed: Vec<Run>,
    /// Vdevs holding data written by this transaction.
    pub vdevs_written: BTreeSet<u32>,
}

/// Where a prepared transaction goes, and how its writer hears back.
pub type Submission = (Prepared, SyncSender<Result<u64>>);

/// The largest number of transactions one group takes.
const MAX_GROUP: usize = 512;

/// Runs the committer until every sender is gone.
pub(crate) fn run(shared: Arc<Shared>, queue: Receiver<Submission>) {
    let crash_point = std::env::var("LCPFS_CRASH_POINT").ok();
    while let Ok(first) = queue.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(next) => group.push(next),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        let outcome = match shared.suspended() {
            Some(why) => Err(Error::Unavailable(format!("store suspended: {why}"))),
            None => commit_group(&shared, &group, crash_point.as_deref()),
        };
        match outcome {
            Ok(()) => {
                let freed: Vec<Run> = group
                    .iter()
                    .flat_map(|(p, _)| p.freed.iter().copied())
                    .collect();
                shared.alloc.freed_after_commit(&freed);
                for (prepared, reply) in group {
                    let _ = reply.send(Ok(prepared.txg));
                }
            }
            Err(e) => {
                tracing::error!("group commit failed: {e}");
                let message = e.to_string();
                let no_space = matches!(e, Error::NoSpace(_)) || message.contains("No space");
                if let Ok(extents) = shared.durable_extents() {
                    shared.alloc.reset_durable(extents);
                }
                for (prepared, reply) in group {
                    shared.alloc.release(&prepared.allocated);
                    let error = if no_space {
                        Error::NoSpace(format!("metadata commit failed: {message}"))
                    } else {
                        Error::Unavailable(format!("commit failed: {message}"))
                    };
                    let _ = reply.send(Err(error));
                }
            }
        }
    }
}

fn commit_group(shared: &Shared, group: &[Submission], crash_point: Option<&str>) -> Result<()> {
    let written: BTreeSet<u32> = group
        .iter()
        .flat_map(|(p, _)| p.vdevs_written.iter().copied())
        .collect();
    let disks: Vec<&Disk> = written
        .into_iter()
        .flat_map(|vdev| shared.vdevs[vdev as usize].disks.iter().map(Arc::as_ref))
        .collect();
    if let Err(error) = vdev::sync_disks(&disks) {
        shared.suspend(format!("a disk flush failed: {error}"));
        return Err(error);
    }
    if crash_point == Some("after-data-flush") {
        std::process::abort();
    }
    let allocated: Vec<Run> = group
        .iter()
        .flat_map(|(p, _)| p.allocated.iter().copied())
        .collect();
    let freed: Vec<Run> = group
        .iter()
        .flat_map(|(p, _)| p.freed.iter().copied())
        .collect();
    let extent_changes = shared.alloc.durable_changes(&allocated, &freed)?;
    let mut batch = WriteBatch::default();
    for (prepared, _) in group {
        for op in &prepared.ops {
            match op {
                MetaOp::Put(k, v) => batch.put(k, v),
                MetaOp::Delete(k) => batch.delete(k),
                MetaOp::DeleteRange(a, b) => batch.delete_range(a, b),
            }
        }
    }
    for ((vdev, start), len) in extent_changes {
        let key = alloc::extent_key(vdev, start);
        match len {
            Some(len) => batch.put(key, len.to_le_bytes()),
            None => batch.delete(key),
        }
    }
    let last_txg = group.iter().map(|(p, _)| p.txg).max().unwrap_or(0);
    batch.put(KEY_LAST_TXG, last_txg.max(shared.last_txg()).to_le_bytes());
    shared.put_counters(&mut batch);
    let mut options = WriteOptions::default();
    options.set_sync(true);
    shared.db.write_opt(batch, &options)?;
    shared.note_txg(last_txg);
    if crash_point == Some("after-commit") {
        std::process::abort();
    }
    Ok(())
}
