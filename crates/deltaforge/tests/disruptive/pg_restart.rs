//! Restarting PostgreSQL itself mid-stream: the `postgres` source loses
//! its connection, the pipeline restarts it from the checkpoint with
//! backoff, and nothing is lost. Alone in its file because it stops the
//! shared server (cargo runs test binaries one after another).

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use crate::support::{pg_command, pg_sql, read_jsonl, service, service_action, unique_suffix, wait_for, RunArgs};

/// Runs a script through psql's stdin, so that each statement is its own
/// transaction (with `-c` a multi-statement string is one transaction).
fn psql_script(url: &str, sql: &str) {
    use std::io::Write as _;
    let mut child =
        pg_command(url).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::null()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(sql.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success(), "psql script failed");
}

#[test]
fn postgres_restart_mid_stream_reconnects_and_loses_nothing() {
    let _serial = crate::serial();
    let url = service("postgres");
    let s = unique_suffix();
    let (table, id) = (format!("pgrestart_{s}"), format!("pgrestart-{}", s.replace('_', "-")));
    pg_sql(&url, &format!("CREATE TABLE {table} (id int PRIMARY KEY, v text)"));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let cfg = dir.path().join("pipeline.yaml");
    crate::support::Pipeline::new(&id)
        .tenant("test")
        .postgres_table_source(&id, &url, &table, &table)
        .file_sink("out", &out, serde_json::Value::Null)
        .batch(100, 20)
        .write(&cfg);
    let db = dir.path().join("state/deltaforge.db");
    let log = dir.path().join("deltaforge.log");
    let args = RunArgs::new(&cfg, &db);
    let mut df = args.start(&log, &[]);
    df.wait_pg_streaming();

    // A backlog in single-row transactions, then the server goes down while
    // the source is still reading it.
    let inserts: String = (1..=3000).map(|i| format!("INSERT INTO {table} VALUES ({i}, 'r{i}');\n")).collect();
    psql_script(&url, &inserts);
    wait_for(Duration::from_secs(30), || (!read_jsonl(&out).is_empty()).then_some(()))
        .unwrap_or_else(|| panic!("nothing delivered\n{}", df.log_text()));
    service_action("postgres", "stop");
    std::thread::sleep(Duration::from_secs(2));
    service_action("postgres", "start");
    let inserts: String = (3001..=3200).map(|i| format!("INSERT INTO {table} VALUES ({i}, 'r{i}');\n")).collect();
    psql_script(&url, &inserts);

    let ids = |events: &[serde_json::Value]| -> BTreeSet<i64> {
        events.iter().map(|e| e["after"]["id"].as_i64().unwrap()).collect()
    };
    wait_for(Duration::from_secs(90), || (ids(&read_jsonl(&out)).len() == 3200).then_some(())).unwrap_or_else(|| {
        panic!("missing rows after the restart: {}\n{}", ids(&read_jsonl(&out)).len(), df.log_text())
    });
    assert!(df.child.try_wait().unwrap().is_none(), "deltaforge exited\n{}", df.log_text());
    let text = df.log_text();
    assert!(text.contains("restarting from its checkpoint"), "no reconnect happened?\n{text}");

    // Commit order in the file (replays after the reconnect aside).
    let events = read_jsonl(&out);
    let mut seen = BTreeSet::new();
    let mut last = 0;
    for e in &events {
        let i = e["after"]["id"].as_i64().unwrap();
        assert_eq!(e["after"]["v"], format!("r{i}"));
        if seen.insert(i) {
            assert!(i > last, "row {i} arrived after {last}");
            last = i;
        }
    }
    df.terminate();
    assert_eq!(df.wait_exit(Duration::from_secs(30)), Some(0), "{}", df.log_text());
    let _ = Command::new("psql")
        .args([
            url.as_str(),
            "-X",
            "-q",
            "-c",
            &format!("SELECT pg_drop_replication_slot('{table}'); DROP PUBLICATION {table}; DROP TABLE {table};"),
        ])
        .output();
}
