//! The LCPFS client side: the monitor client and the `lcpfs` command's tools; the
//! client library, FUSE mount and S3 gateway grow here.
//!
//! - [`mon_client`]: reach the monitors, send commands, follow the cluster map;
//! - [`admin`]: `lcpfs status`, `osd`, `pool`, `auth`, `mon`, `map`;
//! - [`crush_tool`]: `lcpfs crush test`, like `crushtool --test --show-utilization`.

pub mod admin;
pub mod crush_tool;
pub mod mon_client;
