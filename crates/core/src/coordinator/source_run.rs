//! The source side of a run: the source's task, the bounded channel it
//! fills, the token that stops it, and its lag probe beside it.
//!
//! This module owns starting and stopping the source. It must never hand
//! the source a position that is not durable: the only positions it gives
//! are the resume checkpoint and the `durable` watch the checkpoint writer
//! feeds.

use std::sync::Arc;

use deltaforge_storage::StorageBackend;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinError, JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::coordinator::lag::start_lag_probe;
use crate::coordinator::outcome::PipelineStatus;
use crate::position::Position;
use crate::schema::SchemaRegistry;
use crate::snapshot::store::SnapshotStore;
use crate::source::{ChunkSender, Source, SourceChunk, SourceContext};
use crate::source_error::SourceError;

/// Events per chunk a source sends over the channel.
const CHUNK_EVENTS: usize = 1024;
/// Chunks the source may run ahead of the batcher.
const CHANNEL_CHUNKS: usize = 16;

/// Who the source runs for and where it resumes.
pub(crate) struct SourceStart {
    /// Pipeline name.
    pub(crate) pipeline: Arc<str>,
    /// Tenant of the pipeline.
    pub(crate) tenant: Arc<str>,
    /// The durable checkpoint position to resume after.
    pub(crate) resume_from: Option<Position>,
    /// Schema history of the tenant.
    pub(crate) schemas: SchemaRegistry,
    /// Storage for snapshot progress.
    pub(crate) storage: Arc<dyn StorageBackend>,
    /// Live status, updated by the lag probe.
    pub(crate) status: Option<watch::Sender<PipelineStatus>>,
}

/// A running source and its lag probe.
pub(crate) struct SourceRun {
    /// The source's chunks, in order.
    pub(crate) chunks: mpsc::Receiver<SourceChunk>,
    /// Stops the source (a child of the pipeline's shutdown).
    pub(crate) stop: CancellationToken,
    task: Option<JoinHandle<Result<(), SourceError>>>,
    lag_probe_stop: CancellationToken,
    lag_probe: Option<JoinHandle<()>>,
}

impl SourceRun {
    /// Spawns `source` and its lag probe. Returns the sender the checkpoint
    /// writer must publish durable positions on: the source watches it.
    pub(crate) fn start(
        source: Box<dyn Source>,
        start: SourceStart,
        shutdown: &CancellationToken,
    ) -> (Self, watch::Sender<Option<Position>>) {
        let (chunk_tx, chunks) = mpsc::channel::<SourceChunk>(CHANNEL_CHUNKS);
        let (durable_tx, durable_rx) = watch::channel(start.resume_from.clone());
        let stop = shutdown.child_token();
        // The lag probe runs beside the data path, on its own connection.
        let lag_probe_stop = CancellationToken::new();
        let lag_probe = start_lag_probe(
            source.lag_probe(&start.pipeline),
            durable_rx.clone(),
            start.status,
            &start.pipeline,
            lag_probe_stop.clone(),
        );
        let ctx = SourceContext {
            pipeline: start.pipeline.clone(),
            tenant: start.tenant,
            resume_from: start.resume_from,
            sender: ChunkSender::new(chunk_tx, CHUNK_EVENTS),
            durable: durable_rx,
            shutdown: stop.clone(),
            schemas: start.schemas,
            snapshots: SnapshotStore::new(start.storage, start.pipeline),
        };
        let task = Some(tokio::spawn(source.run(ctx)));
        (SourceRun { chunks, stop, task, lag_probe_stop, lag_probe }, durable_tx)
    }

    /// Waits for the source's task once its channel closed; `None` if it
    /// was already joined.
    pub(crate) async fn join(&mut self) -> Option<Result<Result<(), SourceError>, JoinError>> {
        match self.task.take() {
            Some(task) => Some(task.await),
            None => None,
        }
    }

    /// Stops the source and its probe and waits for both; returns the
    /// source's error if it had not been joined yet and failed.
    pub(crate) async fn stop(mut self) -> Option<SourceError> {
        self.stop.cancel();
        self.lag_probe_stop.cancel();
        if let Some(t) = self.lag_probe.take() {
            let _ = t.await;
        }
        // Closed before the join, so that a source blocked on a full channel wakes up.
        drop(self.chunks);
        match self.task.take() {
            Some(task) => task.await.ok().and_then(Result::err),
            None => None,
        }
    }
}
