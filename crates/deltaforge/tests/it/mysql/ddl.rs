//! DDL mid-stream on the MySQL/MariaDB source: ADD COLUMN, DROP COLUMN and
//! MODIFY are decoded correctly on both sides of each change, the schema
//! history holds one version per change with its position, and a replay
//! from before the DDLs (checkpoint rewound) decodes every event with the
//! version that was active at its position, registering nothing new;
//! and the same when several DDLs happen while the pipeline is stopped
//! (decoded from the TABLE_MAP metadata, `binlog_row_metadata=FULL`).

use std::time::Duration;

use crate::support::{mariadb_sql, read_jsonl, service, storage, wait_for, RunArgs};
use serde_json::{json, Value};

/// A binlog position as a sortable key: the file names share one prefix and
/// a fixed-width number, so (file, pos) orders positions across rotations
/// (the test server is shared and may rotate mid-test).
fn at(p: &Value) -> (String, u64) {
    (p["file"].as_str().unwrap().to_string(), p["pos"].as_u64().unwrap())
}

#[test]
fn ddl_mid_stream_and_replay_across_it() {
    let url = service("mariadb");
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() % 1_000_000_000;
    let db = format!("dft_ddl_{}_{nanos}", std::process::id());
    mariadb_sql(&url, &format!("CREATE DATABASE {db}; CREATE TABLE {db}.t (id INT PRIMARY KEY, a VARCHAR(10))"));
    let dir = tempfile::tempdir().unwrap();
    let id = format!("my-ddl-{nanos}");
    let cfg = dir.path().join("pipeline.yaml");
    let out = dir.path().join("out.jsonl");
    crate::support::Pipeline::new("ddl-my")
        .tenant("test")
        .source(
            "mysql",
            serde_json::json!({ "id": id, "dsn": url, "tables": [format!("{db}.%")], "heartbeat_secs": 2 }),
        )
        .file_sink("out", &out, serde_json::Value::Null)
        .batch(100, 20)
        .write(&cfg);
    let store = dir.path().join("df.db");
    let log = dir.path().join("df.log");
    let args = RunArgs::new(&cfg, &store);
    let mut df = args.start(&log, &[]);
    let start = wait_for(Duration::from_secs(30), || storage::checkpoint(&store, &id))
        .unwrap_or_else(|| panic!("no start checkpoint\n{}", df.log_text()));
    df.wait_snapshot_over();

    // One step at a time: each DDL is applied only after the source has
    // delivered the change before it, so each new version is the
    // catalogue's own description (with display widths). Falling behind
    // several DDLs is the next test.
    let steps = [
        "INSERT INTO t VALUES (1, 'x');",
        "ALTER TABLE t ADD COLUMN b INT; INSERT INTO t VALUES (2, 'y', 20);",
        "ALTER TABLE t DROP COLUMN a; INSERT INTO t VALUES (3, 30);",
        "ALTER TABLE t MODIFY b BIGINT UNSIGNED; INSERT INTO t VALUES (4, 18446744073709551615); UPDATE t SET b = 5 WHERE id = 4;",
    ];
    for (i, sql) in steps.iter().enumerate() {
        mariadb_sql(&url, &format!("USE {db}; {sql}"));
        wait_for(Duration::from_secs(30), || (read_jsonl(&out).len() > i).then_some(()))
            .unwrap_or_else(|| panic!("step {i}: no event\n{}", df.log_text()));
    }
    let expected = [
        ("c", Value::Null, json!({"id": 1, "a": "x"}), 1),
        ("c", Value::Null, json!({"id": 2, "a": "y", "b": 20}), 2),
        ("c", Value::Null, json!({"id": 3, "b": 30}), 3),
        ("c", Value::Null, json!({"id": 4, "b": u64::MAX}), 4),
        ("u", json!({"id": 4, "b": u64::MAX}), json!({"id": 4, "b": 5}), 4),
    ];
    let check = |events: &[Value], what: &str| {
        assert_eq!(events.len(), expected.len(), "{what}: {events:#?}");
        for (e, (op, before, after, version)) in events.iter().zip(&expected) {
            assert_eq!(e["op"], *op, "{what}: {e}");
            assert_eq!(e["before"], *before, "{what}: {e}");
            assert_eq!(e["after"], *after, "{what}: {e}");
            assert_eq!(e["schema_version"], *version, "{what}: {e}");
        }
    };
    let events = wait_for(Duration::from_secs(30), || {
        let e = read_jsonl(&out);
        (e.len() >= 5).then_some(e)
    })
    .unwrap_or_else(|| panic!("events missing: {:#?}\n{}", read_jsonl(&out), df.log_text()));
    check(&events, "live");

    // Schema history: four versions, each active from its DDL's position.
    let history = storage::log_records(&store, "schemas", &format!("test/{db}/t"));
    assert_eq!(history.len(), 4, "{history:#?}");
    let cols = |v: &Value| -> Vec<String> {
        v["schema"]["columns"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(cols(&history[0]), ["id", "a"]);
    assert_eq!(cols(&history[1]), ["id", "a", "b"]);
    assert_eq!(cols(&history[2]), ["id", "b"]);
    assert_eq!(history[2]["schema"]["columns"][1]["type"], "int(11)");
    assert_eq!(history[3]["schema"]["columns"][1]["type"], "bigint(20) unsigned");
    // Version 1 is the start of the run; the checkpoint read above may
    // already be past other tables' transactions (the server is shared).
    assert!(at(&history[0]["position"]) <= at(&start["position"]));
    for (i, v) in history.iter().enumerate() {
        assert_eq!(v["version"], i as u64 + 1);
        assert_eq!(v["schema"]["primary_key"], json!(["id"]));
    }
    for w in history.windows(2) {
        let (a, b) = (&w[0]["position"], &w[1]["position"]);
        assert!(at(a) < at(b), "versions out of position order: {a} {b}");
    }
    // Each event sits after the version it was decoded with, before the next.
    for e in &events {
        let v = e["schema_version"].as_u64().unwrap() as usize;
        let pos = at(&e["source"]["position"]);
        assert!(at(&history[v - 1]["position"]) <= pos, "{e}");
        if v < history.len() {
            assert!(pos < at(&history[v]["position"]), "{e}");
        }
    }
    df.terminate();
    assert_eq!(df.wait_exit(Duration::from_secs(20)), Some(0), "{}", df.log_text());

    // Rewind to the start and replay across all three DDLs.
    storage::put_checkpoint(&store, &id, &start);
    let mut df = args.start(&log, &[]);
    let events = wait_for(Duration::from_secs(30), || {
        let e = read_jsonl(&out);
        (e.len() >= 10).then_some(e)
    })
    .unwrap_or_else(|| panic!("replay missing: {:#?}\n{}", read_jsonl(&out), df.log_text()));
    std::thread::sleep(Duration::from_millis(300));
    check(&events[5..], "replay");
    for (a, b) in events[..5].iter().zip(&events[5..]) {
        assert_eq!(a["id"], b["id"], "idempotency keys differ on replay");
    }
    assert_eq!(
        storage::log_records(&store, "schemas", &format!("test/{db}/t")).len(),
        4,
        "replay registered new versions"
    );
    df.terminate();
    assert_eq!(df.wait_exit(Duration::from_secs(20)), Some(0), "{}", df.log_text());
    mariadb_sql(&url, &format!("DROP DATABASE {db}"));
}

/// The pipeline is stopped while a table goes through three DDLs with rows
/// in between; on start, every row is decoded with the columns and types it
/// was written with (from the TABLE_MAP metadata, `binlog_row_metadata=FULL`)
/// although the catalogue already shows the final shape, the history gets
/// one version per layout at increasing positions, and a replay from the
/// start decodes the same and registers nothing new.
#[test]
fn several_ddls_while_stopped_decode_with_their_own_layout() {
    let url = service("mariadb");
    let metadata = mariadb_sql(&url, "SELECT @@GLOBAL.binlog_row_metadata");
    assert!(
        metadata.contains("FULL"),
        "the test server must log binlog_row_metadata=FULL (scripts/services/mariadb.sh): {metadata}"
    );
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() % 1_000_000_000;
    let db = format!("dft_ddls_{}_{nanos}", std::process::id());
    mariadb_sql(
        &url,
        &format!("CREATE DATABASE {db}; CREATE TABLE {db}.t (id INT PRIMARY KEY, a VARCHAR(10), n INT, j JSON) CHARACTER SET utf8mb4"),
    );
    let dir = tempfile::tempdir().unwrap();
    let id = format!("my-ddls-{nanos}");
    let cfg = dir.path().join("pipeline.yaml");
    let out = dir.path().join("out.jsonl");
    crate::support::Pipeline::new("ddls-my")
        .tenant("test")
        .source(
            "mysql",
            serde_json::json!({ "id": id, "dsn": url, "tables": [format!("{db}.t")], "heartbeat_secs": 2 }),
        )
        .file_sink("out", &out, serde_json::Value::Null)
        .batch(100, 20)
        .write(&cfg);
    let store = dir.path().join("df.db");
    let log = dir.path().join("df.log");
    let args = RunArgs::new(&cfg, &store);
    // First run: only records the start position and the table's first version.
    let mut df = args.start(&log, &[]);
    let start = wait_for(Duration::from_secs(30), || storage::checkpoint(&store, &id))
        .unwrap_or_else(|| panic!("no start checkpoint\n{}", df.log_text()));
    df.wait_snapshot_over();
    wait_for(Duration::from_secs(30), || {
        (!storage::log_records(&store, "schemas", &format!("test/{db}/t")).is_empty()).then_some(())
    })
    .unwrap_or_else(|| panic!("no first schema version\n{}", df.log_text()));
    df.terminate();
    assert_eq!(df.wait_exit(Duration::from_secs(20)), Some(0), "{}", df.log_text());

    // Stopped: three layouts after the first, rows in each.
    mariadb_sql(
        &url,
        &format!(
            "USE {db};
             INSERT INTO t (id, a, n, j) VALUES (1, 'x', 10, '{{\"k\": [1, 2]}}'), (2, 'y', 20, NULL);
             ALTER TABLE t ADD COLUMN b VARCHAR(5) CHARACTER SET latin1, ADD COLUMN p DECIMAL(8,3) UNSIGNED;
             INSERT INTO t (id, a, n, b, p) VALUES (3, 'z', 30, 'é', 12345.678);
             ALTER TABLE t DROP COLUMN a;
             INSERT INTO t (id, n, b, p) VALUES (4, 40, 'ü', 0.5);
             INSERT INTO t (id, n) VALUES (6, -5);
             DELETE FROM t WHERE id = 6;
             ALTER TABLE t MODIFY n BIGINT UNSIGNED;
             INSERT INTO t (id, n, b, j) VALUES (5, 18446744073709551615, 'ß', '[true]');
             UPDATE t SET n = 7 WHERE id = 3;"
        ),
    );
    let expected = [
        ("c", Value::Null, json!({"id": 1, "a": "x", "n": 10, "j": {"k": [1, 2]}}), 1),
        ("c", Value::Null, json!({"id": 2, "a": "y", "n": 20, "j": null}), 1),
        ("c", Value::Null, json!({"id": 3, "a": "z", "n": 30, "j": null, "b": "é", "p": "12345.678"}), 2),
        ("c", Value::Null, json!({"id": 4, "n": 40, "j": null, "b": "ü", "p": "0.500"}), 3),
        ("c", Value::Null, json!({"id": 6, "n": -5, "j": null, "b": null, "p": null}), 3),
        ("d", json!({"id": 6, "n": -5, "j": null, "b": null, "p": null}), Value::Null, 3),
        ("c", Value::Null, json!({"id": 5, "n": u64::MAX, "j": [true], "b": "ß", "p": null}), 4),
        (
            "u",
            json!({"id": 3, "n": 30, "j": null, "b": "é", "p": "12345.678"}),
            json!({"id": 3, "n": 7, "j": null, "b": "é", "p": "12345.678"}),
            4,
        ),
    ];
    let check = |events: &[Value], what: &str| {
        assert_eq!(events.len(), expected.len(), "{what}: {events:#?}");
        for (e, (op, before, after, version)) in events.iter().zip(&expected) {
            assert_eq!(e["op"], *op, "{what}: {e}");
            assert_eq!(e["before"], *before, "{what}: {e}");
            assert_eq!(e["after"], *after, "{what}: {e}");
            // Column order is the table's, not only the set of keys.
            let image = if after.is_null() { "before" } else { "after" };
            let keys: Vec<&String> = e[image].as_object().unwrap().keys().collect();
            let want: Vec<&String> =
                (if after.is_null() { before } else { after }).as_object().unwrap().keys().collect();
            assert_eq!(keys, want, "{what}: column order of {e}");
            assert_eq!(e["schema_version"], *version, "{what}: {e}");
        }
    };
    let mut df = args.start(&log, &[]);
    wait_for(Duration::from_secs(30), || (read_jsonl(&out).len() >= expected.len()).then_some(()))
        .unwrap_or_else(|| panic!("events missing: {:#?}\n{}", read_jsonl(&out), df.log_text()));
    std::thread::sleep(Duration::from_millis(300));
    let events = read_jsonl(&out);
    check(&events, "after the stop");

    // One version per layout, at increasing positions.
    let history = storage::log_records(&store, "schemas", &format!("test/{db}/t"));
    assert_eq!(history.len(), 4, "{history:#?}");
    let cols = |v: &Value| -> Vec<String> {
        v["schema"]["columns"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(cols(&history[0]), ["id", "a", "n", "j"]);
    assert_eq!(cols(&history[1]), ["id", "a", "n", "j", "b", "p"]);
    assert_eq!(cols(&history[2]), ["id", "n", "j", "b", "p"]);
    assert_eq!(cols(&history[3]), ["id", "n", "j", "b", "p"]);
    // Versions 2 and 3 come from the binlog (the catalogue was already at
    // the last shape): types without display widths, charsets by name.
    assert_eq!(history[1]["schema"]["columns"][2]["type"], "int");
    assert_eq!(history[1]["schema"]["columns"][4]["type"], "varchar(5)");
    assert_eq!(history[1]["schema"]["columns"][4]["charset"], "latin1");
    assert_eq!(history[1]["schema"]["columns"][5]["type"], "decimal(8,3) unsigned");
    assert_eq!(history[2]["schema"]["columns"][1]["type"], "int");
    // MariaDB's JSON is LONGTEXT in the binlog; the flag survives.
    assert_eq!(history[2]["schema"]["columns"][2]["json"], true);
    // Version 4 is the catalogue's own description (it agrees with the binlog).
    assert_eq!(history[3]["schema"]["columns"][1]["type"], "bigint(20) unsigned");
    // Version 1 is the start of the run; the checkpoint read above may
    // already be past other tables' transactions (the server is shared).
    assert!(at(&history[0]["position"]) <= at(&start["position"]));
    for (i, v) in history.iter().enumerate() {
        assert_eq!(v["version"], i as u64 + 1);
        assert_eq!(v["schema"]["primary_key"], json!(["id"]));
    }
    for w in history.windows(2) {
        let (a, b) = (&w[0]["position"], &w[1]["position"]);
        assert!(at(a) < at(b), "versions out of position order: {a} {b}");
    }
    for e in &events {
        let v = e["schema_version"].as_u64().unwrap() as usize;
        let pos = at(&e["source"]["position"]);
        assert!(at(&history[v - 1]["position"]) <= pos, "{e}");
        if v < history.len() {
            assert!(pos < at(&history[v]["position"]), "{e}");
        }
    }
    df.terminate();
    assert_eq!(df.wait_exit(Duration::from_secs(20)), Some(0), "{}", df.log_text());

    // Replay from the start across all three DDLs.
    storage::put_checkpoint(&store, &id, &start);
    let mut df = args.start(&log, &[]);
    let all = wait_for(Duration::from_secs(30), || {
        let e = read_jsonl(&out);
        (e.len() >= 2 * expected.len()).then_some(e)
    })
    .unwrap_or_else(|| panic!("replay missing: {:#?}\n{}", read_jsonl(&out), df.log_text()));
    std::thread::sleep(Duration::from_millis(300));
    check(&all[expected.len()..], "replay");
    for (a, b) in all[..expected.len()].iter().zip(&all[expected.len()..]) {
        assert_eq!(a["id"], b["id"], "idempotency keys differ on replay");
    }
    assert_eq!(
        storage::log_records(&store, "schemas", &format!("test/{db}/t")).len(),
        4,
        "replay registered new versions"
    );
    df.terminate();
    assert_eq!(df.wait_exit(Duration::from_secs(20)), Some(0), "{}", df.log_text());
    mariadb_sql(&url, &format!("DROP DATABASE {db}"));
}

/// `TRUNCATE t` and `TRUNCATE TABLE db.t` (QUERY events in the binlog)
/// reach the pipeline as op `t` events of the table, in order with the
/// rows around them; a truncate of a table `tables` does not match emits
/// nothing.
#[test]
fn truncate_becomes_a_truncate_event() {
    let url = service("mariadb");
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() % 1_000_000_000;
    let db = format!("dft_trunc_{}_{nanos}", std::process::id());
    mariadb_sql(
        &url,
        &format!("CREATE DATABASE {db}; CREATE TABLE {db}.t (id INT PRIMARY KEY); CREATE TABLE {db}.other (id INT PRIMARY KEY)"),
    );
    let dir = tempfile::tempdir().unwrap();
    let id = format!("my-trunc-{nanos}");
    let cfg = dir.path().join("pipeline.yaml");
    let out = dir.path().join("out.jsonl");
    crate::support::Pipeline::new("trunc-my")
        .tenant("test")
        .source("mysql", json!({ "id": id, "dsn": url, "tables": [format!("{db}.t")], "heartbeat_secs": 2 }))
        .file_sink("out", &out, Value::Null)
        .batch(100, 20)
        .write(&cfg);
    let store = dir.path().join("df.db");
    let log = dir.path().join("df.log");
    let mut df = RunArgs::new(&cfg, &store).start(&log, &[]);
    wait_for(Duration::from_secs(30), || storage::checkpoint(&store, &id))
        .unwrap_or_else(|| panic!("no start checkpoint\n{}", df.log_text()));
    df.wait_snapshot_over();
    mariadb_sql(
        &url,
        &format!(
            "USE {db}; INSERT INTO t VALUES (1); TRUNCATE t; INSERT INTO t VALUES (2); \
             TRUNCATE other; /* c */ TRUNCATE TABLE `{db}`.`t`; INSERT INTO t VALUES (3);"
        ),
    );
    wait_for(Duration::from_secs(30), || (read_jsonl(&out).len() >= 5).then_some(()))
        .unwrap_or_else(|| panic!("events missing: {:#?}\n{}", read_jsonl(&out), df.log_text()));
    // Nothing more may follow (the truncate of `other` is not captured).
    std::thread::sleep(Duration::from_millis(500));
    let events = read_jsonl(&out);
    let seen: Vec<(String, String, Value)> = events
        .iter()
        .map(|e| {
            (
                e["op"].as_str().unwrap().to_string(),
                e["source"]["table"].as_str().unwrap().to_string(),
                e["after"]["id"].clone(),
            )
        })
        .collect();
    let expected: Vec<(String, String, Value)> =
        [("c", json!(1)), ("t", Value::Null), ("c", json!(2)), ("t", Value::Null), ("c", json!(3))]
            .into_iter()
            .map(|(op, id)| (op.to_string(), "t".to_string(), id))
            .collect();
    assert_eq!(seen, expected, "{events:#?}");
    for w in events.windows(2) {
        assert!(at(&w[0]["source"]["position"]) < at(&w[1]["source"]["position"]), "out of order: {w:#?}");
    }
    df.terminate();
    assert_eq!(df.wait_exit(Duration::from_secs(20)), Some(0), "{}", df.log_text());
    mariadb_sql(&url, &format!("DROP DATABASE {db}"));
}
