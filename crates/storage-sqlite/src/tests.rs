//! Tests of the SQLite backend: the shared conformance suite, plus what only
//! a file-backed store can show (reopening, refusing damaged or foreign
//! files, durability pragmas, the on-disk layout seen by `sqlite3`).

use std::sync::Arc;

use deltaforge_storage::{CasOutcome, StorageBackend, StorageError, Versioned};
use rusqlite::Connection;
use tempfile::TempDir;

use crate::SqliteBackend;

async fn make_store() -> (Arc<dyn StorageBackend>, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteBackend::open(dir.path().join("deltaforge.db")).await.unwrap();
    (Arc::new(store), dir)
}

deltaforge_storage::conformance::all_conformance_tests!(make_store);

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
    assert_eq!(store.slot_get("cursors", "snap").await.unwrap(), Some(Versioned { version: 1, value: "c1".into() }));
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
    Connection::open(&path).unwrap().execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'", []).unwrap();

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
    let value_type: String =
        external.query_row("SELECT typeof(value) FROM kv WHERE namespace='checkpoints'", [], |row| row.get(0)).unwrap();
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

/// A full disk (SQLite's `max_page_count` reached gives the same
/// SQLITE_FULL as a full file system): the error names the condition, the
/// file and what to do; a failed write leaves no transaction open; once
/// there is room, writes succeed again on the same connection.
#[tokio::test]
async fn disk_full_is_named_and_passes_once_there_is_room() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deltaforge.db");
    let store = SqliteBackend::open(&path).await.unwrap();
    store.kv_put("checkpoints", "a", "1", None).await.unwrap();
    {
        let conn = store.conn.lock().unwrap();
        let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap();
        conn.pragma_update(None, "max_page_count", pages).unwrap();
    }
    let big = "x".repeat(64 * 1024);
    let text = store.kv_put("checkpoints", "b", &big, None).await.unwrap_err().to_string();
    assert!(
        text.contains("kv_put checkpoints/b")
            && text.contains("is full")
            && text.contains(path.to_str().unwrap())
            && text.contains("free space"),
        "{text}"
    );
    let text = store.queue_push("dlq", "p", &big, 10).await.unwrap_err().to_string();
    assert!(text.contains("is full"), "{text}");
    assert!(store.conn.lock().unwrap().is_autocommit(), "a failed write left a transaction open");
    store.conn.lock().unwrap().pragma_update(None, "max_page_count", 1_000_000).unwrap();
    store.kv_put("checkpoints", "b", &big, None).await.unwrap();
    assert_eq!(store.kv_get("checkpoints", "b").await.unwrap().as_deref(), Some(big.as_str()));
    store.queue_push("dlq", "p", &big, 10).await.unwrap();
}
