//! NATS JetStream sink against the real server (scripts/services/nats.sh),
//! with the real binary: `datagen` → `nats`, read back message by message
//! through a JetStream client.
//!
//! The tests share one server and one of them stops it, so they are
//! serialised with a static mutex. Each test uses its own stream.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use deltaforge_source_datagen::row_for;
use deltaforge_testkit::{service, service_action, sqlite_checkpoint, unique_suffix, wait_for, Deltaforge};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_deltaforge");
static SERVER: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    SERVER.lock().unwrap_or_else(|p| p.into_inner())
}

fn unique(tag: &str) -> String {
    format!("rnh{tag}{}", unique_suffix())
}

fn write_config(dir: &Path, src: &str, url: &str, name: &str, source_extra: &str, sink_extra: &str) -> PathBuf {
    let yaml = r#"apiVersion: deltaforge/v1
kind: Pipeline
metadata: { name: rnh-nats, tenant: acme }
spec:
  source:
    type: datagen
    config: { id: SRC, tables: [demo.orders, demo.items], rows_per_tx: 3SOURCE_EXTRA }
  sinks:
    - type: nats
      config: { id: js, url: "URL", subject: "NAME.${db}.${table}", stream: "NAME"SINK_EXTRA }
  batch: { max_events: 200, max_ms: 20 }
"#
    .replace("SRC", src)
    .replace("URL", url)
    .replace("NAME", name)
    .replace("SOURCE_EXTRA", source_extra)
    .replace("SINK_EXTRA", sink_extra);
    let path = dir.join("pipeline.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

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

fn start(cfg: &Path, db: &Path, log: &Path) -> Deltaforge {
    Deltaforge::start(
        Path::new(BIN),
        &["run", "--config", cfg.to_str().unwrap(), "--storage-path", db.to_str().unwrap()],
        log,
        &[],
    )
}

/// One stored message: subject, `Nats-Msg-Id`, `key` header, payload.
struct Stored {
    subject: String,
    msg_id: String,
    key: String,
    payload: Value,
}

/// Reads every message of a stream with a real JetStream client.
fn read_stream(url: &str, name: &str) -> Vec<Stored> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let client = async_nats::connect(url).await.unwrap();
        let js = jetstream::new(client);
        let mut stream = js.get_stream(name).await.unwrap();
        let state = stream.info().await.unwrap().state.clone();
        let mut out = Vec::new();
        if state.messages == 0 {
            return out;
        }
        for s in state.first_sequence..=state.last_sequence {
            let m = stream.get_raw_message(s).await.unwrap();
            let h = |k: &str| m.headers.get(k).map(|v| v.as_str().to_string()).unwrap_or_default();
            out.push(Stored {
                subject: m.subject.to_string(),
                msg_id: h("Nats-Msg-Id"),
                key: h("key"),
                payload: serde_json::from_slice(&m.payload).unwrap(),
            });
        }
        out
    })
}

fn delete_stream(url: &str, name: &str) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let js = jetstream::new(async_nats::connect(url).await.unwrap());
        let _ = js.delete_stream(name).await;
    });
}

#[test]
fn nats_delivers_every_event_once_with_headers_and_routing_and_dedups_replays() {
    let _g = lock();
    let url = service("nats");
    let dir = tempfile::tempdir().unwrap();
    let name = unique("D");
    let src = format!("{name}-src");
    const N: u64 = 2000;
    let cfg = write_config(dir.path(), &src, &url, &name, &format!(", count: {N}"), ", create_stream: true");
    let db = dir.path().join("df.db");
    let log = dir.path().join("df.log");
    let mut df = start(&cfg, &db, &log);
    assert_eq!(df.wait_exit(Duration::from_secs(90)), Some(0), "{}", df.log_text());
    assert_eq!(seq(&db, &src), N);

    let check = |msgs: &[Stored]| {
        assert_eq!(msgs.len() as u64, N, "messages in the stream");
        let mut last_per_table = BTreeMap::new();
        for (i, m) in msgs.iter().enumerate() {
            let id = m.payload["after"]["id"].as_u64().unwrap();
            assert_eq!(id, i as u64 + 1, "stream order");
            let table = table_of(id);
            assert_eq!(m.subject, format!("{name}.demo.{table}"), "subject of event {id}");
            assert_eq!(m.msg_id, expected_key(&src, id, N), "Nats-Msg-Id of event {id}");
            assert_eq!(m.key, format!(r#"{{"id":{id}}}"#));
            assert_eq!(m.payload["id"], m.msg_id.as_str());
            assert_eq!(m.payload["op"], "c");
            assert_eq!(m.payload["after"], row_for(id));
            assert_eq!(m.payload["source"]["table"], table);
            assert_eq!(m.payload["source"]["tenant"], "acme");
            last_per_table.insert(table, id);
        }
        assert_eq!(last_per_table["orders"], N);
        assert_eq!(last_per_table["items"], N - 1);
    };
    check(&read_stream(&url, &name));

    // Replay everything (checkpoint deleted): JetStream drops the re-published
    // events by their Nats-Msg-Id, the stream still holds each event once.
    std::fs::remove_file(&db).unwrap();
    let mut df = start(&cfg, &db, &log);
    assert_eq!(df.wait_exit(Duration::from_secs(90)), Some(0), "{}", df.log_text());
    assert_eq!(seq(&db, &src), N);
    check(&read_stream(&url, &name));
    delete_stream(&url, &name);
}

#[test]
fn nats_cloudevents_envelope() {
    let _g = lock();
    let url = service("nats");
    let dir = tempfile::tempdir().unwrap();
    let name = unique("C");
    let src = format!("{name}-src");
    const N: u64 = 300;
    let cfg = write_config(
        dir.path(),
        &src,
        &url,
        &name,
        &format!(", count: {N}"),
        ", create_stream: true, envelope: cloudevents",
    );
    let db = dir.path().join("df.db");
    let mut df = start(&cfg, &db, &dir.path().join("df.log"));
    assert_eq!(df.wait_exit(Duration::from_secs(60)), Some(0), "{}", df.log_text());
    let msgs = read_stream(&url, &name);
    assert_eq!(msgs.len() as u64, N);
    for (i, m) in msgs.iter().enumerate() {
        let id = i as u64 + 1;
        let ce = &m.payload;
        assert_eq!(ce["specversion"], "1.0");
        assert_eq!(ce["id"], expected_key(&src, id, N));
        assert_eq!(ce["id"], m.msg_id.as_str());
        assert_eq!(ce["source"], "/deltaforge/acme/rnh-nats");
        assert_eq!(ce["type"], "io.deltaforge.change.created");
        assert_eq!(ce["subject"], format!("demo.{}", table_of(id)));
        assert_eq!(ce["data"]["after"], row_for(id));
        assert!(ce["time"].as_str().unwrap().starts_with("2026-01-01T00:00:00."));
    }
    delete_stream(&url, &name);
}

#[test]
fn nats_missing_stream_stops_the_pipeline_with_a_clear_error() {
    let _g = lock();
    let url = service("nats");
    let dir = tempfile::tempdir().unwrap();
    let name = unique("M");
    let src = format!("{name}-src");
    let cfg = write_config(dir.path(), &src, &url, &name, ", count: 50", "");
    let db = dir.path().join("df.db");
    let mut df = start(&cfg, &db, &dir.path().join("df.log"));
    let code = df.wait_exit(Duration::from_secs(30));
    let log = df.log_text();
    assert!(code.is_some_and(|c| c != 0), "expected a failure, got {code:?}\n{log}");
    assert!(log.contains(&format!("stream \"{name}\" does not exist")), "{log}");
    assert!(log.contains("create_stream: true"), "{log}");
    assert_eq!(seq(&db, &src), 0, "nothing may be checkpointed");
}

#[test]
fn nats_subject_outside_the_stream_is_a_clear_error() {
    let _g = lock();
    let url = service("nats");
    let dir = tempfile::tempdir().unwrap();
    let name = unique("U");
    let src = format!("{name}-src");
    // The stream is created bound to other subjects than the ones published.
    let cfg = write_config(
        dir.path(),
        &src,
        &url,
        &name,
        ", count: 50",
        ", create_stream: true, subjects: [\"elsewhere.>\"]",
    );
    let db = dir.path().join("df.db");
    let mut df = start(&cfg, &db, &dir.path().join("df.log"));
    let code = df.wait_exit(Duration::from_secs(30));
    let log = df.log_text();
    delete_stream(&url, &name);
    assert!(code.is_some_and(|c| c != 0), "expected a failure, got {code:?}\n{log}");
    assert!(log.contains("does not capture this subject"), "{log}");
    assert!(log.contains(&format!("{name}.demo.")), "{log}");
    assert_eq!(seq(&db, &src), 0, "nothing may be checkpointed");
}

#[test]
fn nats_outage_holds_the_checkpoint_and_loses_nothing() {
    let _g = lock();
    let url = service("nats");
    let dir = tempfile::tempdir().unwrap();
    let name = unique("O");
    let src = format!("{name}-src");
    let cfg = write_config(
        dir.path(),
        &src,
        &url,
        &name,
        ", rate: 500",
        ", create_stream: true, ack_timeout_ms: 2000, retry_max_ms: 1000",
    );
    let db = dir.path().join("df.db");
    let mut df = start(&cfg, &db, &dir.path().join("df.log"));
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
    for m in read_stream(&url, &name) {
        let id = m.payload["after"]["id"].as_u64().unwrap();
        assert_eq!(m.subject, format!("{name}.demo.{}", table_of(id)));
        assert_eq!(m.msg_id, expected_key(&src, id, 0));
        *counts.entry(id).or_default() += 1;
    }
    delete_stream(&url, &name);
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
