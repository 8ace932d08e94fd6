//! Test hooks that make a sink fail on demand, for crash and outage tests
//! against the real binary.
//!
//! `DELTAFORGE_FAILPOINTS=sink:out=/tmp/out.fail,sink:audit=/tmp/a.fail`
//! makes sink `out` fail every delivery (as a retryable error) while the
//! file `/tmp/out.fail` exists. Unset, no sink is wrapped and nothing costs
//! anything. Never enable it in production.

use std::path::PathBuf;

use async_trait::async_trait;
use deltaforge_core::{Event, Sink, SinkError};

/// The flag file configured for a sink id, if any.
pub fn for_sink(sink_id: &str) -> Option<PathBuf> {
    let spec = std::env::var("DELTAFORGE_FAILPOINTS").ok()?;
    spec.split(',').find_map(|item| {
        let (name, path) = item.trim().split_once('=')?;
        (name.strip_prefix("sink:")? == sink_id).then(|| PathBuf::from(path))
    })
}

/// Wraps a sink and fails while a flag file exists.
pub struct FailpointSink {
    inner: Box<dyn Sink>,
    flag: PathBuf,
}

impl FailpointSink {
    /// Wraps `inner`.
    pub fn new(inner: Box<dyn Sink>, flag: PathBuf) -> Self {
        tracing::warn!(flag = %flag.display(), "failpoint armed for a sink (test hook)");
        FailpointSink { inner, flag }
    }
}

#[async_trait]
impl Sink for FailpointSink {
    async fn deliver(&mut self, events: &[Event]) -> Result<(), SinkError> {
        if self.flag.exists() {
            return Err(SinkError::Retryable(format!("failpoint: {} exists", self.flag.display())));
        }
        self.inner.deliver(events).await
    }

    async fn close(&mut self) -> Result<(), SinkError> {
        self.inner.close().await
    }
}
