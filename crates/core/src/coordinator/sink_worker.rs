//! The sink side of a run: one [`SinkWorker`] task per sink, delivering
//! each batch with timeouts and retries, setting aside rejected events
//! (dead-letter queue), and reporting each batch's outcome; and the
//! [`SinkFleet`] that starts the workers, hands them batches and closes them.
//!
//! A worker never decides that a batch is committed: it only reports
//! acknowledgements; the run loop applies the commit policy. A sink the
//! policy needs must never give a batch up while the pipeline runs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use metrics::{counter, histogram};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::coordinator::settings::SinkSlot;
use crate::dlq::DeadLetterQueue;
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

/// How a sink finished with one batch.
pub(crate) enum SinkOutcome {
    Acked,
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
    ) -> Self {
        let committed_seq = Arc::new(AtomicU64::new(0));
        let abort = CancellationToken::new();
        let required: Vec<bool> = sinks.iter().map(|s| s.required).collect();
        let ids: Vec<String> = sinks.iter().map(|s| s.id.clone()).collect();
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
                dlq: dlq.clone(),
                reports: report_tx.clone(),
                pipeline: pipeline.to_string(),
            };
            tasks.push(tokio::spawn(worker.run(rx)));
        }
        SinkFleet { queues, tasks, reports, committed_seq, abort, required, ids }
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

/// Delivers one sink's batches in order, reporting each outcome.
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
