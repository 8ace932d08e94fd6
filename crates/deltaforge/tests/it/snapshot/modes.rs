//! Snapshot modes and key fallbacks, for each database: tables without a
//! primary key (a `NOT NULL` unique index; no key at all: PostgreSQL reads
//! `ctid` ranges, MySQL one consistent read), a composite primary key, two
//! tables read in parallel, and `initial_only` (snapshot, then stop)
//! followed by `initial_only` again (already done: nothing re-read) and
//! `always` (read again).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use super::Db;
use crate::support::{read_jsonl, wait_for, Pipeline, RunArgs};

/// The scenario's names on one database: the pipeline id, the schema
/// object the source reads, and the three tables as the SQL names them.
struct Names {
    id: String,
    /// PostgreSQL: the table prefix (also slot and publication); MySQL: the database.
    scope: String,
    nokey: String,
    uniq: String,
    comp: String,
}

impl Db {
    fn modes_names(self) -> Names {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let tag = match self {
            Db::Postgres => "pgsm",
            Db::Mysql => "mysm",
        };
        let scope = format!("{tag}_{}_{}", std::process::id(), nanos % 1_000_000);
        let sep = match self {
            Db::Postgres => '_',
            Db::Mysql => '.',
        };
        let t = |n: &str| format!("{scope}{sep}{n}");
        Names { id: scope.replace('_', "-"), nokey: t("nokey"), uniq: t("uniq"), comp: t("comp"), scope }
    }

    fn modes_create(self, n: &Names) -> String {
        let Names { scope, nokey, uniq, comp, .. } = n;
        match self {
            Db::Postgres => format!(
                "CREATE TABLE {nokey} (v int, t text); ALTER TABLE {nokey} REPLICA IDENTITY FULL;
                 INSERT INTO {nokey} SELECT g % 50, 'dup' FROM generate_series(1, 6000) g;
                 CREATE TABLE {uniq} (code text NOT NULL UNIQUE, n int);
                 INSERT INTO {uniq} SELECT 'c' || g, g FROM generate_series(1, 3000) g;
                 CREATE TABLE {comp} (a int, b text, n int, PRIMARY KEY (a, b));
                 INSERT INTO {comp} SELECT g % 7, 'b' || g, g FROM generate_series(1, 4000) g;
                 ANALYZE {nokey}; ANALYZE {uniq}; ANALYZE {comp};"
            ),
            Db::Mysql => format!(
                "CREATE DATABASE {scope};
                 CREATE TABLE {nokey} (v INT, t VARCHAR(10));
                 INSERT INTO {nokey} SELECT seq % 50, 'dup' FROM seq_1_to_6000;
                 CREATE TABLE {uniq} (code VARCHAR(20) NOT NULL, n INT, UNIQUE KEY (code));
                 INSERT INTO {uniq} SELECT CONCAT('c', seq), seq FROM seq_1_to_3000;
                 CREATE TABLE {comp} (a INT, b VARCHAR(20), n INT, PRIMARY KEY (a, b));
                 INSERT INTO {comp} SELECT seq % 7, CONCAT('b', seq), seq FROM seq_1_to_4000;"
            ),
        }
    }

    fn modes_source(self, n: &Names, url: &str, mode: &str) -> Value {
        let snapshot = json!({ "mode": mode, "chunk_size": 700, "max_parallel_tables": 2 });
        match self {
            Db::Postgres => json!({
                "id": n.id, "dsn": url, "tables": [format!("public.{}_*", n.scope)], "slot": n.scope,
                "publication": n.scope, "status_interval_secs": 1, "snapshot": snapshot,
            }),
            Db::Mysql => json!({
                "id": n.id, "dsn": url, "tables": [format!("{}.*", n.scope)], "heartbeat_secs": 1, "snapshot": snapshot,
            }),
        }
    }

    /// The table's rows as the events print them (PostgreSQL's
    /// `row_to_json`, MySQL's `JSON_OBJECT` of the columns in order, give
    /// the same JSON for these column types), sorted.
    fn modes_rows(self, url: &str, table: &str, cols: &[&str]) -> Vec<String> {
        let sql = match self {
            Db::Postgres => format!("SELECT row_to_json(x)::text FROM {table} x"),
            Db::Mysql => {
                let obj = cols.iter().map(|c| format!("'{c}', {c}")).collect::<Vec<_>>().join(", ");
                format!("SELECT JSON_OBJECT({obj}) FROM {table}")
            }
        };
        let mut v: Vec<String> =
            self.sql(url, &sql).lines().map(|l| serde_json::from_str::<Value>(l).unwrap().to_string()).collect();
        v.sort();
        v
    }

    /// `source.table` of the events of `table`.
    fn modes_event_table(self, table: &str) -> String {
        match self {
            Db::Postgres => table.to_string(),
            Db::Mysql => table.split_once('.').unwrap().1.to_string(),
        }
    }

    fn modes_cleanup(self, url: &str, n: &Names) {
        let Names { scope, nokey, uniq, comp, .. } = n;
        let sql = match self {
            Db::Postgres => format!(
                "SELECT pg_drop_replication_slot('{scope}'); DROP PUBLICATION {scope}; DROP TABLE {nokey}, {uniq}, {comp};"
            ),
            Db::Mysql => format!("DROP DATABASE {scope}"),
        };
        let flag = match self {
            Db::Postgres => "-c",
            Db::Mysql => "-e",
        };
        let _ = self.command(url).arg(flag).arg(sql).output();
    }
}

/// `table → sorted list of row JSON texts` of the `r` events.
fn reads(events: &[Value]) -> BTreeMap<String, Vec<String>> {
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in events.iter().filter(|e| e["op"] == "r") {
        m.entry(e["source"]["table"].as_str().unwrap().to_string()).or_default().push(e["after"].to_string());
    }
    for v in m.values_mut() {
        v.sort();
    }
    m
}

fn run_to_exit(args: &RunArgs, log: &Path) -> String {
    let mut df = args.start(log, &[]);
    let code = df.wait_exit(Duration::from_secs(120));
    let text = df.log_text();
    if code.is_none() {
        df.kill9();
    }
    assert_eq!(code, Some(0), "initial_only did not end the run\n{text}");
    text
}

fn key_fallbacks_parallel_tables_and_modes(dbk: Db) {
    let url = dbk.start();
    let n = dbk.modes_names();
    dbk.sql(&url, &dbk.modes_create(&n));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let cfg = dir.path().join("p.yaml");
    let store = dir.path().join("state/df.db");
    let log = dir.path().join("df.log");
    let args = RunArgs::new(&cfg, &store).ports("127.0.0.1:0", "127.0.0.1:0");
    let write_cfg = |mode: &str| {
        Pipeline::new(&n.id)
            .tenant("test")
            .source(dbk.source_type(), dbk.modes_source(&n, &url, mode))
            .file_sink("out", &out, Value::Null)
            .write(&cfg);
    };

    // initial_only: every table read once, then the run ends by itself.
    write_cfg("initial_only");
    let text = run_to_exit(&args, &log);
    assert!(text.contains("snapshot done (mode initial_only)"), "{text}");
    let got = reads(&read_jsonl(&out));
    for (t, cols) in [(&n.nokey, &["v", "t"][..]), (&n.uniq, &["code", "n"][..]), (&n.comp, &["a", "b", "n"][..])] {
        let name = dbk.modes_event_table(t);
        assert_eq!(got.get(&name).cloned().unwrap_or_default(), dbk.modes_rows(&url, t, cols), "rows of {t}");
    }
    let first = read_jsonl(&out).len();

    // initial_only again: the records say done, so nothing is read and the run ends at once.
    write_cfg("initial_only");
    run_to_exit(&args, &log);
    assert_eq!(read_jsonl(&out).len(), first, "a done table was read again");

    // always: read again on this start.
    write_cfg("always");
    let mut df = args.start(&log, &[]);
    let want: usize = 6000 + 3000 + 4000;
    wait_for(Duration::from_secs(120), || {
        (read_jsonl(&out).iter().filter(|e| e["op"] == "r").count() >= 2 * want).then_some(())
    })
    .unwrap_or_else(|| panic!("mode always did not read again\n{}", df.log_text()));
    df.terminate();
    assert_eq!(df.wait_exit(Duration::from_secs(30)), Some(0), "{}", df.log_text());
    assert_eq!(read_jsonl(&out).iter().filter(|e| e["op"] == "r").count(), 2 * want);

    dbk.modes_cleanup(&url, &n);
}

#[test]
fn postgres_key_fallbacks_parallel_tables_and_modes() {
    key_fallbacks_parallel_tables_and_modes(Db::Postgres);
}

#[test]
fn mysql_key_fallbacks_parallel_tables_and_modes() {
    key_fallbacks_parallel_tables_and_modes(Db::Mysql);
}
