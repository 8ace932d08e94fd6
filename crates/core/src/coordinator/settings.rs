//! The per-sink settings of a pipeline: a [`SinkSlot`] (the sink, its id,
//! whether the `required` policy waits for it) and its [`DeliveryConfig`]
//! (timeout, backoff, attempts).
//!
//! Plain data handed in by whoever builds the `Pipeline`;
//! this module must never run or retry anything itself.

use std::time::Duration;

use crate::sink::Sink;

/// Retry and timeout settings of one sink.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryConfig {
    /// Time limit of one delivery attempt.
    pub timeout: Duration,
    /// First backoff after a failure; doubles up to `max_backoff`.
    pub initial_backoff: Duration,
    /// Longest backoff.
    pub max_backoff: Duration,
    /// Attempts after which a sink the policy does not need gives a batch up
    /// (only once the batch was committed without it).
    pub max_attempts: u32,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            timeout: Duration::from_secs(30),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            max_attempts: 5,
        }
    }
}

/// A sink with its pipeline-level settings.
pub struct SinkSlot {
    /// The sink's configured id.
    pub id: String,
    /// Whether `required` policy waits for it.
    pub required: bool,
    /// Retries and timeout.
    pub delivery: DeliveryConfig,
    /// The sink.
    pub sink: Box<dyn Sink>,
}
