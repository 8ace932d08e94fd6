//! `type: postgres` — change data capture from PostgreSQL by logical
//! replication with the `pgoutput` plugin (protocol version 1), checkpointed
//! by LSN.
//!
//! What it does, on each (re)start:
//!
//! 1. Connects a replication session ([`transport`]) and, before streaming,
//!    makes sure the publication exists ([`setup`]: created for the matched
//!    tables when `create_publication` is true) and checks the slot: created
//!    only when there is no checkpoint yet; when a checkpoint exists but the
//!    slot is gone, invalidated, or already past the checkpoint, the source
//!    stops with an error that says how to recover, and never starts from an
//!    arbitrary position.
//! 2. Streams from the checkpoint's LSN and decodes every message
//!    ([`pgoutput`]), emitting one event per row change (ops `c`, `u`, `d`,
//!    `t`) with values mapped to JSON ([`values`]).
//! 3. Marks each transaction's end with its commit LSN, and reports to the
//!    server (standby status updates, keepalive replies) only positions that
//!    appeared on `SourceContext::durable`.
//!
//! Positions: the checkpoint is `{"lsn": commit LSN, "tx_id": xid}` of the
//! last fully delivered transaction. The commit LSN (the start of the commit
//! record, as in the Begin message) is stored and reported as flushed.
//! PostgreSQL skips, on restart, transactions whose commit record starts
//! *before* the confirmed position, so the transaction at exactly the
//! checkpoint may be sent again: the source skips, on its side, every
//! transaction whose commit LSN is at or below the checkpoint, and never one
//! above it. When idle (no transaction open and every received transaction
//! durable), the source commits an event-less position at the server's
//! reported WAL end; once that is durable it is reported too, so an idle or
//! filtered slot does not hold WAL forever, and a server shutdown (which
//! waits until its walsenders' clients confirm everything sent) completes.
//! Such idle checkpoints carry no `tx_id`, and on resume from one only
//! transactions whose commit LSN is *below* it are skipped (a commit record
//! may start exactly at the reported WAL end, and it was not received).
//!
//! Events: `source.db` is the schema name; `source.position` is
//! `{"lsn": LSN of the change, "tx_id": xid}`; the transaction position (and
//! so the idempotency key `{id}:{commit LSN}:{index}`) is the commit LSN;
//! `ts_ms` is the commit time. Before-images follow REPLICA IDENTITY:
//! DEFAULT/INDEX give the key columns on deletes and on updates that changed
//! the key (updates that did not change the key have `before: null`), FULL
//! gives the whole old row. Unchanged TOAST values are the object
//! `{"__deltaforge_unchanged_toast": true}` (with REPLICA IDENTITY FULL the
//! old row's value is used instead). Logical decoding messages
//! (`pg_logical_emit_message`), Origin and Type messages are decoded and
//! logged at debug level, not emitted as events, except this run's
//! snapshot watermarks (prefix `deltaforge-watermark`).
//!
//! Snapshots and backfills ([`snapshot`]): a reader on a separate
//! connection selects key-ordered chunks between a low and a high watermark;
//! the streamer collects the keys changed between the two, drops them from
//! the chunk at the high watermark and emits the rest as op `r` events at
//! the watermark's LSN (transaction position and checkpoint `{"lsn": high
//! watermark}` without `tx_id`), then hands the chunk's progress record to
//! the progress writer, which stores it once that position is durable.
//!
//! Schema history: every Relation message registers the table's columns
//! (name, type OID, type name, type modifier, key flag) and replica identity
//! in the schema registry with the position of the change it precedes and
//! the durable checkpoint; events carry the resulting version. A version
//! already recorded for that position is reused, so replays do not append
//! duplicates.
//!
//! **Checkpoint lag in bytes** ([`lag`]): `pg_current_wal_lsn()` minus the
//! checkpoint LSN (before the first checkpoint: minus the slot's
//! `confirmed_flush_lsn`), measured every few seconds on a separate,
//! non-streaming replication session.
//!
//! **Reset** (`DELETE /pipelines/{name}/checkpoint`): a slot cannot rewind,
//! so the reset drops the pipeline's slot ([`setup::drop_slot`], waiting a
//! few seconds for the stopped run's walsender to let go) and the checkpoint
//! is deleted; the next start finds neither and creates a new slot at the
//! server's current position. Changes committed before that are not read
//! again from the WAL; instead, with no checkpoint, the snapshot ignores its
//! progress records and reads the matched tables again (unless
//! `snapshot.mode: never`). A slot held by another client makes the reset
//! fail (409) with nothing deleted.
//!
//! Modules: [`source`] assembles a run; [`stream`] decodes the stream
//! (driving the core's stream side of snapshots, its PostgreSQL part in
//! [`stream::snapshot_rows`]);
//! [`snapshot`] reads tables; [`position`] is the only place that builds or
//! reads a PostgreSQL `Position`.
//!
//! This crate must never report a position to the server that has not been
//! made durable, and never start reading from a position other than the
//! checkpoint (or, with no checkpoint, the slot's own position).

#![warn(missing_docs)]

pub mod config;
pub mod lag;
pub mod pgoutput;
pub mod position;
pub mod setup;
pub mod snapshot;
pub mod source;
pub mod stream;
pub mod tls;
pub mod transport;
pub mod values;

#[cfg(test)]
mod fuzz_tests;

pub use config::{Dsn, PostgresConfig, TablePattern};
pub use position::{Lsn, PgPosition, Resume};
pub use source::PostgresSource;
pub use stream::Streamer;
