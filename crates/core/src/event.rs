//! The change event every component exchanges, and its native JSON envelope.
//!
//! An [`Event`] is one row change (or a truncate) with its before and after
//! images, where it came from, the transaction it belongs to and the schema
//! version it was decoded with. Its idempotency key is derived from the
//! source id, the transaction's position and the event's index in that
//! transaction, so it is unique per event and identical when the event is
//! replayed after a crash; consumers deduplicate on it.
//!
//! Rows keep their column names in a shared, reference-counted list so that
//! a source decoding a million rows of one table allocates the names once.

use std::sync::Arc;

use serde::ser::{SerializeMap, SerializeStruct};
use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::position::Position;

/// The kind of change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// Insert (`c`).
    Create,
    /// Update (`u`).
    Update,
    /// Delete (`d`).
    Delete,
    /// Snapshot read (`r`).
    Read,
    /// Truncate (`t`).
    Truncate,
}

impl Op {
    /// The one-letter code used in envelopes (`c`, `u`, `d`, `r`, `t`).
    pub fn code(self) -> &'static str {
        match self {
            Op::Create => "c",
            Op::Update => "u",
            Op::Delete => "d",
            Op::Read => "r",
            Op::Truncate => "t",
        }
    }

    /// Parses a one-letter code.
    pub fn from_code(code: &str) -> Option<Op> {
        Some(match code {
            "c" => Op::Create,
            "u" => Op::Update,
            "d" => Op::Delete,
            "r" => Op::Read,
            "t" => Op::Truncate,
            _ => return None,
        })
    }
}

impl Serialize for Op {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

/// Column names shared by every row of one table schema.
pub type Columns = Arc<[Arc<str>]>;

/// A row image: column names (shared) and their values, in column order.
///
/// ```
/// use deltaforge_core::Row;
/// use serde_json::json;
/// let row = Row::from_pairs([("id", json!(1)), ("name", json!("ada"))]);
/// assert_eq!(row.get("name"), Some(&json!("ada")));
/// assert_eq!(serde_json::to_value(&row).unwrap(), json!({"id": 1, "name": "ada"}));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    columns: Columns,
    values: Vec<Value>,
}

impl Row {
    /// Builds a row from shared column names and values of the same length.
    ///
    /// # Panics
    /// If the lengths differ (a source bug, never user input).
    pub fn new(columns: Columns, values: Vec<Value>) -> Self {
        assert_eq!(columns.len(), values.len(), "row values must match its columns");
        Row { columns, values }
    }

    /// Builds a row from `(name, value)` pairs (allocates the names).
    pub fn from_pairs<K: Into<Arc<str>>>(pairs: impl IntoIterator<Item = (K, Value)>) -> Self {
        let (names, values): (Vec<Arc<str>>, Vec<Value>) = pairs.into_iter().map(|(k, v)| (k.into(), v)).unzip();
        Row { columns: names.into(), values }
    }

    /// The column names.
    pub fn columns(&self) -> &Columns {
        &self.columns
    }

    /// The values, in column order.
    pub fn values(&self) -> &[Value] {
        &self.values
    }

    /// Mutable access to the values (names stay fixed).
    pub fn values_mut(&mut self) -> &mut [Value] {
        &mut self.values
    }

    /// Keeps only the values at `keep` (ascending indices into the current
    /// columns), in place, under the column list `columns` that names them.
    /// Processors that drop the same columns from many rows build `columns`
    /// once and share it.
    ///
    /// # Panics
    /// If `keep` and `columns` differ in length (a caller bug, like
    /// [`Row::new`]'s check).
    pub fn retain_columns(&mut self, columns: Columns, keep: &[usize]) {
        assert_eq!(columns.len(), keep.len(), "retained values must match their columns");
        let mut next = keep.iter().peekable();
        let mut i = 0usize;
        self.values.retain(|_| {
            let kept = next.peek().is_some_and(|k| **k == i);
            if kept {
                next.next();
            }
            i += 1;
            kept
        });
        self.columns = columns;
    }

    /// Value of a column, if present.
    pub fn get(&self, column: &str) -> Option<&Value> {
        self.columns.iter().position(|c| &**c == column).map(|i| &self.values[i])
    }

    /// Sets a column, appending it when absent.
    pub fn set(&mut self, column: &str, value: Value) {
        match self.columns.iter().position(|c| &**c == column) {
            Some(i) => self.values[i] = value,
            None => {
                let mut names: Vec<Arc<str>> = self.columns.to_vec();
                names.push(column.into());
                self.columns = names.into();
                self.values.push(value);
            }
        }
    }

    /// Removes a column, returning its value.
    pub fn remove(&mut self, column: &str) -> Option<Value> {
        let i = self.columns.iter().position(|c| &**c == column)?;
        let mut names: Vec<Arc<str>> = self.columns.to_vec();
        names.remove(i);
        self.columns = names.into();
        Some(self.values.remove(i))
    }

    /// Iterates `(name, value)` pairs in column order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.columns.iter().map(|c| &**c).zip(self.values.iter())
    }

    /// Number of columns.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True when the row has no columns.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The row as a JSON object.
    pub fn to_json(&self) -> Value {
        Value::Object(self.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
    }
}

impl Serialize for Row {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.values.len()))?;
        for (k, v) in self.iter() {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// Where an event came from.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceMeta {
    /// Connector kind: `postgres`, `mysql`, `datagen`.
    pub connector: &'static str,
    /// The source's configured `id` (the checkpoint key).
    pub source_id: Arc<str>,
    /// Pipeline name.
    pub pipeline: Arc<str>,
    /// Tenant of the pipeline.
    pub tenant: Arc<str>,
    /// Database (MySQL) or schema (PostgreSQL).
    pub db: Arc<str>,
    /// Table name.
    pub table: Arc<str>,
    /// Position of this change in the source log.
    pub position: Position,
    /// Server timestamp of the change (commit time), milliseconds since epoch.
    pub ts_ms: i64,
}

/// One change event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The kind of change.
    pub op: Op,
    /// Row before the change (updates and deletes, as the source logs it).
    pub before: Option<Row>,
    /// Row after the change (inserts, updates, snapshot reads).
    pub after: Option<Row>,
    /// Origin of the change.
    pub source: SourceMeta,
    /// Source transaction id, when the source has transactions.
    pub tx_id: Option<Arc<str>>,
    /// Position of the transaction (its commit for PostgreSQL/MySQL, the
    /// sequence number for datagen) that, with `index`, identifies the event.
    pub tx_position: Position,
    /// Index of the event within its transaction, from 0.
    pub index: u32,
    /// Version of the table schema this event was decoded with.
    pub schema_version: Option<u64>,
    /// Primary-key (or replica-identity) column names of the table, when
    /// known; sinks use them as the default message key.
    pub key_columns: Option<Columns>,
}

impl Event {
    /// The idempotency key: unique per event, identical on replay.
    ///
    /// Form: `{source_id}:{transaction position}:{index}`, e.g.
    /// `pg-orders:0/1A2B3C4D:3`.
    pub fn idempotency_key(&self) -> String {
        let mut key = String::with_capacity(48);
        key.push_str(&self.source.source_id);
        key.push(':');
        self.tx_position.write_key(&mut key);
        key.push(':');
        key.push_str(itoa::Buffer::new().format(self.index));
        key
    }

    /// Rough encoded size in bytes, used for `max_bytes` batching. Cheap:
    /// it counts value lengths without serialising.
    pub fn approx_size(&self) -> usize {
        fn value_size(v: &Value) -> usize {
            match v {
                Value::Null | Value::Bool(_) => 5,
                Value::Number(_) => 12,
                Value::String(s) => s.len() + 2,
                Value::Array(a) => a.iter().map(value_size).sum::<usize>() + 2,
                Value::Object(o) => o.iter().map(|(k, v)| k.len() + 3 + value_size(v)).sum::<usize>() + 2,
            }
        }
        fn row_size(r: &Option<Row>) -> usize {
            r.as_ref().map(|r| r.iter().map(|(k, v)| k.len() + 3 + value_size(v)).sum::<usize>()).unwrap_or(4)
        }
        160 + row_size(&self.before) + row_size(&self.after)
    }

    /// Serialisable view of the native envelope.
    pub fn native(&self) -> NativeEnvelope<'_> {
        NativeEnvelope(self)
    }

    /// Rebuilds an event from its native envelope (as stored in the
    /// dead-letter queue), so that it can be delivered again with the same
    /// idempotency key.
    pub fn from_native(v: &Value) -> Result<Event, String> {
        let field = |name: &str| v.get(name).ok_or_else(|| format!("native envelope lacks `{name}`"));
        let text = |v: &Value, name: &str| -> Result<Arc<str>, String> {
            v.get(name).and_then(Value::as_str).map(Arc::from).ok_or_else(|| format!("envelope source lacks `{name}`"))
        };
        let row = |v: &Value| -> Result<Option<Row>, String> {
            match v {
                Value::Null => Ok(None),
                Value::Object(m) => Ok(Some(Row::from_pairs(m.iter().map(|(k, v)| (k.as_str(), v.clone()))))),
                other => Err(format!("a row image must be an object or null, found {other}")),
            }
        };
        let op = field("op")?.as_str().and_then(Op::from_code).ok_or("envelope `op` is not one of c, u, d, r, t")?;
        let src = field("source")?;
        let position = Position::from_json(src.get("position").unwrap_or(&Value::Null))
            .map_err(|e| format!("envelope source.position: {e}"))?;
        let id = field("id")?.as_str().ok_or("envelope `id` is not a string")?;
        // The key is `{source_id}:{transaction position}:{index}`.
        let mut parts = id.rsplitn(3, ':');
        let index: u32 = parts.next().and_then(|i| i.parse().ok()).ok_or("envelope `id` has no event index")?;
        let tx_text = parts.next().ok_or("envelope `id` has no transaction position")?;
        let tx_position = position.parse_key(tx_text).map_err(|e| format!("envelope `id`: {e}"))?;
        let connector = position.connector();
        Ok(Event {
            op,
            before: row(field("before")?)?,
            after: row(field("after")?)?,
            source: SourceMeta {
                connector,
                source_id: text(src, "source_id")?,
                pipeline: text(src, "pipeline")?,
                tenant: text(src, "tenant")?,
                db: text(src, "db")?,
                table: text(src, "table")?,
                position,
                ts_ms: src.get("ts_ms").and_then(Value::as_i64).unwrap_or(0),
            },
            tx_id: v.get("tx_id").and_then(Value::as_str).map(Arc::from),
            tx_position,
            index,
            schema_version: v.get("schema_version").and_then(Value::as_u64),
            key_columns: None,
        })
    }
}

/// The native JSON envelope of an event (one JSON object):
///
/// ```json
/// {"id": "dg:7:0", "op": "c", "before": null, "after": {"id": 7, ...},
///  "source": {"connector": "datagen", "source_id": "dg", "pipeline": "demo",
///             "tenant": "acme", "db": "demo", "table": "orders",
///             "position": {"seq": 7}, "ts_ms": 1700000000000},
///  "tx_id": "7", "schema_version": 1}
/// ```
pub struct NativeEnvelope<'a>(&'a Event);

struct SourceView<'a>(&'a SourceMeta);

impl Serialize for SourceView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let m = self.0;
        let mut st = s.serialize_struct("source", 8)?;
        st.serialize_field("connector", m.connector)?;
        st.serialize_field("source_id", &*m.source_id)?;
        st.serialize_field("pipeline", &*m.pipeline)?;
        st.serialize_field("tenant", &*m.tenant)?;
        st.serialize_field("db", &*m.db)?;
        st.serialize_field("table", &*m.table)?;
        st.serialize_field("position", &m.position)?;
        st.serialize_field("ts_ms", &m.ts_ms)?;
        st.end()
    }
}

impl Serialize for NativeEnvelope<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let e = self.0;
        let mut st = s.serialize_struct("event", 7)?;
        st.serialize_field("id", &e.idempotency_key())?;
        st.serialize_field("op", &e.op)?;
        st.serialize_field("before", &e.before)?;
        st.serialize_field("after", &e.after)?;
        st.serialize_field("source", &SourceView(&e.source))?;
        st.serialize_field("tx_id", &e.tx_id.as_deref())?;
        st.serialize_field("schema_version", &e.schema_version)?;
        st.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{EventBuilder, Seq};
    use serde_json::json;

    #[test]
    fn retain_columns_keeps_the_chosen_values_in_place() {
        let mut r = Row::from_pairs([("a", json!(1)), ("b", json!(2)), ("c", json!(3)), ("d", json!(4))]);
        let cols: Columns = vec![Arc::<str>::from("b"), Arc::from("d")].into();
        r.retain_columns(cols.clone(), &[1, 3]);
        assert!(Arc::ptr_eq(r.columns(), &cols));
        assert_eq!(r.to_json(), json!({"b": 2, "d": 4}));
        r.retain_columns(Vec::<Arc<str>>::new().into(), &[]);
        assert!(r.is_empty());
    }

    pub(crate) fn sample(seq: u64) -> Event {
        EventBuilder::new(seq)
            .pipeline("demo", "acme")
            .table("demo.orders")
            .tx_id(&seq.to_string())
            .ts_ms(1_700_000_000_000)
            .schema_version(1)
            .build()
    }

    #[test]
    fn native_envelope_has_every_field() {
        let v = serde_json::to_value(sample(7).native()).unwrap();
        assert_eq!(v["id"], "dg:7:0");
        assert_eq!(v["op"], "c");
        assert_eq!(v["before"], Value::Null);
        assert_eq!(v["after"], json!({"id": 7}));
        assert_eq!(v["source"]["position"], json!({"test_seq": 7}));
        assert_eq!(v["source"]["table"], "orders");
        assert_eq!(v["tx_id"], "7");
        assert_eq!(v["schema_version"], 1);
    }

    #[test]
    fn native_round_trip() {
        let e = sample(7);
        let back = Event::from_native(&serde_json::to_value(e.native()).unwrap()).unwrap();
        assert_eq!(back.idempotency_key(), e.idempotency_key());
        assert_eq!(serde_json::to_value(back.native()).unwrap(), serde_json::to_value(e.native()).unwrap());
        let mut other_tx = sample(1);
        other_tx.tx_position = Seq::at(9);
        let back = Event::from_native(&serde_json::to_value(other_tx.native()).unwrap()).unwrap();
        assert_eq!(back.tx_position, other_tx.tx_position);
        assert_eq!(back.source.position, other_tx.source.position);
        assert_eq!(back.source.connector, "test");
        assert!(Event::from_native(&json!({"op": "x"})).is_err());
    }

    #[test]
    fn idempotency_key_is_stable_and_distinct() {
        let a = sample(7);
        let mut b = sample(7);
        b.index = 1;
        assert_eq!(a.idempotency_key(), sample(7).idempotency_key());
        assert_ne!(a.idempotency_key(), b.idempotency_key());
    }

    #[test]
    fn row_set_and_remove() {
        let mut r = Row::from_pairs([("a", json!(1))]);
        r.set("b", json!(2));
        r.set("a", json!(3));
        assert_eq!(r.to_json(), json!({"a": 3, "b": 2}));
        assert_eq!(r.remove("a"), Some(json!(3)));
        assert_eq!(r.to_json(), json!({"b": 2}));
    }
}
