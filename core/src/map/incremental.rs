//! [`MapIncremental`]: the change from one map epoch to a later one, as a state delta
//! per table of the map, and the two table operations that make a delta and replay it
//! ([`ClusterMap::diff`](crate::map::ClusterMap::diff) and
//! [`ClusterMap::apply`](crate::map::ClusterMap::apply) are built on them).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::daemon::{MonInfo, OsdInfo};
use super::pool::Pool;

/// The change from one map epoch to a later one.
///
/// Each table lists changed entries only: `Some(value)` inserts or replaces,
/// `None` removes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MapIncremental {
    /// Cluster id; must match the map it is applied to.
    pub fsid: String,
    /// Epoch of the map this applies to.
    pub from_epoch: u64,
    /// Epoch of the map it produces (`from_epoch + 1` for a single change).
    pub to_epoch: u64,
    /// Changed monitors.
    #[serde(default)]
    pub monitors: BTreeMap<String, Option<MonInfo>>,
    /// Changed OSDs.
    #[serde(default)]
    pub osds: BTreeMap<u32, Option<OsdInfo>>,
    /// Changed pools.
    #[serde(default)]
    pub pools: BTreeMap<u32, Option<Pool>>,
    /// Newly allocated (or dropped) CRUSH bucket ids.
    #[serde(default)]
    pub crush_bucket_ids: BTreeMap<String, Option<i32>>,
    /// New value of the next pool id, if it changed.
    #[serde(default)]
    pub next_pool_id: Option<u32>,
}

impl MapIncremental {
    /// True if applying it changes nothing but the epoch.
    pub fn is_empty(&self) -> bool {
        self.monitors.is_empty()
            && self.osds.is_empty()
            && self.pools.is_empty()
            && self.crush_bucket_ids.is_empty()
            && self.next_pool_id.is_none()
    }
}

/// The entries of `newer` that differ from `older` (`Some`), and those it dropped (`None`).
pub(super) fn table_delta<K: Ord + Clone, V: PartialEq + Clone>(
    older: &BTreeMap<K, V>,
    newer: &BTreeMap<K, V>,
) -> BTreeMap<K, Option<V>> {
    let mut delta = BTreeMap::new();
    for (key, value) in newer {
        if older.get(key) != Some(value) {
            delta.insert(key.clone(), Some(value.clone()));
        }
    }
    for key in older.keys() {
        if !newer.contains_key(key) {
            delta.insert(key.clone(), None);
        }
    }
    delta
}

/// Replays a [`table_delta`] on `table`.
pub(super) fn apply_delta<K: Ord + Clone, V: Clone>(
    table: &mut BTreeMap<K, V>,
    delta: &BTreeMap<K, Option<V>>,
) {
    for (key, change) in delta {
        match change {
            Some(value) => {
                table.insert(key.clone(), value.clone());
            }
            None => {
                table.remove(key);
            }
        }
    }
}
