//! Applying a plan to MySQL/MariaDB: the schema steps (run **before** the
//! batch's transaction, since MySQL commits implicitly around DDL; each
//! guarded by a look at the catalogue, so a replay after a crash finds it
//! done), then, inside the transaction, each table's coalesced changes as
//! multi-row statements with a bounded number of placeholders:
//! `DELETE … WHERE (key) IN (…)` and `INSERT … VALUES (…), (…) ON DUPLICATE
//! KEY UPDATE c = VALUES(c)`; a truncate is `DELETE FROM` (a `TRUNCATE`
//! would commit the transaction).
//!
//! Errors name the table, key columns and statement, never a value.

use std::collections::HashMap;

use deltaforge_core::{Event, RejectedEvent};
use deltaforge_table_core::metrics::SinkMetrics;
use deltaforge_table_core::{
    Action, ColumnType, SchemaChange, SchemaChanges, TableBatch, TableDef, TableSinkConfig, TargetName,
};
use mysql_async::prelude::Queryable;
use mysql_async::Value as My;

use crate::ddl::{alter_sql, create_append_table_sql, create_table_sql, describe, qualified, quote};
use crate::values::to_param;

/// MySQL's limit is 65,535 placeholders per statement.
const MAX_PARAMS: usize = 60_000;

/// A target table as the session knows it.
#[derive(Debug, Clone)]
pub struct Known {
    /// The target's columns and key.
    pub def: TableDef,
    /// The source schema version it was aligned to.
    pub source_version: Option<u64>,
    /// That version's definition, when known.
    pub source_def: Option<TableDef>,
}

/// Why applying failed.
#[derive(Debug)]
pub enum ApplyError {
    /// A statement failed; `context` names table, key and statement.
    Db {
        /// Table, key columns and statement.
        context: String,
        /// The driver's error.
        error: mysql_async::Error,
    },
    /// Will not succeed by retrying.
    Fatal(String),
    /// May succeed later.
    Retry(String),
}

impl ApplyError {
    /// Whether the target refused a value (SQLSTATE class 22, NOT NULL,
    /// invalid JSON, CHECK): the batch is retried in careful mode.
    pub fn is_data(&self) -> bool {
        matches!(self, ApplyError::Db { error: mysql_async::Error::Server(e), .. }
            if e.state.starts_with("22") || [1048, 3140, 4025, 1411].contains(&e.code))
    }
}

/// The text of a driver error without values.
pub fn error_text(e: &mysql_async::Error) -> String {
    match e {
        mysql_async::Error::Server(s) if s.state.starts_with("22") || [1048, 3140, 4025, 1411].contains(&s.code) => {
            format!("the target refused a value (error {}, SQLSTATE {})", s.code, s.state)
        }
        mysql_async::Error::Server(s) => format!("{} (error {}, SQLSTATE {})", s.message, s.code, s.state),
        other => other.to_string(),
    }
}

/// Makes target tables ready (outside the transaction).
pub struct Schemas<'a> {
    /// A connection outside any transaction.
    pub conn: &'a mut mysql_async::Conn,
    /// The config.
    pub cfg: &'a TableSinkConfig,
    /// Known targets.
    pub known: &'a mut HashMap<TargetName, Known>,
    /// Metrics.
    pub metrics: &'a SinkMetrics,
}

impl Schemas<'_> {
    async fn run(&mut self, t: &TargetName, sql: String, what: &str) -> Result<(), ApplyError> {
        tracing::info!(table = %t, statement = %sql, "applying a schema change to the target");
        self.conn
            .query_drop(sql)
            .await
            .map_err(|error| ApplyError::Db { context: format!("table {t}: {what}"), error })?;
        self.metrics.schema_changes.increment(1);
        Ok(())
    }

    async fn describe(&mut self, t: &TargetName) -> Result<Option<TableDef>, ApplyError> {
        describe(self.conn, t)
            .await
            .map_err(|error| ApplyError::Db { context: format!("table {t}: reading its columns"), error })
    }

    async fn create(&mut self, t: &TargetName, sql: String) -> Result<(), ApplyError> {
        if !self.cfg.create_tables {
            return Err(ApplyError::Fatal(format!(
                "the target table {t} does not exist and create_tables is false: create it, or set create_tables: true"
            )));
        }
        self.run(t, format!("CREATE DATABASE IF NOT EXISTS {}", quote(&t.schema)), "CREATE DATABASE").await?;
        self.run(t, sql, "CREATE TABLE").await
    }

    /// As the PostgreSQL sink's schema step: create, or follow the change
    /// from the last aligned version (narrowing stops the pipeline).
    pub async fn ensure(
        &mut self,
        source: &str,
        t: &TargetName,
        version: Option<u64>,
        (def, previous): (Option<&TableDef>, Option<&TableDef>),
        key: &[String],
    ) -> Result<(), ApplyError> {
        if self.known.get(t).is_some_and(|k| k.source_version == version) {
            return Ok(());
        }
        let existing = self.describe(t).await?;
        let old = self.known.get(t).and_then(|k| k.source_def.clone()).or_else(|| previous.cloned());
        match (existing, def) {
            (None, None) => {
                return Err(ApplyError::Fatal(format!(
                    "cannot create {t}: no schema of source table {source} is known"
                )))
            }
            (None, Some(def)) => self.create(t, create_table_sql(t, def, key)).await?,
            (Some(existing), Some(def)) if self.cfg.schema_changes != SchemaChanges::Ignore => {
                let changes = old.as_ref().map(|o| o.changes(def)).unwrap_or_default();
                if self.cfg.schema_changes == SchemaChanges::Stop && !changes.is_empty() && self.known.contains_key(t) {
                    return Err(ApplyError::Fatal(format!(
                        "the schema of source table {source} changed and schema_changes is stop"
                    )));
                }
                for change in &changes {
                    if let SchemaChange::Narrow { column, from, to } = change {
                        let (from, to) = (crate::ddl::mysql_type(from, false), crate::ddl::mysql_type(to, false));
                        return Err(ApplyError::Fatal(deltaforge_table_core::types::narrowing_error(
                            source, t, column, &from, &to,
                        )));
                    }
                }
                // Guarded by the catalogue: a replay finds them done.
                for c in def.columns.iter().filter(|c| existing.column(&c.name).is_none()) {
                    let sql = alter_sql(t, &SchemaChange::Add(c.clone())).expect("adds apply");
                    self.run(t, sql, "ALTER TABLE ADD COLUMN").await?;
                }
                for change in &changes {
                    match change {
                        SchemaChange::Drop(name) if existing.column(name).is_some() => {
                            self.run(t, alter_sql(t, change).expect("drops apply"), "ALTER TABLE DROP COLUMN").await?
                        }
                        SchemaChange::Widen(c) if existing.column(&c.name).is_some_and(|e| e.ty != c.ty) => {
                            self.run(t, alter_sql(t, change).expect("widens apply"), "ALTER TABLE MODIFY COLUMN")
                                .await?
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
        let def_now = self.describe(t).await?.ok_or_else(|| ApplyError::Retry(format!("table {t} vanished")))?;
        self.known.insert(t.clone(), Known { def: def_now, source_version: version, source_def: def.cloned() });
        Ok(())
    }

    /// The audit table of `mode: append`.
    pub async fn ensure_append(&mut self, t: &TargetName) -> Result<(), ApplyError> {
        if self.known.contains_key(t) {
            return Ok(());
        }
        if self.describe(t).await?.is_none() {
            self.create(t, create_append_table_sql(t)).await?;
        }
        let def = self.describe(t).await?.unwrap_or_default();
        self.known.insert(t.clone(), Known { def, source_version: None, source_def: None });
        Ok(())
    }
}

/// Applies row changes inside the transaction.
pub struct Rows<'a, 't> {
    /// The batch's transaction.
    pub tx: &'a mut mysql_async::Transaction<'t>,
    /// Known targets.
    pub known: &'a HashMap<TargetName, Known>,
    /// The events (after the skipped prefix).
    pub events: &'a [Event],
    /// Rows per statement.
    pub max_rows: usize,
    /// Metrics.
    pub metrics: &'a SinkMetrics,
    /// Refused events.
    pub rejected: &'a mut Vec<RejectedEvent>,
}

fn convert(values: &[(&ColumnType, &serde_json::Value, &str)]) -> Result<Vec<My>, String> {
    values.iter().map(|(ty, v, col)| to_param(ty, v).map_err(|e| format!("column {col} {e}"))).collect()
}

impl Rows<'_, '_> {
    async fn exec(
        &mut self,
        t: &TargetName,
        key: &[String],
        what: &str,
        sql: String,
        params: Vec<My>,
    ) -> Result<u64, ApplyError> {
        let context = format!("table {t} (key {}): {what}", key.join(", "));
        self.tx.exec_drop(sql, params).await.map_err(|error| ApplyError::Db { context, error })?;
        Ok(self.tx.affected_rows())
    }

    /// `DELETE FROM` the whole table (a truncate inside the transaction).
    pub async fn truncate(&mut self, t: &TargetName) -> Result<(), ApplyError> {
        if self.known.contains_key(t) {
            self.exec(t, &[], "DELETE FROM (truncate)", format!("DELETE FROM {}", qualified(t)), Vec::new()).await?;
            self.metrics.truncates.increment(1);
        }
        Ok(())
    }

    /// One table's coalesced actions (upsert mode).
    pub async fn apply_table(&mut self, batch: &TableBatch) -> Result<(), ApplyError> {
        let (t, key) = (&batch.target, &batch.key);
        let def = self
            .known
            .get(t)
            .map(|k| k.def.clone())
            .ok_or_else(|| ApplyError::Fatal(format!("table {t} was never described")))?;
        let key_types: Vec<&ColumnType> = key
            .iter()
            .map(|k| {
                def.column(k)
                    .map(|c| &c.ty)
                    .ok_or_else(|| ApplyError::Fatal(format!("table {t} has no key column {k}")))
            })
            .collect::<Result<_, _>>()?;
        let deletes: Vec<(&Vec<serde_json::Value>, usize)> = batch
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Delete { key, event } => Some((key, *event)),
                _ => None,
            })
            .collect();
        for chunk in deletes.chunks(self.max_rows.min(MAX_PARAMS / key.len().max(1))) {
            let mut params = Vec::new();
            let mut tuples = 0;
            for (values, event) in chunk {
                let typed: Vec<_> =
                    values.iter().zip(&key_types).zip(key).map(|((v, ty), k)| (*ty, v, k.as_str())).collect();
                match convert(&typed) {
                    Ok(p) => {
                        params.extend(p);
                        tuples += 1;
                    }
                    Err(reason) => {
                        self.rejected.push(RejectedEvent { index: *event, reason: format!("table {t}: {reason}") })
                    }
                }
            }
            if tuples == 0 {
                continue;
            }
            let tuple = format!("({})", vec!["?"; key.len()].join(", "));
            let cols = format!("({})", key.iter().map(|k| quote(k)).collect::<Vec<_>>().join(", "));
            let sql = format!("DELETE FROM {} WHERE {cols} IN ({})", qualified(t), vec![tuple; tuples].join(", "));
            let deleted = self.exec(t, key, "DELETE … WHERE key IN", sql, params).await?;
            self.metrics.deletes.increment(deleted);
            self.metrics.missing_rows.increment((tuples as u64).saturating_sub(deleted));
        }
        let mut groups: Vec<(Vec<String>, Vec<&Action>)> = Vec::new();
        for a in &batch.actions {
            let Action::Upsert { row, .. } = a else { continue };
            let cols: Vec<String> =
                row.columns().iter().filter(|c| def.column(c).is_some()).map(|c| c.to_string()).collect();
            match groups.iter_mut().find(|(c, _)| *c == cols) {
                Some((_, g)) => g.push(a),
                None => groups.push((cols, vec![a])),
            }
        }
        for (cols, actions) in groups {
            let types: Vec<&ColumnType> = cols.iter().map(|c| &def.column(c).expect("filtered").ty).collect();
            for chunk in actions.chunks(self.max_rows.min(MAX_PARAMS / cols.len().max(1))) {
                let mut params = Vec::new();
                let mut rows = 0usize;
                for a in chunk {
                    let Action::Upsert { row, event } = a else { continue };
                    let typed: Vec<_> = cols
                        .iter()
                        .zip(&types)
                        .map(|(c, ty)| (*ty, row.get(c).unwrap_or(&serde_json::Value::Null), c.as_str()))
                        .collect();
                    match convert(&typed) {
                        Ok(p) => {
                            params.extend(p);
                            rows += 1;
                        }
                        Err(reason) => {
                            self.rejected.push(RejectedEvent { index: *event, reason: format!("table {t}: {reason}") })
                        }
                    }
                }
                if rows == 0 {
                    continue;
                }
                let list = cols.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", ");
                let tuple = format!("({})", vec!["?"; cols.len()].join(", "));
                let mut updates: Vec<String> =
                    cols.iter().filter(|c| !key.contains(c)).map(|c| format!("{0} = VALUES({0})", quote(c))).collect();
                if updates.is_empty() {
                    updates.push(format!("{0} = {0}", quote(&key[0])));
                }
                let sql = format!(
                    "INSERT INTO {} ({list}) VALUES {} ON DUPLICATE KEY UPDATE {}",
                    qualified(t),
                    vec![tuple; rows].join(", "),
                    updates.join(", ")
                );
                self.exec(t, key, "INSERT … ON DUPLICATE KEY UPDATE", sql, params).await?;
                self.metrics.upserts.increment(rows as u64);
            }
        }
        Ok(())
    }

    /// Appends audit rows (append mode).
    pub async fn append_table(&mut self, batch: &TableBatch) -> Result<(), ApplyError> {
        let t = &batch.target;
        for chunk in batch.appends.chunks(self.max_rows.min(MAX_PARAMS / 9)) {
            let mut params = Vec::new();
            for i in chunk {
                let e = &self.events[*i];
                let json =
                    |v: Option<serde_json::Value>| v.map(|v| My::Bytes(v.to_string().into_bytes())).unwrap_or(My::NULL);
                params.extend([
                    My::Bytes(e.idempotency_key().into_bytes()),
                    My::Bytes(e.op.code().as_bytes().to_vec()),
                    My::Bytes(e.source.db.as_bytes().to_vec()),
                    My::Bytes(e.source.table.as_bytes().to_vec()),
                    json(Some(e.source.position.to_json())),
                    My::Int(e.source.ts_ms),
                    e.tx_id.as_deref().map(|s| My::Bytes(s.as_bytes().to_vec())).unwrap_or(My::NULL),
                    json(e.before.as_ref().map(|r| r.to_json())),
                    json(e.after.as_ref().map(|r| r.to_json())),
                ]);
            }
            let tuples = vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ");
            let sql = format!(
                "INSERT INTO {} (event_id, op, source_db, source_table, position, ts_ms, tx_id, `before`, `after`) VALUES {tuples}",
                qualified(t)
            );
            let n = self.exec(t, &[], "INSERT (append)", sql, params).await?;
            self.metrics.appends.increment(n);
        }
        Ok(())
    }
}
