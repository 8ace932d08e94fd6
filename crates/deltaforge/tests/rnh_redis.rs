//! Redis Streams sink against the real Redis (scripts/services/redis.sh),
//! with the real binary: `datagen` → `redis`, read back with XRANGE.
//!
//! The tests share one server and one of them stops it, so they are
//! serialised with a static mutex. Each test uses its own stream names.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use deltaforge_source_datagen::row_for;
use deltaforge_testkit::{service, service_action, sqlite_checkpoint, unique_suffix, wait_for, Deltaforge};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_deltaforge");
static SERVER: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    SERVER.lock().unwrap_or_else(|p| p.into_inner())
}

fn unique(tag: &str) -> String {
    format!("rnh-{tag}-{}", unique_suffix())
}

/// Writes a datagen → redis pipeline; `extra` is appended to the sink config.
fn write_config(dir: &Path, src: &str, uri: &str, prefix: &str, source_extra: &str, sink_extra: &str) -> PathBuf {
    let yaml = r#"apiVersion: deltaforge/v1
kind: Pipeline
metadata: { name: rnh-redis, tenant: acme }
spec:
  source:
    type: datagen
    config: { id: SRC, tables: [demo.orders, demo.items], rows_per_tx: 3SOURCE_EXTRA }
  sinks:
    - type: redis
      config: { id: rd, uri: "URI", stream: "PREFIX.${db}.${table}"SINK_EXTRA }
  batch: { max_events: 200, max_ms: 20 }
"#
    .replace("SRC", src)
    .replace("URI", uri)
    .replace("PREFIX", prefix)
    .replace("SOURCE_EXTRA", source_extra)
    .replace("SINK_EXTRA", sink_extra);
    let path = dir.join("pipeline.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

fn conn(uri: &str) -> redis::Connection {
    redis::Client::open(uri).unwrap().get_connection().unwrap()
}

/// One stream entry: its fields.
type Entry = HashMap<String, String>;

fn xrange(c: &mut redis::Connection, stream: &str) -> Vec<Entry> {
    let raw: Vec<(String, Vec<String>)> = redis::cmd("XRANGE").arg(stream).arg("-").arg("+").query(c).unwrap();
    raw.into_iter().map(|(_, kv)| kv.chunks(2).map(|p| (p[0].clone(), p[1].clone())).collect()).collect()
}

/// The idempotency key datagen gives event `id` with 3 rows per transaction.
fn expected_key(src: &str, id: u64, count: u64) -> String {
    let tx_end = (id.div_ceil(3) * 3).min(if count == 0 { u64::MAX } else { count });
    format!("{src}:{tx_end}:{}", (id - 1) % 3)
}

fn table_of(id: u64) -> &'static str {
    if id.is_multiple_of(2) {
        "orders"
    } else {
        "items"
    }
}

fn seq(db: &Path, src: &str) -> u64 {
    sqlite_checkpoint(db, src).map(|c| c["position"]["seq"].as_u64().unwrap()).unwrap_or(0)
}

fn run_to_end(cfg: &Path, db: &Path, log: &Path) {
    let mut df = Deltaforge::start(
        Path::new(BIN),
        &["run", "--config", cfg.to_str().unwrap(), "--storage-path", db.to_str().unwrap()],
        log,
        &[],
    );
    let code = df.wait_exit(Duration::from_secs(90));
    assert_eq!(code, Some(0), "deltaforge did not finish cleanly\n{}", df.log_text());
}

#[test]
fn redis_delivers_every_event_with_fields_keys_and_routing() {
    let _g = lock();
    let uri = service("redis");
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("rd");
    let src = format!("{prefix}-src");
    const N: u64 = 2000;
    let cfg = write_config(dir.path(), &src, &uri, &prefix, &format!(", count: {N}"), "");
    let db = dir.path().join("df.db");
    run_to_end(&cfg, &db, &dir.path().join("df.log"));
    assert_eq!(seq(&db, &src), N, "final checkpoint");

    let mut c = conn(&uri);
    let mut seen = BTreeMap::new();
    for table in ["orders", "items"] {
        let stream = format!("{prefix}.demo.{table}");
        let entries = xrange(&mut c, &stream);
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
        let _: () = redis::cmd("DEL").arg(&stream).query(&mut c).unwrap();
    }
    assert_eq!(seen.keys().copied().collect::<Vec<_>>(), (1..=N).collect::<Vec<_>>());
}

#[test]
fn redis_debezium_envelope_and_approximate_maxlen() {
    let _g = lock();
    let uri = service("redis");
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("rdz");
    let src = format!("{prefix}-src");
    const N: u64 = 3000;
    let cfg =
        write_config(dir.path(), &src, &uri, &prefix, &format!(", count: {N}"), ", envelope: debezium, maxlen: 200");
    let db = dir.path().join("df.db");
    run_to_end(&cfg, &db, &dir.path().join("df.log"));

    let mut c = conn(&uri);
    for table in ["orders", "items"] {
        let stream = format!("{prefix}.demo.{table}");
        let entries = xrange(&mut c, &stream);
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
        let _: () = redis::cmd("DEL").arg(&stream).query(&mut c).unwrap();
    }
}

#[test]
fn redis_unknown_placeholder_is_rejected_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("p.yaml");
    std::fs::write(
        &cfg,
        r#"apiVersion: deltaforge/v1
kind: Pipeline
metadata: { name: rnh-bad }
spec:
  source: { type: datagen, config: { id: rnh-bad, count: 10 } }
  sinks:
    - type: redis
      config: { id: rd, uri: "redis://:hunter2@127.0.0.1:1", stream: "x.${schema}" }
"#,
    )
    .unwrap();
    let db = dir.path().join("df.db");
    let mut df = Deltaforge::start(
        Path::new(BIN),
        &["run", "--config", cfg.to_str().unwrap(), "--storage-path", db.to_str().unwrap()],
        &dir.path().join("df.log"),
        &[],
    );
    let code = df.wait_exit(Duration::from_secs(30));
    let log = df.log_text();
    assert!(code.is_some_and(|c| c != 0), "expected a config error, got {code:?}\n{log}");
    assert!(log.contains("stream") && log.contains("${schema}"), "{log}");
    assert!(!log.contains("hunter2"), "password leaked\n{log}");
}

#[test]
fn redis_outage_holds_the_checkpoint_and_loses_nothing() {
    let _g = lock();
    let uri = service("redis");
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("rdo");
    let src = format!("{prefix}-src");
    let cfg = write_config(dir.path(), &src, &uri, &prefix, ", rate: 500", ", retry_max_ms: 1000");
    let db = dir.path().join("df.db");
    let log = dir.path().join("df.log");
    let mut df = Deltaforge::start(
        Path::new(BIN),
        &["run", "--config", cfg.to_str().unwrap(), "--storage-path", db.to_str().unwrap()],
        &log,
        &[],
    );
    wait_for(Duration::from_secs(30), || (seq(&db, &src) > 500).then_some(()))
        .unwrap_or_else(|| panic!("no progress\n{}", df.log_text()));

    // The script runs Redis without persistence; for this outage let the
    // SIGTERM shutdown write an RDB snapshot (loaded at restart), as any
    // production Redis used as a CDC target would be configured.
    let mut c = conn(&uri);
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

    let mut c = conn(&uri);
    let mut counts: BTreeMap<u64, u32> = BTreeMap::new();
    for table in ["orders", "items"] {
        let stream = format!("{prefix}.demo.{table}");
        for e in xrange(&mut c, &stream) {
            let v: Value = serde_json::from_str(&e["value"]).unwrap();
            let id = v["after"]["id"].as_u64().unwrap();
            assert_eq!(table_of(id), table);
            assert_eq!(e["id"], expected_key(&src, id, 0));
            *counts.entry(id).or_default() += 1;
        }
        let _: () = redis::cmd("DEL").arg(&stream).query(&mut c).unwrap();
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
