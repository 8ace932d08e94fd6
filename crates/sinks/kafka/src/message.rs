//! Turning a batch of events into Kafka messages: topic, key and value of
//! each, plus the tombstone after a delete.
//!
//! An update that changes the row's key becomes, with `split_key_changes`,
//! what Debezium sends for it: a delete keyed by the old key (and its
//! tombstone, with `tombstones`), then a create keyed by the new key. A
//! single update keyed by the new key would leave the old key's last record
//! alive for ever in a compacted topic and in every table upserted from it.
//! The delete's `id` header is the event's idempotency key with the suffix
//! [`KEY_CHANGE_DELETE_SUFFIX`], so a consumer deduplicating by `id` keeps both
//! halves; the create carries the event's own key.
//!
//! This module is pure (no I/O) so that routing, keys and tombstones are
//! unit-tested without a broker. It writes every key and value of a batch
//! into two reusable byte buffers and records ranges, so that encoding a
//! batch of thousands of events allocates almost nothing once warmed up;
//! topics are interned per batch (most batches go to one or a few topics).

use std::ops::Range;

use deltaforge_core::{Event, Op};
use deltaforge_encoding::{default_key, key_of_row, Envelope, Template};

/// How messages are built from events.
#[derive(Debug, Clone)]
pub struct MessageBuilder {
    /// Topic template.
    pub topic: Template,
    /// Key template; `None` = [`default_key`].
    pub key: Option<Template>,
    /// Value envelope.
    pub envelope: Envelope,
    /// Send a null-value message after each delete.
    pub tombstones: bool,
    /// Send an update that changes the key as a delete of the old key and
    /// a create of the new one.
    pub split_key_changes: bool,
}

/// Appended to an event's idempotency key for the delete half of a split
/// key change.
pub const KEY_CHANGE_DELETE_SUFFIX: &str = ":key-change-delete";

/// One message of a batch, as ranges into [`Encoded`]'s buffers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRef {
    /// Index of the event (in the slice given to [`MessageBuilder::encode`])
    /// this message carries.
    pub event: u32,
    /// Index into [`Encoded::topics`].
    pub topic: u32,
    /// Key bytes in [`Encoded::keys`]; `None` = no key.
    pub key: Option<Range<usize>>,
    /// Value bytes in [`Encoded::values`]; `None` = tombstone (null value).
    pub value: Option<Range<usize>>,
    /// The event's idempotency key in [`Encoded::ids`] (sent as the `id` header).
    pub id: Range<usize>,
}

/// The encoded messages of one batch (buffers reused across batches).
#[derive(Debug, Default)]
pub struct Encoded {
    /// Distinct topics of the batch.
    pub topics: Vec<String>,
    /// Concatenated keys.
    pub keys: Vec<u8>,
    /// Concatenated values.
    pub values: Vec<u8>,
    /// Concatenated idempotency keys.
    pub ids: Vec<u8>,
    /// Messages in send order.
    pub messages: Vec<MessageRef>,
}

impl Encoded {
    /// Empties the buffers, keeping their capacity.
    pub fn clear(&mut self) {
        self.topics.clear();
        self.keys.clear();
        self.values.clear();
        self.ids.clear();
        self.messages.clear();
    }

    /// The key bytes of a message.
    pub fn key(&self, m: &MessageRef) -> Option<&[u8]> {
        m.key.clone().map(|r| &self.keys[r])
    }

    /// The idempotency key of a message's event.
    pub fn id(&self, m: &MessageRef) -> &[u8] {
        &self.ids[m.id.clone()]
    }

    /// The value bytes of a message (`None`: tombstone).
    pub fn value(&self, m: &MessageRef) -> Option<&[u8]> {
        m.value.clone().map(|r| &self.values[r])
    }

    /// The topic of a message.
    pub fn topic(&self, m: &MessageRef) -> &str {
        &self.topics[m.topic as usize]
    }

    fn intern(&mut self, topic: String) -> u32 {
        // Batches go to few topics: a linear scan from the most recent one
        // beats hashing every event's topic.
        if let Some(i) = self.topics.iter().rposition(|t| *t == topic) {
            return i as u32;
        }
        self.topics.push(topic);
        (self.topics.len() - 1) as u32
    }
}

impl MessageBuilder {
    /// Appends the messages of `events` to `out` (which the caller cleared).
    pub fn encode(&self, events: &[Event], out: &mut Encoded) {
        let static_topic = self.topic.is_static();
        for (i, e) in events.iter().enumerate() {
            let event = i as u32;
            let topic = if static_topic && !out.topics.is_empty() { 0 } else { out.intern(self.topic.render(e)) };
            let key_text = self.key_of(e);
            let split = self.changed_key(e, key_text.as_deref());
            let key_changed = split.is_some();
            if let Some(old) = split {
                self.push_delete_of_old_key(e, event, topic, old, out);
            }
            let key = key_text.map(|k| {
                let start = out.keys.len();
                out.keys.extend_from_slice(k.as_bytes());
                start..out.keys.len()
            });
            let start = out.values.len();
            if key_changed {
                // The create half of a split key change.
                let create = Event { op: Op::Create, before: None, ..e.clone() };
                self.envelope.encode_into(&create, &mut out.values);
            } else {
                self.envelope.encode_into(e, &mut out.values);
            }
            let value = Some(start..out.values.len());
            let id_start = out.ids.len();
            out.ids.extend_from_slice(e.idempotency_key().as_bytes());
            let id = id_start..out.ids.len();
            out.messages.push(MessageRef { event, topic, key: key.clone(), value, id: id.clone() });
            // A tombstone without a key would compact nothing: skip it.
            if self.tombstones && e.op == Op::Delete && key.is_some() {
                out.messages.push(MessageRef { event, topic, key, value: None, id });
            }
        }
    }

    /// The old key of an update whose primary key changed, with the delete
    /// of the old row (`None` otherwise, when the update carries no before
    /// image, or with a `key` template: the row's key is the default key's
    /// business; a template may name columns a before image lacks).
    fn changed_key(&self, e: &Event, new: Option<&str>) -> Option<(String, Event)> {
        if !self.split_key_changes || self.key.is_some() || e.op != Op::Update {
            return None;
        }
        // Compared before anything is cloned: most updates keep their key.
        let old = key_of_row(e, e.before.as_ref()?)?;
        (Some(old.as_str()) != new).then(|| (old, Event { op: Op::Delete, after: None, ..e.clone() }))
    }

    /// The delete half of a split key change (and its tombstone).
    fn push_delete_of_old_key(&self, e: &Event, event: u32, topic: u32, old: (String, Event), out: &mut Encoded) {
        let (old_key, delete) = old;
        let start = out.keys.len();
        out.keys.extend_from_slice(old_key.as_bytes());
        let key = Some(start..out.keys.len());
        let start = out.values.len();
        self.envelope.encode_into(&delete, &mut out.values);
        let value = Some(start..out.values.len());
        let start = out.ids.len();
        out.ids.extend_from_slice(e.idempotency_key().as_bytes());
        out.ids.extend_from_slice(KEY_CHANGE_DELETE_SUFFIX.as_bytes());
        let id = start..out.ids.len();
        out.messages.push(MessageRef { event, topic, key: key.clone(), value, id: id.clone() });
        if self.tombstones {
            out.messages.push(MessageRef { event, topic, key, value: None, id });
        }
    }

    fn key_of(&self, e: &Event) -> Option<String> {
        match &self.key {
            Some(t) => Some(t.render(e)),
            None => default_key(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltaforge_core::testing::EventBuilder;
    use deltaforge_core::Row;
    use serde_json::{json, Value};

    fn event(op: Op, id: u64, table: &str) -> Event {
        let row = json!({"id": id, "customer": "c7"});
        let e = EventBuilder::new(id).op(op).pipeline("p", "acme").table(&format!("demo.{table}")).key_columns(&["id"]);
        match op {
            Op::Delete => e.before(row).after(None).build(),
            _ => e.after(row).build(),
        }
    }

    fn builder(topic: &str, key: Option<&str>, tombstones: bool) -> MessageBuilder {
        MessageBuilder {
            topic: Template::parse(topic).unwrap(),
            key: key.map(|k| Template::parse(k).unwrap()),
            envelope: Envelope::Native,
            tombstones,
            split_key_changes: true,
        }
    }

    fn key_change(from: u64, to: u64) -> Event {
        let mut e = event(Op::Update, to, "orders");
        e.before = Some(Row::from_pairs([("id", json!(from))]));
        e
    }

    #[test]
    fn a_key_change_is_a_delete_of_the_old_key_then_a_create_of_the_new() {
        let mut enc = Encoded::default();
        builder("t", None, true).encode(&[key_change(1, 2), event(Op::Update, 3, "orders")], &mut enc);
        let ops: Vec<(Option<String>, Option<String>)> = (0..enc.messages.len())
            .map(|i| {
                let v = enc.value(&enc.messages[i]).map(|v| serde_json::from_slice::<Value>(v).unwrap());
                (key_str(&enc, i), v.map(|v| v["op"].as_str().unwrap().to_string()))
            })
            .collect();
        assert_eq!(
            ops,
            [
                (Some(r#"{"id":1}"#.into()), Some("d".into())),
                (Some(r#"{"id":1}"#.into()), None),
                (Some(r#"{"id":2}"#.into()), Some("c".into())),
                (Some(r#"{"id":3}"#.into()), Some("u".into())),
            ],
            "delete + tombstone of the old key, create of the new; an update keeping its key stays one update"
        );
        let delete: Value = serde_json::from_slice(enc.value(&enc.messages[0]).unwrap()).unwrap();
        assert_eq!((delete["before"]["id"].clone(), delete["after"].clone()), (json!(1), Value::Null));
        let create: Value = serde_json::from_slice(enc.value(&enc.messages[2]).unwrap()).unwrap();
        assert_eq!((create["before"].clone(), create["after"]["id"].clone()), (Value::Null, json!(2)));
        let ids: Vec<String> = enc.messages.iter().map(|m| String::from_utf8(enc.id(m).to_vec()).unwrap()).collect();
        assert_eq!(ids[0], format!("dg:2:0{KEY_CHANGE_DELETE_SUFFIX}"));
        assert_eq!(ids[1], ids[0], "the tombstone goes with the delete");
        assert_eq!(ids[2], "dg:2:0", "the create keeps the event's idempotency key");
        let events: Vec<u32> = enc.messages.iter().map(|m| m.event).collect();
        assert_eq!(events, [0, 0, 0, 1], "all three messages belong to the update");
    }

    #[test]
    fn key_changes_stay_one_update_when_not_split_or_keyed_by_a_template() {
        let mut enc = Encoded::default();
        let mut b = builder("t", None, true);
        b.split_key_changes = false;
        b.encode(&[key_change(1, 2)], &mut enc);
        assert_eq!(enc.messages.len(), 1);
        enc.clear();
        builder("t", Some("${after.customer}"), true).encode(&[key_change(1, 2)], &mut enc);
        assert_eq!(enc.messages.len(), 1, "a key template is the user's key");
        enc.clear();
        let mut no_before = key_change(1, 2);
        no_before.before = None;
        builder("t", None, true).encode(&[no_before], &mut enc);
        assert_eq!(enc.messages.len(), 1, "no before image: nothing to delete");
    }

    fn key_str(enc: &Encoded, i: usize) -> Option<String> {
        enc.key(&enc.messages[i]).map(|k| String::from_utf8(k.to_vec()).unwrap())
    }

    #[test]
    fn routes_by_table_and_keys_by_primary_key() {
        let b = builder("cdc.${db}.${table}", None, false);
        let mut enc = Encoded::default();
        b.encode(
            &[event(Op::Create, 1, "orders"), event(Op::Create, 2, "items"), event(Op::Create, 3, "orders")],
            &mut enc,
        );
        assert_eq!(enc.topics, vec!["cdc.demo.orders", "cdc.demo.items"]);
        let topics: Vec<&str> = enc.messages.iter().map(|m| enc.topic(m)).collect();
        assert_eq!(topics, ["cdc.demo.orders", "cdc.demo.items", "cdc.demo.orders"]);
        assert_eq!(key_str(&enc, 1).as_deref(), Some(r#"{"id":2}"#));
        let v: Value = serde_json::from_slice(enc.value(&enc.messages[2]).unwrap()).unwrap();
        assert_eq!(v["after"]["id"], 3);
        assert_eq!(v["id"], "dg:3:0");
    }

    #[test]
    fn delete_is_followed_by_a_tombstone_with_the_same_key() {
        let b = builder("t", None, true);
        let mut enc = Encoded::default();
        b.encode(&[event(Op::Create, 1, "orders"), event(Op::Delete, 1, "orders")], &mut enc);
        assert_eq!(enc.messages.len(), 3, "insert, delete, tombstone");
        let delete: Value = serde_json::from_slice(enc.value(&enc.messages[1]).unwrap()).unwrap();
        assert_eq!(delete["op"], "d");
        assert_eq!(delete["before"]["id"], 1);
        assert_eq!(enc.value(&enc.messages[2]), None, "tombstone has a null value");
        assert_eq!(key_str(&enc, 2).as_deref(), Some(r#"{"id":1}"#));
        assert_eq!(key_str(&enc, 1), key_str(&enc, 2));
        let events: Vec<u32> = enc.messages.iter().map(|m| m.event).collect();
        assert_eq!(events, [0, 1, 1], "the tombstone belongs to the delete event");
    }

    #[test]
    fn no_tombstones_unless_asked_or_without_key() {
        let mut enc = Encoded::default();
        builder("t", None, false).encode(&[event(Op::Delete, 1, "orders")], &mut enc);
        assert_eq!(enc.messages.len(), 1);
        enc.clear();
        let mut keyless = event(Op::Delete, 1, "orders");
        keyless.key_columns = None;
        builder("t", None, true).encode(&[keyless], &mut enc);
        assert_eq!(enc.messages.len(), 1, "no tombstone for a keyless row");
        assert_eq!(enc.messages[0].key, None);
    }

    #[test]
    fn template_key_uses_the_before_image_for_deletes_when_asked() {
        let b = builder("t", Some("${before.customer}-${op}"), true);
        let mut enc = Encoded::default();
        b.encode(&[event(Op::Delete, 5, "orders")], &mut enc);
        assert_eq!(key_str(&enc, 0).as_deref(), Some("c7-d"));
        assert_eq!(key_str(&enc, 1).as_deref(), Some("c7-d"));
        assert_eq!(enc.value(&enc.messages[1]), None);
    }
}
