//! The manager's shared types: the public ones of its API (states, views,
//! errors, settings, the factory trait) and the command and report types
//! its modules exchange.
//!
//! This module is the leaf of `manager`: it must never import from its
//! sibling modules, and it holds no behaviour beyond small pure helpers.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deltaforge_config::{Catalog, ConfigErrors, EnvAccess, PipelineSpec};
use deltaforge_core::{Checkpoint, Pipeline, PipelineError, Position, SinkError, Source, SourceError};
use deltaforge_storage::StorageBackend;
use serde::Serialize;
use serde_json::Value;

use crate::lease::LeaseConfig;

/// Builds the runtime parts of a pipeline; implemented by the binary over
/// its component registry.
pub trait PipelineFactory: Send + Sync + 'static {
    /// The catalog that validates component configs (offline).
    fn catalog(&self) -> &dyn Catalog;
    /// Builds one run of `spec` over `storage`. The manager sets
    /// [`Pipeline::status`] itself.
    fn build(&self, spec: &PipelineSpec, storage: Arc<dyn StorageBackend>) -> Result<Pipeline, PipelineError>;
    /// Builds the source of `spec` alone, for a checkpoint reset
    /// ([`Source::reset`]). The default builds none, and a reset then only
    /// deletes the checkpoint.
    fn build_source(&self, spec: &PipelineSpec) -> Result<Option<Box<dyn Source>>, SourceError> {
        let _ = spec;
        Ok(None)
    }
    /// Delivers `spec`'s dead letters again through its own sinks (and
    /// processors, for letters a processor failed on): the one letter
    /// `only`, or every letter oldest first; each is acknowledged only
    /// after its delivery succeeded, and the first failure stops the
    /// redrive. Returns how many were redriven. The default redrives none.
    fn redrive<'a>(
        &'a self,
        spec: &'a PipelineSpec,
        storage: Arc<dyn StorageBackend>,
        only: Option<u64>,
    ) -> RedriveFuture<'a> {
        let _ = (spec, storage, only);
        Box::pin(async { Err("this build cannot redrive dead letters".to_string()) })
    }
}

/// What [`PipelineFactory::redrive`] returns: the count, or why it stopped.
pub type RedriveFuture<'a> = Pin<Box<dyn Future<Output = Result<u64, String>> + Send + 'a>>;

/// A pipeline's state (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Running (or restarting after a retryable failure).
    Running,
    /// Paused by an operator.
    Paused,
    /// A stop is in progress.
    Stopping,
    /// Stopped by an operator.
    Stopped,
    /// Failed with a non-retryable error.
    Failed,
    /// The source is exhausted.
    Finished,
    /// Another instance holds the lease.
    Standby,
}

impl State {
    /// Every state, for the status gauge.
    pub const ALL: [State; 7] = [
        State::Running,
        State::Paused,
        State::Stopping,
        State::Stopped,
        State::Failed,
        State::Finished,
        State::Standby,
    ];

    /// The state's name as in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Running => "running",
            State::Paused => "paused",
            State::Stopping => "stopping",
            State::Stopped => "stopped",
            State::Failed => "failed",
            State::Finished => "finished",
            State::Standby => "standby",
        }
    }
}

/// What the operator asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Target {
    Run,
    Pause,
    Stop,
}

/// A command: the target, and a generation that every `start`/`resume`
/// bumps so that a finished or failed pipeline can be started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Control {
    pub(super) target: Target,
    pub(super) generation: u64,
}

/// The supervisor's report.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct StateInfo {
    pub(super) state: State,
    pub(super) last_error: Option<String>,
    pub(super) since: DateTime<Utc>,
    pub(super) restarts: u64,
}

/// Errors of manager commands; the API maps each to a status code.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    /// No pipeline of that name (404).
    #[error("no pipeline named {0:?}")]
    NotFound(String),
    /// The spec is invalid (400).
    #[error("invalid pipeline spec: {0}")]
    Invalid(ConfigErrors),
    /// A request that is malformed in another way (400).
    #[error("{0}")]
    BadRequest(String),
    /// The command cannot be carried out safely now (409).
    #[error("{0}")]
    Conflict(String),
    /// Storage failed (503).
    #[error("storage: {0}")]
    Storage(String),
    /// A pipeline exists but the thing asked for in it does not (404),
    /// e.g. a backfill id; the message says what and how to list them.
    #[error("{0}")]
    Missing(String),
    /// The stored checkpoint of a pipeline cannot be read (500): storage
    /// works, but the record is damaged or of an unknown format, and
    /// retrying will not help.
    #[error("the checkpoint of pipeline {pipeline:?} (source id {source_id:?}) is unreadable: {reason}")]
    CheckpointUnreadable {
        /// The pipeline whose source id the record belongs to.
        pipeline: String,
        /// The source id (the record's key).
        source_id: String,
        /// Why it cannot be read (the parse error).
        reason: String,
    },
}

/// Settings of a [`PipelineManager`](super::PipelineManager).
#[derive(Clone)]
pub struct ManagerConfig {
    /// Storage for checkpoints, schemas and leases.
    pub storage: Arc<dyn StorageBackend>,
    /// Leases (shared storage); `None` for single-instance backends.
    pub leases: Option<LeaseConfig>,
    /// This instance's id (lease holder name).
    pub instance_id: String,
    /// How long a reset waits for a running pipeline to stop before answering 409.
    pub stop_wait: Duration,
    /// Which environment variables a spec sent through the API may read
    /// (`--api-env-allow`); specs from the config files read every one.
    pub api_env: EnvAccess,
}

/// One pipeline as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineView {
    /// `metadata.name`.
    pub name: String,
    /// Tenant.
    pub tenant: String,
    /// Current state.
    pub state: State,
    /// Since when.
    pub state_since: DateTime<Utc>,
    /// Last error (failure, or the reason of the latest restart).
    pub last_error: Option<String>,
    /// Restarts after retryable failures.
    pub restarts: u64,
    /// Source type.
    pub source_type: String,
    /// Source id (checkpoint key).
    pub source_id: String,
    /// Events read by the current (or last) run.
    pub events_read: u64,
    /// Current checkpoint lag in seconds (0 while idle).
    pub lag_seconds: f64,
    /// Current checkpoint lag in source log bytes (WAL or binlog; 0 for
    /// sources without a server log), as last measured; `null` until measured.
    pub lag_bytes: Option<u64>,
    /// Per sink id: events delivered, failed attempts and batches dropped
    /// by the current (or last) run.
    pub sink_counts: std::collections::BTreeMap<String, deltaforge_core::SinkCounts>,
    /// The last durable checkpoint, if any.
    pub checkpoint: Option<Checkpoint>,
    /// Why the stored checkpoint cannot be read, and how to fix it, when
    /// it cannot (`checkpoint` is then `null`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint_error: Option<String>,
    /// Lease holder (shared storage only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease: Option<Value>,
    /// The spec with secrets redacted.
    pub spec: Value,
}

/// What to do about an unreadable checkpoint of pipeline `name` (source
/// `source_id`): shown by the API beside [`ManagerError::CheckpointUnreadable`].
pub fn unreadable_checkpoint_fix(name: &str, source_id: &str) -> String {
    format!(
        "reset it with DELETE /pipelines/{name}/checkpoint (or `deltaforge pipelines reset {name} --yes`; offline: \
         `deltaforge checkpoints reset {source_id}`), after which the pipeline re-reads its source from the \
         beginning, or stop deltaforge and restore a storage backup taken before the damage (`deltaforge restore`)"
    )
}

/// Sets the status gauge of `pipeline`: 1 for `state`, 0 for every other state.
pub(super) fn set_status_gauge(pipeline: &str, state: Option<State>) {
    for s in State::ALL {
        let v = if Some(s) == state { 1.0 } else { 0.0 };
        metrics::gauge!("deltaforge_pipeline_status", "pipeline" => pipeline.to_string(), "state" => s.as_str()).set(v);
    }
}

/// What a checkpoint reset did.
#[derive(Debug, Clone)]
pub struct Reset {
    /// Whether a checkpoint existed (and was deleted).
    pub existed: bool,
    /// The position the next start reads from, stored as the new
    /// checkpoint (MySQL: the oldest binlog's start); `None` when no
    /// checkpoint is left and the source's no-checkpoint rule applies.
    pub start: Option<Position>,
    /// The pipeline after the reset (stopped).
    pub pipeline: PipelineView,
}

/// Whether a run that ended with `e` is restarted from its checkpoint.
pub(super) fn is_retryable(e: &PipelineError) -> bool {
    e.is_retryable() || matches!(e, PipelineError::Sink { error: SinkError::Retryable(_), .. })
}
