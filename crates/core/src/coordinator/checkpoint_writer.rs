//! The checkpoint writer: stores the latest committed checkpoint (coalescing
//! the ones offered while a write is under way), retrying a failed write,
//! and only then publishes its position on the source's `durable` watch.
//!
//! When a write still fails after its retries, the writer task ends with
//! that error and [`CheckpointWriter::died`] resolves at once: the run
//! loop then stops the run with a retryable error (the supervisor restarts
//! it from the last stored checkpoint), rather than delivering on while
//! nothing is checkpointed.
//!
//! This module owns the second half of the delivery invariant: a position
//! must never reach `durable` (and so the source's server) before its
//! checkpoint write returned.

use std::time::Duration;

use metrics::counter;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::checkpoint::{Checkpoint, CheckpointError, CheckpointStore};
use crate::coordinator::outcome::{PipelineError, PipelineStatus};
use crate::position::Position;

/// Attempts of one checkpoint write before the writer gives up.
const WRITE_ATTEMPTS: u32 = 8;

/// How the writer task ended: the last position it wrote, and the error
/// that ended it early (`None`: its feed closed).
struct WriterEnd {
    last: Option<Position>,
    error: Option<CheckpointError>,
}

/// The writer task of one run and the watch that feeds it.
pub(crate) struct CheckpointWriter {
    offered: watch::Sender<Option<Checkpoint>>,
    task: JoinHandle<WriterEnd>,
    /// Set once [`Self::died`] saw the task end (its last position).
    ended: Option<Option<Position>>,
}

impl CheckpointWriter {
    /// Starts the writer of `source_id`'s checkpoints; `durable` learns each
    /// written position.
    pub(crate) fn spawn(
        store: CheckpointStore,
        source_id: String,
        durable: watch::Sender<Option<Position>>,
        status: Option<watch::Sender<PipelineStatus>>,
        pipeline: String,
    ) -> Self {
        let (offered, rx) = watch::channel::<Option<Checkpoint>>(None);
        let task = tokio::spawn(checkpoint_writer(store, source_id, rx, durable, status, pipeline));
        CheckpointWriter { offered, task, ended: None }
    }

    /// Whether the writer task already ended (see [`Self::died`]).
    pub(crate) fn is_dead(&self) -> bool {
        self.ended.is_some()
    }

    /// Resolves when the writer task ends before [`Self::finish`] (its
    /// retries ran out), with the reason. Must not be polled again once it
    /// resolved (guard with [`Self::is_dead`]).
    pub(crate) async fn died(&mut self) -> PipelineError {
        match (&mut self.task).await {
            Ok(WriterEnd { last, error }) => {
                self.ended = Some(last);
                match error {
                    Some(e) => PipelineError::CheckpointWriter(e),
                    None => PipelineError::Internal("the checkpoint writer ended before the run".into()),
                }
            }
            Err(e) => {
                self.ended = Some(None);
                PipelineError::Internal(format!("checkpoint writer: {e}"))
            }
        }
    }

    /// Offers the newest committed checkpoint; an older one not yet written
    /// is replaced.
    pub(crate) fn offer(&self, checkpoint: Checkpoint) {
        self.offered.send_replace(Some(checkpoint));
    }

    /// Writes what was offered last, then returns the last position written.
    /// After [`Self::died`], returns the last position written (the
    /// failure was reported then).
    pub(crate) async fn finish(self) -> Result<Option<Position>, PipelineError> {
        drop(self.offered);
        if let Some(last) = self.ended {
            return Ok(last);
        }
        match self.task.await {
            Ok(WriterEnd { last, error: None }) => Ok(last),
            Ok(WriterEnd { error: Some(e), .. }) => Err(PipelineError::CheckpointWriter(e)),
            Err(e) => Err(PipelineError::Internal(format!("checkpoint writer: {e}"))),
        }
    }
}

/// Writes each checkpoint offered on `rx` (skipping repeats of the last
/// position) until `rx` closes, then returns the last position written.
async fn checkpoint_writer(
    store: CheckpointStore,
    source_id: String,
    mut rx: watch::Receiver<Option<Checkpoint>>,
    durable: watch::Sender<Option<Position>>,
    status: Option<watch::Sender<PipelineStatus>>,
    pipeline: String,
) -> WriterEnd {
    let written = counter!("deltaforge_checkpoints_written_total", "pipeline" => pipeline.clone());
    // Every failed storage write, retried or not: an alert on its rate sees
    // a sick storage before the retries run out and the pipeline stops.
    let storage_errors =
        counter!("deltaforge_storage_errors_total", "pipeline" => pipeline.clone(), "operation" => "checkpoint_write");
    let mut last: Option<Position> = None;
    loop {
        let closed = rx.changed().await.is_err();
        let next = rx.borrow_and_update().clone();
        if let Some(cp) = next {
            if last.as_ref() != Some(&cp.position) {
                let mut attempt = 0u32;
                loop {
                    attempt += 1;
                    let result = store.save(&source_id, &cp).await;
                    if result.is_err() {
                        storage_errors.increment(1);
                    }
                    match result {
                        Ok(()) => break,
                        Err(e) if attempt < WRITE_ATTEMPTS => {
                            tracing::warn!(source = %source_id, attempt, "checkpoint write failed, retrying: {e}");
                            tokio::time::sleep(Duration::from_millis(50 << attempt.min(6))).await;
                        }
                        Err(e) => {
                            tracing::error!(pipeline = %pipeline, source = %source_id, attempts = attempt,
                                "checkpoint write failed {attempt} times; stopping the pipeline (it restarts from its \
                                 last stored checkpoint): {e}");
                            counter!("deltaforge_checkpoint_writer_failures_total", "pipeline" => pipeline.clone())
                                .increment(1);
                            return WriterEnd { last, error: Some(e) };
                        }
                    }
                }
                written.increment(1);
                last = Some(cp.position.clone());
                // Only now may the source report this position to its server.
                durable.send_replace(Some(cp.position.clone()));
                if let Some(s) = &status {
                    s.send_modify(|st| st.checkpoint = Some(cp.clone()));
                }
            }
        }
        if closed {
            return WriterEnd { last, error: None };
        }
    }
}
