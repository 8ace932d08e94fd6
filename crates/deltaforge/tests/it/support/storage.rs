//! Reading and rewriting a pipeline's SQLite storage file from the outside:
//! checkpoints, log records and slot values. This module is the only place
//! of the harness that knows the SQLite schema (tables `kv`, `log`,
//! `slots`); a later change switches it to the storage crate's SQLite
//! backend.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

/// Opens the storage file with a busy timeout (the binary may be writing).
fn open(db: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(db).expect("open storage");
    conn.busy_timeout(Duration::from_secs(5)).expect("busy timeout");
    conn
}

/// The stored checkpoint of `source_id` (`kv` table, namespace
/// `checkpoints`), `None` when the file or the record is missing.
pub fn checkpoint(db: &Path, source_id: &str) -> Option<Value> {
    if !db.exists() {
        return None;
    }
    open(db)
        .query_row("SELECT value FROM kv WHERE namespace = 'checkpoints' AND key = ?1", [source_id], |r| {
            r.get::<_, String>(0)
        })
        .ok()
        .map(|v| serde_json::from_str(&v).expect("checkpoint JSON"))
}

/// `position.seq` of the stored checkpoint of a `datagen` source (0 when
/// there is none yet).
pub fn checkpoint_seq(db: &Path, source_id: &str) -> u64 {
    checkpoint(db, source_id).map(|c| c["position"]["seq"].as_u64().expect("position.seq")).unwrap_or(0)
}

/// Overwrites the stored checkpoint of `source_id` with `checkpoint` (the
/// whole JSON record, as [`checkpoint`] returns it), e.g. to rewind a
/// pipeline so that it replays part of its log.
#[allow(dead_code, reason = "used by the `it` binary only")]
pub fn put_checkpoint(db: &Path, source_id: &str, checkpoint: &Value) {
    open(db)
        .execute(
            "INSERT OR REPLACE INTO kv (namespace, key, value, expires_at) VALUES ('checkpoints', ?1, ?2, NULL)",
            [source_id, &checkpoint.to_string()],
        )
        .expect("write checkpoint");
}

/// Deletes the stored checkpoint of `source_id`, as the documented operator
/// command does (`DELETE FROM kv WHERE namespace = 'checkpoints' AND key =
/// ...`); returns whether a row was deleted.
#[allow(dead_code, reason = "used by the `it` binary only")]
pub fn delete_checkpoint(db: &Path, source_id: &str) -> bool {
    open(db)
        .execute("DELETE FROM kv WHERE namespace = 'checkpoints' AND key = ?1", [source_id])
        .expect("delete checkpoint")
        == 1
}

/// The records of a storage log (`log` table) in `namespace` whose key is
/// `key`, oldest first, parsed as JSON (e.g. the schema history of one
/// table: namespace `schemas`, key `{tenant}/{db}/{table}`).
#[allow(dead_code, reason = "used by the `it` binary only")]
pub fn log_records(db: &Path, namespace: &str, key: &str) -> Vec<Value> {
    if !db.exists() {
        return Vec::new();
    }
    let conn = open(db);
    let mut stmt =
        conn.prepare("SELECT value FROM log WHERE namespace = ?1 AND key = ?2 ORDER BY seq").expect("prepare");
    let rows = stmt.query_map([namespace, key], |r| r.get::<_, String>(0)).expect("query log");
    rows.map(|r| serde_json::from_str(&r.expect("row")).expect("log record JSON")).collect()
}

/// The value of a Slot record (`slots` table) as JSON, e.g. a snapshot
/// progress record (`snapshots`, `{pipeline}/{schema.table}`); `None` when
/// absent.
#[allow(dead_code, reason = "used by the `it` binary only")]
pub fn slot(db: &Path, namespace: &str, key: &str) -> Option<Value> {
    if !db.exists() {
        return None;
    }
    open(db)
        .query_row("SELECT value FROM slots WHERE namespace = ?1 AND key = ?2", [namespace, key], |r| {
            r.get::<_, String>(0)
        })
        .ok()
        .map(|v| serde_json::from_str(&v).expect("slot JSON"))
}
