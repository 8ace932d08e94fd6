//! Two `deltaforge` instances share one PostgreSQL storage backend and one
//! config of three datagen pipelines: each pipeline runs on exactly one
//! instance; after `kill -9` of the holder the other instance takes every
//! pipeline over within the lease TTL plus a few seconds, resuming from the
//! checkpoint; the file sinks end with every event, and duplicates only
//! after the checkpoint stored at the kill.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::spec::write_all;
use crate::support::{http_json, pg_sql, read_jsonl, service, wait_for, Deltaforge, Pipeline, RunArgs};
use serde_json::{json, Value};

const TTL_SECS: u64 = 3;

struct Instance {
    df: Deltaforge,
    api: String,
}

fn start(dir: &Path, tag: &str, cfg: &Path, dsn: &str) -> Instance {
    let (args, api, _metrics) = RunArgs::backend(cfg, "postgres").free_ports();
    let ttl = TTL_SECS.to_string();
    let df = args
        .opt("--instance-id", tag)
        .opt("--lease-ttl-secs", &ttl)
        .start(&dir.join(format!("{tag}.log")), &[("DELTAFORGE_STORAGE_DSN", dsn)]);
    let inst = Instance { df, api };
    wait_for(Duration::from_secs(30), || http_json(&inst.api, "GET", "/health", None, None).ok())
        .unwrap_or_else(|| panic!("{tag} did not come up\n{}", inst.df.log_text()));
    inst
}

impl Instance {
    fn states(&self) -> HashMap<String, String> {
        let (_, v) = http_json(&self.api, "GET", "/pipelines", None, None).unwrap_or((0, Value::Null));
        v["pipelines"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|p| (p["name"].as_str().unwrap().to_string(), p["state"].as_str().unwrap().to_string()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn ids(path: &Path) -> Vec<u64> {
    read_jsonl(path).iter().map(|e| e["after"]["id"].as_u64().unwrap()).collect()
}

fn checkpoint_seq(dsn: &str, source_id: &str) -> u64 {
    let raw = pg_sql(
        dsn,
        &format!("SELECT value FROM deltaforge.kv WHERE namespace = 'checkpoints' AND key = '{source_id}'"),
    );
    let raw = raw.trim();
    if raw.is_empty() {
        return 0;
    }
    serde_json::from_str::<Value>(raw).unwrap()["position"]["seq"].as_u64().unwrap()
}

#[test]
fn each_pipeline_runs_once_and_moves_after_kill_9() {
    let dsn = service("postgres");
    let dir = tempfile::tempdir().unwrap();
    let suffix = format!(
        "{}{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() % 1_000_000
    );
    let names: Vec<String> = (0..3).map(|i| format!("lease{i}-{suffix}")).collect();
    let sources: Vec<String> = (0..3).map(|i| format!("dg-lease{i}-{suffix}")).collect();
    let files: Vec<PathBuf> = (0..3).map(|i| dir.path().join(format!("p{i}.jsonl"))).collect();
    let docs: Vec<Pipeline> = (0..3)
        .map(|i| {
            Pipeline::new(&names[i])
                .source("datagen", json!({ "id": sources[i], "rate": 400, "rows_per_tx": 2 }))
                .file_sink("out", &files[i], Value::Null)
                .batch(100, 20)
        })
        .collect();
    let cfg = write_all(dir.path().join("pipelines.yaml"), &docs);

    let mut a = start(dir.path(), "inst-a", &cfg, &dsn);
    wait_for(Duration::from_secs(30), || {
        let s = a.states();
        names.iter().all(|n| s.get(n).map(String::as_str) == Some("running")).then_some(())
    })
    .unwrap_or_else(|| panic!("instance A did not run all pipelines: {:?}\n{}", a.states(), a.df.log_text()));
    let mut b = start(dir.path(), "inst-b", &cfg, &dsn);
    std::thread::sleep(Duration::from_millis(TTL_SECS * 1000 + 500));
    let (sa, sb) = (a.states(), b.states());
    for n in &names {
        let running = [&sa, &sb].iter().filter(|s| s.get(n).map(String::as_str) == Some("running")).count();
        assert_eq!(running, 1, "{n} runs on {running} instances: A {sa:?} B {sb:?}");
        assert_eq!(sb.get(n).map(String::as_str), Some("standby"), "{n} on B: {sb:?}");
    }
    let (_, view) = http_json(&b.api, "GET", &format!("/pipelines/{}", names[0]), None, None).unwrap();
    assert_eq!(view["lease"]["holder"], "inst-a", "{view}");
    // A delivers on every pipeline.
    let sizes: Vec<usize> = files.iter().map(|f| ids(f).len()).collect();
    assert!(sizes.iter().all(|s| *s > 0), "A delivers: {sizes:?}");

    // kill -9 the holder; the checkpoints it left are the replay boundary.
    a.df.kill9();
    let killed = Instant::now();
    let at_kill: Vec<u64> = sources.iter().map(|s| checkpoint_seq(&dsn, s)).collect();
    let high_at_kill: Vec<u64> = files.iter().map(|f| ids(f).into_iter().max().unwrap_or(0)).collect();
    eprintln!("at kill: checkpoints {at_kill:?}, files up to {high_at_kill:?}");
    wait_for(Duration::from_secs(TTL_SECS + 10), || {
        let s = b.states();
        names.iter().all(|n| s.get(n).map(String::as_str) == Some("running")).then_some(())
    })
    .unwrap_or_else(|| panic!("B did not take over: {:?}\n{}", b.states(), b.df.log_text()));
    let took = killed.elapsed();
    eprintln!("takeover after {took:?}");
    assert!(took <= Duration::from_secs(TTL_SECS + 5), "takeover took {took:?}");
    // B resumes from the checkpoints and goes on.
    wait_for(Duration::from_secs(30), || {
        files.iter().zip(&high_at_kill).all(|(f, h)| ids(f).into_iter().max().unwrap_or(0) > h + 200).then_some(())
    })
    .unwrap_or_else(|| panic!("B made no progress\n{}", b.df.log_text()));
    b.df.terminate();
    assert_eq!(b.df.wait_exit(Duration::from_secs(30)), Some(0), "{}", b.df.log_text());

    for i in 0..3 {
        let all = ids(&files[i]);
        let mut counts: HashMap<u64, u32> = HashMap::new();
        for id in &all {
            *counts.entry(*id).or_default() += 1;
        }
        let max = *all.iter().max().unwrap();
        for id in 1..=max {
            assert!(counts.contains_key(&id), "pipeline {i}: event {id} lost (max {max})");
        }
        for (id, n) in &counts {
            if *n > 1 {
                assert!(
                    *id > at_kill[i],
                    "pipeline {i}: event {id} delivered {n} times but was before the checkpoint {} at the kill",
                    at_kill[i]
                );
            }
        }
        let final_cp = checkpoint_seq(&dsn, &sources[i]);
        assert!(final_cp >= at_kill[i] && final_cp <= max, "pipeline {i}: final checkpoint {final_cp}, max {max}");
    }
}
