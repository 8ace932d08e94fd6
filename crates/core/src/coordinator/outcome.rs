//! What a pipeline run reports: live [`PipelineStatus`] for the control
//! plane, the [`RunSummary`] of a run that ended well and the
//! [`PipelineError`] of one that did not.
//!
//! Plain data and error types shared by the coordinator's tasks; this
//! module must never import another coordinator module.

use std::collections::BTreeMap;

use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::dlq::DlqError;
use crate::position::Position;
use crate::processor::ProcessorError;
use crate::sink::SinkError;
use crate::source_error::SourceError;

/// Live state of a running pipeline, for the control plane.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PipelineStatus {
    /// Events received from the source.
    pub events_read: u64,
    /// Last durable checkpoint.
    pub checkpoint: Option<Checkpoint>,
    /// Last sink or storage error, if the pipeline is degraded.
    pub last_error: Option<String>,
    /// The value last set on `deltaforge_checkpoint_lag_seconds` (updated every second).
    pub lag_seconds: f64,
    /// The value last set on `deltaforge_checkpoint_lag_bytes` (polled every
    /// `LAG_PROBE_EVERY`); `None` until the source's probe first answered.
    pub lag_bytes: Option<u64>,
    /// Per sink id: what its worker did in this run (the same increments as
    /// the `deltaforge_sink_*_total` metrics, which count since the process
    /// started).
    pub sinks: BTreeMap<String, SinkCounts>,
}

/// One sink's delivery counts in a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SinkCounts {
    /// Events acknowledged by the sink (`deltaforge_sink_events_delivered_total`).
    pub delivered: u64,
    /// Failed delivery or flush attempts, each retried or dead-lettered
    /// (`deltaforge_sink_errors_total`).
    pub errors: u64,
    /// Batches given up by a sink the commit policy does not need
    /// (`deltaforge_sink_batches_dropped_total`).
    pub dropped: u64,
}

/// What a finished run did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunSummary {
    /// Events received from the source.
    pub events_read: u64,
    /// Batches whose delivery satisfied the policy.
    pub batches_committed: u64,
    /// The last durable checkpoint position.
    pub checkpoint: Option<Position>,
}

/// Why a run ended in failure. The checkpoint of everything acknowledged
/// before the failure has been written when this is returned.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The source failed.
    #[error("source: {0}")]
    Source(#[from] SourceError),
    /// A sink failed in a way retries cannot fix.
    #[error("sink {sink}: {error}")]
    Sink {
        /// Sink id.
        sink: String,
        /// The error.
        error: SinkError,
    },
    /// A processor failed.
    #[error(transparent)]
    Processor(#[from] ProcessorError),
    /// The dead-letter queue refused an event.
    #[error(transparent)]
    DeadLetter(#[from] DlqError),
    /// Checkpoints could not be read or written.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The checkpoint writer gave up on a write after its retries; the run
    /// stopped so that nothing is delivered without being checkpointed.
    /// Retryable: the next run resumes from the last stored checkpoint.
    #[error(
        "checkpoint writer stopped after repeated storage failures (restarting from the last stored checkpoint): {0}"
    )]
    CheckpointWriter(CheckpointError),
    /// The source task panicked or was cancelled abnormally.
    #[error("internal: {0}")]
    Internal(String),
}

impl PipelineError {
    /// Whether restarting the pipeline may help.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            PipelineError::Source(SourceError::Retryable(_))
                | PipelineError::CheckpointWriter(CheckpointError::Storage(_))
        )
    }
}
