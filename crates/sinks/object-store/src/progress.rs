//! Event positions and the `_progress` object of a directory, which lets
//! start-up learn what a replay must skip with one or two small reads
//! instead of reading every manifest.
//!
//! `_progress/{dir}/progress.json` is rewritten before each data file of
//! `dir` is committed: it records the last position of the committed files
//! before it (`last`) and the file about to be committed (`pending`: its
//! name and last position). Committing is then progress → data file →
//! manifest, so after a crash the pending file is the only one that may be
//! incomplete: its manifest exists (it is committed, skip up to its last
//! position) or not (delete the data file if present, skip up to `last`).
//!
//! This module owns the encoding of positions and of that object; it never
//! does I/O.

use std::cmp::Ordering;

use deltaforge_core::{Event, Position};
use serde_json::{json, Value};

/// An event's place in the source log: its transaction's position and its
/// index there.
#[derive(Debug, Clone, PartialEq)]
pub struct EventPos {
    /// The transaction's position.
    pub tx: Position,
    /// The event's index in its transaction.
    pub index: u32,
}

impl EventPos {
    /// The position of an event.
    pub fn of(e: &Event) -> Self {
        EventPos { tx: e.tx_position.clone(), index: e.index }
    }

    /// Whether `self` is at or before `other` (false when incomparable).
    pub fn at_or_before(&self, other: &EventPos) -> bool {
        match self.tx.compare(&other.tx) {
            Some(Ordering::Less) => true,
            Some(Ordering::Equal) => self.index <= other.index,
            _ => false,
        }
    }

    /// As stored in manifests and progress objects.
    pub fn to_json(&self) -> Value {
        json!({"position": self.tx.to_json(), "index": self.index})
    }

    /// Parsed back from [`to_json`](Self::to_json).
    pub fn from_json(v: &Value) -> Option<Self> {
        let tx = Position::from_json(v.get("position")?).ok()?;
        Some(EventPos { tx, index: u32::try_from(v.get("index")?.as_u64()?).ok()? })
    }
}

/// What a directory's progress object says.
#[derive(Debug, Clone, PartialEq)]
pub struct DirProgress {
    /// Last position of the files committed before `pending`.
    pub last: Option<EventPos>,
    /// The file being committed when this was written: its name in the
    /// directory and its last position.
    pub pending: Option<(String, EventPos)>,
}

impl DirProgress {
    /// The object's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let v = json!({
            "last": self.last.as_ref().map(EventPos::to_json),
            "pending": self.pending.as_ref().map(|(file, last)| json!({"file": file, "last": last.to_json()})),
        });
        serde_json::to_vec(&v).expect("progress serializes")
    }

    /// Parses an object; `None` when it is not one.
    pub fn decode(body: &[u8]) -> Option<Self> {
        let v: Value = serde_json::from_slice(body).ok()?;
        let last = match v.get("last")? {
            Value::Null => None,
            p => Some(EventPos::from_json(p)?),
        };
        let pending = match v.get("pending")? {
            Value::Null => None,
            p => Some((p.get("file")?.as_str()?.to_string(), EventPos::from_json(p.get("last")?)?)),
        };
        Some(DirProgress { last, pending })
    }
}

/// The key of a directory's progress object.
pub fn progress_key(dir: &str) -> String {
    if dir.is_empty() {
        "_progress/progress.json".into()
    } else {
        format!("_progress/{dir}/progress.json")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltaforge_core::testing::EventBuilder;

    #[test]
    fn progress_round_trips_and_positions_order() {
        let a = EventPos::of(&EventBuilder::new(5).index(2).build());
        let b = EventPos::of(&EventBuilder::new(7).build());
        assert!(a.at_or_before(&b) && !b.at_or_before(&a) && a.at_or_before(&a));
        for p in [
            DirProgress { last: None, pending: Some(("5.2_7.0.parquet".into(), b.clone())) },
            DirProgress { last: Some(a), pending: Some(("x".into(), b)) },
            DirProgress { last: None, pending: None },
        ] {
            assert_eq!(DirProgress::decode(&p.encode()), Some(p));
        }
        assert_eq!(DirProgress::decode(b"{\"rows\": 3}"), None);
        assert_eq!(progress_key("orders/date=2024-02-29"), "_progress/orders/date=2024-02-29/progress.json");
    }
}
