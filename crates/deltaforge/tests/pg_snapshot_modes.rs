//! Snapshot modes and key fallbacks against the real PostgreSQL: tables
//! without a primary key (a `NOT NULL` unique index; no key at all: `ctid`
//! ranges), a composite primary key, two tables read in parallel, and
//! `initial_only` (snapshot, then stop) followed by `initial` (already done:
//! nothing re-read) and `always` (read again).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use deltaforge_testkit::{pg_sql, read_jsonl, service, Deltaforge};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_deltaforge");

fn write_cfg(path: &Path, id: &str, url: &str, prefix: &str, out: &Path, mode: &str) {
    std::fs::write(
        path,
        format!(
            r#"apiVersion: deltaforge/v1
kind: Pipeline
metadata: {{ name: {id}, tenant: test }}
spec:
  source:
    type: postgres
    config: {{ id: {id}, dsn: '{url}', tables: ['public.{prefix}_*'], slot: {prefix}, publication: {prefix}, status_interval_secs: 1, snapshot: {{ mode: {mode}, chunk_size: 700, max_parallel_tables: 2 }} }}
  sinks:
    - type: file
      config: {{ id: out, path: {out} }}
"#,
            out = out.display()
        ),
    )
    .unwrap();
}

/// `table → sorted list of row JSON texts` of the `r` events.
fn reads(events: &[Value]) -> BTreeMap<String, Vec<String>> {
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in events.iter().filter(|e| e["op"] == "r") {
        m.entry(e["source"]["table"].as_str().unwrap().to_string()).or_default().push(e["after"].to_string());
    }
    for v in m.values_mut() {
        v.sort();
    }
    m
}

/// The table's rows as the events print them (`row_to_json` gives the
/// same JSON for these column types).
fn table_rows(url: &str, table: &str) -> Vec<String> {
    let mut v: Vec<String> = pg_sql(url, &format!("SELECT row_to_json(x)::text FROM {table} x"))
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap().to_string())
        .collect();
    v.sort();
    v
}

fn run_to_exit(args: &[&str], log: &Path) -> String {
    let mut df = Deltaforge::start(Path::new(BIN), args, log, &[]);
    let code = df.wait_exit(Duration::from_secs(120));
    let text = df.log_text();
    if code.is_none() {
        df.kill9();
    }
    assert_eq!(code, Some(0), "initial_only did not end the run\n{text}");
    text
}

#[test]
fn key_fallbacks_parallel_tables_and_modes() {
    let url = service("postgres");
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let prefix = format!("pgsm_{}_{}", std::process::id(), nanos % 1_000_000);
    let id = prefix.replace('_', "-");
    let (nokey, uniq, comp) = (format!("{prefix}_nokey"), format!("{prefix}_uniq"), format!("{prefix}_comp"));
    pg_sql(
        &url,
        &format!(
            "CREATE TABLE {nokey} (v int, t text); ALTER TABLE {nokey} REPLICA IDENTITY FULL;
             INSERT INTO {nokey} SELECT g % 50, 'dup' FROM generate_series(1, 6000) g;
             CREATE TABLE {uniq} (code text NOT NULL UNIQUE, n int);
             INSERT INTO {uniq} SELECT 'c' || g, g FROM generate_series(1, 3000) g;
             CREATE TABLE {comp} (a int, b text, n int, PRIMARY KEY (a, b));
             INSERT INTO {comp} SELECT g % 7, 'b' || g, g FROM generate_series(1, 4000) g;
             ANALYZE {nokey}; ANALYZE {uniq}; ANALYZE {comp};"
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let cfg = dir.path().join("p.yaml");
    let db = dir.path().join("state/df.db");
    let log = dir.path().join("df.log");
    let args = [
        "run",
        "--config",
        cfg.to_str().unwrap(),
        "--storage-path",
        db.to_str().unwrap(),
        "--api-addr",
        "127.0.0.1:0",
        "--metrics-addr",
        "127.0.0.1:0",
    ];

    // initial_only: every table read once, then the run ends by itself.
    write_cfg(&cfg, &id, &url, &prefix, &out, "initial_only");
    let text = run_to_exit(&args, &log);
    assert!(text.contains("snapshot done (mode initial_only)"), "{text}");
    let got = reads(&read_jsonl(&out));
    for t in [&nokey, &uniq, &comp] {
        assert_eq!(got.get(t.as_str()).cloned().unwrap_or_default(), table_rows(&url, t), "rows of {t}");
    }
    let first = read_jsonl(&out).len();

    // initial_only again: the records say done, so nothing is read and the run ends at once.
    write_cfg(&cfg, &id, &url, &prefix, &out, "initial_only");
    run_to_exit(&args, &log);
    assert_eq!(read_jsonl(&out).len(), first, "a done table was read again");

    // always: read again on this start.
    write_cfg(&cfg, &id, &url, &prefix, &out, "always");
    let mut df = Deltaforge::start(Path::new(BIN), &args, &log, &[]);
    let want: usize = 6000 + 3000 + 4000;
    deltaforge_testkit::wait_for(Duration::from_secs(120), || {
        (read_jsonl(&out).iter().filter(|e| e["op"] == "r").count() >= 2 * want).then_some(())
    })
    .unwrap_or_else(|| panic!("mode always did not read again\n{}", df.log_text()));
    df.terminate();
    assert_eq!(df.wait_exit(Duration::from_secs(30)), Some(0), "{}", df.log_text());
    assert_eq!(read_jsonl(&out).iter().filter(|e| e["op"] == "r").count(), 2 * want);

    let _ = std::process::Command::new("psql")
        .args([
            url.as_str(),
            "-X",
            "-q",
            "-c",
            &format!(
                "SELECT pg_drop_replication_slot('{prefix}'); DROP PUBLICATION {prefix}; DROP TABLE {nokey}, {uniq}, {comp};"
            ),
        ])
        .output();
}
