//! The in-process [`MemoryBackend`].
//!
//! This module owns a [`StorageBackend`] whose whole state lives in one
//! mutex-guarded structure inside the process. It is meant for tests and
//! throw-away runs: everything it holds is lost when the process exits, so it
//! must never be offered as a place to keep checkpoints that have to survive a
//! restart. It must never block on I/O and never hold its lock across an
//! `.await`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::{CasOutcome, LogEntry, QueueItem, Result, StorageBackend, StorageError, Versioned};

/// A [`StorageBackend`] that keeps everything in process memory.
///
/// Every call completes under one lock, so each operation is atomic with
/// respect to every other (in particular [`StorageBackend::slot_cas`] and
/// [`StorageBackend::queue_push`]). Nothing survives the process: use
/// `deltaforge_storage_sqlite::SqliteBackend` for state that must outlive it.
#[derive(Debug, Default)]
pub struct MemoryBackend {
    state: Mutex<State>,
}

/// Everything a [`MemoryBackend`] holds.
#[derive(Debug, Default)]
struct State {
    /// namespace -> key -> entry; `BTreeMap` so listing is ordered by key.
    kv: HashMap<String, BTreeMap<String, KvEntry>>,
    /// Every log record in sequence order, with its namespace.
    log: Vec<(String, LogEntry)>,
    /// The last sequence number handed out (0: none yet).
    last_seq: u64,
    /// (namespace, key) -> slot value.
    slots: HashMap<(String, String), Versioned>,
    /// (namespace, key) -> unacknowledged items by id.
    queues: HashMap<(String, String), BTreeMap<u64, String>>,
    /// The last queue item id handed out; ids are unique across queues.
    last_queue_id: u64,
}

/// One KV value and its optional deadline.
#[derive(Debug)]
struct KvEntry {
    value: String,
    expires_at: Option<Instant>,
}

impl KvEntry {
    fn is_live(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|deadline| now < deadline)
    }
}

impl MemoryBackend {
    /// Creates an empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the state lock. A poisoned lock is recovered: every mutation
    /// below completes before anything that could panic, so the state is
    /// consistent even if an earlier holder panicked.
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The deadline of a value written now with `ttl`; `None` when the deadline
/// is too far away to represent (it then never expires in practice).
fn deadline(now: Instant, ttl: Option<Duration>) -> Option<Instant> {
    ttl.and_then(|ttl| now.checked_add(ttl))
}

#[async_trait]
impl StorageBackend for MemoryBackend {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn kv_get(&self, namespace: &str, key: &str) -> Result<Option<String>> {
        let now = Instant::now();
        let mut state = self.state();
        let Some(keys) = state.kv.get_mut(namespace) else {
            return Ok(None);
        };
        match keys.get(key) {
            Some(entry) if entry.is_live(now) => Ok(Some(entry.value.clone())),
            Some(_) => {
                keys.remove(key);
                Ok(None)
            }
            None => Ok(None),
        }
    }

    async fn kv_put(&self, namespace: &str, key: &str, value: &str, ttl: Option<Duration>) -> Result<()> {
        let now = Instant::now();
        let entry = KvEntry { value: value.to_owned(), expires_at: deadline(now, ttl) };
        let mut state = self.state();
        state.kv.entry(namespace.to_owned()).or_default().insert(key.to_owned(), entry);
        Ok(())
    }

    async fn kv_delete(&self, namespace: &str, key: &str) -> Result<bool> {
        let now = Instant::now();
        let mut state = self.state();
        let removed = state.kv.get_mut(namespace).and_then(|keys| keys.remove(key));
        Ok(removed.is_some_and(|entry| entry.is_live(now)))
    }

    async fn kv_list(&self, namespace: &str, prefix: &str) -> Result<Vec<(String, String)>> {
        let now = Instant::now();
        let state = self.state();
        let Some(keys) = state.kv.get(namespace) else {
            return Ok(Vec::new());
        };
        Ok(keys
            .range::<str, _>((std::ops::Bound::Included(prefix), std::ops::Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .filter(|(_, entry)| entry.is_live(now))
            .map(|(key, entry)| (key.clone(), entry.value.clone()))
            .collect())
    }

    async fn log_append(&self, namespace: &str, key: &str, value: &str) -> Result<u64> {
        let mut state = self.state();
        let seq = state.last_seq.checked_add(1).ok_or_else(|| {
            StorageError::backend(
                format!("log_append {namespace}/{key}"),
                std::io::Error::other("log sequence exhausted"),
            )
        })?;
        state.last_seq = seq;
        let entry = LogEntry { seq, key: key.to_owned(), value: value.to_owned() };
        state.log.push((namespace.to_owned(), entry));
        Ok(seq)
    }

    async fn log_read(&self, namespace: &str, key_prefix: &str, after_seq: u64) -> Result<Vec<LogEntry>> {
        let state = self.state();
        let start = state.log.partition_point(|(_, entry)| entry.seq <= after_seq);
        Ok(state.log[start..]
            .iter()
            .filter(|(ns, entry)| ns == namespace && entry.key.starts_with(key_prefix))
            .map(|(_, entry)| entry.clone())
            .collect())
    }

    async fn slot_get(&self, namespace: &str, key: &str) -> Result<Option<Versioned>> {
        let state = self.state();
        Ok(state.slots.get(&(namespace.to_owned(), key.to_owned())).cloned())
    }

    async fn slot_cas(&self, namespace: &str, key: &str, expected: Option<u64>, value: &str) -> Result<CasOutcome> {
        let mut state = self.state();
        let id = (namespace.to_owned(), key.to_owned());
        let current = state.slots.get(&id);
        let current_version = current.map(|slot| slot.version);
        if current_version != expected {
            return Ok(CasOutcome::Conflict(current.cloned()));
        }
        let version = match current_version {
            None => 1,
            Some(version) => version.checked_add(1).ok_or_else(|| {
                StorageError::backend(
                    format!("slot_cas {namespace}/{key}"),
                    std::io::Error::other("slot version exhausted"),
                )
            })?,
        };
        state.slots.insert(id, Versioned { version, value: value.to_owned() });
        Ok(CasOutcome::Swapped(version))
    }

    async fn slot_delete(&self, namespace: &str, key: &str) -> Result<bool> {
        let mut state = self.state();
        Ok(state.slots.remove(&(namespace.to_owned(), key.to_owned())).is_some())
    }

    async fn queue_push(&self, namespace: &str, key: &str, value: &str, capacity: u64) -> Result<u64> {
        let mut state = self.state();
        let id = (namespace.to_owned(), key.to_owned());
        let len = state.queues.get(&id).map_or(0, BTreeMap::len);
        if len as u64 >= capacity {
            return Err(StorageError::QueueFull { namespace: namespace.to_owned(), key: key.to_owned(), capacity });
        }
        let item_id = state.last_queue_id.checked_add(1).ok_or_else(|| {
            StorageError::backend(format!("queue_push {namespace}/{key}"), std::io::Error::other("queue ids exhausted"))
        })?;
        state.last_queue_id = item_id;
        state.queues.entry(id).or_default().insert(item_id, value.to_owned());
        Ok(item_id)
    }

    async fn queue_peek(&self, namespace: &str, key: &str, limit: usize) -> Result<Vec<QueueItem>> {
        let state = self.state();
        let Some(queue) = state.queues.get(&(namespace.to_owned(), key.to_owned())) else {
            return Ok(Vec::new());
        };
        Ok(queue.iter().take(limit).map(|(&id, value)| QueueItem { id, value: value.clone() }).collect())
    }

    async fn queue_ack(&self, namespace: &str, key: &str, id: u64) -> Result<bool> {
        let mut state = self.state();
        let Some(queue) = state.queues.get_mut(&(namespace.to_owned(), key.to_owned())) else {
            return Ok(false);
        };
        Ok(queue.remove(&id).is_some())
    }

    async fn queue_len(&self, namespace: &str, key: &str) -> Result<u64> {
        let state = self.state();
        Ok(state.queues.get(&(namespace.to_owned(), key.to_owned())).map_or(0, |queue| queue.len() as u64))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::MemoryBackend;
    use crate::StorageBackend;

    async fn make_store() -> (Arc<dyn StorageBackend>, ()) {
        (Arc::new(MemoryBackend::new()), ())
    }

    crate::conformance::all_conformance_tests!(make_store);

    #[test]
    fn kind_is_memory() {
        assert_eq!(MemoryBackend::default().kind(), "memory");
    }
}
