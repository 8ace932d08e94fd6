//! `verify` of a PostgreSQL → file pipeline (see the parent module).

use crate::support::{pg_command, pg_sql, service, unique_suffix, Pipeline};

#[test]
fn pg_file_sink_equal_under_kill_9_and_every_injected_fault_found() {
    let url = service("postgres");
    let s = unique_suffix();
    let (table, slot, id) = (format!("verify_{s}"), format!("verify_{s}"), format!("verify-{}", s.replace('_', "-")));
    pg_sql(&url, &format!("CREATE TABLE {table} (id bigint PRIMARY KEY, v int NOT NULL, pad text)"));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let cfg = dir.path().join("pipeline.yaml");
    Pipeline::new(&id)
        .postgres_table_source(&id, &url, &table, &slot)
        .processor(super::drop_fixture_deletes())
        .file_sink("out", &out, serde_json::Value::Null)
        .batch(200, 20)
        .write(&cfg);
    let (u, t) = (url.clone(), table.clone());
    let src = super::Source {
        sql: Box::new(move |sql| {
            pg_sql(&u, sql);
        }),
        client: Box::new(move || (pg_command(&url), String::new())),
        table: table.clone(),
        event_table: format!("public.{t}"),
        ready: Box::new(|df| df.wait_pg_streaming()),
    };
    super::scenario(src, &id, &cfg, &out, dir.path());
    let url = service("postgres");
    let _ = pg_sql(
        &url,
        &format!("DROP TABLE {table}; SELECT pg_drop_replication_slot('{slot}'); DROP PUBLICATION IF EXISTS {slot}"),
    );
}
