//! The `postgres` table sink against the real PostgreSQL of
//! `scripts/services`, with the real binary: PostgreSQL → PostgreSQL (a
//! fresh target database per test on the same server).
//!
//! - every type of the source, inserts, updates (a primary-key change
//!   among them), deletes, a truncate, `ADD COLUMN` / `DROP COLUMN`
//!   mid-stream (applied before the rows that use them), and a narrowing
//!   change that stops the pipeline with the documented error;
//! - exactly once at both crash points: before the target commit (the
//!   `table-precommit` failpoint: neither rows nor progress survive, which
//!   fails if the progress row were written outside the rows'
//!   transaction) and between the commit and the checkpoint (`crash-after`:
//!   the replay is skipped, the apply log counts each event once).
//!
//! The row-by-row comparison is a query on both tables
//! ([`pg_table_rows`]), never a count.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::sinks::{pg_apply_log, pg_create_database, pg_drop_database, pg_table_rows};
use crate::support::{pg_sql, service, storage, unique_suffix, wait_for, Deltaforge, Pipeline, RunArgs};

/// One PostgreSQL → PostgreSQL pipeline with its own source table, slot,
/// target database and state.
struct Replica {
    url: String,
    target_db: String,
    target_url: String,
    table: String,
    id: String,
    dir: tempfile::TempDir,
    cfg: PathBuf,
    db: PathBuf,
    log: PathBuf,
}

impl Replica {
    fn new(tag: &str, create: &str, sink_extra: Value) -> Replica {
        let url = service("postgres");
        let s = unique_suffix();
        let table = format!("{tag}_{s}");
        let id = format!("{tag}-{}", s.replace('_', "-"));
        let target_db = format!("dfsink_{s}");
        let target_url = pg_create_database(&url, &target_db);
        pg_sql(&url, &create.replace("{t}", &table));
        let dir = tempfile::tempdir().unwrap();
        let mut sink = json!({
            "id": "replica", "dsn": target_url, "tables": {"template": "replica.${table}"}, "apply_log": true,
        });
        if let (Some(s), Some(extra)) = (sink.as_object_mut(), sink_extra.as_object()) {
            s.extend(extra.clone());
        }
        let cfg = Pipeline::new(&id)
            .tenant("test")
            .postgres_table_source(&id, &url, &table, &table)
            .sink("postgres", sink)
            .batch(50, 20)
            .write(dir.path().join("pipeline.yaml"));
        Replica {
            db: dir.path().join("state/deltaforge.db"),
            log: dir.path().join("deltaforge.log"),
            url,
            target_db,
            target_url,
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
        pg_table_rows(&self.url, &self.table, "id")
    }

    fn target_rows(&self) -> Vec<String> {
        let exists = pg_sql(&self.target_url, &format!("SELECT to_regclass('replica.{}') IS NOT NULL", self.table));
        if exists.trim() != "t" {
            return Vec::new();
        }
        pg_table_rows(&self.target_url, &format!("replica.{}", self.table), "id")
    }

    /// Waits until the target equals the source row by row.
    fn wait_equal(&self, df: &Deltaforge, what: &str) {
        wait_for(Duration::from_secs(60), || (self.source_rows() == self.target_rows()).then_some(())).unwrap_or_else(
            || {
                panic!(
                    "{what}: target differs from source\nsource: {:#?}\ntarget: {:#?}\n{}",
                    self.source_rows(),
                    self.target_rows(),
                    df.log_text()
                )
            },
        );
    }

    /// Every applied batch: sequences 1..n once each, and no event in two
    /// batches (each batch starts after the previous one ended).
    fn assert_applied_once(&self) -> u64 {
        let log = pg_apply_log(&self.target_url, "deltaforge_sink_progress_log", "replica");
        let mark = |key: &str| -> (u64, u64) {
            let mut parts = key.rsplitn(3, ':');
            let index = parts.next().unwrap().parse().unwrap();
            (crate::support::pg_lsn(parts.next().unwrap()), index)
        };
        for (i, (seq, first, last, _)) in log.iter().enumerate() {
            assert_eq!(*seq, i as u64 + 1, "batch sequences are not 1..n: {log:?}");
            assert!(mark(first) <= mark(last), "batch {seq} ends before it starts: {log:?}");
            if i > 0 {
                assert!(
                    mark(first) > mark(&log[i - 1].2),
                    "batch {seq} re-applies events of batch {}: {log:?}",
                    seq - 1
                );
            }
        }
        log.iter().map(|(_, _, _, n)| n).sum()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let t = &self.table;
        let _ = std::process::Command::new("psql")
            .args([
                self.url.as_str(),
                "-X",
                "-q",
                "-c",
                &format!("SELECT pg_drop_replication_slot('{t}'); DROP PUBLICATION IF EXISTS {t}; DROP TABLE IF EXISTS {t}; DROP TYPE IF EXISTS {t}_mood;"),
            ])
            .output();
        pg_drop_database(&self.url, &self.target_db);
        let _ = &self.dir;
    }
}

#[test]
fn every_type_every_op_truncate_and_schema_changes_reach_the_target() {
    let r = Replica::new(
        "tsall",
        "CREATE TYPE {t}_mood AS ENUM ('sad', 'happy');
         CREATE TABLE {t} (
           id int PRIMARY KEY, i2 smallint, i8 bigint, num numeric(30,6), f4 real, f8 double precision,
           t text, vc varchar(10), by bytea, b bool, d date, tm time, ts timestamp, tstz timestamptz,
           iv interval, u uuid, j json, jb jsonb, ai int[], at text[], mood {t}_mood, ip inet, bits bit(8),
           vb varbit, nul text)",
        Value::Null,
    );
    let t = &r.table;
    let mut df = r.start(&[]);
    df.wait_pg_streaming();
    df.wait_snapshot_over();
    pg_sql(
        &r.url,
        &format!(
            "INSERT INTO {t} VALUES (1, -32768, 9223372036854775807, 123456789012345678901234.123456, 1.5, 2.25,
               'héllo \"q\"\ttab\\back', 'abc', '\\xdeadbeef00', true, '2024-02-29', '13:45:00.25',
               '2024-02-29 13:45:00.123456', '2024-02-29 13:45:00.5+02', '1 year 2 mons 3 days 04:05:06.5',
               'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{{\"a\": [1, null]}}', '{{\"b\": {{\"c\": true}}}}',
               '{{1,NULL,3}}', '{{\"x y\",z,\"q\\\"uote\"}}', 'happy', '192.168.1.5/24', B'10100101', B'101', NULL);
             INSERT INTO {t} (id) VALUES (2), (3);
             INSERT INTO {t} (id, num, t) VALUES (4, -0.000001, 'four');"
        ),
    );
    r.wait_equal(&df, "inserts");
    pg_sql(
        &r.url,
        &format!("BEGIN; UPDATE {t} SET t = 'bye', i2 = 7 WHERE id = 1; UPDATE {t} SET id = 10 WHERE id = 1; COMMIT;"),
    );
    pg_sql(&r.url, &format!("DELETE FROM {t} WHERE id = 2; UPDATE {t} SET num = 99.5 WHERE id = 4;"));
    r.wait_equal(&df, "updates, a key change, a delete");
    pg_sql(&r.url, &format!("TRUNCATE {t}; INSERT INTO {t} (id, t) VALUES (5, 'after truncate');"));
    r.wait_equal(&df, "truncate");

    // ADD COLUMN then rows using it; DROP COLUMN then rows without it.
    pg_sql(
        &r.url,
        &format!("ALTER TABLE {t} ADD COLUMN extra numeric(12,2); INSERT INTO {t} (id, extra) VALUES (6, 12.25);"),
    );
    r.wait_equal(&df, "add column");
    pg_sql(&r.url, &format!("ALTER TABLE {t} DROP COLUMN vc; INSERT INTO {t} (id, t) VALUES (7, 'no vc');"));
    r.wait_equal(&df, "drop column");
    let columns = pg_sql(
        &r.target_url,
        &format!("SELECT string_agg(column_name, ',' ORDER BY ordinal_position) FROM information_schema.columns WHERE table_schema = 'replica' AND table_name = '{t}'"),
    );
    assert!(columns.contains("extra") && !columns.contains(",vc,"), "target columns: {columns}");
    let applied = r.assert_applied_once();
    assert!(applied >= 10, "the apply log counts {applied} events");

    // A narrowing change stops the pipeline with the documented error.
    pg_sql(&r.url, &format!("ALTER TABLE {t} ALTER COLUMN i8 TYPE int; INSERT INTO {t} (id, i8) VALUES (8, 1);"));
    df.wait_log("schema change not followed: column i8", Duration::from_secs(60));
    assert!(
        !r.target_rows().iter().any(|row| row.contains("\"id\": 8")),
        "a row after the narrowing change was applied"
    );
    df.terminate();
    df.wait_exit(Duration::from_secs(30));
}

#[test]
fn a_crash_at_either_side_of_the_commit_applies_each_batch_once() {
    let r = Replica::new("tsonce", "CREATE TABLE {t} (id int PRIMARY KEY, v int NOT NULL)", Value::Null);
    let t = &r.table;
    let pre = r.dir.path().join("precommit.flag");
    let after = r.dir.path().join("crash-after.flag");
    let hooks = format!("table-precommit:replica={},crash-after:replica={}", pre.display(), after.display());
    let envs = [("DELTAFORGE_FAILPOINTS", hooks.as_str())];

    // 1. Crash after the rows and the progress row were written, before
    //    the commit: nothing of the batch may survive. The (empty) table's
    //    initial snapshot must be done *and stored* first: a crash before
    //    its `done` record is stored reads the table again on the restart,
    //    rows 1..10 included, as new `r` events at a later position — a
    //    correct re-read (the record waits for a durable checkpoint), but
    //    10 more events than this count expects.
    let mut df = r.start(&envs);
    df.wait_log("snapshot of table done and delivered", Duration::from_secs(60));
    std::fs::write(&pre, "").unwrap();
    pg_sql(&r.url, &format!("INSERT INTO {t} SELECT g, g FROM generate_series(1, 10) g"));
    assert!(
        df.wait_exit(Duration::from_secs(60)).is_none_or(|c| c != 0),
        "the precommit failpoint did not fire\n{}",
        df.log_text()
    );
    assert!(!pre.exists(), "the failpoint did not fire\n{}", df.log_text());
    let progress = pg_sql(&r.target_url, "SELECT count(*) FROM deltaforge_sink_progress");
    assert_eq!(
        progress.trim(),
        "0",
        "a progress row survived a crash before the commit: it is not in the rows' transaction"
    );
    assert!(r.target_rows().is_empty(), "rows survived a crash before the commit");

    // 2. Restart: the batch is applied once. Then crash right after the
    //    acknowledgement, before the checkpoint.
    let mut df = r.start(&envs);
    r.wait_equal(&df, "after the precommit crash");
    std::fs::write(&after, "").unwrap();
    pg_sql(&r.url, &format!("INSERT INTO {t} SELECT g, g FROM generate_series(11, 20) g"));
    assert!(
        df.wait_exit(Duration::from_secs(60)).is_none_or(|c| c != 0),
        "the crash-after failpoint did not fire\n{}",
        df.log_text()
    );
    assert!(!after.exists());
    let checkpoint_before = storage::checkpoint(&r.db, &r.id);

    // 3. Restart: the replayed batch is skipped, the next one applied.
    let mut df = r.start(&envs);
    pg_sql(&r.url, &format!("INSERT INTO {t} VALUES (21, 21); UPDATE {t} SET v = -1 WHERE id = 3"));
    r.wait_equal(&df, "after the crash-after crash");
    let applied = r.assert_applied_once();
    assert_eq!(
        applied,
        22,
        "events applied (10 + 10 + 2): a replay was applied again? checkpoint was {checkpoint_before:?}\nlog: {:?}\n{}",
        pg_apply_log(&r.target_url, "deltaforge_sink_progress_log", "replica"),
        std::fs::read_to_string(&r.log).unwrap_or_default()
    );
    df.terminate();
    assert_eq!(df.wait_exit(Duration::from_secs(30)), Some(0), "{}", df.log_text());
    let skipped = df.log_text().matches("table sink connected").count();
    assert!(skipped >= 3, "the sink did not reconnect on each start");
}

/// A snapshot of a table no change was streamed for yet: the source
/// registers the table's schema from the catalogue, so the sink creates
/// the target table with the source's own column types (not types guessed
/// from the first row, whose NULLs and text forms say little).
#[test]
fn a_snapshot_without_streamed_changes_creates_the_target_with_the_source_types() {
    let r = Replica::new(
        "tstypes",
        "CREATE TABLE {t} (id bigint PRIMARY KEY, n numeric(20,4), vc varchar(12), ts timestamptz, b bytea,
           a int[], j jsonb, f real, d date);
         INSERT INTO {t} VALUES (1, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
           (2, 1.5, 'x', '2024-01-01 00:00:00+00', '\\x00', '{1,2}', '{}', 0.5, '2024-02-29');",
        Value::Null,
    );
    let t = &r.table;
    let df = r.start(&[]);
    r.wait_equal(&df, "snapshot");
    let types = |url: &str, table: &str| {
        pg_sql(
            url,
            &format!(
                "SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attnum) \
                 FROM pg_attribute WHERE attrelid = '{table}'::regclass AND attnum > 0 AND NOT attisdropped"
            ),
        )
    };
    assert_eq!(types(&r.target_url, &format!("replica.{t}")), types(&r.url, t), "{}", df.log_text());
    assert!(!df.log_text().contains("inferred"), "column types were inferred\n{}", df.log_text());
}
