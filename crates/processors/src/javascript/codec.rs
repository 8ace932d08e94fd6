//! The JSON view of a batch: the reference of what the script sees, and
//! the reader of results that only `JSON.stringify` can model.
//!
//! Batches normally cross as objects ([`super::objects`]); this module is
//! the JSON round trip those objects must equal. The script sees a slim
//! view of each event (`id`, `op`, `before`, `after`, `source: {db, table,
//! ts_ms}`), written by [`encode`] (tests only) straight from the
//! [`Event`] without an intermediate `serde_json::Value`. A returned text
//! is read in one pass by serde visitors that know the origin of each
//! element: a row whose column names match its origin's keeps the origin's
//! shared column list instead of allocating one name per value, and
//! fields the engine does not read (anything besides `id`, `op`, `before`,
//! `after`, `source.db`, `source.table`) are skipped, not built. Together
//! these removed most of the Rust-side cost of a batch (measured: 10 µs
//! per event down to about 2). This module never looks at what values
//! mean and never logs them.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock};

use deltaforge_core::{Columns, Event, Row};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
#[cfg(test)]
use serde::ser::{SerializeStruct, Serializer};
use serde::Deserialize;
#[cfg(test)]
use serde::Serialize;
use serde_json::Value;

/// The batch as the JSON array the script receives, and each event's `id`
/// (its idempotency key), by which returned objects find their origin.
/// The reference of what [`super::objects::build`] hands over (tests
/// compare the two).
#[cfg(test)]
pub(super) fn encode(events: &[Event]) -> Result<(String, Vec<String>), serde_json::Error> {
    let ids: Vec<String> = events.iter().map(Event::idempotency_key).collect();
    let slim: Vec<SlimEvent<'_>> = events.iter().zip(&ids).map(|(event, id)| SlimEvent { event, id }).collect();
    Ok((serde_json::to_string(&slim)?, ids))
}

#[cfg(test)]
struct SlimEvent<'a> {
    event: &'a Event,
    id: &'a str,
}

#[cfg(test)]
impl Serialize for SlimEvent<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let e = self.event;
        let mut st = s.serialize_struct("event", 5)?;
        st.serialize_field("id", self.id)?;
        st.serialize_field("op", &e.op)?;
        st.serialize_field("before", &e.before)?;
        st.serialize_field("after", &e.after)?;
        st.serialize_field("source", &SlimSource(e))?;
        st.end()
    }
}

#[cfg(test)]
struct SlimSource<'a>(&'a Event);

#[cfg(test)]
impl Serialize for SlimSource<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let m = &self.0.source;
        let mut st = s.serialize_struct("source", 3)?;
        st.serialize_field("db", &*m.db)?;
        st.serialize_field("table", &*m.table)?;
        st.serialize_field("ts_ms", &m.ts_ms)?;
        st.end()
    }
}

/// A `before`/`after` image as returned by the script.
#[derive(Debug, Default, PartialEq)]
pub(super) enum Image {
    /// The field was not in the returned object.
    #[default]
    Absent,
    /// `null`.
    Null,
    /// An object.
    Row(Row),
    /// Anything else; the kind of value, for the error.
    Invalid(&'static str),
}

/// One element of the returned array.
#[derive(Debug, Default)]
pub(super) struct Output {
    /// The element was not an object; the kind of value it was.
    pub not_object: Option<&'static str>,
    /// Index of the input event whose `id` the element carries.
    pub origin: Option<usize>,
    /// `op`, if present (checked by the caller).
    pub op: Option<Value>,
    pub before: Image,
    pub after: Image,
    /// `source.db` and `source.table`, if present.
    pub db: Option<Value>,
    pub table: Option<Value>,
}

/// Reads the script's returned JSON array.
pub(super) fn decode(text: &str, events: &[Event], ids: &[String]) -> Result<Vec<Output>, serde_json::Error> {
    let origins = Origins::new(events, ids);
    let mut de = serde_json::Deserializer::from_str(text);
    let out = OutputsSeed { origins: &origins }.deserialize(&mut de)?;
    de.end()?;
    Ok(out)
}

/// The input events of a batch and their ids, by which returned objects
/// find their origin.
pub(super) struct Origins<'a> {
    pub(super) events: &'a [Event],
    ids: &'a [String],
    by_id: OnceLock<HashMap<&'a str, usize>>,
}

impl<'a> Origins<'a> {
    pub(super) fn new(events: &'a [Event], ids: &'a [String]) -> Self {
        Origins { events, ids, by_id: OnceLock::new() }
    }

    /// The input event with this id. Scripts mostly keep order, so the
    /// previous origin and the one after it are tried before the map.
    pub(super) fn find(&self, id: &str, hint: usize) -> Option<usize> {
        for i in [hint, hint + 1] {
            if self.ids.get(i).is_some_and(|k| k == id) {
                return Some(i);
            }
        }
        self.by_id.get_or_init(|| self.ids.iter().enumerate().map(|(i, k)| (k.as_str(), i)).collect()).get(id).copied()
    }
}

struct OutputsSeed<'o, 'a> {
    origins: &'o Origins<'a>,
}

impl<'de> DeserializeSeed<'de> for OutputsSeed<'_, '_> {
    type Value = Vec<Output>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for OutputsSeed<'_, '_> {
    type Value = Vec<Output>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of events")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(self.origins.events.len()));
        let mut hint = 0usize;
        while let Some(o) = seq.next_element_seed(OutputSeed { origins: self.origins, hint })? {
            if let Some(i) = o.origin {
                hint = i;
            }
            out.push(o);
        }
        Ok(out)
    }
}

struct OutputSeed<'o, 'a> {
    origins: &'o Origins<'a>,
    hint: usize,
}

impl<'de> DeserializeSeed<'de> for OutputSeed<'_, '_> {
    type Value = Output;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

fn not_object(kind: &'static str) -> Output {
    Output { not_object: Some(kind), ..Output::default() }
}

impl<'de> Visitor<'de> for OutputSeed<'_, '_> {
    type Value = Output;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Output, A::Error> {
        let mut out = Output::default();
        let events = self.origins.events;
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            match &*key {
                "id" => {
                    if let Value::String(id) = map.next_value::<Value>()? {
                        out.origin = self.origins.find(&id, self.hint);
                    }
                }
                "op" => out.op = Some(map.next_value()?),
                "before" | "after" => {
                    // Until `id` is seen, guess the next event in order: the
                    // guess only decides whose column list may be shared.
                    let origin = out.origin.unwrap_or((self.hint + 1).min(events.len().saturating_sub(1)));
                    let ev = events.get(origin);
                    let like = match &*key {
                        "before" => ev.and_then(|e| e.before.as_ref().or(e.after.as_ref())),
                        _ => ev.and_then(|e| e.after.as_ref()),
                    };
                    let image = map.next_value_seed(ImageSeed { like: like.map(Row::columns) })?;
                    if &*key == "before" {
                        out.before = image;
                    } else {
                        out.after = image;
                    }
                }
                "source" => {
                    if let Value::Object(mut src) = map.next_value::<Value>()? {
                        out.db = src.remove("db");
                        out.table = src.remove("table");
                    }
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(out)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Output, E> {
        Ok(not_object("null"))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Output, E> {
        Ok(not_object("a boolean"))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Output, E> {
        Ok(not_object("a number"))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Output, E> {
        Ok(not_object("a number"))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Output, E> {
        Ok(not_object("a number"))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Output, E> {
        Ok(not_object("a string"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Output, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(not_object("an array"))
    }
}

/// A map key, borrowed from the text when it has no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// Reads a row image, sharing `like`'s column names while they match.
struct ImageSeed<'c> {
    like: Option<&'c Columns>,
}

impl<'de> DeserializeSeed<'de> for ImageSeed<'_> {
    type Value = Image;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Image, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ImageSeed<'_> {
    type Value = Image;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object or null")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Image, A::Error> {
        let mut row = RowLike::new(self.like);
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            let same = row.like_name().is_some_and(|c| **c == *key);
            row.push(same, || Ok::<_, A::Error>(Arc::from(&*key)), map.next_value::<Value>()?)?;
        }
        Ok(Image::Row(row.finish()))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Image, E> {
        Ok(Image::Null)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Image, E> {
        Ok(Image::Invalid("a boolean"))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Image, E> {
        Ok(Image::Invalid("a number"))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Image, E> {
        Ok(Image::Invalid("a number"))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Image, E> {
        Ok(Image::Invalid("a number"))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Image, E> {
        Ok(Image::Invalid("a string"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Image, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Image::Invalid("an array"))
    }
}

/// A row read back column by column, sharing `like`'s column list (the
/// origin's) while every name equals `like`'s at the same place — the
/// common case of a script that kept the columns — and making its own list
/// from the first name that differs.
pub(super) struct RowLike<'c> {
    like: Option<&'c Columns>,
    /// `None` while the names so far are `like`'s.
    names: Option<Vec<Arc<str>>>,
    values: Vec<Value>,
}

impl<'c> RowLike<'c> {
    pub(super) fn new(like: Option<&'c Columns>) -> Self {
        RowLike { like, names: None, values: Vec::with_capacity(like.map_or(0, |c| c.len())) }
    }

    fn like_names(&self) -> &'c [Arc<str>] {
        self.like.map(|c| &c[..]).unwrap_or(&[])
    }

    /// `like`'s name at the next column's place, while the names match.
    pub(super) fn like_name(&self) -> Option<&'c Arc<str>> {
        if self.names.is_some() {
            return None;
        }
        self.like_names().get(self.values.len())
    }

    /// The next column: `same` when its name is [`Self::like_name`];
    /// otherwise `name` makes it.
    pub(super) fn push<E>(
        &mut self,
        same: bool,
        name: impl FnOnce() -> Result<Arc<str>, E>,
        value: Value,
    ) -> Result<(), E> {
        let i = self.values.len();
        match &mut self.names {
            None if same => {}
            None => {
                let mut n: Vec<Arc<str>> = self.like_names()[..i].to_vec();
                n.push(name()?);
                self.names = Some(n);
            }
            Some(n) => n.push(name()?),
        }
        self.values.push(value);
        Ok(())
    }

    /// The place the next column takes.
    pub(super) fn next_index(&self) -> usize {
        self.values.len()
    }

    pub(super) fn finish(self) -> Row {
        let like_names = self.like_names();
        let RowLike { like, names, values } = self;
        match (names, like) {
            (None, Some(cols)) if cols.len() == values.len() => Row::new(cols.clone(), values),
            (None, _) => Row::new(like_names[..values.len()].iter().cloned().collect(), values),
            (Some(n), _) => Row::new(n.into(), values),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{insert, sequenced};
    use serde_json::json;

    fn batch() -> Vec<Event> {
        sequenced(vec![
            insert("shop.orders", json!({"id": 1, "amount": "1.50"})),
            insert("shop.orders", json!({"id": 2, "amount": "2.50"})),
        ])
    }

    #[test]
    fn the_script_sees_the_slim_envelope() {
        let events = batch();
        let (text, ids) = encode(&events).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v[1]["id"], json!(ids[1]));
        assert_eq!(v[1]["op"], "c");
        assert_eq!(v[1]["before"], Value::Null);
        assert_eq!(v[1]["after"], json!({"id": 2, "amount": "2.50"}));
        assert_eq!(v[1]["source"]["db"], "shop");
        assert_eq!(v[1]["source"]["table"], "orders");
        assert!(v[1]["source"]["ts_ms"].is_i64());
    }

    #[test]
    fn unchanged_names_share_the_origin_column_list_and_new_names_do_not() {
        let events = batch();
        let (_, ids) = encode(&events).unwrap();
        let text = json!([
            {"id": ids[0], "after": {"id": 1, "amount": "0"}},
            {"id": ids[1], "after": {"id": 2, "amount": "2.50", "cents": 250}, "op": "u", "extra": [1, 2]},
            {"after": {"amount": "9", "id": 9}, "id": ids[1], "source": {"table": "t2"}},
            7,
            {"id": ids[0], "before": 3, "after": null},
        ])
        .to_string();
        let out = decode(&text, &events, &ids).unwrap();
        assert_eq!(out.len(), 5);
        let Image::Row(r0) = &out[0].after else { panic!("{:?}", out[0].after) };
        assert!(Arc::ptr_eq(r0.columns(), events[0].after.as_ref().unwrap().columns()));
        assert_eq!(r0.get("amount"), Some(&json!("0")));
        let Image::Row(r1) = &out[1].after else { panic!() };
        assert_eq!(r1.columns().iter().map(|c| &**c).collect::<Vec<_>>(), ["id", "amount", "cents"]);
        assert_eq!(out[1].op, Some(json!("u")));
        assert_eq!(out[1].origin, Some(1));
        let Image::Row(r2) = &out[2].after else { panic!() };
        assert_eq!(r2.columns().iter().map(|c| &**c).collect::<Vec<_>>(), ["amount", "id"]);
        assert_eq!(out[2].table, Some(json!("t2")));
        assert_eq!(out[2].db, None);
        assert_eq!(out[3].not_object, Some("a number"));
        assert_eq!(out[4].before, Image::Invalid("a number"));
        assert_eq!(out[4].after, Image::Null);
        assert_eq!(out[4].origin, Some(0));
        assert_eq!(out[0].before, Image::Absent);
    }

    #[test]
    fn fewer_columns_than_the_origin_make_a_new_list() {
        let events = batch();
        let (_, ids) = encode(&events).unwrap();
        let out = decode(&json!([{"id": ids[0], "after": {"id": 1}}]).to_string(), &events, &ids).unwrap();
        let Image::Row(r) = &out[0].after else { panic!() };
        assert_eq!(r.columns().len(), 1);
        assert_eq!(r.get("id"), Some(&json!(1)));
    }
}
