//! The LCPFS wire protocols, package `lcpfs.v1`, and how they are secured.
//!
//! Every request and reply that depends on the cluster map carries the sender's map
//! epoch, so a peer that is behind learns it and fetches the newer map. [`tls`] makes
//! the endpoints and servers of every daemon and client: mutual TLS with the cluster
//! CA, or plain HTTP/2 without a TLS directory; [`connections`] keeps the
//! connections to OSDs that clients and OSDs share.

pub mod connections;
pub mod tls;

tonic::include_proto!("lcpfs.v1");
