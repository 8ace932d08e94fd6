//! `type: object_store` — change events as Parquet or JSON Lines files on
//! S3 (or any S3-compatible store) and in local directories, for data-lake
//! readers (DuckDB, Spark, Trino, Athena, ClickHouse).
//!
//! - Files: `{url}/{path}/{first}_{last}.{parquet|jsonl|jsonl.gz|jsonl.zst}`, where
//!   `path` is a template (default `${table}/date=${date}`) and `first` /
//!   `last` are the source positions of the file's first and last event.
//! - Manifest: `{url}/_manifest/{path}/{file}.json` per committed file
//!   (rows, first and last position, schema version), written after the
//!   file: a file without one is not complete. `{url}/_progress/{path}/progress.json`
//!   says what a restart must skip ([`progress`]).
//! - Parquet rows: `__id` (idempotency key), `__op`, `__ts_ms`, then the
//!   table's columns typed from the schema registry ([`layout`]); deletes
//!   carry the before image; `include_before` adds `__before_*` columns.
//! - Delivery: events are gathered across batches; a batch is acknowledged
//!   only once every file holding its events is committed (local: fsync,
//!   rename, directory fsync; S3: upload completed), see [`sink`].
//!
//! | module | owns |
//! |---|---|
//! | [`config`] | the config and its offline checks |
//! | [`path`] | the directory template, file and manifest names |
//! | [`layout`] | Parquet column types from registered schemas |
//! | [`columns`] | Arrow builders fed from event values |
//! | [`encode`] | writing one file to a local temporary file |
//! | [`progress`] | event positions, the per-directory `_progress` object |
//! | [`store`] | committing files to a directory or S3 |
//! | [`sink`] | buffering, roll-over, manifests, acknowledgement |
//!
//! The crate never retries by itself, never writes checkpoints and never
//! shows credentials.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod columns;
pub mod config;
pub mod encode;
pub mod layout;
pub mod path;
pub mod progress;
pub mod sink;
pub mod store;

pub use config::{Compression, Format, ObjectStoreConfig, S3Config};
pub use sink::ObjectStoreSink;

#[cfg(test)]
mod sink_tests;
