//! Reading back what each sink wrote, one helper per sink: the file sink's
//! JSON Lines, Kafka topics (rdkafka consumer), Redis streams (XRANGE),
//! NATS JetStream streams. (The HTTP sink's recorder, used by the `it`
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
