//! The LCPFS client side: the monitor client and the `lcpfs` command's tools; the
//! client library, FUSE mount and S3 gateway grow here.
//!
//! - [`mon_client`]: reach the monitors, send commands, follow the cluster map;
//! - [`objects`]: objects in pools, straight to each PG's primary OSD;
//! - [`striper`]: data larger than one object, in pieces, like libradosstriper;
//! - [`admin`]: `lcpfs status`, `osd`, `pool`, `pg`, `auth`, `mon`, `map`;
//! - [`certs`]: `lcpfs cert`, the cluster CA and the certificates it issues;
//! - [`kube`]: one Kubernetes API call, storing the CA as a Secret from a Job;
//! - [`bench`]: `lcpfs bench`, like `rados bench`, with same-run baselines;
//! - [`dev`]: `lcpfs dev`, a local cluster with one command;
//! - [`object_cmd`]: `lcpfs put|get|ls|stat|rm`, whole or striped;
//! - [`crush_tool`]: `lcpfs crush test`, like `crushtool --test --show-utilization`.

pub mod admin;
pub mod bench;
pub mod certs;
pub mod crush_tool;
pub mod dev;
pub mod kube;
pub mod mon_client;
pub mod object_cmd;
pub mod objects;
pub mod striper;
