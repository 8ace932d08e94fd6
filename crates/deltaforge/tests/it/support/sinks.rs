//! Reading back what each sink wrote, one helper per sink: the file sink's
//! JSON Lines, Kafka topics (rdkafka consumer), Redis streams (XRANGE),
//! NATS JetStream streams, PostgreSQL tables (the table sinks). (The HTTP sink's recorder, used by the `it`
//! binary only, is in `http_recorder.rs`.)

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Headers;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::Value;

pub use deltaforge_testkit::read_jsonl;

/// File sink: lines of the file, counted without parsing (0 when missing).
#[allow(dead_code, reason = "used by the `it` binary only")]
pub fn line_count(path: &Path) -> usize {
    std::fs::read(path).map(|b| b.iter().filter(|c| **c == b'\n').count()).unwrap_or(0)
}

/// One consumed Kafka message.
#[derive(Debug, Clone)]
#[allow(dead_code, reason = "the `disruptive` binary reads the value only")]
pub struct KafkaMsg {
    /// Its topic.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its key as text.
    pub key: Option<String>,
    /// Its `id` header, when present.
    pub id_header: Option<String>,
    /// Its value as JSON (`None`: a tombstone).
    pub value: Option<Value>,
}

/// Kafka: reads `topics` from the beginning until at least `expect`
/// messages came and every partition reached its end (so duplicates are
/// seen too), or `timeout` passes. `read_committed` sets the isolation
/// level.
pub fn kafka_consume(
    brokers: &str,
    topics: &[&str],
    read_committed: bool,
    expect: usize,
    timeout: Duration,
) -> Vec<KafkaMsg> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", super::unique("reader"))
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
                let id_header = m
                    .headers()
                    .and_then(|h| h.iter().find(|h| h.key == "id"))
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8(v.to_vec()).unwrap());
                out.push(KafkaMsg {
                    topic: m.topic().to_string(),
                    partition: m.partition(),
                    key: m.key().map(|k| String::from_utf8(k.to_vec()).unwrap()),
                    id_header,
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

/// Kafka: how often each id (`id(value)`) occurs among the messages with a value.
pub fn kafka_id_counts(msgs: &[KafkaMsg], id: impl Fn(&Value) -> u64) -> std::collections::BTreeMap<u64, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for m in msgs {
        if let Some(v) = &m.value {
            *counts.entry(id(v)).or_default() += 1;
        }
    }
    counts
}

/// Redis: a connection to `uri`.
pub fn redis_conn(uri: &str) -> redis::Connection {
    redis::Client::open(uri).unwrap().get_connection().unwrap()
}

/// Redis: every entry of `stream` (XRANGE - +), as its field map.
pub fn redis_entries(uri: &str, stream: &str) -> Vec<HashMap<String, String>> {
    let mut c = redis_conn(uri);
    let raw: Vec<(String, Vec<String>)> = redis::cmd("XRANGE").arg(stream).arg("-").arg("+").query(&mut c).unwrap();
    raw.into_iter().map(|(_, kv)| kv.chunks(2).map(|p| (p[0].clone(), p[1].clone())).collect()).collect()
}

/// Redis: deletes `stream`.
pub fn redis_delete(uri: &str, stream: &str) {
    let _: () = redis::cmd("DEL").arg(stream).query(&mut redis_conn(uri)).unwrap();
}

/// One message stored in a NATS JetStream stream.
#[derive(Debug, Clone)]
pub struct NatsMsg {
    /// Its subject.
    pub subject: String,
    /// Its headers.
    pub headers: async_nats::HeaderMap,
    /// Its payload as JSON.
    pub payload: Value,
}

impl NatsMsg {
    /// The value of header `name` ("" when absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(|v| v.as_str()).unwrap_or("")
    }
}

/// NATS: every message of the JetStream stream `name`, read with a real
/// JetStream client.
///
/// # Panics
/// If the stream does not exist.
pub fn nats_messages(url: &str, name: &str) -> Vec<NatsMsg> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
        let mut stream = js.get_stream(name).await.expect("the stream exists");
        let state = stream.info().await.unwrap().state.clone();
        let mut out = Vec::new();
        if state.messages == 0 {
            return out;
        }
        for s in state.first_sequence..=state.last_sequence {
            let m = stream.get_raw_message(s).await.unwrap();
            out.push(NatsMsg {
                subject: m.subject.to_string(),
                headers: m.headers.clone(),
                payload: serde_json::from_slice(&m.payload).unwrap(),
            });
        }
        out
    })
}

/// NATS: deletes the JetStream stream `name` (absent: nothing happens).
pub fn nats_delete_stream(url: &str, name: &str) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
        let _ = js.delete_stream(name).await;
    });
}

/// PostgreSQL table (source or a table sink's target): every row as
/// `row_to_json(t)::jsonb` text (`json` normalised like `jsonb`), ordered
/// by `order`, so a source and a target table compare row by row.
#[allow(dead_code, reason = "used by the `it` binary only")]
pub fn pg_table_rows(url: &str, table: &str, order: &str) -> Vec<String> {
    deltaforge_testkit::pg_sql(
        url,
        &format!("SELECT row_to_json(df_row)::jsonb::text FROM {table} df_row ORDER BY {order}"),
    )
    .lines()
    .map(str::to_string)
    .collect()
}

/// A table sink's apply log (`{progress}_log`) of one sink, by batch
/// sequence: `(batch_seq, first_event, last_event, events)`.
#[allow(dead_code, reason = "used by the `it` binary only")]
pub fn pg_apply_log(url: &str, log_table: &str, sink_id: &str) -> Vec<(u64, String, String, u64)> {
    deltaforge_testkit::pg_sql(
        url,
        &format!(
            "SELECT batch_seq, first_event, last_event, events FROM {log_table} WHERE sink_id = '{sink_id}' ORDER BY batch_seq"
        ),
    )
    .lines()
    .map(|l| {
        let f: Vec<&str> = l.split('|').collect();
        (f[0].parse().unwrap(), f[1].to_string(), f[2].to_string(), f[3].parse().unwrap())
    })
    .collect()
}

/// A fresh PostgreSQL database on the server of `url` for a table sink's
/// target; returns its URL. Drop it with [`pg_drop_database`].
#[allow(dead_code, reason = "used by the `it` binary only")]
pub fn pg_create_database(url: &str, name: &str) -> String {
    deltaforge_testkit::pg_sql(url, &format!("CREATE DATABASE {name}"));
    let base = url.rsplit_once('/').map(|(b, _)| b).unwrap_or(url);
    format!("{base}/{name}")
}

/// Drops a database made by [`pg_create_database`] (connections forced off).
#[allow(dead_code, reason = "used by the `it` binary only")]
pub fn pg_drop_database(url: &str, name: &str) {
    let _ = deltaforge_testkit::pg_command(url)
        .arg("-c")
        .arg(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .output();
}

/// MariaDB/MySQL table (a table sink's target): `select` (one expression,
/// e.g. a `CONCAT_WS` of every column in an agreed text form) of every row
/// of `table`, ordered by `order`.
#[allow(dead_code, reason = "used by the `it` binary only")]
pub fn mariadb_table_rows(url: &str, table: &str, select: &str, order: &str) -> Vec<String> {
    let exists = deltaforge_testkit::mariadb_sql(
        url,
        &format!(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE CONCAT(TABLE_SCHEMA, '.', TABLE_NAME) = '{table}'"
        ),
    );
    if exists.trim() != "1" {
        return Vec::new();
    }
    deltaforge_testkit::mariadb_sql(url, &format!("SELECT {select} FROM {table} ORDER BY {order}"))
        .lines()
        .map(str::to_string)
        .collect()
}

/// What the `object_store` sink wrote, as DuckDB reads it back.
#[derive(Debug, Clone)]
#[allow(dead_code, reason = "used by the `it` binary only")]
pub struct Lake {
    /// Every data file, relative to the URL (manifests excluded).
    pub data_files: Vec<String>,
    /// Every manifest, as JSON.
    pub manifests: Vec<Value>,
    /// Per Parquet file: DuckDB's `DESCRIBE` as `(column, type)`.
    pub describe: HashMap<String, Vec<(String, String)>>,
    /// Per Parquet file: its rows in file order (timestamps as epoch
    /// microseconds, decimals as text).
    pub rows: HashMap<String, Vec<serde_json::Map<String, Value>>>,
}

/// Object storage: reads every file under `url` (`file:///dir` or
/// `s3://bucket/prefix` on the S3 server at `endpoint`) with DuckDB, from
/// the venv `scripts/services/s3.sh python` installs (S3 objects are
/// downloaded first with boto3).
#[allow(dead_code, reason = "used by the `it` binary only")]
pub fn read_lake(url: &str, endpoint: &str) -> Lake {
    let python = super::service_python();
    let work = tempfile::tempdir().expect("temp dir");
    let script = work.path().join("read_lake.py");
    std::fs::write(&script, include_str!("read_lake.py")).expect("writing the reader");
    let download = work.path().join("objects");
    let out = std::process::Command::new(&python)
        .arg(&script)
        .args([url, endpoint, download.to_str().unwrap()])
        .output()
        .expect("running the DuckDB reader");
    assert!(out.status.success(), "read_lake.py failed: {}", String::from_utf8_lossy(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("reader output is JSON");
    let strings = |v: &Value| v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect::<Vec<_>>();
    let mut lake = Lake {
        data_files: strings(&doc["data_files"]),
        manifests: doc["manifests"].as_array().unwrap().clone(),
        describe: HashMap::new(),
        rows: HashMap::new(),
    };
    for (file, f) in doc["files"].as_object().unwrap() {
        let describe = f["describe"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| (d[0].as_str().unwrap().to_string(), d[1].as_str().unwrap().to_string()));
        lake.describe.insert(file.clone(), describe.collect());
        let rows = f["rows"].as_array().unwrap().iter().map(|r| r.as_object().unwrap().clone());
        lake.rows.insert(file.clone(), rows.collect());
    }
    lake
}
