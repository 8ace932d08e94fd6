//! `type: mysql` — change data capture from MySQL and MariaDB by binlog
//! replication.
//!
//! The source registers as a replica (`server_id`, derived from the source
//! id unless configured), streams the row-based binlog from the checkpoint
//! and turns each row of each WRITE/UPDATE/DELETE rows event into one
//! [`Event`](deltaforge_core::Event). It marks every transaction end (XID,
//! `COMMIT`, or the end of a standalone DDL group) with
//! `ChunkSender::commit`, at the position right after that event, so the
//! checkpoint is always the end of the last fully delivered transaction:
//! `{"file": "mariadb-bin.000042", "pos": 12345, "gtid_set": "0-1-42"}`.
//!
//! **Where it starts.** With a checkpoint: by GTID when the server has GTIDs
//! on and `use_gtid` is true (MariaDB `@slave_connect_state`, MySQL
//! `COM_BINLOG_DUMP_GTID`), else by file and position. Without a checkpoint:
//! at the current end of the binlog (`SHOW MASTER STATUS` /
//! `SHOW BINARY LOG STATUS`), and that start position is committed at once
//! so that a restart never skips what happened in between. Existing rows are
//! read by the snapshot ([`snapshot`]: `snapshot.mode`, default `initial`),
//! chunk by chunk between watermark rows while the binlog streams; the
//! remaining chunk rows are emitted as op `r` events inside the high
//! watermark's transaction, so they are checkpointed at its end like any
//! other transaction.
//!
//! **Reset** (`DELETE /pipelines/{name}/checkpoint`): the reset stores as the
//! new checkpoint the start of the oldest binlog the server still holds
//! (first file of `SHOW BINARY LOGS`, position 4) with the GTID state before
//! it (MariaDB: that file's GTID list; MySQL: `gtid_purged`), so the next
//! start re-reads every transaction still on the server. This is what
//! distinguishes a reset from a brand-new pipeline (or a checkpoint deleted
//! offline), which starts at the current end. If that file is purged before
//! the start, the start fails as for any purged checkpoint; reset again.
//!
//! **Checkpoint lag in bytes** ([`lag`]): the binlog bytes from the
//! checkpoint's file/position to the server's current position, summed over
//! `SHOW BINARY LOGS`, measured every few seconds on a separate connection.
//!
//! **What it refuses.** At start it checks `log_bin`, `binlog_format=ROW`,
//! `binlog_row_image=FULL`, the REPLICATION SLAVE and REPLICATION CLIENT
//! (MariaDB: BINLOG MONITOR) privileges, MariaDB's `log_bin_compress=OFF`
//! and MySQL's `binlog_row_value_options=''`; each violation is a fatal error
//! naming the setting and the fix. `binlog_row_metadata` other than FULL is
//! only a warning, naming the fix and the limitation it leaves (see
//! "Schemas"). A checkpoint whose binlog file or GTIDs
//! the server has purged is a fatal error naming what is missing and the
//! recovery (`deltaforge checkpoints reset ID`); it never jumps forward.
//! By file/position the checkpoint's file must be in `SHOW BINARY LOGS`; by
//! GTID on MariaDB the checkpoint's state is compared with the GTID list at
//! the start of the oldest remaining binlog (MariaDB would otherwise wait
//! silently for GTIDs it no longer has); MySQL reports purged GTIDs itself
//! (error 1236), which is turned into the same error.
//!
//! **Schemas.** Table schemas come from `information_schema` at start and
//! are registered in the schema registry with the start position. After
//! that, which description decodes a rows event depends on the server's
//! `binlog_row_metadata`:
//!
//! - `FULL` (MariaDB 10.5+, MySQL 8.0.1+; the setting the start-up checks
//!   ask for): each TABLE_MAP event carries its table's full layout at that
//!   position (column names, types with precision/scale/length/fsp,
//!   signedness, nullability, charsets, ENUM/SET labels, geometry types,
//!   primary key), and the decoding schema is built from it
//!   ([`schema::from_table_map`]). Its [`schema::Layout`] is compared with
//!   the version active at the event's position; the same layout decodes
//!   with that version's number, a different one registers a new version,
//!   active from the last DDL on the table (or from the event when no DDL
//!   was seen), with the durable checkpoint of that moment. A rows event is
//!   therefore decoded with the columns it was written with even when the
//!   pipeline was stopped through several DDLs, or reads binlog older than
//!   the table's first version. The catalogue is still read on a live
//!   change: when it agrees with the TABLE_MAP layout its description is the
//!   one registered (it has display widths and the exact type spelling);
//!   when it is already ahead (later DDLs applied), the TABLE_MAP-derived
//!   description is registered (types spelled without display widths,
//!   e.g. `int unsigned`). Only the catalogue knows MariaDB JSON columns
//!   (LONGTEXT with a `json_valid` check; the binlog says LONGTEXT): that
//!   flag is taken from the catalogue, or from the version active at the
//!   position, for a column of the same name and type.
//! - `MINIMAL`/`NO_LOG` (or an older server): names and the rest come from
//!   the catalogue. A DDL query event invalidates the tables it names; the
//!   next rows event for such a table reloads the schema and registers a new
//!   version at the DDL's position; on replay, an event is decoded with the
//!   version active at its position. Known limitation, which the start-up
//!   check warns about: the reload reads today's catalogue, so when the
//!   source is behind by more than one DDL on a table (several ALTERs
//!   committed before it reads the first, e.g. while the pipeline was
//!   stopped), or reads binlog from before the table's first registered
//!   version, older events are decoded with a later shape: wrong column
//!   names or types (signedness, charset), or placeholder names `col_N`
//!   when the column count differs.
//!
//! **Connection loss** (including the server restarting) and silence longer
//! than three heartbeat periods end the run with a retryable error; the
//! pipeline restarts the source from the durable checkpoint with backoff.
//!
//! **Why these crates.** `mysql_async` (tokio, maintained) speaks the
//! protocol, authenticates (`caching_sha2_password`,
//! `mysql_native_password`), does TLS through rustls and decodes MySQL's
//! binlog events (rows v1/v2, TABLE_MAP metadata, binary JSON, compressed
//! transaction payloads). What it leaves out is hand-written here because it
//! is small and flavour-specific: MariaDB's GTID and GTID_LIST events and
//! GTID-based start, GTID set bookkeeping, and the value mapping to JSON.
//! Binlog types are imported through `mysql_async::binlog` only (a direct
//! `mysql_common` dependency could resolve to another version).
//!
//! This crate must never write to the server except the snapshot's own
//! watermark row (`watermark_table`), never log or return the DSN's
//! password (see [`config::redact_dsn`]), and never report a position that
//! is not the end of a transaction.

pub mod config;
pub mod decode;
#[cfg(test)]
mod fuzz_tests;
pub mod gtid;
pub mod lag;
#[cfg(test)]
mod mysql8_tests;
pub mod schema;
pub mod snapshot;
#[cfg(test)]
mod tablemap_tests;

// The running source. Layers, each importing only from the ones before it
// (no two modules import each other): `error`, `position`, `ddl`, `event_bounds`; `server`;
// `preflight`; `binlog_files`; `lag`; `run_state`; `snapshot_side`,
// `decoders`; `events`; `stream`; `source`. The `impl Run` blocks of
// `snapshot_side`, `decoders`, `events` and `stream` extend the state that
// `run_state` defines, without `run_state` importing them.
mod binlog_files;
mod ddl;
mod decoders;
mod error;
mod event_bounds;
mod events;
pub mod plain_read;
pub mod position;
mod preflight;
mod run_state;
mod server;
mod snapshot_side;
mod snapshot_sql;
mod source;
mod stream;

pub use config::{MysqlConfig, TablePattern};
pub use error::MysqlSourceError;
pub use position::BinlogPosition;
pub use source::MysqlSource;
