//! The MySQL/MariaDB position: this source's own position type
//! ([`BinlogPosition`], registered with the core so that stored checkpoints
//! read back as one) — binlog file and byte offset, and the GTID set
//! executed up to there when GTID is on, JSON
//! `{"file": "binlog.000042", "pos": 12345, "gtid_set": "..."}` (a public
//! contract: operators read it in the `checkpoints` namespace). Every other
//! module builds and reads positions through [`position`] and [`parts`].
//!
//! This module owns the position's shape, order, key text and Debezium
//! fields; it must never hold GTID arithmetic, and never change the JSON
//! shape of stored checkpoints.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use deltaforge_core::{Position, SourcePosition};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Where a MySQL/MariaDB event or checkpoint sits in the binlog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BinlogPosition {
    /// Binlog file name, e.g. `binlog.000042`.
    pub file: Arc<str>,
    /// Byte offset inside the file.
    pub pos: u64,
    /// MySQL `uuid:1-42` or MariaDB `0-1-42` form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gtid_set: Option<Arc<str>>,
}

impl BinlogPosition {
    /// The core [`Position`] of `file`, `pos` and `gtid_set`.
    pub fn at(file: Arc<str>, pos: u64, gtid_set: Option<Arc<str>>) -> Position {
        Position::new(BinlogPosition { file, pos, gtid_set })
    }

    /// The binlog position inside `position`, when it is one.
    pub fn of(position: &Position) -> Option<&BinlogPosition> {
        position.get::<BinlogPosition>()
    }
}

impl fmt::Display for BinlogPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.pos)
    }
}

impl SourcePosition for BinlogPosition {
    /// Orders by file, then offset. Binlog file names share a base name and
    /// a counter that may outgrow its zero padding (`.999999` →
    /// `.1000000`), so the counter is compared as a number.
    fn order(&self, other: &Self) -> Ordering {
        binlog_file_order(&self.file, &other.file).then(self.pos.cmp(&other.pos))
    }

    fn write_key(&self, key: &mut String) {
        use std::fmt::Write as _;
        let _ = write!(key, "{}/{}", self.file, self.pos);
    }

    fn from_key(text: &str, event: &Self) -> Result<Self, String> {
        let (file, pos) = text.rsplit_once('/').ok_or("expected file/pos")?;
        let pos = pos.parse().map_err(|_| format!("bad binlog offset {pos:?}"))?;
        Ok(BinlogPosition { file: file.into(), pos, gtid_set: event.gtid_set.clone() })
    }

    fn debezium_fields(&self, index: u32, block: &mut Map<String, Value>) {
        block.insert("server_id".into(), 0.into());
        block.insert("gtid".into(), self.gtid_set.as_deref().into());
        block.insert("file".into(), (*self.file).into());
        block.insert("pos".into(), self.pos.into());
        block.insert("row".into(), index.into());
        block.insert("thread".into(), Value::Null);
        block.insert("query".into(), Value::Null);
    }
}

deltaforge_core::register_position!(BinlogPosition, "mysql");

fn binlog_file_order(a: &str, b: &str) -> Ordering {
    let split = |s: &str| -> (String, u64) {
        match s.rsplit_once('.') {
            Some((base, n)) => (base.to_string(), n.parse().unwrap_or(0)),
            None => (s.to_string(), 0),
        }
    };
    let (ba, na) = split(a);
    let (bb, nb) = split(b);
    ba.cmp(&bb).then(na.cmp(&nb))
}

/// The [`Position`] of `file:pos` with the GTID set executed up to there.
pub(crate) fn position(file: Arc<str>, pos: u64, gtid_set: Option<Arc<str>>) -> Position {
    BinlogPosition::at(file, pos, gtid_set)
}

/// The parts of a binlog position; `None` for another source's position.
pub(crate) fn parts(position: &Position) -> Option<BinlogPosition> {
    BinlogPosition::of(position).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape_is_the_contract() {
        let p = BinlogPosition::at("binlog.000042".into(), 12345, Some("0-1-42".into()));
        assert_eq!(p.to_json(), serde_json::json!({"file": "binlog.000042", "pos": 12345, "gtid_set": "0-1-42"}));
        assert_eq!(Position::from_json(&p.to_json()).unwrap(), p);
        assert_eq!(p.connector(), "mysql");
    }

    #[test]
    fn ordering_follows_the_file_counter() {
        let a = BinlogPosition::at("b.000009".into(), 900, None);
        let b = BinlogPosition::at("b.000010".into(), 4, None);
        let c = BinlogPosition::at("b.1000000".into(), 4, None);
        assert!(a.is_at_or_before(&b) && !b.is_at_or_before(&a));
        assert!(b.is_at_or_before(&c));
    }

    #[test]
    fn keys_round_trip_with_the_events_gtid_set() {
        let p = BinlogPosition { file: "binlog.000003".into(), pos: 77, gtid_set: Some("0-1-9".into()) };
        let mut key = String::new();
        p.write_key(&mut key);
        assert_eq!(key, "binlog.000003/77");
        assert_eq!(BinlogPosition::from_key(&key, &p).unwrap(), p);
    }
}
