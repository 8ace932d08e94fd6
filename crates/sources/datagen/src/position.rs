//! The datagen position: the sequence number of the last event of a
//! transaction, JSON `{"seq": N}` (a public contract: operators read it
//! in the `checkpoints` namespace).
//!
//! This module owns the position's shape, order and key text; it must
//! never change the JSON shape of stored checkpoints.

use std::cmp::Ordering;
use std::fmt;

use deltaforge_core::{Position, SourcePosition};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Where a datagen event or checkpoint sits: a sequence number from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatagenPosition {
    /// Sequence number of the event (of the transaction's last event for
    /// checkpoints).
    pub seq: u64,
}

impl DatagenPosition {
    /// The position of sequence number `seq`, as a core [`Position`].
    pub fn at(seq: u64) -> Position {
        Position::new(DatagenPosition { seq })
    }
}

impl fmt::Display for DatagenPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "seq {}", self.seq)
    }
}

impl SourcePosition for DatagenPosition {
    fn order(&self, other: &Self) -> Ordering {
        self.seq.cmp(&other.seq)
    }

    fn write_key(&self, key: &mut String) {
        use std::fmt::Write as _;
        let _ = write!(key, "{}", self.seq);
    }

    fn from_key(text: &str, _event: &Self) -> Result<Self, String> {
        text.parse().map(|seq| DatagenPosition { seq }).map_err(|_| format!("bad datagen sequence number {text:?}"))
    }

    fn debezium_fields(&self, _index: u32, block: &mut Map<String, Value>) {
        block.insert("seq".into(), self.seq.into());
    }
}

deltaforge_core::register_position!(DatagenPosition, "datagen");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape_is_the_contract() {
        let p = DatagenPosition::at(7);
        assert_eq!(p.to_json(), serde_json::json!({"seq": 7}));
        assert_eq!(Position::from_json(&serde_json::json!({"seq": 7})).unwrap(), p);
        assert_eq!(p.connector(), "datagen");
        assert!(p.is_at_or_before(&DatagenPosition::at(8)));
        let mut key = String::new();
        p.write_key(&mut key);
        assert_eq!(key, "7");
    }
}
