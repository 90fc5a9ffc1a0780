//! Shards rebuilt from others: for recovery (an object's shards that up copies
//! miss), for reads (a shard its OSD could not read), for scrub (shards found bad),
//! and the deep scrub's check of every shard against the code.

use std::collections::BTreeSet;
use std::sync::Arc;

use lcpfs_core::map::ClusterMap;
use lcpfs_core::pg::PgId;
use lcpfs_proto::{Inconsistency, ObjectState};

use super::codec::{Code, Member, members};
use super::read::shard_range;
use crate::error::{OsdError, Result};
use crate::node::Node;
use crate::peering::{self, object_state, prior_holders};
use crate::peers::fan_out;
use crate::pg::{self, Delivery, PgLog, SIZE_XATTR, VERSION_XATTR};

/// Brings the newest data of one object of an erasure-coded PG to every up shard
/// that misses it, rebuilt from `k` shards that hold it. A client operation on
/// the object waits for this, not for the whole PG's recovery.
pub(super) async fn recover_shards(
    node: &Node,
    map: &ClusterMap,
    code: Code,
    pg: PgId,
    log: &mut PgLog,
    name: &[u8],
) -> Result<()> {
    // Whether an up copy misses the object, as peering found it (`None`: a copy
    // this peering did not hear from, which is neither source nor target).
    let lacks = |osd: u32| {
        if osd == node.id {
            Some(log.missing.contains(name))
        } else {
            log.peer_missing.get(&osd).map(|names| names.contains(name))
        }
    };
    let up = members(&node.mapping(map, pg)?.up);
    let lacking: Vec<Member> = up
        .iter()
        .copied()
        .filter(|(_, osd)| lacks(*osd) == Some(true))
        .collect();
    let mut holders: Vec<Member> = up
        .iter()
        .copied()
        .filter(|(_, osd)| lacks(*osd) == Some(false))
        .collect();
    if holders.len() < code.k {
        // OSDs of earlier intervals, at the positions no up holder has.
        for (osd, info) in prior_holders(node, map, pg, name).await? {
            if let Some(shard) = info.shard.map(|shard| shard as usize)
                && !holders.iter().any(|(position, _)| *position == shard)
            {
                holders.push((shard, osd));
            }
        }
    }
    if holders.len() < code.k {
        let held: Vec<String> = holders
            .iter()
            .map(|(position, osd)| format!("shard {position} on osd.{osd}"))
            .collect();
        return Err(OsdError::Unavailable(format!(
            "object '{}' of PG {pg} is unfound: {} shards of its newest version are up ({}) and {} are needed; \
             start the OSDs that held it",
            String::from_utf8_lossy(name),
            holders.len(),
            held.join(", "),
            code.k
        )));
    }
    // When this primary's own shard lags too, its log still says which version
    // the object's newest data has: holders all behind it hold an older write
    // (one that a shard missed unnoticed), not the newest.
    let floor = if log.missing.contains(name) {
        let name = name.to_vec();
        node.on_store(move |store| pg::newest_logged(store, pg, &name))
            .await?
    } else {
        None
    };
    for member in lacking {
        let state = rebuild_shard(node, map, code, pg, name, &holders, member.0).await?;
        let (version, _) = shard_version(&state);
        if let Some(floor) = floor.filter(|floor| state.exists && version < *floor) {
            return Err(OsdError::Unavailable(format!(
                "object '{}' of PG {pg} is unfound: its shards on {} are at version {version} \
                 and its newest write is version {floor}; start the OSDs that held it",
                String::from_utf8_lossy(name),
                holders
                    .iter()
                    .map(|(_, osd)| format!("osd.{osd}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        install_shard(node, map, pg, member, Delivery::objects(vec![state]), log).await?;
        if let Some(names) = log.peer_missing.get_mut(&member.1) {
            names.remove(name);
        }
        node.metrics.recovered_objects.inc();
    }
    Ok(())
}

/// Shard `position` of an object, rebuilt from `k` of the `sources` (shards that
/// hold the PG's newest history) that agree: of one version, consistent with the
/// code (see [`agreeing`]).
pub(super) async fn rebuild_shard(
    node: &Node,
    map: &ClusterMap,
    code: Code,
    pg: PgId,
    name: &[u8],
    sources: &[Member],
    position: usize,
) -> Result<ObjectState> {
    let mut read = Vec::new();
    let mut absent = None;
    let mut failures = Vec::new();
    for &(source, osd) in sources {
        match object_state(node, map, pg, name, osd).await {
            Ok(state) if !state.exists => absent = Some(state),
            Ok(state) => read.push((source, state)),
            Err(error) => failures.push(format!("osd.{osd}: {error}")),
        }
    }
    // Removed, as every source that answered says; a source without the object
    // beside others holding it lags, and is not believed.
    if let Some(absent) = absent.filter(|_| read.is_empty()) {
        return Ok(absent);
    }
    let unbuildable = |why: String| {
        OsdError::Unavailable(format!(
            "PG {pg}: shard {position} of '{}' cannot be rebuilt: {why}",
            String::from_utf8_lossy(name)
        ))
    };
    let pieces = agreeing(code, &read).map_err(|why| {
        let failed = if failures.is_empty() {
            String::new()
        } else {
            format!(" (unread: {})", failures.join("; "))
        };
        unbuildable(format!("{why}{failed}"))
    })?;
    let xattrs = read
        .iter()
        .find(|(source, _)| pieces[*source].is_some())
        .map(|(_, state)| state.xattrs.clone())
        .unwrap_or_default();
    let mut rebuilt = code.rebuild(pieces).map_err(OsdError::Internal)?;
    Ok(ObjectState {
        name: name.to_vec(),
        exists: true,
        data: std::mem::take(&mut rebuilt[position]),
        xattrs,
        omap: Vec::new(),
    })
}

/// The version and size a shard's xattrs say it holds of its object.
fn shard_version(state: &ObjectState) -> (u64, u64) {
    let number = |key: &str| {
        state
            .xattrs
            .iter()
            .find(|pair| pair.key == key)
            .and_then(|pair| pair.value.as_slice().try_into().ok())
            .map_or(0, u64::from_le_bytes)
    };
    (number(VERSION_XATTR), number(SIZE_XATTR))
}

/// The pieces to decode an object from, out of the shards `read` (position and
/// state): only shards of the newest version (and size) the shards hold, never
/// combined with shards of another, and, where more than `k` of them are at hand,
/// without any that the others show to disagree with the code. Fails, saying what
/// was found, when fewer than `k` shards of the newest version agree: decoding an
/// older version, or a mix, would rebuild the wrong bytes.
fn agreeing(
    code: Code,
    read: &[(usize, ObjectState)],
) -> std::result::Result<Vec<Option<Vec<u8>>>, String> {
    let newest = read.iter().map(|(_, state)| shard_version(state)).max();
    let Some(newest) = newest else {
        return Err(format!("no shard could be read ({} needed)", code.k));
    };
    let mut pieces: Vec<Option<Vec<u8>>> = vec![None; code.k + code.m];
    for (position, state) in read {
        if shard_version(state) == newest && *position < pieces.len() {
            pieces[*position] = Some(state.data.clone());
        }
    }
    for wrong in code.inconsistent(&pieces)? {
        pieces[wrong] = None;
    }
    let usable = pieces.iter().flatten().count();
    if usable < code.k {
        let mut found: Vec<String> = read
            .iter()
            .map(|(position, state)| {
                let (version, size) = shard_version(state);
                format!("shard {position}: version {version}, {size} bytes")
            })
            .collect();
        found.sort();
        return Err(format!(
            "only {usable} shards of its newest version (version {}) agree, {} are needed ({})",
            newest.0,
            code.k,
            found.join("; ")
        ));
    }
    Ok(pieces)
}

/// Installs a delivery in a shard's copy of the PG (this OSD's own, or a peer's
/// by a push). Returns the objects that copy still misses.
pub(super) async fn install_shard(
    node: &Node,
    map: &ClusterMap,
    pg: PgId,
    (position, osd): Member,
    delivery: Delivery,
    log: &mut PgLog,
) -> Result<BTreeSet<Vec<u8>>> {
    let delivery = Delivery {
        shard: Some(position as u32),
        ..delivery
    };
    if osd == node.id {
        peering::install_here(node, pg, delivery, log).await?;
        return Ok(log.missing.clone());
    }
    let push = peering::push_request(node, map, pg, delivery);
    let reply = node.peers.send_push(map, osd, push).await?;
    Ok(reply.missing.into_iter().collect())
}

/// Rebuilds the bad shards scrub found of one object from the good ones; marks
/// each shard it rebuilt as repaired.
pub(super) async fn repair_shards(
    node: &Node,
    map: &ClusterMap,
    code: Code,
    pg: PgId,
    name: &[u8],
    bad: &mut [Inconsistency],
    log: &mut PgLog,
) -> Result<()> {
    if bad.is_empty() {
        return Ok(());
    }
    let shards = members(&node.mapping(map, pg)?.up);
    let sources: Vec<Member> = shards
        .iter()
        .copied()
        .filter(|(_, osd)| !bad.iter().any(|copy| copy.osd == *osd))
        .collect();
    for copy in bad.iter_mut() {
        let Some(&(position, osd)) = shards.iter().find(|(_, osd)| *osd == copy.osd) else {
            continue;
        };
        let state = rebuild_shard(node, map, code, pg, name, &sources, position).await?;
        install_shard(
            node,
            map,
            pg,
            (position, osd),
            Delivery::objects(vec![state]),
            log,
        )
        .await?;
        tracing::warn!(%pg, osd, shard = position, object = %String::from_utf8_lossy(name), reason = %copy.reason, "rebuilt a bad shard");
        copy.repaired = true;
    }
    Ok(())
}

/// For a deep scrub of an erasure-coded object of `size` bytes whose shards agree
/// on their metadata: reads every up shard whole and checks them against the
/// code. Returns the OSDs whose shards disagree, with the reason.
pub(super) async fn check_parity(
    node: &Node,
    map: &ClusterMap,
    code: Code,
    pg: PgId,
    name: &[u8],
    size: u64,
) -> Result<Vec<(u32, String)>> {
    let map = Arc::new(map.clone());
    let shards = members(&node.mapping(&map, pg)?.up);
    let length = code.shard_size(size);
    let answers = fan_out(shards.iter().map(|(_, osd)| *osd), |osd| {
        shard_range(node, &map, pg, osd, name, 0..length)
    })
    .await;
    let mut pieces: Vec<Option<Vec<u8>>> = vec![None; code.k + code.m];
    for (osd, answer) in answers {
        let Some(&(position, _)) = shards.iter().find(|(_, member)| *member == osd) else {
            continue;
        };
        // A shard that cannot be read was reported by the comparison of the
        // copies' metadata; the others are checked without it.
        match answer {
            Ok(reply) => pieces[position] = Some(reply.data),
            Err(error) => {
                tracing::warn!(%pg, position, %error, "shard unreadable during deep scrub");
            }
        }
    }
    let wrong = code.inconsistent(&pieces).map_err(OsdError::Internal)?;
    Ok(shards
        .into_iter()
        .filter(|(position, _)| wrong.contains(position))
        .map(|(position, osd)| {
            (
                osd,
                format!("shard {position} does not match the code over the other shards"),
            )
        })
        .collect())
}

/// Rebuilds shard `member` of an object, which its OSD could not read, from the
/// PG's other up shards.
pub(super) async fn rebuild_damaged(
    node: &Node,
    map: &ClusterMap,
    code: Code,
    pg: PgId,
    name: &[u8],
    member: Member,
    log: &mut PgLog,
) -> Result<()> {
    let sources: Vec<Member> = members(&node.mapping(map, pg)?.up)
        .into_iter()
        .filter(|other| *other != member)
        .collect();
    let state = rebuild_shard(node, map, code, pg, name, &sources, member.0).await?;
    install_shard(node, map, pg, member, Delivery::objects(vec![state]), log).await?;
    tracing::warn!(%pg, osd = member.1, shard = member.0, object = %String::from_utf8_lossy(name), "rebuilt an unreadable shard");
    Ok(())
}

#[cfg(test)]
mod tests {
    use lcpfs_proto::KeyValue;

    use super::*;

    /// Shard `position` of version `version` of an object, from `pieces`.
    fn shard(pieces: &[Vec<u8>], position: usize, version: u64) -> (usize, ObjectState) {
        let xattr = |key: &str, value: u64| KeyValue {
            key: key.to_owned(),
            value: value.to_le_bytes().to_vec(),
        };
        let state = ObjectState {
            name: b"o".to_vec(),
            exists: true,
            data: pieces[position].clone(),
            xattrs: vec![xattr(VERSION_XATTR, version), xattr(SIZE_XATTR, 8192)],
            omap: Vec::new(),
        };
        (position, state)
    }

    #[test]
    fn shards_of_different_versions_are_never_combined() {
        let code = Code { k: 2, m: 2 };
        let old = code.encode(&[7u8; 8192]).unwrap();
        let new = code.encode(&[9u8; 8192]).unwrap();
        // Two shards of the new version and a stale one: the new pair is decoded.
        let read = [shard(&new, 0, 5), shard(&old, 1, 4), shard(&new, 3, 5)];
        let pieces = agreeing(code, &read).unwrap();
        assert_eq!(pieces[1], None, "the stale shard is left out");
        assert_eq!(code.rebuild(pieces).unwrap(), new);
        // One shard of the new version with a stale one: nothing is decoded.
        let error = agreeing(code, &[shard(&new, 0, 5), shard(&old, 1, 4)]).unwrap_err();
        assert!(
            error.contains("only 1 shards of its newest version"),
            "{error}"
        );
    }

    #[test]
    fn a_shard_that_disagrees_with_the_code_is_left_out() {
        let code = Code { k: 2, m: 2 };
        let good = code.encode(&[3u8; 8192]).unwrap();
        let mut rotten = good.clone();
        rotten[1][100] ^= 0xff;
        let read: Vec<_> = (0..4).map(|position| shard(&rotten, position, 1)).collect();
        let pieces = agreeing(code, &read).unwrap();
        assert_eq!(pieces[1], None);
        assert_eq!(code.rebuild(pieces).unwrap(), good);
    }
}
