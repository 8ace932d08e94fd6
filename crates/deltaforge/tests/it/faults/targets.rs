//! The six cases of the fault matrix: how each starts its pipeline behind
//! a blackholing proxy, produces its load, measures its delivery point and
//! reads back what was delivered (with the readers of `support::sinks`).
//!
//! The sources write to a `file` sink and are fed by a writer inserting one
//! row per transaction; the sinks are fed by a rate-limited `datagen`.
//! Every timeout is left at its default: the defaults must make a 30 s
//! stall show while it lasts (docs/faults.md).

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::fault_proxy::{Fault, FaultProxy};
use serde_json::{json, Value};

use super::driver::{Case, ReadIds, Setup};
use crate::support::http_recorder::HttpRecorder;
use crate::support::sinks::{kafka_consume, nats_delete_stream, nats_messages, redis_delete, redis_entries};
use crate::support::storage::checkpoint_seq;
use crate::support::{
    mariadb_command, mariadb_sql, pg_cleanup, pg_command, pg_sql, read_jsonl, service, unique_suffix, Deltaforge,
    Pipeline, RunArgs,
};

pub mod kafka;

/// Every case, by name.
pub const ALL: &[(&str, Setup)] =
    &[("pg", pg), ("mariadb", mariadb), ("kafka", kafka::case), ("redis", redis), ("nats", nats), ("http", http)];

/// The `host:port` of a server URL (`scheme://[user@]host:port[/...]`).
pub fn host_port(url: &str) -> SocketAddr {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let rest = rest.rsplit_once('@').map(|(_, r)| r).unwrap_or(rest);
    let hp = rest.split(['/', '?']).next().unwrap_or(rest);
    hp.parse().unwrap_or_else(|e| panic!("{hp}: {e}"))
}

/// `url` with its `host:port` replaced by the proxy's.
fn via(url: &str, proxy: &FaultProxy) -> String {
    url.replacen(&host_port(url).to_string(), &proxy.addr().to_string(), 1)
}

/// A proxy to `target` that blackholes from the start.
fn blackholing(target: SocketAddr) -> FaultProxy {
    let proxy = FaultProxy::start(target);
    proxy.set(Fault::Blackhole);
    proxy
}

/// Writes the pipeline and starts the binary with an API and metrics port.
pub fn start(pipeline: &Pipeline, dir: &Path) -> (Deltaforge, String, String, PathBuf) {
    let cfg = pipeline.write(dir.join("pipeline.yaml"));
    let db = dir.join("df.db");
    let (args, api, metrics) = RunArgs::new(&cfg, &db).free_ports();
    (args.start(&dir.join("df.log"), &[]), api, metrics, db)
}

/// `datagen` (200 events/s, 3 rows per transaction) → one sink of `kind`
/// with `config`; `read` returns the ids the
/// target holds once the binary stopped.
pub fn datagen_case(tag: &str, proxy: FaultProxy, kind: &str, config: Value, read: ReadIds) -> Case {
    let dir = tempfile::tempdir().expect("tempdir");
    let name = format!("flt-{tag}-{}", unique_suffix());
    let src = format!("{name}-src");
    let mut config = config;
    config["id"] = json!("out");
    let pipeline = Pipeline::new(&name)
        .source("datagen", json!({ "id": src, "tables": ["demo.orders", "demo.items"], "rows_per_tx": 3, "rate": 200 }))
        .sink(kind, config)
        .batch(100, 20);
    let (df, api, metrics, db) = start(&pipeline, dir.path());
    let started = std::time::Instant::now();
    let point_db = db.clone();
    let point_src = src.clone();
    Case {
        proxy,
        df,
        api,
        metrics,
        pipeline: name,
        point: Box::new(move || checkpoint_seq(&point_db, &point_src)),
        // The rate limiter never runs ahead of 200 events/s since the start.
        head: Box::new(move || (started.elapsed().as_secs_f64() * 200.0) as u64 + 3),
        finish: Some(Box::new(move |df: &mut Deltaforge| {
            df.terminate();
            assert_eq!(df.wait_exit(Duration::from_secs(30)), Some(0), "clean stop\n{}", df.log_text());
            checkpoint_seq(&db, &src)
        })),
        delivered: Some(read),
        reset_in_log: None,
        dir,
    }
}

/// The id of a native-envelope event (`after.id`).
pub fn event_id(v: &Value) -> u64 {
    v["after"]["id"].as_u64().unwrap_or_else(|| panic!("no after.id in {v}"))
}

fn redis() -> Case {
    let uri = service("redis");
    let proxy = blackholing(host_port(&uri));
    let prefix = format!("flt-{}", unique_suffix());
    let config = json!({ "uri": via(&uri, &proxy), "stream": format!("{prefix}.${{db}}.${{table}}") });
    let read = Box::new(move || {
        let mut ids = Vec::new();
        for t in ["orders", "items"] {
            let stream = format!("{prefix}.demo.{t}");
            for e in redis_entries(&uri, &stream) {
                ids.push(event_id(&serde_json::from_str(&e["value"]).expect("JSON value")));
            }
            redis_delete(&uri, &stream);
        }
        ids
    });
    datagen_case("redis", proxy, "redis", config, read)
}

fn nats() -> Case {
    let url = service("nats");
    let proxy = blackholing(host_port(&url));
    let stream = format!("FLT{}", unique_suffix().replace('x', "X"));
    let config = json!({
        "url": via(&url, &proxy), "subject": format!("{stream}.${{db}}.${{table}}"), "stream": stream,
        "create_stream": true,
    });
    let read = Box::new(move || {
        let ids = nats_messages(&url, &stream).iter().map(|m| event_id(&m.payload)).collect();
        nats_delete_stream(&url, &stream);
        ids
    });
    datagen_case("nats", proxy, "nats", config, read)
}

fn http() -> Case {
    let (recorder, base) = HttpRecorder::start();
    let proxy = blackholing(host_port(&base));
    let config = json!({ "url": format!("{}/hook/${{table}}", via(&base, &proxy)) });
    let read = Box::new(move || {
        let mut ids = Vec::new();
        for r in recorder.accepted() {
            for e in r.body.as_array().expect("a JSON array body") {
                ids.push(event_id(e));
            }
        }
        ids
    });
    datagen_case("http", proxy, "http", config, read)
}

/// A writer inserting rows `1, 2, ...` (one per transaction, about 100 a
/// second) through a SQL client fed on stdin until stopped, starting once
/// `ready` returns true; returns how many it inserted. `written` holds the
/// last id sent to the client.
fn writer(
    mut client: std::process::Command,
    table: String,
    stop: Arc<AtomicBool>,
    written: Arc<AtomicU64>,
    ready: impl Fn() -> bool + Send + 'static,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        while !ready() && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut child = client.stdin(Stdio::piped()).stdout(Stdio::null()).spawn().expect("SQL client");
        let mut stdin = child.stdin.take().expect("stdin");
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            written.store(n, Ordering::Relaxed);
            writeln!(stdin, "INSERT INTO {table} (id, v) VALUES ({n}, 'row {n}');").expect("write to the SQL client");
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(stdin);
        assert!(child.wait().expect("SQL client").success(), "the SQL client failed");
        n
    })
}

/// A database source → `file` sink case: the delivery point is the longest
/// run `1..=n` of ids the file holds; the row values are checked too.
fn source_case(
    proxy: FaultProxy,
    pipeline: Pipeline,
    writer: Box<dyn FnOnce(PathBuf, Arc<AtomicU64>) -> std::thread::JoinHandle<u64> + Send>,
    stop: Arc<AtomicBool>,
    cleanup: Box<dyn FnOnce() + Send>,
) -> Case {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out.jsonl");
    let pipeline = pipeline.file_sink("out", &out, Value::Null).batch(100, 20);
    let (df, api, metrics, _db) = start(&pipeline, dir.path());
    let name = pipeline.to_value()["metadata"]["name"].as_str().expect("name").to_string();
    let written = Arc::new(AtomicU64::new(0));
    let handle = writer(dir.path().join("df.log"), written.clone());
    let point_out = out.clone();
    Case {
        proxy,
        df,
        api,
        metrics,
        pipeline: name,
        point: Box::new(move || {
            let mut ids: Vec<u64> = read_jsonl(&point_out).iter().map(event_id).collect();
            ids.sort_unstable();
            ids.dedup();
            ids.iter().enumerate().take_while(|(i, id)| **id == *i as u64 + 1).count() as u64
        }),
        head: Box::new(move || written.load(Ordering::Relaxed)),
        finish: Some(Box::new(move |_df: &mut Deltaforge| {
            stop.store(true, Ordering::Relaxed);
            handle.join().expect("writer")
        })),
        delivered: Some(Box::new(move || {
            let events = read_jsonl(&out);
            for e in &events {
                let id = event_id(e);
                assert_eq!(e["after"]["v"], json!(format!("row {id}")), "row {id} has the wrong value");
            }
            cleanup();
            events.iter().map(event_id).collect()
        })),
        reset_in_log: None,
        dir,
    }
}

fn pg() -> Case {
    let url = service("postgres");
    let proxy = blackholing(host_port(&url));
    let table = format!("flt_{}", unique_suffix());
    // The slot exists before the pipeline first connects, so the rows
    // written while it cannot connect are kept for it.
    pg_sql(
        &url,
        &format!("CREATE TABLE {table} (id bigint PRIMARY KEY, v text); CREATE PUBLICATION {table} FOR TABLE {table}"),
    );
    pg_sql(&url, &format!("SELECT pg_create_logical_replication_slot('{table}', 'pgoutput')"));
    let pipeline = Pipeline::new(table.replace('_', "-")).source(
        "postgres",
        json!({
            "id": format!("{table}-src"), "dsn": via(&url, &proxy), "tables": [format!("public.{table}")],
            "slot": table, "publication": table, "status_interval_secs": 1, "snapshot": { "mode": "never" },
        }),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let (w_url, w_table, w_stop) = (url.clone(), table.clone(), stop.clone());
    source_case(
        proxy,
        pipeline,
        Box::new(move |_log, written| writer(pg_command(&w_url), w_table, w_stop, written, || true)),
        stop,
        Box::new(move || pg_cleanup(&url, &table)),
    )
}

fn mariadb() -> Case {
    let url = service("mariadb");
    let proxy = blackholing(host_port(&url));
    let table = format!("flt_{}", unique_suffix());
    mariadb_sql(&url, &format!("CREATE TABLE {table} (id bigint PRIMARY KEY, v text)"));
    let pipeline = Pipeline::new(table.replace('_', "-")).source(
        "mysql",
        json!({
            "id": format!("{table}-src"), "dsn": via(&url, &proxy), "tables": [format!("deltaforge.{table}")],
            "snapshot": { "mode": "never" },
        }),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let (w_url, w_table, w_stop) = (url.clone(), table.clone(), stop.clone());
    source_case(
        proxy,
        pipeline,
        // Without a checkpoint the source starts at the binlog's end when it
        // first connects: rows are written from then on.
        Box::new(move |log, written| {
            let ready = move || std::fs::read_to_string(&log).unwrap_or_default().contains("streaming the binlog");
            writer(mariadb_command(&w_url), w_table, w_stop, written, ready)
        }),
        stop,
        Box::new(move || {
            mariadb_sql(&url, &format!("DROP TABLE IF EXISTS {table}"));
        }),
    )
}

/// Kafka: ids of every message of `topics`, read through `brokers`, one
/// topic at a time (the reader knows a partition's end by its number only).
pub fn kafka_ids(brokers: &str, topics: &[&str]) -> Vec<u64> {
    topics
        .iter()
        .flat_map(|t| kafka_consume(brokers, &[t], false, 1, Duration::from_secs(30)))
        .filter_map(|m| m.value.as_ref().map(event_id))
        .collect()
}
