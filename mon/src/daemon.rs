//! Starting a monitor: open its data directory, start Raft, bootstrap a new cluster
//! once, and serve.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use lcpfs_proto::mon_raft_server::MonRaftServer;
use lcpfs_proto::monitor_server::MonitorServer;
use openraft::error::{InitializeError, RaftError};
use serde::{Deserialize, Serialize};

use crate::monitor::{MonConfig, Monitor};
use crate::network::{MAX_MESSAGE, Network};
use crate::service::{MonitorService, RaftService};
use crate::store::{LogStore, StateMachine, open_db};
use crate::types::{MonNode, Raft, node_id};

/// How a monitor is started.
#[derive(Clone, Debug)]
pub struct MonOptions {
    /// Monitor name; may be omitted when the data directory already has one.
    pub name: Option<String>,
    /// Data directory.
    pub data: PathBuf,
    /// Address to listen on; may be omitted when the data directory has one.
    pub addr: Option<String>,
    /// For bootstrapping a new cluster: every initial monitor, name → address.
    pub initial_members: BTreeMap<String, String>,
    /// Where to listen, when not on the address the cluster knows this monitor by.
    pub bind: Option<SocketAddr>,
    /// Where to serve `/metrics` and `/health`.
    pub metrics_addr: Option<SocketAddr>,
    /// Take a snapshot (and compact the log) after this many entries.
    pub snapshot_every: u64,
    /// Timers.
    pub config: MonConfig,
}

/// The identity a monitor keeps in its data directory (`mon.json`), so later starts
/// need only `--data`.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Identity {
    name: String,
    addr: String,
}

fn identity(options: &MonOptions) -> anyhow::Result<Identity> {
    let path = options.data.join("mon.json");
    let stored: Option<Identity> = match std::fs::read(&path) {
        Ok(bytes) => Some(
            serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is damaged", path.display()))?,
        ),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(error) => return Err(error).with_context(|| format!("cannot read {}", path.display())),
    };
    match stored {
        Some(stored) => {
            if let Some(name) = &options.name
                && name != &stored.name
            {
                bail!(
                    "{} belongs to monitor {:?}, not {name:?}",
                    options.data.display(),
                    stored.name
                );
            }
            if let Some(addr) = &options.addr
                && addr != &stored.addr
            {
                bail!(
                    "monitor {} listens on {} (recorded in {}); an address change is `lcpfs mon remove` then `lcpfs mon add`",
                    stored.name,
                    stored.addr,
                    path.display()
                );
            }
            Ok(stored)
        }
        None => {
            let (Some(name), Some(addr)) = (&options.name, &options.addr) else {
                bail!(
                    "{} holds no monitor yet: give --id NAME and --addr HOST:PORT for its first start",
                    options.data.display()
                );
            };
            let identity = Identity {
                name: name.clone(),
                addr: addr.clone(),
            };
            std::fs::create_dir_all(&options.data)
                .with_context(|| format!("cannot create {}", options.data.display()))?;
            std::fs::write(&path, serde_json::to_vec_pretty(&identity)?)
                .with_context(|| format!("cannot write {}", path.display()))?;
            Ok(identity)
        }
    }
}

/// Runs a monitor until the process is stopped.
pub async fn run(options: MonOptions) -> anyhow::Result<()> {
    let Identity { name, addr } = identity(&options)?;
    if !options.initial_members.is_empty() && options.initial_members.get(&name) != Some(&addr) {
        bail!(
            "--initial-members must list this monitor as {name}={addr}; it lists {:?}",
            options.initial_members
        );
    }
    let listen = lcpfs_core::net::listen_addr(&addr, options.bind).map_err(anyhow::Error::msg)?;
    let db = open_db(&options.data.join("db"))?;
    let log_store = LogStore::new(db.clone());
    let state_machine = StateMachine::open(db)?;
    let state = state_machine.shared();
    let raft_config = openraft::Config {
        cluster_name: "lcpfs".into(),
        heartbeat_interval: 250,
        election_timeout_min: 1000,
        election_timeout_max: 2000,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(options.snapshot_every.max(1)),
        max_in_snapshot_log_to_keep: options.snapshot_every.clamp(1, 1000),
        purge_batch_size: 256,
        // Snapshot chunks travel JSON-encoded (about 3.5 bytes per byte): keep each
        // message well under the gRPC limit.
        snapshot_max_chunk_size: 256 * 1024,
        ..Default::default()
    }
    .validate()?;
    let id = node_id(&name);
    let raft = Raft::new(
        id,
        Arc::new(raft_config),
        Network {
            tls: options.config.tls.clone(),
        },
        log_store,
        state_machine,
    )
    .await?;

    if !options.initial_members.is_empty() {
        let members: BTreeMap<u64, MonNode> = options
            .initial_members
            .iter()
            .map(|(name, addr)| {
                let node = MonNode {
                    name: name.clone(),
                    addr: addr.clone(),
                };
                (node_id(name), node)
            })
            .collect();
        match raft.initialize(members).await {
            Ok(()) => tracing::info!(monitor = %name, "initialized a new monitor quorum"),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {
                tracing::info!(monitor = %name, "quorum already initialized; rejoining")
            }
            Err(error) => return Err(error).context("cannot initialize the monitor quorum"),
        }
    }

    let monitor = Arc::new(Monitor::new(
        name.clone(),
        addr.clone(),
        options.data.clone(),
        raft.clone(),
        state,
        options.config.clone(),
    ));
    tokio::spawn(
        monitor
            .clone()
            .leader_duties(options.initial_members.clone()),
    );
    tokio::spawn(write_admin_keyring(monitor.clone()));
    if let Some(metrics_addr) = options.metrics_addr {
        let monitor = monitor.clone();
        tokio::spawn(async move {
            if let Err(error) = crate::metrics::serve(metrics_addr, monitor).await {
                tracing::error!(%error, "metrics endpoint stopped");
            }
        });
    }

    tracing::info!(monitor = %name, %addr, "serving");
    let server = lcpfs_proto::tls::server(options.config.tls.as_ref())
        .context("cannot set up TLS")?
        .add_service(
            MonRaftServer::new(RaftService(monitor.clone()))
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        )
        .add_service(
            MonitorServer::new(MonitorService(monitor))
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        )
        .serve_with_shutdown(listen, lcpfs_core::shutdown::requested());
    let served = server
        .await
        .with_context(|| format!("cannot serve on {addr}"));
    raft.shutdown().await.ok();
    served
}

/// Path of the admin keyring a monitor writes into its data directory.
pub fn admin_keyring_path(data: &Path) -> PathBuf {
    data.join("keyring")
}

/// Once the cluster is bootstrapped, writes `client.admin`'s key to `DATA/keyring`
/// (mode 0600) so the operator on this machine can use `lcpfs --keyring`.
async fn write_admin_keyring(monitor: Arc<Monitor>) {
    let path = admin_keyring_path(&monitor.data_dir);
    let mut epochs = monitor.state.watch_epoch();
    loop {
        let key = monitor
            .state
            .with_state(|state| state.auth.get("client.admin").cloned());
        if let Some(key) = key {
            let entity = lcpfs_core::monitor::AuthEntity {
                entity: "client.admin".into(),
                key,
            };
            if let Err(error) =
                lcpfs_core::file::replace_private(&path, entity.keyring().as_bytes())
            {
                tracing::error!(%error, path = %path.display(), "cannot write the admin keyring");
            }
            return;
        }
        if epochs.changed().await.is_err() {
            return;
        }
    }
}
