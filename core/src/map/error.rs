//! [`MapError`]: why the map refused a change, worded so the operator knows what to
//! do next. A refused change leaves the map and its epoch as they were.

use super::daemon::MAX_OSD_ID;
use super::hierarchy::MAX_CRUSH_WEIGHT;
use super::pool::PoolValidationError;

/// Why a map operation was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MapError {
    /// The pool settings are invalid.
    #[error("invalid pool: {0}")]
    InvalidPool(#[from] PoolValidationError),
    /// Size and min_size are replicated-pool settings.
    #[error("pool {0} is erasure-coded: its size is k+m, fixed when the pool is created")]
    ErasurePoolSize(u32),
    /// No pool with this id.
    #[error("pool {0} does not exist: list pools to find its id")]
    PoolNotFound(u32),
    /// pg_num may only grow.
    #[error(
        "pg_num of pool {pool} is {current}; lowering it to {requested} (merging PGs) is not supported"
    )]
    PgNumDecrease {
        /// Pool id.
        pool: u32,
        /// Current pg_num.
        current: u32,
        /// Requested pg_num.
        requested: u32,
    },
    /// All pool ids are used.
    #[error("no pool id left: the cluster has allocated every pool id")]
    PoolIdsExhausted,
    /// An OSD with this id exists.
    #[error("osd.{0} already exists: use a new id, or remove the old OSD first")]
    OsdExists(u32),
    /// No OSD with this id.
    #[error("osd.{0} does not exist")]
    OsdNotFound(u32),
    /// OSD id out of range.
    #[error("osd id {0} is too large: OSD ids must be at most {MAX_OSD_ID}")]
    OsdIdTooLarge(u32),
    /// The OSD is still up.
    #[error("osd.{0} is up: stop it and mark it down first")]
    OsdIsUp(u32),
    /// Bad CRUSH weight.
    #[error(
        "osd.{osd}: CRUSH weight {weight} is invalid: use a finite number between 0 and {MAX_CRUSH_WEIGHT} (its capacity in TiB)"
    )]
    InvalidWeight {
        /// OSD id.
        osd: u32,
        /// Rejected weight.
        weight: f64,
    },
    /// Bad reweight.
    #[error("osd.{osd}: reweight {reweight} is invalid: use a number between 0 and 1")]
    InvalidReweight {
        /// OSD id.
        osd: u32,
        /// Rejected reweight.
        reweight: f64,
    },
    /// Empty host name.
    #[error("osd.{0}: host name is empty: every OSD must say which host it is on")]
    EmptyHost(u32),
    /// Empty zone name (use `None` for no zone).
    #[error("osd.{0}: zone name is empty: leave the zone unset for the default zone")]
    EmptyZone(u32),
    /// Empty device class.
    #[error("osd.{0}: device class is empty: use e.g. hdd, ssd or nvme")]
    EmptyDeviceClass(u32),
    /// The host already lives in another zone.
    #[error(
        "osd.{osd}: host {host:?} is in zone {zone:?}, not {requested:?}: a host belongs to one zone; fix the OSD's zone"
    )]
    HostInOtherZone {
        /// OSD id.
        osd: u32,
        /// Host name.
        host: String,
        /// The host's zone.
        zone: String,
        /// The zone the OSD asked for.
        requested: String,
    },
    /// A monitor with this name exists.
    #[error("monitor {0:?} already exists")]
    MonitorExists(String),
    /// No monitor with this name.
    #[error("monitor {0:?} does not exist")]
    MonitorNotFound(String),
    /// Every CRUSH bucket id is used.
    #[error("no CRUSH bucket id left")]
    BucketIdsExhausted,
    /// The map names a bucket that has no id (the map was not built by these methods).
    #[error(
        "CRUSH bucket {0:?} has no id: the map is inconsistent; fetch a fresh map from the monitors"
    )]
    MissingBucketId(String),
    /// An incremental or diff between maps of different clusters.
    #[error("map is for cluster {ours}, incremental is for {theirs}: it came from another cluster")]
    FsidMismatch {
        /// Our fsid.
        ours: String,
        /// The other fsid.
        theirs: String,
    },
    /// An incremental that does not start at our epoch.
    #[error(
        "incremental goes from epoch {from} to {to} but the map is at epoch {current}: fetch the incrementals in between (or a full map)"
    )]
    EpochMismatch {
        /// Our epoch.
        current: u64,
        /// The incremental's base epoch.
        from: u64,
        /// The incremental's target epoch.
        to: u64,
    },
    /// `diff` was asked to go backwards.
    #[error(
        "cannot diff epoch {newer} against the newer epoch {older}: call diff on the newer map"
    )]
    DiffBackwards {
        /// Epoch of the map `diff` was called on.
        newer: u64,
        /// Epoch of the argument.
        older: u64,
    },
}
