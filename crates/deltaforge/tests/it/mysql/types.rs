//! MySQL/MariaDB source against the real MariaDB: every column type arrives
//! with exact values on insert, update and delete; missing privileges and
//! an unreachable server give clear errors.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::{
    gtid_reached, mariadb_sql, read_jsonl, service, storage, unique_suffix, wait_for, Pipeline, RunArgs,
};
use serde_json::{json, Value};

fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", unique_suffix())
}

fn config(dir: &Path, id: &str, dsn: &str, tables: &str) -> PathBuf {
    Pipeline::new(id)
        .tenant("test")
        .source("mysql", json!({ "id": id, "dsn": dsn, "tables": [tables], "heartbeat_secs": 2 }))
        .file_sink("out", &dir.join("out.jsonl"), Value::Null)
        .batch(500, 20)
        .write(dir.join("pipeline.yaml"))
}

const CREATE: &str = "CREATE TABLE t (
  id INT PRIMARY KEY,
  ti TINYINT, tiu TINYINT UNSIGNED, si SMALLINT, siu SMALLINT UNSIGNED,
  mi MEDIUMINT, miu MEDIUMINT UNSIGNED, i INT, iu INT UNSIGNED, bi BIGINT, biu BIGINT UNSIGNED,
  yr YEAR, after_year INT,
  dec1 DECIMAL(65,30), dec2 DECIMAL(10,2), f FLOAT, d DOUBLE,
  b1 BIT(1), b12 BIT(12),
  e ENUM('small','medium','large'), s SET('a','b','c','d'),
  c CHAR(10), vc VARCHAR(100), tx TEXT, l1 VARCHAR(20) CHARACTER SET latin1,
  bin BINARY(4), vb VARBINARY(10), bl BLOB,
  dt DATE, tm TIME, tm3 TIME(3), dtm DATETIME, dtm6 DATETIME(6), ts TIMESTAMP(3) NULL DEFAULT NULL,
  j JSON, g GEOMETRY, n INT NULL, zd DATE, zdt DATETIME
) CHARACTER SET utf8mb4";

const INSERT: &str = "SET SESSION sql_mode = ''; SET time_zone = '+02:00';
INSERT INTO t VALUES (1,
  -128, 255, -32768, 65535, -8388608, 16777215, -2147483648, 4294967295, -9223372036854775808, 18446744073709551615,
  2155, -7,
  '12345678901234567890123456789012345.123456789012345678901234567890', -0.50, 1.5, -1234.5678e-10,
  b'1', b'101010101010',
  'medium', 'c,a',
  'abc', 'héllo 😀 wörld', 'long text 🎉', 'café',
  X'00FF0102', X'DEADBEEF', X'000102',
  '2024-02-29', '-838:59:59', '12:34:56.789', '2024-02-29 13:45:01', '2024-02-29 13:45:01.123456', '2024-02-29 15:45:01.123',
  '{\"a\": {\"b\": [1, 2, {\"c\": null}], \"d\": \"x\"}, \"e\": 1.5}', ST_GeomFromText('POINT(1 2)'), NULL,
  '0000-00-00', '0000-00-00 00:00:00')";

fn expected_after_insert() -> Value {
    json!({
        "id": 1,
        "ti": -128, "tiu": 255, "si": -32768, "siu": 65535, "mi": -8388608, "miu": 16777215,
        "i": -2147483648i64, "iu": 4294967295u64, "bi": i64::MIN, "biu": u64::MAX,
        "yr": 2155, "after_year": -7,
        "dec1": "12345678901234567890123456789012345.123456789012345678901234567890",
        "dec2": "-0.50", "f": 1.5, "d": -1.2345678e-7,
        "b1": 1, "b12": 2730,
        "e": "medium", "s": "a,c",
        "c": "abc", "vc": "héllo 😀 wörld", "tx": "long text 🎉", "l1": "café",
        "bin": "AP8BAg==", "vb": "3q2+7w==", "bl": "AAEC",
        "dt": "2024-02-29", "tm": "-838:59:59", "tm3": "12:34:56.789",
        "dtm": "2024-02-29T13:45:01", "dtm6": "2024-02-29T13:45:01.123456", "ts": "2024-02-29T13:45:01.123Z",
        "j": {"a": {"b": [1, 2, {"c": null}], "d": "x"}, "e": 1.5},
        "g": {"srid": 0, "wkb": "AQEAAAAAAAAAAADwPwAAAAAAAABA"},
        "n": null, "zd": "0000-00-00", "zdt": "0000-00-00T00:00:00"
    })
}

#[test]
fn every_type_arrives_with_exact_values() {
    let url = service("mariadb");
    let db = unique("dft_types");
    mariadb_sql(&url, &format!("CREATE DATABASE {db}; USE {db}; {CREATE}"));
    let dsn = format!("{}/{db}", url.rsplit_once('/').unwrap().0);
    let dir = tempfile::tempdir().unwrap();
    let id = unique("my_types").replace('_', "-");
    let cfg = config(dir.path(), &id, &dsn, &format!("{db}.t"));
    let store = dir.path().join("df.db");
    let out = dir.path().join("out.jsonl");
    let log = dir.path().join("df.log");
    let mut df = RunArgs::new(&cfg, &store).start(&log, &[]);
    // The source records its start position at once.
    wait_for(Duration::from_secs(30), || storage::checkpoint(&store, &id))
        .unwrap_or_else(|| panic!("no start checkpoint\n{}", df.log_text()));
    df.wait_snapshot_over();
    let sql_db = |sql: &str| mariadb_sql(&url, &format!("USE {db}; {sql}"));
    sql_db(INSERT);
    sql_db("UPDATE t SET vc = 'changed', biu = 0, e = 'large', s = '' WHERE id = 1");
    sql_db("DELETE FROM t WHERE id = 1");
    // A row in another table of the same database is not captured.
    sql_db("CREATE TABLE other (id INT PRIMARY KEY); INSERT INTO other VALUES (1)");

    let events = wait_for(Duration::from_secs(30), || {
        let e = read_jsonl(&out);
        (e.len() >= 3).then_some(e)
    })
    .unwrap_or_else(|| panic!("events missing: {:?}\n{}", read_jsonl(&out), df.log_text()));
    std::thread::sleep(Duration::from_millis(500));
    let events_now = read_jsonl(&out);
    assert_eq!(events_now.len(), 3, "unexpected extra events: {events_now:#?}");

    let insert = &events[0];
    assert_eq!(insert["op"], "c");
    assert_eq!(insert["before"], Value::Null);
    let expected = expected_after_insert();
    for (k, v) in expected.as_object().unwrap() {
        assert_eq!(&insert["after"][k], v, "column {k}");
    }
    assert_eq!(insert["after"].as_object().unwrap().len(), expected.as_object().unwrap().len());
    assert_eq!(insert["source"]["db"], db.as_str());
    assert_eq!(insert["source"]["table"], "t");
    assert_eq!(insert["source"]["connector"], "mysql");
    assert!(insert["source"]["position"]["file"].as_str().unwrap().starts_with("mariadb-bin."));
    assert!(insert["source"]["ts_ms"].as_i64().unwrap() > 1_700_000_000_000);
    assert!(insert["tx_id"].as_str().unwrap().starts_with("0-1-"), "MariaDB GTID as tx id: {}", insert["tx_id"]);
    let key = insert["id"].as_str().unwrap();
    assert!(key.starts_with(&format!("{id}:mariadb-bin.")) && key.ends_with(":0"), "idempotency key {key}");
    assert_eq!(insert["schema_version"], 1);

    let update = &events[1];
    assert_eq!(update["op"], "u");
    assert_eq!(update["before"], insert["after"]);
    assert_eq!(update["after"]["vc"], "changed");
    assert_eq!(update["after"]["biu"], 0);
    assert_eq!(update["after"]["e"], "large");
    assert_eq!(update["after"]["s"], "");
    assert_eq!(update["after"]["dec1"], expected["dec1"]);

    let delete = &events[2];
    assert_eq!(delete["op"], "d");
    assert_eq!(delete["after"], Value::Null);
    assert_eq!(delete["before"], update["after"]);

    // The checkpoint is the end of a transaction, with the GTID state at
    // that offset. Other tests write to the same server meanwhile, so wait
    // until the checkpoint covers this test's writes, then ask the server
    // for the GTID state at the checkpoint's own file and offset.
    let gtid = mariadb_sql(&url, "SELECT @@gtid_binlog_pos").trim().to_string();
    let ck = wait_for(Duration::from_secs(10), || {
        let c = storage::checkpoint(&store, &id)?;
        gtid_reached(c["position"]["gtid_set"].as_str()?, &gtid).then_some(c)
    })
    .unwrap_or_else(|| panic!("checkpoint never reached {gtid}: {:?}", storage::checkpoint(&store, &id)));
    let (file, pos) = (ck["position"]["file"].as_str().unwrap(), ck["position"]["pos"].as_u64().unwrap());
    let at = mariadb_sql(&url, &format!("SELECT BINLOG_GTID_POS('{file}', {pos})"));
    assert_eq!(ck["position"]["gtid_set"], at.trim(), "the checkpoint's GTID state is the server's at {file}:{pos}");
    df.terminate();
    assert_eq!(df.wait_exit(Duration::from_secs(20)), Some(0), "{}", df.log_text());

    // Stopped: the same row again, then a DDL, then a row of the new
    // layout. On start the catalogue is already past the first row, which
    // must still decode exactly (every type from the TABLE_MAP metadata,
    // `binlog_row_metadata=FULL`) with version 1.
    sql_db(&INSERT.replace("VALUES (1,", "VALUES (2,"));
    sql_db("ALTER TABLE t ADD COLUMN extra INT UNSIGNED; INSERT INTO t (id, extra) VALUES (3, 4294967295)");
    let mut df = RunArgs::new(&cfg, &store).start(&log, &[]);
    let events = wait_for(Duration::from_secs(30), || {
        let e = read_jsonl(&out);
        (e.len() >= 5).then_some(e)
    })
    .unwrap_or_else(|| panic!("events missing: {:?}\n{}", read_jsonl(&out), df.log_text()));
    let again = &events[3];
    let mut expected = expected_after_insert();
    expected["id"] = json!(2);
    assert_eq!(again["after"], expected, "row written before the DDL, read after it");
    assert_eq!(again["schema_version"], 1);
    let added = &events[4];
    assert_eq!(added["after"]["id"], 3);
    assert_eq!(added["after"]["extra"], 4294967295u64);
    assert_eq!(added["after"]["biu"], Value::Null);
    assert_eq!(added["schema_version"], 2);
    // The history: the start's catalogue schema, then the new layout.
    let history = crate::support::storage::log_records(&store, "schemas", &format!("test/{db}/t"));
    assert_eq!(history.len(), 2, "{history:#?}");
    df.terminate();
    assert_eq!(df.wait_exit(Duration::from_secs(20)), Some(0), "{}", df.log_text());
    mariadb_sql(&url, &format!("DROP DATABASE {db}"));
}

#[test]
fn missing_privileges_and_unreachable_server_are_named() {
    let url = service("mariadb");
    let user = unique("dfnp");
    mariadb_sql(&url, &format!("CREATE USER '{user}'@'%' IDENTIFIED BY 's3cret-pw'"));
    let hostport = url.split('@').nth(1).unwrap().split('/').next().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "my-noprivs", &format!("mysql://{user}:s3cret-pw@{hostport}"), "deltaforge.x");
    let store = dir.path().join("df.db");
    let log = dir.path().join("df.log");
    let mut df = RunArgs::new(&cfg, &store).start(&log, &[]);
    let code = df.wait_exit(Duration::from_secs(30));
    let text = df.log_text();
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("REPLICATION SLAVE") && text.contains("GRANT"), "{text}");
    assert!(!text.contains("s3cret-pw"), "password leaked into the log: {text}");
    mariadb_sql(&url, &format!("DROP USER '{user}'@'%'"));

    // Nothing listens on this port: a retryable error naming the server, never the password.
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "my-unreach", "mysql://u:s3cret-pw@127.0.0.1:1/db", "db.t");
    let log = dir.path().join("df.log");
    let mut df = RunArgs::new(&cfg, &dir.path().join("df.db")).start(&log, &[]);
    let text = wait_for(Duration::from_secs(20), || {
        let t = df.log_text();
        t.contains("connecting").then_some(t)
    })
    .unwrap_or_else(|| panic!("no connection error logged: {}", df.log_text()));
    assert!(text.contains("mysql://u:***@127.0.0.1:1/db"), "{text}");
    assert!(!text.contains("s3cret-pw"), "password leaked into the log: {text}");
    df.kill9();
}
