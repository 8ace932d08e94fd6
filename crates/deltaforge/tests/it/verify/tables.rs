//! `verify` of the table sinks against real servers and the real binary:
//! PostgreSQL → PostgreSQL, PostgreSQL → MariaDB and MariaDB → PostgreSQL
//! through the `postgres` and `mysql` sinks (`mode: upsert`, a `tables`
//! template). A writer runs while the pipeline is killed with `kill -9`
//! three times (the parent module's [`super::writer_under_kill_9`]);
//! `verify` must report equal (exit 0) while the writer still writes, both
//! by chunk hashes and with `--no-hashes`. Then a target row is deleted, a
//! value changed and an extra row inserted in the target: both methods
//! must report exactly those keys; once the writer stops, only the
//! faults' ranges differ by hash.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{json, Value};

use super::streams::{mariadb_setup, pg_setup, Setup};
use super::{report_summary, verify, writer_under_kill_9, Running, MISSING, TAMPERED};
use crate::support::sinks::{pg_create_database, pg_drop_database};
use crate::support::{mariadb_command, mariadb_sql, pg_command, pg_sql, service, unique_suffix, RunArgs};

/// A row inserted in the target only.
const EXTRA: i64 = 900_100;

/// A table sink's target database.
struct Target {
    kind: &'static str,
    config: Value,
    /// Runs SQL on the target.
    sql: Box<dyn Fn(&str)>,
    /// Progress: the largest writer id in the target (0 before the table exists).
    max_id: Box<dyn Fn() -> u64>,
    /// The `pad` of row `id` in the target (empty when absent).
    pad: Box<dyn Fn(i64) -> String>,
    /// The target table as SQL names it.
    table: String,
    cleanup: Box<dyn FnOnce()>,
}

fn number(out: std::io::Result<std::process::Output>) -> u64 {
    out.ok().and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok()).unwrap_or(0)
}

fn text(out: std::io::Result<std::process::Output>) -> String {
    out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default()
}

fn pg_target(table: &str) -> Target {
    let pg = service("postgres");
    let name = format!("dfvt_{}", unique_suffix());
    let url = pg_create_database(&pg, &name);
    let (u1, u2, u3, t) = (url.clone(), url.clone(), url.clone(), format!("public.{table}"));
    let probe = format!("SELECT coalesce(max(id), 0) FROM {t} WHERE id < 900000");
    let pad = format!("SELECT pad FROM {t} WHERE id = ");
    Target {
        kind: "postgres",
        config: json!({ "id": "replica", "dsn": url, "tables": { "template": "public.${table}" } }),
        sql: Box::new(move |sql| {
            pg_sql(&u1, sql);
        }),
        max_id: Box::new(move || number(pg_command(&u2).arg("-c").arg(&probe).output())),
        pad: Box::new(move |id| text(pg_command(&u3).arg("-c").arg(format!("{pad}{id}")).output())),
        table: t,
        cleanup: Box::new(move || pg_drop_database(&pg, &name)),
    }
}

fn mariadb_target(table: &str) -> Target {
    let maria = service("mariadb");
    let db = format!("dfvt_{}", unique_suffix());
    mariadb_sql(&maria, &format!("CREATE DATABASE {db}"));
    let url = format!("{}/{db}", maria.rsplit_once('/').map(|(b, _)| b).unwrap_or(&maria));
    let (u1, u2, u3, t) = (url.clone(), url.clone(), url.clone(), format!("{db}.{table}"));
    let probe = format!("SELECT COALESCE(MAX(id), 0) FROM {t} WHERE id < 900000");
    let pad = format!("SELECT pad FROM {t} WHERE id = ");
    Target {
        kind: "mysql",
        config: json!({ "id": "replica", "dsn": url, "tables": { "template": format!("{db}.${{table}}") } }),
        sql: Box::new(move |sql| {
            mariadb_sql(&u1, sql);
        }),
        max_id: Box::new(move || number(mariadb_command(&u2).arg("-e").arg(&probe).output())),
        pad: Box::new(move |id| text(mariadb_command(&u3).arg("-e").arg(format!("{pad}{id}")).output())),
        table: t,
        cleanup: Box::new(move || {
            mariadb_sql(&maria, &format!("DROP DATABASE {db}"));
        }),
    }
}

/// The keys a report lists under `k`.
fn keys(report: &Value, k: &str) -> Vec<(String, String)> {
    report[k]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["table"].as_str().unwrap().into(), r["key"].as_str().unwrap().into()))
        .collect()
}

/// Runs `verify` by chunk hashes and with `--no-hashes`; checks each report.
fn both_methods(cfg: &Path, db: &Path, name: &str, check: &dyn Fn(i32, &Value)) {
    for (extra, hashed) in [(&[][..], true), (&["--no-hashes"][..], false)] {
        let (code, report, took) = verify(cfg, db, name, extra);
        eprintln!("verify {extra:?}: exit {code} in {took:?}: {}", report_summary(&report));
        let method = report["tables"][0]["method"].as_str().unwrap_or("");
        assert_eq!(method.starts_with("chunk hashes"), hashed, "{report:#}");
        check(code, &report);
    }
}

fn scenario(setup: Setup, target: Target, name: &str, dir: &Path) {
    let cfg = dir.join("pipeline.yaml");
    setup.pipeline.sink(target.kind, target.config.clone()).batch(200, 20).write(&cfg);
    let src = setup.src;
    let db = dir.join("state/df.db");
    let log = dir.join("df.log");
    let args = RunArgs::new(&cfg, &db);
    let Running { mut df, stop, writer } = writer_under_kill_9(&src, &args, &log, &|| (target.max_id)());

    both_methods(&cfg, &db, name, &|code, report| {
        assert_eq!(code, 0, "verify must find the target equal while the writer writes: {report:#}");
        assert!(report["rows_compared"].as_u64().unwrap() >= 6, "{report:#}");
    });

    // Faults in the target, while the pipeline runs (it never touches
    // the fixture rows again).
    let t = &target.table;
    (target.sql)(&format!(
        "DELETE FROM {t} WHERE id = {MISSING}; UPDATE {t} SET pad = 'tampered' WHERE id = {TAMPERED}; \
         INSERT INTO {t} VALUES ({EXTRA}, 7, 'extra');"
    ));
    let event_table = src.event_table.clone();
    both_methods(&cfg, &db, name, &|code, report| {
        assert_eq!(code, 1, "{report:#}");
        let et = event_table.clone();
        assert_eq!(keys(report, "missing"), vec![(et.clone(), format!("[{MISSING}]"))], "{report:#}");
        assert_eq!(keys(report, "extra"), vec![(et.clone(), format!("[{EXTRA}]"))], "{report:#}");
        let differing: Vec<(String, String)> = report["differing"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["table"].as_str().unwrap().into(), r["key"].as_str().unwrap().into()))
            .collect();
        assert_eq!(differing, vec![(et, format!("[{TAMPERED}]"))], "{report:#}");
        assert_eq!(
            report["differing"][0]["columns"],
            json!([{ "column": "pad", "source": "fixture", "sink": "tampered" }]),
            "{report:#}"
        );
        assert_eq!(report["caught_up"], true, "{report:#}");
    });

    // Repair while the writer writes: the missing and the tampered rows
    // come back through the pipeline's backfill; the extra row stays (a
    // backfill cannot delete it) and is the one difference left.
    assert_eq!((target.pad)(MISSING), "");
    let (code, out, took) = verify(&cfg, &db, name, &["--repair", "--yes"]);
    eprintln!("verify --repair: exit {code} in {took:?}: {}", out["repair"]);
    assert_eq!(code, 1, "{out:#}");
    assert_eq!(out["repair"]["keys"], 2, "{out:#}");
    assert_eq!(out["repair"]["not_repaired_extra"], 1, "{out:#}");
    let requests = out["repair"]["requests"].as_array().unwrap();
    assert!(!requests.is_empty() && requests.iter().all(|r| r["outcome"] == "done"), "{out:#}");
    let after = &out["after"];
    assert_eq!(keys(after, "missing"), vec![], "{out:#}");
    assert_eq!(after["differing"], json!([]), "{out:#}");
    assert_eq!(keys(after, "extra"), vec![(event_table.clone(), format!("[{EXTRA}]"))], "{out:#}");
    assert_eq!((target.pad)(MISSING), "fixture");
    assert_eq!((target.pad)(TAMPERED), "fixture");
    (target.sql)(&format!("UPDATE {t} SET pad = 'tampered' WHERE id = {TAMPERED}"));
    let refused = std::process::Command::new(crate::support::BIN)
        .args(["verify", "--config", cfg.to_str().unwrap(), "--storage-path", db.to_str().unwrap(), name, "--repair"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "--repair without a terminal must ask for --yes: {stderr}");
    assert!(stderr.contains("pass --yes"), "{stderr}");
    assert_eq!((target.pad)(TAMPERED), "tampered", "nothing is repaired without confirmation");
    (target.sql)(&format!("UPDATE {t} SET pad = 'fixture' WHERE id = {TAMPERED}"));

    // Writer stopped, target caught up: the hashes of both servers agree
    // on every range but the extra row's (the canonical row text is the
    // same on both), so only that range is read row by row.
    stop.store(true, Ordering::Relaxed);
    let txs = writer.join().expect("writer");
    assert!(txs > 50, "the writer wrote too little: {txs}");
    std::thread::sleep(Duration::from_secs(3));
    let (code, report, _) = verify(&cfg, &db, name, &[]);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(keys(&report, "extra"), vec![(event_table, format!("[{EXTRA}]"))], "{report:#}");
    let method = report["tables"][0]["method"].as_str().unwrap_or("").to_string();
    let read: u64 = method
        .split(", ")
        .nth(1)
        .and_then(|p| p.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{method}"));
    assert!(read <= 1, "{method}: {report:#}");
    df.terminate();
    assert_eq!(df.wait_exit(Duration::from_secs(30)), Some(0), "{}", df.log_text());
    (setup.cleanup)();
    (target.cleanup)();
}

macro_rules! table_test {
    ($name:ident, $setup:ident, $target:ident) => {
        #[test]
        fn $name() {
            let dir = tempfile::tempdir().unwrap();
            let id = format!("vt-{}", unique_suffix().replace('_', "-"));
            let setup = $setup(&id, dir.path());
            let target = $target(&setup.table);
            scenario(setup, target, &id, dir.path());
        }
    };
}

table_test!(pg_to_pg_table_sink_equal_under_kill_9_and_target_faults_found_by_both_methods, pg_setup, pg_target);
table_test!(
    pg_to_mariadb_table_sink_equal_under_kill_9_and_target_faults_found_by_both_methods,
    pg_setup,
    mariadb_target
);
table_test!(
    mariadb_to_pg_table_sink_equal_under_kill_9_and_target_faults_found_by_both_methods,
    mariadb_setup,
    pg_target
);
