//! The error collector shared by every section check: [`Ctx`] records each
//! problem with its origin, pipeline and field path instead of stopping at
//! the first, and checks the shape of mappings (unknown keys, required
//! mappings). The small helpers every check needs to word its messages
//! (field-path joining, value descriptions, lists) live here too.
//! Messages name the field and what is expected, never the value found.
//!
//! It must never know about a particular section of the spec: section
//! rules belong to the modules that own those sections.

use serde_json::{Map, Value};

use super::naming::suggest;
use crate::error::ConfigError;

/// Collects the errors of one document.
pub(super) struct Ctx<'a> {
    /// The file path (or `<api>`) the document came from.
    pub(super) origin: &'a str,
    /// `metadata.name`, when the document has one.
    pub(super) pipeline: Option<String>,
    /// Appended to messages when the pipeline has no name to point at.
    pub(super) note: String,
    /// Every error found so far, in the order found.
    pub(super) errors: Vec<ConfigError>,
}

/// `base` and `key` as one field path (`spec.sinks[0].config`).
pub(super) fn join(base: &str, key: &str) -> String {
    if base.is_empty() {
        key.to_string()
    } else if key.is_empty() {
        base.to_string()
    } else if key.starts_with('[') {
        format!("{base}{key}")
    } else {
        format!("{base}.{key}")
    }
}

/// What kind of value `v` is, for error messages (`a string`, `a
/// number`). Never the value itself: it may be a secret written in the
/// wrong place, or expanded from the environment.
pub(super) fn describe(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a fractional number",
        Value::Number(n) if n.is_i64() && n.as_i64().is_some_and(|i| i < 0) => "a negative number",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// `items` comma-separated, or `(none)`.
pub(super) fn list(items: &[&str]) -> String {
    if items.is_empty() {
        "(none)".into()
    } else {
        items.join(", ")
    }
}

/// `v` as an integer within `min..=max`.
pub(super) fn int_in(v: &Value, min: u64, max: u64) -> Option<u64> {
    v.as_u64().filter(|n| (min..=max).contains(n))
}

impl Ctx<'_> {
    /// Records one error at `field`; the note about which document it is
    /// goes on the message because an unnamed pipeline has nothing else.
    pub(super) fn err(&mut self, field: impl Into<String>, message: impl Into<String>, fix: impl Into<String>) {
        let mut message = message.into();
        message.push_str(&self.note);
        self.errors.push(ConfigError {
            origin: self.origin.to_string(),
            pipeline: self.pipeline.clone(),
            field: field.into(),
            message,
            fix: fix.into(),
        });
    }

    /// Reports every key of `map` not in `allowed`, suggesting the closest one.
    pub(super) fn check_keys(&mut self, map: &Map<String, Value>, base: &str, allowed: &[&str]) {
        for key in map.keys() {
            if allowed.contains(&key.as_str()) {
                continue;
            }
            let fix = match suggest(key, allowed) {
                Some(s) => format!("did you mean `{s}`? rename `{key}` to `{s}`"),
                None => format!("remove `{key}` or use one of the allowed keys"),
            };
            self.err(join(base, key), format!("unknown key `{key}`; allowed: {}", allowed.join(", ")), fix);
        }
    }

    /// A required mapping-valued key.
    pub(super) fn required_map<'v>(
        &mut self,
        v: Option<&'v Value>,
        field: &str,
        fix_missing: &str,
    ) -> Option<&'v Map<String, Value>> {
        match v {
            None | Some(Value::Null) => {
                self.err(field, "missing required key", fix_missing);
                None
            }
            Some(Value::Object(m)) => Some(m),
            Some(other) => {
                self.err(field, format!("expected a mapping, found {}", describe(other)), fix_missing);
                None
            }
        }
    }
}
