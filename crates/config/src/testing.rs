//! A small fake [`Catalog`] for the tests.

use deltaforge_core::ConfigProblem;
use serde_json::{Map, Value};

use crate::Catalog;

type Config = Map<String, Value>;
type Check = Result<(), ConfigProblem>;

/// Known keys and a type check per key: `u` = unsigned integer, `s` =
/// string, `l` = list of strings. Keys in `required` must be present.
fn check(config: &Config, keys: &[(&str, char)], required: &[&str]) -> Check {
    for (k, v) in config {
        let Some((_, t)) = keys.iter().find(|(name, _)| name == k) else {
            let allowed: Vec<String> = keys.iter().map(|(n, _)| format!("`{n}`")).collect();
            return Err(ConfigProblem::new(k, format!("unknown field `{k}`, expected one of {}", allowed.join(", "))));
        };
        let ok = match t {
            'u' => v.is_u64(),
            's' => v.is_string(),
            'l' => v.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
            _ => true,
        };
        if !ok {
            let expected = match t {
                'u' => "u64",
                's' => "a string",
                _ => "a sequence of strings",
            };
            return Err(ConfigProblem::new(k, format!("invalid type: {v}, expected {expected}")));
        }
    }
    for r in required {
        if !config.contains_key(*r) {
            return Err(ConfigProblem::new(*r, format!("missing field `{r}`")));
        }
    }
    Ok(())
}

/// Sources `datagen` and `postgres`; sinks `file`, `stdout`, `discard`;
/// processor `filter`.
pub(crate) struct FakeCatalog;

impl Catalog for FakeCatalog {
    fn source_types(&self) -> Vec<&'static str> {
        vec!["datagen", "postgres"]
    }
    fn sink_types(&self) -> Vec<&'static str> {
        vec!["file", "stdout", "discard"]
    }
    fn processor_types(&self) -> Vec<&'static str> {
        vec!["filter"]
    }
    fn check_source(&self, kind: &str, config: &Config) -> Check {
        match kind {
            "datagen" => check(
                config,
                &[("id", 's'), ("rate", 'u'), ("count", 'u'), ("tables", 'l'), ("rows_per_tx", 'u')],
                &["id"],
            ),
            "postgres" => check(config, &[("id", 's'), ("dsn", 's'), ("tables", 'l')], &["id", "dsn"]),
            _ => Err(ConfigProblem::new("", format!("unknown source type {kind:?}"))),
        }
    }
    fn check_sink(&self, kind: &str, config: &Config) -> Check {
        if config.contains_key("id") || config.contains_key("required") {
            return Err(ConfigProblem::new("id", "common keys must not reach the catalog"));
        }
        match kind {
            "file" => check(config, &[("path", 's'), ("max_bytes", 'u')], &["path"]),
            "stdout" => check(config, &[("format", 's')], &[]),
            "discard" => check(config, &[], &[]),
            _ => Err(ConfigProblem::new("", format!("unknown sink type {kind:?}"))),
        }
    }
    fn check_processor(&self, kind: &str, config: &Config) -> Check {
        match kind {
            "filter" => check(config, &[("expr", 's')], &["expr"]),
            _ => Err(ConfigProblem::new("", format!("unknown processor type {kind:?}"))),
        }
    }
}
