//! A 1,000,000-row transaction streams through the `postgres` source in
//! bounded memory: it is delivered in batches of 2,000 events, the
//! checkpoint comes to name it, every row arrives exactly once, and the
//! process's peak RSS stays far below the transaction's size.

use std::path::Path;
use std::time::Duration;

use crate::support::{pg_cleanup, pg_sql, service, storage, unique_suffix, wait_for, RunArgs};

const ROWS: usize = 1_000_000;

/// Peak resident set size of a process, in KiB.
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The `after.id` of every complete line, read without building JSON trees
/// (the file is several hundred MB).
fn ids(path: &Path) -> Vec<usize> {
    let bytes = std::fs::read(path).unwrap_or_default();
    let marker = b"\"after\":{\"id\":";
    let mut out = Vec::new();
    for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let at = line.windows(marker.len()).position(|w| w == marker).expect("line with after.id") + marker.len();
        let digits: Vec<u8> = line[at..].iter().take_while(|b| b.is_ascii_digit()).copied().collect();
        out.push(std::str::from_utf8(&digits).unwrap().parse().unwrap());
    }
    out
}

#[test]
fn a_million_row_transaction_streams_in_bounded_memory() {
    let url = service("postgres");
    let s = unique_suffix();
    let (table, id) = (format!("pgbig_{s}"), format!("pgbig-{}", s.replace('_', "-")));
    pg_sql(&url, &format!("CREATE TABLE {table} (id int PRIMARY KEY, v text)"));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let cfg = dir.path().join("pipeline.yaml");
    crate::support::Pipeline::new(&id)
        .tenant("test")
        .postgres_table_source(&id, &url, &table, &table)
        .file_sink("out", &out, serde_json::Value::Null)
        .batch(2000, 50)
        .write(&cfg);
    let db = dir.path().join("df.db");
    let log = dir.path().join("df.log");
    let args = RunArgs::new(&cfg, &db);
    let mut df = args.start(&log, &[]);
    // The slot exists once the source has started (it checkpoints the idle WAL end).
    wait_for(Duration::from_secs(60), || storage::checkpoint(&db, &id))
        .unwrap_or_else(|| panic!("no start\n{}", df.log_text()));
    let baseline = vm_hwm_kib(df.child.id()).expect("VmHWM");

    pg_sql(&url, &format!("INSERT INTO {table} SELECT g, 'row ' || g FROM generate_series(1, {ROWS}) g"));
    let xid: u64 = pg_sql(&url, &format!("SELECT xmin::text FROM {table} WHERE id = 1"))
        .lines()
        .find_map(|l| l.trim().parse().ok())
        .expect("xmin of the big transaction");

    // Done when the checkpoint names the big transaction.
    let mut peak = baseline;
    let done = wait_for(Duration::from_secs(240), || {
        if let Some(kib) = vm_hwm_kib(df.child.id()) {
            peak = peak.max(kib);
        }
        storage::checkpoint(&db, &id).filter(|c| c["position"]["tx_id"].as_u64() == Some(xid))
    });
    done.unwrap_or_else(|| panic!("the big transaction was not checkpointed\n{}", df.log_text()));
    df.terminate();
    assert_eq!(df.wait_exit(Duration::from_secs(30)), Some(0), "{}", df.log_text());
    // The slot would hold the run's 350 MB of WAL on the shared server for ever.
    pg_cleanup(&url, &table);

    let got = ids(&out);
    assert_eq!(got.len(), ROWS, "every row of the transaction exactly once");
    let mut seen = vec![false; ROWS + 1];
    for i in got {
        assert!(!seen[i], "row {i} delivered twice");
        seen[i] = true;
    }
    let size_mib = std::fs::metadata(&out).unwrap().len() / (1 << 20);
    eprintln!("peak RSS {} MiB (baseline {} MiB) for a {size_mib} MiB transaction", peak / 1024, baseline / 1024);
    assert!(peak < 100 * 1024, "peak RSS {} MiB: the transaction was not streamed in bounded memory", peak / 1024);
    assert!(
        size_mib > 3 * 100,
        "the transaction ({size_mib} MiB) must dwarf the memory bound for this test to mean anything"
    );
}
