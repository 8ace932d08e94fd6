//! Kafka outage: the broker is stopped for 20 s under a running `datagen`
//! → `kafka` pipeline; the checkpoint holds and nothing is lost. Here (not
//! in `it`) because it stops the shared broker.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::sinks::{kafka_consume, kafka_id_counts};
use crate::support::storage::checkpoint_seq as seq;
use crate::support::{service, service_action, unique_suffix, wait_for, Pipeline, RunArgs};

#[test]
fn kafka_outage_holds_the_checkpoint_and_loses_nothing() {
    let _serial = crate::serial();
    let brokers = service("kafka");
    let dir = tempfile::tempdir().unwrap();
    let topic = format!("dft-outage-{}", unique_suffix());
    const N: u64 = 60_000;
    let cfg = Pipeline::new("kafka-outage")
        .source("datagen", json!({ "id": "dg-kout", "rate": 1500, "count": N }))
        .sink("kafka", json!({ "id": "k", "brokers": brokers, "topic": topic, "retry_max_ms": 1000 }))
        .batch(500, 20)
        .write(dir.path().join("p.yaml"));
    let db = dir.path().join("df.db");
    let log = dir.path().join("df.log");
    let mut df = RunArgs::new(&cfg, &db).start(&log, &[]);
    wait_for(Duration::from_secs(60), || (seq(&db, "dg-kout") > 3000).then_some(()))
        .unwrap_or_else(|| panic!("no progress\n{}", df.log_text()));

    service_action("kafka", "stop");
    let down_at = Instant::now();
    // In-flight batches may still have been acknowledged while the broker shut down.
    std::thread::sleep(Duration::from_secs(2));
    let ckpt_early = seq(&db, "dg-kout");
    let mut ckpt_late = ckpt_early;
    while down_at.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(500));
        ckpt_late = seq(&db, "dg-kout");
        assert_eq!(ckpt_late, ckpt_early, "the checkpoint advanced while the broker was down");
    }
    let brokers_again = service("kafka");
    assert_eq!(brokers_again, brokers);
    eprintln!("broker down for {:?}; checkpoint held at {ckpt_late}", down_at.elapsed());
    assert_eq!(
        df.wait_exit(Duration::from_secs(150)),
        Some(0),
        "pipeline did not finish after the outage\n{}",
        df.log_text()
    );
    // librdkafka retries inside the producer for `message.timeout.ms`, so a
    // short outage may end without the sink ever reporting a failure; the
    // held checkpoint above is what proves nothing was acknowledged early.
    eprintln!("sink reported failed deliveries: {}", df.log_text().contains("delivery failed"));
    assert_eq!(seq(&db, "dg-kout"), N);

    let msgs = kafka_consume(&brokers, &[&topic], false, N as usize, Duration::from_secs(60));
    let counts = kafka_id_counts(&msgs, |v| v["after"]["id"].as_u64().unwrap());
    let missing: Vec<u64> = (1..=N).filter(|id| !counts.contains_key(id)).take(10).collect();
    assert!(missing.is_empty(), "events missing after the outage, e.g. {missing:?}");
    assert_eq!(counts.len() as u64, N, "unexpected ids");
    let dups: usize = counts.values().map(|c| c - 1).sum();
    eprintln!("outage: {} messages for {N} events, {dups} duplicates (at-least-once)", msgs.len());
}
