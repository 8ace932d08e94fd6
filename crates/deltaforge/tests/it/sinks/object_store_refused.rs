//! The `object_store` sink with the real binary and PostgreSQL: a value its
//! Parquet column cannot hold exactly (a `NaN` numeric, an `infinity`
//! timestamp) is never written as NULL: with a dead-letter queue the event
//! is set aside with an error naming the table, the column and why, and the
//! other rows reach the files; without one the pipeline stops with that
//! error and writes no file holding a NULL in its place.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::sinks::read_lake;
use crate::support::{pg_cleanup, pg_sql, service, unique_suffix, wait_for, Pipeline, RunArgs};

/// The pipeline of the test: PostgreSQL (snapshot, then the stream) →
/// Parquet in `lake`, with or without a dead-letter queue.
fn write_config(dir: &Path, name: &str, url: &str, table: &str, dlq: bool) -> std::path::PathBuf {
    let lake = format!("file://{}", dir.join("lake").display());
    let slot = format!("{table}_{}", u8::from(dlq));
    // No snapshot: only streamed events, typed by the registered schema.
    let source = json!({"id": name, "dsn": url, "tables": [format!("public.{table}")], "slot": slot,
                        "publication": slot, "status_interval_secs": 1, "snapshot": {"mode": "never"}});
    let mut p = Pipeline::new(name)
        .source("postgres", source)
        .sink("object_store", json!({"id": "lake", "url": lake, "max_age_ms": 300}))
        .batch(100, 20);
    if dlq {
        p = p.spec("dlq", json!({"capacity": 1000, "overflow": "reject"}));
    }
    p.write(dir.join("pipeline.yaml"))
}

/// `(id, price text)` of every row in the lake's files.
fn lake_rows(dir: &Path) -> Vec<(i64, Value)> {
    let lake = read_lake(&format!("file://{}", dir.join("lake").display()), "");
    let mut rows: Vec<(i64, Value)> = lake
        .rows
        .values()
        .flatten()
        .map(|r| (r["id"].as_i64().unwrap_or_else(|| panic!("{r:?}")), r["price"].clone()))
        .collect();
    rows.sort_by_key(|r| r.0);
    rows
}

#[test]
fn values_a_parquet_column_cannot_hold_are_dead_lettered_or_stop_the_pipeline_never_null() {
    let url = service("postgres");
    let table = format!("refused_{}", unique_suffix());
    pg_cleanup(&url, &table);
    pg_sql(&url, &format!("CREATE TABLE {table} (id bigint PRIMARY KEY, price numeric(5,2), at timestamptz)"));
    // Written while each pipeline streams (typed by the stream's schema):
    // inserts for the first, updates of the same rows for the second.
    let insert = || {
        pg_sql(
            &url,
            &format!(
                "INSERT INTO {table} VALUES (1, 1.50, '2026-01-01Z'), (2, 'NaN', '2026-01-01Z'), \
                 (3, 3.25, NULL), (4, 4.00, 'infinity'), (5, NULL, '2026-01-02Z')"
            ),
        )
    };

    // With a dead-letter queue: the two events are set aside, the rest written.
    let dir = tempfile::tempdir().unwrap();
    let name = format!("{}-dlq", table.replace('_', "-"));
    let cfg = write_config(dir.path(), &name, &url, &table, true);
    let db = dir.path().join("df.db");
    let mut df = RunArgs::new(&cfg, &db).start(&dir.path().join("df.log"), &[]);
    df.wait_pg_streaming();
    insert();
    wait_for(Duration::from_secs(60), || (lake_rows(dir.path()).len() == 3).then_some(()))
        .unwrap_or_else(|| panic!("the three good rows never reached the files\n{}", df.log_text()));
    df.terminate();
    assert_eq!(df.wait_exit(Duration::from_secs(30)), Some(0), "{}", df.log_text());
    assert_eq!(lake_rows(dir.path()), [(1, json!("1.50")), (3, json!("3.25")), (5, Value::Null)]);
    let out = Command::new(crate::support::BIN)
        .args(["dlq", "list", &name, "--config", cfg.to_str().unwrap(), "--storage-path", db.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let letters: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let refused: Vec<(i64, String)> = letters
        .iter()
        .map(|l| (l["letter"]["event"]["after"]["id"].as_i64().unwrap(), l["letter"]["error"].as_str().unwrap().into()))
        .collect();
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert_eq!(refused[0].0, 2);
    assert!(refused[0].1.contains(&format!("public.{table} column price: ")), "{}", refused[0].1);
    assert!(refused[0].1.contains("decimal(5,2)"), "{}", refused[0].1);
    assert_eq!(refused[1].0, 4);
    assert!(refused[1].1.contains(&format!("public.{table} column at: ")), "{}", refused[1].1);

    // Without one: the pipeline stops with the same error; no NULL written.
    let dir = tempfile::tempdir().unwrap();
    let name = format!("{}-stop", table.replace('_', "-"));
    let cfg = write_config(dir.path(), &name, &url, &table, false);
    let mut df = RunArgs::new(&cfg, &dir.path().join("df.db")).start(&dir.path().join("df.log"), &[]);
    df.wait_pg_streaming();
    pg_sql(&url, &format!("UPDATE {table} SET price = price, at = at"));
    let wanted = format!("public.{table} column price: not exactly a decimal(5,2)");
    wait_for(Duration::from_secs(60), || df.log_text().contains(&wanted).then_some(()))
        .unwrap_or_else(|| panic!("no error naming the column\n{}", df.log_text()));
    assert!(df.log_text().contains("dead-letter queue"), "the error says how to set such events aside");
    df.terminate();
    df.wait_exit(Duration::from_secs(30));
    let rows = lake_rows(dir.path());
    assert!(!rows.iter().any(|r| r.0 == 2 || r.0 == 4), "a refused row was written: {rows:?}");
    for slot in [format!("{table}_0"), format!("{table}_1"), table] {
        pg_cleanup(&url, &slot);
    }
}
