//! Processors and the dead-letter queue: filter/mask/JavaScript pipelines,
//! the outbox processor, poison events.

mod dlq_poison;
mod outbox;
mod pipeline;
