//! What the message sinks put on the wire: the envelope of each event and
//! the templates that route it (topic, stream, subject, URL, key).
//!
//! This crate is pure: no I/O. Sinks choose an [`Envelope`] per config and
//! parse their templates once, at build time, so that an unknown
//! placeholder is a validation error and not a runtime surprise.

pub mod envelope;
pub mod template;

pub use envelope::Envelope;
pub use template::{Template, TemplateError};

/// The default message key of an event: its key columns' values from the
/// after image (before image for deletes), as a JSON object serialised
/// compactly, e.g. `{"id":42}`; `None` when the table has no known key.
pub fn default_key(event: &deltaforge_core::Event) -> Option<String> {
    key_of_row(event, event.after.as_ref().or(event.before.as_ref())?)
}

/// The default key [`default_key`] gives, taken from `row` (for instance
/// the before image of an update, to tell whether the key changed).
pub fn key_of_row(event: &deltaforge_core::Event, row: &deltaforge_core::Row) -> Option<String> {
    let cols = event.key_columns.as_ref()?;
    let mut map = serde_json::Map::new();
    for c in cols.iter() {
        map.insert(c.to_string(), row.get(c).cloned().unwrap_or(serde_json::Value::Null));
    }
    Some(serde_json::Value::Object(map).to_string())
}
