//! The `lcpfs` command, on top of the client library (`lcpfs-client`).
//!
//! - [`admin`]: `lcpfs status`, `osd`, `pool`, `pg`, `auth`, `mon`, `map`;
//! - [`object_cmd`]: `lcpfs put|get|ls|stat|rm`, whole or striped;
//! - [`bench`]: `lcpfs bench`, like `rados bench`, with same-run baselines;
//! - [`dev`]: `lcpfs dev`, a local cluster with one command;
//! - [`certs`]: `lcpfs cert`, the cluster CA and the certificates it issues;
//! - [`kube`]: one Kubernetes API call, storing the CA as a Secret from a Job;
//! - [`crush_tool`]: `lcpfs crush test`, like `crushtool --test --show-utilization`.

pub mod admin;
pub mod bench;
pub mod certs;
pub mod crush_tool;
pub mod dev;
pub mod kube;
pub mod object_cmd;
