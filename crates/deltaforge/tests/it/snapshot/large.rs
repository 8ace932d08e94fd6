//! The snapshot of a large table, for each database: the table is read in
//! chunks while a writer inserts, updates and deletes rows in it; the
//! binary is killed with `kill -9` three times during the snapshot and
//! restarted; a concurrent `ALTER TABLE … ADD COLUMN` and the writer must
//! not wait for more than a chunk's read; a backfill with a WHERE condition
//! re-delivers exactly the matching rows while the stream goes on. At the
//! end the file sink's events, replayed per primary key (last event wins,
//! deletes remove), must equal the table row by row, and the `r` events
//! must number less than 1.3 × the table.
//!
//! `DF_SNAPSHOT_ROWS` (PostgreSQL) and `DF_MYSQL_SNAPSHOT_ROWS` (MySQL) set
//! the table size (default 1,000,000) and `DF_SNAPSHOT_CHUNK` the chunk
//! size (default 10,000).

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{env_u64, Db};
use crate::support::sinks::line_count;
use crate::support::{http_json, storage, wait_for, Pipeline, Rng, RunArgs};

impl Db {
    fn large_rows_var(self) -> &'static str {
        match self {
            Db::Postgres => "DF_SNAPSHOT_ROWS",
            Db::Mysql => "DF_MYSQL_SNAPSHOT_ROWS",
        }
    }

    /// `(scope, table, pipeline id)`: PostgreSQL's table `pgsnap_{s}` (its
    /// own scope); MySQL's table `t` in the database `mysnap_{s}`, named
    /// with its database.
    fn large_names(self, s: &str) -> (String, String, String) {
        let id_s = s.replace('_', "-");
        match self {
            Db::Postgres => (format!("pgsnap_{s}"), format!("pgsnap_{s}"), format!("pgsnap-{id_s}")),
            Db::Mysql => (format!("mysnap_{s}"), format!("mysnap_{s}.t"), format!("mysnap-{id_s}")),
        }
    }

    /// The table as the source config and the snapshot records name it.
    fn qualified(self, table: &str) -> String {
        match self {
            Db::Postgres => format!("public.{table}"),
            Db::Mysql => table.to_string(),
        }
    }

    fn large_create(self, scope: &str, table: &str, n: u64) -> String {
        match self {
            Db::Postgres => format!(
                "CREATE TABLE {table} (id bigint PRIMARY KEY, v int NOT NULL, payload text NOT NULL); \
                 INSERT INTO {table} SELECT g, g % 1000, 'p' || g FROM generate_series(1, {n}) g; ANALYZE {table};"
            ),
            Db::Mysql => format!(
                "CREATE DATABASE {scope}; CREATE TABLE {table} (id BIGINT PRIMARY KEY, v INT NOT NULL, payload VARCHAR(40) NOT NULL); \
                 INSERT INTO {table} SELECT seq, seq % 1000, CONCAT('p', seq) FROM seq_1_to_{n}; ANALYZE TABLE {table};"
            ),
        }
    }

    fn large_source(self, id: &str, url: &str, table: &str, chunk: u64) -> Value {
        let snapshot = json!({ "mode": "initial", "chunk_size": chunk });
        match self {
            Db::Postgres => json!({
                "id": id, "dsn": url, "tables": [self.qualified(table)], "slot": table, "publication": table,
                "status_interval_secs": 1, "snapshot": snapshot,
            }),
            Db::Mysql => json!({ "id": id, "dsn": url, "tables": [table], "heartbeat_secs": 1, "snapshot": snapshot }),
        }
    }

    fn large_alter(self, table: &str) -> String {
        match self {
            Db::Postgres => format!("SET lock_timeout = '30s'; ALTER TABLE {table} ADD COLUMN extra int"),
            Db::Mysql => format!("SET lock_wait_timeout = 30; ALTER TABLE {table} ADD COLUMN extra INT"),
        }
    }

    fn large_sentinel(self, table: &str) -> String {
        match self {
            Db::Postgres => format!("INSERT INTO {table} VALUES (0, 0, 'sentinel')"),
            Db::Mysql => format!("INSERT INTO {table} (id, v, payload) VALUES (0, 0, 'sentinel')"),
        }
    }

    fn large_cleanup(self, url: &str, scope: &str, table: &str) {
        let _ = match self {
            Db::Postgres => std::process::Command::new("psql")
                .args([
                    url,
                    "-X",
                    "-q",
                    "-c",
                    &format!(
                        "SELECT pg_drop_replication_slot('{table}'); DROP PUBLICATION {table}; DROP TABLE {table};"
                    ),
                ])
                .output(),
            Db::Mysql => self.command(url).arg("-e").arg(format!("DROP DATABASE {scope}")).output(),
        };
    }
}

/// What the writer did, shared with the test.
#[derive(Default)]
struct WriterState {
    stop: AtomicBool,
    /// While set, the writer leaves rows with `id % 97 = 0` alone.
    avoid_97: AtomicBool,
    rounds: AtomicU64,
    max_round_ms: AtomicU64,
}

fn writer(dbk: Db, url: String, table: String, n: u64, st: Arc<WriterState>) {
    let mut rng = Rng::from_env();
    let mut next_id = n + 1;
    while !st.stop.load(Ordering::SeqCst) {
        let avoid = st.avoid_97.load(Ordering::SeqCst);
        let pick = |rng: &mut Rng, hi: u64| loop {
            let id = rng.range(1, hi);
            if !avoid || !id.is_multiple_of(97) {
                return id;
            }
        };
        let mut sql = String::new();
        for _ in 0..4 {
            if avoid && next_id.is_multiple_of(97) {
                next_id += 1;
            }
            sql.push_str(&format!(
                "INSERT INTO {{t}} (id, v, payload) VALUES ({next_id}, {}, 'w{next_id}');\n",
                rng.range(0, 1000)
            ));
            next_id += 1;
            let u = pick(&mut rng, next_id);
            sql.push_str(&format!(
                "UPDATE {{t}} SET v = v + 1, payload = 'u{}' WHERE id = {u};\n",
                rng.range(0, 1 << 20)
            ));
            let d = pick(&mut rng, next_id);
            sql.push_str(&format!("DELETE FROM {{t}} WHERE id = {d};\n"));
        }
        let started = Instant::now();
        assert!(dbk.script(&url, &sql.replace("{t}", &table)), "writer script failed");
        let ms = started.elapsed().as_millis() as u64;
        st.max_round_ms.fetch_max(ms, Ordering::SeqCst);
        st.rounds.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn snapshot_with_kills_writer_alter_and_backfill_reproduces_the_table(dbk: Db) {
    let n = env_u64(dbk.large_rows_var(), 1_000_000);
    let chunk = env_u64("DF_SNAPSHOT_CHUNK", 10_000);
    let url = dbk.start();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let s = format!("{}_{}", std::process::id(), nanos % 1_000_000);
    let (scope, table, id) = dbk.large_names(&s);
    let began = Instant::now();
    dbk.sql(&url, &dbk.large_create(&scope, &table, n));
    eprintln!("table of {n} rows created in {:?}", began.elapsed());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let cfg = Pipeline::new(&id)
        .tenant("test")
        .source(dbk.source_type(), dbk.large_source(&id, &url, &table, chunk))
        .file_sink("out", &out, Value::Null)
        .write(dir.path().join("pipeline.yaml"));
    let db = dir.path().join("state/deltaforge.db");
    let log = dir.path().join("deltaforge.log");
    let (args, api, _metrics) = RunArgs::new(&cfg, &db).free_ports();
    let progress_key = format!("{id}/{}", dbk.qualified(&table));
    let progress = || storage::slot(&db, "snapshots", &progress_key);
    let rows_done = || progress().and_then(|p| p["rows_done"].as_u64()).unwrap_or(0);

    let st = Arc::new(WriterState::default());
    let w = {
        let (url, table, st) = (url.clone(), table.clone(), st.clone());
        std::thread::spawn(move || writer(dbk, url, table, n, st))
    };

    let mut df = args.start(&log, &[]);
    let snap_started = Instant::now();
    let mut alter_ms = None;
    for k in 1..=3u64 {
        let target = n * k / 5;
        wait_for(Duration::from_secs(600), || (rows_done() >= target).then_some(()))
            .unwrap_or_else(|| panic!("snapshot stuck below {target} rows\n{}", df.log_text()));
        df.kill9();
        eprintln!("kill -9 #{k} at {} rows done ({:?})", rows_done(), snap_started.elapsed());
        assert_ne!(progress().unwrap()["state"], "done", "the snapshot ended before kill #{k}; raise DF_SNAPSHOT_ROWS");
        df = args.start(&log, &[]);
        if k == 1 {
            // Once the resumed snapshot reads again, alter the table under it.
            let at = rows_done();
            wait_for(Duration::from_secs(300), || (rows_done() > at).then_some(()))
                .unwrap_or_else(|| panic!("snapshot did not resume\n{}", df.log_text()));
            let t = Instant::now();
            dbk.sql(&url, &dbk.large_alter(&table));
            alter_ms = Some(t.elapsed().as_millis());
        }
    }
    wait_for(Duration::from_secs(900), || (progress()?["state"] == "done").then_some(()))
        .unwrap_or_else(|| panic!("snapshot never finished\n{}", df.log_text()));
    let snapshot_secs = snap_started.elapsed().as_secs_f64();
    let alter_ms = alter_ms.unwrap();
    assert!(alter_ms < 10_000, "ALTER TABLE waited {alter_ms} ms: the snapshot held a lock too long");

    // Backfill of the rows with id % 97 = 0 while the writer (now leaving
    // those rows alone) keeps the stream busy.
    st.avoid_97.store(true, Ordering::SeqCst);
    let r0 = st.rounds.load(Ordering::SeqCst);
    wait_for(Duration::from_secs(60), || (st.rounds.load(Ordering::SeqCst) >= r0 + 2).then_some(())).unwrap();
    let offset = line_count(&out);
    let (status, body) = http_json(
        &api,
        "POST",
        &format!("/pipelines/{id}/backfill"),
        None,
        Some(&format!(r#"{{"tables": ["{}"], "where": "id % 97 = 0"}}"#, dbk.qualified(&table))),
    )
    .unwrap();
    assert_eq!(status, 202, "{body}");
    wait_for(Duration::from_secs(600), || {
        let p = progress()?;
        (p["kind"] == "backfill" && p["state"] == "done").then_some(())
    })
    .unwrap_or_else(|| panic!("backfill never finished\n{}", df.log_text()));
    let expected_backfill: BTreeSet<i64> = dbk
        .sql(&url, &format!("SELECT id FROM {table} WHERE id % 97 = 0"))
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();

    // Stop the writer, then wait for a sentinel row to be sure the stream
    // delivered everything before it.
    st.stop.store(true, Ordering::SeqCst);
    w.join().unwrap();
    dbk.sql(&url, &dbk.large_sentinel(&table));
    let sentinel = r#""after":{"id":0,"v":0,"payload":"sentinel""#;
    wait_for(Duration::from_secs(300), || {
        std::fs::read_to_string(&out).ok().filter(|t| t.contains(sentinel)).map(|_| ())
    })
    .unwrap_or_else(|| panic!("sentinel never delivered\n{}", df.log_text()));
    df.terminate();
    assert_eq!(df.wait_exit(Duration::from_secs(60)), Some(0), "{}", df.log_text());

    // Replay the file per primary key.
    let file = std::io::BufReader::new(std::fs::File::open(&out).unwrap());
    let mut state: BTreeMap<i64, (String, String)> = BTreeMap::new();
    let (mut reads, mut backfill_reads, mut streamed_after_offset, mut streamed_during_backfill) =
        (0u64, 0u64, 0u64, 0u64);
    let mut backfill_ids: Vec<i64> = Vec::new();
    let mut pending_streamed = 0u64;
    for (i, line) in file.lines().enumerate() {
        let e: Value = serde_json::from_str(&line.unwrap()).unwrap();
        let op = e["op"].as_str().unwrap();
        match op {
            "r" | "c" | "u" => {
                let a = &e["after"];
                state.insert(a["id"].as_i64().unwrap(), (text(&a["v"]), text(&a["payload"])));
            }
            "d" => {
                state.remove(&e["before"]["id"].as_i64().unwrap());
            }
            other => panic!("unexpected op {other}: {e}"),
        }
        if op == "r" {
            reads += 1;
        }
        if i >= offset {
            if op == "r" {
                backfill_reads += 1;
                backfill_ids.push(e["after"]["id"].as_i64().unwrap());
                streamed_during_backfill += pending_streamed;
                pending_streamed = 0;
            } else {
                streamed_after_offset += 1;
                if !backfill_ids.is_empty() {
                    pending_streamed += 1;
                }
            }
        }
    }
    let rows = dbk.sql(&url, &format!("SELECT id, v, payload FROM {table} ORDER BY id"));
    let mut table_rows: BTreeMap<i64, (String, String)> = BTreeMap::new();
    for l in rows.lines() {
        let mut p = l.splitn(3, dbk.column_separator());
        let (i, v, pl) = (p.next().unwrap(), p.next().unwrap(), p.next().unwrap());
        table_rows.insert(i.parse().unwrap(), (v.to_string(), pl.to_string()));
    }
    let missing: Vec<_> = table_rows.keys().filter(|k| !state.contains_key(k)).take(10).collect();
    let extra: Vec<_> = state.keys().filter(|k| !table_rows.contains_key(k)).take(10).collect();
    let differ: Vec<_> = table_rows.iter().filter(|(k, v)| state.get(k).is_some_and(|s| s != *v)).take(10).collect();
    assert!(
        missing.is_empty() && extra.is_empty() && differ.is_empty(),
        "replay differs from the table: missing {missing:?}, extra {extra:?}, different {differ:?}"
    );
    assert_eq!(state.len(), table_rows.len());

    let mut sorted = backfill_ids.clone();
    sorted.sort_unstable();
    assert_eq!(sorted.len(), backfill_ids.len());
    assert_eq!(sorted.iter().copied().collect::<BTreeSet<_>>(), expected_backfill, "backfill rows differ");
    assert_eq!(sorted.len(), expected_backfill.len(), "a backfill row was delivered twice");
    assert!(streamed_after_offset > 0, "no change streamed during or after the backfill");

    let snapshot_reads = reads - backfill_reads;
    eprintln!(
        "rows {n} (final {}), chunk {chunk}: snapshot {snapshot_secs:.1}s with 3 kills, r events {reads} \
         ({snapshot_reads} snapshot = {:.3}x, {backfill_reads} backfill), streamed between backfill reads \
         {streamed_during_backfill}, ALTER waited {alter_ms} ms, slowest writer round {} ms ({} rounds)",
        table_rows.len(),
        snapshot_reads as f64 / n as f64,
        st.max_round_ms.load(Ordering::SeqCst),
        st.rounds.load(Ordering::SeqCst),
    );
    assert!((reads as f64) < 1.3 * table_rows.len() as f64, "{reads} r events for {} rows", table_rows.len());
    assert!(
        st.max_round_ms.load(Ordering::SeqCst) < 10_000,
        "a writer round waited {} ms",
        st.max_round_ms.load(Ordering::SeqCst)
    );
    dbk.large_cleanup(&url, &scope, &table);
}

#[test]
fn postgres_snapshot_with_kills_writer_alter_and_backfill_reproduces_the_table() {
    snapshot_with_kills_writer_alter_and_backfill_reproduces_the_table(Db::Postgres);
}

#[test]
fn mysql_snapshot_with_kills_writer_alter_and_backfill_reproduces_the_table() {
    snapshot_with_kills_writer_alter_and_backfill_reproduces_the_table(Db::Mysql);
}
