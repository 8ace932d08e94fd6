//! [`Pipeline`]: everything one run of a pipeline needs, and
//! [`Pipeline::run`], which loads the checkpoint, starts the source, the
//! sinks, the processor stage and the checkpoint writer, and hands them to
//! the run loop.
//!
//! This module owns the order in which a run's parts start. It must never
//! move events or positions itself: that is the run loop's job.

use std::sync::Arc;
use std::time::Duration;

use deltaforge_storage::StorageBackend;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::batch::BatchConfig;
use crate::checkpoint::{Checkpoint, CheckpointError, CheckpointStore};
use crate::coordinator::checkpoint_writer::CheckpointWriter;
use crate::coordinator::outcome::{PipelineError, PipelineStatus, RunSummary};
use crate::coordinator::processor_stage::ProcessorStage;
use crate::coordinator::run_loop::{RunLoop, RunParts};
use crate::coordinator::settings::SinkSlot;
use crate::coordinator::sink_worker::SinkFleet;
use crate::coordinator::source_run::{SourceRun, SourceStart};
use crate::dlq::{DeadLetterQueue, DlqConfig};
use crate::policy::CommitPolicy;
use crate::processor::Processor;
use crate::schema::SchemaRegistry;
use crate::source::Source;

/// Everything needed to run one pipeline once.
pub struct Pipeline {
    /// Pipeline name.
    pub name: Arc<str>,
    /// Tenant.
    pub tenant: Arc<str>,
    /// The source's `id`: the checkpoint key.
    pub source_id: String,
    /// The source.
    pub source: Box<dyn Source>,
    /// Processors, in order.
    pub processors: Vec<Box<dyn Processor>>,
    /// Sinks.
    pub sinks: Vec<SinkSlot>,
    /// Batch limits.
    pub batch: BatchConfig,
    /// Commit policy.
    pub policy: CommitPolicy,
    /// Storage for checkpoints and schema history.
    pub storage: Arc<dyn StorageBackend>,
    /// How long to keep delivering after shutdown was requested before
    /// abandoning in-flight batches.
    pub shutdown_grace: Duration,
    /// Receives live status; optional.
    pub status: Option<watch::Sender<PipelineStatus>>,
    /// Dead-letter queue settings; `None`: an event rejected for its own
    /// fault stops the pipeline.
    pub dlq: Option<DlqConfig>,
}

impl Pipeline {
    /// Runs until the source is exhausted, `shutdown` fires, or a fatal error.
    pub async fn run(self, shutdown: CancellationToken) -> Result<RunSummary, PipelineError> {
        let Pipeline {
            name,
            tenant,
            source_id,
            source,
            processors,
            sinks,
            batch,
            policy,
            storage,
            shutdown_grace,
            status,
            dlq,
        } = self;
        let label = name.to_string();
        let store = CheckpointStore::new(storage.clone());
        let (resume, schemas) = load_resume(&store, &storage, &name, &tenant, &source_id).await?;
        let mut sinks = sinks;
        for slot in &mut sinks {
            slot.sink.attach_schemas(schemas.clone());
        }
        let start = SourceStart {
            pipeline: name.clone(),
            tenant,
            resume_from: resume.as_ref().map(|c| c.position.clone()),
            schemas,
            storage: storage.clone(),
            status: status.clone(),
        };
        let (source, durable) = SourceRun::start(source, start, &shutdown);
        let dlq_queue = dlq.map(|c| DeadLetterQueue::new(storage.clone(), &name, c));
        let sink_resume = resume.as_ref().map(|c| &c.sinks);
        let sinks = SinkFleet::start(
            sinks,
            &policy,
            batch.max_inflight,
            sink_resume,
            dlq_queue.clone(),
            &label,
            status.clone(),
        );
        let writer = CheckpointWriter::spawn(store, source_id, durable, status.clone(), label);
        // The processors' pushes to a full `block` queue end with the sinks' abort too.
        let stage_dlq = dlq_queue.map(|q| q.stopping_on(sinks.abort.clone()));
        let stage = (!processors.is_empty()).then(|| ProcessorStage::spawn(processors, stage_dlq));
        let parts = RunParts {
            name,
            batch,
            policy,
            status,
            shutdown,
            shutdown_grace,
            source,
            sinks,
            stage,
            writer,
            resume: resume.map(|c| (c.position, c.sinks)),
        };
        RunLoop::new(parts).run().await
    }
}

/// The checkpoint to resume after and the tenant's schema history.
async fn load_resume(
    store: &CheckpointStore,
    storage: &Arc<dyn StorageBackend>,
    name: &str,
    tenant: &str,
    source_id: &str,
) -> Result<(Option<Checkpoint>, SchemaRegistry), PipelineError> {
    let resume = store.load(source_id).await?;
    let schemas = SchemaRegistry::load(storage.clone(), tenant)
        .await
        .map_err(|e| PipelineError::Checkpoint(CheckpointError::Storage(e)))?;
    match &resume {
        Some(cp) => {
            tracing::info!(pipeline = %name, source = %source_id, position = %cp.position, "resuming after checkpoint")
        }
        None => tracing::info!(pipeline = %name, source = %source_id, "no checkpoint: reading from the beginning"),
    }
    Ok((resume, schemas))
}
