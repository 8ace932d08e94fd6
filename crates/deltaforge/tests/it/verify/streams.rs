//! `verify` of the stream sinks against real servers and the real binary:
//! a PostgreSQL and a MariaDB source into Kafka (Debezium envelope), Redis
//! (native envelope) and NATS JetStream (CloudEvents). A writer runs while
//! the pipeline is killed with `kill -9` three times; `verify` must report
//! equal (exit 0) while the writer still writes. Then one fault is
//! injected into the sink while the pipeline runs and must be found with
//! its key: a fixture row's Redis stream entry deleted with `XDEL` and its
//! JetStream message deleted (both: missing, exit 1); a fixture record
//! produced again into the Kafka topic (a duplicate delivery of its id,
//! counted exactly).

use std::sync::atomic::Ordering;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use serde_json::{json, Value};

use super::{report_summary, verify, writer_under_kill_9, Running, Source, DUPLICATED, MISSING};
use crate::support::sinks::{kafka_consume, redis_conn};
use crate::support::{
    mariadb_command, mariadb_sql, pg_command, pg_sql, service, storage, unique_suffix, wait_for, Pipeline, RunArgs,
};

/// A scenario's source: the pipeline with it, the handle, and cleanup.
pub(super) struct Setup {
    pub(super) pipeline: Pipeline,
    pub(super) src: Source,
    /// `db` and `table` of the events (`${db}`/`${table}` in templates).
    pub(super) db: String,
    pub(super) table: String,
    pub(super) cleanup: Box<dyn FnOnce()>,
}

pub(super) fn pg_setup(id: &str, _dir: &std::path::Path) -> Setup {
    let url = service("postgres");
    let s = unique_suffix();
    let (table, slot) = (format!("verify_{s}"), format!("verify_{s}"));
    pg_sql(&url, &format!("CREATE TABLE {table} (id bigint PRIMARY KEY, v int NOT NULL, pad text)"));
    let pipeline = Pipeline::new(id).postgres_table_source(id, &url, &table, &slot);
    let (u, u2, t) = (url.clone(), url.clone(), table.clone());
    let src = Source {
        sql: Box::new(move |sql| {
            pg_sql(&u, sql);
        }),
        client: Box::new(move || (pg_command(&u2), String::new())),
        table: table.clone(),
        event_table: format!("public.{table}"),
        ready: Box::new(|df| df.wait_pg_streaming()),
    };
    let cleanup = Box::new(move || {
        let _ = pg_sql(
            &url,
            &format!("DROP TABLE {t}; SELECT pg_drop_replication_slot('{slot}'); DROP PUBLICATION IF EXISTS {slot}"),
        );
    });
    Setup { pipeline, src, db: "public".into(), table, cleanup }
}

pub(super) fn mariadb_setup(id: &str, dir: &std::path::Path) -> Setup {
    let url = service("mariadb");
    let db = format!("dfverify_{}", unique_suffix());
    mariadb_sql(
        &url,
        &format!("CREATE DATABASE {db}; CREATE TABLE {db}.t (id BIGINT PRIMARY KEY, v INT NOT NULL, pad VARCHAR(40)) ENGINE=InnoDB"),
    );
    let pipeline = Pipeline::new(id)
        .source("mysql", json!({ "id": id, "dsn": url, "tables": [format!("{db}.t")], "heartbeat_secs": 1 }));
    let store = dir.join("state/df.db");
    let (u, u2, d, sid) = (url.clone(), url.clone(), db.clone(), id.to_string());
    let src = Source {
        sql: Box::new(move |sql| {
            mariadb_sql(&u, sql);
        }),
        client: Box::new(move || (mariadb_command(&u2), format!("USE {d};\n"))),
        table: format!("{db}.t"),
        event_table: format!("{db}.t"),
        ready: Box::new(move |df| {
            wait_for(Duration::from_secs(30), || storage::checkpoint(&store, &sid))
                .unwrap_or_else(|| panic!("no checkpoint\n{}", df.log_text()));
        }),
    };
    let d = db.clone();
    Setup {
        pipeline,
        src,
        db,
        table: "t".into(),
        cleanup: Box::new(move || {
            mariadb_sql(&url, &format!("DROP DATABASE {d}"));
        }),
    }
}

/// Checks `verify`'s exit code and report after a fault.
type ReportCheck = Box<dyn FnOnce(i32, &Value)>;

/// One stream sink under test.
trait StreamSink {
    /// The sink's spec (`type`, config) for events of `db`.`table`.
    fn spec(&self, db: &str, table: &str) -> (&'static str, Value);
    /// Records the sink holds (progress).
    fn count(&self) -> u64;
    /// Injects the fault while the pipeline runs; returns the check of the
    /// report that follows.
    fn inject(&self) -> ReportCheck;
}

/// The row id of a decoded record (native, CloudEvents `data`, Debezium).
fn record_row_id(v: &Value) -> Option<i64> {
    let v = if v.get("specversion").is_some() { &v["data"] } else { v };
    v["after"]["id"].as_i64().or_else(|| v["before"]["id"].as_i64())
}

/// Expects exactly `MISSING` to be missing and nothing else to differ.
fn expect_missing(event_table: String) -> ReportCheck {
    Box::new(move |code, report| {
        assert_eq!(code, 1, "{report:#}");
        let missing: Vec<(&str, &str)> = report["missing"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["table"].as_str().unwrap(), r["key"].as_str().unwrap()))
            .collect();
        assert_eq!(missing, vec![(event_table.as_str(), format!("[{MISSING}]").as_str())], "{report:#}");
        assert_eq!(report["extra"], json!([]), "{report:#}");
        assert_eq!(report["differing"], json!([]), "{report:#}");
    })
}

/// Kafka, Debezium envelope, one topic per table.
struct Kafka {
    brokers: String,
    topic: String,
}

impl StreamSink for Kafka {
    fn spec(&self, _db: &str, _table: &str) -> (&'static str, Value) {
        ("kafka", json!({ "id": "out", "brokers": self.brokers, "topic": self.topic, "envelope": "debezium" }))
    }

    fn count(&self) -> u64 {
        let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &self.brokers).create().expect("consumer");
        let Ok(md) = c.fetch_metadata(Some(&self.topic), Duration::from_secs(10)) else { return 0 };
        md.topics()
            .iter()
            .flat_map(|t| t.partitions())
            .filter_map(|p| c.fetch_watermarks(&self.topic, p.id(), Duration::from_secs(10)).ok())
            .map(|(_, high)| high as u64)
            .sum()
    }

    fn inject(&self) -> ReportCheck {
        let msgs = kafka_consume(&self.brokers, &[&self.topic], false, 1, Duration::from_secs(30));
        let fixture: Vec<_> =
            msgs.iter().filter(|m| m.value.as_ref().and_then(record_row_id) == Some(DUPLICATED)).collect();
        let first = (*fixture.first().expect("the duplicated fixture row was delivered")).clone();
        let id = first.id_header.clone().expect("the kafka sink sends the `id` header");
        let copies = msgs.iter().filter(|m| m.id_header.as_deref() == Some(id.as_str())).count() as u64 + 3;
        let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", &self.brokers).create().unwrap();
        let payload = first.value.as_ref().unwrap().to_string();
        for _ in 0..3 {
            let headers = rdkafka::message::OwnedHeaders::new()
                .insert(rdkafka::message::Header { key: "id", value: Some(id.as_str()) });
            let mut record = BaseRecord::to(&self.topic).payload(&payload).headers(headers);
            if let Some(k) = &first.key {
                record = record.key(k);
            }
            producer.send(record).map_err(|(e, _)| e).expect("producing the duplicate");
        }
        producer.flush(Duration::from_secs(10)).expect("flushing the duplicates");
        Box::new(move |code, report| {
            assert_eq!(code, 0, "a duplicate delivery is not a difference: {report:#}");
            let listed = report["deliveries"]["worst_duplicates"].as_array().unwrap();
            assert!(listed.contains(&json!([id, copies])), "{id} delivered {copies} times: {report:#}");
            assert!(report["deliveries"]["duplicate_events"].as_u64().unwrap() >= 3, "{report:#}");
        })
    }
}

/// Redis Streams, native envelope.
struct Redis {
    uri: String,
    stream: String,
    event_table: String,
}

impl StreamSink for Redis {
    fn spec(&self, _db: &str, _table: &str) -> (&'static str, Value) {
        ("redis", json!({ "id": "out", "uri": self.uri, "stream": self.stream }))
    }

    fn count(&self) -> u64 {
        redis::cmd("XLEN").arg(&self.stream).query(&mut redis_conn(&self.uri)).unwrap()
    }

    fn inject(&self) -> ReportCheck {
        let mut c = redis_conn(&self.uri);
        let entries: Vec<(String, Vec<String>)> =
            redis::cmd("XRANGE").arg(&self.stream).arg("-").arg("+").query(&mut c).unwrap();
        let mut deleted = 0;
        for (entry, kv) in entries {
            let value = kv.chunks(2).find(|p| p[0] == "value").map(|p| p[1].clone()).unwrap_or_default();
            if serde_json::from_str::<Value>(&value).ok().as_ref().and_then(record_row_id) == Some(MISSING) {
                let n: u64 = redis::cmd("XDEL").arg(&self.stream).arg(&entry).query(&mut c).unwrap();
                deleted += n;
            }
        }
        assert!(deleted >= 1, "the fixture row's entry was delivered");
        expect_missing(self.event_table.clone())
    }
}

/// NATS JetStream, CloudEvents envelope.
struct Nats {
    url: String,
    stream: String,
    event_table: String,
}

impl Nats {
    fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
    }
}

impl StreamSink for Nats {
    fn spec(&self, _db: &str, _table: &str) -> (&'static str, Value) {
        let subject = format!("{}.${{db}}.${{table}}", self.stream);
        (
            "nats",
            json!({ "id": "out", "url": self.url, "subject": subject, "stream": self.stream,
            "create_stream": true, "envelope": "cloudevents" }),
        )
    }

    fn count(&self) -> u64 {
        Self::block_on(async {
            let js = async_nats::jetstream::new(async_nats::connect(&self.url).await.unwrap());
            match js.get_stream(&self.stream).await {
                Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
                Err(_) => 0,
            }
        })
    }

    fn inject(&self) -> ReportCheck {
        let deleted = Self::block_on(async {
            let js = async_nats::jetstream::new(async_nats::connect(&self.url).await.unwrap());
            let mut stream = js.get_stream(&self.stream).await.expect("the stream exists");
            let state = stream.info().await.unwrap().state.clone();
            let mut deleted = 0;
            for seq in state.first_sequence..=state.last_sequence {
                let Ok(m) = stream.get_raw_message(seq).await else { continue };
                if serde_json::from_slice::<Value>(&m.payload).ok().as_ref().and_then(record_row_id) == Some(MISSING) {
                    stream.delete_message(seq).await.expect("deleting the fixture's message");
                    deleted += 1;
                }
            }
            deleted
        });
        assert!(deleted >= 1, "the fixture row's message was delivered");
        expect_missing(self.event_table.clone())
    }
}

/// The scenario: writer, `kill -9` ×3, equal; then the sink's fault, found.
fn scenario(setup: Setup, sink: &dyn StreamSink, name: &str, dir: &std::path::Path) {
    let cfg = dir.join("pipeline.yaml");
    let (kind, config) = sink.spec(&setup.db, &setup.table);
    setup.pipeline.processor(super::drop_fixture_deletes()).sink(kind, config).batch(200, 20).write(&cfg);
    let src = setup.src;
    let db = dir.join("state/df.db");
    let log = dir.join("df.log");
    let args = RunArgs::new(&cfg, &db);
    let Running { mut df, stop, writer } = writer_under_kill_9(&src, &args, &log, &|| sink.count());

    let (code, report, took) = verify(&cfg, &db, name, &[]);
    eprintln!("verify while writing: exit {code} in {took:?}: {}", report_summary(&report));
    assert_eq!(code, 0, "verify must find the sink equal while the writer writes: {report:#}");
    assert_eq!(report["equal"], true);
    assert!(report["rows_compared"].as_u64().unwrap() >= 6, "{report:#}");

    let check = sink.inject();
    let (code, report, took) = verify(&cfg, &db, name, &[]);
    eprintln!("verify with the fault: exit {code} in {took:?}: {}", report_summary(&report));
    check(code, &report);

    df.terminate();
    assert_eq!(df.wait_exit(Duration::from_secs(30)), Some(0), "{}", df.log_text());
    stop.store(true, Ordering::Relaxed);
    let txs = writer.join().expect("writer");
    assert!(txs > 50, "the writer wrote too little: {txs}");
    (setup.cleanup)();
}

fn kafka(s: &Setup) -> Kafka {
    Kafka { brokers: service("kafka"), topic: format!("verify.{}.{}.{}", unique_suffix(), s.db, s.table) }
}

fn redis_sink(s: &Setup) -> Redis {
    Redis {
        uri: service("redis"),
        stream: format!("verify.{}.{}.{}", unique_suffix(), s.db, s.table),
        event_table: s.src.event_table.clone(),
    }
}

fn nats(s: &Setup) -> Nats {
    Nats { url: service("nats"), stream: format!("verify_{}", unique_suffix()), event_table: s.src.event_table.clone() }
}

macro_rules! stream_test {
    ($name:ident, $setup:ident, $sink:ident) => {
        #[test]
        fn $name() {
            let dir = tempfile::tempdir().unwrap();
            let id = format!("vs-{}", unique_suffix().replace('_', "-"));
            let setup = $setup(&id, dir.path());
            let sink = $sink(&setup);
            scenario(setup, &sink, &id, dir.path());
        }
    };
}

stream_test!(pg_kafka_debezium_equal_under_kill_9_and_a_produced_duplicate_counted, pg_setup, kafka);
stream_test!(mariadb_kafka_debezium_equal_under_kill_9_and_a_produced_duplicate_counted, mariadb_setup, kafka);
stream_test!(pg_redis_equal_under_kill_9_and_an_xdel_entry_found_missing, pg_setup, redis_sink);
stream_test!(mariadb_redis_equal_under_kill_9_and_an_xdel_entry_found_missing, mariadb_setup, redis_sink);
stream_test!(pg_nats_equal_under_kill_9_and_a_deleted_message_found_missing, pg_setup, nats);
stream_test!(mariadb_nats_equal_under_kill_9_and_a_deleted_message_found_missing, mariadb_setup, nats);
