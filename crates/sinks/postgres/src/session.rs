//! One sink's session with the target: the connection, the progress row
//! read back at the start, the known target tables, and the delivery of a
//! batch as one transaction (rows + progress row), with the careful-mode
//! retry that finds the events the target refuses.
//!
//! On any error the session forgets its connection and what it knew
//! (temporary staging tables, target columns, progress) and starts afresh
//! at the next delivery; it never retries by itself.

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
use tokio_postgres::{Client, Transaction};

use crate::apply::{error_text, Applier, ApplyError, Known};
use crate::connect::{ConnectError, Target};
use crate::ddl::{progress_tables_sql, qualified, quote};
use crate::follow::Follow;

/// A sink's session.
pub struct Session {
    cfg: TableSinkConfig,
    target: Target,
    place: SinkPlace,
    client: Option<Client>,
    progress: Option<Progress>,
    known: HashMap<TargetName, Known>,
    schemas: SourceSchemas,
    metrics: SinkMetrics,
    staging_seq: u64,
    precommit: Option<PathBuf>,
}

/// Maps an apply error to the coordinator's kinds.
fn sink_error(e: ApplyError) -> SinkError {
    match e {
        ApplyError::Fatal(m) => SinkError::Fatal(m),
        ApplyError::Retry(m) => SinkError::Retryable(m),
        ApplyError::Db { context, error } => {
            let text = format!("{context}: {}", error_text(&error));
            let retryable = match error.as_db_error() {
                None => true,
                Some(d) => {
                    let code = d.code().code();
                    ["08", "40", "53", "57", "58"].iter().any(|c| code.starts_with(c))
                        || ["55P03", "23505", "42P07", "42710"].contains(&code)
                }
            };
            if retryable {
                SinkError::Retryable(text)
            } else {
                SinkError::Fatal(text)
            }
        }
    }
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
            client: None,
            progress: None,
            known: HashMap::new(),
            staging_seq: 0,
        }
    }

    fn reset(&mut self) {
        self.client = None;
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
        if self.client.is_some() && self.progress.is_some() {
            return Ok(());
        }
        let client = self.target.connect().await.map_err(|e| match e {
            ConnectError::Setup(m) => ApplyError::Fatal(m),
            ConnectError::Db(error) => {
                let fatal = error.as_db_error().is_some_and(|d| ["28000", "28P01", "3D000"].contains(&d.code().code()));
                let text = format!("connecting to {}: {}", self.target.redacted(), error_text(&error));
                if fatal {
                    ApplyError::Fatal(text)
                } else {
                    ApplyError::Retry(text)
                }
            }
        })?;
        let log = self.cfg.apply_log.then(|| self.cfg.apply_log_table());
        for sql in progress_tables_sql(&self.cfg.progress_table, log.as_deref()) {
            client
                .batch_execute(&sql)
                .await
                .map_err(|error| ApplyError::Db { context: format!("creating {}", self.cfg.progress_table), error })?;
        }
        let sql = format!(
            "SELECT batch_seq, position::text, rejected::text FROM {} WHERE pipeline = $1 AND sink_id = $2",
            quote(&self.cfg.progress_table)
        );
        let row = client
            .query_opt(&sql, &[&self.place.pipeline, &self.place.sink_id])
            .await
            .map_err(|error| ApplyError::Db { context: format!("reading {}", self.cfg.progress_table), error })?;
        let progress = match row {
            None => Progress::default(),
            Some(r) => {
                let unreadable = |why: String| {
                    ApplyError::Fatal(format!(
                        "the progress row of pipeline {} sink {} in {} is unreadable ({why}); delete it to re-apply from the checkpoint",
                        self.place.pipeline, self.place.sink_id, self.cfg.progress_table
                    ))
                };
                let position: Option<String> = r.get(1);
                let last = match position {
                    Some(p) => Some(
                        EventMark::from_json(&serde_json::from_str(&p).map_err(|e| unreadable(e.to_string()))?)
                            .map_err(unreadable)?,
                    ),
                    None => None,
                };
                let rejected: String = r.get(2);
                let rejected = serde_json::from_str(&rejected).map_err(|e| unreadable(e.to_string()))?;
                Progress { batch_seq: r.get::<_, i64>(0) as u64, last, rejected }
            }
        };
        tracing::info!(sink = %self.place.sink_id, target = %self.target.redacted(), batch_seq = progress.batch_seq, "table sink connected; progress read back");
        self.client = Some(client);
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
        let mut rejected = plan.rejected.clone();
        let client = self.client.as_mut().expect("connected");
        let tx = client.transaction().await.map_err(|error| ApplyError::Db { context: "BEGIN".into(), error })?;
        for (step, key) in plan.steps.iter().zip(&keys) {
            match step {
                Step::Schema { db, table, target, version, event } => {
                    let (mut def, previous) =
                        defs.get(&(db.clone(), table.clone(), *version)).cloned().unwrap_or_default();
                    let inferred = def.is_none() && !self.known.contains_key(target);
                    if inferred {
                        // No schema registered yet (a snapshot of a table
                        // no change was streamed for): infer one.
                        def = todo[*event].after.as_ref().map(|row| TableDef::infer(row, key));
                        tracing::warn!(table = %target, "no source schema registered yet; column types inferred from the first row");
                    }
                    let mut follow = Follow { tx: &tx, cfg: &self.cfg, known: &mut self.known, metrics: &self.metrics };
                    follow
                        .ensure(&format!("{db}.{table}"), target, *version, (def.as_ref(), previous.as_ref()), key)
                        .await?;
                    if let Some(k) = self.known.get_mut(target).filter(|_| inferred) {
                        // An inferred definition is no version to follow from.
                        k.source_def = None;
                    }
                }
                Step::Truncate { target, .. } => {
                    let exists = tx
                        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&qualified(target)])
                        .await
                        .map_err(|error| ApplyError::Db { context: format!("table {target}: to_regclass"), error })?;
                    if exists.get::<_, bool>(0) {
                        tx.batch_execute(&format!("TRUNCATE {}", qualified(target)))
                            .await
                            .map_err(|error| ApplyError::Db { context: format!("table {target}: TRUNCATE"), error })?;
                        self.metrics.truncates.increment(1);
                    }
                }
                Step::Apply(tables) => {
                    for batch in tables {
                        if self.cfg.mode == Mode::Append {
                            let mut follow =
                                Follow { tx: &tx, cfg: &self.cfg, known: &mut self.known, metrics: &self.metrics };
                            follow.ensure_append(&batch.target).await?;
                        }
                        let mut applier = Applier {
                            tx: &tx,
                            events: todo,
                            known: &mut self.known,
                            max_rows: self.cfg.batch.max_rows_per_statement,
                            metrics: &self.metrics,
                            rejected: &mut rejected,
                            staging_seq: &mut self.staging_seq,
                        };
                        match (self.cfg.mode, careful) {
                            (Mode::Append, _) => applier.append_table(batch).await?,
                            (Mode::Upsert, false) => applier.apply_table(batch).await?,
                            (Mode::Upsert, true) => careful_apply(&tx, &mut applier, batch).await?,
                        }
                    }
                }
            }
        }
        let next = progress.next(todo, &rejected);
        write_progress(&tx, &self.cfg, &self.place, todo, &next).await?;
        failpoint::crash_if_flagged(self.precommit.as_ref());
        tx.commit().await.map_err(|error| ApplyError::Db { context: "COMMIT".into(), error })?;
        self.metrics.batches.increment(1);
        self.progress = Some(next);
        out.extend(rejected.into_iter().map(|r| RejectedEvent { index: r.index + prefix, reason: r.reason }));
        Ok(out)
    }
}

/// Applies each action alone inside a savepoint, refusing the ones whose
/// values the target refuses.
async fn careful_apply(
    tx: &Transaction<'_>,
    applier: &mut Applier<'_, '_>,
    batch: &deltaforge_table_core::TableBatch,
) -> Result<(), ApplyError> {
    let savepoint = |sql: &'static str| async move {
        tx.batch_execute(sql).await.map_err(|error| ApplyError::Db { context: sql.into(), error })
    };
    // The staging table must not be created inside a savepoint that may
    // roll back.
    applier.apply_table(&deltaforge_table_core::TableBatch { actions: Vec::new(), ..batch.clone() }).await?;
    for action in &batch.actions {
        let single = deltaforge_table_core::TableBatch { actions: vec![action.clone()], ..batch.clone() };
        savepoint("SAVEPOINT deltaforge_row").await?;
        match applier.apply_table(&single).await {
            Ok(()) => savepoint("RELEASE SAVEPOINT deltaforge_row").await?,
            Err(e) if e.is_data() => {
                savepoint("ROLLBACK TO SAVEPOINT deltaforge_row").await?;
                let reason = match &e {
                    ApplyError::Db { context, error } => format!("{context}: {}", error_text(error)),
                    other => format!("{other:?}"),
                };
                applier.rejected.push(RejectedEvent { index: action.event(), reason });
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn write_progress(
    tx: &Transaction<'_>,
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
         VALUES ($1, $2, $3, $4, $5::text::jsonb, $6::text::jsonb, now()) ON CONFLICT (pipeline, sink_id) DO UPDATE SET \
         source_id = EXCLUDED.source_id, batch_seq = EXCLUDED.batch_seq, position = EXCLUDED.position, \
         rejected = EXCLUDED.rejected, applied_at = EXCLUDED.applied_at",
        quote(&cfg.progress_table)
    );
    let err = |error| ApplyError::Db { context: format!("writing {}", cfg.progress_table), error };
    tx.execute(&sql, &[&place.pipeline, &place.sink_id, &source_id, &seq, &position, &rejected]).await.map_err(err)?;
    if cfg.apply_log {
        let sql = format!(
            "INSERT INTO {} (pipeline, sink_id, batch_seq, source_id, first_event, last_event, events) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            quote(&cfg.apply_log_table())
        );
        let (first, last) = (todo[0].idempotency_key(), todo[todo.len() - 1].idempotency_key());
        let count = todo.len() as i32;
        tx.execute(&sql, &[&place.pipeline, &place.sink_id, &seq, &source_id, &first, &last, &count])
            .await
            .map_err(|error| ApplyError::Db { context: format!("writing {}", cfg.apply_log_table()), error })?;
    }
    Ok(())
}
