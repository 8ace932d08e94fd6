//! `type: stdout` — writes each event's native envelope as one line on
//! standard output. Useful for demos and piping into `jq`.

use std::io::Write;

use async_trait::async_trait;
use deltaforge_core::{BuildError, ComponentConfig, Event, Sink, SinkError};
use serde::Deserialize;

/// Configuration of the stdout sink (only the common keys).
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StdoutConfig {}

impl ComponentConfig for StdoutConfig {}

/// A sink that prints events.
#[derive(Debug, Default)]
pub struct StdoutSink {
    buf: Vec<u8>,
}

impl StdoutSink {
    /// A new stdout sink (never fails; `Result` for the component contract).
    pub fn new(_cfg: StdoutConfig) -> Result<Self, BuildError> {
        Ok(StdoutSink::default())
    }
}

#[async_trait]
impl Sink for StdoutSink {
    async fn deliver(&mut self, events: &[Event]) -> Result<(), SinkError> {
        self.buf.clear();
        crate::encode_lines(events, &mut self.buf);
        let mut out = std::io::stdout().lock();
        out.write_all(&self.buf)
            .and_then(|_| out.flush())
            .map_err(|e| SinkError::Retryable(format!("writing to stdout: {e}")))
    }
}
