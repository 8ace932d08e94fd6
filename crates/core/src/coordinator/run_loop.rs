//! The run loop of one pipeline run: moves chunks from the source through
//! the batcher and the processor stage to the sinks, applies the commit
//! policy to the sinks' reports in batch order, offers each committed
//! position to the checkpoint writer, keeps the lag in seconds, and handles
//! shutdown (with its grace period) and failures.
//!
//! This module owns the first half of the delivery invariant: a position is
//! offered to the checkpoint writer only when the batch that carries it, and
//! every batch before it, satisfied the commit policy. It must never offer a
//! position a source did not attach to a transaction end.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use metrics::{counter, gauge, histogram};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, Interval};
use tokio_util::sync::CancellationToken;

use crate::batch::{Batch, BatchConfig, Batcher};
use crate::checkpoint::Checkpoint;
use crate::coordinator::checkpoint_writer::CheckpointWriter;
use crate::coordinator::outcome::{PipelineError, PipelineStatus, RunSummary};
use crate::coordinator::processor_stage::{recv_stage, Processed, ProcessorStage, PROCESSOR_STAGE_DEPTH};
use crate::coordinator::sink_worker::{Delivery, SinkFleet, SinkOutcome, SinkReport};
use crate::coordinator::source_run::SourceRun;
use crate::policy::CommitPolicy;
use crate::position::Position;
use crate::source::SourceChunk;
use crate::source_error::SourceError;

/// A dispatched batch waiting for the commit policy.
struct InFlight {
    seq: u64,
    commit: Option<Position>,
    last_ts_ms: Option<i64>,
    /// Per sink: acknowledged.
    acked: Vec<bool>,
    /// Per sink: finished with the batch (acknowledged, gave up or failed).
    done: Vec<bool>,
    /// Per sink: took the batch into its buffer (acknowledgement to follow).
    held: Vec<bool>,
}

impl InFlight {
    /// Whether the batch still takes a place in flight: some sink has
    /// neither finished with it nor taken it into its buffer. Held batches
    /// wait for their acknowledgement without holding back new batches, so
    /// a sink can gather many batches into one file.
    fn occupies(&self) -> bool {
        self.done.iter().zip(&self.held).any(|(done, held)| !done && !held)
    }
}

/// The parts of a run the loop drives.
pub(crate) struct RunParts {
    pub(crate) name: Arc<str>,
    pub(crate) batch: BatchConfig,
    pub(crate) policy: CommitPolicy,
    pub(crate) status: Option<watch::Sender<PipelineStatus>>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) shutdown_grace: Duration,
    pub(crate) source: SourceRun,
    pub(crate) sinks: SinkFleet,
    pub(crate) stage: Option<ProcessorStage>,
    pub(crate) writer: CheckpointWriter,
    /// The checkpoint the run resumes from: its position and each sink's own.
    pub(crate) resume: Option<(Position, BTreeMap<String, Position>)>,
}

/// The state of one run's loop (see the module docs).
pub(crate) struct RunLoop {
    name: Arc<str>,
    batch: BatchConfig,
    policy: CommitPolicy,
    status: Option<watch::Sender<PipelineStatus>>,
    shutdown: CancellationToken,
    shutdown_grace: Duration,
    source: SourceRun,
    sinks: SinkFleet,
    writer: CheckpointWriter,
    /// Batches closed by the batcher, not yet in the processor stage.
    pending: VecDeque<Batch>,
    batcher: Batcher,
    /// When the batcher's open batch must close (its `max_wait`).
    deadline: Option<Instant>,
    stage: Option<ProcessorStage>,
    /// Batches inside the processor stage.
    in_stage: usize,
    /// Processed batches not yet dispatched.
    ready: VecDeque<Processed>,
    inflight: VecDeque<InFlight>,
    next_seq: u64,
    sink_positions: BTreeMap<String, Position>,
    last_committed: Option<Position>,
    last_committed_ts: Option<i64>,
    summary: RunSummary,
    failure: Option<PipelineError>,
    /// The source's own failure: reported once what it read before is delivered.
    source_failure: Option<SourceError>,
    source_done: bool,
    grace_deadline: Option<Instant>,
    lag_tick: Interval,
    lag_seconds: metrics::Gauge,
    events_read: metrics::Counter,
    batch_events: metrics::Histogram,
}

impl RunLoop {
    /// A loop at the start of a run.
    pub(crate) fn new(parts: RunParts) -> Self {
        let RunParts { name, batch, policy, status, shutdown, shutdown_grace, source, sinks, stage, writer, resume } =
            parts;
        let label = name.to_string();
        let (last_committed, sink_positions) = match resume {
            Some((position, sinks)) => (Some(position), sinks),
            None => (None, BTreeMap::new()),
        };
        let mut lag_tick = tokio::time::interval(Duration::from_secs(1));
        lag_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        RunLoop {
            batcher: Batcher::new(batch.clone()),
            summary: RunSummary { checkpoint: last_committed.clone(), ..RunSummary::default() },
            lag_seconds: gauge!("deltaforge_checkpoint_lag_seconds", "pipeline" => label.clone()),
            events_read: counter!("deltaforge_events_read_total", "pipeline" => label.clone()),
            batch_events: histogram!("deltaforge_batch_events", "pipeline" => label),
            name,
            batch,
            policy,
            status,
            shutdown,
            shutdown_grace,
            source,
            sinks,
            writer,
            pending: VecDeque::new(),
            deadline: None,
            stage,
            in_stage: 0,
            ready: VecDeque::new(),
            inflight: VecDeque::new(),
            next_seq: 1,
            sink_positions,
            last_committed,
            last_committed_ts: None,
            failure: None,
            source_failure: None,
            source_done: false,
            grace_deadline: None,
            lag_tick,
        }
    }

    /// Runs until the source is drained, a failure, or the end of the
    /// shutdown grace; then winds the run down.
    pub(crate) async fn run(mut self) -> Result<RunSummary, PipelineError> {
        loop {
            self.feed_stage();
            self.dispatch().await;
            if self.finished() {
                break;
            }
            let room = self.pending.is_empty() && self.ready.is_empty() && self.occupied() < self.max_inflight();
            tokio::select! {
                biased;
                report = self.sinks.reports.recv() => {
                    let Some(r) = report else { break };
                    self.on_report(r);
                }
                processed = recv_stage(&mut self.stage), if self.in_stage > 0 => self.on_processed(processed),
                chunk = self.source.chunks.recv(), if room && !self.source_done => match chunk {
                    Some(c) => self.on_chunk(c),
                    None => self.on_source_end().await,
                },
                _ = sleep_until_opt(self.deadline), if self.deadline.is_some() => {
                    if let Some(b) = self.batcher.flush() { self.pending.push_back(b); }
                    self.deadline = None;
                }
                _ = self.lag_tick.tick() => self.update_lag_seconds(),
                died = self.writer.died(), if !self.writer.is_dead() => self.on_writer_died(died),
                _ = self.shutdown.cancelled(), if self.grace_deadline.is_none() => self.on_shutdown(),
                _ = sleep_until_opt(self.grace_deadline), if self.grace_deadline.is_some() && !self.sinks.abort.is_cancelled() => {
                    self.on_grace_expired();
                }
            }
        }
        self.wind_down().await
    }

    fn max_inflight(&self) -> usize {
        self.batch.max_inflight.max(1)
    }

    /// Batches taking a place in flight (see [`InFlight::occupies`]).
    fn occupied(&self) -> usize {
        self.inflight.iter().filter(|f| f.occupies()).count()
    }

    /// Hands closed batches to the processors: on their own task when there
    /// are any, so their work overlaps reading and delivery.
    fn feed_stage(&mut self) {
        while let Some(b) = self.pending.pop_front() {
            match &self.stage {
                None => self.ready.push_back(Processed::unchanged(b)),
                Some(st) if self.in_stage < PROCESSOR_STAGE_DEPTH => match st.tx.try_send(b) {
                    Ok(()) => self.in_stage += 1,
                    // Closed: the stage ended, and its last message (the reason) is on its way.
                    Err(mpsc::error::TrySendError::Full(b) | mpsc::error::TrySendError::Closed(b)) => {
                        self.pending.push_front(b);
                        break;
                    }
                },
                Some(_) => {
                    self.pending.push_front(b);
                    break;
                }
            }
        }
    }

    /// Dispatches processed batches while there is room in flight.
    async fn dispatch(&mut self) {
        while self.occupied() < self.max_inflight() && self.failure.is_none() {
            let Some(Processed { events, commit, commit_index, last_ts_ms }) = self.ready.pop_front() else { break };
            self.batch_events.record(events.len() as f64);
            let seq = self.next_seq;
            self.next_seq += 1;
            self.sinks.send(Arc::new(Delivery { seq, events, commit: commit.clone(), commit_index })).await;
            let n = self.sinks.len();
            self.inflight.push_back(InFlight {
                seq,
                commit,
                last_ts_ms,
                acked: vec![false; n],
                done: vec![false; n],
                held: vec![false; n],
            });
        }
    }

    /// Whether the loop must end now; on a failure, first stops the source
    /// and makes the sinks give up.
    fn finished(&mut self) -> bool {
        let draining = self.source_done
            && self.pending.is_empty()
            && self.batcher.is_empty()
            && self.in_stage == 0
            && self.ready.is_empty();
        if (draining || self.failure.is_some()) && self.inflight.is_empty() {
            return true;
        }
        if draining && !self.sinks.drain.is_cancelled() {
            // No batch will follow: sinks holding batches make them durable now.
            self.sinks.drain.cancel();
        }
        if self.failure.is_none() {
            return false;
        }
        if !self.sinks.abort.is_cancelled() {
            self.sinks.abort.cancel();
            self.source.stop.cancel();
        }
        self.inflight.iter().all(|f| f.done.iter().all(|d| *d))
    }

    /// Records a sink's outcome, then commits what the policy allows.
    fn on_report(&mut self, r: SinkReport) {
        let f = self.inflight.iter_mut().find(|f| f.seq == r.seq);
        match r.outcome {
            SinkOutcome::Acked => {
                if let Some(f) = f {
                    f.acked[r.sink] = true;
                    f.done[r.sink] = true;
                    if let Some(c) = &f.commit {
                        self.sink_positions.insert(self.sinks.ids[r.sink].clone(), c.clone());
                    }
                }
            }
            SinkOutcome::Held => {
                if let Some(f) = f {
                    f.held[r.sink] = true;
                }
            }
            SinkOutcome::GaveUp => {
                if let Some(f) = f {
                    f.done[r.sink] = true;
                }
            }
            SinkOutcome::Fatal(e) => {
                if let Some(f) = f {
                    f.done[r.sink] = true;
                }
                if self.failure.is_none() {
                    self.failure = Some(PipelineError::Sink { sink: self.sinks.ids[r.sink].clone(), error: e });
                }
            }
        }
        self.commit_satisfied();
    }

    /// Commits, in order, every head batch that satisfies the policy, and
    /// offers the newest committed position to the checkpoint writer.
    fn commit_satisfied(&mut self) {
        let mut advanced = false;
        while let Some(head) = self.inflight.front() {
            if !self.policy.is_satisfied(&head.acked, &self.sinks.required) {
                break;
            }
            let head = self.inflight.pop_front().expect("front exists");
            self.sinks.committed_seq.store(head.seq, Ordering::Release);
            self.summary.batches_committed += 1;
            if let Some(c) = head.commit {
                self.last_committed = Some(c);
                advanced = true;
            }
            if head.last_ts_ms.is_some() {
                self.last_committed_ts = head.last_ts_ms;
            }
        }
        if let (true, Some(pos)) = (advanced, &self.last_committed) {
            self.writer.offer(Checkpoint {
                position: pos.clone(),
                sinks: self.sink_positions.clone(),
                written_at: Utc::now(),
            });
        }
    }

    fn on_processed(&mut self, processed: Option<Result<Processed, PipelineError>>) {
        self.in_stage -= 1;
        match processed {
            Some(Ok(p)) => self.ready.push_back(p),
            Some(Err(e)) => {
                self.failure.get_or_insert(e);
            }
            None => {
                self.failure.get_or_insert(PipelineError::Internal("the processor stage ended unexpectedly".into()));
            }
        }
    }

    fn on_chunk(&mut self, c: SourceChunk) {
        let n = c.events.len() as u64;
        self.summary.events_read += n;
        self.events_read.increment(n);
        let closed = self.batcher.push(c);
        self.pending.extend(closed);
        if self.batcher.is_empty() {
            self.deadline = None;
        } else if self.deadline.is_none() {
            self.deadline = Some(Instant::now() + self.batch.max_wait);
        }
        if let Some(s) = &self.status {
            let events_read = self.summary.events_read;
            s.send_modify(|st| st.events_read = events_read);
        }
    }

    /// The source's channel closed: flush the open batch and learn why the
    /// source ended.
    async fn on_source_end(&mut self) {
        self.source_done = true;
        if let Some(b) = self.batcher.flush() {
            self.pending.push_back(b);
        }
        self.deadline = None;
        match self.source.join().await {
            None | Some(Ok(Ok(()))) => {}
            Some(Ok(Err(e))) => {
                // Deliver what was read before the failure, then report it.
                tracing::warn!(pipeline = %self.name, "source stopped: {e}");
                self.source_failure = Some(e);
            }
            Some(Err(e)) => {
                self.failure.get_or_insert(PipelineError::Internal(format!("source task: {e}")));
            }
        }
    }

    /// Sets the lag in seconds: 0 when idle, else the age of the last
    /// committed (or oldest in-flight) event.
    fn update_lag_seconds(&mut self) {
        let idle = self.inflight.is_empty() && self.pending.is_empty() && self.batcher.is_empty();
        let lag = match (idle, self.last_committed_ts.or_else(|| self.inflight.front().and_then(|f| f.last_ts_ms))) {
            (true, _) | (false, None) => 0.0,
            (false, Some(ts)) => (Utc::now().timestamp_millis() - ts).max(0) as f64 / 1000.0,
        };
        self.lag_seconds.set(lag);
        if let Some(s) = &self.status {
            s.send_if_modified(|st| {
                let changed = st.lag_seconds != lag;
                st.lag_seconds = lag;
                changed
            });
        }
    }

    /// The checkpoint writer gave up: stop at once (the sinks abort, the
    /// source stops) instead of delivering without checkpoints.
    fn on_writer_died(&mut self, e: PipelineError) {
        if let Some(s) = &self.status {
            let text = e.to_string();
            s.send_modify(|st| st.last_error = Some(text));
        }
        self.failure.get_or_insert(e);
    }

    fn on_shutdown(&mut self) {
        tracing::info!(pipeline = %self.name, "shutdown requested: finishing in-flight batches");
        self.source.stop.cancel();
        self.grace_deadline = Some(Instant::now() + self.shutdown_grace);
    }

    fn on_grace_expired(&mut self) {
        tracing::warn!(pipeline = %self.name, inflight = self.inflight.len(), "shutdown grace expired: abandoning undelivered batches (they will be replayed)");
        self.sinks.abort.cancel();
        self.inflight.clear();
        self.pending.clear();
        self.ready.clear();
        // Dropping the stage's channels ends it after its current batch.
        self.stage = None;
        self.in_stage = 0;
        let _ = self.batcher.flush();
        self.source_done = true;
    }

    /// Stops the source, closes the sinks, writes the last checkpoint, and
    /// reports the run: the first failure, else the source's, else the summary.
    async fn wind_down(self) -> Result<RunSummary, PipelineError> {
        let RunLoop { source, sinks, writer, shutdown, mut failure, mut source_failure, mut summary, .. } = self;
        if let Some(e) = source.stop().await {
            if failure.is_none() && source_failure.is_none() && !shutdown.is_cancelled() {
                source_failure = Some(e);
            }
        }
        sinks.close().await;
        match writer.finish().await {
            Ok(last) => summary.checkpoint = last.or(summary.checkpoint),
            Err(e) => failure = failure.or(Some(e)),
        }
        match failure.or(source_failure.map(PipelineError::Source)) {
            Some(f) => Err(f),
            None => Ok(summary),
        }
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
