//! MariaDB → PostgreSQL through the `postgres` table sink, with the real
//! binary and servers: a table with the MySQL types that matter for a
//! migration (unsigned 64-bit, exact decimals, BIT, ENUM, SET, utf8mb4,
//! BLOB, DATETIME(6), TIMESTAMP(3), JSON, GEOMETRY) is snapshotted, then
//! changed (inserts, an update with a primary-key change, deletes,
//! ADD/DROP COLUMN; the MySQL source emits no truncate event); the target table is created by the sink
//! from the registered MySQL schema and equals the source row by row
//! (a query on both printing each column in one agreed text form).

use std::time::Duration;

use serde_json::json;

use crate::support::sinks::{mariadb_table_rows, pg_create_database, pg_drop_database};
use crate::support::{
    mariadb_command, mariadb_sql, pg_command, pg_sql, service, unique_suffix, wait_for, Pipeline, RunArgs,
};

const CREATE: &str =
    "CREATE TABLE t (id INT PRIMARY KEY, tiu TINYINT UNSIGNED, biu BIGINT UNSIGNED, dec2 DECIMAL(10,2),
  d DOUBLE, b12 BIT(12), e ENUM('small','medium','large'), s SET('a','b','c'), vc VARCHAR(100), bl BLOB, dt DATE,
  dtm6 DATETIME(6), ts TIMESTAMP(3) NULL DEFAULT NULL, j JSON, g GEOMETRY, n INT NULL) CHARACTER SET utf8mb4";

const ROW: &str = "(1, 255, 18446744073709551615, -0.50, 2.25, b'101010101010', 'medium', 'c,a', 'héllo 😀 wörld',
  X'000102', '2024-02-29', '2024-02-29 13:45:01.123456', '2024-02-29 15:45:01.123', '{\"k\": \"v\", \"n\": [1, 2]}',
  ST_GeomFromText('POINT(1 2)'), NULL)";

const MARIA_SELECT: &str = "CONCAT_WS('|', id, tiu, biu, dec2, d, LPAD(BIN(b12), 12, '0'), e, s, LOWER(HEX(vc)), \
    LOWER(HEX(bl)), dt, DATE_FORMAT(dtm6, '%Y-%m-%d %H:%i:%s.%f'), UNIX_TIMESTAMP(ts), JSON_VALUE(j, '$.k'), \
    LOWER(HEX(ST_AsWKB(g))), COALESCE(n, 'NULL'))";
const PG_SELECT: &str = "concat_ws('|', id, tiu, biu, dec2, d, b12, e, s, encode(convert_to(vc, 'UTF8'), 'hex'), \
    encode(bl, 'hex'), dt, to_char(dtm6, 'YYYY-MM-DD HH24:MI:SS.US'), round(extract(epoch FROM ts)::numeric, 3), \
    j->>'k', encode(g, 'hex'), coalesce(n::text, 'NULL'))";

#[test]
fn mariadb_rows_reach_postgres_with_types_ops_and_schema_changes() {
    let maria = service("mariadb");
    let pg = service("postgres");
    let s = unique_suffix();
    let (src_db, target_db, id) =
        (format!("dfsrc_{s}"), format!("dfsink_{s}"), format!("tsmy2pg-{}", s.replace('_', "-")));
    mariadb_sql(&maria, &format!("CREATE DATABASE {src_db}; USE {src_db}; {CREATE}; INSERT INTO t VALUES {ROW}; INSERT INTO t (id, vc) VALUES (2, 'two'), (3, 'three')"));
    let src_url = format!("{}/{src_db}", maria.rsplit_once('/').unwrap().0);
    let target_url = pg_create_database(&pg, &target_db);
    let dir = tempfile::tempdir().unwrap();
    let cfg = Pipeline::new(&id)
        .tenant("test")
        .source("mysql", json!({ "id": id, "dsn": src_url, "tables": [format!("{src_db}.t")], "heartbeat_secs": 1 }))
        .sink(
            "postgres",
            json!({"id": "replica", "dsn": target_url, "tables": {"template": "migrated.${table}"}, "apply_log": true}),
        )
        .batch(50, 20)
        .write(dir.path().join("pipeline.yaml"));
    let mut df = RunArgs::new(&cfg, &dir.path().join("state/deltaforge.db"))
        .start(&dir.path().join("df.log"), &[("RUST_LOG", "info")]);

    let source = |select: &str| mariadb_table_rows(&src_url, &format!("{src_db}.t"), select, "id");
    let target = |select: &str| -> Vec<String> {
        let exists = pg_sql(&target_url, "SELECT to_regclass('migrated.t') IS NOT NULL");
        if exists.trim() != "t" {
            return Vec::new();
        }
        // Not `pg_sql`: a column the sink has not added yet is an error here.
        let out =
            pg_command(&target_url).arg("-c").arg(format!("SELECT {select} FROM migrated.t ORDER BY id")).output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).collect()).unwrap_or_default()
    };
    let wait_equal = |what: &str, df: &crate::support::Deltaforge, maria_sel: &str, pg_sel: &str| {
        wait_for(Duration::from_secs(90), || (source(maria_sel) == target(pg_sel)).then_some(())).unwrap_or_else(|| {
            panic!(
                "{what}: differs\nsource: {:#?}\ntarget: {:#?}\n{}",
                source(maria_sel),
                target(pg_sel),
                df.log_text()
            )
        })
    };
    wait_equal("snapshot", &df, MARIA_SELECT, PG_SELECT);
    let types = pg_sql(
        &target_url,
        "SELECT string_agg(column_name || ' ' || data_type, ', ' ORDER BY ordinal_position) FROM information_schema.columns WHERE table_schema = 'migrated' AND table_name = 't'",
    );
    for expected in [
        "biu numeric",
        "dec2 numeric",
        "b12 bit",
        "bl bytea",
        "dtm6 timestamp without time zone",
        "ts timestamp with time zone",
        "j jsonb",
    ] {
        assert!(types.contains(expected), "target column types: {types}");
    }

    let sql = |q: &str| mariadb_sql(&src_url, q);
    sql("INSERT INTO t (id, biu, vc) VALUES (4, 1, 'four'); UPDATE t SET vc = 'bye', biu = 7 WHERE id = 1; UPDATE t SET id = 10 WHERE id = 1; DELETE FROM t WHERE id = 2");
    wait_equal("changes", &df, MARIA_SELECT, PG_SELECT);
    // The MySQL source emits no truncate event (TRUNCATE is DDL in the
    // binlog); deleting every row is the change it carries.
    sql("DELETE FROM t; INSERT INTO t (id, vc) VALUES (5, 'after delete all')");
    wait_equal("delete all", &df, MARIA_SELECT, PG_SELECT);
    sql("ALTER TABLE t ADD COLUMN extra DECIMAL(12,3); INSERT INTO t (id, extra) VALUES (6, 1.125)");
    wait_equal(
        "add column",
        &df,
        "CONCAT_WS('|', id, COALESCE(extra, 'NULL'))",
        "concat_ws('|', id, coalesce(extra::text, 'NULL'))",
    );
    sql("ALTER TABLE t DROP COLUMN n; INSERT INTO t (id) VALUES (7)");
    wait_for(Duration::from_secs(60), || {
        let cols = pg_sql(&target_url, "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'migrated' AND table_name = 't' AND column_name = 'n'");
        (cols.trim() == "0" && target("id::text").contains(&"7".to_string())).then_some(())
    })
    .unwrap_or_else(|| panic!("the dropped column is still in the target\n{}", df.log_text()));
    df.terminate();
    assert_eq!(df.wait_exit(Duration::from_secs(30)), Some(0), "{}", df.log_text());
    let _ = mariadb_command(&maria).arg("-e").arg(format!("DROP DATABASE {src_db}")).output();
    pg_drop_database(&pg, &target_db);
}

#[test]
fn a_value_postgres_cannot_hold_is_dead_lettered_never_truncated() {
    let maria = service("mariadb");
    let pg = service("postgres");
    let s = unique_suffix();
    let (src_db, target_db, id) =
        (format!("dfsrc_{s}"), format!("dfsink_{s}"), format!("tsdlq-{}", s.replace('_', "-")));
    mariadb_sql(
        &maria,
        &format!("CREATE DATABASE {src_db}; USE {src_db}; CREATE TABLE t (id INT PRIMARY KEY, d DATE, v VARCHAR(10))"),
    );
    let src_url = format!("{}/{src_db}", maria.rsplit_once('/').unwrap().0);
    let target_url = pg_create_database(&pg, &target_db);
    let dir = tempfile::tempdir().unwrap();
    let cfg = Pipeline::new(&id)
        .tenant("test")
        .source("mysql", json!({ "id": id, "dsn": src_url, "tables": [format!("{src_db}.t")], "heartbeat_secs": 1 }))
        .sink("postgres", json!({"id": "replica", "dsn": target_url, "tables": {"template": "migrated.${table}"}}))
        .spec("dlq", json!({ "capacity": 1000, "overflow": "reject" }))
        .batch(50, 20)
        .write(dir.path().join("pipeline.yaml"));
    let db = dir.path().join("state/deltaforge.db");
    let mut df = RunArgs::new(&cfg, &db).start(&dir.path().join("df.log"), &[("RUST_LOG", "info")]);
    // One transaction: a good row, a zero date PostgreSQL cannot hold, a good row.
    mariadb_sql(
        &src_url,
        "SET SESSION sql_mode = ''; BEGIN; INSERT INTO t VALUES (1, '2024-01-01', 'a'), (2, '0000-00-00', 'b'), (3, '2024-03-01', 'c'); COMMIT",
    );
    let target =
        || pg_sql(&target_url, "SELECT string_agg(id || ':' || d || ':' || v, ',' ORDER BY id) FROM migrated.t");
    wait_for(Duration::from_secs(60), || {
        let exists = pg_sql(&target_url, "SELECT to_regclass('migrated.t') IS NOT NULL");
        (exists.trim() == "t" && target().trim() == "1:2024-01-01:a,3:2024-03-01:c").then_some(())
    })
    .unwrap_or_else(|| panic!("the good rows did not arrive\n{}", df.log_text()));
    let out = std::process::Command::new(crate::support::BIN)
        .args(["dlq", "list", &id, "--config", cfg.to_str().unwrap(), "--storage-path", db.to_str().unwrap()])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(listed.lines().count(), 1, "exactly the zero-date event is dead-lettered: {listed}\n{}", df.log_text());
    assert!(listed.contains("0000-00-00") && listed.contains("refused a value"), "{listed}");
    assert!(!df.log_text().contains("0000-00-00"), "a row value reached the log");
    df.terminate();
    df.wait_exit(Duration::from_secs(30));
    let _ = mariadb_command(&maria).arg("-e").arg(format!("DROP DATABASE {src_db}")).output();
    pg_drop_database(&pg, &target_db);
}
