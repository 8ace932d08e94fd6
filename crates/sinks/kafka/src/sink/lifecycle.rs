//! The [`Sink`] entry points of a [`KafkaSink`]: a batch goes to plain or
//! exactly-once delivery, and shutdown flushes the producer or aborts the
//! open transaction.
//!
//! It only dispatches: it must never encode, send or acknowledge messages
//! itself.

use std::time::Duration;

use async_trait::async_trait;
use deltaforge_core::{Event, Sink, SinkError};
use rdkafka::producer::Producer;

use super::producer::KafkaSink;
use super::transaction::{abort_blocking, blocking, Phase};

#[async_trait]
impl Sink for KafkaSink {
    async fn deliver(&mut self, events: &[Event]) -> Result<(), SinkError> {
        if events.is_empty() {
            return Ok(());
        }
        if self.eos.is_some() {
            self.deliver_eos(events).await
        } else {
            self.deliver_plain(events).await
        }
    }

    async fn close(&mut self) -> Result<(), SinkError> {
        let p = self.producer.clone();
        match &self.eos {
            None => tokio::task::spawn_blocking(move || p.flush(Duration::from_secs(10)))
                .await
                .map_err(|e| SinkError::Retryable(format!("kafka: flush task failed: {e}")))?
                .map_err(|e| SinkError::Retryable(format!("kafka: flushing at shutdown: {e}"))),
            Some(eos) => {
                let g = eos.state.clone().lock_owned().await;
                if g.phase == Phase::Idle {
                    return Ok(());
                }
                let (_g, r) = blocking(g, move |t| abort_blocking(t, &p)).await?;
                r.map_err(|e| SinkError::Retryable(format!("kafka: aborting the open transaction at shutdown: {e}")))
            }
        }
    }
}
