//! The reader's entry point: [`Reader`] connects, then runs the core's
//! [`Schedule`] over the matched tables ([`Catalogue`]) with a chunk
//! reader per table, and reports its outcome on the [`SnapshotLink`].
//!
//! This module owns which tables there are and how the run starts and
//! ends; it must never read rows itself or store progress.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use async_trait::async_trait;
use deltaforge_core::snapshot::{
    PendingProgress, Schedule, SnapshotBackend, SnapshotConfig, SnapshotMode, SnapshotStore,
};
use deltaforge_core::SourceError;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::Client;

use super::chunks::Worker;
use super::link::{ChunkMsg, SnapshotLink};
use super::sql::{cell, connect, literal, matched_tables, quoted, rows};
use crate::config::{Dsn, TablePattern};

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
    pub stored: mpsc::UnboundedReceiver<PendingProgress>,
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
        matched_tables(&self.client, &self.patterns).await
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
