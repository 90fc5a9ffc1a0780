//! `lcpfs cert`: the cluster's certificate authority and the certificates it issues.
//!
//! Every monitor, OSD and client of a cluster that runs with TLS holds a certificate
//! of the cluster CA in its TLS directory (see `lcpfs_proto::tls`). `lcpfs cert ca`
//! creates the CA once (`ca.crt`, and `ca.key`, which only issuers need);
//! `lcpfs cert issue` makes one party's directory (`ca.crt`, `tls.crt`, `tls.key`).
//! A certificate's common name is its entity (`mon.a`, `osd.node1`, `client.admin`);
//! its subject alternative names are the IPs and DNS names peers dial it by, the ones
//! in the cluster map. Keys are ECDSA P-256; the CA is valid for 20 years, issued
//! certificates for `--days` (default 825, the longest most TLS clients accept).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use chrono::{DateTime, Datelike, Days, NaiveDate};
use clap::{Args, Subcommand};
use lcpfs_proto::tls::{CA_FILE, CERT_FILE, KEY_FILE};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use tokio_rustls::rustls::pki_types::ServerName;

/// The CA's private key beside `ca.crt` in the CA directory.
pub const CA_KEY_FILE: &str = "ca.key";

/// How long a new cluster CA is valid.
const CA_DAYS: u64 = 20 * 365;

/// `lcpfs cert` subcommands.
#[derive(Subcommand, Debug)]
pub enum CertCommand {
    /// Create the cluster CA: DIR/ca.crt and DIR/ca.key (readable by its owner only).
    Ca {
        /// Directory for the CA (created if missing).
        dir: PathBuf,
        /// Keep an existing CA and succeed (for bootstrap jobs that may run twice).
        #[arg(long)]
        if_missing: bool,
        /// Also store the CA as this Kubernetes Secret (ca.crt, ca.key) in the pod's
        /// namespace, through the API with the pod's service account; an existing
        /// Secret of that name is kept.
        #[arg(long, value_name = "NAME")]
        kubernetes_secret: Option<String>,
    },
    /// Issue a certificate: OUT/ca.crt, OUT/tls.crt, OUT/tls.key.
    Issue(IssueArgs),
}

/// Arguments of `lcpfs cert issue`.
#[derive(Args, Debug)]
pub struct IssueArgs {
    /// The entity the certificate names: mon.NAME, osd.NAME, mds.NAME or client.NAME.
    pub name: String,
    /// The CA directory (ca.crt and ca.key).
    #[arg(long)]
    pub ca: PathBuf,
    /// Directory for the party's TLS files (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// IP address or DNS name peers reach it by (repeat, or separate by commas);
    /// daemons need the host of their address in the cluster map.
    #[arg(long = "host", value_delimiter = ',')]
    pub hosts: Vec<String>,
    /// Days the certificate is valid.
    #[arg(long, default_value_t = 825)]
    pub days: u64,
}

/// Runs a `lcpfs cert` command; returns what to print.
pub async fn run(command: CertCommand) -> anyhow::Result<String> {
    match command {
        CertCommand::Ca {
            dir,
            if_missing,
            kubernetes_secret,
        } => {
            let kept = if_missing && dir.join(CA_FILE).exists() && dir.join(CA_KEY_FILE).exists();
            if !kept {
                create_ca(&dir)?;
            }
            let Some(secret) = kubernetes_secret else {
                let done = if kept { "kept in" } else { "created in" };
                return Ok(format!("cluster CA {done} {}", dir.display()));
            };
            let read = |file: &str| {
                let path = dir.join(file);
                std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))
            };
            let (cert, key) = (read(CA_FILE)?, read(CA_KEY_FILE)?);
            let api = crate::kube::ApiServer::in_cluster()?;
            let created = api
                .create_secret(&secret, &[(CA_FILE, &cert), (CA_KEY_FILE, &key)])
                .await?;
            Ok(if created {
                format!("cluster CA stored as Secret {secret} in {}", api.namespace)
            } else {
                format!(
                    "Secret {secret} in {} exists: the cluster CA it holds is kept",
                    api.namespace
                )
            })
        }
        CertCommand::Issue(args) => {
            issue(&args.ca, &args.out, &args.name, &args.hosts, args.days)?;
            Ok(format!("{} issued to {}", args.name, args.out.display()))
        }
    }
}

/// Makes `params` valid from midnight UTC of the day before today (a day of slack
/// for clocks behind) to midnight `days` from today.
fn set_validity(params: &mut CertificateParams, days: u64) -> anyhow::Result<()> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("the clock is before 1970")?;
    let today = i64::try_from(now.as_secs())
        .ok()
        .and_then(|seconds| DateTime::from_timestamp(seconds, 0))
        .context("the clock is out of range")?
        .date_naive();
    let midnight =
        |day: NaiveDate| rcgen::date_time_ymd(day.year(), day.month() as u8, day.day() as u8);
    let start = today
        .checked_sub_days(Days::new(1))
        .context("the clock is out of range")?;
    let end = today
        .checked_add_days(Days::new(days))
        .filter(|end| end.year() < 10_000)
        .context("--days is out of range")?;
    params.not_before = midnight(start);
    params.not_after = midnight(end);
    Ok(())
}

/// Creates a new cluster CA in `dir`; refuses to replace one, since every
/// certificate it issued would stop being trusted.
pub fn create_ca(dir: &Path) -> anyhow::Result<()> {
    if dir.join(CA_KEY_FILE).exists() {
        bail!(
            "{} already holds a cluster CA; replacing it would untrust every certificate it issued",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let key = KeyPair::generate().context("cannot generate the CA key")?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    // A name of its own, so that certificates of two clusters' CAs are told apart
    // by name ("unknown issuer") before any signature is checked.
    let id: u32 = rand::random();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("LCPFS cluster CA {id:08x}"));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, CA_DAYS)?;
    let cert = params
        .self_signed(&key)
        .context("cannot sign the CA certificate")?;
    // The key first: a CA directory with a certificate but no key cannot issue.
    write(dir, CA_KEY_FILE, key.serialize_pem().as_bytes())?;
    write(dir, CA_FILE, cert.pem().as_bytes())
}

/// A cluster CA for a cluster on loopback (`lcpfs dev`, cluster tests): the CA in
/// ROOT/ca, made if missing, and each entity's TLS directory in ROOT/ENTITY with a
/// certificate for 127.0.0.1.
pub struct LoopbackCa {
    root: PathBuf,
}

impl LoopbackCa {
    /// The CA under `root`, made if it is not there yet.
    pub fn open_or_create(root: &Path) -> anyhow::Result<LoopbackCa> {
        let ca = LoopbackCa {
            root: root.to_owned(),
        };
        if !ca.dir().join(CA_KEY_FILE).exists() {
            create_ca(&ca.dir())?;
        }
        Ok(ca)
    }

    /// The CA's directory (ca.crt, ca.key).
    pub fn dir(&self) -> PathBuf {
        self.root.join("ca")
    }

    /// Issues `entity` a new certificate for 127.0.0.1; returns its TLS directory.
    pub fn issue(&self, entity: &str) -> anyhow::Result<PathBuf> {
        let out = self.root.join(entity);
        issue(&self.dir(), &out, entity, &["127.0.0.1".to_owned()], 825)?;
        Ok(out)
    }
}

/// Issues a certificate for `name`, valid for `hosts`, into `out`.
pub fn issue(
    ca_dir: &Path,
    out: &Path,
    name: &str,
    hosts: &[String],
    days: u64,
) -> anyhow::Result<()> {
    let entity_kind = name
        .split_once('.')
        .map(|(kind, rest)| (kind, rest.is_empty()));
    if !matches!(entity_kind, Some(("mon" | "osd" | "mds" | "client", false))) {
        bail!("{name:?} is not an entity name: use mon.NAME, osd.NAME, mds.NAME or client.NAME");
    }
    let read = |file: &str| {
        let path = ca_dir.join(file);
        std::fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read {} (create the CA with `lcpfs cert ca`)",
                path.display()
            )
        })
    };
    let ca_pem = read(CA_FILE)?;
    let ca_key = KeyPair::from_pem(&read(CA_KEY_FILE)?).with_context(|| {
        format!(
            "{} is not a private key",
            ca_dir.join(CA_KEY_FILE).display()
        )
    })?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)
        .with_context(|| format!("{} is not a certificate", ca_dir.join(CA_FILE).display()))?;

    for host in hosts {
        if ServerName::try_from(host.as_str()).is_err() {
            bail!("--host {host:?} is not an IP address or a DNS name (without a port)");
        }
    }
    let mut params = CertificateParams::new(hosts.to_vec())
        .with_context(|| format!("{hosts:?} are not all IP addresses or DNS names"))?;
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, days)?;
    let key = KeyPair::generate().context("cannot generate a key")?;
    let cert = params
        .signed_by(&key, &issuer)
        .context("cannot sign the certificate")?;

    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    write(out, CA_FILE, ca_pem.as_bytes())?;
    write(out, KEY_FILE, key.serialize_pem().as_bytes())?;
    write(out, CERT_FILE, cert.pem().as_bytes())
}

fn write(dir: &Path, file: &str, contents: &[u8]) -> anyhow::Result<()> {
    let path = dir.join(file);
    lcpfs_core::file::replace_private(&path, contents)
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lcpfs_proto::tls::Tls;

    #[test]
    fn issued_certificates_load_and_wrong_material_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        create_ca(&ca).unwrap();
        let osd = dir.path().join("osd");
        issue(
            &ca,
            &osd,
            "osd.node1",
            &["127.0.0.1".into(), "osd-1.lcpfs".into()],
            30,
        )
        .unwrap();
        let tls = Tls::load(&osd).unwrap();
        assert_eq!(tls.dir(), osd);
        assert_eq!(
            std::fs::read(osd.join(CA_FILE)).unwrap(),
            std::fs::read(ca.join(CA_FILE)).unwrap()
        );

        // A key that is not the certificate's.
        let other = dir.path().join("other");
        issue(&ca, &other, "client.x", &[], 30).unwrap();
        std::fs::copy(other.join(KEY_FILE), osd.join(KEY_FILE)).unwrap();
        let error = Tls::load(&osd).unwrap_err().to_string();
        assert!(error.contains(&osd.display().to_string()), "{error}");

        // Files that are missing or are not PEM.
        std::fs::remove_file(other.join(CERT_FILE)).unwrap();
        let error = Tls::load(&other).unwrap_err().to_string();
        assert!(error.contains("tls.crt"), "{error}");
        std::fs::write(other.join(CERT_FILE), "not a certificate").unwrap();
        assert!(Tls::load(&other).is_err());

        // Names that are not entities, hosts that are not names.
        let error = issue(&ca, &other, "node1", &[], 30)
            .unwrap_err()
            .to_string();
        assert!(error.contains("not an entity name"), "{error}");
        assert!(issue(&ca, &other, "osd.", &[], 30).is_err());
        for host in ["bad host!", "mon-a:6789", ""] {
            let error = issue(&ca, &other, "osd.a", &[host.into()], 30).unwrap_err();
            assert!(error.to_string().contains("--host"), "{error}");
        }
        let error = issue(&dir.path().join("none"), &other, "osd.a", &[], 30)
            .unwrap_err()
            .to_string();
        assert!(error.contains("lcpfs cert ca"), "{error}");
    }

    #[tokio::test]
    async fn a_cluster_ca_is_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        create_ca(&ca).unwrap();
        let first = std::fs::read(ca.join(CA_FILE)).unwrap();
        let error = create_ca(&ca).unwrap_err().to_string();
        assert!(error.contains("already holds a cluster CA"), "{error}");
        let kept = run(CertCommand::Ca {
            dir: ca.clone(),
            if_missing: true,
            kubernetes_secret: None,
        })
        .await
        .unwrap();
        assert!(kept.contains("kept in"), "{kept}");
        assert_eq!(std::fs::read(ca.join(CA_FILE)).unwrap(), first);
        let error = run(CertCommand::Ca {
            dir: ca.clone(),
            if_missing: false,
            kubernetes_secret: None,
        })
        .await
        .unwrap_err()
        .to_string();
        assert!(error.contains("already holds"), "{error}");
    }
}
