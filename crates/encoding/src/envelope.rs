//! Envelopes: the JSON shape of one event on the wire.
//!
//! - `native`: DeltaForge's own envelope ([`deltaforge_core::NativeEnvelope`]).
//! - `debezium`: the JSON a Debezium connector emits with
//!   `schemas.enable=false` (`before`, `after`, `source`, `op`, `ts_ms`,
//!   `transaction`), so existing Debezium consumers work unchanged. The
//!   `source` block holds the common fields (`version`, `connector`,
//!   `name`, `ts_ms`, `snapshot`, `db`, `sequence`, `table`) and then the
//!   fields the source's position type adds
//!   ([`deltaforge_core::SourcePosition::debezium_fields`]): PostgreSQL
//!   `connector: "postgresql"`, `schema`, `txId`, `lsn`; MySQL `file`,
//!   `pos`, `gtid`, `server_id`, `row`. This crate never names a source.
//! - `cloudevents`: structured-mode CloudEvents 1.0 JSON with `id` = the
//!   idempotency key, `source` = `/deltaforge/{tenant}/{pipeline}`, `type` =
//!   `io.deltaforge.change.{created|updated|deleted|read|truncated}`,
//!   `time` = commit time, `subject` = `{db}.{table}`, and `data` = the
//!   native envelope.

use chrono::{TimeZone, Utc};
use deltaforge_core::{Event, Op};
use serde::Deserialize;
use serde_json::{json, Map, Value};

/// Which envelope a sink writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, schemars::JsonSchema)]
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
    let mut source = Map::with_capacity(16);
    source.insert("version".into(), env!("CARGO_PKG_VERSION").into());
    source.insert("connector".into(), m.connector.into());
    source.insert("name".into(), (*m.pipeline).into());
    source.insert("ts_ms".into(), m.ts_ms.into());
    source.insert("snapshot".into(), snapshot.into());
    source.insert("db".into(), (*m.db).into());
    source.insert("sequence".into(), Value::Null);
    source.insert("table".into(), (*m.table).into());
    // The connector-specific fields (PostgreSQL `lsn`/`txId`, MySQL
    // `file`/`pos`/`gtid`, ...) belong to the source's position type.
    m.position.debezium_fields(e.index, &mut source);
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
    use deltaforge_core::testing::EventBuilder;

    fn update() -> Event {
        EventBuilder::new(1)
            .op(Op::Update)
            .before(json!({"id": 1, "name": "old"}))
            .after(json!({"id": 1, "name": "new"}))
            .pipeline("orders-cdc", "acme")
            .table("public.orders")
            .tx_id("555")
            .ts_ms(1_767_225_600_000)
            .build()
    }

    #[test]
    fn debezium_has_the_common_source_fields_and_the_transaction() {
        let ours = debezium(&update());
        assert_eq!(ours["before"], json!({"id": 1, "name": "old"}));
        assert_eq!(ours["after"], json!({"id": 1, "name": "new"}));
        assert_eq!(ours["op"], "u");
        let source = &ours["source"];
        for (k, v) in [("connector", json!("test")), ("name", json!("orders-cdc")), ("db", json!("public"))] {
            assert_eq!(source[k], v, "{k}");
        }
        assert_eq!(source["table"], "orders");
        assert_eq!(source["snapshot"], "false");
        assert_eq!(source["ts_ms"], 1_767_225_600_000_i64);
        assert_eq!(ours["transaction"], json!({"id": "555", "total_order": 1, "data_collection_order": 1}));
    }

    #[test]
    fn cloudevents_has_the_required_attributes() {
        let ce = cloudevents(&update());
        assert_eq!(ce["specversion"], "1.0");
        assert_eq!(ce["id"], update().idempotency_key());
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
