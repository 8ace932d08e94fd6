//! Per-sink metrics of the table sinks (labels `pipeline`, `sink`):
//!
//! | metric | kind | meaning |
//! |---|---|---|
//! | `deltaforge_table_sink_rows_total{op}` | counter | rows applied, by op (`upsert`, `delete`, `truncate`, `append`) |
//! | `deltaforge_table_sink_batches_total` | counter | batches committed |
//! | `deltaforge_table_sink_apply_seconds` | histogram | time to apply and commit one batch |
//! | `deltaforge_table_sink_missing_rows_total` | counter | deletes of rows not in the target (after a reset) |
//! | `deltaforge_table_sink_skipped_events_total` | counter | replayed events skipped as already applied |
//! | `deltaforge_table_sink_schema_changes_total` | counter | DDL statements applied to the target |
//!
//! This module only records; it never decides anything.

use metrics::{counter, histogram, Counter, Histogram};

/// The handles of one sink.
#[derive(Clone)]
pub struct SinkMetrics {
    /// Upserted rows.
    pub upserts: Counter,
    /// Deleted rows.
    pub deletes: Counter,
    /// Truncates.
    pub truncates: Counter,
    /// Appended rows.
    pub appends: Counter,
    /// Committed batches.
    pub batches: Counter,
    /// Apply latency.
    pub apply_seconds: Histogram,
    /// Deletes of missing rows.
    pub missing_rows: Counter,
    /// Skipped replayed events.
    pub skipped: Counter,
    /// DDL applied.
    pub schema_changes: Counter,
}

impl SinkMetrics {
    /// The metrics of sink `sink` of `pipeline`.
    pub fn new(pipeline: &str, sink: &str) -> Self {
        let (p, s) = (pipeline.to_string(), sink.to_string());
        let rows = |op: &'static str| counter!("deltaforge_table_sink_rows_total", "pipeline" => p.clone(), "sink" => s.clone(), "op" => op);
        SinkMetrics {
            upserts: rows("upsert"),
            deletes: rows("delete"),
            truncates: rows("truncate"),
            appends: rows("append"),
            batches: counter!("deltaforge_table_sink_batches_total", "pipeline" => p.clone(), "sink" => s.clone()),
            apply_seconds: histogram!("deltaforge_table_sink_apply_seconds", "pipeline" => p.clone(), "sink" => s.clone()),
            missing_rows: counter!("deltaforge_table_sink_missing_rows_total", "pipeline" => p.clone(), "sink" => s.clone()),
            skipped: counter!("deltaforge_table_sink_skipped_events_total", "pipeline" => p.clone(), "sink" => s.clone()),
            schema_changes: counter!("deltaforge_table_sink_schema_changes_total", "pipeline" => p, "sink" => s),
        }
    }
}
