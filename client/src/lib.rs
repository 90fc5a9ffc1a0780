//! The LCPFS client library, what applications link (like librados): it knows no
//! command line.
//!
//! - [`mon_client`]: reach the monitors, send commands, follow the cluster map;
//! - [`objects`]: objects in pools, straight to each PG's primary OSD;
//! - [`striper`]: data larger than one object, in pieces, like libradosstriper.

pub mod mon_client;
pub mod objects;
pub mod striper;
