//! Runs pipelines under the control plane: hands every spec to the
//! [`PipelineManager`] (which supervises each one, restarting after
//! retryable failures with backoff, and holds leases on shared storage),
//! serves the REST API and the Prometheus metrics next to them, and stops
//! everything cleanly on SIGINT/SIGTERM.
//!
//! The process exits by itself once every pipeline has ended on its own
//! (finished, or failed: exit 1); pipelines stopped or paused through the
//! API, or held by another instance, keep it running. This module must
//! never decide anything about delivery or checkpoints.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use deltaforge_config::{Catalog, PipelineSpec};
use deltaforge_control::{ApiState, LeaseConfig, ManagerConfig, PipelineFactory, PipelineManager};
use deltaforge_core::{Pipeline, PipelineError, SinkSlot, Source, SourceError};
use deltaforge_storage::StorageBackend;
use tokio_util::sync::CancellationToken;

use crate::registry::Registry;

/// Default REST API address.
pub const DEFAULT_API_ADDR: &str = "127.0.0.1:8080";
/// Default metrics address.
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9000";

/// Control-plane options of `run`.
#[derive(Debug, Clone, Args)]
pub struct ControlArgs {
    /// REST API address [default: 127.0.0.1:8080]. When given explicitly, a
    /// failure to bind it is fatal; the default address is skipped with an
    /// error log when taken. Port 0 picks a free port (logged).
    #[arg(long, env = "DELTAFORGE_API_ADDR")]
    pub api_addr: Option<SocketAddr>,
    /// Prometheus metrics address, path /metrics [default: 127.0.0.1:9000];
    /// bind failures as for --api-addr.
    #[arg(long, env = "DELTAFORGE_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Bearer token the API requires (`Authorization: Bearer TOKEN`); all
    /// routes but /health.
    #[arg(long, env = "DELTAFORGE_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// Allow a non-loopback --api-addr without --api-token.
    #[arg(long)]
    pub insecure_api: bool,
    /// Host names, besides IP addresses and localhost, under which clients
    /// reach the API (`name` or `name:port`, comma-separated; `*`: any).
    /// Requests for other hosts get 403 (DNS rebinding protection).
    #[arg(long, env = "DELTAFORGE_API_ALLOWED_HOSTS", value_delimiter = ',')]
    pub api_allowed_hosts: Vec<String>,
    /// Browser origins, besides the API's own, allowed to call the API
    /// (`https://console.example.com`, comma-separated). Requests with any
    /// other `Origin` header get 403.
    #[arg(long, env = "DELTAFORGE_API_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub api_allowed_origins: Vec<String>,
    /// Environment variables that specs sent through the API may read as
    /// ${NAME} (comma-separated; `*`: every one). Default: none. Specs of
    /// --config files read every variable.
    #[arg(long, env = "DELTAFORGE_API_ENV_ALLOW", value_delimiter = ',')]
    pub api_env_allow: Vec<String>,
    /// Serve /metrics on a non-loopback --metrics-addr without requiring
    /// the API token.
    #[arg(long)]
    pub insecure_metrics: bool,
    /// This instance's name in pipeline leases [default: HOSTNAME-PID].
    #[arg(long, env = "DELTAFORGE_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// Lease time-to-live in seconds, on shared (postgres) storage; renewed every third of it.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub lease_ttl_secs: u64,
    /// Seconds between two samples of the console's one-hour events/s and
    /// lag history (`GET /pipelines/{name}/history`; ignored in a build
    /// without the `console` feature).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub history_resolution_secs: u64,
}

/// Builds pipelines from specs through the component registry.
struct Factory {
    grace: Duration,
}

impl PipelineFactory for Factory {
    fn catalog(&self) -> &dyn Catalog {
        &Registry
    }
    fn build(&self, spec: &PipelineSpec, storage: Arc<dyn StorageBackend>) -> Result<Pipeline, PipelineError> {
        build(spec, storage, self.grace)
    }
    fn build_source(&self, spec: &PipelineSpec) -> Result<Option<Box<dyn Source>>, SourceError> {
        Registry.build_source(spec).map(Some)
    }
    fn redrive<'a>(
        &'a self,
        spec: &'a PipelineSpec,
        storage: Arc<dyn StorageBackend>,
        only: Option<u64>,
    ) -> deltaforge_control::RedriveFuture<'a> {
        Box::pin(async move { crate::dlq_cmd::redrive_spec(spec, storage, only).await.map_err(|e| format!("{e:#}")) })
    }
}

/// Binds `addr` (or the default); `None` when the default is taken.
async fn bind(what: &str, addr: Option<SocketAddr>, default: &str) -> anyhow::Result<Option<tokio::net::TcpListener>> {
    let explicit = addr.is_some();
    let addr = match addr {
        Some(a) => a,
        None => default.parse().expect("valid default address"),
    };
    match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => {
            let local = l.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| addr.to_string());
            tracing::info!("{what} bound to {local}");
            Ok(Some(l))
        }
        Err(e) if explicit => {
            Err(e).with_context(|| format!("cannot listen on {addr} for the {what}; choose another address"))
        }
        Err(e) => {
            tracing::error!(
                "cannot listen on the default {what} address {addr} ({e}); running without it. \
                 Pass an explicit address (port 0 picks a free one)"
            );
            Ok(None)
        }
    }
}

fn default_instance_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "deltaforge".to_string());
    format!("{host}-{}", std::process::id())
}

/// Runs every pipeline with the API and metrics until all have ended by
/// themselves or a signal arrives. Exit code 0, or 1 when any pipeline failed.
pub async fn run(
    specs: Vec<PipelineSpec>,
    storage: Arc<dyn StorageBackend>,
    grace: Duration,
    control: ControlArgs,
) -> anyhow::Result<ExitCode> {
    let token = control.api_token.clone().filter(|t| !t.is_empty());
    let api_addr = control.api_addr.unwrap_or_else(|| DEFAULT_API_ADDR.parse().expect("valid default"));
    if !api_addr.ip().is_loopback() && token.is_none() && !control.insecure_api {
        bail!(
            "refusing to serve the REST API on non-loopback address {api_addr} without authentication: \
             set --api-token (or DELTAFORGE_API_TOKEN), or pass --insecure-api if the network is trusted"
        );
    }
    let metrics_addr = control.metrics_addr.unwrap_or_else(|| DEFAULT_METRICS_ADDR.parse().expect("valid default"));
    let metrics_public = !metrics_addr.ip().is_loopback();
    if metrics_public && token.is_none() && !control.insecure_metrics {
        bail!(
            "refusing to serve metrics on non-loopback address {metrics_addr} without authentication: \
             set --api-token (or DELTAFORGE_API_TOKEN), which /metrics then requires as a bearer token, \
             keep --metrics-addr on 127.0.0.1, or pass --insecure-metrics if the network is trusted"
        );
    }
    // On loopback (or when the operator said the network is trusted)
    // /metrics stays open; elsewhere it needs the API token.
    let metrics_token: Option<Arc<str>> =
        if metrics_public && !control.insecure_metrics { token.clone().map(Into::into) } else { None };
    let guard = deltaforge_control::RequestGuard::new(&control.api_allowed_hosts, &control.api_allowed_origins)?;
    let api_env = deltaforge_config::EnvAccess::from_list(
        &control.api_env_allow,
        "start deltaforge with --api-env-allow NAME (or DELTAFORGE_API_ENV_ALLOW) to let specs sent through the API read it",
    );
    let api_listener = bind("REST API", control.api_addr, DEFAULT_API_ADDR).await?;
    let metrics_listener = bind("metrics endpoint", control.metrics_addr, DEFAULT_METRICS_ADDR).await?;
    let prometheus = match deltaforge_control::metrics::install() {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::error!("cannot install the Prometheus recorder: {e}");
            None
        }
    };

    let shutdown = CancellationToken::new();
    tokio::spawn(watch_signals(shutdown.clone()));
    let leases =
        (storage.kind() == "postgres").then(|| LeaseConfig::with_ttl(Duration::from_secs(control.lease_ttl_secs)));
    let instance_id = control.instance_id.clone().unwrap_or_else(default_instance_id);
    if leases.is_some() {
        tracing::info!(instance = %instance_id, ttl_secs = control.lease_ttl_secs, "shared storage: pipelines run under leases");
    }
    let manager = PipelineManager::new(
        Arc::new(Factory { grace }),
        ManagerConfig { storage, leases, instance_id, stop_wait: grace + Duration::from_secs(5), api_env },
    );
    let mut changes = manager.subscribe();
    for spec in specs {
        manager.add(spec);
    }

    let servers = CancellationToken::new();
    let mut server_tasks = Vec::new();
    if let Some(l) = api_listener {
        let state = ApiState {
            manager: manager.clone(),
            token: token.map(Into::into),
            command_wait: Duration::from_secs(5),
            guard: Arc::new(guard),
            #[cfg(feature = "console")]
            history: deltaforge_control::History::new(Duration::from_secs(control.history_resolution_secs)),
            verify: deltaforge_control::VerifyJobs::new(Arc::new(crate::verify_cmd::ApiRunner)),
        };
        server_tasks.push(tokio::spawn(deltaforge_control::api::serve(l, state, servers.clone())));
    }
    if let (Some(l), Some(h)) = (metrics_listener, prometheus) {
        server_tasks.push(tokio::spawn(deltaforge_control::metrics::serve(l, h, metrics_token, servers.clone())));
    }

    let failed = loop {
        if let Some(failed) = manager.all_ended() {
            break failed;
        }
        tokio::select! {
            _ = shutdown.cancelled() => break false,
            r = changes.changed() => if r.is_err() { break false },
        }
    };
    let failed = failed || manager.list().iter().any(|v| v.state == deltaforge_control::State::Failed);
    manager.shutdown().await;
    servers.cancel();
    for t in server_tasks {
        match t.await {
            Ok(Err(e)) => tracing::warn!("server ended with an error: {e}"),
            Err(e) => tracing::warn!("server task failed: {e}"),
            Ok(Ok(())) => {}
        }
    }
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

async fn watch_signals(shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("cannot listen for SIGTERM: {e}");
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received: stopping"),
            _ = term.recv() => tracing::info!("SIGTERM received: stopping"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    shutdown.cancel();
}

/// Builds the runtime parts of a pipeline from its spec.
pub fn build(
    spec: &PipelineSpec,
    storage: Arc<dyn StorageBackend>,
    grace: Duration,
) -> Result<Pipeline, PipelineError> {
    let registry = Registry;
    let source = registry.build_source(spec)?;
    let mut sinks = Vec::new();
    for s in &spec.sinks {
        let sink = registry
            .build_sink(spec, s, Some(&storage))
            .map_err(|error| PipelineError::Sink { sink: s.id.clone(), error })?;
        sinks.push(SinkSlot { id: s.id.clone(), required: s.required, delivery: s.delivery.clone(), sink });
    }
    let mut processors = Vec::new();
    for p in &spec.processors {
        processors.push(registry.build_processor(p).map_err(|m| PipelineError::Source(SourceError::Fatal(m)))?);
    }
    Ok(Pipeline {
        name: spec.name.as_str().into(),
        tenant: spec.tenant.as_str().into(),
        source_id: spec.source.id.clone(),
        source,
        processors,
        sinks,
        batch: spec.batch.clone(),
        policy: spec.commit_policy,
        storage,
        shutdown_grace: grace,
        status: None,
        dlq: spec.dlq.clone(),
    })
}
