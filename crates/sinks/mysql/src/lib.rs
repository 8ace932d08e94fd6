//! `type: mysql` — replicates source tables into MySQL or MariaDB tables,
//! exactly once.
//!
//! The same model as the PostgreSQL table sink ([`deltaforge_table_core`]):
//! each delivered batch is one target transaction holding the coalesced
//! row changes and the sink's progress row (`deltaforge_sink_progress` in
//! the DSN's database); on start the sink reads that row back and skips
//! every replayed event at or before it.
//!
//! # Strategy, and what it costs
//!
//! MySQL has no `COPY` into a session table that a merge could read as
//! cheaply, so rows go as **multi-row prepared statements**: `INSERT INTO
//! t (…) VALUES (…), (…), … ON DUPLICATE KEY UPDATE c = VALUES(c)` and
//! `DELETE FROM t WHERE (key) IN ((…), …)`, with at most
//! `batch.max_rows_per_statement` rows and 60,000 placeholders per
//! statement (MySQL's limit is 65,535). One statement carries thousands of
//! rows, so the round trips per batch are few; the cost is that every
//! value is a bound parameter (converted in Rust, [`values`]) and each
//! distinct statement shape is prepared again. Snapshot reads take the
//! same path (a multi-row insert is MySQL's bulk path short of `LOAD DATA
//! LOCAL INFILE`, which servers usually disable).
//!
//! MySQL commits implicitly around DDL, so schema steps (create a table,
//! follow added/dropped/widened columns) run just **before** the batch's
//! transaction, each checked against `information_schema` first, so that
//! a crash between the DDL and the commit leaves a column that the replay
//! finds already there. A truncate is `DELETE FROM` (a `TRUNCATE` would
//! commit). The session runs in UTC and strict mode: a value the target
//! cannot hold is refused (that event is rejected), never truncated.
//!
//! This crate owns the connection, the SQL and the mapping of MySQL
//! errors to [`SinkError`]s. It never retries by itself, never writes the
//! pipeline's checkpoint, never puts a row value into an error or a log
//! line, and shows the DSN only redacted.

#![forbid(unsafe_code)]

mod apply;
mod connect;
mod ddl;
mod session;
mod values;

use async_trait::async_trait;
use deltaforge_core::{BuildError, ComponentConfig, ConfigProblem, Event, Sink, SinkError};
use deltaforge_table_core::TableSinkConfig;
use schemars::JsonSchema;
use serde::Deserialize;

pub use deltaforge_table_core::SinkPlace;
pub use session::Session;

/// Configuration of the MySQL/MariaDB table sink (the table-sink config;
/// `dsn` is `mysql://user:pass@host:port/db`, TLS by `?ssl-mode=…&ssl-ca=…`).
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct MysqlSinkConfig(pub TableSinkConfig);

/// The table-sink config's schema, inline (not a reference), with this
/// sink's description: the spec's JSON Schema closes each sink's keys.
impl JsonSchema for MysqlSinkConfig {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "MysqlSinkConfig".into()
    }

    fn json_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let mut schema = TableSinkConfig::json_schema(g);
        schema.insert("description".into(), "Configuration of the MySQL/MariaDB table sink (`type: mysql`; `dsn` is `mysql://user:pass@host:port/db`, TLS by `?ssl-mode=…&ssl-ca=…`).".into());
        schema
    }
}

impl ComponentConfig for MysqlSinkConfig {
    fn check(&self) -> Result<(), ConfigProblem> {
        self.0.check()?;
        connect::Target::parse(&self.0.dsn).map(|_| ()).map_err(|m| ConfigProblem::new("dsn", m))
    }
}

/// The sink.
pub struct MysqlSink {
    session: Session,
}

impl MysqlSink {
    /// Builds the sink; connects lazily at the first delivery.
    pub fn new(config: MysqlSinkConfig, place: SinkPlace) -> Result<Self, BuildError> {
        config.check()?;
        let target = connect::Target::parse(&config.0.dsn).map_err(|m| ConfigProblem::new("dsn", m))?;
        Ok(MysqlSink { session: Session::new(config.0, target, place) })
    }
}

#[async_trait]
impl Sink for MysqlSink {
    async fn deliver(&mut self, events: &[Event]) -> Result<(), SinkError> {
        self.session.deliver(events).await
    }
}
