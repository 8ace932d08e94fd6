//! The sink side of a run: one [`SinkWorker`] task per sink, delivering
//! each batch with timeouts and retries, setting aside rejected events
//! (dead-letter queue), and reporting each batch's outcome; and the
//! [`SinkFleet`] that starts the workers, hands them batches and closes them.
//!
//! A worker never decides that a batch is committed: it only reports
//! acknowledgements; the run loop applies the commit policy. A sink the
//! policy needs must never give a batch up while the pipeline runs.
//!
//! A sink that buffers across batches ([`Sink::held_batches`](crate::Sink::held_batches))
//! gets its batches reported as `Held` first (they no longer occupy a place
//! in flight, but are not acknowledged) and `Acked` only when the sink no
//! longer holds them, always in batch order; while it holds any, the worker
//! calls its `flush` whenever no batch arrived for [`FLUSH_POLL`].

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::{counter, histogram};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::coordinator::outcome::{PipelineStatus, SinkCounts};
use crate::coordinator::settings::SinkSlot;
use crate::dlq::{DeadLetterQueue, DlqError};
use crate::event::Event;
use crate::policy::CommitPolicy;
use crate::position::Position;
use crate::sink::{RejectedEvent, SinkError};

/// A batch handed to the sinks.
pub(crate) struct Delivery {
    /// The batch's place in dispatch order (from 1).
    pub(crate) seq: u64,
    pub(crate) events: Vec<Event>,
    /// The batch's last transaction end, if it has one.
    pub(crate) commit: Option<Position>,
    /// Events before the batch's last transaction end.
    pub(crate) commit_index: usize,
}

/// How often a worker whose sink holds batches asks it to flush while no
/// batch arrives.
const FLUSH_POLL: Duration = Duration::from_millis(200);

/// How a sink finished with one batch.
pub(crate) enum SinkOutcome {
    Acked,
    /// Taken into the sink's buffer, not yet durable: `Acked` follows.
    Held,
    GaveUp,
    Fatal(SinkError),
}

/// A worker's word about one batch.
pub(crate) struct SinkReport {
    pub(crate) seq: u64,
    /// The sink's index in the pipeline's sink list.
    pub(crate) sink: usize,
    pub(crate) outcome: SinkOutcome,
}

/// The running sink workers of one run and the channels to and from them.
pub(crate) struct SinkFleet {
    queues: Vec<mpsc::Sender<Arc<Delivery>>>,
    tasks: Vec<JoinHandle<()>>,
    /// Outcomes of every worker, in the order they happen.
    pub(crate) reports: mpsc::UnboundedReceiver<SinkReport>,
    /// The highest batch sequence committed; a sink the policy does not
    /// need may give up only on a batch at or below it.
    pub(crate) committed_seq: Arc<AtomicU64>,
    /// Fires to make every worker give up its batch now.
    pub(crate) abort: CancellationToken,
    /// Fires when no more batches will come (source ended, shutdown): sinks
    /// holding batches make them durable now.
    pub(crate) drain: CancellationToken,
    /// Per sink: whether `required` policy waits for it.
    pub(crate) required: Vec<bool>,
    /// Per sink: its configured id.
    pub(crate) ids: Vec<String>,
}

impl SinkFleet {
    /// Starts one worker per sink. `resume` holds each sink's own progress
    /// from the checkpoint; `queue_depth` bounds the batches a worker holds.
    pub(crate) fn start(
        sinks: Vec<SinkSlot>,
        policy: &CommitPolicy,
        queue_depth: usize,
        resume: Option<&std::collections::BTreeMap<String, Position>>,
        dlq: Option<DeadLetterQueue>,
        pipeline: &str,
        status: Option<watch::Sender<PipelineStatus>>,
    ) -> Self {
        let committed_seq = Arc::new(AtomicU64::new(0));
        let abort = CancellationToken::new();
        let drain = CancellationToken::new();
        let required: Vec<bool> = sinks.iter().map(|s| s.required).collect();
        let ids: Vec<String> = sinks.iter().map(|s| s.id.clone()).collect();
        if let Some(status) = &status {
            // Every sink shows, with zeros, from the run's start.
            status.send_modify(|s| s.sinks = ids.iter().map(|id| (id.clone(), SinkCounts::default())).collect());
        }
        let (report_tx, reports) = mpsc::unbounded_channel::<SinkReport>();
        let mut queues = Vec::new();
        let mut tasks = Vec::new();
        for (i, slot) in sinks.into_iter().enumerate() {
            let (tx, rx) = mpsc::channel::<Arc<Delivery>>(queue_depth.max(1));
            queues.push(tx);
            let resume_at = resume.and_then(|r| r.get(&slot.id).cloned());
            let worker = SinkWorker {
                index: i,
                needed: policy.needs_sink(slot.required),
                slot,
                resume_at,
                committed_seq: committed_seq.clone(),
                abort: abort.clone(),
                drain: drain.clone(),
                // A full `block` queue must not outlive the abort.
                dlq: dlq.as_ref().map(|q| q.stopping_on(abort.clone())),
                reports: report_tx.clone(),
                pipeline: pipeline.to_string(),
                status: status.clone(),
            };
            tasks.push(tokio::spawn(worker.run(rx)));
        }
        SinkFleet { queues, tasks, reports, committed_seq, abort, drain, required, ids }
    }

    /// Number of sinks.
    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }

    /// Hands a batch to every sink, waiting while a sink's queue is full.
    pub(crate) async fn send(&self, d: Arc<Delivery>) {
        for q in &self.queues {
            // A closed queue means the sink task ended (fatal); its report says why.
            let _ = q.send(d.clone()).await;
        }
    }

    /// Gives up in-flight batches, closes the queues and waits for every
    /// worker to close its sink.
    pub(crate) async fn close(self) {
        self.abort.cancel();
        drop(self.queues);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// A batch the sink returned `Ok` for, not yet acknowledged.
struct HeldBatch {
    seq: u64,
    events: usize,
    /// Whether the sink saw it (an empty remainder after a restart never
    /// reaches the sink, so it does not count in `held_batches`).
    counted: bool,
}

/// Delivers one sink's batches in order, reporting each outcome.
struct SinkWorker {
    index: usize,
    needed: bool,
    slot: SinkSlot,
    resume_at: Option<Position>,
    committed_seq: Arc<AtomicU64>,
    abort: CancellationToken,
    drain: CancellationToken,
    dlq: Option<DeadLetterQueue>,
    reports: mpsc::UnboundedSender<SinkReport>,
    pipeline: String,
    status: Option<watch::Sender<PipelineStatus>>,
}

/// One sink's counts, kept twice: in the Prometheus metrics (since the
/// process started) and in the pipeline's live status (this run), which
/// the control plane reads in-process.
struct SinkCounters {
    sink: String,
    delivered: metrics::Counter,
    errors: metrics::Counter,
    dropped: metrics::Counter,
    status: Option<watch::Sender<PipelineStatus>>,
}

impl SinkCounters {
    fn new(pipeline: &str, sink: &str, status: Option<watch::Sender<PipelineStatus>>) -> Self {
        let labels = [("pipeline", pipeline.to_string()), ("sink", sink.to_string())];
        SinkCounters {
            sink: sink.to_string(),
            delivered: counter!("deltaforge_sink_events_delivered_total", &labels),
            errors: counter!("deltaforge_sink_errors_total", &labels),
            dropped: counter!("deltaforge_sink_batches_dropped_total", &labels),
            status,
        }
    }

    fn count(&self, change: impl FnOnce(&mut SinkCounts)) {
        if let Some(status) = &self.status {
            status.send_modify(|s| change(s.sinks.entry(self.sink.clone()).or_default()));
        }
    }

    fn delivered(&self, events: u64) {
        self.delivered.increment(events);
        self.count(|c| c.delivered += events);
    }

    fn error(&self) {
        self.errors.increment(1);
        self.count(|c| c.errors += 1);
    }

    fn dropped(&self) {
        self.dropped.increment(1);
        self.count(|c| c.dropped += 1);
    }
}

impl SinkWorker {
    async fn run(mut self, mut rx: mpsc::Receiver<Arc<Delivery>>) {
        let counters = SinkCounters::new(&self.pipeline, &self.slot.id, self.status.take());
        let latency = histogram!("deltaforge_sink_delivery_seconds", "pipeline" => self.pipeline.clone(), "sink" => self.slot.id.clone());
        let mut held = VecDeque::new();
        let mut poll = FLUSH_POLL;
        loop {
            let next = if held.is_empty() {
                rx.recv().await
            } else {
                tokio::select! {
                    d = rx.recv() => d,
                    _ = tokio::time::sleep(poll) => {
                        poll = match self.flush_held(&mut held, &counters).await {
                            Ok(()) => FLUSH_POLL,
                            Err(SinkError::Retryable(m)) => {
                                counters.error();
                                tracing::warn!(sink = %self.slot.id, retry_in = ?poll, "flushing held events failed: {m}");
                                (poll * 2).min(self.slot.delivery.max_backoff.max(FLUSH_POLL))
                            }
                            Err(e) => {
                                counters.error();
                                tracing::error!(sink = %self.slot.id, "sink failed permanently: {e}");
                                let seq = held.front().map(|h: &HeldBatch| h.seq).unwrap_or(0);
                                let _ = self.reports.send(SinkReport { seq, sink: self.index, outcome: SinkOutcome::Fatal(e) });
                                break;
                            }
                        };
                        continue;
                    }
                    _ = self.abort.cancelled() => {
                        for h in held.drain(..) {
                            counters.dropped();
                            let _ = self.reports.send(SinkReport { seq: h.seq, sink: self.index, outcome: SinkOutcome::GaveUp });
                        }
                        continue;
                    }
                }
            };
            let Some(d) = next else { break };
            let events = self.events_to_send(&d);
            let mut outcome = if events.is_empty() {
                SinkOutcome::Acked
            } else {
                self.deliver_with_retries(&d, events, &counters, &latency).await
            };
            if matches!(outcome, SinkOutcome::Acked) && (!held.is_empty() || !events.is_empty()) {
                // Acknowledged in order, once the sink no longer holds it.
                held.push_back(HeldBatch { seq: d.seq, events: events.len(), counted: !events.is_empty() });
                self.release(&mut held, &counters);
                if held.back().is_some_and(|h| h.seq == d.seq) {
                    outcome = SinkOutcome::Held;
                } else {
                    continue;
                }
            } else if matches!(outcome, SinkOutcome::Acked) {
                counters.delivered(events.len() as u64);
            }
            if matches!(outcome, SinkOutcome::GaveUp) {
                counters.dropped();
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

    /// Asks the sink to make held events durable (all of them once the run
    /// drains), then acknowledges what it no longer holds.
    async fn flush_held(&mut self, held: &mut VecDeque<HeldBatch>, counters: &SinkCounters) -> Result<(), SinkError> {
        let drain = self.drain.is_cancelled();
        let result = tokio::time::timeout(self.slot.delivery.timeout, self.slot.sink.flush(drain)).await;
        let result = result.unwrap_or_else(|_| {
            Err(SinkError::Retryable(format!("flush timed out after {:?}", self.slot.delivery.timeout)))
        });
        // Even a failed flush may have made some batches durable.
        self.release(held, counters);
        result
    }

    /// Reports `Acked`, oldest first, for the held batches the sink no
    /// longer holds: every batch before the oldest one it still holds.
    fn release(&mut self, held: &mut VecDeque<HeldBatch>, counters: &SinkCounters) {
        let still = self.slot.sink.held_batches();
        let mut counted = 0usize;
        let mut keep_from = held.len();
        for (i, h) in held.iter().enumerate().rev() {
            if counted == still {
                break;
            }
            keep_from = i;
            counted += usize::from(h.counted);
        }
        for h in held.drain(..keep_from) {
            counters.delivered(h.events as u64);
            let _ = self.reports.send(SinkReport { seq: h.seq, sink: self.index, outcome: SinkOutcome::Acked });
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
        counters: &SinkCounters,
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
                    counters.error();
                    let (queue, sink_id) = (self.dlq.clone(), self.slot.id.clone());
                    return dead_letter(queue.as_ref(), &sink_id, events, rejected).await;
                }
                Err(SinkError::Fatal(m)) => {
                    counters.error();
                    tracing::error!(sink = %self.slot.id, "sink failed permanently: {m}");
                    return SinkOutcome::Fatal(SinkError::Fatal(m));
                }
                Err(SinkError::Retryable(m)) => {
                    counters.error();
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
            match queue.push(event, &r.reason, Some(sink_id), None).await {
                Ok(_) => {}
                // Aborted while waiting for room: the batch is not acknowledged.
                Err(DlqError::Stopped(_)) => return SinkOutcome::GaveUp,
                Err(e) => return SinkOutcome::Fatal(SinkError::Fatal(e.to_string())),
            }
        }
        SinkOutcome::Acked
    }
}
