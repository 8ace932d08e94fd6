//! The SQL of the Queue primitive (table `queue`).
//!
//! This module owns pushing, peeking, acknowledging and counting `queue`
//! rows. A push counts and inserts inside one `BEGIN IMMEDIATE`
//! transaction, so the capacity bound holds under concurrent pushes. Each
//! function runs on the caller's (blocking) thread; it must never spawn,
//! await, or touch another table.

use deltaforge_storage::QueueItem;
use rusqlite::{params, Connection, TransactionBehavior};

use crate::clock::now_millis;

/// Appends an item unless the queue holds `capacity` items; `None`: full.
pub(crate) fn push(conn: &mut Connection, ns: &str, k: &str, v: &str, capacity: u64) -> rusqlite::Result<Option<u64>> {
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
}

/// Up to `limit` items, oldest first.
pub(crate) fn peek(conn: &Connection, ns: &str, k: &str, limit: i64) -> rusqlite::Result<Vec<QueueItem>> {
    let mut stmt =
        conn.prepare_cached("SELECT id, value FROM queue WHERE namespace = ?1 AND key = ?2 ORDER BY id LIMIT ?3")?;
    let items = stmt.query_map(params![ns, k, limit], |row| Ok(QueueItem { id: row.get(0)?, value: row.get(1)? }))?;
    items.collect()
}

/// Removes an item; returns whether it was present.
pub(crate) fn ack(conn: &Connection, ns: &str, k: &str, id: i64) -> rusqlite::Result<bool> {
    let deleted = conn
        .prepare_cached("DELETE FROM queue WHERE namespace = ?1 AND key = ?2 AND id = ?3")?
        .execute(params![ns, k, id])?;
    Ok(deleted > 0)
}

/// Number of items in the queue.
pub(crate) fn len(conn: &Connection, ns: &str, k: &str) -> rusqlite::Result<u64> {
    conn.prepare_cached("SELECT COUNT(*) FROM queue WHERE namespace = ?1 AND key = ?2")?
        .query_row(params![ns, k], |row| row.get(0))
}
