//! Checking a backfill request on the server before it is queued: each
//! table's chunk statement, with the request's `where` in it as
//! [`super::chunks`] builds it, is prepared (parsed and planned against
//! the catalog, never run) inside a read-only transaction.
//!
//! This module must never run the condition, nor leave a transaction open.

use deltaforge_core::SourceError;

use super::sql::{connect, quoted};
use crate::config::Dsn;

/// Prepares the chunk statement of each `schema.table` with `condition`.
/// A statement the server refuses is fatal, with the server's message; a
/// server that cannot be reached is retryable.
pub async fn check_backfill(dsn: &Dsn, tables: &[String], condition: Option<&str>) -> Result<(), SourceError> {
    let client = connect(dsn).await.map_err(|e| match e {
        SourceError::Fatal(m) | SourceError::Retryable(m) => SourceError::Retryable(m),
    })?;
    let unreachable = |e: tokio_postgres::Error| SourceError::Retryable(format!("checking the backfill: {e}"));
    client.batch_execute("BEGIN READ ONLY").await.map_err(unreachable)?;
    let mut result = Ok(());
    for t in tables {
        let cond = condition.map(|c| format!(" AND ({c})")).unwrap_or_default();
        let sql = format!("SELECT * FROM {} WHERE true{cond} LIMIT 1", quoted(t));
        if let Err(e) = client.prepare(&sql).await {
            result = Err(match e.as_db_error() {
                Some(db) => SourceError::Fatal(format!(
                    "table {t}: the server refuses the chunk statement: {} (SQLSTATE {})",
                    db.message(),
                    db.code().code()
                )),
                None => unreachable(e),
            });
            break;
        }
    }
    let _ = client.batch_execute("ROLLBACK").await;
    result
}
