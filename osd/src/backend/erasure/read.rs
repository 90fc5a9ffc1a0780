//! Reading an erasure-coded object: byte ranges of single shards, and whole
//! stripes gathered from `k` shards (the data shards when they answer, parity
//! shards in place of those that do not), every one at the version of the
//! primary's own shard.

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
use crate::pg::{self, PgLog};

/// A call to a shard in flight (to a peer, or to this OSD's own store).
pub(super) type ShardCall<T> = Pin<Box<dyn Future<Output = Result<T>> + Send>>;

/// What a shard holds of an object: whether it exists, its size and the version
/// of the write that last changed it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) struct Identity {
    pub exists: bool,
    pub size: u64,
    pub version: u64,
}

impl From<&ReadShardReply> for Identity {
    fn from(reply: &ReadShardReply) -> Self {
        Identity {
            exists: reply.exists,
            size: reply.size,
            version: reply.version,
        }
    }
}

/// The stripes of an object gathered from its shards.
pub(super) struct Gathered {
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
///
/// Every shard must hold the object as the primary's own shard does (`primary`):
/// the primary commits each write with its log entry, so its shard is the
/// object's newest committed state, and a shard at another version is never
/// combined with it. A shard older than the primary's lags behind a write it
/// missed unnoticed: it is marked missing in `log`, so that the retry rebuilds it
/// first. A newer one holds a write that peering has to settle: the PG peers
/// again.
#[allow(clippy::too_many_arguments)]
pub(super) async fn gather(
    node: &Node,
    map: &Arc<ClusterMap>,
    code: Code,
    pg: PgId,
    name: &[u8],
    stripes: Range<u64>,
    primary: Identity,
    log: &mut PgLog,
) -> Result<Gathered> {
    let up = node.mapping(map, pg)?.up;
    let mut candidates = members(&up).into_iter();
    let range = stripes.start * UNIT..stripes.end * UNIT;
    let mut pieces: Vec<Option<Vec<u8>>> = vec![None; code.k + code.m];
    let mut failures = Vec::new();
    let mut damaged = Vec::new();
    loop {
        let have = pieces.iter().flatten().count();
        if have == code.k {
            break;
        }
        let wanted: Vec<Member> = candidates.by_ref().take(code.k - have).collect();
        if wanted.is_empty() {
            log.peered = None;
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
            let identity = Identity::from(&reply);
            if identity != primary {
                if osd != node.id && identity.version < primary.version {
                    log.peer_missing
                        .entry(osd)
                        .or_default()
                        .insert(name.to_vec());
                } else {
                    log.peered = None;
                }
                tracing::warn!(%pg, osd, shard = position, object = %String::from_utf8_lossy(name), ?identity, ?primary, "a shard disagrees with the primary's");
                return Err(OsdError::Unavailable(format!(
                    "PG {pg}: shard {position} of '{}' on osd.{osd} is at version {} and the primary's at {}; retry",
                    String::from_utf8_lossy(name),
                    identity.version,
                    primary.version
                )));
            }
            pieces[position] = Some(reply.data);
        }
    }
    let data = if primary.exists {
        code.decode(pieces).map_err(OsdError::Internal)?
    } else {
        Vec::new()
    };
    Ok(Gathered { data, damaged })
}
