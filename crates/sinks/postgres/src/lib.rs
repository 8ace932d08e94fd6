//! `type: postgres` — replicates source tables into PostgreSQL tables,
//! exactly once.
//!
//! Each delivered batch is one target transaction: the schema steps
//! (create a missing table, follow added/dropped/widened columns), the
//! coalesced row changes of every table, truncates, and the sink's row in
//! its progress table (`deltaforge_sink_progress`: source id, last event,
//! batch sequence), committed together. On its first delivery the sink
//! reads that row back and from then on skips every replayed event at or
//! before it, so a crash anywhere applies nothing twice (see
//! [`deltaforge_table_core`] for the model and how it relates to the
//! checkpoint's per-sink position).
//!
//! # Strategy, and what it costs
//!
//! Rows go through **`COPY` (text format) into a temporary staging table,
//! then one `INSERT … SELECT … ON CONFLICT (key) DO UPDATE`** (or `DELETE …
//! USING staging`) per table and column set, per
//! `batch.max_rows_per_statement` rows. Why: `COPY` is PostgreSQL's fastest
//! ingest path and takes any number of rows without a parameter limit
//! (65,535 binds per statement otherwise); the text format lets
//! PostgreSQL's own input functions parse every type exactly (numeric,
//! arrays, time zones) instead of a second conversion layer in Rust; and
//! the merge is set-based, one statement instead of one per row. Snapshot
//! reads (`r` events) are most of the data on day one and take the same
//! bulk path. Before that, the batch is coalesced per key
//! ([`deltaforge_table_core::plan`]), so a row updated 50 times in a batch
//! is written once. The cost: every row is written twice (the staging
//! table is temporary, so that write has no WAL, but it is CPU and memory
//! in the server), a batch's rows are held as COPY text in memory (bounded
//! by the batch size), and a value the target refuses fails the whole
//! statement — the batch is then re-applied in *careful mode*, one action
//! per savepoint, to find and refuse (dead-letter) exactly those events.
//!
//! This crate owns the connection, the SQL and the mapping of PostgreSQL
//! errors to [`SinkError`]s. It never retries by itself (the coordinator
//! does), never writes the pipeline's checkpoint, never puts a row value
//! into an error or a log line (errors name the table, key columns and
//! statement), and shows the DSN only redacted.

#![forbid(unsafe_code)]

mod apply;
mod connect;
mod ddl;
mod follow;
mod session;
mod values;

use async_trait::async_trait;
use deltaforge_core::{BuildError, ComponentConfig, ConfigProblem, Event, Sink, SinkError};
use deltaforge_table_core::TableSinkConfig;
use schemars::JsonSchema;
use serde::Deserialize;

pub use deltaforge_table_core::SinkPlace;
pub use session::Session;

/// Configuration of the PostgreSQL table sink (the table-sink config).
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct PostgresSinkConfig(pub TableSinkConfig);

/// The table-sink config's schema, inline (not a reference), with this
/// sink's description: the spec's JSON Schema closes each sink's keys.
impl JsonSchema for PostgresSinkConfig {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "PostgresSinkConfig".into()
    }

    fn json_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let mut schema = TableSinkConfig::json_schema(g);
        schema.insert("description".into(), "Configuration of the PostgreSQL table sink (`type: postgres`).".into());
        schema
    }
}

impl ComponentConfig for PostgresSinkConfig {
    fn check(&self) -> Result<(), ConfigProblem> {
        self.0.check()?;
        connect::Target::parse(&self.0.dsn).map(|_| ()).map_err(|m| ConfigProblem::new("dsn", m))
    }
}

/// The sink.
pub struct PostgresSink {
    session: Session,
}

impl PostgresSink {
    /// Builds the sink; connects lazily at the first delivery.
    pub fn new(config: PostgresSinkConfig, place: SinkPlace) -> Result<Self, BuildError> {
        config.check()?;
        let target = connect::Target::parse(&config.0.dsn).map_err(|m| ConfigProblem::new("dsn", m))?;
        Ok(PostgresSink { session: Session::new(config.0, target, place) })
    }
}

#[async_trait]
impl Sink for PostgresSink {
    async fn deliver(&mut self, events: &[Event]) -> Result<(), SinkError> {
        self.session.deliver(events).await
    }
}
