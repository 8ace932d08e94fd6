//! The shapes both sides of a comparison share: a table's layout, a source
//! chunk and a sink row. Pure data; no I/O.

use deltaforge_core::{Position, Row};
use serde_json::{Map, Value};

/// A table as the comparison sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableLayout {
    /// `db.table` (PostgreSQL: `schema.table`), as events name it.
    pub name: String,
    /// Column names, in table order.
    pub columns: Vec<String>,
    /// Key column names, in key order (never empty for a compared table).
    pub key: Vec<String>,
}

impl TableLayout {
    /// The key text of a row given as a JSON object (the after image of
    /// an event, or a row): the key columns' values as a JSON array, the
    /// same text the snapshot uses (`[1,"a"]`). `None` when a key column
    /// is missing.
    pub fn key_of_object(&self, row: &Map<String, Value>) -> Option<String> {
        let values: Option<Vec<&Value>> = self.key.iter().map(|k| row.get(k)).collect();
        Some(deltaforge_core::snapshot::key_string(values?))
    }

    /// The key text of a source row.
    pub fn key_of_row(&self, row: &Row) -> Option<String> {
        let values: Option<Vec<&Value>> = self.key.iter().map(|k| row.get(k)).collect();
        Some(deltaforge_core::snapshot::key_string(values?))
    }

    /// The key's values of a row, in key order.
    pub fn key_values(&self, row: &Row) -> Vec<Value> {
        self.key.iter().map(|k| row.get(k).cloned().unwrap_or(Value::Null)).collect()
    }
}

/// One chunk of source rows.
#[derive(Debug)]
pub struct SourceChunk {
    /// Rows in key order.
    pub rows: Vec<Row>,
    /// Where the next chunk starts (`None`: the table is done).
    pub next: Option<Vec<String>>,
    /// The source position read with the chunk: every change the chunk
    /// shows is at or before it.
    pub position: Position,
}

/// A row as a sink holds it: column → value.
pub type SinkRow = Map<String, Value>;

/// A source row as an object.
pub fn row_object(row: &Row) -> SinkRow {
    row.iter().map(|(c, v)| (c.to_string(), v.clone())).collect()
}
