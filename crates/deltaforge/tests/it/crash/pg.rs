//! Crash test for the `postgres` source: a writer inserts and updates rows
//! continuously (single-row and multi-row transactions, plus rolled-back
//! ones) while the real binary is killed with `kill -9` at random moments
//! and restarted. While it runs, the slot's `confirmed_flush_lsn` is
//! checked never to pass the stored checkpoint. Afterwards every committed
//! change is in the sink in commit order per row (replays after a crash are
//! exact duplicates of events already delivered), and nothing of a
//! rolled-back transaction appears.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::{pg_command, pg_lsn, pg_sql, read_jsonl, service, storage, unique_suffix, wait_for, Rng, RunArgs};
use serde_json::Value;

/// Ids of rows inserted by rolled-back transactions start here.
const ROLLED_BACK_IDS: i64 = 1_000_000;

/// Writes transactions through one `psql` session until `stop`; returns
/// the committed value of every row.
fn writer(url: String, table: String, seed: u64, stop: Arc<AtomicBool>) -> BTreeMap<i64, i64> {
    let mut psql = pg_command(&url).stdin(Stdio::piped()).stdout(Stdio::null()).spawn().expect("psql");
    let mut stdin = psql.stdin.take().unwrap();
    let mut rng = Rng::seeded(seed);
    let mut rows: BTreeMap<i64, i64> = BTreeMap::new();
    let mut next_id = 1i64;
    let mut rolled_back = ROLLED_BACK_IDS;
    while !stop.load(Ordering::Relaxed) {
        let mut sql = String::new();
        let pick = |rng: &mut Rng, rows: &BTreeMap<i64, i64>| -> Option<i64> {
            (!rows.is_empty()).then(|| *rows.keys().nth(rng.range(0, rows.len() as u64) as usize).unwrap())
        };
        match rng.range(0, 10) {
            0..=3 => {
                sql += &format!("INSERT INTO {table} VALUES ({next_id}, 0, 'p{next_id}');\n");
                rows.insert(next_id, 0);
                next_id += 1;
            }
            4..=6 => {
                if let Some(id) = pick(&mut rng, &rows) {
                    sql += &format!("UPDATE {table} SET v = v + 1 WHERE id = {id};\n");
                    *rows.get_mut(&id).unwrap() += 1;
                }
            }
            7..=8 => {
                sql += "BEGIN;\n";
                for _ in 0..3 {
                    sql += &format!("INSERT INTO {table} VALUES ({next_id}, 0, 'p{next_id}');\n");
                    rows.insert(next_id, 0);
                    next_id += 1;
                }
                for _ in 0..2 {
                    let id = pick(&mut rng, &rows).unwrap();
                    sql += &format!("UPDATE {table} SET v = v + 1 WHERE id = {id};\n");
                    *rows.get_mut(&id).unwrap() += 1;
                }
                sql += "COMMIT;\n";
            }
            _ => {
                sql += "BEGIN;\n";
                sql += &format!("INSERT INTO {table} VALUES ({rolled_back}, -1, 'rolled back');\n");
                rolled_back += 1;
                if let Some(id) = pick(&mut rng, &rows) {
                    sql += &format!("UPDATE {table} SET v = -1 WHERE id = {id};\n");
                }
                sql += "ROLLBACK;\n";
            }
        }
        stdin.write_all(sql.as_bytes()).expect("writing to psql");
        stdin.flush().unwrap();
        std::thread::sleep(Duration::from_millis(rng.range(2, 12)));
    }
    drop(stdin);
    let status = psql.wait().unwrap();
    assert!(status.success(), "the writer's psql failed");
    rows
}

#[test]
fn kill_9_under_load_loses_nothing_and_never_acknowledges_ahead() {
    let url = service("postgres");
    let s = unique_suffix();
    let (table, slot, id) =
        (format!("pgcrash_{s}"), format!("pgcrash_{s}"), format!("pgcrash-{}", s.replace('_', "-")));
    pg_sql(&url, &format!("CREATE TABLE {table} (id int PRIMARY KEY, v int NOT NULL, pad text)"));

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let cfg = dir.path().join("pipeline.yaml");
    crate::support::Pipeline::new(&id)
        .tenant("test")
        .postgres_table_source(&id, &url, &table, &slot)
        .file_sink("out", &out, serde_json::Value::Null)
        .batch(200, 20)
        .write(&cfg);
    let db = dir.path().join("state/deltaforge.db");
    let log = dir.path().join("deltaforge.log");
    let args = RunArgs::new(&cfg, &db);
    let mut rng = Rng::from_env();

    // First start creates the slot; the writer starts once it streams.
    let mut df = args.start(&log, &[]);
    df.wait_pg_streaming();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (url, table, stop, seed) = (url.clone(), table.clone(), stop.clone(), rng.range(1, u64::MAX));
        std::thread::spawn(move || writer(url, table, seed, stop))
    };

    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let mut ack_checks = 0;
    let check_ack = |ack_checks: &mut u32| {
        // Read the server's position first: the checkpoint only grows.
        let confirmed =
            pg_sql(&url, &format!("SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '{slot}'"));
        let Some(cp) = storage::checkpoint(&db, &id) else { return };
        let confirmed = confirmed.trim();
        if confirmed.is_empty() {
            return;
        }
        let cp_lsn = pg_lsn(cp["position"]["lsn"].as_str().unwrap());
        assert!(pg_lsn(confirmed) <= cp_lsn, "confirmed_flush_lsn {confirmed} is ahead of the stored checkpoint {cp}");
        *ack_checks += 1;
    };
    for round in 0..6 {
        if round > 0 {
            df = args.start(&log, &[]);
        }
        let before = size(&out);
        wait_for(Duration::from_secs(60), || (size(&out) > before).then_some(()))
            .unwrap_or_else(|| panic!("round {round}: no progress\n{}", df.log_text()));
        let until = std::time::Instant::now() + Duration::from_millis(rng.range(100, 2500));
        while std::time::Instant::now() < until {
            check_ack(&mut ack_checks);
            std::thread::sleep(Duration::from_millis(rng.range(10, 200)));
        }
        df.kill9();
        check_ack(&mut ack_checks);
        eprintln!("kill {round}: checkpoint {:?}", storage::checkpoint(&db, &id).map(|c| c["position"].clone()));
    }
    stop.store(true, Ordering::Relaxed);
    let committed = writer.join().expect("writer");
    assert!(committed.len() > 50, "the writer wrote too little: {}", committed.len());

    // Final run: everything committed arrives.
    let mut df = args.start(&log, &[]);
    let last_values = |events: &[Value]| -> HashMap<i64, i64> {
        let mut m = HashMap::new();
        for e in events {
            if let Some(a) = e["after"].as_object() {
                m.insert(a["id"].as_i64().unwrap(), a["v"].as_i64().unwrap());
            }
        }
        m
    };
    wait_for(Duration::from_secs(90), || {
        check_ack(&mut ack_checks);
        let got = last_values(&read_jsonl(&out));
        committed.iter().all(|(id, v)| got.get(id) == Some(v)).then_some(())
    })
    .unwrap_or_else(|| panic!("not every committed change arrived\n{}", df.log_text()));
    df.terminate();
    assert_eq!(df.wait_exit(Duration::from_secs(30)), Some(0), "{}", df.log_text());
    assert!(ack_checks >= 5, "too few confirmed_flush_lsn checks ran: {ack_checks}");

    // Dedup by idempotency key; replays must be exact copies.
    let events = read_jsonl(&out);
    let mut first: HashMap<String, Value> = HashMap::new();
    let mut per_row: BTreeMap<i64, Vec<(String, i64)>> = BTreeMap::new();
    let mut duplicates = 0;
    for e in &events {
        let key = e["id"].as_str().unwrap().to_string();
        if let Some(prev) = first.get(&key) {
            assert_eq!(prev, e, "a replayed event differs from its first delivery");
            duplicates += 1;
            continue;
        }
        first.insert(key, e.clone());
        let after = e["after"].as_object().expect("only inserts and updates were written");
        let (row, v) = (after["id"].as_i64().unwrap(), after["v"].as_i64().unwrap());
        assert!(row < ROLLED_BACK_IDS && v >= 0, "a change of a rolled-back transaction was delivered: {e}");
        per_row.entry(row).or_default().push((e["op"].as_str().unwrap().to_string(), v));
    }
    eprintln!("{} events, {} rows, {duplicates} replayed duplicates", events.len(), per_row.len());
    assert_eq!(per_row.len(), committed.len(), "rows delivered differ from rows committed");
    for (row, v) in &committed {
        let mut expected = vec![("c".to_string(), 0)];
        expected.extend((1..=*v).map(|i| ("u".to_string(), i)));
        assert_eq!(per_row[row], expected, "row {row}: changes missing or out of commit order");
    }
    let _ = std::process::Command::new("psql")
        .args([
            url.as_str(),
            "-X",
            "-q",
            "-c",
            &format!("SELECT pg_drop_replication_slot('{slot}'); DROP PUBLICATION {slot}; DROP TABLE {table};"),
        ])
        .output();
}
