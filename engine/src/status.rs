//! The store's status, like `zpool status` and `zpool list`: layout, the health and
//! error counters of every disk, space, and the caches' counters.

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use serde::Serialize;

use super::arc::ArcStats;
use super::l2arc::L2Stats;
use super::store::Store;
use super::vdev::{self, VdevKind};

/// Status of one disk.
#[derive(Serialize, Clone, Debug)]
pub struct DiskStatus {
    /// Path.
    pub path: PathBuf,
    /// Label id.
    pub guid: String,
    /// ONLINE or FAULTED.
    pub state: vdev::DiskState,
    /// Why it is faulted.
    pub problem: Option<String>,
    /// Failed reads.
    pub read_errors: u64,
    /// Failed writes.
    pub write_errors: u64,
    /// Checksum mismatches found.
    pub checksum_errors: u64,
}

/// Status of one top-level vdev.
#[derive(Serialize, Clone, Debug)]
pub struct VdevStatus {
    /// Position.
    pub index: u32,
    /// Layout.
    pub kind: VdevKind,
    /// ONLINE, DEGRADED or FAULTED.
    pub state: &'static str,
    /// Usable bytes.
    pub size_bytes: u64,
    /// Free usable bytes.
    pub free_bytes: u64,
    /// Disks.
    pub disks: Vec<DiskStatus>,
}

/// Status of the whole store, like `zpool status` and `zpool list`.
#[derive(Serialize, Clone, Debug)]
pub struct PoolStatus {
    /// Pool id.
    pub pool_id: String,
    /// ONLINE, DEGRADED or FAULTED.
    pub state: &'static str,
    /// Usable bytes.
    pub size_bytes: u64,
    /// Free usable bytes.
    pub free_bytes: u64,
    /// Number of collections.
    pub collections: usize,
    /// Last committed txg.
    pub txg: u64,
    /// Block cache counters.
    pub cache: ArcStats,
    /// Cache device counters.
    pub cache_device: Option<L2Stats>,
    /// Vdevs.
    pub vdevs: Vec<VdevStatus>,
}

impl Store {
    /// Pool layout, disk health and error counters, space.
    pub fn status(&self) -> PoolStatus {
        let free_rows = self.shared.alloc.durable_free_rows();
        let vdevs: Vec<VdevStatus> = self
            .shared
            .vdevs
            .iter()
            .map(|v| {
                let bytes_per_row = v.usable_bytes() / v.rows.max(1);
                VdevStatus {
                    index: v.index,
                    kind: v.kind,
                    state: v.state(),
                    size_bytes: v.usable_bytes(),
                    free_bytes: free_rows[v.index as usize] * bytes_per_row,
                    disks: v
                        .disks
                        .iter()
                        .map(|d| DiskStatus {
                            path: d.path(),
                            guid: format!("{:016x}", d.guid),
                            state: d.state(),
                            problem: d.problem(),
                            read_errors: d.counters.read_errors.load(Ordering::Relaxed),
                            write_errors: d.counters.write_errors.load(Ordering::Relaxed),
                            checksum_errors: d.counters.checksum_errors.load(Ordering::Relaxed),
                        })
                        .collect(),
                }
            })
            .collect();
        let state = if vdevs.iter().any(|v| v.state == "FAULTED") {
            "FAULTED"
        } else if vdevs.iter().any(|v| v.state == "DEGRADED") {
            "DEGRADED"
        } else {
            "ONLINE"
        };
        PoolStatus {
            pool_id: self
                .config
                .lock()
                .expect("config lock poisoned")
                .pool_id
                .clone(),
            state,
            size_bytes: vdevs.iter().map(|v| v.size_bytes).sum(),
            free_bytes: vdevs.iter().map(|v| v.free_bytes).sum(),
            collections: self
                .catalog
                .read()
                .expect("catalog lock poisoned")
                .by_name
                .len(),
            txg: self.shared.last_txg(),
            cache: self.shared.cache.stats(),
            cache_device: self.shared.l2.as_ref().map(|l2| l2.stats()),
            vdevs,
        }
    }
}
