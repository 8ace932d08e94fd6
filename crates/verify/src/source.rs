//! [`SourceReader`]: the source tables' current rows in key order, chunk by
//! chunk, each chunk one consistent read with the position read with it.
//! The PostgreSQL and MySQL/MariaDB readers wrap the sources' own plain
//! chunk readers (the snapshot's chunk statements without watermarks).
//!
//! This module must never write to the source, hold a transaction across
//! chunks or lock a table.

use std::collections::HashMap;

use async_trait::async_trait;
use deltaforge_common::TablePattern;
use deltaforge_core::{Position, Row};
use deltaforge_source_mysql::plain_read as my;
use deltaforge_source_postgres::snapshot::plain as pg;
use deltaforge_source_postgres::snapshot::{KeyKind, TableInfo};
use serde_json::Value;

use crate::error::VerifyError;
use crate::model::{SourceChunk, TableLayout};
use crate::sql::SqlReader;

/// Reads a source's tables for comparison.
#[async_trait]
pub trait SourceReader: Send {
    /// The tables the pipeline captures (limited to `only` when not empty),
    /// with their key; tables without a key are returned in the second
    /// list (they cannot be compared per key).
    async fn tables(&mut self, only: &[TablePattern]) -> Result<(Vec<TableLayout>, Vec<String>), VerifyError>;

    /// Up to `limit` rows after `after` (a previous chunk's `next`), with
    /// an optional SQL condition, in key order.
    async fn chunk(
        &mut self,
        table: &TableLayout,
        after: Option<&[String]>,
        condition: Option<&str>,
        limit: usize,
    ) -> Result<SourceChunk, VerifyError>;

    /// A condition selecting the rows with these key values (key-column
    /// order), for re-reading single rows.
    fn key_condition(&self, table: &TableLayout, keys: &[Vec<Value>]) -> String;

    /// The reader's read-only SQL connection, for chunk hashes (`None`: it
    /// has none).
    fn sql(&mut self) -> Option<&mut dyn SqlReader> {
        None
    }
}

fn filtered(names: Vec<String>, only: &[TablePattern]) -> Vec<String> {
    names
        .into_iter()
        .filter(|n| {
            only.is_empty() || {
                let (d, t) = n.split_once('.').unwrap_or(("", n));
                TablePattern::any(only, d, t)
            }
        })
        .collect()
}

/// PostgreSQL tables, read with the snapshot's chunk select.
pub struct PostgresSourceReader {
    reader: pg::PlainReader,
    patterns: Vec<TablePattern>,
    infos: HashMap<String, TableInfo>,
}

impl PostgresSourceReader {
    /// Connects to the source's DSN; `patterns` are its `tables`.
    pub async fn connect(
        dsn: &deltaforge_source_postgres::Dsn,
        patterns: Vec<TablePattern>,
    ) -> Result<Self, VerifyError> {
        Ok(PostgresSourceReader { reader: pg::PlainReader::connect(dsn).await?, patterns, infos: HashMap::new() })
    }
}

#[async_trait]
impl SourceReader for PostgresSourceReader {
    async fn tables(&mut self, only: &[TablePattern]) -> Result<(Vec<TableLayout>, Vec<String>), VerifyError> {
        let names = filtered(self.reader.tables(&self.patterns).await?, only);
        let (mut keyed, mut keyless) = (Vec::new(), Vec::new());
        for name in names {
            let Some(info) = self.reader.layout(&name).await? else { continue };
            let key = info.key_names();
            if info.key == KeyKind::Ctid {
                keyless.push(name);
                continue;
            }
            keyed.push(TableLayout {
                name: name.clone(),
                columns: info.columns.iter().map(|c| c.to_string()).collect(),
                key,
            });
            self.infos.insert(name, info);
        }
        Ok((keyed, keyless))
    }

    async fn chunk(
        &mut self,
        table: &TableLayout,
        after: Option<&[String]>,
        condition: Option<&str>,
        limit: usize,
    ) -> Result<SourceChunk, VerifyError> {
        let info = listed(&self.infos, table)?;
        let c = self.reader.chunk(info, after, condition, limit).await?;
        Ok(source_chunk(c.rows, c.last_key, c.position, limit))
    }

    fn key_condition(&self, table: &TableLayout, keys: &[Vec<Value>]) -> String {
        pg::key_condition(&table.key, keys)
    }

    fn sql(&mut self) -> Option<&mut dyn SqlReader> {
        Some(&mut self.reader)
    }
}

/// MySQL/MariaDB tables, read with the snapshot's chunk statement.
pub struct MysqlSourceReader {
    reader: my::PlainReader,
    watermark_table: Option<(String, String)>,
    tables: HashMap<String, my::PlainTable>,
}

impl MysqlSourceReader {
    /// Connects as the source config says.
    pub async fn connect(cfg: deltaforge_source_mysql::config::MysqlConfig) -> Result<Self, VerifyError> {
        let watermark_table = cfg.watermark_table();
        Ok(MysqlSourceReader { reader: my::PlainReader::connect(cfg).await?, watermark_table, tables: HashMap::new() })
    }

    /// Connects to a table sink's target (binary logging may be off there:
    /// chunks carry no position).
    pub async fn connect_target(cfg: deltaforge_source_mysql::config::MysqlConfig) -> Result<Self, VerifyError> {
        let watermark_table = cfg.watermark_table();
        let reader = my::PlainReader::connect(cfg).await?.without_positions();
        Ok(MysqlSourceReader { reader, watermark_table, tables: HashMap::new() })
    }
}

#[async_trait]
impl SourceReader for MysqlSourceReader {
    async fn tables(&mut self, only: &[TablePattern]) -> Result<(Vec<TableLayout>, Vec<String>), VerifyError> {
        let names = filtered(self.reader.tables(self.watermark_table.clone()).await?, only);
        let (mut keyed, mut keyless) = (Vec::new(), Vec::new());
        for name in names {
            let Some(t) = self.reader.layout(&name).await? else { continue };
            if t.key.is_empty() {
                keyless.push(name);
                continue;
            }
            keyed.push(TableLayout {
                name: name.clone(),
                columns: t.columns.iter().map(|c| c.to_string()).collect(),
                key: t.key.clone(),
            });
            self.tables.insert(name, t);
        }
        Ok((keyed, keyless))
    }

    async fn chunk(
        &mut self,
        table: &TableLayout,
        after: Option<&[String]>,
        condition: Option<&str>,
        limit: usize,
    ) -> Result<SourceChunk, VerifyError> {
        let t = listed(&self.tables, table)?.clone();
        let c = self.reader.chunk(&t, after, condition, limit).await?;
        Ok(source_chunk(c.rows, c.last_key, c.position, limit))
    }

    fn key_condition(&self, table: &TableLayout, keys: &[Vec<Value>]) -> String {
        my::key_condition(&table.key, keys)
    }

    fn sql(&mut self) -> Option<&mut dyn SqlReader> {
        Some(&mut self.reader)
    }
}

/// The reader's description of `table`, which `tables()` must have listed.
fn listed<'a, T>(described: &'a HashMap<String, T>, table: &TableLayout) -> Result<&'a T, VerifyError> {
    described
        .get(&table.name)
        .ok_or_else(|| VerifyError::Unsupported(format!("table {} was not listed first", table.name)))
}

/// A chunk shorter than `limit` is the table's last.
fn source_chunk(rows: Vec<Row>, last_key: Option<Vec<String>>, position: Position, limit: usize) -> SourceChunk {
    let next = if rows.len() < limit { None } else { last_key };
    SourceChunk { rows, next, position }
}
