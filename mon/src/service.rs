//! The monitor's gRPC services: `MonRaft` (between monitors) and `Monitor` (for
//! clients, OSDs and MDSs). Requests only the leader can execute are forwarded to it.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use lcpfs_core::map::{ClusterMap, OsdInfo};
use lcpfs_core::monitor::{
    AuthEntity, ClusterStatus, Command, HealthCheck, HealthStatus, MonStatus, Query,
};
use lcpfs_proto::mon_raft_server::MonRaft;
use lcpfs_proto::monitor_client::MonitorClient;
use lcpfs_proto::monitor_server::Monitor as MonitorRpc;
use lcpfs_proto::tls::{Tls, require};
use lcpfs_proto::{
    CommandReply, CommandRequest, FailureReply, FailureReport, GetMapRequest, MapReply, MapUpdate,
    OsdBootReply, OsdBootRequest, OsdHeartbeatReply, OsdHeartbeatRequest, OsdUpThruReply,
    OsdUpThruRequest, PgStatsReply, PgStatsReport, PingReply, PingRequest, QueryReply,
    QueryRequest, RaftPayload, SubscribeRequest, map_update,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::monitor::{Leader, Monitor};
use crate::network::channel;
use crate::types::now_ms;

/// Marks a request a monitor forwarded to the leader, so it is not forwarded twice.
const FORWARDED: &str = "lcpfs-forwarded";

/// How long a monitor behind the map epoch a client has seen waits to catch up
/// before it sends the client to another monitor.
const CATCH_UP_WAIT: Duration = Duration::from_secs(1);

fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, Status> {
    serde_json::from_slice(bytes)
        .map_err(|error| Status::invalid_argument(format!("malformed {what}: {error}")))
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("monitor replies serialize to JSON")
}

/// `MonRaft`: hands peers' Raft messages to this monitor's Raft.
pub struct RaftService(pub Arc<Monitor>);

#[tonic::async_trait]
impl MonRaft for RaftService {
    async fn append_entries(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        require(&request, &["mon"], "MonRaft.AppendEntries")?;
        let rpc = decode(&request.into_inner().json, "append-entries request")?;
        let result = self.0.raft.append_entries(rpc).await;
        Ok(Response::new(RaftPayload {
            json: encode(&result),
        }))
    }

    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        require(&request, &["mon"], "MonRaft.Vote")?;
        let rpc = decode(&request.into_inner().json, "vote request")?;
        let result = self.0.raft.vote(rpc).await;
        Ok(Response::new(RaftPayload {
            json: encode(&result),
        }))
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        require(&request, &["mon"], "MonRaft.InstallSnapshot")?;
        let rpc = decode(&request.into_inner().json, "install-snapshot request")?;
        let result = self.0.raft.install_snapshot(rpc).await;
        Ok(Response::new(RaftPayload {
            json: encode(&result),
        }))
    }
}

/// `Monitor`: the service clients, OSDs and MDSs call.
pub struct MonitorService(pub Arc<Monitor>);

impl MonitorService {
    /// The leader to forward `request` to, or `None` when this monitor leads.
    fn forward_target<T>(
        &self,
        request: &Request<T>,
    ) -> Result<Option<MonitorClient<tonic::transport::Channel>>, Status> {
        match self.0.leader()? {
            Leader::Me => Ok(None),
            Leader::Peer(_) if request.metadata().contains_key(FORWARDED) => Err(
                Status::unavailable("leadership is changing; retry the request"),
            ),
            Leader::Peer(client) => Ok(Some(client)),
        }
    }

    fn epoch(&self) -> u64 {
        self.0.state.map().epoch
    }
}

fn forwarded<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
    request
}

type UpdateStream = Pin<Box<dyn Stream<Item = Result<MapUpdate, Status>> + Send>>;

#[tonic::async_trait]
impl MonitorRpc for MonitorService {
    async fn get_map(&self, request: Request<GetMapRequest>) -> Result<Response<MapReply>, Status> {
        if request.get_ref().linearizable {
            if let Some(mut leader) = self.forward_target(&request)? {
                return leader.get_map(forwarded(request.into_inner())).await;
            }
            self.0.confirm_quorum().await?;
        }
        let seen = request.get_ref().epoch;
        let map = self.0.state.map_at_least(seen, CATCH_UP_WAIT).await;
        if map.fsid.is_empty() {
            return Err(Status::unavailable("the cluster is not bootstrapped yet"));
        }
        if map.epoch < seen {
            // Another monitor has the newer map: the client asks it.
            return Err(Status::unavailable(format!(
                "this monitor has the map only up to epoch {}, older than epoch {seen} \
                 the client has seen",
                map.epoch
            )));
        }
        Ok(Response::new(MapReply {
            epoch: map.epoch,
            map_json: encode(&map),
        }))
    }

    type SubscribeStream = UpdateStream;

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let have_epoch = request.into_inner().have_epoch;
        let state = self.0.state.clone();
        let (sender, receiver) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            let mut epochs = state.watch_epoch();
            let mut have = have_epoch;
            loop {
                let map = state.map();
                if !map.fsid.is_empty() && map.epoch > have {
                    let updates = match (have > 0).then(|| state.history_since(have)).flatten() {
                        Some(incrementals) => incrementals
                            .into_iter()
                            .map(|incremental| MapUpdate {
                                epoch: incremental.to_epoch,
                                update: Some(map_update::Update::IncrementalJson(encode(
                                    &incremental,
                                ))),
                            })
                            .collect(),
                        None => vec![full_update(&map)],
                    };
                    for update in updates {
                        have = update.epoch;
                        if sender.send(Ok(update)).await.is_err() {
                            return;
                        }
                    }
                }
                tokio::select! {
                    changed = epochs.changed() => if changed.is_err() { return },
                    () = sender.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )))
    }

    async fn command(
        &self,
        request: Request<CommandRequest>,
    ) -> Result<Response<CommandReply>, Status> {
        if let Some(mut leader) = self.forward_target(&request)? {
            return leader.command(forwarded(request.into_inner())).await;
        }
        let command: Command = decode(&request.get_ref().command_json, "command")?;
        let outcome = self.0.execute(command).await?;
        Ok(Response::new(CommandReply {
            epoch: self.epoch(),
            outcome_json: encode(&outcome),
        }))
    }

    async fn query(&self, request: Request<QueryRequest>) -> Result<Response<QueryReply>, Status> {
        let query: Query = decode(&request.get_ref().query_json, "query")?;
        if !self.0.state.with_state(|state| state.bootstrapped()) {
            let leader = self.0.leader_name();
            return Err(Status::unavailable(format!(
                "the cluster is not bootstrapped yet ({})",
                match leader {
                    Some(leader) => format!("leader {leader} is writing the first map"),
                    None =>
                        "no leader elected yet: a majority of --initial-members must be running"
                            .into(),
                }
            )));
        }
        if matches!(query, Query::Status | Query::PgList { .. } | Query::OsdDf)
            && let Ok(Some(mut leader)) = self.forward_target(&request)
            && let Ok(reply) = leader.query(forwarded(request.get_ref().clone())).await
        {
            // The leader holds the PG states the primaries report.
            return Ok(reply);
        }
        let result = match query {
            Query::Status => encode(&self.status().await),
            Query::AuthList => encode(&self.0.state.with_state(|state| {
                state
                    .auth
                    .iter()
                    .map(|(entity, key)| AuthEntity {
                        entity: entity.clone(),
                        key: key.clone(),
                    })
                    .collect::<Vec<_>>()
            })),
            Query::OsdDf => encode(&self.0.osd_df()),
            Query::PgList { pool } => {
                let id = match pool {
                    Some(name) => Some(
                        self.0
                            .state
                            .map()
                            .pool_by_name(&name)
                            .map(|pool| pool.id)
                            .ok_or_else(|| {
                                Status::not_found(format!("pool '{name}' does not exist"))
                            })?,
                    ),
                    None => None,
                };
                encode(&self.0.pg_list(id))
            }
            Query::AuthGet { entity } => {
                let key = self
                    .0
                    .state
                    .with_state(|state| state.auth.get(&entity).cloned())
                    .ok_or_else(|| Status::not_found(format!("{entity} does not exist")))?;
                encode(&AuthEntity { entity, key })
            }
        };
        Ok(Response::new(QueryReply {
            epoch: self.epoch(),
            result_json: result,
        }))
    }

    async fn osd_boot(
        &self,
        request: Request<OsdBootRequest>,
    ) -> Result<Response<OsdBootReply>, Status> {
        require(&request, &["osd", "mon"], "Monitor.OsdBoot")?;
        if let Some(mut leader) = self.forward_target(&request)? {
            return leader.osd_boot(forwarded(request.into_inner())).await;
        }
        let boot = request.into_inner();
        let mut osd = OsdInfo::new(0, boot.addr, boot.host);
        osd.zone = (!boot.zone.is_empty()).then_some(boot.zone);
        if !boot.device_class.is_empty() {
            osd.device_class = boot.device_class;
        }
        osd.weight = boot.weight;
        let (osd_id, epoch) = self.0.osd_boot(boot.uuid, osd).await?;
        Ok(Response::new(OsdBootReply { epoch, osd_id }))
    }

    async fn osd_heartbeat(
        &self,
        request: Request<OsdHeartbeatRequest>,
    ) -> Result<Response<OsdHeartbeatReply>, Status> {
        require(&request, &["osd", "mon"], "Monitor.OsdHeartbeat")?;
        if let Some(mut leader) = self.forward_target(&request)? {
            return leader.osd_heartbeat(forwarded(request.into_inner())).await;
        }
        let beat = request.get_ref();
        self.0
            .osd_heartbeat(beat.osd_id, beat.used_bytes, beat.size_bytes)?;
        Ok(Response::new(OsdHeartbeatReply {
            epoch: self.epoch(),
        }))
    }

    async fn report_failure(
        &self,
        request: Request<FailureReport>,
    ) -> Result<Response<FailureReply>, Status> {
        require(&request, &["osd", "mon"], "Monitor.ReportFailure")?;
        if let Some(mut leader) = self.forward_target(&request)? {
            return leader.report_failure(forwarded(request.into_inner())).await;
        }
        let report = request.into_inner();
        self.0
            .failure_report(report.reporter, report.failed)
            .await?;
        Ok(Response::new(FailureReply {
            epoch: self.epoch(),
        }))
    }

    async fn osd_up_thru(
        &self,
        request: Request<OsdUpThruRequest>,
    ) -> Result<Response<OsdUpThruReply>, Status> {
        require(&request, &["osd", "mon"], "Monitor.OsdUpThru")?;
        if let Some(mut leader) = self.forward_target(&request)? {
            return leader.osd_up_thru(forwarded(request.into_inner())).await;
        }
        let want = request.into_inner();
        let epoch = self.0.up_thru(want.osd_id, want.epoch).await?;
        Ok(Response::new(OsdUpThruReply { epoch }))
    }

    async fn pg_stats(
        &self,
        request: Request<PgStatsReport>,
    ) -> Result<Response<PgStatsReply>, Status> {
        require(&request, &["osd", "mon"], "Monitor.PgStats")?;
        if let Some(mut leader) = self.forward_target(&request)? {
            return leader.pg_stats(forwarded(request.into_inner())).await;
        }
        let report = request.into_inner();
        self.0.pg_stats(report.epoch, report.stats);
        Ok(Response::new(PgStatsReply {
            epoch: self.epoch(),
        }))
    }

    async fn ping(&self, _request: Request<PingRequest>) -> Result<Response<PingReply>, Status> {
        let metrics = self.0.raft.metrics().borrow().clone();
        Ok(Response::new(PingReply {
            name: self.0.name.clone(),
            epoch: self.epoch(),
            term: metrics.current_term,
            leader: self.0.leader_name().unwrap_or_default(),
            applied_index: metrics.last_applied.map(|id| id.index).unwrap_or(0),
            state: format!("{:?}", metrics.state),
            purged_index: metrics.purged.map(|id| id.index).unwrap_or(0),
        }))
    }
}

fn full_update(map: &ClusterMap) -> MapUpdate {
    MapUpdate {
        epoch: map.epoch,
        update: Some(map_update::Update::FullMapJson(encode(map))),
    }
}

impl MonitorService {
    /// Cluster status with health checks. Probes every monitor briefly to tell which
    /// are reachable.
    async fn status(&self) -> ClusterStatus {
        let map = self.0.state.map();
        let metrics = self.0.raft.metrics().borrow().clone();
        let (nodes, voters) = self.0.members();
        let mut monitors = Vec::new();
        for (id, node) in &nodes {
            let reachable = *id == self.0.id || ping(&node.addr, self.0.config.tls.as_ref()).await;
            monitors.push(MonStatus {
                name: node.name.clone(),
                addr: node.addr.clone(),
                reachable,
                voter: voters.contains(id),
            });
        }
        let mut checks = std::collections::BTreeMap::new();
        let down: Vec<&str> = monitors
            .iter()
            .filter(|mon| !mon.reachable)
            .map(|mon| mon.name.as_str())
            .collect();
        if !down.is_empty() {
            checks.insert(
                "MON_DOWN".to_owned(),
                HealthCheck {
                    severity: HealthStatus::Warn,
                    summary: format!(
                        "{}/{} mons down: {}",
                        down.len(),
                        monitors.len(),
                        down.join(", ")
                    ),
                },
            );
        }
        let osds_down: Vec<String> = map
            .osds
            .values()
            .filter(|osd| osd.in_ && !osd.up)
            .map(|osd| format!("osd.{}", osd.id))
            .collect();
        if !osds_down.is_empty() {
            checks.insert(
                "OSD_DOWN".to_owned(),
                HealthCheck {
                    severity: HealthStatus::Warn,
                    summary: format!("{} osds down: {}", osds_down.len(), osds_down.join(", ")),
                },
            );
        }
        let now = now_ms();
        let held: Vec<String> = self
            .0
            .state
            .with_state(|state| state.held_until_ms.clone())
            .into_iter()
            .filter(|&(_, until)| until > now)
            .map(|(id, until)| format!("osd.{id} ({}s)", (until - now).div_ceil(1000)))
            .collect();
        if !held.is_empty() {
            checks.insert(
                "OSD_FLAPPING".to_owned(),
                HealthCheck {
                    severity: HealthStatus::Warn,
                    summary: format!(
                        "{} osds held down for flapping (`lcpfs osd unhold ID` lets one back now): {}",
                        held.len(),
                        held.join(", ")
                    ),
                },
            );
        }
        let ratios = self.0.usage_ratios();
        let (_, nearfull_ratio) = self.0.full_ratios();
        let usage = |ids: &mut dyn Iterator<Item = u32>| -> Vec<String> {
            ids.map(|id| {
                let ratio = ratios.get(&id).copied().unwrap_or(1.0);
                format!("osd.{id} ({:.0}%)", ratio * 100.0)
            })
            .collect()
        };
        let full = usage(&mut map.osds.values().filter(|osd| osd.full).map(|osd| osd.id));
        if !full.is_empty() {
            checks.insert(
                "OSD_FULL".to_owned(),
                HealthCheck {
                    severity: HealthStatus::Err,
                    summary: format!(
                        "{} full osds, their PGs take deletes only: {}",
                        full.len(),
                        full.join(", ")
                    ),
                },
            );
        }
        let nearfull = usage(
            &mut map
                .osds
                .values()
                .filter(|osd| osd.up && !osd.full)
                .filter(|osd| {
                    ratios
                        .get(&osd.id)
                        .is_some_and(|&ratio| ratio >= nearfull_ratio)
                })
                .map(|osd| osd.id),
        );
        if !nearfull.is_empty() {
            checks.insert(
                "OSD_NEARFULL".to_owned(),
                HealthCheck {
                    severity: HealthStatus::Warn,
                    summary: format!("{} nearfull osds: {}", nearfull.len(), nearfull.join(", ")),
                },
            );
        }
        let (pg_states, pg_states_since) = self.0.pg_states();
        let count = |matches: &dyn Fn(&str) -> bool| -> u64 {
            pg_states
                .iter()
                .filter(|(state, _)| matches(state))
                .map(|(_, count)| count)
                .sum()
        };
        let degraded = count(&|state| state.contains("degraded") || state.contains("undersized"));
        if degraded > 0 {
            checks.insert(
                "PG_DEGRADED".to_owned(),
                HealthCheck {
                    severity: HealthStatus::Warn,
                    summary: format!("Degraded data redundancy: {degraded} pgs degraded"),
                },
            );
        }
        let unavailable = count(&|state| !state.starts_with("active"));
        if unavailable > 0 {
            checks.insert(
                "PG_AVAILABILITY".to_owned(),
                HealthCheck {
                    severity: HealthStatus::Warn,
                    summary: format!(
                        "Reduced data availability: {unavailable} pgs inactive, down, peering or unknown"
                    ),
                },
            );
        }
        let inconsistent = count(&|state| state.contains("inconsistent"));
        if inconsistent > 0 {
            checks.insert(
                "PG_DAMAGED".to_owned(),
                HealthCheck {
                    severity: HealthStatus::Err,
                    summary: format!(
                        "Possible data damage: {inconsistent} pgs inconsistent; run lcpfs pg repair"
                    ),
                },
            );
        }
        if metrics.current_leader.is_none() {
            checks.insert(
                "MON_NO_QUORUM".to_owned(),
                HealthCheck {
                    severity: HealthStatus::Err,
                    summary: "no leader: the monitors have no quorum".to_owned(),
                },
            );
        }
        let health = checks
            .values()
            .map(|check| check.severity)
            .max()
            .unwrap_or(HealthStatus::Ok);
        ClusterStatus {
            fsid: map.fsid.clone(),
            health,
            checks,
            epoch: map.epoch,
            term: metrics.current_term,
            leader: self.0.leader_name(),
            monitors,
            osds: map.osds.len() as u32,
            osds_up: map.osds.values().filter(|osd| osd.up).count() as u32,
            osds_in: map.osds.values().filter(|osd| osd.in_).count() as u32,
            pools: map.pools.len() as u32,
            pgs: map.pools.values().map(|pool| u64::from(pool.pg_num)).sum(),
            pg_states,
            pg_states_since,
        }
    }
}

async fn ping(addr: &str, tls: Option<&Tls>) -> bool {
    let Some(channel) = channel(addr, tls) else {
        return false;
    };
    let mut client = MonitorClient::new(channel);
    matches!(
        tokio::time::timeout(Duration::from_millis(500), client.ping(PingRequest {})).await,
        Ok(Ok(_))
    )
}
