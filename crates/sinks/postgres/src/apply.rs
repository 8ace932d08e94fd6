//! Applying a plan's steps inside the batch's transaction: schema steps
//! (create / follow), truncates, and each table's coalesced changes
//! through a staging table:
//!
//! 1. `COPY` the rows (text format) into a temporary staging table shaped
//!    like the target (`CREATE TEMP TABLE … AS SELECT * FROM target WITH
//!    NO DATA`, created once per session and target, `ON COMMIT DELETE
//!    ROWS`);
//! 2. `DELETE FROM target USING staging` for deletes, or `INSERT INTO
//!    target SELECT … FROM staging ON CONFLICT (key) DO UPDATE` for upserts;
//! 3. `TRUNCATE` the staging table for the next group.
//!
//! In careful mode (after a batch failed on a value the target refused)
//! every action runs alone inside a savepoint, so the refused ones are
//! found and reported while the rest is applied.
//!
//! Errors name the table, its key columns and the statement, never a value.

use std::collections::HashMap;

use bytes::Bytes;
use deltaforge_core::{Event, RejectedEvent};
use deltaforge_table_core::metrics::SinkMetrics;
use deltaforge_table_core::{Action, ColumnType, TableBatch, TableDef, TargetName};
use futures::SinkExt;
use tokio_postgres::Transaction;

use crate::ddl::{qualified, quote};
use crate::values::push_field;

/// A target table as the session knows it.
#[derive(Debug, Clone)]
pub struct Known {
    /// The target's columns and key, from the catalogue.
    pub def: TableDef,
    /// The staging table of this session, once created.
    pub staging: Option<String>,
    /// The source schema version the target was last aligned to.
    pub source_version: Option<u64>,
    /// That version's definition, when the registry had it.
    pub source_def: Option<TableDef>,
}

/// Why applying failed.
#[derive(Debug)]
pub enum ApplyError {
    /// A statement failed; `context` names the table, key and statement.
    Db {
        /// Table, key columns and statement.
        context: String,
        /// The driver's error.
        error: tokio_postgres::Error,
    },
    /// Will not succeed by retrying.
    Fatal(String),
    /// May succeed later.
    Retry(String),
}

impl ApplyError {
    /// Whether the error is about a value (SQLSTATE class 22, or a NOT NULL
    /// / CHECK violation): the batch is retried in careful mode.
    pub fn is_data(&self) -> bool {
        let ApplyError::Db { error, .. } = self else { return false };
        error.as_db_error().is_some_and(|d| {
            let code = d.code().code();
            code.starts_with("22") || code == "23502" || code == "23514"
        })
    }
}

/// The statement-level text of a driver error, without values: for data
/// errors only the SQLSTATE and column (their messages quote values).
pub fn error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => {
            let code = d.code().code();
            let column = d.column().map(|c| format!(", column {c}")).unwrap_or_default();
            if code.starts_with("22") || code.starts_with("23") {
                format!("the target refused a value (SQLSTATE {code}{column})")
            } else {
                format!("{} (SQLSTATE {code}{column})", d.message())
            }
        }
        None => e.to_string(),
    }
}

/// What one table's changes need from the sink.
pub struct Applier<'a, 't> {
    /// The batch's transaction.
    pub tx: &'a Transaction<'t>,
    /// The delivered events (after the skipped prefix).
    pub events: &'a [Event],
    /// The session's known targets.
    pub known: &'a mut HashMap<TargetName, Known>,
    /// Rows per statement.
    pub max_rows: usize,
    /// Metrics.
    pub metrics: &'a SinkMetrics,
    /// Refused events (indices into `events`).
    pub rejected: &'a mut Vec<RejectedEvent>,
    /// Staging tables created so far in the session (for unique names).
    pub staging_seq: &'a mut u64,
}

fn context(t: &TargetName, key: &[String], statement: &str) -> String {
    format!("table {t} (key {}): {statement}", if key.is_empty() { "none".into() } else { key.join(", ") })
}

impl Applier<'_, '_> {
    fn db(&self, t: &TargetName, key: &[String], statement: &str) -> impl Fn(tokio_postgres::Error) -> ApplyError {
        let context = context(t, key, statement);
        move |error| ApplyError::Db { context: context.clone(), error }
    }

    async fn staging(&mut self, t: &TargetName) -> Result<String, ApplyError> {
        let known = self.known.get(t).ok_or_else(|| ApplyError::Fatal(format!("table {t} was never described")))?;
        if let Some(s) = &known.staging {
            return Ok(s.clone());
        }
        *self.staging_seq += 1;
        let name = format!("deltaforge_stage_{}", self.staging_seq);
        let sql = format!(
            "CREATE TEMP TABLE {} ON COMMIT DELETE ROWS AS SELECT * FROM {} WITH NO DATA",
            quote(&name),
            qualified(t)
        );
        self.tx.batch_execute(&sql).await.map_err(self.db(t, &[], "CREATE TEMP TABLE (staging)"))?;
        self.known.get_mut(t).expect("checked above").staging = Some(name.clone());
        Ok(name)
    }

    async fn copy(&self, t: &TargetName, key: &[String], sql: &str, data: String) -> Result<u64, ApplyError> {
        let err = self.db(t, key, "COPY into the staging table");
        let sink = self.tx.copy_in(sql).await.map_err(&err)?;
        futures::pin_mut!(sink);
        sink.send(Bytes::from(data)).await.map_err(&err)?;
        sink.as_mut().finish().await.map_err(&err)
    }

    /// Applies one table's coalesced actions (upsert mode).
    pub async fn apply_table(&mut self, batch: &TableBatch) -> Result<(), ApplyError> {
        let t = &batch.target;
        let key = &batch.key;
        let def = self
            .known
            .get(t)
            .map(|k| k.def.clone())
            .ok_or_else(|| ApplyError::Fatal(format!("table {t} was never described")))?;
        for k in key {
            if def.column(k).is_none() {
                return Err(ApplyError::Fatal(format!(
                    "table {t} has no key column {k}: create it with that key, or set `key` for {}.{}",
                    batch.source.0, batch.source.1
                )));
            }
        }
        let stage = self.staging(t).await?;
        let deletes: Vec<&Action> = batch.actions.iter().filter(|a| matches!(a, Action::Delete { .. })).collect();
        for chunk in deletes.chunks(self.max_rows) {
            self.delete_chunk(t, key, &def, &stage, chunk).await?;
        }
        // Upserts grouped by the columns they carry (rows of one schema
        // version all alike; partial rows only after unchanged TOAST).
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
            for chunk in actions.chunks(self.max_rows) {
                self.upsert_chunk(t, key, &def, &stage, &cols, chunk).await?;
            }
        }
        Ok(())
    }

    async fn delete_chunk(
        &mut self,
        t: &TargetName,
        key: &[String],
        def: &TableDef,
        stage: &str,
        chunk: &[&Action],
    ) -> Result<(), ApplyError> {
        let types: Vec<&ColumnType> = key.iter().map(|k| &def.column(k).expect("key checked").ty).collect();
        let mut data = String::new();
        let mut rows = 0u64;
        for a in chunk {
            let Action::Delete { key: values, event } = a else { continue };
            let mut line = String::new();
            let converted = values.iter().zip(&types).enumerate().try_for_each(|(i, (v, ty))| {
                if i > 0 {
                    line.push('\t');
                }
                push_field(&mut line, ty, v).map_err(|e| format!("key column {} {e}", key[i]))
            });
            match converted {
                Ok(()) => {
                    data.push_str(&line);
                    data.push('\n');
                    rows += 1;
                }
                Err(reason) => {
                    self.rejected.push(RejectedEvent { index: *event, reason: format!("table {t}: {reason}") })
                }
            }
        }
        if rows == 0 {
            return Ok(());
        }
        let cols = key.iter().map(|k| quote(k)).collect::<Vec<_>>().join(", ");
        self.copy(t, key, &format!("COPY {} ({cols}) FROM STDIN", quote(stage)), data).await?;
        let on = key.iter().map(|k| format!("t.{0} = s.{0}", quote(k))).collect::<Vec<_>>().join(" AND ");
        let sql = format!("DELETE FROM {} t USING {} s WHERE {on}", qualified(t), quote(stage));
        let deleted = self.tx.execute(&sql, &[]).await.map_err(self.db(t, key, "DELETE … USING staging"))?;
        self.metrics.deletes.increment(deleted);
        self.metrics.missing_rows.increment(rows.saturating_sub(deleted));
        self.truncate_stage(t, stage).await
    }

    async fn truncate_stage(&self, t: &TargetName, stage: &str) -> Result<(), ApplyError> {
        self.tx.batch_execute(&format!("TRUNCATE {}", quote(stage))).await.map_err(self.db(t, &[], "TRUNCATE staging"))
    }

    async fn upsert_chunk(
        &mut self,
        t: &TargetName,
        key: &[String],
        def: &TableDef,
        stage: &str,
        cols: &[String],
        chunk: &[&Action],
    ) -> Result<(), ApplyError> {
        let types: Vec<&ColumnType> = cols.iter().map(|c| &def.column(c).expect("filtered").ty).collect();
        let mut data = String::with_capacity(chunk.len() * 64);
        let mut rows = 0u64;
        for a in chunk {
            let Action::Upsert { row, event } = a else { continue };
            let mut line = String::new();
            let converted = cols.iter().zip(&types).enumerate().try_for_each(|(i, (c, ty))| {
                if i > 0 {
                    line.push('\t');
                }
                let v = row.get(c).unwrap_or(&serde_json::Value::Null);
                push_field(&mut line, ty, v).map_err(|e| format!("column {c} {e}"))
            });
            match converted {
                Ok(()) => {
                    data.push_str(&line);
                    data.push('\n');
                    rows += 1;
                }
                Err(reason) => {
                    self.rejected.push(RejectedEvent { index: *event, reason: format!("table {t}: {reason}") })
                }
            }
        }
        if rows == 0 {
            return Ok(());
        }
        let list = cols.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", ");
        self.copy(t, key, &format!("COPY {} ({list}) FROM STDIN", quote(stage)), data).await?;
        let updates: Vec<String> =
            cols.iter().filter(|c| !key.contains(c)).map(|c| format!("{0} = EXCLUDED.{0}", quote(c))).collect();
        let conflict = key.iter().map(|k| quote(k)).collect::<Vec<_>>().join(", ");
        let action =
            if updates.is_empty() { "NOTHING".to_string() } else { format!("UPDATE SET {}", updates.join(", ")) };
        let sql = format!(
            "INSERT INTO {} ({list}) SELECT {list} FROM {} ON CONFLICT ({conflict}) DO {action}",
            qualified(t),
            quote(stage)
        );
        self.tx.execute(&sql, &[]).await.map_err(self.db(
            t,
            key,
            "INSERT … SELECT FROM staging ON CONFLICT DO UPDATE",
        ))?;
        self.metrics.upserts.increment(rows);
        self.truncate_stage(t, stage).await
    }

    /// Appends events as audit rows (append mode).
    pub async fn append_table(&mut self, batch: &TableBatch) -> Result<(), ApplyError> {
        let t = &batch.target;
        let mut data = String::new();
        for i in &batch.appends {
            let e = &self.events[*i];
            let fields = [
                serde_json::Value::String(e.idempotency_key()),
                serde_json::Value::String(e.op.code().into()),
                serde_json::Value::String(e.source.db.to_string()),
                serde_json::Value::String(e.source.table.to_string()),
                e.source.position.to_json(),
                serde_json::Value::from(e.source.ts_ms),
                e.tx_id.as_deref().map(|s| serde_json::Value::String(s.into())).unwrap_or_default(),
                e.before.as_ref().map(|r| r.to_json()).unwrap_or_default(),
                e.after.as_ref().map(|r| r.to_json()).unwrap_or_default(),
            ];
            let types = [
                ColumnType::Text(None),
                ColumnType::Text(None),
                ColumnType::Text(None),
                ColumnType::Text(None),
                ColumnType::Json,
                ColumnType::Int64,
                ColumnType::Text(None),
                ColumnType::Json,
                ColumnType::Json,
            ];
            for (n, (v, ty)) in fields.iter().zip(&types).enumerate() {
                if n > 0 {
                    data.push('\t');
                }
                push_field(&mut data, ty, v).map_err(ApplyError::Fatal)?;
            }
            data.push('\n');
        }
        let sql = format!(
            "COPY {} (event_id, op, source_db, source_table, position, ts_ms, tx_id, before, after) FROM STDIN",
            qualified(t)
        );
        let n = self.copy(t, &[], &sql, data).await?;
        self.metrics.appends.increment(n);
        Ok(())
    }
}
