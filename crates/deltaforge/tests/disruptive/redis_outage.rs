//! Redis outage: Redis is stopped for 20 s under a running `datagen` →
//! `redis` pipeline; the checkpoint holds and nothing is lost. Here (not in
//! `it`) because it stops the shared server.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::sinks::{redis_conn, redis_delete, redis_entries};
use crate::support::storage::checkpoint_seq as seq;
use crate::support::{datagen_key, datagen_table, service, service_action, unique_suffix, wait_for, Pipeline, RunArgs};

#[test]
fn redis_outage_holds_the_checkpoint_and_loses_nothing() {
    let _serial = crate::serial();
    let uri = service("redis");
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("rnh-rdo-{}", unique_suffix());
    let src = format!("{prefix}-src");
    let cfg = Pipeline::new("rnh-redis")
        .tenant("acme")
        .source("datagen", json!({ "id": src, "tables": ["demo.orders", "demo.items"], "rows_per_tx": 3, "rate": 500 }))
        .sink(
            "redis",
            json!({ "id": "rd", "uri": uri, "stream": format!("{prefix}.${{db}}.${{table}}"), "retry_max_ms": 1000 }),
        )
        .batch(200, 20)
        .write(dir.path().join("pipeline.yaml"));
    let db = dir.path().join("df.db");
    let log = dir.path().join("df.log");
    let mut df = RunArgs::new(&cfg, &db).start(&log, &[]);
    wait_for(Duration::from_secs(30), || (seq(&db, &src) > 500).then_some(()))
        .unwrap_or_else(|| panic!("no progress\n{}", df.log_text()));

    // The script runs Redis without persistence; for this outage let the
    // SIGTERM shutdown write an RDB snapshot (loaded at restart), as any
    // production Redis used as a CDC target would be configured.
    let mut c = redis_conn(&uri);
    let dump_dir: Vec<String> = redis::cmd("CONFIG").arg("GET").arg("dir").query(&mut c).unwrap();
    let _: () = redis::cmd("CONFIG").arg("SET").arg("save").arg("3600 1").query(&mut c).unwrap();
    drop(c);
    service_action("redis", "stop");
    let down_at = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    let held = seq(&db, &src);
    let mut max_during = held;
    while down_at.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(500));
        max_during = max_during.max(seq(&db, &src));
    }
    assert_eq!(max_during, held, "checkpoint advanced from {held} to {max_during} while Redis was down");
    service_action("redis", "start");
    let _ = std::fs::remove_file(Path::new(&dump_dir[1]).join("dump.rdb"));
    wait_for(Duration::from_secs(60), || (seq(&db, &src) > held + 2000).then_some(()))
        .unwrap_or_else(|| panic!("no progress after Redis came back\n{}", df.log_text()));
    df.terminate();
    assert_eq!(df.wait_exit(Duration::from_secs(30)), Some(0), "{}", df.log_text());
    let end = seq(&db, &src);
    assert!(df.log_text().contains("delivery failed"), "the outage was not noticed\n{}", df.log_text());

    let mut counts: BTreeMap<u64, u32> = BTreeMap::new();
    for table in ["orders", "items"] {
        let stream = format!("{prefix}.demo.{table}");
        for e in redis_entries(&uri, &stream) {
            let v: Value = serde_json::from_str(&e["value"]).unwrap();
            let id = v["after"]["id"].as_u64().unwrap();
            assert_eq!(datagen_table(id), table);
            assert_eq!(e["id"], datagen_key(&src, id, 0));
            *counts.entry(id).or_default() += 1;
        }
        redis_delete(&uri, &stream);
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
        "redis outage: checkpoint held at {held} for 20 s, final checkpoint {end}, {} distinct events, {duplicates} duplicates",
        counts.len()
    );
}
