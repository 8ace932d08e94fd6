//! The coordinator: runs one pipeline from its source through batching,
//! processors and sinks to the checkpoint, and owns the delivery invariant.
//!
//! ```text
//! source task ──bounded channel──▶ batcher ──▶ processor task ──▶ sink tasks (concurrent)
//!                                                               │ acks
//!                                       commit policy ◀─────────┘
//!                                             │ satisfied, in batch order
//!                                   checkpoint writer (coalescing)
//!                                             │ durable
//!                                   SourceContext::durable (source may report it)
//! ```
//!
//! **Invariant.** A checkpoint position is handed to the writer only when
//! the batch that carries it, and every batch before it, satisfied the
//! commit policy; the source learns of a position only after the writer's
//! storage call returned. Sinks that the policy needs retry until they
//! succeed (or the pipeline stops); other sinks give a batch up only after
//! it was committed without them and their retries ran out.
//!
//! The coordinator never decides a position is safe by itself: it only
//! forwards the positions sources attached to transaction ends.
//!
//! Beside the data path, a task polls the source's [`LagProbe`] (if any)
//! with the durable checkpoint for `deltaforge_checkpoint_lag_bytes`; it
//! shares nothing with the data path but the `durable` watch it reads.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use deltaforge_storage::StorageBackend;
use metrics::{counter, gauge, histogram};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::batch::{Batch, BatchConfig, Batcher};
use crate::checkpoint::{Checkpoint, CheckpointError, CheckpointStore};
use crate::dlq::{DeadLetterQueue, DlqConfig, DlqError};
use crate::event::Event;
use crate::policy::CommitPolicy;
use crate::position::Position;
use crate::processor::{Processor, ProcessorError};
use crate::schema::SchemaRegistry;
use crate::sink::{RejectedEvent, Sink, SinkError};
use crate::source::{ChunkSender, LagProbe, Source, SourceChunk, SourceContext, SourceError};

/// Events per chunk a source sends over the channel.
const CHUNK_EVENTS: usize = 1024;
/// Chunks the source may run ahead of the batcher.
const CHANNEL_CHUNKS: usize = 16;
/// How often the source's [`LagProbe`] is asked for the lag in bytes.
pub const LAG_PROBE_EVERY: Duration = Duration::from_secs(2);
/// How long one probe may take before it counts as failed.
const LAG_PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Retry and timeout settings of one sink.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryConfig {
    /// Time limit of one delivery attempt.
    pub timeout: Duration,
    /// First backoff after a failure; doubles up to `max_backoff`.
    pub initial_backoff: Duration,
    /// Longest backoff.
    pub max_backoff: Duration,
    /// Attempts after which a sink the policy does not need gives a batch up
    /// (only once the batch was committed without it).
    pub max_attempts: u32,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            timeout: Duration::from_secs(30),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            max_attempts: 5,
        }
    }
}

/// A sink with its pipeline-level settings.
pub struct SinkSlot {
    /// The sink's configured id.
    pub id: String,
    /// Whether `required` policy waits for it.
    pub required: bool,
    /// Retries and timeout.
    pub delivery: DeliveryConfig,
    /// The sink.
    pub sink: Box<dyn Sink>,
}

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
    /// [`LAG_PROBE_EVERY`]); `None` until the source's probe first answered.
    pub lag_bytes: Option<u64>,
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
    /// The source task panicked or was cancelled abnormally.
    #[error("internal: {0}")]
    Internal(String),
}

impl PipelineError {
    /// Whether restarting the pipeline may help.
    pub fn is_retryable(&self) -> bool {
        matches!(self, PipelineError::Source(SourceError::Retryable(_)))
    }
}

/// A batch handed to the sinks.
struct Delivery {
    seq: u64,
    events: Vec<Event>,
    commit: Option<Position>,
    /// Events before the batch's last transaction end.
    commit_index: usize,
}

enum SinkOutcome {
    Acked,
    GaveUp,
    Fatal(SinkError),
}

struct SinkReport {
    seq: u64,
    sink: usize,
    outcome: SinkOutcome,
}

struct InFlight {
    seq: u64,
    commit: Option<Position>,
    last_ts_ms: Option<i64>,
    acked: Vec<bool>,
    done: Vec<bool>,
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
        let pipeline_label = name.to_string();
        let store = CheckpointStore::new(storage.clone());
        let resume = store.load(&source_id).await?;
        let schemas = SchemaRegistry::load(storage.clone(), &tenant)
            .await
            .map_err(|e| PipelineError::Checkpoint(CheckpointError::Storage(e)))?;
        match &resume {
            Some(cp) => {
                tracing::info!(pipeline = %name, source = %source_id, position = %cp.position, "resuming after checkpoint")
            }
            None => tracing::info!(pipeline = %name, source = %source_id, "no checkpoint: reading from the beginning"),
        }

        // Source.
        let (chunk_tx, mut chunk_rx) = mpsc::channel::<SourceChunk>(CHANNEL_CHUNKS);
        let (durable_tx, durable_rx) = watch::channel(resume.as_ref().map(|c| c.position.clone()));
        let source_stop = shutdown.child_token();
        // The lag probe runs beside the data path, on its own connection.
        let lag_probe_stop = CancellationToken::new();
        let lag_probe_task = match source.lag_probe(&name) {
            Some(probe) => Some(tokio::spawn(poll_lag_bytes(
                probe,
                durable_rx.clone(),
                status.clone(),
                pipeline_label.clone(),
                lag_probe_stop.clone(),
            ))),
            None => {
                // No server log: nothing to be behind on.
                gauge!("deltaforge_checkpoint_lag_bytes", "pipeline" => pipeline_label.clone()).set(0.0);
                None
            }
        };
        let ctx = SourceContext {
            pipeline: name.clone(),
            tenant: tenant.clone(),
            resume_from: resume.as_ref().map(|c| c.position.clone()),
            sender: ChunkSender::new(chunk_tx, CHUNK_EVENTS),
            durable: durable_rx,
            shutdown: source_stop.clone(),
            schemas,
            snapshots: crate::snapshot::SnapshotStore::new(storage.clone(), name.clone()),
        };
        let mut source_task: Option<JoinHandle<Result<(), SourceError>>> = Some(tokio::spawn(source.run(ctx)));

        let dlq_queue = dlq.map(|c| DeadLetterQueue::new(storage.clone(), &name, c));

        // Sinks.
        let committed_seq = Arc::new(AtomicU64::new(0));
        let abort = CancellationToken::new();
        let required: Vec<bool> = sinks.iter().map(|s| s.required).collect();
        let sink_ids: Vec<String> = sinks.iter().map(|s| s.id.clone()).collect();
        let (report_tx, mut report_rx) = mpsc::unbounded_channel::<SinkReport>();
        let mut sink_queues = Vec::new();
        let mut sink_tasks = Vec::new();
        for (i, slot) in sinks.into_iter().enumerate() {
            let (tx, rx) = mpsc::channel::<Arc<Delivery>>(batch.max_inflight.max(1));
            sink_queues.push(tx);
            let resume_at = resume.as_ref().and_then(|c| c.sinks.get(&slot.id).cloned());
            let worker = SinkWorker {
                index: i,
                needed: policy.needs_sink(slot.required),
                slot,
                resume_at,
                committed_seq: committed_seq.clone(),
                abort: abort.clone(),
                dlq: dlq_queue.clone(),
                reports: report_tx.clone(),
                pipeline: pipeline_label.clone(),
            };
            sink_tasks.push(tokio::spawn(worker.run(rx)));
        }
        drop(report_tx);

        // Checkpoint writer.
        let (cp_tx, cp_rx) = watch::channel::<Option<Checkpoint>>(None);
        let writer = tokio::spawn(checkpoint_writer(
            store.clone(),
            source_id.clone(),
            cp_rx,
            durable_tx,
            status.clone(),
            pipeline_label.clone(),
        ));

        let mut sink_positions: BTreeMap<String, Position> =
            resume.as_ref().map(|c| c.sinks.clone()).unwrap_or_default();
        let mut last_committed = resume.as_ref().map(|c| c.position.clone());
        let mut batcher = Batcher::new(batch.clone());
        let mut pending: VecDeque<Batch> = VecDeque::new();
        let mut ready: VecDeque<Processed> = VecDeque::new();
        let mut stage = (!processors.is_empty()).then(|| ProcessorStage::spawn(processors, dlq_queue.clone()));
        let mut in_stage = 0usize;
        let mut inflight: VecDeque<InFlight> = VecDeque::new();
        let mut deadline: Option<tokio::time::Instant> = None;
        let mut next_seq = 1u64;
        let mut summary = RunSummary { checkpoint: last_committed.clone(), ..RunSummary::default() };
        let mut failure: Option<PipelineError> = None;
        let mut source_failure: Option<SourceError> = None;
        let mut last_committed_ts: Option<i64> = None;
        let lag_seconds = gauge!("deltaforge_checkpoint_lag_seconds", "pipeline" => pipeline_label.clone());
        let mut lag_tick = tokio::time::interval(Duration::from_secs(1));
        lag_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut source_done = false;
        let mut grace_deadline: Option<tokio::time::Instant> = None;
        let events_read = counter!("deltaforge_events_read_total", "pipeline" => pipeline_label.clone());
        let batch_events = histogram!("deltaforge_batch_events", "pipeline" => pipeline_label.clone());

        loop {
            // Hand closed batches to the processors: on their own task when
            // there are any, so their work overlaps reading and delivery.
            while let Some(b) = pending.pop_front() {
                match &stage {
                    None => ready.push_back(Processed::unchanged(b)),
                    Some(st) if in_stage < PROCESSOR_STAGE_DEPTH => match st.tx.try_send(b) {
                        Ok(()) => in_stage += 1,
                        // Closed: the stage ended, and its last message (the reason) is on its way.
                        Err(mpsc::error::TrySendError::Full(b) | mpsc::error::TrySendError::Closed(b)) => {
                            pending.push_front(b);
                            break;
                        }
                    },
                    Some(_) => {
                        pending.push_front(b);
                        break;
                    }
                }
            }
            // Dispatch processed batches while there is room in flight.
            while inflight.len() < batch.max_inflight.max(1) && failure.is_none() {
                let Some(Processed { events, commit, commit_index, last_ts_ms }) = ready.pop_front() else { break };
                batch_events.record(events.len() as f64);
                let seq = next_seq;
                next_seq += 1;
                let d = Arc::new(Delivery { seq, events, commit: commit.clone(), commit_index });
                for q in &sink_queues {
                    // A closed queue means the sink task ended (fatal); its report says why.
                    let _ = q.send(d.clone()).await;
                }
                let n = sink_ids.len();
                inflight.push_back(InFlight { seq, commit, last_ts_ms, acked: vec![false; n], done: vec![false; n] });
            }

            let room = pending.is_empty() && ready.is_empty() && inflight.len() < batch.max_inflight.max(1);
            let draining = source_done && pending.is_empty() && batcher.is_empty() && in_stage == 0 && ready.is_empty();
            if (draining || failure.is_some()) && inflight.is_empty() {
                break;
            }
            if failure.is_some() && !abort.is_cancelled() {
                abort.cancel();
                source_stop.cancel();
            }
            if failure.is_some() && inflight.iter().all(|f| f.done.iter().all(|d| *d)) {
                break;
            }

            tokio::select! {
                biased;
                report = report_rx.recv() => {
                    let Some(r) = report else { break };
                    let f = inflight.iter_mut().find(|f| f.seq == r.seq);
                    match r.outcome {
                        SinkOutcome::Acked => {
                            if let Some(f) = f {
                                f.acked[r.sink] = true;
                                f.done[r.sink] = true;
                                if let Some(c) = &f.commit {
                                    sink_positions.insert(sink_ids[r.sink].clone(), c.clone());
                                }
                            }
                        }
                        SinkOutcome::GaveUp => {
                            if let Some(f) = f { f.done[r.sink] = true; }
                        }
                        SinkOutcome::Fatal(e) => {
                            if let Some(f) = f { f.done[r.sink] = true; }
                            if failure.is_none() {
                                failure = Some(PipelineError::Sink { sink: sink_ids[r.sink].clone(), error: e });
                            }
                        }
                    }
                    // Commit, in order, every head batch that satisfies the policy.
                    let mut advanced = false;
                    while let Some(head) = inflight.front() {
                        if !policy.is_satisfied(&head.acked, &required) {
                            break;
                        }
                        let head = inflight.pop_front().expect("front exists");
                        committed_seq.store(head.seq, Ordering::Release);
                        summary.batches_committed += 1;
                        if let Some(c) = head.commit {
                            last_committed = Some(c);
                            advanced = true;
                        }
                        if head.last_ts_ms.is_some() {
                            last_committed_ts = head.last_ts_ms;
                        }
                    }
                    if let (true, Some(pos)) = (advanced, &last_committed) {
                        cp_tx.send_replace(Some(Checkpoint { position: pos.clone(), sinks: sink_positions.clone(), written_at: Utc::now() }));
                    }
                }
                processed = recv_stage(&mut stage), if in_stage > 0 => {
                    in_stage -= 1;
                    match processed {
                        Some(Ok(p)) => ready.push_back(p),
                        Some(Err(e)) => { failure.get_or_insert(e); }
                        None => { failure.get_or_insert(PipelineError::Internal("the processor stage ended unexpectedly".into())); }
                    }
                }
                chunk = chunk_rx.recv(), if room && !source_done => {
                    match chunk {
                        Some(c) => {
                            let n = c.events.len() as u64;
                            summary.events_read += n;
                            events_read.increment(n);
                            let closed = batcher.push(c);
                            pending.extend(closed);
                            if batcher.is_empty() { deadline = None; }
                            else if deadline.is_none() { deadline = Some(tokio::time::Instant::now() + batch.max_wait); }
                            if let Some(s) = &status {
                                s.send_modify(|st| st.events_read = summary.events_read);
                            }
                        }
                        None => {
                            source_done = true;
                            if let Some(b) = batcher.flush() { pending.push_back(b); }
                            deadline = None;
                            if let Some(task) = source_task.take() {
                                match task.await {
                                    Ok(Ok(())) => {}
                                    Ok(Err(e)) => {
                                        // Deliver what was read before the failure, then report it.
                                        tracing::warn!(pipeline = %name, "source stopped: {e}");
                                        source_failure = Some(e);
                                    }
                                    Err(e) => { failure.get_or_insert(PipelineError::Internal(format!("source task: {e}"))); }
                                }
                            }
                        }
                    }
                }
                _ = sleep_until_opt(deadline), if deadline.is_some() => {
                    if let Some(b) = batcher.flush() { pending.push_back(b); }
                    deadline = None;
                }
                _ = lag_tick.tick() => {
                    let idle = inflight.is_empty() && pending.is_empty() && batcher.is_empty();
                    let lag = match (idle, last_committed_ts.or_else(|| inflight.front().and_then(|f| f.last_ts_ms))) {
                        (true, _) | (false, None) => 0.0,
                        (false, Some(ts)) => (Utc::now().timestamp_millis() - ts).max(0) as f64 / 1000.0,
                    };
                    lag_seconds.set(lag);
                    if let Some(s) = &status {
                        s.send_if_modified(|st| {
                            let changed = st.lag_seconds != lag;
                            st.lag_seconds = lag;
                            changed
                        });
                    }
                }
                _ = shutdown.cancelled(), if grace_deadline.is_none() => {
                    tracing::info!(pipeline = %name, "shutdown requested: finishing in-flight batches");
                    source_stop.cancel();
                    grace_deadline = Some(tokio::time::Instant::now() + shutdown_grace);
                }
                _ = sleep_until_opt(grace_deadline), if grace_deadline.is_some() && !abort.is_cancelled() => {
                    tracing::warn!(pipeline = %name, inflight = inflight.len(), "shutdown grace expired: abandoning undelivered batches (they will be replayed)");
                    abort.cancel();
                    inflight.clear();
                    pending.clear();
                    ready.clear();
                    // Dropping the stage's channels ends it after its current batch.
                    stage = None;
                    in_stage = 0;
                    let _ = batcher.flush();
                    source_done = true;
                }
            }
        }

        // Wind down: stop the source, close the sink queues, write the last checkpoint.
        source_stop.cancel();
        lag_probe_stop.cancel();
        if let Some(t) = lag_probe_task {
            let _ = t.await;
        }
        drop(chunk_rx);
        if let Some(task) = source_task.take() {
            if let Ok(Err(e)) = task.await {
                if failure.is_none() && source_failure.is_none() && !shutdown.is_cancelled() {
                    source_failure = Some(e);
                }
            }
        }
        abort.cancel();
        drop(sink_queues);
        for t in sink_tasks {
            let _ = t.await;
        }
        drop(cp_tx);
        match writer.await {
            Ok(Ok(last)) => summary.checkpoint = last.or(summary.checkpoint),
            Ok(Err(e)) => failure = failure.or(Some(PipelineError::Checkpoint(e))),
            Err(e) => failure = failure.or(Some(PipelineError::Internal(format!("checkpoint writer: {e}")))),
        }
        match failure.or(source_failure.map(PipelineError::Source)) {
            Some(f) => Err(f),
            None => Ok(summary),
        }
    }
}

/// Polls the source's lag probe every [`LAG_PROBE_EVERY`] with the current
/// durable checkpoint and sets `deltaforge_checkpoint_lag_bytes`. A failed
/// probe leaves the gauge unchanged: a warning for the first failure, debug
/// logs while it keeps failing, so that an unreachable server does not
/// flood the log.
async fn poll_lag_bytes(
    mut probe: Box<dyn LagProbe>,
    durable: watch::Receiver<Option<Position>>,
    status: Option<watch::Sender<PipelineStatus>>,
    pipeline: String,
    stop: CancellationToken,
) {
    let gauge = gauge!("deltaforge_checkpoint_lag_bytes", "pipeline" => pipeline.clone());
    let mut tick = tokio::time::interval(LAG_PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let checkpoint = durable.borrow().clone();
        let result = tokio::select! {
            _ = stop.cancelled() => return,
            r = tokio::time::timeout(LAG_PROBE_TIMEOUT, probe.lag_bytes(checkpoint.as_ref())) => r,
        };
        let error = match result {
            Ok(Ok(Some(bytes))) => {
                gauge.set(bytes as f64);
                if let Some(s) = &status {
                    s.send_if_modified(|st| {
                        let changed = st.lag_bytes != Some(bytes);
                        st.lag_bytes = Some(bytes);
                        changed
                    });
                }
                if failing {
                    tracing::info!(pipeline = %pipeline, "checkpoint lag probe works again");
                }
                failing = false;
                continue;
            }
            Ok(Ok(None)) => continue,
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {LAG_PROBE_TIMEOUT:?}"),
        };
        if failing {
            tracing::debug!(pipeline = %pipeline, "checkpoint lag probe failed again: {error}");
        } else {
            tracing::warn!(pipeline = %pipeline, "checkpoint lag probe failed (deltaforge_checkpoint_lag_bytes keeps its last value): {error}");
        }
        failing = true;
    }
}

async fn sleep_until_opt(t: Option<tokio::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

struct SinkWorker {
    index: usize,
    needed: bool,
    slot: SinkSlot,
    resume_at: Option<Position>,
    committed_seq: Arc<AtomicU64>,
    abort: CancellationToken,
    dlq: Option<DeadLetterQueue>,
    reports: mpsc::UnboundedSender<SinkReport>,
    pipeline: String,
}

impl SinkWorker {
    async fn run(mut self, mut rx: mpsc::Receiver<Arc<Delivery>>) {
        let delivered = counter!("deltaforge_sink_events_delivered_total", "pipeline" => self.pipeline.clone(), "sink" => self.slot.id.clone());
        let errors = counter!("deltaforge_sink_errors_total", "pipeline" => self.pipeline.clone(), "sink" => self.slot.id.clone());
        let dropped = counter!("deltaforge_sink_batches_dropped_total", "pipeline" => self.pipeline.clone(), "sink" => self.slot.id.clone());
        let latency = histogram!("deltaforge_sink_delivery_seconds", "pipeline" => self.pipeline.clone(), "sink" => self.slot.id.clone());
        while let Some(d) = rx.recv().await {
            let events = self.events_to_send(&d);
            let outcome = if events.is_empty() {
                SinkOutcome::Acked
            } else {
                self.deliver_with_retries(&d, events, &errors, &latency).await
            };
            match &outcome {
                SinkOutcome::Acked => delivered.increment(events.len() as u64),
                SinkOutcome::GaveUp => dropped.increment(1),
                SinkOutcome::Fatal(_) => {}
            }
            let fatal = matches!(outcome, SinkOutcome::Fatal(_));
            if self.reports.send(SinkReport { seq: d.seq, sink: self.index, outcome }).is_err() || fatal {
                break;
            }
        }
        if let Err(e) = self.slot.sink.close().await {
            tracing::warn!(sink = %self.slot.id, "closing sink failed: {e}");
        }
    }

    /// After a restart, skips the part of a batch this sink already
    /// acknowledged in an earlier run (per-sink progress).
    fn events_to_send<'a>(&mut self, d: &'a Delivery) -> &'a [Event] {
        if let (Some(resume), Some(commit)) = (&self.resume_at, &d.commit) {
            if commit.is_at_or_before(resume) {
                return &d.events[d.commit_index..];
            }
            self.resume_at = None;
        }
        &d.events
    }

    async fn deliver_with_retries(
        &mut self,
        d: &Delivery,
        events: &[Event],
        errors: &metrics::Counter,
        latency: &metrics::Histogram,
    ) -> SinkOutcome {
        let cfg = self.slot.delivery.clone();
        let mut backoff = cfg.initial_backoff;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let started = Instant::now();
            let result = tokio::select! {
                r = tokio::time::timeout(cfg.timeout, self.slot.sink.deliver(events)) => match r {
                    Ok(r) => r,
                    Err(_) => Err(SinkError::Retryable(format!("delivery timed out after {:?}", cfg.timeout))),
                },
                _ = self.abort.cancelled() => return SinkOutcome::GaveUp,
            };
            match result {
                Ok(()) => {
                    latency.record(started.elapsed().as_secs_f64());
                    if attempts > 1 {
                        tracing::info!(sink = %self.slot.id, attempts, "sink recovered");
                    }
                    return SinkOutcome::Acked;
                }
                Err(SinkError::Rejected(rejected)) => {
                    errors.increment(1);
                    let (queue, sink_id) = (self.dlq.clone(), self.slot.id.clone());
                    return dead_letter(queue.as_ref(), &sink_id, events, rejected).await;
                }
                Err(SinkError::Fatal(m)) => {
                    errors.increment(1);
                    tracing::error!(sink = %self.slot.id, "sink failed permanently: {m}");
                    return SinkOutcome::Fatal(SinkError::Fatal(m));
                }
                Err(SinkError::Retryable(m)) => {
                    errors.increment(1);
                    let committed = self.committed_seq.load(Ordering::Acquire) >= d.seq;
                    if !self.needed && committed && attempts >= cfg.max_attempts {
                        tracing::error!(sink = %self.slot.id, attempts, events = events.len(), "giving up on a batch for a sink the commit policy does not need: {m}");
                        return SinkOutcome::GaveUp;
                    }
                    tracing::warn!(sink = %self.slot.id, attempts, retry_in = ?backoff, "delivery failed: {m}");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = self.abort.cancelled() => return SinkOutcome::GaveUp,
                    }
                    backoff = (backoff * 2).min(cfg.max_backoff);
                }
            }
        }
    }
}

/// Sets aside the events a sink rejected for their own fault (the rest of
/// the batch was delivered); without a dead-letter queue the pipeline must
/// stop rather than lose them.
async fn dead_letter(
    queue: Option<&DeadLetterQueue>,
    sink_id: &str,
    events: &[Event],
    rejected: Vec<RejectedEvent>,
) -> SinkOutcome {
    {
        let Some(queue) = queue else {
            let first = rejected.first().map(|r| r.reason.clone()).unwrap_or_default();
            return SinkOutcome::Fatal(SinkError::Fatal(format!(
                "{} event(s) rejected for their own fault (first: {first}) and the pipeline has no dead-letter \
                 queue; enable spec.dlq to set such events aside, or fix the events or the target",
                rejected.len()
            )));
        };
        for r in &rejected {
            let Some(event) = events.get(r.index) else {
                return SinkOutcome::Fatal(SinkError::Fatal(format!(
                    "sink reported a rejected event index {} outside its batch of {}",
                    r.index,
                    events.len()
                )));
            };
            if let Err(e) = queue.push(event, &r.reason, Some(sink_id), None).await {
                return SinkOutcome::Fatal(SinkError::Fatal(e.to_string()));
            }
        }
        SinkOutcome::Acked
    }
}

/// Batches the processor stage may hold (queued or being processed): one
/// being processed while the next waits keeps the stage busy without
/// letting it run far ahead of the sinks.
const PROCESSOR_STAGE_DEPTH: usize = 2;

/// A batch after the processors, ready for the sinks.
struct Processed {
    events: Vec<Event>,
    commit: Option<Position>,
    /// Leading events that precede `commit` (see [`Delivery`]).
    commit_index: usize,
    last_ts_ms: Option<i64>,
}

impl Processed {
    /// A batch no processor touched.
    fn unchanged(b: Batch) -> Self {
        let last_ts_ms = b.events.last().map(|e| e.source.ts_ms);
        Processed { events: b.events, commit: b.commit, commit_index: b.commit_index, last_ts_ms }
    }
}

/// The processors on their own task. One task and FIFO channels keep the
/// batches in source order; the first error ends the stage and is its last
/// message.
struct ProcessorStage {
    tx: mpsc::Sender<Batch>,
    rx: mpsc::Receiver<Result<Processed, PipelineError>>,
    task: JoinHandle<()>,
}

impl ProcessorStage {
    fn spawn(mut processors: Vec<Box<dyn Processor>>, dlq: Option<DeadLetterQueue>) -> Self {
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
async fn recv_stage(stage: &mut Option<ProcessorStage>) -> Option<Result<Processed, PipelineError>> {
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

async fn checkpoint_writer(
    store: CheckpointStore,
    source_id: String,
    mut rx: watch::Receiver<Option<Checkpoint>>,
    durable: watch::Sender<Option<Position>>,
    status: Option<watch::Sender<PipelineStatus>>,
    pipeline: String,
) -> Result<Option<Position>, CheckpointError> {
    let written = counter!("deltaforge_checkpoints_written_total", "pipeline" => pipeline.clone());
    let mut last: Option<Position> = None;
    loop {
        let closed = rx.changed().await.is_err();
        let next = rx.borrow_and_update().clone();
        if let Some(cp) = next {
            if last.as_ref() != Some(&cp.position) {
                let mut attempt = 0u32;
                loop {
                    attempt += 1;
                    match store.save(&source_id, &cp).await {
                        Ok(()) => break,
                        Err(e) if attempt < 8 => {
                            tracing::warn!(source = %source_id, attempt, "checkpoint write failed, retrying: {e}");
                            tokio::time::sleep(Duration::from_millis(50 << attempt.min(6))).await;
                        }
                        Err(e) => return Err(e),
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
            return Ok(last);
        }
    }
}

#[cfg(test)]
mod lag_probe_tests {
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    use async_trait::async_trait;

    use super::*;

    /// Answers from a script and records the checkpoints it was asked with.
    struct Scripted {
        answers: VecDeque<Result<Option<u64>, SourceError>>,
        asked: Arc<Mutex<Vec<Option<Position>>>>,
    }

    #[async_trait]
    impl LagProbe for Scripted {
        async fn lag_bytes(&mut self, checkpoint: Option<&Position>) -> Result<Option<u64>, SourceError> {
            self.asked.lock().unwrap().push(checkpoint.cloned());
            self.answers.pop_front().unwrap_or(Ok(None))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn failures_and_unknown_answers_leave_the_last_value() {
        let asked = Arc::new(Mutex::new(Vec::new()));
        let probe = Scripted {
            answers: VecDeque::from([
                Ok(Some(100)),
                Err(SourceError::Retryable("server down".into())),
                Ok(None),
                Ok(Some(0)),
            ]),
            asked: asked.clone(),
        };
        let (status_tx, status) = watch::channel(PipelineStatus::default());
        let (durable_tx, durable) = watch::channel(None);
        let stop = CancellationToken::new();
        let task = tokio::spawn(poll_lag_bytes(Box::new(probe), durable, Some(status_tx), "p".into(), stop.clone()));
        let step = LAG_PROBE_EVERY;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(status.borrow().lag_bytes, Some(100));
        durable_tx.send_replace(Some(Position::Datagen { seq: 5 }));
        tokio::time::sleep(step).await;
        assert_eq!(status.borrow().lag_bytes, Some(100), "a failed probe keeps the last value");
        tokio::time::sleep(step).await;
        assert_eq!(status.borrow().lag_bytes, Some(100), "an unknown answer keeps the last value");
        tokio::time::sleep(step).await;
        assert_eq!(status.borrow().lag_bytes, Some(0));
        stop.cancel();
        task.await.unwrap();
        let asked = asked.lock().unwrap().clone();
        assert_eq!(asked.len(), 4);
        assert_eq!(asked[0], None);
        assert!(asked[1..].iter().all(|c| *c == Some(Position::Datagen { seq: 5 })), "{asked:?}");
    }
}
