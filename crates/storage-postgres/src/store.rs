//! The [`StorageBackend`] implementation of [`PostgresBackend`].
//!
//! This module owns only the glue from each trait method to the module of
//! its primitive (`kv`, `log`, `slot`, `queue`); it must never write SQL
//! itself.

use std::time::Duration;

use async_trait::async_trait;
use deltaforge_storage::{CasOutcome, LogEntry, QueueItem, Result, StorageBackend, Versioned};

use crate::backend::PostgresBackend;
use crate::{kv, log, queue, slot};

#[async_trait]
impl StorageBackend for PostgresBackend {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    async fn kv_get(&self, namespace: &str, key: &str) -> Result<Option<String>> {
        kv::get(self, namespace, key).await
    }

    async fn kv_put(&self, namespace: &str, key: &str, value: &str, ttl: Option<Duration>) -> Result<()> {
        kv::put(self, namespace, key, value, ttl).await
    }

    async fn kv_delete(&self, namespace: &str, key: &str) -> Result<bool> {
        kv::delete(self, namespace, key).await
    }

    async fn kv_list(&self, namespace: &str, prefix: &str) -> Result<Vec<(String, String)>> {
        kv::list(self, namespace, prefix).await
    }

    async fn log_append(&self, namespace: &str, key: &str, value: &str) -> Result<u64> {
        log::append(self, namespace, key, value).await
    }

    async fn log_read(&self, namespace: &str, key_prefix: &str, after_seq: u64) -> Result<Vec<LogEntry>> {
        log::read(self, namespace, key_prefix, after_seq).await
    }

    async fn slot_get(&self, namespace: &str, key: &str) -> Result<Option<Versioned>> {
        slot::get(self, namespace, key).await
    }

    async fn slot_cas(&self, namespace: &str, key: &str, expected: Option<u64>, value: &str) -> Result<CasOutcome> {
        slot::cas(self, namespace, key, expected, value).await
    }

    async fn slot_delete(&self, namespace: &str, key: &str) -> Result<bool> {
        slot::delete(self, namespace, key).await
    }

    async fn queue_push(&self, namespace: &str, key: &str, value: &str, capacity: u64) -> Result<u64> {
        queue::push(self, namespace, key, value, capacity).await
    }

    async fn queue_peek(&self, namespace: &str, key: &str, limit: usize) -> Result<Vec<QueueItem>> {
        queue::peek(self, namespace, key, limit).await
    }

    async fn queue_ack(&self, namespace: &str, key: &str, id: u64) -> Result<bool> {
        queue::ack(self, namespace, key, id).await
    }

    async fn queue_len(&self, namespace: &str, key: &str) -> Result<u64> {
        queue::len(self, namespace, key).await
    }
}
