//! Source positions: where in a source's log an event or a checkpoint sits.
//!
//! The JSON shapes are a public contract (operators read them with `sqlite3`,
//! and the REST API returns them):
//!
//! - MySQL/MariaDB: `{"file": "binlog.000042", "pos": 12345, "gtid_set": "..."}`
//! - PostgreSQL: `{"lsn": "0/1A2B3C4D", "tx_id": 1234}`
//! - datagen: `{"seq": 42}`
//!
//! Positions are typed rather than opaque JSON so that the hot path copies
//! integers instead of allocating maps, and so that positions of the same
//! source can be ordered (per-sink progress and schema history need that).

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A PostgreSQL log sequence number, printed as `X/Y` (two hex halves).
///
/// ```
/// use deltaforge_core::Lsn;
/// let lsn: Lsn = "0/1A2B3C4D".parse().unwrap();
/// assert_eq!(lsn.0, 0x1A2B3C4D);
/// assert_eq!(lsn.to_string(), "0/1A2B3C4D");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl FromStr for Lsn {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (hi, lo) =
            s.split_once('/').ok_or_else(|| format!("invalid LSN {s:?}: expected the form X/Y, e.g. 0/1A2B3C4D"))?;
        let hi = u64::from_str_radix(hi, 16).map_err(|_| format!("invalid LSN {s:?}: bad high half"))?;
        let lo = u64::from_str_radix(lo, 16).map_err(|_| format!("invalid LSN {s:?}: bad low half"))?;
        if hi > u32::MAX as u64 || lo > u32::MAX as u64 {
            return Err(format!("invalid LSN {s:?}: halves must fit in 32 bits"));
        }
        Ok(Lsn((hi << 32) | lo))
    }
}

impl Serialize for Lsn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Lsn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Where an event or checkpoint sits in its source's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Position {
    /// PostgreSQL: commit LSN of a transaction (for checkpoints) or the LSN of
    /// a change (for events), with the transaction id when known.
    Postgres {
        /// The LSN.
        lsn: Lsn,
        /// The transaction id (xid), when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tx_id: Option<u64>,
    },
    /// MySQL/MariaDB: binlog file and byte offset, and the GTID set executed
    /// up to here when GTID is on.
    Mysql {
        /// Binlog file name, e.g. `binlog.000042`.
        file: Arc<str>,
        /// Byte offset inside the file.
        pos: u64,
        /// MySQL `uuid:1-42` or MariaDB `0-1-42` form.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gtid_set: Option<Arc<str>>,
    },
    /// datagen: the sequence number of the last generated event.
    Datagen {
        /// Sequence number, starting at 1.
        seq: u64,
    },
}

impl Position {
    /// Orders two positions of the same source; `None` when they are of
    /// different kinds (never the case within one pipeline).
    ///
    /// MySQL positions order by file then offset; binlog file names share a
    /// base name and a zero-padded counter, so string order is file order.
    pub fn compare(&self, other: &Position) -> Option<Ordering> {
        match (self, other) {
            (Position::Postgres { lsn: a, .. }, Position::Postgres { lsn: b, .. }) => Some(a.cmp(b)),
            (Position::Mysql { file: fa, pos: pa, .. }, Position::Mysql { file: fb, pos: pb, .. }) => {
                Some(binlog_file_order(fa, fb).then(pa.cmp(pb)))
            }
            (Position::Datagen { seq: a }, Position::Datagen { seq: b }) => Some(a.cmp(b)),
            _ => None,
        }
    }

    /// True when `self` is at or before `other` (same kind only).
    pub fn is_at_or_before(&self, other: &Position) -> bool {
        matches!(self.compare(other), Some(Ordering::Less | Ordering::Equal))
    }

    /// The position as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("positions always serialize")
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Postgres { lsn, .. } => write!(f, "lsn {lsn}"),
            Position::Mysql { file, pos, .. } => write!(f, "{file}:{pos}"),
            Position::Datagen { seq } => write!(f, "seq {seq}"),
        }
    }
}

fn binlog_file_order(a: &str, b: &str) -> Ordering {
    // `mariadb-bin.000009` < `mariadb-bin.000010`; counters may outgrow their
    // padding (`.999999` → `.1000000`), so compare the numeric suffix.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shapes_match_the_contract() {
        let pg = Position::Postgres { lsn: "0/1A2B3C4D".parse().unwrap(), tx_id: Some(1234) };
        assert_eq!(pg.to_json(), serde_json::json!({"lsn": "0/1A2B3C4D", "tx_id": 1234}));
        let my = Position::Mysql { file: "binlog.000042".into(), pos: 12345, gtid_set: Some("0-1-42".into()) };
        assert_eq!(my.to_json(), serde_json::json!({"file": "binlog.000042", "pos": 12345, "gtid_set": "0-1-42"}));
        let dg = Position::Datagen { seq: 7 };
        assert_eq!(dg.to_json(), serde_json::json!({"seq": 7}));
        for p in [pg, my, dg] {
            let back: Position = serde_json::from_value(p.to_json()).unwrap();
            assert_eq!(back, p);
        }
    }

    #[test]
    fn lsn_parse_errors_are_clear() {
        assert!("zz".parse::<Lsn>().unwrap_err().contains("X/Y"));
        assert!("1/GG".parse::<Lsn>().is_err());
        assert_eq!("16/B374D848".parse::<Lsn>().unwrap().to_string(), "16/B374D848");
    }

    #[test]
    fn ordering_within_kind() {
        let a = Position::Mysql { file: "b.000009".into(), pos: 900, gtid_set: None };
        let b = Position::Mysql { file: "b.000010".into(), pos: 4, gtid_set: None };
        assert!(a.is_at_or_before(&b));
        assert!(!b.is_at_or_before(&a));
        assert_eq!(Position::Datagen { seq: 1 }.compare(&b), None);
    }
}
