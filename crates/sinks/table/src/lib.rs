//! What the table sinks (`type: postgres`, `type: mysql`) share, without a
//! database driver: the config ([`config`]), the neutral column types read
//! from the schema registry ([`types`]), the apply plan of a batch
//! ([`plan`]) with the targets and keys it needs ([`resolve`]), the
//! exactly-once progress model ([`progress`]), the source
//! schemas as the sinks see them ([`schemas`]), the per-sink metrics
//! ([`metrics`]) and the crash hook of the tests ([`failpoint`]).
//!
//! # How a batch is applied, and exactly once
//!
//! A table sink applies each delivered batch in **one target transaction**
//! and, in that same transaction, upserts one row of its progress table
//! (`deltaforge_sink_progress` by default): the pipeline and sink id, the
//! source id, the position (transaction position and event index) of the
//! last event applied and a batch sequence number. On start (its first
//! delivery) it reads that row back, and from then on skips every event
//! at or before the stored position. So a crash at any instant — before
//! the commit (nothing applied, nothing recorded), or after the commit but
//! before the coordinator wrote its checkpoint (applied *and* recorded, so
//! the replay is skipped) — applies every event exactly once.
//!
//! The coordinator's own per-sink position (`sinks` in the checkpoint)
//! lags behind this row: it is written after the acknowledgement, so it
//! can only be at or behind the progress row. The sink trusts its own row.
//!
//! This crate never opens a connection and never retries: the sinks own
//! their drivers and the coordinator owns retries and checkpoints.

#![forbid(unsafe_code)]

pub mod config;
pub mod failpoint;
pub mod metrics;
pub mod plan;
pub mod progress;
pub mod resolve;
pub mod schemas;
pub mod types;

pub use config::{Mode, SchemaChanges, TableSinkConfig, TargetName};
pub use plan::{Action, Plan, PlanError, Step, TableBatch};
pub use progress::{EventMark, Progress};
pub use schemas::SinkPlace;
pub use schemas::SourceSchemas;
pub use types::{ColumnDef, ColumnType, SchemaChange, TableDef};
