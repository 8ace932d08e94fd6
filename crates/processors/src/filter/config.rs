//! The `filter` processor's settings as written in the pipeline spec.
//!
//! It only describes the YAML shape; it must never interpret the `where`
//! tree (that is `parse`'s job) nor test events.

use serde::Deserialize;
use serde_json::Value;

use deltaforge_common::TablePattern;

/// What to do with matching events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Keep matching events and drop the others.
    #[default]
    Keep,
    /// Drop matching events and keep the others.
    Drop,
}

/// Configuration of a `filter` processor (see the module docs).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// Name in metrics and errors; default `filter`.
    #[serde(default)]
    pub name: Option<String>,
    /// `keep` (default) or `drop` matching events.
    #[serde(default)]
    pub action: Action,
    /// Ops that match (`c`, `u`, `d`, `r`, `t` or their long names); default any.
    #[serde(default)]
    pub ops: Option<Vec<String>>,
    /// Tables that match (`db.table` with `*`); default every table.
    #[serde(default)]
    pub include: Vec<TablePattern>,
    /// Tables that never match.
    #[serde(default)]
    pub exclude: Vec<TablePattern>,
    /// The predicate tree (see the module docs).
    #[serde(default, rename = "where")]
    pub predicate: Option<Value>,
}
