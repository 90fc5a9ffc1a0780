//! The seam between a pool's kind and everything else: replicated pools keep whole
//! copies on every OSD of a PG's up set ([`replicated`]), erasure-coded pools keep
//! one shard of `k + m` on each ([`erasure`]). Both implement [`Backend`]; the
//! client operations, scrub, peering and recovery reach them only through it, and
//! [`of`] is the one place that looks at a pool's kind.
//!
//! Like Ceph's PGBackend with its ReplicatedBackend and ECBackend.

pub mod erasure;
pub mod replicated;

use lcpfs_core::map::{ClusterMap, Pool, PoolKind};
use lcpfs_core::pg::PgId;
use lcpfs_proto::{Inconsistency, ObjectOp, OpRequest, OpResult};

use crate::error::Result;
use crate::node::Node;
use crate::peering::PeeringBackend;
use crate::pg::{Entry, PgLog};
use crate::recovery::ObjectRecovery;

/// What a pool's kind decides: how a PG peers and recovers (the supertraits),
/// how a client's mutation and reads run at its primary, and how scrub checks and
/// repairs its copies.
#[tonic::async_trait]
pub trait Backend: PeeringBackend {
    /// Refuses operations this kind of pool cannot run (nothing is applied).
    fn check_ops(&self, pool: &Pool, ops: &[ObjectOp]) -> Result<()>;

    /// True when a read of `name` must wait for `name`'s recovery: this copy
    /// misses it, or (reads that gather other copies) any up copy does.
    fn read_waits_for(&self, log: &PgLog, name: &[u8]) -> bool;

    /// Applies a client's mutation to the PG (peered, under its lock) as log entry
    /// `entry`, on every up copy; returns its version once it is acknowledged.
    /// `fresh` is false for a retry of a request this copy already applied.
    #[allow(clippy::too_many_arguments)]
    async fn write(
        &self,
        node: &Node,
        map: &ClusterMap,
        pool: &Pool,
        pg: PgId,
        request: &OpRequest,
        log: &mut PgLog,
        entry: Entry,
        fresh: bool,
    ) -> Result<u64>;

    /// Runs the reads of a request on the PG (peered, under its lock).
    async fn read(
        &self,
        node: &Node,
        map: &ClusterMap,
        pool: &Pool,
        pg: PgId,
        request: &OpRequest,
        log: &mut PgLog,
    ) -> Result<Vec<OpResult>>;

    /// Deep scrub of one object whose copies agree on their metadata: what the
    /// content digests cannot see (for shards: whether they fit the code).
    /// Returns the OSDs whose copies are bad, with the reason.
    async fn check_deep(
        &self,
        node: &Node,
        map: &ClusterMap,
        pool: &Pool,
        pg: PgId,
        name: &[u8],
        size: u64,
    ) -> Result<Vec<(u32, String)>>;

    /// Rewrites the bad copies scrub found of one object (`authority`: the copy
    /// the others agree with, if any); marks each one it rewrote as repaired.
    #[allow(clippy::too_many_arguments)]
    async fn repair(
        &self,
        node: &Node,
        map: &ClusterMap,
        pool: &Pool,
        pg: PgId,
        name: &[u8],
        authority: Option<u32>,
        bad: &mut [Inconsistency],
        log: &mut PgLog,
    ) -> Result<()>;
}

/// The backend of a pool.
pub fn of(pool: &Pool) -> &'static dyn Backend {
    match pool.kind {
        PoolKind::Replicated { .. } => &replicated::Replicated,
        PoolKind::Erasure { .. } => &erasure::Erasure,
    }
}

/// The peering of a pool (for the background peering loop).
pub fn peering_of(pool: &Pool) -> &'static dyn PeeringBackend {
    of(pool)
}

/// The object recovery of a pool (for the background recovery).
pub fn recovery_of(pool: &Pool) -> &'static dyn ObjectRecovery {
    of(pool)
}
