//! `type: flatten` — lifts nested JSON objects in column values into
//! top-level columns named `parent__child`, for sinks and warehouses that
//! want flat rows.
//!
//! ```yaml
//! - type: flatten
//!   config:
//!     tables: [shop.events]   # db.table patterns with `*`; default: every table
//!     separator: "__"         # default "__"
//!     max_depth: 2            # object levels lifted (1..=64); default 8
//!     on_collision: error     # error (default) | suffix
//! ```
//!
//! `{"id": 1, "doc": {"user": {"id": 7, "tags": ["a"]}, "n": 2}}` becomes
//! `{"id": 1, "doc__user__id": 7, "doc__user__tags": ["a"], "doc__n": 2}`;
//! with `max_depth: 1` it becomes
//! `{"id": 1, "doc__user": {"id": 7, "tags": ["a"]}, "doc__n": 2}`.
//!
//! * Lifted columns take the place of their parent column, in the
//!   object's key order. Both the before and the after image are flattened.
//! * **Arrays are left as they are**, including arrays of objects: there is
//!   no index-based naming (`tags__0`), since array lengths vary per row
//!   and would make the column set unbounded.
//! * Empty objects stay as `{}` (lifting them would lose the column).
//!   Strings that contain JSON are not parsed; only JSON values (PostgreSQL
//!   `json`/`jsonb`, MySQL `JSON`) are objects.
//! * Beyond `max_depth` levels, the remaining object is kept as the value
//!   of the deepest lifted column.
//! * **Collisions**: a lifted name may equal an existing column (`a__b`
//!   beside `a: {b: ..}`) or another lifted name (`a: {"b__c": 1, "b":
//!   {"c": 2}}`). Original columns always keep their names. With
//!   `on_collision: error` the batch fails with an error naming the event
//!   and the column; with `suffix` the colliding lifted column is named
//!   `NAME_2` (then `_3`, …, the first free one), in column order.
//!
//! Hand-written: flattening is a short recursive walk and no crate offers
//! the collision and depth rules above. This module never logs values.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use deltaforge_core::{BuildError, ComponentConfig, ConfigProblem, Event, Processor, ProcessorError, Row};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::value::error;
use deltaforge_common::TablePattern;

/// What to do when a lifted column name is already taken.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnCollision {
    /// Fail the batch, naming the event and the column.
    #[default]
    Error,
    /// Name the lifted column `NAME_2`, `NAME_3`, … (first free).
    Suffix,
}

fn default_separator() -> String {
    "__".into()
}

fn default_depth() -> usize {
    8
}

/// Configuration of a `flatten` processor (see the module docs).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FlattenConfig {
    /// Name in metrics and errors; default `flatten`.
    #[serde(default)]
    pub name: Option<String>,
    /// Tables to flatten; default every table.
    #[serde(default)]
    pub tables: Vec<TablePattern>,
    /// Joins parent and child names; default `__`.
    #[serde(default = "default_separator")]
    pub separator: String,
    /// Object levels lifted, 1..=64; default 8.
    #[serde(default = "default_depth")]
    pub max_depth: usize,
    /// Collision rule; default `error`.
    #[serde(default)]
    pub on_collision: OnCollision,
}

impl ComponentConfig for FlattenConfig {
    /// Checks the depth and separator.
    fn check(&self) -> Result<(), ConfigProblem> {
        if !(1..=64).contains(&self.max_depth) {
            return Err(ConfigProblem::new("max_depth", format!("must be between 1 and 64, got {}", self.max_depth)));
        }
        if self.separator.is_empty() {
            return Err(ConfigProblem::new("separator", "must not be empty (default \"__\")"));
        }
        Ok(())
    }
}

/// The `flatten` processor.
#[derive(Debug)]
pub struct FlattenProcessor {
    name: String,
    cfg: FlattenConfig,
}

struct Flattener<'a> {
    cfg: &'a FlattenConfig,
    taken: HashSet<String>,
    out_names: Vec<Arc<str>>,
    out_values: Vec<Value>,
}

impl Flattener<'_> {
    fn lift(&mut self, prefix: &str, obj: Map<String, Value>, depth: usize) -> Result<(), String> {
        for (k, v) in obj {
            let name = format!("{prefix}{}{k}", self.cfg.separator);
            match v {
                Value::Object(m) if !m.is_empty() && depth < self.cfg.max_depth => self.lift(&name, m, depth + 1)?,
                v => self.emit(name, v)?,
            }
        }
        Ok(())
    }

    fn emit(&mut self, name: String, v: Value) -> Result<(), String> {
        let name = if self.taken.contains(&name) {
            match self.cfg.on_collision {
                OnCollision::Error => {
                    return Err(format!(
                        "flattened column {name:?} collides with an existing column; rename one, lower max_depth, \
                         or set on_collision: suffix"
                    ))
                }
                OnCollision::Suffix => {
                    (2..).map(|n| format!("{name}_{n}")).find(|c| !self.taken.contains(c)).unwrap_or(name)
                }
            }
        } else {
            name
        };
        self.taken.insert(name.clone());
        self.out_names.push(name.into());
        self.out_values.push(v);
        Ok(())
    }
}

impl FlattenProcessor {
    /// Builds the processor; errors as [`FlattenConfig::check`].
    pub fn new(cfg: FlattenConfig) -> Result<Self, BuildError> {
        cfg.check()?;
        Ok(FlattenProcessor { name: cfg.name.clone().unwrap_or_else(|| "flatten".into()), cfg })
    }

    /// Flattens one row in place; untouched when it has no non-empty object.
    fn flatten_row(&self, row: &mut Row) -> Result<(), String> {
        if !row.values().iter().any(|v| v.as_object().is_some_and(|m| !m.is_empty())) {
            return Ok(());
        }
        let columns = row.columns().clone();
        let mut f = Flattener {
            cfg: &self.cfg,
            taken: columns.iter().map(|c| c.to_string()).collect(),
            out_names: Vec::with_capacity(columns.len() + 8),
            out_values: Vec::with_capacity(columns.len() + 8),
        };
        let values = row.values_mut();
        for (i, name) in columns.iter().enumerate() {
            match std::mem::take(&mut values[i]) {
                Value::Object(m) if !m.is_empty() => f.lift(name, m, 1)?,
                v => {
                    f.out_names.push(name.clone());
                    f.out_values.push(v);
                }
            }
        }
        *row = Row::new(f.out_names.into(), f.out_values);
        Ok(())
    }
}

#[async_trait]
impl Processor for FlattenProcessor {
    fn name(&self) -> &str {
        &self.name
    }

    async fn process(&mut self, mut events: Vec<Event>) -> Result<Vec<Event>, ProcessorError> {
        for (i, e) in events.iter_mut().enumerate() {
            if !self.cfg.tables.is_empty() && !TablePattern::any(&self.cfg.tables, &e.source.db, &e.source.table) {
                continue;
            }
            let mut before = e.before.take();
            let mut after = e.after.take();
            let result = before
                .as_mut()
                .map_or(Ok(()), |r| self.flatten_row(r))
                .and_then(|_| after.as_mut().map_or(Ok(()), |r| self.flatten_row(r)));
            e.before = before;
            e.after = after;
            if let Err(m) = result {
                return Err(error(&self.name, Some((i, e)), m));
            }
        }
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{after, before, event, insert};
    use deltaforge_core::Op;
    use serde_json::json;

    fn processor(cfg: Value) -> FlattenProcessor {
        FlattenProcessor::new(serde_json::from_value(cfg).unwrap()).unwrap()
    }

    async fn flat(cfg: Value, row: Value) -> Result<Value, ProcessorError> {
        let mut p = processor(cfg);
        let out = p.process(vec![insert("s.t", row)]).await?;
        Ok(after(&out[0]))
    }

    fn keys(v: &Value) -> Vec<&str> {
        v.as_object().unwrap().keys().map(String::as_str).collect()
    }

    #[tokio::test]
    async fn nested_objects_become_columns_in_place() {
        let row = json!({"id": 1, "doc": {"user": {"id": 7, "name": "ada"}, "n": 2}, "z": true});
        let v = flat(json!({}), row).await.unwrap();
        assert_eq!(v, json!({"id": 1, "doc__user__id": 7, "doc__user__name": "ada", "doc__n": 2, "z": true}));
        assert_eq!(keys(&v), ["id", "doc__user__id", "doc__user__name", "doc__n", "z"], "order kept");
    }

    #[tokio::test]
    async fn arrays_empty_objects_and_strings_stay() {
        let row = json!({"tags": ["a", {"b": 1}], "o": {"list": [{"x": 1}], "e": {}}, "e": {}, "s": "{\"a\":1}"});
        let v = flat(json!({}), row).await.unwrap();
        assert_eq!(v, json!({"tags": ["a", {"b": 1}], "o__list": [{"x": 1}], "o__e": {}, "e": {}, "s": "{\"a\":1}"}));
    }

    #[tokio::test]
    async fn depth_limit_keeps_the_rest_as_an_object() {
        let row = json!({"a": {"b": {"c": {"d": 1}}}});
        assert_eq!(flat(json!({"max_depth": 1}), row.clone()).await.unwrap(), json!({"a__b": {"c": {"d": 1}}}));
        assert_eq!(flat(json!({"max_depth": 2}), row.clone()).await.unwrap(), json!({"a__b__c": {"d": 1}}));
        assert_eq!(flat(json!({"max_depth": 3}), row.clone()).await.unwrap(), json!({"a__b__c__d": 1}));
        assert_eq!(flat(json!({"max_depth": 64}), row).await.unwrap(), json!({"a__b__c__d": 1}));
        assert_eq!(flat(json!({"separator": "."}), json!({"a": {"b": 1}})).await.unwrap(), json!({"a.b": 1}));
    }

    #[tokio::test]
    async fn collisions_error_by_default() {
        let err = flat(json!({}), json!({"a__b": 1, "a": {"b": 2}})).await.unwrap_err();
        assert_eq!(err.processor, "flatten");
        assert!(err.message.contains("event #0") && err.message.contains("\"a__b\""), "{}", err.message);
        assert!(err.message.contains("on_collision: suffix"), "{}", err.message);
        let err = flat(json!({}), json!({"a": {"b__c": 1, "b": {"c": 2}}})).await.unwrap_err();
        assert!(err.message.contains("\"a__b__c\""), "{}", err.message);
    }

    #[tokio::test]
    async fn collisions_with_suffix_keep_original_names() {
        let cfg = json!({"on_collision": "suffix"});
        // The original column keeps its name even when it comes later.
        let v = flat(cfg.clone(), json!({"a": {"b": 2}, "a__b": 1, "a__b_2": 0})).await.unwrap();
        assert_eq!(v, json!({"a__b_3": 2, "a__b": 1, "a__b_2": 0}));
        let v = flat(cfg, json!({"a": {"b__c": 1, "b": {"c": 2}}})).await.unwrap();
        assert_eq!(v, json!({"a__b__c": 1, "a__b__c_2": 2}));
    }

    #[tokio::test]
    async fn both_images_and_table_patterns() {
        let mut p = processor(json!({"tables": ["s.t"]}));
        let img = json!({"o": {"x": 1}});
        let out = p
            .process(vec![
                event(Op::Update, "s.t", Some(img.clone()), Some(img.clone())),
                event(Op::Update, "s.other", Some(img.clone()), Some(img.clone())),
            ])
            .await
            .unwrap();
        assert_eq!(before(&out[0]), json!({"o__x": 1}));
        assert_eq!(after(&out[0]), json!({"o__x": 1}));
        assert_eq!(after(&out[1]), img, "other tables untouched");
    }

    #[test]
    fn config_checks() {
        for (cfg, field) in [
            (json!({"max_depth": 0}), "max_depth"),
            (json!({"max_depth": 65}), "max_depth"),
            (json!({"separator": ""}), "separator"),
        ] {
            let c: FlattenConfig = serde_json::from_value(cfg).unwrap();
            assert_eq!(c.check().unwrap_err().field, field);
        }
        assert!(serde_json::from_value::<FlattenConfig>(json!({"on_collision": "rename"})).is_err());
    }
}
