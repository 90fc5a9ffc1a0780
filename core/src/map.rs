//! The cluster map: monitors, OSDs, the CRUSH hierarchy and pools, at one epoch.
//!
//! The monitors' Raft state machine holds one [`ClusterMap`]; every daemon and client
//! holds a copy and acts on its [`ClusterMap::epoch`]. Everything that decides where
//! data lives is in here, so that anyone with the same map computes the same
//! placement (see [`crate::pg`] and [`crate::crush`]).
//!
//! # Epochs and incrementals
//!
//! Every mutating method (`add_osd`, `mark_down`, `create_pool`, ...) validates its
//! input, bumps the epoch by exactly one and returns the [`MapIncremental`] that turns
//! the previous map into the new one. The monitors replicate incrementals; a daemon
//! that is behind applies them in order with [`ClusterMap::apply`], or asks for a
//! single incremental covering the whole gap, made by [`ClusterMap::diff`]. An
//! incremental is a state delta (new values and removals), not a command, so applying
//! it cannot fail half-way and replays the leader's result exactly.
//!
//! # The CRUSH hierarchy
//!
//! The hierarchy is derived from each OSD's `host` and `zone` fields:
//! `root "default"` → zones (an OSD without a zone is in zone `"default"`) → hosts →
//! OSDs. Bucket weights are the sums of the OSD CRUSH weights below them. A host
//! belongs to exactly one zone; host names are unique cluster-wide.
//!
//! Bucket ids are negative (OSD ids are not), allocated once when a bucket name is
//! first seen and never reused or renumbered: the CRUSH hash takes the id as input, so
//! renumbering a bucket would move data. The allocation lives in the map
//! (`crush_bucket_ids`) so that it travels in incrementals like everything else.
//!
//! Weights become 16.16 fixed-point integers ([`crush_weight_fixed`]) before CRUSH
//! sees them, so placement never depends on floating-point summation order.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

/// Name of the single CRUSH root, and of the zone OSDs without a zone belong to.
pub const DEFAULT_BUCKET_NAME: &str = "default";

/// Largest `pg_num` a pool may have; more PGs than this is a typo, not a plan.
pub const MAX_PG_NUM: u32 = 1 << 20;

/// Largest OSD id: ids above are reserved so an OSD id never collides with the
/// two's-complement form of a (negative) bucket id in the CRUSH hash.
pub const MAX_OSD_ID: u32 = i32::MAX as u32;

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

/// A monitor's address.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MonInfo {
    /// Where the monitor listens, `host:port`.
    pub addr: String,
}

/// One OSD as the cluster map knows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OsdInfo {
    /// OSD id (`osd.N`), at most [`MAX_OSD_ID`].
    pub id: u32,
    /// Where the OSD listens, `host:port`.
    pub addr: String,
    /// Host (CRUSH bucket) the OSD's disk is in.
    pub host: String,
    /// Zone (CRUSH bucket) of the host; `None` means zone `"default"`.
    #[serde(default)]
    pub zone: Option<String>,
    /// Device class, e.g. `hdd`, `ssd`, `nvme`; pools may be restricted to one.
    pub device_class: String,
    /// CRUSH weight, by convention the capacity in TiB. Weight 0 receives no PG.
    pub weight: f64,
    /// The OSD answers heartbeats; down OSDs are dropped from the up set.
    pub up: bool,
    /// The OSD takes data; out OSDs are replaced by CRUSH.
    #[serde(rename = "in")]
    pub in_: bool,
    /// Override in `[0, 1]`: the fraction of the PGs CRUSH gives this OSD that it keeps.
    #[serde(default = "full_reweight")]
    pub reweight: f64,
    /// An operator declared the OSD's data gone (`lcpfs osd lost`): PGs no longer
    /// wait for it to come back. Cleared when the OSD boots again.
    #[serde(default)]
    pub lost: bool,
    /// The OSD's disks are fuller than the monitors' full ratio: PGs on it take
    /// no writes but deletes, so that recovery keeps room to work.
    #[serde(default)]
    pub full: bool,
}

fn full_reweight() -> f64 {
    1.0
}

impl OsdInfo {
    /// A new OSD at `addr` on `host`, up and in: device class `hdd`, CRUSH weight
    /// 1, no zone, no flags.
    pub fn new(id: u32, addr: impl Into<String>, host: impl Into<String>) -> Self {
        OsdInfo {
            id,
            addr: addr.into(),
            host: host.into(),
            zone: None,
            device_class: "hdd".to_owned(),
            weight: 1.0,
            up: true,
            in_: true,
            reweight: 1.0,
            lost: false,
            full: false,
        }
    }

    /// The zone name, with `"default"` for an OSD that has none.
    pub fn zone_name(&self) -> &str {
        self.zone.as_deref().unwrap_or(DEFAULT_BUCKET_NAME)
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

/// How a pool keeps redundancy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolKind {
    /// `size` full copies; writes need `min_size` of them.
    Replicated {
        /// Number of copies.
        size: u32,
        /// Copies that must be available to serve I/O.
        min_size: u32,
    },
    /// Erasure coding: `k` data shards and `m` parity shards, each on its own OSD.
    Erasure {
        /// Data shards.
        k: u32,
        /// Parity (coding) shards.
        m: u32,
    },
}

/// What an operator asks for when creating a pool.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PoolSpec {
    /// Unique pool name.
    pub name: String,
    /// Replication or erasure coding.
    pub kind: PoolKind,
    /// Number of PGs.
    pub pg_num: u32,
    /// CRUSH level whose buckets must be distinct within one PG.
    pub failure_domain: BucketType,
    /// Only OSDs of this device class hold the pool's data.
    #[serde(default)]
    pub device_class: Option<String>,
    /// Compression algorithm for the pool's objects (e.g. `zstd`), if any.
    #[serde(default)]
    pub compression: Option<String>,
}

/// A pool in the map.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pool {
    /// Pool id, never reused after the pool is removed.
    pub id: u32,
    /// Unique pool name.
    pub name: String,
    /// Replication or erasure coding.
    pub kind: PoolKind,
    /// Number of PGs.
    pub pg_num: u32,
    /// CRUSH level whose buckets must be distinct within one PG.
    pub failure_domain: BucketType,
    /// Only OSDs of this device class hold the pool's data.
    #[serde(default)]
    pub device_class: Option<String>,
    /// Compression algorithm for the pool's objects (e.g. `zstd`), if any.
    #[serde(default)]
    pub compression: Option<String>,
}

impl Pool {
    /// OSDs per PG: `size` for replicated pools, `k + m` for erasure-coded ones.
    pub fn size(&self) -> u32 {
        match self.kind {
            PoolKind::Replicated { size, .. } => size,
            PoolKind::Erasure { k, m } => k.saturating_add(m),
        }
    }

    /// OSDs of a PG that must be available for I/O: `min_size`, or `k + 1` for
    /// erasure coding (one shard of margin, so a write is never left with no
    /// redundancy at all).
    pub fn min_size(&self) -> u32 {
        match self.kind {
            PoolKind::Replicated { min_size, .. } => min_size,
            PoolKind::Erasure { k, m } => k.saturating_add(1).min(k.saturating_add(m)),
        }
    }

    /// Copies of an object that must be read to have it whole: one for replicated
    /// pools, `k` shards for erasure-coded ones.
    pub fn shards_needed(&self) -> usize {
        match self.kind {
            PoolKind::Replicated { .. } => 1,
            PoolKind::Erasure { k, .. } => k as usize,
        }
    }

    /// True for erasure-coded pools, whose PG members have fixed shard positions.
    pub fn is_erasure(&self) -> bool {
        matches!(self.kind, PoolKind::Erasure { .. })
    }
}

/// Why a pool cannot be created as asked.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PoolValidationError {
    /// The name is empty.
    #[error("pool name is empty: give the pool a name")]
    EmptyName,
    /// Another pool has this name.
    #[error("a pool named {0:?} already exists: pick another name or remove that pool first")]
    NameTaken(String),
    /// Replicated size 0.
    #[error("replicated size is 0: a pool needs at least one copy (3 is usual)")]
    SizeZero,
    /// min_size 0.
    #[error("min_size is 0: writes need at least one copy; use min_size 2 for size 3")]
    MinSizeZero,
    /// min_size larger than size.
    #[error("min_size {min_size} is larger than size {size}: lower min_size or raise size")]
    MinSizeAboveSize {
        /// Requested min_size.
        min_size: u32,
        /// Requested size.
        size: u32,
    },
    /// Erasure coding without data shards.
    #[error("erasure code k is 0: k (data shards) must be at least 1, e.g. k=4 m=2")]
    NoDataShards,
    /// Erasure coding without parity shards.
    #[error(
        "erasure code m is 0: without parity shards one lost OSD loses data; use m >= 1, e.g. k=4 m=2"
    )]
    NoParityShards,
    /// pg_num 0.
    #[error("pg_num is 0: a pool needs at least one PG (e.g. 32, or about 100 per OSD / size)")]
    PgNumZero,
    /// pg_num above [`MAX_PG_NUM`].
    #[error("pg_num {pg_num} is larger than the limit {max}: use fewer PGs")]
    PgNumTooLarge {
        /// Requested pg_num.
        pg_num: u32,
        /// The limit.
        max: u32,
    },
    /// Fewer failure domains than OSDs per PG.
    #[error(
        "the pool needs {needed} distinct {failure_domain}s{class} but the cluster has only {available}: \
         add {failure_domain}s, lower the size (or k+m), or choose a smaller failure domain",
        class = match device_class { Some(class) => format!(" with device class {class:?}"), None => String::new() }
    )]
    NotEnoughFailureDomains {
        /// OSDs per PG (size or k+m).
        needed: u32,
        /// Distinct failure domains that have at least one OSD of weight > 0.
        available: u32,
        /// The requested failure domain.
        failure_domain: BucketType,
        /// The requested device class.
        device_class: Option<String>,
    },
}

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

/// The whole cluster map at one epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterMap {
    /// Cluster id; maps and incrementals of different clusters never mix.
    pub fsid: String,
    /// Version of the map; every change bumps it by one.
    pub epoch: u64,
    /// Monitors by name.
    pub monitors: BTreeMap<String, MonInfo>,
    /// OSDs by id.
    pub osds: BTreeMap<u32, OsdInfo>,
    /// Pools by id.
    pub pools: BTreeMap<u32, Pool>,
    /// CRUSH bucket ids by key `"{type}:{name}"` (see [`bucket_key`]); never reused.
    pub crush_bucket_ids: BTreeMap<String, i32>,
    /// Id the next pool gets; pool ids are never reused, so a new pool cannot meet
    /// leftover PGs of a removed one.
    pub next_pool_id: u32,
}

/// Key of a bucket in [`ClusterMap::crush_bucket_ids`], e.g. `"host:node1"`.
pub fn bucket_key(kind: BucketType, name: &str) -> String {
    format!("{}:{name}", kind.name())
}

fn table_delta<K: Ord + Clone, V: PartialEq + Clone>(
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

fn apply_delta<K: Ord + Clone, V: Clone>(
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

impl ClusterMap {
    /// An empty map for a new cluster, at epoch 1, with the CRUSH root allocated.
    pub fn new(fsid: impl Into<String>) -> Self {
        let mut crush_bucket_ids = BTreeMap::new();
        crush_bucket_ids.insert(bucket_key(BucketType::Root, DEFAULT_BUCKET_NAME), -1);
        ClusterMap {
            fsid: fsid.into(),
            epoch: 1,
            monitors: BTreeMap::new(),
            osds: BTreeMap::new(),
            pools: BTreeMap::new(),
            crush_bucket_ids,
            next_pool_id: 1,
        }
    }

    /// Applies `change` to a copy, bumps the epoch and, if `change` succeeded,
    /// installs the copy and returns the incremental. Failed changes leave `self`
    /// untouched (and the epoch unchanged).
    fn mutate(
        &mut self,
        change: impl FnOnce(&mut ClusterMap) -> Result<(), MapError>,
    ) -> Result<MapIncremental, MapError> {
        let mut next = self.clone();
        change(&mut next)?;
        next.epoch = self.epoch + 1;
        let incremental = next.diff(self)?;
        *self = next;
        Ok(incremental)
    }

    /// The incremental that turns `older` (an earlier map of this cluster) into `self`.
    pub fn diff(&self, older: &ClusterMap) -> Result<MapIncremental, MapError> {
        if older.fsid != self.fsid {
            return Err(MapError::FsidMismatch {
                ours: self.fsid.clone(),
                theirs: older.fsid.clone(),
            });
        }
        if older.epoch > self.epoch {
            return Err(MapError::DiffBackwards {
                newer: self.epoch,
                older: older.epoch,
            });
        }
        Ok(MapIncremental {
            fsid: self.fsid.clone(),
            from_epoch: older.epoch,
            to_epoch: self.epoch,
            monitors: table_delta(&older.monitors, &self.monitors),
            osds: table_delta(&older.osds, &self.osds),
            pools: table_delta(&older.pools, &self.pools),
            crush_bucket_ids: table_delta(&older.crush_bucket_ids, &self.crush_bucket_ids),
            next_pool_id: (older.next_pool_id != self.next_pool_id).then_some(self.next_pool_id),
        })
    }

    /// Applies an incremental that starts at this map's epoch.
    pub fn apply(&mut self, incremental: &MapIncremental) -> Result<(), MapError> {
        if incremental.fsid != self.fsid {
            return Err(MapError::FsidMismatch {
                ours: self.fsid.clone(),
                theirs: incremental.fsid.clone(),
            });
        }
        if incremental.from_epoch != self.epoch || incremental.to_epoch < incremental.from_epoch {
            return Err(MapError::EpochMismatch {
                current: self.epoch,
                from: incremental.from_epoch,
                to: incremental.to_epoch,
            });
        }
        apply_delta(&mut self.monitors, &incremental.monitors);
        apply_delta(&mut self.osds, &incremental.osds);
        apply_delta(&mut self.pools, &incremental.pools);
        apply_delta(&mut self.crush_bucket_ids, &incremental.crush_bucket_ids);
        if let Some(next_pool_id) = incremental.next_pool_id {
            self.next_pool_id = next_pool_id;
        }
        self.epoch = incremental.to_epoch;
        Ok(())
    }

    /// Adds a monitor.
    pub fn add_monitor(
        &mut self,
        name: &str,
        addr: impl Into<String>,
    ) -> Result<MapIncremental, MapError> {
        let addr = addr.into();
        self.mutate(|map| {
            if map.monitors.contains_key(name) {
                return Err(MapError::MonitorExists(name.to_owned()));
            }
            map.monitors.insert(name.to_owned(), MonInfo { addr });
            Ok(())
        })
    }

    /// Removes a monitor.
    pub fn remove_monitor(&mut self, name: &str) -> Result<MapIncremental, MapError> {
        self.mutate(|map| {
            map.monitors
                .remove(name)
                .map(|_| ())
                .ok_or_else(|| MapError::MonitorNotFound(name.to_owned()))
        })
    }

    /// Adds an OSD, creating its host and zone buckets if they are new.
    pub fn add_osd(&mut self, osd: OsdInfo) -> Result<MapIncremental, MapError> {
        self.mutate(|map| {
            let id = osd.id;
            if id > MAX_OSD_ID {
                return Err(MapError::OsdIdTooLarge(id));
            }
            if map.osds.contains_key(&id) {
                return Err(MapError::OsdExists(id));
            }
            check_weight(id, osd.weight)?;
            check_reweight(id, osd.reweight)?;
            if osd.host.is_empty() {
                return Err(MapError::EmptyHost(id));
            }
            if osd.zone.as_deref() == Some("") {
                return Err(MapError::EmptyZone(id));
            }
            if osd.device_class.is_empty() {
                return Err(MapError::EmptyDeviceClass(id));
            }
            if let Some(other) = map.osds.values().find(|other| other.host == osd.host)
                && other.zone_name() != osd.zone_name()
            {
                return Err(MapError::HostInOtherZone {
                    osd: id,
                    host: osd.host.clone(),
                    zone: other.zone_name().to_owned(),
                    requested: osd.zone_name().to_owned(),
                });
            }
            map.allocate_bucket_id(BucketType::Zone, osd.zone_name())?;
            map.allocate_bucket_id(BucketType::Host, &osd.host)?;
            map.osds.insert(id, osd);
            Ok(())
        })
    }

    fn allocate_bucket_id(&mut self, kind: BucketType, name: &str) -> Result<(), MapError> {
        let key = bucket_key(kind, name);
        if self.crush_bucket_ids.contains_key(&key) {
            return Ok(());
        }
        let lowest = self.crush_bucket_ids.values().copied().min().unwrap_or(0);
        let id = lowest
            .min(0)
            .checked_sub(1)
            .ok_or(MapError::BucketIdsExhausted)?;
        self.crush_bucket_ids.insert(key, id);
        Ok(())
    }

    /// Records an OSD boot: a known OSD gets its new address and is marked up (its
    /// host, class and weights stay as the operator set them); an unknown one is
    /// added, up and in.
    pub fn boot_osd(&mut self, osd: OsdInfo) -> Result<MapIncremental, MapError> {
        if !self.osds.contains_key(&osd.id) {
            return self.add_osd(OsdInfo {
                up: true,
                in_: true,
                ..osd
            });
        }
        self.update_osd(osd.id, |known| {
            known.addr = osd.addr;
            known.up = true;
            known.lost = false;
            Ok(())
        })
    }

    /// Removes an OSD that is down. Its host and zone keep their bucket ids.
    pub fn remove_osd(&mut self, id: u32) -> Result<MapIncremental, MapError> {
        self.mutate(|map| {
            let osd = map.osds.get(&id).ok_or(MapError::OsdNotFound(id))?;
            if osd.up {
                return Err(MapError::OsdIsUp(id));
            }
            map.osds.remove(&id);
            Ok(())
        })
    }

    fn update_osd(
        &mut self,
        id: u32,
        change: impl FnOnce(&mut OsdInfo) -> Result<(), MapError>,
    ) -> Result<MapIncremental, MapError> {
        self.mutate(|map| change(map.osds.get_mut(&id).ok_or(MapError::OsdNotFound(id))?))
    }

    /// Marks an OSD up (it answers heartbeats again).
    pub fn mark_up(&mut self, id: u32) -> Result<MapIncremental, MapError> {
        self.update_osd(id, |osd| {
            osd.up = true;
            Ok(())
        })
    }

    /// Marks an OSD down: it stays in CRUSH results but leaves the up sets.
    pub fn mark_down(&mut self, id: u32) -> Result<MapIncremental, MapError> {
        self.update_osd(id, |osd| {
            osd.up = false;
            Ok(())
        })
    }

    /// Declares a down OSD's data lost: peering stops waiting for it.
    pub fn mark_lost(&mut self, id: u32) -> Result<MapIncremental, MapError> {
        self.update_osd(id, |osd| {
            if osd.up {
                return Err(MapError::OsdIsUp(id));
            }
            osd.lost = true;
            Ok(())
        })
    }

    /// Marks an OSD full (its PGs take only deletes) or not.
    pub fn set_full(&mut self, id: u32, full: bool) -> Result<MapIncremental, MapError> {
        self.update_osd(id, |osd| {
            osd.full = full;
            Ok(())
        })
    }

    /// Marks an OSD in: CRUSH gives it PGs again.
    pub fn mark_in(&mut self, id: u32) -> Result<MapIncremental, MapError> {
        self.update_osd(id, |osd| {
            osd.in_ = true;
            Ok(())
        })
    }

    /// Marks an OSD out: CRUSH replaces it in every PG it held.
    pub fn mark_out(&mut self, id: u32) -> Result<MapIncremental, MapError> {
        self.update_osd(id, |osd| {
            osd.in_ = false;
            Ok(())
        })
    }

    /// Sets an OSD's reweight in `[0, 1]` (the fraction of its CRUSH PGs it keeps).
    pub fn reweight(&mut self, id: u32, reweight: f64) -> Result<MapIncremental, MapError> {
        self.update_osd(id, |osd| {
            check_reweight(id, reweight)?;
            osd.reweight = reweight;
            Ok(())
        })
    }

    /// Sets an OSD's CRUSH weight (normally its capacity in TiB).
    pub fn set_crush_weight(&mut self, id: u32, weight: f64) -> Result<MapIncremental, MapError> {
        self.update_osd(id, |osd| {
            check_weight(id, weight)?;
            osd.weight = weight;
            Ok(())
        })
    }

    /// Validates a pool request against this map without changing anything.
    pub fn validate_pool(&self, spec: &PoolSpec) -> Result<(), PoolValidationError> {
        if spec.name.is_empty() {
            return Err(PoolValidationError::EmptyName);
        }
        if self.pool_by_name(&spec.name).is_some() {
            return Err(PoolValidationError::NameTaken(spec.name.clone()));
        }
        self.validate_layout(spec)
    }

    /// The checks of [`ClusterMap::validate_pool`] that do not involve the name:
    /// redundancy settings, pg_num, and enough failure domains.
    fn validate_layout(&self, spec: &PoolSpec) -> Result<(), PoolValidationError> {
        let needed = match spec.kind {
            PoolKind::Replicated { size, min_size } => {
                if size == 0 {
                    return Err(PoolValidationError::SizeZero);
                }
                if min_size == 0 {
                    return Err(PoolValidationError::MinSizeZero);
                }
                if min_size > size {
                    return Err(PoolValidationError::MinSizeAboveSize { min_size, size });
                }
                size
            }
            PoolKind::Erasure { k, m } => {
                if k == 0 {
                    return Err(PoolValidationError::NoDataShards);
                }
                if m == 0 {
                    return Err(PoolValidationError::NoParityShards);
                }
                k.saturating_add(m)
            }
        };
        if spec.pg_num == 0 {
            return Err(PoolValidationError::PgNumZero);
        }
        if spec.pg_num > MAX_PG_NUM {
            return Err(PoolValidationError::PgNumTooLarge {
                pg_num: spec.pg_num,
                max: MAX_PG_NUM,
            });
        }
        let available =
            self.failure_domain_count(spec.failure_domain, spec.device_class.as_deref());
        if available < needed {
            return Err(PoolValidationError::NotEnoughFailureDomains {
                needed,
                available,
                failure_domain: spec.failure_domain,
                device_class: spec.device_class.clone(),
            });
        }
        Ok(())
    }

    /// Distinct buckets of type `failure_domain` holding at least one OSD of weight > 0
    /// (and of `device_class`, if given). Up/down and in/out do not count: those
    /// change by the minute, and CRUSH places around them.
    pub fn failure_domain_count(
        &self,
        failure_domain: BucketType,
        device_class: Option<&str>,
    ) -> u32 {
        let domains: BTreeSet<(u32, &str)> = self
            .osds
            .values()
            .filter(|osd| crush_weight_fixed(osd.weight) > 0)
            .filter(|osd| device_class.is_none_or(|class| osd.device_class == class))
            .map(|osd| match failure_domain {
                BucketType::Osd => (osd.id, ""),
                BucketType::Host => (0, osd.host.as_str()),
                BucketType::Zone => (0, osd.zone_name()),
                BucketType::Root => (0, DEFAULT_BUCKET_NAME),
            })
            .collect();
        domains.len() as u32
    }

    /// Creates a pool; returns its id and the incremental.
    pub fn create_pool(&mut self, spec: PoolSpec) -> Result<(u32, MapIncremental), MapError> {
        self.validate_pool(&spec)?;
        let id = self.next_pool_id;
        let incremental = self.mutate(|map| {
            map.next_pool_id = id.checked_add(1).ok_or(MapError::PoolIdsExhausted)?;
            map.pools.insert(
                id,
                Pool {
                    id,
                    name: spec.name,
                    kind: spec.kind,
                    pg_num: spec.pg_num,
                    failure_domain: spec.failure_domain,
                    device_class: spec.device_class,
                    compression: spec.compression,
                },
            );
            Ok(())
        })?;
        Ok((id, incremental))
    }

    /// Removes a pool. Its id is not reused.
    pub fn remove_pool(&mut self, id: u32) -> Result<MapIncremental, MapError> {
        self.mutate(|map| {
            map.pools
                .remove(&id)
                .map(|_| ())
                .ok_or(MapError::PoolNotFound(id))
        })
    }

    /// Raises a pool's pg_num, which splits its PGs (see [`crate::pg`]).
    pub fn set_pg_num(&mut self, id: u32, pg_num: u32) -> Result<MapIncremental, MapError> {
        self.mutate(|map| {
            let pool = map.pools.get_mut(&id).ok_or(MapError::PoolNotFound(id))?;
            if pg_num < pool.pg_num {
                return Err(MapError::PgNumDecrease {
                    pool: id,
                    current: pool.pg_num,
                    requested: pg_num,
                });
            }
            if pg_num > MAX_PG_NUM {
                return Err(PoolValidationError::PgNumTooLarge {
                    pg_num,
                    max: MAX_PG_NUM,
                }
                .into());
            }
            pool.pg_num = pg_num;
            Ok(())
        })
    }

    /// Sets (or with `None` clears) a pool's compression algorithm.
    pub fn set_pool_compression(
        &mut self,
        id: u32,
        compression: Option<String>,
    ) -> Result<MapIncremental, MapError> {
        self.mutate(|map| {
            let pool = map.pools.get_mut(&id).ok_or(MapError::PoolNotFound(id))?;
            pool.compression = compression;
            Ok(())
        })
    }

    /// Changes a replicated pool's `size` and `min_size`, with the checks of pool
    /// creation (enough failure domains for the new size).
    pub fn set_pool_size(
        &mut self,
        id: u32,
        size: u32,
        min_size: u32,
    ) -> Result<MapIncremental, MapError> {
        let pool = self.pools.get(&id).ok_or(MapError::PoolNotFound(id))?;
        if pool.is_erasure() {
            return Err(MapError::ErasurePoolSize(id));
        }
        let spec = PoolSpec {
            name: pool.name.clone(),
            kind: PoolKind::Replicated { size, min_size },
            pg_num: pool.pg_num,
            failure_domain: pool.failure_domain,
            device_class: pool.device_class.clone(),
            compression: None,
        };
        self.validate_layout(&spec)?;
        self.mutate(|map| {
            let pool = map.pools.get_mut(&id).ok_or(MapError::PoolNotFound(id))?;
            pool.kind = PoolKind::Replicated { size, min_size };
            Ok(())
        })
    }

    /// The pool with this name, if any.
    pub fn pool_by_name(&self, name: &str) -> Option<&Pool> {
        self.pools.values().find(|pool| pool.name == name)
    }

    /// The CRUSH hierarchy over the OSDs of `device_class` (all OSDs if `None`).
    ///
    /// Buckets without a matching OSD are left out, so a class-restricted pool never
    /// descends into a host that cannot serve it.
    pub fn crush_hierarchy(&self, device_class: Option<&str>) -> Result<CrushHierarchy, MapError> {
        let bucket_id = |kind: BucketType, name: &str| {
            let key = bucket_key(kind, name);
            self.crush_bucket_ids
                .get(&key)
                .copied()
                .ok_or(MapError::MissingBucketId(key))
        };
        let root = bucket_id(BucketType::Root, DEFAULT_BUCKET_NAME)?;
        // zone name → host name → OSDs; a host's zone is that of its lowest OSD id, so
        // even a hand-edited map with a host in two zones yields a tree.
        let mut host_zone: BTreeMap<&str, &str> = BTreeMap::new();
        let mut tree: BTreeMap<&str, BTreeMap<&str, Vec<&OsdInfo>>> = BTreeMap::new();
        for osd in self.osds.values() {
            if device_class.is_some_and(|class| osd.device_class != class) {
                continue;
            }
            let zone = *host_zone
                .entry(osd.host.as_str())
                .or_insert(osd.zone_name());
            tree.entry(zone)
                .or_default()
                .entry(osd.host.as_str())
                .or_default()
                .push(osd);
        }
        let mut buckets = BTreeMap::new();
        let mut osd_location = BTreeMap::new();
        let mut root_children = Vec::new();
        for (zone_name, hosts) in tree {
            let zone_id = bucket_id(BucketType::Zone, zone_name)?;
            let mut zone_children = Vec::new();
            for (host_name, osds) in hosts {
                let host_id = bucket_id(BucketType::Host, host_name)?;
                let host_children: Vec<(CrushItem, u64)> = osds
                    .iter()
                    .map(|osd| (CrushItem::Osd(osd.id), crush_weight_fixed(osd.weight)))
                    .collect();
                for osd in &osds {
                    osd_location.insert(
                        osd.id,
                        OsdLocation {
                            host: host_id,
                            zone: zone_id,
                            weight: crush_weight_fixed(osd.weight),
                        },
                    );
                }
                let host = Bucket::new(
                    host_id,
                    BucketType::Host,
                    host_name,
                    Some(zone_id),
                    host_children,
                );
                zone_children.push((CrushItem::Bucket(host_id), host.weight));
                buckets.insert(host_id, host);
            }
            let zone = Bucket::new(
                zone_id,
                BucketType::Zone,
                zone_name,
                Some(root),
                zone_children,
            );
            root_children.push((CrushItem::Bucket(zone_id), zone.weight));
            buckets.insert(zone_id, zone);
        }
        buckets.insert(
            root,
            Bucket::new(
                root,
                BucketType::Root,
                DEFAULT_BUCKET_NAME,
                None,
                root_children,
            ),
        );
        Ok(CrushHierarchy {
            root,
            buckets,
            osd_location,
        })
    }
}

fn check_weight(osd: u32, weight: f64) -> Result<(), MapError> {
    if weight.is_finite() && (0.0..=MAX_CRUSH_WEIGHT).contains(&weight) {
        Ok(())
    } else {
        Err(MapError::InvalidWeight { osd, weight })
    }
}

fn check_reweight(osd: u32, reweight: f64) -> Result<(), MapError> {
    if (0.0..=1.0).contains(&reweight) {
        Ok(())
    } else {
        Err(MapError::InvalidReweight { osd, reweight })
    }
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
    fn new(
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

/// The CRUSH tree `root → zone → host → osd`, derived from a [`ClusterMap`].
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An up, in OSD of weight 1 on `host` in the default zone.
    pub(crate) fn osd(id: u32, host: &str) -> OsdInfo {
        OsdInfo::new(id, format!("10.0.0.{id}:6800"), host)
    }

    pub(crate) fn replicated(
        name: &str,
        size: u32,
        pg_num: u32,
        failure_domain: BucketType,
    ) -> PoolSpec {
        PoolSpec {
            name: name.to_owned(),
            kind: PoolKind::Replicated {
                size,
                min_size: size.div_ceil(2).max(1),
            },
            pg_num,
            failure_domain,
            device_class: None,
            compression: None,
        }
    }

    fn three_hosts() -> ClusterMap {
        let mut map = ClusterMap::new("fsid-test");
        for id in 0..6 {
            map.add_osd(osd(id, &format!("host{}", id / 2))).unwrap();
        }
        map
    }

    #[test]
    fn every_mutation_bumps_the_epoch_once() {
        let mut map = ClusterMap::new("fsid-test");
        assert_eq!(map.epoch, 1);
        map.add_monitor("a", "10.0.0.1:3300").unwrap();
        assert_eq!(map.epoch, 2);
        map.add_osd(osd(0, "h0")).unwrap();
        map.add_osd(osd(1, "h1")).unwrap();
        assert_eq!(map.epoch, 4);
        map.mark_down(0).unwrap();
        map.mark_out(0).unwrap();
        map.mark_in(0).unwrap();
        map.mark_up(0).unwrap();
        map.reweight(1, 0.5).unwrap();
        map.set_crush_weight(1, 2.0).unwrap();
        assert_eq!(map.epoch, 10);
        let (pool, _) = map
            .create_pool(replicated("rbd", 2, 8, BucketType::Host))
            .unwrap();
        map.set_pg_num(pool, 16).unwrap();
        map.remove_pool(pool).unwrap();
        map.mark_down(1).unwrap();
        map.remove_osd(1).unwrap();
        map.remove_monitor("a").unwrap();
        assert_eq!(map.epoch, 16);
    }

    #[test]
    fn failed_mutations_change_nothing() {
        let mut map = three_hosts();
        let before = map.clone();
        assert_eq!(map.add_osd(osd(0, "host9")), Err(MapError::OsdExists(0)));
        assert_eq!(map.mark_out(99), Err(MapError::OsdNotFound(99)));
        assert_eq!(map.remove_osd(0), Err(MapError::OsdIsUp(0)));
        assert!(matches!(
            map.reweight(0, 1.5),
            Err(MapError::InvalidReweight { .. })
        ));
        assert!(matches!(
            map.reweight(0, f64::NAN),
            Err(MapError::InvalidReweight { .. })
        ));
        assert!(matches!(
            map.set_crush_weight(0, -1.0),
            Err(MapError::InvalidWeight { .. })
        ));
        assert!(matches!(
            map.add_osd(OsdInfo {
                weight: f64::INFINITY,
                ..osd(50, "host0")
            }),
            Err(MapError::InvalidWeight { .. })
        ));
        assert_eq!(
            map.add_osd(OsdInfo {
                id: u32::MAX,
                ..osd(0, "h")
            }),
            Err(MapError::OsdIdTooLarge(u32::MAX))
        );
        assert_eq!(
            map.add_osd(OsdInfo {
                zone: Some("z2".into()),
                ..osd(7, "host0")
            }),
            Err(MapError::HostInOtherZone {
                osd: 7,
                host: "host0".into(),
                zone: "default".into(),
                requested: "z2".into()
            })
        );
        assert_eq!(map.add_osd(osd(8, "")), Err(MapError::EmptyHost(8)));
        assert_eq!(map.remove_pool(3), Err(MapError::PoolNotFound(3)));
        assert_eq!(map, before);
    }

    #[test]
    fn pool_validation_errors() {
        let mut map = three_hosts();
        let spec = |kind, pg_num, failure_domain| PoolSpec {
            name: "p".into(),
            kind,
            pg_num,
            failure_domain,
            device_class: None,
            compression: None,
        };
        let rep = |size, min_size| PoolKind::Replicated { size, min_size };
        let ec = |k, m| PoolKind::Erasure { k, m };
        let cases = [
            (
                spec(rep(0, 0), 8, BucketType::Host),
                PoolValidationError::SizeZero,
            ),
            (
                spec(rep(3, 0), 8, BucketType::Host),
                PoolValidationError::MinSizeZero,
            ),
            (
                spec(rep(2, 3), 8, BucketType::Host),
                PoolValidationError::MinSizeAboveSize {
                    min_size: 3,
                    size: 2,
                },
            ),
            (
                spec(rep(3, 2), 0, BucketType::Host),
                PoolValidationError::PgNumZero,
            ),
            (
                spec(rep(3, 2), MAX_PG_NUM + 1, BucketType::Host),
                PoolValidationError::PgNumTooLarge {
                    pg_num: MAX_PG_NUM + 1,
                    max: MAX_PG_NUM,
                },
            ),
            (
                spec(ec(0, 2), 8, BucketType::Osd),
                PoolValidationError::NoDataShards,
            ),
            (
                spec(ec(2, 0), 8, BucketType::Osd),
                PoolValidationError::NoParityShards,
            ),
            (
                spec(rep(4, 2), 8, BucketType::Host),
                PoolValidationError::NotEnoughFailureDomains {
                    needed: 4,
                    available: 3,
                    failure_domain: BucketType::Host,
                    device_class: None,
                },
            ),
            (
                spec(ec(4, 2), 8, BucketType::Host),
                PoolValidationError::NotEnoughFailureDomains {
                    needed: 6,
                    available: 3,
                    failure_domain: BucketType::Host,
                    device_class: None,
                },
            ),
            (
                spec(rep(2, 1), 8, BucketType::Zone),
                PoolValidationError::NotEnoughFailureDomains {
                    needed: 2,
                    available: 1,
                    failure_domain: BucketType::Zone,
                    device_class: None,
                },
            ),
            (
                PoolSpec {
                    device_class: Some("ssd".into()),
                    ..spec(rep(1, 1), 8, BucketType::Osd)
                },
                PoolValidationError::NotEnoughFailureDomains {
                    needed: 1,
                    available: 0,
                    failure_domain: BucketType::Osd,
                    device_class: Some("ssd".into()),
                },
            ),
            (
                PoolSpec {
                    name: String::new(),
                    ..spec(rep(3, 2), 8, BucketType::Host)
                },
                PoolValidationError::EmptyName,
            ),
        ];
        for (spec, want) in cases {
            assert_eq!(map.validate_pool(&spec), Err(want.clone()), "{spec:?}");
            let epoch = map.epoch;
            assert_eq!(map.create_pool(spec), Err(MapError::InvalidPool(want)));
            assert_eq!(map.epoch, epoch);
        }
        // The message tells the operator what to do.
        let message = MapError::from(PoolValidationError::NotEnoughFailureDomains {
            needed: 6,
            available: 3,
            failure_domain: BucketType::Host,
            device_class: Some("ssd".into()),
        })
        .to_string();
        assert!(
            message.contains("needs 6 distinct hosts with device class \"ssd\""),
            "{message}"
        );
        assert!(message.contains("add hosts"), "{message}");

        // Weight-0 OSDs do not count as a failure domain.
        map.set_crush_weight(4, 0.0).unwrap();
        map.set_crush_weight(5, 0.0).unwrap();
        assert!(matches!(
            map.validate_pool(&spec(rep(3, 2), 8, BucketType::Host)),
            Err(PoolValidationError::NotEnoughFailureDomains { available: 2, .. })
        ));
        let (id, _) = map.create_pool(spec(ec(2, 1), 8, BucketType::Osd)).unwrap();
        assert_eq!(id, 1);
        assert_eq!(
            map.create_pool(spec(rep(1, 1), 8, BucketType::Osd)),
            Err(MapError::InvalidPool(PoolValidationError::NameTaken(
                "p".into()
            )))
        );
        assert!(matches!(
            map.set_pg_num(id, 4),
            Err(MapError::PgNumDecrease { .. })
        ));
        map.remove_pool(id).unwrap();
        let (again, _) = map
            .create_pool(spec(rep(1, 1), 8, BucketType::Osd))
            .unwrap();
        assert_eq!(again, 2, "pool ids are never reused");
    }

    #[test]
    fn hierarchy_follows_hosts_and_zones() {
        let mut map = ClusterMap::new("fsid-test");
        map.add_osd(OsdInfo {
            zone: Some("z1".into()),
            weight: 2.0,
            ..osd(0, "a")
        })
        .unwrap();
        map.add_osd(OsdInfo {
            zone: Some("z1".into()),
            ..osd(1, "a")
        })
        .unwrap();
        map.add_osd(OsdInfo {
            device_class: "ssd".into(),
            ..osd(2, "b")
        })
        .unwrap();
        let tree = map.crush_hierarchy(None).unwrap();
        let root = &tree.buckets[&tree.root];
        assert_eq!(root.kind, BucketType::Root);
        assert_eq!(root.weight, 4 * WEIGHT_ONE);
        assert_eq!(root.children.len(), 2, "zones default and z1");
        let location = tree.osd_location[&0];
        assert_eq!(tree.buckets[&location.host].name, "a");
        assert_eq!(tree.buckets[&location.host].weight, 3 * WEIGHT_ONE);
        assert_eq!(tree.buckets[&location.zone].name, "z1");
        assert_eq!(
            tree.osds_under(CrushItem::Bucket(location.zone)),
            vec![0, 1]
        );
        assert_eq!(tree.osds_under(CrushItem::Bucket(tree.root)), vec![0, 1, 2]);
        // The ssd shadow tree has only host b, with the same bucket ids.
        let ssd = map.crush_hierarchy(Some("ssd")).unwrap();
        assert_eq!(
            ssd.osd_location.keys().copied().collect::<Vec<_>>(),
            vec![2]
        );
        assert_eq!(ssd.osd_location[&2], tree.osd_location[&2]);
        assert_eq!(ssd.buckets.len(), 3);
        // Ids are allocated once and survive removal of the last OSD of a host.
        let ids = map.crush_bucket_ids.clone();
        map.mark_down(2).unwrap();
        map.remove_osd(2).unwrap();
        map.add_osd(osd(3, "c")).unwrap();
        map.add_osd(osd(2, "b")).unwrap();
        for (key, id) in &ids {
            assert_eq!(map.crush_bucket_ids.get(key), Some(id), "{key}");
        }
        let distinct: BTreeSet<i32> = map.crush_bucket_ids.values().copied().collect();
        assert_eq!(distinct.len(), map.crush_bucket_ids.len());
        assert!(distinct.iter().all(|&id| id < 0));
    }

    #[test]
    fn incrementals_are_checked() {
        let mut map = three_hosts();
        let base = map.clone();
        let incremental = map.mark_out(1).unwrap();
        assert_eq!(
            (incremental.from_epoch, incremental.to_epoch),
            (base.epoch, base.epoch + 1)
        );
        let mut stale = base.clone();
        stale.epoch -= 1;
        assert!(matches!(
            stale.apply(&incremental),
            Err(MapError::EpochMismatch { .. })
        ));
        let mut other = ClusterMap::new("other");
        other.epoch = base.epoch;
        assert!(matches!(
            other.apply(&incremental),
            Err(MapError::FsidMismatch { .. })
        ));
        assert!(matches!(
            base.diff(&map),
            Err(MapError::DiffBackwards { .. })
        ));
        let json = serde_json::to_string(&incremental).unwrap();
        assert!(json.contains("\"in\":false"), "{json}");
        let decoded: MapIncremental = serde_json::from_str(&json).unwrap();
        let mut replica = base;
        replica.apply(&decoded).unwrap();
        assert_eq!(replica, map);
    }

    /// One random map operation; many fail validation, which is part of the test.
    #[derive(Clone, Debug)]
    enum Op {
        AddOsd {
            id: u32,
            host: u8,
            zone: Option<u8>,
            weight: u8,
        },
        RemoveOsd(u32),
        Down(u32),
        Up(u32),
        Out(u32),
        In(u32),
        Reweight(u32, u8),
        CrushWeight(u32, u8),
        CreatePool {
            name: u8,
            size: u32,
            pg_num: u32,
            ec: bool,
        },
        RemovePool(u32),
        GrowPgNum(u32, u32),
        AddMon(u8),
        RemoveMon(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        let id = 0u32..12;
        prop_oneof![
            (id.clone(), 0u8..5, proptest::option::of(0u8..3), 0u8..5).prop_map(
                |(id, host, zone, weight)| Op::AddOsd {
                    id,
                    host,
                    zone,
                    weight
                }
            ),
            id.clone().prop_map(Op::RemoveOsd),
            id.clone().prop_map(Op::Down),
            id.clone().prop_map(Op::Up),
            id.clone().prop_map(Op::Out),
            id.clone().prop_map(Op::In),
            (id.clone(), 0u8..=10).prop_map(|(id, w)| Op::Reweight(id, w)),
            (id, 0u8..5).prop_map(|(id, w)| Op::CrushWeight(id, w)),
            (0u8..4, 1u32..4, 1u32..64, any::<bool>()).prop_map(|(name, size, pg_num, ec)| {
                Op::CreatePool {
                    name,
                    size,
                    pg_num,
                    ec,
                }
            }),
            (0u32..6).prop_map(Op::RemovePool),
            (0u32..6, 1u32..128).prop_map(|(id, pg_num)| Op::GrowPgNum(id, pg_num)),
            (0u8..3).prop_map(Op::AddMon),
            (0u8..3).prop_map(Op::RemoveMon),
        ]
    }

    fn run(map: &mut ClusterMap, op: &Op) -> Result<MapIncremental, MapError> {
        match *op {
            Op::AddOsd {
                id,
                host,
                zone,
                weight,
            } => map.add_osd(OsdInfo {
                zone: zone.map(|zone| format!("z{zone}")),
                weight: f64::from(weight) * 0.5,
                ..osd(id, &format!("h{host}"))
            }),
            Op::RemoveOsd(id) => map.remove_osd(id),
            Op::Down(id) => map.mark_down(id),
            Op::Up(id) => map.mark_up(id),
            Op::Out(id) => map.mark_out(id),
            Op::In(id) => map.mark_in(id),
            Op::Reweight(id, tenths) => map.reweight(id, f64::from(tenths) / 10.0),
            Op::CrushWeight(id, weight) => map.set_crush_weight(id, f64::from(weight)),
            Op::CreatePool {
                name,
                size,
                pg_num,
                ec,
            } => map
                .create_pool(PoolSpec {
                    name: format!("pool{name}"),
                    kind: if ec {
                        PoolKind::Erasure { k: size, m: 1 }
                    } else {
                        PoolKind::Replicated { size, min_size: 1 }
                    },
                    pg_num,
                    failure_domain: BucketType::Osd,
                    device_class: None,
                    compression: Some("zstd".into()),
                })
                .map(|(_, incremental)| incremental),
            Op::RemovePool(id) => map.remove_pool(id),
            Op::GrowPgNum(id, pg_num) => map.set_pg_num(id, pg_num),
            Op::AddMon(name) => map.add_monitor(&format!("mon{name}"), "10.0.1.1:3300"),
            Op::RemoveMon(name) => map.remove_monitor(&format!("mon{name}")),
        }
    }

    proptest! {
        /// Replaying each epoch's incremental, or one diff over the whole range,
        /// reproduces the newer map exactly, also after a JSON round trip.
        #[test]
        fn incrementals_round_trip(ops in proptest::collection::vec(op(), 1..60)) {
            let mut map = ClusterMap::new("fsid-prop");
            let genesis = map.clone();
            let mut history = vec![map.clone()];
            let mut incrementals = Vec::new();
            for op in &ops {
                let epoch = map.epoch;
                match run(&mut map, op) {
                    Ok(incremental) => {
                        prop_assert_eq!(map.epoch, epoch + 1);
                        prop_assert_eq!(incremental.to_epoch, map.epoch);
                        incrementals.push(incremental);
                        history.push(map.clone());
                    }
                    Err(_) => prop_assert_eq!(map.epoch, epoch),
                }
            }
            let mut replica = genesis.clone();
            for incremental in &incrementals {
                let json = serde_json::to_vec(incremental).unwrap();
                let decoded: MapIncremental = serde_json::from_slice(&json).unwrap();
                replica.apply(&decoded).unwrap();
            }
            prop_assert_eq!(&replica, &map);
            // A single incremental from any older epoch.
            for older in &history {
                let mut caught_up = older.clone();
                caught_up.apply(&map.diff(older).unwrap()).unwrap();
                prop_assert_eq!(&caught_up, &map);
            }
            let json = serde_json::to_string(&map).unwrap();
            let decoded: ClusterMap = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(decoded, map.clone());
            // Every map the methods produce has a well-formed hierarchy.
            let tree = map.crush_hierarchy(None).unwrap();
            prop_assert_eq!(tree.osd_location.len(), map.osds.len());
        }
    }
}
