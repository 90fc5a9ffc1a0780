//! The client side of the monitors: find one that answers, send it requests (any
//! monitor forwards changes to the leader), and follow the cluster map.
//!
//! Monitors are found from `--mon ADDR,...` or `LCPFS_MON`: a client starts with
//! a random one and keeps to the last that answered, trying the others in random
//! order. A request that a monitor cannot serve right now (it is down, leadership
//! is changing, or it has not yet applied the newest map this client has seen) is
//! retried on the others until the deadline; the last error, naming the monitors
//! tried, is returned. Every request carries the newest epoch the client has seen,
//! so a map it is given is never older than one it had.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use lcpfs_core::map::{ClusterMap, MapIncremental};
use lcpfs_core::monitor::{Command, CommandOutcome, Query, keyring_key};
use lcpfs_proto::monitor_client::MonitorClient;
use lcpfs_proto::tls::{self, Tls};
use lcpfs_proto::{
    CommandRequest, FailureReport, GetMapRequest, MapUpdate, OsdBootRequest, OsdHeartbeatRequest,
    OsdUpThruRequest, PgStat, PgStatsReport, PingReply, PingRequest, QueryRequest,
    SubscribeRequest, map_update,
};
use rand::seq::SliceRandom;
use serde::de::DeserializeOwned;
use tonic::transport::Channel;

/// Largest message accepted from a monitor (a full map of a large cluster).
pub const MAX_MESSAGE: usize = 64 << 20;

/// Default time a request may take, retries included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

/// What an OSD reports when it boots.
#[derive(Clone, Debug)]
pub struct OsdBoot {
    /// Stable uuid of the OSD's store.
    pub uuid: String,
    /// Where it listens.
    pub addr: String,
    /// Its host.
    pub host: String,
    /// Its zone (empty: default).
    pub zone: String,
    /// Its device class (empty: hdd).
    pub device_class: String,
    /// Its CRUSH weight.
    pub weight: f64,
}

/// A connection to the monitors.
#[derive(Clone)]
pub struct MonClient {
    monitors: Vec<(String, Channel)>,
    tls: Option<Tls>,
    key: Option<String>,
    timeout: Duration,
    /// The newest map epoch any monitor reported; sent with every request.
    epoch: Arc<AtomicU64>,
    /// Index of the monitor that answered last: tried first.
    answered: Arc<AtomicUsize>,
}

impl MonClient {
    /// A client for the monitors at `addrs` (`host:port` each), over plain
    /// connections.
    pub fn new(addrs: &[String]) -> anyhow::Result<Self> {
        Self::with_tls(addrs, None)
    }

    /// A client for the monitors at `addrs` (`host:port` each), over mutual TLS when
    /// `tls` is given; everything reached through it (OSDs) uses the same.
    pub fn with_tls(addrs: &[String], tls: Option<Tls>) -> anyhow::Result<Self> {
        if addrs.is_empty() {
            bail!("no monitor address: pass --mon HOST:PORT[,HOST:PORT...] or set LCPFS_MON");
        }
        let monitors = addrs
            .iter()
            .map(|addr| {
                let endpoint = tls::endpoint(addr, tls.as_ref())
                    .with_context(|| format!("bad monitor address {addr:?}: expected HOST:PORT"))?
                    .connect_timeout(Duration::from_secs(2))
                    .tcp_nodelay(true);
                Ok((addr.clone(), endpoint.connect_lazy()))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(MonClient {
            monitors,
            tls,
            key: None,
            timeout: DEFAULT_TIMEOUT,
            epoch: Arc::new(AtomicU64::new(0)),
            answered: Arc::new(AtomicUsize::new(rand::random_range(0..addrs.len()))),
        })
    }

    /// Monitors from `--mon` (comma-separated) or, without it, `LCPFS_MON`; TLS from
    /// `--tls-dir` or, without it, `LCPFS_TLS_DIR` (plain connections without either).
    pub fn from_flags(mon: Option<&str>, tls_dir: Option<&Path>) -> anyhow::Result<Self> {
        let list = match mon {
            Some(list) => list.to_owned(),
            None => std::env::var("LCPFS_MON").unwrap_or_default(),
        };
        let addrs: Vec<String> = list
            .split(',')
            .map(str::trim)
            .filter(|addr| !addr.is_empty())
            .map(str::to_owned)
            .collect();
        Self::with_tls(&addrs, Tls::from_flag(tls_dir)?)
    }

    /// The TLS this client connects with, if any.
    pub fn tls(&self) -> Option<&Tls> {
        self.tls.as_ref()
    }

    /// Uses the key of `entity` from a keyring file.
    pub fn with_keyring(mut self, path: &Path, entity: &str) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the keyring {}", path.display()))?;
        let key = keyring_key(&text, entity)
            .ok_or_else(|| anyhow!("the keyring {} has no key for {entity}", path.display()))?;
        self.key = Some(key);
        Ok(self)
    }

    /// Sets how long a request may take, retries included.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// A client that has seen map `epoch` already (a daemon that kept its last
    /// map): no monitor gives it an older map.
    pub fn with_epoch(self, epoch: u64) -> Self {
        self.saw(epoch);
        self
    }

    /// The newest map epoch the monitors have reported to this client.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Relaxed)
    }

    fn saw(&self, epoch: u64) {
        self.epoch.fetch_max(epoch, Ordering::Relaxed);
    }

    /// The key this client presents, if a keyring was given.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// Runs `call` on one monitor after another (the last to answer first, then
    /// the others in random order) until one answers with something other than
    /// "unavailable", or the deadline passes.
    async fn call<T, F, Fut>(&self, call: F) -> anyhow::Result<T>
    where
        F: Fn(MonitorClient<Channel>) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let deadline = Instant::now() + self.timeout;
        // The latest error from each monitor, in the order the monitors were given.
        let mut errors: Vec<Option<String>> = vec![None; self.monitors.len()];
        // The monitor that answered last first, then the others in a random order
        // (a new client starts with a random one): clients spread over the
        // monitors, and one that answers badly (down, behind, partitioned) is no
        // client's first choice for long.
        let first = self.answered.load(Ordering::Relaxed);
        let mut order: Vec<usize> = (0..self.monitors.len()).filter(|&i| i != first).collect();
        order.shuffle(&mut rand::rng());
        order.insert(0, first);
        'rounds: loop {
            for &index in &order {
                let (addr, channel) = &self.monitors[index];
                let remaining = deadline.saturating_duration_since(Instant::now());
                if remaining.is_zero() {
                    break 'rounds;
                }
                // One frozen monitor must not use up the whole deadline.
                let share = (self.timeout / self.monitors.len() as u32).max(Duration::from_secs(2));
                let client = MonitorClient::new(channel.clone())
                    .max_decoding_message_size(MAX_MESSAGE)
                    .max_encoding_message_size(MAX_MESSAGE);
                let attempt = tokio::time::timeout(remaining.min(share), call(client));
                match attempt.await {
                    Ok(Ok(value)) => {
                        self.answered.store(index, Ordering::Relaxed);
                        return Ok(value);
                    }
                    Ok(Err(status)) if retryable(&status) => {
                        let tls = self.tls.is_some();
                        errors[index] = Some(format!("{addr}: {}", describe(&status, tls)));
                    }
                    Ok(Err(status)) => bail!("{}", describe(&status, self.tls.is_some())),
                    Err(_) => {
                        errors[index].get_or_insert_with(|| format!("{addr}: no answer in time"));
                    }
                }
            }
            tokio::time::sleep(
                Duration::from_millis(200).min(deadline.saturating_duration_since(Instant::now())),
            )
            .await;
        }
        // A monitor's own "no quorum" explanation says more than a refused connection.
        let errors: Vec<String> = errors.into_iter().flatten().collect();
        let best = errors
            .iter()
            .find(|error| error.contains("no quorum"))
            .or(errors.last())
            .cloned()
            .unwrap_or_else(|| "no monitor answered".into());
        bail!(
            "no monitor could serve the request within {:?} (tried {}): {best}",
            self.timeout,
            self.monitors
                .iter()
                .map(|(addr, _)| addr.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    }

    /// Sends a change; the outcome says whether it was committed or refused.
    pub async fn command(&self, command: &Command) -> anyhow::Result<CommandOutcome> {
        let epoch = self.epoch();
        let body = serde_json::to_vec(command)?;
        let reply = self
            .call(|mut client| {
                let body = body.clone();
                async move {
                    client
                        .command(CommandRequest {
                            epoch,
                            command_json: body,
                        })
                        .await
                }
            })
            .await?
            .into_inner();
        self.saw(reply.epoch);
        serde_json::from_slice(&reply.outcome_json).context("malformed reply from the monitor")
    }

    /// Sends a change and fails with the monitors' reason when it is refused.
    pub async fn run(
        &self,
        command: &Command,
    ) -> anyhow::Result<(u64, String, Option<serde_json::Value>)> {
        match self.command(command).await? {
            CommandOutcome::Done {
                epoch,
                message,
                value,
            } => Ok((epoch, message, value)),
            CommandOutcome::Refused { reason } => Err(anyhow!("refused: {reason}")),
        }
    }

    /// Asks a read-only question.
    pub async fn query<T: DeserializeOwned>(&self, query: &Query) -> anyhow::Result<T> {
        let epoch = self.epoch();
        let body = serde_json::to_vec(query)?;
        let reply = self
            .call(|mut client| {
                let body = body.clone();
                async move {
                    client
                        .query(QueryRequest {
                            epoch,
                            query_json: body,
                        })
                        .await
                }
            })
            .await?
            .into_inner();
        self.saw(reply.epoch);
        serde_json::from_slice(&reply.result_json).context("malformed reply from the monitor")
    }

    /// The cluster map. With `linearizable`, it includes every change acknowledged
    /// before this call.
    pub async fn map(&self, linearizable: bool) -> anyhow::Result<ClusterMap> {
        let epoch = self.epoch();
        let reply = self
            .call(|mut client| async move {
                client
                    .get_map(GetMapRequest {
                        epoch,
                        linearizable,
                    })
                    .await
            })
            .await?
            .into_inner();
        self.saw(reply.epoch);
        serde_json::from_slice(&reply.map_json).context("malformed map from the monitor")
    }

    /// Follows the map: the returned watch yields every epoch after `have` in order.
    pub async fn subscribe(&self, have: Option<ClusterMap>) -> anyhow::Result<MapWatch> {
        let have_epoch = have.as_ref().map_or(0, |map| map.epoch);
        let stream = self
            .call(|mut client| async move {
                client
                    .subscribe(SubscribeRequest {
                        have_epoch,
                        who: String::new(),
                    })
                    .await
            })
            .await?
            .into_inner();
        Ok(MapWatch { map: have, stream })
    }

    /// Registers a booting OSD; returns its id.
    pub async fn osd_boot(&self, boot: &OsdBoot) -> anyhow::Result<u32> {
        let epoch = self.epoch();
        let reply = self
            .call(|mut client| async move {
                client
                    .osd_boot(OsdBootRequest {
                        epoch,
                        uuid: boot.uuid.clone(),
                        addr: boot.addr.clone(),
                        host: boot.host.clone(),
                        zone: boot.zone.clone(),
                        device_class: boot.device_class.clone(),
                        weight: boot.weight,
                    })
                    .await
            })
            .await?;
        let reply = reply.into_inner();
        self.saw(reply.epoch);
        Ok(reply.osd_id)
    }

    /// Tells the monitors OSD `id` is alive, with its disk space (bytes `used` of
    /// `size`); returns their map epoch.
    pub async fn osd_heartbeat(&self, id: u32, used: u64, size: u64) -> anyhow::Result<u64> {
        let epoch = self.epoch();
        let reply = self
            .call(|mut client| async move {
                client
                    .osd_heartbeat(OsdHeartbeatRequest {
                        epoch,
                        osd_id: id,
                        used_bytes: used,
                        size_bytes: size,
                    })
                    .await
            })
            .await?;
        let reply = reply.into_inner();
        self.saw(reply.epoch);
        Ok(reply.epoch)
    }

    /// Asks the monitors to record OSD `id` up through `epoch` (its PGs of an
    /// interval that began then may go active once a map says so); returns the
    /// epoch of a map that does.
    pub async fn up_thru(&self, id: u32, epoch: u64) -> anyhow::Result<u64> {
        let reply = self
            .call(|mut client| async move {
                client
                    .osd_up_thru(OsdUpThruRequest { osd_id: id, epoch })
                    .await
            })
            .await?;
        let reply = reply.into_inner();
        self.saw(reply.epoch);
        Ok(reply.epoch)
    }

    /// OSD `reporter` cannot reach OSD `failed`.
    pub async fn report_failure(&self, reporter: u32, failed: u32) -> anyhow::Result<()> {
        let epoch = self.epoch();
        self.call(|mut client| async move {
            client
                .report_failure(FailureReport {
                    epoch,
                    reporter,
                    failed,
                })
                .await
        })
        .await?;
        Ok(())
    }

    /// A primary OSD's report of its PGs' states, computed on its map of `epoch`
    /// or a newer one.
    pub async fn pg_stats(&self, osd: u32, epoch: u64, stats: Vec<PgStat>) -> anyhow::Result<()> {
        self.call(|mut client| {
            let stats = stats.clone();
            async move { client.pg_stats(PgStatsReport { epoch, osd, stats }).await }
        })
        .await?;
        Ok(())
    }

    /// Every monitor's answer to a ping, by address (`None`: no answer).
    pub async fn ping_all(&self) -> Vec<(String, Option<PingReply>)> {
        let mut replies = Vec::new();
        for (addr, channel) in &self.monitors {
            let mut client = MonitorClient::new(channel.clone());
            let reply = tokio::time::timeout(Duration::from_secs(1), client.ping(PingRequest {}))
                .await
                .ok()
                .and_then(Result::ok)
                .map(tonic::Response::into_inner);
            replies.push((addr.clone(), reply));
        }
        replies
    }
}

/// Whether another monitor (or the same one later) may answer: the monitor is not
/// serving, or the connection failed before any answer (a status with a transport
/// error as its source, never one a monitor sent).
fn retryable(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
    ) || std::error::Error::source(status).is_some()
}

/// What went wrong, with the causes of a failed connection: a TLS handshake's reason
/// (an unknown issuer, a certificate for another name, no client certificate) is in
/// them. `tls` says whether this client spoke TLS, to point a plain client at a
/// cluster that does.
fn describe(status: &tonic::Status, tls: bool) -> String {
    let mut text = if status.message().is_empty() {
        format!("{:?}", status.code())
    } else if status.code() == tonic::Code::Unavailable
        && (status.message().contains("transport") || status.message().contains("connect"))
    {
        format!("unreachable ({})", status.message())
    } else {
        status.message().to_owned()
    };
    let mut cause = std::error::Error::source(status);
    while let Some(error) = cause {
        let line = error.to_string();
        if !text.contains(&line) {
            text = format!("{text}: {line}");
        }
        cause = error.source();
    }
    if !tls && text.contains("h2 protocol error") {
        text.push_str(
            " (a monitor that runs with TLS answers only TLS clients: give --tls-dir or set LCPFS_TLS_DIR)",
        );
    }
    text
}

/// A subscription to the cluster map.
pub struct MapWatch {
    map: Option<ClusterMap>,
    stream: tonic::Streaming<MapUpdate>,
}

impl MapWatch {
    /// The next epoch's map. Fails if the monitor sends an epoch that does not follow
    /// the last one, or an incremental that does not apply.
    pub async fn next(&mut self) -> anyhow::Result<Option<&ClusterMap>> {
        let Some(update) = self.stream.message().await? else {
            return Ok(None);
        };
        match update.update {
            Some(map_update::Update::FullMapJson(json)) => {
                let map: ClusterMap = serde_json::from_slice(&json)?;
                if let Some(old) = &self.map
                    && map.epoch <= old.epoch
                {
                    bail!("full map epoch {} after epoch {}", map.epoch, old.epoch);
                }
                self.map = Some(map);
            }
            Some(map_update::Update::IncrementalJson(json)) => {
                let incremental: MapIncremental = serde_json::from_slice(&json)?;
                let map = self
                    .map
                    .as_mut()
                    .ok_or_else(|| anyhow!("incremental before any full map"))?;
                map.apply(&incremental)
                    .context("incremental does not follow the map")?;
            }
            None => bail!("empty map update"),
        }
        Ok(self.map.as_ref())
    }
}

/// Path of a keyring given by `--keyring` or `LCPFS_KEYRING`.
pub fn keyring_path(flag: Option<PathBuf>) -> Option<PathBuf> {
    flag.or_else(|| std::env::var_os("LCPFS_KEYRING").map(PathBuf::from))
}
