//! DeltaForge's built-in processors: the steps that run on every batch
//! between the source and the sinks, in the order a pipeline declares them.
//!
//! | `type:` | module | what it does |
//! |---|---|---|
//! | `filter` | [`filter`] | keep or drop events by op, table pattern and field predicates |
//! | `mask` | [`mask`] | drop, replace, HMAC-hash or truncate columns of chosen tables |
//! | `flatten` | [`flatten`] | lift nested JSON objects into `parent__child` columns |
//! | `javascript` | [`javascript`] | a sandboxed user function `process(events)` (QuickJS) |
//! | `outbox` | [`outbox`] | turn transactional-outbox rows into routed messages |
//!
//! ```yaml
//! spec:
//!   processors:
//!     - type: filter
//!       config: { ops: [c, u], include: [shop.orders] }
//!     - type: mask
//!       config:
//!         hmac_secret: "${MASK_SECRET}"
//!         rules:
//!           - { table: shop.customers, columns: { email: hash, ssn: drop } }
//! ```
//!
//! Every processor config accepts an optional `name` (default: its type),
//! used in metrics labels and error messages, and rejects unknown keys.
//! [`check`] validates a config offline (the registry calls it while
//! validating a spec); [`build`] constructs the processor wrapped in
//! [`Metered`], which records `deltaforge_processor_events_in_total`,
//! `deltaforge_processor_events_out_total`,
//! `deltaforge_processor_errors_total` and the
//! `deltaforge_processor_seconds` histogram, labelled `{pipeline, processor}`.
//!
//! This crate owns the transformations only. It must never do I/O (no
//! files, network or storage: a processor is a pure function of its batch
//! and its config), never reorder events of different transactions (the
//! checkpoint relies on source order), and never log column values or the
//! HMAC secret (they may be personal data or secrets).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use deltaforge_core::Processor;

#[cfg(test)]
mod bench;
pub mod filter;
pub mod flatten;
pub mod javascript;
pub mod mask;
mod metered;
pub mod outbox;
pub mod pattern;
mod value;

pub use filter::{FilterConfig, FilterProcessor};
pub use flatten::{FlattenConfig, FlattenProcessor};
pub use javascript::{JavascriptConfig, JavascriptProcessor};
pub use mask::{MaskConfig, MaskProcessor};
pub use metered::Metered;
pub use outbox::{OutboxConfig, OutboxProcessor};
pub use pattern::TablePattern;

/// The processor `type`s this crate provides.
pub const KINDS: &[&str] = &["filter", "mask", "flatten", "javascript", "outbox"];

/// A config problem: `(field path within the config, message)`; an empty
/// field points at the config itself. This is the shape the registry and
/// the config validator expect.
pub type ConfigProblem = (String, String);

/// Parses a config map into its typed struct, naming the field at fault
/// (`rules[0].columns.email`) when serde rejects it.
pub(crate) fn parse<T: DeserializeOwned>(config: &Map<String, Value>) -> Result<T, ConfigProblem> {
    let value = Value::Object(config.clone());
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        let msg = e.into_inner().to_string();
        let field = if path.is_empty() { msg.split('`').nth(1).unwrap_or("").to_string() } else { path };
        (field, msg)
    })
}

/// Validates the config of processor `kind` without building it (offline:
/// no files, no connections). A JavaScript config is compiled in a
/// throw-away runtime so that syntax errors surface at validation time.
pub fn check(kind: &str, config: &Map<String, Value>) -> Result<(), ConfigProblem> {
    match kind {
        "filter" => parse::<FilterConfig>(config)?.check().map(|_| ()),
        "mask" => parse::<MaskConfig>(config)?.check().map(|_| ()),
        "flatten" => parse::<FlattenConfig>(config)?.check(),
        "javascript" => parse::<JavascriptConfig>(config)?.check(),
        "outbox" => parse::<OutboxConfig>(config)?.check().map(|_| ()),
        other => Err((String::new(), format!("unknown processor type {other:?}; known: {}", KINDS.join(", ")))),
    }
}

/// Builds processor `kind` from its config, wrapped in [`Metered`]. The
/// error names the field at fault and how to fix it.
pub fn build(kind: &str, config: &Map<String, Value>) -> Result<Box<dyn Processor>, String> {
    let fail = |(field, msg): ConfigProblem| {
        if field.is_empty() {
            format!("processor {kind}: {msg}")
        } else {
            format!("processor {kind}: config.{field}: {msg}")
        }
    };
    let p: Box<dyn Processor> = match kind {
        "filter" => Box::new(FilterProcessor::new(parse(config).map_err(fail)?).map_err(fail)?),
        "mask" => Box::new(MaskProcessor::new(parse(config).map_err(fail)?).map_err(fail)?),
        "flatten" => Box::new(FlattenProcessor::new(parse(config).map_err(fail)?).map_err(fail)?),
        "javascript" => Box::new(JavascriptProcessor::new(parse(config).map_err(fail)?).map_err(fail)?),
        "outbox" => Box::new(OutboxProcessor::new(parse(config).map_err(fail)?).map_err(fail)?),
        other => return Err(format!("unknown processor type {other:?}; known: {}", KINDS.join(", "))),
    };
    Ok(Box::new(Metered::new(p)))
}

#[cfg(test)]
pub(crate) mod testutil {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn check_names_the_nested_field_at_fault() {
        let (field, msg) =
            check("mask", &map(json!({"rules": [{"table": "a.b", "columns": {"x": "hsh"}}]}))).unwrap_err();
        assert_eq!(field, "rules[0].columns.x");
        assert!(msg.contains("hsh"), "{msg}");
    }

    #[test]
    fn check_rejects_unknown_keys_and_kinds() {
        let (field, msg) = check("filter", &map(json!({"opz": ["c"]}))).unwrap_err();
        assert_eq!(field, "opz", "{msg}");
        let (_, msg) = check("nope", &map(json!({}))).unwrap_err();
        assert!(msg.contains("known: filter, mask"), "{msg}");
    }

    #[test]
    fn build_wraps_and_names_the_processor() {
        let p = build("filter", &map(json!({"name": "only-inserts", "ops": ["c"]}))).unwrap();
        assert_eq!(p.name(), "only-inserts");
        let err = build("flatten", &map(json!({"max_depth": 0}))).err().unwrap();
        assert!(err.contains("config.max_depth"), "{err}");
    }
}
