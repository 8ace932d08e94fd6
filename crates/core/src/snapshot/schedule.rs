//! The source-agnostic loop of a snapshot reader ([`Schedule::run`]): which
//! tables are read (from `snapshot.mode` and the stored records), how many at
//! once, backfill polling, the `tables_remaining` gauge, and when an
//! `initial_only` source may stop. A source plugs in through
//! [`SnapshotBackend`] and [`TableReader`].
//!
//! This module owns the order and concurrency of table reads. It must never
//! talk to a database, and never store a record other than a fresh one
//! (a `running` record with nothing read, which is always safe).

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::snapshot::config::{SnapshotConfig, SnapshotMode};
use crate::snapshot::output::SnapshotMetrics;
use crate::snapshot::progress::{BackfillRequest, PendingProgress, ReadKind, TableProgress, TableState};
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
    /// Tables being read.
    active: HashSet<String>,
    /// One task per active table, ending with its read's result.
    workers: JoinSet<(String, Result<bool, SourceError>)>,
    /// Tables whose last chunk was reconciled. An `initial_only` run stops
    /// only once each of them is also in `stored_done`; either set may
    /// learn of a table first.
    completed: HashSet<String>,
    /// Tables whose `done` record is stored.
    stored_done: HashSet<String>,
}

impl Reads {
    fn new(matched: Vec<String>, queue: VecDeque<SnapshotJob>) -> Self {
        Reads {
            matched,
            queue,
            active: HashSet::new(),
            workers: JoinSet::new(),
            completed: HashSet::new(),
            stored_done: HashSet::new(),
        }
    }

    /// Starts queued reads up to `parallel` at once.
    fn spawn_ready<R: TableReader>(&mut self, reader: &Arc<R>, parallel: usize) {
        while self.active.len() < parallel {
            let Some(job) = self.queue.pop_front() else { break };
            self.active.insert(job.table.clone());
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
        tables.iter().any(|t| self.active.contains(t) || self.queue.iter().any(|j| &j.table == t))
    }

    /// Accounts for one ended read task; its error (or a panic) ends the run.
    fn on_read_end(
        &mut self,
        ended: Result<(String, Result<bool, SourceError>), tokio::task::JoinError>,
    ) -> Result<(), SourceError> {
        let (table, result) = ended.map_err(|e| SourceError::Retryable(format!("snapshot task failed: {e}")))?;
        self.active.remove(&table);
        // `false`: the table went away or the stream stopped; no record will say done.
        if result? {
            self.completed.insert(table);
        }
        Ok(())
    }
}

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
        loop {
            reads.spawn_ready(&reader, self.cfg.max_parallel_tables.max(1));
            metrics.tables_remaining(reads.remaining());
            if initial_only && reads.all_done_and_stored() {
                tracing::info!(source = %self.source_id, "snapshot done (mode initial_only): stopping the source");
                return Ok(true);
            }
            tokio::select! {
                ended = reads.workers.join_next(), if !reads.workers.is_empty() => {
                    reads.on_read_end(ended.expect("guarded by is_empty"))?;
                }
                stored = self.stored.recv() => {
                    if on_stored(stored, &self.chunks, &self.source_id, &mut reads.stored_done).await? {
                        return Ok(false);
                    }
                }
                // The stream stopped: nothing more can be delivered.
                _ = self.chunks.closed() => return Ok(false),
                _ = poll.tick() => self.start_backfills(backend, &mut reads).await?,
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
                queue.push_back(SnapshotJob { table: table.clone(), progress });
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
        for t in &req.tables {
            if !reads.matched.contains(t) {
                tracing::error!(source = %self.source_id, table = %t, request = req.id,
                    "backfill: table is not matched by `tables` (or does not exist); ignored");
                continue;
            }
            let p = TableProgress::start(ReadKind::Backfill, req.condition.clone(), backend.estimate_rows(t).await?);
            self.store.save(t, &p).await.map_err(store_error)?;
            tracing::info!(source = %self.source_id, table = %t, request = req.id,
                condition = req.condition.as_deref().unwrap_or(""), "backfill started");
            reads.queue.push_back(SnapshotJob { table: t.clone(), progress: p });
        }
        self.store.remove_backfill(req.id).await.map_err(store_error)
    }
}

#[cfg(test)]
#[path = "schedule_tests.rs"]
mod tests;
