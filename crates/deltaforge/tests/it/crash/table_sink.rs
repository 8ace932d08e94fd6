//! Crash test of the `postgres` table sink, PostgreSQL → PostgreSQL
//! (another database on the same server): a 100,000-row table is
//! snapshotted while a writer inserts, updates (primary-key changes among
//! them) and deletes rows and truncates a second table, and the real binary
//! is killed with `kill -9` five times at random moments. Afterwards both
//! target tables equal their source tables row by row (a query on both),
//! and the sink's apply log shows every batch sequence once and no event
//! applied in two batches.
//!
//! The main target table is created by the test with the source's DDL
//! (an existing target is used as it is); the second table is created by
//! the sink from the schema the snapshot registered. A second test kills
//! the binary right after the snapshot finished and checks that the
//! writer's changes keep arriving after each restart.

use std::io::Write as _;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::support::sinks::{pg_apply_log, pg_create_database, pg_drop_database, pg_table_rows};
use crate::support::{pg_command, pg_lsn, pg_sql, service, unique_suffix, wait_for, Pipeline, Rng, RunArgs};

const ROWS: u64 = 100_000;

const DDL: &str =
    "(id bigint PRIMARY KEY, v int NOT NULL, n numeric(20,4), t text, ts timestamptz, b bytea, j jsonb, a int[])";

/// Writes changes through one `psql` session until `stop`; returns how
/// many statements it sent.
fn writer(url: String, main: String, aux: String, rows: u64, seed: u64, stop: Arc<AtomicBool>) -> u64 {
    let mut psql = pg_command(&url).stdin(Stdio::piped()).stdout(Stdio::null()).spawn().expect("psql");
    let mut stdin = psql.stdin.take().unwrap();
    let mut rng = Rng::seeded(seed);
    let mut next_id = rows + 1;
    let mut aux_id = 1u64;
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let pick = rng.range(1, next_id);
        let sql = match rng.range(0, 20) {
            0..=5 => {
                next_id += 1;
                format!(
                    "INSERT INTO {main} VALUES ({0}, {1}, {1}.125, 'w{0}\t\"x\"', now(), '\\x00ff{1:02x}', '{{\"k\": {0}}}', '{{{1},NULL}}');",
                    next_id - 1,
                    rng.range(0, 255)
                )
            }
            6..=9 => format!("UPDATE {main} SET v = v + 1, n = n * 2, t = NULL WHERE id = {pick};"),
            10..=11 => {
                next_id += 1;
                format!("UPDATE {main} SET id = {} WHERE id = {pick};", next_id - 1)
            }
            12..=13 => format!("DELETE FROM {main} WHERE id = {pick};"),
            14..=16 => {
                let (a, b) = (rng.range(1, next_id), rng.range(1, next_id));
                next_id += 1;
                format!(
                    "BEGIN; UPDATE {main} SET v = -v WHERE id = {a}; DELETE FROM {main} WHERE id = {b}; \
                     INSERT INTO {main} (id, v) VALUES ({}, 0); COMMIT;",
                    next_id - 1
                )
            }
            17..=18 => {
                aux_id += 1;
                format!("INSERT INTO {aux} VALUES ({}, 'a');", aux_id - 1)
            }
            _ => format!("TRUNCATE {aux}; INSERT INTO {aux} VALUES (0, 'after truncate {sent}');"),
        };
        // psql reads its input line by line: without the newline nothing
        // runs until stdin closes.
        writeln!(stdin, "{sql}").expect("writing to psql");
        stdin.flush().unwrap();
        sent += 1;
        std::thread::sleep(Duration::from_millis(rng.range(1, 8)));
    }
    drop(stdin);
    assert!(psql.wait().unwrap().success(), "the writer's psql failed");
    sent
}

/// Drops the test's slot, publication, tables and target database even
/// when the test fails: a slot left behind holds WAL on the shared server.
struct Cleanup {
    url: String,
    main: String,
    aux: String,
    target_db: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let (main, aux) = (&self.main, &self.aux);
        let _ = std::process::Command::new("psql")
            .args([
                self.url.as_str(),
                "-X",
                "-q",
                "-c",
                &format!(
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '{main}'; \
                     DROP PUBLICATION IF EXISTS {main}; DROP TABLE IF EXISTS {main}; DROP TABLE IF EXISTS {aux};"
                ),
            ])
            .output();
        pg_drop_database(&self.url, &self.target_db);
    }
}

#[test]
fn postgres_to_postgres_snapshot_and_changes_survive_five_kill_9() {
    let url = service("postgres");
    let s = unique_suffix();
    let (main, aux, id) =
        (format!("tscrash_{s}"), format!("tscrash_{s}_aux"), format!("tscrash-{}", s.replace('_', "-")));
    let target_db = format!("dfsink_{s}");
    let target_url = pg_create_database(&url, &target_db);
    let _cleanup = Cleanup { url: url.clone(), main: main.clone(), aux: aux.clone(), target_db: target_db.clone() };
    pg_sql(
        &url,
        &format!(
            "CREATE TABLE {main} {DDL}; CREATE TABLE {aux} (id bigint PRIMARY KEY, note text);
             INSERT INTO {main} SELECT g, g % 1000, g / 7.0, 'row ' || g, '2024-01-01 00:00:00+00'::timestamptz + g * interval '1 second',
               int8send(g), jsonb_build_object('g', g), ARRAY[g::int, NULL] FROM generate_series(1, {ROWS}) g;
             ANALYZE {main};"
        ),
    );
    pg_sql(&target_url, &format!("CREATE SCHEMA replica; CREATE TABLE replica.{main} {DDL}"));

    let dir = tempfile::tempdir().unwrap();
    let cfg = Pipeline::new(&id)
        .tenant("test")
        .source(
            "postgres",
            json!({
                "id": id, "dsn": url, "tables": [format!("public.{main}"), format!("public.{aux}")],
                "slot": main, "publication": main, "status_interval_secs": 1,
                "snapshot": {"mode": "initial", "chunk_size": 5000},
            }),
        )
        .sink(
            "postgres",
            json!({"id": "replica", "dsn": target_url, "tables": {"template": "replica.${table}"}, "apply_log": true}),
        )
        .batch(2000, 50)
        .write(dir.path().join("pipeline.yaml"));
    let args = RunArgs::new(&cfg, &dir.path().join("state/deltaforge.db"));
    let log = dir.path().join("deltaforge.log");
    let mut rng = Rng::from_env();
    // The sink's last batch sequence (0 before its progress table exists).
    let applied_batches = || -> u64 {
        let out = pg_command(&target_url).arg("-c").arg("SELECT max(batch_seq) FROM deltaforge_sink_progress").output();
        out.ok().and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok()).unwrap_or(0)
    };
    let target_count =
        || -> u64 { pg_sql(&target_url, &format!("SELECT count(*) FROM replica.{main}")).trim().parse().unwrap_or(0) };

    let mut df = args.start(&log, &[]);
    df.wait_pg_streaming();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (url, main, aux, stop, seed) =
            (url.clone(), main.clone(), aux.clone(), stop.clone(), rng.range(1, u64::MAX));
        std::thread::spawn(move || writer(url, main, aux, ROWS, seed, stop))
    };
    for round in 0..5 {
        if round > 0 {
            df = args.start(&log, &[]);
        }
        let before = applied_batches();
        wait_for(Duration::from_secs(90), || (applied_batches() > before).then_some(())).unwrap_or_else(|| {
            let activity = pg_sql(
                &url,
                "SELECT pid, datname, state, wait_event_type, wait_event, left(query, 80) FROM pg_stat_activity WHERE backend_type = 'client backend'",
            );
            let repl = pg_sql(
                &url,
                "SELECT application_name, state, sent_lsn, write_lsn, flush_lsn, pg_current_wal_lsn() FROM pg_stat_replication",
            );
            let slots = pg_sql(&url, &format!("SELECT slot_name, active, restart_lsn, confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '{main}'"));
            panic!("round {round}: the sink applies nothing\nsessions:\n{activity}\nrepl:\n{repl}\nslots:\n{slots}\n{}", df.log_text())
        });
        std::thread::sleep(Duration::from_millis(rng.range(200, 3000)));
        df.kill9();
        eprintln!("kill {round}: target has {} rows", target_count());
    }
    stop.store(true, Ordering::Relaxed);
    let sent = writer.join().expect("writer");
    assert!(sent > 200, "the writer wrote too little: {sent}");

    let mut df = args.start(&log, &[]);
    for table in [&main, &aux] {
        let same = || {
            (pg_table_rows(&url, table, "id") == pg_table_rows(&target_url, &format!("replica.{table}"), "id"))
                .then_some(())
        };
        wait_for(Duration::from_secs(180), same).unwrap_or_else(|| {
            panic!(
                "replica.{table} differs from the source: {} vs {} rows\n{}",
                pg_table_rows(&url, table, "id").len(),
                pg_table_rows(&target_url, &format!("replica.{table}"), "id").len(),
                df.log_text()
            )
        });
    }
    df.terminate();
    assert_eq!(df.wait_exit(Duration::from_secs(30)), Some(0), "{}", df.log_text());

    // Each batch sequence once; each batch starts after the previous ended.
    let applies = pg_apply_log(&target_url, "deltaforge_sink_progress_log", "replica");
    let mark = |key: &str| -> (u64, u64) {
        let mut parts = key.rsplitn(3, ':');
        let index = parts.next().unwrap().parse().unwrap();
        (pg_lsn(parts.next().unwrap()), index)
    };
    for (i, (seq, first, last, _)) in applies.iter().enumerate() {
        assert_eq!(*seq, i as u64 + 1, "batch sequences are not 1..n");
        assert!(mark(first) <= mark(last));
        if i > 0 {
            assert!(mark(first) > mark(&applies[i - 1].2), "batch {seq} re-applied events of batch {}", seq - 1);
        }
    }
    let events: u64 = applies.iter().map(|a| a.3).sum();
    eprintln!("{} batches, {events} events applied once each, {sent} writer statements", applies.len());
    assert!(events >= ROWS, "fewer events applied than the snapshot holds: {events}");
}

/// A `kill -9` right after the initial snapshot finished (its `done`
/// records stored), then a restart: the stream must go on delivering the
/// writer's changes. Repeated at a few delays after the snapshot ended.
#[test]
fn a_restart_right_after_the_snapshot_finished_streams_on() {
    const SMALL: u64 = 2_000;
    let url = service("postgres");
    let s = unique_suffix();
    let (main, aux, id) = (format!("tsdone_{s}"), format!("tsdone_{s}_aux"), format!("tsdone-{}", s.replace('_', "-")));
    let target_db = format!("dfsink_{s}");
    let target_url = pg_create_database(&url, &target_db);
    let _cleanup = Cleanup { url: url.clone(), main: main.clone(), aux: aux.clone(), target_db: target_db.clone() };
    pg_sql(
        &url,
        &format!(
            "CREATE TABLE {main} {DDL}; CREATE TABLE {aux} (id bigint PRIMARY KEY, note text);
             INSERT INTO {main} (id, v) SELECT g, g FROM generate_series(1, {SMALL}) g;"
        ),
    );
    pg_sql(&target_url, &format!("CREATE SCHEMA replica; CREATE TABLE replica.{main} {DDL}"));
    let dir = tempfile::tempdir().unwrap();
    let cfg = Pipeline::new(&id)
        .tenant("test")
        .source(
            "postgres",
            json!({
                "id": id, "dsn": url, "tables": [format!("public.{main}"), format!("public.{aux}")],
                "slot": main, "publication": main, "status_interval_secs": 1,
                "snapshot": {"mode": "initial", "chunk_size": 500},
            }),
        )
        .sink(
            "postgres",
            json!({"id": "replica", "dsn": target_url, "tables": {"template": "replica.${table}"}, "apply_log": true}),
        )
        .batch(2000, 50)
        .write(dir.path().join("pipeline.yaml"));
    let args = RunArgs::new(&cfg, &dir.path().join("state/deltaforge.db"));
    let log = dir.path().join("deltaforge.log");
    let applied_batches = || -> u64 {
        let out = pg_command(&target_url).arg("-c").arg("SELECT max(batch_seq) FROM deltaforge_sink_progress").output();
        out.ok().and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok()).unwrap_or(0)
    };
    let mut df = args.start(&log, &[]);
    df.wait_pg_streaming();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (url, main, aux, stop) = (url.clone(), main.clone(), aux.clone(), stop.clone());
        std::thread::spawn(move || writer(url, main, aux, SMALL, 7, stop))
    };
    let done = |df: &crate::support::Deltaforge| df.log_text().matches("snapshot of table done and delivered").count();
    wait_for(Duration::from_secs(120), || (done(&df) >= 2).then_some(()))
        .unwrap_or_else(|| panic!("the snapshot did not finish\n{}", df.log_text()));
    df.kill9();
    for round in 0..3 {
        df = args.start(&log, &[]);
        let before = applied_batches();
        wait_for(Duration::from_secs(40), || (applied_batches() > before).then_some(())).unwrap_or_else(|| {
            panic!("restart {round} after the snapshot finished: the sink applies nothing\n{}", df.log_text())
        });
        std::thread::sleep(Duration::from_millis(100 * round));
        df.kill9();
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
    let mut df = args.start(&log, &[]);
    for table in [&main, &aux] {
        let same = || {
            (pg_table_rows(&url, table, "id") == pg_table_rows(&target_url, &format!("replica.{table}"), "id"))
                .then_some(())
        };
        wait_for(Duration::from_secs(120), same)
            .unwrap_or_else(|| panic!("replica.{table} differs from the source\n{}", df.log_text()));
    }
    df.terminate();
    assert_eq!(df.wait_exit(Duration::from_secs(30)), Some(0), "{}", df.log_text());
}
