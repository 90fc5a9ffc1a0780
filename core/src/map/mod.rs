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
//!
//! # Layout
//!
//! This file holds [`ClusterMap`] and every change to it, the only code that sees the
//! whole map. The values it is made of live beside it and never use the map:
//! `hierarchy` (bucket levels, weights and the derived CRUSH tree), `daemon` (monitors
//! and OSDs), `pool`, `incremental` (epoch deltas) and `error`.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

mod daemon;
mod error;
mod hierarchy;
mod incremental;
mod pool;

pub use daemon::{MAX_OSD_ID, MonInfo, OsdInfo};
pub use error::MapError;
pub use hierarchy::{
    Bucket, BucketType, CrushHierarchy, CrushItem, DEFAULT_BUCKET_NAME, MAX_CRUSH_WEIGHT,
    OsdLocation, WEIGHT_ONE, bucket_key, crush_weight_fixed,
};
pub use incremental::MapIncremental;
pub use pool::{MAX_PG_NUM, Pool, PoolKind, PoolSpec, PoolValidationError};

use incremental::{apply_delta, table_delta};

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

    /// Records that up OSD `id` is up through `epoch` (at most the current one):
    /// a PG it leads may go active in an interval that began then. `None` when
    /// the map already says so, or the OSD is not up (its intervals ended).
    pub fn set_up_thru(&mut self, id: u32, epoch: u64) -> Result<Option<MapIncremental>, MapError> {
        let osd = self.osds.get(&id).ok_or(MapError::OsdNotFound(id))?;
        let epoch = epoch.min(self.epoch);
        if !osd.up || osd.up_thru >= epoch {
            return Ok(None);
        }
        self.update_osd(id, |osd| {
            osd.up_thru = epoch;
            Ok(())
        })
        .map(Some)
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
            // A history of refused operations only checks nothing.
            prop_assume!(!incrementals.is_empty());
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
