//! The table sinks' reader (`type: postgres`, `type: mysql`, `mode:
//! upsert`): the target tables are queried with the sources' own plain
//! chunk readers (the same connection, TLS and value conversion code), each
//! source table's target found by the sink's `tables` renames and template
//! and matched by the sink's `key` override when it has one.
//!
//! Values are compared through [`crate::normalize`], since the target's
//! types differ from the source's (`true` vs `1`, `7` vs `7.00`, timestamp
//! fraction digits and `Z`). Keys looked up are recorded in a temporary
//! SQLite set on disk, so rows the source lacks are found by one scan of
//! the target without holding its keys in memory.
//!
//! A table holds no history: [`SinkReader::rows_as_of`] reads the current
//! rows (the re-check rounds settle rows that keep changing), and no
//! duplicate or out-of-order delivery can be seen (the sinks apply each
//! event once). `mode: append` tables are an audit log, not a mirror: they
//! are refused. This module must never write to the target.

use std::collections::HashMap;

use async_trait::async_trait;
use deltaforge_common::TablePattern;
use deltaforge_core::component::parse_config;
use deltaforge_core::Position;
use deltaforge_table_core::{Mode, TableSinkConfig};
use rusqlite::{params, Connection};
use serde_json::{json, Map, Value};

use crate::error::VerifyError;
use crate::event_index::blocking;
use crate::model::{row_object, SinkRow, TableLayout};
use crate::normalize;
use crate::report::Deliveries;
use crate::sink::SinkReader;
use crate::sink_context::SinkContext;
use crate::source::{MysqlSourceReader, PostgresSourceReader, SourceReader};
use crate::sql::SqlReader;

/// Target rows read per statement when scanning.
const SCAN: usize = 5_000;

/// Reads a `postgres` or `mysql` table sink's target tables.
pub struct TableSinkReader {
    ctx: SinkContext,
    kind: String,
    cfg: TableSinkConfig,
    target: Option<Box<dyn SourceReader>>,
    /// Source table → (its target's layout with the comparison key).
    targets: HashMap<String, TableLayout>,
    dir: tempfile::TempDir,
    visited: Option<Connection>,
}

impl TableSinkReader {
    /// A reader of the table sink `ctx.sink_id` of type `kind` (`postgres`
    /// or `mysql`); refuses `mode: append`. Connects on [`SinkReader::load`].
    pub fn new(kind: &str, config: &Map<String, Value>, ctx: &SinkContext) -> Result<Self, VerifyError> {
        let cfg: TableSinkConfig = parse_config(config).map_err(|p| ctx.err(format!("its {kind} config: {p}")))?;
        if cfg.mode == Mode::Append {
            return Err(VerifyError::Unsupported(format!(
                "sink {} is a {kind} table sink in `mode: append`: its tables are an audit log of every event, not a \
                 copy of the source's rows, so they cannot be compared with the source; verify another sink of the \
                 pipeline with --sink (an upsert table sink, a file, kafka, redis or nats sink)",
                ctx.sink_id
            )));
        }
        let dir = tempfile::Builder::new()
            .prefix("deltaforge-verify-")
            .tempdir()
            .map_err(|source| VerifyError::Io { what: "creating the temporary key set directory".into(), source })?;
        Ok(TableSinkReader {
            ctx: ctx.clone(),
            kind: kind.into(),
            cfg,
            target: None,
            targets: HashMap::new(),
            dir,
            visited: None,
        })
    }

    /// The target table (`schema.table`) of source table `db.table`.
    pub fn target_name(&self, table: &str) -> Result<String, VerifyError> {
        let (db, name) = table.split_once('.').unwrap_or(("", table));
        let event = deltaforge_core::Event {
            op: deltaforge_core::Op::Create,
            before: None,
            after: None,
            source: deltaforge_core::SourceMeta {
                connector: "verify",
                source_id: self.ctx.source_id.as_str().into(),
                pipeline: self.ctx.pipeline.as_str().into(),
                tenant: self.ctx.tenant.as_str().into(),
                db: db.into(),
                table: name.into(),
                position: deltaforge_source_postgres::position::position(0, None),
                ts_ms: 0,
            },
            tx_id: None,
            tx_position: deltaforge_source_postgres::position::position(0, None),
            index: 0,
            schema_version: None,
            key_columns: None,
        };
        self.cfg.target_of(&event).map(|t| t.to_string()).map_err(|m| self.ctx.err(m))
    }

    async fn connect(
        ctx: SinkContext,
        kind: String,
        dsn: String,
        names: Vec<String>,
    ) -> Result<Box<dyn SourceReader>, VerifyError> {
        let patterns = names
            .iter()
            .map(|n| TablePattern::parse(n).map_err(|m| ctx.err(format!("target table {n}: {m}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let connect_err = |e: VerifyError| ctx.err(format!("connecting to the target: {e}"));
        Ok(match kind.as_str() {
            "postgres" => {
                let dsn = deltaforge_source_postgres::Dsn::parse(&dsn).map_err(|e| ctx.err(format!("its dsn: {e}")))?;
                Box::new(PostgresSourceReader::connect(&dsn, patterns).await.map_err(connect_err)?)
            }
            _ => {
                let cfg = parse_config(
                    json!({ "id": ctx.sink_id, "dsn": dsn, "tables": names }).as_object().expect("an object"),
                )
                .map_err(|p| ctx.err(format!("its dsn: {p}")))?;
                Box::new(MysqlSourceReader::connect_target(cfg).await.map_err(connect_err)?)
            }
        })
    }

    fn target(&mut self) -> Result<&mut Box<dyn SourceReader>, VerifyError> {
        let sink = self.ctx.sink_id.clone();
        self.target.as_mut().ok_or(VerifyError::Sink { sink, message: "read before load".into() })
    }

    fn layout(&self, table: &str) -> Result<TableLayout, VerifyError> {
        self.targets.get(table).cloned().ok_or_else(|| self.ctx.err(format!("table {table} was not loaded")))
    }

    /// The current target rows of `keys` (source key texts), by those keys.
    async fn lookup(
        &mut self,
        table: &str,
        keys: &[String],
        mark: bool,
    ) -> Result<HashMap<String, SinkRow>, VerifyError> {
        let tl = self.layout(table)?;
        let mut wanted: HashMap<String, String> = HashMap::new();
        let mut values = Vec::new();
        for k in keys {
            let v: Vec<Value> = serde_json::from_str(k).map_err(|e| self.ctx.err(format!("key {k}: {e}")))?;
            wanted.insert(match_key(&v), k.clone());
            values.push(v);
        }
        let mut out = HashMap::new();
        for batch in values.chunks(500) {
            let target = self.target()?;
            let cond = target.key_condition(&tl, batch);
            let chunk = target.chunk(&tl, None, Some(&cond), batch.len() * 2 + 10).await?;
            for row in &chunk.rows {
                if let Some(k) = wanted.get(&match_key(&tl.key_values(row))) {
                    out.insert(k.clone(), row_object(row));
                }
            }
        }
        if mark {
            let matched: Vec<String> = wanted.keys().cloned().collect();
            let db = self.visited.as_mut().ok_or_else(|| VerifyError::Unsupported("no key set".into()))?;
            blocking(|| {
                let tx = db.transaction()?;
                {
                    let mut st = tx.prepare_cached("INSERT OR IGNORE INTO visited (t, k) VALUES (?1, ?2)")?;
                    for k in &matched {
                        st.execute(params![table, k])?;
                    }
                }
                tx.commit()
            })?;
        }
        Ok(out)
    }

    /// The target rows matching `condition` (in the target's SQL), by
    /// their key text.
    pub async fn rows_where(&mut self, table: &str, condition: &str) -> Result<Vec<(String, SinkRow)>, VerifyError> {
        let tl = self.layout(table)?;
        let target = self.target()?;
        let mut out = Vec::new();
        let mut after: Option<Vec<String>> = None;
        loop {
            let chunk = target.chunk(&tl, after.as_deref(), Some(condition), SCAN).await?;
            for row in &chunk.rows {
                out.push((deltaforge_core::snapshot::key_string(tl.key_values(row).iter()), row_object(row)));
            }
            match chunk.next {
                Some(n) => after = Some(n),
                None => return Ok(out),
            }
        }
    }
}

/// The text two keys are matched by: their canonical values.
fn match_key(values: &[Value]) -> String {
    let canon: Vec<Value> = values.iter().map(normalize::canonical).collect();
    deltaforge_core::snapshot::key_string(canon.iter())
}

#[async_trait]
impl SinkReader for TableSinkReader {
    async fn load(&mut self, tables: &[TableLayout]) -> Result<(), VerifyError> {
        let mut names = Vec::new();
        for t in tables {
            names.push(self.target_name(&t.name)?);
        }
        if self.target.is_none() {
            let connect = Self::connect(self.ctx.clone(), self.kind.clone(), self.cfg.dsn.clone(), names.clone());
            self.target = Some(connect.await?);
        }
        let (listed, keyless) = self.target()?.tables(&[]).await?;
        self.targets.clear();
        for (t, name) in tables.iter().zip(&names) {
            if keyless.contains(name) {
                return Err(self.ctx.err(format!(
                    "the target table {name} has neither a primary key nor a NOT NULL unique index: it cannot be \
                     read in key order"
                )));
            }
            let Some(found) = listed.iter().find(|l| &l.name == name) else {
                return Err(self.ctx.err(format!(
                    "the target table {name} (of source table {}) does not exist: nothing was replicated yet, or \
                     the sink's `tables` mapping changed",
                    t.name
                )));
            };
            if let Some(missing) = t.key.iter().find(|k| !found.columns.contains(k)) {
                return Err(self.ctx.err(format!("the target table {name} has no key column {missing}")));
            }
            self.targets.insert(t.name.clone(), TableLayout { key: t.key.clone(), ..found.clone() });
        }
        let path = self.dir.path().join(format!("visited-{}.db", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let db = blocking(|| -> Result<Connection, rusqlite::Error> {
            let db = Connection::open(&path)?;
            db.execute_batch(
                "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; \
                 CREATE TABLE visited (t TEXT NOT NULL, k TEXT NOT NULL, PRIMARY KEY (t, k)) WITHOUT ROWID;",
            )?;
            Ok(db)
        })?;
        self.visited = Some(db);
        Ok(())
    }

    async fn rows(&mut self, table: &str, keys: &[String]) -> Result<HashMap<String, SinkRow>, VerifyError> {
        self.lookup(table, keys, true).await
    }

    async fn unvisited(&mut self, table: &str, limit: usize) -> Result<(Vec<(String, SinkRow)>, u64), VerifyError> {
        let tl = self.layout(table)?;
        let (mut out, mut count) = (Vec::new(), 0u64);
        let mut after: Option<Vec<String>> = None;
        loop {
            let chunk = self.target()?.chunk(&tl, after.as_deref(), None, SCAN).await?;
            let keys: Vec<(String, String)> = chunk
                .rows
                .iter()
                .map(|r| {
                    let v = tl.key_values(r);
                    (match_key(&v), deltaforge_core::snapshot::key_string(v.iter()))
                })
                .collect();
            let db = self.visited.as_mut().ok_or_else(|| VerifyError::Unsupported("no key set".into()))?;
            let seen: Vec<bool> = blocking(|| -> Result<Vec<bool>, rusqlite::Error> {
                let mut st = db.prepare_cached("SELECT 1 FROM visited WHERE t = ?1 AND k = ?2")?;
                keys.iter().map(|(m, _)| st.exists(params![table, m])).collect()
            })?;
            for ((row, (_, key)), seen) in chunk.rows.iter().zip(keys).zip(seen) {
                if !seen {
                    count += 1;
                    if out.len() < limit {
                        out.push((key, row_object(row)));
                    }
                }
            }
            match chunk.next {
                Some(n) => after = Some(n),
                None => return Ok((out, count)),
            }
        }
    }

    async fn rows_as_of(
        &mut self,
        table: &TableLayout,
        keys: &[String],
        _at: &Position,
    ) -> Result<HashMap<String, SinkRow>, VerifyError> {
        // A table has no history: its current rows (the caller waited
        // until the sink passed `at`; a row still changing is re-checked).
        self.lookup(&table.name, keys, false).await
    }

    fn deliveries(&self) -> Deliveries {
        Deliveries::default()
    }

    fn same(&self, source: &Value, sink: &Value) -> bool {
        normalize::same(source, sink)
    }

    fn key_override(&self, table: &str) -> Option<Vec<String>> {
        let (db, t) = table.split_once('.')?;
        self.cfg.key_override(db, t).map(<[String]>::to_vec)
    }

    fn table_sql(&mut self, table: &str) -> Option<(&mut dyn SqlReader, String)> {
        let name = self.targets.get(table)?.name.clone();
        Some((self.target.as_mut()?.sql()?, name))
    }

    async fn rows_in(&mut self, table: &str, condition: &str) -> Result<Vec<(String, SinkRow)>, VerifyError> {
        self.rows_where(table, condition).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(config: Value) -> Result<TableSinkReader, VerifyError> {
        let ctx =
            SinkContext { sink_id: "replica".into(), pipeline: "p".into(), tenant: "t".into(), source_id: "s".into() };
        TableSinkReader::new("postgres", config.as_object().unwrap(), &ctx)
    }

    #[test]
    fn targets_follow_renames_then_the_template_and_keys_the_override() {
        let r = reader(json!({"dsn": "postgres://h/db", "tables": {"template": "replica.${table}",
            "rename": {"shop.users": "public.customers"}}, "key": {"shop.orders": ["order_no"]}}))
        .unwrap();
        assert_eq!(r.target_name("shop.orders").unwrap(), "replica.orders");
        assert_eq!(r.target_name("shop.users").unwrap(), "public.customers");
        assert_eq!(r.key_override("shop.orders"), Some(vec!["order_no".to_string()]));
        assert_eq!(r.key_override("shop.users"), None);
        assert!(r.same(&json!(true), &json!(1)) && !r.same(&json!("a"), &json!("b")));
        let err = reader(json!({"dsn": "postgres://u:secret@h/db", "mode": "append"})).err().unwrap().to_string();
        assert!(err.contains("mode: append") && !err.contains("secret"), "{err}");
    }
}
