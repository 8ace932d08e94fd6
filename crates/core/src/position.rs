//! Source positions: where in a source's log an event or a checkpoint sits.
//!
//! A [`Position`] is opaque to the core: each source defines its own type
//! (a [`SourcePosition`]) with its JSON shape, its order and the text it
//! contributes to idempotency keys, and registers it with
//! [`register_position!`]. The core and the sinks only order, compare,
//! print and serialise positions; they never look inside one. Adding a
//! source therefore changes neither the core nor the encoding crate.
//!
//! The JSON shapes are a public contract (operators read them with
//! `sqlite3`, the REST API returns them) and are owned by each source, e.g.
//! MySQL/MariaDB `{"file": "binlog.000042", "pos": 12345, "gtid_set": "..."}`
//! and PostgreSQL `{"lsn": "0/1A2B3C4D", "tx_id": 1234}`.
//!
//! Why registration: positions are read back from storage (checkpoints,
//! schema history), from the dead-letter queue and from sinks' own progress
//! records without a source at hand. Every registered format tries the JSON
//! in turn; formats must therefore reject each other's shapes (use
//! `#[serde(deny_unknown_fields)]` and required fields).
//!
//! This module must never name a concrete source.

use std::any::Any;
use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A source's own position type.
///
/// Implement it for a small, cheap-to-clone type of the source's crate and
/// register it with [`register_position!`].
///
/// ```
/// use std::cmp::Ordering;
/// use deltaforge_core::position::{Position, SourcePosition};
///
/// #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
/// #[serde(deny_unknown_fields)]
/// struct Offset { offset: u64 }
///
/// impl std::fmt::Display for Offset {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         write!(f, "offset {}", self.offset)
///     }
/// }
///
/// impl SourcePosition for Offset {
///     fn order(&self, other: &Self) -> Ordering { self.offset.cmp(&other.offset) }
///     fn write_key(&self, key: &mut String) { key.push_str(&self.offset.to_string()) }
///     fn from_key(text: &str, _event: &Self) -> Result<Self, String> {
///         text.parse().map(|offset| Offset { offset }).map_err(|_| format!("bad offset {text:?}"))
///     }
/// }
/// deltaforge_core::register_position!(Offset, "offset-doc-example");
///
/// let a = Position::new(Offset { offset: 1 });
/// let b = Position::new(Offset { offset: 2 });
/// assert!(a.is_at_or_before(&b));
/// assert_eq!(b.to_json(), serde_json::json!({"offset": 2}));
/// assert_eq!(Position::from_json(&b.to_json()).unwrap(), b);
/// ```
pub trait SourcePosition:
    fmt::Debug + fmt::Display + Clone + PartialEq + Send + Sync + Serialize + DeserializeOwned + 'static
{
    /// Orders two positions of this source.
    fn order(&self, other: &Self) -> Ordering;

    /// Appends the transaction part of an idempotency key
    /// (`{source_id}:{this}:{index}`); must not contain a `:` that would be
    /// read as the index separator (the key is split from the right).
    fn write_key(&self, key: &mut String);

    /// Reads back what [`SourcePosition::write_key`] wrote; `event` is the
    /// event's own position (for parts the key leaves out).
    fn from_key(text: &str, event: &Self) -> Result<Self, String>;

    /// Adds this source's fields to a Debezium `source` block that already
    /// holds the common ones (`version`, `connector`, `name`, `ts_ms`,
    /// `snapshot`, `db`, `sequence`, `table`); `index` is the event's index
    /// in its transaction. The default adds nothing.
    fn debezium_fields(&self, index: u32, block: &mut Map<String, Value>) {
        let _ = (index, block);
    }
}

/// The object-safe face of a [`SourcePosition`]; implemented for every one.
trait Erased: fmt::Debug + fmt::Display + Send + Sync {
    fn as_any(&self) -> &dyn Any;
    fn order_erased(&self, other: &dyn Erased) -> Option<Ordering>;
    fn eq_erased(&self, other: &dyn Erased) -> bool;
    fn to_json(&self) -> Value;
    fn as_serialize(&self) -> &dyn erased_serde::Serialize;
    fn write_key(&self, key: &mut String);
    fn parse_key(&self, text: &str) -> Result<Position, String>;
    fn debezium_fields(&self, index: u32, block: &mut Map<String, Value>);
}

impl<P: SourcePosition> Erased for P {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn order_erased(&self, other: &dyn Erased) -> Option<Ordering> {
        other.as_any().downcast_ref::<P>().map(|o| self.order(o))
    }
    fn eq_erased(&self, other: &dyn Erased) -> bool {
        other.as_any().downcast_ref::<P>() == Some(self)
    }
    fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or_else(|e| Value::String(format!("unserialisable position: {e}")))
    }
    fn as_serialize(&self) -> &dyn erased_serde::Serialize {
        self
    }
    fn write_key(&self, key: &mut String) {
        SourcePosition::write_key(self, key)
    }
    fn parse_key(&self, text: &str) -> Result<Position, String> {
        P::from_key(text, self).map(Position::new)
    }
    fn debezium_fields(&self, index: u32, block: &mut Map<String, Value>) {
        SourcePosition::debezium_fields(self, index, block)
    }
}

/// Where an event or checkpoint sits in its source's log: an opaque,
/// ordered, serialisable value owned by the source (see the module docs).
///
/// Cloning is a reference-count increment.
#[derive(Clone)]
pub struct Position(Arc<dyn Erased>);

impl Position {
    /// Wraps a source's own position.
    pub fn new<P: SourcePosition>(position: P) -> Self {
        Position(Arc::new(position))
    }

    /// The source's own position, when this is one of type `P`.
    pub fn get<P: SourcePosition>(&self) -> Option<&P> {
        self.0.as_any().downcast_ref::<P>()
    }

    /// Orders two positions of the same source; `None` when they are of
    /// different kinds (never the case within one pipeline).
    pub fn compare(&self, other: &Position) -> Option<Ordering> {
        self.0.order_erased(&*other.0)
    }

    /// True when `self` is at or before `other` (same kind only).
    pub fn is_at_or_before(&self, other: &Position) -> bool {
        matches!(self.compare(other), Some(Ordering::Less | Ordering::Equal))
    }

    /// The position as JSON (the source's contract shape).
    pub fn to_json(&self) -> Value {
        self.0.to_json()
    }

    /// Reads a position from JSON with the first registered format that
    /// accepts it.
    pub fn from_json(json: &Value) -> Result<Position, String> {
        formats().find_map(|f| (f.parse)(json)).ok_or_else(|| {
            let kinds: Vec<&str> = formats().map(|f| f.kind).collect();
            format!("unrecognised source position {json}: it matches none of the known shapes ({})", kinds.join(", "))
        })
    }

    /// The connector name registered with this position's type (e.g.
    /// `postgres`), or `unknown`.
    pub fn connector(&self) -> &'static str {
        let id = self.0.as_any().type_id();
        formats().find(|f| (f.type_id)() == id).map_or("unknown", |f| f.kind)
    }

    /// Appends the transaction part of an idempotency key.
    pub fn write_key(&self, key: &mut String) {
        self.0.write_key(key)
    }

    /// Reads a key part written by [`Position::write_key`] for a position of
    /// the same kind as `self`.
    pub fn parse_key(&self, text: &str) -> Result<Position, String> {
        self.0.parse_key(text)
    }

    /// Adds the source's own fields to a Debezium `source` block.
    pub fn debezium_fields(&self, index: u32, block: &mut Map<String, Value>) {
        self.0.debezium_fields(index, block)
    }
}

impl PartialEq for Position {
    fn eq(&self, other: &Self) -> bool {
        self.0.eq_erased(&*other.0)
    }
}

impl Eq for Position {}

impl fmt::Debug for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

impl Serialize for Position {
    /// Serialises the source's own position directly (no JSON value in
    /// between: every envelope of every event carries one).
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        erased_serde::serialize(self.0.as_serialize(), s)
    }
}

impl<'de> Deserialize<'de> for Position {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let json = Value::deserialize(d)?;
        Position::from_json(&json).map_err(serde::de::Error::custom)
    }
}

/// A registered position type: its connector name and how to read it
/// from JSON. Created by [`register_position!`].
pub struct PositionFormat {
    /// The connector whose positions these are (`SourceMeta::connector`).
    pub kind: &'static str,
    parse: fn(&Value) -> Option<Position>,
    type_id: fn() -> std::any::TypeId,
}

impl PositionFormat {
    /// The format of `P`, named `kind`.
    pub const fn of<P: SourcePosition>(kind: &'static str) -> Self {
        PositionFormat { kind, parse: parse_as::<P>, type_id: std::any::TypeId::of::<P> }
    }
}

fn parse_as<P: SourcePosition>(json: &Value) -> Option<Position> {
    P::deserialize(json).ok().map(Position::new)
}

inventory::collect!(PositionFormat);

fn formats() -> impl Iterator<Item = &'static PositionFormat> {
    inventory::iter::<PositionFormat>.into_iter()
}

/// Registers a [`SourcePosition`] type under its connector name so that
/// [`Position::from_json`] (and so storage, the dead-letter queue and sink
/// progress records) can read it back.
#[macro_export]
macro_rules! register_position {
    ($ty:ty, $kind:expr) => {
        $crate::position::inventory::submit! {
            $crate::position::PositionFormat::of::<$ty>($kind)
        }
    };
}

#[doc(hidden)]
pub use inventory;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Seq;

    #[test]
    fn round_trips_through_json_and_orders_within_kind() {
        let a = Position::new(Seq(7));
        assert_eq!(a.to_json(), serde_json::json!({"test_seq": 7}));
        assert_eq!(Position::from_json(&a.to_json()).unwrap(), a);
        assert_eq!(a.connector(), "test");
        let b = Position::new(Seq(9));
        assert!(a.is_at_or_before(&b) && !b.is_at_or_before(&a));
        assert_eq!(a.get::<Seq>(), Some(&Seq(7)));
        let mut key = String::new();
        b.write_key(&mut key);
        assert_eq!(a.parse_key(&key).unwrap(), b);
    }

    #[test]
    fn unknown_shapes_are_named() {
        let err = Position::from_json(&serde_json::json!({"nope": 1})).unwrap_err();
        assert!(err.contains("nope") && err.contains("test"), "{err}");
    }
}
