//! The [`PostgresBackend`]: shared storage in PostgreSQL, so that several
//! `deltaforge` instances can see the same checkpoints, schema history and
//! leases.
//!
//! This module owns the layout of the backend's tables, which live in their
//! own PostgreSQL schema (default `deltaforge`) and mirror the SQLite ones:
//!
//! | table | columns |
//! |---|---|
//! | `kv` | `namespace`, `key` (`COLLATE "C"`), `value`, `expires_at` (timestamptz, NULL: never), PK (`namespace`, `key`) |
//! | `log` | `seq` (BIGSERIAL: one global sequence), `namespace`, `key`, `value`, `created_at` |
//! | `slots` | `namespace`, `key`, `version`, `value`, PK (`namespace`, `key`) |
//! | `queue` | `id` (BIGSERIAL), `namespace`, `key`, `value`, `created_at`; index (`namespace`, `key`, `id`) |
//! | `meta` | `key`, `value`; holds `schema_version` = `1` |
//!
//! The tables are created on first connect, in one transaction guarded by an
//! advisory lock so that instances starting together do not race. A schema
//! written by an unknown version is refused with [`StorageError::Unusable`].
//! TTLs use the server's clock (`clock_timestamp()`), so instances with
//! skewed clocks still agree on when a key expires.
//!
//! Atomicity: [`StorageBackend::slot_cas`] is one conditional `UPDATE` (or
//! `INSERT … ON CONFLICT DO NOTHING`), whose row lock makes exactly one
//! concurrent writer win; [`StorageBackend::queue_push`] counts and inserts
//! in one transaction under a per-queue advisory lock, so the bound holds
//! across instances.
//!
//! Why these crates: `tokio-postgres` is the maintained async PostgreSQL
//! client on tokio (DEPENDENCIES.md). The connection pool is a few lines
//! written here ([`Pool`]) rather than `deadpool`/`bb8`: the backend only
//! needs "reuse an idle, open client, else connect a new one, at most N",
//! and a broken connection is simply dropped and replaced.
//!
//! It must never log or return the DSN's password (errors name the
//! redacted DSN only), never return from a mutating call before PostgreSQL
//! committed it, and never interpret the values it stores. TLS is not
//! supported by this build (`NoTls`): run it over loopback or a trusted
//! network.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::{Client, NoTls};

use crate::{CasOutcome, LogEntry, QueueItem, Result, StorageBackend, StorageError, Versioned};

/// The schema version this code writes and understands (`meta.schema_version`).
const SCHEMA_VERSION: &str = "1";
/// Default PostgreSQL schema holding the tables.
pub const DEFAULT_SCHEMA: &str = "deltaforge";
/// Most connections one backend opens.
const MAX_CONNECTIONS: usize = 8;
/// Connect timeout when the DSN sets none.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A [`StorageBackend`] on PostgreSQL tables (see the module docs for the layout).
pub struct PostgresBackend {
    pool: Pool,
    schema: String,
    location: String,
}

impl std::fmt::Debug for PostgresBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresBackend").field("location", &self.location).field("schema", &self.schema).finish()
    }
}

/// The DSN with its password removed, for logs and errors.
///
/// ```
/// use deltaforge_storage::redact_pg_dsn;
/// assert_eq!(redact_pg_dsn("postgres://app:s3cret@db:5432/x"), "postgres://app:***@db:5432/x");
/// assert_eq!(redact_pg_dsn("host=db user=app password=s3cret"), "host=db user=app password=***");
/// ```
pub fn redact_pg_dsn(dsn: &str) -> String {
    if let Some((scheme, rest)) = dsn.split_once("://") {
        // userinfo ends at the last '@' before the first '/'.
        let authority_end = rest.find('/').unwrap_or(rest.len());
        let authority = &rest[..authority_end];
        if let Some(at) = authority.rfind('@') {
            let userinfo = &authority[..at];
            if let Some((user, _)) = userinfo.split_once(':') {
                return format!("{scheme}://{user}:***{}", &rest[at..]);
            }
        }
        // A password may also come as a query parameter.
        return redact_query_password(dsn);
    }
    // key=value form.
    dsn.split_whitespace()
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
            _ => kv.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn redact_query_password(dsn: &str) -> String {
    let Some((base, query)) = dsn.split_once('?') else { return dsn.to_string() };
    let params: Vec<String> = query
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
            _ => p.to_string(),
        })
        .collect();
    format!("{base}?{}", params.join("&"))
}

/// Checks a schema name: lowercase letters, digits and `_`, not starting with a digit.
fn valid_schema(schema: &str) -> bool {
    !schema.is_empty()
        && schema.len() <= 63
        && schema.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !schema.starts_with(|c: char| c.is_ascii_digit())
}

/// A tiny connection pool: idle clients are reused, closed ones dropped,
/// at most [`MAX_CONNECTIONS`] open at once.
struct Pool {
    config: tokio_postgres::Config,
    idle: Arc<Mutex<Vec<Client>>>,
    permits: Arc<Semaphore>,
    location: String,
}

/// A client borrowed from the [`Pool`]; returned to it on drop.
struct PooledClient {
    client: Option<Client>,
    idle: Arc<Mutex<Vec<Client>>>,
    _permit: OwnedSemaphorePermit,
}

impl std::ops::Deref for PooledClient {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.client.as_ref().expect("client present until drop")
    }
}

impl std::ops::DerefMut for PooledClient {
    fn deref_mut(&mut self) -> &mut Client {
        self.client.as_mut().expect("client present until drop")
    }
}

impl Drop for PooledClient {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            if !client.is_closed() {
                self.idle.lock().unwrap_or_else(PoisonError::into_inner).push(client);
            }
        }
    }
}

impl Pool {
    async fn get(&self, op: &str) -> Result<PooledClient> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| StorageError::backend(format!("{op}: connection pool closed"), e))?;
        loop {
            let reused = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
            match reused {
                Some(c) if c.is_closed() => continue,
                Some(c) => return Ok(PooledClient { client: Some(c), idle: self.idle.clone(), _permit: permit }),
                None => break,
            }
        }
        let client = self.connect().await.map_err(|e| StorageError::Backend {
            op: format!("{op}: connecting to {}", self.location),
            source: Box::new(e),
        })?;
        Ok(PooledClient { client: Some(client), idle: self.idle.clone(), _permit: permit })
    }

    async fn connect(&self) -> std::result::Result<Client, tokio_postgres::Error> {
        let (client, connection) = self.config.connect(NoTls).await?;
        let location = self.location.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(storage = %location, "PostgreSQL storage connection closed: {e}");
            }
        });
        Ok(client)
    }
}

impl PostgresBackend {
    /// Connects to `dsn` (URL or `key=value` form) and uses schema
    /// [`DEFAULT_SCHEMA`], creating its tables when they do not exist.
    ///
    /// # Errors
    /// [`StorageError::Unusable`] when the DSN is malformed, the server
    /// cannot be reached, or the schema was written by an unknown version.
    pub async fn connect(dsn: &str) -> Result<Self> {
        Self::connect_with_schema(dsn, DEFAULT_SCHEMA).await
    }

    /// Like [`PostgresBackend::connect`], with the tables in `schema`
    /// (lowercase letters, digits and `_`).
    ///
    /// # Errors
    /// As [`PostgresBackend::connect`]; also when `schema` is not a valid name.
    pub async fn connect_with_schema(dsn: &str, schema: &str) -> Result<Self> {
        let location = redact_pg_dsn(dsn);
        let unusable = |reason: String, fix: &str| StorageError::Unusable {
            location: location.clone(),
            reason,
            fix: fix.to_string(),
        };
        if !valid_schema(schema) {
            return Err(unusable(
                format!("{schema:?} is not a valid schema name"),
                "use lowercase letters, digits and `_` (at most 63, not starting with a digit)",
            ));
        }
        let mut config: tokio_postgres::Config = dsn.parse().map_err(|e| {
            unusable(
                format!("the DSN is malformed: {e}"),
                "write it as postgres://USER:PASSWORD@HOST:PORT/DATABASE or as `host=… user=… dbname=…`",
            )
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        config.application_name("deltaforge-storage");
        let pool = Pool {
            config,
            idle: Arc::new(Mutex::new(Vec::new())),
            permits: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
            location: location.clone(),
        };
        let backend = PostgresBackend { pool, schema: schema.to_string(), location: location.clone() };
        let mut client = match backend.pool.connect().await {
            Ok(c) => c,
            Err(e) => {
                return Err(unusable(
                    format!("cannot connect: {e}"),
                    "check that PostgreSQL is running and reachable, and that the user, password and database \
                     in --storage-dsn are right",
                ))
            }
        };
        backend.migrate(&mut client).await?;
        backend.pool.idle.lock().unwrap_or_else(PoisonError::into_inner).push(client);
        tracing::info!(storage = %location, schema, "opened PostgreSQL storage");
        Ok(backend)
    }

    /// The schema holding the tables.
    #[must_use]
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Creates the tables if needed and checks the schema version.
    async fn migrate(&self, client: &mut Client) -> Result<()> {
        let s = &self.schema;
        let op = || format!("create tables in schema {s} of {}", self.location);
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
                location: self.location.clone(),
                reason: format!(
                    "schema {s} was written with storage schema version {version:?}, which this DeltaForge does \
                     not know (it knows version {SCHEMA_VERSION})"
                ),
                fix: "run the DeltaForge release that wrote it, or point --storage-dsn at another database".to_string(),
            });
        }
        let purged = tx
            .execute(
                &format!("DELETE FROM {s}.kv WHERE expires_at IS NOT NULL AND expires_at <= clock_timestamp()"),
                &[],
            )
            .await
            .map_err(|e| StorageError::backend(op(), e))?;
        tx.commit().await.map_err(|e| StorageError::backend(op(), e))?;
        tracing::debug!(schema = %s, purged_expired_keys = purged, "PostgreSQL storage tables ready");
        Ok(())
    }

    fn err(&self, op: String, e: tokio_postgres::Error) -> StorageError {
        StorageError::Backend { op: format!("{op} on {}", self.location), source: Box::new(e) }
    }

    async fn current_slot(&self, client: &Client, namespace: &str, key: &str) -> Result<Option<Versioned>> {
        let s = &self.schema;
        let row = client
            .query_opt(
                &format!("SELECT version, value FROM {s}.slots WHERE namespace = $1 AND key = $2"),
                &[&namespace, &key],
            )
            .await
            .map_err(|e| self.err(format!("slot_get {namespace}/{key}"), e))?;
        Ok(row.map(|r| Versioned { version: r.get::<_, i64>(0).unsigned_abs(), value: r.get(1) }))
    }
}

/// A TTL in whole milliseconds for SQL (`None`: no expiry).
fn ttl_millis(ttl: Option<Duration>) -> Option<i64> {
    ttl.map(|t| i64::try_from(t.as_millis()).unwrap_or(i64::MAX))
}

#[async_trait]
impl StorageBackend for PostgresBackend {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    async fn kv_get(&self, namespace: &str, key: &str) -> Result<Option<String>> {
        let op = || format!("kv_get {namespace}/{key}");
        let client = self.pool.get(&op()).await?;
        let row = client
            .query_opt(
                &format!(
                    "SELECT value FROM {}.kv WHERE namespace = $1 AND key = $2 \
                     AND (expires_at IS NULL OR expires_at > clock_timestamp())",
                    self.schema
                ),
                &[&namespace, &key],
            )
            .await
            .map_err(|e| self.err(op(), e))?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn kv_put(&self, namespace: &str, key: &str, value: &str, ttl: Option<Duration>) -> Result<()> {
        let op = || format!("kv_put {namespace}/{key}");
        let client = self.pool.get(&op()).await?;
        client
            .execute(
                &format!(
                    "INSERT INTO {}.kv (namespace, key, value, expires_at) VALUES ($1, $2, $3, \
                     CASE WHEN $4::BIGINT IS NULL THEN NULL ELSE clock_timestamp() + $4::BIGINT * INTERVAL '1 millisecond' END) \
                     ON CONFLICT (namespace, key) DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at",
                    self.schema
                ),
                &[&namespace, &key, &value, &ttl_millis(ttl)],
            )
            .await
            .map_err(|e| self.err(op(), e))?;
        Ok(())
    }

    async fn kv_delete(&self, namespace: &str, key: &str) -> Result<bool> {
        let op = || format!("kv_delete {namespace}/{key}");
        let client = self.pool.get(&op()).await?;
        let row = client
            .query_opt(
                &format!(
                    "DELETE FROM {}.kv WHERE namespace = $1 AND key = $2 \
                     RETURNING (expires_at IS NULL OR expires_at > clock_timestamp())",
                    self.schema
                ),
                &[&namespace, &key],
            )
            .await
            .map_err(|e| self.err(op(), e))?;
        Ok(row.is_some_and(|r| r.get::<_, bool>(0)))
    }

    async fn kv_list(&self, namespace: &str, prefix: &str) -> Result<Vec<(String, String)>> {
        let op = || format!("kv_list {namespace}/{prefix}*");
        let client = self.pool.get(&op()).await?;
        let rows = client
            .query(
                &format!(
                    "SELECT key, value FROM {}.kv WHERE namespace = $1 AND starts_with(key, $2) \
                     AND (expires_at IS NULL OR expires_at > clock_timestamp()) ORDER BY key",
                    self.schema
                ),
                &[&namespace, &prefix],
            )
            .await
            .map_err(|e| self.err(op(), e))?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn log_append(&self, namespace: &str, key: &str, value: &str) -> Result<u64> {
        let op = || format!("log_append {namespace}/{key}");
        let client = self.pool.get(&op()).await?;
        let row = client
            .query_one(
                &format!("INSERT INTO {}.log (namespace, key, value) VALUES ($1, $2, $3) RETURNING seq", self.schema),
                &[&namespace, &key, &value],
            )
            .await
            .map_err(|e| self.err(op(), e))?;
        Ok(row.get::<_, i64>(0).unsigned_abs())
    }

    async fn log_read(&self, namespace: &str, key_prefix: &str, after_seq: u64) -> Result<Vec<LogEntry>> {
        let Ok(after) = i64::try_from(after_seq) else { return Ok(Vec::new()) };
        let op = || format!("log_read {namespace}/{key_prefix}* after {after_seq}");
        let client = self.pool.get(&op()).await?;
        let rows = client
            .query(
                &format!(
                    "SELECT seq, key, value FROM {}.log WHERE namespace = $1 AND seq > $2 AND starts_with(key, $3) \
                     ORDER BY seq",
                    self.schema
                ),
                &[&namespace, &after, &key_prefix],
            )
            .await
            .map_err(|e| self.err(op(), e))?;
        Ok(rows
            .into_iter()
            .map(|r| LogEntry { seq: r.get::<_, i64>(0).unsigned_abs(), key: r.get(1), value: r.get(2) })
            .collect())
    }

    async fn slot_get(&self, namespace: &str, key: &str) -> Result<Option<Versioned>> {
        let client = self.pool.get(&format!("slot_get {namespace}/{key}")).await?;
        self.current_slot(&client, namespace, key).await
    }

    async fn slot_cas(&self, namespace: &str, key: &str, expected: Option<u64>, value: &str) -> Result<CasOutcome> {
        let op = || format!("slot_cas {namespace}/{key}");
        let client = self.pool.get(&op()).await?;
        let s = &self.schema;
        // A concurrent delete or create between the write and the read of
        // the conflicting value is retried, so a conflict always reports a
        // state that contradicts `expected`.
        for _ in 0..5 {
            let swapped = match expected {
                None => client
                    .query_opt(
                        &format!(
                            "INSERT INTO {s}.slots (namespace, key, version, value) VALUES ($1, $2, 1, $3) \
                             ON CONFLICT (namespace, key) DO NOTHING RETURNING version"
                        ),
                        &[&namespace, &key, &value],
                    )
                    .await
                    .map_err(|e| self.err(op(), e))?,
                Some(v) => {
                    let Ok(v) = i64::try_from(v) else {
                        return Ok(CasOutcome::Conflict(self.current_slot(&client, namespace, key).await?));
                    };
                    client
                        .query_opt(
                            &format!(
                                "UPDATE {s}.slots SET version = version + 1, value = $4 \
                                 WHERE namespace = $1 AND key = $2 AND version = $3 RETURNING version"
                            ),
                            &[&namespace, &key, &v, &value],
                        )
                        .await
                        .map_err(|e| self.err(op(), e))?
                }
            };
            if let Some(row) = swapped {
                return Ok(CasOutcome::Swapped(row.get::<_, i64>(0).unsigned_abs()));
            }
            let current = self.current_slot(&client, namespace, key).await?;
            if current.as_ref().map(|c| c.version) != expected {
                return Ok(CasOutcome::Conflict(current));
            }
        }
        Ok(CasOutcome::Conflict(self.current_slot(&client, namespace, key).await?))
    }

    async fn slot_delete(&self, namespace: &str, key: &str) -> Result<bool> {
        let op = || format!("slot_delete {namespace}/{key}");
        let client = self.pool.get(&op()).await?;
        let n = client
            .execute(
                &format!("DELETE FROM {}.slots WHERE namespace = $1 AND key = $2", self.schema),
                &[&namespace, &key],
            )
            .await
            .map_err(|e| self.err(op(), e))?;
        Ok(n > 0)
    }

    async fn queue_push(&self, namespace: &str, key: &str, value: &str, capacity: u64) -> Result<u64> {
        let op = || format!("queue_push {namespace}/{key}");
        let mut client = self.pool.get(&op()).await?;
        let s = &self.schema;
        let cap = i64::try_from(capacity).unwrap_or(i64::MAX);
        let tx = client.transaction().await.map_err(|e| self.err(op(), e))?;
        // Serialises pushes to this queue across connections and instances;
        // released at commit or rollback.
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            &[&format!("deltaforge-queue:{s}:{namespace}\u{1}{key}")],
        )
        .await
        .map_err(|e| self.err(op(), e))?;
        let len: i64 = tx
            .query_one(
                &format!("SELECT COUNT(*) FROM {s}.queue WHERE namespace = $1 AND key = $2"),
                &[&namespace, &key],
            )
            .await
            .map_err(|e| self.err(op(), e))?
            .get(0);
        if len >= cap {
            tx.rollback().await.map_err(|e| self.err(op(), e))?;
            return Err(StorageError::QueueFull { namespace: namespace.to_string(), key: key.to_string(), capacity });
        }
        let id: i64 = tx
            .query_one(
                &format!("INSERT INTO {s}.queue (namespace, key, value) VALUES ($1, $2, $3) RETURNING id"),
                &[&namespace, &key, &value],
            )
            .await
            .map_err(|e| self.err(op(), e))?
            .get(0);
        tx.commit().await.map_err(|e| self.err(op(), e))?;
        Ok(id.unsigned_abs())
    }

    async fn queue_peek(&self, namespace: &str, key: &str, limit: usize) -> Result<Vec<QueueItem>> {
        let op = || format!("queue_peek {namespace}/{key}");
        let client = self.pool.get(&op()).await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = client
            .query(
                &format!(
                    "SELECT id, value FROM {}.queue WHERE namespace = $1 AND key = $2 ORDER BY id LIMIT $3",
                    self.schema
                ),
                &[&namespace, &key, &limit],
            )
            .await
            .map_err(|e| self.err(op(), e))?;
        Ok(rows.into_iter().map(|r| QueueItem { id: r.get::<_, i64>(0).unsigned_abs(), value: r.get(1) }).collect())
    }

    async fn queue_ack(&self, namespace: &str, key: &str, id: u64) -> Result<bool> {
        let Ok(id) = i64::try_from(id) else { return Ok(false) };
        let op = || format!("queue_ack {namespace}/{key}");
        let client = self.pool.get(&op()).await?;
        let n = client
            .execute(
                &format!("DELETE FROM {}.queue WHERE namespace = $1 AND key = $2 AND id = $3", self.schema),
                &[&namespace, &key, &id],
            )
            .await
            .map_err(|e| self.err(op(), e))?;
        Ok(n > 0)
    }

    async fn queue_len(&self, namespace: &str, key: &str) -> Result<u64> {
        let op = || format!("queue_len {namespace}/{key}");
        let client = self.pool.get(&op()).await?;
        let n: i64 = client
            .query_one(
                &format!("SELECT COUNT(*) FROM {}.queue WHERE namespace = $1 AND key = $2", self.schema),
                &[&namespace, &key],
            )
            .await
            .map_err(|e| self.err(op(), e))?
            .get(0);
        Ok(n.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    //! Runs against the real server of `scripts/services/postgres.sh`
    //! (started by the test if needed), or the DSN in
    //! `DELTAFORGE_TEST_PG_DSN`. Each test uses its own schema, dropped at
    //! the end.

    use std::sync::Arc;

    use super::{redact_pg_dsn, PostgresBackend};
    use crate::{StorageBackend, StorageError};

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

    crate::conformance::all_conformance_tests!(make_store);

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
        assert_eq!(redact_pg_dsn("postgres://u@h/d"), "postgres://u@h/d");
        assert_eq!(
            redact_pg_dsn("postgresql://u:p%40x@h:1/d?sslmode=disable"),
            "postgresql://u:***@h:1/d?sslmode=disable"
        );
        assert_eq!(redact_pg_dsn("postgres://h/d?user=u&password=p"), "postgres://h/d?user=u&password=***");
    }
}
