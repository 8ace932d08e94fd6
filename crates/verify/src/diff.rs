//! One row's difference between the source and the sink ([`differ`]),
//! and a key that differed ([`Suspect`]), shared by the row-by-row and the
//! hashed comparisons. Pure; masked columns' values are never kept.

use serde_json::Value;

use crate::model::SinkRow;
use crate::options::Options;
use crate::report::{ColumnDiff, REDACTED};

/// A key that differed, to re-check.
#[derive(Debug, Clone)]
pub(crate) struct Suspect {
    pub(crate) key: String,
    pub(crate) values: Vec<Value>,
    pub(crate) diff: Diff,
}

#[derive(Debug, Clone)]
pub(crate) enum Diff {
    Missing,
    Extra,
    Values(Vec<ColumnDiff>),
}

/// The difference between the expected row and the sink's, if any
/// (`same`: the sink's value equality).
pub(crate) fn differ(
    opts: &Options,
    table: &str,
    want: Option<&SinkRow>,
    got: Option<&SinkRow>,
    same: &dyn Fn(&Value, &Value) -> bool,
) -> Option<Diff> {
    match (want, got) {
        (None, None) => None,
        (Some(_), None) => Some(Diff::Missing),
        (None, Some(_)) => Some(Diff::Extra),
        (Some(w), Some(g)) => {
            let mut cols: Vec<&String> = w.keys().collect();
            cols.extend(g.keys().filter(|k| !w.contains_key(*k)));
            let diffs: Vec<ColumnDiff> = cols
                .into_iter()
                .filter(|c| match (w.get(*c), g.get(*c)) {
                    (Some(a), Some(b)) => !same(a, b),
                    (a, b) => a != b,
                })
                .map(|c| {
                    let shown = |v: Option<&Value>| match opts.is_masked(table, c) {
                        true => Value::String(REDACTED.into()),
                        false => v.cloned().unwrap_or(Value::Null),
                    };
                    ColumnDiff { column: c.clone(), source: shown(w.get(c)), sink: shown(g.get(c)) }
                })
                .collect();
            (!diffs.is_empty()).then_some(Diff::Values(diffs))
        }
    }
}
