//! What an OSD is configured with: limits, timeouts, intervals and throttles,
//! with defaults that match Ceph's where Ceph has the same knob.

use std::time::Duration;

use lcpfs_proto::tls::Tls;

use crate::pg;

/// Limits of an OSD.
#[derive(Clone, Debug)]
pub struct OsdConfig {
    /// Largest object, in bytes.
    pub max_object_size: u64,
    /// How long a mutation may wait for its replicas.
    pub replicate_deadline: Duration,
    /// How long a write waits for a PG with fewer than `min_size` OSDs up.
    pub inactive_wait: Duration,
    /// How often each PG is scrubbed (object lists, sizes, xattrs).
    pub scrub_interval: Duration,
    /// How often each PG is deep-scrubbed (every byte read and compared).
    pub deep_scrub_interval: Duration,
    /// Whether scheduled scrubs repair the bad copies they find.
    pub auto_repair: bool,
    /// Pause between objects recovered or backfilled, to leave the disks and the
    /// network to client I/O (like Ceph's `osd_recovery_sleep`).
    pub recovery_sleep: Duration,
    /// PGs this OSD, as their primary, brings level at once (like Ceph's
    /// `osd_max_backfills`); others wait their turn.
    pub max_recovering_pgs: usize,
    /// Log entries kept per PG (like Ceph's `osd_max_pg_log_entries`): a copy
    /// that missed more writes than this is backfilled.
    pub pg_log_entries: u64,
    /// Where the PG intervals this OSD saw are saved, so that a restarted OSD
    /// still knows them (`None`: kept in memory only).
    pub intervals_file: Option<std::path::PathBuf>,
    /// How long a read lease lasts (see [`crate::lease`]): a primary cut off from
    /// the cluster stops serving reads this long after its last renewal.
    pub read_lease: Duration,
    /// Mutual TLS for connections to peer OSDs (`None`: plain connections).
    pub tls: Option<Tls>,
}

impl Default for OsdConfig {
    fn default() -> Self {
        OsdConfig {
            max_object_size: 128 << 20,
            replicate_deadline: Duration::from_secs(30),
            inactive_wait: Duration::from_secs(10),
            scrub_interval: Duration::from_secs(24 * 3600),
            deep_scrub_interval: Duration::from_secs(7 * 24 * 3600),
            auto_repair: false,
            recovery_sleep: Duration::ZERO,
            max_recovering_pgs: 2,
            pg_log_entries: pg::LOG_KEEP,
            intervals_file: None,
            read_lease: Duration::from_secs(16),
            tls: None,
        }
    }
}
