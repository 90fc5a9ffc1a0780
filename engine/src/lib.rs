//! The LCPFS engine: a copy-on-write, self-healing object store on one node's disks.
//!
//! Layers, bottom up, after ZFS (SPA → DMU) with BlueStore's lesson that metadata
//! belongs in a proven key-value store:
//! - [`vdev`]: disks grouped into top-level vdevs (single, mirror, raidz1/2/3), labels,
//!   checksum-verified reads that rebuild and rewrite damaged copies; every disk call
//!   goes through `disk_io`, where a chaos build can inject a failing disk;
//! - [`arc`]: the adaptive replacement cache of decoded blocks;
//! - [`l2arc`]: an optional cache device that keeps what the ARC evicts, across restarts;
//! - [`alloc`]: which rows are free, persisted in the same batch as the metadata, with
//!   frees deferred until no reader can still see the old block;
//! - [`blkptr`]: block pointers (location, sizes, codec, BLAKE3, birth txg) and
//!   per-block compression;
//! - [`dedup`]: the table of blocks by content that lets identical blocks be stored once;
//! - [`keys`] and [`view`]: metadata in RocksDB, versioned so that snapshots and clones
//!   are instant and share blocks;
//! - [`txn`]: transactions over objects (data, xattrs, omap) that commit atomically;
//! - [`commit`]: group commit (one disk flush and one synced RocksDB batch for many
//!   writers);
//! - [`scrub`]: walks every block pointer, verifies, repairs, accounts space.
//!
//! The engine knows nothing of the network, of placement groups or of Raft: the OSD puts
//! its replication log into the same [`Transaction`] as the data it logs.
//!
//! The [`Store`] ties them together; its methods live beside their concern: opening and
//! creating in `store`, collections, snapshots and clones in `collections` (over the
//! `catalog`), object reads through a [`View`] in `read`, pool status in `status`, disk
//! replacement in `replace`, scrubbing in [`scrub`] and transactions in [`txn`].
//! Underneath, `shared` holds what the store's threads share and reads blocks through
//! the caches.

pub mod alloc;
pub mod arc;
pub mod blkptr;
mod catalog;
mod collections;
pub mod commit;
pub mod dedup;
mod disk_io;
pub mod error;
mod inflight;
pub mod keys;
pub mod l2arc;
mod parallel;
mod read;
mod replace;
pub mod scrub;
mod shared;
mod status;
mod store;
pub mod txn;
pub mod vdev;
pub mod view;

pub use blkptr::Compression;
pub use catalog::{CollectionInfo, CollectionSettings, DEFAULT_RECORD_SIZE, Origin, SnapshotInfo};
pub use error::{Error, Result};
pub use read::{ListOptions, ObjectEntry, ObjectStat, View};
pub use status::{DiskStatus, PoolStatus, VdevStatus};
pub use store::{CreateSpec, DiskSource, OpenOptions, Store};
pub use txn::{Data, Transaction};
pub use vdev::VdevKind;
