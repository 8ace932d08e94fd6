//! The source-agnostic loop of a snapshot reader ([`Schedule::run`]): which
//! tables are read (from `snapshot.mode` and the stored records), how many at
//! once, backfill polling, the `tables_remaining` gauge, and when an
//! `initial_only` source may stop. A source plugs in through
//! [`SnapshotBackend`] and [`TableReader`].
//!
//! Backfills end in the history of their request ([`SnapshotStore`]): a
//! read that fails with a fatal error (its `where` failed on the server)
//! ends its backfill as `failed` instead of the source, and a cancelled
//! backfill's reads stop before their next chunk; both are stored so, and
//! never resumed.
//!
//! This module owns the order and concurrency of table reads. It must never
//! talk to a database, and never store a record other than a fresh one
//! (a `running` record with nothing read, which is always safe) or the
//! final `failed`/`cancelled` record of a backfill read (which stops it).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::snapshot::config::{SnapshotConfig, SnapshotMode};
use crate::snapshot::output::SnapshotMetrics;
use crate::snapshot::progress::{BackfillRequest, BackfillState, PendingProgress, ReadKind, TableProgress, TableState};
use crate::snapshot::reader_side::on_stored;
use crate::snapshot::store::{SnapshotError, SnapshotStore};
use crate::source_error::SourceError;

/// How often pending backfill requests are looked for.
const BACKFILL_POLL: Duration = Duration::from_secs(1);

/// A table to read: its name as the source spells it and the record to
/// start from (a fresh one, or a `running` one to resume).
#[derive(Debug, Clone)]
pub struct SnapshotJob {
    /// The table (`schema.table`, `db.table`).
    pub table: String,
    /// Where its read starts.
    pub progress: TableProgress,
    /// Fires when the read must end (its backfill was cancelled): the
    /// reader returns `Ok(false)` before its next chunk.
    pub cancel: CancellationToken,
}

impl SnapshotJob {
    /// A job starting at `progress`.
    pub fn new(table: impl Into<String>, progress: TableProgress) -> Self {
        SnapshotJob { table: table.into(), progress, cancel: CancellationToken::new() }
    }
}

/// The source-specific catalogue of a snapshot reader, used by
/// [`Schedule::run`] on the reader's own connection.
#[async_trait]
pub trait SnapshotBackend: Send {
    /// The tables matched by the source's `tables` patterns, in the order
    /// they are to be read.
    async fn matched_tables(&mut self) -> Result<Vec<String>, SourceError>;

    /// The server's row estimate of a table (`None`: unknown), recorded in
    /// its fresh progress record.
    async fn estimate_rows(&mut self, table: &str) -> Result<Option<u64>, SourceError>;
}

/// Reads one table of a snapshot or backfill, chunk by chunk (the
/// source-specific part of the DBLog method), each read in its own task.
#[async_trait]
pub trait TableReader: Send + Sync + 'static {
    /// Reads the table to the end (`Ok(true)`: its last chunk was
    /// reconciled, a `done` record will be stored), or until the pipeline
    /// stops or the table is dropped (`Ok(false)`).
    async fn read_table(&self, job: SnapshotJob) -> Result<bool, SourceError>;
}

/// The source-agnostic scheduling of one snapshot reader run (see the
/// module docs, "Scheduling").
pub struct Schedule<T> {
    /// Snapshot settings.
    pub cfg: SnapshotConfig,
    /// Source id, for logs.
    pub source_id: Arc<str>,
    /// Pipeline name, for metrics.
    pub pipeline: Arc<str>,
    /// Progress records and backfill requests.
    pub store: SnapshotStore,
    /// True when the source has no checkpoint: stored records are ignored
    /// and every table is read again.
    pub fresh: bool,
    /// Receives each progress record once stored (from
    /// [`ProgressWriter::notify`]).
    pub stored: mpsc::UnboundedReceiver<PendingProgress>,
    /// The channel of chunks to the stream: watched for the stream
    /// stopping (its receiver dropped).
    pub chunks: mpsc::Sender<T>,
}

/// A snapshot store failure, as the reader reports it.
fn store_error(e: SnapshotError) -> SourceError {
    SourceError::Retryable(e.to_string())
}

/// The table reads of one schedule run.
struct Reads {
    /// The tables the source's `tables` patterns match.
    matched: Vec<String>,
    /// Tables waiting for a free reader.
    queue: VecDeque<SnapshotJob>,
    /// Tables being read, with their jobs (for the backfill they belong to
    /// and their cancel token).
    active: HashMap<String, SnapshotJob>,
    /// One task per active table, ending with its read's result.
    workers: JoinSet<(String, Result<bool, SourceError>)>,
    /// Tables whose last chunk was reconciled. An `initial_only` run stops
    /// only once each of them is also in `stored_done`; either set may
    /// learn of a table first.
    completed: HashSet<String>,
    /// Tables whose `done` record is stored.
    stored_done: HashSet<String>,
    /// The final record of each backfill read that ended `failed` or
    /// `cancelled` in this run: stored again if the progress writer
    /// stores an earlier chunk's `running` record after it.
    ended: HashMap<String, TableProgress>,
}

impl Reads {
    fn new(matched: Vec<String>, queue: VecDeque<SnapshotJob>) -> Self {
        Reads {
            matched,
            queue,
            active: HashMap::new(),
            workers: JoinSet::new(),
            completed: HashSet::new(),
            stored_done: HashSet::new(),
            ended: HashMap::new(),
        }
    }

    /// Starts queued reads up to `parallel` at once.
    fn spawn_ready<R: TableReader>(&mut self, reader: &Arc<R>, parallel: usize) {
        while self.active.len() < parallel {
            let Some(job) = self.queue.pop_front() else { break };
            self.active.insert(job.table.clone(), job.clone());
            let reader = reader.clone();
            self.workers.spawn(async move { (job.table.clone(), reader.read_table(job).await) });
        }
    }

    /// Tables still to read, queued or under way.
    fn remaining(&self) -> usize {
        self.queue.len() + self.active.len()
    }

    /// Nothing left to read, and every table read to the end has its
    /// `done` record stored.
    fn all_done_and_stored(&self) -> bool {
        self.queue.is_empty() && self.active.is_empty() && self.completed.is_subset(&self.stored_done)
    }

    /// Whether any of `tables` is being read or queued.
    fn reading_any(&self, tables: &[String]) -> bool {
        tables.iter().any(|t| self.active.contains_key(t) || self.queue.iter().any(|j| &j.table == t))
    }
}

/// Logged once per start when the initial snapshot has read every table
/// and each table's `done` record is stored (after its rows were
/// delivered), including when no table needed reading.
pub const SNAPSHOT_OVER_LOG: &str = "initial snapshot over: every table read and delivered";

impl<T: Send + 'static> Schedule<T> {
    /// Runs the reader's schedule. Which tables are read: with `mode:
    /// initial` / `initial_only` each matched table whose record is not
    /// `done`; `always`: every matched table (a `running` record resumes);
    /// `never`: only tables with a `running` record. A fresh record is
    /// stored before its table is queued, so that a crash before the first
    /// chunk is delivered cannot leave an earlier `done` record in charge.
    /// Backfill requests are polled every second: a request naming a table
    /// being read (or queued) waits for it, an unmatched table is logged
    /// and ignored.
    ///
    /// Returns `Ok(true)` when the source should stop (`initial_only`, all
    /// tables done and stored), `Ok(false)` when the stream stopped, or the
    /// error that must stop the source (a table read's error included).
    pub async fn run<B, R>(mut self, backend: &mut B, reader: R) -> Result<bool, SourceError>
    where
        B: SnapshotBackend,
        R: TableReader,
    {
        let reader = Arc::new(reader);
        let matched = backend.matched_tables().await?;
        let queue = self.initial_queue(backend, &matched).await?;
        if !queue.is_empty() {
            tracing::info!(source = %self.source_id, tables = queue.len(), chunk_size = self.cfg.chunk_size,
                "snapshot: reading tables while streaming");
        }
        let mut reads = Reads::new(matched, queue);
        let metrics = SnapshotMetrics::new(&self.pipeline);
        let initial_only = self.cfg.mode == SnapshotMode::InitialOnly;
        let mut poll = tokio::time::interval(BACKFILL_POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut announced_over = false;
        loop {
            reads.spawn_ready(&reader, self.cfg.max_parallel_tables.max(1));
            metrics.tables_remaining(reads.remaining());
            // Operators (and tests) need to know when rows they write are
            // no longer also read by the snapshot: from here on, every
            // change arrives once, as a change. Logged once per start, also
            // when there was nothing to read.
            if !announced_over && reads.all_done_and_stored() {
                announced_over = true;
                tracing::info!(source = %self.source_id, "{SNAPSHOT_OVER_LOG}");
            }
            if initial_only && reads.all_done_and_stored() {
                tracing::info!(source = %self.source_id, "snapshot done (mode initial_only): stopping the source");
                return Ok(true);
            }
            tokio::select! {
                ended = reads.workers.join_next(), if !reads.workers.is_empty() => {
                    self.on_read_end(&mut reads, ended.expect("guarded by is_empty")).await?;
                }
                stored = self.stored.recv() => {
                    self.keep_ended(&reads, stored.as_ref()).await?;
                    if on_stored(stored, &self.chunks, &self.source_id, &mut reads.stored_done).await? {
                        return Ok(false);
                    }
                }
                // The stream stopped: nothing more can be delivered.
                _ = self.chunks.closed() => return Ok(false),
                _ = poll.tick() => {
                    self.apply_cancellations(&mut reads).await?;
                    self.start_backfills(backend, &mut reads).await?;
                }
            }
        }
    }

    /// The tables to read at start, by `snapshot.mode` and their records.
    async fn initial_queue<B: SnapshotBackend>(
        &self,
        backend: &mut B,
        matched: &[String],
    ) -> Result<VecDeque<SnapshotJob>, SourceError> {
        let mut queue = VecDeque::new();
        for table in matched {
            let record = if self.fresh { None } else { self.store.load(table).await.map_err(store_error)? };
            let record = match record {
                Some(p) => Some(self.unless_backfill_ended(table, p).await?),
                None => None,
            };
            let progress = match (self.cfg.mode, record) {
                (_, Some(p)) if p.state == TableState::Running => Some(p),
                (SnapshotMode::Never, _) => None,
                (SnapshotMode::Initial | SnapshotMode::InitialOnly, Some(_)) => None,
                (_, _) => {
                    let p = TableProgress::start(ReadKind::Snapshot, None, backend.estimate_rows(table).await?);
                    // Stored at once so that a crash before the first chunk
                    // is delivered cannot leave an earlier `done` record (from
                    // before a reset) in charge; a fresh start is always safe.
                    self.store.save(table, &p).await.map_err(store_error)?;
                    Some(p)
                }
            };
            if let Some(progress) = progress {
                queue.push_back(SnapshotJob::new(table.clone(), progress));
            }
        }
        Ok(queue)
    }

    /// Queues the pending backfill requests whose tables are not being read.
    async fn start_backfills<B: SnapshotBackend>(&self, backend: &mut B, reads: &mut Reads) -> Result<(), SourceError> {
        for req in self.store.pending_backfills().await.map_err(store_error)? {
            if reads.reading_any(&req.tables) {
                // A read of that table is under way: start after it.
                continue;
            }
            self.start_backfill(backend, reads, &req).await?;
        }
        Ok(())
    }

    /// Stores a fresh backfill record for each matched table of `req`,
    /// queues it, and removes the request.
    async fn start_backfill<B: SnapshotBackend>(
        &self,
        backend: &mut B,
        reads: &mut Reads,
        req: &BackfillRequest,
    ) -> Result<(), SourceError> {
        self.store.backfill_started(req).await.map_err(store_error)?;
        if self.backfill_state(req.id).await? == Some(BackfillState::Cancelled) {
            // Cancelled while it was being started.
            return self.store.remove_backfill(req.id).await.map_err(store_error);
        }
        for t in &req.tables {
            if !reads.matched.contains(t) {
                tracing::error!(source = %self.source_id, table = %t, request = req.id,
                    "backfill: table is not matched by `tables` (or does not exist); ignored");
                continue;
            }
            let mut p =
                TableProgress::start(ReadKind::Backfill, req.condition.clone(), backend.estimate_rows(t).await?);
            p.backfill = Some(req.id);
            self.store.save(t, &p).await.map_err(store_error)?;
            tracing::info!(source = %self.source_id, table = %t, request = req.id,
                condition = req.condition.as_deref().unwrap_or(""), "backfill started");
            reads.queue.push_back(SnapshotJob::new(t.clone(), p));
        }
        self.store.remove_backfill(req.id).await.map_err(store_error)
    }

    /// The state of backfill `id` in the history (`None`: not there).
    async fn backfill_state(&self, id: u64) -> Result<Option<BackfillState>, SourceError> {
        Ok(self.store.backfill(id).await.map_err(store_error)?.map(|b| b.state))
    }

    /// A stored `running` backfill record whose backfill ended (cancelled
    /// or failed while this run was down) is ended too, and stored so.
    async fn unless_backfill_ended(&self, table: &str, mut p: TableProgress) -> Result<TableProgress, SourceError> {
        let Some(id) = p.backfill.filter(|_| p.state == TableState::Running) else { return Ok(p) };
        let ended = match self.backfill_state(id).await? {
            Some(BackfillState::Cancelled) => TableState::Cancelled,
            Some(BackfillState::Failed) => TableState::Failed,
            _ => return Ok(p),
        };
        tracing::info!(source = %self.source_id, table, request = id, state = ?ended, "backfill ended: not resumed");
        p.state = ended;
        self.store.save(table, &p).await.map_err(store_error)?;
        Ok(p)
    }

    /// Ends the reads of cancelled backfills: queued ones at once, active
    /// ones before their next chunk (their record is stored when they end).
    async fn apply_cancellations(&self, reads: &mut Reads) -> Result<(), SourceError> {
        let ids: HashSet<u64> =
            reads.queue.iter().chain(reads.active.values()).filter_map(|j| j.progress.backfill).collect();
        for id in ids {
            if self.backfill_state(id).await? != Some(BackfillState::Cancelled) {
                continue;
            }
            for job in reads.active.values().filter(|j| j.progress.backfill == Some(id)) {
                job.cancel.cancel();
            }
            let (cancelled, kept): (Vec<_>, Vec<_>) =
                reads.queue.drain(..).partition(|j| j.progress.backfill == Some(id));
            reads.queue = kept.into();
            for mut job in cancelled {
                job.progress.state = TableState::Cancelled;
                self.store.save(&job.table, &job.progress).await.map_err(store_error)?;
                reads.ended.insert(job.table, job.progress);
            }
            tracing::info!(source = %self.source_id, request = id, "backfill cancelled");
        }
        Ok(())
    }

    /// Stores again the final record of an ended backfill read when the
    /// progress writer just stored an earlier chunk's record over it.
    async fn keep_ended(&self, reads: &Reads, stored: Option<&PendingProgress>) -> Result<(), SourceError> {
        let Some(p) = stored else { return Ok(()) };
        match reads.ended.get(&p.table) {
            Some(end) if p.progress.state == TableState::Running && p.progress.backfill == end.backfill => {
                self.store.save(&p.table, end).await.map_err(store_error)
            }
            _ => Ok(()),
        }
    }

    /// Accounts for one ended read task. A backfill's fatal error (its
    /// `where` failed on the server) ends that backfill, stored as
    /// `failed`; any other error (or a panic) ends the run.
    async fn on_read_end(
        &self,
        reads: &mut Reads,
        ended: Result<(String, Result<bool, SourceError>), tokio::task::JoinError>,
    ) -> Result<(), SourceError> {
        let (table, result) = ended.map_err(|e| SourceError::Retryable(format!("snapshot task failed: {e}")))?;
        let job = reads.active.remove(&table);
        let backfill = job.as_ref().and_then(|j| j.progress.backfill);
        match (result, job, backfill) {
            (Ok(true), _, backfill) => {
                reads.completed.insert(table.clone());
                if let Some(id) = backfill {
                    self.store.backfill_table_done(id, &table).await.map_err(store_error)?;
                }
            }
            (Ok(false), Some(mut job), Some(_)) if job.cancel.is_cancelled() => {
                job.progress.state = TableState::Cancelled;
                self.store.save(&table, &job.progress).await.map_err(store_error)?;
                reads.ended.insert(table, job.progress);
            }
            // The table went away or the stream stopped; no record will say done.
            (Ok(false), _, _) => {}
            (Err(SourceError::Fatal(m)), Some(mut job), Some(id)) => {
                tracing::error!(source = %self.source_id, table = %table, request = id,
                    "backfill failed; the pipeline goes on without it: {m}");
                job.progress.state = TableState::Failed;
                job.progress.error = Some(m.clone());
                self.store.save(&table, &job.progress).await.map_err(store_error)?;
                self.store.backfill_failed(id, &m).await.map_err(store_error)?;
                reads.ended.insert(table, job.progress);
            }
            (Err(e), _, _) => return Err(e),
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "schedule_tests.rs"]
mod tests;
