//! `type: discard` — acknowledges every batch at once and keeps nothing.
//! It exists to measure the core path without any target cost.

use async_trait::async_trait;
use deltaforge_core::{BuildError, ComponentConfig, Event, Sink, SinkError};
use serde::Deserialize;

/// Configuration of the discard sink (only the common keys).
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DiscardConfig {}

impl ComponentConfig for DiscardConfig {}

/// A sink that drops everything it is given.
#[derive(Debug, Default)]
pub struct DiscardSink {
    delivered: u64,
}

impl DiscardSink {
    /// A new discard sink (never fails; `Result` for the component contract).
    pub fn new(_cfg: DiscardConfig) -> Result<Self, BuildError> {
        Ok(DiscardSink::default())
    }
}

#[async_trait]
impl Sink for DiscardSink {
    async fn deliver(&mut self, events: &[Event]) -> Result<(), SinkError> {
        self.delivered += events.len() as u64;
        Ok(())
    }
}
