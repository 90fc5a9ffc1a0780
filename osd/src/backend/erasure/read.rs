//! Reading an erasure-coded object: byte ranges of single shards, and whole
//! stripes gathered from `k` shards (the data shards when they answer, parity
//! shards in place of those that do not).

use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;

use lcpfs_core::map::ClusterMap;
use lcpfs_core::pg::PgId;
use lcpfs_proto::{ReadShardReply, ReadShardRequest};

use super::codec::{Code, Member, UNIT, members};
use crate::error::{OsdError, Result};
use crate::node::Node;
use crate::peers::{fan_out, pg_ref};
use crate::pg;

/// A call to a shard in flight (to a peer, or to this OSD's own store).
pub(super) type ShardCall<T> = Pin<Box<dyn Future<Output = Result<T>> + Send>>;

/// The stripes of an object gathered from its shards.
pub(super) struct Gathered {
    pub exists: bool,
    pub size: u64,
    /// Whole stripes, from the first asked for.
    pub data: Vec<u8>,
    /// Shards whose OSD found them unreadable (a checksum error its engine could
    /// not heal).
    pub damaged: Vec<Member>,
}

/// Reads bytes `range` of shard `osd` of an object (from this OSD's store when
/// it is this one's).
pub(super) fn shard_range(
    node: &Node,
    map: &Arc<ClusterMap>,
    pg: PgId,
    osd: u32,
    name: &[u8],
    range: Range<u64>,
) -> ShardCall<ReadShardReply> {
    let name = name.to_vec();
    if osd == node.id {
        let store = node.store.clone();
        return Box::pin(pg::blocking(move || {
            pg::read_shard(&store, pg, &name, range.start, range.end - range.start)
        }));
    }
    let request = ReadShardRequest {
        pg: Some(pg_ref(map, pg)),
        name,
        offset: range.start,
        length: range.end - range.start,
    };
    let (peers, map) = (node.peers.clone(), map.clone());
    Box::pin(async move { peers.send_read_shard(&map, osd, request).await })
}

/// Reads `stripes` of an object from `k` of its shards: the data shards when they
/// answer, parity shards in place of those that do not.
pub(super) async fn gather(
    node: &Node,
    map: &Arc<ClusterMap>,
    code: Code,
    pg: PgId,
    name: &[u8],
    stripes: Range<u64>,
) -> Result<Gathered> {
    let up = node.mapping(map, pg)?.up;
    let mut candidates = members(&up).into_iter();
    let range = stripes.start * UNIT..stripes.end * UNIT;
    let mut pieces: Vec<Option<Vec<u8>>> = vec![None; code.k + code.m];
    let mut seen: Option<(bool, u64, u64)> = None;
    let mut failures = Vec::new();
    let mut damaged = Vec::new();
    loop {
        let have = pieces.iter().flatten().count();
        if have == code.k {
            break;
        }
        let wanted: Vec<Member> = candidates.by_ref().take(code.k - have).collect();
        if wanted.is_empty() {
            return Err(OsdError::Unavailable(format!(
                "PG {pg}: only {have} shards of '{}' could be read and {} are needed ({})",
                String::from_utf8_lossy(name),
                code.k,
                failures.join("; ")
            )));
        }
        let answers = fan_out(wanted.iter().map(|(_, osd)| *osd), |osd| {
            shard_range(node, map, pg, osd, name, range.clone())
        })
        .await;
        for (osd, answer) in answers {
            let Some(&(position, _)) = wanted.iter().find(|(_, member)| *member == osd) else {
                continue;
            };
            let reply = match answer {
                Ok(reply) => reply,
                Err(error) => {
                    if matches!(error, OsdError::DataLoss(_)) {
                        damaged.push((position, osd));
                    }
                    failures.push(format!("osd.{osd}: {error}"));
                    continue;
                }
            };
            let identity = (reply.exists, reply.size, reply.version);
            if seen.is_some_and(|other| other != identity) {
                return Err(OsdError::Unavailable(format!(
                    "PG {pg}: shards of '{}' disagree (osd.{osd} has version {}); retry",
                    String::from_utf8_lossy(name),
                    reply.version
                )));
            }
            seen = Some(identity);
            pieces[position] = Some(reply.data);
        }
    }
    let (exists, size, _) = seen.unwrap_or_default();
    let data = if exists {
        code.decode(pieces).map_err(OsdError::Internal)?
    } else {
        Vec::new()
    };
    Ok(Gathered {
        exists,
        size,
        data,
        damaged,
    })
}
