//! The [`Source`] implementation: what the pipeline calls to run the
//! source, to measure its lag and to reset its checkpoint.
//!
//! It only wires the pipeline's calls to the modules that do the work
//! ([`crate::stream`], [`crate::lag`], [`crate::binlog_files`]); it must
//! never hold stream logic itself.

use async_trait::async_trait;

use deltaforge_core::{BuildError, LagProbe, Position, Source, SourceContext, SourceError};

use crate::config::MysqlConfig;
use crate::error::MysqlSourceError;
use crate::lag::BinlogLagProbe;
use crate::server::Server;

/// A MySQL/MariaDB source instance (one run).
#[derive(Clone)]
pub struct MysqlSource {
    server: Server,
}

impl MysqlSource {
    /// Builds the source from a validated configuration.
    pub fn new(cfg: MysqlConfig) -> Result<Self, BuildError> {
        let server = Server::new(cfg).map_err(|e| match e {
            SourceError::Fatal(m) => BuildError::Other(m),
            e => BuildError::other(e.to_string()),
        })?;
        Ok(MysqlSource { server })
    }
}

#[async_trait]
impl Source for MysqlSource {
    /// Streams the binlog until shutdown (see [`crate::stream`]); the error
    /// is logged once here with its kind.
    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError> {
        crate::stream::run(&self.server, ctx).await.map_err(|e| {
            let e = e.into_source_error();
            tracing::error!(source = %self.server.source_id, "{e}");
            e
        })
    }

    /// Binlog bytes behind, on the probe's own connection (see [`crate::lag`]).
    fn lag_probe(&self, _pipeline: &str) -> Option<Box<dyn LagProbe>> {
        Some(Box::new(BinlogLagProbe::new(self.server.clone())))
    }

    /// The start of the oldest binlog the server holds (see the crate docs, "Reset").
    async fn reset(self: Box<Self>, _pipeline: &str) -> Result<Option<Position>, SourceError> {
        let server = &self.server;
        let start = async {
            let mut conn = server.connect().await?;
            let info = server.check_server(&mut conn).await?;
            server.oldest_start(&mut conn, &info).await
        }
        .await
        .map_err(MysqlSourceError::into_source_error)?;
        tracing::info!(source = %server.source_id, start = %start, "checkpoint reset: the next start reads from the oldest binlog");
        Ok(Some(start))
    }

    /// Prepares each table's chunk statement with the condition (see
    /// [`crate::snapshot_sql::check_backfill`]).
    async fn check_backfill(self: Box<Self>, tables: &[String], condition: Option<&str>) -> Result<(), SourceError> {
        let mut conn = self.server.connect().await.map_err(|e| match e.into_source_error() {
            SourceError::Fatal(m) | SourceError::Retryable(m) => SourceError::Retryable(m),
        })?;
        let result = crate::snapshot_sql::check_backfill(&mut conn, tables, condition).await;
        let _ = conn.disconnect().await;
        result
    }
}
