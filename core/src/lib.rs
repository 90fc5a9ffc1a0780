//! LCPFS core: what every LCPFS daemon and client shares.
//!
//! - [`engine`]: the LCPFS storage engine each OSD runs on its disks — copy-on-write,
//!   checksummed, self-healing, with RAID-Z, compression, dedup, snapshots and clones;
//! - [`file`]: small files replaced whole (keys, saved state);
//! - [`map`]: the cluster map (monitors, OSDs, pools) and its epochs and incrementals;
//! - [`monitor`]: the requests the monitors accept and their replies;
//! - [`net`]: advertised addresses (IP or DNS name) and where a daemon listens;
//! - [`pg`]: objects to placement groups, with a hash fixed forever;
//! - [`shutdown`]: a daemon's stop request (Ctrl-C or SIGTERM);
//! - [`size`]: human sizes (`64K`, `4G`) on command lines and in reports;
//! - [`crush`]: placement groups to OSDs by CRUSH straw2 across failure domains.

pub mod crush;
pub mod engine;
pub mod file;
pub mod map;
pub mod monitor;
pub mod net;
pub mod pg;
pub mod shutdown;
pub mod size;
