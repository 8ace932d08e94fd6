//! HTTP webhook sink with the real binary against a small real HTTP server
//! run inside the test (axum on 127.0.0.1:0) that records every request and
//! can be switched to answer 503 (with `Retry-After`) or 400.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use deltaforge_source_datagen::row_for;
use deltaforge_testkit::{sqlite_checkpoint, wait_for, Deltaforge};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_deltaforge");
const OK: u8 = 0;
const UNAVAILABLE: u8 = 1;
const BAD_REQUEST: u8 = 2;

/// One request the server received.
#[derive(Clone, Debug)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: Value,
    /// Whether it was acknowledged with 2xx.
    accepted: bool,
}

#[derive(Clone, Default)]
struct Hook {
    mode: Arc<AtomicU8>,
    log: Arc<Mutex<Vec<Received>>>,
}

async fn handle(State(hook): State<Hook>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let mode = hook.mode.load(Ordering::SeqCst);
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    hook.log.lock().unwrap().push(Received { path: uri.path().to_string(), headers, body, accepted: mode == OK });
    match mode {
        OK => StatusCode::NO_CONTENT.into_response(),
        UNAVAILABLE => (StatusCode::SERVICE_UNAVAILABLE, [("Retry-After", "1")], "maintenance").into_response(),
        _ => (StatusCode::BAD_REQUEST, "bad schema xyz: field amount must be a number").into_response(),
    }
}

impl Hook {
    /// Serves on 127.0.0.1:0 from a thread of its own; returns the base URL.
    fn start() -> (Hook, String) {
        let hook = Hook::default();
        let app = axum::Router::new().fallback(handle).with_state(hook.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                axum::serve(listener, app).await.unwrap();
            });
        });
        let addr = rx.recv().unwrap();
        (hook, format!("http://{addr}"))
    }

    fn accepted(&self) -> Vec<Received> {
        self.log.lock().unwrap().iter().filter(|r| r.accepted).cloned().collect()
    }
}

fn write_config(dir: &Path, src: &str, url: &str, source_extra: &str, sink_extra: &str) -> PathBuf {
    let yaml = r#"apiVersion: deltaforge/v1
kind: Pipeline
metadata: { name: rnh-http, tenant: acme }
spec:
  source:
    type: datagen
    config: { id: SRC, tables: [demo.orders, demo.items], rows_per_tx: 3SOURCE_EXTRA }
  sinks:
    - type: http
      config: { id: hook, url: "URL", headers: { X-Api-Key: "s3cr3t-api-key" }SINK_EXTRA }
  batch: { max_events: 200, max_ms: 20 }
"#
    .replace("SRC", src)
    .replace("URL", url)
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

fn header<'a>(r: &'a Received, name: &str) -> &'a str {
    r.headers.get(name).map(|v| v.to_str().unwrap()).unwrap_or("")
}

#[test]
fn http_batch_mode_posts_json_arrays_grouped_by_rendered_url() {
    let (hook, base) = Hook::start();
    let dir = tempfile::tempdir().unwrap();
    let src = "rnh-http-batch";
    const N: u64 = 2000;
    let cfg = write_config(dir.path(), src, &format!("{base}/hook/${{table}}"), &format!(", count: {N}"), "");
    let db = dir.path().join("df.db");
    let mut df = start(&cfg, &db, &dir.path().join("df.log"));
    assert_eq!(df.wait_exit(Duration::from_secs(90)), Some(0), "{}", df.log_text());
    assert_eq!(seq(&db, src), N);
    assert!(!df.log_text().contains("s3cr3t-api-key"), "a header value was logged");

    let reqs = hook.accepted();
    let mut ids = Vec::new();
    for r in &reqs {
        assert_eq!(header(r, "x-api-key"), "s3cr3t-api-key");
        assert_eq!(header(r, "content-type"), "application/json");
        let events = r.body.as_array().unwrap_or_else(|| panic!("body is not a JSON array: {}", r.body));
        assert!(!events.is_empty());
        for e in events {
            let id = e["after"]["id"].as_u64().unwrap();
            assert_eq!(r.path, format!("/hook/{}", table_of(id)), "event {id} sent to the wrong URL");
            assert_eq!(e["id"], expected_key(src, id, N));
            assert_eq!(e["after"], row_for(id));
            assert_eq!(e["source"]["table"], table_of(id));
            ids.push(id);
        }
    }
    // Fewer requests than events: batching happened (2 URLs per batch at most).
    assert!(reqs.len() < (N / 10) as usize, "{} requests for {N} events", reqs.len());
    // Per URL, events arrive in order; overall each exactly once.
    for t in ["orders", "items"] {
        let per: Vec<u64> = ids.iter().copied().filter(|id| table_of(*id) == t).collect();
        assert!(per.windows(2).all(|w| w[0] < w[1]), "{t} out of order");
    }
    ids.sort();
    assert_eq!(ids, (1..=N).collect::<Vec<_>>());
}

#[test]
fn http_event_mode_sends_one_cloudevent_per_request_with_idempotency_key() {
    let (hook, base) = Hook::start();
    let dir = tempfile::tempdir().unwrap();
    let src = "rnh-http-event";
    const N: u64 = 300;
    let cfg = write_config(
        dir.path(),
        src,
        &format!("{base}/ce/${{db}}/${{after.status}}"),
        &format!(", count: {N}"),
        ", batch_mode: event, envelope: cloudevents, method: PUT",
    );
    let db = dir.path().join("df.db");
    let mut df = start(&cfg, &db, &dir.path().join("df.log"));
    assert_eq!(df.wait_exit(Duration::from_secs(90)), Some(0), "{}", df.log_text());
    let reqs = hook.accepted();
    assert_eq!(reqs.len() as u64, N);
    for (i, r) in reqs.iter().enumerate() {
        let id = i as u64 + 1;
        let ce = &r.body;
        assert_eq!(ce["specversion"], "1.0");
        assert_eq!(ce["id"], expected_key(src, id, N));
        assert_eq!(header(r, "idempotency-key"), ce["id"].as_str().unwrap());
        assert_eq!(header(r, "content-type"), "application/cloudevents+json");
        assert_eq!(ce["type"], "io.deltaforge.change.created");
        assert_eq!(ce["data"]["after"], row_for(id));
        assert_eq!(r.path, format!("/ce/demo/{}", row_for(id)["status"].as_str().unwrap()));
    }
}

#[test]
fn http_400_stops_the_pipeline_with_the_response_body() {
    let (hook, base) = Hook::start();
    hook.mode.store(BAD_REQUEST, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let src = "rnh-http-400";
    let cfg = write_config(dir.path(), src, &format!("{base}/hook?token=tok-123"), ", count: 30", "");
    let db = dir.path().join("df.db");
    let mut df = start(&cfg, &db, &dir.path().join("df.log"));
    let code = df.wait_exit(Duration::from_secs(30));
    let log = df.log_text();
    assert!(code.is_some_and(|c| c != 0), "expected a failure, got {code:?}\n{log}");
    assert!(log.contains("400"), "{log}");
    assert!(log.contains("bad schema xyz: field amount must be a number"), "{log}");
    assert!(!log.contains("tok-123") && !log.contains("s3cr3t-api-key"), "secret leaked\n{log}");
    assert_eq!(seq(&db, src), 0);
    // Fatal: no retry storm.
    assert_eq!(hook.log.lock().unwrap().len(), 1);
}

#[test]
fn http_503_outage_holds_the_checkpoint_and_loses_nothing() {
    let (hook, base) = Hook::start();
    let dir = tempfile::tempdir().unwrap();
    let src = "rnh-http-outage";
    let cfg = write_config(dir.path(), src, &format!("{base}/hook/${{table}}"), ", rate: 500", ", retry_max_ms: 1000");
    let db = dir.path().join("df.db");
    let mut df = start(&cfg, &db, &dir.path().join("df.log"));
    wait_for(Duration::from_secs(30), || (seq(&db, src) > 500).then_some(()))
        .unwrap_or_else(|| panic!("no progress\n{}", df.log_text()));
    hook.mode.store(UNAVAILABLE, Ordering::SeqCst);
    let down_at = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    let held = seq(&db, src);
    let mut max_during = held;
    while down_at.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(500));
        max_during = max_during.max(seq(&db, src));
    }
    assert_eq!(max_during, held, "checkpoint advanced from {held} to {max_during} during the 503 outage");
    let refused = hook.log.lock().unwrap().iter().filter(|r| !r.accepted).count();
    assert!(refused >= 5, "only {refused} requests during the outage: no retries?");
    hook.mode.store(OK, Ordering::SeqCst);
    wait_for(Duration::from_secs(60), || (seq(&db, src) > held + 2000).then_some(()))
        .unwrap_or_else(|| panic!("no progress after the endpoint recovered\n{}", df.log_text()));
    df.terminate();
    assert_eq!(df.wait_exit(Duration::from_secs(30)), Some(0), "{}", df.log_text());
    let end = seq(&db, src);
    let log = df.log_text();
    assert!(log.contains("503") && log.contains("Retry-After 1s"), "{log}");

    let mut counts: BTreeMap<u64, u32> = BTreeMap::new();
    for r in hook.accepted() {
        for e in r.body.as_array().unwrap() {
            let id = e["after"]["id"].as_u64().unwrap();
            assert_eq!(e["id"], expected_key(src, id, 0));
            *counts.entry(id).or_default() += 1;
        }
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
        "http outage: checkpoint held at {held} for 20 s ({refused} requests refused with 503), final checkpoint {end}, {} distinct events, {duplicates} duplicates",
        counts.len()
    );
}
