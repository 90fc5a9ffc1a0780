//! Transport security: mutual TLS between every daemon and client of a cluster.
//!
//! A cluster that runs with TLS has one certificate authority, the cluster CA, and
//! every monitor, OSD and client holds a certificate it issued (`lcpfs cert`). A
//! party's TLS directory holds three PEM files, named as in a Kubernetes TLS Secret:
//!
//! | file | what |
//! |---|---|
//! | `ca.crt` | the cluster CA's certificate |
//! | `tls.crt` | this party's certificate, issued by the cluster CA |
//! | `tls.key` | this party's private key |
//!
//! Servers accept only connections whose client presents a certificate of the cluster
//! CA; clients accept only servers whose certificate the cluster CA issued for the
//! name they dialled (the IP or DNS name of the address in the cluster map). Without a
//! TLS directory everything speaks plain HTTP/2, as on a laptop.
//!
//! A certificate's common name is its entity: `mon.NAME`, `osd.NAME`, `mds.NAME` or
//! `client.NAME`. The calls only daemons make of each other — Raft between monitors,
//! OSD boots and heartbeats, replication, peering, recovery and scrub maps between
//! OSDs — check it with [`require`], so a client certificate can read and write
//! objects but never pose as a monitor or an OSD.

use std::io;
use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, Server, ServerTlsConfig};
use tonic::{Request, Status};

/// The cluster CA's certificate in a TLS directory.
pub const CA_FILE: &str = "ca.crt";
/// This party's certificate in a TLS directory.
pub const CERT_FILE: &str = "tls.crt";
/// This party's private key in a TLS directory.
pub const KEY_FILE: &str = "tls.key";

/// The environment variable naming the TLS directory when no `--tls-dir` is given.
pub const TLS_DIR_ENV: &str = "LCPFS_TLS_DIR";

/// One party's TLS material: the cluster CA and its own certificate and key.
#[derive(Clone)]
pub struct Tls {
    dir: PathBuf,
    ca: Certificate,
    identity: Identity,
}

/// Shows the directory only, never the key.
impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Reads `ca.crt`, `tls.crt` and `tls.key` from `dir`, and checks that they make a
    /// usable server and client configuration, so that a wrong file is reported at
    /// start and not at the first connection.
    pub fn load(dir: &Path) -> io::Result<Tls> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|error| {
                io::Error::new(
                    error.kind(),
                    format!(
                        "cannot read {} of the TLS directory: {error}",
                        path.display()
                    ),
                )
            })
        };
        let tls = Tls {
            dir: dir.to_owned(),
            ca: Certificate::from_pem(read(CA_FILE)?),
            identity: Identity::from_pem(read(CERT_FILE)?, read(KEY_FILE)?),
        };
        let invalid = |what: &str, error: tonic::transport::Error| {
            let source =
                std::error::Error::source(&error).map_or(String::new(), |s| format!(": {s}"));
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the TLS directory {} {what}{source}", dir.display()),
            )
        };
        Server::builder()
            .tls_config(tls.server_config())
            .map_err(|error| invalid("does not hold a usable certificate and key", error))?;
        Endpoint::from_static("https://lcpfs.invalid")
            .tls_config(tls.client_config())
            .map_err(|error| invalid("does not hold a usable CA certificate", error))?;
        Ok(tls)
    }

    /// The TLS directory from `flag` or, without it, from `LCPFS_TLS_DIR`; `None` when
    /// neither names one (plain connections).
    pub fn from_flag(flag: Option<&Path>) -> io::Result<Option<Tls>> {
        let dir = match flag {
            Some(dir) => dir.to_owned(),
            None => match std::env::var_os(TLS_DIR_ENV) {
                Some(dir) if !dir.is_empty() => PathBuf::from(dir),
                _ => return Ok(None),
            },
        };
        Tls::load(&dir).map(Some)
    }

    /// The directory this was read from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A server configuration that requires clients to present a certificate of the
    /// cluster CA.
    pub fn server_config(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity.clone())
            .client_ca_root(self.ca.clone())
    }

    fn client_config(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(self.ca.clone())
            .identity(self.identity.clone())
    }
}

/// A gRPC endpoint for `addr` (`HOST:PORT`): HTTPS with mutual TLS when `tls` is given,
/// plain HTTP/2 otherwise.
pub fn endpoint(addr: &str, tls: Option<&Tls>) -> Result<Endpoint, tonic::transport::Error> {
    match tls {
        None => Endpoint::from_shared(format!("http://{addr}")),
        Some(tls) => {
            Endpoint::from_shared(format!("https://{addr}"))?.tls_config(tls.client_config())
        }
    }
}

/// A server builder that serves TLS when `tls` is given.
pub fn server(tls: Option<&Tls>) -> Result<Server, tonic::transport::Error> {
    match tls {
        None => Ok(Server::builder()),
        Some(tls) => Server::builder().tls_config(tls.server_config()),
    }
}

/// The entity (certificate common name) of the client that sent `request` over TLS;
/// `None` on a plain connection.
pub fn peer_entity<T>(request: &Request<T>) -> Option<Result<String, Status>> {
    let certs = request.peer_certs()?;
    let unnamed = || Status::unauthenticated("the client certificate names no entity");
    let entity = certs.first().ok_or_else(unnamed).and_then(|cert| {
        let (_, cert) = x509_parser::parse_x509_certificate(cert).map_err(|_| unnamed())?;
        let name = cert
            .subject()
            .iter_common_name()
            .next()
            .ok_or_else(unnamed)?;
        name.as_str().map(str::to_owned).map_err(|_| unnamed())
    });
    Some(entity)
}

/// Refuses `request` unless it came over a plain connection (a cluster without TLS)
/// or from a certificate whose entity is of one of `kinds` (`mon`, `osd`, ...).
pub fn require<T>(request: &Request<T>, kinds: &[&str], call: &str) -> Result<(), Status> {
    let Some(entity) = peer_entity(request) else {
        return Ok(());
    };
    let entity = entity?;
    let kind = entity.split_once('.').map_or("", |(kind, _)| kind);
    if kinds.contains(&kind) {
        return Ok(());
    }
    let allowed: Vec<String> = kinds.iter().map(|kind| format!("{kind}.*")).collect();
    Err(Status::permission_denied(format!(
        "{entity} may not call {call}: only {} may",
        allowed.join(" and ")
    )))
}
