//! Deterministic synthetic rows, shared by the datagen source and the
//! benchmarks: row `id` (1, 2, 3, …) has a few typed columns derived from
//! the id alone, so any generated event can be recomputed and checked.
//!
//! This module must stay free of I/O and clocks: the same id must always
//! give the same row, on every machine and in every replay.

use serde_json::{json, Value};

use crate::time::civil_from_days;

/// Epoch of generated timestamps: 2026-01-01T00:00:00Z, in milliseconds.
/// Row `id` is created at `EPOCH_MS + id`.
pub const EPOCH_MS: i64 = 1_767_225_600_000;

const STATUSES: [&str; 4] = ["new", "paid", "shipped", "delivered"];

/// The column names of generated rows.
pub const COLUMNS: [&str; 6] = ["id", "customer_id", "amount", "status", "note", "created_at"];

/// The row generated for sequence number `id`; tests use it to check
/// delivered events value by value.
///
/// ```
/// let row = deltaforge_common::synthetic::row_for(7);
/// assert_eq!(row["id"], 7);
/// assert_eq!(row["customer_id"], 7 % 1000);
/// ```
pub fn row_for(id: u64) -> Value {
    let values = values_for(id);
    Value::Object(COLUMNS.iter().map(|c| c.to_string()).zip(values).collect())
}

/// The values of row `id` in [`COLUMNS`] order (what [`row_for`] names).
pub fn values_for(id: u64) -> Vec<Value> {
    let cents = (id * 7919) % 100_000;
    vec![
        json!(id),
        json!(id % 1000),
        Value::String(format!("{}.{:02}", cents / 100, cents % 100)),
        Value::String(STATUSES[(id % 4) as usize].to_string()),
        if id.is_multiple_of(10) { Value::Null } else { Value::String(format!("order {id}")) },
        Value::String(timestamp(EPOCH_MS + id as i64)),
    ]
}

/// `ms` since the Unix epoch as RFC 3339 UTC with milliseconds.
fn timestamp(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_deterministic() {
        assert_eq!(row_for(42), row_for(42));
        assert_eq!(row_for(42)["amount"], "325.98");
        assert_eq!(row_for(10)["note"], Value::Null);
        assert_eq!(row_for(1)["created_at"], "2026-01-01T00:00:00.001Z");
        assert_eq!(values_for(3).len(), COLUMNS.len());
    }
}
