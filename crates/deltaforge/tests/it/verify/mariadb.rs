//! `verify` of a MariaDB → file pipeline (see the parent module).

use std::time::Duration;

use crate::support::{mariadb_command, mariadb_sql, service, storage, unique_suffix, wait_for, Pipeline};

#[test]
fn mariadb_file_sink_equal_under_kill_9_and_every_injected_fault_found() {
    let url = service("mariadb");
    let s = unique_suffix();
    let (db, id) = (format!("dfverify_{s}"), format!("verify-my-{}", s.replace('_', "-")));
    mariadb_sql(
        &url,
        &format!("CREATE DATABASE {db}; CREATE TABLE {db}.t (id BIGINT PRIMARY KEY, v INT NOT NULL, pad VARCHAR(40)) ENGINE=InnoDB"),
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let cfg = dir.path().join("pipeline.yaml");
    Pipeline::new(&id)
        .source(
            "mysql",
            serde_json::json!({ "id": id, "dsn": url, "tables": [format!("{db}.t")], "heartbeat_secs": 1 }),
        )
        .processor(super::drop_fixture_deletes())
        .file_sink("out", &out, serde_json::Value::Null)
        .batch(200, 20)
        .write(&cfg);
    let store = dir.path().join("state/df.db");
    let (u, d) = (url.clone(), db.clone());
    let sid = id.clone();
    let src = super::Source {
        sql: Box::new(move |sql| {
            mariadb_sql(&u, sql);
        }),
        client: Box::new(move || (mariadb_command(&url), format!("USE {d};\n"))),
        table: format!("{db}.t"),
        event_table: format!("{db}.t"),
        ready: Box::new(move |df| {
            wait_for(Duration::from_secs(30), || storage::checkpoint(&store, &sid))
                .unwrap_or_else(|| panic!("no checkpoint\n{}", df.log_text()));
        }),
    };
    super::scenario(src, &id, &cfg, &out, dir.path());
    mariadb_sql(&service("mariadb"), &format!("DROP DATABASE {db}"));
}
