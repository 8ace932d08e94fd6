//! A sink that fails and then recovers, with the real binary: under `all`
//! the checkpoint does not advance past undelivered events; under
//! `required` it advances while the failing sink is optional.

use std::path::Path;
use std::time::Duration;

use crate::support::{read_jsonl, storage, wait_for, RunArgs};

fn write_config(dir: &Path, policy: &str, flaky_required: bool) -> std::path::PathBuf {
    crate::support::Pipeline::new("outage")
        .source("datagen", serde_json::json!({ "id": "dg-outage", "rate": 2000 }))
        .file_sink("good", &dir.join("good.jsonl"), serde_json::Value::Null)
        .file_sink(
            "flaky",
            &dir.join("flaky.jsonl"),
            serde_json::json!({ "required": flaky_required, "max_attempts": 2, "retry_initial_ms": 20, "retry_max_ms": 100 }),
        )
        .batch(200, 20)
        .commit_policy(policy)
        .write(dir.join("pipeline.yaml"))
}

fn seq(db: &Path) -> u64 {
    storage::checkpoint(db, "dg-outage").map(|c| c["position"]["seq"].as_u64().unwrap()).unwrap_or(0)
}

fn max_id(path: &Path) -> u64 {
    read_jsonl(path).iter().map(|e| e["after"]["id"].as_u64().unwrap()).max().unwrap_or(0)
}

fn run_outage(policy: &str, flaky_required: bool) -> (u64, u64, u64, u64, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), policy, flaky_required);
    let db = dir.path().join("df.db");
    let flag = dir.path().join("flaky.down");
    let log = dir.path().join("df.log");
    let fp = format!("sink:flaky={}", flag.display());
    let mut df = RunArgs::new(&cfg, &db).start(&log, &[("DELTAFORGE_FAILPOINTS", &fp)]);
    wait_for(Duration::from_secs(30), || (seq(&db) > 500).then_some(()))
        .unwrap_or_else(|| panic!("no progress\n{}", df.log_text()));
    // Take the flaky sink down.
    std::fs::write(&flag, b"down").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let flaky_at_outage = max_id(&dir.path().join("flaky.jsonl"));
    let ckpt_start = seq(&db);
    std::thread::sleep(Duration::from_secs(2));
    let ckpt_during = seq(&db);
    // Checked while down: never past what the flaky sink has, under `all`.
    let flaky_during = max_id(&dir.path().join("flaky.jsonl"));
    assert_eq!(flaky_during, flaky_at_outage, "the failpoint did not stop the flaky sink");
    // Recover.
    std::fs::remove_file(&flag).unwrap();
    let target = ckpt_during + 2000;
    wait_for(Duration::from_secs(30), || (seq(&db) > target).then_some(()))
        .unwrap_or_else(|| panic!("no progress after recovery\n{}", df.log_text()));
    df.terminate();
    assert_eq!(df.wait_exit(Duration::from_secs(20)), Some(0), "{}", df.log_text());
    (ckpt_start, ckpt_during, flaky_during, seq(&db), dir)
}

#[test]
fn all_policy_holds_the_checkpoint_while_a_sink_is_down() {
    let _serial = crate::serial();
    let (start, during, flaky_high, end, dir) = run_outage("all", true);
    assert!(during <= flaky_high, "checkpoint {during} passed the failing sink's last event {flaky_high}");
    assert!(during <= start + 600, "checkpoint moved from {start} to {during} during the outage under `all`");
    // After recovery both sinks have every event up to the final checkpoint.
    for f in ["good.jsonl", "flaky.jsonl"] {
        let mut ids: Vec<u64> =
            read_jsonl(&dir.path().join(f)).iter().map(|e| e["after"]["id"].as_u64().unwrap()).collect();
        ids.sort();
        ids.dedup();
        assert!(ids.len() as u64 >= end, "{f} is missing events below the checkpoint {end}");
        assert_eq!(ids[..end as usize], (1..=end).collect::<Vec<_>>()[..], "{f} has a gap");
    }
}

#[test]
fn required_policy_advances_while_an_optional_sink_is_down() {
    let _serial = crate::serial();
    let (start, during, flaky_high, end, dir) = run_outage("required", false);
    assert!(
        during > start + 1000,
        "checkpoint did not advance during the optional sink's outage ({start} -> {during})"
    );
    assert!(during > flaky_high, "expected the checkpoint to pass the optional sink");
    let good: Vec<u64> =
        read_jsonl(&dir.path().join("good.jsonl")).iter().map(|e| e["after"]["id"].as_u64().unwrap()).collect();
    assert_eq!(good, (1..=good.len() as u64).collect::<Vec<_>>(), "the required sink has a gap or duplicate");
    assert!(good.len() as u64 >= end);
}
