//! The monitor's HTTP endpoint for operators and orchestrators: Prometheus metrics at
//! `/metrics`, and `/health` (200 when this monitor is in a quorum with a leader,
//! 503 otherwise) for liveness and readiness probes.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use prometheus::{Encoder, IntGauge, Registry, TextEncoder};

use crate::monitor::Monitor;

struct Gauges {
    registry: Registry,
    term: IntGauge,
    is_leader: IntGauge,
    has_leader: IntGauge,
    last_log_index: IntGauge,
    applied_index: IntGauge,
    epoch: IntGauge,
    osds: IntGauge,
    osds_up: IntGauge,
    osds_in: IntGauge,
    pools: IntGauge,
}

impl Gauges {
    fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let gauge = |name: &str, help: &str| -> prometheus::Result<IntGauge> {
            let gauge = IntGauge::new(name, help)?;
            registry.register(Box::new(gauge.clone()))?;
            Ok(gauge)
        };
        Ok(Gauges {
            term: gauge("lcpfs_mon_raft_term", "Current Raft term")?,
            is_leader: gauge(
                "lcpfs_mon_is_leader",
                "1 if this monitor is the Raft leader",
            )?,
            has_leader: gauge("lcpfs_mon_has_leader", "1 if this monitor knows a leader")?,
            last_log_index: gauge("lcpfs_mon_raft_last_log_index", "Last Raft log index")?,
            applied_index: gauge(
                "lcpfs_mon_raft_applied_index",
                "Last Raft log index applied (committed and applied)",
            )?,
            epoch: gauge("lcpfs_mon_map_epoch", "Cluster map epoch")?,
            osds: gauge("lcpfs_mon_osds", "OSDs in the map")?,
            osds_up: gauge("lcpfs_mon_osds_up", "OSDs up")?,
            osds_in: gauge("lcpfs_mon_osds_in", "OSDs in")?,
            pools: gauge("lcpfs_mon_pools", "Pools")?,
            registry,
        })
    }

    fn render(&self, monitor: &Monitor) -> String {
        let metrics = monitor.raft.metrics().borrow().clone();
        let map = monitor.state.map();
        let count = |n: usize| n as i64;
        self.term.set(metrics.current_term as i64);
        self.is_leader
            .set(i64::from(metrics.current_leader == Some(monitor.id)));
        self.has_leader
            .set(i64::from(metrics.current_leader.is_some()));
        self.last_log_index
            .set(metrics.last_log_index.unwrap_or(0) as i64);
        self.applied_index
            .set(metrics.last_applied.map(|id| id.index).unwrap_or(0) as i64);
        self.epoch.set(map.epoch as i64);
        self.osds.set(count(map.osds.len()));
        self.osds_up
            .set(count(map.osds.values().filter(|osd| osd.up).count()));
        self.osds_in
            .set(count(map.osds.values().filter(|osd| osd.in_).count()));
        self.pools.set(count(map.pools.len()));
        let mut text = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut text)
            .expect("text encoding of gauges");
        String::from_utf8(text).expect("prometheus text is UTF-8")
    }
}

type AppState = (Arc<Monitor>, Arc<Gauges>);

async fn metrics(State((monitor, gauges)): State<AppState>) -> String {
    gauges.render(&monitor)
}

async fn health(State((monitor, _)): State<AppState>) -> (StatusCode, String) {
    let leader = monitor.leader_name();
    let bootstrapped = monitor.state.with_state(|state| state.bootstrapped());
    match leader {
        Some(leader) if bootstrapped => (StatusCode::OK, format!("ok: leader {leader}\n")),
        Some(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "bootstrapping\n".to_owned(),
        ),
        None => (StatusCode::SERVICE_UNAVAILABLE, "no quorum\n".to_owned()),
    }
}

/// Serves `/metrics` and `/health` on `addr` until the process ends.
pub async fn serve(addr: SocketAddr, monitor: Arc<Monitor>) -> anyhow::Result<()> {
    let gauges = Arc::new(Gauges::new()?);
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .with_state((monitor, gauges));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|error| anyhow::anyhow!("cannot listen for metrics on {addr}: {error}"))?;
    axum::serve(listener, app).await?;
    Ok(())
}
