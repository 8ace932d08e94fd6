//! Prometheus metrics of the real binary: the counters move with the events
//! delivered (checked against the file sinks), the pipeline status gauge
//! follows the state, and checkpoint lag in seconds rises while a sink is
//! down and returns to zero once it recovered and the pipeline caught up.
//!
//! `datagen` stamps events with synthetic source times (2026-01-01 plus the
//! event id in ms), so while a batch waits its lag is large and grows one
//! second per second; once everything is delivered the pipeline is idle and
//! the lag is 0. Its `deltaforge_checkpoint_lag_bytes` is 0 (it has no
//! server log); for database sources see `ctl_db_sources.rs`.

use std::time::{Duration, Instant};

use crate::support::spec::write_all;
use crate::support::{http, http_json, metric_value, read_jsonl, wait_for, Pipeline, RunArgs};
use serde_json::{json, Value};

const COUNT: u64 = 6000;

fn scrape(addr: &str) -> String {
    let (status, body) = http(addr, "GET", "/metrics", None, None).expect("scrape /metrics");
    assert_eq!(status, 200);
    body
}

fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric_value(text, name, labels).unwrap_or(0.0)
}

#[test]
fn counters_follow_deliveries_and_lag_rises_during_an_outage() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.jsonl");
    let flaky = dir.path().join("flaky.jsonl");
    let flag = dir.path().join("flaky.down");
    std::fs::write(&flag, b"down").unwrap();
    let metered = Pipeline::new("metered")
        .source("datagen", json!({ "id": "dg-metered", "count": COUNT, "rate": 3000 }))
        .file_sink("good", &good, Value::Null)
        .file_sink("flaky", &flaky, json!({ "retry_initial_ms": 50, "retry_max_ms": 200 }))
        .batch(250, 20);
    let keepalive = Pipeline::new("keepalive")
        .source("datagen", json!({ "id": "dg-keepalive", "rate": 1 }))
        .sink("discard", json!({ "id": "d" }));
    let cfg = write_all(dir.path().join("p.yaml"), &[metered, keepalive]);
    let (args, api, metrics) = RunArgs::memory(&cfg).free_ports();
    let fp = format!("sink:flaky={}", flag.display());
    let mut df = args.start(&dir.path().join("df.log"), &[("DELTAFORGE_FAILPOINTS", &fp)]);
    let p = [("pipeline", "metered")];
    wait_for(Duration::from_secs(30), || http(&metrics, "GET", "/metrics", None, None).ok())
        .unwrap_or_else(|| panic!("no metrics endpoint\n{}", df.log_text()));

    // The flaky sink is down from the start: nothing is checkpointed and the lag grows.
    let first = wait_for(Duration::from_secs(30), || {
        let m = scrape(&metrics);
        (value(&m, "deltaforge_checkpoint_lag_seconds", &p) > 1.0).then_some(m)
    })
    .unwrap_or_else(|| panic!("lag never rose\n{}", df.log_text()));
    let t0 = Instant::now();
    assert_eq!(value(&first, "deltaforge_checkpoints_written_total", &p), 0.0);
    assert!(value(&first, "deltaforge_sink_errors_total", &[("pipeline", "metered"), ("sink", "flaky")]) >= 1.0);
    assert_eq!(value(&first, "deltaforge_pipeline_status", &[("pipeline", "metered"), ("state", "running")]), 1.0);
    assert_eq!(value(&first, "deltaforge_pipeline_status", &[("pipeline", "metered"), ("state", "stopped")]), 0.0);
    assert_eq!(metric_value(&first, "deltaforge_checkpoint_lag_bytes", &p), Some(0.0));
    std::thread::sleep(Duration::from_millis(2500));
    let second = scrape(&metrics);
    let (l1, l2) = (
        value(&first, "deltaforge_checkpoint_lag_seconds", &p),
        value(&second, "deltaforge_checkpoint_lag_seconds", &p),
    );
    let elapsed = t0.elapsed().as_secs_f64();
    assert!(l2 - l1 >= elapsed - 1.5, "lag did not rise with time while the sink was down: {l1} -> {l2} in {elapsed}s");
    assert_eq!(
        value(&second, "deltaforge_sink_events_delivered_total", &[("pipeline", "metered"), ("sink", "flaky")]),
        0.0
    );
    let (_, view) = http_json(&api, "GET", "/pipelines/metered", None, None).unwrap();
    assert!(view["lag_seconds"].as_f64().unwrap() > 1.0, "{view}");

    // Recovery: everything is delivered, counters equal the files, lag returns to 0.
    std::fs::remove_file(&flag).unwrap();
    let end = wait_for(Duration::from_secs(60), || {
        let m = scrape(&metrics);
        let done = value(&m, "deltaforge_sink_events_delivered_total", &[("pipeline", "metered"), ("sink", "flaky")])
            >= COUNT as f64
            && value(&m, "deltaforge_pipeline_status", &[("pipeline", "metered"), ("state", "finished")]) == 1.0;
        done.then_some(m)
    })
    .unwrap_or_else(|| panic!("did not catch up\n{}", df.log_text()));
    assert_eq!(value(&end, "deltaforge_events_read_total", &p), COUNT as f64);
    for (sink, file) in [("good", &good), ("flaky", &flaky)] {
        let lines = read_jsonl(file).len() as f64;
        let delivered =
            value(&end, "deltaforge_sink_events_delivered_total", &[("pipeline", "metered"), ("sink", sink)]);
        assert_eq!(delivered, lines, "{sink}: counter vs file");
        assert_eq!(lines, COUNT as f64, "{sink}");
    }
    assert!(value(&end, "deltaforge_checkpoints_written_total", &p) >= 1.0);
    assert!(end.contains("deltaforge_batch_events_bucket{pipeline=\"metered\""), "batch histogram missing");
    assert!(end.contains("deltaforge_sink_delivery_seconds_bucket"), "latency histogram missing");
    wait_for(Duration::from_secs(10), || {
        (value(&scrape(&metrics), "deltaforge_checkpoint_lag_seconds", &p) < 0.5).then_some(())
    })
    .unwrap_or_else(|| panic!("lag did not return to zero\n{}", scrape(&metrics)));

    df.terminate();
    assert_eq!(df.wait_exit(Duration::from_secs(30)), Some(0), "{}", df.log_text());
}
