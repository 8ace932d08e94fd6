//! The SQL of the Log primitive (table `log`).
//!
//! This module owns appending and reading `log` rows; the global sequence is
//! the table's AUTOINCREMENT rowid, so a sequence number is never reused,
//! even after rows are deleted by hand. Each function runs on the caller's
//! (blocking) thread; it must never spawn, await, or touch another table.

use deltaforge_storage::LogEntry;
use rusqlite::{params, Connection};

use crate::clock::now_millis;

/// Appends a record; returns its sequence number.
pub(crate) fn append(conn: &Connection, ns: &str, k: &str, v: &str) -> rusqlite::Result<u64> {
    conn.prepare_cached("INSERT INTO log (namespace, key, value, created_at) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![ns, k, v, now_millis()])?;
    // AUTOINCREMENT rowids are positive and never reused.
    Ok(conn.last_insert_rowid().unsigned_abs())
}

/// Reads the records of `ns` after `after` whose key starts with `p`, in sequence order.
pub(crate) fn read(conn: &Connection, ns: &str, p: &str, after: i64) -> rusqlite::Result<Vec<LogEntry>> {
    let mut stmt =
        conn.prepare_cached("SELECT seq, key, value FROM log WHERE namespace = ?1 AND seq > ?2 ORDER BY seq")?;
    let mut rows = stmt.query(params![ns, after])?;
    let mut entries = Vec::new();
    while let Some(row) = rows.next()? {
        let key: String = row.get(1)?;
        if key.starts_with(p) {
            entries.push(LogEntry { seq: row.get(0)?, key, value: row.get(2)? });
        }
    }
    Ok(entries)
}
