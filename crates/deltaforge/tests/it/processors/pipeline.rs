//! Processors in the real binary: `datagen` → `filter` + `mask` → `file`,
//! checked value by value against the generator's own rows; and a
//! runaway JavaScript transform that the time limit interrupts and the
//! pipeline reports.

use std::time::{Duration, Instant};

use crate::support::{read_jsonl, Pipeline, RunArgs};
use deltaforge_processors::mask::hmac_hex;
use deltaforge_source_datagen::row_for;
use serde_json::{json, Value};

/// The filter of the pipeline below, written independently in Rust.
fn kept(id: u64, row: &Value) -> bool {
    let amount: f64 = row["amount"].as_str().unwrap().parse().unwrap();
    let status = row["status"].as_str().unwrap();
    let note_ends_in_5 = row["note"].as_str().is_some_and(|n| n.ends_with('5'));
    id.is_multiple_of(3) && ["paid", "shipped"].contains(&status) && amount >= 250.0 && !note_ends_in_5
}

#[test]
fn datagen_filter_mask_file() {
    const TOTAL: u64 = 3000;
    const SECRET: &str = "proc-test-secret-7f3a";
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let cfg = Pipeline::new("proc-filter-mask")
        .tenant("test")
        .source(
            "datagen",
            json!({ "id": "proc-fm", "tables": ["demo.orders", "demo.customers", "demo.audit"], "rows_per_tx": 7, "count": TOTAL }),
        )
        .processor(json!({
            "type": "filter",
            "config": {
                "ops": ["c"],
                "include": ["demo.ord*"],
                "where": { "all": [
                    { "field": "after.status", "in": ["paid", "shipped"] },
                    { "field": "after.amount", "gte": 250 },
                    { "not": { "field": "after.note", "regex": "5$" } },
                ] },
            },
        }))
        .processor(json!({
            "type": "mask",
            "config": {
                "name": "pii",
                // Expanded from the environment by the config loader.
                "hmac_secret": "${PROC_MASK_SECRET}",
                "rules": [{
                    "table": "demo.orders",
                    "columns": { "note": "hash", "customer_id": "drop", "created_at": { "truncate": 10 } },
                }],
            },
        }))
        .file_sink("out", &out, Value::Null)
        .batch(500, 20)
        .write(dir.path().join("pipeline.yaml"));
    let db = dir.path().join("state.db");
    let log = dir.path().join("deltaforge.log");
    let mut df = RunArgs::new(&cfg, &db).start(&log, &[("PROC_MASK_SECRET", SECRET)]);
    let code = df.wait_exit(Duration::from_secs(120));
    assert_eq!(code, Some(0), "run did not finish cleanly\n{}", df.log_text());

    let events = read_jsonl(&out);
    let expected: Vec<u64> = (1..=TOTAL).filter(|id| kept(*id, &row_for(*id))).collect();
    assert!(expected.len() > 100, "the test data should keep a fair number of events");
    assert!(expected.len() < (TOTAL / 3) as usize / 2, "and drop a fair number");
    let got: Vec<u64> = events.iter().map(|e| e["after"]["id"].as_u64().unwrap()).collect();
    assert_eq!(got, expected, "exactly the matching events, in source order");
    for e in &events {
        let id = e["after"]["id"].as_u64().unwrap();
        let row = row_for(id);
        let note = match row["note"].as_str() {
            Some(n) => json!(hmac_hex(SECRET.as_bytes(), n.as_bytes())),
            None => Value::Null,
        };
        let want = json!({
            "id": id,
            "amount": row["amount"],
            "status": row["status"],
            "note": note,
            "created_at": row["created_at"].as_str().unwrap()[..10],
        });
        assert_eq!(e["after"], want, "event {id}");
        assert_eq!(e["source"]["table"], "orders");
        assert_eq!(e["op"], "c");
    }
    assert!(!df.log_text().contains(SECRET), "the HMAC secret must never be logged");
}

/// A transform that loops forever on event 150.
const RUNAWAY_SCRIPT: &str = "\
function process(events) {
  for (const e of events) {
    if (e.after.id === 150) { while (true) {} }
    e.after.doubled = e.after.id * 2;
  }
  return events;
}
";

#[test]
fn runaway_javascript_is_interrupted_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let cfg = Pipeline::new("proc-js-loop")
        .tenant("test")
        .source("datagen", json!({ "id": "proc-js", "count": 200 }))
        .processor(json!({
            "type": "javascript",
            "config": { "name": "enrich", "timeout_ms": 300, "script": RUNAWAY_SCRIPT },
        }))
        .file_sink("out", &out, Value::Null)
        .batch(10, 20)
        .write(dir.path().join("pipeline.yaml"));
    let db = dir.path().join("state.db");
    let log = dir.path().join("deltaforge.log");
    let args = RunArgs::new(&cfg, &db);
    let start = Instant::now();
    let mut df = args.start(&log, &[]);
    let code = df.wait_exit(Duration::from_secs(60));
    let text = df.log_text();
    assert_eq!(code, Some(1), "a processor failure stops the pipeline with an error\n{text}");
    assert!(start.elapsed() < Duration::from_secs(30), "stopped promptly: {:?}", start.elapsed());
    assert!(text.contains("processor enrich"), "{text}");
    assert!(text.contains("time limit of 300 ms"), "{text}");
    // Batches before the poisoned one went through the transform.
    let events = read_jsonl(&out);
    assert!(!events.is_empty() && events.len() < 150, "{} events", events.len());
    for (i, e) in events.iter().enumerate() {
        let id = i as u64 + 1;
        assert_eq!(e["after"]["id"], id);
        assert_eq!(e["after"]["doubled"], id * 2);
    }
}
