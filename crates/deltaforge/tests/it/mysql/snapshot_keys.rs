//! The MySQL snapshot's resume keys are bound as parameters, never pasted
//! into SQL: primary keys holding `'`, `\`, NUL, multi-byte text and
//! arbitrary bytes (VARBINARY, and a composite key of both) are read in
//! small chunks, the binary is killed with `kill -9` mid-snapshot and
//! restarted, and every row arrives with its exact key, none missing, and
//! the only rows read twice are exactly those the sink had acknowledged
//! past the stored progress at the kill (the at-least-once replay).
//!
//! Run under the shared server's default `sql_mode`, and under
//! `NO_BACKSLASH_ESCAPES` on a MariaDB of the test's own (its own services
//! directory and port, set globally there only; stopped at the end), where
//! pasting backslash-escaped literals broke the statement.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{
    free_port, mariadb_command, mariadb_sql, read_jsonl, service, storage, unique_suffix, wait_for, Pipeline, RunArgs,
};

/// Rows per table.
const ROWS: usize = 900;
/// Rows per chunk.
const CHUNK: u64 = 4;

/// Key fragments that broke (or could break) a pasted literal.
const TEXT_PARTS: &[&str] = &["'", "\\", "\0", "é", "日本", "😀", "\\'", "' OR 'x'='x", "\"", "\n", "%_", "`"];
/// Byte fragments: the same, plus bytes that are not UTF-8.
const BYTE_PARTS: &[&[u8]] = &[b"'", b"\\", b"\0", &[0xff], &[0x80, 0x00], &[0xc3], b"\\'", &[0x00, 0x27, 0x5c]];

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

/// The text key of row `i` (fragments around the number, so that keys of
/// every kind interleave in key order).
fn text_key(i: usize) -> String {
    let a = TEXT_PARTS[i % TEXT_PARTS.len()];
    let b = TEXT_PARTS[(i / TEXT_PARTS.len()) % TEXT_PARTS.len()];
    format!("{a}{:04}{b}k", i)
}

fn byte_key(i: usize) -> Vec<u8> {
    let a = BYTE_PARTS[i % BYTE_PARTS.len()];
    let b = BYTE_PARTS[(i / BYTE_PARTS.len()) % BYTE_PARTS.len()];
    [a, format!("{:04}", i).as_bytes(), b, b"k"].concat()
}

/// Creates the database `db` with three tables keyed by text, bytes and both.
fn create(url: &str, db: &str) {
    mariadb_sql(
        url,
        &format!(
            "CREATE DATABASE {db};
             CREATE TABLE {db}.txt (k VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin PRIMARY KEY, n INT NOT NULL);
             CREATE TABLE {db}.bin (k VARBINARY(64) PRIMARY KEY, n INT NOT NULL);
             CREATE TABLE {db}.comp (a VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin, b VARBINARY(64), \
               n INT NOT NULL, PRIMARY KEY (a, b));"
        ),
    );
    let mut txt = Vec::new();
    let mut bin = Vec::new();
    let mut comp = Vec::new();
    for i in 0..ROWS {
        let t = hex(text_key(i).as_bytes());
        let b = hex(&byte_key(i));
        txt.push(format!("(CONVERT(X'{t}' USING utf8mb4), {i})"));
        bin.push(format!("(X'{b}', {i})"));
        // Few distinct `a` values, so that the second key column decides.
        let a = hex(text_key(i % 5).as_bytes());
        comp.push(format!("(CONVERT(X'{a}' USING utf8mb4), X'{b}', {i})"));
    }
    let inserts = format!(
        "INSERT INTO {db}.txt VALUES {}; INSERT INTO {db}.bin VALUES {}; INSERT INTO {db}.comp VALUES {};",
        txt.join(","),
        bin.join(","),
        comp.join(",")
    );
    // Through stdin: too long for a command line.
    let mut child = mariadb_command(url).stdin(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(inserts.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "inserting rows: {}", String::from_utf8_lossy(&out.stderr));
}

/// A MariaDB of the test's own, stopped when dropped.
struct OwnMariadb {
    dir: tempfile::TempDir,
    port: u16,
    url: String,
}

impl OwnMariadb {
    fn script(dir: &Path, port: u16, action: &str) -> std::process::Output {
        Command::new("bash")
            .arg(deltaforge_testkit::repo_root().join("scripts/services/mariadb.sh"))
            .arg(action)
            .env("DELTAFORGE_SERVICES_DIR", dir)
            .env("DF_MARIADB_PORT", port.to_string())
            .output()
            .expect("running mariadb.sh")
    }

    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let out = Self::script(dir.path(), port, "start");
        assert!(out.status.success(), "own MariaDB: {}", String::from_utf8_lossy(&out.stderr));
        let url = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().trim().to_string();
        OwnMariadb { dir, port, url }
    }
}

impl Drop for OwnMariadb {
    fn drop(&mut self) {
        let _ = Self::script(self.dir.path(), self.port, "stop");
    }
}

/// The rows of `table` as (n → key text as the sink renders it).
fn table_keys(url: &str, db: &str, table: &str) -> BTreeMap<i64, String> {
    let sql = match table {
        "txt" => format!("SELECT n, HEX(k) FROM {db}.txt"),
        "bin" => format!("SELECT n, TO_BASE64(k) FROM {db}.bin"),
        _ => format!("SELECT n, CONCAT(HEX(a), '/', TO_BASE64(b)) FROM {db}.comp"),
    };
    mariadb_sql(url, &sql)
        .lines()
        .map(|l| {
            let (n, k) = l.split_once('\t').unwrap();
            (n.parse().unwrap(), k.to_string())
        })
        .collect()
}

/// An `r` event's key as [`table_keys`] renders it.
fn event_key(table: &str, after: &Value) -> String {
    match table {
        "txt" => hex(after["k"].as_str().unwrap().as_bytes()),
        "bin" => after["k"].as_str().unwrap().to_string(),
        _ => format!("{}/{}", hex(after["a"].as_str().unwrap().as_bytes()), after["b"].as_str().unwrap()),
    }
}

fn snapshot_with_kill_reads_every_key_once(url: &str, tag: &str) {
    let db = format!("snapkeys_{tag}_{}", unique_suffix());
    create(url, &db);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let id = db.replace('_', "-");
    let cfg: PathBuf = Pipeline::new(&id)
        .tenant("test")
        .source(
            "mysql",
            json!({ "id": id, "dsn": url, "tables": [format!("{db}.*")], "heartbeat_secs": 1,
                    "snapshot": { "mode": "initial", "chunk_size": CHUNK, "max_parallel_tables": 3 } }),
        )
        .file_sink("out", &out, Value::Null)
        .batch(50, 10)
        .write(dir.path().join("pipeline.yaml"));
    let store = dir.path().join("df.db");
    let log = dir.path().join("df.log");
    let (args, _api, _metrics) = RunArgs::new(&cfg, &store).free_ports();
    let record = |t: &str| storage::slot(&store, "snapshots", &format!("{id}/{db}.{t}"));
    let rows_done = || ["txt", "bin", "comp"].iter().filter_map(|t| record(t)?["rows_done"].as_u64()).sum::<u64>();
    let all_done = || ["txt", "bin", "comp"].iter().all(|t| record(t).is_some_and(|r| r["state"] == "done"));

    let mut df = args.start(&log, &[]);
    let third = ROWS as u64; // a third of the three tables
    wait_for(Duration::from_secs(120), || (rows_done() >= third).then_some(()))
        .unwrap_or_else(|| panic!("snapshot stuck at {} rows\n{}", rows_done(), df.log_text()));
    df.kill9();
    let at_kill = rows_done();
    assert!(!all_done(), "the snapshot ended before the kill; raise ROWS");
    // Per table: rows acknowledged by the sink before the kill (whole lines
    // only; a torn last line is cut and replayed) beyond its stored
    // progress: exactly these are read again after the restart.
    let delivered_at_kill = std::fs::read(&out).unwrap_or_default();
    let whole = &delivered_at_kill[..delivered_at_kill.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1)];
    let replay_window = |table: &str| -> usize {
        let delivered = String::from_utf8_lossy(whole)
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|e| e["op"] == "r" && e["source"]["table"] == table)
            .count();
        let stored = record(table).and_then(|r| r["rows_done"].as_u64()).unwrap_or(0) as usize;
        delivered - stored
    };
    let windows: BTreeMap<&str, usize> = ["txt", "bin", "comp"].into_iter().map(|t| (t, replay_window(t))).collect();
    let mut df = args.start(&log, &[]);
    wait_for(Duration::from_secs(300), || all_done().then_some(()))
        .unwrap_or_else(|| panic!("snapshot never finished (killed at {at_kill} rows)\n{}", df.log_text()));
    df.terminate();
    assert_eq!(df.wait_exit(Duration::from_secs(60)), Some(0), "{}", df.log_text());
    assert!(!df.log_text().contains("ERROR"), "{}", df.log_text());

    let events = read_jsonl(&out);
    for table in ["txt", "bin", "comp"] {
        let expected = table_keys(url, &db, table);
        assert_eq!(expected.len(), ROWS);
        let mut seen: BTreeMap<i64, Vec<String>> = BTreeMap::new();
        for e in events.iter().filter(|e| e["op"] == "r" && e["source"]["table"] == table) {
            seen.entry(e["after"]["n"].as_i64().unwrap()).or_default().push(event_key(table, &e["after"]));
        }
        let missing: Vec<_> = expected.keys().filter(|n| !seen.contains_key(n)).take(10).collect();
        assert!(missing.is_empty(), "{table}: rows never read (n): {missing:?}");
        for (n, keys) in &seen {
            let want = expected.get(n).unwrap_or_else(|| panic!("{table}: row n={n} does not exist"));
            assert!(keys.iter().all(|k| k == want), "{table}: row n={n} arrived with key {keys:?}, table has {want}");
        }
        // Read twice: exactly the rows delivered past the stored progress
        // at the kill (a misread resume key skips or repeats others).
        let repeated: usize = seen.values().map(|k| k.len() - 1).sum();
        assert_eq!(repeated, windows[table], "{table}: rows read twice (killed at {at_kill} rows done)");
        assert!(seen.values().all(|k| k.len() <= 2), "{table}: a row was read more than twice");
        eprintln!("{tag} {table}: {} rows, {repeated} repeated after the kill at {at_kill} rows done", seen.len());
    }
    mariadb_sql(url, &format!("DROP DATABASE {db}"));
}

#[test]
fn snapshot_keys_with_quotes_backslashes_nul_and_bytes_resume_exactly_default_sql_mode() {
    let url = service("mariadb");
    snapshot_with_kill_reads_every_key_once(&url, "dflt");
}

#[test]
fn snapshot_keys_with_quotes_backslashes_nul_and_bytes_resume_exactly_no_backslash_escapes() {
    let own = OwnMariadb::start();
    mariadb_sql(&own.url, "SET GLOBAL sql_mode = CONCAT(@@GLOBAL.sql_mode, ',NO_BACKSLASH_ESCAPES')");
    let mode = mariadb_sql(&own.url, "SELECT @@GLOBAL.sql_mode");
    assert!(mode.contains("NO_BACKSLASH_ESCAPES"), "{mode}");
    snapshot_with_kill_reads_every_key_once(&own.url, "nbe");
}
