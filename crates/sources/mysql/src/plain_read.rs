//! Plain key-ordered chunk reads for `deltaforge verify`: the snapshot's
//! chunk statement ([`crate::snapshot_sql::chunk_query`], same key choice,
//! same value conversion as the binlog) without watermarks or stream
//! hand-over, each chunk returned with the binlog position read right
//! after its select (every transaction the select saw ends at or before
//! it).
//!
//! This module owns reading rows for comparison only; it must never write
//! to the server, hold a transaction across chunks or lock a table.

use std::sync::Arc;

use deltaforge_core::{Columns, Position, Row, SourceError};
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use serde_json::Value;

use crate::config::{MysqlConfig, TablePattern};
use crate::decode::{snapshot_value, Kind};
use crate::position::BinlogPosition;
use crate::schema;
use crate::server::Server;
use crate::snapshot_sql::{chunk_query, encode_key, ident};

/// A table as [`PlainReader`] reads it.
#[derive(Debug, Clone)]
pub struct PlainTable {
    /// `db.table`.
    pub name: String,
    /// Columns, in ordinal order.
    pub columns: Columns,
    /// Key column names (primary key, else the `NOT NULL` unique index
    /// with fewest columns; empty: none).
    pub key: Vec<String>,
    kinds: Arc<[Kind]>,
}

/// One chunk read by [`PlainReader::chunk`].
#[derive(Debug)]
pub struct PlainChunk {
    /// The rows, in key order.
    pub rows: Vec<Row>,
    /// The last row's key as stored text, to pass as `after` next.
    pub last_key: Option<Vec<String>>,
    /// The binlog position read after the select.
    pub position: Position,
}

/// A connection that reads tables in key order for comparison.
pub struct PlainReader {
    conn: Conn,
    mariadb: bool,
    patterns: Vec<TablePattern>,
    positions: bool,
}

fn sql_error(what: &'static str) -> impl FnOnce(mysql_async::Error) -> SourceError {
    move |e| SourceError::Retryable(format!("verify: {what}: {e}"))
}

impl PlainReader {
    /// Connects as the source config says (TLS included).
    pub async fn connect(cfg: MysqlConfig) -> Result<Self, SourceError> {
        let server = Server::new(cfg)?;
        let mut conn = server.connect().await.map_err(|e| e.into_source_error())?;
        conn.query_drop("SET time_zone = '+00:00', NAMES utf8mb4")
            .await
            .map_err(sql_error("setting up the session"))?;
        let version: String =
            conn.query_first("SELECT VERSION()").await.map_err(sql_error("reading the version"))?.unwrap_or_default();
        let mariadb = version.to_ascii_lowercase().contains("mariadb");
        Ok(PlainReader { conn, mariadb, patterns: server.patterns, positions: true })
    }

    /// The `db.table` names the source's `tables` match, sorted (the
    /// snapshot watermark table excluded when named by `skip`).
    pub async fn tables(&mut self, skip: Option<(String, String)>) -> Result<Vec<String>, SourceError> {
        let patterns = self.patterns.clone();
        let keep = move |d: &str, t: &str| {
            TablePattern::any(&patterns, d, t) && skip.as_ref().is_none_or(|(sd, st)| !(d == sd && t == st))
        };
        let found =
            schema::load(&mut self.conn, self.mariadb, None, &keep).await.map_err(sql_error("listing tables"))?;
        let mut names: Vec<String> = found.keys().map(|(d, t)| format!("{d}.{t}")).collect();
        names.sort();
        Ok(names)
    }

    /// A table's columns and key (`None`: no such table).
    pub async fn layout(&mut self, table: &str) -> Result<Option<PlainTable>, SourceError> {
        let (db, t) = table.split_once('.').unwrap_or(("", table));
        let mut found = schema::load(&mut self.conn, self.mariadb, Some((db, t)), &|_, _| true)
            .await
            .map_err(sql_error("reading a table's columns"))?;
        let Some(s) = found.remove(&(db.to_string(), t.to_string())) else { return Ok(None) };
        let mut key = s.primary_key.clone();
        if key.is_empty() {
            key = crate::snapshot::unique_key_columns(&mut self.conn, db, t).await?;
        }
        Ok(Some(PlainTable {
            name: table.to_string(),
            columns: s.columns.iter().map(|c| Arc::<str>::from(c.name.as_str())).collect::<Vec<_>>().into(),
            kinds: s.columns.iter().map(Kind::from_column).collect::<Vec<_>>().into(),
            key,
        }))
    }

    /// Reads up to `limit` rows after key `after`, with an optional extra
    /// condition, in key order; a table without a key gives an error.
    pub async fn chunk(
        &mut self,
        t: &PlainTable,
        after: Option<&[String]>,
        condition: Option<&str>,
        limit: usize,
    ) -> Result<PlainChunk, SourceError> {
        if t.key.is_empty() {
            return Err(SourceError::Fatal(format!(
                "table {} has neither a primary key nor a NOT NULL unique index: it cannot be compared per key",
                t.name
            )));
        }
        let (db, name) = t.name.split_once('.').unwrap_or(("", &t.name));
        let table = format!("{}.{}", ident(db), ident(name));
        let cols = t.columns.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", ");
        let q = chunk_query(&table, &cols, &t.key, after, condition, limit).map_err(SourceError::Fatal)?;
        let data: Vec<mysql_async::Row> = self.conn.exec(q.sql, q.params).await.map_err(|e| match e {
            mysql_async::Error::Server(se) => SourceError::Fatal(format!("verify: reading {}: {se}", t.name)),
            other => sql_error("reading a chunk")(other),
        })?;
        let position = self.position().await?;
        let key_idx: Vec<usize> =
            t.key.iter().filter_map(|k| t.columns.iter().position(|c| **c == **k)).collect::<Vec<_>>();
        let last_key =
            data.last().map(|r| key_idx.iter().map(|i| r.as_ref(*i).map(encode_key).unwrap_or_default()).collect());
        let mut rows = Vec::with_capacity(data.len());
        for r in data {
            let raw: Vec<mysql_async::Value> = r.unwrap();
            let values = raw
                .iter()
                .zip(t.kinds.iter())
                .map(|(v, k)| snapshot_value(k, v))
                .collect::<Result<Vec<Value>, String>>()
                .map_err(|m| SourceError::Fatal(format!("verify: a value of {}: {m}", t.name)))?;
            rows.push(Row::new(t.columns.clone(), values));
        }
        Ok(PlainChunk { rows, last_key, position })
    }

    /// Reads no binlog position with each chunk (for a server that is read
    /// as a sink's target, where binary logging may be off): chunks then
    /// carry the start of binlog `""`.
    pub fn without_positions(mut self) -> Self {
        self.positions = false;
        self
    }

    /// Runs one query in a `READ ONLY` transaction (the server refuses any
    /// write) and returns its rows as text (`None`: NULL). For verify's
    /// catalogue reads and per-range hashes; nothing is ever written.
    pub async fn read_only_query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, SourceError> {
        self.conn
            .query_drop("START TRANSACTION READ ONLY")
            .await
            .map_err(sql_error("starting a read-only transaction"))?;
        let rows: Result<Vec<mysql_async::Row>, _> = self.conn.query(sql).await;
        let _ = self.conn.query_drop("COMMIT").await;
        let rows = rows.map_err(|e| match e {
            mysql_async::Error::Server(se) => SourceError::Fatal(format!("verify: a query: {se}")),
            other => sql_error("a verify query")(other),
        })?;
        Ok(rows
            .into_iter()
            .map(|r| {
                r.unwrap()
                    .into_iter()
                    .map(|v| match v {
                        mysql_async::Value::NULL => None,
                        mysql_async::Value::Bytes(b) => Some(String::from_utf8_lossy(&b).into_owned()),
                        other => Some(other.as_sql(true).trim_matches('\'').to_string()),
                    })
                    .collect()
            })
            .collect())
    }

    /// The binlog's current end (`SHOW MASTER STATUS`, MySQL 8.4: `SHOW
    /// BINARY LOG STATUS`).
    pub async fn position(&mut self) -> Result<Position, SourceError> {
        if !self.positions {
            return Ok(BinlogPosition::at("".into(), 0, None));
        }
        let row: Option<mysql_async::Row> = match self.conn.query_first("SHOW MASTER STATUS").await {
            Ok(r) => r,
            Err(_) => {
                self.conn.query_first("SHOW BINARY LOG STATUS").await.map_err(sql_error("SHOW BINARY LOG STATUS"))?
            }
        };
        let row =
            row.ok_or_else(|| SourceError::Fatal("SHOW MASTER STATUS returned nothing: binary logging is off".into()))?;
        let file: String = row.get(0).unwrap_or_default();
        let pos: u64 = row.get(1).unwrap_or_default();
        Ok(BinlogPosition::at(file.into(), pos, None))
    }
}

/// A condition selecting the rows whose key columns equal one of `keys`:
/// `(a, b) IN ((_utf8mb4 X'31', _utf8mb4 X'78'), …)`. Each value is a
/// hex string literal with a character set introducer: no byte of a key
/// can end the literal, and the server's `sql_mode` (`NO_BACKSLASH_ESCAPES`
/// or not) reads it the same way; the server converts the string to the
/// column's type as it does a quoted literal.
pub fn key_condition(key_columns: &[String], keys: &[Vec<Value>]) -> String {
    let cols = key_columns.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", ");
    let lit = |v: &Value| {
        let text = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let hex: String = text.bytes().map(|b| format!("{b:02x}")).collect();
        format!("_utf8mb4 X'{hex}'")
    };
    let tuples =
        keys.iter().map(|k| format!("({})", k.iter().map(lit).collect::<Vec<_>>().join(", "))).collect::<Vec<_>>();
    format!("({cols}) IN ({})", tuples.join(", "))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn key_conditions_are_hex_literals_whatever_the_value() {
        let c = super::key_condition(&["id".into(), "k".into()], &[vec![json!(1), json!("a'b\\")]]);
        assert_eq!(c, "(`id`, `k`) IN ((_utf8mb4 X'31', _utf8mb4 X'6127625c'))");
    }
}
