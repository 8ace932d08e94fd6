//! The [`StorageBackend`] implementation of [`SqliteBackend`].
//!
//! This module owns only the glue: each trait method copies its arguments,
//! names its operation for errors, and runs the SQL of its primitive
//! (modules `kv`, `log`, `slot`, `queue`) through [`SqliteBackend::run`] on a
//! blocking thread. It must never write SQL itself and never call SQLite
//! outside [`SqliteBackend::run`], except that an online backup runs
//! [`crate::backup`] on a blocking thread with a connection of its own (so
//! that checkpoint writes go on during the copy).

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use deltaforge_storage::{
    BackupSummary, CasOutcome, LogEntry, QueueItem, Result, StorageBackend, StorageError, Versioned,
};

use crate::backend::SqliteBackend;
use crate::{backup, kv, log, queue, slot};

#[async_trait]
impl StorageBackend for SqliteBackend {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    async fn kv_get(&self, namespace: &str, key: &str) -> Result<Option<String>> {
        let (ns, k) = (namespace.to_owned(), key.to_owned());
        self.run(|| format!("kv_get {namespace}/{key}"), move |conn| kv::get(conn, &ns, &k)).await
    }

    async fn kv_put(&self, namespace: &str, key: &str, value: &str, ttl: Option<Duration>) -> Result<()> {
        let (ns, k, v) = (namespace.to_owned(), key.to_owned(), value.to_owned());
        self.run(|| format!("kv_put {namespace}/{key}"), move |conn| kv::put(conn, &ns, &k, &v, ttl)).await
    }

    async fn kv_delete(&self, namespace: &str, key: &str) -> Result<bool> {
        let (ns, k) = (namespace.to_owned(), key.to_owned());
        self.run(|| format!("kv_delete {namespace}/{key}"), move |conn| kv::delete(conn, &ns, &k)).await
    }

    async fn kv_list(&self, namespace: &str, prefix: &str) -> Result<Vec<(String, String)>> {
        let (ns, p) = (namespace.to_owned(), prefix.to_owned());
        self.run(|| format!("kv_list {namespace}/{prefix}*"), move |conn| kv::list(conn, &ns, &p)).await
    }

    async fn log_append(&self, namespace: &str, key: &str, value: &str) -> Result<u64> {
        let (ns, k, v) = (namespace.to_owned(), key.to_owned(), value.to_owned());
        self.run(|| format!("log_append {namespace}/{key}"), move |conn| log::append(conn, &ns, &k, &v)).await
    }

    async fn log_read(&self, namespace: &str, key_prefix: &str, after_seq: u64) -> Result<Vec<LogEntry>> {
        let (ns, p) = (namespace.to_owned(), key_prefix.to_owned());
        let Ok(after) = i64::try_from(after_seq) else {
            // No sequence number can exceed i64::MAX in SQLite.
            return Ok(Vec::new());
        };
        self.run(
            || format!("log_read {namespace}/{key_prefix}* after {after_seq}"),
            move |conn| log::read(conn, &ns, &p, after),
        )
        .await
    }

    async fn slot_get(&self, namespace: &str, key: &str) -> Result<Option<Versioned>> {
        let (ns, k) = (namespace.to_owned(), key.to_owned());
        self.run(|| format!("slot_get {namespace}/{key}"), move |conn| slot::read(conn, &ns, &k)).await
    }

    async fn slot_cas(&self, namespace: &str, key: &str, expected: Option<u64>, value: &str) -> Result<CasOutcome> {
        let (ns, k, v) = (namespace.to_owned(), key.to_owned(), value.to_owned());
        self.run(|| format!("slot_cas {namespace}/{key}"), move |conn| slot::cas(conn, &ns, &k, expected, &v)).await
    }

    async fn slot_delete(&self, namespace: &str, key: &str) -> Result<bool> {
        let (ns, k) = (namespace.to_owned(), key.to_owned());
        self.run(|| format!("slot_delete {namespace}/{key}"), move |conn| slot::delete(conn, &ns, &k)).await
    }

    async fn queue_push(&self, namespace: &str, key: &str, value: &str, capacity: u64) -> Result<u64> {
        let (ns, k, v) = (namespace.to_owned(), key.to_owned(), value.to_owned());
        let pushed = self
            .run(|| format!("queue_push {namespace}/{key}"), move |conn| queue::push(conn, &ns, &k, &v, capacity))
            .await?;
        pushed.ok_or_else(|| StorageError::QueueFull { namespace: namespace.to_owned(), key: key.to_owned(), capacity })
    }

    async fn queue_peek(&self, namespace: &str, key: &str, limit: usize) -> Result<Vec<QueueItem>> {
        let (ns, k) = (namespace.to_owned(), key.to_owned());
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run(|| format!("queue_peek {namespace}/{key}"), move |conn| queue::peek(conn, &ns, &k, limit)).await
    }

    async fn queue_ack(&self, namespace: &str, key: &str, id: u64) -> Result<bool> {
        let (ns, k) = (namespace.to_owned(), key.to_owned());
        let Ok(id) = i64::try_from(id) else {
            // No id can exceed i64::MAX in SQLite.
            return Ok(false);
        };
        self.run(|| format!("queue_ack {namespace}/{key} id {id}"), move |conn| queue::ack(conn, &ns, &k, id)).await
    }

    async fn queue_len(&self, namespace: &str, key: &str) -> Result<u64> {
        let (ns, k) = (namespace.to_owned(), key.to_owned());
        self.run(|| format!("queue_len {namespace}/{key}"), move |conn| queue::len(conn, &ns, &k)).await
    }

    fn data_dir(&self) -> Option<PathBuf> {
        let dir = match self.path().parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Some(dir.canonicalize().unwrap_or(dir))
    }

    async fn backup_to(&self, path: &Path) -> Result<BackupSummary> {
        let (src, dest) = (self.path().to_path_buf(), path.to_path_buf());
        tokio::task::spawn_blocking(move || backup::backup_file(&src, &dest, false))
            .await
            .map_err(|err| StorageError::backend(format!("backup to {}", path.display()), err))?
    }
}
