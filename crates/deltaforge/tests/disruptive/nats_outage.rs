//! NATS outage: the NATS server is stopped for 20 s under a running
//! `datagen` → `nats` pipeline; the checkpoint holds and nothing is lost.
//! Here (not in `it`) because it stops the shared server.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::sinks::{nats_delete_stream, nats_messages};
use crate::support::spec::merged;
use crate::support::storage::checkpoint_seq as seq;
use crate::support::{datagen_key, datagen_table, service, service_action, unique_suffix, wait_for, Pipeline, RunArgs};

#[test]
fn nats_outage_holds_the_checkpoint_and_loses_nothing() {
    let _serial = crate::serial();
    let url = service("nats");
    let dir = tempfile::tempdir().unwrap();
    let name = format!("rnhO{}", unique_suffix());
    let src = format!("{name}-src");
    let cfg = Pipeline::new("rnh-nats")
        .tenant("acme")
        .source("datagen", json!({ "id": src, "tables": ["demo.orders", "demo.items"], "rows_per_tx": 3, "rate": 500 }))
        .sink(
            "nats",
            merged(
                json!({ "id": "js", "url": url, "subject": format!("{name}.${{db}}.${{table}}"), "stream": name }),
                json!({ "create_stream": true, "ack_timeout_ms": 2000, "retry_max_ms": 1000 }),
            ),
        )
        .batch(200, 20)
        .write(dir.path().join("pipeline.yaml"));
    let db = dir.path().join("df.db");
    let mut df = RunArgs::new(&cfg, &db).start(&dir.path().join("df.log"), &[]);
    wait_for(Duration::from_secs(30), || (seq(&db, &src) > 500).then_some(()))
        .unwrap_or_else(|| panic!("no progress\n{}", df.log_text()));
    service_action("nats", "stop");
    let down_at = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    let held = seq(&db, &src);
    let mut max_during = held;
    while down_at.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(500));
        max_during = max_during.max(seq(&db, &src));
    }
    assert_eq!(max_during, held, "checkpoint advanced from {held} to {max_during} while NATS was down");
    service_action("nats", "start");
    wait_for(Duration::from_secs(60), || (seq(&db, &src) > held + 2000).then_some(()))
        .unwrap_or_else(|| panic!("no progress after NATS came back\n{}", df.log_text()));
    df.terminate();
    assert_eq!(df.wait_exit(Duration::from_secs(30)), Some(0), "{}", df.log_text());
    let end = seq(&db, &src);
    assert!(df.log_text().contains("delivery failed"), "the outage was not noticed\n{}", df.log_text());

    let mut counts: BTreeMap<u64, u32> = BTreeMap::new();
    for m in nats_messages(&url, &name) {
        let id = m.payload["after"]["id"].as_u64().unwrap();
        assert_eq!(m.subject, format!("{name}.demo.{}", datagen_table(id)));
        assert_eq!(m.header("Nats-Msg-Id"), datagen_key(&src, id, 0));
        *counts.entry(id).or_default() += 1;
    }
    nats_delete_stream(&url, &name);
    let missing: Vec<u64> = (1..=end).filter(|id| !counts.contains_key(id)).collect();
    assert!(
        missing.is_empty(),
        "{} events up to the checkpoint {end} are missing, first {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    let duplicates: u32 = counts.values().map(|n| n - 1).sum();
    eprintln!(
        "nats outage: checkpoint held at {held} for 20 s, final checkpoint {end}, {} distinct events, {duplicates} duplicates",
        counts.len()
    );
}
