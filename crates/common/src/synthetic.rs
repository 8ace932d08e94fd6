//! Deterministic synthetic rows, shared by the datagen source and the
//! benchmarks: row `id` (1, 2, 3, …) has a few typed columns derived from
//! the id alone, so any generated event can be recomputed and checked.
//!
//! This module must stay free of I/O and clocks: the same id must always
//! give the same row, on every machine and in every replay.

use serde_json::Value;

use crate::time::{push_fraction, push_two_digits, push_unix_seconds};

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
///
/// Written digit by digit rather than with `format!`: this runs once per
/// generated event and `datagen → discard` measures the engine's own
/// ceiling, so the generator should cost as little as it can.
pub fn values_for(id: u64) -> Vec<Value> {
    let cents = (id * 7919) % 100_000;
    let mut amount = String::with_capacity(8);
    amount.push_str(itoa::Buffer::new().format(cents / 100));
    amount.push('.');
    push_two_digits(&mut amount, (cents % 100) as u32);
    vec![
        Value::from(id),
        Value::from(id % 1000),
        Value::String(amount),
        Value::String(STATUSES[(id % 4) as usize].to_string()),
        if id.is_multiple_of(10) {
            Value::Null
        } else {
            let mut note = String::with_capacity(26);
            note.push_str("order ");
            note.push_str(itoa::Buffer::new().format(id));
            Value::String(note)
        },
        Value::String(timestamp(EPOCH_MS + id as i64)),
    ]
}

/// `ms` since the Unix epoch as RFC 3339 UTC with milliseconds.
fn timestamp(ms: i64) -> String {
    let mut out = String::with_capacity(24);
    push_unix_seconds(&mut out, ms.div_euclid(1000));
    push_fraction(&mut out, ms.rem_euclid(1000) as u32 * 1000, 3);
    out.push('Z');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::civil_from_days;

    #[test]
    fn rows_are_deterministic() {
        assert_eq!(row_for(42), row_for(42));
        assert_eq!(row_for(42)["amount"], "325.98");
        assert_eq!(row_for(10)["note"], Value::Null);
        assert_eq!(row_for(1)["created_at"], "2026-01-01T00:00:00.001Z");
        assert_eq!(values_for(3).len(), COLUMNS.len());
    }

    /// The digit-by-digit writing gives what `format!` gives.
    #[test]
    fn values_match_their_format_definitions() {
        let ids = (0..20_000u64).chain([86_399_999, 86_400_000, 31_535_999_999, 1 << 40, u32::MAX as u64]);
        for id in ids {
            let cents = (id * 7919) % 100_000;
            let ms = EPOCH_MS + id as i64;
            let (secs, millis) = (ms.div_euclid(1000), ms.rem_euclid(1000));
            let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
            let (y, m, d) = civil_from_days(days);
            let want = vec![
                Value::from(id),
                Value::from(id % 1000),
                Value::String(format!("{}.{:02}", cents / 100, cents % 100)),
                Value::String(STATUSES[(id % 4) as usize].to_string()),
                if id.is_multiple_of(10) { Value::Null } else { Value::String(format!("order {id}")) },
                Value::String(format!(
                    "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
                    rem / 3600,
                    rem % 3600 / 60,
                    rem % 60
                )),
            ];
            assert_eq!(values_for(id), want, "id {id}");
        }
        assert_eq!(timestamp(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(timestamp(253_402_300_800_000), "10000-01-01T00:00:00.000Z");
    }
}
