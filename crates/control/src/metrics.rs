//! Prometheus metrics: installs the process-wide recorder and serves
//! `GET /metrics`.
//!
//! This module owns the exporter set-up and the list of metric names with
//! their help texts; the values are recorded where the events happen
//! (coordinator, manager, sources) through the `metrics` facade. It must
//! never record anything itself besides the descriptions.
//!
//! Metrics (all prefixed `deltaforge_`, labelled by `pipeline`, and by
//! `sink` where it applies):
//!
//! | name | type | labels | set by |
//! |---|---|---|---|
//! | `deltaforge_events_read_total` | counter | pipeline | coordinator |
//! | `deltaforge_sink_events_delivered_total` | counter | pipeline, sink | coordinator |
//! | `deltaforge_sink_errors_total` | counter | pipeline, sink | coordinator |
//! | `deltaforge_sink_batches_dropped_total` | counter | pipeline, sink | coordinator |
//! | `deltaforge_checkpoints_written_total` | counter | pipeline | coordinator |
//! | `deltaforge_batch_events` | histogram | pipeline | coordinator |
//! | `deltaforge_sink_delivery_seconds` | histogram | pipeline, sink | coordinator |
//! | `deltaforge_checkpoint_lag_seconds` | gauge | pipeline | coordinator (every second; 0 while idle) |
//! | `deltaforge_checkpoint_lag_bytes` | gauge | pipeline | coordinator, from the source's lag probe (every 2 s; 0 for sources without a server log) |
//! | `deltaforge_pipeline_status` | gauge | pipeline, state | manager (1 for the current state, 0 for the others) |
//! | `deltaforge_snapshot_rows_total` | counter | pipeline, table | database sources (`r` rows emitted by snapshots and backfills) |
//! | `deltaforge_snapshot_tables_remaining` | gauge | pipeline | database sources (tables left to read) |
//!
//! **Contract for database sources:** `deltaforge_checkpoint_lag_bytes{pipeline}`
//! is the source server's current log position minus the durable checkpoint
//! position, in bytes: WAL bytes for PostgreSQL (`pg_current_wal_lsn()` minus
//! the checkpoint LSN), binlog bytes for MySQL/MariaDB (summed over the
//! binlog files of `SHOW BINARY LOGS` from the checkpoint's file/pos to the
//! server's current file/pos), never below 0. A source provides it through
//! `Source::lag_probe` (its own connection, never the replication stream);
//! the coordinator polls the probe every 2 s with the durable checkpoint
//! while the pipeline runs. A failed probe is logged (warning, then debug
//! while it keeps failing) and leaves the gauge at its last value; so does a
//! stopped pipeline.
//!
//! **Access:** on a loopback address `/metrics` is open (a local
//! Prometheus or agent scrapes it). On any other address the binary refuses
//! to start without the API token (unless the operator passes
//! `--insecure-metrics`), and [`serve`] is then given that token:
//! scrapes must send `Authorization: Bearer TOKEN` (Prometheus:
//! `authorization: { credentials_file: ... }`). Pipeline names, table
//! names and lag tell an outsider more than they should.
//!
//! Why this crate: `metrics-exporter-prometheus` is the exporter of the
//! `metrics` facade the coordinator already records through; it renders the
//! text format and we serve it with the same axum as the API (its own
//! HTTP listener feature would pull in hyper-util's server a second time).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

/// Buckets of `deltaforge_batch_events`.
const BATCH_BUCKETS: &[f64] = &[1.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0];
/// Buckets of `deltaforge_sink_delivery_seconds`.
const LATENCY_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Installs the global Prometheus recorder and describes every metric.
///
/// # Errors
/// When a recorder is already installed.
pub fn install() -> Result<PrometheusHandle, BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full("deltaforge_batch_events".into()), BATCH_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full("deltaforge_sink_delivery_seconds".into()), LATENCY_BUCKETS)?
        .install_recorder()?;
    describe();
    Ok(handle)
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!("deltaforge_events_read_total", "Events received from the source.");
    describe_counter!("deltaforge_sink_events_delivered_total", "Events a sink acknowledged.");
    describe_counter!("deltaforge_sink_errors_total", "Failed delivery attempts of a sink.");
    describe_counter!(
        "deltaforge_sink_batches_dropped_total",
        "Batches an optional sink gave up on after its retries (the batch was committed without it)."
    );
    describe_counter!("deltaforge_checkpoints_written_total", "Checkpoints written to storage.");
    describe_histogram!("deltaforge_batch_events", "Events per delivered batch.");
    describe_histogram!("deltaforge_sink_delivery_seconds", Unit::Seconds, "Duration of successful deliveries.");
    describe_gauge!(
        "deltaforge_checkpoint_lag_seconds",
        Unit::Seconds,
        "Now minus the source timestamp of the last checkpointed event; 0 while idle."
    );
    describe_gauge!(
        "deltaforge_checkpoint_lag_bytes",
        Unit::Bytes,
        "Source server's current log position minus the checkpoint position (WAL or binlog bytes)."
    );
    describe_gauge!("deltaforge_pipeline_status", "1 for the pipeline's current state, 0 for the others.");
    describe_counter!("deltaforge_snapshot_rows_total", "Rows emitted as op r by snapshots and backfills.");
    describe_gauge!("deltaforge_snapshot_tables_remaining", "Tables still to be read by snapshots and backfills.");
}

/// The `/metrics` router; with a `token`, scrapes must send it as
/// `Authorization: Bearer TOKEN`.
pub fn router(handle: PrometheusHandle, token: Option<Arc<str>>) -> Router {
    let router = Router::new().route(
        "/metrics",
        get(move || {
            let handle = handle.clone();
            async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], handle.render()) }
        }),
    );
    match token {
        Some(token) => router.layer(middleware::from_fn_with_state(token, require_token)),
        None => router,
    }
}

async fn require_token(State(token): State<Arc<str>>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
    match given {
        Some(g) if crate::api::constant_time_eq(g.trim().as_bytes(), token.as_bytes()) => next.run(req).await,
        _ => {
            let mut resp = (
                StatusCode::UNAUTHORIZED,
                "the metrics endpoint requires the API token: send `Authorization: Bearer TOKEN` \
                 (Prometheus: authorization.credentials_file)\n",
            )
                .into_response();
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            resp
        }
    }
}

/// Serves `/metrics` on `listener` until `shutdown` fires, requiring
/// `token` when given (see the module docs for when); runs the exporter's
/// upkeep (histogram maintenance) every few seconds.
pub async fn serve(
    listener: tokio::net::TcpListener,
    handle: PrometheusHandle,
    token: Option<Arc<str>>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let upkeep = handle.clone();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = tick.tick() => upkeep.run_upkeep(),
                _ = stop.cancelled() => break,
            }
        }
    });
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(addr = ?addr, auth = token.is_some(), "metrics listening on /metrics");
    axum::serve(listener, router(handle, token)).with_graceful_shutdown(async move { shutdown.cancelled().await }).await
}
