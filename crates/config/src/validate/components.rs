//! The `spec.source` and `spec.processors` sections, and the checks every
//! component entry shares (`type`, `config.id`, reporting the catalog's
//! verdict on a component's own config).
//!
//! A component's own config keys are the [`Catalog`]'s business: this
//! module must never interpret them beyond `id`.

use deltaforge_core::ConfigProblem;
use serde_json::{Map, Value};

use super::collect::{describe, join, list, Ctx};
use super::naming::suggest;
use super::schema::COMPONENT_KEYS;
use crate::{Catalog, ComponentSpec, SourceSpec};

impl Ctx<'_> {
    /// The `type` of a component, if present and known.
    pub(super) fn component_type(
        &mut self,
        m: &Map<String, Value>,
        base: &str,
        what: &str,
        known: &[&str],
    ) -> Option<String> {
        let field = join(base, "type");
        match m.get("type") {
            Some(Value::String(s)) if known.contains(&s.as_str()) => Some(s.clone()),
            None | Some(Value::Null) => {
                self.err(field, "missing required key", format!("add `type:` with one of: {}", list(known)));
                None
            }
            Some(Value::String(s)) => {
                let fix = match suggest(s, known) {
                    Some(k) => format!("did you mean `{k}`? set `type: {k}`"),
                    None => format!("use one of: {}", list(known)),
                };
                self.err(field, format!("unknown {what} type; known: {}", list(known)), fix);
                None
            }
            Some(v) => {
                self.err(
                    field,
                    format!("expected a string, found {}", describe(v)),
                    format!("set `type:` to one of: {}", list(known)),
                );
                None
            }
        }
    }

    /// A required non-empty string `id` in a component config.
    pub(super) fn config_id(&mut self, config: &Map<String, Value>, field: &str, fix: &str) -> Option<String> {
        match config.get("id") {
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
            None | Some(Value::Null) => {
                self.err(field, "missing required key", fix);
                None
            }
            Some(Value::String(_)) => {
                self.err(field, "must not be empty", fix);
                None
            }
            Some(v) => {
                self.err(field, format!("expected a string, found {}", describe(v)), fix);
                None
            }
        }
    }

    /// Reports a catalog error under `base` (a `...config` path).
    pub(super) fn catalog_err(&mut self, base: &str, what: &str, kind: &str, problem: ConfigProblem) {
        let ConfigProblem { field, message: msg } = problem;
        let path = join(base, &field);
        self.err(
            path.clone(),
            msg,
            format!("correct {path} for {what} type `{kind}` (see the `{kind}` {what} documentation)"),
        );
    }

    /// `spec.source`: required, with a known `type` and a `config.id`.
    pub(super) fn source(&mut self, v: Option<&Value>, catalog: &dyn Catalog) -> Option<SourceSpec> {
        let base = "spec.source";
        let m = self.required_map(v, base, "add `source:` with `type` and `config` (including `config.id`)")?;
        self.check_keys(m, base, COMPONENT_KEYS);
        let kind = self.component_type(m, base, "source", &catalog.source_types());
        let config = self.required_map(
            m.get("config"),
            "spec.source.config",
            "add `config:` with at least `id: <unique-source-id>`",
        )?;
        let id = self.config_id(
            config,
            "spec.source.config.id",
            "set `id: <unique-source-id>` under spec.source.config (it is the checkpoint key)",
        );
        let kind = kind?;
        let id = id?;
        if let Err(e) = catalog.check_source(&kind, config) {
            self.catalog_err("spec.source.config", "source", &kind, e);
        }
        Some(SourceSpec { kind, id, config: config.clone() })
    }

    /// `spec.processors`: optional; each entry a known `type` with an optional `config`.
    pub(super) fn processors(&mut self, v: Option<&Value>, catalog: &dyn Catalog) -> Vec<ComponentSpec> {
        let items = match v {
            None | Some(Value::Null) => return Vec::new(),
            Some(Value::Array(a)) => a,
            Some(other) => {
                self.err(
                    "spec.processors",
                    format!("expected a list, found {}", describe(other)),
                    "write `processors: []` or a list of `- type: ...` entries",
                );
                return Vec::new();
            }
        };
        let known = catalog.processor_types();
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let base = format!("spec.processors[{i}]");
            let Some(m) = item.as_object() else {
                self.err(
                    base,
                    format!("expected a mapping with `type` and `config`, found {}", describe(item)),
                    "write each processor as `- type: <type>` with an optional `config:` mapping",
                );
                continue;
            };
            self.check_keys(m, &base, COMPONENT_KEYS);
            let kind = self.component_type(m, &base, "processor", &known);
            let config_path = join(&base, "config");
            let config = match m.get("config") {
                None | Some(Value::Null) => Some(Map::new()),
                Some(Value::Object(c)) => Some(c.clone()),
                Some(other) => {
                    self.err(
                        config_path.clone(),
                        format!("expected a mapping, found {}", describe(other)),
                        "write the processor's settings as a `config:` mapping, or omit it",
                    );
                    None
                }
            };
            if let (Some(kind), Some(config)) = (kind, config) {
                match catalog.check_processor(&kind, &config) {
                    Ok(()) => out.push(ComponentSpec { kind, config }),
                    Err(e) => self.catalog_err(&config_path, "processor", &kind, e),
                }
            }
        }
        out
    }
}
