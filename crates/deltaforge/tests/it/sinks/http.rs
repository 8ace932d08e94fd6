//! HTTP webhook sink with the real binary against a small real HTTP server
//! run inside the test (the harness's `HttpRecorder`) that records every
//! request and can be switched to answer 503 (with `Retry-After`) or 400.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use deltaforge_source_datagen::row_for;
use serde_json::{json, Value};

use crate::support::http_recorder::{Answer, HttpRecorder as Hook, Received};
use crate::support::spec::merged;
use crate::support::storage::checkpoint_seq as seq;
use crate::support::{datagen_key as expected_key, datagen_table as table_of, wait_for, Deltaforge, Pipeline, RunArgs};

/// Writes a datagen → http pipeline; `source_extra` and `sink_extra` are
/// added to the source and sink configs.
fn write_config(dir: &Path, src: &str, url: &str, source_extra: Value, sink_extra: Value) -> PathBuf {
    Pipeline::new("rnh-http")
        .tenant("acme")
        .source(
            "datagen",
            merged(json!({ "id": src, "tables": ["demo.orders", "demo.items"], "rows_per_tx": 3 }), source_extra),
        )
        .sink(
            "http",
            merged(json!({ "id": "hook", "url": url, "headers": { "X-Api-Key": "s3cr3t-api-key" } }), sink_extra),
        )
        .batch(200, 20)
        .write(dir.join("pipeline.yaml"))
}

fn start(cfg: &Path, db: &Path, log: &Path) -> Deltaforge {
    RunArgs::new(cfg, db).start(log, &[])
}

fn header<'a>(r: &'a Received, name: &str) -> &'a str {
    r.header(name)
}

#[test]
fn http_batch_mode_posts_json_arrays_grouped_by_rendered_url() {
    let (hook, base) = Hook::start();
    let dir = tempfile::tempdir().unwrap();
    let src = "rnh-http-batch";
    const N: u64 = 2000;
    let cfg = write_config(dir.path(), src, &format!("{base}/hook/${{table}}"), json!({ "count": N }), Value::Null);
    let db = dir.path().join("df.db");
    let mut df = start(&cfg, &db, &dir.path().join("df.log"));
    assert_eq!(df.wait_exit(Duration::from_secs(90)), Some(0), "{}", df.log_text());
    assert_eq!(seq(&db, src), N);
    assert!(!df.log_text().contains("s3cr3t-api-key"), "a header value was logged");

    let reqs = hook.accepted();
    let mut ids = Vec::new();
    for r in &reqs {
        assert_eq!(header(r, "x-api-key"), "s3cr3t-api-key");
        assert_eq!(header(r, "content-type"), "application/json");
        let events = r.body.as_array().unwrap_or_else(|| panic!("body is not a JSON array: {}", r.body));
        assert!(!events.is_empty());
        for e in events {
            let id = e["after"]["id"].as_u64().unwrap();
            assert_eq!(r.path, format!("/hook/{}", table_of(id)), "event {id} sent to the wrong URL");
            assert_eq!(e["id"], expected_key(src, id, N));
            assert_eq!(e["after"], row_for(id));
            assert_eq!(e["source"]["table"], table_of(id));
            ids.push(id);
        }
    }
    // Fewer requests than events: batching happened (2 URLs per batch at most).
    assert!(reqs.len() < (N / 10) as usize, "{} requests for {N} events", reqs.len());
    // Per URL, events arrive in order; overall each exactly once.
    for t in ["orders", "items"] {
        let per: Vec<u64> = ids.iter().copied().filter(|id| table_of(*id) == t).collect();
        assert!(per.windows(2).all(|w| w[0] < w[1]), "{t} out of order");
    }
    ids.sort();
    assert_eq!(ids, (1..=N).collect::<Vec<_>>());
}

#[test]
fn http_event_mode_sends_one_cloudevent_per_request_with_idempotency_key() {
    let (hook, base) = Hook::start();
    let dir = tempfile::tempdir().unwrap();
    let src = "rnh-http-event";
    const N: u64 = 300;
    let cfg = write_config(
        dir.path(),
        src,
        &format!("{base}/ce/${{db}}/${{after.status}}"),
        json!({ "count": N }),
        json!({ "batch_mode": "event", "envelope": "cloudevents", "method": "PUT" }),
    );
    let db = dir.path().join("df.db");
    let mut df = start(&cfg, &db, &dir.path().join("df.log"));
    assert_eq!(df.wait_exit(Duration::from_secs(90)), Some(0), "{}", df.log_text());
    let reqs = hook.accepted();
    assert_eq!(reqs.len() as u64, N);
    for (i, r) in reqs.iter().enumerate() {
        let id = i as u64 + 1;
        let ce = &r.body;
        assert_eq!(ce["specversion"], "1.0");
        assert_eq!(ce["id"], expected_key(src, id, N));
        assert_eq!(header(r, "idempotency-key"), ce["id"].as_str().unwrap());
        assert_eq!(header(r, "content-type"), "application/cloudevents+json");
        assert_eq!(ce["type"], "io.deltaforge.change.created");
        assert_eq!(ce["data"]["after"], row_for(id));
        assert_eq!(r.path, format!("/ce/demo/{}", row_for(id)["status"].as_str().unwrap()));
    }
}

#[test]
fn http_400_stops_the_pipeline_with_the_response_body() {
    let (hook, base) = Hook::start();
    hook.answer(Answer::BadRequest);
    let dir = tempfile::tempdir().unwrap();
    let src = "rnh-http-400";
    let cfg = write_config(dir.path(), src, &format!("{base}/hook?token=tok-123"), json!({ "count": 30 }), Value::Null);
    let db = dir.path().join("df.db");
    let mut df = start(&cfg, &db, &dir.path().join("df.log"));
    let code = df.wait_exit(Duration::from_secs(30));
    let log = df.log_text();
    assert!(code.is_some_and(|c| c != 0), "expected a failure, got {code:?}\n{log}");
    assert!(log.contains("400"), "{log}");
    assert!(log.contains("bad schema xyz: field amount must be a number"), "{log}");
    assert!(!log.contains("tok-123") && !log.contains("s3cr3t-api-key"), "secret leaked\n{log}");
    assert_eq!(seq(&db, src), 0);
    // Fatal: no retry storm.
    assert_eq!(hook.received().len(), 1);
}

#[test]
fn http_503_outage_holds_the_checkpoint_and_loses_nothing() {
    let (hook, base) = Hook::start();
    let dir = tempfile::tempdir().unwrap();
    let src = "rnh-http-outage";
    let cfg = write_config(
        dir.path(),
        src,
        &format!("{base}/hook/${{table}}"),
        json!({ "rate": 500 }),
        json!({ "retry_max_ms": 1000 }),
    );
    let db = dir.path().join("df.db");
    let mut df = start(&cfg, &db, &dir.path().join("df.log"));
    wait_for(Duration::from_secs(30), || (seq(&db, src) > 500).then_some(()))
        .unwrap_or_else(|| panic!("no progress\n{}", df.log_text()));
    hook.answer(Answer::Unavailable);
    let down_at = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    let held = seq(&db, src);
    let mut max_during = held;
    while down_at.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(500));
        max_during = max_during.max(seq(&db, src));
    }
    assert_eq!(max_during, held, "checkpoint advanced from {held} to {max_during} during the 503 outage");
    let refused = hook.received().iter().filter(|r| !r.accepted).count();
    assert!(refused >= 5, "only {refused} requests during the outage: no retries?");
    hook.answer(Answer::Ok);
    wait_for(Duration::from_secs(60), || (seq(&db, src) > held + 2000).then_some(()))
        .unwrap_or_else(|| panic!("no progress after the endpoint recovered\n{}", df.log_text()));
    df.terminate();
    assert_eq!(df.wait_exit(Duration::from_secs(30)), Some(0), "{}", df.log_text());
    let end = seq(&db, src);
    let log = df.log_text();
    assert!(log.contains("503") && log.contains("Retry-After 1s"), "{log}");

    let mut counts: BTreeMap<u64, u32> = BTreeMap::new();
    for r in hook.accepted() {
        for e in r.body.as_array().unwrap() {
            let id = e["after"]["id"].as_u64().unwrap();
            assert_eq!(e["id"], expected_key(src, id, 0));
            *counts.entry(id).or_default() += 1;
        }
    }
    let missing: Vec<u64> = (1..=end).filter(|id| !counts.contains_key(id)).collect();
    assert!(
        missing.is_empty(),
        "{} events up to the checkpoint {end} are missing, first {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    let duplicates: u32 = counts.values().map(|n| n - 1).sum();
    eprintln!(
        "http outage: checkpoint held at {held} for 20 s ({refused} requests refused with 503), final checkpoint {end}, {} distinct events, {duplicates} duplicates",
        counts.len()
    );
}
