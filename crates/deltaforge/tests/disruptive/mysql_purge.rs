//! The MySQL/MariaDB source refuses to resume from a checkpoint whose
//! binlog the server has purged (`PURGE BINARY LOGS` while the pipeline was
//! stopped), by GTID and by file/position: the pipeline stops with an error
//! naming what is missing and the recovery command, and delivers nothing
//! from after the gap.
//!
//! Also: restarting MariaDB mid-stream; the pipeline reconnects and loses
//! nothing, resuming by GTID and by file/position. Both tests change the
//! shared server (purge, restart), so they run one after the other in one
//! test function, and this file holds no other test.

use std::path::PathBuf;
use std::time::Duration;

use crate::support::{mariadb_sql, read_jsonl, service, service_action, storage, wait_for, Deltaforge, RunArgs};

struct Setup {
    url: String,
    db: String,
    id: String,
    dir: tempfile::TempDir,
    cfg: PathBuf,
}

impl Setup {
    fn new(tag: &str, use_gtid: bool) -> Self {
        let url = service("mariadb");
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() % 1_000_000_000;
        let db = format!("dft_{tag}_{}_{nanos}", std::process::id());
        mariadb_sql(&url, &format!("CREATE DATABASE {db}; CREATE TABLE {db}.t (id INT PRIMARY KEY)"));
        let dir = tempfile::tempdir().unwrap();
        let id = format!("my-{}-{nanos}", tag.replace('_', "-"));
        let cfg = dir.path().join("pipeline.yaml");
        crate::support::Pipeline::new(tag.replace('_', "-"))
            .tenant("test")
            .source(
                "mysql",
                serde_json::json!({ "id": id, "dsn": url, "tables": [format!("{db}.t")], "use_gtid": use_gtid, "heartbeat_secs": 1 }),
            )
            .file_sink("out", &dir.path().join("out.jsonl"), serde_json::Value::Null)
            .batch(100, 20)
            .write(&cfg);
        Setup { url, db, id, dir, cfg }
    }

    fn start(&self) -> Deltaforge {
        let store = self.dir.path().join("df.db");
        RunArgs::new(&self.cfg, &store).start(&self.dir.path().join("df.log"), &[])
    }

    fn checkpoint(&self) -> Option<serde_json::Value> {
        storage::checkpoint(&self.dir.path().join("df.db"), &self.id)
    }

    fn insert(&self, from: u32, to: u32) {
        let values: Vec<String> = (from..to).map(|i| format!("({i})")).collect();
        mariadb_sql(&self.url, &format!("INSERT INTO {}.t VALUES {}", self.db, values.join(",")));
    }

    fn ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> =
            read_jsonl(&self.dir.path().join("out.jsonl")).iter().map(|e| e["after"]["id"].as_u64().unwrap()).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    fn wait_ids(&self, df: &Deltaforge, n: usize) {
        wait_for(Duration::from_secs(60), || (self.ids().len() >= n).then_some(()))
            .unwrap_or_else(|| panic!("expected {n} rows, got {}\n{}", self.ids().len(), df.log_text()));
    }
}

fn purge_case(use_gtid: bool) {
    let s = Setup::new(if use_gtid { "purge_gtid" } else { "purge_file" }, use_gtid);
    let mut df = s.start();
    wait_for(Duration::from_secs(30), || s.checkpoint()).unwrap_or_else(|| panic!("no checkpoint\n{}", df.log_text()));
    s.insert(1, 11);
    s.wait_ids(&df, 10);
    df.terminate();
    assert_eq!(df.wait_exit(Duration::from_secs(20)), Some(0), "{}", df.log_text());
    let ck = s.checkpoint().unwrap();
    let file = ck["position"]["file"].as_str().unwrap().to_string();
    let gtid = ck["position"]["gtid_set"].as_str().unwrap().to_string();

    // While stopped: more changes, then the binlog holding them is purged.
    s.insert(11, 21);
    // MariaDB keeps a file until its binlog checkpoint has moved on: rotate
    // and purge until the checkpoint's file is really gone.
    let mut current = String::new();
    let purged = wait_for(Duration::from_secs(20), || {
        mariadb_sql(&s.url, "FLUSH BINARY LOGS");
        current = mariadb_sql(&s.url, "SHOW MASTER STATUS").split('\t').next().unwrap().to_string();
        mariadb_sql(&s.url, &format!("PURGE BINARY LOGS TO '{current}'"));
        let logs = mariadb_sql(&s.url, "SHOW BINARY LOGS");
        (!logs.lines().any(|l| l.split('\t').next() == Some(file.as_str()))).then_some(())
    });
    assert!(purged.is_some(), "could not purge {file}");
    let oldest =
        mariadb_sql(&s.url, "SHOW BINARY LOGS").lines().next().unwrap().split('\t').next().unwrap().to_string();
    s.insert(21, 31);

    let mut df = s.start();
    let code = df.wait_exit(Duration::from_secs(30));
    let text = df.log_text();
    assert_eq!(code, Some(1), "expected a fatal stop\n{text}");
    assert!(text.contains(&format!("deltaforge checkpoints reset {}", s.id)), "{text}");
    assert!(text.contains("purged"), "{text}");
    assert!(text.contains(&oldest), "the oldest remaining binlog is named: {text}");
    if use_gtid {
        assert!(text.contains(&gtid), "the checkpoint's GTIDs are named: {text}");
    } else {
        assert!(text.contains(&file), "the missing file is named: {text}");
    }
    assert_eq!(s.ids(), (1..=10).collect::<Vec<u64>>(), "nothing after the gap may be delivered");
    assert_eq!(s.checkpoint().unwrap()["position"], ck["position"], "the checkpoint must not move");
    mariadb_sql(&s.url, &format!("DROP DATABASE {}", s.db));
}

fn restart_mariadb() {
    service_action("mariadb", "stop");
    std::thread::sleep(Duration::from_millis(500));
    service("mariadb");
}

fn restart_case(use_gtid: bool) {
    let s = Setup::new(if use_gtid { "restart_gtid" } else { "restart_file" }, use_gtid);
    let mut df = s.start();
    wait_for(Duration::from_secs(30), || s.checkpoint()).unwrap_or_else(|| panic!("no checkpoint\n{}", df.log_text()));
    s.insert(1, 101);
    s.wait_ids(&df, 100);
    restart_mariadb();
    s.insert(101, 201);
    s.wait_ids(&df, 200);
    // And once more with changes written while the source was disconnected.
    service_action("mariadb", "stop");
    service("mariadb");
    s.insert(201, 301);
    s.wait_ids(&df, 300);
    assert_eq!(s.ids(), (1..=300).collect::<Vec<u64>>());
    assert!(df.log_text().contains("reading the binlog") || df.log_text().contains("connecting"), "{}", df.log_text());
    df.terminate();
    assert_eq!(df.wait_exit(Duration::from_secs(20)), Some(0), "{}", df.log_text());
    mariadb_sql(&s.url, &format!("DROP DATABASE {}", s.db));
}

#[test]
fn purged_binlog_is_a_clear_error_and_server_restarts_lose_nothing() {
    let _serial = crate::serial();
    restart_case(true);
    restart_case(false);
    purge_case(true);
    purge_case(false);
}
