//! One sink's session with the MySQL/MariaDB target: the connection, the
//! progress row read back at the start, the known target tables, and the
//! delivery of a batch: schema steps first (DDL commits implicitly in
//! MySQL), then one transaction holding the rows and the progress row,
//! with the careful-mode retry that finds the events the target refuses.
//!
//! On any error the session forgets its connection and what it knew and
//! starts afresh at the next delivery; it never retries by itself.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use deltaforge_core::{Event, RejectedEvent, SinkError};
use deltaforge_table_core::metrics::SinkMetrics;
use deltaforge_table_core::plan::{plan_appends, plan_upserts, Resolve};
use deltaforge_table_core::resolve::{load_defs, Resolver};
use deltaforge_table_core::{
    failpoint, EventMark, Mode, Progress, SinkPlace, SourceSchemas, Step, TableDef, TableSinkConfig, TargetName,
};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, TxOpts};

use crate::apply::{error_text, ApplyError, Known, Rows, Schemas};
use crate::connect::Target;
use crate::ddl::{progress_tables_sql, quote};

/// A sink's session.
pub struct Session {
    cfg: TableSinkConfig,
    target: Target,
    place: SinkPlace,
    conn: Option<Conn>,
    progress: Option<Progress>,
    known: HashMap<TargetName, Known>,
    schemas: SourceSchemas,
    metrics: SinkMetrics,
    precommit: Option<PathBuf>,
}

fn sink_error(e: ApplyError) -> SinkError {
    match e {
        ApplyError::Fatal(m) => SinkError::Fatal(m),
        ApplyError::Retry(m) => SinkError::Retryable(m),
        ApplyError::Db { context, error } => {
            let text = format!("{context}: {}", error_text(&error));
            let retryable = match &error {
                mysql_async::Error::Server(s) => {
                    [1205, 1213, 1040, 1053, 1927, 1050, 1062, 1180, 1181].contains(&s.code)
                }
                _ => true,
            };
            if retryable {
                SinkError::Retryable(text)
            } else {
                SinkError::Fatal(text)
            }
        }
    }
}

fn db(context: impl Into<String>) -> impl FnOnce(mysql_async::Error) -> ApplyError {
    let context = context.into();
    move |error| ApplyError::Db { context, error }
}

impl Session {
    /// A session that connects at its first delivery.
    pub fn new(cfg: TableSinkConfig, target: Target, place: SinkPlace) -> Self {
        Session {
            schemas: SourceSchemas::new(place.storage.clone(), &place.tenant),
            metrics: SinkMetrics::new(&place.pipeline, &place.sink_id),
            precommit: failpoint::precommit_flag(&place.sink_id),
            cfg,
            target,
            place,
            conn: None,
            progress: None,
            known: HashMap::new(),
        }
    }

    fn reset(&mut self) {
        self.conn = None;
        self.progress = None;
        self.known.clear();
    }

    /// Delivers a batch: applies what was not applied yet, in one
    /// transaction with the progress row.
    pub async fn deliver(&mut self, events: &[Event]) -> Result<(), SinkError> {
        if events.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let result = match self.try_deliver(events, false).await {
            Err(e) if e.is_data() => {
                tracing::warn!(sink = %self.place.sink_id, "the target refused a value; applying the batch row by row to find it");
                self.reset();
                self.try_deliver(events, true).await
            }
            other => other,
        };
        match result {
            Ok(rejected) => {
                self.metrics.apply_seconds.record(started.elapsed().as_secs_f64());
                if rejected.is_empty() {
                    Ok(())
                } else {
                    Err(SinkError::Rejected(rejected))
                }
            }
            Err(e) => {
                self.reset();
                Err(sink_error(e))
            }
        }
    }

    async fn connect(&mut self) -> Result<(), ApplyError> {
        if self.conn.is_some() && self.progress.is_some() {
            return Ok(());
        }
        let mut conn = self.target.connect().await.map_err(|error| {
            let text = format!("connecting to {}: {}", self.target.redacted(), error_text(&error));
            match error {
                mysql_async::Error::Server(s) if [1045, 1049, 1044].contains(&s.code) => ApplyError::Fatal(text),
                _ => ApplyError::Retry(text),
            }
        })?;
        let log = self.cfg.apply_log.then(|| self.cfg.apply_log_table());
        for sql in progress_tables_sql(&self.cfg.progress_table, log.as_deref()) {
            conn.query_drop(sql).await.map_err(db(format!("creating {}", self.cfg.progress_table)))?;
        }
        let sql = format!(
            "SELECT batch_seq, position, rejected FROM {} WHERE pipeline = ? AND sink_id = ?",
            quote(&self.cfg.progress_table)
        );
        let row: Option<(i64, Option<String>, String)> = conn
            .exec_first(sql, (&self.place.pipeline, &self.place.sink_id))
            .await
            .map_err(db(format!("reading {}", self.cfg.progress_table)))?;
        let unreadable = |why: String| {
            ApplyError::Fatal(format!(
                "the progress row of pipeline {} sink {} in {} is unreadable ({why}); delete it to re-apply from the checkpoint",
                self.place.pipeline, self.place.sink_id, self.cfg.progress_table
            ))
        };
        let progress = match row {
            None => Progress::default(),
            Some((seq, position, rejected)) => Progress {
                batch_seq: seq as u64,
                last: match position {
                    Some(p) => Some(
                        EventMark::from_json(&serde_json::from_str(&p).map_err(|e| unreadable(e.to_string()))?)
                            .map_err(unreadable)?,
                    ),
                    None => None,
                },
                rejected: serde_json::from_str(&rejected).map_err(|e| unreadable(e.to_string()))?,
            },
        };
        tracing::info!(sink = %self.place.sink_id, target = %self.target.redacted(), batch_seq = progress.batch_seq, "table sink connected; progress read back");
        self.conn = Some(conn);
        self.progress = Some(progress);
        Ok(())
    }

    async fn try_deliver(&mut self, events: &[Event], careful: bool) -> Result<Vec<RejectedEvent>, ApplyError> {
        self.connect().await?;
        let progress = self.progress.clone().expect("connected");
        let prefix = progress.applied_prefix(events);
        self.metrics.skipped.increment(prefix as u64);
        let mut out = progress.refused_again(events, prefix);
        let todo = &events[prefix..];
        if todo.is_empty() {
            return Ok(out);
        }
        let defs = load_defs(&mut self.schemas, todo).await.map_err(ApplyError::Retry)?;
        let known = &self.known;
        let target_key = |t: &TargetName| known.get(t).map(|k| k.def.key.clone());
        let resolver = Resolver { cfg: &self.cfg, defs: &defs, target_key: &target_key };
        let plan = match self.cfg.mode {
            Mode::Upsert => plan_upserts(todo, &resolver),
            Mode::Append => plan_appends(todo, &resolver),
        }
        .map_err(|e| ApplyError::Fatal(e.to_string()))?;
        let keys: Vec<Vec<String>> = plan
            .steps
            .iter()
            .map(|s| match s {
                Step::Schema { event, .. } => resolver.key(&todo[*event]),
                _ => Vec::new(),
            })
            .collect();
        let conn = self.conn.as_mut().expect("connected");
        // Schema steps first: DDL commits implicitly in MySQL.
        let mut schemas = Schemas { conn, cfg: &self.cfg, known: &mut self.known, metrics: &self.metrics };
        for (step, key) in plan.steps.iter().zip(&keys) {
            match step {
                Step::Schema { db, table, target, version, event } => {
                    let (mut def, previous) =
                        defs.get(&(db.clone(), table.clone(), *version)).cloned().unwrap_or_default();
                    if def.is_none() {
                        def = todo[*event].after.as_ref().map(|row| TableDef::infer(row, key));
                    }
                    schemas
                        .ensure(&format!("{db}.{table}"), target, *version, (def.as_ref(), previous.as_ref()), key)
                        .await?;
                }
                Step::Apply(tables) if self.cfg.mode == Mode::Append => {
                    for t in tables {
                        schemas.ensure_append(&t.target).await?;
                    }
                }
                _ => {}
            }
        }
        let mut rejected = plan.rejected.clone();
        let conn = self.conn.as_mut().expect("connected");
        let mut tx = conn.start_transaction(TxOpts::default()).await.map_err(db("BEGIN"))?;
        for step in &plan.steps {
            let mut rows = Rows {
                tx: &mut tx,
                known: &self.known,
                events: todo,
                max_rows: self.cfg.batch.max_rows_per_statement,
                metrics: &self.metrics,
                rejected: &mut rejected,
            };
            match step {
                Step::Schema { .. } => {}
                Step::Truncate { target, .. } => rows.truncate(target).await?,
                Step::Apply(tables) => {
                    for batch in tables {
                        match (self.cfg.mode, careful) {
                            (Mode::Append, _) => rows.append_table(batch).await?,
                            (Mode::Upsert, false) => rows.apply_table(batch).await?,
                            (Mode::Upsert, true) => careful_apply(&mut rows, batch).await?,
                        }
                    }
                }
            }
        }
        let next = progress.next(todo, &rejected);
        write_progress(&mut tx, &self.cfg, &self.place, todo, &next).await?;
        failpoint::crash_if_flagged(self.precommit.as_ref());
        tx.commit().await.map_err(db("COMMIT"))?;
        self.metrics.batches.increment(1);
        self.progress = Some(next);
        out.extend(rejected.into_iter().map(|r| RejectedEvent { index: r.index + prefix, reason: r.reason }));
        Ok(out)
    }
}

/// Each action alone inside a savepoint; refused ones are reported.
async fn careful_apply(rows: &mut Rows<'_, '_>, batch: &deltaforge_table_core::TableBatch) -> Result<(), ApplyError> {
    for action in &batch.actions {
        let single = deltaforge_table_core::TableBatch { actions: vec![action.clone()], ..batch.clone() };
        rows.tx.query_drop("SAVEPOINT deltaforge_row").await.map_err(db("SAVEPOINT"))?;
        match rows.apply_table(&single).await {
            Ok(()) => rows.tx.query_drop("RELEASE SAVEPOINT deltaforge_row").await.map_err(db("RELEASE SAVEPOINT"))?,
            Err(e) if e.is_data() => {
                rows.tx
                    .query_drop("ROLLBACK TO SAVEPOINT deltaforge_row")
                    .await
                    .map_err(db("ROLLBACK TO SAVEPOINT"))?;
                let reason = match &e {
                    ApplyError::Db { context, error } => format!("{context}: {}", error_text(error)),
                    other => format!("{other:?}"),
                };
                rows.rejected.push(RejectedEvent { index: action.event(), reason });
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn write_progress(
    tx: &mut mysql_async::Transaction<'_>,
    cfg: &TableSinkConfig,
    place: &SinkPlace,
    todo: &[Event],
    next: &Progress,
) -> Result<(), ApplyError> {
    let source_id = todo[0].source.source_id.to_string();
    let position = next.last.as_ref().map(|m| m.to_json().to_string());
    let rejected = serde_json::to_string(&next.rejected).expect("strings serialise");
    let seq = next.batch_seq as i64;
    let sql = format!(
        "INSERT INTO {} (pipeline, sink_id, source_id, batch_seq, position, rejected, applied_at) \
         VALUES (?, ?, ?, ?, ?, ?, UTC_TIMESTAMP(6)) ON DUPLICATE KEY UPDATE source_id = VALUES(source_id), \
         batch_seq = VALUES(batch_seq), position = VALUES(position), rejected = VALUES(rejected), \
         applied_at = VALUES(applied_at)",
        quote(&cfg.progress_table)
    );
    tx.exec_drop(sql, (&place.pipeline, &place.sink_id, &source_id, seq, position, rejected))
        .await
        .map_err(db(format!("writing {}", cfg.progress_table)))?;
    if cfg.apply_log {
        let sql = format!(
            "INSERT INTO {} (pipeline, sink_id, batch_seq, source_id, first_event, last_event, events, applied_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, UTC_TIMESTAMP(6))",
            quote(&cfg.apply_log_table())
        );
        let (first, last) = (todo[0].idempotency_key(), todo[todo.len() - 1].idempotency_key());
        tx.exec_drop(sql, (&place.pipeline, &place.sink_id, seq, &source_id, first, last, todo.len() as i64))
            .await
            .map_err(db(format!("writing {}", cfg.apply_log_table())))?;
    }
    Ok(())
}
