//! The checkpoint store: one record per source id in the `checkpoints`
//! namespace of the KV primitive.
//!
//! The stored value is JSON an operator can read with `sqlite3`:
//!
//! ```json
//! {"position": {"lsn": "0/1A2B3C4D", "tx_id": 1234},
//!  "sinks": {"kafka-out": {"lsn": "0/1A2B3C4D", "tx_id": 1234}},
//!  "written_at": "2026-11-27T13:34:07.123456Z"}
//! ```
//!
//! This module must only be called with positions whose events every sink
//! needed by the commit policy has acknowledged; it does not check that
//! itself (the coordinator does).

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use deltaforge_storage::{StorageBackend, StorageError};
use serde::{Deserialize, Serialize};

use crate::position::Position;

/// The KV namespace of checkpoints.
pub const NAMESPACE: &str = "checkpoints";

/// A stored checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// Where the source resumes: the end of the last fully delivered transaction.
    pub position: Position,
    /// Each sink's own last acknowledged position (may be ahead of `position`).
    #[serde(default)]
    pub sinks: BTreeMap<String, Position>,
    /// When this checkpoint was written.
    pub written_at: DateTime<Utc>,
}

/// Errors of the checkpoint store.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The storage failed.
    #[error("checkpoint storage: {0}")]
    Storage(#[from] StorageError),
    /// A stored value is not a valid checkpoint.
    #[error(
        "the stored checkpoint for source {source_id:?} is unreadable ({reason}); \
         fix or delete it (`deltaforge checkpoints reset {source_id}`), which makes the \
         pipeline re-read from the beginning"
    )]
    Corrupt {
        /// The source id (key).
        source_id: String,
        /// The parse error.
        reason: String,
    },
}

/// Reads and writes checkpoints.
#[derive(Clone)]
pub struct CheckpointStore {
    storage: Arc<dyn StorageBackend>,
}

impl CheckpointStore {
    /// A store over the given backend.
    pub fn new(storage: Arc<dyn StorageBackend>) -> Self {
        CheckpointStore { storage }
    }

    /// The checkpoint of a source, if any.
    pub async fn load(&self, source_id: &str) -> Result<Option<Checkpoint>, CheckpointError> {
        match self.storage.kv_get(NAMESPACE, source_id).await? {
            None => Ok(None),
            Some(raw) => serde_json::from_str(&raw)
                .map(Some)
                .map_err(|e| CheckpointError::Corrupt { source_id: source_id.to_string(), reason: e.to_string() }),
        }
    }

    /// Writes a checkpoint; durable when it returns.
    pub async fn save(&self, source_id: &str, checkpoint: &Checkpoint) -> Result<(), CheckpointError> {
        let json = serde_json::to_string(checkpoint).expect("checkpoints always serialize");
        self.storage.kv_put(NAMESPACE, source_id, &json, None).await?;
        Ok(())
    }

    /// Deletes a checkpoint; returns whether one existed.
    pub async fn delete(&self, source_id: &str) -> Result<bool, CheckpointError> {
        Ok(self.storage.kv_delete(NAMESPACE, source_id).await?)
    }

    /// Every stored checkpoint, by source id; unreadable ones as errors.
    pub async fn list(&self) -> Result<Vec<(String, Result<Checkpoint, CheckpointError>)>, CheckpointError> {
        let rows = self.storage.kv_list(NAMESPACE, "").await?;
        Ok(rows
            .into_iter()
            .map(|(k, v)| {
                let parsed = serde_json::from_str(&v)
                    .map_err(|e| CheckpointError::Corrupt { source_id: k.clone(), reason: e.to_string() });
                (k, parsed)
            })
            .collect())
    }
}
