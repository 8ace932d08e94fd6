//! Checkpoint writes that keep failing, through the real binary with the
//! `postgres` storage backend in a database of the test's own on the shared
//! server (a trigger on its `kv` table refuses checkpoint writes; nothing
//! server-wide changes): the run stops once the writer's retries ran out,
//! the pipeline shows it (`last_error`, `restarts`, the
//! `deltaforge_checkpoint_writer_failures_total` metric, the log) and keeps
//! restarting from its last stored checkpoint; once writes work again it
//! recovers by itself and nothing is lost.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{
    http, http_json, metric_value, pg_command, pg_sql, read_jsonl, service, unique_suffix, wait_for, Pipeline, RunArgs,
};

/// The stored checkpoint's `seq` (0 while there is none, or no table yet).
fn checkpoint_seq(dsn: &str, source_id: &str) -> u64 {
    let out = pg_command(dsn)
        .arg("-c")
        .arg(format!("SELECT value FROM deltaforge.kv WHERE namespace = 'checkpoints' AND key = '{source_id}'"))
        .output()
        .unwrap();
    match String::from_utf8_lossy(&out.stdout).trim() {
        "" => 0,
        v => serde_json::from_str::<Value>(v).unwrap()["position"]["seq"].as_u64().unwrap(),
    }
}

#[test]
fn failing_checkpoint_writes_stop_the_run_visibly_and_it_recovers_without_loss() {
    let url = service("postgres");
    let suffix = unique_suffix().to_lowercase().replace(|c: char| !c.is_ascii_alphanumeric(), "_");
    let db = format!("dfcw_{suffix}");
    pg_sql(&url, &format!("CREATE DATABASE {db}"));
    let (base, _) = url.rsplit_once('/').unwrap();
    let dsn = format!("{base}/{db}");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let name = format!("cpw-{}", suffix.replace('_', "-"));
    let src = format!("dg-{name}");
    let cfg = Pipeline::new(&name)
        .source("datagen", json!({ "id": src, "rate": 300 }))
        .file_sink("out", &out, Value::Null)
        .batch(50, 20)
        .write(dir.path().join("pipeline.yaml"));
    let (args, api, metrics) = RunArgs::backend(&cfg, "postgres").free_ports();
    let df = args.start(&dir.path().join("df.log"), &[("DELTAFORGE_STORAGE_DSN", &dsn)]);
    wait_for(Duration::from_secs(60), || (checkpoint_seq(&dsn, &src) > 100).then_some(()))
        .unwrap_or_else(|| panic!("no checkpoints\n{}", df.log_text()));

    pg_sql(
        &dsn,
        "CREATE FUNCTION deltaforge.refuse_checkpoints() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'checkpoint writes refused by the test'; END $$; \
         CREATE TRIGGER refuse_checkpoints BEFORE INSERT OR UPDATE ON deltaforge.kv FOR EACH ROW \
         WHEN (NEW.namespace = 'checkpoints') EXECUTE FUNCTION deltaforge.refuse_checkpoints();",
    );
    let blocked_at = checkpoint_seq(&dsn, &src);
    let view = || http_json(&api, "GET", &format!("/pipelines/{name}"), None, None).map(|r| r.1).unwrap_or_default();
    // Eight attempts back off for about 10 s; then the run stops and restarts.
    let failed = wait_for(Duration::from_secs(45), || {
        let v = view();
        (v["restarts"].as_u64().unwrap_or(0) >= 1
            && v["last_error"].as_str().is_some_and(|e| e.contains("checkpoint writer")))
        .then_some(v)
    })
    .unwrap_or_else(|| panic!("the failing checkpoint writer went unnoticed: {}\n{}", view(), df.log_text()));
    assert!(failed["last_error"].as_str().unwrap().contains("kv_put checkpoints"), "{failed}");
    assert_eq!(failed["state"], "running", "retryable: restarting, not failed: {failed}");
    let (_, text) = http(&metrics, "GET", "/metrics", None, None).unwrap();
    let deaths = metric_value(&text, "deltaforge_checkpoint_writer_failures_total", &[("pipeline", name.as_str())]);
    assert!(deaths.unwrap_or(0.0) >= 1.0, "metric: {deaths:?}");
    assert!(df.log_text().contains("stopping the pipeline (it restarts from its last stored checkpoint)"));
    assert_eq!(checkpoint_seq(&dsn, &src), blocked_at, "the checkpoint moved while writes were refused");

    // Writes work again: the pipeline recovers by itself.
    pg_sql(&dsn, "DROP TRIGGER refuse_checkpoints ON deltaforge.kv");
    let target = blocked_at + 600;
    wait_for(Duration::from_secs(90), || (checkpoint_seq(&dsn, &src) >= target).then_some(()))
        .unwrap_or_else(|| panic!("no recovery: {}\n{}", view(), df.log_text()));
    let mut df = df;
    df.terminate();
    assert_eq!(df.wait_exit(Duration::from_secs(60)), Some(0), "{}", df.log_text());
    let last = checkpoint_seq(&dsn, &src);
    let ids: BTreeSet<u64> = read_jsonl(&out).iter().filter_map(|e| e["after"]["id"].as_u64()).collect();
    let missing: Vec<u64> = (1..=last).filter(|i| !ids.contains(i)).take(10).collect();
    assert!(missing.is_empty(), "events up to the checkpoint {last} missing on the sink: {missing:?}");
    pg_sql(&url, &format!("DROP DATABASE {db} WITH (FORCE)"));
}
