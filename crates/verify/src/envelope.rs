//! Reading one delivered event back from its JSON envelope: the native
//! envelope (what the `file` sink writes) and CloudEvents (whose `data` is
//! the native envelope).
//!
//! This module owns decoding only; it must never fail a verification on a
//! line it cannot read (the caller counts those).

use deltaforge_core::Position;
use serde_json::{Map, Value};

/// What the comparison needs of one delivered event.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivered {
    /// `c`, `u`, `d`, `r` or `t`.
    pub op: String,
    /// `db.table`.
    pub table: String,
    /// The before image, when present.
    pub before: Option<Map<String, Value>>,
    /// The after image, when present.
    pub after: Option<Map<String, Value>>,
    /// The idempotency key.
    pub id: String,
    /// The transaction's position (from the idempotency key), when it can
    /// be read.
    pub tx_position: Option<Position>,
}

/// Decodes a native or CloudEvents envelope; `None` when it is neither.
pub fn decode(v: &Value) -> Option<Delivered> {
    let native = match v.get("specversion") {
        Some(_) => v.get("data")?,
        None => v,
    };
    let obj = |k: &str| native.get(k).and_then(Value::as_object).cloned();
    let source = native.get("source")?;
    let db = source.get("db")?.as_str()?;
    let table = source.get("table")?.as_str()?;
    let id = native.get("id")?.as_str()?.to_string();
    let tx_position = tx_position(&id, source);
    Some(Delivered {
        op: native.get("op")?.as_str()?.to_string(),
        table: format!("{db}.{table}"),
        before: obj("before"),
        after: obj("after"),
        id,
        tx_position,
    })
}

/// The transaction position of an idempotency key
/// `{source_id}:{transaction position}:{index}`.
fn tx_position(id: &str, source: &Value) -> Option<Position> {
    let source_id = source.get("source_id")?.as_str()?;
    let rest = id.strip_prefix(source_id)?.strip_prefix(':')?;
    let (tx, _index) = rest.rsplit_once(':')?;
    let event_position = Position::from_json(source.get("position")?).ok()?;
    event_position.parse_key(tx).ok()
}

/// PostgreSQL's marker for an unchanged TOAST value: the previous value
/// stands.
pub fn is_unchanged_toast(v: &Value) -> bool {
    v.get("__deltaforge_unchanged_toast") == Some(&Value::Bool(true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn native_and_cloudevents_envelopes_decode_alike() {
        let native = json!({"id": "src:7:0", "op": "u", "before": null, "after": {"id": 1, "v": "x"},
            "source": {"connector": "datagen", "source_id": "src", "db": "d", "table": "t", "position": {"seq": 7}}});
        let ce = json!({"specversion": "1.0", "id": "src:7:0", "data": native.clone()});
        let a = decode(&native).expect("native");
        assert_eq!(a.table, "d.t");
        assert_eq!(a.op, "u");
        assert_eq!(a.after.as_ref().and_then(|r| r.get("v")), Some(&json!("x")));
        assert_eq!(decode(&ce), Some(a));
        assert_eq!(decode(&json!({"op": "c"})), None);
    }
}
