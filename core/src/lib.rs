//! LCPFS core: what every LCPFS daemon and client shares. The storage engine an OSD
//! runs on its disks is its own crate (`lcpfs-engine`), which only the OSD links.
//!
//! - [`file`]: small files replaced whole (keys, saved state);
//! - [`map`]: the cluster map (monitors, OSDs, pools) and its epochs and incrementals;
//! - [`monitor`]: the requests the monitors accept and their replies;
//! - [`net`]: advertised addresses (IP or DNS name) and where a daemon listens;
//! - [`pg`]: objects to placement groups, with a hash fixed forever;
//! - [`shutdown`]: a daemon's stop request (Ctrl-C or SIGTERM);
//! - [`size`]: human sizes (`64K`, `4G`) on command lines and in reports;
//! - [`crush`]: placement groups to OSDs by CRUSH straw2 across failure domains.

pub mod crush;
pub mod file;
pub mod map;
pub mod monitor;
pub mod net;
pub mod pg;
pub mod shutdown;
pub mod size;
