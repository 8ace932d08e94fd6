//! The SQL of the Slot primitive (table `slots`).
//!
//! This module owns reading, compare-and-swapping and deleting `slots` rows.
//! A swap reads and writes inside one `BEGIN IMMEDIATE` transaction, so
//! exactly one of several concurrent writers wins. Each function runs on the
//! caller's (blocking) thread; it must never spawn, await, or touch another
//! table.

use deltaforge_storage::{CasOutcome, Versioned};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

/// Reads one slot.
pub(crate) fn read(conn: &Connection, namespace: &str, key: &str) -> rusqlite::Result<Option<Versioned>> {
    conn.prepare_cached("SELECT version, value FROM slots WHERE namespace = ?1 AND key = ?2")?
        .query_row(params![namespace, key], |row| Ok(Versioned { version: row.get(0)?, value: row.get(1)? }))
        .optional()
}

/// Writes the slot if its version is `expected` (`None`: it must be empty).
pub(crate) fn cas(
    conn: &mut Connection,
    ns: &str,
    k: &str,
    expected: Option<u64>,
    v: &str,
) -> rusqlite::Result<CasOutcome> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let current = read(&tx, ns, k)?;
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
            tx.prepare_cached("UPDATE slots SET version = ?3, value = ?4 WHERE namespace = ?1 AND key = ?2")?
                .execute(params![ns, k, next, v])?;
            next
        }
    };
    tx.commit()?;
    Ok(CasOutcome::Swapped(version))
}

/// Empties a slot; returns whether it held a value.
pub(crate) fn delete(conn: &Connection, ns: &str, k: &str) -> rusqlite::Result<bool> {
    let deleted =
        conn.prepare_cached("DELETE FROM slots WHERE namespace = ?1 AND key = ?2")?.execute(params![ns, k])?;
    Ok(deleted > 0)
}
