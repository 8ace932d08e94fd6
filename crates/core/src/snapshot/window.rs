//! The DBLog window of one chunk and the watermarks that open and close it:
//! row-key canonicalisation ([`key_string`]), the set of keys a streamed
//! change touched between a chunk's low and high watermark ([`Window`]), and
//! the watermark content ([`Watermark`], [`new_run_id`]).
//!
//! This module owns the reconciliation rule (a key touched in the window
//! drops the chunk's copy of the row; a truncate drops the whole chunk). It
//! must never emit events or store progress.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The canonical text of a row key (its values as a JSON array), the same
/// for a chunk row and a streamed change of that row as long as both map
/// the server's values the same way.
pub fn key_string<'a>(values: impl IntoIterator<Item = &'a Value>) -> String {
    let mut out = String::from("[");
    for (i, v) in values.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&v.to_string());
    }
    out.push(']');
    out
}

/// The stream side of one chunk's read: the keys changed between its low and
/// its high watermark.
#[derive(Debug, Default, Clone)]
pub struct Window {
    keys: HashSet<String>,
    truncated: bool,
}

impl Window {
    /// An empty window (opened at the low watermark).
    pub fn new() -> Self {
        Window::default()
    }

    /// A streamed change touched the row with this key (insert, update
    /// before and after, delete).
    pub fn touch(&mut self, key: String) {
        self.keys.insert(key);
    }

    /// The table was truncated inside the window: every row of the chunk is
    /// older than the truncate, so none may be emitted.
    pub fn truncate(&mut self) {
        self.truncated = true;
    }

    /// Number of distinct keys touched.
    pub fn touched(&self) -> usize {
        self.keys.len()
    }

    /// Keeps the chunk rows (keyed, in chunk order) whose key no streamed
    /// change in the window touched.
    pub fn reconcile<T>(&self, rows: Vec<(String, T)>) -> Vec<T> {
        if self.truncated {
            return Vec::new();
        }
        rows.into_iter().filter(|(k, _)| !self.keys.contains(k)).map(|(_, r)| r).collect()
    }
}

/// Which watermark of a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WatermarkKind {
    /// Written before the chunk's select.
    Low,
    /// Written after it.
    High,
}

/// What a watermark carries, as JSON, so that the stream reader knows
/// which window it opens or closes without asking anyone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermark {
    /// The run that wrote it: watermarks of an earlier run, or of another
    /// pipeline reading the same server, are ignored.
    pub run: String,
    /// Chunk identifier within the run.
    pub chunk: u64,
    /// Low or high.
    pub kind: WatermarkKind,
    /// The table read, as the source names it.
    pub table: String,
    /// Its key columns, in key order (empty: the whole row is the key).
    pub key: Vec<String>,
}

/// A per-run identifier for watermarks: unique enough that two runs (or two
/// pipelines) never share one.
pub fn new_run_id(source_id: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{source_id}:{}:{nanos:x}", std::process::id())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn k(i: i64) -> String {
        key_string(&[json!(i)])
    }

    #[test]
    fn reconcile_drops_keys_changed_in_the_window_and_keeps_order() {
        let mut w = Window::new();
        w.touch(k(2));
        w.touch(k(9)); // a row inserted in the window, not in the chunk
        let rows = (1..=4).map(|i| (k(i), i)).collect();
        assert_eq!(w.reconcile(rows), vec![1, 3, 4]);
        assert_eq!(w.touched(), 2);
    }

    #[test]
    fn truncate_in_the_window_drops_the_chunk() {
        let mut w = Window::new();
        w.truncate();
        assert!(w.reconcile(vec![(k(1), 1)]).is_empty());
    }

    #[test]
    fn composite_keys_are_distinct_and_canonical() {
        assert_eq!(key_string(&[json!(1), json!("a")]), r#"[1,"a"]"#);
        assert_ne!(key_string(&[json!("1")]), key_string(&[json!(1)]));
        let mut w = Window::new();
        w.touch(key_string(&[json!(1), json!("a")]));
        let rows = vec![(key_string(&[json!(1), json!("a")]), "x"), (key_string(&[json!(1), json!("b")]), "y")];
        assert_eq!(w.reconcile(rows), vec!["y"]);
    }
}
