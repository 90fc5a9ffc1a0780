//! The LCPFS object storage daemon (OSD) and its offline store tool.
//!
//! - [`daemon`]: `lcpfs-osd --data DIR --mon ADDR`: boot, map, heartbeats, serving;
//! - [`service`]: the OSD protocol — client operations at a PG's primary, replication;
//! - [`metrics`]: `/metrics`, `/health` and `/ready` for Prometheus and probes;
//! - [`intervals`]: each PG's intervals (up sets over epochs), for peering;
//! - [`pg`]: a PG's objects and log in the engine store;
//! - [`ec`]: erasure coding of objects into shards, stripe by stripe;
//! - [`scrub`]: which copy of an object is authoritative when copies disagree;
//! - [`store_tool`]: `lcpfs-osd store <dir> ...`, the operator's and the tests' way to
//!   create, inspect, scrub and repair an OSD's engine store while the daemon is not
//!   running, like `zpool`/`zfs` and `ceph-objectstore-tool`;
//! - [`bench`]: the engine's speed against same-run baselines.

pub mod bench;
pub mod daemon;
pub mod ec;
pub mod intervals;
pub mod metrics;
pub mod pg;
pub mod scrub;
pub mod service;
pub mod store_tool;
