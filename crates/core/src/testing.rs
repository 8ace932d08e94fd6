//! Test utilities (feature `test-util`): a counter position and an event
//! builder, so that unit tests of sinks and processors build events in one
//! way instead of copying the event literal.
//!
//! This module is for tests only; production code must never use it.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::{Columns, Event, Op, Row, SourceMeta};
use crate::position::{Position, SourcePosition};

/// A test position: a plain counter, JSON `{"test_seq": N}`, connector
/// `test`. Its shape differs from every real source's so that it can never
/// be mistaken for one when read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "SeqJson", into = "SeqJson")]
pub struct Seq(pub u64);

/// The JSON object form of [`Seq`] (a newtype would serialise as a bare number).
#[derive(Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeqJson {
    test_seq: u64,
}

impl From<SeqJson> for Seq {
    fn from(j: SeqJson) -> Self {
        Seq(j.test_seq)
    }
}

impl From<Seq> for SeqJson {
    fn from(s: Seq) -> Self {
        SeqJson { test_seq: s.0 }
    }
}

impl Seq {
    /// The position of counter value `n`.
    pub fn at(n: u64) -> Position {
        Position::new(Seq(n))
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "test seq {}", self.0)
    }
}

impl SourcePosition for Seq {
    fn order(&self, other: &Self) -> Ordering {
        self.0.cmp(&other.0)
    }
    fn write_key(&self, key: &mut String) {
        use std::fmt::Write as _;
        let _ = write!(key, "{}", self.0);
    }
    fn from_key(text: &str, _event: &Self) -> Result<Self, String> {
        text.parse().map(Seq).map_err(|_| format!("bad test sequence number {text:?}"))
    }
}

crate::register_position!(Seq, "test");

/// Builds a test [`Event`]: an insert of `{"id": seq}` into `d.t` by
/// source `dg` of pipeline `p`, tenant `t`, at [`Seq`] `seq` (event and
/// transaction), index 0. Change what a test needs with the methods.
///
/// ```
/// use deltaforge_core::testing::EventBuilder;
/// let e = EventBuilder::new(7).table("shop.orders").after(serde_json::json!({"id": 7, "n": 1})).build();
/// assert_eq!(e.idempotency_key(), "dg:7:0");
/// ```
#[derive(Debug, Clone)]
pub struct EventBuilder {
    event: Event,
}

fn row(v: Value) -> Row {
    let map = v.as_object().cloned().unwrap_or_default();
    Row::from_pairs(map.iter().map(|(k, v)| (k.as_str(), v.clone())))
}

impl EventBuilder {
    /// The default event at counter `seq`.
    pub fn new(seq: u64) -> Self {
        EventBuilder {
            event: Event {
                op: Op::Create,
                before: None,
                after: Some(Row::from_pairs([("id", serde_json::json!(seq))])),
                source: SourceMeta {
                    connector: "test",
                    source_id: "dg".into(),
                    pipeline: "p".into(),
                    tenant: "t".into(),
                    db: "d".into(),
                    table: "t".into(),
                    position: Seq::at(seq),
                    ts_ms: 0,
                },
                tx_id: None,
                tx_position: Seq::at(seq),
                index: 0,
                schema_version: None,
                key_columns: None,
            },
        }
    }

    /// The kind of change.
    pub fn op(mut self, op: Op) -> Self {
        self.event.op = op;
        self
    }

    /// `db.table` (or a bare table name in db `d`).
    pub fn table(mut self, qualified: &str) -> Self {
        let (db, table) = qualified.split_once('.').unwrap_or(("d", qualified));
        self.event.source.db = db.into();
        self.event.source.table = table.into();
        self
    }

    /// The before image (a JSON object), or none.
    pub fn before(mut self, image: impl Into<Option<Value>>) -> Self {
        self.event.before = image.into().map(row);
        self
    }

    /// The after image (a JSON object), or none.
    pub fn after(mut self, image: impl Into<Option<Value>>) -> Self {
        self.event.after = image.into().map(row);
        self
    }

    /// The transaction's counter (the event's own position stays).
    pub fn tx(mut self, seq: u64) -> Self {
        self.event.tx_position = Seq::at(seq);
        self
    }

    /// Both the event's and the transaction's position.
    pub fn at(mut self, position: Position) -> Self {
        self.event.source.position = position.clone();
        self.event.tx_position = position;
        self
    }

    /// The index within the transaction.
    pub fn index(mut self, index: u32) -> Self {
        self.event.index = index;
        self
    }

    /// The source transaction id.
    pub fn tx_id(mut self, id: &str) -> Self {
        self.event.tx_id = Some(id.into());
        self
    }

    /// The source id.
    pub fn source_id(mut self, id: &str) -> Self {
        self.event.source.source_id = id.into();
        self
    }

    /// The pipeline and tenant names.
    pub fn pipeline(mut self, pipeline: &str, tenant: &str) -> Self {
        self.event.source.pipeline = pipeline.into();
        self.event.source.tenant = tenant.into();
        self
    }

    /// The connector label.
    pub fn connector(mut self, connector: &'static str) -> Self {
        self.event.source.connector = connector;
        self
    }

    /// The commit timestamp, milliseconds since the epoch.
    pub fn ts_ms(mut self, ts_ms: i64) -> Self {
        self.event.source.ts_ms = ts_ms;
        self
    }

    /// The schema version.
    pub fn schema_version(mut self, version: u64) -> Self {
        self.event.schema_version = Some(version);
        self
    }

    /// The key columns.
    pub fn key_columns(mut self, columns: &[&str]) -> Self {
        let cols: Columns = Arc::from(columns.iter().map(|c| Arc::from(*c)).collect::<Vec<Arc<str>>>());
        self.event.key_columns = Some(cols);
        self
    }

    /// The event.
    pub fn build(self) -> Event {
        self.event
    }
}
