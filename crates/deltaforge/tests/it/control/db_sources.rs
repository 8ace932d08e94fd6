//! The control plane against real database sources (PostgreSQL and
//! MariaDB), through the real binary, its REST API and `/metrics`:
//!
//! * checkpoint lag in seconds *and* bytes (WAL/binlog) rises while a sink
//!   is down (failpoint hook) and returns to near zero once it recovered;
//! * `DELETE /pipelines/{name}/checkpoint` + start: MariaDB re-reads from the
//!   oldest binlog the server holds (rows written before the reset, even
//!   before the pipeline first started, are delivered again), PostgreSQL
//!   drops the slot and a new one is created on start (later changes
//!   arrive; the old changes are not replayed from the WAL; the existing
//!   rows are snapshotted again).
//!
//! Each test uses its own table, slot and database, so they can share the
//! servers with other tests; none changes server-wide settings.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::support::spec::merged;
use crate::support::{
    free_port, http, http_json, mariadb_sql, metric_value, pg_cleanup, pg_sql, read_jsonl, service, storage,
    unique_suffix, wait_for, Deltaforge, Pipeline, RunArgs,
};
use serde_json::{json, Value};

/// Lag in bytes that counts as "near zero" once caught up: the servers are
/// shared, so other tests' writes may sit between the checkpoint and the
/// server's position for a moment.
const NEAR_ZERO_BYTES: f64 = 256.0 * 1024.0;
/// Lag in bytes the outage must build up (the backlog written below is
/// several times this).
const OUTAGE_BYTES: f64 = 1024.0 * 1024.0;

/// One `deltaforge run` with its API, metrics and a file sink `out` that the
/// failpoint flag can take down.
struct Instance {
    df: Deltaforge,
    api: String,
    metrics: String,
    out: PathBuf,
    flag: PathBuf,
    name: String,
    db: PathBuf,
    _dir: tempfile::TempDir,
}

impl Instance {
    fn start(name: &str, source: (&str, Value)) -> Instance {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.jsonl");
        let flag = dir.path().join("out.down");
        let cfg = Pipeline::new(name)
            .tenant("test")
            .source(source.0, source.1)
            .file_sink("out", &out, json!({ "retry_initial_ms": 50, "retry_max_ms": 200 }))
            .batch(500, 20)
            .write(dir.path().join("pipeline.yaml"));
        let db = dir.path().join("df.db");
        let (args, api, metrics) = RunArgs::new(&cfg, &db).free_ports();
        let fp = format!("sink:out={}", flag.display());
        let df = args.start(
            &dir.path().join("df.log"),
            &[("DELTAFORGE_FAILPOINTS", &fp), ("RUST_LOG", "info,deltaforge_core=debug")],
        );
        let inst = Instance { df, api, metrics, out, flag, name: name.to_string(), db, _dir: dir };
        wait_for(Duration::from_secs(30), || http(&inst.metrics, "GET", "/metrics", None, None).ok())
            .unwrap_or_else(|| panic!("no metrics endpoint\n{}", inst.df.log_text()));
        inst
    }

    fn call(&self, method: &str, path: &str) -> (u16, Value) {
        http_json(&self.api, method, path, None, None)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.df.log_text()))
    }

    fn view(&self) -> Value {
        self.call("GET", &format!("/pipelines/{}", self.name)).1
    }

    fn wait_state(&self, state: &str) {
        wait_for(Duration::from_secs(60), || (self.view()["state"] == state).then_some(()))
            .unwrap_or_else(|| panic!("never {state}: {}\n{}", self.view(), self.df.log_text()));
    }

    /// `(lag seconds, lag bytes)` from `/metrics`; bytes `None` while unset.
    fn lag(&self) -> (f64, Option<f64>) {
        let (status, text) = http(&self.metrics, "GET", "/metrics", None, None).expect("scrape /metrics");
        assert_eq!(status, 200);
        let p = [("pipeline", self.name.as_str())];
        (
            metric_value(&text, "deltaforge_checkpoint_lag_seconds", &p).unwrap_or(0.0),
            metric_value(&text, "deltaforge_checkpoint_lag_bytes", &p),
        )
    }

    fn events(&self) -> Vec<Value> {
        read_jsonl(&self.out)
    }

    /// Waits until the sink holds every id in `ids` (at least `times` times each).
    fn wait_ids(&self, ids: impl IntoIterator<Item = i64> + Clone, times: usize, within: Duration) {
        wait_for(within, || {
            let events = self.events();
            ids.clone()
                .into_iter()
                .all(|id| events.iter().filter(|e| e["after"]["id"].as_i64() == Some(id)).count() >= times)
                .then_some(())
        })
        .unwrap_or_else(|| {
            let have: BTreeSet<i64> = self.events().iter().filter_map(|e| e["after"]["id"].as_i64()).collect();
            panic!("ids missing on the sink (have {} distinct)\n{}", have.len(), self.df.log_text())
        });
    }

    /// The outage: with the sink down both lags rise (bytes past
    /// [`OUTAGE_BYTES`] once `write_backlog` ran); once it is back, both
    /// return to near zero.
    fn outage(&self, write_backlog: impl FnOnce(), backlog_ids: std::ops::RangeInclusive<i64>) {
        std::fs::write(&self.flag, b"down").unwrap();
        write_backlog();
        let (s1, b1) = wait_for(Duration::from_secs(60), || {
            let (s, b) = self.lag();
            (s > 1.0 && b.is_some_and(|b| b > OUTAGE_BYTES)).then(|| (s, b.unwrap_or(0.0)))
        })
        .unwrap_or_else(|| {
            panic!("lag did not rise while the sink was down: {:?}\n{}", self.lag(), self.df.log_text())
        });
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_millis(2500));
        let (s2, b2) = self.lag();
        let elapsed = t0.elapsed().as_secs_f64();
        assert!(s2 - s1 >= elapsed - 1.5, "lag seconds did not grow while down: {s1} -> {s2} in {elapsed}s");
        assert!(b2.unwrap_or(0.0) >= b1, "lag bytes fell while nothing could be checkpointed: {b1} -> {b2:?}");
        let view = self.view();
        assert!(view["lag_bytes"].as_f64().unwrap_or(0.0) > OUTAGE_BYTES, "{view}");
        assert!(view["checkpoint"].is_object(), "{view}");
        eprintln!("during the outage: lag {s2:.1} s, {} bytes", b2.unwrap_or(0.0));

        std::fs::remove_file(&self.flag).unwrap();
        self.wait_ids(backlog_ids, 1, Duration::from_secs(120));
        let (s, b) = wait_for(Duration::from_secs(60), || {
            let (s, b) = self.lag();
            (s < 0.5 && b.is_some_and(|b| b < NEAR_ZERO_BYTES)).then(|| (s, b.unwrap_or(0.0)))
        })
        .unwrap_or_else(|| panic!("lag did not return to near zero: {:?}\n{}", self.lag(), self.df.log_text()));
        eprintln!("after recovery: lag {s:.1} s, {b} bytes");
    }

    fn stop(mut self) {
        self.df.terminate();
        assert_eq!(self.df.wait_exit(Duration::from_secs(40)), Some(0), "{}", self.df.log_text());
    }
}

fn postgres_source(url: &str, id: &str, table: &str) -> (&'static str, Value) {
    let config = json!({
        "id": id, "dsn": url, "tables": [format!("public.{table}")], "slot": table,
        "publication": table, "status_interval_secs": 1,
    });
    ("postgres", config)
}

fn mariadb_source(url: &str, id: &str, db: &str, extra: Value) -> (&'static str, Value) {
    ("mysql", merged(json!({ "id": id, "dsn": url, "tables": [format!("{db}.t")], "heartbeat_secs": 1 }), extra))
}

/// Drops what a PostgreSQL test created (the slot may be gone already).
fn pg_slot_count(url: &str, slot: &str) -> usize {
    pg_sql(url, &format!("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{slot}'"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn postgres_lag_in_seconds_and_wal_bytes_follows_a_sink_outage() {
    let url = service("postgres");
    let s = unique_suffix();
    let (table, name) = (format!("ctllag_{s}"), format!("ctllag-{}", s.replace('_', "-")));
    pg_sql(&url, &format!("CREATE TABLE {table} (id int PRIMARY KEY, pad text)"));
    let inst = Instance::start(&name, postgres_source(&url, &name, &table));
    inst.df.wait_pg_streaming();
    inst.df.wait_snapshot_over();

    // Caught up first: a checkpoint exists and the probe measured.
    pg_sql(&url, &format!("INSERT INTO {table} SELECT g, 'x' FROM generate_series(1, 10) g"));
    inst.wait_ids(1..=10, 1, Duration::from_secs(30));
    wait_for(Duration::from_secs(30), || inst.lag().1.filter(|b| *b < NEAR_ZERO_BYTES))
        .unwrap_or_else(|| panic!("lag bytes never measured near zero: {:?}\n{}", inst.lag(), inst.df.log_text()));

    // About 4 MB of WAL in three transactions while the sink is down.
    inst.outage(
        || {
            for (from, to) in [(11, 1000), (1001, 2000), (2001, 3000)] {
                pg_sql(
                    &url,
                    &format!(
                        "INSERT INTO {table} SELECT g, repeat(md5(g::text), 32) FROM generate_series({from}, {to}) g"
                    ),
                );
            }
        },
        11..=3000,
    );
    inst.stop();
    pg_cleanup(&url, &table);
}

#[test]
fn mariadb_lag_in_seconds_and_binlog_bytes_follows_a_sink_outage() {
    let url = service("mariadb");
    let s = unique_suffix();
    let (db, name) = (format!("dft_ctllag_{s}"), format!("ctllag-my-{}", s.replace('_', "-")));
    mariadb_sql(&url, &format!("CREATE DATABASE {db}; CREATE TABLE {db}.t (id INT PRIMARY KEY, pad TEXT)"));
    let inst = Instance::start(&name, mariadb_source(&url, &name, &db, Value::Null));
    wait_for(Duration::from_secs(30), || inst.df.log_text().contains("streaming the binlog").then_some(()))
        .unwrap_or_else(|| panic!("not streaming\n{}", inst.df.log_text()));
    inst.df.wait_snapshot_over();

    mariadb_sql(&url, &format!("INSERT INTO {db}.t SELECT seq, 'x' FROM seq_1_to_10"));
    inst.wait_ids(1..=10, 1, Duration::from_secs(30));
    wait_for(Duration::from_secs(30), || inst.lag().1.filter(|b| *b < NEAR_ZERO_BYTES))
        .unwrap_or_else(|| panic!("lag bytes never measured near zero: {:?}\n{}", inst.lag(), inst.df.log_text()));

    // About 3 MB of row images in three transactions while the sink is down.
    inst.outage(
        || {
            for (from, to) in [(11, 1000), (1001, 2000), (2001, 3000)] {
                mariadb_sql(
                    &url,
                    &format!("INSERT INTO {db}.t SELECT seq, REPEAT(MD5(seq), 32) FROM seq_{from}_to_{to}"),
                );
            }
        },
        11..=3000,
    );
    inst.stop();
    mariadb_sql(&url, &format!("DROP DATABASE {db}"));
}

#[test]
fn postgres_reset_drops_the_slot_and_a_new_one_streams_later_changes() {
    let url = service("postgres");
    let s = unique_suffix();
    let (table, name) = (format!("ctlreset_{s}"), format!("ctlreset-{}", s.replace('_', "-")));
    pg_sql(&url, &format!("CREATE TABLE {table} (id int PRIMARY KEY, v text)"));
    let inst = Instance::start(&name, postgres_source(&url, &name, &table));
    inst.df.wait_pg_streaming();
    pg_sql(&url, &format!("INSERT INTO {table} SELECT g, 'before' FROM generate_series(1, 5) g"));
    inst.wait_ids(1..=5, 1, Duration::from_secs(30));
    wait_for(Duration::from_secs(30), || {
        inst.call("GET", &format!("/pipelines/{name}/checkpoint")).1["position"]["lsn"].as_str().map(|_| ())
    })
    .expect("a checkpoint");
    assert_eq!(pg_slot_count(&url, &table), 1);

    // Reset while running: stopped, slot dropped, no checkpoint left.
    let (status, body) = inst.call("DELETE", &format!("/pipelines/{name}/checkpoint"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["deleted"], true, "{body}");
    assert!(body["start_position"].is_null(), "{body}");
    assert_eq!(body["pipeline"]["state"], "stopped", "{body}");
    assert_eq!(pg_slot_count(&url, &table), 0, "the reset drops the slot");
    assert!(inst.call("GET", &format!("/pipelines/{name}/checkpoint")).1["position"].is_null());
    // Repeating the reset is harmless (the slot is already gone).
    let (status, body) = inst.call("DELETE", &format!("/pipelines/{name}/checkpoint"));
    assert_eq!((status, &body["deleted"]), (200, &Value::Bool(false)), "{body}");

    // Start: a new slot at the current position; later changes arrive.
    let before = inst.events().len();
    assert_eq!(inst.call("POST", &format!("/pipelines/{name}/start")).0, 200);
    inst.wait_state("running");
    wait_for(Duration::from_secs(30), || (pg_slot_count(&url, &table) == 1).then_some(()))
        .unwrap_or_else(|| panic!("no new slot\n{}", inst.df.log_text()));
    wait_for(Duration::from_secs(30), || {
        (inst.df.log_text().matches("created replication slot").count() == 2).then_some(())
    })
    .unwrap_or_else(|| panic!("the slot was not recreated by the source\n{}", inst.df.log_text()));
    pg_sql(&url, &format!("INSERT INTO {table} SELECT g, 'after' FROM generate_series(6, 8) g"));
    pg_sql(&url, &format!("UPDATE {table} SET v = 'updated' WHERE id = 1"));
    inst.wait_ids(6..=8, 1, Duration::from_secs(30));
    wait_for(Duration::from_secs(30), || inst.events().iter().any(|e| e["op"] == "u").then_some(()))
        .unwrap_or_else(|| panic!("the update after the reset did not arrive\n{}", inst.df.log_text()));
    // The changes from before the reset are not replayed from the WAL (a
    // new slot starts at the current position; pre-existing rows come only
    // from an initial snapshot, op "r").
    let after: Vec<Value> = inst.events()[before..].to_vec();
    let replayed: Vec<&Value> =
        after.iter().filter(|e| e["op"] == "c" && e["after"]["id"].as_i64().is_some_and(|id| id <= 5)).collect();
    assert!(replayed.is_empty(), "old inserts replayed after the reset: {replayed:?}");
    // The rows that exist are snapshotted again (op "r"): with no checkpoint
    // the snapshot progress records are ignored.
    let snapshotted = || -> BTreeSet<i64> {
        inst.events()[before..].iter().filter(|e| e["op"] == "r").filter_map(|e| e["after"]["id"].as_i64()).collect()
    };
    wait_for(Duration::from_secs(30), || snapshotted().is_superset(&(1..=5).collect()).then_some(()))
        .unwrap_or_else(|| panic!("no re-snapshot after the reset: {:?}\n{}", snapshotted(), inst.df.log_text()));
    let (_, cp) = inst.call("GET", &format!("/pipelines/{name}/checkpoint"));
    assert!(cp["position"]["lsn"].is_string(), "{cp}");
    inst.stop();
    pg_cleanup(&url, &table);
}

#[test]
fn mariadb_reset_rereads_from_the_oldest_binlog_by_gtid() {
    mariadb_reset_rereads_from_the_oldest_binlog(true);
}

#[test]
fn mariadb_reset_rereads_from_the_oldest_binlog_by_file_and_position() {
    mariadb_reset_rereads_from_the_oldest_binlog(false);
}

fn mariadb_reset_rereads_from_the_oldest_binlog(use_gtid: bool) {
    let url = service("mariadb");
    let s = unique_suffix();
    let (db, name) = (format!("dft_ctlreset_{s}"), format!("ctlreset-my-{use_gtid}-{}", s.replace('_', "-")));
    mariadb_sql(&url, &format!("CREATE DATABASE {db}; CREATE TABLE {db}.t (id INT PRIMARY KEY, v TEXT)"));
    // Written before the pipeline's first start: a new pipeline starts at
    // the binlog's current end and does not read it; a reset does.
    mariadb_sql(&url, &format!("INSERT INTO {db}.t VALUES (0, 'before the first start')"));
    // No snapshot: this test is about what the binlog re-read brings back
    // (a snapshot would deliver the row of id 0 as op `r` on the first start).
    let source = mariadb_source(&url, &name, &db, json!({ "use_gtid": use_gtid, "snapshot": { "mode": "never" } }));
    let inst = Instance::start(&name, source);
    wait_for(Duration::from_secs(30), || inst.df.log_text().contains("streaming the binlog").then_some(()))
        .unwrap_or_else(|| panic!("not streaming\n{}", inst.df.log_text()));
    mariadb_sql(&url, &format!("INSERT INTO {db}.t SELECT seq, 'first run' FROM seq_1_to_5"));
    inst.wait_ids(1..=5, 1, Duration::from_secs(30));
    let first: Vec<Value> = inst.events();
    assert!(first.iter().all(|e| e["after"]["id"] != 0), "a new pipeline read from before its start");

    let oldest = mariadb_sql(&url, "SHOW BINARY LOGS");
    let oldest = oldest.lines().next().and_then(|l| l.split('\t').next()).unwrap().to_string();
    let (status, body) = inst.call("DELETE", &format!("/pipelines/{name}/checkpoint"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["deleted"], true, "{body}");
    assert_eq!(body["start_position"]["file"], oldest.as_str(), "{body}");
    assert_eq!(body["start_position"]["pos"], 4, "{body}");
    let (_, cp) = inst.call("GET", &format!("/pipelines/{name}/checkpoint"));
    assert_eq!(cp["position"], body["start_position"], "the start position is the stored checkpoint");
    assert_eq!(cp["sinks"], serde_json::json!({}), "no sink is ahead after a reset: {cp}");

    // Written while stopped, then the start re-reads everything.
    mariadb_sql(&url, &format!("INSERT INTO {db}.t VALUES (6, 'while stopped')"));
    let started = Instant::now();
    assert_eq!(inst.call("POST", &format!("/pipelines/{name}/start")).0, 200);
    inst.wait_ids([0, 6], 1, Duration::from_secs(600));
    inst.wait_ids(1..=5, 2, Duration::from_secs(30));
    eprintln!("re-read from {oldest} in {:.1} s (use_gtid: {use_gtid})", started.elapsed().as_secs_f64());
    let from = format!("streaming the binlog from {oldest}:4");
    let log = inst.df.log_text();
    let line = log.lines().rfind(|l| l.contains(&from)).unwrap_or_else(|| panic!("no {from:?} in\n{log}"));
    // With GTIDs the oldest file's GTID list is the start state.
    let gtid = body["start_position"]["gtid_set"].as_str();
    assert_eq!(line.contains("(by GTID"), use_gtid && gtid.is_some(), "{line}");
    // The re-delivered events are the same events (same idempotency keys).
    let events = inst.events();
    for e in &first {
        let again = events.iter().filter(|x| x["id"] == e["id"]).count();
        assert_eq!(again, 2, "event {} delivered {again} times", e["id"]);
    }
    inst.stop();
    mariadb_sql(&url, &format!("DROP DATABASE {db}"));
}

#[test]
fn reset_is_refused_and_deletes_nothing_when_the_source_server_is_unreachable() {
    // Nothing listens on this port: the source cannot connect (it retries),
    // and the reset cannot drop the slot.
    let url = format!("postgres://postgres@127.0.0.1:{}/deltaforge", free_port());
    let name = format!("ctlreset-down-{}", unique_suffix().replace('_', "-"));
    let inst = Instance::start(&name, postgres_source(&url, &name, "ctlreset_down"));
    let checkpoint = serde_json::json!({
        "position": { "lsn": "0/16B3748", "tx_id": 7 }, "sinks": {}, "written_at": "2026-11-27T12:00:00Z"
    });
    wait_for(Duration::from_secs(30), || inst.db.exists().then_some(())).expect("storage created");
    storage::put_checkpoint(&inst.db, &name, &checkpoint);

    let (status, body) = inst.call("DELETE", &format!("/pipelines/{name}/checkpoint"));
    assert_eq!(status, 409, "{body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(error.contains("could not be prepared") && error.contains("not deleted"), "{body}");
    assert!(error.contains("reachable"), "the cause is named: {body}");
    assert_eq!(storage::checkpoint(&inst.db, &name).unwrap()["position"], checkpoint["position"]);
    let (_, cp) = inst.call("GET", &format!("/pipelines/{name}/checkpoint"));
    assert_eq!(cp["position"], checkpoint["position"], "{cp}");
    assert_eq!(inst.view()["state"], "stopped");
    inst.stop();
}
