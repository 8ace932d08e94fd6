//! Events for unit tests.

use deltaforge_core::testing::{EventBuilder, Seq};
use deltaforge_core::{Event, Op};
use serde_json::Value;

/// An event of `db.table` with the given op and images (JSON objects).
pub fn event(op: Op, table: &str, before: Option<Value>, after: Option<Value>) -> Event {
    EventBuilder::new(1)
        .op(op)
        .connector("datagen")
        .table(table)
        .before(before)
        .after(after)
        .tx_id("1")
        .ts_ms(1_700_000_000_000)
        .schema_version(1)
        .build()
}

/// An insert into `db.table`.
pub fn insert(table: &str, after: Value) -> Event {
    event(Op::Create, table, None, Some(after))
}

/// `events` with transaction positions 1, 2, 3… (one event per transaction).
pub fn sequenced(mut events: Vec<Event>) -> Vec<Event> {
    for (i, e) in events.iter_mut().enumerate() {
        let seq = i as u64 + 1;
        e.tx_position = Seq::at(seq);
        e.source.position = Seq::at(seq);
        e.tx_id = Some(seq.to_string().into());
    }
    events
}

/// The after image as JSON.
pub fn after(e: &Event) -> Value {
    e.after.as_ref().map(|r| r.to_json()).unwrap_or(Value::Null)
}

/// The before image as JSON.
pub fn before(e: &Event) -> Value {
    e.before.as_ref().map(|r| r.to_json()).unwrap_or(Value::Null)
}
