//! Opening the SQLite file: checking its layout, creating it when new, and
//! setting the durability pragmas.
//!
//! This module owns the schema (version 1, [`SCHEMA_V1`]) and the rules for
//! refusing a file: one that is not a SQLite database, is corrupt, was not
//! created by DeltaForge or was written by an unknown schema version is
//! reported as [`StorageError::Unusable`] and left untouched. The table and
//! column names are a public contract (operators query them with `sqlite3`)
//! and must never change without a new schema version. It must never modify
//! a file before [`inspect`] has accepted it.

use std::path::Path;
use std::time::Duration;

use deltaforge_storage::{Result, StorageError};
use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior};

use crate::clock::now_millis;

/// The schema version this code writes and understands (`meta.schema_version`).
pub(crate) const SCHEMA_VERSION: &str = "1";

/// How long a call waits for a lock held by another connection before failing.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

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
pub(crate) const FIX_RESTORE: &str =
    "Restore the file from a backup, or move it aside to start from empty checkpoints \
     (every pipeline then re-reads from its beginning)";

/// Converts an error raised while opening or inspecting the file.
pub(crate) fn open_error(location: &str, step: &str, err: rusqlite::Error) -> StorageError {
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
pub(crate) enum Layout {
    /// No tables at all: a new (or empty) file.
    Empty,
    /// A complete store of [`SCHEMA_VERSION`].
    Current,
}

/// Reads the file's layout without modifying it.
pub(crate) fn inspect(conn: &Connection, location: &str) -> Result<Layout> {
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
pub(crate) fn open_blocking(path: &Path) -> Result<Connection> {
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
