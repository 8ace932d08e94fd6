//! Plain key-ordered chunk reads for `deltaforge verify`: the snapshot's
//! chunk select (same key choice, same text-to-JSON conversion, same
//! short `REPEATABLE READ READ ONLY` transaction per chunk) without
//! watermarks, stream hand-over or slot checks, returning each chunk with
//! the server's WAL position read inside the chunk's transaction.
//!
//! This module owns reading rows for comparison only; it must never write
//! to the server (no watermarks), hold a transaction across chunks or take
//! an explicit lock.

use deltaforge_core::{Position, Row, SourceError};
use serde_json::Value;
use tokio_postgres::{Client, SimpleQueryRow};

use super::convert::convert;
use super::layout::{layout, layout_sql, KeyKind, TableInfo};
use super::sql::{connect, ident, literal, matched_tables, quoted, statements, text_rows};
use crate::config::{Dsn, TablePattern};
use crate::position::{position, Lsn};

/// One chunk read by [`PlainReader::chunk`].
#[derive(Debug)]
pub struct PlainChunk {
    /// The rows, in key order.
    pub rows: Vec<Row>,
    /// The last row's key as text, to pass as `after` for the next chunk
    /// (`None` when the chunk was empty).
    pub last_key: Option<Vec<String>>,
    /// `pg_current_wal_lsn()` read inside the chunk's transaction: every
    /// transaction the chunk saw committed before it.
    pub position: Position,
}

/// A connection that reads tables in key order for comparison.
pub struct PlainReader {
    client: Client,
}

impl PlainReader {
    /// Connects (TLS as the DSN says).
    pub async fn connect(dsn: &Dsn) -> Result<Self, SourceError> {
        Ok(PlainReader { client: connect(dsn).await? })
    }

    /// The `schema.table` names matched by `patterns`, sorted.
    pub async fn tables(&self, patterns: &[TablePattern]) -> Result<Vec<String>, SourceError> {
        matched_tables(&self.client, patterns).await
    }

    /// A table's columns and key (`None`: no such table).
    pub async fn layout(&self, table: &str) -> Result<Option<TableInfo>, SourceError> {
        // The layout statements without the slot check (verify needs no
        // slot): the first statement is replaced by a harmless one.
        let sql = layout_sql("", table);
        let rest = sql.split_once("; ").map(|(_, rest)| rest).unwrap_or(&sql);
        let results =
            statements(&self.client, &format!("SELECT NULL::text; {rest}"), "reading a table's layout").await?;
        layout("", table, results)
    }

    /// Reads up to `limit` rows after key `after` (as [`PlainChunk::last_key`]
    /// gave it), with an optional extra condition, in key order. Tables
    /// without a key cannot be compared per key and give an error.
    pub async fn chunk(
        &self,
        info: &TableInfo,
        after: Option<&[String]>,
        condition: Option<&str>,
        limit: usize,
    ) -> Result<PlainChunk, SourceError> {
        let KeyKind::Columns(idx) = &info.key else {
            return Err(SourceError::Fatal(format!(
                "table {} has neither a primary key nor a NOT NULL unique index: it cannot be compared per key",
                info.name()
            )));
        };
        let cols = info.columns.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", ");
        let key_cols = idx.iter().map(|i| ident(&info.columns[*i])).collect::<Vec<_>>().join(", ");
        let after = match after {
            Some(k) if k.len() == idx.len() => {
                format!("({key_cols}) > ({})", k.iter().map(|v| literal(v)).collect::<Vec<_>>().join(", "))
            }
            _ => "true".into(),
        };
        let cond = condition.map(|c| format!(" AND ({c})")).unwrap_or_default();
        let sql = format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; \
             SELECT {cols} FROM {} WHERE {after}{cond} ORDER BY {key_cols} LIMIT {limit}; \
             SELECT pg_catalog.pg_current_wal_lsn()::text; COMMIT",
            quoted(&info.name())
        );
        let results = match statements(&self.client, &sql, "reading a chunk to verify").await {
            Ok(r) => r,
            Err(e) => {
                let _ = self.client.simple_query("ROLLBACK").await;
                return Err(e);
            }
        };
        let [_, data, lsn, _] = <[Vec<SimpleQueryRow>; 4]>::try_from(results).map_err(|r| {
            SourceError::Retryable(format!("verify: expected 4 results reading a chunk, got {}", r.len()))
        })?;
        let lsn: Lsn = lsn.first().and_then(|r| r.get(0)).and_then(|t| t.parse().ok()).ok_or_else(|| {
            SourceError::Retryable("verify: pg_current_wal_lsn() returned an unexpected value".into())
        })?;
        let last_key = data.last().map(|r| idx.iter().map(|i| r.get(*i).unwrap_or_default().to_string()).collect());
        let rows = convert(&data, &info.columns, &info.type_oids, &info.key).into_iter().map(|(_, r)| r).collect();
        Ok(PlainChunk { rows, last_key, position: position(lsn.0, None) })
    }
    /// Runs one query in a `READ ONLY` transaction (the server refuses any
    /// write) and returns its rows as text (`None`: NULL). For verify's
    /// catalogue reads and per-range hashes; nothing is ever written.
    pub async fn read_only_query(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>, SourceError> {
        let wrapped = format!("BEGIN READ ONLY; {sql}; COMMIT");
        let results = match statements(&self.client, &wrapped, "a verify query").await {
            Ok(r) => r,
            Err(e) => {
                let _ = self.client.simple_query("ROLLBACK").await;
                return Err(e);
            }
        };
        Ok(results.get(1).map(|rows| text_rows(rows)).unwrap_or_default())
    }
}

/// A condition selecting the rows whose key columns equal one of `keys`
/// (each the key's values in key-column order), for re-reading single
/// rows: `("a", "b") IN ((E'1', E'x'), …)`. Values are string literals
/// ([`literal`]), which PostgreSQL casts to the column's type.
pub fn key_condition(key_columns: &[String], keys: &[Vec<Value>]) -> String {
    let cols = key_columns.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", ");
    let tuples = keys
        .iter()
        .map(|k| {
            let vals = k.iter().map(|v| literal(&text_of(v))).collect::<Vec<_>>().join(", ");
            format!("({vals})")
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!("({cols}) IN ({tuples})")
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn key_conditions_quote_every_value() {
        let c = super::key_condition(&["id".into(), "k\"x".into()], &[vec![json!(1), json!("a'b\\")]]);
        assert_eq!(c, r#"("id", "k""x") IN ((E'1', E'a''b\\'))"#);
    }
}
