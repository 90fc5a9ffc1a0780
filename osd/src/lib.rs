//! The LCPFS object storage daemon (OSD) and its offline store tool.
//!
//! - [`daemon`]: `lcpfs-osd --data DIR --mon ADDR`: boot, map, heartbeats, serving;
//! - [`service`]: the OSD protocol — client operations at a PG's primary, replication;
//! - [`pg`]: a PG's objects and log in the engine store;
//! - [`store_tool`]: `lcpfs-osd store <dir> ...`, the operator's and the tests' way to
//!   create, inspect, scrub and repair an OSD's engine store while the daemon is not
//!   running, like `zpool`/`zfs` and `ceph-objectstore-tool`;
//! - [`bench`]: the engine's speed against same-run baselines.

pub mod bench;
pub mod daemon;
pub mod pg;
pub mod service;
pub mod size;
pub mod store_tool;
