//! Dead-letter queue with the real binary: a sink that rejects 1 event in
//! 1,000 as poison, a 100,000-event run that completes with exactly the
//! poison events set aside, a redrive that delivers them in order once the
//! sink is fixed, and kill -9 during a run losing nothing (every event is in
//! the sink or in the dead-letter queue).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::{read_jsonl, wait_for, Rng, RunArgs};

fn write_config(dir: &Path, count: u64, rate: u64) -> PathBuf {
    crate::support::Pipeline::new("poison")
        .source("datagen", serde_json::json!({ "id": "dg-poison", "count": count, "rate": rate, "rows_per_tx": 5 }))
        .file_sink("out", &dir.join("out.jsonl"), serde_json::Value::Null)
        .batch(1000, 20)
        .spec("dlq", serde_json::json!({ "capacity": 100000, "overflow": "reject" }))
        .write(dir.join("pipeline.yaml"))
}

fn ids(path: &Path) -> Vec<u64> {
    read_jsonl(path).iter().map(|e| e["after"]["id"].as_u64().unwrap()).collect()
}

fn dlq_ids(cfg: &Path, db: &Path) -> Vec<u64> {
    let out = Command::new(crate::support::BIN)
        .args(["dlq", "list", "poison", "--config", cfg.to_str().unwrap(), "--storage-path", db.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["letter"]["sink"], "out");
            assert!(v["letter"]["error"].as_str().unwrap().contains("poison"));
            v["letter"]["event"]["after"]["id"].as_u64().unwrap()
        })
        .collect()
}

#[test]
fn poison_events_are_set_aside_exactly_and_redriven_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let total = 100_000;
    let cfg = write_config(dir.path(), total, 0);
    let db = dir.path().join("df.db");
    let flag = dir.path().join("poison.flag");
    std::fs::write(&flag, b"on").unwrap();
    let fp = format!("poison:out={}@1000", flag.display());
    let log = dir.path().join("df.log");
    let args = RunArgs::new(&cfg, &db);
    let mut df = args.start(&log, &[("DELTAFORGE_FAILPOINTS", &fp)]);
    assert_eq!(df.wait_exit(Duration::from_secs(120)), Some(0), "{}", df.log_text());

    let poison: Vec<u64> = (1..=total / 1000).map(|i| i * 1000).collect();
    assert_eq!(dlq_ids(&cfg, &db), poison, "the dead-letter queue must hold exactly the poison events, in order");
    let delivered = ids(&dir.path().join("out.jsonl"));
    assert_eq!(delivered, (1..=total).filter(|i| i % 1000 != 0).collect::<Vec<_>>());

    // Fix the sink, then redrive.
    std::fs::remove_file(&flag).unwrap();
    let out = Command::new(crate::support::BIN)
        .args(["dlq", "redrive", "poison", "--config", cfg.to_str().unwrap(), "--storage-path", db.to_str().unwrap()])
        .env("DELTAFORGE_FAILPOINTS", &fp)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(dlq_ids(&cfg, &db).is_empty(), "redriven letters must leave the queue");
    let after = ids(&dir.path().join("out.jsonl"));
    assert_eq!(after[delivered.len()..], poison[..], "redrive appends the poison events in order");
    // Redriven events keep their idempotency keys.
    let last = read_jsonl(&dir.path().join("out.jsonl")).pop().unwrap();
    assert_eq!(last["id"], "dg-poison:100000:4");
}

#[test]
fn kill_9_with_poison_events_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let total = 60_000;
    let cfg = write_config(dir.path(), total, 20_000);
    let db = dir.path().join("df.db");
    let flag = dir.path().join("poison.flag");
    std::fs::write(&flag, b"on").unwrap();
    let fp = format!("poison:out={}@1000", flag.display());
    let log = dir.path().join("df.log");
    let out = dir.path().join("out.jsonl");
    let args = RunArgs::new(&cfg, &db);
    let mut rng = Rng::from_env();
    for round in 0..3 {
        let mut df = args.start(&log, &[("DELTAFORGE_FAILPOINTS", &fp)]);
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let before = size(&out);
        wait_for(Duration::from_secs(30), || (size(&out) > before).then_some(()))
            .unwrap_or_else(|| panic!("round {round}: no progress\n{}", df.log_text()));
        std::thread::sleep(Duration::from_millis(rng.range(100, 800)));
        df.kill9();
    }
    let mut df = args.start(&log, &[("DELTAFORGE_FAILPOINTS", &fp)]);
    assert_eq!(df.wait_exit(Duration::from_secs(120)), Some(0), "{}", df.log_text());
    let in_sink: BTreeSet<u64> = ids(&out).into_iter().collect();
    let in_dlq: BTreeSet<u64> = dlq_ids(&cfg, &db).into_iter().collect();
    for id in 1..=total {
        let poison = id % 1000 == 0;
        assert!(in_sink.contains(&id) || in_dlq.contains(&id), "event {id} is neither in the sink nor in the DLQ");
        assert_eq!(in_dlq.contains(&id), poison, "event {id}: DLQ membership must match poison-ness");
        assert_eq!(in_sink.contains(&id), !poison, "event {id}: sink membership must match");
    }
}
