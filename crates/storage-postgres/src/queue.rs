//! The SQL of the Queue primitive (table `queue`).
//!
//! This module owns pushing, peeking, acknowledging and counting `queue`
//! rows. A push counts and inserts in one transaction under a per-queue
//! advisory lock, so the capacity bound holds across instances. It must
//! never touch another table.

use deltaforge_storage::{QueueItem, Result, StorageError};

use crate::backend::PostgresBackend;

/// Appends an item unless the queue holds `capacity` items.
pub(crate) async fn push(b: &PostgresBackend, namespace: &str, key: &str, value: &str, capacity: u64) -> Result<u64> {
    let op = || format!("queue_push {namespace}/{key}");
    let mut client = b.pool.get(&op()).await?;
    let s = &b.schema;
    let cap = i64::try_from(capacity).unwrap_or(i64::MAX);
    let tx = client.transaction().await.map_err(|e| b.err(op(), e))?;
    // Serialises pushes to this queue across connections and instances;
    // released at commit or rollback.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
        &[&format!("deltaforge-queue:{s}:{namespace}\u{1}{key}")],
    )
    .await
    .map_err(|e| b.err(op(), e))?;
    let len: i64 = tx
        .query_one(&format!("SELECT COUNT(*) FROM {s}.queue WHERE namespace = $1 AND key = $2"), &[&namespace, &key])
        .await
        .map_err(|e| b.err(op(), e))?
        .get(0);
    if len >= cap {
        tx.rollback().await.map_err(|e| b.err(op(), e))?;
        return Err(StorageError::QueueFull { namespace: namespace.to_string(), key: key.to_string(), capacity });
    }
    let id: i64 = tx
        .query_one(
            &format!("INSERT INTO {s}.queue (namespace, key, value) VALUES ($1, $2, $3) RETURNING id"),
            &[&namespace, &key, &value],
        )
        .await
        .map_err(|e| b.err(op(), e))?
        .get(0);
    tx.commit().await.map_err(|e| b.err(op(), e))?;
    Ok(id.unsigned_abs())
}

/// Up to `limit` items, oldest first.
pub(crate) async fn peek(b: &PostgresBackend, namespace: &str, key: &str, limit: usize) -> Result<Vec<QueueItem>> {
    let op = || format!("queue_peek {namespace}/{key}");
    let client = b.pool.get(&op()).await?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = client
        .query(
            &format!("SELECT id, value FROM {}.queue WHERE namespace = $1 AND key = $2 ORDER BY id LIMIT $3", b.schema),
            &[&namespace, &key, &limit],
        )
        .await
        .map_err(|e| b.err(op(), e))?;
    Ok(rows.into_iter().map(|r| QueueItem { id: r.get::<_, i64>(0).unsigned_abs(), value: r.get(1) }).collect())
}

/// Removes an item; returns whether it was present.
pub(crate) async fn ack(b: &PostgresBackend, namespace: &str, key: &str, id: u64) -> Result<bool> {
    let Ok(id) = i64::try_from(id) else { return Ok(false) };
    let op = || format!("queue_ack {namespace}/{key}");
    let client = b.pool.get(&op()).await?;
    let n = client
        .execute(
            &format!("DELETE FROM {}.queue WHERE namespace = $1 AND key = $2 AND id = $3", b.schema),
            &[&namespace, &key, &id],
        )
        .await
        .map_err(|e| b.err(op(), e))?;
    Ok(n > 0)
}

/// Number of items in the queue.
pub(crate) async fn len(b: &PostgresBackend, namespace: &str, key: &str) -> Result<u64> {
    let op = || format!("queue_len {namespace}/{key}");
    let client = b.pool.get(&op()).await?;
    let n: i64 = client
        .query_one(
            &format!("SELECT COUNT(*) FROM {}.queue WHERE namespace = $1 AND key = $2", b.schema),
            &[&namespace, &key],
        )
        .await
        .map_err(|e| b.err(op(), e))?
        .get(0);
    Ok(n.unsigned_abs())
}
