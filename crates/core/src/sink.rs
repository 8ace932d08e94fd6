//! The [`Sink`] trait: delivery of batches to a target.
//!
//! A sink acknowledges a batch by returning `Ok` from [`Sink::deliver`], and
//! must do so only once its target has durably accepted every event of the
//! batch (file: fsync; Kafka: delivery report with acks=all; and so on). The
//! coordinator owns retries, timeouts and the commit policy; a sink never
//! writes checkpoints and never drops events on its own.
//!
//! A sink that gathers events across batches before making them durable
//! (files rolled over by size) says so with [`Sink::held_batches`]: the
//! batches it returned `Ok` for but still holds only in its buffer. The
//! coordinator acknowledges those only once the sink no longer holds them,
//! and calls [`Sink::flush`] while it waits, so the checkpoint never passes
//! an event that is only in a buffer.

use async_trait::async_trait;

use crate::event::Event;
use crate::schema::SchemaRegistry;

/// An event the target refused for the event's own fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedEvent {
    /// Index of the event in the slice given to [`Sink::deliver`].
    pub index: usize,
    /// Why the target refused it (e.g. the 4xx body, "message too large").
    pub reason: String,
}

/// Why a delivery failed.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Some events were refused for their own fault; **every other event of
    /// the batch was durably accepted**. With a dead-letter queue the
    /// refused events are set aside and the batch counts as delivered;
    /// without one the pipeline stops, since they must not be lost.
    #[error("{} event(s) rejected by the target: {}", .0.len(), .0.first().map(|r| r.reason.as_str()).unwrap_or(""))]
    Rejected(Vec<RejectedEvent>),
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

    /// How many of the batches most recently returned `Ok` by
    /// [`deliver`](Sink::deliver) still have events held only in the sink's
    /// buffer, not yet durable (a batch counts while any of its events is
    /// held). The coordinator does not acknowledge those batches until this
    /// number drops. The default, 0, means every `Ok` is durable.
    fn held_batches(&self) -> usize {
        0
    }

    /// Makes held events durable: those due by the sink's own rules (an age
    /// limit), or every one when `drain` (the source has ended or the
    /// pipeline is shutting down). Called by the coordinator while the sink
    /// holds batches and no new batch has arrived for a moment. May be
    /// called again after an error.
    async fn flush(&mut self, drain: bool) -> Result<(), SinkError> {
        let _ = drain;
        Ok(())
    }

    /// Hands the sink the tenant's schema history when a run starts, for
    /// sinks that type their output by the source's column types (columnar
    /// files). The default ignores it.
    fn attach_schemas(&mut self, schemas: SchemaRegistry) {
        let _ = schemas;
    }

    /// Flushes and releases resources at shutdown.
    async fn close(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}
