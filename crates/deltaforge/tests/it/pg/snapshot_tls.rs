//! The PostgreSQL snapshot over TLS: a pipeline whose DSN says
//! `sslmode=verify-full` (with the test CA as `sslrootcert`) or
//! `sslmode=require` snapshots a table's existing rows and then streams an
//! insert, and the server (`pg_stat_ssl`) shows that the snapshot
//! connection (`application_name` `deltaforge-snapshot`) was encrypted.
//!
//! Each case connects as its own login role, so that the server-side check
//! sees this pipeline's connections only, not those of other tests sharing
//! the server.

use std::time::Duration;

use crate::support::{pg_sql, pg_tls_ca, read_jsonl, service, unique_suffix, wait_for, Pipeline, RunArgs};
use serde_json::{json, Value};

const ROWS: usize = 250;

/// `(application_name, ssl)` of the role's current connections.
fn connections(url: &str, role: &str) -> Vec<(String, bool)> {
    pg_sql(
        url,
        &format!(
            "SELECT a.application_name, s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s ON s.pid = a.pid \
             WHERE a.usename = '{role}'"
        ),
    )
    .lines()
    .filter_map(|l| l.split_once('|'))
    .map(|(app, ssl)| (app.to_string(), ssl == "t"))
    .collect()
}

/// Runs a pipeline on a fresh table of `ROWS` rows with the DSN
/// `postgres://{role}@{host}:{port}/deltaforge?{tls}`.
fn snapshot_over_tls(case: &str, host: &str, tls: &str) {
    let url = service("postgres");
    let port = url.rsplit_once(':').unwrap().1.split('/').next().unwrap().to_string();
    let name = format!("pgtls_{case}_{}", unique_suffix());
    let id = name.replace('_', "-");
    // The role owns the table (so it may create the publication) and may
    // replicate; pg_hba trusts loopback connections.
    pg_sql(
        &url,
        &format!(
            "CREATE ROLE {name} LOGIN REPLICATION; GRANT CREATE ON DATABASE deltaforge TO {name};
             CREATE TABLE {name} (id int PRIMARY KEY, v text);
             INSERT INTO {name} SELECT g, 'v' || g FROM generate_series(1, {ROWS}) g;
             ALTER TABLE {name} OWNER TO {name};"
        ),
    );
    let dsn = format!("postgres://{name}@{host}:{port}/deltaforge?{tls}");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let db = dir.path().join("state/df.db");
    let log = dir.path().join("df.log");
    let cfg = Pipeline::new(&id)
        .tenant("test")
        .source(
            "postgres",
            json!({
                "id": id, "dsn": dsn, "tables": [format!("public.{name}")], "slot": name, "publication": name,
                "status_interval_secs": 1, "snapshot": { "mode": "initial", "chunk_size": 60 },
            }),
        )
        .file_sink("out", &out, Value::Null)
        .write(dir.path().join("p.yaml"));
    let mut df = RunArgs::new(&cfg, &db).ports("127.0.0.1:0", "127.0.0.1:0").start(&log, &[]);

    // While the pipeline runs, watch its connections on the server: the
    // snapshot connection must show up, and always encrypted.
    let mut seen_snapshot = Vec::new();
    let mut seen_stream = Vec::new();
    let observe = |seen_snapshot: &mut Vec<bool>, seen_stream: &mut Vec<bool>| {
        for (app, ssl) in connections(&url, &name) {
            match app.as_str() {
                "deltaforge-snapshot" => seen_snapshot.push(ssl),
                "deltaforge" => seen_stream.push(ssl),
                _ => {}
            }
        }
    };
    let reads = |events: &[Value]| events.iter().filter(|e| e["op"] == "r").count();
    wait_for(Duration::from_secs(90), || {
        observe(&mut seen_snapshot, &mut seen_stream);
        (reads(&read_jsonl(&out)) >= ROWS && !seen_snapshot.is_empty()).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "snapshot over {tls}: {} of {ROWS} rows read, snapshot connections seen: {seen_snapshot:?}\n{}",
            reads(&read_jsonl(&out)),
            df.log_text()
        )
    });
    df.wait_pg_streaming();

    // Every existing row arrived once as a read event.
    let events = read_jsonl(&out);
    let mut ids: Vec<i64> =
        events.iter().filter(|e| e["op"] == "r").map(|e| e["after"]["id"].as_i64().unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(ids, (1..=ROWS as i64).collect::<Vec<_>>(), "read events over {tls}");
    assert!(events.iter().filter(|e| e["op"] == "r").all(|e| e["source"]["table"] == name.as_str()));

    // A later insert streams.
    pg_sql(&url, &format!("INSERT INTO {name} VALUES (100000, 'later')"));
    wait_for(Duration::from_secs(30), || {
        observe(&mut seen_snapshot, &mut seen_stream);
        read_jsonl(&out).iter().any(|e| e["op"] == "c" && e["after"]["id"] == 100000).then_some(())
    })
    .unwrap_or_else(|| panic!("the insert did not stream over {tls}\n{}", df.log_text()));

    assert!(!seen_snapshot.is_empty(), "no snapshot connection seen");
    assert!(
        seen_snapshot.iter().all(|ssl| *ssl),
        "a snapshot connection was not encrypted over {tls}: {seen_snapshot:?}"
    );
    assert!(seen_stream.iter().all(|ssl| *ssl), "a stream connection was not encrypted over {tls}: {seen_stream:?}");

    df.terminate();
    assert_eq!(df.wait_exit(Duration::from_secs(30)), Some(0), "{}", df.log_text());
    let text = df.log_text();
    assert!(!text.contains("snapshot stopped"), "{text}");

    let _ = std::process::Command::new("psql")
        .args([
            url.as_str(),
            "-X",
            "-q",
            "-c",
            &format!(
                "SELECT pg_drop_replication_slot('{name}'); DROP PUBLICATION {name}; DROP TABLE {name}; \
                 REVOKE CREATE ON DATABASE deltaforge FROM {name}; DROP ROLE {name};"
            ),
        ])
        .output();
}

#[test]
fn snapshot_with_verify_full_and_the_test_ca() {
    service("postgres");
    let ca = pg_tls_ca();
    // verify-full checks the host name: use the name the certificate is
    // for (it also lists 127.0.0.1, but the stream's client refuses
    // verify-full with an IP address).
    snapshot_over_tls("vfull", "localhost", &format!("sslmode=verify-full&sslrootcert={}", ca.display()));
}

#[test]
fn snapshot_with_require() {
    snapshot_over_tls("req", "127.0.0.1", "sslmode=require");
}
