//! The [`SqliteBackend`]: durable single-instance storage in one SQLite file.
//!
//! This crate owns the on-disk layout of that file (tables `kv`, `log`,
//! `slots`, `queue` and `meta`; see [`SqliteBackend`]) and the rules for
//! opening it: a file that is not a SQLite database, or that was written by
//! a schema version this code does not know, is refused with
//! [`StorageError::Unusable`](deltaforge_storage::StorageError::Unusable)
//! and left untouched. The table and column names are a public contract:
//! operators query them with `sqlite3`.
//!
//! Modules, by concern:
//!
//! * `schema`: opening the file, checking and creating the layout;
//! * `backend`: the [`SqliteBackend`] handle and its blocking-thread runner;
//! * `kv`, `log`, `slot`, `queue`: the SQL of each primitive, one table each;
//! * `store`: the [`StorageBackend`](deltaforge_storage::StorageBackend)
//!   implementation that ties them together;
//! * `clock`: wall-clock milliseconds for TTLs and `created_at`;
//! * [`backup`]: online, checked copies of the file (`VACUUM INTO`), also
//!   behind [`StorageBackend::backup_to`](deltaforge_storage::StorageBackend::backup_to);
//! * [`restore`]: putting a copy in place offline, refusing a file in use.
//!
//! It must never return from a mutating call before the write is durable
//! (`synchronous=FULL`), never run SQLite on an async worker thread (every
//! call goes through [`tokio::task::spawn_blocking`]), and never interpret
//! the values it stores.

#![forbid(unsafe_code)]

mod backend;
pub mod backup;
#[cfg(test)]
mod backup_tests;
mod clock;
mod kv;
mod log;
mod queue;
pub mod restore;
mod schema;
mod slot;
mod store;
#[cfg(test)]
mod tests;

pub use backend::{DiskFull, SqliteBackend};
pub use backup::{backup_file, inspect_copy, CopyInfo};
pub use restore::{ensure_not_in_use, restore_file, RestoreReport};
