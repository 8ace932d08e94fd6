//! Snapshots and backfills, the parts every database source shares: the
//! `snapshot` config, the per-table progress records, backfill requests,
//! the DBLog window reconciliation, the watermark content, and the writer
//! that stores progress only once the chunk it describes is durable.
//!
//! # The method (DBLog)
//!
//! A table is read in primary-key order in chunks while the change stream
//! runs. For each chunk the source writes a **low watermark** into its own
//! log, selects the chunk (`WHERE key > last ORDER BY key LIMIT n`, a short
//! statement, no lock), and writes a **high watermark**. The stream reader
//! opens a [`Window`] at the low watermark and [`Window::touch`]es every key
//! of the table that a streamed change affects; at the high watermark it
//! drops those keys from the chunk ([`Window::reconcile`]), because the
//! streamed change is as new as or newer than the chunk's copy, and emits
//! the remaining rows as op `r` events positioned at the high watermark,
//! followed by a commit there. Changes after the high watermark come after
//! the `r` events, so "last event per key wins" always yields the table.
//!
//! # Progress
//!
//! Each table has one record in the `snapshots` namespace (Slot primitive,
//! compare-and-swap), key `{pipeline}/{table}`:
//!
//! ```json
//! {"state": "running", "kind": "snapshot", "last_key": ["41999"], "rows_done": 42000,
//!  "rows_total_estimate": 1000000, "chunk": 42}
//! ```
//!
//! [`ProgressWriter`] writes a chunk's record only after the commit at its
//! high watermark appeared on the source's durable positions, so a crash
//! (even `kill -9`) resumes from the last chunk whose events were all
//! delivered, never past one that was not. A backfill (`kind: backfill`,
//! with an optional `where`) is the same record, requested through
//! [`SnapshotStore::request_backfill`] and picked up by the running source
//! with [`SnapshotStore::pending_backfills`].
//!
//! # Scheduling
//!
//! [`Schedule::run`] is the source-agnostic loop of a snapshot reader: it
//! builds the queue of tables to read from `snapshot.mode` and the stored
//! [`TableProgress`] records, reads up to `max_parallel_tables` of them at
//! once, polls backfill requests every second, keeps the
//! `tables_remaining` gauge, stops an `initial_only` source once every
//! table's `done` record is stored, and returns the reader's outcome. A
//! source supplies what is specific to it through two traits:
//! [`SnapshotBackend`] (which tables are matched, a table's row estimate)
//! and [`TableReader`] (reading one table to the end, chunk by chunk).
//!
//! This module must never talk to a database or know a source's SQL; it
//! must never store progress for a position that is not durable.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deltaforge_storage::{CasOutcome, StorageBackend, StorageError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{mpsc, watch};

use crate::position::Position;
use crate::source::SourceError;

/// The Slot namespace of snapshot progress and backfill requests.
pub const NAMESPACE: &str = "snapshots";

/// Default rows per chunk.
pub const DEFAULT_CHUNK_SIZE: usize = 10_000;

/// How often a snapshot reader says it is still waiting for the stream.
const STREAM_WAIT_LOG: std::time::Duration = std::time::Duration::from_secs(10);

/// Waits for the stream reader's answer about a chunk, logging every 10 s
/// while it has not come: the answer comes when the stream reaches the
/// chunk's high watermark, and a stream far behind (a slot or binlog
/// position that fell behind while the pipeline was stopped) would
/// otherwise look like a hung snapshot.
pub async fn await_verdict<T>(
    mut rx: tokio::sync::oneshot::Receiver<T>,
    source_id: &str,
    table: &str,
) -> Result<T, tokio::sync::oneshot::error::RecvError> {
    let started = std::time::Instant::now();
    loop {
        match tokio::time::timeout(STREAM_WAIT_LOG, &mut rx).await {
            Ok(answer) => return answer,
            Err(_) => tracing::info!(
                source = source_id,
                table,
                waited_s = started.elapsed().as_secs(),
                "snapshot: waiting for the stream to reach the chunk's high watermark (it is still reading older changes)"
            ),
        }
    }
}

/// How long a reader waits for the stream to stop after the progress writer
/// ended, before calling the writer's end a failure.
const WRITER_GONE_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Handles one message of the progress writer in a source's snapshot
/// reader: a stored `done` record adds its table to `stored_done`. When the
/// writer has ended (`None`), returns `Ok(true)` if the stream stopped too
/// (a shutdown: the writer ends with the pipeline, a moment before the
/// stream closes `chunks`), else an error; `Ok(false)` means go on.
pub async fn on_stored<T>(
    stored: Option<PendingProgress>,
    chunks: &mpsc::Sender<T>,
    source_id: &str,
    stored_done: &mut HashSet<String>,
) -> Result<bool, SourceError> {
    match stored {
        Some(p) if p.progress.state == TableState::Done => {
            tracing::info!(source = source_id, table = %p.table, rows = p.progress.rows_done,
                kind = ?p.progress.kind, "snapshot of table done and delivered");
            stored_done.insert(p.table);
            Ok(false)
        }
        Some(_) => Ok(false),
        None if tokio::time::timeout(WRITER_GONE_GRACE, chunks.closed()).await.is_ok() => Ok(true),
        None => Err(SourceError::Retryable(
            "snapshot: the progress writer stopped while the stream runs (storage failure?)".into(),
        )),
    }
}

/// When a source snapshots its tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotMode {
    /// Snapshot each matched table once (its record says `done` afterwards),
    /// streaming all along.
    #[default]
    Initial,
    /// Never snapshot; stream only. Backfills still work.
    Never,
    /// Snapshot like `initial`, then stop the source.
    InitialOnly,
    /// Snapshot the matched tables again on every start.
    Always,
}

/// The `snapshot:` map of a source config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotConfig {
    /// When to snapshot (default `initial`).
    #[serde(default)]
    pub mode: SnapshotMode,
    /// Rows per chunk (default 10000, 1 to 1000000).
    #[serde(default = "default_chunk_size")]
    pub chunk_size: usize,
    /// Tables read at the same time (default 1, at most 16).
    #[serde(default = "one")]
    pub max_parallel_tables: usize,
}

fn default_chunk_size() -> usize {
    DEFAULT_CHUNK_SIZE
}

fn one() -> usize {
    1
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        SnapshotConfig { mode: SnapshotMode::Initial, chunk_size: DEFAULT_CHUNK_SIZE, max_parallel_tables: 1 }
    }
}

impl SnapshotConfig {
    /// Checks the ranges serde cannot: returns `(field, message)`.
    pub fn check(&self) -> Result<(), (String, String)> {
        if !(1..=1_000_000).contains(&self.chunk_size) {
            return Err(("snapshot.chunk_size".into(), "must be between 1 and 1000000".into()));
        }
        if !(1..=16).contains(&self.max_parallel_tables) {
            return Err(("snapshot.max_parallel_tables".into(), "must be between 1 and 16".into()));
        }
        Ok(())
    }
}

/// Where a table's snapshot stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TableState {
    /// Chunks remain; resume after `last_key`.
    Running,
    /// Every chunk was delivered.
    Done,
}

/// Why a table is being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadKind {
    /// The configured snapshot (`snapshot.mode`).
    #[default]
    Snapshot,
    /// An on-demand backfill.
    Backfill,
}

/// One table's progress record (see the module docs for the JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableProgress {
    /// Running or done.
    pub state: TableState,
    /// Snapshot or backfill.
    #[serde(default)]
    pub kind: ReadKind,
    /// The key of the last row of the last delivered chunk, as the source
    /// prints it (text per key column); `None`: start at the beginning.
    pub last_key: Option<Vec<String>>,
    /// Rows emitted so far.
    pub rows_done: u64,
    /// The server's row estimate when the read started (`None`: unknown).
    pub rows_total_estimate: Option<u64>,
    /// Chunks delivered.
    pub chunk: u64,
    /// The backfill's SQL condition, when one was given.
    #[serde(default, rename = "where", skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
}

impl TableProgress {
    /// A fresh record: nothing read yet.
    pub fn start(kind: ReadKind, condition: Option<String>, rows_total_estimate: Option<u64>) -> Self {
        TableProgress {
            state: TableState::Running,
            kind,
            last_key: None,
            rows_done: 0,
            rows_total_estimate,
            chunk: 0,
            condition,
        }
    }
}

/// An on-demand backfill request, as stored until the source starts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackfillRequest {
    /// Identifier, increasing per pipeline.
    pub id: u64,
    /// Tables as the source names them (`schema.table`, `db.table`).
    pub tables: Vec<String>,
    /// Optional SQL condition the re-read rows must match.
    #[serde(default, rename = "where", skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
}

/// Errors of the snapshot store.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The storage failed.
    #[error("snapshot storage: {0}")]
    Storage(#[from] StorageError),
    /// A stored value is not a valid record.
    #[error(
        "the snapshot record {key:?} is unreadable ({reason}); delete it (namespace `snapshots`) to re-read that table"
    )]
    Corrupt {
        /// The storage key.
        key: String,
        /// The parse error.
        reason: String,
    },
    /// Another writer kept changing the record.
    #[error("the snapshot record {0:?} changed concurrently; is another instance running this pipeline?")]
    Contended(String),
}

/// Progress records and backfill requests of one pipeline.
#[derive(Clone)]
pub struct SnapshotStore {
    storage: Arc<dyn StorageBackend>,
    pipeline: Arc<str>,
}

impl std::fmt::Debug for SnapshotStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotStore").field("pipeline", &self.pipeline).finish()
    }
}

/// Attempts of a compare-and-swap loop before giving up.
const CAS_ATTEMPTS: usize = 8;

impl SnapshotStore {
    /// The store of `pipeline`'s records.
    pub fn new(storage: Arc<dyn StorageBackend>, pipeline: impl Into<Arc<str>>) -> Self {
        SnapshotStore { storage, pipeline: pipeline.into() }
    }

    /// The storage key of a table's record: `{pipeline}/{table}`.
    pub fn key(&self, table: &str) -> String {
        format!("{}/{table}", self.pipeline)
    }

    /// Pending backfill requests live beside the table records; pipeline
    /// names never contain `#`, so this key cannot be a table's.
    fn requests_key(&self) -> String {
        format!("{}#backfill-requests", self.pipeline)
    }

    /// Reads a table's record.
    pub async fn load(&self, table: &str) -> Result<Option<TableProgress>, SnapshotError> {
        let key = self.key(table);
        match self.storage.slot_get(NAMESPACE, &key).await? {
            None => Ok(None),
            Some(v) => serde_json::from_str(&v.value)
                .map(Some)
                .map_err(|e| SnapshotError::Corrupt { key, reason: e.to_string() }),
        }
    }

    /// Writes a table's record, replacing whatever it held.
    pub async fn save(&self, table: &str, progress: &TableProgress) -> Result<(), SnapshotError> {
        let key = self.key(table);
        let value = serde_json::to_string(progress).expect("progress records always serialize");
        for _ in 0..CAS_ATTEMPTS {
            let current = self.storage.slot_get(NAMESPACE, &key).await?.map(|v| v.version);
            if let CasOutcome::Swapped(_) = self.storage.slot_cas(NAMESPACE, &key, current, &value).await? {
                return Ok(());
            }
        }
        Err(SnapshotError::Contended(key))
    }

    /// Removes a table's record (the next `initial` snapshot reads it again).
    pub async fn clear(&self, table: &str) -> Result<bool, SnapshotError> {
        Ok(self.storage.slot_delete(NAMESPACE, &self.key(table)).await?)
    }

    async fn read_requests(&self) -> Result<(Option<u64>, Vec<BackfillRequest>), SnapshotError> {
        let key = self.requests_key();
        match self.storage.slot_get(NAMESPACE, &key).await? {
            None => Ok((None, Vec::new())),
            Some(v) => {
                let list = serde_json::from_str(&v.value)
                    .map_err(|e| SnapshotError::Corrupt { key, reason: e.to_string() })?;
                Ok((Some(v.version), list))
            }
        }
    }

    /// Queues a backfill for the running source; returns its id.
    pub async fn request_backfill(
        &self,
        tables: Vec<String>,
        condition: Option<String>,
    ) -> Result<BackfillRequest, SnapshotError> {
        let key = self.requests_key();
        for _ in 0..CAS_ATTEMPTS {
            let (version, mut list) = self.read_requests().await?;
            let id = list.iter().map(|r| r.id).max().unwrap_or(0).max(version.unwrap_or(0)) + 1;
            let request = BackfillRequest { id, tables: tables.clone(), condition: condition.clone() };
            list.push(request.clone());
            let value = serde_json::to_string(&list).expect("requests always serialize");
            if let CasOutcome::Swapped(_) = self.storage.slot_cas(NAMESPACE, &key, version, &value).await? {
                return Ok(request);
            }
        }
        Err(SnapshotError::Contended(key))
    }

    /// Backfill requests not yet started, oldest first.
    pub async fn pending_backfills(&self) -> Result<Vec<BackfillRequest>, SnapshotError> {
        Ok(self.read_requests().await?.1)
    }

    /// Removes a started request (its tables' records now carry it).
    pub async fn remove_backfill(&self, id: u64) -> Result<(), SnapshotError> {
        let key = self.requests_key();
        for _ in 0..CAS_ATTEMPTS {
            let (version, mut list) = self.read_requests().await?;
            let before = list.len();
            list.retain(|r| r.id != id);
            if list.len() == before {
                return Ok(());
            }
            let value = serde_json::to_string(&list).expect("requests always serialize");
            if let CasOutcome::Swapped(_) = self.storage.slot_cas(NAMESPACE, &key, version, &value).await? {
                return Ok(());
            }
        }
        Err(SnapshotError::Contended(key))
    }
}

/// The canonical text of a row key (its values as a JSON array), the same
/// for a chunk row and a streamed change of that row as long as both map
/// the server's values the same way.
pub fn key_string<'a>(values: impl IntoIterator<Item = &'a Value>) -> String {
    let mut out = String::from("[");
    for (i, v) in values.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&v.to_string());
    }
    out.push(']');
    out
}

/// The stream side of one chunk's read: the keys changed between its low and
/// its high watermark.
#[derive(Debug, Default, Clone)]
pub struct Window {
    keys: HashSet<String>,
    truncated: bool,
}

impl Window {
    /// An empty window (opened at the low watermark).
    pub fn new() -> Self {
        Window::default()
    }

    /// A streamed change touched the row with this key (insert, update
    /// before and after, delete).
    pub fn touch(&mut self, key: String) {
        self.keys.insert(key);
    }

    /// The table was truncated inside the window: every row of the chunk is
    /// older than the truncate, so none may be emitted.
    pub fn truncate(&mut self) {
        self.truncated = true;
    }

    /// Number of distinct keys touched.
    pub fn touched(&self) -> usize {
        self.keys.len()
    }

    /// Keeps the chunk rows (keyed, in chunk order) whose key no streamed
    /// change in the window touched.
    pub fn reconcile<T>(&self, rows: Vec<(String, T)>) -> Vec<T> {
        if self.truncated {
            return Vec::new();
        }
        rows.into_iter().filter(|(k, _)| !self.keys.contains(k)).map(|(_, r)| r).collect()
    }
}

/// Which watermark of a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WatermarkKind {
    /// Written before the chunk's select.
    Low,
    /// Written after it.
    High,
}

/// What a watermark carries, as JSON, so that the stream reader knows
/// which window it opens or closes without asking anyone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermark {
    /// The run that wrote it: watermarks of an earlier run, or of another
    /// pipeline reading the same server, are ignored.
    pub run: String,
    /// Chunk identifier within the run.
    pub chunk: u64,
    /// Low or high.
    pub kind: WatermarkKind,
    /// The table read, as the source names it.
    pub table: String,
    /// Its key columns, in key order (empty: the whole row is the key).
    pub key: Vec<String>,
}

/// A per-run identifier for watermarks: unique enough that two runs (or two
/// pipelines) never share one.
pub fn new_run_id(source_id: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{source_id}:{}:{nanos:x}", std::process::id())
}

/// A progress record to store once its chunk is durable.
#[derive(Debug, Clone)]
pub struct PendingProgress {
    /// The commit position of the chunk's events (its high watermark).
    pub position: Position,
    /// The table.
    pub table: String,
    /// The record to store.
    pub progress: TableProgress,
}

/// Stores progress records in order, each only after its position is
/// durable. Runs as its own task so the stream reader never waits on it.
pub struct ProgressWriter {
    store: SnapshotStore,
    durable: watch::Receiver<Option<Position>>,
    rx: mpsc::UnboundedReceiver<PendingProgress>,
    stored: Option<mpsc::UnboundedSender<PendingProgress>>,
}

impl ProgressWriter {
    /// A writer fed by the returned sender.
    pub fn new(
        store: SnapshotStore,
        durable: watch::Receiver<Option<Position>>,
    ) -> (Self, mpsc::UnboundedSender<PendingProgress>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (ProgressWriter { store, durable, rx, stored: None }, tx)
    }

    /// Also reports each record once stored (for tables-done accounting).
    pub fn notify(mut self, stored: mpsc::UnboundedSender<PendingProgress>) -> Self {
        self.stored = Some(stored);
        self
    }

    /// Runs until the sender is dropped or the pipeline goes away. A record
    /// whose position never becomes durable is never written.
    pub async fn run(mut self) -> Result<(), SnapshotError> {
        while let Some(p) = self.rx.recv().await {
            let reached =
                self.durable.wait_for(|d| d.as_ref().is_some_and(|d| p.position.is_at_or_before(d))).await.is_ok();
            if !reached {
                return Ok(());
            }
            self.store.save(&p.table, &p.progress).await?;
            if let Some(n) = &self.stored {
                let _ = n.send(p);
            }
        }
        Ok(())
    }
}

/// A text bar such as `[#######.............]  35%` for `done` of `total`
/// rows (the total is an estimate, so the bar stops at 100%).
pub fn progress_bar(done: u64, total: Option<u64>, width: usize) -> String {
    match total.filter(|t| *t > 0) {
        Some(t) => {
            let frac = (done as f64 / t as f64).clamp(0.0, 1.0);
            let filled = (frac * width as f64).round() as usize;
            format!("[{}{}] {:>3.0}%", "#".repeat(filled), ".".repeat(width - filled), frac * 100.0)
        }
        None => format!("[{}] ?", ".".repeat(width)),
    }
}

/// The progress log lines of one table's read: rows done/total every 5 s
/// (every second, with a [`progress_bar`], when stderr is a terminal) and
/// when the table is done.
pub struct ProgressLog {
    started: std::time::Instant,
    last: std::time::Instant,
    every: std::time::Duration,
    bar: bool,
}

impl Default for ProgressLog {
    fn default() -> Self {
        use std::io::IsTerminal as _;
        let bar = std::io::stderr().is_terminal();
        let now = std::time::Instant::now();
        ProgressLog { started: now, last: now, every: std::time::Duration::from_secs(if bar { 1 } else { 5 }), bar }
    }
}

impl ProgressLog {
    /// Logs `p` if it is time (or the table is done).
    pub fn chunk(&mut self, source: &str, table: &str, p: &TableProgress) {
        let done = p.state == TableState::Done;
        if !done && self.last.elapsed() < self.every {
            return;
        }
        self.last = std::time::Instant::now();
        let rate = p.rows_done as f64 / self.started.elapsed().as_secs_f64().max(0.001);
        let bar = if self.bar { progress_bar(p.rows_done, p.rows_total_estimate, 30) } else { String::new() };
        tracing::info!(source, table, rows_done = p.rows_done, rows_total_estimate = ?p.rows_total_estimate,
            chunks = p.chunk, rows_per_sec = rate as u64, done, "snapshot progress {bar}");
    }
}

/// Snapshot metrics of one pipeline (`deltaforge_snapshot_*`).
#[derive(Clone)]
pub struct SnapshotMetrics {
    pipeline: String,
    remaining: metrics::Gauge,
}

impl SnapshotMetrics {
    /// Metrics labelled with the pipeline.
    pub fn new(pipeline: &str) -> Self {
        SnapshotMetrics {
            pipeline: pipeline.to_string(),
            remaining: metrics::gauge!("deltaforge_snapshot_tables_remaining", "pipeline" => pipeline.to_string()),
        }
    }

    /// Counts rows emitted as `r` events for a table.
    pub fn rows(&self, table: &str, n: u64) {
        metrics::counter!("deltaforge_snapshot_rows_total", "pipeline" => self.pipeline.clone(), "table" => table.to_string())
            .increment(n);
    }

    /// Sets the number of tables still to read (snapshots and backfills).
    pub fn tables_remaining(&self, n: usize) {
        self.remaining.set(n as f64);
    }
}

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
        let tables = backend.matched_tables().await?;
        let mut queue: VecDeque<SnapshotJob> = VecDeque::new();
        for table in &tables {
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
        if !queue.is_empty() {
            tracing::info!(source = %self.source_id, tables = queue.len(), chunk_size = self.cfg.chunk_size,
                "snapshot: reading tables while streaming");
        }
        let metrics = SnapshotMetrics::new(&self.pipeline);
        let initial_only = self.cfg.mode == SnapshotMode::InitialOnly;
        let mut active: HashSet<String> = HashSet::new();
        let mut workers = tokio::task::JoinSet::new();
        // Records still to be stored before an `initial_only` run may stop.
        // Tables whose last chunk was reconciled, and tables whose `done`
        // record is stored (either may be learnt first).
        let mut completed: HashSet<String> = HashSet::new();
        let mut stored_done: HashSet<String> = HashSet::new();
        let mut poll = tokio::time::interval(BACKFILL_POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            while active.len() < self.cfg.max_parallel_tables.max(1) {
                let Some(job) = queue.pop_front() else { break };
                active.insert(job.table.clone());
                let reader = reader.clone();
                workers.spawn(async move { (job.table.clone(), reader.read_table(job).await) });
            }
            metrics.tables_remaining(queue.len() + active.len());
            if initial_only && queue.is_empty() && active.is_empty() && completed.is_subset(&stored_done) {
                tracing::info!(source = %self.source_id, "snapshot done (mode initial_only): stopping the source");
                return Ok(true);
            }
            tokio::select! {
                done = workers.join_next(), if !workers.is_empty() => {
                    let (table, result) = done.expect("guarded by is_empty").map_err(|e| SourceError::Retryable(format!("snapshot task failed: {e}")))?;
                    active.remove(&table);
                    // `false`: the table went away or the stream stopped; no record will say done.
                    if result? {
                        completed.insert(table);
                    }
                }
                stored = self.stored.recv() => {
                    if on_stored(stored, &self.chunks, &self.source_id, &mut stored_done).await? {
                        return Ok(false);
                    }
                }
                // The stream stopped: nothing more can be delivered.
                _ = self.chunks.closed() => return Ok(false),
                _ = poll.tick() => {
                    for req in self.store.pending_backfills().await.map_err(store_error)? {
                        if req.tables.iter().any(|t| active.contains(t) || queue.iter().any(|j| &j.table == t)) {
                            // A read of that table is under way: start after it.
                            continue;
                        }
                        for t in &req.tables {
                            if !tables.contains(t) {
                                tracing::error!(source = %self.source_id, table = %t, request = req.id,
                                    "backfill: table is not matched by `tables` (or does not exist); ignored");
                                continue;
                            }
                            let p = TableProgress::start(ReadKind::Backfill, req.condition.clone(), backend.estimate_rows(t).await?);
                            self.store.save(t, &p).await.map_err(store_error)?;
                            tracing::info!(source = %self.source_id, table = %t, request = req.id,
                                condition = req.condition.as_deref().unwrap_or(""), "backfill started");
                            queue.push_back(SnapshotJob { table: t.clone(), progress: p });
                        }
                        self.store.remove_backfill(req.id).await.map_err(store_error)?;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::position::Lsn;
    use deltaforge_storage::MemoryBackend;
    use serde_json::json;

    fn k(i: i64) -> String {
        key_string(&[json!(i)])
    }

    #[test]
    fn reconcile_drops_keys_changed_in_the_window_and_keeps_order() {
        let mut w = Window::new();
        w.touch(k(2));
        w.touch(k(9)); // a row inserted in the window, not in the chunk
        let rows = (1..=4).map(|i| (k(i), i)).collect();
        assert_eq!(w.reconcile(rows), vec![1, 3, 4]);
        assert_eq!(w.touched(), 2);
    }

    #[test]
    fn truncate_in_the_window_drops_the_chunk() {
        let mut w = Window::new();
        w.truncate();
        assert!(w.reconcile(vec![(k(1), 1)]).is_empty());
    }

    #[test]
    fn composite_keys_are_distinct_and_canonical() {
        assert_eq!(key_string(&[json!(1), json!("a")]), r#"[1,"a"]"#);
        assert_ne!(key_string(&[json!("1")]), key_string(&[json!(1)]));
        let mut w = Window::new();
        w.touch(key_string(&[json!(1), json!("a")]));
        let rows = vec![(key_string(&[json!(1), json!("a")]), "x"), (key_string(&[json!(1), json!("b")]), "y")];
        assert_eq!(w.reconcile(rows), vec!["y"]);
    }

    #[test]
    fn progress_bars() {
        assert_eq!(progress_bar(35, Some(100), 20), "[#######.............]  35%");
        assert_eq!(progress_bar(150, Some(100), 4), "[####] 100%");
        assert_eq!(progress_bar(5, None, 3), "[...] ?");
    }

    #[test]
    fn config_defaults_and_ranges() {
        let c: SnapshotConfig = serde_json::from_value(json!({})).unwrap();
        assert_eq!(c, SnapshotConfig::default());
        let c: SnapshotConfig = serde_json::from_value(json!({"mode": "initial_only", "chunk_size": 5})).unwrap();
        assert_eq!(c.mode, SnapshotMode::InitialOnly);
        assert!(c.check().is_ok());
        let bad: SnapshotConfig = serde_json::from_value(json!({"chunk_size": 0})).unwrap();
        assert_eq!(bad.check().unwrap_err().0, "snapshot.chunk_size");
        assert!(serde_json::from_value::<SnapshotConfig>(json!({"mode": "sometimes"})).is_err());
        assert!(serde_json::from_value::<SnapshotConfig>(json!({"chunk": 5})).is_err());
    }

    #[test]
    fn progress_json_shape() {
        let mut p = TableProgress::start(ReadKind::Snapshot, None, Some(100));
        p.last_key = Some(vec!["41".into()]);
        p.rows_done = 42;
        p.chunk = 3;
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            json!({"state": "running", "kind": "snapshot", "last_key": ["41"], "rows_done": 42,
                   "rows_total_estimate": 100, "chunk": 3})
        );
        let b = TableProgress::start(ReadKind::Backfill, Some("id < 5".into()), None);
        assert_eq!(serde_json::to_value(&b).unwrap()["where"], "id < 5");
    }

    #[tokio::test]
    async fn store_round_trip_and_backfill_requests() {
        let store = SnapshotStore::new(Arc::new(MemoryBackend::new()), "p");
        assert_eq!(store.key("public.t"), "p/public.t");
        assert!(store.load("public.t").await.unwrap().is_none());
        let p = TableProgress::start(ReadKind::Snapshot, None, None);
        store.save("public.t", &p).await.unwrap();
        store.save("public.t", &p).await.unwrap();
        assert_eq!(store.load("public.t").await.unwrap(), Some(p));
        let a = store.request_backfill(vec!["public.t".into()], Some("id > 3".into())).await.unwrap();
        let b = store.request_backfill(vec!["public.u".into()], None).await.unwrap();
        assert!(b.id > a.id);
        assert_eq!(store.pending_backfills().await.unwrap(), vec![a.clone(), b.clone()]);
        store.remove_backfill(a.id).await.unwrap();
        assert_eq!(store.pending_backfills().await.unwrap(), vec![b]);
        assert!(store.clear("public.t").await.unwrap());
    }

    /// A catalogue of fixed tables, recording the estimates asked for.
    struct FakeCatalogue {
        tables: Vec<String>,
        estimated: Vec<String>,
    }

    #[async_trait]
    impl SnapshotBackend for FakeCatalogue {
        async fn matched_tables(&mut self) -> Result<Vec<String>, SourceError> {
            Ok(self.tables.clone())
        }

        async fn estimate_rows(&mut self, table: &str) -> Result<Option<u64>, SourceError> {
            self.estimated.push(table.to_string());
            Ok(Some(7))
        }
    }

    /// Reads every table at once; with `report`, stores its `done` record
    /// as the progress writer would.
    struct FakeReader {
        read: Arc<std::sync::Mutex<Vec<SnapshotJob>>>,
        report: Option<mpsc::UnboundedSender<PendingProgress>>,
    }

    #[async_trait]
    impl TableReader for FakeReader {
        async fn read_table(&self, job: SnapshotJob) -> Result<bool, SourceError> {
            let mut progress = job.progress.clone();
            progress.state = TableState::Done;
            self.read.lock().unwrap().push(job.clone());
            if let Some(tx) = &self.report {
                let position = Position::Postgres { lsn: Lsn(1), tx_id: None };
                tx.send(PendingProgress { position, table: job.table, progress }).unwrap();
            }
            Ok(true)
        }
    }

    struct Harness {
        store: SnapshotStore,
        read: Arc<std::sync::Mutex<Vec<SnapshotJob>>>,
        stored_tx: mpsc::UnboundedSender<PendingProgress>,
        chunks_rx: mpsc::Receiver<()>,
        task: tokio::task::JoinHandle<(Result<bool, SourceError>, Vec<String>)>,
    }

    /// Records: `s.done` done, `s.run` running after key 5, `s.new` none.
    async fn start(mode: SnapshotMode, fresh: bool, report: bool, backfill: bool) -> Harness {
        let store = SnapshotStore::new(Arc::new(MemoryBackend::new()), "p");
        let mut done = TableProgress::start(ReadKind::Snapshot, None, None);
        done.state = TableState::Done;
        store.save("s.done", &done).await.unwrap();
        let mut running = TableProgress::start(ReadKind::Snapshot, None, None);
        running.last_key = Some(vec!["5".into()]);
        store.save("s.run", &running).await.unwrap();
        if backfill {
            store.request_backfill(vec!["s.done".into(), "s.zz".into()], Some("id > 1".into())).await.unwrap();
        }
        let (stored_tx, stored) = mpsc::unbounded_channel();
        let (chunks, chunks_rx) = mpsc::channel(1);
        let read = Arc::new(std::sync::Mutex::new(Vec::new()));
        let reader = FakeReader { read: read.clone(), report: report.then(|| stored_tx.clone()) };
        let schedule = Schedule {
            cfg: SnapshotConfig { mode, chunk_size: 10, max_parallel_tables: 2 },
            source_id: "src".into(),
            pipeline: "p".into(),
            store: store.clone(),
            fresh,
            stored,
            chunks,
        };
        let task = tokio::spawn(async move {
            let mut catalogue =
                FakeCatalogue { tables: vec!["s.done".into(), "s.new".into(), "s.run".into()], estimated: vec![] };
            let r = schedule.run(&mut catalogue, reader).await;
            (r, catalogue.estimated)
        });
        Harness { store, read, stored_tx, chunks_rx, task }
    }

    impl Harness {
        /// Waits until `n` tables were read, then a moment for any more.
        async fn reads(&self, n: usize) -> Vec<(String, ReadKind, Option<Vec<String>>, Option<String>)> {
            for _ in 0..300 {
                if self.read.lock().unwrap().len() >= n {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            let mut out: Vec<_> = self
                .read
                .lock()
                .unwrap()
                .iter()
                .map(|j| (j.table.clone(), j.progress.kind, j.progress.last_key.clone(), j.progress.condition.clone()))
                .collect();
            out.sort_by(|a, b| a.0.cmp(&b.0));
            out
        }

        /// Stops the stream; the schedule ends with `Ok(false)`.
        async fn stop(self) -> Vec<String> {
            drop(self.chunks_rx);
            let (r, estimated) = self.task.await.unwrap();
            assert!(matches!(r, Ok(false)), "{r:?}");
            estimated
        }
    }

    fn snap(t: &str, last_key: Option<&str>) -> (String, ReadKind, Option<Vec<String>>, Option<String>) {
        (t.to_string(), ReadKind::Snapshot, last_key.map(|k| vec![k.to_string()]), None)
    }

    #[tokio::test]
    async fn schedule_picks_tables_by_mode_and_records() {
        // initial: tables not done; a running record resumes.
        let h = start(SnapshotMode::Initial, false, false, false).await;
        assert_eq!(h.reads(2).await, vec![snap("s.new", None), snap("s.run", Some("5"))]);
        let fresh_record = h.store.load("s.new").await.unwrap().unwrap();
        assert_eq!(fresh_record, TableProgress::start(ReadKind::Snapshot, None, Some(7)));
        assert_eq!(h.stop().await, vec!["s.new"]);
        // always: every table, a running record still resumes.
        let h = start(SnapshotMode::Always, false, false, false).await;
        assert_eq!(h.reads(3).await, vec![snap("s.done", None), snap("s.new", None), snap("s.run", Some("5"))]);
        assert_eq!(h.stop().await, vec!["s.done", "s.new"]);
        // never: only a running record.
        let h = start(SnapshotMode::Never, false, false, false).await;
        assert_eq!(h.reads(1).await, vec![snap("s.run", Some("5"))]);
        assert!(h.stop().await.is_empty());
        // No checkpoint: records are ignored, every table read afresh.
        let h = start(SnapshotMode::Initial, true, false, false).await;
        assert_eq!(h.reads(3).await, vec![snap("s.done", None), snap("s.new", None), snap("s.run", None)]);
        assert_eq!(h.stop().await, vec!["s.done", "s.new", "s.run"]);
    }

    #[tokio::test]
    async fn initial_only_stops_once_every_done_record_is_stored() {
        let h = start(SnapshotMode::InitialOnly, false, true, false).await;
        let (r, _) = h.task.await.unwrap();
        assert!(matches!(r, Ok(true)), "{r:?}");
        assert_eq!(h.read.lock().unwrap().len(), 2);
        // Read to the end but not yet stored: the source keeps running.
        let mut h = start(SnapshotMode::InitialOnly, false, false, false).await;
        assert_eq!(h.reads(2).await.len(), 2);
        assert!(!h.task.is_finished());
        for t in ["s.new", "s.run"] {
            let mut progress = TableProgress::start(ReadKind::Snapshot, None, None);
            progress.state = TableState::Done;
            let position = Position::Postgres { lsn: Lsn(1), tx_id: None };
            h.stored_tx.send(PendingProgress { position, table: t.into(), progress }).unwrap();
        }
        let (r, _) = (&mut h.task).await.unwrap();
        assert!(matches!(r, Ok(true)), "{r:?}");
    }

    #[tokio::test]
    async fn backfills_are_polled_and_unmatched_tables_ignored() {
        let h = start(SnapshotMode::Never, false, false, true).await;
        let reads = h.reads(2).await;
        assert_eq!(
            reads,
            vec![
                ("s.done".to_string(), ReadKind::Backfill, None, Some("id > 1".to_string())),
                snap("s.run", Some("5")),
            ]
        );
        assert!(h.store.pending_backfills().await.unwrap().is_empty());
        assert_eq!(h.stop().await, vec!["s.done"]);
    }

    #[tokio::test]
    async fn progress_is_written_only_once_durable() {
        let store = SnapshotStore::new(Arc::new(MemoryBackend::new()), "p");
        let (dtx, drx) = watch::channel(None);
        let (writer, tx) = ProgressWriter::new(store.clone(), drx);
        let task = tokio::spawn(writer.run());
        let at = |lsn| Position::Postgres { lsn: Lsn(lsn), tx_id: None };
        let mut p = TableProgress::start(ReadKind::Snapshot, None, None);
        p.chunk = 1;
        tx.send(PendingProgress { position: at(100), table: "t".into(), progress: p.clone() }).unwrap();
        dtx.send(Some(at(99))).unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(store.load("t").await.unwrap().is_none(), "stored before its chunk was durable");
        dtx.send(Some(at(100))).unwrap();
        for _ in 0..100 {
            if store.load("t").await.unwrap().is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(store.load("t").await.unwrap(), Some(p));
        drop(tx);
        task.await.unwrap().unwrap();
    }
}
