//! A table as the snapshot reads it: its columns, their types and the key
//! chunks are ordered by ([`KeyKind`]), read together with the replication
//! slot's health check in one round trip per chunk.
//!
//! This module owns the choice of key (primary key, else the `NOT NULL`
//! unique index with fewest columns, else `ctid`) and the slot check; it
//! must never read rows.

use std::sync::Arc;

use deltaforge_core::{Columns, SourceError};
use serde_json::{json, Value};
use tokio_postgres::{Client, SimpleQueryRow};

use super::sql::{cell, literal, quoted, rows, statements, text_rows};

/// How a table's rows are ordered and matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyKind {
    /// Key columns (primary key or a `NOT NULL` unique index), by position
    /// in the column list.
    Columns(Vec<usize>),
    /// No usable key: `ctid` page ranges, whole-row matching.
    Ctid,
}

/// A table as the snapshot reads it.
#[derive(Debug, Clone)]
pub struct TableInfo {
    /// Schema.
    pub schema: Arc<str>,
    /// Table.
    pub table: Arc<str>,
    /// Columns, in attribute order.
    pub columns: Columns,
    /// Their type OIDs.
    pub type_oids: Vec<u32>,
    /// The key.
    pub key: KeyKind,
}

impl TableInfo {
    /// `schema.table`.
    pub fn name(&self) -> String {
        format!("{}.{}", self.schema, self.table)
    }

    /// Key column names (empty: the whole row).
    pub fn key_names(&self) -> Vec<String> {
        match &self.key {
            KeyKind::Columns(idx) => idx.iter().map(|i| self.columns[*i].to_string()).collect(),
            KeyKind::Ctid => Vec::new(),
        }
    }
}

/// Checks the slot and the table and reads the table's columns and key,
/// in one round trip: `None` when the table no longer exists. Columns
/// are read per chunk so that a concurrent `ADD COLUMN` shows up.
pub(super) async fn prepare(client: &Client, slot: &str, table: &str) -> Result<Option<TableInfo>, SourceError> {
    let results =
        statements(client, &layout_sql(slot, table), "checking the slot and reading the table's layout").await?;
    layout(slot, table, results)
}

/// The four statements [`layout`] reads.
pub(super) fn layout_sql(slot: &str, table: &str) -> String {
    // to_regclass: a dropped table gives no rows instead of an error.
    let reg = format!("pg_catalog.to_regclass({})", literal(&quoted(table)));
    format!(
        "SELECT wal_status FROM pg_catalog.pg_replication_slots WHERE slot_name = {slot}; \
         SELECT {reg} IS NOT NULL; \
         SELECT attname, atttypid, attnum FROM pg_catalog.pg_attribute \
         WHERE attrelid = {reg} AND attnum > 0 AND NOT attisdropped ORDER BY attnum; \
         SELECT i.indisprimary, array_to_string(i.indkey, ' ') FROM pg_catalog.pg_index i \
         WHERE i.indrelid = {reg} AND i.indisunique AND i.indimmediate AND i.indisvalid \
           AND i.indpred IS NULL AND i.indexprs IS NULL \
           AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a WHERE a.attrelid = i.indrelid \
                           AND a.attnum = ANY(i.indkey) AND NOT a.attnotnull) \
         ORDER BY i.indisprimary DESC, i.indnatts, i.indexrelid",
        slot = literal(slot),
    )
}

/// The slot check and the table's layout from the results of
/// [`layout_sql`] (the last four of `results`).
pub(super) fn layout(
    slot: &str,
    table: &str,
    mut results: Vec<Vec<SimpleQueryRow>>,
) -> Result<Option<TableInfo>, SourceError> {
    let (schema, name) = table.split_once('.').unwrap_or(("public", table));
    let results = results.split_off(results.len().saturating_sub(4));
    let [slot_rows, exists, cols, idx] = <[Vec<SimpleQueryRow>; 4]>::try_from(results).map_err(|r| {
        SourceError::Retryable(format!("snapshot: expected 4 results checking the table, got {}", r.len()))
    })?;
    check_slot(slot, &text_rows(&slot_rows))?;
    if exists.first().and_then(|r| r.get(0)) != Some("t") {
        return Ok(None);
    }
    let cols = text_rows(&cols);
    let idx = text_rows(&idx);
    let names: Vec<String> = cols.iter().filter_map(|r| cell(r, 0).map(str::to_string)).collect();
    let type_oids: Vec<u32> = cols.iter().map(|r| cell(r, 1).and_then(|v| v.parse().ok()).unwrap_or(0)).collect();
    let attnums: Vec<i64> = cols.iter().map(|r| cell(r, 2).and_then(|v| v.parse().ok()).unwrap_or(0)).collect();
    // The primary key first, else the NOT NULL unique index with fewest columns.
    let key = idx
        .first()
        .and_then(|r| cell(r, 1))
        .and_then(|list| {
            list.split_whitespace()
                .map(|n| n.parse::<i64>().ok().and_then(|n| attnums.iter().position(|a| *a == n)))
                .collect::<Option<Vec<usize>>>()
        })
        .filter(|k| !k.is_empty())
        .map(KeyKind::Columns)
        .unwrap_or(KeyKind::Ctid);
    Ok(Some(TableInfo {
        schema: schema.into(),
        table: name.into(),
        columns: names.into_iter().map(Arc::<str>::from).collect::<Vec<_>>().into(),
        type_oids,
        key,
    }))
}

/// The table's schema description in the form the stream registers from
/// a pgoutput Relation message (columns with type OID, type name, type
/// modifier and replica-identity flag; the replica identity), so that a
/// snapshot of a table no change was streamed for yet registers the same
/// version the stream would: sinks then get the real column types.
pub(super) async fn describe(client: &Client, table: &str) -> Result<Value, SourceError> {
    let reg = format!("pg_catalog.to_regclass({})", literal(&quoted(table)));
    let sql = format!(
        "SELECT a.attname, a.atttypid, a.atttypmod, n.nspname || '.' || t.typname, \
           CASE c.relreplident WHEN 'f' THEN true \
             WHEN 'd' THEN EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid \
                                   AND i.indisprimary AND a.attnum = ANY(i.indkey)) \
             WHEN 'i' THEN EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid \
                                   AND i.indisreplident AND a.attnum = ANY(i.indkey)) \
             ELSE false END, \
           c.relreplident \
         FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
           JOIN pg_catalog.pg_type t ON t.oid = a.atttypid JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace \
         WHERE a.attrelid = {reg} AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum"
    );
    let cols = rows(client, &sql, "describing the table's columns").await?;
    Ok(description(&cols))
}

/// [`describe`]'s rows as the stream's schema JSON.
fn description(cols: &[Vec<Option<String>>]) -> Value {
    let columns: Vec<Value> = cols
        .iter()
        .map(|r| {
            let type_oid: u32 = cell(r, 1).and_then(|v| v.parse().ok()).unwrap_or(0);
            let type_modifier: i32 = cell(r, 2).and_then(|v| v.parse().ok()).unwrap_or(-1);
            json!({
                "name": cell(r, 0),
                "type_oid": type_oid,
                "type_name": crate::values::builtin_type_name(type_oid).map(str::to_string)
                    .or_else(|| cell(r, 3).map(str::to_string)),
                "type_modifier": type_modifier,
                "key": cell(r, 4) == Some("t"),
            })
        })
        .collect();
    let identity = match cols.first().and_then(|r| cell(r, 5)) {
        Some("d") => "default",
        Some("f") => "full",
        Some("i") => "index",
        Some("n") => "nothing",
        _ => "unknown",
    };
    json!({"columns": columns, "replica_identity": identity})
}

/// Stops the source when the slot is gone or invalidated.
fn check_slot(slot: &str, r: &[Vec<Option<String>>]) -> Result<(), SourceError> {
    match r.first() {
        None => Err(SourceError::Fatal(format!(
            "replication slot {:?} disappeared during the snapshot (dropped by someone): the changes the \
             snapshot depends on are lost; reset the pipeline's checkpoint to start over",
            slot
        ))),
        Some(row) if cell(row, 0) == Some("lost") => Err(SourceError::Fatal(format!(
            "replication slot {:?} was invalidated during the snapshot (wal_status = lost: the server removed WAL \
             it needed, see max_slot_wal_keep_size); the snapshot cannot be reconciled with the stream. Drop the \
             slot, reset the pipeline's checkpoint and start again, with a larger max_slot_wal_keep_size",
            slot
        ))),
        Some(_) => Ok(()),
    }
}
