//! The snapshot reader of the MySQL/MariaDB source: reads matched tables
//! (and backfills) in key order, in chunks, on its own connection, while
//! the binlog streams, using the DBLog watermarks of
//! [`deltaforge_core::snapshot`].
//!
//! Watermarks are rows of a small table the user can name
//! (`watermark_table`, default `deltaforge_watermarks` in the DSN's
//! database): one row per source, `(source_id VARCHAR(190) PRIMARY KEY,
//! watermark TEXT)`, upserted in its own autocommit transaction before and
//! after each chunk's select. The binlog delivers that row change in commit
//! order, and both servers make transactions visible in binlog order (MySQL
//! with `binlog_order_commits=ON`, its default, checked at start; MariaDB
//! always), so everything before the low watermark is visible to the chunk's
//! select (which starts after the low watermark's commit returned). Grants: CREATE
//! on that database once (or create the table yourself), SELECT, INSERT and
//! UPDATE on the table, and SELECT on the captured tables. The table must
//! not be matched by `tables`.
//!
//! Per chunk (autocommit, one statement, so one consistent read and no
//! transaction held across chunks; InnoDB takes no row locks for it and an
//! `ALTER TABLE` waits at most for that statement's metadata lock):
//! `SELECT … WHERE key > last ORDER BY key LIMIT chunk_size` (the last key
//! bound as parameters, see [`crate::snapshot_sql`]), with the
//! session in UTC and utf8mb4 so values map to the same JSON as the binlog's
//! ([`crate::decode::snapshot_value`]). A backfill's `where` is added in
//! parentheses, and that statement runs alone in a `START TRANSACTION READ
//! ONLY` … `COMMIT` (the same single consistent read); a server error while
//! running it is fatal for that backfill only (the core marks it `failed`).
//!
//! Keys: the primary key; else the `NOT NULL` unique index with fewest
//! columns; else the whole table is read in one chunk (a single consistent
//! read) and rows are matched by their whole image, so such tables must fit
//! in memory. A table is never skipped silently.
//!
//! Binlog retention: the binlog is streamed during the whole snapshot, and a
//! server does not purge the file a replica is reading; a checkpoint whose
//! binlog was purged while the pipeline was down stops the source at start
//! with the purge error (see the crate docs), never a silent gap.
//!
//! It also defines what the stream holds of a reader run: [`ChunkMsg`] (a
//! core [`SnapshotChunk`]) and [`StreamSide`]; windows, verdicts and
//! progress hand-over are the core `StreamSide`'s, driven by the crate's
//! `snapshot_side` module.
//!
//! This module must never lock a table, never hold a transaction across
//! chunks and never store progress itself (the stream hands each chunk's
//! record to the progress writer with the durable position it needs).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use deltaforge_core::snapshot::{
    key_string, PendingProgress, Schedule, SnapshotBackend, SnapshotChunk, SnapshotConfig, SnapshotJob as Job,
    SnapshotMetrics, SnapshotStore, StreamSide as CoreStreamSide, TableProgress, TableReader, TableState, Watermark,
    WatermarkKind,
};
use deltaforge_core::{Columns, Row, SourceError};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Value as MyValue};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::config::TablePattern;
use crate::decode::{snapshot_value, Kind};
use crate::schema;
use crate::snapshot_sql::{chunk_query, encode_key, ident};

/// A chunk's rows with their key strings, being converted on a blocking
/// thread.
pub type ConvertingRows = tokio::task::JoinHandle<Result<Vec<(String, Row)>, SourceError>>;

/// One chunk, handed to the stream before its high watermark is written.
pub struct ChunkMsg {
    /// Chunk id within the run.
    pub chunk: u64,
    /// `db.table`.
    pub table: String,
    /// Database.
    pub db: Arc<str>,
    /// Table name.
    pub table_name: Arc<str>,
    /// Key columns (`None`: whole-row matching).
    pub key_columns: Option<Columns>,
    /// Rows with their key strings, in key order, being converted from the
    /// server's values off the reader's path (the reader selects the next
    /// chunk meanwhile).
    pub rows: ConvertingRows,
    /// The table's record once this chunk is delivered.
    pub progress: TableProgress,
    /// Sent when the stream reached the chunk's high watermark (taken
    /// when sent).
    pub verdict: Option<oneshot::Sender<()>>,
}

#[async_trait]
impl SnapshotChunk for ChunkMsg {
    /// MySQL's chunks never race a commit (transactions become visible in
    /// binlog order), so a window records nothing at its low watermark.
    type Opened = ();

    fn id(&self) -> u64 {
        self.chunk
    }

    fn table(&self) -> &str {
        &self.table
    }

    fn progress(&self) -> &TableProgress {
        &self.progress
    }

    /// Always an acceptance (see [`Self::Opened`]): the reader may read the
    /// next chunk while this one is delivered.
    fn send_verdict(&mut self, accepted: bool) {
        debug_assert!(accepted, "a MySQL chunk never races");
        if let Some(v) = self.verdict.take().filter(|_| accepted) {
            let _ = v.send(());
        }
    }

    /// Awaits the conversion task (called at most once, as the trait says).
    async fn take_rows(&mut self) -> Result<Vec<(String, Row)>, SourceError> {
        (&mut self.rows).await.map_err(|e| {
            SourceError::Retryable(format!("snapshot: converting chunk {} of {} failed: {e}", self.chunk, self.table))
        })?
    }
}

/// The stream's side of the snapshot: what is MySQL's (the watermark
/// table, whose row changes carry the watermarks) beside the core
/// [`deltaforge_core::snapshot::StreamSide`], which owns the windows and
/// the chunks.
#[derive(Default)]
pub struct StreamSide {
    /// The watermark table `(db, table)` (`None`: no snapshot runs).
    pub watermark_table: Option<(String, String)>,
    /// The link to the reader; `None` once it ended (or without one).
    pub side: Option<CoreStreamSide<ChunkMsg>>,
}

/// Opens a connection for the reader.
pub type Connector = Arc<
    dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Conn, SourceError>> + Send>> + Send + Sync,
>;

/// Everything the reader needs.
pub struct Reader {
    /// Snapshot settings.
    pub cfg: SnapshotConfig,
    /// Opens connections.
    pub connect: Connector,
    /// The watermark table.
    pub watermark_table: (String, String),
    /// Matched tables.
    pub patterns: Vec<TablePattern>,
    /// MariaDB (JSON columns are detected differently).
    pub mariadb: bool,
    /// Source id (logs, watermark row).
    pub source_id: Arc<str>,
    /// Pipeline (metrics).
    pub pipeline: Arc<str>,
    /// Progress records.
    pub store: SnapshotStore,
    /// No checkpoint: every table is read again.
    pub fresh: bool,
    /// Each progress record once stored.
    pub stored: mpsc::UnboundedReceiver<PendingProgress>,
}

fn sql_error(what: &str) -> impl FnOnce(mysql_async::Error) -> SourceError + '_ {
    move |e| {
        let fatal = matches!(&e, mysql_async::Error::Server(se) if matches!(se.code, 1044 | 1045 | 1142 | 1143 | 1146 | 1054 | 1064));
        let m = format!("snapshot: {what}: {e}");
        if fatal {
            SourceError::Fatal(m)
        } else {
            SourceError::Retryable(m)
        }
    }
}

async fn session(connect: &Connector) -> Result<Conn, SourceError> {
    let mut c = connect().await?;
    // The same text forms as the binlog path: UTC timestamps, UTF-8 text.
    c.query_drop("SET time_zone = '+00:00', NAMES utf8mb4").await.map_err(sql_error("setting up the session"))?;
    Ok(c)
}

impl Reader {
    /// Starts the reader and returns the stream's side.
    pub fn spawn(self, progress: mpsc::UnboundedSender<PendingProgress>) -> StreamSide {
        let run = deltaforge_core::snapshot::new_run_id(&self.source_id);
        let (tx, chunks) = mpsc::channel(self.cfg.max_parallel_tables.max(1));
        let (otx, outcome) = oneshot::channel();
        let side = StreamSide {
            watermark_table: Some(self.watermark_table.clone()),
            side: Some(CoreStreamSide::new(
                run.clone(),
                chunks,
                outcome,
                SnapshotMetrics::new(&self.pipeline),
                progress,
            )),
        };
        tokio::spawn(async move {
            let r = self.run(run, tx).await;
            if let Err(e) = &r {
                tracing::error!(error = %e, "snapshot stopped");
            }
            let _ = otx.send(r);
        });
        side
    }

    async fn run(self, run: String, tx: mpsc::Sender<ChunkMsg>) -> Result<bool, SourceError> {
        let mut conn = session(&self.connect).await?;
        if !self.mariadb {
            let ordered: Option<i64> = conn
                .query_first("SELECT @@GLOBAL.binlog_order_commits")
                .await
                .map_err(sql_error("reading binlog_order_commits"))?;
            if ordered == Some(0) {
                return Err(SourceError::Fatal(
                    "snapshot: binlog_order_commits is OFF, so transactions may become visible out of binlog order and a \
                     chunk could miss a change the stream already passed; SET GLOBAL binlog_order_commits = ON (the \
                     default), or set snapshot.mode: never"
                        .into(),
                ));
            }
        }
        let (wdb, wt) = &self.watermark_table;
        conn.query_drop(format!(
            "CREATE TABLE IF NOT EXISTS {}.{} (source_id VARCHAR(190) NOT NULL PRIMARY KEY, watermark TEXT NOT NULL) \
             ENGINE=InnoDB",
            ident(wdb),
            ident(wt)
        ))
        .await
        .map_err(|e| {
            SourceError::Fatal(format!(
                "snapshot: creating the watermark table {wdb}.{wt} failed: {e}. Create it yourself (CREATE TABLE \
                 {wdb}.{wt} (source_id VARCHAR(190) NOT NULL PRIMARY KEY, watermark TEXT NOT NULL)) and grant SELECT, \
                 INSERT, UPDATE on it, or set `watermark_table`"
            ))
        })?;
        let Reader { cfg, connect, watermark_table, patterns, mariadb, source_id, pipeline, store, fresh, stored } =
            self;
        let worker = Worker {
            connect,
            mariadb,
            watermark_table: watermark_table.clone(),
            run,
            chunk_size: cfg.chunk_size,
            chunk_ids: Arc::new(AtomicU64::new(1)),
            tx: tx.clone(),
            source_id: source_id.clone(),
        };
        let mut catalogue = Catalogue { conn, patterns, watermark_table, mariadb };
        Schedule { cfg, source_id, pipeline, store, fresh, stored, chunks: tx }.run(&mut catalogue, worker).await
    }
}

/// The reader's own connection, for [`Schedule::run`]: the matched tables
/// (never the watermark table) and their row estimates.
struct Catalogue {
    conn: Conn,
    patterns: Vec<TablePattern>,
    watermark_table: (String, String),
    mariadb: bool,
}

#[async_trait]
impl SnapshotBackend for Catalogue {
    async fn matched_tables(&mut self) -> Result<Vec<String>, SourceError> {
        let patterns = self.patterns.clone();
        let wm = self.watermark_table.clone();
        let keep = move |d: &str, t: &str| TablePattern::any(&patterns, d, t) && !(d == wm.0 && t == wm.1);
        let found =
            schema::load(&mut self.conn, self.mariadb, None, &keep).await.map_err(sql_error("listing tables"))?;
        let mut tables: Vec<String> = found.keys().map(|(d, t)| format!("{d}.{t}")).collect();
        tables.sort();
        Ok(tables)
    }

    async fn estimate_rows(&mut self, table: &str) -> Result<Option<u64>, SourceError> {
        let (db, t) = table.split_once('.').unwrap_or(("", table));
        let r: Option<Option<u64>> = self
            .conn
            .exec_first(
                "SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                (db, t),
            )
            .await
            .map_err(sql_error("estimating rows"))?;
        Ok(r.flatten())
    }
}

#[derive(Clone)]
struct Worker {
    connect: Connector,
    mariadb: bool,
    watermark_table: (String, String),
    run: String,
    chunk_size: usize,
    chunk_ids: Arc<AtomicU64>,
    tx: mpsc::Sender<ChunkMsg>,
    source_id: Arc<str>,
}

/// A table as one chunk reads it.
struct Shape {
    db: Arc<str>,
    table: Arc<str>,
    columns: Columns,
    kinds: Arc<[Kind]>,
    /// Key column positions (empty: no key, one chunk).
    key: Vec<usize>,
}

/// What a chunk's result says of each column (name, type, flags — key
/// flags included —, charset, decimals, length): a change means the table
/// was altered since its shape was read.
type Layout = Vec<(String, u8, u16, u16, u8, u32)>;

fn layout(columns: &[mysql_async::Column]) -> Layout {
    columns
        .iter()
        .map(|c| {
            (
                c.name_str().into_owned(),
                c.column_type() as u8,
                c.flags().bits(),
                c.character_set(),
                c.decimals(),
                c.column_length(),
            )
        })
        .collect()
}

#[async_trait]
impl TableReader for Worker {
    async fn read_table(&self, job: Job) -> Result<bool, SourceError> {
        self.clone().read(job).await
    }
}

/// The columns of the table's smallest unique index over NOT NULL columns
/// (empty when it has none): the key of a table without a primary key, for
/// the snapshot and for `verify` alike.
pub(crate) async fn unique_key_columns(conn: &mut Conn, db: &str, t: &str) -> Result<Vec<String>, SourceError> {
    let r: Option<Option<String>> = conn
        .exec_first(
            "SELECT GROUP_CONCAT(COLUMN_NAME ORDER BY SEQ_IN_INDEX SEPARATOR '\\n') FROM information_schema.STATISTICS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND NON_UNIQUE = 0 GROUP BY INDEX_NAME \
             HAVING SUM(NULLABLE = 'YES') = 0 ORDER BY COUNT(*), INDEX_NAME LIMIT 1",
            (db, t),
        )
        .await
        .map_err(sql_error("reading the table's unique keys"))?;
    Ok(r.flatten().map(|s| s.split('\n').map(str::to_string).collect()).unwrap_or_default())
}

impl Worker {
    async fn shape(&self, conn: &mut Conn, table: &str) -> Result<Option<Shape>, SourceError> {
        let (db, t) = table.split_once('.').unwrap_or(("", table));
        let mut found = schema::load(conn, self.mariadb, Some((db, t)), &|_, _| true)
            .await
            .map_err(sql_error("reading the table's columns"))?;
        let Some(s) = found.remove(&(db.to_string(), t.to_string())) else { return Ok(None) };
        let names: Vec<String> = s.columns.iter().map(|c| c.name.clone()).collect();
        let mut key_names = s.primary_key.clone();
        if key_names.is_empty() {
            key_names = unique_key_columns(conn, db, t).await?;
        }
        let key = key_names.iter().filter_map(|k| names.iter().position(|n| n == k)).collect::<Vec<_>>();
        let key = if key.len() == key_names.len() { key } else { Vec::new() };
        Ok(Some(Shape {
            db: db.into(),
            table: t.into(),
            columns: names.iter().map(|n| Arc::<str>::from(n.as_str())).collect::<Vec<_>>().into(),
            kinds: s.columns.iter().map(Kind::from_column).collect::<Vec<_>>().into(),
            key,
        }))
    }

    /// Writes watermarks in order, several in one transaction (one commit,
    /// one binlog group: the stream handles its row events in order).
    async fn emit_watermarks(&self, conn: &mut Conn, marks: &[Watermark]) -> Result<(), SourceError> {
        let (d, t) = &self.watermark_table;
        let sql = format!(
            "INSERT INTO {}.{} (source_id, watermark) VALUES (?, ?) ON DUPLICATE KEY UPDATE watermark = VALUES(watermark)",
            ident(d),
            ident(t)
        );
        let several = marks.len() > 1;
        if several {
            conn.query_drop("START TRANSACTION").await.map_err(sql_error("writing watermarks"))?;
        }
        for wm in marks {
            let content = serde_json::to_string(wm).expect("watermarks serialize");
            conn.exec_drop(&sql, (&*self.source_id, content)).await.map_err(sql_error("writing a watermark"))?;
        }
        if several {
            conn.query_drop("COMMIT").await.map_err(sql_error("writing watermarks"))?;
        }
        Ok(())
    }

    /// Reads a table to the end (`true`), or until the pipeline stops or
    /// the table is dropped (`false`).
    async fn read(self, mut job: Job) -> Result<bool, SourceError> {
        let mut conn = session(&self.connect).await?;
        let mut log = deltaforge_core::snapshot::ProgressLog::default();
        tracing::info!(source = %self.source_id, table = %job.table, kind = ?job.progress.kind,
            rows_done = job.progress.rows_done, rows_total_estimate = ?job.progress.rows_total_estimate, "snapshot: reading table");
        // The table's shape, read again only when a chunk's result columns
        // differ from those seen with it (an ALTER TABLE), with the layout
        // of the first chunk read with it.
        let mut cached: Option<(Shape, Option<Layout>)> = None;
        // Without `SELECT *` (its columns never matched a fresh shape, e.g.
        // MariaDB's INVISIBLE columns) the shape is read before every chunk.
        let mut star = true;
        // A low watermark written ahead with the previous chunk's high one:
        // (chunk id, the key columns it names).
        let mut low: Option<(u64, Vec<String>)> = None;
        loop {
            if job.cancel.is_cancelled() {
                // A cancelled backfill ends between chunks.
                return Ok(false);
            }
            let fresh = cached.is_none();
            if fresh {
                let Some(shape) = self.shape(&mut conn, &job.table).await? else {
                    tracing::warn!(source = %self.source_id, table = %job.table, "table dropped during its snapshot; its snapshot ends");
                    return Ok(false);
                };
                cached = Some((shape, None));
            }
            let (shape, seen) = cached.as_mut().expect("just filled");
            let key_names: Vec<String> = shape.key.iter().map(|i| shape.columns[*i].to_string()).collect();
            let wm = |chunk, kind| Watermark {
                run: self.run.clone(),
                chunk,
                kind,
                table: job.table.clone(),
                key: key_names.clone(),
            };
            let chunk = match low.take() {
                Some((chunk, k)) if k == key_names => chunk,
                _ => {
                    let chunk = self.chunk_ids.fetch_add(1, Ordering::Relaxed);
                    self.emit_watermarks(&mut conn, &[wm(chunk, WatermarkKind::Low)]).await?;
                    chunk
                }
            };
            let data = self.select(&mut conn, shape, &job.progress, star).await?;
            if let Some(first) = data.first() {
                let now = layout(first.columns_ref());
                let same_names =
                    now.len() == shape.columns.len() && now.iter().zip(shape.columns.iter()).all(|(c, n)| c.0 == **n);
                match seen {
                    Some(before) if *before == now => {}
                    None if same_names => *seen = Some(now),
                    _ => {
                        if fresh {
                            star = false;
                        }
                        // Altered meanwhile: read the shape and the chunk again,
                        // in the same window.
                        tracing::debug!(source = %self.source_id, table = %job.table, "table layout changed; reading its shape again");
                        low = Some((chunk, key_names));
                        cached = None;
                        continue;
                    }
                }
            }
            let (rows, next) = self.hand_off(shape, data, &job.progress);
            let (verdict, verdict_rx) = oneshot::channel();
            let key_columns = (!key_names.is_empty())
                .then(|| key_names.iter().map(|k| Arc::<str>::from(k.as_str())).collect::<Vec<_>>().into());
            let msg = ChunkMsg {
                chunk,
                table: job.table.clone(),
                db: shape.db.clone(),
                table_name: shape.table.clone(),
                key_columns,
                rows,
                progress: next.clone(),
                verdict: Some(verdict),
            };
            if self.tx.send(msg).await.is_err() {
                return Ok(false);
            }
            // The next chunk's low watermark rides with this one's high one.
            let mut marks = vec![wm(chunk, WatermarkKind::High)];
            if next.state != TableState::Done {
                let ahead = self.chunk_ids.fetch_add(1, Ordering::Relaxed);
                marks.push(wm(ahead, WatermarkKind::Low));
                low = Some((ahead, key_names.clone()));
            }
            self.emit_watermarks(&mut conn, &marks).await?;
            if !star {
                cached = None;
            }
            if deltaforge_core::snapshot::await_verdict(verdict_rx, &self.source_id, &job.table).await.is_err() {
                return Ok(false);
            }
            job.progress = next;
            let done = job.progress.state == TableState::Done;
            log.chunk(&self.source_id, &job.table, &job.progress);
            if done {
                return Ok(true);
            }
        }
    }

    /// Selects one chunk (one statement: one consistent read), its last
    /// key bound as parameters ([`crate::snapshot_sql`]). A backfill's
    /// condition runs inside a read-only transaction, and a server error
    /// while running it is fatal for that backfill (retrying cannot help).
    async fn select(
        &self,
        conn: &mut Conn,
        s: &Shape,
        progress: &TableProgress,
        star: bool,
    ) -> Result<Vec<mysql_async::Row>, SourceError> {
        let cols =
            if star { "*".to_string() } else { s.columns.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", ") };
        let table = format!("{}.{}", ident(&s.db), ident(&s.table));
        let key: Vec<String> = s.key.iter().map(|i| s.columns[*i].to_string()).collect();
        let q = chunk_query(
            &table,
            &cols,
            &key,
            progress.last_key.as_deref(),
            progress.condition.as_deref(),
            self.chunk_size,
        )
        .map_err(|m| SourceError::Fatal(format!("snapshot of {table}: {m}; delete its record to read it again")))?;
        let Some(condition) = &progress.condition else {
            return conn.exec(q.sql, q.params).await.map_err(sql_error("reading a chunk"));
        };
        conn.query_drop("START TRANSACTION READ ONLY").await.map_err(sql_error("starting a read-only chunk"))?;
        match conn.exec(q.sql, q.params).await {
            Ok(rows) => {
                conn.query_drop("COMMIT").await.map_err(sql_error("ending a read-only chunk"))?;
                Ok(rows)
            }
            Err(e) => {
                let _ = conn.query_drop("ROLLBACK").await;
                Err(match e {
                    mysql_async::Error::Server(se) => SourceError::Fatal(format!(
                        "backfill of {table} with `where` {condition:?} failed on the server: {se}"
                    )),
                    other => sql_error("reading a backfill chunk")(other),
                })
            }
        }
    }

    /// The table's record after this chunk, and its rows converted on a
    /// blocking thread.
    fn hand_off(
        &self,
        s: &Shape,
        data: Vec<mysql_async::Row>,
        progress: &TableProgress,
    ) -> (ConvertingRows, TableProgress) {
        let read = data.len();
        let mut next = progress.clone();
        next.chunk += 1;
        next.rows_done += read as u64;
        if let (false, Some(last)) = (s.key.is_empty(), data.last()) {
            next.last_key =
                Some(s.key.iter().map(|i| last.as_ref(*i).map(encode_key).unwrap_or_default()).collect::<Vec<_>>());
        }
        if s.key.is_empty() || read < self.chunk_size {
            next.state = TableState::Done;
        }
        let (columns, kinds, key) = (s.columns.clone(), s.kinds.clone(), s.key.clone());
        let name = format!("{}.{}", s.db, s.table);
        let rows = tokio::task::spawn_blocking(move || convert(data, &columns, &kinds, &key, &name));
        (rows, next)
    }
}

/// The chunk's rows as values, each with its key string.
fn convert(
    data: Vec<mysql_async::Row>,
    columns: &Columns,
    kinds: &[Kind],
    key: &[usize],
    table: &str,
) -> Result<Vec<(String, Row)>, SourceError> {
    let mut out = Vec::with_capacity(data.len());
    for r in data {
        let raw: Vec<MyValue> = r.unwrap();
        let values = raw
            .iter()
            .zip(kinds)
            .map(|(v, k)| snapshot_value(k, v))
            .collect::<Result<Vec<Value>, String>>()
            .map_err(|m| SourceError::Fatal(format!("snapshot: a value of {table}: {m}")))?;
        if values.len() != columns.len() {
            return Err(SourceError::Retryable("snapshot: the table changed during a chunk; reading it again".into()));
        }
        let key = if key.is_empty() { key_string(values.iter()) } else { key_string(key.iter().map(|i| &values[*i])) };
        out.push((key, Row::new(columns.clone(), values)));
    }
    Ok(out)
}
