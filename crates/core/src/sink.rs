//! The [`Sink`] trait: delivery of batches to a target.
//!
//! A sink acknowledges a batch by returning `Ok` from [`Sink::deliver`], and
//! must do so only once its target has durably accepted every event of the
//! batch (file: fsync; Kafka: delivery report with acks=all; and so on). The
//! coordinator owns retries, timeouts and the commit policy; a sink never
//! writes checkpoints and never drops events on its own.

use async_trait::async_trait;

use crate::event::Event;

/// Why a delivery failed.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// May succeed if tried again (timeout, connection refused, 5xx).
    #[error("{0}")]
    Retryable(String),
    /// Will not succeed by retrying (bad credentials, missing target with no
    /// way to create it); the pipeline stops with this error.
    #[error("{0}")]
    Fatal(String),
}

/// A delivery target.
#[async_trait]
pub trait Sink: Send {
    /// Delivers the events, in order; returns `Ok` only when the target has
    /// durably accepted all of them. May be called again with the same
    /// events after a failure.
    async fn deliver(&mut self, events: &[Event]) -> Result<(), SinkError>;

    /// Flushes and releases resources at shutdown.
    async fn close(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}
