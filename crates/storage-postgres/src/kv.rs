//! The SQL of the KV primitive (table `kv`).
//!
//! This module owns the statements on `kv` rows and the rule that a row
//! whose `expires_at` (server clock, `clock_timestamp()`) has passed reads
//! as absent. It must never touch another table, and never compare
//! deadlines with this process's clock.

use std::time::Duration;

use deltaforge_storage::Result;

use crate::backend::PostgresBackend;

/// A TTL in whole milliseconds for SQL (`None`: no expiry).
fn ttl_millis(ttl: Option<Duration>) -> Option<i64> {
    ttl.map(|t| i64::try_from(t.as_millis()).unwrap_or(i64::MAX))
}

/// Reads a live key.
pub(crate) async fn get(b: &PostgresBackend, namespace: &str, key: &str) -> Result<Option<String>> {
    let op = || format!("kv_get {namespace}/{key}");
    let client = b.pool.get(&op()).await?;
    let row = client
        .query_opt(
            &format!(
                "SELECT value FROM {}.kv WHERE namespace = $1 AND key = $2 \
                 AND (expires_at IS NULL OR expires_at > clock_timestamp())",
                b.schema
            ),
            &[&namespace, &key],
        )
        .await
        .map_err(|e| b.err(op(), e))?;
    Ok(row.map(|r| r.get(0)))
}

/// Writes a key, replacing any value and TTL (server clock).
pub(crate) async fn put(
    b: &PostgresBackend,
    namespace: &str,
    key: &str,
    value: &str,
    ttl: Option<Duration>,
) -> Result<()> {
    let op = || format!("kv_put {namespace}/{key}");
    let client = b.pool.get(&op()).await?;
    client
        .execute(
            &format!(
                "INSERT INTO {}.kv (namespace, key, value, expires_at) VALUES ($1, $2, $3, \
                 CASE WHEN $4::BIGINT IS NULL THEN NULL ELSE clock_timestamp() + $4::BIGINT * INTERVAL '1 millisecond' END) \
                 ON CONFLICT (namespace, key) DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at",
                b.schema
            ),
            &[&namespace, &key, &value, &ttl_millis(ttl)],
        )
        .await
        .map_err(|e| b.err(op(), e))?;
    Ok(())
}

/// Deletes a key; returns whether it existed and had not expired.
pub(crate) async fn delete(b: &PostgresBackend, namespace: &str, key: &str) -> Result<bool> {
    let op = || format!("kv_delete {namespace}/{key}");
    let client = b.pool.get(&op()).await?;
    let row = client
        .query_opt(
            &format!(
                "DELETE FROM {}.kv WHERE namespace = $1 AND key = $2 \
                 RETURNING (expires_at IS NULL OR expires_at > clock_timestamp())",
                b.schema
            ),
            &[&namespace, &key],
        )
        .await
        .map_err(|e| b.err(op(), e))?;
    Ok(row.is_some_and(|r| r.get::<_, bool>(0)))
}

/// Lists live keys starting with `prefix`, ordered by key (`COLLATE "C"`).
pub(crate) async fn list(b: &PostgresBackend, namespace: &str, prefix: &str) -> Result<Vec<(String, String)>> {
    let op = || format!("kv_list {namespace}/{prefix}*");
    let client = b.pool.get(&op()).await?;
    let rows = client
        .query(
            &format!(
                "SELECT key, value FROM {}.kv WHERE namespace = $1 AND starts_with(key, $2) \
                 AND (expires_at IS NULL OR expires_at > clock_timestamp()) ORDER BY key",
                b.schema
            ),
            &[&namespace, &prefix],
        )
        .await
        .map_err(|e| b.err(op(), e))?;
    Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
}
