//! The checkpoint lag in bytes: polls the source's [`LagProbe`] beside the
//! data path and sets `deltaforge_checkpoint_lag_bytes`.
//!
//! This task shares nothing with the data path but the `durable` watch it
//! reads; it must never block or slow delivery, and a failing probe must
//! never stop the pipeline.

use std::time::Duration;

use metrics::gauge;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::coordinator::outcome::PipelineStatus;
use crate::position::Position;
use crate::source::LagProbe;

/// How often the source's [`LagProbe`] is asked for the lag in bytes.
pub const LAG_PROBE_EVERY: Duration = Duration::from_secs(2);
/// How long one probe may take before it counts as failed.
const LAG_PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts polling `probe`, or, for a source without a server log (`None`),
/// sets the lag in bytes to 0 once: there is nothing to be behind on.
pub(crate) fn start_lag_probe(
    probe: Option<Box<dyn LagProbe>>,
    durable: watch::Receiver<Option<Position>>,
    status: Option<watch::Sender<PipelineStatus>>,
    pipeline: &str,
    stop: CancellationToken,
) -> Option<JoinHandle<()>> {
    match probe {
        Some(probe) => Some(tokio::spawn(poll_lag_bytes(probe, durable, status, pipeline.to_string(), stop))),
        None => {
            gauge!("deltaforge_checkpoint_lag_bytes", "pipeline" => pipeline.to_string()).set(0.0);
            None
        }
    }
}

/// Polls the source's lag probe every [`LAG_PROBE_EVERY`] with the current
/// durable checkpoint and sets `deltaforge_checkpoint_lag_bytes`. A failed
/// probe leaves the gauge unchanged: a warning for the first failure, debug
/// logs while it keeps failing, so that an unreachable server does not
/// flood the log.
async fn poll_lag_bytes(
    mut probe: Box<dyn LagProbe>,
    durable: watch::Receiver<Option<Position>>,
    status: Option<watch::Sender<PipelineStatus>>,
    pipeline: String,
    stop: CancellationToken,
) {
    let gauge = gauge!("deltaforge_checkpoint_lag_bytes", "pipeline" => pipeline.clone());
    let mut tick = tokio::time::interval(LAG_PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let checkpoint = durable.borrow().clone();
        let result = tokio::select! {
            _ = stop.cancelled() => return,
            r = tokio::time::timeout(LAG_PROBE_TIMEOUT, probe.lag_bytes(checkpoint.as_ref())) => r,
        };
        let error = match result {
            Ok(Ok(Some(bytes))) => {
                gauge.set(bytes as f64);
                if let Some(s) = &status {
                    s.send_if_modified(|st| {
                        let changed = st.lag_bytes != Some(bytes);
                        st.lag_bytes = Some(bytes);
                        changed
                    });
                }
                if failing {
                    tracing::info!(pipeline = %pipeline, "checkpoint lag probe works again");
                }
                failing = false;
                continue;
            }
            Ok(Ok(None)) => continue,
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {LAG_PROBE_TIMEOUT:?}"),
        };
        if failing {
            tracing::debug!(pipeline = %pipeline, "checkpoint lag probe failed again: {error}");
        } else {
            tracing::warn!(pipeline = %pipeline, "checkpoint lag probe failed (deltaforge_checkpoint_lag_bytes keeps its last value): {error}");
        }
        failing = true;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    use async_trait::async_trait;

    use super::*;
    use crate::source_error::SourceError;
    use crate::testing::Seq;

    /// Answers from a script and records the checkpoints it was asked with.
    struct Scripted {
        answers: VecDeque<Result<Option<u64>, SourceError>>,
        asked: Arc<Mutex<Vec<Option<Position>>>>,
    }

    #[async_trait]
    impl LagProbe for Scripted {
        async fn lag_bytes(&mut self, checkpoint: Option<&Position>) -> Result<Option<u64>, SourceError> {
            self.asked.lock().unwrap().push(checkpoint.cloned());
            self.answers.pop_front().unwrap_or(Ok(None))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn failures_and_unknown_answers_leave_the_last_value() {
        let asked = Arc::new(Mutex::new(Vec::new()));
        let probe = Scripted {
            answers: VecDeque::from([
                Ok(Some(100)),
                Err(SourceError::Retryable("server down".into())),
                Ok(None),
                Ok(Some(0)),
            ]),
            asked: asked.clone(),
        };
        let (status_tx, status) = watch::channel(PipelineStatus::default());
        let (durable_tx, durable) = watch::channel(None);
        let stop = CancellationToken::new();
        let task = tokio::spawn(poll_lag_bytes(Box::new(probe), durable, Some(status_tx), "p".into(), stop.clone()));
        let step = LAG_PROBE_EVERY;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(status.borrow().lag_bytes, Some(100));
        durable_tx.send_replace(Some(Seq::at(5)));
        tokio::time::sleep(step).await;
        assert_eq!(status.borrow().lag_bytes, Some(100), "a failed probe keeps the last value");
        tokio::time::sleep(step).await;
        assert_eq!(status.borrow().lag_bytes, Some(100), "an unknown answer keeps the last value");
        tokio::time::sleep(step).await;
        assert_eq!(status.borrow().lag_bytes, Some(0));
        stop.cancel();
        task.await.unwrap();
        let asked = asked.lock().unwrap().clone();
        assert_eq!(asked.len(), 4);
        assert_eq!(asked[0], None);
        assert!(asked[1..].iter().all(|c| *c == Some(Seq::at(5))), "{asked:?}");
    }
}
