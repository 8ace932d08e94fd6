//! Durable state for every DeltaForge subsystem, behind one trait.
//!
//! This crate owns the [`StorageBackend`] trait, its error type and the
//! in-process [`MemoryBackend`] (tests; lost on restart). The durable
//! backends live in their own crates so that only the binary builds their
//! drivers: `deltaforge-storage-sqlite` (`SqliteBackend`, the
//! single-instance default) and `deltaforge-storage-postgres`
//! (`PostgresBackend`, shared by several instances). With the
//! `conformance` feature, module `conformance` holds the suite every backend's
//! tests run. Four primitives cover every need, each namespaced so that
//! subsystems never collide:
//!
//! | primitive | semantics | used for |
//! |---|---|---|
//! | KV (+ optional TTL) | get / put / delete / list by prefix | checkpoints, leases |
//! | Log | append-only, one global monotonic sequence | schema history |
//! | Slot | versioned value with compare-and-swap | snapshot cursors, leadership |
//! | Queue | ordered, explicit ack, bounded | dead-letter queue |
//!
//! Values are UTF-8 text (JSON by convention) so an operator can read them
//! with `sqlite3`. A write is durable when its future resolves: callers such
//! as the checkpoint store rely on that to keep the delivery invariant.
//!
//! This crate must never interpret the values it stores, and never depend
//! on a database driver (rusqlite, tokio-postgres): every crate that needs
//! storage depends on it.

#![forbid(unsafe_code)]

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod memory;

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;

pub use memory::MemoryBackend;

/// Errors raised by a storage backend.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The storage file or database exists but is not usable (corrupt, not a
    /// database, written by an unknown schema version).
    #[error("storage at {location} is unusable: {reason}. {fix}")]
    Unusable {
        /// Path or redacted DSN of the store.
        location: String,
        /// What is wrong.
        reason: String,
        /// What the operator can do about it.
        fix: String,
    },
    /// A bounded queue is full and refused the item.
    #[error("queue {namespace}/{key} is full ({capacity} items)")]
    QueueFull {
        /// Queue namespace.
        namespace: String,
        /// Queue key.
        key: String,
        /// Configured capacity.
        capacity: u64,
    },
    /// The backend does not offer this capability (e.g. an online backup of
    /// the `memory` or `postgres` backend).
    #[error("the {backend} storage backend does not support {operation}. {fix}")]
    Unsupported {
        /// The backend's [`StorageBackend::kind`].
        backend: &'static str,
        /// What was asked, e.g. `online backups`.
        operation: String,
        /// What the operator can do instead.
        fix: String,
    },
    /// Any other failure of the underlying store (I/O, lock, connection).
    #[error("storage operation {op} failed: {source}")]
    Backend {
        /// The operation that failed, e.g. `kv_put checkpoints/pg-orders`.
        op: String,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl StorageError {
    /// Wraps an underlying error, naming the operation that failed.
    pub fn backend(op: impl Into<String>, err: impl std::error::Error + Send + Sync + 'static) -> Self {
        StorageError::Backend { op: op.into(), source: Box::new(err) }
    }
}

/// Result alias for storage operations.
pub type Result<T> = std::result::Result<T, StorageError>;

/// What an online backup ([`StorageBackend::backup_to`]) wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSummary {
    /// The file written.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// The storage schema version of the copy (SQLite: `meta.schema_version`).
    pub schema_version: String,
    /// Number of checkpoints (namespace `checkpoints`) in the copy.
    pub checkpoints: u64,
}

/// One record of a [`StorageBackend`] log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// Global, strictly increasing sequence number (across all keys and namespaces).
    pub seq: u64,
    /// The key the record was appended under.
    pub key: String,
    /// The record.
    pub value: String,
}

/// A versioned value held in a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// Version, starting at 1 and incremented by every successful swap.
    pub version: u64,
    /// The value.
    pub value: String,
}

/// Outcome of [`StorageBackend::slot_cas`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CasOutcome {
    /// The swap happened; the slot now has this version.
    Swapped(u64),
    /// The expected version did not match; this is what the slot holds (None: empty).
    Conflict(Option<Versioned>),
}

/// One item of a [`StorageBackend`] queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueItem {
    /// Identifier, increasing in push order within the queue; used to ack.
    pub id: u64,
    /// The item.
    pub value: String,
}

/// The one storage interface every subsystem uses.
///
/// All methods are namespaced; keys are free-form text. Implementations must
/// make every mutating call durable before returning.
///
/// ```
/// # tokio_test_shim::run(async {
/// use deltaforge_storage::{MemoryBackend, StorageBackend};
/// let store = MemoryBackend::new();
/// store.kv_put("checkpoints", "pg-orders", r#"{"lsn":"0/16B3748"}"#, None).await.unwrap();
/// assert!(store.kv_get("checkpoints", "pg-orders").await.unwrap().is_some());
/// # });
/// # mod tokio_test_shim { pub fn run<F: std::future::Future>(f: F) -> F::Output {
/// #   tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f) } }
/// ```
#[async_trait]
pub trait StorageBackend: Send + Sync + 'static {
    /// Short name of the backend (`memory`, `sqlite`, `postgres`).
    fn kind(&self) -> &'static str;

    /// Reads a key; expired keys read as absent.
    async fn kv_get(&self, namespace: &str, key: &str) -> Result<Option<String>>;
    /// Writes a key, replacing any value; with `ttl` it expires after that long.
    async fn kv_put(&self, namespace: &str, key: &str, value: &str, ttl: Option<Duration>) -> Result<()>;
    /// Deletes a key; returns whether it existed.
    async fn kv_delete(&self, namespace: &str, key: &str) -> Result<bool>;
    /// Lists live keys starting with `prefix`, ordered by key.
    async fn kv_list(&self, namespace: &str, prefix: &str) -> Result<Vec<(String, String)>>;

    /// Appends a record; returns its global sequence number, strictly greater
    /// than every sequence number returned before by this store.
    async fn log_append(&self, namespace: &str, key: &str, value: &str) -> Result<u64>;
    /// Reads records whose key starts with `key_prefix` and whose sequence is
    /// greater than `after_seq`, in sequence order.
    async fn log_read(&self, namespace: &str, key_prefix: &str, after_seq: u64) -> Result<Vec<LogEntry>>;

    /// Reads a slot.
    async fn slot_get(&self, namespace: &str, key: &str) -> Result<Option<Versioned>>;
    /// Writes a slot if its current version is `expected` (`None`: the slot must be empty).
    async fn slot_cas(&self, namespace: &str, key: &str, expected: Option<u64>, value: &str) -> Result<CasOutcome>;
    /// Empties a slot; returns whether it held a value.
    async fn slot_delete(&self, namespace: &str, key: &str) -> Result<bool>;

    /// Appends an item to a bounded queue; fails with [`StorageError::QueueFull`]
    /// when it already holds `capacity` unacknowledged items.
    async fn queue_push(&self, namespace: &str, key: &str, value: &str, capacity: u64) -> Result<u64>;
    /// Returns up to `limit` unacknowledged items, oldest first.
    async fn queue_peek(&self, namespace: &str, key: &str, limit: usize) -> Result<Vec<QueueItem>>;
    /// Acknowledges (removes) an item; returns whether it was present.
    async fn queue_ack(&self, namespace: &str, key: &str, id: u64) -> Result<bool>;
    /// Number of unacknowledged items.
    async fn queue_len(&self, namespace: &str, key: &str) -> Result<u64>;

    /// The local directory that holds this backend's files (SQLite: the
    /// database file's directory), `None` for a backend without one. The
    /// control plane only lets [`backup_to`](Self::backup_to) write under it.
    fn data_dir(&self) -> Option<PathBuf> {
        None
    }

    /// Writes a consistent copy of the whole store to the new file `path`
    /// while the store stays in use, checks the copy's integrity and makes it
    /// durable; never overwrites an existing file. An optional capability:
    /// backends without it answer [`StorageError::Unsupported`].
    async fn backup_to(&self, path: &Path) -> Result<BackupSummary> {
        Err(StorageError::Unsupported {
            backend: self.kind(),
            operation: format!("online backups (asked to write {})", path.display()),
            fix: "Back up the storage with the database's own tools (PostgreSQL: pg_dump --schema=deltaforge)"
                .to_owned(),
        })
    }
}
