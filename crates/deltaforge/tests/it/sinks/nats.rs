//! NATS JetStream sink against the real server (scripts/services/nats.sh),
//! with the real binary: `datagen` → `nats`, read back message by message
//! through a JetStream client.
//!
//! The outage test (it stops the server) is in the `disruptive` binary.
//! Each test uses its own stream, so they need no lock: they run in
//! parallel with each other and with the rest of the binary.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use deltaforge_source_datagen::row_for;
use serde_json::{json, Value};

use crate::support::sinks::{nats_delete_stream as delete_stream, nats_messages as read_stream, NatsMsg};
use crate::support::spec::merged;
use crate::support::storage::checkpoint_seq as seq;
use crate::support::{
    datagen_key as expected_key, datagen_table as table_of, service, unique_suffix, Deltaforge, Pipeline, RunArgs,
};

fn unique(tag: &str) -> String {
    format!("rnh{tag}{}", unique_suffix())
}

/// Writes a datagen → nats pipeline; `source_extra` and `sink_extra` are
/// added to the source and sink configs.
fn write_config(dir: &Path, src: &str, url: &str, name: &str, source_extra: Value, sink_extra: Value) -> PathBuf {
    Pipeline::new("rnh-nats")
        .tenant("acme")
        .source(
            "datagen",
            merged(json!({ "id": src, "tables": ["demo.orders", "demo.items"], "rows_per_tx": 3 }), source_extra),
        )
        .sink(
            "nats",
            merged(
                json!({ "id": "js", "url": url, "subject": format!("{name}.${{db}}.${{table}}"), "stream": name }),
                sink_extra,
            ),
        )
        .batch(200, 20)
        .write(dir.join("pipeline.yaml"))
}

fn start(cfg: &Path, db: &Path, log: &Path) -> Deltaforge {
    RunArgs::new(cfg, db).start(log, &[])
}

#[test]
fn nats_delivers_every_event_once_with_headers_and_routing_and_dedups_replays() {
    let url = service("nats");
    let dir = tempfile::tempdir().unwrap();
    let name = unique("D");
    let src = format!("{name}-src");
    const N: u64 = 2000;
    let cfg = write_config(dir.path(), &src, &url, &name, json!({ "count": N }), json!({ "create_stream": true }));
    let db = dir.path().join("df.db");
    let log = dir.path().join("df.log");
    let mut df = start(&cfg, &db, &log);
    assert_eq!(df.wait_exit(Duration::from_secs(90)), Some(0), "{}", df.log_text());
    assert_eq!(seq(&db, &src), N);

    let check = |msgs: &[NatsMsg]| {
        assert_eq!(msgs.len() as u64, N, "messages in the stream");
        let mut last_per_table = BTreeMap::new();
        for (i, m) in msgs.iter().enumerate() {
            let id = m.payload["after"]["id"].as_u64().unwrap();
            assert_eq!(id, i as u64 + 1, "stream order");
            let table = table_of(id);
            assert_eq!(m.subject, format!("{name}.demo.{table}"), "subject of event {id}");
            assert_eq!(m.header("Nats-Msg-Id"), expected_key(&src, id, N), "Nats-Msg-Id of event {id}");
            assert_eq!(m.header("key"), format!(r#"{{"id":{id}}}"#));
            assert_eq!(m.payload["id"], m.header("Nats-Msg-Id"));
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
        json!({ "count": N }),
        json!({ "create_stream": true, "envelope": "cloudevents" }),
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
        assert_eq!(ce["id"], m.header("Nats-Msg-Id"));
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
    let url = service("nats");
    let dir = tempfile::tempdir().unwrap();
    let name = unique("M");
    let src = format!("{name}-src");
    let cfg = write_config(dir.path(), &src, &url, &name, json!({ "count": 50 }), Value::Null);
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
        json!({ "count": 50 }),
        json!({ "create_stream": true, "subjects": ["elsewhere.>"] }),
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
