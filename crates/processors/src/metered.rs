//! The metrics wrapper every built-in processor runs in.
//!
//! It records, per `{pipeline, processor}`:
//! `deltaforge_processor_events_in_total`,
//! `deltaforge_processor_events_out_total`,
//! `deltaforge_processor_errors_total` (failed batches) and the
//! `deltaforge_processor_seconds` histogram (time per batch).
//!
//! The pipeline label is read from the batch's events
//! (`source.pipeline`), because the registry builds processors from their
//! config alone; handles are resolved once and reused. Empty batches are
//! passed through unmeasured. This wrapper must never change the events.

use std::time::Instant;

use async_trait::async_trait;
use deltaforge_core::{Event, Processor, ProcessorError};
use metrics::{counter, histogram, Counter, Histogram};

struct Handles {
    pipeline: String,
    events_in: Counter,
    events_out: Counter,
    errors: Counter,
    seconds: Histogram,
}

/// A processor with metrics.
pub struct Metered {
    inner: Box<dyn Processor>,
    handles: Option<Handles>,
}

/// `p` wrapped in [`Metered`], boxed: how the registry builds every
/// built-in processor.
pub fn metered(p: impl Processor + 'static) -> Box<dyn Processor> {
    Box::new(Metered::new(Box::new(p)))
}

impl Metered {
    /// Wraps `inner`.
    pub fn new(inner: Box<dyn Processor>) -> Self {
        Metered { inner, handles: None }
    }

    fn handles(&mut self, pipeline: &str) -> &Handles {
        if self.handles.as_ref().is_none_or(|h| h.pipeline != pipeline) {
            let labels = [("pipeline", pipeline.to_string()), ("processor", self.inner.name().to_string())];
            self.handles = Some(Handles {
                pipeline: pipeline.to_string(),
                events_in: counter!("deltaforge_processor_events_in_total", &labels),
                events_out: counter!("deltaforge_processor_events_out_total", &labels),
                errors: counter!("deltaforge_processor_errors_total", &labels),
                seconds: histogram!("deltaforge_processor_seconds", &labels),
            });
        }
        self.handles.as_ref().unwrap_or_else(|| unreachable!("set above"))
    }
}

#[async_trait]
impl Processor for Metered {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn process(&mut self, events: Vec<Event>) -> Result<Vec<Event>, ProcessorError> {
        let Some(first) = events.first() else { return self.inner.process(events).await };
        let pipeline = first.source.pipeline.clone();
        let n = events.len() as u64;
        let start = Instant::now();
        let result = self.inner.process(events).await;
        let elapsed = start.elapsed().as_secs_f64();
        let h = self.handles(&pipeline);
        h.events_in.increment(n);
        h.seconds.record(elapsed);
        match &result {
            Ok(out) => h.events_out.increment(out.len() as u64),
            Err(_) => h.errors.increment(1),
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::insert;
    use serde_json::json;

    struct Halve;

    #[async_trait]
    impl Processor for Halve {
        fn name(&self) -> &str {
            "halve"
        }
        async fn process(&mut self, mut events: Vec<Event>) -> Result<Vec<Event>, ProcessorError> {
            if events.len() == 1 {
                return Err(ProcessorError::batch("halve", "odd"));
            }
            events.truncate(events.len() / 2);
            Ok(events)
        }
    }

    #[test]
    fn counts_in_out_errors_and_time() {
        use metrics_util::debugging::{DebugValue, DebuggingRecorder};
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let mut m = Metered::new(Box::new(Halve));
        metrics::with_local_recorder(&recorder, || {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(async {
                let out = m.process((0..4).map(|i| insert("a.b", json!({"i": i}))).collect()).await.unwrap();
                assert_eq!(out.len(), 2);
                assert!(m.process(vec![insert("a.b", json!({}))]).await.is_err());
                assert!(m.process(vec![]).await.unwrap().is_empty());
            });
        });
        let mut seen = std::collections::HashMap::new();
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            let labels: Vec<String> = key.key().labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
            assert_eq!(labels, ["pipeline=p", "processor=halve"]);
            let v = match value {
                DebugValue::Counter(c) => c as f64,
                DebugValue::Histogram(h) => h.len() as f64,
                DebugValue::Gauge(g) => g.into_inner(),
            };
            seen.insert(key.key().name().to_string(), v);
        }
        assert_eq!(seen["deltaforge_processor_events_in_total"], 5.0);
        assert_eq!(seen["deltaforge_processor_events_out_total"], 2.0);
        assert_eq!(seen["deltaforge_processor_errors_total"], 1.0);
        assert_eq!(seen["deltaforge_processor_seconds"], 2.0, "one sample per non-empty batch");
    }
}
