//! The snapshot store: per-table progress records and pending backfill
//! requests of one pipeline, in the `snapshots` Slot namespace, written with
//! compare-and-swap.
//!
//! This module owns the storage keys and the CAS loops. It must never decide
//! *when* a record may be written (that is `snapshot::writer`'s
//! job: only once the chunk it describes is durable).

use std::sync::Arc;

use deltaforge_storage::{CasOutcome, StorageBackend, StorageError};

use crate::snapshot::progress::{BackfillRequest, BackfillState, BackfillStatus, TableProgress};

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
/// Ended backfills kept in the history (the oldest ended ones go first).
const HISTORY_KEPT: usize = 100;

/// What a cancellation found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelOutcome {
    /// Cancelled (it was pending or running); the reader stops after the
    /// chunk under way.
    Cancelled(BackfillStatus),
    /// It had already ended in that state.
    AlreadyEnded(BackfillStatus),
    /// No backfill of that id.
    NotFound,
}

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

    /// The history of started backfills; pipeline names never contain
    /// `#`, so this key cannot be a table's.
    fn history_key(&self) -> String {
        format!("{}#backfill-history", self.pipeline)
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

    async fn read_history(&self) -> Result<(Option<u64>, Vec<BackfillStatus>), SnapshotError> {
        let key = self.history_key();
        match self.storage.slot_get(NAMESPACE, &key).await? {
            None => Ok((None, Vec::new())),
            Some(v) => {
                let list = serde_json::from_str(&v.value)
                    .map_err(|e| SnapshotError::Corrupt { key, reason: e.to_string() })?;
                Ok((Some(v.version), list))
            }
        }
    }

    /// Changes the history with `f` (compare-and-swap); returns what `f` returned.
    async fn update_history<T>(&self, mut f: impl FnMut(&mut Vec<BackfillStatus>) -> T) -> Result<T, SnapshotError> {
        let key = self.history_key();
        for _ in 0..CAS_ATTEMPTS {
            let (version, mut list) = self.read_history().await?;
            let out = f(&mut list);
            while list.len() > HISTORY_KEPT {
                match list.iter().position(|b| b.state != BackfillState::Running) {
                    Some(i) => list.remove(i),
                    None => break,
                };
            }
            let value = serde_json::to_string(&list).expect("history always serializes");
            if let CasOutcome::Swapped(_) = self.storage.slot_cas(NAMESPACE, &key, version, &value).await? {
                return Ok(out);
            }
        }
        Err(SnapshotError::Contended(key))
    }

    /// Every backfill: the pending requests, then the started ones (oldest first).
    pub async fn backfills(&self) -> Result<Vec<BackfillStatus>, SnapshotError> {
        let mut out: Vec<BackfillStatus> =
            self.pending_backfills().await?.iter().map(|r| BackfillStatus::new(r, BackfillState::Pending)).collect();
        let (_, history) = self.read_history().await?;
        out.retain(|p| !history.iter().any(|h| h.id == p.id));
        out.extend(history);
        out.sort_by_key(|b| b.id);
        Ok(out)
    }

    /// The started backfill `id`, if the history has it.
    pub async fn backfill(&self, id: u64) -> Result<Option<BackfillStatus>, SnapshotError> {
        Ok(self.read_history().await?.1.into_iter().find(|b| b.id == id))
    }

    /// Records a request as started (running), before its tables are read.
    pub async fn backfill_started(&self, request: &BackfillRequest) -> Result<(), SnapshotError> {
        self.update_history(|list| {
            if !list.iter().any(|b| b.id == request.id) {
                list.push(BackfillStatus::new(request, BackfillState::Running));
            }
        })
        .await
    }

    /// Records a table of a running backfill as read to the end; the
    /// backfill is done when all its tables are.
    pub async fn backfill_table_done(&self, id: u64, table: &str) -> Result<(), SnapshotError> {
        self.update_history(|list| {
            if let Some(b) = list.iter_mut().find(|b| b.id == id && b.state == BackfillState::Running) {
                if !b.tables_done.iter().any(|t| t == table) {
                    b.tables_done.push(table.to_string());
                }
                if b.tables.iter().all(|t| b.tables_done.contains(t)) {
                    b.state = BackfillState::Done;
                }
            }
        })
        .await
    }

    /// Marks a running backfill failed with `error`.
    pub async fn backfill_failed(&self, id: u64, error: &str) -> Result<(), SnapshotError> {
        self.update_history(|list| {
            if let Some(b) = list.iter_mut().find(|b| b.id == id && b.state == BackfillState::Running) {
                b.state = BackfillState::Failed;
                b.error = Some(error.to_string());
            }
        })
        .await
    }

    /// Cancels a pending or running backfill (see [`CancelOutcome`]).
    pub async fn cancel_backfill(&self, id: u64) -> Result<CancelOutcome, SnapshotError> {
        let pending = self.pending_backfills().await?.into_iter().find(|r| r.id == id);
        // Into the history first, so that a source starting it meanwhile sees it cancelled.
        let outcome = self
            .update_history(|list| match list.iter_mut().find(|b| b.id == id) {
                Some(b) if matches!(b.state, BackfillState::Running | BackfillState::Pending) => {
                    b.state = BackfillState::Cancelled;
                    CancelOutcome::Cancelled(b.clone())
                }
                Some(b) => CancelOutcome::AlreadyEnded(b.clone()),
                None => match &pending {
                    Some(r) => {
                        let b = BackfillStatus::new(r, BackfillState::Cancelled);
                        list.push(b.clone());
                        CancelOutcome::Cancelled(b)
                    }
                    None => CancelOutcome::NotFound,
                },
            })
            .await?;
        if pending.is_some() {
            self.remove_backfill(id).await?;
        }
        Ok(outcome)
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
