//! Crash test: `datagen` → `file` with SQLite checkpoints, the real binary
//! killed with `kill -9` at random moments and restarted. Afterwards every
//! generated event is in the file, duplicates appear only for events after
//! the checkpoint stored at each kill, and `checkpoints show` matches the
//! last event in the file.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use crate::support::{read_jsonl, storage, wait_for, Rng, RunArgs};

const TOTAL: u64 = 200_000;

fn config(dir: &Path) -> std::path::PathBuf {
    crate::support::Pipeline::new("crash-dg")
        .tenant("test")
        .source("datagen", serde_json::json!({ "id": "dg-crash", "rows_per_tx": 3, "rate": 20000, "count": TOTAL }))
        .file_sink("out", &dir.join("out.jsonl"), serde_json::Value::Null)
        .batch(500, 20)
        .write(dir.join("pipeline.yaml"))
}

fn id_of(v: &serde_json::Value) -> u64 {
    v["after"]["id"].as_u64().expect("event id")
}

#[test]
fn kill_9_loses_nothing_and_duplicates_only_after_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let db = dir.path().join("state/deltaforge.db");
    let out = dir.path().join("out.jsonl");
    let log = dir.path().join("deltaforge.log");
    let args = RunArgs::new(&cfg, &db);
    let mut rng = Rng::from_env();
    // (checkpoint seq at the kill, highest id in the file at the kill)
    let mut kills: Vec<(u64, u64)> = Vec::new();
    for round in 0..6 {
        let mut df = args.start(&log, &[]);
        // Wait until this run made progress, then kill at a random moment.
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let before = size(&out);
        wait_for(Duration::from_secs(30), || (size(&out) > before).then_some(()))
            .unwrap_or_else(|| panic!("round {round}: no progress\n{}", df.log_text()));
        std::thread::sleep(Duration::from_millis(rng.range(50, 900)));
        df.kill9();
        let ckpt = storage::checkpoint(&db, "dg-crash").map(|c| c["position"]["seq"].as_u64().unwrap()).unwrap_or(0);
        let high = read_jsonl(&out).iter().map(id_of).max().unwrap_or(0);
        assert!(ckpt <= high, "checkpoint {ckpt} is ahead of the file ({high})");
        eprintln!("kill {round}: checkpoint {ckpt}, file up to {high}");
        kills.push((ckpt, high));
    }
    assert!(kills.last().unwrap().1 < TOTAL, "the run finished before the kills; raise TOTAL");

    // Let the last run finish by itself.
    let mut df = args.start(&log, &[]);
    let code = df.wait_exit(Duration::from_secs(120));
    assert_eq!(code, Some(0), "final run did not finish cleanly\n{}", df.log_text());

    let events = read_jsonl(&out);
    let mut counts: HashMap<u64, u64> = HashMap::new();
    for e in &events {
        *counts.entry(id_of(e)).or_default() += 1;
        assert_eq!(
            e["after"],
            deltaforge_source_datagen::row_for(id_of(e)),
            "event content differs from what datagen generates"
        );
    }
    for id in 1..=TOTAL {
        let expected = 1 + kills.iter().filter(|(ckpt, high)| *ckpt < id && id <= *high).count() as u64;
        let got = counts.get(&id).copied().unwrap_or(0);
        assert!(got > 0, "event {id} is missing");
        assert_eq!(got, expected, "event {id} appears {got} times; expected {expected} (kills: {kills:?})");
    }
    assert_eq!(counts.len() as u64, TOTAL, "unexpected ids in the file");
    // Within each run, events are in order: the file is the runs concatenated.
    let mut runs = 1;
    for w in events.windows(2) {
        let (a, b) = (id_of(&w[0]), id_of(&w[1]));
        if b != a + 1 {
            assert!(b <= a, "gap between {a} and {b}");
            runs += 1;
        }
    }
    assert!(runs <= kills.len() + 1);

    // `checkpoints show` agrees with the last event in the file.
    let shown = std::process::Command::new(crate::support::BIN)
        .args(["checkpoints", "--storage-path", db.to_str().unwrap(), "show", "dg-crash"])
        .output()
        .unwrap();
    assert!(shown.status.success(), "{}", String::from_utf8_lossy(&shown.stderr));
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(shown["position"]["seq"].as_u64(), Some(id_of(events.last().unwrap())));
    assert_eq!(shown["position"]["seq"].as_u64(), Some(TOTAL));
}
