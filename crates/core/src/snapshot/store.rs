//! The snapshot store: per-table progress records and pending backfill
//! requests of one pipeline, in the `snapshots` Slot namespace, written with
//! compare-and-swap.
//!
//! This module owns the storage keys and the CAS loops. It must never decide
//! *when* a record may be written (that is `snapshot::writer`'s
//! job: only once the chunk it describes is durable).

use std::sync::Arc;

use deltaforge_storage::{CasOutcome, StorageBackend, StorageError};

use crate::snapshot::progress::{BackfillRequest, TableProgress};

/// The Slot namespace of snapshot progress and backfill requests.
pub const NAMESPACE: &str = "snapshots";

/// Errors of the snapshot store.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The storage failed.
    #[error("snapshot storage: {0}")]
    Storage(#[from] StorageError),
    /// A stored value is not a valid record.
    #[error(
        "the snapshot record {key:?} is unreadable ({reason}); delete it (namespace `snapshots`) to re-read that table"
    )]
    Corrupt {
        /// The storage key.
        key: String,
        /// The parse error.
        reason: String,
    },
    /// Another writer kept changing the record.
    #[error("the snapshot record {0:?} changed concurrently; is another instance running this pipeline?")]
    Contended(String),
}

/// Progress records and backfill requests of one pipeline.
#[derive(Clone)]
pub struct SnapshotStore {
    storage: Arc<dyn StorageBackend>,
    pipeline: Arc<str>,
}

impl std::fmt::Debug for SnapshotStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotStore").field("pipeline", &self.pipeline).finish()
    }
}

/// Attempts of a compare-and-swap loop before giving up.
const CAS_ATTEMPTS: usize = 8;

impl SnapshotStore {
    /// The store of `pipeline`'s records.
    pub fn new(storage: Arc<dyn StorageBackend>, pipeline: impl Into<Arc<str>>) -> Self {
        SnapshotStore { storage, pipeline: pipeline.into() }
    }

    /// The storage key of a table's record: `{pipeline}/{table}`.
    pub fn key(&self, table: &str) -> String {
        format!("{}/{table}", self.pipeline)
    }

    /// Pending backfill requests live beside the table records; pipeline
    /// names never contain `#`, so this key cannot be a table's.
    fn requests_key(&self) -> String {
        format!("{}#backfill-requests", self.pipeline)
    }

    /// Reads a table's record.
    pub async fn load(&self, table: &str) -> Result<Option<TableProgress>, SnapshotError> {
        let key = self.key(table);
        match self.storage.slot_get(NAMESPACE, &key).await? {
            None => Ok(None),
            Some(v) => serde_json::from_str(&v.value)
                .map(Some)
                .map_err(|e| SnapshotError::Corrupt { key, reason: e.to_string() }),
        }
    }

    /// Writes a table's record, replacing whatever it held.
    pub async fn save(&self, table: &str, progress: &TableProgress) -> Result<(), SnapshotError> {
        let key = self.key(table);
        let value = serde_json::to_string(progress).expect("progress records always serialize");
        for _ in 0..CAS_ATTEMPTS {
            let current = self.storage.slot_get(NAMESPACE, &key).await?.map(|v| v.version);
            if let CasOutcome::Swapped(_) = self.storage.slot_cas(NAMESPACE, &key, current, &value).await? {
                return Ok(());
            }
        }
        Err(SnapshotError::Contended(key))
    }

    /// Removes a table's record (the next `initial` snapshot reads it again).
    pub async fn clear(&self, table: &str) -> Result<bool, SnapshotError> {
        Ok(self.storage.slot_delete(NAMESPACE, &self.key(table)).await?)
    }

    async fn read_requests(&self) -> Result<(Option<u64>, Vec<BackfillRequest>), SnapshotError> {
        let key = self.requests_key();
        match self.storage.slot_get(NAMESPACE, &key).await? {
            None => Ok((None, Vec::new())),
            Some(v) => {
                let list = serde_json::from_str(&v.value)
                    .map_err(|e| SnapshotError::Corrupt { key, reason: e.to_string() })?;
                Ok((Some(v.version), list))
            }
        }
    }

    /// Queues a backfill for the running source; returns its id.
    pub async fn request_backfill(
        &self,
        tables: Vec<String>,
        condition: Option<String>,
    ) -> Result<BackfillRequest, SnapshotError> {
        let key = self.requests_key();
        for _ in 0..CAS_ATTEMPTS {
            let (version, mut list) = self.read_requests().await?;
            let id = list.iter().map(|r| r.id).max().unwrap_or(0).max(version.unwrap_or(0)) + 1;
            let request = BackfillRequest { id, tables: tables.clone(), condition: condition.clone() };
            list.push(request.clone());
            let value = serde_json::to_string(&list).expect("requests always serialize");
            if let CasOutcome::Swapped(_) = self.storage.slot_cas(NAMESPACE, &key, version, &value).await? {
                return Ok(request);
            }
        }
        Err(SnapshotError::Contended(key))
    }

    /// Backfill requests not yet started, oldest first.
    pub async fn pending_backfills(&self) -> Result<Vec<BackfillRequest>, SnapshotError> {
        Ok(self.read_requests().await?.1)
    }

    /// Removes a started request (its tables' records now carry it).
    pub async fn remove_backfill(&self, id: u64) -> Result<(), SnapshotError> {
        let key = self.requests_key();
        for _ in 0..CAS_ATTEMPTS {
            let (version, mut list) = self.read_requests().await?;
            let before = list.len();
            list.retain(|r| r.id != id);
            if list.len() == before {
                return Ok(());
            }
            let value = serde_json::to_string(&list).expect("requests always serialize");
            if let CasOutcome::Swapped(_) = self.storage.slot_cas(NAMESPACE, &key, version, &value).await? {
                return Ok(());
            }
        }
        Err(SnapshotError::Contended(key))
    }
}

#[cfg(test)]
mod tests {
    use deltaforge_storage::MemoryBackend;

    use super::*;
    use crate::snapshot::progress::ReadKind;

    #[tokio::test]
    async fn store_round_trip_and_backfill_requests() {
        let store = SnapshotStore::new(Arc::new(MemoryBackend::new()), "p");
        assert_eq!(store.key("public.t"), "p/public.t");
        assert!(store.load("public.t").await.unwrap().is_none());
        let p = TableProgress::start(ReadKind::Snapshot, None, None);
        store.save("public.t", &p).await.unwrap();
        store.save("public.t", &p).await.unwrap();
        assert_eq!(store.load("public.t").await.unwrap(), Some(p));
        let a = store.request_backfill(vec!["public.t".into()], Some("id > 3".into())).await.unwrap();
        let b = store.request_backfill(vec!["public.u".into()], None).await.unwrap();
        assert!(b.id > a.id);
        assert_eq!(store.pending_backfills().await.unwrap(), vec![a.clone(), b.clone()]);
        store.remove_backfill(a.id).await.unwrap();
        assert_eq!(store.pending_backfills().await.unwrap(), vec![b]);
        assert!(store.clear("public.t").await.unwrap());
    }
}
