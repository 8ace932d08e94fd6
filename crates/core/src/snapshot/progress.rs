//! The records of snapshot progress: one [`TableProgress`] per table, the
//! queued [`BackfillRequest`]s, and a [`PendingProgress`] (a record waiting
//! for its chunk to become durable).
//!
//! This module owns the records' JSON shape (see `snapshot`,
//! "Progress"). It must never read or write storage: `snapshot::store`
//! does that, and `snapshot::writer` decides when.

use serde::{Deserialize, Serialize};

use crate::position::Position;

/// Where a table's snapshot stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TableState {
    /// Chunks remain; resume after `last_key`.
    Running,
    /// Every chunk was delivered.
    Done,
    /// A backfill stopped on an error it cannot recover from (its `where`
    /// failed on the server); see `error`. Not resumed.
    Failed,
    /// A backfill cancelled by an operator. Not resumed.
    Cancelled,
}

/// Why a table is being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadKind {
    /// The configured snapshot (`snapshot.mode`).
    #[default]
    Snapshot,
    /// An on-demand backfill.
    Backfill,
}

/// One table's progress record (see the `snapshot` docs for the JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableProgress {
    /// Running or done.
    pub state: TableState,
    /// Snapshot or backfill.
    #[serde(default)]
    pub kind: ReadKind,
    /// The key of the last row of the last delivered chunk, as the source
    /// prints it (text per key column); `None`: start at the beginning.
    pub last_key: Option<Vec<String>>,
    /// Rows emitted so far.
    pub rows_done: u64,
    /// The server's row estimate when the read started (`None`: unknown).
    pub rows_total_estimate: Option<u64>,
    /// Chunks delivered.
    pub chunk: u64,
    /// The backfill's SQL condition, when one was given.
    #[serde(default, rename = "where", skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// The backfill request this read belongs to (`None`: a snapshot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backfill: Option<u64>,
    /// Why the read failed (`state: failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl TableProgress {
    /// A fresh record: nothing read yet.
    pub fn start(kind: ReadKind, condition: Option<String>, rows_total_estimate: Option<u64>) -> Self {
        TableProgress {
            state: TableState::Running,
            kind,
            last_key: None,
            rows_done: 0,
            rows_total_estimate,
            chunk: 0,
            condition,
            backfill: None,
            error: None,
        }
    }
}

/// An on-demand backfill request, as stored until the source starts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackfillRequest {
    /// Identifier, increasing per pipeline.
    pub id: u64,
    /// Tables as the source names them (`schema.table`, `db.table`).
    pub tables: Vec<String>,
    /// Optional SQL condition the re-read rows must match.
    #[serde(default, rename = "where", skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
}

/// Where a backfill request stands (`GET /pipelines/{name}/backfill`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackfillState {
    /// Queued; the source has not started it.
    Pending,
    /// Its tables are being read.
    Running,
    /// Every table was read.
    Done,
    /// A table's read failed (see `error`); the pipeline went on.
    Failed,
    /// Cancelled by an operator.
    Cancelled,
}

/// A started or ended backfill request, as kept in the backfill history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackfillStatus {
    /// The request's id.
    pub id: u64,
    /// The request's tables.
    pub tables: Vec<String>,
    /// The request's condition.
    #[serde(default, rename = "where", skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// Where it stands.
    pub state: BackfillState,
    /// Tables read to the end.
    #[serde(default)]
    pub tables_done: Vec<String>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl BackfillStatus {
    /// A request in the given state.
    pub fn new(request: &BackfillRequest, state: BackfillState) -> Self {
        BackfillStatus {
            id: request.id,
            tables: request.tables.clone(),
            condition: request.condition.clone(),
            state,
            tables_done: Vec::new(),
            error: None,
        }
    }
}

/// A progress record to store once its chunk is durable.
#[derive(Debug, Clone)]
pub struct PendingProgress {
    /// The commit position of the chunk's events (its high watermark).
    pub position: Position,
    /// The table.
    pub table: String,
    /// The record to store.
    pub progress: TableProgress,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn progress_json_shape() {
        let mut p = TableProgress::start(ReadKind::Snapshot, None, Some(100));
        p.last_key = Some(vec!["41".into()]);
        p.rows_done = 42;
        p.chunk = 3;
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            json!({"state": "running", "kind": "snapshot", "last_key": ["41"], "rows_done": 42,
                   "rows_total_estimate": 100, "chunk": 3})
        );
        let b = TableProgress::start(ReadKind::Backfill, Some("id < 5".into()), None);
        assert_eq!(serde_json::to_value(&b).unwrap()["where"], "id < 5");
    }
}
