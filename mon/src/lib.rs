//! The LCPFS monitor, `lcpfs-mon`: a Raft quorum (openraft over RocksDB) holding the
//! cluster map, the auth entities and the OSDs' lifecycle.
//!
//! - [`types`]: what a Raft log entry carries;
//! - [`state`]: the replicated state and the deterministic apply function;
//! - [`store`]: the RocksDB log store and state machine, snapshots and compaction;
//! - [`network`]: Raft between monitors over gRPC;
//! - [`monitor`]: the leader's work — committing changes, membership, OSD failure
//!   detection;
//! - [`service`]: the gRPC services, with forwarding to the leader;
//! - [`metrics`]: `/metrics` and `/health`;
//! - [`daemon`]: startup, bootstrap and serving.

pub mod daemon;
pub mod metrics;
pub mod monitor;
pub mod network;
pub mod service;
pub mod state;
pub mod store;
pub mod types;
