//! The Kafka sink against the real broker (`scripts/services/kafka.sh`),
//! with the real binary and rdkafka's consumer as the reading client:
//! envelopes, keys and routing; a 20 s broker outage; exactly-once under
//! repeated `kill -9`; and the commit policy with an optional sink down.
//!
//! The outage test stops the shared broker, so every test here takes one
//! static lock: they run one after another even when the harness runs
//! tests in parallel. Each test uses its own topics and source ids.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use deltaforge_source_datagen::row_for;
use deltaforge_testkit::{
    delete_sqlite_checkpoint, service, service_action, sqlite_checkpoint, unique_suffix, wait_for, Deltaforge, Rng,
};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_deltaforge");

static KAFKA: Mutex<()> = Mutex::new(());

/// Serialises the tests of this file and makes sure the broker is up.
fn kafka() -> (MutexGuard<'static, ()>, String) {
    let guard = KAFKA.lock().unwrap_or_else(|p| p.into_inner());
    (guard, service("kafka"))
}

/// A topic prefix unique to this test run.
fn unique(name: &str) -> String {
    format!("dft-{name}-{}", unique_suffix())
}

/// One consumed message.
#[derive(Debug, Clone)]
struct Msg {
    topic: String,
    key: Option<String>,
    value: Option<Value>,
}

/// Reads `topics` from the beginning until at least `expect` messages came
/// and every partition reached its end (so duplicates are seen too), or
/// `timeout` passes.
fn consume(brokers: &str, topics: &[&str], read_committed: bool, expect: usize, timeout: Duration) -> Vec<Msg> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", if read_committed { "read_committed" } else { "read_uncommitted" })
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    let mut at_end: HashMap<(String, i32), bool> = HashMap::new();
    for t in topics {
        let md = consumer.fetch_metadata(Some(t), Duration::from_secs(10)).expect("topic metadata");
        let topic = &md.topics()[0];
        assert!(!topic.partitions().is_empty(), "topic {t} has no partitions: {:?}", topic.error());
        for p in topic.partitions() {
            tpl.add_partition_offset(t, p.id(), Offset::Beginning).unwrap();
            at_end.insert((t.to_string(), p.id()), false);
        }
    }
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                at_end.insert((m.topic().to_string(), m.partition()), false);
                out.push(Msg {
                    topic: m.topic().to_string(),
                    key: m.key().map(|k| String::from_utf8(k.to_vec()).unwrap()),
                    value: m.payload().map(|p| serde_json::from_slice(p).expect("JSON value")),
                });
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                for ((_, part), end) in at_end.iter_mut() {
                    if *part == p {
                        *end = true;
                    }
                }
            }
            Some(Err(e)) => panic!("consumer error: {e}"),
            None => {}
        }
        if out.len() >= expect && at_end.values().all(|e| *e) {
            break;
        }
    }
    out
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn seq(db: &Path, source: &str) -> u64 {
    sqlite_checkpoint(db, source).map(|c| c["position"]["seq"].as_u64().unwrap()).unwrap_or(0)
}

fn run_to_end(cfg: &Path, db: &Path, log: &Path, envs: &[(&str, &str)], timeout: Duration) {
    let mut df = Deltaforge::start(
        Path::new(BIN),
        &["run", "--config", cfg.to_str().unwrap(), "--storage-path", db.to_str().unwrap()],
        log,
        envs,
    );
    let code = df.wait_exit(timeout);
    assert_eq!(code, Some(0), "deltaforge did not finish cleanly\n{}", df.log_text());
}

/// Ids of `after.id` in native/debezium/cloudevents values, counted.
fn id_counts(msgs: &[Msg], id: impl Fn(&Value) -> u64) -> BTreeMap<u64, usize> {
    let mut counts = BTreeMap::new();
    for m in msgs {
        if let Some(v) = &m.value {
            *counts.entry(id(v)).or_default() += 1;
        }
    }
    counts
}

#[test]
fn kafka_delivers_every_envelope_with_keys_and_routing() {
    let (_lock, brokers) = kafka();
    let dir = tempfile::tempdir().unwrap();
    let p = unique("env");
    const N: u64 = 400;
    let sink = |id: &str, extra: &str| {
        format!("    - type: kafka\n      config: {{ id: {id}, brokers: \"{brokers}\", {extra} }}\n")
    };
    let pipeline = |name: &str, source: &str, tables: &str, sinks: String| {
        format!(
            "apiVersion: deltaforge/v1\nkind: Pipeline\nmetadata: {{ name: {name}, tenant: acme }}\nspec:\n  source:\n    type: datagen\n    config: {{ id: {source}, count: {N}, tables: [{tables}] }}\n  sinks:\n{sinks}  batch: {{ max_events: 100, max_ms: 20 }}\n"
        )
    };
    let text = [
        pipeline(
            "kafka-native",
            "dg-native",
            "demo.orders, demo.items",
            sink("k", &format!("topic: \"{p}.native.${{table}}\"")),
        ),
        pipeline(
            "kafka-debezium",
            "dg-dbz",
            "demo.orders",
            sink("k", &format!("topic: {p}.dbz, envelope: debezium, key: \"cust-${{after.customer_id}}\"")),
        ),
        pipeline("kafka-ce", "dg-ce", "demo.orders", sink("k", &format!("topic: {p}.ce, envelope: cloudevents"))),
    ]
    .join("---\n");
    let cfg = write(dir.path(), "pipelines.yaml", &text);
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
fn kafka_outage_holds_the_checkpoint_and_loses_nothing() {
    let (_lock, brokers) = kafka();
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("outage");
    const N: u64 = 60_000;
    let cfg = write(
        dir.path(),
        "p.yaml",
        &format!(
            "apiVersion: deltaforge/v1\nkind: Pipeline\nmetadata: {{ name: kafka-outage }}\nspec:\n  source:\n    type: datagen\n    config: {{ id: dg-kout, rate: 1500, count: {N} }}\n  sinks:\n    - type: kafka\n      config: {{ id: k, brokers: \"{brokers}\", topic: {topic}, retry_max_ms: 1000 }}\n  batch: {{ max_events: 500, max_ms: 20 }}\n"
        ),
    );
    let db = dir.path().join("df.db");
    let log = dir.path().join("df.log");
    let mut df = Deltaforge::start(
        Path::new(BIN),
        &["run", "--config", cfg.to_str().unwrap(), "--storage-path", db.to_str().unwrap()],
        &log,
        &[],
    );
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

    let msgs = consume(&brokers, &[&topic], false, N as usize, Duration::from_secs(60));
    let counts = id_counts(&msgs, |v| v["after"]["id"].as_u64().unwrap());
    let missing: Vec<u64> = (1..=N).filter(|id| !counts.contains_key(id)).take(10).collect();
    assert!(missing.is_empty(), "events missing after the outage, e.g. {missing:?}");
    assert_eq!(counts.len() as u64, N, "unexpected ids");
    let dups: usize = counts.values().map(|c| c - 1).sum();
    eprintln!("outage: {} messages for {N} events, {dups} duplicates (at-least-once)", msgs.len());
}

#[test]
fn kafka_exactly_once_survives_kill_9() {
    let (_lock, brokers) = kafka();
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("eos");
    const N: u64 = 30_000;
    let cfg = write(
        dir.path(),
        "p.yaml",
        &format!(
            "apiVersion: deltaforge/v1\nkind: Pipeline\nmetadata: {{ name: {topic} }}\nspec:\n  source:\n    type: datagen\n    config: {{ id: dg-keos, rows_per_tx: 3, rate: 3000, count: {N} }}\n  sinks:\n    - type: kafka\n      config: {{ id: k, brokers: \"{brokers}\", topic: {topic}, exactly_once: true }}\n  batch: {{ max_events: 300, max_ms: 30 }}\n"
        ),
    );
    let db = dir.path().join("df.db");
    let log = dir.path().join("df.log");
    let args = ["run", "--config", cfg.to_str().unwrap(), "--storage-path", db.to_str().unwrap()];
    let mut rng = Rng::from_env();
    let mut kills = Vec::new();
    for round in 0..4 {
        let mut df = Deltaforge::start(Path::new(BIN), &args, &log, &[]);
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
    assert!(delete_sqlite_checkpoint(&db, "dg-keos"));
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
    let (_lock, brokers) = kafka();
    let dir = tempfile::tempdir().unwrap();
    let p = unique("policy");
    let pipeline = |name: &str, policy: &str| {
        format!(
            "apiVersion: deltaforge/v1\nkind: Pipeline\nmetadata: {{ name: {name} }}\nspec:\n  source:\n    type: datagen\n    config: {{ id: {name}, rate: 2000 }}\n  sinks:\n    - type: kafka\n      config: {{ id: k, brokers: \"{brokers}\", topic: {p}.{name}, required: true }}\n    - type: file\n      config: {{ id: audit-{name}, path: {file}, required: false, max_attempts: 2, retry_initial_ms: 20, retry_max_ms: 100 }}\n  batch: {{ max_events: 200, max_ms: 20 }}\n  commit_policy: {policy}\n",
            file = dir.path().join(format!("{name}.jsonl")).display()
        )
    };
    let cfg = write(
        dir.path(),
        "p.yaml",
        &[pipeline("kpol-required", "required"), pipeline("kpol-all", "all")].join("---\n"),
    );
    let flag = dir.path().join("audit.down");
    std::fs::write(&flag, b"down").unwrap();
    let fp = format!("sink:audit-kpol-required={f},sink:audit-kpol-all={f}", f = flag.display());
    let db = dir.path().join("df.db");
    let log = dir.path().join("df.log");
    let mut df = Deltaforge::start(
        Path::new(BIN),
        &["run", "--config", cfg.to_str().unwrap(), "--storage-path", db.to_str().unwrap()],
        &log,
        &[("DELTAFORGE_FAILPOINTS", &fp)],
    );
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
    let (_lock, brokers) = kafka();
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("fence");
    let cfg = |name: &str| {
        write(
            dir.path(),
            &format!("{name}.yaml"),
            &format!(
                "apiVersion: deltaforge/v1\nkind: Pipeline\nmetadata: {{ name: {name} }}\nspec:\n  source:\n    type: datagen\n    config: {{ id: {name}, rate: 1000 }}\n  sinks:\n    - type: kafka\n      config: {{ id: k, brokers: \"{brokers}\", topic: {topic}, exactly_once: true, transactional_id: {topic}-shared }}\n  batch: {{ max_events: 100, max_ms: 20 }}\n"
            ),
        )
    };
    let (a_cfg, b_cfg) = (cfg("fence-a"), cfg("fence-b"));
    let start = |c: &Path, name: &str| {
        let db = dir.path().join(format!("{name}.db"));
        let log = dir.path().join(format!("{name}.log"));
        let df = Deltaforge::start(
            Path::new(BIN),
            &["run", "--config", c.to_str().unwrap(), "--storage-path", db.to_str().unwrap()],
            &log,
            &[],
        );
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
