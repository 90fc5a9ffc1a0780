//! The OSD's error: one enum whose variants the code above matches on to decide
//! what to do (retry, bring a replica level, peer again, refuse the client).
//!
//! Errors cross the network as gRPC statuses; the conversion in both directions
//! lives at the edge, in [`crate::server::status`], and nowhere else looks at a
//! status code or message.

use lcpfs_engine as engine;

/// Everything that can go wrong while an OSD serves a request or talks to a peer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OsdError {
    /// The request is malformed or asks for something impossible; nothing changed.
    #[error("{0}")]
    Invalid(String),
    /// The pool, PG, object or xattr does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A client object does not exist in this OSD's copy of its PG (the layer that
    /// knows the pool turns it into a [`OsdError::NotFound`] naming both).
    #[error("object '{}' does not exist", String::from_utf8_lossy(.0))]
    NoObject(Vec<u8>),
    /// The PG's log already holds another mutation at this version.
    #[error("{0}")]
    AlreadyExists(String),
    /// The sender acts on an older map or interval than this OSD (or this OSD is
    /// not the PG's primary at its epoch): it must fetch the newer map and retry.
    /// `epoch` is this OSD's map epoch, sent back with the refusal.
    #[error("{message}")]
    Stale {
        /// What was stale.
        message: String,
        /// The replying OSD's map epoch (0: not known).
        epoch: u64,
    },
    /// A peer did not answer, a PG is peering, down or inactive: retry later.
    #[error("{0}")]
    Unavailable(String),
    /// A replica's copy of the PG lacks log entries before this write: its primary
    /// must bring it level first.
    #[error("{0}")]
    Behind(String),
    /// A replica holds another write at this version: the PG must peer again.
    #[error("{0}")]
    Diverged(String),
    /// The OSD (or one of the PG's) is full: writes are refused, deletes work.
    #[error("{0}")]
    Full(String),
    /// Data could not be read back intact and no copy could repair it.
    #[error("{0}")]
    DataLoss(String),
    /// The caller's certificate may not make this call.
    #[error("{0}")]
    PermissionDenied(String),
    /// A failure inside this OSD (a task panicked, corrupt metadata, an I/O error).
    #[error("{0}")]
    Internal(String),
}

/// The OSD's result type.
pub type Result<T, E = OsdError> = std::result::Result<T, E>;

impl OsdError {
    /// Errors worth retrying: the peer is down, busy, or behind on the map.
    pub fn is_transient(&self) -> bool {
        matches!(self, OsdError::Unavailable(_) | OsdError::Stale { .. })
    }
}

impl From<engine::Error> for OsdError {
    fn from(error: engine::Error) -> Self {
        match error {
            engine::Error::NotFound(what) => OsdError::NotFound(format!("not found: {what}")),
            engine::Error::AlreadyExists(what) => OsdError::AlreadyExists(what),
            engine::Error::Invalid(what) => OsdError::Invalid(what),
            engine::Error::NoSpace(what) => OsdError::Full(format!("OSD full: {what}")),
            engine::Error::DataLoss(what) => OsdError::DataLoss(what),
            other => OsdError::Internal(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_errors_keep_what_a_caller_acts_on() {
        let full = OsdError::from(engine::Error::NoSpace("disk".into()));
        assert!(matches!(full, OsdError::Full(_)));
        let lost = OsdError::from(engine::Error::DataLoss("block 7".into()));
        assert!(matches!(lost, OsdError::DataLoss(_)));
        assert!(!lost.is_transient());
        let stale = OsdError::Stale {
            message: "old".into(),
            epoch: 9,
        };
        assert!(stale.is_transient());
        assert_eq!(stale.to_string(), "old");
        let missing = OsdError::NoObject(b"a/b".to_vec());
        assert_eq!(missing.to_string(), "object 'a/b' does not exist");
    }
}
