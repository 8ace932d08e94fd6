//! Decoding one record of a stream sink (a Kafka message, a Redis stream
//! entry, a JetStream message) into a [`Delivered`] event, whatever the
//! envelope: native and CloudEvents through [`crate::envelope::decode`],
//! Debezium here. A Debezium value has no idempotency key: the stream sinks
//! carry it beside the value (Kafka header `id`, Redis field `id`, NATS
//! header `Nats-Msg-Id`), and its transaction position is read back with
//! the position rebuilt from the Debezium `source` block.
//!
//! This module owns decoding only; a record it cannot read is `None`
//! (counted by the caller), never an error.

use std::sync::Arc;

use deltaforge_core::Position;
use serde_json::Value;

use crate::envelope::{decode, Delivered};

/// Decodes a record's value; `carried_id` is the idempotency key the sink
/// sent beside it (needed for Debezium), `source_id` the pipeline source's
/// id (the idempotency key's prefix).
pub fn decode_record(value: &Value, carried_id: Option<&str>, source_id: &str) -> Option<Delivered> {
    if let Some(d) = decode(value) {
        return Some(d);
    }
    let source = value.get("source")?;
    let obj = |k: &str| value.get(k).and_then(Value::as_object).cloned();
    let id = carried_id?.to_string();
    let tx_position = debezium_position(source).and_then(|event| tx_position(&id, source_id, &event));
    Some(Delivered {
        op: value.get("op")?.as_str()?.to_string(),
        table: format!("{}.{}", source.get("db")?.as_str()?, source.get("table")?.as_str()?),
        before: obj("before"),
        after: obj("after"),
        id,
        tx_position,
    })
}

/// The event's position rebuilt from a Debezium `source` block (the
/// fields `debezium_fields` of the PostgreSQL and MySQL positions write).
fn debezium_position(source: &Value) -> Option<Position> {
    match source.get("connector")?.as_str()? {
        "postgresql" => Some(deltaforge_source_postgres::position::position(
            source.get("lsn")?.as_u64()?,
            source.get("txId").and_then(Value::as_u64),
        )),
        "mysql" => Some(deltaforge_source_mysql::BinlogPosition::at(
            Arc::from(source.get("file")?.as_str()?),
            source.get("pos")?.as_u64()?,
            source.get("gtid").and_then(Value::as_str).map(Arc::from),
        )),
        _ => None,
    }
}

/// The transaction position of an idempotency key
/// `{source_id}:{transaction position}:{index}`.
fn tx_position(id: &str, source_id: &str, event: &Position) -> Option<Position> {
    let rest = id.strip_prefix(source_id)?.strip_prefix(':')?;
    let (tx, _index) = rest.rsplit_once(':')?;
    event.parse_key(tx).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn debezium_takes_the_carried_id_and_reads_its_transaction_position() {
        let v = json!({"op": "u", "before": {"id": 1}, "after": {"id": 1, "v": 2},
            "source": {"connector": "postgresql", "db": "public", "schema": "public", "table": "t", "lsn": 500, "txId": 9}});
        let mut key = String::from("pg1:");
        deltaforge_source_postgres::position::position(400, Some(9)).write_key(&mut key);
        key.push_str(":0");
        let d = decode_record(&v, Some(&key), "pg1").expect("debezium");
        assert_eq!((d.op.as_str(), d.table.as_str(), d.id.as_str()), ("u", "public.t", key.as_str()));
        let tx = d.tx_position.expect("position");
        assert!(tx.is_at_or_before(&deltaforge_source_postgres::position::position(450, None)));
        assert!(!tx.is_at_or_before(&deltaforge_source_postgres::position::position(399, None)));
        assert_eq!(decode_record(&v, None, "pg1"), None, "no id: not an event");
        let mysql = json!({"op": "c", "before": null, "after": {"id": 1},
            "source": {"connector": "mysql", "db": "d", "table": "t", "file": "binlog.000002", "pos": 900, "gtid": null}});
        let d = decode_record(&mysql, Some("my:binlog.000002/800:1"), "my").expect("mysql debezium");
        assert_eq!(d.tx_position.map(|p| p.to_json()["pos"].clone()), Some(json!(800)));
    }
}
