//! The [`SqliteBackend`]: durable single-instance storage in one SQLite file.
//!
//! This module owns the on-disk layout of that file (tables `kv`, `log`,
//! `slots`, `queue` and `meta`; see [`SqliteBackend`]) and the rules for
//! opening it: a file that is not a SQLite database, or that was written by
//! a schema version this code does not know, is refused with
//! [`StorageError::Unusable`] and left untouched. The table and column names
//! are a public contract: operators query them with `sqlite3`.
//!
//! It must never return from a mutating call before the write is durable
//! (`synchronous=FULL`), never run SQLite on an async worker thread (every
//! call goes through [`tokio::task::spawn_blocking`]), and never interpret
//! the values it stores.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior};

use crate::{CasOutcome, LogEntry, QueueItem, Result, StorageBackend, StorageError, Versioned};

/// The schema version this code writes and understands (`meta.schema_version`).
const SCHEMA_VERSION: &str = "1";

/// How long a call waits for a lock held by another connection before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The tables every version-1 store has.
const TABLES: [&str; 5] = ["kv", "log", "slots", "queue", "meta"];

/// Schema version 1, created in one transaction when the file is new.
const SCHEMA_V1: &str = "
CREATE TABLE kv (
    namespace  TEXT NOT NULL,
    key        TEXT NOT NULL,
    value      TEXT NOT NULL,
    expires_at INTEGER NULL,
    PRIMARY KEY (namespace, key)
);
CREATE TABLE log (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    namespace  TEXT NOT NULL,
    key        TEXT NOT NULL,
    value      TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX log_namespace_seq ON log (namespace, seq);
CREATE TABLE slots (
    namespace TEXT NOT NULL,
    key       TEXT NOT NULL,
    version   INTEGER NOT NULL,
    value     TEXT NOT NULL,
    PRIMARY KEY (namespace, key)
);
CREATE TABLE queue (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    namespace  TEXT NOT NULL,
    key        TEXT NOT NULL,
    value      TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX queue_namespace_key_id ON queue (namespace, key, id);
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT
);
INSERT INTO meta (key, value) VALUES ('schema_version', '1');
";

/// What an operator can do about a damaged or foreign store file.
const FIX_RESTORE: &str = "Restore the file from a backup, or move it aside to start from empty checkpoints \
     (every pipeline then re-reads from its beginning)";

/// A [`StorageBackend`] kept in one SQLite file (default `./data/deltaforge.db`).
///
/// The file runs in WAL mode with `synchronous=FULL`, so every mutating call
/// is durable once its future resolves; a call whose future is dropped still
/// runs to completion on its blocking thread. One connection serves every
/// call, one call at a time, which together with `BEGIN IMMEDIATE`
/// transactions makes [`StorageBackend::slot_cas`] and
/// [`StorageBackend::queue_push`] atomic.
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
    conn: Arc<Mutex<Connection>>,
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
    async fn run<T, F>(&self, op: impl FnOnce() -> String, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        let joined = tokio::task::spawn_blocking(move || {
            // A panic inside `f` rolls its transaction back while unwinding,
            // so a poisoned lock still guards a consistent connection.
            let mut conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut conn)
        })
        .await;
        match joined {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(sql_error(&self.path, op(), err)),
            Err(err) => Err(StorageError::backend(op(), err)),
        }
    }
}

/// Converts a SQLite error of operation `op`; a store found corrupt is
/// reported as [`StorageError::Unusable`].
fn sql_error(path: &Path, op: String, err: rusqlite::Error) -> StorageError {
    match err.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => StorageError::Unusable {
            location: path.display().to_string(),
            reason: format!("{op} found the file damaged: {err}"),
            fix: FIX_RESTORE.to_owned(),
        },
        _ => StorageError::backend(op, err),
    }
}

/// Converts an error raised while opening or inspecting the file.
fn open_error(location: &str, step: &str, err: rusqlite::Error) -> StorageError {
    match err.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => StorageError::Unusable {
            location: location.to_owned(),
            reason: format!("it is not a SQLite database, or it is corrupt ({err})"),
            fix: FIX_RESTORE.to_owned(),
        },
        Some(ErrorCode::CannotOpen | ErrorCode::PermissionDenied | ErrorCode::ReadOnly) => StorageError::Unusable {
            location: location.to_owned(),
            reason: format!("SQLite cannot open it for reading and writing ({err})"),
            fix: "Check that the path names a file (not a directory) and that DeltaForge may read and write \
                  both the file and its directory"
                .to_owned(),
        },
        _ => StorageError::backend(format!("{step} {location}"), err),
    }
}

/// What [`inspect`] found in the file.
enum Layout {
    /// No tables at all: a new (or empty) file.
    Empty,
    /// A complete store of [`SCHEMA_VERSION`].
    Current,
}

/// Reads the file's layout without modifying it.
fn inspect(conn: &Connection, location: &str) -> Result<Layout> {
    let unusable = |reason: String, fix: &str| StorageError::Unusable {
        location: location.to_owned(),
        reason,
        fix: fix.to_owned(),
    };
    let tables: Vec<String> = (|| {
        let mut stmt = conn.prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'",
        )?;
        let names = stmt.query_map([], |row| row.get(0))?;
        names.collect::<rusqlite::Result<Vec<String>>>()
    })()
    .map_err(|err| open_error(location, "inspect", err))?;

    if tables.is_empty() {
        return Ok(Layout::Empty);
    }
    if !tables.iter().any(|table| table == "meta") {
        return Err(unusable(
            format!(
                "it is a SQLite database that DeltaForge did not create (tables: {}; no meta table)",
                tables.join(", ")
            ),
            "Point the storage path at another file, or move this one aside to start from empty checkpoints \
             (every pipeline then re-reads from its beginning)",
        ));
    }
    let version: Option<String> = conn
        .query_row("SELECT CAST(value AS TEXT) FROM meta WHERE key = 'schema_version'", [], |row| row.get(0))
        .optional()
        .map_err(|err| open_error(location, "inspect", err))?
        .flatten();
    match version.as_deref() {
        Some(SCHEMA_VERSION) => {}
        Some(other) => {
            return Err(unusable(
                format!(
                    "it was written with storage schema version {other:?}, which this DeltaForge does not know \
                     (it knows version {SCHEMA_VERSION})"
                ),
                "Run the DeltaForge release that wrote it, or restore the file from a backup, or move it aside \
                 to start from empty checkpoints (every pipeline then re-reads from its beginning)",
            ));
        }
        None => {
            return Err(unusable("its meta table holds no schema_version".to_owned(), FIX_RESTORE));
        }
    }
    let missing: Vec<&str> = TABLES.into_iter().filter(|table| !tables.iter().any(|t| t == table)).collect();
    if !missing.is_empty() {
        return Err(unusable(
            format!("it declares schema version {SCHEMA_VERSION} but lacks table(s) {}", missing.join(", ")),
            FIX_RESTORE,
        ));
    }
    Ok(Layout::Current)
}

/// Opens, configures and (when new) initialises the file; runs on a blocking thread.
fn open_blocking(path: &Path) -> Result<Connection> {
    let location = path.display().to_string();
    if let Some(parent) = path.parent().filter(|parent| !parent.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|err| {
            StorageError::backend(format!("create directory {} for {location}", parent.display()), err)
        })?;
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = Connection::open_with_flags(path, flags).map_err(|err| open_error(&location, "open", err))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(|err| open_error(&location, "configure", err))?;

    // Refuse foreign or unknown files before changing anything in them.
    inspect(&conn, &location)?;

    let journal_mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(|err| open_error(&location, "set journal_mode=WAL on", err))?;
    if !journal_mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(path = %location, journal_mode, "SQLite storage could not switch to WAL mode");
    }
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(|err| open_error(&location, "set synchronous=FULL on", err))?;

    // Inspect again under the write lock: another process may have created
    // the schema in between.
    let created = (|| -> Result<bool> {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|err| open_error(&location, "lock", err))?;
        let created = match inspect(&tx, &location)? {
            Layout::Current => false,
            Layout::Empty => {
                tx.execute_batch(SCHEMA_V1).map_err(|err| open_error(&location, "create schema in", err))?;
                true
            }
        };
        tx.commit().map_err(|err| open_error(&location, "create schema in", err))?;
        Ok(created)
    })()?;

    let purged = conn
        .execute("DELETE FROM kv WHERE expires_at IS NOT NULL AND expires_at <= ?1", params![now_millis()])
        .map_err(|err| open_error(&location, "purge expired keys in", err))?;
    tracing::info!(path = %location, created, purged_expired_keys = purged, "opened SQLite storage");
    Ok(conn)
}

/// Wall-clock time in unix milliseconds (0 before the epoch).
fn now_millis() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
}

/// The `expires_at` value of a key written now with `ttl`.
fn expires_at(ttl: Option<Duration>) -> Option<i64> {
    ttl.map(|ttl| now_millis().saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)))
}

#[async_trait]
impl StorageBackend for SqliteBackend {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    async fn kv_get(&self, namespace: &str, key: &str) -> Result<Option<String>> {
        let (ns, k) = (namespace.to_owned(), key.to_owned());
        self.run(
            || format!("kv_get {namespace}/{key}"),
            move |conn| {
                conn.prepare_cached(
                    "SELECT value FROM kv WHERE namespace = ?1 AND key = ?2 \
                     AND (expires_at IS NULL OR expires_at > ?3)",
                )?
                .query_row(params![ns, k, now_millis()], |row| row.get(0))
                .optional()
            },
        )
        .await
    }

    async fn kv_put(&self, namespace: &str, key: &str, value: &str, ttl: Option<Duration>) -> Result<()> {
        let (ns, k, v) = (namespace.to_owned(), key.to_owned(), value.to_owned());
        self.run(
            || format!("kv_put {namespace}/{key}"),
            move |conn| {
                conn.prepare_cached(
                    "INSERT INTO kv (namespace, key, value, expires_at) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
                )?
                .execute(params![ns, k, v, expires_at(ttl)])?;
                Ok(())
            },
        )
        .await
    }

    async fn kv_delete(&self, namespace: &str, key: &str) -> Result<bool> {
        let (ns, k) = (namespace.to_owned(), key.to_owned());
        self.run(
            || format!("kv_delete {namespace}/{key}"),
            move |conn| {
                let now = now_millis();
                let mut stmt =
                    conn.prepare_cached("DELETE FROM kv WHERE namespace = ?1 AND key = ?2 RETURNING expires_at")?;
                let deleted = stmt.query_map(params![ns, k], |row| row.get::<_, Option<i64>>(0))?;
                let mut was_live = false;
                for expires_at in deleted {
                    was_live |= expires_at?.is_none_or(|deadline| deadline > now);
                }
                Ok(was_live)
            },
        )
        .await
    }

    async fn kv_list(&self, namespace: &str, prefix: &str) -> Result<Vec<(String, String)>> {
        let (ns, p) = (namespace.to_owned(), prefix.to_owned());
        self.run(
            || format!("kv_list {namespace}/{prefix}*"),
            move |conn| {
                // Keys with the prefix form one contiguous run starting at it.
                let mut stmt = conn.prepare_cached(
                    "SELECT key, value FROM kv WHERE namespace = ?1 AND key >= ?2 \
                     AND (expires_at IS NULL OR expires_at > ?3) ORDER BY key",
                )?;
                let mut rows = stmt.query(params![ns, p, now_millis()])?;
                let mut listed = Vec::new();
                while let Some(row) = rows.next()? {
                    let key: String = row.get(0)?;
                    if !key.starts_with(&p) {
                        break;
                    }
                    listed.push((key, row.get(1)?));
                }
                Ok(listed)
            },
        )
        .await
    }

    async fn log_append(&self, namespace: &str, key: &str, value: &str) -> Result<u64> {
        let (ns, k, v) = (namespace.to_owned(), key.to_owned(), value.to_owned());
        self.run(
            || format!("log_append {namespace}/{key}"),
            move |conn| {
                conn.prepare_cached("INSERT INTO log (namespace, key, value, created_at) VALUES (?1, ?2, ?3, ?4)")?
                    .execute(params![ns, k, v, now_millis()])?;
                // AUTOINCREMENT rowids are positive and never reused.
                Ok(conn.last_insert_rowid().unsigned_abs())
            },
        )
        .await
    }

    async fn log_read(&self, namespace: &str, key_prefix: &str, after_seq: u64) -> Result<Vec<LogEntry>> {
        let (ns, p) = (namespace.to_owned(), key_prefix.to_owned());
        let Ok(after) = i64::try_from(after_seq) else {
            // No sequence number can exceed i64::MAX in SQLite.
            return Ok(Vec::new());
        };
        self.run(
            || format!("log_read {namespace}/{key_prefix}* after {after_seq}"),
            move |conn| {
                let mut stmt = conn
                    .prepare_cached("SELECT seq, key, value FROM log WHERE namespace = ?1 AND seq > ?2 ORDER BY seq")?;
                let mut rows = stmt.query(params![ns, after])?;
                let mut entries = Vec::new();
                while let Some(row) = rows.next()? {
                    let key: String = row.get(1)?;
                    if key.starts_with(&p) {
                        entries.push(LogEntry { seq: row.get(0)?, key, value: row.get(2)? });
                    }
                }
                Ok(entries)
            },
        )
        .await
    }

    async fn slot_get(&self, namespace: &str, key: &str) -> Result<Option<Versioned>> {
        let (ns, k) = (namespace.to_owned(), key.to_owned());
        self.run(|| format!("slot_get {namespace}/{key}"), move |conn| read_slot(conn, &ns, &k)).await
    }

    async fn slot_cas(&self, namespace: &str, key: &str, expected: Option<u64>, value: &str) -> Result<CasOutcome> {
        let (ns, k, v) = (namespace.to_owned(), key.to_owned(), value.to_owned());
        self.run(
            || format!("slot_cas {namespace}/{key}"),
            move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let current = read_slot(&tx, &ns, &k)?;
                let current_version = current.as_ref().map(|slot| slot.version);
                if current_version != expected {
                    return Ok(CasOutcome::Conflict(current));
                }
                let version = match current_version {
                    None => {
                        tx.prepare_cached("INSERT INTO slots (namespace, key, version, value) VALUES (?1, ?2, 1, ?3)")?
                            .execute(params![ns, k, v])?;
                        1
                    }
                    Some(version) => {
                        // Versions are read from an i64 column, so this cannot overflow.
                        let next = version + 1;
                        tx.prepare_cached(
                            "UPDATE slots SET version = ?3, value = ?4 WHERE namespace = ?1 AND key = ?2",
                        )?
                        .execute(params![ns, k, next, v])?;
                        next
                    }
                };
                tx.commit()?;
                Ok(CasOutcome::Swapped(version))
            },
        )
        .await
    }

    async fn slot_delete(&self, namespace: &str, key: &str) -> Result<bool> {
        let (ns, k) = (namespace.to_owned(), key.to_owned());
        self.run(
            || format!("slot_delete {namespace}/{key}"),
            move |conn| {
                let deleted = conn
                    .prepare_cached("DELETE FROM slots WHERE namespace = ?1 AND key = ?2")?
                    .execute(params![ns, k])?;
                Ok(deleted > 0)
            },
        )
        .await
    }

    async fn queue_push(&self, namespace: &str, key: &str, value: &str, capacity: u64) -> Result<u64> {
        let (ns, k, v) = (namespace.to_owned(), key.to_owned(), value.to_owned());
        let pushed = self
            .run(
                || format!("queue_push {namespace}/{key}"),
                move |conn| {
                    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                    let len: u64 = tx
                        .prepare_cached("SELECT COUNT(*) FROM queue WHERE namespace = ?1 AND key = ?2")?
                        .query_row(params![ns, k], |row| row.get(0))?;
                    if len >= capacity {
                        return Ok(None);
                    }
                    tx.prepare_cached("INSERT INTO queue (namespace, key, value, created_at) VALUES (?1, ?2, ?3, ?4)")?
                        .execute(params![ns, k, v, now_millis()])?;
                    let id = tx.last_insert_rowid().unsigned_abs();
                    tx.commit()?;
                    Ok(Some(id))
                },
            )
            .await?;
        pushed.ok_or_else(|| StorageError::QueueFull { namespace: namespace.to_owned(), key: key.to_owned(), capacity })
    }

    async fn queue_peek(&self, namespace: &str, key: &str, limit: usize) -> Result<Vec<QueueItem>> {
        let (ns, k) = (namespace.to_owned(), key.to_owned());
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run(
            || format!("queue_peek {namespace}/{key}"),
            move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT id, value FROM queue WHERE namespace = ?1 AND key = ?2 ORDER BY id LIMIT ?3",
                )?;
                let items =
                    stmt.query_map(params![ns, k, limit], |row| Ok(QueueItem { id: row.get(0)?, value: row.get(1)? }))?;
                items.collect()
            },
        )
        .await
    }

    async fn queue_ack(&self, namespace: &str, key: &str, id: u64) -> Result<bool> {
        let (ns, k) = (namespace.to_owned(), key.to_owned());
        let Ok(id) = i64::try_from(id) else {
            // No id can exceed i64::MAX in SQLite.
            return Ok(false);
        };
        self.run(
            || format!("queue_ack {namespace}/{key} id {id}"),
            move |conn| {
                let deleted = conn
                    .prepare_cached("DELETE FROM queue WHERE namespace = ?1 AND key = ?2 AND id = ?3")?
                    .execute(params![ns, k, id])?;
                Ok(deleted > 0)
            },
        )
        .await
    }

    async fn queue_len(&self, namespace: &str, key: &str) -> Result<u64> {
        let (ns, k) = (namespace.to_owned(), key.to_owned());
        self.run(
            || format!("queue_len {namespace}/{key}"),
            move |conn| {
                conn.prepare_cached("SELECT COUNT(*) FROM queue WHERE namespace = ?1 AND key = ?2")?
                    .query_row(params![ns, k], |row| row.get(0))
            },
        )
        .await
    }
}

/// Reads one slot.
fn read_slot(conn: &Connection, namespace: &str, key: &str) -> rusqlite::Result<Option<Versioned>> {
    conn.prepare_cached("SELECT version, value FROM slots WHERE namespace = ?1 AND key = ?2")?
        .query_row(params![namespace, key], |row| Ok(Versioned { version: row.get(0)?, value: row.get(1)? }))
        .optional()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rusqlite::Connection;
    use tempfile::TempDir;

    use super::SqliteBackend;
    use crate::{CasOutcome, StorageBackend, StorageError, Versioned};

    async fn make_store() -> (Arc<dyn StorageBackend>, TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteBackend::open(dir.path().join("deltaforge.db")).await.unwrap();
        (Arc::new(store), dir)
    }

    crate::conformance::all_conformance_tests!(make_store);

    /// The `Unusable` error of opening `path`, or a failure naming what happened instead.
    async fn unusable(path: &std::path::Path) -> (String, String, String, String) {
        match SqliteBackend::open(path).await {
            Err(err @ StorageError::Unusable { .. }) => {
                let message = err.to_string();
                let StorageError::Unusable { location, reason, fix } = err else { unreachable!() };
                (location, reason, fix, message)
            }
            Err(other) => panic!("expected Unusable, got {other:?}"),
            Ok(_) => panic!("expected Unusable, but {} opened", path.display()),
        }
    }

    #[tokio::test]
    async fn kind_and_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let store = SqliteBackend::open(&path).await.unwrap();
        assert_eq!(store.kind(), "sqlite");
        assert_eq!(store.path(), path);
    }

    #[tokio::test]
    async fn data_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deltaforge.db");
        let (seq, queued) = {
            let store = SqliteBackend::open(&path).await.unwrap();
            store.kv_put("checkpoints", "pg-orders", r#"{"lsn":"0/16B3748"}"#, None).await.unwrap();
            store.kv_put("leases", "gone", "x", Some(std::time::Duration::from_millis(1))).await.unwrap();
            let seq = store.log_append("schemas", "public.orders", "v1").await.unwrap();
            assert_eq!(store.slot_cas("cursors", "snap", None, "c1").await.unwrap(), CasOutcome::Swapped(1));
            let queued = store.queue_push("dlq", "pg-orders", "bad event", 10).await.unwrap();
            (seq, queued)
        };
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;

        let store = SqliteBackend::open(&path).await.unwrap();
        assert_eq!(store.kv_get("checkpoints", "pg-orders").await.unwrap().as_deref(), Some(r#"{"lsn":"0/16B3748"}"#));
        assert_eq!(store.kv_get("leases", "gone").await.unwrap(), None);
        let log = store.log_read("schemas", "", 0).await.unwrap();
        assert_eq!(log.len(), 1);
        assert_eq!((log[0].seq, log[0].value.as_str()), (seq, "v1"));
        assert!(store.log_append("schemas", "public.orders", "v2").await.unwrap() > seq);
        assert_eq!(
            store.slot_get("cursors", "snap").await.unwrap(),
            Some(Versioned { version: 1, value: "c1".into() })
        );
        assert_eq!(store.slot_cas("cursors", "snap", Some(1), "c2").await.unwrap(), CasOutcome::Swapped(2));
        let items = store.queue_peek("dlq", "pg-orders", 10).await.unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!((items[0].id, items[0].value.as_str()), (queued, "bad event"));
        assert!(store.queue_push("dlq", "pg-orders", "next", 10).await.unwrap() > queued);

        // The expired key was purged on open.
        let external = Connection::open(&path).unwrap();
        let rows: i64 =
            external.query_row("SELECT COUNT(*) FROM kv WHERE namespace = 'leases'", [], |row| row.get(0)).unwrap();
        assert_eq!(rows, 0);
    }

    #[tokio::test]
    async fn creates_parent_directories() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a").join("b").join("data").join("deltaforge.db");
        let store = SqliteBackend::open(&path).await.unwrap();
        store.kv_put("checkpoints", "k", "v", None).await.unwrap();
        assert!(path.is_file());
    }

    #[tokio::test]
    async fn empty_file_is_initialised() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.db");
        std::fs::write(&path, b"").unwrap();
        let store = SqliteBackend::open(&path).await.unwrap();
        store.kv_put("checkpoints", "k", "v", None).await.unwrap();
        assert_eq!(store.kv_get("checkpoints", "k").await.unwrap().as_deref(), Some("v"));
    }

    #[tokio::test]
    async fn garbage_file_is_unusable_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deltaforge.db");
        let garbage = "this is not a database\n".repeat(200).into_bytes();
        assert!(garbage.len() > 4096);
        std::fs::write(&path, &garbage).unwrap();

        let (location, reason, fix, message) = unusable(&path).await;
        assert_eq!(location, path.display().to_string());
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(reason.contains("not a SQLite database"), "{reason}");
        assert!(fix.contains("backup") && fix.contains("move it aside"), "{fix}");
        assert_eq!(std::fs::read(&path).unwrap(), garbage, "the file must not be modified");
    }

    #[tokio::test]
    async fn unknown_schema_version_is_unusable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deltaforge.db");
        drop(SqliteBackend::open(&path).await.unwrap());
        Connection::open(&path)
            .unwrap()
            .execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'", [])
            .unwrap();

        let (location, reason, _fix, message) = unusable(&path).await;
        assert_eq!(location, path.display().to_string());
        assert!(reason.contains("\"99\""), "{reason}");
        assert!(message.contains(&path.display().to_string()), "{message}");
    }

    #[tokio::test]
    async fn missing_schema_version_is_unusable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deltaforge.db");
        drop(SqliteBackend::open(&path).await.unwrap());
        Connection::open(&path).unwrap().execute("DELETE FROM meta", []).unwrap();
        let (_, reason, _, _) = unusable(&path).await;
        assert!(reason.contains("schema_version"), "{reason}");
    }

    #[tokio::test]
    async fn missing_table_is_unusable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deltaforge.db");
        drop(SqliteBackend::open(&path).await.unwrap());
        Connection::open(&path).unwrap().execute("DROP TABLE slots", []).unwrap();
        let (_, reason, _, _) = unusable(&path).await;
        assert!(reason.contains("slots"), "{reason}");
    }

    #[tokio::test]
    async fn foreign_database_is_unusable_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("other-app.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT);").unwrap();
        }
        let (_, reason, _, _) = unusable(&path).await;
        assert!(reason.contains("did not create") && reason.contains("users"), "{reason}");
        let conn = Connection::open(&path).unwrap();
        let mode: String = conn.query_row("PRAGMA journal_mode", [], |row| row.get(0)).unwrap();
        assert_eq!(mode, "delete", "journal mode of a foreign file must not change");
    }

    #[tokio::test]
    async fn directory_path_is_unusable_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let (location, _, _, _) = unusable(dir.path()).await;
        assert_eq!(location, dir.path().display().to_string());
    }

    #[tokio::test]
    async fn rows_are_visible_to_an_independent_connection() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data").join("deltaforge.db");
        let store = SqliteBackend::open(&path).await.unwrap();
        let checkpoint = r#"{"lsn":"0/16B3748"}"#;
        store.kv_put("checkpoints", "pg-orders", checkpoint, None).await.unwrap();
        store.kv_put("leases", "pg-orders", "node-1", None).await.unwrap();

        let external = Connection::open(&path).unwrap();
        let mut stmt = external.prepare("SELECT key, length(value) FROM kv WHERE namespace='checkpoints'").unwrap();
        let rows: Vec<(String, i64)> =
            stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?))).unwrap().collect::<rusqlite::Result<_>>().unwrap();
        assert_eq!(rows, vec![("pg-orders".to_string(), checkpoint.len() as i64)]);
        let value_type: String = external
            .query_row("SELECT typeof(value) FROM kv WHERE namespace='checkpoints'", [], |row| row.get(0))
            .unwrap();
        assert_eq!(value_type, "text");

        // Deleting the row by hand resets that checkpoint.
        external.execute("DELETE FROM kv WHERE namespace='checkpoints' AND key='pg-orders'", []).unwrap();
        assert_eq!(store.kv_get("checkpoints", "pg-orders").await.unwrap(), None);
        assert_eq!(store.kv_get("leases", "pg-orders").await.unwrap().as_deref(), Some("node-1"));
    }

    #[tokio::test]
    async fn durability_settings_are_applied() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteBackend::open(dir.path().join("deltaforge.db")).await.unwrap();
        let conn = store.conn.lock().unwrap();
        let journal_mode: String = conn.query_row("PRAGMA journal_mode", [], |row| row.get(0)).unwrap();
        assert_eq!(journal_mode, "wal");
        let synchronous: i64 = conn.query_row("PRAGMA synchronous", [], |row| row.get(0)).unwrap();
        assert_eq!(synchronous, 2, "synchronous=FULL");
        let busy_timeout: i64 = conn.query_row("PRAGMA busy_timeout", [], |row| row.get(0)).unwrap();
        assert!(busy_timeout >= 1000);
        let version: String =
            conn.query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |row| row.get(0)).unwrap();
        assert_eq!(version, "1");
    }

    #[tokio::test]
    async fn sequence_numbers_are_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deltaforge.db");
        let store = SqliteBackend::open(&path).await.unwrap();
        store.log_append("schemas", "a", "1").await.unwrap();
        let last = store.log_append("schemas", "a", "2").await.unwrap();
        let last_queued = store.queue_push("dlq", "q", "x", 10).await.unwrap();
        assert!(store.queue_ack("dlq", "q", last_queued).await.unwrap());
        let external = Connection::open(&path).unwrap();
        external.execute("DELETE FROM log", []).unwrap();
        drop(store);

        let store = SqliteBackend::open(&path).await.unwrap();
        assert!(store.log_append("schemas", "a", "3").await.unwrap() > last);
        assert!(store.queue_push("dlq", "q", "y", 10).await.unwrap() > last_queued);
    }
}
