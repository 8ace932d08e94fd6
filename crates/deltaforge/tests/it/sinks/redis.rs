//! Redis Streams sink against the real Redis (scripts/services/redis.sh),
//! with the real binary: `datagen` → `redis`, read back with XRANGE.
//!
//! The outage test (it stops the server) is in the `disruptive` binary.
//! Each test uses its own stream names, so they need no lock: they run in
//! parallel with each other and with the rest of the binary.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use deltaforge_source_datagen::row_for;
use serde_json::{json, Value};

use crate::support::sinks::{redis_delete, redis_entries};
use crate::support::spec::merged;
use crate::support::storage::checkpoint_seq as seq;
use crate::support::{
    datagen_key as expected_key, datagen_table as table_of, service, unique_suffix, Pipeline, RunArgs,
};

fn unique(tag: &str) -> String {
    format!("rnh-{tag}-{}", unique_suffix())
}

/// Writes a datagen → redis pipeline; `source_extra` and `sink_extra` are
/// added to the source and sink configs.
fn write_config(
    dir: &Path,
    src: &str,
    uri: &str,
    prefix: &str,
    source_extra: Value,
    sink_extra: Value,
) -> std::path::PathBuf {
    Pipeline::new("rnh-redis")
        .tenant("acme")
        .source(
            "datagen",
            merged(json!({ "id": src, "tables": ["demo.orders", "demo.items"], "rows_per_tx": 3 }), source_extra),
        )
        .sink(
            "redis",
            merged(json!({ "id": "rd", "uri": uri, "stream": format!("{prefix}.${{db}}.${{table}}") }), sink_extra),
        )
        .batch(200, 20)
        .write(dir.join("pipeline.yaml"))
}

fn run_to_end(cfg: &Path, db: &Path, log: &Path) {
    RunArgs::new(cfg, db).run_to_end(log, &[], Duration::from_secs(90));
}

#[test]
fn redis_delivers_every_event_with_fields_keys_and_routing() {
    let uri = service("redis");
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("rd");
    let src = format!("{prefix}-src");
    const N: u64 = 2000;
    let cfg = write_config(dir.path(), &src, &uri, &prefix, json!({ "count": N }), Value::Null);
    let db = dir.path().join("df.db");
    run_to_end(&cfg, &db, &dir.path().join("df.log"));
    assert_eq!(seq(&db, &src), N, "final checkpoint");

    let mut seen = BTreeMap::new();
    for table in ["orders", "items"] {
        let stream = format!("{prefix}.demo.{table}");
        let entries = redis_entries(&uri, &stream);
        assert_eq!(entries.len() as u64, N / 2, "events in {stream}");
        let mut last = 0;
        for e in &entries {
            let value: Value = serde_json::from_str(&e["value"]).unwrap();
            let id = value["after"]["id"].as_u64().unwrap();
            assert!(id > last, "{stream}: events out of order ({last} then {id})");
            last = id;
            assert_eq!(table_of(id), table, "event {id} routed to the wrong stream");
            assert_eq!(e["id"], expected_key(&src, id, N), "idempotency key of {id}");
            assert_eq!(e["op"], "c");
            assert_eq!(e["key"], format!(r#"{{"id":{id}}}"#));
            // Native envelope, value for value.
            assert_eq!(value["id"], e["id"].as_str());
            assert_eq!(value["op"], "c");
            assert_eq!(value["before"], Value::Null);
            assert_eq!(value["after"], row_for(id));
            assert_eq!(value["source"]["table"], table);
            assert_eq!(value["source"]["db"], "demo");
            assert_eq!(value["source"]["tenant"], "acme");
            assert_eq!(value["source"]["pipeline"], "rnh-redis");
            assert!(seen.insert(id, table).is_none(), "event {id} delivered twice");
        }
        redis_delete(&uri, &stream);
    }
    assert_eq!(seen.keys().copied().collect::<Vec<_>>(), (1..=N).collect::<Vec<_>>());
}

#[test]
fn redis_debezium_envelope_and_approximate_maxlen() {
    let uri = service("redis");
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("rdz");
    let src = format!("{prefix}-src");
    const N: u64 = 3000;
    let cfg = write_config(
        dir.path(),
        &src,
        &uri,
        &prefix,
        json!({ "count": N }),
        json!({ "envelope": "debezium", "maxlen": 200 }),
    );
    let db = dir.path().join("df.db");
    run_to_end(&cfg, &db, &dir.path().join("df.log"));

    for table in ["orders", "items"] {
        let stream = format!("{prefix}.demo.{table}");
        let entries = redis_entries(&uri, &stream);
        // `MAXLEN ~ 200` trims whole radix-tree nodes (100 entries by default):
        // fewer than all 1500 kept, at least 200.
        assert!(entries.len() >= 200 && entries.len() < 500, "{stream} holds {} entries", entries.len());
        // The newest entries survive trimming, the last one is the last event.
        let last: Value = serde_json::from_str(&entries.last().unwrap()["value"]).unwrap();
        let last_id = if table == "orders" { N } else { N - 1 };
        assert_eq!(last["after"]["id"], last_id);
        for e in &entries {
            let v: Value = serde_json::from_str(&e["value"]).unwrap();
            let id = v["after"]["id"].as_u64().unwrap();
            assert_eq!(v["op"], "c");
            assert_eq!(v["before"], Value::Null);
            assert_eq!(v["after"], row_for(id));
            assert_eq!(v["source"]["table"], table);
            assert_eq!(v["source"]["connector"], "datagen");
            assert!(v["ts_ms"].is_i64());
            assert_eq!(v["transaction"]["id"], id.div_ceil(3).checked_mul(3).unwrap().min(N).to_string());
            assert_eq!(e["id"], expected_key(&src, id, N));
        }
        redis_delete(&uri, &stream);
    }
}

#[test]
fn redis_unknown_placeholder_is_rejected_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Pipeline::new("rnh-bad")
        .source("datagen", json!({ "id": "rnh-bad", "count": 10 }))
        .sink("redis", json!({ "id": "rd", "uri": "redis://:hunter2@127.0.0.1:1", "stream": "x.${schema}" }))
        .write(dir.path().join("p.yaml"));
    let db = dir.path().join("df.db");
    let mut df = RunArgs::new(&cfg, &db).start(&dir.path().join("df.log"), &[]);
    let code = df.wait_exit(Duration::from_secs(30));
    let log = df.log_text();
    assert!(code.is_some_and(|c| c != 0), "expected a config error, got {code:?}\n{log}");
    assert!(log.contains("stream") && log.contains("${schema}"), "{log}");
    assert!(!log.contains("hunter2"), "password leaked\n{log}");
}
