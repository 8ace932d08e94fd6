//! `type: outbox` — the transactional outbox pattern: an application
//! writes a row into an outbox table in the same transaction as its
//! business change, and this processor turns each such row into a message
//! routed by the row's own columns.
//!
//! ```yaml
//! processors:
//!   - type: outbox
//!     config:
//!       tables: [shop.outbox]           # outbox tables (db.table patterns with `*`)
//!       topic_column: aggregate_type    # the message's topic comes from this column…
//!       topic_prefix: "outbox."         # …with this prefix (default none)
//!       topic: "outbox.misc"            # fixed topic, or the fallback when topic_column is null
//!       key_column: aggregate_id        # optional message key
//!       payload_column: payload         # default "payload"
//!       headers_column: headers         # optional JSON object of headers
//!       header_columns: [event_type]    # optional columns copied into the headers
//!       ops: [c]                        # which row ops become messages (default: inserts only)
//!       forward_raw: false              # also forward the raw outbox row event (default false)
//! sinks:
//!   - type: kafka
//!     config: { id: k, brokers: "...", topic: "${table}", key: "${after._key}" }
//! ```
//!
//! For every event of an outbox table whose op is in `ops`, the processor
//! emits one event in its place:
//!
//! * `op` is `c`; `before` is null; `source.table` is the routed topic
//!   (`topic_prefix` + the `topic_column` value, or `topic`), so sinks
//!   route it with `topic: ${table}` (Kafka), `stream: ${table}` (Redis),
//!   `subject: ${table}` (NATS); `source.db` stays the outbox table's
//!   database. `schema_version` is cleared (the payload is not the table's
//!   schema).
//! * `after` is the payload: a JSON object (or a string holding a JSON
//!   object, as MariaDB stores `JSON` columns) becomes the after columns;
//!   any other payload (array, scalar, null, non-JSON text) becomes a single
//!   column `payload`.
//! * The key, when `key_column` is set, is added to `after` as column
//!   `_key` (rename with `key_field`, or `key_field: null` to omit it) and
//!   declared as the event's key column, so a sink's default key is
//!   `{"_key": ...}` and `key: ${after._key}` gives the raw key.
//! * Headers, when `headers_column` or `header_columns` is set, are added to
//!   `after` as an object column `_headers` (rename with `headers_field`).
//!   Our sinks do not write transport headers yet; consumers read them
//!   from the payload envelope.
//! * Source position, transaction and index are the outbox row's, so the
//!   message's idempotency key is stable across replays. With
//!   `forward_raw: true` the raw row event is forwarded first, unchanged,
//!   and the message's index gets the high bit set (`index | 2^31`) so the
//!   two have distinct idempotency keys.
//!
//! Outbox rows whose op is not in `ops` (e.g. the delete of the common
//! insert-then-delete pattern) are dropped unless `forward_raw: true`.
//! Events of other tables pass through untouched. A row without a usable
//! topic (null topic column and no `topic`), or with headers that are not
//! an object, fails the batch with an error naming the event.
//!
//! **PostgreSQL logical messages** (`pg_logical_emit_message` with a
//! prefix) are not supported yet: the PostgreSQL source decodes and skips
//! them without emitting events. Use an outbox table meanwhile.
//!
//! Hand-written: the routing is a few column look-ups; this module never
//! logs payloads.

use std::sync::Arc;

use async_trait::async_trait;
use deltaforge_core::{BuildError, ComponentConfig, ConfigProblem, Event, Op, Processor, ProcessorError, Row};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::value::{error, scalar_text};
use deltaforge_common::TablePattern;

fn default_payload() -> String {
    "payload".into()
}
fn default_ops() -> Vec<String> {
    vec!["c".into()]
}
fn default_key_field() -> Option<String> {
    Some("_key".into())
}
fn default_headers_field() -> Option<String> {
    Some("_headers".into())
}

/// Configuration of an `outbox` processor (see the module docs).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutboxConfig {
    /// Name in metrics and errors; default `outbox`.
    #[serde(default)]
    pub name: Option<String>,
    /// Outbox tables.
    pub tables: Vec<TablePattern>,
    /// Column holding the topic.
    #[serde(default)]
    pub topic_column: Option<String>,
    /// Fixed topic, or the fallback when the topic column is null.
    #[serde(default)]
    pub topic: Option<String>,
    /// Prefix of topics taken from `topic_column`.
    #[serde(default)]
    pub topic_prefix: String,
    /// Column holding the message key.
    #[serde(default)]
    pub key_column: Option<String>,
    /// Column holding the payload; default `payload`.
    #[serde(default = "default_payload")]
    pub payload_column: String,
    /// Column holding a JSON object of headers.
    #[serde(default)]
    pub headers_column: Option<String>,
    /// Columns copied into the headers by name.
    #[serde(default)]
    pub header_columns: Vec<String>,
    /// After-column that carries the key; default `_key`, null to omit.
    #[serde(default = "default_key_field")]
    pub key_field: Option<String>,
    /// After-column that carries the headers; default `_headers`, null to omit.
    #[serde(default = "default_headers_field")]
    pub headers_field: Option<String>,
    /// Row ops that become messages; default `[c]`.
    #[serde(default = "default_ops")]
    pub ops: Vec<String>,
    /// Also forward the raw outbox row event.
    #[serde(default)]
    pub forward_raw: bool,
}

impl ComponentConfig for OutboxConfig {
    /// Checks what serde cannot (see [`OutboxConfig::parsed_ops`]).
    fn check(&self) -> Result<(), ConfigProblem> {
        self.parsed_ops().map(|_| ())
    }
}

impl OutboxConfig {
    /// Checks what serde cannot; returns the parsed ops.
    pub fn parsed_ops(&self) -> Result<Vec<Op>, ConfigProblem> {
        if self.tables.is_empty() {
            return Err(ConfigProblem::new("tables", "name the outbox table(s), e.g. `tables: [shop.outbox]`"));
        }
        if self.topic_column.is_none() && self.topic.is_none() {
            return Err(ConfigProblem::new("topic_column", "set `topic_column` (per-row topic) or `topic` (fixed)"));
        }
        if self.topic.as_deref() == Some("") {
            return Err(ConfigProblem::new("topic", "must not be empty"));
        }
        if self.ops.is_empty() {
            return Err(ConfigProblem::new("ops", "give at least one op, e.g. [c]"));
        }
        self.ops
            .iter()
            .enumerate()
            .map(|(i, s)| {
                Op::from_code(s).ok_or_else(|| {
                    ConfigProblem::new(format!("ops[{i}]"), format!("unknown op {s:?}; use c, u, d or r"))
                })
            })
            .collect()
    }
}

/// The `outbox` processor.
#[derive(Debug)]
pub struct OutboxProcessor {
    name: String,
    cfg: OutboxConfig,
    ops: Vec<Op>,
    key_columns: Option<deltaforge_core::Columns>,
}

impl OutboxProcessor {
    /// Builds the processor; errors as [`OutboxConfig::parsed_ops`].
    pub fn new(cfg: OutboxConfig) -> Result<Self, BuildError> {
        let ops = cfg.parsed_ops()?;
        let key_columns = match (&cfg.key_column, &cfg.key_field) {
            (Some(_), Some(f)) => Some(vec![Arc::<str>::from(f.as_str())].into()),
            _ => None,
        };
        Ok(OutboxProcessor { name: cfg.name.clone().unwrap_or_else(|| "outbox".into()), cfg, ops, key_columns })
    }

    fn message(&self, e: &Event) -> Result<Event, String> {
        let row = e.after.as_ref().or(e.before.as_ref()).ok_or("outbox row has no row image")?;
        let cfg = &self.cfg;
        let topic = match cfg.topic_column.as_deref().and_then(|c| row.get(c)).filter(|v| !v.is_null()) {
            Some(v) => {
                let t = scalar_text(v).ok_or_else(|| {
                    format!("topic column {:?} must hold a string or number", cfg.topic_column.as_deref().unwrap_or(""))
                })?;
                format!("{}{t}", cfg.topic_prefix)
            }
            None => cfg.topic.clone().ok_or_else(|| {
                format!(
                    "topic column {:?} is missing or null and no fallback `topic` is configured",
                    cfg.topic_column.as_deref().unwrap_or("")
                )
            })?,
        };
        if topic.is_empty() {
            return Err("the routed topic is empty".into());
        }
        let payload = row.get(&cfg.payload_column).cloned().unwrap_or(Value::Null);
        let payload = match payload {
            Value::String(s) => match serde_json::from_str::<Value>(&s) {
                Ok(Value::Object(m)) => Value::Object(m),
                _ => Value::String(s),
            },
            v => v,
        };
        let mut pairs: Vec<(String, Value)> = match payload {
            Value::Object(m) => m.into_iter().collect(),
            other => vec![("payload".into(), other)],
        };
        if let (Some(kc), Some(kf)) = (&cfg.key_column, &cfg.key_field) {
            let key = row.get(kc).cloned().unwrap_or(Value::Null);
            pairs.retain(|(k, _)| k != kf);
            pairs.push((kf.clone(), key));
        }
        if let Some(hf) = &cfg.headers_field {
            if cfg.headers_column.is_some() || !cfg.header_columns.is_empty() {
                let mut headers = Map::new();
                if let Some(hc) = &cfg.headers_column {
                    match row.get(hc).cloned().unwrap_or(Value::Null) {
                        Value::Null => {}
                        Value::Object(m) => headers.extend(m),
                        Value::String(s) => match serde_json::from_str::<Value>(&s) {
                            Ok(Value::Object(m)) => headers.extend(m),
                            _ => return Err(format!("headers column {hc:?} must hold a JSON object")),
                        },
                        _ => return Err(format!("headers column {hc:?} must hold a JSON object")),
                    }
                }
                for c in &cfg.header_columns {
                    headers.insert(c.clone(), row.get(c).cloned().unwrap_or(Value::Null));
                }
                pairs.retain(|(k, _)| k != hf);
                pairs.push((hf.clone(), Value::Object(headers)));
            }
        }
        let mut msg = e.clone();
        msg.op = Op::Create;
        msg.before = None;
        msg.after = Some(Row::from_pairs(pairs));
        msg.source.table = topic.into();
        msg.schema_version = None;
        msg.key_columns = self.key_columns.clone();
        if cfg.forward_raw {
            msg.index |= 1 << 31;
        }
        Ok(msg)
    }
}

#[async_trait]
impl Processor for OutboxProcessor {
    fn name(&self) -> &str {
        &self.name
    }

    async fn process(&mut self, events: Vec<Event>) -> Result<Vec<Event>, ProcessorError> {
        let mut out = Vec::with_capacity(events.len());
        for (i, e) in events.into_iter().enumerate() {
            if !TablePattern::any(&self.cfg.tables, &e.source.db, &e.source.table) {
                out.push(e);
                continue;
            }
            if !self.ops.contains(&e.op) {
                if self.cfg.forward_raw {
                    out.push(e);
                }
                continue;
            }
            let msg = self.message(&e).map_err(|m| error(&self.name, Some((i, &e)), m))?;
            if self.cfg.forward_raw {
                out.push(e);
            }
            out.push(msg);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{after, event, insert, sequenced};
    use serde_json::json;

    fn processor(cfg: Value) -> OutboxProcessor {
        OutboxProcessor::new(serde_json::from_value(cfg).unwrap()).unwrap()
    }

    fn base() -> Value {
        json!({"tables": ["shop.outbox"], "topic_column": "aggregate_type", "topic_prefix": "outbox.",
               "key_column": "aggregate_id", "headers_column": "headers", "header_columns": ["type"]})
    }

    fn outbox_row(id: i64, payload: Value) -> Value {
        json!({"id": id, "aggregate_type": "order", "aggregate_id": format!("o-{id}"), "type": "OrderCreated",
               "payload": payload, "headers": {"trace": "t1"}})
    }

    #[tokio::test]
    async fn rows_become_routed_messages_and_others_pass() {
        let mut p = processor(base());
        let events = sequenced(vec![
            insert("shop.orders", json!({"id": 1})),
            insert("shop.outbox", outbox_row(1, json!({"total": 10}))),
            event(Op::Delete, "shop.outbox", Some(outbox_row(1, Value::Null)), None),
        ]);
        let key = events[1].idempotency_key();
        let out = p.process(events).await.unwrap();
        assert_eq!(out.len(), 2, "business row + message; the outbox delete is dropped");
        assert_eq!(&*out[0].source.table, "orders");
        let m = &out[1];
        assert_eq!(&*m.source.table, "outbox.order");
        assert_eq!(&*m.source.db, "shop");
        assert_eq!(m.op, Op::Create);
        assert!(m.before.is_none() && m.schema_version.is_none());
        assert_eq!(after(m), json!({"total": 10, "_key": "o-1", "_headers": {"trace": "t1", "type": "OrderCreated"}}));
        assert_eq!(m.idempotency_key(), key, "the message keeps the row's position");
        assert_eq!(m.key_columns.as_deref().map(|c| c.len()), Some(1));
        assert_eq!(&*m.key_columns.as_ref().unwrap()[0], "_key");
    }

    #[tokio::test]
    async fn string_and_scalar_payloads() {
        let mut p = processor(json!({"tables": ["*.outbox"], "topic": "fixed", "key_field": null}));
        let out = p
            .process(vec![
                insert("db.outbox", json!({"payload": "{\"a\": 1}"})),
                insert("db.outbox", json!({"payload": "not json"})),
                insert("db.outbox", json!({"payload": [1, 2]})),
                insert("db.outbox", json!({"other": 1})),
            ])
            .await
            .unwrap();
        assert_eq!(after(&out[0]), json!({"a": 1}), "MariaDB stores JSON as text");
        assert_eq!(after(&out[1]), json!({"payload": "not json"}));
        assert_eq!(after(&out[2]), json!({"payload": [1, 2]}));
        assert_eq!(after(&out[3]), json!({"payload": null}));
        assert!(out.iter().all(|e| &*e.source.table == "fixed" && e.key_columns.is_none()));
    }

    #[tokio::test]
    async fn forward_raw_keeps_both_with_distinct_keys() {
        let mut cfg = base();
        cfg["forward_raw"] = json!(true);
        let mut p = processor(cfg);
        let events = vec![
            insert("shop.outbox", outbox_row(1, json!({"x": 1}))),
            event(Op::Delete, "shop.outbox", Some(outbox_row(1, Value::Null)), None),
        ];
        let out = p.process(events).await.unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(&*out[0].source.table, "outbox");
        assert_eq!(&*out[1].source.table, "outbox.order");
        assert_eq!(out[2].op, Op::Delete);
        assert_ne!(out[0].idempotency_key(), out[1].idempotency_key());
        assert_eq!(out[1].index, out[0].index | (1 << 31));
    }

    #[tokio::test]
    async fn null_topic_uses_fallback_or_fails_naming_the_event() {
        let mut row = outbox_row(1, json!({}));
        row["aggregate_type"] = Value::Null;
        let mut p = processor(base());
        let err =
            p.process(vec![insert("shop.orders", json!({})), insert("shop.outbox", row.clone())]).await.unwrap_err();
        assert_eq!(err.processor, "outbox");
        assert!(err.message.contains("event #1") && err.message.contains("aggregate_type"), "{}", err.message);
        let mut cfg = base();
        cfg["topic"] = json!("dead.letters");
        let out = processor(cfg).process(vec![insert("shop.outbox", row)]).await.unwrap();
        assert_eq!(&*out[0].source.table, "dead.letters");
        let mut bad = outbox_row(1, json!({}));
        bad["headers"] = json!([1]);
        let err = processor(base()).process(vec![insert("shop.outbox", bad)]).await.unwrap_err();
        assert!(err.message.contains("headers"), "{}", err.message);
    }

    #[test]
    fn config_checks() {
        let c = |v: Value| serde_json::from_value::<OutboxConfig>(v).unwrap().check().unwrap_err().field;
        assert_eq!(c(json!({"tables": [], "topic": "x"})), "tables");
        assert_eq!(c(json!({"tables": ["a.b"]})), "topic_column");
        assert_eq!(c(json!({"tables": ["a.b"], "topic": "x", "ops": ["x"]})), "ops[0]");
        assert!(serde_json::from_value::<OutboxConfig>(json!({"tables": ["a.b"], "topic": "x", "bogus": 1})).is_err());
    }
}
