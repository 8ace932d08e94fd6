//! A chunk's rows from the server's text to JSON values (with
//! [`crate::values`], as the stream converts), each with its key string.
//!
//! Runs on a blocking thread while the reader selects the next chunk; it
//! must never touch the connection.

use deltaforge_core::snapshot::key_string;
use deltaforge_core::{Columns, Row};
use serde_json::Value;
use tokio_postgres::SimpleQueryRow;

use super::layout::KeyKind;
use crate::values;

/// The chunk's rows as values, each with its key string.
pub(super) fn convert(
    data: &[SimpleQueryRow],
    columns: &Columns,
    type_oids: &[u32],
    key: &KeyKind,
) -> Vec<(String, Row)> {
    data.iter()
        .map(|r| {
            let values: Vec<Value> = (0..columns.len())
                .map(|i| match r.get(i) {
                    None => Value::Null,
                    Some(t) => values::to_json(type_oids.get(i).copied().unwrap_or(0), t),
                })
                .collect();
            let key = match key {
                KeyKind::Columns(idx) => key_string(idx.iter().map(|i| &values[*i])),
                KeyKind::Ctid => key_string(values.iter()),
            };
            (key, Row::new(columns.clone(), values))
        })
        .collect()
}
