//! The snapshot reader: reads matched tables (and backfills) in key order,
//! in chunks, on an ordinary connection, while the stream runs, and hands
//! each chunk to the [`crate::stream::Streamer`] that reconciles it at its high
//! watermark (the DBLog method, see [`deltaforge_core::snapshot`]).
//!
//! Per chunk, on its own connection ([`tokio_postgres`], with TLS as the
//! DSN's `sslmode`, `sslrootcert`, `sslcert` and `sslkey` say, with the
//! same meanings as on the replication stream; see [`crate::tls`]):
//!
//! 1. the low watermark: `pg_logical_emit_message(false,
//!    'deltaforge-watermark', json)`, written with the previous chunk's
//!    high watermark (alone for a table's first chunk);
//! 2. the chunk, in one round trip: `BEGIN ISOLATION LEVEL REPEATABLE READ
//!    READ ONLY`, the transaction's snapshot (`pg_current_snapshot()`),
//!    `SELECT … WHERE (key) > (last) ORDER BY key LIMIT chunk_size`,
//!    `COMMIT`: one short read-only transaction per chunk, no lock beyond
//!    the `ACCESS SHARE` every select takes (which blocks no writer, and an
//!    `ALTER TABLE` only for that one chunk's read). The rows go to the
//!    streamer at once and are converted from text on a blocking thread
//!    while the reader goes on;
//! 3. the high watermark, with the next chunk's low one, in a short
//!    transaction that takes an xid (`txid_current()`) so that its commit
//!    flushes the WAL and the messages reach the stream at once
//!    (PostgreSQL before 17 has no `flush` argument), followed in the same
//!    round trip by the slot check and the table's columns and key for the
//!    next chunk (read per chunk so that a concurrent `ADD COLUMN` shows
//!    up);
//! 4. the stream's verdict: accepted, or retry when a transaction that the
//!    stream delivered before the low watermark was not yet visible to the
//!    chunk's snapshot (PostgreSQL writes a commit record before it makes
//!    the transaction visible, so this rare race is detected and the chunk
//!    read again rather than emitting a stale row).
//!
//! The key is the primary key; without one, the first `NOT NULL` unique
//! index (fewest columns); without either, the table is read in `ctid`
//! page ranges and a row is matched against the stream by its whole image
//! (PostgreSQL publishes updates and deletes of such tables only with
//! `REPLICA IDENTITY FULL`; rows identical in every column that change
//! while their chunk is read may be delivered once too often or too
//! rarely). A table is never skipped silently.
//!
//! Which tables are read: with `mode: initial` / `initial_only` each
//! matched table whose record is not `done`; `always`: every matched table
//! on each start (a `running` record resumes); `never`: none. With no
//! checkpoint (first start, or after a reset) earlier records are ignored
//! and every table is read again. Backfill requests are polled every
//! second and run through the same chunks (a backfill's `where` in
//! parentheses; a statement error while running it ends that backfill as
//! `failed`, see [`deltaforge_core::snapshot`]). Before each chunk the slot is
//! checked: a missing or invalidated (`wal_status = lost`) slot stops the
//! source with an error.
//!
//! Split by concern: [`link`] is what the reader hands the stream (a leaf
//! both sides import); `reader` schedules tables; `chunks` reads one
//! table chunk by chunk; `watermarks` writes the watermarks; [`layout`]
//! reads a table's columns and key and checks the slot; `convert` turns
//! a chunk's text into values; `sql` holds the connection and quoting;
//! `check` prepares a backfill's chunk statements before it is queued.
//! The stream's side is the core's [`StreamSide`](deltaforge_core::snapshot::StreamSide),
//! driven by [`crate::stream`] (PostgreSQL's part in `stream::snapshot_rows`).
//!
//! This module must never hold a transaction open across chunks, never take
//! an explicit lock, and never store progress itself: the streamer hands
//! progress to the [`ProgressWriter`](deltaforge_core::snapshot::ProgressWriter)
//! only with the durable position it depends on.

mod check;
mod chunks;
mod convert;
pub mod layout;
pub mod link;
pub mod plain;
mod reader;
mod sql;
mod watermarks;

pub use check::check_backfill;
pub use layout::{KeyKind, TableInfo};
pub use link::{ChunkMsg, SnapshotLink, XidSnapshot, WATERMARK_PREFIX};
pub use reader::Reader;
