//! The on-disk index every event-log sink reader shares: a sink's
//! delivered events (read again from the start through an [`EventLog`]:
//! a file's lines, a Kafka topic, a Redis stream, a JetStream stream) are
//! replayed into a temporary SQLite index, one row per key: last event
//! wins, deletes remove, truncates empty the table, `r` events are rows, an
//! unchanged TOAST value keeps the previous one. An event whose idempotency
//! key was already seen is a duplicate delivery: counted, not applied
//! again. An event older (by transaction position) than the key's last
//! applied one is counted as out of order.
//!
//! Bounded memory: the index lives in a temporary file (deleted on drop);
//! only SQLite's page cache and one batch of events are in RAM. This
//! module must never write to the sink; it knows no sink type.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use deltaforge_core::Position;
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;

use crate::envelope::{is_unchanged_toast, Delivered};
use crate::error::VerifyError;
use crate::model::{SinkRow, TableLayout};
use crate::report::{Deliveries, KeyRef};
use crate::sink::SinkReader;

/// How many duplicated ids and out-of-order keys a report lists.
const LISTED: usize = 10;

/// A sink's delivered events, in delivery order, readable again from the
/// start (a file, a topic, a stream). Implementations only read.
#[async_trait]
pub trait EventLog: Send {
    /// Starts (again) at the first event of what the sink holds for
    /// `tables`; the end is what the sink holds now.
    async fn rewind(&mut self, tables: &[TableLayout]) -> Result<(), VerifyError>;

    /// The next events, in delivery order; `None` once the end is reached.
    async fn next_batch(&mut self) -> Result<Option<Vec<Delivered>>, VerifyError>;

    /// How many records since the last rewind were not events (skipped).
    fn unreadable(&self) -> u64;
}

/// A [`SinkReader`] over any [`EventLog`], indexing it on disk.
pub struct IndexedSinkReader<L: EventLog> {
    sink: String,
    log: L,
    dir: tempfile::TempDir,
    db: Option<Connection>,
    layouts: HashMap<String, TableLayout>,
    deliveries: Deliveries,
}

impl<L: EventLog> IndexedSinkReader<L> {
    /// A reader of the sink `sink` whose events `log` reads; its index goes
    /// into a new temporary directory (under `TMPDIR`).
    pub fn with_log(sink: &str, log: L) -> Result<Self, VerifyError> {
        let dir = tempfile::Builder::new()
            .prefix("deltaforge-verify-")
            .tempdir()
            .map_err(|source| VerifyError::Io { what: "creating the temporary index directory".into(), source })?;
        Ok(IndexedSinkReader {
            sink: sink.to_string(),
            log,
            dir,
            db: None,
            layouts: HashMap::new(),
            deliveries: Deliveries::default(),
        })
    }

    fn err(&self, message: impl Into<String>) -> VerifyError {
        VerifyError::Sink { sink: self.sink.clone(), message: message.into() }
    }

    async fn build_index(&mut self) -> Result<(), VerifyError> {
        let path = self.dir.path().join(format!("index-{}.db", std::process::id()));
        let _ = std::fs::remove_file(&path);
        self.db = None;
        let db = Connection::open(&path)?;
        db.execute_batch(
            "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA cache_size = -16000; \
             CREATE TABLE state (tbl TEXT NOT NULL, key TEXT NOT NULL, row TEXT, pos TEXT, visited INTEGER NOT NULL DEFAULT 0, \
               PRIMARY KEY (tbl, key)) WITHOUT ROWID; \
             CREATE TABLE ids (id TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID; \
             BEGIN",
        )?;
        let mut stats = Deliveries::default();
        let tables: Vec<TableLayout> = self.layouts.values().cloned().collect();
        self.log.rewind(&tables).await?;
        while let Some(batch) = self.log.next_batch().await? {
            blocking(|| ingest(&db, &self.layouts, batch, &mut stats))?;
        }
        db.execute_batch("COMMIT")?;
        stats.duplicated_ids = db.query_row("SELECT COUNT(*) FROM ids WHERE n > 1", [], |r| r.get::<_, i64>(0))? as u64;
        let mut q = db.prepare("SELECT id, n FROM ids WHERE n > 1 ORDER BY n DESC, id LIMIT ?1")?;
        stats.worst_duplicates = q
            .query_map(params![LISTED as i64], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?
            .collect::<Result<_, _>>()?;
        drop(q);
        let unreadable = self.log.unreadable();
        if unreadable > 0 {
            tracing::warn!(sink = %self.sink, records = unreadable, "records that are not events were skipped");
        }
        self.deliveries = stats;
        self.db = Some(db);
        Ok(())
    }

    fn db(&self) -> Result<&Connection, VerifyError> {
        self.db.as_ref().ok_or_else(|| self.err("read before load"))
    }
}

/// Applies one batch of events to the index, committing every 20 000
/// applied events so the journal stays small.
fn ingest(
    db: &Connection,
    layouts: &HashMap<String, TableLayout>,
    batch: Vec<Delivered>,
    stats: &mut Deliveries,
) -> Result<(), VerifyError> {
    for d in batch {
        stats.events += 1;
        let n: i64 = db.query_row(
            "INSERT INTO ids (id, n) VALUES (?1, 1) ON CONFLICT (id) DO UPDATE SET n = n + 1 RETURNING n",
            params![d.id],
            |r| r.get(0),
        )?;
        if n > 1 {
            stats.duplicate_events += 1;
            continue;
        }
        let Some(layout) = layouts.get(&d.table) else { continue };
        if apply(db, layout, &d, stats)? && (stats.events - stats.duplicate_events).is_multiple_of(20_000) {
            db.execute_batch("COMMIT; BEGIN")?;
        }
    }
    Ok(())
}

/// Applies one (non-duplicate) event to the index; `false` when it names
/// no key.
fn apply(db: &Connection, layout: &TableLayout, d: &Delivered, stats: &mut Deliveries) -> Result<bool, VerifyError> {
    if d.op == "t" {
        db.execute("UPDATE state SET row = NULL WHERE tbl = ?1", params![d.table])?;
        return Ok(true);
    }
    let image = if d.op == "d" { d.before.as_ref() } else { d.after.as_ref() };
    let Some(key) = image.and_then(|r| layout.key_of_object(r)) else { return Ok(false) };
    let old: Option<(Option<String>, Option<String>)> = db
        .query_row("SELECT row, pos FROM state WHERE tbl = ?1 AND key = ?2", params![d.table, key], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    if let (Some(new), Some((_, Some(old_pos)))) = (&d.tx_position, &old) {
        let older = serde_json::from_str::<Value>(old_pos)
            .ok()
            .and_then(|v| Position::from_json(&v).ok())
            .and_then(|old| new.compare(&old))
            .is_some_and(|o| o.is_lt());
        if older {
            stats.out_of_order_events += 1;
            if stats.out_of_order_keys.len() < LISTED {
                stats.out_of_order_keys.push(KeyRef { table: d.table.clone(), key: key.clone() });
            }
        }
    }
    // An update that changed the key removes the old key's row.
    if d.op == "u" {
        if let Some(before_key) = d.before.as_ref().and_then(|b| layout.key_of_object(b)) {
            if before_key != key {
                db.execute("UPDATE state SET row = NULL WHERE tbl = ?1 AND key = ?2", params![d.table, before_key])?;
            }
        }
    }
    let row = match (d.op.as_str(), &d.after) {
        ("d", _) | (_, None) => None,
        (_, Some(after)) => {
            let mut after = after.clone();
            let previous: Option<SinkRow> =
                old.as_ref().and_then(|(r, _)| r.as_deref()).and_then(|t| serde_json::from_str(t).ok());
            for (col, v) in after.iter_mut() {
                if is_unchanged_toast(v) {
                    *v = previous.as_ref().and_then(|p| p.get(col)).cloned().unwrap_or(Value::Null);
                }
            }
            Some(Value::Object(after).to_string())
        }
    };
    let pos = d.tx_position.as_ref().map(|p| p.to_json().to_string());
    db.execute(
        "INSERT INTO state (tbl, key, row, pos) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (tbl, key) DO UPDATE SET row = excluded.row, pos = excluded.pos",
        params![d.table, key, row, pos],
    )?;
    Ok(true)
}

/// Runs blocking work (the index, file reads, a blocking client) without
/// stalling a multi-threaded runtime.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// The state of `wanted` keys as of source position `at`, from one replay.
struct AsOf<'a> {
    table: &'a TableLayout,
    wanted: HashSet<&'a String>,
    seen_ids: HashSet<String>,
    state: HashMap<String, Option<SinkRow>>,
}

impl AsOf<'_> {
    fn apply(&mut self, d: Delivered, at: &Position) {
        if d.table != self.table.name {
            return;
        }
        // Only what the source had at `at`; events without a readable
        // position count as before it.
        if d.tx_position.as_ref().and_then(|p| p.compare(at)).is_some_and(|o| o.is_gt()) {
            return;
        }
        if d.op == "t" {
            self.state.values_mut().for_each(|v| *v = None);
            return;
        }
        let image = if d.op == "d" { d.before.as_ref() } else { d.after.as_ref() };
        let Some(key) = image.and_then(|r| self.table.key_of_object(r)) else { return };
        let before_key = d.before.as_ref().and_then(|b| self.table.key_of_object(b)).filter(|b| *b != key);
        if !self.wanted.contains(&key) && before_key.as_ref().is_none_or(|b| !self.wanted.contains(b)) {
            return;
        }
        if !self.seen_ids.insert(d.id.clone()) {
            return;
        }
        if let Some(b) = before_key.filter(|b| self.wanted.contains(b)) {
            self.state.insert(b, None);
        }
        let row = match (d.op.as_str(), d.after) {
            ("d", _) | (_, None) => None,
            (_, Some(mut after)) => {
                let previous = self.state.get(&key).cloned().flatten();
                for (col, v) in after.iter_mut() {
                    if is_unchanged_toast(v) {
                        *v = previous.as_ref().and_then(|p| p.get(col)).cloned().unwrap_or(Value::Null);
                    }
                }
                Some(after)
            }
        };
        if self.wanted.contains(&key) {
            self.state.insert(key, row);
        }
    }
}

#[async_trait]
impl<L: EventLog> SinkReader for IndexedSinkReader<L> {
    async fn load(&mut self, tables: &[TableLayout]) -> Result<(), VerifyError> {
        self.layouts = tables.iter().map(|t| (t.name.clone(), t.clone())).collect();
        self.build_index().await
    }

    async fn rows(&mut self, table: &str, keys: &[String]) -> Result<HashMap<String, SinkRow>, VerifyError> {
        let db = self.db()?;
        // One transaction per chunk: the visited marks are one write.
        let tx = db.unchecked_transaction()?;
        let mut get = db.prepare_cached("SELECT row FROM state WHERE tbl = ?1 AND key = ?2")?;
        let mut mark = db.prepare_cached("UPDATE state SET visited = 1 WHERE tbl = ?1 AND key = ?2")?;
        let mut out = HashMap::new();
        for k in keys {
            let row: Option<Option<String>> = get.query_row(params![table, k], |r| r.get(0)).optional()?;
            if let Some(Some(text)) = row {
                if let Ok(obj) = serde_json::from_str::<SinkRow>(&text) {
                    out.insert(k.clone(), obj);
                }
                mark.execute(params![table, k])?;
            }
        }
        drop((get, mark));
        tx.commit()?;
        Ok(out)
    }

    async fn unvisited(&mut self, table: &str, limit: usize) -> Result<(Vec<(String, SinkRow)>, u64), VerifyError> {
        let db = self.db()?;
        let total: i64 = db.query_row(
            "SELECT COUNT(*) FROM state WHERE tbl = ?1 AND visited = 0 AND row IS NOT NULL",
            params![table],
            |r| r.get(0),
        )?;
        let mut q = db.prepare(
            "SELECT key, row FROM state WHERE tbl = ?1 AND visited = 0 AND row IS NOT NULL ORDER BY key LIMIT ?2",
        )?;
        let rows: Vec<(String, String)> =
            q.query_map(params![table, limit as i64], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
        let out = rows.into_iter().map(|(k, t)| (k, serde_json::from_str(&t).unwrap_or_default())).collect();
        Ok((out, total as u64))
    }

    async fn rows_as_of(
        &mut self,
        table: &TableLayout,
        keys: &[String],
        at: &Position,
    ) -> Result<HashMap<String, SinkRow>, VerifyError> {
        let mut as_of = AsOf { table, wanted: keys.iter().collect(), seen_ids: HashSet::new(), state: HashMap::new() };
        self.log.rewind(std::slice::from_ref(table)).await?;
        while let Some(batch) = self.log.next_batch().await? {
            batch.into_iter().for_each(|d| as_of.apply(d, at));
        }
        Ok(as_of.state.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))).collect())
    }

    fn deliveries(&self) -> Deliveries {
        self.deliveries.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// An in-memory log: events in delivery order, in batches of two.
    struct Events(Vec<Delivered>, usize);

    #[async_trait]
    impl EventLog for Events {
        async fn rewind(&mut self, _tables: &[TableLayout]) -> Result<(), VerifyError> {
            self.1 = 0;
            Ok(())
        }
        async fn next_batch(&mut self) -> Result<Option<Vec<Delivered>>, VerifyError> {
            let batch: Vec<Delivered> = self.0.iter().skip(self.1).take(2).cloned().collect();
            self.1 += batch.len();
            Ok((!batch.is_empty()).then_some(batch))
        }
        fn unreadable(&self) -> u64 {
            0
        }
    }

    fn event(id: &str, lsn: u64, op: &str, key: i64, v: i64) -> Delivered {
        let row = json!({"id": key, "v": v}).as_object().cloned();
        Delivered {
            op: op.into(),
            table: "public.t".into(),
            before: if op == "d" { row.clone() } else { None },
            after: if op == "d" { None } else { row },
            id: id.into(),
            tx_position: Some(deltaforge_source_postgres::position::position(lsn, None)),
        }
    }

    #[tokio::test]
    async fn last_event_wins_duplicates_and_out_of_order_are_counted() {
        let layout =
            TableLayout { name: "public.t".into(), columns: vec!["id".into(), "v".into()], key: vec!["id".into()] };
        let log = Events(
            vec![
                event("s:10:0", 10, "c", 1, 1),
                event("s:10:1", 10, "c", 2, 1),
                event("s:20:0", 20, "u", 1, 2),
                event("s:10:0", 10, "c", 1, 1), // redelivered: not applied again
                event("s:30:0", 30, "d", 2, 1),
                event("s:15:0", 15, "u", 1, 9), // older than key 1's last event
            ],
            0,
        );
        let mut reader = IndexedSinkReader::with_log("out", log).unwrap();
        reader.load(std::slice::from_ref(&layout)).await.unwrap();
        let rows = reader.rows("public.t", &["[1]".into(), "[2]".into()]).await.unwrap();
        assert_eq!(rows.len(), 1, "key 2 was deleted");
        assert_eq!(rows["[1]"]["v"], json!(9));
        let d = reader.deliveries();
        assert_eq!((d.events, d.duplicate_events, d.duplicated_ids), (6, 1, 1));
        assert_eq!(d.worst_duplicates, vec![("s:10:0".to_string(), 2)]);
        assert_eq!(d.out_of_order_events, 1);
        assert_eq!(d.out_of_order_keys, vec![KeyRef { table: "public.t".into(), key: "[1]".into() }]);
        // As of 12: the creates only (the update at 15 and the delete at
        // 30 came later).
        let at_12 = deltaforge_source_postgres::position::position(12, None);
        let old = reader.rows_as_of(&layout, &["[1]".into(), "[2]".into()], &at_12).await.unwrap();
        assert_eq!((old["[1]"]["v"].clone(), old["[2]"]["v"].clone()), (json!(1), json!(1)));
    }
}
