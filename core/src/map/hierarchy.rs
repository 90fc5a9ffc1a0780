//! The CRUSH hierarchy: its levels ([`BucketType`]) and bucket names, the 16.16
//! fixed-point weights CRUSH computes with, and the tree `root → zone → host → osd`
//! ([`CrushHierarchy`]) that CRUSH walks.
//!
//! The map derives the tree from its OSDs
//! ([`ClusterMap::crush_hierarchy`](crate::map::ClusterMap::crush_hierarchy); the
//! [`crate::map`] module doc gives the rules). Nothing here knows of OSD records, pools
//! or epochs, so every other part of the map can build on it.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Name of the single CRUSH root, and of the zone OSDs without a zone belong to.
pub const DEFAULT_BUCKET_NAME: &str = "default";

/// Largest CRUSH weight accepted for one OSD (in the caller's unit, e.g. TiB).
pub const MAX_CRUSH_WEIGHT: f64 = 1_000_000.0;

/// 1.0 in the 16.16 fixed-point form CRUSH computes with.
pub const WEIGHT_ONE: u64 = 0x1_0000;

/// Converts a weight (CRUSH weight or reweight) to 16.16 fixed point.
///
/// Rounds to nearest; negative or non-finite input (rejected earlier by validation)
/// becomes 0. IEEE multiplication and rounding are exact operations, so every platform
/// gets the same integer.
pub fn crush_weight_fixed(weight: f64) -> u64 {
    if weight.is_finite() && weight > 0.0 {
        (weight.min(MAX_CRUSH_WEIGHT) * WEIGHT_ONE as f64).round() as u64
    } else {
        0
    }
}

/// Level of the CRUSH hierarchy; as a pool setting, its failure domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BucketType {
    /// A single OSD (a leaf; not a bucket).
    Osd,
    /// All OSDs of one machine.
    Host,
    /// A rack, room or data center.
    Zone,
    /// The whole cluster.
    Root,
}

impl BucketType {
    /// Lower-case name, as used in bucket keys and messages.
    pub fn name(self) -> &'static str {
        match self {
            BucketType::Osd => "osd",
            BucketType::Host => "host",
            BucketType::Zone => "zone",
            BucketType::Root => "root",
        }
    }
}

impl fmt::Display for BucketType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Key of a bucket in
/// [`ClusterMap::crush_bucket_ids`](crate::map::ClusterMap::crush_bucket_ids),
/// e.g. `"host:node1"`.
pub fn bucket_key(kind: BucketType, name: &str) -> String {
    format!("{}:{name}", kind.name())
}

/// A node of the CRUSH hierarchy as CRUSH hashes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CrushItem {
    /// An OSD (leaf), by OSD id.
    Osd(u32),
    /// A bucket, by (negative) bucket id.
    Bucket(i32),
}

impl CrushItem {
    /// The id fed to the CRUSH hash: the OSD id, or the bucket id's two's complement.
    pub fn hash_id(self) -> u32 {
        match self {
            CrushItem::Osd(id) => id,
            CrushItem::Bucket(id) => id as u32,
        }
    }
}

/// A CRUSH bucket with its weighted children, sorted by item.
#[derive(Clone, Debug, PartialEq)]
pub struct Bucket {
    /// Bucket id (negative).
    pub id: i32,
    /// Level in the hierarchy.
    pub kind: BucketType,
    /// Host, zone or root name.
    pub name: String,
    /// Sum of the children's weights, 16.16 fixed point.
    pub weight: u64,
    /// The bucket above (`None` for the root).
    pub parent: Option<i32>,
    /// Children and their weights (16.16 fixed point).
    pub children: Vec<(CrushItem, u64)>,
}

impl Bucket {
    pub(super) fn new(
        id: i32,
        kind: BucketType,
        name: &str,
        parent: Option<i32>,
        mut children: Vec<(CrushItem, u64)>,
    ) -> Self {
        children.sort_unstable();
        Bucket {
            id,
            kind,
            name: name.to_owned(),
            parent,
            weight: children.iter().map(|&(_, weight)| weight).sum(),
            children,
        }
    }
}

/// The buckets an OSD sits in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OsdLocation {
    /// Host bucket id.
    pub host: i32,
    /// Zone bucket id.
    pub zone: i32,
    /// The OSD's CRUSH weight, 16.16 fixed point.
    pub weight: u64,
}

/// The CRUSH tree `root → zone → host → osd`, derived from a
/// [`ClusterMap`](crate::map::ClusterMap).
#[derive(Clone, Debug, PartialEq)]
pub struct CrushHierarchy {
    /// Id of the root bucket.
    pub root: i32,
    /// Every bucket by id.
    pub buckets: BTreeMap<i32, Bucket>,
    /// Host and zone of every OSD in the tree.
    pub osd_location: BTreeMap<u32, OsdLocation>,
}

impl CrushHierarchy {
    /// Weight of an item (16.16 fixed point); 0 for an item not in this tree.
    pub fn weight(&self, item: CrushItem) -> u64 {
        match item {
            CrushItem::Osd(id) => self
                .osd_location
                .get(&id)
                .map_or(0, |location| location.weight),
            CrushItem::Bucket(id) => self.buckets.get(&id).map_or(0, |bucket| bucket.weight),
        }
    }

    /// The bucket directly above an item (`None` for the root or an unknown item).
    pub fn parent(&self, item: CrushItem) -> Option<i32> {
        match item {
            CrushItem::Osd(id) => self.osd_location.get(&id).map(|location| location.host),
            CrushItem::Bucket(id) => self.buckets.get(&id).and_then(|bucket| bucket.parent),
        }
    }

    /// The bucket of type `failure_domain` that contains `osd` (the OSD itself for
    /// [`BucketType::Osd`]); `None` if the OSD is not in this tree.
    pub fn failure_domain_of(&self, osd: u32, failure_domain: BucketType) -> Option<CrushItem> {
        let location = self.osd_location.get(&osd)?;
        Some(match failure_domain {
            BucketType::Osd => CrushItem::Osd(osd),
            BucketType::Host => CrushItem::Bucket(location.host),
            BucketType::Zone => CrushItem::Bucket(location.zone),
            BucketType::Root => CrushItem::Bucket(self.root),
        })
    }

    /// OSDs under a bucket (or the OSD itself), in id order.
    pub fn osds_under(&self, item: CrushItem) -> Vec<u32> {
        match item {
            CrushItem::Osd(id) => vec![id],
            CrushItem::Bucket(id) => self
                .osd_location
                .iter()
                .filter(|(_, location)| {
                    id == self.root || location.host == id || location.zone == id
                })
                .map(|(&osd, _)| osd)
                .collect(),
        }
    }
}
