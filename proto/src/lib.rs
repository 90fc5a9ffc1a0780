//! The LCPFS wire protocols, package `lcpfs.v1`.
//!
//! Every request and reply that depends on the cluster map carries the sender's map
//! epoch, so a peer that is behind learns it and fetches the newer map.

tonic::include_proto!("lcpfs.v1");
