//! Runs pipelines: builds each from its spec, supervises it (restarting
//! after retryable failures with backoff), and stops everything cleanly on
//! SIGINT/SIGTERM.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use deltaforge_config::PipelineSpec;
use deltaforge_core::{Pipeline, PipelineError, SinkSlot, SourceError};
use deltaforge_storage::StorageBackend;
use tokio_util::sync::CancellationToken;

use crate::registry::Registry;

/// Runs every pipeline until all have finished or a signal arrives.
/// Exit code 0 when every pipeline ended cleanly (or was stopped by a
/// signal), 1 when any failed.
pub async fn run(
    specs: Vec<PipelineSpec>,
    storage: Arc<dyn StorageBackend>,
    grace: Duration,
) -> anyhow::Result<ExitCode> {
    let shutdown = CancellationToken::new();
    tokio::spawn(watch_signals(shutdown.clone()));
    let mut tasks = Vec::new();
    for spec in specs {
        let storage = storage.clone();
        let shutdown = shutdown.clone();
        tasks.push(tokio::spawn(async move { supervise(spec, storage, shutdown, grace).await }));
    }
    let mut failed = false;
    for t in tasks {
        match t.await {
            Ok(true) => {}
            Ok(false) => failed = true,
            Err(e) => {
                tracing::error!("pipeline task panicked: {e}");
                failed = true;
            }
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
        let sink =
            registry.build_sink(&spec.name, s).map_err(|error| PipelineError::Sink { sink: s.id.clone(), error })?;
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

/// Runs one pipeline, restarting it after retryable failures. Returns
/// whether it ended without a fatal error.
async fn supervise(
    spec: PipelineSpec,
    storage: Arc<dyn StorageBackend>,
    shutdown: CancellationToken,
    grace: Duration,
) -> bool {
    let mut backoff = Duration::from_secs(1);
    loop {
        let result = match build(&spec, storage.clone(), grace) {
            Ok(p) => p.run(shutdown.clone()).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(summary) => {
                tracing::info!(
                    pipeline = %spec.name,
                    events = summary.events_read,
                    checkpoint = ?summary.checkpoint.map(|p| p.to_json()),
                    "pipeline finished"
                );
                return true;
            }
            Err(e) if shutdown.is_cancelled() => {
                tracing::warn!(pipeline = %spec.name, "pipeline stopped during shutdown: {e}");
                return true;
            }
            Err(e)
                if e.is_retryable()
                    || matches!(&e, PipelineError::Sink { error: deltaforge_core::SinkError::Retryable(_), .. }) =>
            {
                tracing::warn!(pipeline = %spec.name, retry_in = ?backoff, "pipeline failed, restarting from its checkpoint: {e}");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.cancelled() => return true,
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            Err(e) => {
                tracing::error!(pipeline = %spec.name, "pipeline failed: {e}");
                return false;
            }
        }
    }
}
