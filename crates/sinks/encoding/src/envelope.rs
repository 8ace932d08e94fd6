//! Envelopes: the JSON shape of one event on the wire.
//!
//! - `native`: DeltaForge's own envelope ([`deltaforge_core::NativeEnvelope`]).
//! - `debezium`: the JSON a Debezium connector emits with
//!   `schemas.enable=false` (`before`, `after`, `source`, `op`, `ts_ms`,
//!   `transaction`), so existing Debezium consumers work unchanged. The
//!   `source` block follows the connector: PostgreSQL (`connector:
//!   "postgresql"`, `schema`, `table`, `txId`, `lsn`) or MySQL (`connector:
//!   "mysql"`, `file`, `pos`, `gtid`, `server_id`, `row`).
//!   DeltaForge does not know the PostgreSQL database name, so `db` carries
//!   the schema name there, like `schema`.
//! - `cloudevents`: structured-mode CloudEvents 1.0 JSON with `id` = the
//!   idempotency key, `source` = `/deltaforge/{tenant}/{pipeline}`, `type` =
//!   `io.deltaforge.change.{created|updated|deleted|read|truncated}`,
//!   `time` = commit time, `subject` = `{db}.{table}`, and `data` = the
//!   native envelope.

use chrono::{TimeZone, Utc};
use deltaforge_core::{Event, Op, Position};
use serde::Deserialize;
use serde_json::{json, Value};

/// Which envelope a sink writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Envelope {
    /// DeltaForge's native envelope.
    #[default]
    Native,
    /// Debezium JSON (`schemas.enable=false`).
    Debezium,
    /// CloudEvents 1.0, structured mode.
    Cloudevents,
}

impl Envelope {
    /// Appends the encoded event to `buf`.
    pub fn encode_into(self, event: &Event, buf: &mut Vec<u8>) {
        match self {
            Envelope::Native => serde_json::to_writer(buf, &event.native()),
            Envelope::Debezium => serde_json::to_writer(buf, &debezium(event)),
            Envelope::Cloudevents => serde_json::to_writer(buf, &cloudevents(event)),
        }
        .expect("envelopes always serialize")
    }

    /// Encodes one event.
    pub fn encode(self, event: &Event) -> Vec<u8> {
        let mut buf = Vec::with_capacity(256);
        self.encode_into(event, &mut buf);
        buf
    }

    /// The MIME content type of the encoded event.
    pub fn content_type(self) -> &'static str {
        match self {
            Envelope::Cloudevents => "application/cloudevents+json",
            _ => "application/json",
        }
    }
}

fn row(r: &Option<deltaforge_core::Row>) -> Value {
    r.as_ref().map(|r| r.to_json()).unwrap_or(Value::Null)
}

/// The Debezium JSON value of an event.
pub fn debezium(e: &Event) -> Value {
    let m = &e.source;
    let snapshot = if e.op == Op::Read { "true" } else { "false" };
    let source = match &m.position {
        Position::Postgres { lsn, tx_id } => json!({
            "version": env!("CARGO_PKG_VERSION"),
            "connector": "postgresql",
            "name": &*m.pipeline,
            "ts_ms": m.ts_ms,
            "snapshot": snapshot,
            "db": &*m.db,
            "sequence": Value::Null,
            "schema": &*m.db,
            "table": &*m.table,
            "txId": tx_id,
            "lsn": lsn.0,
            "xmin": Value::Null,
        }),
        Position::Mysql { file, pos, gtid_set } => json!({
            "version": env!("CARGO_PKG_VERSION"),
            "connector": "mysql",
            "name": &*m.pipeline,
            "ts_ms": m.ts_ms,
            "snapshot": snapshot,
            "db": &*m.db,
            "sequence": Value::Null,
            "table": &*m.table,
            "server_id": 0,
            "gtid": gtid_set.as_deref(),
            "file": &**file,
            "pos": pos,
            "row": e.index,
            "thread": Value::Null,
            "query": Value::Null,
        }),
        Position::Datagen { seq } => json!({
            "version": env!("CARGO_PKG_VERSION"),
            "connector": m.connector,
            "name": &*m.pipeline,
            "ts_ms": m.ts_ms,
            "snapshot": snapshot,
            "db": &*m.db,
            "sequence": Value::Null,
            "table": &*m.table,
            "seq": seq,
        }),
    };
    let transaction = e.tx_id.as_ref().map(|id| {
        json!({
            "id": &**id,
            "total_order": e.index as u64 + 1,
            "data_collection_order": e.index as u64 + 1,
        })
    });
    json!({
        "before": row(&e.before),
        "after": row(&e.after),
        "source": source,
        "op": e.op.code(),
        "ts_ms": Utc::now().timestamp_millis(),
        "transaction": transaction,
    })
}

/// The structured-mode CloudEvents JSON of an event.
pub fn cloudevents(e: &Event) -> Value {
    let m = &e.source;
    let kind = match e.op {
        Op::Create => "created",
        Op::Update => "updated",
        Op::Delete => "deleted",
        Op::Read => "read",
        Op::Truncate => "truncated",
    };
    let time =
        Utc.timestamp_millis_opt(m.ts_ms).single().map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    json!({
        "specversion": "1.0",
        "id": e.idempotency_key(),
        "source": format!("/deltaforge/{}/{}", m.tenant, m.pipeline),
        "type": format!("io.deltaforge.change.{kind}"),
        "time": time,
        "subject": format!("{}.{}", m.db, m.table),
        "datacontenttype": "application/json",
        "data": serde_json::to_value(e.native()).expect("events serialize"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltaforge_core::{Lsn, Row, SourceMeta};

    fn pg_update() -> Event {
        Event {
            op: Op::Update,
            before: Some(Row::from_pairs([("id", json!(1)), ("name", json!("old"))])),
            after: Some(Row::from_pairs([("id", json!(1)), ("name", json!("new"))])),
            source: SourceMeta {
                connector: "postgres",
                source_id: "pg".into(),
                pipeline: "orders-cdc".into(),
                tenant: "acme".into(),
                db: "public".into(),
                table: "orders".into(),
                position: Position::Postgres { lsn: Lsn(0x16B3748), tx_id: Some(555) },
                ts_ms: 1_767_225_600_000,
            },
            tx_id: Some("555".into()),
            tx_position: Position::Postgres { lsn: Lsn(0x16B3800), tx_id: Some(555) },
            index: 0,
            schema_version: Some(1),
            key_columns: None,
        }
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

    fn shape(v: &Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
            Value::Null => json!("null"),
            Value::Bool(_) => json!("bool"),
            Value::Number(_) => json!("number"),
            Value::String(_) => json!("string"),
            Value::Array(_) => json!("array"),
        }
    }

    #[test]
    fn debezium_matches_the_golden_shape() {
        let ours = debezium(&pg_update());
        let golden: Value = serde_json::from_str(GOLDEN_DEBEZIUM_PG).unwrap();
        assert_eq!(shape(&ours), shape(&golden));
        assert_eq!(ours["before"], golden["before"]);
        assert_eq!(ours["after"], golden["after"]);
        assert_eq!(ours["op"], "u");
        assert_eq!(ours["source"]["lsn"], 0x16B3748);
        assert_eq!(ours["source"]["txId"], 555);
    }

    #[test]
    fn cloudevents_has_the_required_attributes() {
        let ce = cloudevents(&pg_update());
        assert_eq!(ce["specversion"], "1.0");
        assert_eq!(ce["id"], pg_update().idempotency_key());
        assert_eq!(ce["source"], "/deltaforge/acme/orders-cdc");
        assert_eq!(ce["type"], "io.deltaforge.change.updated");
        assert_eq!(ce["time"], "2026-01-01T00:00:00.000Z");
        assert_eq!(ce["subject"], "public.orders");
        assert_eq!(ce["data"]["after"]["name"], "new");
    }

    #[test]
    fn envelopes_parse_from_config() {
        let e: Envelope = serde_json::from_value(json!("cloudevents")).unwrap();
        assert_eq!(e, Envelope::Cloudevents);
        assert!(serde_json::from_value::<Envelope>(json!("avro")).is_err());
    }
}
