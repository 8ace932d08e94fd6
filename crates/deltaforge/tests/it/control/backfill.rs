//! Backfills through the real binary and its REST API, against the shared
//! MariaDB and PostgreSQL:
//!
//! * a `where` that would leave its parentheses (comments, `;`, unbalanced
//!   parentheses) is refused as text, and one the server refuses (unknown
//!   column) with the server's message, both with 400 and nothing queued;
//! * a condition the server accepts but that fails while running (a
//!   subquery returning several rows, a division by zero) marks that
//!   backfill `failed` with the error in `GET /pipelines/{name}/backfill`;
//!   the pipeline keeps running and starts again cleanly;
//! * chunks run in read-only transactions: a condition calling a function
//!   that writes fails (that backfill `failed`) and writes nothing;
//! * `DELETE /pipelines/{name}/backfill/{id}` (and `deltaforge pipelines
//!   backfill-cancel`) cancels a running backfill: it stops reading, is
//!   `cancelled` in the API and its table record, and is not resumed
//!   after a restart.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{
    http_json, mariadb_command, mariadb_sql, pg_cleanup, pg_sql, read_jsonl, service, storage, unique_suffix, wait_for,
    Deltaforge, Pipeline, RunArgs, BIN,
};

struct Run {
    df: Deltaforge,
    api: String,
    name: String,
    out: PathBuf,
    store: PathBuf,
    _dir: tempfile::TempDir,
}

impl Run {
    fn start(name: &str, kind: &str, source: Value) -> Run {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.jsonl");
        let cfg = Pipeline::new(name)
            .tenant("test")
            .source(kind, source)
            .file_sink("out", &out, Value::Null)
            .batch(200, 10)
            .write(dir.path().join("pipeline.yaml"));
        let store = dir.path().join("df.db");
        let (args, api, _metrics) = RunArgs::new(&cfg, &store).free_ports();
        let df = args.start(&dir.path().join("df.log"), &[]);
        Run { df, api, name: name.to_string(), out, store, _dir: dir }
    }

    fn call(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        http_json(&self.api, method, path, None, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    fn backfill(&self, tables: &[&str], condition: Option<&str>) -> (u16, Value) {
        let mut body = json!({ "tables": tables });
        if let Some(c) = condition {
            body["where"] = json!(c);
        }
        self.call("POST", &format!("/pipelines/{}/backfill", self.name), Some(&body.to_string()))
    }

    fn backfills(&self) -> Vec<Value> {
        let (status, body) = self.call("GET", &format!("/pipelines/{}/backfill", self.name), None);
        assert_eq!(status, 200, "{body}");
        body["backfills"].as_array().cloned().unwrap_or_default()
    }

    fn backfill_state(&self, id: u64) -> Option<Value> {
        self.backfills().into_iter().find(|b| b["id"] == id)
    }

    fn wait_backfill(&self, id: u64, state: &str) -> Value {
        wait_for(Duration::from_secs(120), || self.backfill_state(id).filter(|b| b["state"] == state))
            .unwrap_or_else(|| panic!("backfill {id} never {state}: {:?}\n{}", self.backfills(), self.df.log_text()))
    }

    fn state(&self) -> Value {
        self.call("GET", &format!("/pipelines/{}", self.name), None).1
    }

    fn wait_running(&self) {
        wait_for(Duration::from_secs(60), || (self.state()["state"] == "running").then_some(()))
            .unwrap_or_else(|| panic!("not running: {}\n{}", self.state(), self.df.log_text()));
    }

    fn record(&self, table: &str) -> Option<Value> {
        storage::slot(&self.store, "snapshots", &format!("{}/{table}", self.name))
    }

    fn wait_record(&self, table: &str, f: impl Fn(&Value) -> bool) -> Value {
        wait_for(Duration::from_secs(120), || self.record(table).filter(|r| f(r)))
            .unwrap_or_else(|| panic!("{table}: record {:?}\n{}", self.record(table), self.df.log_text()))
    }

    fn reads(&self) -> usize {
        read_jsonl(&self.out).iter().filter(|e| e["op"] == "r").count()
    }

    fn cli(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(BIN).args(args).args(["--api", &self.api]).output().unwrap()
    }
}

/// Runs a script through the client's stdin (it may change the delimiter).
fn mysql_script(url: &str, sql: &str) {
    let mut child = mariadb_command(url).stdin(std::process::Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), sql.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success(), "{sql}");
}

/// The refusals every database shares: text checks, then the server's.
fn refusals(run: &Run, table: &str, unknown_column_says: &str) {
    for (condition, says) in [
        ("id > 5 -- ORDER BY and LIMIT commented out", "`--` comments"),
        ("id > 5 /* x */", "`/*` comments"),
        ("id > 5; DELETE FROM x", "`;`"),
        ("id > 5) OR (1 = 1", "parenthesis"),
        ("id > 5 OR name = 'x\\') OR (1=1'", "backslashes"),
        ("no_such_column > 1", unknown_column_says),
    ] {
        let (status, body) = run.backfill(&[table], Some(condition));
        assert_eq!(status, 400, "{condition}: {body}");
        assert!(body.to_string().contains(says), "{condition}: expected {says:?} in {body}");
    }
    assert!(run.backfills().is_empty(), "a refused backfill was queued: {:?}", run.backfills());
}

#[test]
fn mysql_backfill_where_is_checked_failures_are_marked_and_backfills_cancel() {
    let url = service("mariadb");
    let db = format!("bfw_{}", unique_suffix());
    let table = format!("{db}.t");
    mariadb_sql(
        &url,
        &format!(
            "CREATE DATABASE {db}; CREATE TABLE {table} (id INT PRIMARY KEY, v INT NOT NULL); \
             INSERT INTO {table} SELECT seq, seq % 10 FROM seq_1_to_4000;"
        ),
    );
    let name = db.replace('_', "-");
    let source = json!({ "id": name, "dsn": url, "tables": [table], "heartbeat_secs": 1,
                         "snapshot": { "mode": "initial", "chunk_size": 4 } });
    let run = Run::start(&name, "mysql", source.clone());
    run.wait_record(&table, |r| r["state"] == "done");
    run.wait_running();

    refusals(&run, &table, "Unknown column");

    // Accepted by the server's prepare, fails when run: a failed backfill, not a failed pipeline.
    let (status, body) = run.backfill(&[&table], Some(&format!("id = (SELECT id FROM {table} WHERE v = 1)")));
    assert_eq!(status, 202, "{body}");
    let failed_id = body["request"]["id"].as_u64().unwrap();
    let failed = run.wait_backfill(failed_id, "failed");
    assert!(failed["error"].as_str().unwrap_or_default().contains("more than 1 row"), "{failed}");
    let rec = run.wait_record(&table, |r| r["state"] == "failed");
    assert_eq!(rec["backfill"], json!(failed_id), "{rec}");
    std::thread::sleep(Duration::from_secs(2));
    let st = run.state();
    assert_eq!(st["state"], "running", "{st}");
    assert_eq!(st["restarts"], 0, "the failed backfill restarted the pipeline: {st}");

    // Chunks run read-only. A condition calling a function that writes is
    // refused by the check (prepared in a read-only transaction); one whose
    // function starts writing after the check (queued while the pipeline is
    // paused) fails when run, and writes nothing.
    let writing = format!(
        "CREATE FUNCTION {db}.touch() RETURNS INT DETERMINISTIC MODIFIES SQL DATA BEGIN \
         INSERT INTO {db}.sidefx VALUES (1); RETURN 1; END"
    );
    mysql_script(&url, &format!("CREATE TABLE {db}.sidefx (n INT);\nDELIMITER //\n{writing}//\nDELIMITER ;\n"));
    let (status, body) = run.backfill(&[&table], Some(&format!("{db}.touch() = 1")));
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("READ ONLY"), "{body}");
    mysql_script(
        &url,
        &format!("DROP FUNCTION {db}.touch; CREATE FUNCTION {db}.touch() RETURNS INT DETERMINISTIC RETURN 1;"),
    );
    run.call("POST", &format!("/pipelines/{name}/pause"), None);
    wait_for(Duration::from_secs(60), || (run.state()["state"] == "paused").then_some(())).unwrap();
    let (status, body) = run.backfill(&[&table], Some(&format!("{db}.touch() = 1")));
    assert_eq!(status, 202, "{body}");
    let ro_id = body["request"]["id"].as_u64().unwrap();
    assert_eq!(run.backfill_state(ro_id).unwrap()["state"], "pending");
    mysql_script(&url, &format!("DROP FUNCTION {db}.touch;\nDELIMITER //\n{writing}//\nDELIMITER ;\n"));
    run.call("POST", &format!("/pipelines/{name}/resume"), None);
    run.wait_running();
    let ro = run.wait_backfill(ro_id, "failed");
    assert!(ro["error"].as_str().unwrap_or_default().contains("READ ONLY"), "{ro}");
    assert_eq!(mariadb_sql(&url, &format!("SELECT COUNT(*) FROM {db}.sidefx")).trim(), "0");

    // A running backfill, cancelled through the CLI.
    let before = run.reads();
    let (status, body) = run.backfill(&[&table], None);
    assert_eq!(status, 202, "{body}");
    let id = body["request"]["id"].as_u64().unwrap();
    run.wait_backfill(id, "running");
    wait_for(Duration::from_secs(60), || (run.reads() > before + 20).then_some(())).unwrap();
    let out = run.cli(&["pipelines", "backfill-cancel", &name, &id.to_string()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("pipeline {name}: backfill {id} cancelled"));
    assert_eq!(run.backfill_state(id).unwrap()["state"], "cancelled");
    run.wait_record(&table, |r| r["state"] == "cancelled" && r["backfill"] == json!(id));
    let at_cancel = run.reads();
    std::thread::sleep(Duration::from_secs(2));
    let after = run.reads();
    assert!(after <= at_cancel + 8, "still reading after the cancel: {at_cancel} → {after}");
    assert!(after - before < 4000, "the cancelled backfill read the whole table ({} rows)", after - before);
    let listed = String::from_utf8_lossy(&run.cli(&["pipelines", "backfills", &name]).stdout).into_owned();
    assert!(
        listed.contains("cancelled") && listed.contains("failed") && listed.contains("more than 1 row"),
        "{listed}"
    );
    // Cancelling again, or an unknown id.
    assert_eq!(run.call("DELETE", &format!("/pipelines/{name}/backfill/{id}"), None).0, 409);
    assert_eq!(run.call("DELETE", &format!("/pipelines/{name}/backfill/999999"), None).0, 404);

    // A restart resumes neither.
    run.call("POST", &format!("/pipelines/{name}/stop"), None);
    wait_for(Duration::from_secs(60), || (run.state()["state"] == "stopped").then_some(())).unwrap();
    let stopped_reads = run.reads();
    run.call("POST", &format!("/pipelines/{name}/start"), None);
    run.wait_running();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(run.reads(), stopped_reads, "a cancelled or failed backfill was resumed");
    assert_eq!(run.state()["state"], "running");
    assert!(run.record(&table).is_some_and(|r| r["state"] == "cancelled"));
    mariadb_sql(&url, &format!("DROP DATABASE {db}"));
}

#[test]
fn postgres_backfill_where_is_checked_and_a_failing_one_is_marked_failed() {
    let url = service("postgres");
    let t = format!("bfwpg_{}", unique_suffix());
    pg_sql(
        &url,
        &format!("CREATE TABLE {t} (id int PRIMARY KEY, v int NOT NULL); INSERT INTO {t} SELECT g, g % 10 FROM generate_series(1, 500) g;"),
    );
    let table = format!("public.{t}");
    let source = json!({ "id": t, "dsn": url, "tables": [table], "slot": t, "publication": t,
                         "status_interval_secs": 1, "snapshot": { "mode": "initial", "chunk_size": 50 } });
    let run = Run::start(&t.replace('_', "-"), "postgres", source);
    run.wait_record(&table, |r| r["state"] == "done");
    run.wait_running();

    refusals(&run, &table, "does not exist");
    let (status, body) = run.backfill(&[&table], Some("1 / (id - id) = 1"));
    assert_eq!(status, 202, "{body}");
    let id = body["request"]["id"].as_u64().unwrap();
    let failed = run.wait_backfill(id, "failed");
    assert!(failed["error"].as_str().unwrap_or_default().contains("division by zero"), "{failed}");
    std::thread::sleep(Duration::from_secs(2));
    let st = run.state();
    assert_eq!((st["state"].clone(), st["restarts"].clone()), (json!("running"), json!(0)), "{st}");
    // Chunks run read-only: a condition calling a function that writes fails, and writes nothing.
    pg_sql(
        &url,
        &format!(
            "CREATE TABLE {t}_fx (n int); CREATE FUNCTION {t}_touch() RETURNS int LANGUAGE sql VOLATILE \
             AS 'INSERT INTO {t}_fx VALUES (1) RETURNING 1'"
        ),
    );
    let (status, body) = run.backfill(&[&table], Some(&format!("{t}_touch() = 1")));
    assert_eq!(status, 202, "{body}");
    let ro = run.wait_backfill(body["request"]["id"].as_u64().unwrap(), "failed");
    assert!(ro["error"].as_str().unwrap_or_default().contains("read-only transaction"), "{ro}");
    assert_eq!(pg_sql(&url, &format!("SELECT count(*) FROM {t}_fx")).trim(), "0");
    // A good one still works afterwards.
    let before = run.reads();
    let (status, body) = run.backfill(&[&table], Some("v = 3"));
    assert_eq!(status, 202, "{body}");
    run.wait_backfill(body["request"]["id"].as_u64().unwrap(), "done");
    wait_for(Duration::from_secs(60), || (run.reads() >= before + 50).then_some(()))
        .unwrap_or_else(|| panic!("backfill rows missing\n{}", run.df.log_text()));
    drop(run);
    pg_sql(&url, &format!("DROP FUNCTION {t}_touch(); DROP TABLE {t}_fx"));
    pg_cleanup(&url, &t);
}
