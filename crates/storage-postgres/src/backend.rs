//! The [`PostgresBackend`] handle: connecting, and the helpers every
//! primitive's module shares (the pool, error naming, reading a slot).
//!
//! This module owns turning a DSN into a ready backend: it validates the
//! schema name, parses the DSN, connects once to create or check the tables
//! (module `schema`), and keeps that client in the pool. Errors name the
//! redacted DSN only; it must never log or return the password, and never
//! write SQL of a primitive other than reading a slot.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use deltaforge_storage::{Result, StorageError, Versioned};
use tokio::sync::Semaphore;
use tokio_postgres::Client;

use crate::pool::Pool;
use crate::schema::{migrate, valid_schema, DEFAULT_SCHEMA};
use deltaforge_common::redact_dsn;

/// Most connections one backend opens.
const MAX_CONNECTIONS: usize = 8;
/// Connect timeout when the DSN sets none.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A [`StorageBackend`](deltaforge_storage::StorageBackend) on PostgreSQL
/// tables (see the crate docs for the layout).
pub struct PostgresBackend {
    pub(crate) pool: Pool,
    pub(crate) schema: String,
    pub(crate) location: String,
}

impl std::fmt::Debug for PostgresBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresBackend").field("location", &self.location).field("schema", &self.schema).finish()
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
        let location = redact_dsn(dsn);
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
        migrate(&mut client, schema, &location).await?;
        backend.pool.idle.lock().unwrap_or_else(PoisonError::into_inner).push(client);
        tracing::info!(storage = %location, schema, "opened PostgreSQL storage");
        Ok(backend)
    }

    /// The schema holding the tables.
    #[must_use]
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Wraps a driver error of operation `op`, naming the redacted DSN.
    pub(crate) fn err(&self, op: String, e: tokio_postgres::Error) -> StorageError {
        StorageError::Backend { op: format!("{op} on {}", self.location), source: Box::new(e) }
    }

    /// Reads one slot with `client`.
    pub(crate) async fn current_slot(&self, client: &Client, namespace: &str, key: &str) -> Result<Option<Versioned>> {
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
