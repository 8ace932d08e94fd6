//! The Kafka sink against the real broker (`scripts/services/kafka.sh`),
//! with the real binary and rdkafka's consumer as the reading client:
//! envelopes, keys and routing; exactly-once under repeated `kill -9`; and
//! the commit policy with an optional sink down. (The broker outage test
//! is in the `disruptive` binary.)
//!
//! Each test uses its own topics, source ids and transactional ids, so they
//! run in parallel with each other and with the rest of the binary.

use std::path::Path;
use std::time::Duration;

use deltaforge_source_datagen::row_for;
use serde_json::{json, Value};

use crate::support::sinks::{kafka_consume as consume, kafka_id_counts as id_counts};
use crate::support::spec::write_all;
use crate::support::storage::{self, checkpoint_seq as seq};
use crate::support::{service, unique_suffix, wait_for, Pipeline, Rng, RunArgs};

/// A topic prefix unique to this test run.
fn unique(name: &str) -> String {
    format!("dft-{name}-{}", unique_suffix())
}

fn run_to_end(cfg: &Path, db: &Path, log: &Path, envs: &[(&str, &str)], timeout: Duration) {
    RunArgs::new(cfg, db).run_to_end(log, envs, timeout);
}

#[test]
fn kafka_delivers_every_envelope_with_keys_and_routing() {
    let brokers = service("kafka");
    let dir = tempfile::tempdir().unwrap();
    let p = unique("env");
    const N: u64 = 400;
    let pipeline = |name: &str, source: &str, tables: &[&str], sink: Value| {
        Pipeline::new(name)
            .tenant("acme")
            .source("datagen", json!({ "id": source, "count": N, "tables": tables }))
            .sink("kafka", sink)
            .batch(100, 20)
    };
    let docs = [
        pipeline(
            "kafka-native",
            "dg-native",
            &["demo.orders", "demo.items"],
            json!({ "id": "k", "brokers": brokers, "topic": format!("{p}.native.${{table}}") }),
        ),
        pipeline(
            "kafka-debezium",
            "dg-dbz",
            &["demo.orders"],
            json!({ "id": "k", "brokers": brokers, "topic": format!("{p}.dbz"), "envelope": "debezium", "key": "cust-${after.customer_id}" }),
        ),
        pipeline(
            "kafka-ce",
            "dg-ce",
            &["demo.orders"],
            json!({ "id": "k", "brokers": brokers, "topic": format!("{p}.ce"), "envelope": "cloudevents" }),
        ),
    ];
    let cfg = write_all(dir.path().join("pipelines.yaml"), &docs);
    run_to_end(&cfg, &dir.path().join("df.db"), &dir.path().join("df.log"), &[], Duration::from_secs(90));

    // native: routed by table, keyed by the primary key.
    let (orders, items) = (format!("{p}.native.orders"), format!("{p}.native.items"));
    let msgs = consume(&brokers, &[&orders, &items], false, N as usize, Duration::from_secs(30));
    assert_eq!(msgs.len() as u64, N, "native: expected {N} messages");
    for m in &msgs {
        let v = m.value.as_ref().unwrap();
        let id = v["after"]["id"].as_u64().unwrap();
        let table = v["source"]["table"].as_str().unwrap();
        assert_eq!(m.topic, format!("{p}.native.{table}"), "event {id} routed to the wrong topic");
        assert_eq!(m.key.as_deref(), Some(format!("{{\"id\":{id}}}").as_str()), "default key of event {id}");
        assert_eq!(v["after"], row_for(id));
        assert_eq!(v["id"], format!("dg-native:{id}:0"));
        assert_eq!(v["op"], "c");
        assert_eq!(v["before"], Value::Null);
        assert_eq!(v["source"]["pipeline"], "kafka-native");
        assert_eq!(v["source"]["tenant"], "acme");
    }
    let per_topic = |t: &str| msgs.iter().filter(|m| m.topic == t).count();
    assert!(per_topic(&orders) > 0 && per_topic(&items) > 0, "both tables' topics get events");
    assert_eq!(per_topic(&orders) + per_topic(&items), N as usize);
    let counts = id_counts(&msgs, |v| v["after"]["id"].as_u64().unwrap());
    assert_eq!(counts.keys().copied().collect::<Vec<_>>(), (1..=N).collect::<Vec<_>>());
    assert!(counts.values().all(|c| *c == 1), "native: duplicates without any failure");

    // debezium: schemas.enable=false shape, template key.
    let msgs = consume(&brokers, &[&format!("{p}.dbz")], false, N as usize, Duration::from_secs(30));
    assert_eq!(msgs.len() as u64, N);
    for m in &msgs {
        let v = m.value.as_ref().unwrap();
        let id = v["after"]["id"].as_u64().unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        assert_eq!(keys, ["before", "after", "source", "op", "ts_ms", "transaction"]);
        assert_eq!(v["after"], row_for(id));
        assert_eq!(v["before"], Value::Null);
        assert_eq!(v["op"], "c");
        assert_eq!(v["source"]["table"], "orders");
        assert_eq!(v["source"]["db"], "demo");
        assert!(v["ts_ms"].is_i64());
        assert_eq!(m.key.as_deref(), Some(format!("cust-{}", id % 1000).as_str()), "template key of event {id}");
    }
    let counts = id_counts(&msgs, |v| v["after"]["id"].as_u64().unwrap());
    assert_eq!(counts.len() as u64, N);

    // cloudevents: structured mode, id = idempotency key.
    let msgs = consume(&brokers, &[&format!("{p}.ce")], false, N as usize, Duration::from_secs(30));
    assert_eq!(msgs.len() as u64, N);
    for m in &msgs {
        let v = m.value.as_ref().unwrap();
        let id = v["data"]["after"]["id"].as_u64().unwrap();
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["id"], format!("dg-ce:{id}:0"));
        assert_eq!(v["source"], "/deltaforge/acme/kafka-ce");
        assert_eq!(v["type"], "io.deltaforge.change.created");
        assert_eq!(v["subject"], "demo.orders");
        assert!(v["time"].as_str().unwrap().ends_with('Z'));
        assert_eq!(v["data"]["after"], row_for(id));
        assert_eq!(m.key.as_deref(), Some(format!("{{\"id\":{id}}}").as_str()));
    }
}

#[test]
fn kafka_exactly_once_survives_kill_9() {
    let brokers = service("kafka");
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("eos");
    const N: u64 = 30_000;
    let cfg = Pipeline::new(&topic)
        .source("datagen", json!({ "id": "dg-keos", "rows_per_tx": 3, "rate": 3000, "count": N }))
        .sink("kafka", json!({ "id": "k", "brokers": brokers, "topic": topic, "exactly_once": true }))
        .batch(300, 30)
        .write(dir.path().join("p.yaml"));
    let db = dir.path().join("df.db");
    let log = dir.path().join("df.log");
    let args = RunArgs::new(&cfg, &db);
    let mut rng = Rng::from_env();
    let mut kills = Vec::new();
    for round in 0..4 {
        let mut df = args.start(&log, &[]);
        let before = seq(&db, "dg-keos");
        wait_for(Duration::from_secs(60), || (seq(&db, "dg-keos") > before).then_some(()))
            .unwrap_or_else(|| panic!("round {round}: no progress\n{}", df.log_text()));
        std::thread::sleep(Duration::from_millis(rng.range(100, 1500)));
        df.kill9();
        let at = seq(&db, "dg-keos");
        eprintln!("kill {round}: checkpoint {at}");
        kills.push(at);
    }
    assert!(*kills.last().unwrap() < N, "the run finished before the kills; raise N");
    run_to_end(&cfg, &db, &log, &[], Duration::from_secs(120));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("resuming after the last committed transaction"), "no run resumed from the progress marker");

    let committed = consume(&brokers, &[&topic], true, N as usize, Duration::from_secs(60));
    let counts = id_counts(&committed, |v| v["after"]["id"].as_u64().unwrap());
    let missing: Vec<u64> = (1..=N).filter(|id| !counts.contains_key(id)).take(10).collect();
    assert!(missing.is_empty(), "read_committed: events missing, e.g. {missing:?}");
    let dups: Vec<(u64, usize)> = counts.iter().filter(|(_, c)| **c > 1).map(|(i, c)| (*i, *c)).take(10).collect();
    assert!(dups.is_empty(), "read_committed: events seen more than once, e.g. {dups:?}");
    assert_eq!(committed.len() as u64, N);
    // A crash between Kafka's commit and the checkpoint write, at its worst:
    // the whole checkpoint is lost and the source replays everything. The
    // progress marker committed with the last transaction makes the sink
    // skip the replay.
    assert!(storage::delete_checkpoint(&db, "dg-keos"));
    run_to_end(&cfg, &db, &log, &[], Duration::from_secs(120));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("batch already committed by an earlier transaction; skipped"), "the replay was not skipped");
    let again = consume(&brokers, &[&topic], true, N as usize, Duration::from_secs(60));
    assert_eq!(again.len() as u64, N, "read_committed: the replay after a lost checkpoint was delivered again");

    // Informational: what the kills left in aborted transactions.
    let all = consume(&brokers, &[&topic], false, N as usize, Duration::from_secs(30));
    eprintln!(
        "exactly-once: {N} committed events; read_uncommitted sees {} (aborted leftovers: {})",
        all.len(),
        all.len() as u64 - N
    );
}

#[test]
fn kafka_required_sink_advances_the_checkpoint_under_required_but_not_all() {
    let brokers = service("kafka");
    let dir = tempfile::tempdir().unwrap();
    let p = unique("policy");
    let pipeline = |name: &str, policy: &str| {
        Pipeline::new(name)
            .source("datagen", json!({ "id": name, "rate": 2000 }))
            .sink("kafka", json!({ "id": "k", "brokers": brokers, "topic": format!("{p}.{name}"), "required": true }))
            .file_sink(
                &format!("audit-{name}"),
                &dir.path().join(format!("{name}.jsonl")),
                json!({ "required": false, "max_attempts": 2, "retry_initial_ms": 20, "retry_max_ms": 100 }),
            )
            .batch(200, 20)
            .commit_policy(policy)
    };
    let cfg =
        write_all(dir.path().join("p.yaml"), &[pipeline("kpol-required", "required"), pipeline("kpol-all", "all")]);
    let flag = dir.path().join("audit.down");
    std::fs::write(&flag, b"down").unwrap();
    let fp = format!("sink:audit-kpol-required={f},sink:audit-kpol-all={f}", f = flag.display());
    let db = dir.path().join("df.db");
    let log = dir.path().join("df.log");
    let mut df = RunArgs::new(&cfg, &db).start(&log, &[("DELTAFORGE_FAILPOINTS", &fp)]);
    wait_for(Duration::from_secs(60), || (seq(&db, "kpol-required") > 3000).then_some(()))
        .unwrap_or_else(|| panic!("`required`: the checkpoint did not advance with Kafka's acks\n{}", df.log_text()));
    let all_ckpt = seq(&db, "kpol-all");
    let req_ckpt = seq(&db, "kpol-required");
    df.terminate();
    df.wait_exit(Duration::from_secs(30));
    assert_eq!(all_ckpt, 0, "`all`: the checkpoint advanced although the file sink is down");
    assert!(
        std::fs::metadata(dir.path().join("kpol-required.jsonl")).map(|m| m.len()).unwrap_or(0) == 0,
        "the failpoint did not hold the file sink"
    );
    // Kafka has every event up to the `required` checkpoint.
    let msgs = consume(&brokers, &[&format!("{p}.kpol-required")], false, req_ckpt as usize, Duration::from_secs(30));
    let counts = id_counts(&msgs, |v| v["after"]["id"].as_u64().unwrap());
    let missing: Vec<u64> = (1..=req_ckpt).filter(|id| !counts.contains_key(id)).take(10).collect();
    assert!(missing.is_empty(), "Kafka lacks events below the checkpoint {req_ckpt}, e.g. {missing:?}");
}

#[test]
fn kafka_exactly_once_second_instance_fences_the_first() {
    let brokers = service("kafka");
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("fence");
    let cfg = |name: &str| {
        Pipeline::new(name)
            .source("datagen", json!({ "id": name, "rate": 1000 }))
            .sink(
                "kafka",
                json!({
                    "id": "k", "brokers": brokers, "topic": topic, "exactly_once": true,
                    "transactional_id": format!("{topic}-shared"),
                }),
            )
            .batch(100, 20)
            .write(dir.path().join(format!("{name}.yaml")))
    };
    let (a_cfg, b_cfg) = (cfg("fence-a"), cfg("fence-b"));
    let start = |c: &Path, name: &str| {
        let db = dir.path().join(format!("{name}.db"));
        let log = dir.path().join(format!("{name}.log"));
        let df = RunArgs::new(c, &db).start(&log, &[]);
        (df, db)
    };
    let (mut a, a_db) = start(&a_cfg, "a");
    wait_for(Duration::from_secs(60), || (seq(&a_db, "fence-a") > 200).then_some(()))
        .unwrap_or_else(|| panic!("first instance made no progress\n{}", a.log_text()));
    let (mut b, b_db) = start(&b_cfg, "b");
    wait_for(Duration::from_secs(60), || a.log_text().contains("producer fenced").then_some(()))
        .unwrap_or_else(|| panic!("the first instance was not stopped as fenced\n{}", a.log_text()));
    assert!(a.log_text().contains(&format!("{topic}-shared")), "the error names the transactional id");
    let a_stopped_at = seq(&a_db, "fence-a");
    wait_for(Duration::from_secs(60), || (seq(&b_db, "fence-b") > 200).then_some(()))
        .unwrap_or_else(|| panic!("the second instance made no progress\n{}", b.log_text()));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(seq(&a_db, "fence-a"), a_stopped_at, "the fenced instance kept checkpointing");
    a.kill9();
    b.terminate();
    b.wait_exit(Duration::from_secs(30));
}
