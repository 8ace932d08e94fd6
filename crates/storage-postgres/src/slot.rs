//! The SQL of the Slot primitive (table `slots`).
//!
//! This module owns reading, compare-and-swapping and deleting `slots` rows.
//! A swap is one conditional `UPDATE` (or `INSERT … ON CONFLICT DO
//! NOTHING`), whose row lock makes exactly one concurrent writer win. It
//! must never touch another table.

use deltaforge_storage::{CasOutcome, Result, Versioned};

use crate::backend::PostgresBackend;

/// Reads one slot.
pub(crate) async fn get(b: &PostgresBackend, namespace: &str, key: &str) -> Result<Option<Versioned>> {
    let client = b.pool.get(&format!("slot_get {namespace}/{key}")).await?;
    b.current_slot(&client, namespace, key).await
}

/// Writes the slot if its version is `expected` (`None`: it must be empty).
pub(crate) async fn cas(
    b: &PostgresBackend,
    namespace: &str,
    key: &str,
    expected: Option<u64>,
    value: &str,
) -> Result<CasOutcome> {
    let op = || format!("slot_cas {namespace}/{key}");
    let client = b.pool.get(&op()).await?;
    let s = &b.schema;
    // A concurrent delete or create between the write and the read of
    // the conflicting value is retried, so a conflict always reports a
    // state that contradicts `expected`.
    for _ in 0..5 {
        let swapped = match expected {
            None => client
                .query_opt(
                    &format!(
                        "INSERT INTO {s}.slots (namespace, key, version, value) VALUES ($1, $2, 1, $3) \
                         ON CONFLICT (namespace, key) DO NOTHING RETURNING version"
                    ),
                    &[&namespace, &key, &value],
                )
                .await
                .map_err(|e| b.err(op(), e))?,
            Some(v) => {
                let Ok(v) = i64::try_from(v) else {
                    return Ok(CasOutcome::Conflict(b.current_slot(&client, namespace, key).await?));
                };
                client
                    .query_opt(
                        &format!(
                            "UPDATE {s}.slots SET version = version + 1, value = $4 \
                             WHERE namespace = $1 AND key = $2 AND version = $3 RETURNING version"
                        ),
                        &[&namespace, &key, &v, &value],
                    )
                    .await
                    .map_err(|e| b.err(op(), e))?
            }
        };
        if let Some(row) = swapped {
            return Ok(CasOutcome::Swapped(row.get::<_, i64>(0).unsigned_abs()));
        }
        let current = b.current_slot(&client, namespace, key).await?;
        if current.as_ref().map(|c| c.version) != expected {
            return Ok(CasOutcome::Conflict(current));
        }
    }
    Ok(CasOutcome::Conflict(b.current_slot(&client, namespace, key).await?))
}

/// Empties a slot; returns whether it held a value.
pub(crate) async fn delete(b: &PostgresBackend, namespace: &str, key: &str) -> Result<bool> {
    let op = || format!("slot_delete {namespace}/{key}");
    let client = b.pool.get(&op()).await?;
    let n = client
        .execute(&format!("DELETE FROM {}.slots WHERE namespace = $1 AND key = $2", b.schema), &[&namespace, &key])
        .await
        .map_err(|e| b.err(op(), e))?;
    Ok(n > 0)
}
