//! The `spec.sinks` section: each sink's `type`, its `id` (unique within the
//! pipeline), `required`, and the delivery settings among the
//! [`SINK_COMMON_KEYS`], which are removed before the catalog sees the
//! sink's own config.
//!
//! It must never interpret a sink's own config keys (the [`Catalog`] does)
//! nor decide the commit policy (it only summarises what the policy check
//! needs, in [`SinkSummary`]).

use std::collections::HashMap;
use std::time::Duration;

use deltaforge_core::DeliveryConfig;
use serde_json::{Map, Value};

use super::collect::{describe, int_in, join, Ctx};
use super::schema::{COMPONENT_KEYS, SINK_COMMON_KEYS};
use crate::{Catalog, SinkSpec};

/// What the commit-policy checks need to know about the sinks.
pub(super) struct SinkSummary {
    /// The valid sinks.
    pub(super) specs: Vec<SinkSpec>,
    /// Entries in the list, valid or not.
    pub(super) count: usize,
    /// Whether any entry is required (explicitly or by default).
    pub(super) any_required: bool,
}

impl Ctx<'_> {
    /// `spec.sinks`: required, at least one entry.
    pub(super) fn sinks(&mut self, v: Option<&Value>, catalog: &dyn Catalog) -> SinkSummary {
        let mut summary = SinkSummary { specs: Vec::new(), count: 0, any_required: false };
        let fix = "add `sinks:` with at least one `- type: <type>` entry whose `config` has an `id`";
        let items = match v {
            Some(Value::Array(a)) if !a.is_empty() => a,
            None | Some(Value::Null) => {
                self.err("spec.sinks", "missing required key; a pipeline needs at least one sink", fix);
                return summary;
            }
            Some(Value::Array(_)) => {
                self.err("spec.sinks", "must list at least one sink", fix);
                return summary;
            }
            Some(other) => {
                self.err("spec.sinks", format!("expected a list, found {}", describe(other)), fix);
                return summary;
            }
        };
        summary.count = items.len();
        let known = catalog.sink_types();
        let mut ids: HashMap<String, usize> = HashMap::new();
        for (i, item) in items.iter().enumerate() {
            let base = format!("spec.sinks[{i}]");
            let Some(m) = item.as_object() else {
                self.err(
                    base,
                    format!("expected a mapping with `type` and `config`, found {}", describe(item)),
                    "write each sink as `- type: <type>` with a `config:` mapping holding its `id`",
                );
                summary.any_required = true;
                continue;
            };
            self.check_keys(m, &base, COMPONENT_KEYS);
            let kind = self.component_type(m, &base, "sink", &known);
            let config_path = join(&base, "config");
            let Some(config) =
                self.required_map(m.get("config"), &config_path, "add `config:` with at least `id: <sink-id>`")
            else {
                summary.any_required = true;
                continue;
            };
            let id_path = join(&config_path, "id");
            let id = self.config_id(
                config,
                &id_path,
                &format!("set `id: <sink-id>` under {config_path} (unique within the pipeline)"),
            );
            if let Some(id) = &id {
                match ids.get(id) {
                    Some(j) => self.err(
                        id_path.clone(),
                        format!("duplicate sink id `{id}`: also used by spec.sinks[{j}]"),
                        "give each sink of the pipeline a unique config.id",
                    ),
                    None => {
                        ids.insert(id.clone(), i);
                    }
                }
            }
            let required = match config.get("required") {
                None | Some(Value::Null) => Some(true),
                Some(Value::Bool(b)) => Some(*b),
                Some(other) => {
                    self.err(
                        join(&config_path, "required"),
                        format!("expected true or false, found {}", describe(other)),
                        "set `required: true` (the default) or `required: false`",
                    );
                    None
                }
            };
            summary.any_required |= required.unwrap_or(true);
            let delivery = self.delivery(config, &config_path);
            let own: Map<String, Value> = config
                .iter()
                .filter(|(k, _)| !SINK_COMMON_KEYS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let Some(kind) = kind else { continue };
            if let Err(e) = catalog.check_sink(&kind, &own) {
                self.catalog_err(&config_path, "sink", &kind, e);
                continue;
            }
            if let (Some(id), Some(required), Some(delivery)) = (id, required, delivery) {
                summary.specs.push(SinkSpec { kind, id, required, delivery, config: own });
            }
        }
        summary
    }

    /// The delivery settings among a sink's common keys.
    fn delivery(&mut self, config: &Map<String, Value>, base: &str) -> Option<DeliveryConfig> {
        let mut d = DeliveryConfig::default();
        let mut ok = true;
        let mut millis = |cx: &mut Self, key: &str, default: Duration, what: &str| -> Duration {
            match config.get(key) {
                None => default,
                Some(v) => match int_in(v, 1, u64::MAX) {
                    Some(n) => Duration::from_millis(n),
                    None => {
                        cx.err(
                            join(base, key),
                            format!("must be a positive integer (milliseconds), found {}", describe(v)),
                            format!(
                                "set `{key}` to the {what} in milliseconds (default {}), or remove it",
                                default.as_millis()
                            ),
                        );
                        ok = false;
                        default
                    }
                },
            }
        };
        d.timeout = millis(self, "timeout_ms", d.timeout, "time limit of one delivery attempt");
        d.initial_backoff = millis(self, "retry_initial_ms", d.initial_backoff, "first retry backoff");
        d.max_backoff = millis(self, "retry_max_ms", d.max_backoff, "longest retry backoff");
        if let Some(v) = config.get("max_attempts") {
            match int_in(v, 1, u64::from(u32::MAX)) {
                Some(n) => d.max_attempts = n as u32,
                None => {
                    self.err(
                        join(base, "max_attempts"),
                        format!("must be a positive integer, found {}", describe(v)),
                        format!("set `max_attempts` to at least 1 (default {}), or remove it", d.max_attempts),
                    );
                    ok = false;
                }
            }
        }
        if ok && d.initial_backoff > d.max_backoff {
            self.err(
                join(base, "retry_initial_ms"),
                format!(
                    "retry_initial_ms ({}) exceeds retry_max_ms ({})",
                    d.initial_backoff.as_millis(),
                    d.max_backoff.as_millis()
                ),
                "make retry_initial_ms at most retry_max_ms",
            );
            ok = false;
        }
        ok.then_some(d)
    }
}
