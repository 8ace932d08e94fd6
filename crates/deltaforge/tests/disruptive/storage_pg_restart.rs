//! Storage fault: the PostgreSQL storage backend restarts while a pipeline
//! runs (`datagen` → `file` sink, `--storage-backend postgres`). The
//! storage server is this test's own (its own services directory under
//! the target directory and a free port, started and stopped with
//! `scripts/services/postgres.sh`), so the shared servers are never
//! touched. While it is down the stored checkpoint never passes what the
//! sink holds and `deltaforge_storage_errors_total` rises; once it is back
//! the pipeline carries on by itself, and at the end every event is in the
//! file, row by row.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{free_port, metric_value, pg_sql, read_jsonl, wait_for, RunArgs};

const SOURCE: &str = "dg-pgstore";
const TOTAL: u64 = 60_000;

/// This test's own PostgreSQL (`scripts/services/postgres.sh` with its own
/// `DELTAFORGE_SERVICES_DIR` and `DF_PG_PORT`); stopped on drop.
struct OwnPostgres {
    base: PathBuf,
    port: u16,
    url: String,
}

impl OwnPostgres {
    fn script(base: &Path, port: u16, action: &str) -> String {
        let script = deltaforge_testkit::repo_root().join("scripts/services/postgres.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg(action)
            .env("DELTAFORGE_SERVICES_DIR", base)
            .env("DF_PG_PORT", port.to_string())
            .output()
            .unwrap_or_else(|e| panic!("running {} {action}: {e}", script.display()));
        assert!(
            out.status.success(),
            "postgres.sh {action} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().trim().to_string()
    }

    fn start() -> OwnPostgres {
        let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("storage-pg-restart");
        let port = free_port();
        let url = Self::script(&base, port, "start");
        OwnPostgres { base, port, url }
    }

    fn action(&self, action: &str) {
        Self::script(&self.base, self.port, action);
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let script = deltaforge_testkit::repo_root().join("scripts/services/postgres.sh");
        let _ = Command::new("bash")
            .arg(script)
            .arg("stop")
            .env("DELTAFORGE_SERVICES_DIR", &self.base)
            .env("DF_PG_PORT", self.port.to_string())
            .output();
    }
}

fn id_of(v: &serde_json::Value) -> u64 {
    v["after"]["id"].as_u64().expect("event id")
}

/// `position.seq` of the checkpoint stored in the PostgreSQL storage (0
/// without one, or while the server is down).
fn stored_seq(url: &str) -> u64 {
    let out = crate::support::pg_command(url)
        .args(["-t", "-A", "-c"])
        .arg(format!("SELECT value FROM deltaforge.kv WHERE namespace = 'checkpoints' AND key = '{SOURCE}'"))
        .output();
    out.ok()
        .filter(|o| o.status.success())
        .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
        .and_then(|v| v["position"]["seq"].as_u64())
        .unwrap_or(0)
}

fn storage_errors(metrics: &str) -> f64 {
    crate::support::http(metrics, "GET", "/metrics", None, None)
        .ok()
        .and_then(|(_, body)| {
            metric_value(&body, "deltaforge_storage_errors_total", &[("operation", "checkpoint_write")])
        })
        .unwrap_or(0.0)
}

#[test]
fn postgres_storage_restart_waits_without_passing_the_sink_then_resumes_losing_nothing() {
    let _serial = crate::serial();
    let pg = OwnPostgres::start();
    // A fresh schema each run: the data directory is reused between runs.
    pg_sql(&pg.url, "DROP SCHEMA IF EXISTS deltaforge CASCADE");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let cfg = crate::support::Pipeline::new("pg-storage")
        .tenant("test")
        .source("datagen", serde_json::json!({ "id": SOURCE, "rows_per_tx": 3, "rate": 4000, "count": TOTAL }))
        .file_sink("out", &out, serde_json::Value::Null)
        .batch(200, 20)
        .write(dir.path().join("pipeline.yaml"));
    let log = dir.path().join("deltaforge.log");
    let (args, _api, metrics) = RunArgs::backend(&cfg, "postgres").free_ports();
    let mut df = args.start(&log, &[("DELTAFORGE_STORAGE_DSN", &pg.url)]);
    wait_for(Duration::from_secs(30), || (stored_seq(&pg.url) > 0).then_some(()))
        .unwrap_or_else(|| panic!("no checkpoint before the restart\n{}", df.log_text()));

    // Restart the storage server: stopped, down for a second, started
    // again. The whole outage stays within the checkpoint writer's retries
    // (about 9.5 s); what happens after those run out is the coordinator's
    // business, not the storage's.
    let before = stored_seq(&pg.url);
    let errors_before = storage_errors(&metrics);
    let stopping = Instant::now();
    pg.action("stop");
    std::thread::sleep(Duration::from_secs(1));
    let high = |out: &Path| read_jsonl(out).iter().map(id_of).max().unwrap_or(0);
    let high_while_down = high(&out);
    pg.action("start");
    let outage = stopping.elapsed();
    // The checkpoint stored is the one written before the stop or a later
    // one, never one past what the sink held.
    let after = stored_seq(&pg.url);
    assert!(before <= after, "the stored checkpoint went back: {before} → {after}");
    assert!(after <= high(&out), "checkpoint {after} passed the sink ({})", high(&out));
    let errors_counted = storage_errors(&metrics) - errors_before;
    assert!(errors_counted > 0.0, "no storage error counted while the storage was down");
    let restarted_at = Instant::now();
    assert!(high_while_down > 0);

    // Back: the pipeline resumes by itself and finishes.
    wait_for(Duration::from_secs(60), || (stored_seq(&pg.url) > after).then_some(()))
        .unwrap_or_else(|| panic!("the checkpoint did not advance after the restart\n{}", df.log_text()));
    let resumed_after = restarted_at.elapsed();
    assert_eq!(df.wait_exit(Duration::from_secs(120)), Some(0), "did not finish\n{}", df.log_text());
    assert_eq!(stored_seq(&pg.url), TOTAL);
    eprintln!(
        "storage restart: checkpoint {before} before the stop, {after} after the start (file up to \
         {high_while_down} while down), outage {outage:?}, {errors_counted} failed writes counted, advanced \
         {resumed_after:?} after the start"
    );
    let text = df.log_text();
    assert!(storage_errors_logged(&text), "the storage outage left no trace in the log\n{text}");

    // Row by row: every event, as generated; duplicates only from replays.
    let events = read_jsonl(&out);
    let mut seen = vec![false; TOTAL as usize + 1];
    for e in &events {
        let id = id_of(e);
        assert!((1..=TOTAL).contains(&id), "unexpected id {id}");
        assert_eq!(e["after"], deltaforge_source_datagen::row_for(id), "event {id} differs from what datagen made");
        seen[id as usize] = true;
    }
    let missing: Vec<u64> = (1..=TOTAL).filter(|i| !seen[*i as usize]).take(10).collect();
    assert!(missing.is_empty(), "events lost: {missing:?}…");
}

/// Whether the log shows the outage: a failed checkpoint write or lease
/// renewal naming the storage.
fn storage_errors_logged(text: &str) -> bool {
    text.lines().any(|l| {
        (l.contains("checkpoint write failed") || l.contains("lease"))
            && l.contains("127.0.0.1")
            && !l.contains("password")
    })
}
