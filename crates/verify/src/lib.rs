//! `deltaforge verify`: proves that a sink holds what the source holds, row
//! by row per primary key, and names what differs.
//!
//! The pieces:
//!
//! - [`SourceReader`] ([`source`]): the source tables' current rows in
//!   key order, chunk by chunk, each chunk in one short consistent read
//!   with the source position read with it (PostgreSQL and MySQL/MariaDB
//!   reuse their snapshot readers' chunk statements); no locks, no writes.
//! - [`SinkReader`] ([`sink`]): the sink's current state per key. The
//!   `file` sink's JSON lines are read once into a temporary SQLite index
//!   on disk ([`file_sink`]): last event wins, deletes remove, `r` events
//!   are rows, duplicate deliveries (same idempotency key) are counted and
//!   not applied again, events older than the key's last one are counted
//!   as out of order. Memory stays bounded by the chunk size, not the table.
//!   The stream sinks (`kafka` topics, `redis` streams, `nats` JetStream
//!   streams) are read from their start into the same index
//!   ([`event_index`], one reader per sink type chosen by [`readers`]);
//!   Debezium records take the idempotency key the sink carries beside
//!   them ([`record`]). The table sinks (`postgres`, `mysql`, upsert
//!   mode) are queried in place ([`table_sink`]), values compared through
//!   [`normalize`], and large tables compared by chunk hashes first
//!   ([`hashed`], [`hashing`]; SQL connections in [`sql`]).
//! - [`Transforms`] ([`transform`]): the pipeline's own processors
//!   (`filter`, `mask`, …) applied to the source rows before comparing.
//! - [`verify`] ([`compare`]): walks the source chunks, looks each key up
//!   in the sink, collects differences, then — online — re-checks every
//!   difference after the pipeline's checkpoint has passed the source
//!   position read with it, against the sink's state as of that position,
//!   so rows changing during the run are not reported. Only differences
//!   that persist reach the [`Report`] ([`report`]).
//!
//! This crate must never write to the source or the sink, never hold all
//! rows of a table in memory, and never show the value of a masked column
//! (masked columns are redacted in the report).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod compare;
pub mod diff;
pub mod envelope;
pub mod error;
pub mod event_index;
pub mod file_sink;
pub mod hashed;
pub mod hashing;
pub mod kafka_sink;
pub mod model;
pub mod nats_sink;
pub mod normalize;
pub mod options;
pub mod readers;
pub mod record;
pub mod redis_sink;
pub mod report;
pub mod sink;
pub mod sink_context;
pub mod source;
pub mod sql;
pub mod stream_names;
pub mod table_sink;
pub mod transform;

pub use compare::{verify, Options, ProgressFn, SinkProgress};
pub use error::VerifyError;
pub use file_sink::FileSinkReader;
pub use model::{SinkRow, SourceChunk, TableLayout};
pub use readers::{stream_sink_reader, SinkContext, TABLE_SINKS};
pub use report::{KeyRef, Report, RowDiff};
pub use sink::SinkReader;
pub use source::{MysqlSourceReader, PostgresSourceReader, SourceReader};
pub use table_sink::TableSinkReader;
pub use transform::Transforms;

#[cfg(test)]
mod tests;
