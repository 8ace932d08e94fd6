//! The [`Processor`] trait: a step that transforms a batch between the
//! source and the sinks.
//!
//! Processors run in declared order on each batch before delivery. They may
//! drop, change, split or add events, but must not reorder events of
//! different transactions: the checkpoint relies on source order.
//!
//! When one event is at fault (a script throws on it, it cannot be
//! transformed), the processor returns a [`ProcessorError`] naming that
//! event's index in its input. With a dead-letter queue the coordinator then
//! sets that event aside and runs the batch again without it; without one,
//! the pipeline stops with the error.

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
    /// Index (in the processor's input) of the event at fault, when the
    /// failure is that event's own fault rather than the processor's.
    pub event_index: Option<usize>,
}

impl ProcessorError {
    /// A failure of the processor as a whole (bad state, limits of the
    /// engine), not attributable to one event.
    pub fn batch(processor: impl Into<String>, message: impl Into<String>) -> Self {
        ProcessorError { processor: processor.into(), message: message.into(), event_index: None }
    }

    /// A failure caused by the event at `index` of the processor's input.
    pub fn event(processor: impl Into<String>, index: usize, message: impl Into<String>) -> Self {
        ProcessorError { processor: processor.into(), message: message.into(), event_index: Some(index) }
    }
}

/// A batch transformation.
#[async_trait]
pub trait Processor: Send {
    /// A short name for logs and metrics.
    fn name(&self) -> &str;

    /// Transforms one batch.
    async fn process(&mut self, events: Vec<Event>) -> Result<Vec<Event>, ProcessorError>;
}
