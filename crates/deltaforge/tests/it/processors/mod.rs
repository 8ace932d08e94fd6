//! Processors and the dead-letter queue: filter/mask/JavaScript pipelines,
//! the outbox processor, poison events, the JavaScript stack limit.

mod dlq_poison;
mod js_limits;
mod outbox;
mod pipeline;
