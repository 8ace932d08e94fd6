//! The SQL of the Log primitive (table `log`).
//!
//! This module owns appending and reading `log` rows; the global sequence is
//! the table's BIGSERIAL, shared by every namespace. It must never touch
//! another table.

use deltaforge_storage::{LogEntry, Result};

use crate::backend::PostgresBackend;

/// Appends a record; returns its sequence number (the global BIGSERIAL).
pub(crate) async fn append(b: &PostgresBackend, namespace: &str, key: &str, value: &str) -> Result<u64> {
    let op = || format!("log_append {namespace}/{key}");
    let client = b.pool.get(&op()).await?;
    let row = client
        .query_one(
            &format!("INSERT INTO {}.log (namespace, key, value) VALUES ($1, $2, $3) RETURNING seq", b.schema),
            &[&namespace, &key, &value],
        )
        .await
        .map_err(|e| b.err(op(), e))?;
    Ok(row.get::<_, i64>(0).unsigned_abs())
}

/// Reads the records of `namespace` after `after_seq` whose key starts with `key_prefix`.
pub(crate) async fn read(
    b: &PostgresBackend,
    namespace: &str,
    key_prefix: &str,
    after_seq: u64,
) -> Result<Vec<LogEntry>> {
    let Ok(after) = i64::try_from(after_seq) else { return Ok(Vec::new()) };
    let op = || format!("log_read {namespace}/{key_prefix}* after {after_seq}");
    let client = b.pool.get(&op()).await?;
    let rows = client
        .query(
            &format!(
                "SELECT seq, key, value FROM {}.log WHERE namespace = $1 AND seq > $2 AND starts_with(key, $3) \
                 ORDER BY seq",
                b.schema
            ),
            &[&namespace, &after, &key_prefix],
        )
        .await
        .map_err(|e| b.err(op(), e))?;
    Ok(rows
        .into_iter()
        .map(|r| LogEntry { seq: r.get::<_, i64>(0).unsigned_abs(), key: r.get(1), value: r.get(2) })
        .collect())
}
