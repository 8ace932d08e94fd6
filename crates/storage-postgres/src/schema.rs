//! The layout of the backend's tables, their creation and the schema
//! version check.
//!
//! This module owns the DDL (schema version 1, see the crate docs for the
//! table list) and [`migrate`], which creates the tables in one transaction
//! under an advisory lock so that instances starting together do not race,
//! refuses a schema written by an unknown version, and purges expired keys.
//! The table and column names mirror the SQLite backend's and must never
//! change without a new schema version. It must never drop or rewrite
//! existing rows other than expired keys.

use deltaforge_storage::{Result, StorageError};
use tokio_postgres::Client;

/// The schema version this code writes and understands (`meta.schema_version`).
const SCHEMA_VERSION: &str = "1";
/// Default PostgreSQL schema holding the tables.
pub const DEFAULT_SCHEMA: &str = "deltaforge";

/// Checks a schema name: lowercase letters, digits and `_`, not starting with a digit.
pub(crate) fn valid_schema(schema: &str) -> bool {
    !schema.is_empty()
        && schema.len() <= 63
        && schema.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !schema.starts_with(|c: char| c.is_ascii_digit())
}

/// Creates the tables of schema `s` if needed and checks the schema
/// version; `location` (the redacted DSN) names the store in errors.
pub(crate) async fn migrate(client: &mut Client, s: &str, location: &str) -> Result<()> {
    let op = || format!("create tables in schema {s} of {location}");
    let tx = client.transaction().await.map_err(|e| StorageError::backend(op(), e))?;
    tx.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", &[&format!("deltaforge-migrate:{s}")])
        .await
        .map_err(|e| StorageError::backend(op(), e))?;
    let ddl = format!(
        r#"
CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {s}.meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS {s}.kv (
    namespace  TEXT NOT NULL COLLATE "C",
    key        TEXT NOT NULL COLLATE "C",
    value      TEXT NOT NULL,
    expires_at TIMESTAMPTZ NULL,
    PRIMARY KEY (namespace, key)
);
CREATE TABLE IF NOT EXISTS {s}.log (
    seq        BIGSERIAL PRIMARY KEY,
    namespace  TEXT NOT NULL COLLATE "C",
    key        TEXT NOT NULL COLLATE "C",
    value      TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS log_namespace_seq ON {s}.log (namespace, seq);
CREATE TABLE IF NOT EXISTS {s}.slots (
    namespace TEXT NOT NULL COLLATE "C",
    key       TEXT NOT NULL COLLATE "C",
    version   BIGINT NOT NULL,
    value     TEXT NOT NULL,
    PRIMARY KEY (namespace, key)
);
CREATE TABLE IF NOT EXISTS {s}.queue (
    id         BIGSERIAL PRIMARY KEY,
    namespace  TEXT NOT NULL COLLATE "C",
    key        TEXT NOT NULL COLLATE "C",
    value      TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS queue_namespace_key_id ON {s}.queue (namespace, key, id);
INSERT INTO {s}.meta (key, value) VALUES ('schema_version', '{SCHEMA_VERSION}') ON CONFLICT (key) DO NOTHING;
"#
    );
    tx.batch_execute(&ddl).await.map_err(|e| StorageError::backend(op(), e))?;
    let version: Option<String> = tx
        .query_opt(&format!("SELECT value FROM {s}.meta WHERE key = 'schema_version'"), &[])
        .await
        .map_err(|e| StorageError::backend(op(), e))?
        .map(|r| r.get(0));
    if version.as_deref() != Some(SCHEMA_VERSION) {
        // Roll back now rather than on drop, so that the DDL's locks go at once.
        tx.rollback().await.map_err(|e| StorageError::backend(op(), e))?;
        return Err(StorageError::Unusable {
            location: location.to_owned(),
            reason: format!(
                "schema {s} was written with storage schema version {version:?}, which this DeltaForge does \
                 not know (it knows version {SCHEMA_VERSION})"
            ),
            fix: "run the DeltaForge release that wrote it, or point --storage-dsn at another database".to_string(),
        });
    }
    let purged = tx
        .execute(&format!("DELETE FROM {s}.kv WHERE expires_at IS NOT NULL AND expires_at <= clock_timestamp()"), &[])
        .await
        .map_err(|e| StorageError::backend(op(), e))?;
    tx.commit().await.map_err(|e| StorageError::backend(op(), e))?;
    tracing::debug!(schema = %s, purged_expired_keys = purged, "PostgreSQL storage tables ready");
    Ok(())
}
