//! Creating a Kubernetes Secret from inside a pod, for `lcpfs cert ca
//! --kubernetes-secret` (the Job that bootstraps a cluster's CA on Kubernetes).
//!
//! A pod reaches the API server at `KUBERNETES_SERVICE_HOST:KUBERNETES_SERVICE_PORT`
//! and authenticates with its service account: Kubernetes mounts the account's token,
//! namespace and the API server's CA under
//! `/var/run/secrets/kubernetes.io/serviceaccount`. One request is all this needs —
//! `POST /api/v1/namespaces/NS/secrets` — so it is made with hyper over rustls, the
//! HTTP and TLS stacks the rest of LCPFS already runs on, rather than a full
//! Kubernetes client.

use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore, crypto};

/// Where Kubernetes mounts a pod's service account.
const SERVICE_ACCOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The Kubernetes API server, as a pod's service account reaches it.
pub struct ApiServer {
    /// `HOST:PORT` (`[IPv6]:PORT`), also sent as the `Host` header.
    pub addr: String,
    /// The name its certificate is checked against (the host of `addr`).
    pub host: String,
    /// PEM of the CA that issued its certificate.
    pub ca: Vec<u8>,
    /// Bearer token of the service account.
    pub token: String,
    /// Namespace of the pod.
    pub namespace: String,
}

impl ApiServer {
    /// The API server and service account of the pod this runs in.
    pub fn in_cluster() -> anyhow::Result<ApiServer> {
        let env = |name: &str| {
            std::env::var(name).with_context(|| {
                format!("{name} is not set: --kubernetes-secret works inside a Kubernetes pod")
            })
        };
        let host = env("KUBERNETES_SERVICE_HOST")?;
        let port = env("KUBERNETES_SERVICE_PORT")?;
        let read = |file: &str| {
            let path = format!("{SERVICE_ACCOUNT}/{file}");
            std::fs::read(&path).with_context(|| {
                format!("cannot read {path} (is a service account token mounted?)")
            })
        };
        let text = |file: &str| -> anyhow::Result<String> {
            Ok(String::from_utf8_lossy(&read(file)?).trim().to_owned())
        };
        let addr = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        Ok(ApiServer {
            addr,
            host,
            ca: read("ca.crt")?,
            token: text("token")?,
            namespace: text("namespace")?,
        })
    }

    /// Creates the Opaque Secret `name` holding `files` (file name → contents).
    /// Returns false, changing nothing, when a Secret of that name exists already.
    pub async fn create_secret(&self, name: &str, files: &[(&str, &[u8])]) -> anyhow::Result<bool> {
        let data: serde_json::Map<String, serde_json::Value> = files
            .iter()
            .map(|(file, contents)| (file.to_string(), BASE64.encode(contents).into()))
            .collect();
        let secret = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "lcpfs"}},
            "type": "Opaque",
            "data": data,
        });
        let path = format!("/api/v1/namespaces/{}/secrets", self.namespace);
        let (status, body) = self.post(&path, secret.to_string()).await?;
        match status {
            StatusCode::CREATED | StatusCode::OK => Ok(true),
            StatusCode::CONFLICT => Ok(false),
            status => bail!(
                "the Kubernetes API refused to create Secret {name} in {}: {status}: {}",
                self.namespace,
                String::from_utf8_lossy(&body)
            ),
        }
    }

    /// POSTs a JSON body; returns the status and the reply's body.
    async fn post(&self, path: &str, json: String) -> anyhow::Result<(StatusCode, Bytes)> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&self.ca) {
            roots
                .add(cert.context("the API server's CA is not PEM")?)
                .context("the API server's CA is not a certificate")?;
        }
        let config =
            ClientConfig::builder_with_provider(Arc::new(crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .context("TLS")?
                .with_root_certificates(roots)
                .with_no_client_auth();
        let server_name = ServerName::try_from(self.host.clone())
            .map_err(|_| anyhow!("{:?} is not a host name", self.host))?;
        let unreachable = || format!("cannot reach the Kubernetes API at {}", self.addr);
        let tcp = tokio::net::TcpStream::connect(&self.addr)
            .await
            .with_context(unreachable)?;
        let tls = TlsConnector::from(Arc::new(config))
            .connect(server_name, tcp)
            .await
            .with_context(unreachable)?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .with_context(unreachable)?;
        let driver = tokio::spawn(connection);
        let request = Request::post(path)
            .header(header::HOST, &self.addr)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token))
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json")
            .body(Full::new(Bytes::from(json)))
            .context("request")?;
        let reply = sender
            .send_request(request)
            .await
            .with_context(unreachable)?;
        let status = reply.status();
        let body = reply
            .into_body()
            .collect()
            .await
            .with_context(unreachable)?
            .to_bytes();
        driver.abort();
        Ok((status, body))
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Mutex;

    use hyper::Response;
    use hyper::body::Incoming;
    use tokio_rustls::TlsAcceptor;
    use tokio_rustls::rustls::ServerConfig;
    use tokio_rustls::rustls::pki_types::PrivateKeyDer;

    use super::*;
    use crate::certs;

    type Stored = Arc<Mutex<Vec<serde_json::Value>>>;

    /// Answers like the API server: 401 without the token, 201 for a new Secret,
    /// 409 for one that exists.
    async fn answer(request: Request<Incoming>, stored: Stored) -> Response<Full<Bytes>> {
        let reply = |status: StatusCode, text: &str| {
            let mut reply = Response::new(Full::new(Bytes::from(text.to_owned())));
            *reply.status_mut() = status;
            reply
        };
        let authorized = request
            .headers()
            .get(header::AUTHORIZATION)
            .is_some_and(|value| value == "Bearer t0ken");
        if !authorized {
            return reply(StatusCode::UNAUTHORIZED, "Unauthorized");
        }
        if request.method() != hyper::Method::POST
            || request.uri().path() != "/api/v1/namespaces/storage/secrets"
        {
            return reply(StatusCode::NOT_FOUND, "not found");
        }
        let body = request.into_body().collect().await.unwrap().to_bytes();
        let secret: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let mut stored = stored.lock().unwrap();
        if stored
            .iter()
            .any(|old| old["metadata"]["name"] == secret["metadata"]["name"])
        {
            return reply(StatusCode::CONFLICT, "AlreadyExists");
        }
        stored.push(secret);
        reply(StatusCode::CREATED, "{}")
    }

    /// An API server on loopback with a certificate for 127.0.0.1 from `ca_dir`.
    async fn api_server(dir: &std::path::Path, stored: Stored) -> String {
        let ca = dir.join("api-ca");
        certs::create_ca(&ca).unwrap();
        certs::issue(&ca, &dir.join("api"), "mon.api", &["127.0.0.1".into()], 1).unwrap();
        let chain = CertificateDer::pem_file_iter(dir.join("api/tls.crt"))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(dir.join("api/tls.key")).unwrap();
        let config =
            ServerConfig::builder_with_provider(Arc::new(crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let (acceptor, stored) = (acceptor.clone(), stored.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |request| {
                        let stored = stored.clone();
                        async move { Ok::<_, Infallible>(answer(request, stored).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_secret_is_created_once_then_kept_and_strangers_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let stored = Stored::default();
        let addr = api_server(dir.path(), stored.clone()).await;
        let api = ApiServer {
            addr,
            host: "127.0.0.1".into(),
            ca: std::fs::read(dir.path().join("api-ca/ca.crt")).unwrap(),
            token: "t0ken".into(),
            namespace: "storage".into(),
        };
        let first: &[(&str, &[u8])] = &[("ca.crt", b"first"), ("ca.key", b"key")];
        assert!(api.create_secret("lcpfs-ca", first).await.unwrap());
        assert!(
            !api.create_secret("lcpfs-ca", &[("ca.crt", b"second")])
                .await
                .unwrap()
        );
        {
            let stored = stored.lock().unwrap();
            assert_eq!(stored.len(), 1);
            assert_eq!(stored[0]["data"]["ca.crt"], BASE64.encode("first"));
            assert_eq!(stored[0]["data"]["ca.key"], BASE64.encode("key"));
            assert_eq!(stored[0]["type"], "Opaque");
        }

        let wrong_token = ApiServer {
            token: "stolen".into(),
            ..api
        };
        let error = wrong_token
            .create_secret("other", &[])
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("401"), "{error}");

        // A server whose certificate the pod's CA did not issue is not talked to.
        certs::create_ca(&dir.path().join("other-ca")).unwrap();
        let impostor = ApiServer {
            ca: std::fs::read(dir.path().join("other-ca/ca.crt")).unwrap(),
            token: "t0ken".into(),
            ..wrong_token
        };
        let error = format!(
            "{:#}",
            impostor.create_secret("other", &[]).await.unwrap_err()
        );
        assert!(error.contains("cannot reach the Kubernetes API"), "{error}");
        assert_eq!(stored.lock().unwrap().len(), 1);
    }
}
