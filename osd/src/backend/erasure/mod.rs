//! Erasure-coded pools: writes in two phases, reads that gather shards, peering
//! that rebuilds lost or stale shards, scrub that checks shards against the code.
//!
//! Shard `i` of every object of a PG lives on the OSD at position `i` of the PG's
//! up set. Every shard keeps the same PG log; a write reaches it in two steps:
//! `prepare` keeps the shard's part of the write pending (durably, but not
//! applied), and once every up shard holds it, `commit` applies it with its log
//! entry. A write interrupted after some shards committed it is rolled forward by
//! the next peering, one that no shard committed is dropped: either way each stripe
//! is left all old or all new, and every shard agrees.
//!
//! - [`codec`]: the code itself, stripes and the read-modify-write of a request;
//! - [`write`]: the two-phase write at the primary;
//! - [`read`]: reads gathered from `k` shards;
//! - [`peering`]: settling prepared writes and bringing shards level;
//! - [`repair`]: shards rebuilt for recovery and scrub, parity checks.

pub mod codec;
mod peering;
mod read;
mod repair;
mod write;

use std::sync::Arc;

use lcpfs_core::map::{ClusterMap, Pool};
use lcpfs_core::pg::PgId;
use lcpfs_proto::object_op::Op;
use lcpfs_proto::{Inconsistency, ObjectOp, OpRequest, OpResult, PgRef, op_result};

use super::pg_backend::Backend;
use crate::error::{OsdError, Result};
use crate::node::Node;
use crate::peering::PeeringBackend;
use crate::pg::{self, Entry, PgLog, UpSet};
use crate::recovery::ObjectRecovery;
use codec::{Code, code};

/// The backend of erasure-coded pools.
pub struct Erasure;

#[tonic::async_trait]
impl Backend for Erasure {
    fn check_ops(&self, pool: &Pool, ops: &[ObjectOp]) -> Result<()> {
        let omap = ops.iter().any(|op| {
            matches!(
                op.op,
                Some(
                    Op::OmapSet(_)
                        | Op::OmapRm(_)
                        | Op::OmapClear(_)
                        | Op::OmapGet(_)
                        | Op::OmapRange(_)
                )
            )
        });
        if omap {
            return Err(OsdError::Invalid(format!(
                "pool '{}' is erasure-coded: omap operations need a replicated pool",
                pool.name
            )));
        }
        Ok(())
    }

    fn read_waits_for(&self, log: &PgLog, name: &[u8]) -> bool {
        // A read gathers the other shards too.
        log.is_missing(name)
    }

    async fn write(
        &self,
        node: &Node,
        map: &ClusterMap,
        pool: &Pool,
        pg: PgId,
        request: &OpRequest,
        log: &mut PgLog,
        entry: Entry,
        _fresh: bool,
    ) -> Result<u64> {
        // A retried request reaches here only when it was never committed: the
        // two phases apply it whole or not at all.
        write::write(node, map, code(pool), pg, request, log, entry).await
    }

    async fn read(
        &self,
        node: &Node,
        map: &ClusterMap,
        pool: &Pool,
        pg: PgId,
        request: &OpRequest,
        log: &mut PgLog,
    ) -> Result<Vec<OpResult>> {
        read_request(node, map, code(pool), pg, request, log).await
    }

    async fn check_deep(
        &self,
        node: &Node,
        map: &ClusterMap,
        pool: &Pool,
        pg: PgId,
        name: &[u8],
        size: u64,
    ) -> Result<Vec<(u32, String)>> {
        repair::check_parity(node, map, code(pool), pg, name, size).await
    }

    async fn repair(
        &self,
        node: &Node,
        map: &ClusterMap,
        pool: &Pool,
        pg: PgId,
        name: &[u8],
        _authority: Option<u32>,
        bad: &mut [Inconsistency],
        log: &mut PgLog,
    ) -> Result<()> {
        repair::repair_shards(node, map, code(pool), pg, name, bad, log).await
    }
}

/// Runs the reads of a request on an erasure-coded PG (peered, under its lock):
/// data from the shards, the rest from this primary's own shard. A shard found
/// unreadable is rebuilt from the others after the read is answered.
async fn read_request(
    node: &Node,
    map: &ClusterMap,
    code: Code,
    pg: PgId,
    request: &OpRequest,
    log: &mut PgLog,
) -> Result<Vec<OpResult>> {
    let map = Arc::new(map.clone());
    let mut results = Vec::new();
    for object_op in &request.ops {
        let Some(Op::Read(range)) = &object_op.op else {
            let (name, ops) = (request.name.clone(), vec![object_op.clone()]);
            results.extend(
                node.on_store(move |store| pg::read(store, pg, &name, &ops))
                    .await?,
            );
            continue;
        };
        let name = request.name.clone();
        let meta = node
            .on_store(move |store| pg::read_shard(store, pg, &name, 0, 0))
            .await?;
        if !meta.exists {
            return Err(OsdError::NoObject(request.name.clone()));
        }
        let end = match range.length {
            0 => meta.size,
            length => range.offset.saturating_add(length).min(meta.size),
        };
        let wanted = range.offset.min(end)..end;
        let data = if wanted.is_empty() {
            Vec::new()
        } else {
            let stripes = code.stripes(&wanted);
            let first = stripes.start;
            let primary = read::Identity::from(&meta);
            let gathered =
                read::gather(node, &map, code, pg, &request.name, stripes, primary, log).await?;
            for &member in &gathered.damaged {
                // The read is answered either way; scrub finds what this misses.
                if let Err(error) =
                    repair::rebuild_damaged(node, &map, code, pg, &request.name, member, log).await
                {
                    tracing::warn!(%pg, osd = member.1, %error, "could not rebuild an unreadable shard");
                }
            }
            codec::slice(code, &gathered.data, first, wanted)
        };
        results.push(OpResult {
            result: Some(op_result::Result::Data(data)),
        });
    }
    Ok(results)
}

#[tonic::async_trait]
impl PeeringBackend for Erasure {
    async fn peer(
        &self,
        node: &Node,
        map: &ClusterMap,
        pool: &Pool,
        pg: PgId,
        log: &mut PgLog,
        up: &UpSet,
        reference: PgRef,
    ) -> Result<()> {
        peering::peer(node, map, pool, pg, log, up, reference).await
    }
}

#[tonic::async_trait]
impl ObjectRecovery for Erasure {
    async fn recover_object(
        &self,
        node: &Node,
        map: &ClusterMap,
        pool: &Pool,
        pg: PgId,
        log: &mut PgLog,
        name: &[u8],
    ) -> Result<()> {
        if !log.is_missing(name) {
            return Ok(());
        }
        repair::recover_shards(node, map, code(pool), pg, log, name).await
    }
}
