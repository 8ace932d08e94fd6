//! Schema steps: before the first row of a source table under a schema
//! version, make the target ready for it — create it when missing
//! (`create_tables`), and under `schema_changes: follow` add, drop and
//! widen columns as the source did. A narrowing change stops the pipeline
//! under `follow` with `deltaforge_table_core::types::narrowing_error`; under `stop` any change does;
//! under `ignore` the target is left alone.
//!
//! Runs inside the batch's transaction; never writes rows.

use std::collections::HashMap;

use deltaforge_table_core::metrics::SinkMetrics;
use deltaforge_table_core::{SchemaChange, SchemaChanges, TableDef, TableSinkConfig, TargetName};
use tokio_postgres::Transaction;

use crate::apply::{ApplyError, Known};
use deltaforge_table_core::types::narrowing_error;

use crate::ddl::{alter_sql, create_append_table_sql, create_table_sql, describe, pg_type};

/// What a schema step needs.
pub struct Follow<'a, 't> {
    /// The batch's transaction.
    pub tx: &'a Transaction<'t>,
    /// The sink's config.
    pub cfg: &'a TableSinkConfig,
    /// The session's known targets.
    pub known: &'a mut HashMap<TargetName, Known>,
    /// Metrics.
    pub metrics: &'a SinkMetrics,
}

impl Follow<'_, '_> {
    async fn run(&self, t: &TargetName, sql: &str, what: &str) -> Result<(), ApplyError> {
        tracing::info!(table = %t, statement = sql, "applying a schema change to the target");
        self.tx
            .batch_execute(sql)
            .await
            .map_err(|error| ApplyError::Db { context: format!("table {t}: {what}"), error })?;
        self.metrics.schema_changes.increment(1);
        Ok(())
    }

    async fn describe(&mut self, t: &TargetName) -> Result<Option<TableDef>, ApplyError> {
        describe(self.tx, t)
            .await
            .map(|d| d.map(|d| d.def))
            .map_err(|error| ApplyError::Db { context: format!("table {t}: reading its columns"), error })
    }

    /// Makes target `t` ready for rows of source table `source` at
    /// `version` (definition `def` when the registry has it, `previous`
    /// the version before it, key `key`).
    pub async fn ensure(
        &mut self,
        source: &str,
        t: &TargetName,
        version: Option<u64>,
        (def, previous): (Option<&TableDef>, Option<&TableDef>),
        key: &[String],
    ) -> Result<(), ApplyError> {
        if let Some(k) = self.known.get(t) {
            if k.source_version == version {
                return Ok(());
            }
            let old = k.source_def.clone();
            self.follow(source, t, old.as_ref(), def).await?;
        } else {
            match self.describe(t).await? {
                None if !self.cfg.create_tables => {
                    return Err(ApplyError::Fatal(format!(
                        "the target table {t} does not exist and create_tables is false: create it, or set create_tables: true"
                    )))
                }
                None => {
                    let def = def.ok_or_else(|| {
                        ApplyError::Fatal(format!(
                            "cannot create {t}: the schema registry has no schema of source table {source}"
                        ))
                    })?;
                    let schema = format!("CREATE SCHEMA IF NOT EXISTS {}", crate::ddl::quote(&t.schema));
                    self.run(t, &schema, "CREATE SCHEMA").await?;
                    self.run(t, &create_table_sql(t, def, key), "CREATE TABLE").await?;
                }
                Some(existing) => {
                    // First sight of an existing table (a new session): add
                    // the columns rows need, and drop those the source
                    // dropped in this version (still in the previous one).
                    if let (SchemaChanges::Follow, Some(def)) = (self.cfg.schema_changes, def) {
                        for c in def.columns.iter().filter(|c| existing.column(&c.name).is_none()) {
                            let sql = alter_sql(t, &SchemaChange::Add(c.clone())).expect("adds always apply");
                            self.run(t, &sql, "ALTER TABLE ADD COLUMN").await?;
                        }
                        let dropped = existing.columns.iter().filter(|c| {
                            def.column(&c.name).is_none() && previous.is_some_and(|p| p.column(&c.name).is_some())
                        });
                        for c in dropped {
                            let sql = alter_sql(t, &SchemaChange::Drop(c.name.clone())).expect("drops always apply");
                            self.run(t, &sql, "ALTER TABLE DROP COLUMN").await?;
                        }
                    }
                }
            }
        }
        let target_def = self.describe(t).await?.ok_or_else(|| ApplyError::Retry(format!("table {t} vanished")))?;
        self.known.insert(
            t.clone(),
            Known { def: target_def, staging: None, source_version: version, source_def: def.cloned() },
        );
        Ok(())
    }

    async fn follow(
        &mut self,
        source: &str,
        t: &TargetName,
        old: Option<&TableDef>,
        new: Option<&TableDef>,
    ) -> Result<(), ApplyError> {
        let (Some(old), Some(new)) = (old, new) else { return Ok(()) };
        let changes = old.changes(new);
        if changes.is_empty() {
            return Ok(());
        }
        match self.cfg.schema_changes {
            SchemaChanges::Ignore => Ok(()),
            SchemaChanges::Stop => Err(ApplyError::Fatal(format!(
                "the schema of source table {source} changed ({} change(s), e.g. {:?}) and schema_changes is stop",
                changes.len(),
                changes[0]
            ))),
            SchemaChanges::Follow => {
                for change in &changes {
                    if let SchemaChange::Narrow { column, from, to } = change {
                        return Err(ApplyError::Fatal(narrowing_error(
                            source,
                            t,
                            column,
                            &pg_type(from),
                            &pg_type(to),
                        )));
                    }
                }
                for change in &changes {
                    let sql = alter_sql(t, change).expect("narrowing handled above");
                    self.run(t, &sql, "ALTER TABLE").await?;
                }
                Ok(())
            }
        }
    }

    /// Makes the audit table of `mode: append` exist.
    pub async fn ensure_append(&mut self, t: &TargetName) -> Result<(), ApplyError> {
        if self.known.contains_key(t) {
            return Ok(());
        }
        if self.describe(t).await?.is_none() {
            if !self.cfg.create_tables {
                return Err(ApplyError::Fatal(format!(
                    "the target table {t} does not exist and create_tables is false"
                )));
            }
            let schema = format!("CREATE SCHEMA IF NOT EXISTS {}", crate::ddl::quote(&t.schema));
            self.run(t, &schema, "CREATE SCHEMA").await?;
            self.run(t, &create_append_table_sql(t), "CREATE TABLE (append)").await?;
        }
        let def = self.describe(t).await?.unwrap_or_default();
        self.known.insert(t.clone(), Known { def, staging: None, source_version: None, source_def: None });
        Ok(())
    }
}
