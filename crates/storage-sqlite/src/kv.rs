//! The SQL of the KV primitive (table `kv`).
//!
//! This module owns the statements that read and write `kv` rows, and the
//! rule that a row whose `expires_at` has passed reads as absent. Each
//! function runs on the caller's (blocking) thread with the connection it is
//! given; it must never spawn, await, or touch another table.

use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use crate::clock::{expires_at, now_millis};

/// Reads a live key.
pub(crate) fn get(conn: &Connection, ns: &str, k: &str) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached(
        "SELECT value FROM kv WHERE namespace = ?1 AND key = ?2 \
         AND (expires_at IS NULL OR expires_at > ?3)",
    )?
    .query_row(params![ns, k, now_millis()], |row| row.get(0))
    .optional()
}

/// Writes a key, replacing any value and TTL.
pub(crate) fn put(conn: &Connection, ns: &str, k: &str, v: &str, ttl: Option<Duration>) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO kv (namespace, key, value, expires_at) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
    )?
    .execute(params![ns, k, v, expires_at(ttl)])?;
    Ok(())
}

/// Deletes a key; returns whether it existed and had not expired.
pub(crate) fn delete(conn: &Connection, ns: &str, k: &str) -> rusqlite::Result<bool> {
    let now = now_millis();
    let mut stmt = conn.prepare_cached("DELETE FROM kv WHERE namespace = ?1 AND key = ?2 RETURNING expires_at")?;
    let deleted = stmt.query_map(params![ns, k], |row| row.get::<_, Option<i64>>(0))?;
    let mut was_live = false;
    for expires_at in deleted {
        was_live |= expires_at?.is_none_or(|deadline| deadline > now);
    }
    Ok(was_live)
}

/// Lists live keys starting with `p`, ordered by key.
pub(crate) fn list(conn: &Connection, ns: &str, p: &str) -> rusqlite::Result<Vec<(String, String)>> {
    // Keys with the prefix form one contiguous run starting at it.
    let mut stmt = conn.prepare_cached(
        "SELECT key, value FROM kv WHERE namespace = ?1 AND key >= ?2 \
         AND (expires_at IS NULL OR expires_at > ?3) ORDER BY key",
    )?;
    let mut rows = stmt.query(params![ns, p, now_millis()])?;
    let mut listed = Vec::new();
    while let Some(row) = rows.next()? {
        let key: String = row.get(0)?;
        if !key.starts_with(p) {
            break;
        }
        listed.push((key, row.get(1)?));
    }
    Ok(listed)
}
