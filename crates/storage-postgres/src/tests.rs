//! Runs against the real server of `scripts/services/postgres.sh`
//! (started by the test if needed), or the DSN in
//! `DELTAFORGE_TEST_PG_DSN`. Each test uses its own schema, dropped at
//! the end.

use std::sync::Arc;

use deltaforge_storage::{StorageBackend, StorageError};

use crate::PostgresBackend;
use deltaforge_common::redact_dsn;

/// The test server's DSN, starting it through the repository script.
fn dsn() -> String {
    static DSN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DSN.get_or_init(|| {
        if let Ok(d) = std::env::var("DELTAFORGE_TEST_PG_DSN") {
            return d;
        }
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/services/postgres.sh");
        let out = std::process::Command::new("bash").arg(&script).output().expect("running postgres.sh");
        assert!(out.status.success(), "postgres.sh failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().trim().to_string()
    })
    .clone()
}

/// Drops the test schema when the test ends.
pub(crate) struct DropSchema(String);

impl Drop for DropSchema {
    fn drop(&mut self) {
        let _ = std::process::Command::new("psql")
            .args([&dsn(), "-X", "-q", "-c", &format!("DROP SCHEMA IF EXISTS {} CASCADE", self.0)])
            .output();
    }
}

fn unique_schema() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("dft_{}_{}_{}", std::process::id(), nanos % 1_000_000_000, N.fetch_add(1, Ordering::Relaxed))
}

async fn make_store() -> (Arc<dyn StorageBackend>, DropSchema) {
    let schema = unique_schema();
    let store = PostgresBackend::connect_with_schema(&dsn(), &schema).await.unwrap();
    (Arc::new(store), DropSchema(schema))
}

deltaforge_storage::conformance::all_conformance_tests!(make_store);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_reconnect_and_tables_are_reused() {
    let schema = unique_schema();
    let _guard = DropSchema(schema.clone());
    let a = PostgresBackend::connect_with_schema(&dsn(), &schema).await.unwrap();
    assert_eq!(a.kind(), "postgres");
    a.kv_put("checkpoints", "src", r#"{"seq":1}"#, None).await.unwrap();
    let seq = a.log_append("schemas", "t/db/x", "v1").await.unwrap();
    drop(a);
    let b = PostgresBackend::connect_with_schema(&dsn(), &schema).await.unwrap();
    assert_eq!(b.kv_get("checkpoints", "src").await.unwrap().as_deref(), Some(r#"{"seq":1}"#));
    assert!(b.log_append("schemas", "t/db/x", "v2").await.unwrap() > seq);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_schema_version_is_refused() {
    let schema = unique_schema();
    let _guard = DropSchema(schema.clone());
    drop(PostgresBackend::connect_with_schema(&dsn(), &schema).await.unwrap());
    let out = std::process::Command::new("psql")
        .args([&dsn(), "-X", "-q", "-c", &format!("UPDATE {schema}.meta SET value = '99'")])
        .output()
        .unwrap();
    assert!(out.status.success());
    match PostgresBackend::connect_with_schema(&dsn(), &schema).await {
        Err(StorageError::Unusable { reason, .. }) => assert!(reason.contains("\"99\""), "{reason}"),
        other => panic!("expected Unusable, got {other:?}"),
    }
}

#[tokio::test]
async fn unreachable_server_names_the_redacted_dsn() {
    let err = PostgresBackend::connect("postgres://app:s3cret@127.0.0.1:1/x").await.unwrap_err().to_string();
    assert!(err.contains("postgres://app:***@127.0.0.1:1/x"), "{err}");
    assert!(err.contains("cannot connect"), "{err}");
    assert!(!err.contains("s3cret"), "{err}");
    let bad = PostgresBackend::connect("postgres://a:b@h:notaport/x").await.unwrap_err().to_string();
    assert!(bad.contains("malformed") && !bad.contains(":b@"), "{bad}");
}

#[test]
fn redaction() {
    assert_eq!(redact_dsn("postgres://u@h/d"), "postgres://u@h/d");
    assert_eq!(redact_dsn("postgresql://u:p%40x@h:1/d?sslmode=disable"), "postgresql://u:***@h:1/d?sslmode=disable");
    assert_eq!(redact_dsn("postgres://h/d?user=u&password=p"), "postgres://h/d?user=u&password=***");
}
