//! Crash tests of the table sinks across databases: MariaDB → PostgreSQL
//! (`postgres` sink) and PostgreSQL → MariaDB (`mysql` sink). A
//! 100,000-row table is snapshotted while a writer inserts, updates
//! (primary-key changes among them) and deletes rows, and truncates a
//! second table, and the binary is killed with
//! `kill -9` five times. Afterwards both target tables equal their sources
//! row by row (a query on both printing each column in one agreed text
//! form), and the apply log shows each batch sequence once and no event
//! applied in two batches.

use std::io::Write as _;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::support::sinks::{mariadb_table_rows, pg_create_database, pg_drop_database};
use crate::support::{
    mariadb_command, mariadb_sql, pg_command, pg_lsn, pg_sql, service, unique_suffix, wait_for, Pipeline, Rng, RunArgs,
};

const ROWS: u64 = 100_000;
const PG_SELECT: &str = "concat_ws('|', id, v, n, encode(convert_to(t, 'UTF8'), 'hex'), encode(b, 'hex'), \
    to_char(ts, 'YYYY-MM-DD HH24:MI:SS.US'))";
const MARIA_SELECT: &str =
    "CONCAT_WS('|', id, v, n, LOWER(HEX(t)), LOWER(HEX(b)), DATE_FORMAT(ts, '%Y-%m-%d %H:%i:%s.%f'))";

#[derive(Clone, Copy, PartialEq)]
enum Pair {
    MariaToPg,
    PgToMaria,
}

/// The order of an event id: `(binlog file, position or LSN, index)`.
fn mark(key: &str) -> (String, u64, u64) {
    let mut parts = key.rsplitn(3, ':');
    let index = parts.next().unwrap().parse().unwrap();
    let tx = parts.next().unwrap();
    let (left, right) = tx.rsplit_once('/').unwrap();
    if left.chars().all(|c| c.is_ascii_hexdigit()) {
        (String::new(), pg_lsn(tx), index)
    } else {
        (left.to_string(), right.parse().unwrap(), index)
    }
}

fn writer(pair: Pair, url: String, main: String, aux: String, seed: u64, stop: Arc<AtomicBool>) -> u64 {
    let mut cmd = match pair {
        Pair::MariaToPg => mariadb_command(&url),
        Pair::PgToMaria => pg_command(&url),
    };
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::null()).spawn().expect("SQL client");
    let mut stdin = child.stdin.take().unwrap();
    let mut rng = Rng::seeded(seed);
    let (mut next_id, mut aux_id, mut sent) = (ROWS + 1, 1u64, 0u64);
    let bytes = |b: u64| match pair {
        Pair::MariaToPg => format!("X'00ff{b:02x}'"),
        Pair::PgToMaria => format!("'\\x00ff{b:02x}'"),
    };
    while !stop.load(Ordering::Relaxed) {
        let pick = rng.range(1, next_id);
        let sql = match rng.range(0, 20) {
            0..=6 => {
                next_id += 1;
                let b = rng.range(0, 255);
                format!("INSERT INTO {main} VALUES ({}, {b}, {b}.125, 'w\t\"x\"', {}, now());\n", next_id - 1, bytes(b))
            }
            7..=10 => format!("UPDATE {main} SET v = v + 1, n = n + 1, t = NULL WHERE id = {pick};\n"),
            11..=12 => {
                next_id += 1;
                format!("UPDATE {main} SET id = {} WHERE id = {pick};\n", next_id - 1)
            }
            13..=15 => format!("DELETE FROM {main} WHERE id = {pick};\n"),
            16..=18 => {
                aux_id += 1;
                format!("INSERT INTO {aux} VALUES ({}, 'a');\n", aux_id - 1)
            }
            _ => format!("TRUNCATE {aux}; INSERT INTO {aux} VALUES (0, 'truncated {sent}');\n"),
        };
        stdin.write_all(sql.as_bytes()).expect("writing to the SQL client");
        stdin.flush().unwrap();
        sent += 1;
        std::thread::sleep(Duration::from_millis(rng.range(1, 8)));
    }
    drop(stdin);
    assert!(child.wait().unwrap().success(), "the writer's SQL client failed");
    sent
}

fn run(pair: Pair) {
    let pg = service("postgres");
    let maria = service("mariadb");
    let s = unique_suffix();
    let (main, aux, id) = (format!("txc_{s}"), format!("txc_{s}_aux"), format!("txc-{}", s.replace('_', "-")));
    let scope = format!("dfx_{s}");
    let (src_url, target_url, source, sink);
    match pair {
        Pair::MariaToPg => {
            mariadb_sql(
                &maria,
                &format!(
                    "CREATE DATABASE {scope}; USE {scope};
                     CREATE TABLE {main} (id BIGINT PRIMARY KEY, v INT NOT NULL, n DECIMAL(20,4), t VARCHAR(100), b BLOB, ts DATETIME(6));
                     CREATE TABLE {aux} (id BIGINT PRIMARY KEY, note VARCHAR(100));
                     INSERT INTO {main} SELECT seq, seq % 1000, seq / 7, CONCAT('row ', seq), UNHEX(LPAD(HEX(seq), 16, '0')), '2024-01-01 00:00:00' + INTERVAL seq SECOND FROM seq_1_to_{ROWS};"
                ),
            );
            src_url = format!("{}/{scope}", maria.rsplit_once('/').unwrap().0);
            target_url = pg_create_database(&pg, &scope);
            source = json!({"id": id, "dsn": src_url, "tables": [format!("{scope}.{main}"), format!("{scope}.{aux}")], "heartbeat_secs": 1, "snapshot": {"mode": "initial", "chunk_size": 5000}});
            sink = (
                "postgres",
                json!({"id": "replica", "dsn": target_url, "tables": {"template": "replica.${table}"}, "apply_log": true}),
            );
        }
        Pair::PgToMaria => {
            pg_sql(
                &pg,
                &format!(
                    "CREATE TABLE {main} (id bigint PRIMARY KEY, v int NOT NULL, n numeric(20,4), t varchar(100), b bytea, ts timestamp);
                     CREATE TABLE {aux} (id bigint PRIMARY KEY, note varchar(100));
                     INSERT INTO {main} SELECT g, g % 1000, g / 7.0, 'row ' || g, int8send(g), '2024-01-01'::timestamp + g * interval '1 second'
                       FROM generate_series(1, {ROWS}) g; ANALYZE {main};"
                ),
            );
            src_url = pg.clone();
            // The snapshot of a table no change was streamed for has no
            // registered schema yet: the target is created with its DDL.
            mariadb_sql(
                &maria,
                &format!("CREATE DATABASE {scope}; CREATE TABLE {scope}.{main} (id BIGINT PRIMARY KEY, v INT NOT NULL, n DECIMAL(20,4), t VARCHAR(100), b LONGBLOB, ts DATETIME(6))"),
            );
            target_url = maria.clone();
            source = json!({"id": id, "dsn": pg, "tables": [format!("public.{main}"), format!("public.{aux}")], "slot": main, "publication": main, "status_interval_secs": 1, "snapshot": {"mode": "initial", "chunk_size": 5000}});
            sink = (
                "mysql",
                json!({"id": "replica", "dsn": maria, "tables": {"template": format!("{scope}.${{table}}")}, "apply_log": true}),
            );
        }
    }
    let source_kind = if pair == Pair::MariaToPg { "mysql" } else { "postgres" };
    let dir = tempfile::tempdir().unwrap();
    let cfg = Pipeline::new(&id)
        .tenant("test")
        .source(source_kind, source)
        .sink(sink.0, sink.1)
        .batch(2000, 50)
        .write(dir.path().join("pipeline.yaml"));
    let args = RunArgs::new(&cfg, &dir.path().join("state/deltaforge.db"));
    let log = dir.path().join("deltaforge.log");
    let (pg_rows, maria_rows) = (
        |url: &str, table: &str| -> Vec<String> {
            let select = if table.ends_with("_aux") { "concat_ws('|', id, note)" } else { PG_SELECT };
            let out = pg_command(url).arg("-c").arg(format!("SELECT {select} FROM {table} ORDER BY id")).output();
            out.map(|o| String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).collect()).unwrap_or_default()
        },
        |url: &str, table: &str| {
            let select = if table.ends_with("_aux") { "CONCAT_WS('|', id, note)" } else { MARIA_SELECT };
            mariadb_table_rows(url, table, select, "id")
        },
    );
    let source_rows = |table: &str| -> (Vec<String>, Vec<String>) {
        match pair {
            Pair::MariaToPg => {
                (maria_rows(&src_url, &format!("{scope}.{table}")), pg_rows(&target_url, &format!("replica.{table}")))
            }
            Pair::PgToMaria => (pg_rows(&src_url, table), maria_rows(&target_url, &format!("{scope}.{table}"))),
        }
    };
    let log_rows = || -> Vec<(u64, String, String, u64)> {
        let sql = format!("SELECT batch_seq, first_event, last_event, events FROM deltaforge_sink_progress_log WHERE pipeline = '{id}' ORDER BY batch_seq");
        let text = match pair {
            Pair::MariaToPg => pg_command(&target_url).arg("-F").arg("\t").arg("-c").arg(&sql).output(),
            Pair::PgToMaria => mariadb_command(&target_url).arg("-e").arg(&sql).output(),
        };
        text.map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                (f[0].parse().unwrap(), f[1].to_string(), f[2].to_string(), f[3].parse().unwrap())
            })
            .collect()
    };
    let mut rng = Rng::from_env();
    let mut df = args.start(&log, &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (url, m, a, stop, seed) =
            (src_url.clone(), main.clone(), aux.clone(), stop.clone(), rng.range(1, u64::MAX));
        std::thread::spawn(move || writer(pair, url, m, a, seed, stop))
    };
    for round in 0..5 {
        if round > 0 {
            df = args.start(&log, &[]);
        }
        let before = log_rows().len();
        wait_for(Duration::from_secs(90), || (log_rows().len() > before).then_some(()))
            .unwrap_or_else(|| panic!("round {round}: the sink applies nothing\n{}", df.log_text()));
        std::thread::sleep(Duration::from_millis(rng.range(200, 3000)));
        df.kill9();
        eprintln!("kill {round}: {} batches applied", log_rows().len());
    }
    stop.store(true, Ordering::Relaxed);
    let sent = writer.join().expect("writer");
    assert!(sent > 200, "the writer wrote too little: {sent}");
    let mut df = args.start(&log, &[]);
    for table in [&main, &aux] {
        wait_for(Duration::from_secs(180), || {
            let (s, t) = source_rows(table);
            (s == t).then_some(())
        })
        .unwrap_or_else(|| {
            let (s, t) = source_rows(table);
            panic!("{table}: target differs: {} vs {} rows\n{}", s.len(), t.len(), df.log_text())
        });
    }
    df.terminate();
    assert_eq!(df.wait_exit(Duration::from_secs(30)), Some(0), "{}", df.log_text());
    let applies = log_rows();
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
    let _ = mariadb_command(&maria).arg("-e").arg(format!("DROP DATABASE IF EXISTS {scope}")).output();
    if pair == Pair::PgToMaria {
        let drop = format!(
            "SELECT pg_drop_replication_slot('{main}'); DROP PUBLICATION {main}; DROP TABLE {main}; DROP TABLE {aux};"
        );
        let _ = pg_command(&pg).arg("-c").arg(drop).output();
    } else {
        pg_drop_database(&pg, &scope);
    }
}

#[test]
fn mariadb_to_postgres_snapshot_and_changes_survive_five_kill_9() {
    run(Pair::MariaToPg);
}

#[test]
fn postgres_to_mariadb_snapshot_and_changes_survive_five_kill_9() {
    run(Pair::PgToMaria);
}
