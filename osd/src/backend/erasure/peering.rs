//! Peering an erasure-coded PG: settle the writes left prepared (rolled forward
//! where some shard committed them, dropped elsewhere), find the newest history
//! that at least `k` shards hold, and bring every other shard level with it,
//! rebuilding from those shards (and from earlier intervals' OSDs) what cannot
//! wait for recovery after the PG goes active.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use lcpfs_core::map::{ClusterMap, Pool};
use lcpfs_core::pg::PgId;
use lcpfs_proto::{PgInfoReply, PgRef};

use super::codec::{Member, code, members};
use super::repair::{install_shard, rebuild_shard};
use super::write::resolve_at;
use crate::error::{OsdError, Result};
use crate::node::Node;
use crate::peering::{self, check_not_down, log_of, probe_prior};
use crate::pg::{self, CatchUp, Delivery, Entry, PgLog, UpSet};
use crate::recovery::pause;

/// The shard position a copy at `position` of the up set holds the history of:
/// the one it was written as (indep moves OSDs between positions as others come
/// and go), or its current one while it holds nothing.
fn held_position(position: usize, info: &PgInfoReply) -> Option<usize> {
    info.shard
        .map(|shard| shard as usize)
        .or((info.last == 0).then_some(position))
}

/// The distinct shard positions among `sources`.
fn positions(sources: &[Member]) -> usize {
    let mut positions: Vec<usize> = sources.iter().map(|(position, _)| *position).collect();
    positions.sort_unstable();
    positions.dedup();
    positions.len()
}

/// The infos of every up shard's copy of the PG (this one's included).
async fn shard_infos(
    node: &Node,
    map: &ClusterMap,
    pg: PgId,
    shards: &[Member],
    reference: PgRef,
    log: &PgLog,
) -> Result<Vec<(Member, PgInfoReply)>> {
    let mut infos = Vec::new();
    for &(position, osd) in shards {
        let info = if osd == node.id {
            peering::info_of(node, pg, log, false).await?
        } else {
            peering::peer_info(node, map, pg, osd, reference).await?
        };
        infos.push(((position, osd), info));
    }
    Ok(infos)
}

/// The log entry at `version` of `osd`'s copy of the PG.
async fn entry_of(
    node: &Node,
    map: &ClusterMap,
    pg: PgId,
    osd: u32,
    version: u64,
) -> Result<Option<Entry>> {
    if osd == node.id {
        return node
            .on_store(move |store| pg::entry_at(store, pg, version))
            .await;
    }
    let entries = node.peers.send_pg_log(map, osd, pg, version - 1).await?;
    Ok(entries.into_iter().find(|entry| entry.version == version))
}

/// Every object name of `osd`'s copy of the PG.
async fn names_at(node: &Node, map: &ClusterMap, pg: PgId, osd: u32) -> Result<Vec<Vec<u8>>> {
    if osd == node.id {
        return node.on_store(move |store| pg::names(store, pg)).await;
    }
    node.peers.send_list_names(map, osd, pg).await
}

/// The copies that hold each object (those of `sources` that do not miss it).
fn holding(
    sources: &[Member],
    missing_of: &BTreeMap<u32, BTreeSet<Vec<u8>>>,
    name: &[u8],
) -> Vec<Member> {
    sources
        .iter()
        .copied()
        .filter(|(_, osd)| {
            !missing_of
                .get(osd)
                .is_some_and(|names| names.contains(name))
        })
        .collect()
}

/// Peers an erasure-coded PG whose up set `up` changed since it was last peered
/// (`reference` names its new interval).
pub(super) async fn peer(
    node: &Node,
    map: &ClusterMap,
    pool: &Pool,
    pg: PgId,
    log: &mut PgLog,
    up: &UpSet,
    reference: PgRef,
) -> Result<()> {
    let code = code(pool);
    let shards = members(up);
    let mut infos = shard_infos(node, map, pg, &shards, reference, log).await?;

    // Shards of the PG's earlier intervals may hold writes the up set lacks
    // (every shard moved at once): they can be sources too.
    let probed = probe_prior(node, map, pg, up, reference).await?;
    check_not_down(
        node,
        map,
        pool,
        pg,
        log,
        infos
            .iter()
            .map(|(_, info)| info)
            .chain(probed.iter().map(|(_, info)| info)),
    )?;
    let prior: Vec<(Member, PgInfoReply)> = probed
        .into_iter()
        .filter(|(_, info)| info.last > 0)
        .filter_map(|(osd, info)| Some(((info.shard? as usize, osd), info)))
        .collect();
    settle_pending(node, map, pg, &infos, reference, log).await?;
    if infos.iter().any(|(_, info)| info.pending.is_some()) {
        let fresh = node.on_store(move |store| pg::load(store, pg)).await?;
        log.reloaded(fresh);
        infos = shard_infos(node, map, pg, &shards, reference, log).await?;
    }

    // A copy is a source for the shard position it holds.
    let stored = |((position, _), info): &(Member, PgInfoReply)| held_position(*position, info);
    let holders = |point: (u64, u64)| -> Vec<Member> {
        infos
            .iter()
            .chain(&prior)
            .filter(|(_, info)| peering::history_point(info) == point)
            .filter_map(|copy| Some((stored(copy)?, copy.0.1)))
            .collect()
    };
    // A history past the adoptable one was taken by no later active interval
    // (see `peering::adoptable`): its holders are rolled back.
    let limit = peering::adoptable(infos.iter().chain(&prior).map(|(_, info)| info));
    let mut points: Vec<(u64, u64)> = infos
        .iter()
        .chain(&prior)
        .filter(|copy| stored(copy).is_some())
        .map(|(_, info)| peering::history_point(info))
        .filter(|point| *point <= limit)
        .collect();
    points.sort_unstable_by(|a, b| b.cmp(a));
    points.dedup();
    // The newest history that k shards hold. A newer one fewer shards hold was
    // never acknowledged (every up shard, at least k + 1, commits a write before
    // it is), as when a primary stopped between its own commit and the others':
    // its holders are rolled back with the rest.
    let mut sources: Vec<Member> = points
        .iter()
        .map(|&point| holders(point))
        .find(|sources| positions(sources) >= code.k)
        .unwrap_or_else(|| holders(points.first().copied().unwrap_or_default()));
    let copies: Vec<String> = infos
        .iter()
        .chain(&prior)
        .map(|((position, osd), info)| {
            let held = info
                .shard
                .map_or("none".to_owned(), |shard| shard.to_string());
            format!(
                "osd.{osd} at {position} holds shard {held} to {}'{}",
                info.last_epoch, info.last
            )
        })
        .collect();
    let incomplete = |sources: &[Member]| {
        (positions(sources) < code.k).then(|| {
            OsdError::Unavailable(format!(
                "PG {pg} is incomplete: {} of its shards hold its newest writes and {} are needed; waiting for more of its OSDs ({})",
                positions(sources),
                code.k,
                copies.join(", ")
            ))
        })
    };
    if let Some(error) = incomplete(&sources) {
        return Err(error);
    }
    let (auth, auth_oldest) = log_of(node, map, pg, sources[0].1).await?;
    // The objects each copy misses (left by an earlier peering whose recovery has
    // not finished): a copy is no source for those.
    let mut missing_of: BTreeMap<u32, BTreeSet<Vec<u8>>> = infos
        .iter()
        .chain(&prior)
        .map(|((_, osd), info)| (*osd, info.missing.iter().cloned().collect()))
        .collect();
    let targets = rebuild_order(&infos, &sources);
    for ((position, osd), info) in targets {
        // A source whose shard is being replaced serves no more rebuilds.
        sources.retain(|(_, source)| source != osd);
        if let Some(error) = incomplete(&sources) {
            return Err(error);
        }
        let source = sources[0].1;
        let plan = if held_position(*position, info) != Some(*position) {
            CatchUp::Backfill
        } else {
            let (theirs, _) = log_of(node, map, pg, *osd).await?;
            pg::catch_up(&auth, auth_oldest, &theirs)
        };
        let (names, entries, keep, rewind_from) = match plan {
            CatchUp::Level => continue,
            CatchUp::Backfill => {
                // The source's own missing objects are named too: their newest
                // data is elsewhere.
                let names = pg::backfill_names(
                    names_at(node, map, pg, source).await?,
                    missing_of.get(&source).into_iter().flatten(),
                );
                (names.clone(), auth.clone(), Some(names), None)
            }
            CatchUp::Entries {
                from,
                names,
                entries,
            } => (names, entries, None, Some(from)),
        };
        // The copy takes the entries now, and the shards of their objects after
        // the PG goes active (see `recover_shards`), when enough up shards at
        // their own positions hold them; the others are rebuilt first, from every
        // source, earlier intervals' OSDs among them.
        let (lazy, eager): (Vec<Vec<u8>>, Vec<Vec<u8>>) = names.into_iter().partition(|name| {
            let up_holders: Vec<Member> = holding(&sources, &missing_of, name)
                .into_iter()
                .filter(|member| shards.contains(member))
                .collect();
            positions(&up_holders) >= code.k
        });
        tracing::info!(%pg, osd, shard = position, backfill = keep.is_some(), lazy = lazy.len(), eager = eager.len(), "bringing a shard level");
        if keep.is_some() && !lazy.is_empty() {
            log.backfilled.insert(*osd);
        }
        let mut delivery = Delivery {
            entries,
            keep,
            rewind_from,
            missing: lazy,
            ..Delivery::default()
        };
        if !eager.is_empty() {
            let _recovering = node
                .recovery
                .recovering(pg, delivery.keep.is_some(), false)
                .await;
            for name in eager {
                let holders = holding(&sources, &missing_of, &name);
                if positions(&holders) < code.k {
                    // Unfound until OSDs that hold it come back.
                    delivery.missing.push(name);
                    continue;
                }
                pause(node).await;
                node.metrics.recovered_objects.inc();
                let state = rebuild_shard(node, map, code, pg, &name, &holders, *position).await?;
                let rebuilt = Delivery::objects(vec![state]);
                install_shard(node, map, pg, (*position, *osd), rebuilt, log).await?;
            }
        }
        let missing = install_shard(node, map, pg, (*position, *osd), delivery, log).await?;
        missing_of.insert(*osd, missing);
        // Level now, at its own position.
        sources.push((*position, *osd));
    }
    log.peer_missing = shards
        .iter()
        .filter(|(_, osd)| *osd != node.id)
        .map(|(_, osd)| (*osd, missing_of.remove(osd).unwrap_or_default()))
        .collect();
    Ok(())
}

/// The up copies to bring to their own shard positions, in the order to do it
/// (`sources`: each copy holding the newest history, as (shard held, OSD)).
/// Copies that are sources for another position come last, and of those, the
/// ones holding a shard no other source holds the very last: until then their
/// shards serve the others' rebuilds. A PG split, or a new CRUSH order, can leave
/// the up copies holding their shards at one another's positions; rebuilding a
/// copy whose shard is duplicated elsewhere first keeps k distinct shards
/// readable throughout.
fn rebuild_order<'a>(
    infos: &'a [(Member, PgInfoReply)],
    sources: &[Member],
) -> Vec<&'a (Member, PgInfoReply)> {
    let held_by = |osd: u32| {
        sources
            .iter()
            .find(|(_, source)| *source == osd)
            .map(|(shard, _)| *shard)
    };
    let only_copy = |shard: usize| sources.iter().filter(|(held, _)| *held == shard).count() == 1;
    let mut targets: Vec<&(Member, PgInfoReply)> = infos
        .iter()
        .filter(|copy| !sources.contains(&copy.0))
        .collect();
    targets.sort_by_key(|((_, osd), _)| held_by(*osd).map(&only_copy));
    targets
}

/// Settles the writes the up shards hold prepared: committed on every shard that
/// holds one when some shard committed it already, dropped otherwise.
async fn settle_pending(
    node: &Node,
    map: &ClusterMap,
    pg: PgId,
    infos: &[(Member, PgInfoReply)],
    reference: PgRef,
    log: &mut PgLog,
) -> Result<()> {
    let mut pending: Vec<Entry> = infos
        .iter()
        .filter_map(|(_, info)| info.pending.clone().map(Entry::from))
        .collect();
    pending.sort_by_key(|entry| entry.version);
    pending.dedup_by(|a, b| a.same(b));
    let map = Arc::new(map.clone());
    for entry in &pending {
        let mut committed = false;
        for ((_, osd), info) in infos {
            if info.last >= entry.version
                && entry_of(node, &map, pg, *osd, entry.version)
                    .await?
                    .is_some_and(|held| held.same(entry))
            {
                committed = true;
                break;
            }
        }
        tracing::info!(%pg, version = entry.version, committed, "settling a prepared write");
        log.dirty = true;
        for ((_, osd), info) in infos {
            if info
                .pending
                .clone()
                .is_some_and(|held| Entry::from(held).same(entry))
            {
                // What the shard misses afterwards, its info says when asked
                // again below.
                resolve_at(node, &map, pg, *osd, reference, entry, committed).await?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_held_at_one_anothers_positions_are_moved_without_losing_k_of_them() {
        // A 2+1 PG after a split: position 0 holds its own shard 0, position 1
        // (osd.3) holds shard 2 and position 2 (osd.4) a second shard 0.
        let infos: Vec<(Member, PgInfoReply)> = [(0, 0), (1, 3), (2, 4)]
            .into_iter()
            .map(|member| (member, PgInfoReply::default()))
            .collect();
        let mut sources: Vec<Member> = vec![(0, 0), (2, 3), (0, 4)];
        let order: Vec<Member> = rebuild_order(&infos, &sources)
            .into_iter()
            .map(|(member, _)| *member)
            .collect();
        assert_eq!(
            order,
            vec![(2, 4), (1, 3)],
            "the duplicated shard's copy first"
        );
        // Replaying the rebuilds: each copy stops serving as it is rebuilt and
        // serves its own position after; two distinct shards are always readable.
        for (position, osd) in order {
            sources.retain(|(_, source)| *source != osd);
            assert!(
                positions(&sources) >= 2,
                "{sources:?} while rebuilding osd.{osd}"
            );
            sources.push((position, osd));
        }
        // Copies that hold no shard of the newest history come first of all.
        let mut infos = infos;
        infos.push(((3, 7), PgInfoReply::default()));
        let sources: Vec<Member> = vec![(0, 0), (2, 3), (0, 4)];
        let first = rebuild_order(&infos, &sources)[0].0;
        assert_eq!(first, (3, 7));
    }
}
