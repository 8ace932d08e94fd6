//! The [`SqliteBackend`] handle: one connection, and the runner that moves
//! every call onto a blocking thread.
//!
//! This module owns the connection and the conversion of SQLite errors to
//! [`StorageError`]s naming the operation. It must never run SQLite on an
//! async worker thread and never hold the connection across an `.await`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use deltaforge_storage::{Result, StorageError};
use rusqlite::{Connection, ErrorCode};

use crate::schema::{open_blocking, FIX_RESTORE};

/// A [`StorageBackend`](deltaforge_storage::StorageBackend) kept in one SQLite file (default `./data/deltaforge.db`).
///
/// The file runs in WAL mode with `synchronous=FULL`, so every mutating call
/// is durable once its future resolves; a call whose future is dropped still
/// runs to completion on its blocking thread. One connection serves every
/// call, one call at a time, which together with `BEGIN IMMEDIATE`
/// transactions makes [`StorageBackend::slot_cas`](deltaforge_storage::StorageBackend::slot_cas) and
/// [`StorageBackend::queue_push`](deltaforge_storage::StorageBackend::queue_push) atomic.
///
/// Layout (a public contract, operators query it with `sqlite3`):
///
/// | table | columns |
/// |---|---|
/// | `kv` | `namespace`, `key`, `value` (TEXT), `expires_at` (unix millis, NULL: never), PK (`namespace`, `key`) |
/// | `log` | `seq` (AUTOINCREMENT, never reused), `namespace`, `key`, `value`, `created_at` (unix millis) |
/// | `slots` | `namespace`, `key`, `version`, `value`, PK (`namespace`, `key`) |
/// | `queue` | `id` (AUTOINCREMENT), `namespace`, `key`, `value`, `created_at`; index (`namespace`, `key`, `id`) |
/// | `meta` | `key`, `value`; holds `schema_version` = `1` |
///
/// Expired `kv` rows are ignored by every read and purged when the store is
/// opened.
#[derive(Debug)]
pub struct SqliteBackend {
    path: PathBuf,
    pub(crate) conn: Arc<Mutex<Connection>>,
}

impl SqliteBackend {
    /// Opens the store at `path`, creating the file, its parent directories
    /// and the schema when they do not exist yet.
    ///
    /// # Errors
    ///
    /// [`StorageError::Unusable`] when the file is not a SQLite database, is
    /// corrupt, is a SQLite database that DeltaForge did not create, lacks
    /// tables, or was written by a schema version this code does not know
    /// (the file is then left as it was), or when SQLite cannot open it for
    /// reading and writing; [`StorageError::Backend`] when the parent
    /// directories cannot be created or another I/O error occurs.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let for_task = path.clone();
        let conn = tokio::task::spawn_blocking(move || open_blocking(&for_task))
            .await
            .map_err(|err| StorageError::backend(format!("open {}", path.display()), err))??;
        Ok(Self { path, conn: Arc::new(Mutex::new(conn)) })
    }

    /// The path of the database file, as given to [`SqliteBackend::open`].
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` with the connection on a blocking thread, naming `op` in any
    /// error it returns.
    pub(crate) async fn run<T, F>(&self, op: impl FnOnce() -> String, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        let joined = tokio::task::spawn_blocking(move || {
            // A panic inside `f` rolls its transaction back while unwinding,
            // so a poisoned lock still guards a consistent connection.
            let mut conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
            let result = f(&mut conn);
            if result.is_err() && !conn.is_autocommit() {
                // A failed COMMIT (disk full, I/O error) may leave its
                // transaction open; every later call would then fail with
                // "cannot start a transaction within a transaction" even
                // after the cause is gone.
                let _ = conn.execute_batch("ROLLBACK");
            }
            result
        })
        .await;
        match joined {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(sql_error(&self.path, op(), err)),
            Err(err) => Err(StorageError::backend(op(), err)),
        }
    }
}

/// The file system holding the store has no room for a write.
#[derive(Debug, thiserror::Error)]
#[error(
    "the file system holding {path} is full ({cause}); free space there, or move the storage to a larger \
     volume (--storage-path); writes succeed again by themselves once there is room"
)]
pub struct DiskFull {
    /// The store's file.
    pub path: String,
    /// SQLite's error.
    #[source]
    pub cause: rusqlite::Error,
}

/// Converts a SQLite error of operation `op`; a store found corrupt is
/// reported as [`StorageError::Unusable`], a full disk as a
/// [`StorageError::Backend`] whose source is [`DiskFull`] (retrying helps
/// once space is freed).
fn sql_error(path: &Path, op: String, err: rusqlite::Error) -> StorageError {
    match err.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => {
            StorageError::backend(op, DiskFull { path: path.display().to_string(), cause: err })
        }
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => StorageError::Unusable {
            location: path.display().to_string(),
            reason: format!("{op} found the file damaged: {err}"),
            fix: FIX_RESTORE.to_owned(),
        },
        _ => StorageError::backend(op, err),
    }
}
