//! `postgres` source against the real PostgreSQL of `scripts/services`:
//! every value type and every op with exact values, before-images per
//! REPLICA IDENTITY, unchanged TOAST, DDL mid-stream with the schema
//! history, a dropped slot, and set-up errors. Each test uses its own
//! tables, slot and publication.

use std::path::PathBuf;
use std::time::Duration;

use crate::support::{
    pg_lsn, pg_sql, read_jsonl, service, storage, unique_suffix, wait_for, Deltaforge, Pipeline, RunArgs,
};
use serde_json::{json, Value};

struct Setup {
    dir: tempfile::TempDir,
    cfg: PathBuf,
    db: PathBuf,
    out: PathBuf,
    log: PathBuf,
}

impl Setup {
    fn new(name: &str, source: Value) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.jsonl");
        let cfg = Pipeline::new(name)
            .tenant("test")
            .source("postgres", source)
            .file_sink("out", &out, Value::Null)
            .batch(500, 20)
            .write(dir.path().join("pipeline.yaml"));
        Setup { db: dir.path().join("state/deltaforge.db"), log: dir.path().join("deltaforge.log"), cfg, out, dir }
    }

    fn start(&self) -> Deltaforge {
        RunArgs::new(&self.cfg, &self.db).start(&self.log, &[("RUST_LOG", "info")])
    }

    fn events(&self) -> Vec<Value> {
        read_jsonl(&self.out)
    }

    fn wait_events(&self, df: &Deltaforge, n: usize) -> Vec<Value> {
        wait_for(Duration::from_secs(30), || {
            let e = self.events();
            (e.len() >= n).then_some(e)
        })
        .unwrap_or_else(|| panic!("expected {n} events, got {:?}\n{}", self.events(), df.log_text()))
    }
}

fn lsn(v: &Value) -> u64 {
    pg_lsn(v.as_str().expect("lsn string"))
}

fn cleanup(url: &str, slot: &str, sql: &str) {
    let _ = std::process::Command::new("psql")
        .args([url, "-X", "-q", "-c", &format!("SELECT pg_drop_replication_slot('{slot}') WHERE EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = '{slot}' AND active_pid IS NULL)")])
        .output();
    let _ = std::process::Command::new("psql").args([url, "-X", "-q", "-c", sql]).output();
}

#[test]
fn every_type_and_op_arrive_with_exact_values() {
    let url = service("postgres");
    let s = unique_suffix();
    let sd = s.replace('_', "-");
    let (all, full, mood, slot, publ) = (
        format!("pgty_{s}_all"),
        format!("pgty_{s}_full"),
        format!("pgty_{s}_mood"),
        format!("pgty_{s}"),
        format!("pgty_{s}"),
    );
    pg_sql(
        &url,
        &format!(
            "CREATE TYPE {mood} AS ENUM ('sad', 'happy');
             CREATE TABLE {all} (
               id int PRIMARY KEY, i2 smallint, i8 bigint, num numeric(30,6), f4 real, f8 double precision,
               f8nan double precision, f8inf double precision, t text, vc varchar(10), ch char(3), by bytea,
               b bool, d date, tm time, ts timestamp, tstz timestamptz, iv interval, u uuid, j json, jb jsonb,
               ai int[], at text[], mood {mood}, ip inet, net cidr, mac macaddr, nul text, big text);
             CREATE TABLE {full} (id int PRIMARY KEY, v text);
             ALTER TABLE {full} REPLICA IDENTITY FULL;"
        ),
    );
    let setup = Setup::new(
        &format!("pgty-{sd}"),
        json!({ "id": format!("pgty-{sd}"), "dsn": url, "tables": [format!("public.pgty_{s}_*")], "slot": slot, "publication": publ }),
    );
    let mut df = setup.start();
    df.wait_pg_streaming();
    df.wait_snapshot_over();

    let big: String = (0..400).map(|i| format!("{:x}", (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))).collect();
    pg_sql(
        &url,
        &format!(
            "INSERT INTO {all} VALUES (1, -32768, 9223372036854775807, 12345678901234567890.123456, 1.5, 2.25,
               'NaN', '-Infinity', 'héllo \"q\"', 'abc', 'ab', '\\xdeadbeef', true, '2024-02-29', '13:45:00.25',
               '2024-02-29 13:45:00.123456', '2024-02-29 13:45:00.5+02', '1 year 2 mons 3 days 04:05:06.5',
               'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{{\"a\": [1, null]}}', '{{\"b\": {{\"c\": true}}}}',
               '{{1,NULL,3}}', '{{\"x y\",z}}', 'happy', '192.168.1.5/24', '10.0.0.0/8', '08:00:2b:01:02:03', NULL,
               '{big}');"
        ),
    );
    // One transaction of two updates (a separate psql call: in one
    // multi-statement query, BEGIN would pull the insert into it).
    pg_sql(
        &url,
        &format!(
            "BEGIN;
             UPDATE {all} SET t = 'bye', i2 = 7 WHERE id = 1;
             UPDATE {all} SET id = 2 WHERE id = 1;
             COMMIT;"
        ),
    );
    pg_sql(
        &url,
        &format!(
            "DELETE FROM {all} WHERE id = 2;
             INSERT INTO {full} VALUES (1, 'a');
             UPDATE {full} SET v = 'b' WHERE id = 1;
             DELETE FROM {full} WHERE id = 1;
             INSERT INTO {all} (id) VALUES (3);
             TRUNCATE {all};"
        ),
    );
    setup.wait_events(&df, 9);
    // Give a stray extra event the chance to show up before counting.
    std::thread::sleep(Duration::from_millis(300));
    let events = setup.events();
    let ops: Vec<(&str, &str)> =
        events.iter().map(|e| (e["op"].as_str().unwrap(), e["source"]["table"].as_str().unwrap())).collect();
    let (a, f) = (all.as_str(), full.as_str());
    assert_eq!(ops, [("c", a), ("u", a), ("u", a), ("d", a), ("c", f), ("u", f), ("d", f), ("c", a), ("t", a)]);
    let insert = &events[0];
    let toast = json!({"__deltaforge_unchanged_toast": true});
    let expected_after = json!({
        "id": 1, "i2": -32768, "i8": 9223372036854775807i64, "num": "12345678901234567890.123456",
        "f4": 1.5, "f8": 2.25, "f8nan": "NaN", "f8inf": "-Infinity", "t": "héllo \"q\"", "vc": "abc",
        "ch": "ab ", "by": "3q2+7w==", "b": true, "d": "2024-02-29", "tm": "13:45:00.250000",
        "ts": "2024-02-29T13:45:00.123456", "tstz": "2024-02-29T11:45:00.500000Z", "iv": "P1Y2M3DT4H5M6.5S",
        "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "j": {"a": [1, null]}, "jb": {"b": {"c": true}},
        "ai": [1, null, 3], "at": ["x y", "z"], "mood": "happy", "ip": "192.168.1.5/24", "net": "10.0.0.0/8",
        "mac": "08:00:2b:01:02:03", "nul": null, "big": big,
    });
    assert_eq!(insert["after"], expected_after);
    assert_eq!(insert["before"], Value::Null);
    assert_eq!(insert["source"]["db"], "public");
    assert_eq!(insert["source"]["connector"], "postgres");
    assert_eq!(insert["schema_version"], 1);
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let ts = insert["source"]["ts_ms"].as_i64().unwrap();
    assert!((now_ms - ts).abs() < 120_000, "ts_ms {ts} is not the commit time (now {now_ms})");

    // Update without a key change: no before-image (REPLICA IDENTITY DEFAULT),
    // the untouched TOASTed column is marked.
    let mut after = expected_after.clone();
    after["t"] = json!("bye");
    after["i2"] = json!(7);
    after["big"] = toast.clone();
    assert_eq!(events[1]["before"], Value::Null);
    assert_eq!(events[1]["after"], after);
    // Key change: before-image holds the old key.
    after["id"] = json!(2);
    assert_eq!(events[2]["before"], json!({"id": 1}));
    assert_eq!(events[2]["after"], after);
    // Both updates are one transaction: same tx id and commit LSN, indexes 0 and 1.
    assert_eq!(events[1]["tx_id"], events[2]["tx_id"]);
    let (id1, id2) = (events[1]["id"].as_str().unwrap(), events[2]["id"].as_str().unwrap());
    assert!(id1.ends_with(":0") && id2.ends_with(":1"), "{id1} {id2}");
    assert_eq!(id1.rsplit_once(':').unwrap().0, id2.rsplit_once(':').unwrap().0);
    assert!(lsn(&events[1]["source"]["position"]["lsn"]) < lsn(&events[2]["source"]["position"]["lsn"]));
    assert_eq!(events[1]["source"]["position"]["tx_id"].to_string(), events[1]["tx_id"].as_str().unwrap());
    // Delete: the key.
    assert_eq!(events[3]["before"], json!({"id": 2}));
    assert_eq!(events[3]["after"], Value::Null);
    // REPLICA IDENTITY FULL: whole old rows.
    assert_eq!(events[4]["after"], json!({"id": 1, "v": "a"}));
    assert_eq!(events[5]["before"], json!({"id": 1, "v": "a"}));
    assert_eq!(events[5]["after"], json!({"id": 1, "v": "b"}));
    assert_eq!(events[6]["before"], json!({"id": 1, "v": "b"}));
    assert_eq!(events[6]["after"], Value::Null);
    // Insert with NULLs, then truncate.
    assert_eq!(events[7]["after"]["id"], 3);
    assert_eq!(events[7]["after"]["b"], Value::Null);
    assert_eq!(events[8]["op"], "t");
    assert_eq!(events[8]["before"], Value::Null);
    assert_eq!(events[8]["after"], Value::Null);

    // The checkpoint reaches the last transaction's commit LSN, in the documented shape.
    let last_commit = lsn(&json!(events[8]["id"].as_str().unwrap().split(':').nth(1).unwrap()));
    let cp = wait_for(Duration::from_secs(10), || {
        storage::checkpoint(&setup.db, &format!("pgty-{sd}")).filter(|c| lsn(&c["position"]["lsn"]) >= last_commit)
    })
    .unwrap_or_else(|| panic!("checkpoint did not reach {last_commit:X}\n{}", df.log_text()));
    assert!(cp["position"]["lsn"].as_str().unwrap().contains('/'));
    // And the server is told no more than the checkpoint.
    let confirmed =
        pg_sql(&url, &format!("SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '{slot}'"));
    let cp_now = storage::checkpoint(&setup.db, &format!("pgty-{sd}")).unwrap();
    assert!(lsn(&json!(confirmed.trim())) <= lsn(&cp_now["position"]["lsn"]), "confirmed {confirmed} > {cp_now}");

    df.terminate();
    assert_eq!(df.wait_exit(Duration::from_secs(20)), Some(0), "{}", df.log_text());
    cleanup(&url, &slot, &format!("DROP PUBLICATION {publ}; DROP TABLE {all}, {full}; DROP TYPE {mood};"));
    drop(setup.dir);
}

#[test]
fn ddl_mid_stream_is_decoded_with_each_schema_version() {
    let url = service("postgres");
    let s = unique_suffix();
    let sd = s.replace('_', "-");
    let (t, slot) = (format!("pgddl_{s}"), format!("pgddl_{s}"));
    pg_sql(&url, &format!("CREATE TABLE {t} (id int PRIMARY KEY, a text)"));
    let setup = Setup::new(
        &format!("pgddl-{sd}"),
        json!({ "id": format!("pgddl-{sd}"), "dsn": url, "tables": [format!("public.{t}")], "slot": slot }),
    );
    let mut df = setup.start();
    df.wait_pg_streaming();
    df.wait_snapshot_over();
    pg_sql(&url, &format!("INSERT INTO {t} VALUES (1, 'x')"));
    setup.wait_events(&df, 1);
    // Let the first event's checkpoint become durable before the DDL.
    wait_for(Duration::from_secs(10), || storage::checkpoint(&setup.db, &format!("pgddl-{sd}")))
        .unwrap_or_else(|| panic!("no checkpoint\n{}", df.log_text()));
    pg_sql(&url, &format!("ALTER TABLE {t} ADD COLUMN b int; INSERT INTO {t} VALUES (2, 'y', 5)"));
    setup.wait_events(&df, 2);
    pg_sql(
        &url,
        &format!("ALTER TABLE {t} DROP COLUMN a; INSERT INTO {t} VALUES (3, 6); UPDATE {t} SET b = 7 WHERE id = 1"),
    );
    let events = setup.wait_events(&df, 4);
    assert_eq!(events[0]["after"], json!({"id": 1, "a": "x"}));
    assert_eq!(events[0]["schema_version"], 1);
    assert_eq!(events[1]["after"], json!({"id": 2, "a": "y", "b": 5}));
    assert_eq!(events[1]["schema_version"], 2);
    assert_eq!(events[2]["after"], json!({"id": 3, "b": 6}));
    assert_eq!(events[2]["schema_version"], 3);
    assert_eq!(events[3]["after"], json!({"id": 1, "b": 7}));
    assert_eq!(events[3]["schema_version"], 3);
    df.terminate();
    assert_eq!(df.wait_exit(Duration::from_secs(20)), Some(0), "{}", df.log_text());

    // The history in storage: three versions (initial, ADD COLUMN, DROP
    // COLUMN), each with the position it became active at and the durable
    // checkpoint at that moment.
    let versions = storage::log_records(&setup.db, "schemas", &format!("test/public/{t}"));
    assert_eq!(versions.len(), 3, "{versions:#?}");
    let cols = |v: &Value| -> Vec<String> {
        v["schema"]["columns"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(cols(&versions[0]), ["id", "a"]);
    assert_eq!(cols(&versions[1]), ["id", "a", "b"]);
    assert_eq!(cols(&versions[2]), ["id", "b"]);
    assert_eq!(versions[1]["schema"]["columns"][2]["type_name"], "int4");
    assert_eq!(versions[0]["schema"]["columns"][0]["key"], true);
    for (i, v) in versions.iter().enumerate() {
        assert_eq!(v["version"], i as u64 + 1);
    }
    let p1 = lsn(&versions[1]["position"]["lsn"]);
    let p2 = lsn(&versions[2]["position"]["lsn"]);
    assert!(lsn(&versions[0]["position"]["lsn"]) < p1 && p1 < p2, "{versions:#?}");
    assert_eq!(lsn(&events[1]["source"]["position"]["lsn"]), p1, "version 2 starts at its first event");
    for v in &versions[1..] {
        let cp = lsn(&v["checkpoint"]["lsn"]);
        assert!(cp < lsn(&v["position"]["lsn"]), "checkpoint {cp:X} of {v}");
    }
    cleanup(&url, &slot, &format!("DROP PUBLICATION deltaforge_pgddl_{s}; DROP TABLE {t};"));
}

#[test]
fn dropped_slot_stops_with_a_clear_error_and_reads_nothing() {
    let url = service("postgres");
    let s = unique_suffix();
    let sd = s.replace('_', "-");
    let (t, slot) = (format!("pgdrop_{s}"), format!("pgdrop_{s}"));
    pg_sql(&url, &format!("CREATE TABLE {t} (id int PRIMARY KEY)"));
    let setup = Setup::new(
        &format!("pgdrop-{sd}"),
        json!({ "id": format!("pgdrop-{sd}"), "dsn": url, "tables": [format!("public.{t}")], "slot": slot, "publication": slot }),
    );
    let mut df = setup.start();
    df.wait_pg_streaming();
    df.wait_snapshot_over();
    pg_sql(&url, &format!("INSERT INTO {t} VALUES (1)"));
    setup.wait_events(&df, 1);
    wait_for(Duration::from_secs(10), || storage::checkpoint(&setup.db, &format!("pgdrop-{sd}")))
        .unwrap_or_else(|| panic!("no checkpoint\n{}", df.log_text()));
    df.terminate();
    assert_eq!(df.wait_exit(Duration::from_secs(20)), Some(0), "{}", df.log_text());

    wait_for(Duration::from_secs(10), || {
        let out = pg_sql(
            &url,
            &format!("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{slot}' AND active_pid IS NULL"),
        );
        (out.trim() == "1").then_some(())
    })
    .expect("slot released");
    pg_sql(&url, &format!("SELECT pg_drop_replication_slot('{slot}'); INSERT INTO {t} VALUES (2)"));
    let mut df = setup.start();
    let code = df.wait_exit(Duration::from_secs(30));
    let log = df.log_text();
    assert_eq!(code, Some(1), "expected a fatal exit\n{log}");
    assert!(log.contains(&format!("replication slot \"{slot}\" does not exist")), "{log}");
    assert!(log.contains(&format!("deltaforge checkpoints reset pgdrop-{sd}")), "{log}");
    assert_eq!(setup.events().len(), 1, "nothing may be read after the slot was dropped");
    let slots = pg_sql(&url, &format!("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{slot}'"));
    assert_eq!(slots.trim(), "0", "the slot must not be silently re-created");
    cleanup(&url, &slot, &format!("DROP PUBLICATION {slot}; DROP TABLE {t};"));
}

#[test]
fn setup_errors_are_clear_and_fatal() {
    let url = service("postgres");
    let s = unique_suffix();
    let sd = s.replace('_', "-");
    let t = format!("pgerr_{s}");
    pg_sql(&url, &format!("CREATE TABLE {t} (id int PRIMARY KEY)"));
    // Missing publication with create_publication: false → the SQL to run.
    let setup = Setup::new(
        &format!("pgerr-{sd}"),
        json!({ "id": format!("pgerr-{sd}"), "dsn": url, "tables": [format!("public.{t}")], "slot": t, "create_publication": false }),
    );
    let mut df = setup.start();
    assert_eq!(df.wait_exit(Duration::from_secs(30)), Some(1), "{}", df.log_text());
    let log = df.log_text();
    assert!(
        log.contains(&format!("CREATE PUBLICATION \"deltaforge_pgerr_{s}\" FOR TABLE \"public\".\"{t}\"")),
        "{log}"
    );
    // Unknown database; the password never appears.
    let bad = url.replace("postgres@", "postgres:hunter2@").replace("/deltaforge", "/no_such_db");
    let setup = Setup::new(
        &format!("pgerr2-{sd}"),
        json!({ "id": format!("pgerr2-{sd}"), "dsn": bad, "tables": [format!("public.{t}")] }),
    );
    let mut df = setup.start();
    assert_eq!(df.wait_exit(Duration::from_secs(30)), Some(1), "{}", df.log_text());
    let log = df.log_text();
    assert!(log.contains("no_such_db") && log.contains("does not exist"), "{log}");
    assert!(!log.contains("hunter2"), "password leaked:\n{log}");
    // A bad config is refused before anything runs.
    let setup =
        Setup::new(&format!("pgerr3-{sd}"), json!({ "id": format!("pgerr3-{sd}"), "dsn": url, "tables": ["nodot"] }));
    let mut df = setup.start();
    assert_ne!(df.wait_exit(Duration::from_secs(30)), Some(0));
    assert!(df.log_text().contains("schema.table"), "{}", df.log_text());
    cleanup(&url, &t, &format!("DROP TABLE {t};"));
}
