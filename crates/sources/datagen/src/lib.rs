//! `type: datagen` — a deterministic synthetic source.
//!
//! It generates insert transactions whose events carry `id` = 1, 2, 3, …
//! across the whole run (not per table), plus a few typed columns derived
//! from the id ([`deltaforge_common::synthetic`], re-exported here), so
//! that any event can be recomputed and checked. Its
//! position is the sequence number of the last event of a transaction
//! (`{"seq": N}`); on restart it resumes exactly after the checkpoint. With
//! several tables, events rotate over them.
//!
//! It makes the runtime testable and benchmarkable without a database. It
//! must never depend on wall-clock time for its contents: replays must
//! produce identical events.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deltaforge_common::synthetic::EPOCH_MS;
use deltaforge_core::{
    BuildError, Columns, ComponentConfig, ConfigProblem, Event, Op, Row, Source, SourceContext, SourceError, SourceMeta,
};

use serde::Deserialize;
use serde_json::json;

mod position;
pub use deltaforge_common::synthetic::{row_for, values_for, COLUMNS};
pub use position::DatagenPosition;

/// Configuration of a datagen source.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DatagenConfig {
    /// Checkpoint key.
    pub id: String,
    /// Tables to generate for, as `db.table`.
    #[serde(default = "default_tables")]
    pub tables: Vec<String>,
    /// Events per transaction.
    #[serde(default = "one")]
    pub rows_per_tx: u64,
    /// Events per second; 0 = as fast as possible.
    #[serde(default)]
    pub rate: u64,
    /// Total events; 0 = unbounded.
    #[serde(default)]
    pub count: u64,
}

fn default_tables() -> Vec<String> {
    vec!["demo.orders".to_string()]
}

fn one() -> u64 {
    1
}

impl ComponentConfig for DatagenConfig {
    /// Checks values serde cannot.
    fn check(&self) -> Result<(), ConfigProblem> {
        if self.rows_per_tx == 0 {
            return Err(ConfigProblem::new("rows_per_tx", "must be at least 1"));
        }
        if self.tables.is_empty() {
            return Err(ConfigProblem::new("tables", "must name at least one table as db.table"));
        }
        for t in &self.tables {
            if t.split_once('.').is_none_or(|(d, n)| d.is_empty() || n.is_empty()) {
                return Err(ConfigProblem::new("tables", format!("{t:?} is not of the form db.table")));
            }
        }
        Ok(())
    }
}

/// A datagen source instance.
pub struct DatagenSource {
    cfg: DatagenConfig,
    source_id: Arc<str>,
}

impl DatagenSource {
    /// Builds the source; the config is checked again, since `run` relies
    /// on it (every table is `db.table`).
    pub fn new(cfg: DatagenConfig) -> Result<Self, BuildError> {
        cfg.check()?;
        let source_id = cfg.id.clone().into();
        Ok(DatagenSource { cfg, source_id })
    }
}

#[async_trait]
impl Source for DatagenSource {
    async fn run(self: Box<Self>, mut ctx: SourceContext) -> Result<(), SourceError> {
        let cfg = &self.cfg;
        let mut seq = match ctx.resume_from.as_ref().map(|p| (p, p.get::<DatagenPosition>())) {
            None => 0,
            Some((_, Some(resume))) => resume.seq,
            Some((other, None)) => {
                return Err(SourceError::Fatal(format!(
                    "the stored checkpoint ({other}) is not a datagen position; reset it with \
                     `deltaforge checkpoints reset {}`",
                    self.source_id
                )))
            }
        };
        let columns: Columns = COLUMNS.iter().map(|c| Arc::<str>::from(*c)).collect::<Vec<_>>().into();
        let tables: Vec<(Arc<str>, Arc<str>)> = cfg
            .tables
            .iter()
            .map(|t| {
                let (d, n) = t.split_once('.').expect("validated");
                (Arc::from(d), Arc::from(n))
            })
            .collect();
        let schema = json!({"columns": COLUMNS, "primary_key": ["id"]});
        let mut versions = Vec::new();
        for (db, table) in &tables {
            let v = ctx
                .schemas
                .register(db, table, schema.clone(), None, ctx.resume_from.clone())
                .await
                .map_err(|e| SourceError::Retryable(format!("registering schema: {e}")))?;
            versions.push(v);
        }
        let key: Columns = vec![Arc::<str>::from("id")].into();
        let started = tokio::time::Instant::now();
        let start_seq = seq;
        loop {
            if ctx.shutdown.is_cancelled() || (cfg.count > 0 && seq >= cfg.count) {
                break;
            }
            if cfg.rate > 0 {
                let due = started + Duration::from_secs_f64((seq - start_seq) as f64 / cfg.rate as f64);
                if due > tokio::time::Instant::now() {
                    ctx.sender.flush().await?;
                    tokio::select! {
                        _ = tokio::time::sleep_until(due) => {}
                        _ = ctx.shutdown.cancelled() => break,
                    }
                }
            }
            let tx_end = match cfg.count {
                0 => seq + cfg.rows_per_tx,
                n => (seq + cfg.rows_per_tx).min(n),
            };
            let tx_position = DatagenPosition::at(tx_end);
            let tx_id: Arc<str> = Arc::from(itoa::Buffer::new().format(tx_end));
            for (index, id) in (seq + 1..=tx_end).enumerate() {
                let t = (id % tables.len() as u64) as usize;
                let (db, table) = &tables[t];
                let event = Event {
                    op: Op::Create,
                    before: None,
                    after: Some(Row::new(columns.clone(), values_for(id))),
                    source: SourceMeta {
                        connector: "datagen",
                        source_id: self.source_id.clone(),
                        pipeline: ctx.pipeline.clone(),
                        tenant: ctx.tenant.clone(),
                        db: db.clone(),
                        table: table.clone(),
                        // The last event of a transaction sits at the transaction's
                        // own position: share it rather than allocate another.
                        position: if id == tx_end { tx_position.clone() } else { DatagenPosition::at(id) },
                        ts_ms: EPOCH_MS + id as i64,
                    },
                    tx_id: Some(tx_id.clone()),
                    tx_position: tx_position.clone(),
                    index: index as u32,
                    schema_version: Some(versions[t]),
                    key_columns: Some(key.clone()),
                };
                ctx.sender.push(event).await?;
            }
            seq = tx_end;
            ctx.sender.commit(tx_position).await?;
            // Yield now and then so a fast generator never starves the runtime.
            if seq % 4096 < cfg.rows_per_tx {
                tokio::task::yield_now().await;
            }
        }
        ctx.sender.flush().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_checks() {
        let mut c: DatagenConfig = serde_json::from_value(json!({"id": "dg"})).unwrap();
        assert_eq!(c.tables, vec!["demo.orders"]);
        assert!(c.check().is_ok());
        c.rows_per_tx = 0;
        assert_eq!(c.check().unwrap_err().field, "rows_per_tx");
        assert!(matches!(DatagenSource::new(c.clone()), Err(BuildError::Config(p)) if p.field == "rows_per_tx"));
        c.rows_per_tx = 1;
        c.tables = vec!["nodot".into()];
        assert_eq!(c.check().unwrap_err().field, "tables");
        assert!(serde_json::from_value::<DatagenConfig>(json!({"id": "x", "bogus": 1})).is_err());
    }
}
