//! The seam between a pool's kind and everything else: replicated pools keep whole
//! copies on every OSD of a PG's up set ([`replicated`]), erasure-coded pools keep
//! one shard of `k + m` on each ([`erasure`]). Both implement [`Backend`]; the
//! client operations, scrub, peering and recovery reach them only through it, and
//! [`of`] is the one place that looks at a pool's kind.
//!
//! Like Ceph's PGBackend with its ReplicatedBackend and ECBackend.

pub mod erasure;
mod pg_backend;
pub mod replicated;

use lcpfs_core::map::{Pool, PoolKind};

use crate::peering::PeeringBackend;
use crate::recovery::ObjectRecovery;

pub use pg_backend::Backend;

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
