//! The config every table sink shares: where rows go (`target` template,
//! `tables` renames), how they are applied (`mode`, `key`), what the sink
//! may do to the target's schema (`create_tables`, `schema_changes`), the
//! statement size bound (`batch`) and the progress table's name.
//!
//! This module checks offline only: it never connects and never reads files.

use std::collections::BTreeMap;

use deltaforge_core::{ConfigProblem, Event};
use deltaforge_encoding::Template;
use schemars::JsonSchema;
use serde::Deserialize;

/// How events become rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The target table mirrors the source table: inserts and updates are
    /// upserts by key, deletes delete by key, truncates truncate.
    #[default]
    Upsert,
    /// Every event is appended as one row of an audit table (`op`, the
    /// event id, position, timestamp, both images as JSON).
    Append,
}

/// What the sink does when a source table's schema changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SchemaChanges {
    /// Added, dropped and widened columns are applied to the target before
    /// the first event that carries them; a narrowing change stops the
    /// pipeline.
    #[default]
    Follow,
    /// The target's schema is left alone; only the columns the target has
    /// are written.
    Ignore,
    /// Any change of a table's schema stops the pipeline.
    Stop,
}

/// Statement sizes.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplyBatch {
    /// Rows per bulk statement (one `COPY` into the staging table and one
    /// merge, or one multi-row statement); larger batches use several.
    #[serde(default = "default_max_rows")]
    pub max_rows_per_statement: usize,
}

fn default_max_rows() -> usize {
    20_000
}

impl Default for ApplyBatch {
    fn default() -> Self {
        ApplyBatch { max_rows_per_statement: default_max_rows() }
    }
}

/// Table mapping.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Tables {
    /// Target `schema.table` (PostgreSQL) or `database.table` (MySQL) of
    /// every source table, a template with `${db}` and `${table}`
    /// (default `${db}.${table}`: the same names), e.g. `replica.${table}`.
    #[serde(default = "default_template")]
    pub template: String,
    /// Per-table renames, `source_db.table: target_schema.table`; these win
    /// over `template`.
    #[serde(default)]
    pub rename: BTreeMap<String, String>,
}

fn default_template() -> String {
    "${db}.${table}".into()
}

impl Default for Tables {
    fn default() -> Self {
        Tables { template: default_template(), rename: BTreeMap::new() }
    }
}

/// The config of a table sink (`type: postgres`, `type: mysql`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TableSinkConfig {
    /// The target database, e.g. `postgres://user:pass@host:5432/db?sslmode=require`
    /// or `mysql://user:pass@host:3306/db`; shown only redacted.
    pub dsn: String,
    /// Where each source table's rows go.
    #[serde(default)]
    pub tables: Tables,
    /// `upsert` (a mirror of the source table) or `append` (an audit log).
    #[serde(default)]
    pub mode: Mode,
    /// Key columns per source table (`db.table: [col, ...]`) for tables
    /// without a primary key; by default the source's primary key.
    #[serde(default)]
    pub key: BTreeMap<String, Vec<String>>,
    /// Create a missing target table from the source schema (columns,
    /// types, primary key). Default true.
    #[serde(default = "yes")]
    pub create_tables: bool,
    /// `follow` (default), `ignore` or `stop`.
    #[serde(default)]
    pub schema_changes: SchemaChanges,
    /// Statement sizes.
    #[serde(default)]
    pub batch: ApplyBatch,
    /// The table in the target that records the sink's progress, written in
    /// the same transaction as the rows (default `deltaforge_sink_progress`,
    /// in the connection's default schema/database).
    #[serde(default = "default_progress_table")]
    pub progress_table: String,
    /// Also append one row per applied batch to `{progress_table}_log`
    /// (batch sequence, first and last event, event count): an audit of
    /// exactly-once delivery. Default false.
    #[serde(default)]
    pub apply_log: bool,
}

fn yes() -> bool {
    true
}

fn default_progress_table() -> String {
    "deltaforge_sink_progress".into()
}

/// A target table's name: schema (PostgreSQL) or database (MySQL) and table.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetName {
    /// Schema or database.
    pub schema: String,
    /// Table.
    pub table: String,
}

impl std::fmt::Display for TargetName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.schema, self.table)
    }
}

/// `a.b` → (`a`, `b`); `None` unless both parts are non-empty.
fn split_name(name: &str) -> Option<TargetName> {
    let (schema, table) = name.split_once('.')?;
    (!schema.is_empty() && !table.is_empty() && !table.contains('.'))
        .then(|| TargetName { schema: schema.into(), table: table.into() })
}

/// A name the sinks can quote safely: printable, no NUL, not too long.
fn plain_identifier(name: &str) -> bool {
    !name.is_empty() && name.len() <= 63 && name.chars().all(|c| !c.is_control())
}

impl TableSinkConfig {
    /// Offline checks: the template, the renames, the keys, the progress
    /// table's name.
    pub fn check(&self) -> Result<(), ConfigProblem> {
        if self.dsn.trim().is_empty() {
            return Err(ConfigProblem::new("dsn", "must not be empty"));
        }
        Template::parse(&self.tables.template).map_err(|e| e.at("tables.template"))?;
        for bad in ["${op}", "${after.", "${before.", "${tenant}", "${pipeline}"] {
            if self.tables.template.contains(bad) {
                return Err(ConfigProblem::new(
                    "tables.template",
                    format!("may use only ${{db}} and ${{table}}, not {bad}…: a table's rows all go to one table"),
                ));
            }
        }
        if !self.tables.template.contains('.') {
            return Err(ConfigProblem::new(
                "tables.template",
                "must name `schema.table`, e.g. `replica.${table}` or `${db}.${table}`",
            ));
        }
        for (source, target) in &self.tables.rename {
            if split_name(source).is_none() {
                return Err(ConfigProblem::new(format!("tables.rename.{source}"), "the key must be `db.table`"));
            }
            if split_name(target).is_none_or(|t| !plain_identifier(&t.schema) || !plain_identifier(&t.table)) {
                return Err(ConfigProblem::new(
                    format!("tables.rename.{source}"),
                    "the target must be `schema.table` (at most 63 characters each)",
                ));
            }
        }
        for (table, columns) in &self.key {
            if split_name(table).is_none() {
                return Err(ConfigProblem::new(format!("key.{table}"), "the key must be `db.table`"));
            }
            if columns.is_empty() || columns.iter().any(|c| !plain_identifier(c)) {
                return Err(ConfigProblem::new(format!("key.{table}"), "must list at least one column name"));
            }
        }
        if !plain_identifier(&self.progress_table) || self.progress_table.len() > 59 {
            return Err(ConfigProblem::new("progress_table", "must be a table name of at most 59 characters"));
        }
        if self.batch.max_rows_per_statement == 0 {
            return Err(ConfigProblem::new("batch.max_rows_per_statement", "must be at least 1"));
        }
        Ok(())
    }

    /// The target table of the event's source table.
    pub fn target_of(&self, event: &Event) -> Result<TargetName, String> {
        let source = format!("{}.{}", event.source.db, event.source.table);
        if let Some(target) = self.tables.rename.get(&source) {
            return split_name(target).ok_or_else(|| format!("tables.rename.{source}: not `schema.table`"));
        }
        let template = Template::parse(&self.tables.template).map_err(|e| e.to_string())?;
        let rendered = template.render(event);
        split_name(&rendered)
            .filter(|t| plain_identifier(&t.schema) && plain_identifier(&t.table))
            .ok_or_else(|| format!("tables.template renders {rendered:?} for {source}: not `schema.table`"))
    }

    /// The configured key override of a source table.
    pub fn key_override(&self, db: &str, table: &str) -> Option<&[String]> {
        self.key.get(&format!("{db}.{table}")).map(Vec::as_slice)
    }

    /// The apply-log table's name.
    pub fn apply_log_table(&self) -> String {
        format!("{}_log", self.progress_table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltaforge_core::component::check_config;
    use serde_json::json;

    impl deltaforge_core::ComponentConfig for TableSinkConfig {
        fn check(&self) -> Result<(), ConfigProblem> {
            TableSinkConfig::check(self)
        }
    }

    fn field(v: serde_json::Value) -> String {
        check_config::<TableSinkConfig>(v.as_object().unwrap()).unwrap_err().field
    }

    #[test]
    fn defaults() {
        let c: TableSinkConfig = check_config(json!({"dsn": "postgres://h/db"}).as_object().unwrap()).unwrap();
        assert_eq!(c.mode, Mode::Upsert);
        assert_eq!(c.schema_changes, SchemaChanges::Follow);
        assert!(c.create_tables);
        assert!(!c.apply_log);
        assert_eq!(c.progress_table, "deltaforge_sink_progress");
        assert_eq!(c.apply_log_table(), "deltaforge_sink_progress_log");
        assert_eq!(c.tables.template, "${db}.${table}");
        assert_eq!(c.batch.max_rows_per_statement, 20_000);
    }

    #[test]
    fn every_check_names_its_field() {
        assert_eq!(field(json!({"dsn": ""})), "dsn");
        assert_eq!(field(json!({"dsn": "x", "tables": {"template": "${nope}.t"}})), "tables.template");
        assert_eq!(field(json!({"dsn": "x", "tables": {"template": "r.${after.id}"}})), "tables.template");
        assert_eq!(field(json!({"dsn": "x", "tables": {"template": "${table}"}})), "tables.template");
        assert_eq!(field(json!({"dsn": "x", "tables": {"rename": {"a": "b.c"}}})), "tables.rename.a");
        assert_eq!(field(json!({"dsn": "x", "tables": {"rename": {"a.b": "c"}}})), "tables.rename.a.b");
        assert_eq!(field(json!({"dsn": "x", "key": {"a.b": []}})), "key.a.b");
        assert_eq!(field(json!({"dsn": "x", "progress_table": ""})), "progress_table");
        assert_eq!(field(json!({"dsn": "x", "batch": {"max_rows_per_statement": 0}})), "batch.max_rows_per_statement");
        assert_eq!(field(json!({"dsn": "x", "mode": "merge"})), "mode");
        assert_eq!(field(json!({"dsn": "x", "extra": 1})), "extra");
    }

    #[test]
    fn targets_follow_renames_then_the_template() {
        let c: TableSinkConfig = check_config(
            json!({"dsn": "x", "tables": {"template": "replica.${table}", "rename": {"shop.users": "public.customers"}}})
                .as_object()
                .unwrap(),
        )
        .unwrap();
        let mut e = deltaforge_core::testing::EventBuilder::new(1).table("shop.orders").build();
        assert_eq!(c.target_of(&e).unwrap().to_string(), "replica.orders");
        e.source.table = "users".into();
        assert_eq!(c.target_of(&e).unwrap().to_string(), "public.customers");
    }
}
