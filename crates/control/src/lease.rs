//! Pipeline leases: with a shared storage backend, each pipeline runs on
//! exactly one instance, the holder of its lease.
//!
//! This module owns the lease protocol and the fencing of checkpoint writes.
//! A lease is one [`Slot`](deltaforge_storage::StorageBackend::slot_cas) in
//! namespace `leases`, key `{pipeline}`, holding
//! `{"holder": INSTANCE, "expires_at_ms": UNIX_MS, "renewed_at": RFC3339}`.
//! Every change goes through compare-and-swap on the slot's version, so of
//! several instances racing for a free or lapsed lease exactly one wins
//! (the plain KV primitive has TTLs but no conditional write; the slot's CAS
//! gives the atomicity and `expires_at_ms` the TTL).
//!
//! * The holder renews every `renew_every` (default TTL/3), pushing
//!   `expires_at_ms` to now + TTL.
//! * Another instance takes the lease over only once `expires_at_ms` has
//!   passed by its own clock (instances' clocks must agree to well within
//!   TTL − renew interval; NTP does that).
//! * The holder considers its lease valid until the instant it *sent* its
//!   last successful renewal plus TTL minus a safety margin (one renew
//!   interval). When that passes without a renewal it reports the lease lost:
//!   the manager stops the pipeline, and [`FencedStorage`] refuses every
//!   checkpoint write from then on. So the old holder has stopped writing
//!   checkpoints before any other instance can acquire the lease.
//! * A clean shutdown or a pipeline deletion releases the lease (marks it
//!   expired) so that another instance can take over at its next attempt.
//!
//! This module must never let a pipeline run, or write a checkpoint, when
//! the lease is not known to be held; it decides nothing else.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use deltaforge_storage::{CasOutcome, LogEntry, QueueItem, StorageBackend, StorageError, Versioned};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The Slot namespace of leases.
pub const NAMESPACE: &str = "leases";

/// Lease timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseConfig {
    /// How long a lease lasts without renewal.
    pub ttl: Duration,
    /// How often the holder renews (and a standby retries).
    pub renew_every: Duration,
}

impl LeaseConfig {
    /// A TTL with renewals every third of it.
    pub fn with_ttl(ttl: Duration) -> Self {
        LeaseConfig { ttl, renew_every: ttl / 3 }
    }

    /// How long after sending a successful renewal the holder trusts its lease.
    fn trusted_for(&self) -> Duration {
        self.ttl.saturating_sub(self.renew_every)
    }
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig::with_ttl(Duration::from_secs(10))
    }
}

/// The stored lease record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// Instance id of the holder.
    pub holder: String,
    /// Unix milliseconds after which the lease is free.
    pub expires_at_ms: i64,
    /// When it was last renewed (informational).
    #[serde(default)]
    pub renewed_at: Option<String>,
}

/// What an instance knows about one pipeline's lease.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LeaseView {
    /// Whether this instance holds it.
    pub held: bool,
    /// The holder last seen in storage (this instance or another), if any.
    pub holder: Option<String>,
}

/// The instant until which this instance trusts its lease; shared between
/// the keeper and [`FencedStorage`].
#[derive(Debug, Default)]
pub struct LeaseDeadline(Mutex<Option<Instant>>);

impl LeaseDeadline {
    /// Whether the lease is held right now.
    pub fn is_valid(&self) -> bool {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).is_some_and(|t| Instant::now() < t)
    }

    fn set(&self, until: Option<Instant>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = until;
    }
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// Tries once to acquire or renew `pipeline`'s lease for `instance`;
/// returns the holder now recorded (None: free) and whether it is us.
pub async fn try_acquire(
    storage: &dyn StorageBackend,
    pipeline: &str,
    instance: &str,
    ttl: Duration,
) -> Result<(bool, Option<String>), StorageError> {
    let current = storage.slot_get(NAMESPACE, pipeline).await?;
    let expected = match &current {
        None => None,
        Some(v) => {
            let record: Option<LeaseRecord> = serde_json::from_str(&v.value).ok();
            match record {
                Some(r) if r.holder != instance && r.expires_at_ms > now_ms() => return Ok((false, Some(r.holder))),
                // Ours, lapsed, or unreadable: take it over at this version.
                _ => Some(v.version),
            }
        }
    };
    let record = LeaseRecord {
        holder: instance.to_string(),
        expires_at_ms: now_ms() + i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2),
        renewed_at: Some(Utc::now().to_rfc3339()),
    };
    let value = serde_json::to_string(&record).expect("lease records serialize");
    match storage.slot_cas(NAMESPACE, pipeline, expected, &value).await? {
        CasOutcome::Swapped(_) => Ok((true, Some(instance.to_string()))),
        CasOutcome::Conflict(now) => {
            let holder = now.and_then(|v| serde_json::from_str::<LeaseRecord>(&v.value).ok()).map(|r| r.holder);
            Ok((false, holder))
        }
    }
}

/// Releases `pipeline`'s lease if `instance` holds it, by marking it expired.
pub async fn release(storage: &dyn StorageBackend, pipeline: &str, instance: &str) -> Result<(), StorageError> {
    let Some(v) = storage.slot_get(NAMESPACE, pipeline).await? else { return Ok(()) };
    let Ok(mut record) = serde_json::from_str::<LeaseRecord>(&v.value) else { return Ok(()) };
    if record.holder != instance {
        return Ok(());
    }
    record.expires_at_ms = 0;
    let value = serde_json::to_string(&record).expect("lease records serialize");
    storage.slot_cas(NAMESPACE, pipeline, Some(v.version), &value).await?;
    Ok(())
}

/// Keeps acquiring or renewing one pipeline's lease until `stop` fires,
/// publishing the outcome on `view`; releases the lease when stopped.
pub async fn keep(
    storage: Arc<dyn StorageBackend>,
    pipeline: String,
    instance: String,
    config: LeaseConfig,
    deadline: Arc<LeaseDeadline>,
    view: watch::Sender<LeaseView>,
    stop: CancellationToken,
) {
    let mut trusted_until: Option<Instant> = None;
    loop {
        let sent = Instant::now();
        match try_acquire(storage.as_ref(), &pipeline, &instance, config.ttl).await {
            Ok((true, holder)) => {
                if trusted_until.is_none_or(|t| Instant::now() >= t) {
                    tracing::info!(pipeline = %pipeline, instance = %instance, "lease acquired");
                }
                trusted_until = Some(sent + config.trusted_for());
                deadline.set(trusted_until);
                publish(&view, LeaseView { held: true, holder });
            }
            Ok((false, holder)) => {
                if trusted_until.take().is_some() {
                    tracing::warn!(pipeline = %pipeline, holder = ?holder, "lease lost to another instance");
                }
                deadline.set(None);
                publish(&view, LeaseView { held: false, holder });
            }
            Err(e) => {
                tracing::warn!(pipeline = %pipeline, "lease renewal failed: {e}");
            }
        }
        // Wake at the next renewal, or when trust runs out if that is sooner.
        let mut wait = config.renew_every;
        if let Some(t) = trusted_until {
            wait = wait.min(t.saturating_duration_since(Instant::now()));
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => break,
        }
        if trusted_until.is_some_and(|t| Instant::now() >= t) && !deadline.is_valid() {
            tracing::warn!(pipeline = %pipeline, "lease not renewed in time: giving it up");
            trusted_until = None;
            view.send_modify(|v| v.held = false);
        }
    }
    deadline.set(None);
    view.send_modify(|v| v.held = false);
    if let Err(e) = release(storage.as_ref(), &pipeline, &instance).await {
        tracing::warn!(pipeline = %pipeline, "could not release the lease (it lapses after its TTL): {e}");
    }
}

/// Sends `new` only when it differs, so that watchers wake on changes only.
fn publish(view: &watch::Sender<LeaseView>, new: LeaseView) {
    view.send_if_modified(|v| {
        if *v == new {
            return false;
        }
        *v = new;
        true
    });
}

/// Raised by [`FencedStorage`] when a checkpoint write comes after the lease ended.
#[derive(Debug, thiserror::Error)]
#[error("the lease on pipeline {pipeline:?} is no longer held by this instance; checkpoint write refused (fencing)")]
pub struct LeaseLost {
    /// The pipeline.
    pub pipeline: String,
}

/// A storage wrapper that refuses checkpoint writes (`checkpoints`
/// namespace) unless the pipeline's lease is held; everything else passes through.
pub struct FencedStorage {
    inner: Arc<dyn StorageBackend>,
    pipeline: String,
    deadline: Arc<LeaseDeadline>,
}

impl FencedStorage {
    /// Wraps `inner` for `pipeline`.
    pub fn new(inner: Arc<dyn StorageBackend>, pipeline: String, deadline: Arc<LeaseDeadline>) -> Self {
        FencedStorage { inner, pipeline, deadline }
    }

    fn check(&self, namespace: &str, key: &str) -> Result<(), StorageError> {
        if namespace == deltaforge_core::checkpoint::NAMESPACE && !self.deadline.is_valid() {
            return Err(StorageError::backend(
                format!("kv write {namespace}/{key}"),
                LeaseLost { pipeline: self.pipeline.clone() },
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl StorageBackend for FencedStorage {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    async fn kv_get(&self, namespace: &str, key: &str) -> Result<Option<String>, StorageError> {
        self.inner.kv_get(namespace, key).await
    }
    async fn kv_put(&self, namespace: &str, key: &str, value: &str, ttl: Option<Duration>) -> Result<(), StorageError> {
        self.check(namespace, key)?;
        self.inner.kv_put(namespace, key, value, ttl).await
    }
    async fn kv_delete(&self, namespace: &str, key: &str) -> Result<bool, StorageError> {
        self.check(namespace, key)?;
        self.inner.kv_delete(namespace, key).await
    }
    async fn kv_list(&self, namespace: &str, prefix: &str) -> Result<Vec<(String, String)>, StorageError> {
        self.inner.kv_list(namespace, prefix).await
    }
    async fn log_append(&self, namespace: &str, key: &str, value: &str) -> Result<u64, StorageError> {
        self.inner.log_append(namespace, key, value).await
    }
    async fn log_read(&self, namespace: &str, key_prefix: &str, after_seq: u64) -> Result<Vec<LogEntry>, StorageError> {
        self.inner.log_read(namespace, key_prefix, after_seq).await
    }
    async fn slot_get(&self, namespace: &str, key: &str) -> Result<Option<Versioned>, StorageError> {
        self.inner.slot_get(namespace, key).await
    }
    async fn slot_cas(
        &self,
        namespace: &str,
        key: &str,
        expected: Option<u64>,
        value: &str,
    ) -> Result<CasOutcome, StorageError> {
        self.inner.slot_cas(namespace, key, expected, value).await
    }
    async fn slot_delete(&self, namespace: &str, key: &str) -> Result<bool, StorageError> {
        self.inner.slot_delete(namespace, key).await
    }
    async fn queue_push(&self, namespace: &str, key: &str, value: &str, capacity: u64) -> Result<u64, StorageError> {
        self.inner.queue_push(namespace, key, value, capacity).await
    }
    async fn queue_peek(&self, namespace: &str, key: &str, limit: usize) -> Result<Vec<QueueItem>, StorageError> {
        self.inner.queue_peek(namespace, key, limit).await
    }
    async fn queue_ack(&self, namespace: &str, key: &str, id: u64) -> Result<bool, StorageError> {
        self.inner.queue_ack(namespace, key, id).await
    }
    async fn queue_len(&self, namespace: &str, key: &str) -> Result<u64, StorageError> {
        self.inner.queue_len(namespace, key).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use deltaforge_storage::{MemoryBackend, StorageBackend};

    use super::*;

    #[tokio::test]
    async fn one_holder_until_the_lease_lapses() {
        let store: Arc<dyn StorageBackend> = Arc::new(MemoryBackend::new());
        let ttl = Duration::from_millis(200);
        assert_eq!(try_acquire(store.as_ref(), "p", "a", ttl).await.unwrap(), (true, Some("a".into())));
        assert_eq!(try_acquire(store.as_ref(), "p", "b", ttl).await.unwrap(), (false, Some("a".into())));
        // Renewal by the holder works; another pipeline is independent.
        assert!(try_acquire(store.as_ref(), "p", "a", ttl).await.unwrap().0);
        assert!(try_acquire(store.as_ref(), "q", "b", ttl).await.unwrap().0);
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(try_acquire(store.as_ref(), "p", "b", ttl).await.unwrap(), (true, Some("b".into())));
        assert!(!try_acquire(store.as_ref(), "p", "a", ttl).await.unwrap().0);
        // Release lets the other take it at once.
        release(store.as_ref(), "p", "b").await.unwrap();
        assert!(try_acquire(store.as_ref(), "p", "a", ttl).await.unwrap().0);
    }

    #[tokio::test]
    async fn fenced_storage_refuses_checkpoints_without_the_lease() {
        let store: Arc<dyn StorageBackend> = Arc::new(MemoryBackend::new());
        let deadline = Arc::new(LeaseDeadline::default());
        let fenced = FencedStorage::new(store.clone(), "p".into(), deadline.clone());
        let err = fenced.kv_put("checkpoints", "src", "{}", None).await.unwrap_err().to_string();
        assert!(err.contains("fencing"), "{err}");
        fenced.kv_put("other", "k", "v", None).await.unwrap();
        deadline.set(Some(Instant::now() + Duration::from_secs(5)));
        fenced.kv_put("checkpoints", "src", "{}", None).await.unwrap();
        assert_eq!(store.kv_get("checkpoints", "src").await.unwrap().as_deref(), Some("{}"));
    }

    #[tokio::test]
    async fn keeper_holds_and_releases() {
        let store: Arc<dyn StorageBackend> = Arc::new(MemoryBackend::new());
        let deadline = Arc::new(LeaseDeadline::default());
        let (tx, mut rx) = watch::channel(LeaseView::default());
        let stop = CancellationToken::new();
        let cfg = LeaseConfig::with_ttl(Duration::from_millis(300));
        let task = tokio::spawn(keep(store.clone(), "p".into(), "a".into(), cfg, deadline.clone(), tx, stop.clone()));
        rx.wait_for(|v| v.held).await.unwrap();
        assert!(deadline.is_valid());
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(deadline.is_valid(), "renewals keep the lease");
        assert!(!try_acquire(store.as_ref(), "p", "b", cfg.ttl).await.unwrap().0);
        stop.cancel();
        task.await.unwrap();
        assert!(!deadline.is_valid());
        assert!(try_acquire(store.as_ref(), "p", "b", cfg.ttl).await.unwrap().0, "released on stop");
    }
}
