//! The LCPFS object storage daemon (OSD) and its offline store tool.
//!
//! Layers, top down; each calls only the layers below it, and a lower layer that
//! needs the one above calls through a small trait it defines:
//! - [`daemon`]: `lcpfs-osd --data DIR --mon ADDR`: boot, map, heartbeats, serving;
//! - [`server`]: the gRPC service, thin handlers; errors become statuses there;
//! - [`ops`]: client operations at a PG's primary (write, read, list, streams);
//!   [`scrub`]: comparing and repairing a PG's copies; [`status`]: PG states;
//!   [`strays`]: removing copies this OSD no longer needs;
//! - [`backend`]: one trait, replicated and erasure-coded pools behind it;
//! - [`peering`]: bringing a PG's copies level in a new interval; [`lease`]:
//!   read leases, so that a replaced primary stops serving reads;
//!   [`replica`]: the receiving side of the calls between OSDs;
//! - [`recovery`]: objects brought level in the background once a PG is active;
//! - [`split`]: splitting this OSD's PG copies when a pool's pg_num grows;
//! - [`node`]: one running OSD's shared state (store, map, PGs, peers, tables;
//!   [`leases`]: the read leases held and granted);
//! - [`pg`]: a PG's copy in the engine store and in memory; [`intervals`]: each
//!   PG's up sets over epochs; [`peers`]: every call to another OSD;
//! - [`config`], [`error`], [`metrics`]: settings, the error enum, `/metrics`;
//!   [`crash`]: where a chaos build can crash the OSD on purpose;
//! - [`store_tool`] and [`bench`]: `lcpfs-osd store <dir> ...`, the offline
//!   tool, like `zpool`/`zfs` and `ceph-objectstore-tool`, and the engine's speed
//!   against same-run baselines.

pub mod backend;
pub mod bench;
pub mod config;
pub mod crash;
pub mod daemon;
pub mod error;
pub mod intervals;
pub mod lease;
pub mod leases;
pub mod metrics;
pub mod node;
pub mod ops;
pub mod peering;
pub mod peers;
pub mod pg;
pub mod recovery;
pub mod replica;
pub mod scrub;
pub mod server;
pub mod split;
pub mod status;
pub mod store_tool;
pub mod strays;
