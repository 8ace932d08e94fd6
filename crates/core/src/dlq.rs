//! The dead-letter queue: events set aside because they themselves cannot
//! be processed or delivered (a script throws on them, the target rejects
//! them as malformed or too large), stored durably on the Queue primitive
//! (namespace `dlq`, one queue per pipeline) so that the rest of the batch
//! goes on and nothing is lost.
//!
//! An event reaches the queue only for its own fault; transient failures
//! (timeouts, 5xx, broker down) are retried, never dead-lettered. The
//! checkpoint may pass a dead-lettered event because it is safely stored:
//! every push is durable before the batch counts as delivered.
//!
//! Pushes of one queue are serialized by a lock shared by every clone of
//! the [`DeadLetterQueue`], so that `drop_oldest` drops exactly one letter
//! per push that found the queue full, whatever the number of concurrent
//! pushers (sinks and the processor stage). A `block` wait ends when the
//! queue's stop token fires (pipeline shutdown or abort), so a full queue
//! never holds up a shutdown.
//!
//! This module must never drop a letter except under `drop_oldest`, and
//! never report a push as stored before the storage returned.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deltaforge_storage::{StorageBackend, StorageError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::event::Event;
use crate::position::Position;

/// The Queue namespace of dead letters.
pub const NAMESPACE: &str = "dlq";

/// What to do when the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DlqOverflow {
    /// Wait (retrying) until an operator redrives or drains the queue; the
    /// pipeline stalls meanwhile.
    #[default]
    Block,
    /// Discard the oldest dead letter to make room (logged and counted).
    DropOldest,
    /// Stop the pipeline with an error.
    Reject,
}

/// Dead-letter settings of a pipeline (`spec.dlq`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DlqConfig {
    /// Most dead letters kept.
    pub capacity: u64,
    /// What happens when full.
    pub overflow: DlqOverflow,
}

impl Default for DlqConfig {
    fn default() -> Self {
        DlqConfig { capacity: 10_000, overflow: DlqOverflow::Block }
    }
}

/// One dead letter, as stored (JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The event's native envelope.
    pub event: Value,
    /// Why it was set aside.
    pub error: String,
    /// The sink that rejected it, if a sink did.
    pub sink: Option<String>,
    /// The processor that failed on it, if one did.
    pub processor: Option<String>,
    /// The event's source position.
    pub position: Position,
    /// When it was set aside.
    pub time: DateTime<Utc>,
}

/// Errors of the dead-letter queue.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    /// Storage failed.
    #[error("dead-letter queue storage: {0}")]
    Storage(#[from] StorageError),
    /// The queue is full and the overflow policy is `reject`.
    #[error(
        "the dead-letter queue of pipeline {pipeline} is full ({capacity} events) and its overflow policy is \
         `reject`; redrive or drain it (`deltaforge dlq`), or raise spec.dlq.capacity"
    )]
    Full {
        /// Pipeline name.
        pipeline: String,
        /// Capacity.
        capacity: u64,
    },
    /// The pipeline is stopping while a `block` push waited for room; the
    /// event was not stored (its batch is not acknowledged and is replayed).
    #[error("the dead-letter queue of pipeline {0} is full and the pipeline is stopping; the event will be replayed")]
    Stopped(String),
}

/// A pipeline's dead-letter queue.
#[derive(Clone)]
pub struct DeadLetterQueue {
    storage: Arc<dyn StorageBackend>,
    pipeline: String,
    config: DlqConfig,
    /// Serializes pushes (see the module docs); shared by clones.
    push_lock: Arc<tokio::sync::Mutex<()>>,
    /// Ends a `block` wait.
    stop: CancellationToken,
}

impl DeadLetterQueue {
    /// The queue of `pipeline`.
    pub fn new(storage: Arc<dyn StorageBackend>, pipeline: &str, config: DlqConfig) -> Self {
        DeadLetterQueue {
            storage,
            pipeline: pipeline.to_string(),
            config,
            push_lock: Arc::new(tokio::sync::Mutex::new(())),
            stop: CancellationToken::new(),
        }
    }

    /// The same queue (sharing its push lock), whose `block` waits end with
    /// [`DlqError::Stopped`] once `stop` fires.
    pub fn stopping_on(&self, stop: CancellationToken) -> Self {
        DeadLetterQueue { stop, ..self.clone() }
    }

    /// Stores an event; durable when it returns. Applies the overflow
    /// policy; returns how many older letters it dropped to make room (0 or
    /// 1, only under `drop_oldest`).
    pub async fn push(
        &self,
        event: &Event,
        error: &str,
        sink: Option<&str>,
        processor: Option<&str>,
    ) -> Result<u64, DlqError> {
        let letter = DeadLetter {
            event: serde_json::to_value(event.native()).expect("events serialize"),
            error: error.to_string(),
            sink: sink.map(str::to_string),
            processor: processor.map(str::to_string),
            position: event.source.position.clone(),
            time: Utc::now(),
        };
        let json = serde_json::to_string(&letter).expect("dead letters serialize");
        let labels = [("pipeline", self.pipeline.clone())];
        let mut wait = Duration::from_millis(100);
        let mut dropped = 0;
        // Held from the first push to the one that succeeds (so the room a
        // drop made is this push's), released while a `block` push sleeps.
        let mut guard = None;
        loop {
            if guard.is_none() {
                guard = Some(self.push_lock.lock().await);
            }
            match self.storage.queue_push(NAMESPACE, &self.pipeline, &json, self.config.capacity).await {
                Ok(_) => {
                    metrics::counter!("deltaforge_dlq_events_total", &labels).increment(1);
                    tracing::warn!(pipeline = %self.pipeline, id = %event.idempotency_key(), sink, processor, "event dead-lettered: {error}");
                    return Ok(dropped);
                }
                Err(StorageError::QueueFull { .. }) => match self.config.overflow {
                    DlqOverflow::Reject => {
                        return Err(DlqError::Full { pipeline: self.pipeline.clone(), capacity: self.config.capacity })
                    }
                    DlqOverflow::DropOldest => {
                        // Under the lock no other push can take the room
                        // made here, so one drop is enough.
                        if let Some(oldest) = self.storage.queue_peek(NAMESPACE, &self.pipeline, 1).await?.first() {
                            if self.storage.queue_ack(NAMESPACE, &self.pipeline, oldest.id).await? {
                                dropped += 1;
                                metrics::counter!("deltaforge_dlq_dropped_total", &labels).increment(1);
                                tracing::error!(pipeline = %self.pipeline, "dead-letter queue full: dropped its oldest event");
                            }
                        }
                    }
                    DlqOverflow::Block => {
                        guard = None;
                        tracing::error!(pipeline = %self.pipeline, capacity = self.config.capacity, "dead-letter queue full: waiting for it to be redriven or drained");
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            _ = self.stop.cancelled() => return Err(DlqError::Stopped(self.pipeline.clone())),
                        }
                        wait = (wait * 2).min(Duration::from_secs(5));
                    }
                },
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Up to `limit` dead letters, oldest first, with their queue ids.
    pub async fn list(&self, limit: usize) -> Result<Vec<(u64, DeadLetter)>, DlqError> {
        let items = self.storage.queue_peek(NAMESPACE, &self.pipeline, limit).await?;
        Ok(items
            .into_iter()
            .filter_map(|i| match serde_json::from_str(&i.value) {
                Ok(l) => Some((i.id, l)),
                Err(e) => {
                    tracing::error!(id = i.id, "unreadable dead letter left in place: {e}");
                    None
                }
            })
            .collect())
    }

    /// Removes a dead letter (after it was redriven).
    pub async fn ack(&self, id: u64) -> Result<bool, DlqError> {
        Ok(self.storage.queue_ack(NAMESPACE, &self.pipeline, id).await?)
    }

    /// Number of dead letters.
    pub async fn count(&self) -> Result<u64, DlqError> {
        Ok(self.storage.queue_len(NAMESPACE, &self.pipeline).await?)
    }
}
