//! `deltaforge verify` against real servers and the real binary: a writer
//! runs while the pipeline is killed with `kill -9` three times, `verify`
//! must report equal (exit 0) while the writer still writes; then faults
//! are injected and each must be reported exactly, with its key: a row's
//! lines removed from the file (missing), a value changed in the file
//! (differing, column named), a row deleted in the source while the
//! pipeline was stopped with the delete dropped by the pipeline's filter
//! (extra), and a duplicate delivery (worst duplicated id and its count).
//!
//! The scenario is shared; `pg` and `mariadb` give it their SQL client.

mod mariadb;
mod pg;
mod streams;
mod tables;

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::{http_json, read_jsonl, wait_for, Deltaforge, Rng, RunArgs, BIN};
use serde_json::{json, Value};

/// Fixture rows the writer never touches: the faults are injected on them.
const MISSING: i64 = 900_001;
const TAMPERED: i64 = 900_002;
const DUPLICATED: i64 = 900_003;
const DELETED: i64 = 900_004;

/// The filter every scenario pipeline has: deletes of fixture rows are
/// dropped (the "delete dropped" fault).
fn drop_fixture_deletes() -> Value {
    json!({ "type": "filter", "config": { "action": "drop", "ops": ["d"], "where": { "field": "id", "gte": 900000 } } })
}

/// Writes transactions (inserts, updates, deletes of its own rows, several
/// rows per transaction) through one client session until `stop`.
fn writer(mut client: Command, prelude: String, table: String, seed: u64, stop: Arc<AtomicBool>) -> u64 {
    let mut child = client.stdin(Stdio::piped()).stdout(Stdio::null()).spawn().expect("sql client");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(prelude.as_bytes()).unwrap();
    let mut rng = Rng::seeded(seed);
    let (mut next, mut live, mut txs) = (1i64, Vec::<i64>::new(), 0u64);
    while !stop.load(Ordering::Relaxed) {
        let mut sql = String::from("BEGIN;\n");
        for _ in 0..rng.range(1, 4) {
            match rng.range(0, 10) {
                0..=4 => {
                    sql += &format!("INSERT INTO {table} VALUES ({next}, 0, 'w{next}');\n");
                    live.push(next);
                    next += 1;
                }
                5..=8 if !live.is_empty() => {
                    let id = live[rng.range(0, live.len() as u64) as usize];
                    sql += &format!("UPDATE {table} SET v = v + 1, pad = 'u{id}' WHERE id = {id};\n");
                }
                _ if !live.is_empty() => {
                    let id = live.swap_remove(rng.range(0, live.len() as u64) as usize);
                    sql += &format!("DELETE FROM {table} WHERE id = {id};\n");
                }
                _ => {}
            }
        }
        sql += "COMMIT;\n";
        stdin.write_all(sql.as_bytes()).expect("writer pipe");
        stdin.flush().unwrap();
        txs += 1;
        std::thread::sleep(Duration::from_millis(rng.range(2, 15)));
    }
    drop(stdin);
    assert!(child.wait().unwrap().success(), "the writer's client failed");
    txs
}

/// Runs `deltaforge verify --output json`; its exit code and report.
fn verify(cfg: &Path, db: &Path, pipeline: &str, extra: &[&str]) -> (i32, Value, Duration) {
    let started = Instant::now();
    let out = Command::new(BIN)
        .args(["verify", "--config", cfg.to_str().unwrap(), "--storage-path", db.to_str().unwrap(), pipeline])
        .args(["--output", "json"])
        .args(extra)
        .output()
        .expect("running deltaforge verify");
    let took = started.elapsed();
    let code = out.status.code().unwrap_or(-1);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!("verify (exit {code}) printed no report ({e}): {stdout}\n{}", String::from_utf8_lossy(&out.stderr))
    });
    (code, report, took)
}

/// The row id of a delivered event (after image, else before image).
fn row_id(e: &Value) -> Option<i64> {
    e["after"]["id"].as_i64().or_else(|| e["before"]["id"].as_i64())
}

/// Rewrites the file sink's output line by line (pipeline stopped).
fn rewrite(out: &Path, mut f: impl FnMut(Value) -> Vec<Value>) {
    let lines: Vec<Value> = read_jsonl(out).into_iter().flat_map(&mut f).collect();
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(out, text).unwrap();
}

/// A pipeline killed with `kill -9` three times, running again, and the
/// writer still writing.
struct Running {
    df: Deltaforge,
    stop: Arc<AtomicBool>,
    writer: std::thread::JoinHandle<u64>,
}

/// Starts the pipeline, inserts the fixture rows, starts the [`writer`],
/// then three times waits for the sink to make progress (`progress`
/// grows), kills the pipeline with `kill -9` and starts it again; returns
/// once the sink progresses after the last restart.
fn writer_under_kill_9(src: &Source, args: &RunArgs, log: &Path, progress: &dyn Fn() -> u64) -> Running {
    let mut rng = Rng::from_env();
    let mut df = args.start(log, &[]);
    (src.ready)(&df);
    (src.sql)(
        &(MISSING..=DELETED + 2)
            .map(|i| format!("INSERT INTO {} VALUES ({i}, 7, 'fixture');", src.table))
            .collect::<String>(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (client, prelude) = (src.client)();
        let (table, stop, seed) = (src.table.clone(), stop.clone(), rng.range(1, u64::MAX));
        std::thread::spawn(move || writer(client, prelude, table, seed, stop))
    };
    let grows = |df: &Deltaforge| {
        let before = progress();
        wait_for(Duration::from_secs(60), || (progress() > before).then_some(()))
            .unwrap_or_else(|| panic!("no progress\n{}", df.log_text()));
    };
    for round in 0..3 {
        grows(&df);
        std::thread::sleep(Duration::from_millis(rng.range(100, 1500)));
        df.kill9();
        eprintln!("kill -9 #{}", round + 1);
        df = args.start(log, &[]);
    }
    grows(&df);
    Running { df, stop, writer }
}

/// What a scenario needs of its database.
struct Source {
    /// Runs SQL (fixtures, the deleted row).
    sql: Box<dyn Fn(&str)>,
    /// A client session for the writer, and what to send first.
    client: Box<dyn Fn() -> (Command, String)>,
    /// The table as SQL names it.
    table: String,
    /// The table as events name it (`db.table`).
    event_table: String,
    /// Waits until the freshly started pipeline streams.
    ready: Box<dyn Fn(&Deltaforge)>,
}

/// The whole scenario for one source; `cfg` holds pipeline `name` with a
/// file sink at `out` and the [`drop_fixture_deletes`] filter.
fn scenario(src: Source, name: &str, cfg: &Path, out: &Path, dir: &Path) {
    let db = dir.join("state/df.db");
    let log = dir.join("df.log");
    let (args, api, _metrics) = RunArgs::new(cfg, &db).free_ports();
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let Running { mut df, stop, writer } = writer_under_kill_9(&src, &args, &log, &|| size(out));
    let grows = |df: &Deltaforge| {
        let before = size(out);
        wait_for(Duration::from_secs(60), || (size(out) > before).then_some(()))
            .unwrap_or_else(|| panic!("no progress\n{}", df.log_text()));
    };

    // Equal while the writer writes.
    let (code, report, took) = verify(cfg, &db, name, &[]);
    eprintln!("verify while writing: exit {code} in {took:?}: {}", report_summary(&report));
    assert_eq!(code, 0, "verify must find the sink equal while the writer writes: {report:#}");
    assert_eq!(report["equal"], true);
    assert!(report["rows_compared"].as_u64().unwrap() >= 6, "{report:#}");

    // Faults, with the pipeline stopped (the writer goes on).
    df.terminate();
    assert_eq!(df.wait_exit(Duration::from_secs(30)), Some(0), "{}", df.log_text());
    let mut dup_line = None;
    rewrite(out, |mut e| match row_id(&e) {
        Some(MISSING) => vec![],
        Some(TAMPERED) => {
            e["after"]["pad"] = json!("tampered");
            vec![e]
        }
        Some(DUPLICATED) => {
            dup_line = Some(e.clone());
            vec![e]
        }
        _ => vec![e],
    });
    let dup_line = dup_line.expect("the duplicated fixture row was delivered");
    let dup_id = dup_line["id"].as_str().unwrap().to_string();
    let copies = read_jsonl(out).iter().filter(|e| e["id"] == dup_line["id"]).count() as u64 + 5;
    let mut f = std::fs::OpenOptions::new().append(true).open(out).unwrap();
    for _ in 0..5 {
        writeln!(f, "{dup_line}").unwrap();
    }
    drop(f);
    (src.sql)(&format!("DELETE FROM {} WHERE id = {DELETED};", src.table));
    let mut df = args.start(&log, &[]);
    (src.ready)(&df);
    grows(&df);

    let (code, report, took) = verify(cfg, &db, name, &[]);
    eprintln!("verify with faults: exit {code} in {took:?}: {}", report_summary(&report));
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(report["equal"], false);
    let keys = |k: &str| -> Vec<(String, String)> {
        report[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["table"].as_str().unwrap().into(), r["key"].as_str().unwrap().into()))
            .collect()
    };
    let t = src.event_table.clone();
    assert_eq!(keys("missing"), vec![(t.clone(), format!("[{MISSING}]"))], "{report:#}");
    assert_eq!(keys("extra"), vec![(t.clone(), format!("[{DELETED}]"))], "{report:#}");
    assert_eq!(keys("differing"), vec![(t.clone(), format!("[{TAMPERED}]"))], "{report:#}");
    assert_eq!(
        report["differing"][0]["columns"],
        json!([{ "column": "pad", "source": "fixture", "sink": "tampered" }])
    );
    assert_eq!(report["deliveries"]["worst_duplicates"][0], json!([dup_id, copies]), "{report:#}");
    assert_eq!(report["caught_up"], true, "{report:#}");

    // The same through the API: a job with progress, then its report.
    let (status, started) = http_json(&api, "POST", &format!("/pipelines/{name}/verify"), None, Some("{}")).unwrap();
    assert_eq!(status, 202, "{started}");
    let job = format!("/pipelines/{name}/verify/{}", started["id"]);
    let done = wait_for(Duration::from_secs(120), || {
        let (_, v) = http_json(&api, "GET", &job, None, None).ok()?;
        (v["state"] != "running").then_some(v)
    })
    .expect("the verify job never ended");
    assert_eq!(done["state"], "different", "{done:#}");
    assert_eq!(done["report"]["missing"], report["missing"], "{done:#}");
    assert_eq!(done["report"]["extra"], report["extra"], "{done:#}");
    assert!(done["progress"]["rows"].as_u64().unwrap() > 0, "{done:#}");

    // Stopped: compared as it stands, saying where the sink is.
    df.terminate();
    assert_eq!(df.wait_exit(Duration::from_secs(30)), Some(0), "{}", df.log_text());
    stop.store(true, Ordering::Relaxed);
    let txs = writer.join().expect("writer");
    assert!(txs > 50, "the writer wrote too little: {txs}");
    let (code, report, _) = verify(cfg, &db, name, &["--catch-up-secs", "2"]);
    assert_eq!(code, 1, "{report:#}");
    assert!(keys("missing").contains(&(t.clone(), format!("[{MISSING}]"))), "{report:#}");
    assert!(report["sink_position"].is_object(), "{report:#}");
    eprintln!("stopped: {}", report_summary(&report));
}

fn report_summary(r: &Value) -> String {
    format!(
        "equal {} rows {} missing {} extra {} differing {} rechecked {} resolved {} dup events {} caught_up {}",
        r["equal"],
        r["rows_compared"],
        r["missing"].as_array().map_or(0, Vec::len),
        r["extra"].as_array().map_or(0, Vec::len),
        r["differing"].as_array().map_or(0, Vec::len),
        r["rechecked"],
        r["resolved_on_recheck"],
        r["deliveries"]["duplicate_events"],
        r["caught_up"]
    )
}

/// Sinks verify cannot read are refused with exit code 2 and an error that
/// says why; a wrong `--sink` names the pipeline's sinks.
#[test]
fn unreadable_sinks_and_unknown_sink_ids_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("p.yaml");
    let db = dir.path().join("df.db");
    crate::support::Pipeline::new("hv")
        .source("datagen", json!({ "id": "hv", "rate": 0 }))
        .sink("http", json!({ "id": "web", "url": "http://127.0.0.1:9/hook" }))
        .file_sink("out", &dir.path().join("out.jsonl"), Value::Null)
        .write(&cfg);
    let run = |extra: &[&str]| {
        let out = Command::new(BIN)
            .args(["verify", "--config", cfg.to_str().unwrap(), "--storage-path", db.to_str().unwrap(), "hv"])
            .args(extra)
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, err) = run(&["--sink", "web"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("sink web is an http sink") && err.contains("cannot be read back"), "{err}");
    let (code, err) = run(&[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("several sinks; choose one with --sink (web, out)"), "{err}");
    let (code, err) = run(&["--sink", "nope"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no sink \"nope\" (sinks: web, out)"), "{err}");
    let (code, err) = run(&["--sink", "out"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("a datagen source has no tables to read back"), "{err}");
}
