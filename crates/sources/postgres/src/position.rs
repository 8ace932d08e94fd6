//! The PostgreSQL position and where a run resumes.
//!
//! [`PgPosition`] is this source's own position type (registered with the
//! core so that stored checkpoints read back as one): a log sequence number
//! and, when known, the transaction id, JSON `{"lsn": "0/1A2B3C4D",
//! "tx_id": 1234}` — a public contract (operators read it in the
//! `checkpoints` namespace, the REST API returns it). Every other module of
//! this crate builds and reads positions through [`position`], [`lsn_of`]
//! and [`Resume`].
//!
//! This module owns the position's shape, order, key text and Debezium
//! fields, and the mapping to [`Resume`]; it must never decide what is
//! durable or what is reported to the server, and never change the JSON
//! shape of stored checkpoints.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use deltaforge_core::{Position, SourcePosition};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A PostgreSQL log sequence number, printed as `X/Y` (two hex halves).
///
/// ```
/// use deltaforge_source_postgres::Lsn;
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

/// Where a PostgreSQL event or checkpoint sits: the commit LSN of a
/// transaction (checkpoints) or the LSN of a change (events), with the
/// transaction id when known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PgPosition {
    /// The LSN.
    pub lsn: Lsn,
    /// The transaction id (xid), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_id: Option<u64>,
}

impl PgPosition {
    /// The core [`Position`] of `lsn` and `tx_id`.
    pub fn at(lsn: u64, tx_id: Option<u64>) -> Position {
        Position::new(PgPosition { lsn: Lsn(lsn), tx_id })
    }

    /// The PostgreSQL position inside `position`, when it is one.
    pub fn of(position: &Position) -> Option<PgPosition> {
        position.get::<PgPosition>().copied()
    }
}

impl fmt::Display for PgPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lsn {}", self.lsn)
    }
}

impl SourcePosition for PgPosition {
    fn order(&self, other: &Self) -> Ordering {
        self.lsn.cmp(&other.lsn)
    }

    fn write_key(&self, key: &mut String) {
        use std::fmt::Write as _;
        let _ = write!(key, "{}", self.lsn);
    }

    fn from_key(text: &str, event: &Self) -> Result<Self, String> {
        Ok(PgPosition { lsn: text.parse()?, tx_id: event.tx_id })
    }

    fn debezium_fields(&self, _index: u32, block: &mut Map<String, Value>) {
        // Debezium's PostgreSQL connector: DeltaForge does not know the
        // database name, so `db` carries the schema name, like `schema`.
        // Debezium orders `schema` before `table`; consumers that compare
        // blocks textually expect that order.
        block.insert("connector".into(), "postgresql".into());
        let schema = block.get("db").cloned().unwrap_or(Value::Null);
        let table = block.shift_remove("table");
        block.insert("schema".into(), schema);
        block.insert("table".into(), table.unwrap_or(Value::Null));
        block.insert("txId".into(), self.tx_id.into());
        block.insert("lsn".into(), self.lsn.0.into());
        block.insert("xmin".into(), Value::Null);
    }
}

deltaforge_core::register_position!(PgPosition, "postgres");

/// The position at `lsn`, with the transaction id when known (changes and
/// transaction checkpoints) or `None` (idle checkpoints, snapshot chunks).
pub fn position(lsn: u64, tx_id: Option<u64>) -> Position {
    PgPosition::at(lsn, tx_id)
}

/// The LSN of a PostgreSQL position; `None` for another source's position.
pub fn lsn_of(position: &Position) -> Option<u64> {
    PgPosition::of(position).map(|p| p.lsn.0)
}

/// Where a run resumes: the checkpoint LSN, and whether a transaction whose
/// commit LSN equals it was already delivered (true for transaction
/// checkpoints; false for idle checkpoints at the server's WAL end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    /// The checkpoint LSN.
    pub lsn: u64,
    /// Skip a transaction whose commit LSN equals `lsn` too.
    pub inclusive: bool,
}

impl Resume {
    /// Where a run resumes from the stored checkpoint; `None` when the
    /// checkpoint is not a PostgreSQL position. Only transaction checkpoints
    /// carry a transaction id, so its presence makes the resume inclusive.
    pub fn from_checkpoint(checkpoint: &Position) -> Option<Resume> {
        PgPosition::of(checkpoint).map(|p| Resume { lsn: p.lsn.0, inclusive: p.tx_id.is_some() })
    }

    /// True when the transaction committing at `commit_lsn` was delivered
    /// before the checkpoint.
    pub fn covers(&self, commit_lsn: u64) -> bool {
        commit_lsn < self.lsn || (self.inclusive && commit_lsn == self.lsn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape_is_the_contract() {
        let p = PgPosition::at(0x1A2B3C4D, Some(1234));
        assert_eq!(p.to_json(), serde_json::json!({"lsn": "0/1A2B3C4D", "tx_id": 1234}));
        assert_eq!(Position::from_json(&p.to_json()).unwrap(), p);
        assert_eq!(PgPosition::at(5, None).to_json(), serde_json::json!({"lsn": "0/5"}));
        assert_eq!(p.connector(), "postgres");
        assert!(PgPosition::at(1, None).is_at_or_before(&p));
    }

    #[test]
    fn lsn_parse_errors_are_clear() {
        assert!("zz".parse::<Lsn>().unwrap_err().contains("X/Y"));
        assert!("1/GG".parse::<Lsn>().is_err());
        assert_eq!("16/B374D848".parse::<Lsn>().unwrap().to_string(), "16/B374D848");
    }

    #[test]
    fn keys_round_trip_with_the_events_tx_id() {
        let p = PgPosition { lsn: Lsn(0x1300), tx_id: Some(9) };
        let mut key = String::new();
        p.write_key(&mut key);
        assert_eq!(key, "0/1300");
        assert_eq!(PgPosition::from_key(&key, &p).unwrap(), p);
    }

    #[test]
    fn resume_skips_only_what_the_checkpoint_covers() {
        let tx = Resume { lsn: 100, inclusive: true };
        assert!(tx.covers(99) && tx.covers(100) && !tx.covers(101));
        let idle = Resume { lsn: 100, inclusive: false };
        assert!(idle.covers(99) && !idle.covers(100) && !idle.covers(101));
    }

    /// Field names and value kinds of a Debezium PostgreSQL change event with
    /// `schemas.enable=false`, written from Debezium's documented format.
    const GOLDEN_DEBEZIUM_PG: &str = r#"{
      "before": {"id": 1, "name": "old"},
      "after": {"id": 1, "name": "new"},
      "source": {"version": "2.7.0.Final", "connector": "postgresql", "name": "PostgreSQL_server",
                 "ts_ms": 1559033904863, "snapshot": "false", "db": "postgres", "sequence": null,
                 "schema": "public", "table": "customers", "txId": 556, "lsn": 24023128, "xmin": null},
      "op": "u",
      "ts_ms": 1465584025523,
      "transaction": {"id": "556", "total_order": 1, "data_collection_order": 1}
    }"#;

    fn shape(v: &serde_json::Value) -> serde_json::Value {
        use serde_json::{json, Value};
        match v {
            Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
            Value::Null => json!("null"),
            Value::Bool(_) => json!("bool"),
            Value::Number(_) => json!("number"),
            Value::String(_) => json!("string"),
            Value::Array(_) => json!("array"),
        }
    }

    fn pg_update() -> deltaforge_core::Event {
        use deltaforge_core::testing::EventBuilder;
        use deltaforge_core::Op;
        use serde_json::json;
        EventBuilder::new(1)
            .op(Op::Update)
            .connector("postgres")
            .before(json!({"id": 1, "name": "old"}))
            .after(json!({"id": 1, "name": "new"}))
            .pipeline("orders-cdc", "acme")
            .table("public.orders")
            .tx_id("555")
            .at(PgPosition::at(0x16B3748, Some(555)))
            .build()
    }

    #[test]
    fn debezium_source_block_matches_the_golden_shape() {
        let mut event = pg_update();
        event.tx_position = PgPosition::at(0x16B3800, Some(555));
        let ours = deltaforge_encoding::envelope::debezium(&event);
        let golden: serde_json::Value = serde_json::from_str(GOLDEN_DEBEZIUM_PG).unwrap();
        assert_eq!(shape(&ours), shape(&golden));
        assert_eq!(ours["source"]["lsn"], 0x16B3748);
        assert_eq!(ours["source"]["txId"], 555);
        assert_eq!(ours["source"]["connector"], "postgresql");
        assert_eq!(ours["source"]["schema"], "public");
        let keys: Vec<&str> = ours["source"].as_object().unwrap().keys().map(String::as_str).collect();
        let golden_keys: Vec<&str> = golden["source"].as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, golden_keys, "Debezium's field order");
    }

    #[test]
    fn native_envelope_round_trips_a_postgres_event() {
        let mut event = pg_update();
        event.tx_position = PgPosition::at(0x1300, Some(555));
        let back = deltaforge_core::Event::from_native(&serde_json::to_value(event.native()).unwrap()).unwrap();
        assert_eq!(back.tx_position, event.tx_position);
        assert_eq!(back.source.position, event.source.position);
        assert_eq!(back.source.connector, "postgres");
        assert_eq!(back.idempotency_key(), event.idempotency_key());
    }
}
