//! The snapshot reader: reads matched tables (and backfills) in key order,
//! in chunks, on an ordinary connection, while the stream runs, and hands
//! each chunk to the [`crate::stream::Streamer`] that reconciles it at its high
//! watermark (the DBLog method, see [`deltaforge_core::snapshot`]).
//!
//! Per chunk, on its own connection ([`tokio_postgres`], with TLS as the
//! DSN's `sslmode`, `sslrootcert`, `sslcert` and `sslkey` say, with the
//! same meanings as on the replication stream; see [`crate::tls`]):
//!
//! 1. the low watermark: `pg_logical_emit_message(false,
//!    'deltaforge-watermark', json)`, written with the previous chunk's
//!    high watermark (alone for a table's first chunk);
//! 2. the chunk, in one round trip: `BEGIN ISOLATION LEVEL REPEATABLE READ
//!    READ ONLY`, the transaction's snapshot (`pg_current_snapshot()`),
//!    `SELECT … WHERE (key) > (last) ORDER BY key LIMIT chunk_size`,
//!    `COMMIT`: one short read-only transaction per chunk, no lock beyond
//!    the `ACCESS SHARE` every select takes (which blocks no writer, and an
//!    `ALTER TABLE` only for that one chunk's read). The rows go to the
//!    streamer at once and are converted from text on a blocking thread
//!    while the reader goes on;
//! 3. the high watermark, with the next chunk's low one, in a short
//!    transaction that takes an xid (`txid_current()`) so that its commit
//!    flushes the WAL and the messages reach the stream at once
//!    (PostgreSQL before 17 has no `flush` argument), followed in the same
//!    round trip by the slot check and the table's columns and key for the
//!    next chunk (read per chunk so that a concurrent `ADD COLUMN` shows
//!    up);
//! 4. the stream's verdict: accepted, or retry when a transaction that the
//!    stream delivered before the low watermark was not yet visible to the
//!    chunk's snapshot (PostgreSQL writes a commit record before it makes
//!    the transaction visible, so this rare race is detected and the chunk
//!    read again rather than emitting a stale row).
//!
//! The key is the primary key; without one, the first `NOT NULL` unique
//! index (fewest columns); without either, the table is read in `ctid`
//! page ranges and a row is matched against the stream by its whole image
//! (PostgreSQL publishes updates and deletes of such tables only with
//! `REPLICA IDENTITY FULL`; rows identical in every column that change
//! while their chunk is read may be delivered once too often or too
//! rarely). A table is never skipped silently.
//!
//! Which tables are read: with `mode: initial` / `initial_only` each
//! matched table whose record is not `done`; `always`: every matched table
//! on each start (a `running` record resumes); `never`: none. With no
//! checkpoint (first start, or after a reset) earlier records are ignored
//! and every table is read again. Backfill requests are polled every
//! second and run through the same chunks. Before each chunk the slot is
//! checked: a missing or invalidated (`wal_status = lost`) slot stops the
//! source with an error.
//!
//! This module must never hold a transaction open across chunks, never take
//! an explicit lock, and never store progress itself: the streamer hands
//! progress to the [`ProgressWriter`](deltaforge_core::snapshot::ProgressWriter)
//! only with the durable position it depends on.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deltaforge_core::snapshot::{
    key_string, Schedule, SnapshotBackend, SnapshotConfig, SnapshotJob as Job, SnapshotMode, SnapshotStore,
    TableProgress, TableReader, TableState, Watermark, WatermarkKind,
};
use deltaforge_core::{Columns, Row, SourceError};
use futures::FutureExt as _;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage, SimpleQueryRow};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::{any_matches, Dsn, TablePattern};
use crate::tls;
use crate::values;

/// Prefix of the logical decoding messages that carry watermarks.
pub const WATERMARK_PREFIX: &str = "deltaforge-watermark";

/// A SQL string literal.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A SQL identifier, always quoted.
fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// A transaction snapshot (`pg_current_snapshot()`): which transactions the
/// chunk's select could not see.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct XidSnapshot {
    /// Lowest transaction id still running.
    pub xmin: u64,
    /// First transaction id not yet assigned.
    pub xmax: u64,
    /// Transaction ids running at the time.
    pub xip: Vec<u64>,
}

impl XidSnapshot {
    /// Parses `xmin:xmax:xip,xip,…`.
    pub fn parse(s: &str) -> Option<Self> {
        let mut it = s.trim().splitn(3, ':');
        let xmin = it.next()?.parse().ok()?;
        let xmax = it.next()?.parse().ok()?;
        let xip = match it.next() {
            Some("") | None => Vec::new(),
            Some(list) => list.split(',').map(|x| x.parse().ok()).collect::<Option<Vec<u64>>>()?,
        };
        Some(XidSnapshot { xmin, xmax, xip })
    }

    /// True when the transaction with this (32-bit, as streamed) xid was
    /// invisible to the snapshot.
    pub fn invisible(&self, xid: u32) -> bool {
        let xmax32 = self.xmax as u32;
        // Modular comparison: xids wrap around at 2^32.
        xid.wrapping_sub(xmax32) as i32 >= 0 || self.xip.iter().any(|x| *x as u32 == xid)
    }
}

/// How a table's rows are ordered and matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyKind {
    /// Key columns (primary key or a `NOT NULL` unique index), by position
    /// in the column list.
    Columns(Vec<usize>),
    /// No usable key: `ctid` page ranges, whole-row matching.
    Ctid,
}

/// A table as the snapshot reads it.
#[derive(Debug, Clone)]
pub struct TableInfo {
    /// Schema.
    pub schema: Arc<str>,
    /// Table.
    pub table: Arc<str>,
    /// Columns, in attribute order.
    pub columns: Columns,
    /// Their type OIDs.
    pub type_oids: Vec<u32>,
    /// The key.
    pub key: KeyKind,
}

impl TableInfo {
    /// `schema.table`.
    pub fn name(&self) -> String {
        format!("{}.{}", self.schema, self.table)
    }

    /// Key column names (empty: the whole row).
    pub fn key_names(&self) -> Vec<String> {
        match &self.key {
            KeyKind::Columns(idx) => idx.iter().map(|i| self.columns[*i].to_string()).collect(),
            KeyKind::Ctid => Vec::new(),
        }
    }
}

/// One chunk, handed to the streamer before its high watermark is written.
pub struct ChunkMsg {
    /// Chunk id within the run (as in its watermarks).
    pub chunk: u64,
    /// `schema.table`.
    pub table: String,
    /// Schema name.
    pub schema: Arc<str>,
    /// Table name.
    pub table_name: Arc<str>,
    /// Rows with their key strings ([`key_string`]), in key order, being
    /// converted from the server's text off the reader's path (the reader
    /// selects the next chunk meanwhile).
    pub rows: tokio::task::JoinHandle<Vec<(String, Row)>>,
    /// The select's snapshot.
    pub snapshot: XidSnapshot,
    /// The table's record once this chunk is delivered.
    pub progress: TableProgress,
    /// The verdict: `true` (accepted: its rows are emitted at the high
    /// watermark) or `false` (it raced a commit: read the chunk again).
    pub verdict: oneshot::Sender<bool>,
}

/// What the reader hands the streamer.
pub struct SnapshotLink {
    /// Identifies this run's watermarks.
    pub run: String,
    /// Chunks, each sent before its high watermark is written.
    pub chunks: mpsc::Receiver<ChunkMsg>,
    /// The reader's outcome: `Ok(true)` when the source should stop
    /// (`initial_only`, all tables done and stored), `Ok(false)` when it
    /// has nothing more to do for now, or the error that must stop it.
    pub outcome: oneshot::Receiver<Result<bool, SourceError>>,
}

/// Everything the reader needs.
pub struct Reader {
    /// Snapshot settings.
    pub cfg: SnapshotConfig,
    /// Where to connect.
    pub dsn: Dsn,
    /// Matched tables.
    pub patterns: Vec<TablePattern>,
    /// The replication slot, watched for loss.
    pub slot: String,
    /// Source id, for logs.
    pub source_id: Arc<str>,
    /// Pipeline name, for metrics.
    pub pipeline: Arc<str>,
    /// Progress records.
    pub store: SnapshotStore,
    /// True when the source has no checkpoint (every table is read again).
    pub fresh: bool,
    /// Receives each progress record once stored.
    pub stored: mpsc::UnboundedReceiver<deltaforge_core::snapshot::PendingProgress>,
}

/// Fatal errors keep their kind; query failures may pass.
fn db_error(what: &str, e: tokio_postgres::Error) -> SourceError {
    let text = match e.as_db_error() {
        Some(db) => format!("{}: {} (SQLSTATE {})", db.severity(), db.message(), db.code().code()),
        None => e.to_string(),
    };
    match e.code().map(|c| c.code()) {
        Some(c) if c.starts_with("42") => SourceError::Fatal(format!("snapshot: {what}: {text}")),
        _ => SourceError::Retryable(format!("snapshot: {what}: {text}")),
    }
}

async fn connect(dsn: &Dsn) -> Result<Client, SourceError> {
    let target = dsn.redacted();
    let mut c = tokio_postgres::Config::new();
    c.host(&dsn.host)
        .port(dsn.port)
        .user(&dsn.user)
        .dbname(&dsn.dbname)
        .application_name("deltaforge-snapshot")
        .options(crate::transport::SESSION_OPTIONS)
        .connect_timeout(Duration::from_secs(30));
    if !dsn.password.is_empty() {
        c.password(&dsn.password);
    }
    let connected = match tls::plan(dsn.sslmode) {
        None => {
            c.ssl_mode(tokio_postgres::config::SslMode::Disable);
            c.connect(NoTls).await.map(|(client, conn)| (client, conn.boxed()))
        }
        Some(plan) => {
            c.ssl_mode(plan.negotiate);
            let cfg = tls::client_config(dsn, plan.verify).map_err(|e| {
                SourceError::Fatal(format!("snapshot: TLS for PostgreSQL at {target} (sslmode {:?}): {e}", dsn.sslmode))
            })?;
            c.connect(MakeRustlsConnect::new(cfg)).await.map(|(client, conn)| (client, conn.boxed()))
        }
    };
    let (client, conn) = connected.map_err(|e| {
        let text = e.to_string();
        if text.contains("TLS") {
            // No TLS on the server, or its certificate was refused:
            // retrying will not help.
            SourceError::Fatal(format!(
                "snapshot: connecting to PostgreSQL at {target} (sslmode {:?}): {text} (check sslmode and \
                 sslrootcert in the dsn)",
                dsn.sslmode
            ))
        } else {
            SourceError::Retryable(format!("snapshot: connecting to PostgreSQL at {target}: {text}"))
        }
    })?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "snapshot connection closed");
        }
    });
    Ok(client)
}

/// Rows of a simple query as text.
async fn rows(client: &Client, sql: &str, what: &str) -> Result<Vec<Vec<Option<String>>>, SourceError> {
    let msgs = client.simple_query(sql).await.map_err(|e| db_error(what, e))?;
    Ok(msgs
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect()),
            _ => None,
        })
        .collect())
}

/// Rows of a multi-statement simple query, one list per statement: one
/// round trip for what would otherwise be several.
async fn statements(client: &Client, sql: &str, what: &str) -> Result<Vec<Vec<SimpleQueryRow>>, SourceError> {
    let msgs = client.simple_query(sql).await.map_err(|e| db_error(what, e))?;
    let mut out = vec![Vec::new()];
    for m in msgs {
        match m {
            SimpleQueryMessage::Row(r) => out.last_mut().expect("never empty").push(r),
            SimpleQueryMessage::CommandComplete(_) => out.push(Vec::new()),
            _ => {}
        }
    }
    out.pop();
    Ok(out)
}

fn text_rows(rows: &[SimpleQueryRow]) -> Vec<Vec<Option<String>>> {
    rows.iter().map(|r| (0..r.len()).map(|i| r.get(i).map(str::to_string)).collect()).collect()
}

fn cell(r: &[Option<String>], i: usize) -> Option<&str> {
    r.get(i).and_then(|c| c.as_deref())
}

impl Reader {
    /// Starts the reader; the streamer holds the returned link.
    pub fn spawn(self) -> SnapshotLink {
        let run = deltaforge_core::snapshot::new_run_id(&self.source_id);
        let (tx, chunks) = mpsc::channel(self.cfg.max_parallel_tables.max(1));
        let (otx, outcome) = oneshot::channel();
        let run2 = run.clone();
        tokio::spawn(async move {
            let r = self.run(run2, tx).await;
            if let Err(e) = &r {
                tracing::error!(error = %e, "snapshot stopped");
            }
            let _ = otx.send(r);
        });
        SnapshotLink { run, chunks, outcome }
    }

    async fn run(self, run: String, tx: mpsc::Sender<ChunkMsg>) -> Result<bool, SourceError> {
        let client = match connect(&self.dsn).await {
            Err(SourceError::Fatal(m)) if self.cfg.mode == SnapshotMode::Never => {
                tracing::warn!(source = %self.source_id, "{m}; backfills are unavailable");
                return Ok(false);
            }
            other => other?,
        };
        let Reader { cfg, dsn, patterns, slot, source_id, pipeline, store, fresh, stored } = self;
        let worker = Worker {
            dsn,
            slot,
            run,
            chunk_size: cfg.chunk_size,
            chunk_ids: Arc::new(AtomicU64::new(1)),
            tx: tx.clone(),
            source_id: source_id.clone(),
        };
        let mut catalogue = Catalogue { client, patterns };
        Schedule { cfg, source_id, pipeline, store, fresh, stored, chunks: tx }.run(&mut catalogue, worker).await
    }
}

/// The reader's own connection, for [`Schedule::run`]: the matched tables
/// and their row estimates.
struct Catalogue {
    client: Client,
    patterns: Vec<TablePattern>,
}

#[async_trait]
impl SnapshotBackend for Catalogue {
    async fn matched_tables(&mut self) -> Result<Vec<String>, SourceError> {
        let all = rows(
            &self.client,
            "SELECT schemaname, tablename FROM pg_catalog.pg_tables \
             WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2",
            "listing tables",
        )
        .await?;
        Ok(all
            .iter()
            .filter_map(|r| match (cell(r, 0), cell(r, 1)) {
                (Some(s), Some(t)) if any_matches(&self.patterns, s, t) => Some(format!("{s}.{t}")),
                _ => None,
            })
            .collect())
    }

    async fn estimate_rows(&mut self, table: &str) -> Result<Option<u64>, SourceError> {
        let r = rows(
            &self.client,
            &format!(
                "SELECT reltuples::bigint FROM pg_catalog.pg_class WHERE oid = {}::regclass",
                literal(&quoted(table))
            ),
            "estimating rows",
        )
        .await?;
        Ok(r.first().and_then(|r| cell(r, 0)).and_then(|v| v.parse::<i64>().ok()).filter(|n| *n >= 0).map(|n| n as u64))
    }
}

/// `schema.table` with each part quoted.
fn quoted(table: &str) -> String {
    match table.split_once('.') {
        Some((s, t)) => format!("{}.{}", ident(s), ident(t)),
        None => ident(table),
    }
}

#[derive(Clone)]
struct Worker {
    dsn: Dsn,
    slot: String,
    run: String,
    chunk_size: usize,
    chunk_ids: Arc<AtomicU64>,
    tx: mpsc::Sender<ChunkMsg>,
    source_id: Arc<str>,
}

#[async_trait]
impl TableReader for Worker {
    async fn read_table(&self, job: Job) -> Result<bool, SourceError> {
        self.clone().read(job).await
    }
}

impl Worker {
    /// Checks the slot and the table and reads the table's columns and key,
    /// in one round trip: `None` when the table no longer exists. Columns
    /// are read per chunk so that a concurrent `ADD COLUMN` shows up.
    async fn prepare(&self, client: &Client, table: &str) -> Result<Option<TableInfo>, SourceError> {
        let results =
            statements(client, &self.layout_sql(table), "checking the slot and reading the table's layout").await?;
        self.layout(table, results)
    }

    /// The four statements [`Self::layout`] reads.
    fn layout_sql(&self, table: &str) -> String {
        // to_regclass: a dropped table gives no rows instead of an error.
        let reg = format!("pg_catalog.to_regclass({})", literal(&quoted(table)));
        format!(
            "SELECT wal_status FROM pg_catalog.pg_replication_slots WHERE slot_name = {slot}; \
             SELECT {reg} IS NOT NULL; \
             SELECT attname, atttypid, attnum FROM pg_catalog.pg_attribute \
             WHERE attrelid = {reg} AND attnum > 0 AND NOT attisdropped ORDER BY attnum; \
             SELECT i.indisprimary, array_to_string(i.indkey, ' ') FROM pg_catalog.pg_index i \
             WHERE i.indrelid = {reg} AND i.indisunique AND i.indimmediate AND i.indisvalid \
               AND i.indpred IS NULL AND i.indexprs IS NULL \
               AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a WHERE a.attrelid = i.indrelid \
                               AND a.attnum = ANY(i.indkey) AND NOT a.attnotnull) \
             ORDER BY i.indisprimary DESC, i.indnatts, i.indexrelid",
            slot = literal(&self.slot),
        )
    }

    /// The slot check and the table's layout from the results of
    /// [`Self::layout_sql`] (the last four of `results`).
    fn layout(&self, table: &str, mut results: Vec<Vec<SimpleQueryRow>>) -> Result<Option<TableInfo>, SourceError> {
        let (schema, name) = table.split_once('.').unwrap_or(("public", table));
        let results = results.split_off(results.len().saturating_sub(4));
        let [slot, exists, cols, idx] = <[Vec<SimpleQueryRow>; 4]>::try_from(results).map_err(|r| {
            SourceError::Retryable(format!("snapshot: expected 4 results checking the table, got {}", r.len()))
        })?;
        self.check_slot(&text_rows(&slot))?;
        if exists.first().and_then(|r| r.get(0)) != Some("t") {
            return Ok(None);
        }
        let cols = text_rows(&cols);
        let idx = text_rows(&idx);
        let names: Vec<String> = cols.iter().filter_map(|r| cell(r, 0).map(str::to_string)).collect();
        let type_oids: Vec<u32> = cols.iter().map(|r| cell(r, 1).and_then(|v| v.parse().ok()).unwrap_or(0)).collect();
        let attnums: Vec<i64> = cols.iter().map(|r| cell(r, 2).and_then(|v| v.parse().ok()).unwrap_or(0)).collect();
        // The primary key first, else the NOT NULL unique index with fewest columns.
        let key = idx
            .first()
            .and_then(|r| cell(r, 1))
            .and_then(|list| {
                list.split_whitespace()
                    .map(|n| n.parse::<i64>().ok().and_then(|n| attnums.iter().position(|a| *a == n)))
                    .collect::<Option<Vec<usize>>>()
            })
            .filter(|k| !k.is_empty())
            .map(KeyKind::Columns)
            .unwrap_or(KeyKind::Ctid);
        Ok(Some(TableInfo {
            schema: schema.into(),
            table: name.into(),
            columns: names.into_iter().map(Arc::<str>::from).collect::<Vec<_>>().into(),
            type_oids,
            key,
        }))
    }

    /// Writes watermarks in order. A low watermark alone is written as it
    /// is (the high one after it flushes both). Otherwise in a transaction
    /// that takes an xid (`txid_current()`) so that its commit flushes the
    /// WAL and the messages reach the stream at once (PostgreSQL before 17
    /// has no `flush` argument), followed, with `then_layout`, by the slot
    /// check and that table's layout for the next chunk: one round trip.
    async fn emit_watermarks(
        &self,
        client: &Client,
        marks: &[Watermark],
        then_layout: Option<&str>,
    ) -> Result<Option<Option<TableInfo>>, SourceError> {
        let emits = marks
            .iter()
            .map(|wm| {
                let content = serde_json::to_string(wm).expect("watermarks serialize");
                format!(
                    "SELECT pg_catalog.pg_logical_emit_message(false, {}, {});",
                    literal(WATERMARK_PREFIX),
                    literal(&content)
                )
            })
            .collect::<String>();
        let flush = marks.iter().any(|m| m.kind == WatermarkKind::High);
        let mut sql = if flush { format!("BEGIN; {emits} SELECT pg_catalog.txid_current(); COMMIT;") } else { emits };
        if let Some(table) = then_layout {
            sql.push(' ');
            sql.push_str(&self.layout_sql(table));
        }
        let results = statements(client, &sql, "writing a watermark").await?;
        then_layout.map(|table| self.layout(table, results)).transpose()
    }

    fn check_slot(&self, r: &[Vec<Option<String>>]) -> Result<(), SourceError> {
        match r.first() {
            None => Err(SourceError::Fatal(format!(
                "replication slot {:?} disappeared during the snapshot (dropped by someone): the changes the \
                 snapshot depends on are lost; reset the pipeline's checkpoint to start over",
                self.slot
            ))),
            Some(row) if cell(row, 0) == Some("lost") => Err(SourceError::Fatal(format!(
                "replication slot {:?} was invalidated during the snapshot (wal_status = lost: the server removed WAL \
                 it needed, see max_slot_wal_keep_size); the snapshot cannot be reconciled with the stream. Drop the \
                 slot, reset the pipeline's checkpoint and start again, with a larger max_slot_wal_keep_size",
                self.slot
            ))),
            Some(_) => Ok(()),
        }
    }

    /// Reads a table to the end (`true`), or until the pipeline stops or
    /// the table is dropped (`false`).
    async fn read(self, mut job: Job) -> Result<bool, SourceError> {
        let client = connect(&self.dsn).await?;
        let mut log = deltaforge_core::snapshot::ProgressLog::default();
        tracing::info!(source = %self.source_id, table = %job.table, kind = ?job.progress.kind,
            rows_done = job.progress.rows_done, rows_total_estimate = ?job.progress.rows_total_estimate,
            "snapshot: reading table");
        // A low watermark written ahead, with the previous chunk's high one:
        // (chunk id, the key columns it names).
        let mut low: Option<(u64, Vec<String>)> = None;
        // The slot check and table layout read with the previous high
        // watermark (`Some(None)`: the table is gone).
        let mut ahead: Option<Option<TableInfo>> = None;
        let wm = |chunk, kind, key: &[String]| Watermark {
            run: self.run.clone(),
            chunk,
            kind,
            table: job.table.clone(),
            key: key.to_vec(),
        };
        loop {
            let info = match ahead.take() {
                Some(info) => info,
                None => self.prepare(&client, &job.table).await?,
            };
            let Some(info) = info else {
                tracing::warn!(source = %self.source_id, table = %job.table, "table dropped during its snapshot; its snapshot ends");
                return Ok(false);
            };
            if info.columns.is_empty() {
                return Err(SourceError::Fatal(format!(
                    "snapshot: table {} has no columns or no longer exists",
                    job.table
                )));
            }
            let key = info.key_names();
            // A key changed since the low watermark was written needs a new
            // window (the old one stays open, unused, until the restart).
            let chunk = match low.take() {
                Some((chunk, k)) if k == key => chunk,
                _ => {
                    let chunk = self.chunk_ids.fetch_add(1, Ordering::Relaxed);
                    self.emit_watermarks(&client, &[wm(chunk, WatermarkKind::Low, &key)], None).await?;
                    chunk
                }
            };
            let (rows, snapshot, next) = self.select(&client, &info, &job.progress).await?;
            let (verdict, verdict_rx) = oneshot::channel();
            let msg = ChunkMsg {
                chunk,
                table: job.table.clone(),
                schema: info.schema.clone(),
                table_name: info.table.clone(),
                rows,
                snapshot,
                progress: next.clone(),
                verdict,
            };
            if self.tx.send(msg).await.is_err() {
                return Ok(false); // The stream stopped.
            }
            // The next chunk's low watermark rides with this one's high
            // watermark: one flushed round trip per chunk.
            let mut marks = vec![wm(chunk, WatermarkKind::High, &key)];
            if next.state != TableState::Done {
                let next_chunk = self.chunk_ids.fetch_add(1, Ordering::Relaxed);
                marks.push(wm(next_chunk, WatermarkKind::Low, &key));
                low = Some((next_chunk, key));
            }
            // The next chunk's checks and layout ride along too.
            ahead = self.emit_watermarks(&client, &marks, low.is_some().then_some(job.table.as_str())).await?;
            match deltaforge_core::snapshot::await_verdict(verdict_rx, &self.source_id, &job.table).await {
                Ok(true) => job.progress = next,
                Ok(false) => {
                    tracing::debug!(source = %self.source_id, table = %job.table, chunk, "chunk raced a commit; reading it again");
                    continue;
                }
                Err(_) => return Ok(false),
            }
            let done = job.progress.state == TableState::Done;
            log.chunk(&self.source_id, &job.table, &job.progress);
            if done {
                return Ok(true);
            }
        }
    }

    /// Reads one chunk in its own short read-only transaction.
    async fn select(
        &self,
        client: &Client,
        info: &TableInfo,
        progress: &TableProgress,
    ) -> Result<(tokio::task::JoinHandle<Vec<(String, Row)>>, XidSnapshot, TableProgress), SourceError> {
        let cols = info.columns.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", ");
        let table = quoted(&info.name());
        let cond = progress.condition.as_deref().map(|c| format!(" AND ({c})")).unwrap_or_default();
        let n = self.chunk_size;
        let (sql, ctid_next) = match &info.key {
            KeyKind::Columns(idx) => {
                let key_cols = idx.iter().map(|i| ident(&info.columns[*i])).collect::<Vec<_>>().join(", ");
                let after = match &progress.last_key {
                    Some(k) if k.len() == idx.len() => {
                        format!("({key_cols}) > ({})", k.iter().map(|v| literal(v)).collect::<Vec<_>>().join(", "))
                    }
                    _ => "true".into(),
                };
                (format!("SELECT {cols} FROM {table} WHERE {after}{cond} ORDER BY {key_cols} LIMIT {n}"), None)
            }
            KeyKind::Ctid => {
                let first: u64 =
                    progress.last_key.as_ref().and_then(|k| k.first()).and_then(|p| p.parse().ok()).unwrap_or(0);
                let stats = rows(
                    client,
                    &format!(
                        "SELECT GREATEST(reltuples, 1)::float8 / GREATEST(relpages, 1), \
                         pg_catalog.pg_relation_size(oid) / current_setting('block_size')::int8 \
                         FROM pg_catalog.pg_class WHERE oid = {}::regclass",
                        literal(&table)
                    ),
                    "sizing a ctid range",
                )
                .await?;
                let per_page: f64 = stats.first().and_then(|r| cell(r, 0)).and_then(|v| v.parse().ok()).unwrap_or(1.0);
                let pages: u64 = stats.first().and_then(|r| cell(r, 1)).and_then(|v| v.parse().ok()).unwrap_or(0);
                let span = ((n as f64 / per_page.max(1.0)).floor() as u64).max(1);
                let end = first + span;
                (
                    format!(
                        "SELECT {cols} FROM {table} WHERE ctid >= '({first},0)'::tid AND ctid < '({end},0)'::tid{cond}"
                    ),
                    Some((end, end >= pages)),
                )
            }
        };
        // One round trip: the transaction, its snapshot and the chunk.
        let batch = format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SELECT pg_catalog.pg_current_snapshot()::text; {sql}; COMMIT"
        );
        let results = match statements(client, &batch, "reading a chunk").await {
            Ok(r) => r,
            Err(e) => {
                // A failed statement leaves the transaction block aborted.
                let _ = client.simple_query("ROLLBACK").await;
                return Err(e);
            }
        };
        let [_, snap, data, _] = <[Vec<SimpleQueryRow>; 4]>::try_from(results).map_err(|r| {
            SourceError::Retryable(format!("snapshot: expected 4 results reading a chunk, got {}", r.len()))
        })?;
        let snapshot = snap.first().and_then(|r| r.get(0)).and_then(XidSnapshot::parse).ok_or_else(|| {
            SourceError::Retryable("snapshot: pg_current_snapshot() returned an unexpected value".into())
        })?;
        let read = data.len();
        let last_key = match (&info.key, data.last()) {
            (KeyKind::Columns(idx), Some(r)) => {
                Some(idx.iter().map(|i| r.get(*i).unwrap_or_default().to_string()).collect::<Vec<_>>())
            }
            _ => None,
        };
        let (columns, type_oids, key) = (info.columns.clone(), info.type_oids.clone(), info.key.clone());
        let out = tokio::task::spawn_blocking(move || convert(&data, &columns, &type_oids, &key));
        let mut next = progress.clone();
        next.chunk += 1;
        next.rows_done += read as u64;
        match ctid_next {
            Some((end, done)) => {
                next.last_key = Some(vec![end.to_string()]);
                if done {
                    next.state = TableState::Done;
                }
            }
            None => {
                if last_key.is_some() {
                    next.last_key = last_key;
                }
                if read < n {
                    next.state = TableState::Done;
                }
            }
        }
        Ok((out, snapshot, next))
    }
}

/// The chunk's rows as values, each with its key string.
fn convert(data: &[SimpleQueryRow], columns: &Columns, type_oids: &[u32], key: &KeyKind) -> Vec<(String, Row)> {
    data.iter()
        .map(|r| {
            let values: Vec<Value> = (0..columns.len())
                .map(|i| match r.get(i) {
                    None => Value::Null,
                    Some(t) => values::to_json(type_oids.get(i).copied().unwrap_or(0), t),
                })
                .collect();
            let key = match key {
                KeyKind::Columns(idx) => key_string(idx.iter().map(|i| &values[*i])),
                KeyKind::Ctid => key_string(values.iter()),
            };
            (key, Row::new(columns.clone(), values))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_parse_and_visibility() {
        let s = XidSnapshot::parse("100:105:101,103").unwrap();
        assert_eq!(s, XidSnapshot { xmin: 100, xmax: 105, xip: vec![101, 103] });
        assert!(!s.invisible(99) && !s.invisible(102) && !s.invisible(104));
        assert!(s.invisible(101) && s.invisible(103) && s.invisible(105) && s.invisible(200));
        assert_eq!(XidSnapshot::parse("7:7:").unwrap().xip, Vec::<u64>::new());
        assert!(XidSnapshot::parse("x").is_none());
        // 64-bit xids with an epoch compare by their low 32 bits.
        let e = XidSnapshot::parse(&format!("{}:{}:", (1u64 << 32) + 10, (1u64 << 32) + 12)).unwrap();
        assert!(!e.invisible(11) && e.invisible(12));
    }
}
