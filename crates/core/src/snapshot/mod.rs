//! Snapshots and backfills, the parts every database source shares: the
//! `snapshot` config, the per-table progress records, backfill requests,
//! the DBLog window reconciliation, the watermark content, the writer
//! that stores progress only once the chunk it describes is durable, and
//! the stream's side of a chunk (holding, judging and emitting it).
//!
//! # The method (DBLog)
//!
//! A table is read in primary-key order in chunks while the change stream
//! runs. For each chunk the source writes a **low watermark** into its own
//! log, selects the chunk (`WHERE key > last ORDER BY key LIMIT n`, a short
//! statement, no lock), and writes a **high watermark**. The stream reader
//! opens a [`Window`] at the low watermark and [`Window::touch`]es every key
//! of the table that a streamed change affects; at the high watermark it
//! drops those keys from the chunk ([`Window::reconcile`]), because the
//! streamed change is as new as or newer than the chunk's copy, and emits
//! the remaining rows as op `r` events positioned at the high watermark,
//! followed by a commit there. Changes after the high watermark come after
//! the `r` events, so "last event per key wins" always yields the table.
//!
//! # Progress
//!
//! Each table has one record in the `snapshots` namespace (Slot primitive,
//! compare-and-swap), key `{pipeline}/{table}`:
//!
//! ```json
//! {"state": "running", "kind": "snapshot", "last_key": ["41999"], "rows_done": 42000,
//!  "rows_total_estimate": 1000000, "chunk": 42}
//! ```
//!
//! [`ProgressWriter`] writes a chunk's record only after the commit at its
//! high watermark appeared on the source's durable positions, so a crash
//! (even `kill -9`) resumes from the last chunk whose events were all
//! delivered, never past one that was not. A backfill (`kind: backfill`,
//! with an optional `where` and the request's id in `backfill`) is the same
//! record, requested through [`SnapshotStore::request_backfill`] and picked
//! up by the running source with [`SnapshotStore::pending_backfills`]. A
//! backfill whose read fails on the server (its `where`) is stored as
//! `failed` with its `error`, and one cancelled by an operator
//! ([`SnapshotStore::cancel_backfill`]) as `cancelled`; neither is resumed,
//! and neither stops the source. The history of started backfills (key
//! `{pipeline}#backfill-history`) says where each request stands.
//!
//! # Scheduling
//!
//! [`Schedule::run`] is the source-agnostic loop of a snapshot reader: it
//! builds the queue of tables to read from `snapshot.mode` and the stored
//! [`TableProgress`] records, reads up to `max_parallel_tables` of them at
//! once, polls backfill requests every second, keeps the
//! `tables_remaining` gauge, stops an `initial_only` source once every
//! table's `done` record is stored, and returns the reader's outcome. A
//! source supplies what is specific to it through two traits:
//! [`SnapshotBackend`] (which tables are matched, a table's row estimate)
//! and [`TableReader`] (reading one table to the end, chunk by chunk).
//!
//! # Modules
//!
//! | module | owns |
//! |---|---|
//! | [`config`] | the `snapshot:` config map |
//! | [`progress`] | the progress and backfill records, [`PendingProgress`] |
//! | [`store`] | reading and writing those records ([`SnapshotStore`]) |
//! | [`writer`] | storing a record once its chunk is durable ([`ProgressWriter`]) |
//! | [`window`] | keys, [`Window`] reconciliation, [`Watermark`]s |
//! | [`output`] | progress log lines and `deltaforge_snapshot_*` metrics |
//! | [`schedule`] | which tables are read, and when ([`Schedule`]) |
//! | [`reader_side`] | the reader's waits on the stream ([`await_verdict`], [`on_stored`]) |
//! | [`stream_side`] | the stream's handling of chunks and windows ([`StreamSide`]) |
//!
//! Every item is re-exported here, so `deltaforge_core::snapshot::X` paths
//! need not name the module that owns `X`. This file holds only docs and
//! re-exports; the submodules import each other directly, never through it.
//!
//! This module must never talk to a database or know a source's SQL; it
//! must never store progress for a position that is not durable.

pub mod config;
pub mod output;
pub mod progress;
pub mod reader_side;
pub mod schedule;
pub mod store;
pub mod stream_side;
pub mod window;
pub mod writer;

pub use config::{SnapshotConfig, SnapshotMode, DEFAULT_CHUNK_SIZE};
pub use output::{progress_bar, ProgressLog, SnapshotMetrics};
pub use progress::{
    BackfillRequest, BackfillState, BackfillStatus, PendingProgress, ReadKind, TableProgress, TableState,
};
pub use reader_side::{await_verdict, on_stored};
pub use schedule::{Schedule, SnapshotBackend, SnapshotJob, TableReader};
pub use store::{CancelOutcome, SnapshotError, SnapshotStore, NAMESPACE};
pub use stream_side::{
    reader_finished, reader_outcome, try_reader_outcome, ClosedChunk, OpenWindow, SnapshotChunk, StreamSide,
};
pub use window::{key_string, new_run_id, Watermark, WatermarkKind, Window};
pub use writer::ProgressWriter;
