//! The [`Processor`] trait: a step that transforms a batch between the
//! source and the sinks.
//!
//! Processors run in declared order on each batch before delivery. They may
//! drop, change, split or add events, but must not reorder events of
//! different transactions: the checkpoint relies on source order.

use async_trait::async_trait;

use crate::event::Event;

/// Why a processor failed on a batch.
#[derive(Debug, thiserror::Error)]
#[error("processor {processor}: {message}")]
pub struct ProcessorError {
    /// The processor's name (its type or configured id).
    pub processor: String,
    /// What went wrong, naming the event when one is at fault.
    pub message: String,
}

/// A batch transformation.
#[async_trait]
pub trait Processor: Send {
    /// A short name for logs and metrics.
    fn name(&self) -> &str;

    /// Transforms one batch.
    async fn process(&mut self, events: Vec<Event>) -> Result<Vec<Event>, ProcessorError>;
}
