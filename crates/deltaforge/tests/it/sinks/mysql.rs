//! The `mysql` table sink against the real MariaDB of `scripts/services`,
//! with the real binary, fed by the real PostgreSQL (PostgreSQL → MariaDB,
//! a fresh target database per test): the types that cross, inserts,
//! updates with a primary-key change, deletes, a truncate, `ADD COLUMN` /
//! `DROP COLUMN` mid-stream, and exactly once at the crash before the
//! commit and the crash after it.
//!
//! Source and target are compared row by row by a query on both that
//! prints each column in one agreed text form ([`mariadb_table_rows`]).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use crate::support::sinks::mariadb_table_rows;
use crate::support::{mariadb_sql, pg_sql, service, unique_suffix, wait_for, Deltaforge, Pipeline, RunArgs};

struct ToMaria {
    pg: String,
    maria: String,
    target_db: String,
    table: String,
    id: String,
    dir: tempfile::TempDir,
    cfg: PathBuf,
    db: PathBuf,
    log: PathBuf,
}

/// The PostgreSQL side of the comparison: each column as MariaDB prints it.
const PG_SELECT: &str =
    "concat_ws('|', id, i8, num, f8, encode(convert_to(t, 'UTF8'), 'hex'), encode(by, 'hex'), b::int, d, \
    to_char(ts, 'YYYY-MM-DD HH24:MI:SS.US'), to_char(tstz AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'), u, \
    jb->>'k', array_to_json(ai), mood, bits, coalesce(nul, 'NULL'))";
const MARIA_SELECT: &str = "CONCAT_WS('|', id, i8, num, f8, LOWER(HEX(t)), LOWER(HEX(`by`)), b, d, \
    DATE_FORMAT(ts, '%Y-%m-%d %H:%i:%s.%f'), DATE_FORMAT(tstz, '%Y-%m-%d %H:%i:%s.%f'), u, \
    JSON_VALUE(jb, '$.k'), ai, mood, LPAD(BIN(bits), 8, '0'), COALESCE(nul, 'NULL'))";

impl ToMaria {
    fn new(tag: &str) -> ToMaria {
        let pg = service("postgres");
        let maria = service("mariadb");
        let s = unique_suffix();
        let table = format!("{tag}_{s}");
        let target_db = format!("dfsink_{s}");
        mariadb_sql(&maria, &format!("DROP DATABASE IF EXISTS {target_db}"));
        pg_sql(
            &pg,
            &format!(
                "CREATE TYPE {table}_mood AS ENUM ('sad', 'happy');
                 CREATE TABLE {table} (id int PRIMARY KEY, i8 bigint, num numeric(20,6), f8 double precision, t text,
                   by bytea, b bool, d date, ts timestamp, tstz timestamptz, u uuid, jb jsonb, ai int[], mood {table}_mood,
                   bits bit(8), nul text)"
            ),
        );
        let id = format!("{tag}-{}", s.replace('_', "-"));
        let dir = tempfile::tempdir().unwrap();
        let cfg = Pipeline::new(&id)
            .tenant("test")
            .postgres_table_source(&id, &pg, &table, &table)
            .sink(
                "mysql",
                json!({"id": "maria", "dsn": maria, "tables": {"template": format!("{target_db}.${{table}}")}, "apply_log": true}),
            )
            .batch(50, 20)
            .write(dir.path().join("pipeline.yaml"));
        ToMaria {
            db: dir.path().join("state/deltaforge.db"),
            log: dir.path().join("deltaforge.log"),
            pg,
            maria,
            target_db,
            table,
            id,
            cfg,
            dir,
        }
    }

    fn start(&self, envs: &[(&str, &str)]) -> Deltaforge {
        let mut all = vec![("RUST_LOG", "info")];
        all.extend_from_slice(envs);
        RunArgs::new(&self.cfg, &self.db).start(&self.log, &all)
    }

    fn source_rows(&self) -> Vec<String> {
        pg_sql(&self.pg, &format!("SELECT {PG_SELECT} FROM {} ORDER BY id", self.table))
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn target_rows(&self, select: &str) -> Vec<String> {
        mariadb_table_rows(&self.maria, &format!("{}.{}", self.target_db, self.table), select, "id")
    }

    fn wait_equal(&self, df: &Deltaforge, what: &str) {
        wait_for(Duration::from_secs(60), || (self.source_rows() == self.target_rows(MARIA_SELECT)).then_some(()))
            .unwrap_or_else(|| {
                panic!(
                    "{what}: target differs\nsource: {:#?}\ntarget: {:#?}\n{}",
                    self.source_rows(),
                    self.target_rows(MARIA_SELECT),
                    df.log_text()
                )
            });
    }

    /// Events in the apply log of this pipeline's sink.
    fn applied_events(&self) -> u64 {
        let sql =
            format!("SELECT COALESCE(SUM(events), 0) FROM deltaforge_sink_progress_log WHERE pipeline = '{}'", self.id);
        mariadb_sql(&self.maria, &sql).trim().parse().unwrap()
    }
}

impl Drop for ToMaria {
    fn drop(&mut self) {
        let t = &self.table;
        let _ = std::process::Command::new("psql")
            .args([
                self.pg.as_str(),
                "-X",
                "-q",
                "-c",
                &format!("SELECT pg_drop_replication_slot('{t}'); DROP PUBLICATION IF EXISTS {t}; DROP TABLE IF EXISTS {t}; DROP TYPE IF EXISTS {t}_mood;"),
            ])
            .output();
        let _ = crate::support::mariadb_command(&self.maria)
            .arg("-e")
            .arg(format!("DROP DATABASE IF EXISTS {}", self.target_db))
            .output();
        let _ = &self.dir;
    }
}

#[test]
fn postgres_rows_reach_mariadb_with_types_ops_and_schema_changes() {
    let r = ToMaria::new("tsmy");
    let t = &r.table;
    let mut df = r.start(&[]);
    df.wait_pg_streaming();
    df.wait_snapshot_over();
    pg_sql(
        &r.pg,
        &format!(
            "INSERT INTO {t} VALUES (1, 9223372036854775807, 12345678901234.123456, 2.25, 'héllo\ttab', '\\xdeadbeef00', true,
               '2024-02-29', '2024-02-29 13:45:00.123456', '2024-02-29 13:45:00.5+02', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
               '{{\"k\": \"v\"}}', '{{1,NULL,3}}', 'happy', B'10100101', NULL);
             INSERT INTO {t} (id, t) VALUES (2, 'two'), (3, 'three');"
        ),
    );
    r.wait_equal(&df, "inserts");
    pg_sql(
        &r.pg,
        &format!("BEGIN; UPDATE {t} SET t = 'bye' WHERE id = 1; UPDATE {t} SET id = 10 WHERE id = 1; COMMIT;"),
    );
    pg_sql(&r.pg, &format!("DELETE FROM {t} WHERE id = 2"));
    r.wait_equal(&df, "updates, a key change, a delete");
    pg_sql(&r.pg, &format!("TRUNCATE {t}; INSERT INTO {t} (id, t) VALUES (5, 'after truncate')"));
    r.wait_equal(&df, "truncate");
    pg_sql(&r.pg, &format!("ALTER TABLE {t} ADD COLUMN extra int; INSERT INTO {t} (id, extra) VALUES (6, 42)"));
    wait_for(Duration::from_secs(60), || {
        // The column first (the query below fails without it), then the row.
        let sql = format!(
            "SELECT COUNT(*) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = '{}' AND TABLE_NAME = '{t}' AND COLUMN_NAME = 'extra'",
            r.target_db
        );
        let added = mariadb_sql(&r.maria, &sql).trim() == "1";
        (added && r.target_rows("CONCAT_WS('|', id, COALESCE(extra, 'NULL'))").contains(&"6|42".to_string())).then_some(())
    })
    .unwrap_or_else(|| panic!("the added column did not arrive\n{}", df.log_text()));
    pg_sql(&r.pg, &format!("ALTER TABLE {t} DROP COLUMN nul; INSERT INTO {t} (id) VALUES (7)"));
    wait_for(Duration::from_secs(60), || {
        let cols = mariadb_sql(
            &r.maria,
            &format!("SELECT COUNT(*) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = '{}' AND TABLE_NAME = '{t}' AND COLUMN_NAME = 'nul'", r.target_db),
        );
        (cols.trim() == "0" && r.target_rows("id").contains(&"7".to_string())).then_some(())
    })
    .unwrap_or_else(|| panic!("the dropped column is still in the target\n{}", df.log_text()));
    assert!(r.applied_events() >= 10, "the apply log counts {} events", r.applied_events());
    df.terminate();
    assert_eq!(df.wait_exit(Duration::from_secs(30)), Some(0), "{}", df.log_text());
}

#[test]
fn mariadb_target_applies_each_batch_once_across_both_crash_points() {
    let r = ToMaria::new("tsmyonce");
    let t = &r.table;
    let pre = r.dir.path().join("precommit.flag");
    let after = r.dir.path().join("after.flag");
    let hooks = format!("table-precommit:maria={},crash-after:maria={}", pre.display(), after.display());
    let envs = [("DELTAFORGE_FAILPOINTS", hooks.as_str())];
    let mut df = r.start(&envs);
    df.wait_pg_streaming();
    df.wait_snapshot_over();
    std::fs::write(&pre, "").unwrap();
    pg_sql(&r.pg, &format!("INSERT INTO {t} (id, t) SELECT g, 'r' || g FROM generate_series(1, 10) g"));
    df.wait_exit(Duration::from_secs(60));
    assert!(!pre.exists(), "the precommit failpoint did not fire\n{}", df.log_text());
    let progress =
        mariadb_sql(&r.maria, &format!("SELECT COUNT(*) FROM deltaforge_sink_progress WHERE pipeline = '{}'", r.id));
    assert_eq!(progress.trim(), "0", "a progress row survived the crash before the commit");

    let mut df = r.start(&envs);
    r.wait_equal(&df, "after the precommit crash");
    std::fs::write(&after, "").unwrap();
    pg_sql(&r.pg, &format!("INSERT INTO {t} (id, t) SELECT g, 'r' || g FROM generate_series(11, 20) g"));
    df.wait_exit(Duration::from_secs(60));
    assert!(!after.exists(), "the crash-after failpoint did not fire\n{}", df.log_text());

    let mut df = r.start(&envs);
    pg_sql(&r.pg, &format!("INSERT INTO {t} (id) VALUES (21); DELETE FROM {t} WHERE id = 4"));
    r.wait_equal(&df, "after both crashes");
    df.terminate();
    df.wait_exit(Duration::from_secs(30));
    let applied = r.applied_events();
    assert_eq!(applied, 22, "events applied (10 + 10 + 2): a replayed batch was applied again");
}
