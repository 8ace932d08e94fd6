//! The result of a verification: what is missing, extra or different, per
//! key, with masked columns redacted, and how deliveries went. Rendered as
//! text for people or JSON (`--output json`) for machines.
//!
//! This module owns the report's shape (a public contract: scripts read
//! the JSON) and must never hold the value of a masked column.

use serde::Serialize;
use serde_json::Value;

/// Placeholder shown instead of a masked column's values.
pub const REDACTED: &str = "***";

/// A row by table and key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct KeyRef {
    /// `db.table`.
    pub table: String,
    /// The key's values as a JSON array text, e.g. `[42]`.
    pub key: String,
}

/// One column that differs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ColumnDiff {
    /// The column.
    pub column: String,
    /// Its value in the source (after the pipeline's processors); `null`
    /// when absent; `"***"` when masked.
    pub source: Value,
    /// Its value in the sink; `"***"` when masked.
    pub sink: Value,
}

/// A row whose values differ.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RowDiff {
    /// Which row.
    #[serde(flatten)]
    pub row: KeyRef,
    /// The differing columns.
    pub columns: Vec<ColumnDiff>,
}

/// Per table counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TableSummary {
    /// `db.table`.
    pub table: String,
    /// Source rows compared (after filtering).
    pub source_rows: u64,
    /// Rows missing in the sink.
    pub missing: u64,
    /// Rows in the sink the source does not have.
    pub extra: u64,
    /// Rows whose values differ.
    pub differing: u64,
    /// How it was compared: empty for row by row, else `chunk hashes: …`
    /// (ranges hashed and read).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub method: String,
}

/// How the sink's deliveries went (at-least-once: duplicates are expected
/// after a crash; consumers deduplicate by idempotency key).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Deliveries {
    /// Events read from the sink.
    pub events: u64,
    /// Events delivered more than once (extra copies).
    pub duplicate_events: u64,
    /// Idempotency keys delivered more than once.
    pub duplicated_ids: u64,
    /// The most duplicated idempotency keys, with their delivery counts.
    pub worst_duplicates: Vec<(String, u64)>,
    /// Events older (by source position) than an earlier event of the same
    /// row, duplicates excepted.
    pub out_of_order_events: u64,
    /// Rows with out-of-order events (at most a few listed).
    pub out_of_order_keys: Vec<KeyRef>,
}

/// The whole result.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    /// The pipeline.
    pub pipeline: String,
    /// The sink id.
    pub sink: String,
    /// True when nothing is missing, extra or different.
    pub equal: bool,
    /// Source rows compared.
    pub rows_compared: u64,
    /// Per table.
    pub tables: Vec<TableSummary>,
    /// Rows missing in the sink (at most `max_listed`).
    pub missing: Vec<KeyRef>,
    /// Rows in the sink the source does not have (at most `max_listed`).
    pub extra: Vec<KeyRef>,
    /// Rows whose values differ (at most `max_listed`).
    pub differing: Vec<RowDiff>,
    /// Deliveries.
    pub deliveries: Deliveries,
    /// Differences re-checked after the sink caught up.
    pub rechecked: u64,
    /// Differences that went away when re-checked (rows changing during
    /// the run).
    pub resolved_on_recheck: u64,
    /// The latest source position read.
    pub source_position: Option<Value>,
    /// The position the sink (the pipeline's checkpoint) has reached.
    pub sink_position: Option<Value>,
    /// Whether the sink caught up past the source position before the
    /// final comparison (`false`: the pipeline is stopped or behind, and
    /// the comparison is of the sink as it stands).
    pub caught_up: bool,
    /// Tables skipped, transforms skipped, and the like.
    pub warnings: Vec<String>,
}

impl Report {
    /// The text form for a terminal.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let verdict = if self.equal { "EQUAL" } else { "DIFFERENT" };
        out.push_str(&format!(
            "verify {} → sink {}: {verdict} ({} rows compared)\n",
            self.pipeline, self.sink, self.rows_compared
        ));
        for t in &self.tables {
            out.push_str(&format!(
                "  {}: {} rows, {} missing, {} extra, {} differing\n",
                t.table, t.source_rows, t.missing, t.extra, t.differing
            ));
            if !t.method.is_empty() {
                out.push_str(&format!("      compared by {}\n", t.method));
            }
        }
        for k in &self.missing {
            out.push_str(&format!("  missing in sink: {} {}\n", k.table, k.key));
        }
        for k in &self.extra {
            out.push_str(&format!("  extra in sink:   {} {}\n", k.table, k.key));
        }
        for d in &self.differing {
            out.push_str(&format!("  differs:         {} {}\n", d.row.table, d.row.key));
            for c in &d.columns {
                out.push_str(&format!("      {}: source {} | sink {}\n", c.column, c.source, c.sink));
            }
        }
        let d = &self.deliveries;
        out.push_str(&format!(
            "  deliveries: {} events, {} duplicate copies of {} ids, {} out of order\n",
            d.events, d.duplicate_events, d.duplicated_ids, d.out_of_order_events
        ));
        for (id, n) in &d.worst_duplicates {
            out.push_str(&format!("      delivered {n}×: {id}\n"));
        }
        for k in &d.out_of_order_keys {
            out.push_str(&format!("      out of order: {} {}\n", k.table, k.key));
        }
        if self.rechecked > 0 {
            out.push_str(&format!(
                "  re-checked {} difference(s) after catch-up; {} went away (rows changing during the run)\n",
                self.rechecked, self.resolved_on_recheck
            ));
        }
        let pos = |p: &Option<Value>| p.as_ref().map(|v| v.to_string()).unwrap_or_else(|| "unknown".into());
        out.push_str(&format!(
            "  source position {}; sink reached {}{}\n",
            pos(&self.source_position),
            pos(&self.sink_position),
            if self.caught_up { "" } else { " (not caught up: compared as it stands)" }
        ));
        for w in &self.warnings {
            out.push_str(&format!("  warning: {w}\n"));
        }
        out
    }
}
