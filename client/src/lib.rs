//! The LCPFS client side: today the placement tools of the `lcpfs` command; the client
//! library, FUSE mount and S3 gateway grow here.
//!
//! - [`crush_tool`]: `lcpfs crush test`, like `crushtool --test --show-utilization`.

pub mod crush_tool;
