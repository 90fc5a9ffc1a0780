//! CRUSH: placing a PG on OSDs from the cluster map alone, with straw2 buckets.
//!
//! Given the same [`ClusterMap`], every client, OSD and monitor computes the same OSDs
//! for a PG, without asking anyone. This module is that computation.
//!
//! # The pieces
//!
//! * **Hash.** [`crush_hash3`]`(x, item, r)` and [`crush_hash2`] are the Jenkins
//!   96-bit mix ([`crate::pg`]'s `jenkins_mix`) applied in the rjenkins1 pattern that
//!   CRUSH uses: `h = 1315423911 ^ a ^ b ^ c`, constants `x = 231232`, `y = 1232`, then
//!   `mix(a,b,h) mix(c,x,h) mix(y,a,h) mix(b,x,h) mix(y,c,h)` (for two inputs:
//!   `mix(a,b,h) mix(x,a,h) mix(b,y,h)`), returning `h`. Golden vectors pin it.
//! * **Straw2.** A bucket picks the child with the highest draw
//!   `log2(u) / weight`, `u = (crush_hash3(x, child, r) + 1) / 2^32` in `(0, 1]`.
//!   Because each child's draw depends only on its own hash and weight, changing one
//!   child's weight only moves PGs to or from *that* child, never between the others:
//!   the property that keeps data movement proportional to the change. Weight 0 means
//!   never chosen.
//! * **Deterministic logarithm.** `f64::ln` comes from the platform's libm, which is not
//!   required to round identically everywhere, and two OSDs disagreeing on a placement
//!   is a correctness bug. So [`log2_fixed`] computes `log2` in 32.32 fixed point with
//!   integer operations only (leading-zero count for the integer part, repeated
//!   squaring for 32 fraction bits), and the draw divides it by the 16.16 fixed-point
//!   weight in `i128`. (log2 instead of ln only scales every draw by the same constant.)
//!   The whole 32-bit hash is used, not Ceph's 16 bits, so ties are rarer; a tie goes to
//!   the child that sorts first.
//! * **Descent.** One draw with rank `r` walks from the root, choosing a child by
//!   straw2 at each level until it reaches a bucket of the pool's failure-domain type,
//!   then walks on from there to one OSD with a fixed rank (chooseleaf), so the OSD
//!   a PG uses inside a domain does not depend on the domain's rank.
//! * **Exclusion instead of retries.** Ceph retries a draw with a new `r` when it hits
//!   a failure domain the PG already has, up to `choose_total_tries` (50) times, and
//!   gives up ("bad mapping") when the tries run out, which happens when a PG needs
//!   nearly every domain (k+m = number of hosts). Here a chosen domain's weight is
//!   taken out of the tree for the rest of that PG's computation (from the domain and
//!   every bucket above it), so the next rank draws straw2 among the domains still
//!   available, in proportion to their weight. There are no collisions, so no retry
//!   bound is needed: a PG gets `size` OSDs whenever `size` usable domains exist, and
//!   the computation takes at most one draw per rank plus one per rejected OSD.
//!
//! # Two phases: CRUSH weights, then in/out
//!
//! A PG's input is `x = crush_hash2(seed, pool)`. Phase one chooses up to `size`
//! distinct failure domains and one OSD under each from CRUSH weights alone, ignoring
//! in/out and reweight. Phase two drops each chosen OSD that is out, or that its
//! reweight rejects for this PG (`crush_hash2(x, osd) & 0xffff >= reweight * 0x10000`,
//! the same per-PG test as Ceph's `is_out`), and refills the gaps with ranks phase one
//! never uses (`size + i`), excluding the kept OSDs' domains and every rejected OSD;
//! a refill draw that hits another rejected OSD excludes it and draws again.
//!
//! Ceph instead rejects out OSDs inside its retry loop; then an out OSD changes the
//! collision history of *other* positions and can move PGs that never held it.
//! Splitting the phases gives exact guarantees, which the tests check:
//!
//! * marking an OSD out (or lowering its reweight) changes only PGs that held it, and
//!   in those only its own slot: for replicated pools the other OSDs keep their order
//!   and the replacement is appended (the next OSD becomes primary, and it has the
//!   data); for erasure-coded pools every other shard keeps its position;
//! * marking it in again restores the previous mapping exactly.
//!
//! # Rules
//!
//! * [`choose_firstn`] (replicated): an ordered list. Among the failure domains of one
//!   bucket every pick uses the same rank (0), so with the exclusions the picks are
//!   the order in which those domains finish one weighted "race" (each domain's draw
//!   is fixed for the PG). That makes the *set* stable: a weight change swaps at most
//!   one domain of that bucket in or out. The buckets above the failure domains (zones
//!   when the failure domain is `host`) are drawn with rank `i` for the `i`-th pick,
//!   since re-using one draw there would keep choosing the same zone and skew the
//!   weights. An OSD lost in phase two shifts the later ones forward; refills use
//!   ranks `size..2 * size` above the domains.
//! * [`choose_indep`] (erasure coding): fixed positions; position `i` is drawn with
//!   rank `i` among the domains positions `0..i` did not take, so inserting a domain
//!   does not shift every later position as a single race would. Phase two refills a
//!   position in place (rank `size + i`). A position that cannot be filled is `None`;
//!   the others do not move.
//!
//! # Up set
//!
//! Down OSDs stay in the CRUSH result (so that a short outage moves no data) but
//! leave the up set: a replicated up set drops them and shifts, an erasure-coded one
//! puts `None` in their position. The primary is the first OSD of the up set. (The
//! acting set, which peering may override temporarily, is the OSD crate's business.)
//!
//! # What straw2 promises when an OSD is added
//!
//! A straw2 draw does not depend on the other items' weights. For replicated pools
//! with a flat choice (one zone and failure domain `host`, or one host and failure
//! domain `osd`), adding an OSD therefore changes each PG by at most one OSD: a new
//! host can only swap itself in for one domain, and a heavier existing host can only
//! swap itself in, bringing the OSD it picks (the new one or, about `1 / (n + 1)` of
//! the time with `n` equal OSDs, an old one). Data moves only into the host that
//! grew, and the share landing on the new OSD is about `w / W` (`w` its weight, `W`
//! the new total). The tests check all of this. With several zones or failure domain
//! `osd` across hosts the levels interact and a few PGs move one more shard.
//!
//! Erasure-coded PGs pay more: shards are positional, and when a new domain takes a
//! position, the domain it displaced may win a later position, which moves that shard
//! too. On 10 hosts of 4 OSDs, adding an OSD moves about 1.6 times the ideal number of
//! EC 4+2 shards; when k+m equals the number of hosts, about 2.5 to 3 times. Ceph's
//! indep rule has the same chains.
//!
//! Sampling `size` *distinct* domains in proportion to weight slightly favours light
//! domains over heavy ones (the "multi-pick anomaly"), and a domain heavier than
//! `1 / size` of the total cannot get its full share; with moderately even weights the
//! effect is a few percent.

use std::collections::BTreeMap;
use std::fmt;

use crate::map::{
    BucketType, ClusterMap, CrushHierarchy, CrushItem, MapError, OsdInfo, Pool, PoolKind, PoolSpec,
    WEIGHT_ONE, crush_weight_fixed,
};
use crate::pg::{PgId, jenkins_mix};

/// Deepest walk from the root; the derived tree has four levels, so this is slack
/// that only guards against a hand-built cyclic hierarchy.
const MAX_DESCENT: usize = 16;

/// Rank of the draw below a failure domain. Ceph reuses the domain's rank there; a
/// constant makes the OSD serving a PG inside a domain depend only on the PG and
/// the domain, so a domain that changes rank (replicated order shifts, or another
/// domain joins) keeps the same OSD.
const LEAF_RANK: u32 = u32::MAX;

/// Rank of the replicated rule's draws among failure domains (see [`choose_firstn`]).
const FIRSTN_RANK: u32 = 0;

const HASH_SEED: u32 = 1_315_423_911;
const HASH_X: u32 = 231_232;
const HASH_Y: u32 = 1_232;

/// The CRUSH hash of two inputs (rjenkins1 pattern; fixed forever).
pub fn crush_hash2(a: u32, b: u32) -> u32 {
    let hash = HASH_SEED ^ a ^ b;
    let (a, b, hash) = jenkins_mix(a, b, hash);
    let (_, _, hash) = jenkins_mix(HASH_X, a, hash);
    let (_, _, hash) = jenkins_mix(b, HASH_Y, hash);
    hash
}

/// The CRUSH hash of three inputs, `(x, item, r)` (rjenkins1 pattern; fixed forever).
pub fn crush_hash3(a: u32, b: u32, c: u32) -> u32 {
    let hash = HASH_SEED ^ a ^ b ^ c;
    let (a, b, hash) = jenkins_mix(a, b, hash);
    let (c, x, hash) = jenkins_mix(c, HASH_X, hash);
    let (y, _, hash) = jenkins_mix(HASH_Y, a, hash);
    let (_, _, hash) = jenkins_mix(b, x, hash);
    let (_, _, hash) = jenkins_mix(y, c, hash);
    hash
}

/// `log2((hash + 1) / 2^32)` in 32.32 fixed point: a value in `[-32 * 2^32, 0]`.
///
/// Integer-only, so identical on every platform. The fraction is found by squaring the
/// mantissa (kept in `[1, 2)` with 62 fraction bits) 32 times: each squaring that
/// reaches 2 contributes a 1 bit. The result is exact to about 2^-30.
pub fn log2_fixed(hash: u32) -> i64 {
    let value = u64::from(hash) + 1;
    let int_part = i64::from(63 - value.leading_zeros());
    let mut mantissa = u128::from(value) << (62 - int_part);
    let mut fraction: i64 = 0;
    for _ in 0..32 {
        mantissa = (mantissa * mantissa) >> 62;
        fraction <<= 1;
        if mantissa >= 1 << 63 {
            fraction |= 1;
            mantissa >>= 1;
        }
    }
    ((int_part - 32) << 32) + fraction
}

/// The straw2 draw of one child: higher wins. `weight` is 16.16 fixed point and > 0.
fn straw2_draw(x: u32, item: CrushItem, r: u32, weight: u64) -> i128 {
    let log = log2_fixed(crush_hash3(x, item.hash_id(), r));
    (i128::from(log) << 32) / i128::from(weight)
}

/// Weight taken out of the hierarchy for one PG: chosen failure domains (so that no
/// two OSDs of a PG share one) and rejected OSDs (so that a refill never draws them
/// again). Removing an item also lowers every bucket above it, so straw2 keeps
/// drawing in proportion to the weight that is still available.
struct Exclusions<'h> {
    hierarchy: &'h CrushHierarchy,
    removed: BTreeMap<CrushItem, u64>,
}

impl<'h> Exclusions<'h> {
    fn new(hierarchy: &'h CrushHierarchy) -> Self {
        Exclusions {
            hierarchy,
            removed: BTreeMap::new(),
        }
    }

    /// Weight of `item` still available, given its full weight.
    fn available(&self, item: CrushItem, full: u64) -> u64 {
        full.saturating_sub(self.removed.get(&item).copied().unwrap_or(0))
    }

    /// Takes what is left of `item` out of it and of all its ancestors.
    fn exclude(&mut self, item: CrushItem) {
        let left = self.available(item, self.hierarchy.weight(item));
        let mut current = Some(item);
        for _ in 0..MAX_DESCENT {
            let Some(node) = current else { break };
            *self.removed.entry(node).or_insert(0) += left;
            current = self.hierarchy.parent(node).map(CrushItem::Bucket);
        }
    }

    /// The child of `children` with the highest straw2 draw over its available
    /// weight; `None` if nothing is available.
    fn straw2_choose(&self, children: &[(CrushItem, u64)], x: u32, r: u32) -> Option<CrushItem> {
        let mut best: Option<(i128, CrushItem)> = None;
        for &(item, weight) in children {
            let weight = self.available(item, weight);
            if weight == 0 {
                continue;
            }
            let draw = straw2_draw(x, item, r, weight);
            if best.is_none_or(|(best_draw, _)| draw > best_draw) {
                best = Some((draw, item));
            }
        }
        best.map(|(_, item)| item)
    }

    /// Walks down from `start` to an item of type `target`, choosing by straw2 among
    /// what is still available: with `ranks.domain` in the bucket whose children are
    /// of type `target`, with `ranks.upper` above it.
    fn descend(
        &self,
        start: CrushItem,
        x: u32,
        ranks: Ranks,
        target: BucketType,
    ) -> Option<CrushItem> {
        let mut item = start;
        for _ in 0..MAX_DESCENT {
            match item {
                CrushItem::Osd(_) => return (target == BucketType::Osd).then_some(item),
                CrushItem::Bucket(id) => {
                    let bucket = self.hierarchy.buckets.get(&id)?;
                    if bucket.kind == target {
                        return Some(item);
                    }
                    if bucket.kind < target {
                        return None;
                    }
                    let r = if child_type(bucket.kind) == target {
                        ranks.domain
                    } else {
                        ranks.upper
                    };
                    item = self.straw2_choose(&bucket.children, x, r)?;
                }
            }
        }
        None
    }

    /// One chooseleaf: an available failure domain drawn with `ranks`, then an
    /// available OSD under it drawn with [`LEAF_RANK`].
    fn choose_leaf(
        &self,
        x: u32,
        ranks: Ranks,
        failure_domain: BucketType,
    ) -> Option<(CrushItem, u32)> {
        let root = CrushItem::Bucket(self.hierarchy.root);
        let domain = self.descend(root, x, ranks, failure_domain)?;
        let leaf_ranks = Ranks {
            upper: LEAF_RANK,
            domain: LEAF_RANK,
        };
        match self.descend(domain, x, leaf_ranks, BucketType::Osd)? {
            CrushItem::Osd(osd) => Some((domain, osd)),
            CrushItem::Bucket(_) => None,
        }
    }

    /// Phase two's refill of one slot: draws with `ranks` until `accept` takes an
    /// OSD, excluding each rejected one, so it ends after at most one draw per OSD.
    fn refill(
        &mut self,
        x: u32,
        ranks: Ranks,
        failure_domain: BucketType,
        accept: &dyn Fn(u32) -> bool,
    ) -> Option<(CrushItem, u32)> {
        loop {
            let (domain, osd) = self.choose_leaf(x, ranks, failure_domain)?;
            if accept(osd) {
                self.exclude(domain);
                return Some((domain, osd));
            }
            self.exclude(CrushItem::Osd(osd));
        }
    }
}

/// The hash ranks of one pick: `domain` where the failure domains themselves compete,
/// `upper` in the buckets above them.
#[derive(Clone, Copy, Debug)]
struct Ranks {
    upper: u32,
    domain: u32,
}

/// The type of a bucket's children in the derived tree.
fn child_type(kind: BucketType) -> BucketType {
    match kind {
        BucketType::Root => BucketType::Zone,
        BucketType::Zone => BucketType::Host,
        BucketType::Host | BucketType::Osd => BucketType::Osd,
    }
}

/// Phase one: `numrep` times, a failure domain not yet taken and an OSD under it,
/// from CRUSH weights alone; the `i`-th pick uses `ranks_of(i)`. Stops early when no
/// domain is left.
fn choose_by_weight(
    hierarchy: &CrushHierarchy,
    x: u32,
    numrep: u32,
    failure_domain: BucketType,
    ranks_of: impl Fn(u32) -> Ranks,
) -> Vec<(CrushItem, u32)> {
    let mut exclusions = Exclusions::new(hierarchy);
    let mut chosen = Vec::new();
    for index in 0..numrep {
        let Some((domain, osd)) = exclusions.choose_leaf(x, ranks_of(index), failure_domain) else {
            break;
        };
        exclusions.exclude(domain);
        chosen.push((domain, osd));
    }
    chosen
}

/// Exclusions for phase two: the kept OSDs' domains and the rejected OSDs.
fn phase_two_exclusions<'h>(
    hierarchy: &'h CrushHierarchy,
    kept: impl Iterator<Item = CrushItem>,
    rejected: impl Iterator<Item = u32>,
) -> Exclusions<'h> {
    let mut exclusions = Exclusions::new(hierarchy);
    for domain in kept {
        exclusions.exclude(domain);
    }
    for osd in rejected {
        exclusions.exclude(CrushItem::Osd(osd));
    }
    exclusions
}

/// Replicated rule: up to `numrep` OSDs in distinct failure domains, in order.
///
/// `accept(osd)` is the in/out and reweight test for this PG (phase two, see the
/// module doc): rejected OSDs are dropped, the later ones shift forward, and
/// replacements are appended. The result is shorter than `numrep` only when the
/// hierarchy has too few failure domains with an accepted OSD.
pub fn choose_firstn(
    hierarchy: &CrushHierarchy,
    x: u32,
    numrep: u32,
    failure_domain: BucketType,
    accept: impl Fn(u32) -> bool,
) -> Vec<u32> {
    let chosen = choose_by_weight(hierarchy, x, numrep, failure_domain, |index| Ranks {
        upper: index,
        domain: FIRSTN_RANK,
    });
    let (mut kept, rejected): (Vec<_>, Vec<_>) =
        chosen.into_iter().partition(|&(_, osd)| accept(osd));
    if !rejected.is_empty() {
        let mut exclusions = phase_two_exclusions(
            hierarchy,
            kept.iter().map(|&(domain, _)| domain),
            rejected.iter().map(|&(_, osd)| osd),
        );
        for index in numrep..2 * numrep {
            if kept.len() as u32 >= numrep {
                break;
            }
            let ranks = Ranks {
                upper: index,
                domain: FIRSTN_RANK,
            };
            match exclusions.refill(x, ranks, failure_domain, &accept) {
                Some(found) => kept.push(found),
                None => break,
            }
        }
    }
    kept.into_iter().map(|(_, osd)| osd).collect()
}

/// Erasure-coding rule: exactly `numrep` positions, each an OSD in its own failure
/// domain, or `None` where no usable domain is left.
///
/// Position `i` is drawn with rank `i`. `accept` is as for [`choose_firstn`]; a
/// rejected OSD's position is refilled (rank `numrep + i`) without moving any other.
pub fn choose_indep(
    hierarchy: &CrushHierarchy,
    x: u32,
    numrep: u32,
    failure_domain: BucketType,
    accept: impl Fn(u32) -> bool,
) -> Vec<Option<u32>> {
    let mut slots: Vec<Option<(CrushItem, u32)>> = vec![None; numrep as usize];
    for (slot, found) in slots.iter_mut().zip(choose_by_weight(
        hierarchy,
        x,
        numrep,
        failure_domain,
        |position| Ranks {
            upper: position,
            domain: position,
        },
    )) {
        *slot = Some(found);
    }
    let rejected: Vec<u32> = slots
        .iter()
        .flatten()
        .map(|&(_, osd)| osd)
        .filter(|&osd| !accept(osd))
        .collect();
    let unfilled = slots.iter().any(Option::is_none);
    if !rejected.is_empty() || unfilled {
        for slot in &mut slots {
            if slot.is_some_and(|(_, osd)| rejected.contains(&osd)) {
                *slot = None;
            }
        }
        let mut exclusions = phase_two_exclusions(
            hierarchy,
            slots.iter().flatten().map(|&(domain, _)| domain),
            rejected.iter().copied(),
        );
        for (position, slot) in (0..numrep).zip(slots.iter_mut()) {
            if slot.is_none() {
                let rank = numrep + position;
                let ranks = Ranks {
                    upper: rank,
                    domain: rank,
                };
                *slot = exclusions.refill(x, ranks, failure_domain, &accept);
            }
        }
    }
    slots
        .into_iter()
        .map(|slot| slot.map(|(_, osd)| osd))
        .collect()
}

/// Why a PG could not be mapped.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CrushError {
    /// No pool with this id in the map.
    #[error("pool {0} does not exist in this map: refresh the map, or check the pool id")]
    PoolNotFound(u32),
    /// The PG seed is not below the pool's pg_num.
    #[error("pg {pg} does not exist: pool {} has pg_num {pg_num}", pg.pool)]
    PgOutOfRange {
        /// The PG asked for.
        pg: PgId,
        /// The pool's pg_num.
        pg_num: u32,
    },
    /// The map is inconsistent.
    #[error(transparent)]
    Map(#[from] MapError),
}

/// Where one PG lives at the map's epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgMapping {
    /// The PG.
    pub pg: PgId,
    /// CRUSH's answer after in/out and reweight, before up/down: replicated pools get
    /// a gap-free list (`Some` only), erasure-coded pools one entry per shard.
    pub crush: Vec<Option<u32>>,
    /// `crush` without down OSDs (dropped for replicated pools, `None` for EC shards).
    pub up: Vec<Option<u32>>,
    /// The first OSD of the up set, which coordinates the PG.
    pub primary: Option<u32>,
}

/// The first OSD of an up (or acting) set: the PG's primary.
pub fn primary(up: &[Option<u32>]) -> Option<u32> {
    up.iter().flatten().next().copied()
}

/// The CRUSH input of a PG: its seed hashed with its pool, so that PG `n` of two
/// pools does not land on the same OSDs.
pub fn placement_input(pg: PgId) -> u32 {
    crush_hash2(pg.seed, pg.pool)
}

#[derive(Clone, Copy, Debug)]
struct OsdState {
    up: bool,
    /// 16.16 fixed-point share the OSD keeps: 0 when out, else its reweight.
    keep: u64,
}

/// Everything needed to map the PGs of one pool at one epoch, computed once.
///
/// Building the hierarchy is the expensive part; reuse one `PoolPlacement` to map all
/// PGs of a pool.
#[derive(Clone, Debug)]
pub struct PoolPlacement {
    pool: Pool,
    hierarchy: CrushHierarchy,
    osds: BTreeMap<u32, OsdState>,
}

impl PoolPlacement {
    /// Prepares to map PGs of pool `pool_id` under `map`.
    pub fn new(map: &ClusterMap, pool_id: u32) -> Result<Self, CrushError> {
        let pool = map
            .pools
            .get(&pool_id)
            .ok_or(CrushError::PoolNotFound(pool_id))?
            .clone();
        let hierarchy = map.crush_hierarchy(pool.device_class.as_deref())?;
        let osds = map
            .osds
            .values()
            .map(|osd| {
                let keep = if osd.in_ {
                    crush_weight_fixed(osd.reweight).min(WEIGHT_ONE)
                } else {
                    0
                };
                (osd.id, OsdState { up: osd.up, keep })
            })
            .collect();
        Ok(PoolPlacement {
            pool,
            hierarchy,
            osds,
        })
    }

    /// The pool being placed.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The CRUSH tree this pool uses (restricted to its device class).
    pub fn hierarchy(&self) -> &CrushHierarchy {
        &self.hierarchy
    }

    /// Phase two's test: does `osd` keep a PG with input `x`?
    fn accepts(&self, osd: u32, x: u32) -> bool {
        let Some(state) = self.osds.get(&osd) else {
            return false;
        };
        match state.keep {
            0 => false,
            keep if keep >= WEIGHT_ONE => true,
            keep => u64::from(crush_hash2(x, osd) & 0xffff) < keep,
        }
    }

    fn is_up(&self, osd: u32) -> bool {
        self.osds.get(&osd).is_some_and(|state| state.up)
    }

    /// Maps PG `seed` of this pool. Seeds at or beyond `pg_num` are mapped too (the
    /// PGs a future pg_num would have), so callers check the range.
    pub fn map_pg(&self, seed: u32) -> PgMapping {
        let pg = PgId::new(self.pool.id, seed);
        let x = placement_input(pg);
        let numrep = self.pool.size();
        let domain = self.pool.failure_domain;
        let accept = |osd| self.accepts(osd, x);
        let (crush, up): (Vec<Option<u32>>, Vec<Option<u32>>) = match self.pool.kind {
            PoolKind::Replicated { .. } => {
                let osds = choose_firstn(&self.hierarchy, x, numrep, domain, accept);
                let up = osds
                    .iter()
                    .copied()
                    .filter(|&osd| self.is_up(osd))
                    .map(Some)
                    .collect();
                (osds.into_iter().map(Some).collect(), up)
            }
            PoolKind::Erasure { .. } => {
                let shards = choose_indep(&self.hierarchy, x, numrep, domain, accept);
                let up = shards
                    .iter()
                    .map(|shard| shard.filter(|&osd| self.is_up(osd)))
                    .collect();
                (shards, up)
            }
        };
        let primary = primary(&up);
        PgMapping {
            pg,
            crush,
            up,
            primary,
        }
    }
}

/// The up set of `pg` under `map` (see [`PgMapping::up`]).
///
/// Builds the pool's hierarchy on every call; use [`PoolPlacement`] for many PGs.
pub fn pg_to_up_osds(map: &ClusterMap, pg: PgId) -> Result<Vec<Option<u32>>, CrushError> {
    Ok(pg_mapping(map, pg)?.up)
}

/// The full mapping of `pg` under `map`, after checking that the PG exists.
pub fn pg_mapping(map: &ClusterMap, pg: PgId) -> Result<PgMapping, CrushError> {
    let placement = PoolPlacement::new(map, pg.pool)?;
    let pg_num = placement.pool.pg_num;
    if pg.seed >= pg_num {
        return Err(CrushError::PgOutOfRange { pg, pg_num });
    }
    Ok(placement.map_pg(pg.seed))
}

/// Parameters of a made-up cluster for `lcpfs crush test`.
#[derive(Clone, Debug, PartialEq)]
pub struct SyntheticCluster {
    /// Zones; hosts are spread over them round-robin. 0 puts every host in the default zone.
    pub zones: u32,
    /// Hosts in total.
    pub hosts: u32,
    /// OSDs on each host.
    pub osds_per_host: u32,
    /// CRUSH weight of every OSD.
    pub osd_weight: f64,
    /// The one pool created in the map.
    pub pool: PoolKind,
    /// Its failure domain.
    pub failure_domain: BucketType,
    /// Its pg_num.
    pub pg_num: u32,
}

impl Default for SyntheticCluster {
    /// Ten hosts of four 1-TiB OSDs, a 3-way replicated pool over hosts, 1024 PGs.
    fn default() -> Self {
        SyntheticCluster {
            zones: 0,
            hosts: 10,
            osds_per_host: 4,
            osd_weight: 1.0,
            pool: PoolKind::Replicated {
                size: 3,
                min_size: 2,
            },
            failure_domain: BucketType::Host,
            pg_num: 1024,
        }
    }
}

/// Builds the map a [`SyntheticCluster`] describes; returns it with its pool's id.
///
/// OSD `h * osds_per_host + i` is the `i`-th OSD of host `host{h}`; all are up and in.
pub fn synthetic_map(params: &SyntheticCluster) -> Result<(ClusterMap, u32), MapError> {
    let mut map = ClusterMap::new("synthetic");
    for host in 0..params.hosts {
        for index in 0..params.osds_per_host {
            let id = host
                .checked_mul(params.osds_per_host)
                .and_then(|first| first.checked_add(index))
                .ok_or(MapError::OsdIdTooLarge(u32::MAX))?;
            map.add_osd(OsdInfo {
                zone: (params.zones > 0).then(|| format!("zone{}", host % params.zones)),
                weight: params.osd_weight,
                ..OsdInfo::new(
                    id,
                    format!("127.0.0.1:{}", 6800u64 + u64::from(id)),
                    format!("host{host}"),
                )
            })?;
        }
    }
    let (pool, _) = map.create_pool(PoolSpec {
        name: "synthetic".to_owned(),
        kind: params.pool,
        pg_num: params.pg_num,
        failure_domain: params.failure_domain,
        device_class: None,
        compression: None,
    })?;
    Ok((map, pool))
}

/// PG count of one OSD against its weight share.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct OsdUtilization {
    /// OSD id.
    pub osd: u32,
    /// PG shards placed on it.
    pub pgs: u64,
    /// Shards it would hold if placement followed `weight * reweight` exactly.
    pub expected: f64,
    /// `(pgs - expected) / expected`, in percent.
    pub deviation_pct: f64,
}

/// How much data one simulated change moved.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Movement {
    /// The OSD added or marked out.
    pub osd: u32,
    /// Shards whose OSD changed.
    pub shards_moved: u64,
    /// Shards placed in total before the change.
    pub shards_total: u64,
    /// `shards_moved / shards_total`, in percent.
    pub moved_pct: f64,
    /// What an ideal placement would move, in percent.
    pub expected_pct: f64,
}

/// What `lcpfs crush test` prints: balance and movement of one pool's placement.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct UtilizationReport {
    /// Pool id.
    pub pool: u32,
    /// PGs mapped (seeds `0..num_pgs`).
    pub num_pgs: u32,
    /// Shards CRUSH could not place (too few usable failure domains).
    pub unplaced_shards: u64,
    /// Every OSD that can hold the pool's data, by id.
    pub per_osd: Vec<OsdUtilization>,
    /// Adding one OSD of average weight on a new host.
    pub moved_on_add: Option<Movement>,
    /// Marking the lowest-numbered OSD out.
    pub moved_on_remove: Option<Movement>,
}

fn map_all(placement: &PoolPlacement, num_pgs: u32) -> Vec<Vec<Option<u32>>> {
    (0..num_pgs)
        .map(|seed| placement.map_pg(seed).crush)
        .collect()
}

/// Shards that changed OSD between two CRUSH results of the same PG: set difference
/// for replicated pools (order is not data movement), positions for erasure coding.
fn shards_moved(erasure: bool, before: &[Option<u32>], after: &[Option<u32>]) -> u64 {
    if erasure {
        before
            .iter()
            .zip(after)
            .filter(|(old, new)| new.is_some() && old != new)
            .count() as u64
    } else {
        after
            .iter()
            .flatten()
            .filter(|&&osd| !before.contains(&Some(osd)))
            .count() as u64
    }
}

fn movement(
    osd: u32,
    erasure: bool,
    before: &[Vec<Option<u32>>],
    after: &[Vec<Option<u32>>],
    expected_pct: f64,
) -> Movement {
    let shards_total: u64 = before
        .iter()
        .map(|pg| pg.iter().flatten().count() as u64)
        .sum();
    let shards_moved = before
        .iter()
        .zip(after)
        .map(|(old, new)| shards_moved(erasure, old, new))
        .sum();
    Movement {
        osd,
        shards_moved,
        shards_total,
        moved_pct: percent(shards_moved as f64, shards_total as f64),
        expected_pct,
    }
}

fn percent(part: f64, whole: f64) -> f64 {
    if whole > 0.0 {
        100.0 * part / whole
    } else {
        0.0
    }
}

/// Maps PGs `0..num_pgs` of `pool_id` and reports balance, then simulates adding an
/// OSD and marking one out and reports how many shards move.
pub fn utilization_report(
    map: &ClusterMap,
    pool_id: u32,
    num_pgs: u32,
) -> Result<UtilizationReport, CrushError> {
    let placement = PoolPlacement::new(map, pool_id)?;
    let erasure = placement.pool.is_erasure();
    let before = map_all(&placement, num_pgs);
    let mut counts: BTreeMap<u32, u64> = BTreeMap::new();
    for osd in before.iter().flatten().flatten() {
        *counts.entry(*osd).or_default() += 1;
    }
    let placed: u64 = counts.values().sum();
    let wanted = u64::from(num_pgs) * u64::from(placement.pool.size());

    // Effective weights of the OSDs this pool can use.
    let eligible: Vec<&OsdInfo> = placement
        .hierarchy
        .osd_location
        .keys()
        .filter_map(|id| map.osds.get(id))
        .collect();
    let effective = |osd: &OsdInfo| {
        if osd.in_ {
            osd.weight * osd.reweight
        } else {
            0.0
        }
    };
    let total_effective: f64 = eligible.iter().map(|osd| effective(osd)).sum();
    let per_osd = eligible
        .iter()
        .filter(|osd| effective(osd) > 0.0)
        .map(|osd| {
            let pgs = counts.get(&osd.id).copied().unwrap_or(0);
            let expected = placed as f64 * effective(osd) / total_effective;
            OsdUtilization {
                osd: osd.id,
                pgs,
                expected,
                deviation_pct: percent(pgs as f64 - expected, expected),
            }
        })
        .collect::<Vec<_>>();

    let in_osds: Vec<&&OsdInfo> = eligible.iter().filter(|osd| effective(osd) > 0.0).collect();
    let moved_on_add = match in_osds.first() {
        None => None,
        Some(template) => {
            let weight = in_osds.iter().map(|osd| osd.weight).sum::<f64>() / in_osds.len() as f64;
            let new_id = map.osds.keys().next_back().map_or(0, |&id| id + 1);
            let mut grown = map.clone();
            grown.add_osd(OsdInfo {
                zone: template.zone.clone(),
                device_class: template.device_class.clone(),
                weight,
                ..OsdInfo::new(new_id, "", format!("crush-test-new-host-{new_id}"))
            })?;
            let after = map_all(&PoolPlacement::new(&grown, pool_id)?, num_pgs);
            let total_crush: f64 = in_osds.iter().map(|osd| osd.weight).sum();
            Some(movement(
                new_id,
                erasure,
                &before,
                &after,
                percent(weight, total_crush + weight),
            ))
        }
    };
    let moved_on_remove = match in_osds.first() {
        None => None,
        Some(victim) => {
            let mut shrunk = map.clone();
            shrunk.mark_out(victim.id)?;
            let after = map_all(&PoolPlacement::new(&shrunk, pool_id)?, num_pgs);
            let held = counts.get(&victim.id).copied().unwrap_or(0);
            Some(movement(
                victim.id,
                erasure,
                &before,
                &after,
                percent(held as f64, placed as f64),
            ))
        }
    };
    Ok(UtilizationReport {
        pool: pool_id,
        num_pgs,
        unplaced_shards: wanted.saturating_sub(placed),
        per_osd,
        moved_on_add,
        moved_on_remove,
    })
}

impl fmt::Display for UtilizationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "pool {}: {} PGs mapped", self.pool, self.num_pgs)?;
        if self.unplaced_shards > 0 {
            writeln!(
                f,
                "{} shards could not be placed (too few failure domains)",
                self.unplaced_shards
            )?;
        }
        writeln!(
            f,
            "{:>8} {:>8} {:>10} {:>9}",
            "osd", "pgs", "expected", "dev%"
        )?;
        for row in &self.per_osd {
            writeln!(
                f,
                "{:>8} {:>8} {:>10.1} {:>+9.2}",
                format!("osd.{}", row.osd),
                row.pgs,
                row.expected,
                row.deviation_pct
            )?;
        }
        if let Some(worst) = self
            .per_osd
            .iter()
            .map(|row| row.deviation_pct.abs())
            .reduce(f64::max)
        {
            writeln!(f, "largest deviation: {worst:.2}%")?;
        }
        for (what, movement) in [
            ("adding osd", &self.moved_on_add),
            ("marking out osd", &self.moved_on_remove),
        ] {
            if let Some(movement) = movement {
                writeln!(
                    f,
                    "{what}.{}: {} of {} shards move ({:.2}%, ideal {:.2}%)",
                    movement.osd,
                    movement.shards_moved,
                    movement.shards_total,
                    movement.moved_pct,
                    movement.expected_pct
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::tests::osd;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn hash_golden_vectors() {
        assert_eq!(crush_hash2(0, 0), 0x19ad_4ce9);
        assert_eq!(crush_hash2(1, 2), 0xb78d_ee9c);
        assert_eq!(crush_hash2(u32::MAX, 7), 0xab5c_cd1e);
        assert_eq!(crush_hash2(12345, (-3i32) as u32), 0x8607_7b37);
        assert_eq!(crush_hash3(0, 0, 0), 0x7a3b_f3b2);
        assert_eq!(crush_hash3(1, 2, 3), 0x735a_d42b);
        assert_eq!(crush_hash3(u32::MAX, u32::MAX, 49), 0xa7a0_4713);
        assert_eq!(crush_hash3(123_456, 7, 0), 0xa2ba_b3b9);
    }

    #[test]
    fn log2_fixed_matches_float_log() {
        assert_eq!(log2_fixed(u32::MAX), 0);
        assert_eq!(log2_fixed(0), -32 << 32);
        assert_eq!(log2_fixed((1 << 31) - 1), -1 << 32);
        let mut value: u32 = 1;
        for _ in 0..100_000 {
            value = value.wrapping_mul(2_654_435_761).wrapping_add(12345);
            let exact = ((f64::from(value) + 1.0) / 4_294_967_296.0).log2();
            let fixed = log2_fixed(value) as f64 / 4_294_967_296.0;
            assert!((exact - fixed).abs() < 1e-8, "{value}: {exact} vs {fixed}");
        }
        // Monotonic over a dense sample, so draws order like the real logarithm.
        let mut previous = i64::MIN;
        for value in (0..u32::MAX).step_by(65_537) {
            let log = log2_fixed(value);
            assert!(log >= previous, "{value}");
            previous = log;
        }
    }

    /// `hosts[h]` lists the CRUSH weights of host `h`'s OSDs; OSD ids run in order.
    fn weighted_map(hosts: &[Vec<f64>], zones: u32) -> ClusterMap {
        let mut map = ClusterMap::new("fsid-crush");
        let mut id = 0;
        for (host, weights) in hosts.iter().enumerate() {
            for &weight in weights {
                map.add_osd(OsdInfo {
                    weight,
                    zone: (zones > 0).then(|| format!("z{}", host as u32 % zones)),
                    ..osd(id, &format!("host{host}"))
                })
                .unwrap();
                id += 1;
            }
        }
        map
    }

    fn with_pool(
        mut map: ClusterMap,
        kind: PoolKind,
        failure_domain: BucketType,
        pg_num: u32,
    ) -> (ClusterMap, u32) {
        let (pool, _) = map
            .create_pool(PoolSpec {
                name: "test".into(),
                kind,
                pg_num,
                failure_domain,
                device_class: None,
                compression: None,
            })
            .unwrap();
        (map, pool)
    }

    const REP3: PoolKind = PoolKind::Replicated {
        size: 3,
        min_size: 2,
    };
    const EC42: PoolKind = PoolKind::Erasure { k: 4, m: 2 };

    fn map_pool(map: &ClusterMap, pool: u32, num_pgs: u32) -> Vec<PgMapping> {
        let placement = PoolPlacement::new(map, pool).unwrap();
        (0..num_pgs).map(|seed| placement.map_pg(seed)).collect()
    }

    fn counts(mappings: &[PgMapping]) -> BTreeMap<u32, u64> {
        let mut counts = BTreeMap::new();
        for osd in mappings.iter().flat_map(|m| m.crush.iter().flatten()) {
            *counts.entry(*osd).or_insert(0) += 1;
        }
        counts
    }

    /// Checks every OSD's share against its weight share: each within
    /// `sigmas` binomial standard deviations plus `bias_pct` percent.
    fn assert_balanced(map: &ClusterMap, mappings: &[PgMapping], sigmas: f64, bias_pct: f64) {
        let counts = counts(mappings);
        let placed: u64 = counts.values().sum();
        let total: f64 = map.osds.values().map(|osd| osd.weight).sum();
        for osd in map.osds.values() {
            let share = osd.weight / total;
            let expected = placed as f64 * share;
            let got = counts.get(&osd.id).copied().unwrap_or(0) as f64;
            let sigma = (expected * (1.0 - share)).sqrt();
            let allowed = sigmas * sigma + expected * bias_pct / 100.0;
            assert!(
                (got - expected).abs() <= allowed,
                "osd.{} (weight {}): {got} shards, expected {expected:.0} ± {allowed:.0}",
                osd.id,
                osd.weight
            );
        }
    }

    #[test]
    fn placement_is_deterministic_and_pinned() {
        let (map, pool) = with_pool(
            weighted_map(&vec![vec![1.0; 4]; 10], 0),
            REP3,
            BucketType::Host,
            256,
        );
        let first = map_pool(&map, pool, 256);
        // Same answer from a fresh placement, and from a map that went through JSON.
        let json = serde_json::to_string(&map).unwrap();
        let decoded: ClusterMap = serde_json::from_str(&json).unwrap();
        assert_eq!(first, map_pool(&decoded, pool, 256));
        // Pinned: a change here means every cluster's data moves.
        let pinned: Vec<Vec<Option<u32>>> = first.iter().take(4).map(|m| m.up.clone()).collect();
        let want: Vec<Vec<Option<u32>>> = [[12, 10, 32], [10, 39, 3], [22, 30, 18], [15, 29, 22]]
            .iter()
            .map(|pg| pg.iter().map(|&osd| Some(osd)).collect())
            .collect();
        assert_eq!(pinned, want, "replicated placement changed");
        let (map, pool) = with_pool(
            weighted_map(&vec![vec![1.0; 4]; 10], 0),
            EC42,
            BucketType::Host,
            256,
        );
        let pinned: Vec<Vec<Option<u32>>> =
            map_pool(&map, pool, 2).into_iter().map(|m| m.up).collect();
        let want: Vec<Vec<Option<u32>>> = [[12, 2, 25, 4, 16, 28], [10, 39, 3, 16, 35, 6]]
            .iter()
            .map(|pg| pg.iter().map(|&osd| Some(osd)).collect())
            .collect();
        assert_eq!(pinned, want, "erasure-coded placement changed");
    }

    #[test]
    fn equal_weights_balance_over_10k_pgs() {
        for (kind, failure_domain) in [
            (REP3, BucketType::Host),
            (REP3, BucketType::Osd),
            (EC42, BucketType::Host),
        ] {
            let (map, pool) = with_pool(
                weighted_map(&vec![vec![1.0; 4]; 10], 0),
                kind,
                failure_domain,
                10_000,
            );
            let mappings = map_pool(&map, pool, 10_000);
            assert_balanced(&map, &mappings, 4.5, 0.0);
        }
    }

    #[test]
    fn unequal_weights_balance_over_10k_pgs() {
        // Hosts of equal total weight with unequal OSDs: straw2 inside a host is exact.
        let hosts: Vec<Vec<f64>> = (0..8).map(|_| vec![1.0, 2.0, 3.0, 4.0]).collect();
        let (map, pool) = with_pool(weighted_map(&hosts, 0), REP3, BucketType::Host, 10_000);
        assert_balanced(&map, &map_pool(&map, pool, 10_000), 4.5, 0.0);
        // Unequal hosts: allow the multi-pick anomaly on top of noise.
        let hosts: Vec<Vec<f64>> = (0..10).map(|h| vec![1.0 + (h % 3) as f64; 3]).collect();
        let (map, pool) = with_pool(weighted_map(&hosts, 0), REP3, BucketType::Host, 10_000);
        assert_balanced(&map, &map_pool(&map, pool, 10_000), 4.5, 5.0);
    }

    /// Hosts of 1 to 4 OSDs with assorted weights, and a zone count (0 = no zones).
    fn cluster() -> impl Strategy<Value = (Vec<Vec<f64>>, u32)> {
        let weight = prop::sample::select(vec![0.5, 1.0, 2.0, 4.0]);
        (
            proptest::collection::vec(proptest::collection::vec(weight, 1..5), 3..9),
            0u32..3,
        )
    }

    fn rule() -> impl Strategy<Value = (PoolKind, BucketType)> {
        let kind = prop_oneof![
            (1u32..=3).prop_map(|size| PoolKind::Replicated { size, min_size: 1 }),
            (1u32..=3, 1u32..=2).prop_map(|(k, m)| PoolKind::Erasure { k, m }),
        ];
        let domain =
            prop::sample::select(vec![BucketType::Osd, BucketType::Host, BucketType::Zone]);
        (kind, domain)
    }

    fn try_pool(
        map: &ClusterMap,
        kind: PoolKind,
        failure_domain: BucketType,
    ) -> Option<(ClusterMap, u32)> {
        let spec = PoolSpec {
            name: "test".into(),
            kind,
            pg_num: 128,
            failure_domain,
            device_class: None,
            compression: None,
        };
        map.validate_pool(&spec).ok()?;
        let mut map = map.clone();
        let (pool, _) = map.create_pool(spec).ok()?;
        Some((map, pool))
    }

    /// OSDs a new map added to a PG, per the movement rule of the pool kind.
    fn newcomers(erasure: bool, old: &[Option<u32>], new: &[Option<u32>]) -> Vec<u32> {
        if erasure {
            old.iter()
                .zip(new)
                .filter(|(before, after)| before != after)
                .filter_map(|(_, after)| *after)
                .collect()
        } else {
            new.iter()
                .flatten()
                .copied()
                .filter(|osd| !old.contains(&Some(*osd)))
                .collect()
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        /// Every PG gets `size` OSDs (all usable here), in distinct failure domains.
        #[test]
        fn results_use_distinct_failure_domains(
            (hosts, zones) in cluster(),
            (kind, failure_domain) in rule(),
        ) {
            let Some((map, pool)) = try_pool(&weighted_map(&hosts, zones), kind, failure_domain) else {
                return Ok(());
            };
            let placement = PoolPlacement::new(&map, pool).unwrap();
            let tree = placement.hierarchy();
            let size = placement.pool().size() as usize;
            for seed in 0..128 {
                let mapping = placement.map_pg(seed);
                prop_assert_eq!(mapping.crush.len(), size, "{:?}", mapping);
                let osds: Vec<u32> = mapping.crush.iter().flatten().copied().collect();
                prop_assert_eq!(osds.len(), size, "unfilled position: {:?}", mapping);
                let domains: BTreeSet<CrushItem> = osds
                    .iter()
                    .map(|&osd| tree.failure_domain_of(osd, failure_domain).unwrap())
                    .collect();
                prop_assert_eq!(domains.len(), size, "shared failure domain: {:?}", mapping);
                prop_assert_eq!(&mapping.up, &mapping.crush);
                prop_assert_eq!(mapping.primary, osds.first().copied());
                prop_assert_eq!(mapping, placement.map_pg(seed), "not deterministic");
            }
        }

        /// An OSD of CRUSH weight 0 never receives a PG, whatever else is in the map.
        #[test]
        fn weight_zero_is_never_chosen(
            (mut hosts, zones) in cluster(),
            (kind, failure_domain) in rule(),
            victim in any::<prop::sample::Index>(),
        ) {
            let host = victim.index(hosts.len());
            hosts[host][0] = 0.0;
            let Some((map, pool)) = try_pool(&weighted_map(&hosts, zones), kind, failure_domain) else {
                return Ok(());
            };
            let zero: u32 = hosts[..host].iter().map(|h| h.len() as u32).sum();
            let placement = PoolPlacement::new(&map, pool).unwrap();
            for seed in 0..128 {
                prop_assert!(!placement.map_pg(seed).crush.contains(&Some(zero)));
            }
        }

        /// Out (or reweighted) OSDs: only PGs that held the OSD change, and in them only
        /// its slot; marking it in again restores every PG.
        #[test]
        fn marking_out_moves_only_the_pgs_it_held(
            (hosts, zones) in cluster(),
            (kind, failure_domain) in rule(),
            victim in any::<prop::sample::Index>(),
            reweight in prop::sample::select(vec![0.0, 0.3, 0.7]),
        ) {
            let Some((map, pool)) = try_pool(&weighted_map(&hosts, zones), kind, failure_domain) else {
                return Ok(());
            };
            let osd = victim.index(map.osds.len()) as u32;
            let erasure = map.pools[&pool].is_erasure();
            let before = map_pool(&map, pool, 128);
            let mut out = map.clone();
            if reweight == 0.0 {
                out.mark_out(osd).unwrap();
            } else {
                out.reweight(osd, reweight).unwrap();
            }
            let after = map_pool(&out, pool, 128);
            for (old, new) in before.iter().zip(&after) {
                if !old.crush.contains(&Some(osd)) || (reweight > 0.0 && old == new) {
                    prop_assert_eq!(old, new, "a PG without osd.{} moved", osd);
                    continue;
                }
                if erasure {
                    for (position, (was, now)) in old.crush.iter().zip(&new.crush).enumerate() {
                        if *was != Some(osd) {
                            prop_assert_eq!(was, now, "shard {} moved: {:?} -> {:?}", position, old, new);
                        }
                    }
                } else {
                    let kept: Vec<Option<u32>> =
                        old.crush.iter().copied().filter(|&o| o != Some(osd)).collect();
                    prop_assert_eq!(&new.crush[..kept.len()], &kept[..], "{:?} -> {:?}", old, new);
                }
                if reweight == 0.0 {
                    prop_assert!(!new.crush.contains(&Some(osd)));
                }
            }
            let mut back = out.clone();
            if reweight == 0.0 {
                back.mark_in(osd).unwrap();
            } else {
                back.reweight(osd, 1.0).unwrap();
            }
            prop_assert_eq!(map_pool(&back, pool, 128), before);
        }

        /// A new host with one OSD, in a single-zone cluster: every PG keeps its OSDs or
        /// swaps exactly one of them for the new OSD (replicated pools).
        #[test]
        fn adding_a_host_moves_pgs_only_onto_it(
            (hosts, _) in cluster(),
            size in 1u32..=3,
            weight in prop::sample::select(vec![0.5, 1.0, 3.0]),
        ) {
            let kind = PoolKind::Replicated { size, min_size: 1 };
            let failure_domain = BucketType::Host;
            let Some((map, pool)) = try_pool(&weighted_map(&hosts, 0), kind, failure_domain) else {
                return Ok(());
            };
            let new_id = map.osds.len() as u32;
            let mut grown = map.clone();
            grown.add_osd(OsdInfo { weight, ..osd(new_id, "new-host") }).unwrap();
            for (old, new) in map_pool(&map, pool, 128).iter().zip(&map_pool(&grown, pool, 128)) {
                let added = newcomers(false, &old.crush, &new.crush);
                prop_assert!(added.is_empty() || added == vec![new_id], "{:?} -> {:?}", old, new);
            }
        }
    }

    fn flat_hosts(hosts: usize, osds: usize) -> Vec<Vec<f64>> {
        vec![vec![1.0; osds]; hosts]
    }

    /// Shards moved onto `new_id` over 10k PGs, checked against `w / W` within 4.5 sigma.
    fn assert_moved_share(moved: u64, shards: u64, share: f64) {
        let expected = shards as f64 * share;
        let sigma = (expected * (1.0 - share)).sqrt();
        assert!(
            (moved as f64 - expected).abs() <= 4.5 * sigma,
            "{moved} shards moved onto the new OSD, expected {expected:.0} ± {:.0}",
            4.5 * sigma
        );
    }

    #[test]
    fn adding_an_osd_moves_its_weight_share() {
        // Flat: failure domain osd on a single host; the new OSD joins that host.
        let (map, pool) = with_pool(
            weighted_map(&flat_hosts(1, 20), 0),
            REP3,
            BucketType::Osd,
            10_000,
        );
        let mut grown = map.clone();
        grown.add_osd(osd(20, "host0")).unwrap();
        let (before, after) = (map_pool(&map, pool, 10_000), map_pool(&grown, pool, 10_000));
        let mut moved = 0;
        for (old, new) in before.iter().zip(&after) {
            let added = newcomers(false, &old.crush, &new.crush);
            assert!(added.is_empty() || added == vec![20], "{old:?} -> {new:?}");
            moved += added.len() as u64;
        }
        assert_moved_share(moved, 30_000, 1.0 / 21.0);

        // A new host as heavy as the others: 1/11 of the shards move, all onto it.
        let (map, pool) = with_pool(
            weighted_map(&flat_hosts(10, 4), 0),
            REP3,
            BucketType::Host,
            10_000,
        );
        let mut grown = map.clone();
        grown
            .add_osd(OsdInfo {
                weight: 4.0,
                ..osd(40, "host10")
            })
            .unwrap();
        let (before, after) = (map_pool(&map, pool, 10_000), map_pool(&grown, pool, 10_000));
        let mut moved = 0;
        for (old, new) in before.iter().zip(&after) {
            let added = newcomers(false, &old.crush, &new.crush);
            assert!(added.is_empty() || added == vec![40], "{old:?} -> {new:?}");
            moved += added.len() as u64;
        }
        assert_moved_share(moved, 30_000, 4.0 / 44.0);
    }

    #[test]
    fn adding_an_osd_to_a_host_moves_pgs_into_that_host() {
        // Host failure domain, new OSD on host0: data moves only into host0; about
        // w / W of the shards land on the new OSD, and the total stays below twice that.
        for kind in [REP3, EC42] {
            let (map, pool) = with_pool(
                weighted_map(&flat_hosts(10, 4), 0),
                kind,
                BucketType::Host,
                10_000,
            );
            let erasure = map.pools[&pool].is_erasure();
            let shards = 10_000 * u64::from(map.pools[&pool].size());
            let mut grown = map.clone();
            grown.add_osd(osd(40, "host0")).unwrap();
            let host0: Vec<u32> = vec![0, 1, 2, 3, 40];
            let (before, after) = (map_pool(&map, pool, 10_000), map_pool(&grown, pool, 10_000));
            let (mut onto_new, mut total) = (0u64, 0u64);
            for (old, new) in before.iter().zip(&after) {
                let added = newcomers(erasure, &old.crush, &new.crush);
                if !erasure {
                    assert!(
                        added.iter().all(|osd| host0.contains(osd)),
                        "{old:?} -> {new:?}"
                    );
                }
                onto_new += added.iter().filter(|&&osd| osd == 40).count() as u64;
                total += added.len() as u64;
            }
            assert_moved_share(onto_new, shards, 1.0 / 41.0);
            let limit = if erasure { 2.5 } else { 2.0 };
            assert!(
                (total as f64) < limit * shards as f64 / 41.0,
                "{kind:?}: {total} shards moved for 1/41 of the weight"
            );
        }
    }

    #[test]
    fn reweight_keeps_its_fraction() {
        let (mut map, pool) = with_pool(
            weighted_map(&flat_hosts(10, 4), 0),
            REP3,
            BucketType::Host,
            10_000,
        );
        let before = counts(&map_pool(&map, pool, 10_000))[&5];
        map.reweight(5, 0.5).unwrap();
        let after = counts(&map_pool(&map, pool, 10_000))[&5];
        let expected = before as f64 * 0.5;
        let sigma = (before as f64 * 0.25).sqrt();
        assert!(
            (after as f64 - expected).abs() <= 4.5 * sigma,
            "{before} -> {after}"
        );
    }

    #[test]
    fn down_osds_leave_the_up_set_but_not_the_crush_result() {
        for kind in [REP3, EC42] {
            let (mut map, pool) = with_pool(
                weighted_map(&flat_hosts(8, 2), 0),
                kind,
                BucketType::Host,
                64,
            );
            let before = map_pool(&map, pool, 64);
            let first = before[0].crush[0].unwrap();
            map.mark_down(first).unwrap();
            for (old, new) in before.iter().zip(&map_pool(&map, pool, 64)) {
                assert_eq!(old.crush, new.crush, "down must not move data");
                if map.pools[&pool].is_erasure() {
                    let want: Vec<Option<u32>> = old
                        .crush
                        .iter()
                        .map(|&o| o.filter(|&o| o != first))
                        .collect();
                    assert_eq!(new.up, want);
                } else {
                    let want: Vec<Option<u32>> = old
                        .crush
                        .iter()
                        .copied()
                        .filter(|&o| o != Some(first))
                        .collect();
                    assert_eq!(new.up, want);
                }
                assert_eq!(new.primary, primary(&new.up));
                assert_ne!(new.primary, Some(first));
            }
        }
    }

    #[test]
    fn unfillable_positions_are_none_and_short_lists_for_replicas() {
        // 6 hosts, EC 4+2 over hosts: with host0 out, no 6th host is left.
        let (mut map, pool) = with_pool(
            weighted_map(&flat_hosts(6, 2), 0),
            EC42,
            BucketType::Host,
            64,
        );
        let before = map_pool(&map, pool, 64);
        map.mark_out(0).unwrap();
        map.mark_out(1).unwrap();
        for (old, new) in before.iter().zip(&map_pool(&map, pool, 64)) {
            for (was, now) in old.crush.iter().zip(&new.crush) {
                match was {
                    Some(0 | 1) => assert_eq!(*now, None, "{old:?} -> {new:?}"),
                    _ => assert_eq!(was, now),
                }
            }
        }
        // 3 hosts, size 3: with host0 out, PGs get the two remaining hosts.
        let (mut map, pool) = with_pool(
            weighted_map(&flat_hosts(3, 2), 0),
            REP3,
            BucketType::Host,
            64,
        );
        map.mark_out(0).unwrap();
        map.mark_out(1).unwrap();
        for mapping in map_pool(&map, pool, 64) {
            assert_eq!(mapping.crush.len(), 2, "{mapping:?}");
        }
    }

    #[test]
    fn device_class_restricts_placement() {
        let mut map = weighted_map(&flat_hosts(4, 2), 0);
        for host in 0..4u32 {
            map.add_osd(OsdInfo {
                device_class: "ssd".into(),
                ..osd(100 + host, &format!("host{host}"))
            })
            .unwrap();
        }
        let (_, _) = map
            .create_pool(PoolSpec {
                device_class: Some("ssd".into()),
                ..crate::map::tests::replicated("fast", 3, 64, BucketType::Host)
            })
            .unwrap();
        let pool = map.pool_by_name("fast").unwrap().id;
        for mapping in map_pool(&map, pool, 64) {
            assert_eq!(mapping.crush.len(), 3);
            assert!(
                mapping.crush.iter().flatten().all(|&osd| osd >= 100),
                "{mapping:?}"
            );
        }
    }

    #[test]
    fn object_to_up_set_end_to_end() {
        let (map, pool) = with_pool(
            weighted_map(&flat_hosts(5, 2), 0),
            REP3,
            BucketType::Host,
            32,
        );
        let pg = crate::pg::object_to_pg(&map.pools[&pool], b"1000.00000000");
        let up = pg_to_up_osds(&map, pg).unwrap();
        assert_eq!(up.len(), 3);
        assert_eq!(pg_mapping(&map, pg).unwrap().primary, up[0]);
        assert_eq!(
            pg_to_up_osds(&map, PgId::new(pool, 32)),
            Err(CrushError::PgOutOfRange {
                pg: PgId::new(pool, 32),
                pg_num: 32
            })
        );
        assert_eq!(
            pg_to_up_osds(&map, PgId::new(9, 0)),
            Err(CrushError::PoolNotFound(9))
        );
    }

    #[test]
    fn report_counts_every_shard_and_the_real_movement() {
        let (map, pool) = synthetic_map(&SyntheticCluster::default()).unwrap();
        let report = utilization_report(&map, pool, 10_000).unwrap();
        assert_eq!(report.per_osd.len(), 40);
        assert_eq!(report.unplaced_shards, 0);
        assert_eq!(
            report.per_osd.iter().map(|row| row.pgs).sum::<u64>(),
            30_000
        );
        for row in &report.per_osd {
            assert!((row.expected - 750.0).abs() < 1e-9);
            assert!(
                row.deviation_pct.abs() < 4.5 * 100.0 * (750.0f64).sqrt() / 750.0,
                "{row:?}"
            );
        }
        let removed = report.moved_on_remove.clone().unwrap();
        assert_eq!(removed.osd, 0);
        assert_eq!(removed.shards_moved, report.per_osd[0].pgs);
        let added = report.moved_on_add.clone().unwrap();
        assert_eq!(added.osd, 40);
        assert!(
            added.moved_pct > 0.5 * added.expected_pct
                && added.moved_pct < 1.5 * added.expected_pct,
            "{added:?}"
        );
        let text = report.to_string();
        assert!(text.contains("osd.39"), "{text}");
        assert!(text.contains("marking out osd.0"), "{text}");
    }
}
