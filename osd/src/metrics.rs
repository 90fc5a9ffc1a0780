//! The OSD's HTTP endpoint for operators and orchestrators: Prometheus metrics at
//! `/metrics`, `/health` (200 while the daemon serves) and `/ready` (200 once it
//! is up in the map it follows, 503 before).
//!
//! Counters are kept by the service as requests pass (operations and bytes by
//! kind, latency histograms, objects recovered); gauges are read at scrape time
//! (PGs by state, the engine's space and per-disk error counters).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use lcpfs_engine::PoolStatus;
use lcpfs_proto::PgStat;

/// What the endpoint reads at scrape time from the layers above.
pub trait Scrape: Send + Sync + 'static {
    /// The counters kept as requests pass.
    fn metrics(&self) -> &OsdMetrics;
    /// The states of the PGs this OSD is primary for.
    fn pg_states(&self) -> Vec<PgStat>;
    /// How many PG copies the store holds.
    fn pg_copies(&self) -> usize;
    /// The engine store's space and per-disk errors.
    fn store_status(&self) -> PoolStatus;
    /// True when the map says this OSD is up.
    fn is_up(&self) -> bool;
}

/// The OSD's metrics.
pub struct OsdMetrics {
    registry: Registry,
    /// Operations served at this OSD as primary, by kind (`read`, `write_full`, ...).
    pub ops: IntCounterVec,
    /// Client bytes, `in` (written) and `out` (read).
    pub bytes: IntCounterVec,
    /// Request latency in seconds, `read` or `write` (a request with a mutation).
    pub latency: HistogramVec,
    /// Objects this OSD sent or fetched to bring copies level.
    pub recovered_objects: IntCounter,
    pgs: IntGaugeVec,
    copies: IntGauge,
    space: IntGaugeVec,
    disk_errors: IntGaugeVec,
}

impl OsdMetrics {
    /// Registers the OSD's metrics.
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let ops = IntCounterVec::new(
            Opts::new(
                "lcpfs_osd_ops_total",
                "Operations served as primary, by kind",
            ),
            &["kind"],
        )?;
        let bytes = IntCounterVec::new(
            Opts::new(
                "lcpfs_osd_client_bytes_total",
                "Client bytes written (in) and read (out)",
            ),
            &["direction"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new("lcpfs_osd_op_latency_seconds", "Client request latency")
                .buckets(prometheus::exponential_buckets(0.0001, 2.0, 18)?),
            &["kind"],
        )?;
        let recovered_objects = IntCounter::new(
            "lcpfs_osd_recovered_objects_total",
            "Objects pushed or pulled to bring PG copies level",
        )?;
        let pgs = IntGaugeVec::new(
            Opts::new("lcpfs_osd_pgs", "PGs this OSD is primary for, by state"),
            &["state"],
        )?;
        let copies = IntGauge::new(
            "lcpfs_osd_pg_copies",
            "PG copies held on this OSD's store (primary, replica or stray)",
        )?;
        let space = IntGaugeVec::new(
            Opts::new("lcpfs_osd_store_bytes", "Engine store space, size and free"),
            &["kind"],
        )?;
        let disk_errors = IntGaugeVec::new(
            Opts::new(
                "lcpfs_osd_disk_errors",
                "Engine errors per disk since the store opened",
            ),
            &["disk", "kind"],
        )?;
        registry.register(Box::new(ops.clone()))?;
        registry.register(Box::new(bytes.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(recovered_objects.clone()))?;
        registry.register(Box::new(pgs.clone()))?;
        registry.register(Box::new(copies.clone()))?;
        registry.register(Box::new(space.clone()))?;
        registry.register(Box::new(disk_errors.clone()))?;
        Ok(OsdMetrics {
            registry,
            ops,
            bytes,
            latency,
            recovered_objects,
            pgs,
            copies,
            space,
            disk_errors,
        })
    }

    fn render(&self, service: &dyn Scrape) -> String {
        self.pgs.reset();
        for stat in service.pg_states() {
            self.pgs.with_label_values(&[stat.state.as_str()]).inc();
        }
        self.copies.set(service.pg_copies() as i64);
        let status = service.store_status();
        let clamp = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
        self.space
            .with_label_values(&["size"])
            .set(clamp(status.size_bytes));
        self.space
            .with_label_values(&["free"])
            .set(clamp(status.free_bytes));
        for disk in status.vdevs.iter().flat_map(|vdev| &vdev.disks) {
            let path = disk.path.display().to_string();
            for (kind, count) in [
                ("read", disk.read_errors),
                ("write", disk.write_errors),
                ("checksum", disk.checksum_errors),
            ] {
                self.disk_errors
                    .with_label_values(&[path.as_str(), kind])
                    .set(clamp(count));
            }
        }
        let mut text = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut text)
            .expect("text encoding of metrics");
        String::from_utf8(text).expect("prometheus text is UTF-8")
    }
}

async fn metrics(State(service): State<Arc<dyn Scrape>>) -> String {
    service.metrics().render(service.as_ref())
}

async fn health() -> &'static str {
    "ok\n"
}

async fn ready(State(service): State<Arc<dyn Scrape>>) -> (StatusCode, String) {
    if service.is_up() {
        (StatusCode::OK, "ok\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not up in the cluster map\n".to_owned(),
        )
    }
}

/// Sets a failpoint of a chaos build: the body holds its actions in the `fail`
/// crate's syntax (`return`, `10%return(corrupt)`, `sleep(2000)`, `off`).
#[cfg(feature = "failpoints")]
async fn set_failpoint(
    axum::extract::Path(name): axum::extract::Path<String>,
    actions: String,
) -> (StatusCode, String) {
    match fail::cfg(name.as_str(), actions.trim()) {
        Ok(()) => {
            tracing::warn!(failpoint = %name, actions = %actions.trim(), "failpoint set");
            (StatusCode::OK, "ok\n".to_owned())
        }
        Err(error) => (StatusCode::BAD_REQUEST, format!("{error}\n")),
    }
}

/// Serves `/metrics`, `/health` and `/ready` on `addr` until the process ends; a
/// chaos build also takes `PUT /failpoints/NAME`.
pub async fn serve(addr: SocketAddr, service: Arc<dyn Scrape>) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/ready", get(ready));
    #[cfg(feature = "failpoints")]
    let app = app.route("/failpoints/{name}", axum::routing::put(set_failpoint));
    let app = app.with_state(service);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|error| anyhow::anyhow!("cannot listen for metrics on {addr}: {error}"))?;
    axum::serve(listener, app).await?;
    Ok(())
}
