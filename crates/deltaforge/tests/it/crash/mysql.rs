//! Crash test for the MySQL/MariaDB source: a writer commits single-row and
//! multi-row transactions (and rolls some back) continuously while the real
//! binary is killed with `kill -9` at random moments and restarted.
//! Afterwards every committed change is in the file sink, in commit order
//! per row; none comes from a rolled-back transaction; replayed duplicates
//! are identical to the first delivery (same idempotency key, same content).

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::{
    gtid_reached, mariadb_command, mariadb_sql, read_jsonl, service, storage, wait_for, Rng, RunArgs,
};
use serde_json::Value;

/// One committed change, as the model expects it.
#[derive(Debug, Clone, PartialEq)]
enum Change {
    Insert(i64),
    Update(i64, i64),
    Delete(i64),
}

/// Generates the writer's SQL and the model of committed changes per row.
struct Model {
    rng: Rng,
    next_id: u64,
    live: BTreeMap<u64, i64>,
    changes: HashMap<u64, Vec<Change>>,
    committed_tx: u64,
    rolled_back_tx: u64,
}

impl Model {
    fn tx(&mut self) -> String {
        let kind = self.rng.range(0, 10);
        if kind < 2 {
            // Rolled back: ids far above the committed ones, and updates of live rows.
            self.rolled_back_tx += 1;
            let mut sql = String::from("BEGIN;");
            sql.push_str(&format!("INSERT INTO t VALUES ({}, -1, 'rollback');", 1_000_000 + self.next_id));
            if let Some((&id, _)) = self.live.iter().next() {
                sql.push_str(&format!("UPDATE t SET v = -1, note = 'rollback' WHERE id = {id};"));
            }
            sql.push_str("ROLLBACK;\n");
            return sql;
        }
        self.committed_tx += 1;
        let rows = if kind < 6 { 1 } else { self.rng.range(2, 8) };
        let mut sql = String::from("BEGIN;");
        for _ in 0..rows {
            let op = self.rng.range(0, 10);
            if op < 4 || self.live.len() < 5 {
                self.next_id += 1;
                let id = self.next_id;
                self.live.insert(id, 0);
                self.changes.entry(id).or_default().push(Change::Insert(0));
                sql.push_str(&format!("INSERT INTO t VALUES ({id}, 0, 'ok');"));
            } else {
                let nth = self.rng.range(0, self.live.len() as u64) as usize;
                let id = *self.live.keys().nth(nth).unwrap();
                if op < 8 {
                    let old = self.live[&id];
                    self.live.insert(id, old + 1);
                    self.changes.entry(id).or_default().push(Change::Update(old, old + 1));
                    sql.push_str(&format!("UPDATE t SET v = v + 1 WHERE id = {id};"));
                } else {
                    let old = self.live.remove(&id).unwrap();
                    self.changes.entry(id).or_default().push(Change::Delete(old));
                    sql.push_str(&format!("DELETE FROM t WHERE id = {id};"));
                }
            }
        }
        sql.push_str("COMMIT;\n");
        sql
    }
}

fn change_of(e: &Value) -> (u64, Change) {
    let v = |row: &Value| row["v"].as_i64().expect("v");
    match e["op"].as_str().unwrap() {
        "c" => (e["after"]["id"].as_u64().unwrap(), Change::Insert(v(&e["after"]))),
        "u" => (e["after"]["id"].as_u64().unwrap(), Change::Update(v(&e["before"]), v(&e["after"]))),
        "d" => (e["before"]["id"].as_u64().unwrap(), Change::Delete(v(&e["before"]))),
        other => panic!("unexpected op {other}"),
    }
}

#[test]
fn kill_9_under_a_writer_loses_no_committed_change() {
    let url = service("mariadb");
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() % 1_000_000_000;
    let db = format!("dft_crash_{}_{nanos}", std::process::id());
    mariadb_sql(
        &url,
        &format!("CREATE DATABASE {db}; CREATE TABLE {db}.t (id BIGINT PRIMARY KEY, v INT NOT NULL, note VARCHAR(20)) ENGINE=InnoDB"),
    );
    let dir = tempfile::tempdir().unwrap();
    let id = format!("my-crash-{nanos}");
    let cfg = dir.path().join("pipeline.yaml");
    let out = dir.path().join("out.jsonl");
    crate::support::Pipeline::new("crash-my")
        .tenant("test")
        .source(
            "mysql",
            serde_json::json!({ "id": id, "dsn": url, "tables": [format!("{db}.t")], "heartbeat_secs": 2 }),
        )
        .file_sink("out", &out, serde_json::Value::Null)
        .batch(200, 20)
        .write(&cfg);
    let store = dir.path().join("state/df.db");
    let log = dir.path().join("df.log");
    let args = RunArgs::new(&cfg, &store);
    let mut rng = Rng::from_env();

    // First start: wait until the start position is recorded, then write.
    let mut df = args.start(&log, &[]);
    wait_for(Duration::from_secs(30), || storage::checkpoint(&store, &id))
        .unwrap_or_else(|| panic!("no start checkpoint\n{}", df.log_text()));

    let seed = rng.range(1, u64::MAX);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let url = url.clone();
        let db = db.clone();
        std::thread::spawn(move || {
            let mut model = Model {
                rng: Rng::seeded(seed),
                next_id: 0,
                live: BTreeMap::new(),
                changes: HashMap::new(),
                committed_tx: 0,
                rolled_back_tx: 0,
            };
            let mut child = mariadb_command(&url).stdin(Stdio::piped()).spawn().expect("mariadb client");
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(format!("USE {db};\n").as_bytes()).expect("writer pipe");
            while !stop.load(Ordering::Relaxed) {
                let sql = model.tx();
                stdin.write_all(sql.as_bytes()).expect("writer pipe");
                std::thread::sleep(Duration::from_millis(2));
            }
            drop(stdin);
            let status = child.wait().unwrap();
            assert!(status.success(), "writer client failed");
            model
        })
    };

    let mut kills = 0;
    for round in 0..6 {
        if round > 0 {
            df = args.start(&log, &[]);
        }
        let before = read_jsonl(&out).len();
        wait_for(Duration::from_secs(30), || (read_jsonl(&out).len() > before).then_some(()))
            .unwrap_or_else(|| panic!("round {round}: no progress\n{}", df.log_text()));
        std::thread::sleep(Duration::from_millis(rng.range(50, 900)));
        df.kill9();
        kills += 1;
        eprintln!("kill {round}: checkpoint {:?}", storage::checkpoint(&store, &id).map(|c| c["position"].clone()));
    }
    stop.store(true, Ordering::Relaxed);
    let model = writer.join().expect("writer thread");
    assert!(kills >= 5);
    eprintln!("writer: {} committed, {} rolled back transactions", model.committed_tx, model.rolled_back_tx);
    assert!(model.committed_tx > 100 && model.rolled_back_tx > 10, "writer did too little");

    // Restart and let it catch up with the server.
    let mut df = args.start(&log, &[]);
    let gtid = mariadb_sql(&url, "SELECT @@gtid_binlog_pos").trim().to_string();
    wait_for(Duration::from_secs(60), || {
        let c = storage::checkpoint(&store, &id)?;
        gtid_reached(c["position"]["gtid_set"].as_str()?, &gtid).then_some(())
    })
    .unwrap_or_else(|| panic!("never caught up to {gtid}: {:?}\n{}", storage::checkpoint(&store, &id), df.log_text()));
    df.terminate();
    assert_eq!(df.wait_exit(Duration::from_secs(20)), Some(0), "{}", df.log_text());

    // The database agrees with the model (the writer did what the model says).
    let rows = mariadb_sql(&url, &format!("SELECT id, v FROM {db}.t ORDER BY id"));
    let db_rows: BTreeMap<u64, i64> = rows
        .lines()
        .map(|l| {
            let mut f = l.split('\t');
            (f.next().unwrap().parse().unwrap(), f.next().unwrap().parse().unwrap())
        })
        .collect();
    assert_eq!(db_rows, model.live);

    // First deliveries, in file order; replays must repeat them exactly.
    let events = read_jsonl(&out);
    let mut first: HashMap<String, Value> = HashMap::new();
    let mut delivered: HashMap<u64, Vec<Change>> = HashMap::new();
    let mut duplicates = 0;
    for e in &events {
        assert_ne!(e["after"]["note"], "rollback", "event from a rolled-back transaction: {e}");
        assert_ne!(e["before"]["note"], "rollback", "event from a rolled-back transaction: {e}");
        let key = e["id"].as_str().unwrap().to_string();
        if let Some(prev) = first.get(&key) {
            assert_eq!(prev["after"], e["after"], "replay of {key} differs");
            assert_eq!(prev["before"], e["before"], "replay of {key} differs");
            duplicates += 1;
            continue;
        }
        first.insert(key, e.clone());
        let (row, change) = change_of(e);
        delivered.entry(row).or_default().push(change);
    }
    eprintln!("{} events, {} replayed duplicates", events.len(), duplicates);
    for (row, expected) in &model.changes {
        assert_eq!(delivered.get(row), Some(expected), "row {row}: delivered changes differ from committed ones");
    }
    assert_eq!(delivered.len(), model.changes.len(), "changes for rows the writer never committed");
    mariadb_sql(&url, &format!("DROP DATABASE {db}"));
}
