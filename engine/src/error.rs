//! The engine's error type: one enum whose variants a caller can act on.

use std::path::PathBuf;

/// Everything that can go wrong inside the LCPFS engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request itself is wrong (bad name, bad layout, bad range); nothing changed.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The named collection, object, snapshot or disk does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// Something with that name already exists.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// The store has no room for this write; nothing was changed. Delete objects or
    /// snapshots, or add disks.
    #[error("no space left in the store: {0}")]
    NoSpace(String),
    /// A block failed its checksum and could not be rebuilt from parity or a mirror:
    /// the read returns no bytes rather than wrong ones.
    #[error("data loss: {0}")]
    DataLoss(String),
    /// Too many disks are missing or damaged for the layout to serve data.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Another process holds the store open.
    #[error("store {0} is already open in another process (lock held on {1})")]
    Locked(PathBuf, PathBuf),
    /// An operating-system I/O call failed.
    #[error("{context}: {source}")]
    Io {
        /// What the engine was doing.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The metadata database (RocksDB) failed.
    #[error("metadata database: {0}")]
    Db(#[from] rocksdb::Error),
    /// Stored metadata could not be decoded: the metadata database is damaged.
    #[error("corrupt metadata: {0}")]
    Corrupt(String),
    /// A long-running operation (scrub) was asked to stop.
    #[error("stopped on request")]
    Stopped,
}

/// The engine's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with what the engine was doing when it happened.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Adds context to I/O results.
pub(crate) trait IoContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::io(context(), e))
    }
}
