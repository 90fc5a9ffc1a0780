//! Pools: what an operator asks for ([`PoolSpec`]), what the map keeps ([`Pool`]),
//! how a pool keeps redundancy ([`PoolKind`]), and why a request is refused
//! ([`PoolValidationError`]). The checks of a request against the cluster's OSDs are
//! [`ClusterMap::validate_pool`](crate::map::ClusterMap::validate_pool).

use serde::{Deserialize, Serialize};

use super::hierarchy::BucketType;

/// Largest `pg_num` a pool may have; more PGs than this is a typo, not a plan.
pub const MAX_PG_NUM: u32 = 1 << 20;

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

    /// OSDs of a PG that must be up for it to serve reads: `min_size` for
    /// replicated pools (below it, the PG is inactive, as in Ceph), `k` for
    /// erasure-coded ones (any `k` shards rebuild an object).
    pub fn read_size(&self) -> u32 {
        match self.kind {
            PoolKind::Replicated { min_size, .. } => min_size,
            PoolKind::Erasure { k, .. } => k,
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
