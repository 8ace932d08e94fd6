//! The Kafka sink: enqueues a whole batch into librdkafka, then waits for
//! every delivery report; with `exactly_once`, wraps each batch in a Kafka
//! transaction.
//!
//! This module owns the producer, delivery tracking, error classification
//! and the transaction state machine. It must never return `Ok` before
//! every message of the batch was acknowledged by the broker (`acks=all`)
//! — or, with `exactly_once`, before the transaction committed — because
//! the checkpoint is written right after.
//!
//! Delivery tracking is hand-written on a [`ThreadedProducer`] rather than
//! rdkafka's `FutureProducer`: a per-batch counter with a generation number
//! as the delivery opaque costs no allocation per message (the future
//! producer allocates a oneshot channel per message), and reports of an
//! abandoned earlier attempt (timed out by the coordinator) are recognised
//! by their generation and ignored.
//!
//! Transactions use librdkafka's blocking calls (`init_transactions`,
//! `commit_transaction`, `abort_transaction`) on the blocking pool. The
//! transaction state lives behind an async mutex whose owned guard travels
//! into the blocking task, so that a delivery attempt cancelled by the
//! coordinator's timeout can never leave the state half-updated: the next
//! attempt waits for the guard and sees exactly what happened (an open
//! transaction is aborted; a commit that succeeded late is recognised and
//! not repeated).
//!
//! Layout, each module depending only on the ones listed before it:
//! `errors` (build errors and the classification of Kafka errors into
//! fatal, retryable and rejected), `delivery` (the producer context that
//! counts delivery reports), `transaction` (the exactly-once state machine
//! and its blocking librdkafka calls), `producer` (the [`KafkaSink`]: producer
//! setup from the config), `send` (enqueueing a batch and the plain,
//! at-least-once delivery), `exactly_once` (delivery as one Kafka
//! transaction per batch) and `lifecycle` (the
//! [`Sink`](deltaforge_core::Sink) entry points that dispatch to them). Topic and
//! key routing is [`crate::message`]'s. This facade only declares and
//! re-exports them.

mod delivery;
mod errors;
mod exactly_once;
mod lifecycle;
mod producer;
mod send;
mod transaction;

pub use delivery::Context;
pub use errors::classify;
pub use producer::KafkaSink;
pub use send::ID_HEADER;

#[cfg(test)]
mod tests;
