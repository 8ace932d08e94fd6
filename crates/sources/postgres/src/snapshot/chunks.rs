//! Reading one table chunk by chunk (a [`TableReader`] for the core's
//! schedule): per chunk the low watermark, one short read-only
//! transaction with its snapshot and the select, the chunk handed to the
//! stream, the high watermark, and the stream's verdict.
//!
//! This module owns the chunk loop and the select; it must never hold a
//! transaction open across chunks, take an explicit lock, or store
//! progress (the stream hands it to the progress writer).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use deltaforge_core::snapshot::{SnapshotJob as Job, TableProgress, TableReader, TableState, Watermark, WatermarkKind};
use deltaforge_core::{Row, SourceError};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::{Client, SimpleQueryRow};

use super::convert::convert;
use super::layout::{describe, prepare, KeyKind, TableInfo};
use super::link::{ChunkMsg, XidSnapshot};
use super::sql::{cell, connect, ident, literal, quoted, rows, statements};
use super::watermarks::emit_watermarks;
use crate::config::Dsn;

/// Reads tables chunk by chunk; cloned per table, sharing the run's chunk
/// ids.
#[derive(Clone)]
pub(super) struct Worker {
    /// Where to connect (one connection per table).
    pub dsn: Dsn,
    /// The replication slot, checked before each chunk.
    pub slot: String,
    /// This run's id, in every watermark.
    pub run: String,
    /// Rows per chunk.
    pub chunk_size: usize,
    /// Chunk ids, unique within the run.
    pub chunk_ids: Arc<AtomicU64>,
    /// Chunks go to the stream here.
    pub tx: mpsc::Sender<ChunkMsg>,
    /// Source id, for logs.
    pub source_id: Arc<str>,
}

#[async_trait]
impl TableReader for Worker {
    async fn read_table(&self, job: Job) -> Result<bool, SourceError> {
        self.clone().read(job).await
    }
}

impl Worker {
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
        // The schema description, read again when the columns change.
        let mut described: Option<(deltaforge_core::Columns, Arc<serde_json::Value>)> = None;
        let wm = |chunk, kind, key: &[String]| Watermark {
            run: self.run.clone(),
            chunk,
            kind,
            table: job.table.clone(),
            key: key.to_vec(),
        };
        loop {
            if job.cancel.is_cancelled() {
                // A cancelled backfill ends between chunks.
                return Ok(false);
            }
            let info = match ahead.take() {
                Some(info) => info,
                None => prepare(&client, &self.slot, &job.table).await?,
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
                    emit_watermarks(&client, &self.slot, &[wm(chunk, WatermarkKind::Low, &key)], None).await?;
                    chunk
                }
            };
            let description = match &described {
                Some((columns, d)) if *columns == info.columns => d.clone(),
                _ => {
                    let d = Arc::new(describe(&client, &job.table).await?);
                    described = Some((info.columns.clone(), d.clone()));
                    d
                }
            };
            let (rows, snapshot, next) = self.select(&client, &info, &job.progress).await?;
            let (verdict, verdict_rx) = oneshot::channel();
            let msg = ChunkMsg {
                chunk,
                table: job.table.clone(),
                schema: info.schema.clone(),
                table_name: info.table.clone(),
                description,
                rows,
                snapshot,
                progress: next.clone(),
                verdict: Some(verdict),
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
            ahead = emit_watermarks(&client, &self.slot, &marks, low.is_some().then_some(job.table.as_str())).await?;
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
