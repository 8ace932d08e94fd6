//! The processor stage: runs the pipeline's processors on their own task so
//! that their work overlaps reading and delivery, in batch order, with
//! events a processor fails on for their own fault set aside in the
//! dead-letter queue.
//!
//! This module must never reorder batches or drop an event silently: the
//! first error that is not an event's own fault ends the stage and is its
//! last message.

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::batch::Batch;
use crate::coordinator::outcome::PipelineError;
use crate::dlq::DeadLetterQueue;
use crate::event::Event;
use crate::position::Position;
use crate::processor::Processor;

/// Batches the processor stage may hold (queued or being processed): one
/// being processed while the next waits keeps the stage busy without
/// letting it run far ahead of the sinks.
pub(crate) const PROCESSOR_STAGE_DEPTH: usize = 2;

/// A batch after the processors, ready for the sinks.
pub(crate) struct Processed {
    pub(crate) events: Vec<Event>,
    pub(crate) commit: Option<Position>,
    /// Leading events that precede `commit`.
    pub(crate) commit_index: usize,
    /// Source timestamp of the batch's last event (for the lag in seconds).
    pub(crate) last_ts_ms: Option<i64>,
}

impl Processed {
    /// A batch no processor touched.
    pub(crate) fn unchanged(b: Batch) -> Self {
        let last_ts_ms = b.events.last().map(|e| e.source.ts_ms);
        Processed { events: b.events, commit: b.commit, commit_index: b.commit_index, last_ts_ms }
    }
}

/// The processors on their own task. One task and FIFO channels keep the
/// batches in source order; the first error ends the stage and is its last
/// message.
pub(crate) struct ProcessorStage {
    /// Batches in, in source order.
    pub(crate) tx: mpsc::Sender<Batch>,
    rx: mpsc::Receiver<Result<Processed, PipelineError>>,
    task: JoinHandle<()>,
}

impl ProcessorStage {
    pub(crate) fn spawn(mut processors: Vec<Box<dyn Processor>>, dlq: Option<DeadLetterQueue>) -> Self {
        let (tx, mut batches) = mpsc::channel::<Batch>(PROCESSOR_STAGE_DEPTH);
        let (out, rx) = mpsc::channel(PROCESSOR_STAGE_DEPTH);
        let task = tokio::spawn(async move {
            while let Some(b) = batches.recv().await {
                let Batch { events, commit, commit_index, .. } = b;
                let original_len = events.len();
                let last_ts_ms = events.last().map(|e| e.source.ts_ms);
                let result = run_processors(&mut processors, events, dlq.as_ref()).await.map(|events| {
                    // Processors may change the events; the per-sink skip then
                    // only applies to batches that end at a transaction end.
                    let commit_index = if commit_index == original_len { events.len() } else { 0 };
                    Processed { events, commit, commit_index, last_ts_ms }
                });
                let failed = result.is_err();
                if out.send(result).await.is_err() || failed {
                    return;
                }
            }
        });
        ProcessorStage { tx, rx, task }
    }
}

impl Drop for ProcessorStage {
    fn drop(&mut self) {
        // A stage abandoned mid-batch (shutdown grace, failure) must not keep
        // running processors for a pipeline that has stopped.
        self.task.abort();
    }
}

/// The next message of the processor stage (never, without one).
pub(crate) async fn recv_stage(stage: &mut Option<ProcessorStage>) -> Option<Result<Processed, PipelineError>> {
    match stage {
        Some(s) => s.rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Runs the processors in order. An event a processor fails on for its own
/// fault goes to the dead-letter queue and the processor runs again without
/// it; any other failure stops the pipeline.
async fn run_processors(
    processors: &mut [Box<dyn Processor>],
    mut events: Vec<Event>,
    dlq: Option<&DeadLetterQueue>,
) -> Result<Vec<Event>, PipelineError> {
    for p in processors.iter_mut() {
        let Some(queue) = dlq else {
            events = p.process(events).await?;
            continue;
        };
        // Keep the input to retry without a poison event.
        let mut input = events;
        loop {
            match p.process(input.clone()).await {
                Ok(out) => {
                    events = out;
                    break;
                }
                Err(e) => match e.event_index.filter(|i| *i < input.len()) {
                    Some(i) => {
                        let poison = input.remove(i);
                        queue.push(&poison, &e.message, None, Some(&e.processor)).await?;
                    }
                    None => return Err(e.into()),
                },
            }
        }
    }
    Ok(events)
}
