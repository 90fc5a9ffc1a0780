//! One monitor: its Raft, its state, and the leader's duties (proposing changes,
//! failure detection of OSDs).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lcpfs_core::crush::{PoolPlacement, share_a_pg};
use lcpfs_core::map::{MAX_CRUSH_WEIGHT, OsdInfo};
use lcpfs_core::monitor::{Command, CommandOutcome, OsdUsage, PgSummary, check_entity_name};
use lcpfs_core::pg::PgId;
use lcpfs_proto::monitor_client::MonitorClient;
use lcpfs_proto::tls::Tls;
use openraft::ChangeMembers;
use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use rand::RngCore;
use tonic::Status;
use tonic::transport::Channel;

use crate::network::{MAX_MESSAGE, channel};
use crate::store::StateShared;
use crate::types::{FlapRule, MonNode, Proposal, Raft, node_id, now_ms};

/// Timers and limits of a monitor.
#[derive(Clone, Debug)]
pub struct MonConfig {
    /// An OSD silent this long is marked down.
    pub osd_heartbeat_grace: Duration,
    /// An OSD down this long is marked out.
    pub osd_down_out_interval: Duration,
    /// How long a change may wait for a quorum before it is refused.
    pub quorum_timeout: Duration,
    /// Distinct hosts whose OSDs must report a peer failed before it is marked down.
    pub min_down_reporter_hosts: usize,
    /// An OSD whose disks are fuller than this fraction is marked full: its PGs
    /// take only deletes.
    pub full_ratio: f64,
    /// An OSD fuller than this fraction is reported (OSD_NEARFULL).
    pub nearfull_ratio: f64,
    /// When failures that mark an OSD down hold it down (flap damping).
    pub flap: FlapRule,
    /// Mutual TLS for connections to the other monitors (`None`: plain).
    pub tls: Option<Tls>,
}

impl Default for MonConfig {
    fn default() -> Self {
        MonConfig {
            osd_heartbeat_grace: Duration::from_secs(20),
            osd_down_out_interval: Duration::from_secs(600),
            quorum_timeout: Duration::from_secs(5),
            min_down_reporter_hosts: 2,
            full_ratio: 0.95,
            nearfull_ratio: 0.85,
            flap: FlapRule {
                limit: 5,
                window_ms: 600_000,
                hold_ms: 600_000,
            },
            tls: None,
        }
    }
}

/// Where a request that only the leader may execute goes.
pub enum Leader {
    /// This monitor leads.
    Me,
    /// Another monitor leads; forward to it.
    Peer(MonitorClient<Channel>),
}

/// How long a PG state report counts.
const PG_STAT_FRESH: Duration = Duration::from_secs(15);

/// What the primary of PG `seed` of `pool` reported within `PG_STAT_FRESH`.
fn fresh_report(table: &PgStats, pool: u32, seed: u32) -> Option<&PgReport> {
    table
        .get(&(pool, seed))
        .filter(|report| report.at.elapsed() < PG_STAT_FRESH)
}

/// What a PG's primary last reported of it: the state, at which map epoch, and
/// when it arrived.
struct PgReport {
    stat: lcpfs_proto::PgStat,
    epoch: u64,
    at: Instant,
}

/// (pool, seed) → the PG's last report.
type PgStats = HashMap<(u32, u32), PgReport>;

/// Failed OSD → reporting host → (reporting OSD, when).
type FailureReports = HashMap<u32, BTreeMap<String, (u32, Instant)>>;

/// A running monitor.
pub struct Monitor {
    /// Its name.
    pub name: String,
    /// Its Raft node id ([`node_id`] of the name).
    pub id: u64,
    /// Its address.
    pub addr: String,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Its Raft.
    pub raft: Raft,
    /// The applied state.
    pub state: Arc<StateShared>,
    /// Timers.
    pub config: MonConfig,
    /// Leader only: when each OSD last sent a heartbeat.
    heartbeats: Mutex<HashMap<u32, Instant>>,
    /// Leader only: each OSD's disk space as its last heartbeat said, (used, size)
    /// in bytes.
    usage: Mutex<HashMap<u32, (u64, u64)>>,
    /// Leader only: when each down OSD without a recorded time was first seen down.
    seen_down: Mutex<HashMap<u32, u64>>,
    /// Leader only: failed OSD → reporting host → when.
    failure_reports: Mutex<FailureReports>,
    /// Leader only: what each PG's primary last reported.
    pg_stats: Mutex<PgStats>,
}

/// The error for a change proposed to Raft whose commit could not be confirmed: it
/// may or may not be applied, so clients must not blindly retry it.
pub fn outcome_unknown(detail: &str) -> Status {
    Status::aborted(format!(
        "outcome unknown: {detail}; it may still commit when the monitors reconnect (check with `lcpfs map get` or `lcpfs status` before retrying)"
    ))
}

/// Refuses a proposal that would not survive its trip through the log (a number JSON
/// cannot carry, such as NaN or infinity, would become `null`).
fn check_encodable(proposal: &Proposal) -> Result<(), Status> {
    let encoded = serde_json::to_vec(proposal)
        .map_err(|error| Status::invalid_argument(format!("unencodable request: {error}")))?;
    match serde_json::from_slice::<Proposal>(&encoded) {
        Ok(decoded) if decoded == *proposal => Ok(()),
        _ => Err(Status::invalid_argument(
            "the request holds a number that cannot be stored (NaN or infinity?)",
        )),
    }
}

/// The error for a change that could not reach a quorum; nothing was applied.
pub fn no_quorum(detail: &str) -> Status {
    Status::unavailable(format!(
        "no quorum: {detail}; the change was not applied (start the stopped monitors, or check the network between them)"
    ))
}

impl Monitor {
    /// A monitor around an opened Raft.
    pub fn new(
        name: String,
        addr: String,
        data_dir: PathBuf,
        raft: Raft,
        state: Arc<StateShared>,
        config: MonConfig,
    ) -> Self {
        Monitor {
            id: node_id(&name),
            name,
            addr,
            data_dir,
            raft,
            state,
            config,
            heartbeats: Mutex::new(HashMap::new()),
            usage: Mutex::new(HashMap::new()),
            seen_down: Mutex::new(HashMap::new()),
            failure_reports: Mutex::new(HashMap::new()),
            pg_stats: Mutex::new(HashMap::new()),
        }
    }

    /// Voters and learners of the current membership, by node id.
    pub fn members(&self) -> (BTreeMap<u64, MonNode>, BTreeSet<u64>) {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let nodes = membership
            .nodes()
            .map(|(id, node)| (*id, node.clone()))
            .collect();
        let voters = membership.voter_ids().collect();
        (nodes, voters)
    }

    /// Name of the current leader, if one is known.
    pub fn leader_name(&self) -> Option<String> {
        let leader = self.raft.metrics().borrow().current_leader?;
        self.members().0.get(&leader).map(|node| node.name.clone())
    }

    /// The leader, or why there is none.
    pub fn leader(&self) -> Result<Leader, Status> {
        let leader = self.raft.metrics().borrow().current_leader;
        match leader {
            Some(id) if id == self.id => Ok(Leader::Me),
            Some(id) => {
                let (nodes, _) = self.members();
                let node = nodes.get(&id).ok_or_else(|| {
                    Status::unavailable("the leader is not in the membership yet; retry")
                })?;
                let channel = channel(&node.addr, self.config.tls.as_ref()).ok_or_else(|| {
                    Status::internal(format!(
                        "leader {} has a bad address {:?}",
                        node.name, node.addr
                    ))
                })?;
                Ok(Leader::Peer(
                    MonitorClient::new(channel)
                        .max_decoding_message_size(MAX_MESSAGE)
                        .max_encoding_message_size(MAX_MESSAGE),
                ))
            }
            None => {
                let (nodes, voters) = self.members();
                let names: Vec<&str> = voters
                    .iter()
                    .filter_map(|id| nodes.get(id).map(|node| node.name.as_str()))
                    .collect();
                Err(no_quorum(&format!(
                    "no leader is elected among monitors {} (a majority, {} of {}, must be running and connected)",
                    names.join(", "),
                    names.len() / 2 + 1,
                    names.len()
                )))
            }
        }
    }

    /// On the leader: confirms that a quorum still follows it (read-index), so the
    /// state it serves next is linearizable and a change it proposes can commit.
    pub async fn confirm_quorum(&self) -> Result<(), Status> {
        let (nodes, voters) = self.members();
        let needed = voters.len() / 2 + 1;
        let detail = || {
            format!(
                "the leader {} cannot reach {needed} of the {} monitors ({})",
                self.name,
                voters.len(),
                voters
                    .iter()
                    .filter_map(|id| nodes.get(id).map(|node| node.name.as_str()))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        match tokio::time::timeout(self.config.quorum_timeout, self.raft.ensure_linearizable())
            .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_)))) | Err(_) => {
                Err(no_quorum(&detail()))
            }
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(forward)))) => {
                Err(forward_error(self.id, forward.leader_id))
            }
            Ok(Err(RaftError::Fatal(fatal))) => {
                Err(Status::internal(format!("raft stopped: {fatal}")))
            }
        }
    }

    /// On the leader: commits a proposal and returns its outcome.
    pub async fn write(&self, proposal: Proposal) -> Result<CommandOutcome, Status> {
        check_encodable(&proposal)?;
        self.confirm_quorum().await?;
        match tokio::time::timeout(self.config.quorum_timeout, self.raft.client_write(proposal))
            .await
        {
            Ok(Ok(response)) => Ok(response.data),
            Ok(Err(error)) => Err(raft_write_error(error)),
            Err(_) => Err(outcome_unknown(
                "the change was proposed but no quorum acknowledged it in time",
            )),
        }
    }

    /// On the leader: executes an operator command.
    pub async fn execute(&self, command: Command) -> Result<CommandOutcome, Status> {
        match command {
            Command::AuthAdd { entity } => {
                if let Err(reason) = check_entity_name(&entity) {
                    return Ok(CommandOutcome::Refused { reason });
                }
                self.write(Proposal::AuthAdd {
                    entity,
                    key: new_key(),
                })
                .await
            }
            Command::OsdDown { ids } => {
                self.write(Proposal::MarkDown {
                    ids: ids.into_iter().collect(),
                    based_on_epoch: u64::MAX,
                    at_ms: now_ms(),
                    reason: "marked down by an operator".into(),
                    flap: None,
                })
                .await
            }
            Command::OsdRm { ids } => match self.check_removable(&ids) {
                Ok(()) => self.write(Proposal::Admin(Command::OsdRm { ids })).await,
                Err(reason) => Ok(CommandOutcome::Refused { reason }),
            },
            Command::MonAdd { name, addr } => self.add_monitor(name, addr).await,
            Command::MonRemove { name } => self.remove_monitor(name).await,
            command => self.write(Proposal::Admin(command)).await,
        }
    }

    async fn add_monitor(&self, name: String, addr: String) -> Result<CommandOutcome, Status> {
        if name.is_empty() || addr.is_empty() {
            return Ok(refused("mon add needs a name and an address"));
        }
        if self
            .state
            .with_state(|state| state.map.monitors.contains_key(&name))
        {
            return Ok(refused(&format!("monitor {name} is already in the map")));
        }
        self.confirm_quorum().await?;
        let id = node_id(&name);
        let node = MonNode {
            name: name.clone(),
            addr: addr.clone(),
        };
        let catch_up = tokio::time::timeout(
            self.config.quorum_timeout * 6,
            self.raft.add_learner(id, node, true),
        );
        match catch_up.await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => return Err(raft_write_error(error)),
            Err(_) => {
                // Do not leave a learner that never caught up in the membership.
                let _ = self
                    .change_membership(ChangeMembers::RemoveNodes([id].into()))
                    .await;
                return Err(Status::deadline_exceeded(format!(
                    "monitor {name} at {addr} did not catch up in time: is `lcpfs-mon --id {name} --addr {addr}` running?"
                )));
            }
        }
        self.change_membership(ChangeMembers::AddVoterIds([id].into()))
            .await?;
        self.write(Proposal::Admin(Command::MonAdd { name, addr }))
            .await
    }

    async fn remove_monitor(&self, name: String) -> Result<CommandOutcome, Status> {
        let (nodes, voters) = self.members();
        let id = node_id(&name);
        let in_map = self
            .state
            .with_state(|state| state.map.monitors.contains_key(&name));
        if !in_map && !nodes.contains_key(&id) {
            return Ok(refused(&format!(
                "monitor {name} is not a member of the quorum"
            )));
        }
        if voters.len() == 1 && voters.contains(&id) {
            return Ok(refused("cannot remove the last monitor"));
        }
        // The map first, while this monitor surely still leads (removing the leader
        // makes it step down); a retry after a failure part-way finds the map done and
        // finishes the membership.
        let outcome = if in_map {
            self.write(Proposal::Admin(Command::MonRemove { name: name.clone() }))
                .await?
        } else {
            CommandOutcome::Done {
                epoch: self.state.map().epoch,
                message: format!("monitor {name} removed"),
                value: None,
            }
        };
        if matches!(outcome, CommandOutcome::Refused { .. }) {
            return Ok(outcome);
        }
        if voters.contains(&id) {
            self.change_membership(ChangeMembers::RemoveVoters([id].into()))
                .await?;
        } else if nodes.contains_key(&id) {
            self.change_membership(ChangeMembers::RemoveNodes([id].into()))
                .await?;
        }
        Ok(outcome)
    }

    async fn change_membership(&self, change: ChangeMembers<u64, MonNode>) -> Result<(), Status> {
        match tokio::time::timeout(
            self.config.quorum_timeout * 2,
            self.raft.change_membership(change, false),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(raft_write_error(error)),
            Err(_) => Err(no_quorum("the membership change did not commit in time")),
        }
    }

    /// On the leader: an OSD booted. Returns its id.
    pub async fn osd_boot(&self, uuid: String, osd: OsdInfo) -> Result<(u32, u64), Status> {
        if uuid.is_empty() {
            return Err(Status::invalid_argument(
                "an OSD boots with the uuid of its store",
            ));
        }
        if osd.addr.is_empty() || osd.host.is_empty() {
            return Err(Status::invalid_argument(
                "an OSD boots with its address and host",
            ));
        }
        if !(osd.weight.is_finite() && (0.0..=MAX_CRUSH_WEIGHT).contains(&osd.weight)) {
            return Err(Status::invalid_argument(format!(
                "weight {} is invalid: use a number between 0 and {MAX_CRUSH_WEIGHT} (capacity in TiB)",
                osd.weight
            )));
        }
        let at_ms = now_ms();
        match self.write(Proposal::OsdBoot { uuid, osd, at_ms }).await? {
            CommandOutcome::Done { epoch, value, .. } => {
                let id = value
                    .and_then(|value| value.as_u64())
                    .ok_or_else(|| Status::internal("boot did not return an id"))?
                    as u32;
                self.heartbeats
                    .lock()
                    .expect("heartbeats")
                    .insert(id, Instant::now());
                Ok((id, epoch))
            }
            CommandOutcome::Refused { reason } => Err(Status::failed_precondition(reason)),
        }
    }

    /// On the leader: PG states reported by a primary.
    pub fn pg_stats(&self, epoch: u64, stats: Vec<lcpfs_proto::PgStat>) {
        let at = Instant::now();
        let mut table = self.pg_stats.lock().expect("pg stats");
        for stat in stats {
            table.insert((stat.pool, stat.seed), PgReport { stat, epoch, at });
        }
    }

    /// Refuses to remove an OSD whose data a PG may still need: one not marked
    /// lost, unless every PG was reported `active+clean` by its primary at an
    /// epoch since the OSD was out (so every PG holds all its writes without it).
    fn check_removable(&self, ids: &[u32]) -> Result<(), String> {
        let (map, out_since) = self
            .state
            .with_state(|state| (state.map.clone(), state.out_since.clone()));
        let table = self.pg_stats.lock().expect("pg stats");
        for id in ids {
            let Some(osd) = map.osds.get(id) else {
                continue;
            };
            if osd.lost || osd.up {
                // Removing an up OSD is refused by the map itself.
                continue;
            }
            let Some(&since) = out_since.get(id) else {
                return Err(format!(
                    "osd.{id} is in: mark it out (`lcpfs osd out {id}`) and wait until every \
                     PG is active+clean without it, or give its data up with \
                     `lcpfs osd lost {id}`"
                ));
            };
            for pool in map.pools.values() {
                for seed in 0..pool.pg_num {
                    let report = fresh_report(&table, pool.id, seed);
                    let clean = report.is_some_and(|report| {
                        report.epoch >= since && report.stat.state == "active+clean"
                    });
                    if !clean {
                        let state = report.map_or("unknown", |report| report.stat.state.as_str());
                        return Err(format!(
                            "osd.{id} may hold writes PG {} still needs: it is {state} \
                             (as of its primary's last report since epoch {since}); wait \
                             until every PG is active+clean without it (`lcpfs pg ls`), \
                             or give its data up with `lcpfs osd lost {id}`",
                            PgId::new(pool.id, seed)
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// PGs of the current map by state (PGs without a report in the last
    /// `PG_STAT_FRESH` are `unknown`), and the oldest map epoch of the reports
    /// counted (0: some PG has none).
    pub fn pg_states(&self) -> (BTreeMap<String, u64>, u64) {
        let map = self.state.map();
        let table = self.pg_stats.lock().expect("pg stats");
        let mut states = BTreeMap::new();
        let mut since = u64::MAX;
        for pool in map.pools.values() {
            for seed in 0..pool.pg_num {
                let report = fresh_report(&table, pool.id, seed);
                let state = report.map_or("unknown", |report| &report.stat.state);
                *states.entry(state.to_owned()).or_insert(0) += 1;
                since = since.min(report.map_or(0, |report| report.epoch));
            }
        }
        (states, if since == u64::MAX { 0 } else { since })
    }

    /// Every PG of the current map (of `pool` only, when given), in PG order,
    /// with the state and scrub stamps its primary last reported.
    pub fn pg_list(&self, pool: Option<u32>) -> Vec<PgSummary> {
        let map = self.state.map();
        let table = self.pg_stats.lock().expect("pg stats");
        let mut list = Vec::new();
        for pool in map
            .pools
            .values()
            .filter(|candidate| pool.is_none_or(|id| candidate.id == id))
        {
            let placement = PoolPlacement::new(&map, pool.id).ok();
            for seed in 0..pool.pg_num {
                let mapping = placement.as_ref().map(|placement| placement.map_pg(seed));
                let report = fresh_report(&table, pool.id, seed);
                let fresh = report.map(|report| &report.stat);
                list.push(PgSummary {
                    pgid: PgId::new(pool.id, seed).to_string(),
                    state: fresh.map_or_else(|| "unknown".to_owned(), |stat| stat.state.clone()),
                    up: mapping
                        .as_ref()
                        .map(|mapping| mapping.up.clone())
                        .unwrap_or_default(),
                    primary: mapping.and_then(|mapping| mapping.primary),
                    last_scrub: fresh.map_or(0, |stat| stat.last_scrub),
                    last_deep_scrub: fresh.map_or(0, |stat| stat.last_deep_scrub),
                    reported_epoch: report.map_or(0, |report| report.epoch),
                });
            }
        }
        list
    }

    /// On the leader: a heartbeat from an OSD, with its disk space (`size` 0:
    /// not reported).
    pub fn osd_heartbeat(&self, id: u32, used: u64, size: u64) -> Result<(), Status> {
        if !self
            .state
            .with_state(|state| state.map.osds.contains_key(&id))
        {
            return Err(Status::not_found(format!(
                "osd.{id} is not in the map: boot it first"
            )));
        }
        self.heartbeats
            .lock()
            .expect("heartbeats")
            .insert(id, Instant::now());
        if size > 0 {
            self.usage.lock().expect("usage").insert(id, (used, size));
        }
        Ok(())
    }

    /// The fraction of each OSD's disk space in use, as last reported.
    pub fn usage_ratios(&self) -> BTreeMap<u32, f64> {
        self.usage
            .lock()
            .expect("usage")
            .iter()
            .map(|(&id, &(used, size))| (id, used as f64 / size as f64))
            .collect()
    }

    /// The full and nearfull ratios in force: an operator's, or the flags'.
    pub fn full_ratios(&self) -> (f64, f64) {
        self.state.with_state(|state| {
            (
                state.full_ratio.unwrap_or(self.config.full_ratio),
                state.nearfull_ratio.unwrap_or(self.config.nearfull_ratio),
            )
        })
    }

    /// Every OSD of the map with its disk space as last reported and its PGs.
    pub fn osd_df(&self) -> Vec<OsdUsage> {
        let map = self.state.map();
        let mut pgs: HashMap<u32, u32> = HashMap::new();
        for pool in map.pools.values() {
            let Ok(placement) = PoolPlacement::new(&map, pool.id) else {
                continue;
            };
            for seed in 0..pool.pg_num {
                for osd in placement.map_pg(seed).up.into_iter().flatten() {
                    *pgs.entry(osd).or_default() += 1;
                }
            }
        }
        let usage = self.usage.lock().expect("usage");
        map.osds
            .values()
            .map(|osd| {
                let (used_bytes, size_bytes) = usage.get(&osd.id).copied().unwrap_or_default();
                OsdUsage {
                    id: osd.id,
                    host: osd.host.clone(),
                    up: osd.up,
                    in_: osd.in_,
                    full: osd.full,
                    size_bytes,
                    used_bytes,
                    pgs: pgs.get(&osd.id).copied().unwrap_or(0),
                }
            })
            .collect()
    }

    /// Marks full the up OSDs whose disks crossed the full ratio, and not full
    /// those back below it.
    async fn update_full_flags(&self, map: &lcpfs_core::map::ClusterMap) {
        let ratios = self.usage_ratios();
        let (full_ratio, _) = self.full_ratios();
        let (mut full, mut not_full) = (BTreeSet::new(), BTreeSet::new());
        for osd in map.osds.values() {
            let Some(&ratio) = ratios.get(&osd.id) else {
                continue;
            };
            let over = ratio >= full_ratio;
            if over && !osd.full {
                full.insert(osd.id);
            } else if !over && osd.full {
                not_full.insert(osd.id);
            }
        }
        if (!full.is_empty() || !not_full.is_empty())
            && let Err(error) = self.write(Proposal::SetFull { full, not_full }).await
        {
            tracing::warn!(%error, "could not update the OSDs' full flags");
        }
    }

    /// On the leader: records that OSD `id` is up through `epoch` (once, however
    /// many of its PGs ask); returns the epoch of a map that says so.
    pub async fn up_thru(&self, id: u32, epoch: u64) -> Result<u64, Status> {
        let map = self.state.map();
        let osd = map
            .osds
            .get(&id)
            .ok_or_else(|| Status::not_found(format!("osd.{id} is not in the map")))?;
        if !osd.up {
            return Err(Status::failed_precondition(format!(
                "osd.{id} is down at epoch {}: boot it again",
                map.epoch
            )));
        }
        if osd.up_thru >= epoch.min(map.epoch) {
            return Ok(map.epoch);
        }
        match self.write(Proposal::UpThru { id, epoch }).await? {
            CommandOutcome::Done { epoch, .. } => Ok(epoch),
            CommandOutcome::Refused { reason } => Err(Status::failed_precondition(reason)),
        }
    }

    /// On the leader: `reporter` cannot reach `failed`. Once OSDs on enough distinct
    /// hosts report the same peer within the grace period, it is marked down.
    pub async fn failure_report(&self, reporter: u32, failed: u32) -> Result<(), Status> {
        let map = self.state.map();
        let reporter_host = map
            .osds
            .get(&reporter)
            .map(|osd| osd.host.clone())
            .ok_or_else(|| {
                Status::not_found(format!("reporter osd.{reporter} is not in the map"))
            })?;
        if !map.osds.get(&failed).is_some_and(|osd| osd.up) {
            return Ok(());
        }
        // Only an OSD that shares a PG with the accused watches its heartbeats:
        // a report from any other is refused (it may be partitioned from
        // everything, or wrong about who its peers are).
        if !share_a_pg(&map, reporter, failed) {
            return Err(Status::failed_precondition(format!(
                "osd.{reporter} shares no PG with osd.{failed} at epoch {}: its failure report \
                 does not count",
                map.epoch
            )));
        }
        let reporters = {
            let mut reports = self.failure_reports.lock().expect("failure reports");
            let entry = reports.entry(failed).or_default();
            entry.insert(reporter_host, (reporter, Instant::now()));
            entry.retain(|_, (_, at)| at.elapsed() < self.config.osd_heartbeat_grace);
            if entry.len() < self.config.min_down_reporter_hosts {
                return Ok(());
            }
            let reporters: Vec<String> =
                entry.values().map(|(id, _)| format!("osd.{id}")).collect();
            reports.remove(&failed);
            reporters
        };
        self.write(Proposal::MarkDown {
            ids: [failed].into(),
            based_on_epoch: map.epoch,
            at_ms: now_ms(),
            reason: format!("reported failed by {}", reporters.join(", ")),
            flap: Some(self.config.flap),
        })
        .await?;
        Ok(())
    }

    /// The leader's periodic duties: bootstrap a new cluster, mark silent OSDs down
    /// and long-down OSDs out. Runs forever; does nothing while not leading.
    pub async fn leader_duties(self: Arc<Self>, initial_members: BTreeMap<String, String>) {
        let tick = (self.config.osd_heartbeat_grace / 8)
            .clamp(Duration::from_millis(100), Duration::from_secs(1));
        // The term this monitor last led in: a new term means a new leadership, even
        // if it was lost and regained between two ticks.
        let mut led_term = None;
        loop {
            tokio::time::sleep(tick).await;
            let (leader, term) = {
                let metrics = self.raft.metrics();
                let metrics = metrics.borrow();
                (metrics.current_leader, metrics.current_term)
            };
            if leader != Some(self.id) {
                led_term = None;
                continue;
            }
            let map = self.state.map();
            if led_term != Some(term) {
                // A new leader has seen no heartbeat yet: every OSD gets a full grace.
                let now = Instant::now();
                let mut heartbeats = self.heartbeats.lock().expect("heartbeats");
                heartbeats.clear();
                heartbeats.extend(map.osds.keys().map(|&id| (id, now)));
                self.seen_down.lock().expect("seen down").clear();
                led_term = Some(term);
            }
            if !self.state.with_state(|state| state.bootstrapped()) {
                self.bootstrap(&initial_members).await;
                continue;
            }
            let silent: BTreeSet<u32> = {
                let mut heartbeats = self.heartbeats.lock().expect("heartbeats");
                map.osds
                    .values()
                    .filter(|osd| osd.up)
                    .filter(|osd| {
                        heartbeats
                            .entry(osd.id)
                            .or_insert_with(Instant::now)
                            .elapsed()
                            > self.config.osd_heartbeat_grace
                    })
                    .map(|osd| osd.id)
                    .collect()
            };
            if !silent.is_empty() {
                let reason = format!("no heartbeat for {:?}", self.config.osd_heartbeat_grace);
                if let Err(error) = self
                    .write(Proposal::MarkDown {
                        ids: silent,
                        based_on_epoch: map.epoch,
                        at_ms: now_ms(),
                        reason,
                        flap: Some(self.config.flap),
                    })
                    .await
                {
                    tracing::warn!(%error, "could not mark silent OSDs down");
                }
                continue;
            }
            let now = now_ms();
            let out: BTreeSet<u32> = {
                let down_since = self.state.with_state(|state| state.down_since_ms.clone());
                let mut seen_down = self.seen_down.lock().expect("seen down");
                map.osds
                    .values()
                    .filter(|osd| !osd.up && osd.in_)
                    .filter(|osd| {
                        let since = down_since
                            .get(&osd.id)
                            .copied()
                            .unwrap_or_else(|| *seen_down.entry(osd.id).or_insert(now));
                        now.saturating_sub(since)
                            >= self.config.osd_down_out_interval.as_millis() as u64
                    })
                    .map(|osd| osd.id)
                    .collect()
            };
            if !out.is_empty()
                && let Err(error) = self.write(Proposal::AutoOut { ids: out }).await
            {
                tracing::warn!(%error, "could not mark long-down OSDs out");
            }
            self.update_full_flags(&map).await;
        }
    }

    async fn bootstrap(&self, initial_members: &BTreeMap<String, String>) {
        let (nodes, _) = self.members();
        let monitors = if initial_members.is_empty() {
            nodes
                .values()
                .map(|node| (node.name.clone(), node.addr.clone()))
                .collect()
        } else {
            initial_members.clone()
        };
        let proposal = Proposal::Bootstrap {
            fsid: new_fsid(),
            monitors,
            admin_key: new_key(),
        };
        match self.write(proposal).await {
            Ok(CommandOutcome::Done { message, .. }) => tracing::info!("{message}"),
            Ok(CommandOutcome::Refused { reason }) => tracing::debug!(%reason, "bootstrap"),
            Err(error) => tracing::warn!(%error, "could not bootstrap the cluster yet"),
        }
    }
}

fn refused(reason: &str) -> CommandOutcome {
    CommandOutcome::Refused {
        reason: reason.to_owned(),
    }
}

fn raft_write_error(error: RaftError<u64, ClientWriteError<u64, MonNode>>) -> Status {
    match error {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => {
            outcome_unknown("this monitor lost the leadership while the change was in flight")
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(error)) => {
            Status::failed_precondition(format!("membership change refused: {error}"))
        }
        RaftError::Fatal(fatal) => Status::internal(format!("raft stopped: {fatal}")),
    }
}

/// This monitor (`me`) is not, or no longer, an accepted leader.
fn forward_error(me: u64, new_leader: Option<u64>) -> Status {
    match new_leader {
        Some(leader) if leader != me => {
            Status::unavailable("leadership changed; retry the request")
        }
        _ => no_quorum(
            "this monitor is not confirmed as leader by a quorum and no other leader is elected",
        ),
    }
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new secret key: 32 random bytes as hex.
pub fn new_key() -> String {
    random_hex(32)
}

fn new_fsid() -> String {
    let hex = random_hex(16);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}
