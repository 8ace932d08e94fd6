//! The `object_store` sink with the real binary: PostgreSQL and MariaDB
//! sources → Parquet on the S3 server of `scripts/services/s3.sh` (moto)
//! and in a local directory at once, while a writer changes a table and the
//! binary is killed with `kill -9` three times. Afterwards DuckDB reads
//! every file back (`support::sinks::read_lake`) and:
//! - every data file has a manifest and holds the manifest's row count;
//! - no two files of a directory hold overlapping position ranges and no
//!   event (`__id`) is in two files;
//! - replaying the rows per key, in position order, gives the source table
//!   row by row;
//! - DuckDB's `DESCRIBE` shows the Parquet types of the schema registry.
//!
//! Also: a 30-second outage of an S3 server of the test's own (SIGSTOP of
//! its process, so it keeps its objects) loses nothing and the pipeline
//! recovers by itself.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write as _;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use crate::support::sinks::{read_lake, Lake};
use crate::support::{
    mariadb_command, mariadb_sql, pg_cleanup, pg_command, pg_lsn, pg_sql, service, unique_suffix, wait_for, Pipeline,
    Rng, RunArgs,
};

/// Creates a bucket on the (moto) S3 server, which accepts any credentials.
fn create_bucket(endpoint: &str, bucket: &str) {
    let out = std::process::Command::new("curl")
        .args(["-sf", "-X", "PUT", &format!("{endpoint}/{bucket}")])
        .output()
        .expect("curl");
    assert!(out.status.success(), "creating bucket {bucket}: {}", String::from_utf8_lossy(&out.stderr));
}

/// The sink config of a Parquet target with small files, so that a run
/// rolls over by rows and by age many times.
fn sink_config(id: &str, url: &str, endpoint: Option<&str>) -> Value {
    let mut c = json!({"id": id, "url": url, "format": "parquet", "max_rows": 250, "max_age_ms": 700});
    if let Some(e) = endpoint {
        c["s3"] = json!({"endpoint": e, "region": "us-east-1", "path_style": true, "allow_http": true,
                         "access_key_id": "test", "secret_access_key": "test"});
    }
    c
}

/// SQL dialect of the writer.
#[derive(Clone, Copy, PartialEq)]
enum Dialect {
    Postgres,
    Mariadb,
}

/// Generates transactions of inserts, updates and deletes on table `t`.
struct Writer {
    rng: Rng,
    dialect: Dialect,
    next_id: i64,
    live: Vec<i64>,
}

impl Writer {
    fn at(&self, micros: i64) -> String {
        match self.dialect {
            Dialect::Postgres => format!("timestamptz '2026-01-01 00:00:00+00' + interval '{micros} microseconds'"),
            Dialect::Mariadb => format!("TIMESTAMP'2026-01-01 00:00:00' + INTERVAL {micros} MICROSECOND"),
        }
    }

    fn tx(&mut self, table: &str) -> String {
        let mut sql = String::from("BEGIN;\n");
        for _ in 0..self.rng.range(1, 5) {
            let pick = (!self.live.is_empty()).then(|| self.rng.range(0, self.live.len() as u64) as usize);
            match (self.rng.range(0, 10), pick) {
                (0..=4, _) | (_, None) => {
                    self.next_id += 1;
                    let id = self.next_id;
                    let note = if id % 7 == 0 { "NULL".to_string() } else { format!("'n{id}'") };
                    sql += &format!(
                        "INSERT INTO {table} (id, v, amount, small, at, flag, note, day) VALUES \
                         ({id}, 0, {}.{:02}, {}, {}, {}, {note}, DATE '2026-01-{:02}');\n",
                        id * 3,
                        id % 100,
                        id % 300,
                        self.at(id * 1_000_003),
                        if id % 2 == 0 { "TRUE" } else { "FALSE" },
                        1 + id % 28
                    );
                    self.live.push(id);
                }
                (5..=8, Some(i)) => {
                    let id = self.live[i];
                    let later = match self.dialect {
                        Dialect::Postgres => "at + interval '1.5 seconds'",
                        Dialect::Mariadb => "at + INTERVAL 1500000 MICROSECOND",
                    };
                    sql += &format!(
                        "UPDATE {table} SET v = v + 1, amount = amount + 1.25, at = {later}, flag = NOT flag WHERE id = {id};\n"
                    );
                }
                (_, Some(i)) => {
                    let id = self.live.swap_remove(i);
                    sql += &format!("DELETE FROM {table} WHERE id = {id};\n");
                }
            }
        }
        sql + "COMMIT;\n"
    }
}

/// Runs a writer through one client session until `stop`.
fn spawn_writer(
    mut client: std::process::Command,
    prelude: String,
    mut writer: Writer,
    table: String,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut child = client.stdin(Stdio::piped()).stdout(Stdio::null()).spawn().expect("SQL client");
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(prelude.as_bytes()).unwrap();
        while !stop.load(Ordering::Relaxed) {
            stdin.write_all(writer.tx(&table).as_bytes()).expect("writer pipe");
            stdin.flush().unwrap();
            std::thread::sleep(Duration::from_millis(writer.rng.range(2, 10)));
        }
        drop(stdin);
        assert!(child.wait().unwrap().success(), "the writer's client failed");
    })
}

/// A sortable key of a manifest position (`{"position": ..., "index": n}`):
/// PostgreSQL by LSN, MySQL/MariaDB by binlog file and offset.
fn position_key(p: &Value) -> (u64, u64, u64) {
    let pos = &p["position"];
    let index = p["index"].as_u64().unwrap();
    if let Some(lsn) = pos["lsn"].as_str() {
        return (0, pg_lsn(lsn), index);
    }
    let file = pos["file"].as_str().expect("a binlog position");
    let n = file.rsplit('.').next().unwrap().parse().unwrap();
    (n, pos["pos"].as_u64().unwrap(), index)
}

/// Checks a lake's files against its manifests, then replays its rows per
/// `id` in position order; returns the final rows rendered by `render`, or
/// what is wrong.
fn replay(lake: &Lake, render: impl Fn(&Map<String, Value>) -> String) -> Result<BTreeMap<i64, String>, String> {
    macro_rules! check {
        ($cond:expr, $($msg:tt)+) => {
            if !$cond {
                return Err(format!($($msg)+));
            }
        };
    }
    let listed: HashSet<&str> = lake.manifests.iter().map(|m| m["file"].as_str().unwrap()).collect();
    for f in &lake.data_files {
        check!(listed.contains(f.as_str()), "data file {f} has no manifest (an uncommitted file was left)");
    }
    let mut manifests = lake.manifests.clone();
    manifests.sort_by_key(|m| position_key(&m["first"]));
    let mut last_per_dir: HashMap<String, (u64, u64, u64)> = HashMap::new();
    let mut ids = HashSet::new();
    let mut state = BTreeMap::new();
    for m in &manifests {
        let file = m["file"].as_str().unwrap();
        let dir = file.rsplit_once('/').map(|(d, _)| d.to_string()).unwrap_or_default();
        let (first, last) = (position_key(&m["first"]), position_key(&m["last"]));
        check!(first <= last, "{file}: first position after last");
        if let Some(prev) = last_per_dir.insert(dir, last) {
            check!(first > prev, "{file} overlaps the position range of an earlier file");
        }
        let Some(rows) = lake.rows.get(file) else { return Err(format!("{file} is listed but missing")) };
        check!(rows.len() as u64 == m["rows"].as_u64().unwrap(), "{file}: rows differ from its manifest");
        for r in rows {
            check!(ids.insert(r["__id"].as_str().unwrap().to_string()), "event {} is in two files", r["__id"]);
            let id = r["id"].as_i64().unwrap();
            match r["__op"].as_str().unwrap() {
                "d" => {
                    state.remove(&id);
                }
                _ => {
                    state.insert(id, render(r));
                }
            }
        }
    }
    Ok(state)
}

/// One row of the lake rendered like the source query's output.
fn render_row(r: &Map<String, Value>) -> String {
    let text = |v: &Value| match v {
        Value::Null => "<null>".to_string(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => (if *b { "1" } else { "0" }).to_string(),
        other => other.to_string(),
    };
    ["id", "v", "amount", "small", "at", "flag", "note", "day"]
        .iter()
        .map(|c| text(&r[*c]))
        .collect::<Vec<_>>()
        .join("|")
}

/// Parses `id|...` lines of the source query.
fn source_rows(text: &str) -> BTreeMap<i64, String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let l = l.replace('\t', "|");
            (l.split('|').next().unwrap().parse().unwrap(), l)
        })
        .collect()
}

/// Asserts DuckDB's types of every Parquet file.
fn assert_types(lake: &Lake, expected: &[(&str, &str)]) {
    assert!(!lake.describe.is_empty(), "no Parquet file to describe");
    for (file, cols) in &lake.describe {
        let got: HashMap<&str, &str> = cols.iter().map(|(c, t)| (c.as_str(), t.as_str())).collect();
        for (c, t) in expected {
            assert_eq!(got.get(c).copied(), Some(*t), "{file}: column {c}: {cols:?}");
        }
    }
}

/// The local manifests written so far (progress of the run).
fn manifest_count(dir: &std::path::Path) -> usize {
    fn walk(d: &std::path::Path) -> usize {
        std::fs::read_dir(d)
            .map(|es| es.flatten().map(|e| if e.path().is_dir() { walk(&e.path()) } else { 1 }).sum())
            .unwrap_or(0)
    }
    walk(&dir.join("_manifest"))
}

/// Runs the binary under a writer with three `kill -9`, then until the
/// local lake equals the source table; returns the local and S3 lakes.
struct CrashRun<'a> {
    args: RunArgs,
    log: std::path::PathBuf,
    local: std::path::PathBuf,
    local_url: String,
    s3_url: String,
    endpoint: String,
    source: &'a dyn Fn() -> BTreeMap<i64, String>,
}

impl CrashRun<'_> {
    fn run(
        &self,
        ready: impl Fn(&crate::support::Deltaforge),
        start_writer: impl FnOnce(Arc<AtomicBool>) -> std::thread::JoinHandle<()>,
    ) -> (Lake, Lake) {
        let mut rng = Rng::from_env();
        let mut df = self.args.start(&self.log, &[]);
        ready(&df);
        let stop = Arc::new(AtomicBool::new(false));
        let writer = start_writer(stop.clone());
        for round in 0..4 {
            if round > 0 {
                df = self.args.start(&self.log, &[]);
            }
            let before = manifest_count(&self.local);
            wait_for(Duration::from_secs(60), || (manifest_count(&self.local) > before).then_some(()))
                .unwrap_or_else(|| panic!("round {round}: no file committed\n{}", df.log_text()));
            if round == 3 {
                break;
            }
            std::thread::sleep(Duration::from_millis(rng.range(200, 1500)));
            df.kill9();
            eprintln!("kill {round}: {} manifests", manifest_count(&self.local));
        }
        stop.store(true, Ordering::Relaxed);
        writer.join().expect("writer");
        let expected = (self.source)();
        assert!(expected.len() > 50, "the writer wrote too little: {} rows", expected.len());
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let lake = read_lake(&self.local_url, "");
            if replay(&lake, render_row).as_ref() == Ok(&expected) {
                break;
            }
            assert!(Instant::now() < deadline, "the local files never matched the table\n{}", df.log_text());
            std::thread::sleep(Duration::from_secs(2));
        }
        df.terminate();
        assert_eq!(df.wait_exit(Duration::from_secs(30)), Some(0), "{}", df.log_text());
        let (local, s3) = (read_lake(&self.local_url, ""), read_lake(&self.s3_url, &self.endpoint));
        for (name, lake) in [("local", &local), ("s3", &s3)] {
            let replayed = replay(lake, render_row).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(replayed, expected, "{name}: the replayed files differ from the table");
            eprintln!("{name}: {} files", lake.manifests.len());
        }
        (local, s3)
    }
}

/// The lake locations of one test: a local directory and a fresh bucket.
fn targets(dir: &std::path::Path, endpoint: &str, bucket: &str) -> (std::path::PathBuf, String, String) {
    create_bucket(endpoint, bucket);
    let local = dir.join("lake");
    (local.clone(), format!("file://{}", local.display()), format!("s3://{bucket}/cdc"))
}

#[test]
fn postgres_to_parquet_on_s3_and_local_survives_kill_9() {
    let url = service("postgres");
    let endpoint = service("s3");
    let s = unique_suffix();
    let table = format!("lake_{s}");
    pg_cleanup(&url, &table);
    pg_sql(
        &url,
        &format!(
            "CREATE TABLE {table} (id bigint PRIMARY KEY, v int NOT NULL, amount numeric(12,2), small int2, \
             at timestamptz, flag bool, note text, day date)"
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let (local, local_url, s3_url) = targets(dir.path(), &endpoint, &format!("pg-{}", s.replace('_', "-")));
    let id = format!("lake-{}", s.replace('_', "-"));
    let cfg = dir.path().join("pipeline.yaml");
    Pipeline::new(&id)
        .tenant("test")
        .postgres_table_source(&id, &url, &table, &table)
        .sink("object_store", sink_config("local", &local_url, None))
        .sink("object_store", sink_config("s3", &s3_url, Some(&endpoint)))
        .batch(100, 20)
        .write(&cfg);
    let source = || {
        source_rows(&pg_sql(
            &url,
            &format!(
                "SELECT id, v, amount::text, small, (extract(epoch from at) * 1000000)::bigint, \
                 CASE WHEN flag THEN 1 ELSE 0 END, coalesce(note, '<null>'), day::text FROM {table} ORDER BY id"
            ),
        ))
    };
    let run = CrashRun {
        args: RunArgs::new(&cfg, &dir.path().join("state/df.db")),
        log: dir.path().join("df.log"),
        local,
        local_url,
        s3_url,
        endpoint: endpoint.clone(),
        source: &source,
    };
    let seed = Rng::from_env().range(1, u64::MAX);
    let (local_lake, _) = run.run(
        |df| df.wait_pg_streaming(),
        |stop| {
            let writer = Writer { rng: Rng::seeded(seed), dialect: Dialect::Postgres, next_id: 0, live: vec![] };
            spawn_writer(pg_command(&url), String::new(), writer, table.clone(), stop)
        },
    );
    assert_types(
        &local_lake,
        &[
            ("__id", "VARCHAR"),
            ("__op", "VARCHAR"),
            ("__ts_ms", "BIGINT"),
            ("id", "BIGINT"),
            ("v", "INTEGER"),
            ("amount", "DECIMAL(12,2)"),
            ("small", "SMALLINT"),
            ("at", "TIMESTAMP WITH TIME ZONE"),
            ("flag", "BOOLEAN"),
            ("note", "VARCHAR"),
            ("day", "DATE"),
        ],
    );
    pg_cleanup(&url, &table);
}

#[test]
fn mariadb_to_parquet_on_s3_and_local_survives_kill_9() {
    let url = service("mariadb");
    let endpoint = service("s3");
    let s = unique_suffix();
    let db = format!("lake_{s}");
    mariadb_sql(
        &url,
        &format!(
            "CREATE DATABASE {db}; CREATE TABLE {db}.t (id BIGINT PRIMARY KEY, v INT NOT NULL, amount DECIMAL(12,2), \
             small SMALLINT UNSIGNED, at TIMESTAMP(6) NULL, flag TINYINT(1), note VARCHAR(40), day DATE) ENGINE=InnoDB"
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let (local, local_url, s3_url) = targets(dir.path(), &endpoint, &format!("my-{}", s.replace('_', "-")));
    let id = format!("lake-my-{}", s.replace('_', "-"));
    let cfg = dir.path().join("pipeline.yaml");
    Pipeline::new(&id)
        .tenant("test")
        .source("mysql", json!({"id": id, "dsn": url, "tables": [format!("{db}.t")], "heartbeat_secs": 2}))
        .sink("object_store", sink_config("local", &local_url, None))
        .sink("object_store", sink_config("s3", &s3_url, Some(&endpoint)))
        .batch(100, 20)
        .write(&cfg);
    let source = || {
        source_rows(&mariadb_sql(
            &url,
            &format!(
                "SET time_zone = '+00:00'; SELECT id, v, amount, small, CAST(UNIX_TIMESTAMP(at) * 1000000 AS SIGNED), flag, \
                 IFNULL(note, '<null>'), day FROM {db}.t ORDER BY id"
            ),
        ))
    };
    let run = CrashRun {
        args: RunArgs::new(&cfg, &dir.path().join("state/df.db")),
        log: dir.path().join("df.log"),
        local,
        local_url,
        s3_url,
        endpoint: endpoint.clone(),
        source: &source,
    };
    let seed = Rng::from_env().range(1, u64::MAX);
    let store = dir.path().join("state/df.db");
    let (local_lake, _) = run.run(
        |df| {
            wait_for(Duration::from_secs(30), || crate::support::storage::checkpoint(&store, &id))
                .unwrap_or_else(|| panic!("no start checkpoint\n{}", df.log_text()));
        },
        |stop| {
            let writer = Writer { rng: Rng::seeded(seed), dialect: Dialect::Mariadb, next_id: 0, live: vec![] };
            let prelude = format!("USE {db};\nSET time_zone = '+00:00';\n");
            spawn_writer(mariadb_command(&url), prelude, writer, "t".into(), stop)
        },
    );
    assert_types(
        &local_lake,
        &[
            ("id", "BIGINT"),
            ("v", "INTEGER"),
            ("amount", "DECIMAL(12,2)"),
            ("small", "USMALLINT"),
            ("at", "TIMESTAMP WITH TIME ZONE"),
            ("flag", "TINYINT"),
            ("note", "VARCHAR"),
            ("day", "DATE"),
        ],
    );
    mariadb_sql(&url, &format!("DROP DATABASE {db}"));
}

/// Sends a signal to the S3 server of a services dir.
fn signal_s3(services: &std::path::Path, signal: &str) {
    let pid = std::fs::read_to_string(services.join("s3/moto.pid")).expect("moto pid file");
    let ok = std::process::Command::new("kill").args([signal, pid.trim()]).status().unwrap().success();
    assert!(ok, "kill {signal} {pid}");
}

#[test]
fn a_30_second_s3_outage_loses_nothing_and_recovers() {
    // The test's own S3 server (own services dir and port, the shared venv),
    // so that the outage disturbs no other test.
    service("s3");
    let dir = tempfile::tempdir().unwrap();
    let services = dir.path().join("services");
    let port = crate::support::free_port().to_string();
    let venv = crate::support::service_python();
    let venv = std::path::Path::new(&venv).parent().unwrap().parent().unwrap().to_path_buf();
    let script = deltaforge_testkit::repo_root().join("scripts/services/s3.sh");
    let own_s3 = |action: &str| {
        let out = std::process::Command::new("bash")
            .arg(&script)
            .arg(action)
            .env("DELTAFORGE_SERVICES_DIR", &services)
            .env("DF_S3_PORT", &port)
            .env("DF_S3_VENV", &venv)
            .output()
            .unwrap();
        assert!(out.status.success(), "s3.sh {action}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().to_string()
    };
    let endpoint = own_s3("start");
    create_bucket(&endpoint, "outage");
    let id = format!("lake-outage-{}", unique_suffix().replace('_', "-"));
    let cfg = dir.path().join("pipeline.yaml");
    let count = 20_000u64;
    let mut sink = sink_config("s3", "s3://outage/dg", Some(&endpoint));
    sink["max_rows"] = json!(2000);
    sink["path"] = json!("${table}");
    // Attempts time out during the outage, so the retries are exercised.
    sink["timeout_ms"] = json!(5000);
    Pipeline::new("outage")
        .tenant("test")
        .source("datagen", json!({"id": id, "count": count, "rate": 500, "tables": ["demo.orders"]}))
        .sink("object_store", sink)
        .batch(200, 20)
        .write(&cfg);
    let args = RunArgs::new(&cfg, &dir.path().join("state/df.db"));
    let log = dir.path().join("df.log");
    let mut df = args.start(&log, &[]);
    let s3_url = "s3://outage/dg";
    wait_for(Duration::from_secs(60), || (!read_lake(s3_url, &endpoint).manifests.is_empty()).then_some(()))
        .unwrap_or_else(|| panic!("no file before the outage\n{}", df.log_text()));
    let before: usize = read_lake(s3_url, &endpoint).rows.values().map(Vec::len).sum();
    assert!((before as u64) < count / 2, "the outage must come mid-run ({before} of {count} rows already written)");
    signal_s3(&services, "-STOP");
    let stopped = Instant::now();
    std::thread::sleep(Duration::from_secs(30));
    signal_s3(&services, "-CONT");
    eprintln!("S3 server paused for {:?}", stopped.elapsed());
    let lake = wait_for(Duration::from_secs(120), || {
        let lake = read_lake(s3_url, &endpoint);
        let rows: usize = lake.rows.values().map(Vec::len).sum();
        (rows as u64 >= count).then_some(lake)
    })
    .unwrap_or_else(|| panic!("not every event arrived after the outage\n{}", df.log_text()));
    let failures = df.log_text().lines().filter(|l| l.contains("failed")).count();
    eprintln!("{failures} failed deliveries or flushes logged during the outage");
    assert!(failures > 0, "the outage was not noticed: no delivery or flush failed");
    df.terminate();
    assert_eq!(df.wait_exit(Duration::from_secs(30)), Some(0), "{}", df.log_text());
    // Every event once, none lost: the datagen ids 1..=count.
    let mut seen = HashSet::new();
    for m in &lake.manifests {
        for r in &lake.rows[m["file"].as_str().unwrap()] {
            assert!(seen.insert(r["__id"].as_str().unwrap().to_string()), "event {} written twice", r["__id"]);
        }
    }
    assert_eq!(seen.len() as u64, count);
    own_s3("stop");
}
