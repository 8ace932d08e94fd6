//! The [`PostgresBackend`]: shared storage in PostgreSQL, so that several
//! `deltaforge` instances can see the same checkpoints, schema history and
//! leases.
//!
//! This crate owns the layout of the backend's tables, which live in their
//! own PostgreSQL schema (default `deltaforge`) and mirror the SQLite ones:
//!
//! | table | columns |
//! |---|---|
//! | `kv` | `namespace`, `key` (`COLLATE "C"`), `value`, `expires_at` (timestamptz, NULL: never), PK (`namespace`, `key`) |
//! | `log` | `seq` (BIGSERIAL: one global sequence), `namespace`, `key`, `value`, `created_at` |
//! | `slots` | `namespace`, `key`, `version`, `value`, PK (`namespace`, `key`) |
//! | `queue` | `id` (BIGSERIAL), `namespace`, `key`, `value`, `created_at`; index (`namespace`, `key`, `id`) |
//! | `meta` | `key`, `value`; holds `schema_version` = `1` |
//!
//! The tables are created on first connect, in one transaction guarded by an
//! advisory lock so that instances starting together do not race. A schema
//! written by an unknown version is refused with [`StorageError::Unusable`](deltaforge_storage::StorageError::Unusable).
//! TTLs use the server's clock (`clock_timestamp()`), so instances with
//! skewed clocks still agree on when a key expires.
//!
//! Atomicity: [`StorageBackend::slot_cas`](deltaforge_storage::StorageBackend::slot_cas) is one conditional `UPDATE` (or
//! `INSERT … ON CONFLICT DO NOTHING`), whose row lock makes exactly one
//! concurrent writer win; [`StorageBackend::queue_push`](deltaforge_storage::StorageBackend::queue_push) counts and inserts
//! in one transaction under a per-queue advisory lock, so the bound holds
//! across instances.
//!
//! Why these crates: `tokio-postgres` is the maintained async PostgreSQL
//! client on tokio (DEPENDENCIES.md). The connection pool is a few lines
//! written here (module `pool`) rather than `deadpool`/`bb8`: the backend only
//! needs "reuse an idle, open client, else connect a new one, at most N",
//! and a broken connection is simply dropped and replaced.
//!
//! It must never log or return the DSN's password (errors name the
//! redacted DSN only), never return from a mutating call before PostgreSQL
//! committed it, and never interpret the values it stores. TLS is not
//! supported by this build (`NoTls`): run it over loopback or a trusted
//! network.
//!
//! Modules, by concern:
//!
//! * `schema`: the table layout, its creation and the version check;
//! * `pool`: the small connection pool;
//! * `backend`: the [`PostgresBackend`] handle and connecting;
//! * `kv`, `log`, `slot`, `queue`: the SQL of each primitive, one table each;
//! * `store`: the [`StorageBackend`](deltaforge_storage::StorageBackend) implementation that ties them together;
//! * DSNs are shown through `deltaforge_common::redact_dsn`, the one redaction of DeltaForge.

#![forbid(unsafe_code)]

mod backend;
mod kv;
mod log;
mod pool;
mod queue;
mod schema;
mod slot;
mod store;
#[cfg(test)]
mod tests;

pub use backend::PostgresBackend;
pub use schema::DEFAULT_SCHEMA;
