//! The `postgres` source itself: [`PostgresSource`] and its
//! [`Source`] implementation, which wires one run together — the
//! replication session and its set-up ([`crate::setup`]), the snapshot
//! reader ([`crate::snapshot`]) with its progress writer, and the
//! [`Streamer`] that decodes the stream — plus the lag probe and the
//! checkpoint reset.
//!
//! This module owns only the assembly of a run. It must never decode
//! messages, decide what a checkpoint covers, or report a position to the
//! server itself: those belong to [`crate::stream`] and
//! [`crate::position`].

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deltaforge_core::snapshot::{ProgressWriter, SnapshotMetrics, StreamSide};
use deltaforge_core::{BuildError, ComponentConfig, LagProbe, Position, Source, SourceContext, SourceError};
use tokio::sync::mpsc;

use crate::config::{Dsn, PostgresConfig, TablePattern};
use crate::position::{Lsn, Resume};
use crate::stream::Streamer;
use crate::transport::{source_error, PgWire, SessionParams, Transport};
use crate::{lag, setup, snapshot};

/// How long a reset waits for the stopped run's walsender to release the slot.
const RESET_SLOT_WAIT: Duration = Duration::from_secs(10);

/// A `postgres` source instance.
pub struct PostgresSource {
    cfg: PostgresConfig,
    dsn: Dsn,
    patterns: Vec<TablePattern>,
    source_id: Arc<str>,
}

impl PostgresSource {
    /// Builds the source from a checked config.
    pub fn new(cfg: PostgresConfig) -> Result<Self, BuildError> {
        cfg.check()?;
        let dsn = Dsn::parse(&cfg.dsn).map_err(|e| BuildError::other(e.to_string()))?;
        let patterns = cfg.patterns().map_err(BuildError::other)?;
        let source_id = cfg.id.clone().into();
        Ok(PostgresSource { cfg, dsn, patterns, source_id })
    }

    /// Session settings for the slot and publication of `pipeline`.
    fn session(&self, pipeline: &str, start_lsn: u64) -> SessionParams {
        SessionParams {
            slot: self.cfg.slot_name(pipeline),
            publication: self.cfg.publication_name(pipeline),
            start_lsn,
            status_interval: Duration::from_secs(self.cfg.status_interval_secs),
            connect_timeout: Duration::from_secs(self.cfg.connect_timeout_secs),
            receive_timeout: self.cfg.receive_timeout(),
            read_wait: self.cfg.read_wait(),
        }
    }
}

#[async_trait]
impl Source for PostgresSource {
    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError> {
        let slot = self.cfg.slot_name(&ctx.pipeline);
        let publication = self.cfg.publication_name(&ctx.pipeline);
        let resume = match &ctx.resume_from {
            None => None,
            Some(checkpoint) => match Resume::from_checkpoint(checkpoint) {
                Some(resume) => Some(resume),
                None => {
                    return Err(SourceError::Fatal(format!(
                        "the stored checkpoint of source {:?} ({checkpoint}) is not a PostgreSQL position; reset it \
                         with `deltaforge checkpoints reset {}` to start over",
                        self.source_id, self.source_id
                    )))
                }
            },
        };
        let params = self.session(&ctx.pipeline, resume.map_or(0, |r| r.lsn));
        let mut wire = PgWire::connect(&self.dsn, &params).await.map_err(source_error)?;
        let plan = setup::Plan {
            source_id: &self.cfg.id,
            database: &self.dsn.dbname,
            slot: &slot,
            publication: &publication,
            patterns: &self.patterns,
            create_publication: self.cfg.create_publication,
            checkpoint: resume.map(|r| r.lsn),
        };
        setup::prepare(&mut wire, &plan).await?;
        wire.start().await.map_err(source_error)?;
        tracing::info!(
            source = %self.source_id,
            server = %self.dsn.redacted(),
            slot = %slot,
            publication = %publication,
            from = %resume.map(|r| Lsn(r.lsn).to_string()).unwrap_or_else(|| "the slot's position".into()),
            "streaming changes from PostgreSQL"
        );
        let mut streamer = Streamer::new(self.source_id.clone(), self.patterns.clone(), resume);
        // The snapshot reader also serves backfills, so it runs in every mode.
        let (writer, progress_tx) = ProgressWriter::new(ctx.snapshots.clone(), ctx.durable.clone());
        let (stored_tx, stored_rx) = mpsc::unbounded_channel();
        // Not aborted when the stream ends: it stores what becomes durable
        // while the pipeline delivers its last batches, and ends when the
        // pipeline drops its durable positions.
        let source_id = self.source_id.clone();
        tokio::spawn(async move {
            if let Err(e) = writer.notify(stored_tx).run().await {
                tracing::error!(source = %source_id, error = %e, "storing snapshot progress failed");
            }
        });
        let reader = snapshot::Reader {
            cfg: self.cfg.snapshot.clone(),
            dsn: self.dsn.clone(),
            patterns: self.patterns.clone(),
            slot: slot.clone(),
            source_id: self.source_id.clone(),
            pipeline: ctx.pipeline.clone(),
            store: ctx.snapshots.clone(),
            fresh: resume.is_none(),
            stored: stored_rx,
        };
        let link = reader.spawn();
        let metrics = SnapshotMetrics::new(&ctx.pipeline);
        streamer.attach_snapshot(StreamSide::new(link.run, link.chunks, link.outcome, metrics, progress_tx));
        streamer.run(&mut wire, ctx).await
    }

    /// WAL bytes behind, on the probe's own session (see [`lag`]).
    fn lag_probe(&self, pipeline: &str) -> Option<Box<dyn LagProbe>> {
        Some(Box::new(lag::WalLagProbe::new(self.dsn.clone(), self.session(pipeline, 0))))
    }

    /// Drops the pipeline's replication slot (see the crate docs, "Reset").
    async fn reset(self: Box<Self>, pipeline: &str) -> Result<Option<Position>, SourceError> {
        let params = self.session(pipeline, 0);
        let mut wire = PgWire::connect(&self.dsn, &params).await.map_err(source_error)?;
        let existed = setup::drop_slot(&mut wire, &params.slot, RESET_SLOT_WAIT).await?;
        tracing::info!(
            source = %self.source_id,
            slot = %params.slot,
            existed,
            "checkpoint reset: the next start creates a new slot at the server's current position"
        );
        Ok(None)
    }

    /// Prepares each table's chunk statement with the condition (see
    /// [`snapshot::check_backfill`]).
    async fn check_backfill(self: Box<Self>, tables: &[String], condition: Option<&str>) -> Result<(), SourceError> {
        snapshot::check_backfill(&self.dsn, tables, condition).await
    }
}
