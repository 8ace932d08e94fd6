//! The transactional outbox with the real binary and real servers: a
//! business row and an outbox row written in one transaction (PostgreSQL,
//! then MariaDB) arrive as the business event plus one message routed by
//! the outbox row's own columns (topic, key, headers, payload); the raw
//! outbox rows (insert and the usual delete) are not forwarded.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::{mariadb_sql, pg_sql, read_jsonl, service, storage, unique_suffix, wait_for, Pipeline, RunArgs};
use serde_json::{json, Value};

fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", unique_suffix())
}

fn config(dir: &Path, name: &str, source: (&str, Value), outbox_table: &str) -> PathBuf {
    Pipeline::new(name)
        .tenant("test")
        .source(source.0, source.1)
        .processor(json!({
            "type": "outbox",
            "config": {
                "tables": [outbox_table],
                "topic_column": "aggregate_type",
                "topic_prefix": "events.",
                "key_column": "aggregate_id",
                "payload_column": "payload",
                "headers_column": "headers",
                "header_columns": ["event_type"],
                "ops": ["c"],
            },
        }))
        .file_sink("out", &dir.join("out.jsonl"), Value::Null)
        .batch(100, 20)
        .write(dir.join("pipeline.yaml"))
}

/// Checks the two events: the business insert, then the routed message.
fn check(events: &[Value], db: &str, business_table: &str) {
    assert_eq!(events.len(), 2, "business row + one message, no raw outbox rows: {events:#?}");
    let (order, msg) = (&events[0], &events[1]);
    assert_eq!(order["source"]["table"], business_table);
    assert_eq!(order["after"]["id"], 7);
    assert_eq!(msg["op"], "c");
    assert_eq!(msg["before"], Value::Null);
    assert_eq!(msg["source"]["table"], "events.order", "topic from aggregate_type with the prefix");
    assert_eq!(msg["source"]["db"], db);
    assert_eq!(
        msg["after"],
        json!({"order_id": 7, "total": 42.5, "_key": "order-7",
               "_headers": {"trace_id": "abc", "event_type": "OrderCreated"}})
    );
    assert_eq!(msg["tx_id"], order["tx_id"], "same source transaction");
    assert_ne!(msg["id"], order["id"]);
}

#[test]
fn postgres_outbox_rows_become_routed_messages() {
    let url = service("postgres");
    let s = unique("pgob");
    let (orders, outbox) = (format!("{s}_orders"), format!("{s}_outbox"));
    pg_sql(
        &url,
        &format!(
            "CREATE TABLE {orders} (id int PRIMARY KEY, total numeric);
             CREATE TABLE {outbox} (id bigserial PRIMARY KEY, aggregate_type text, aggregate_id text,
                                    event_type text, payload jsonb, headers jsonb);"
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let id = s.replace('_', "-");
    let source = json!({
        "id": id, "dsn": url, "tables": [format!("public.{orders}"), format!("public.{outbox}")],
        "slot": s, "publication": s,
    });
    let cfg = config(dir.path(), &id, ("postgres", source), &format!("public.{outbox}"));
    let store = dir.path().join("df.db");
    let log = dir.path().join("df.log");
    let df = RunArgs::new(&cfg, &store).start(&log, &[]);
    df.wait_pg_streaming();
    df.wait_snapshot_over();
    pg_sql(
        &url,
        &format!(
            "BEGIN;
             INSERT INTO {orders} VALUES (7, 42.5);
             INSERT INTO {outbox} (aggregate_type, aggregate_id, event_type, payload, headers)
               VALUES ('order', 'order-7', 'OrderCreated', '{{\"order_id\": 7, \"total\": 42.5}}', '{{\"trace_id\": \"abc\"}}');
             DELETE FROM {outbox};
             COMMIT;"
        ),
    );
    let out = dir.path().join("out.jsonl");
    wait_for(Duration::from_secs(30), || (read_jsonl(&out).len() >= 2).then_some(()))
        .unwrap_or_else(|| panic!("events missing: {:?}\n{}", read_jsonl(&out), df.log_text()));
    // Give a stray raw outbox event time to show up before checking there is none.
    std::thread::sleep(Duration::from_millis(500));
    check(&read_jsonl(&out), "public", &orders);
    drop(df);
    let _ = std::process::Command::new("psql")
        .args([
            &url,
            "-X",
            "-q",
            "-c",
            &format!(
                "SELECT pg_drop_replication_slot('{s}') WHERE EXISTS (SELECT 1 FROM pg_replication_slots \
                 WHERE slot_name = '{s}' AND active_pid IS NULL); DROP PUBLICATION IF EXISTS {s}; \
                 DROP TABLE {orders}, {outbox};"
            ),
        ])
        .output();
}

#[test]
fn mariadb_outbox_rows_become_routed_messages() {
    let url = service("mariadb");
    let db = unique("dfob");
    mariadb_sql(
        &url,
        &format!(
            "CREATE DATABASE {db}; USE {db};
             CREATE TABLE orders (id INT PRIMARY KEY, total DECIMAL(10,2));
             CREATE TABLE outbox (id BIGINT AUTO_INCREMENT PRIMARY KEY, aggregate_type VARCHAR(64),
                                  aggregate_id VARCHAR(64), event_type VARCHAR(64), payload JSON, headers JSON);"
        ),
    );
    let dsn = format!("{}/{db}", url.rsplit_once('/').unwrap().0);
    let dir = tempfile::tempdir().unwrap();
    let id = db.replace('_', "-");
    let source = json!({ "id": id, "dsn": dsn, "tables": [format!("{db}.orders"), format!("{db}.outbox")] });
    let cfg = config(dir.path(), &id, ("mysql", source), &format!("{db}.outbox"));
    let store = dir.path().join("df.db");
    let log = dir.path().join("df.log");
    let df = RunArgs::new(&cfg, &store).start(&log, &[]);
    wait_for(Duration::from_secs(30), || storage::checkpoint(&store, &id))
        .unwrap_or_else(|| panic!("no start checkpoint\n{}", df.log_text()));
    df.wait_snapshot_over();
    mariadb_sql(
        &url,
        &format!(
            "USE {db}; START TRANSACTION;
             INSERT INTO orders VALUES (7, 42.50);
             INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload, headers)
               VALUES ('order', 'order-7', 'OrderCreated', '{{\"order_id\": 7, \"total\": 42.5}}', '{{\"trace_id\": \"abc\"}}');
             DELETE FROM outbox;
             COMMIT;"
        ),
    );
    let out = dir.path().join("out.jsonl");
    wait_for(Duration::from_secs(30), || (read_jsonl(&out).len() >= 2).then_some(()))
        .unwrap_or_else(|| panic!("events missing: {:?}\n{}", read_jsonl(&out), df.log_text()));
    std::thread::sleep(Duration::from_millis(500));
    check(&read_jsonl(&out), &db, "orders");
    drop(df);
    mariadb_sql(&url, &format!("DROP DATABASE {db}"));
}
