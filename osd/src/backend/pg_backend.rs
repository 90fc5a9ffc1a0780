//! The `Backend` trait: what a pool's kind decides, in one seam (Ceph's
//! PGBackend). [`super::of`] picks the implementation for a pool.

use lcpfs_core::map::{ClusterMap, Pool};
use lcpfs_core::pg::PgId;
use lcpfs_proto::{Inconsistency, ObjectOp, OpRequest, OpResult};

use crate::error::Result;
use crate::node::Node;
use crate::peering::PeeringBackend;
use crate::pg::{Entry, PgLog};

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
