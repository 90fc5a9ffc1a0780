//! The straw2 choice: given the CRUSH tree and a PG's input `x`, OSDs in distinct
//! failure domains, by the replicated rule ([`choose_firstn`], an ordered list) or the
//! erasure-coding rule ([`choose_indep`], fixed positions). Both choose by CRUSH weight
//! first, then refill what in/out and reweight reject, and take chosen weight out of
//! the tree instead of retrying on collisions; the [`crate::crush`] module doc gives
//! the reasons and the guarantees.

use std::collections::BTreeMap;

use super::hash::{crush_hash3, log2_fixed};
use crate::map::{BucketType, CrushHierarchy, CrushItem};

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
/// [`crate::crush`] module doc): rejected OSDs are dropped, the later ones shift
/// forward, and replacements are appended. The result is shorter than `numrep` only
/// when the hierarchy has too few failure domains with an accepted OSD.
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
