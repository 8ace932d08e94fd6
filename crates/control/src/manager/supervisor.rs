//! The supervisor: the one task per pipeline that runs it according to its
//! target (run, pause, stop), its lease and the kill token, restarting it
//! with backoff after retryable failures and reporting its state.
//!
//! This module must never start a run while the pipeline's lease (when
//! leases are on) is not held, and never build components itself (the
//! [`PipelineFactory`] does). It knows nothing of the manager's map of
//! pipelines: it talks to it only through its watch channels.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use deltaforge_config::PipelineSpec;
use deltaforge_core::PipelineStatus;
use deltaforge_storage::StorageBackend;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::types::{is_retryable, set_status_gauge, Control, PipelineFactory, State, StateInfo, Target};
use crate::lease::LeaseView;

/// Runs one pipeline according to its control channel and lease.
pub(super) struct Supervisor {
    pub(super) spec: PipelineSpec,
    pub(super) factory: Arc<dyn PipelineFactory>,
    pub(super) storage: Arc<dyn StorageBackend>,
    pub(super) control: watch::Receiver<Control>,
    pub(super) state: watch::Sender<StateInfo>,
    pub(super) status: watch::Sender<PipelineStatus>,
    pub(super) lease: Option<watch::Receiver<LeaseView>>,
    pub(super) kill: CancellationToken,
    pub(super) changed: watch::Sender<u64>,
}

/// Why the supervisor woke up while waiting.
enum Wake {
    Changed,
    Killed,
}

impl Supervisor {
    fn set(&self, state: State, last_error: Option<String>) {
        let name = &self.spec.name;
        let changed = self.state.send_if_modified(|s| {
            if s.state == state && s.last_error == last_error {
                return false;
            }
            if s.state != state {
                s.since = Utc::now();
                tracing::info!(pipeline = %name, from = s.state.as_str(), to = state.as_str(), "pipeline state");
            }
            s.state = state;
            s.last_error = last_error;
            true
        });
        if changed {
            set_status_gauge(name, Some(state));
            self.changed.send_modify(|n| *n += 1);
        }
    }

    fn lease_held(&self) -> bool {
        self.lease.as_ref().is_none_or(|l| l.borrow().held)
    }

    /// Waits for a command, a lease change, or the kill token.
    async fn wait_change(&mut self, timeout: Option<Duration>) -> Wake {
        let lease_changed = async {
            match &mut self.lease {
                Some(l) => {
                    if l.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
                None => std::future::pending().await,
            }
        };
        let sleep = async {
            match timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.kill.cancelled() => Wake::Killed,
            r = self.control.changed() => if r.is_err() { Wake::Killed } else { Wake::Changed },
            _ = lease_changed => Wake::Changed,
            _ = sleep => Wake::Changed,
        }
    }

    /// Supervises the pipeline until the kill token fires.
    pub(super) async fn run(mut self) {
        let name = self.spec.name.clone();
        let mut backoff = Duration::from_secs(1);
        // The generation whose run finished or failed (waits for a new start).
        let mut ended_generation: Option<u64> = None;
        let mut last_error: Option<String> = None;
        loop {
            if self.kill.is_cancelled() {
                break;
            }
            let control = *self.control.borrow_and_update();
            if let Some(l) = &mut self.lease {
                l.borrow_and_update();
            }
            match control.target {
                Target::Pause => {
                    self.set(State::Paused, last_error.clone());
                    ended_generation = None;
                }
                Target::Stop => {
                    self.set(State::Stopped, last_error.clone());
                    ended_generation = None;
                }
                Target::Run if ended_generation == Some(control.generation) => {}
                Target::Run if !self.lease_held() => self.set(State::Standby, None),
                Target::Run => {
                    self.set(State::Running, last_error.clone());
                    match self.run_once(control).await {
                        RunEnd::Interrupted => {
                            backoff = Duration::from_secs(1);
                            continue;
                        }
                        RunEnd::Finished => {
                            ended_generation = Some(control.generation);
                            // Everything read was delivered: the pipeline is idle.
                            metrics::gauge!("deltaforge_checkpoint_lag_seconds", "pipeline" => name.clone()).set(0.0);
                            self.status.send_modify(|s| s.lag_seconds = 0.0);
                            last_error = None;
                            self.set(State::Finished, None);
                        }
                        RunEnd::Failed(e) => {
                            ended_generation = Some(control.generation);
                            tracing::error!(pipeline = %name, "pipeline failed: {e}");
                            last_error = Some(e);
                            self.set(State::Failed, last_error.clone());
                        }
                        RunEnd::Retry(e) => {
                            tracing::warn!(pipeline = %name, retry_in = ?backoff, "pipeline failed, restarting from its checkpoint: {e}");
                            last_error = Some(e);
                            self.state.send_modify(|s| s.restarts += 1);
                            self.set(State::Running, last_error.clone());
                            let wait = backoff;
                            backoff = (backoff * 2).min(Duration::from_secs(30));
                            if let Wake::Killed = self.wait_change(Some(wait)).await {
                                break;
                            }
                            continue;
                        }
                    }
                }
            }
            if let Wake::Killed = self.wait_change(None).await {
                break;
            }
        }
        let current = self.state.borrow().state;
        if matches!(current, State::Running | State::Stopping) {
            self.set(State::Stopped, last_error);
        }
    }

    async fn run_once(&mut self, control: Control) -> RunEnd {
        // Building may block (a JavaScript processor runs its script's
        // top-level code, up to its time limit): off the async workers.
        let (factory, spec, storage) = (self.factory.clone(), self.spec.clone(), self.storage.clone());
        let built = tokio::task::spawn_blocking(move || factory.build(&spec, storage)).await;
        let Ok(built) = built else {
            return RunEnd::Failed("building the pipeline panicked: see the log".into());
        };
        let mut pipeline = match built {
            Ok(p) => p,
            Err(e) if is_retryable(&e) => return RunEnd::Retry(e.to_string()),
            Err(e) => return RunEnd::Failed(e.to_string()),
        };
        self.status.send_modify(|s| {
            s.events_read = 0;
            s.last_error = None;
        });
        pipeline.status = Some(self.status.clone());
        let token = CancellationToken::new();
        let fut = pipeline.run(token.clone());
        tokio::pin!(fut);
        let mut interrupted = false;
        let result = loop {
            let lease_lost = async {
                match &mut self.lease {
                    Some(l) => {
                        if l.wait_for(|v| !v.held).await.is_err() {
                            std::future::pending::<()>().await;
                        }
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = &mut fut => break r,
                _ = self.kill.cancelled(), if !interrupted => {
                    interrupted = true;
                    token.cancel();
                    self.set(State::Stopping, None);
                }
                r = self.control.changed(), if !interrupted => {
                    let now = *self.control.borrow();
                    if r.is_err() || now.target != Target::Run || now.generation != control.generation {
                        interrupted = true;
                        token.cancel();
                        self.set(State::Stopping, None);
                    }
                }
                _ = lease_lost, if !interrupted => {
                    tracing::warn!(pipeline = %self.spec.name, "lease lost: stopping the pipeline");
                    interrupted = true;
                    token.cancel();
                    self.set(State::Stopping, Some("lease lost".into()));
                }
            }
        };
        if interrupted {
            if let Err(e) = &result {
                tracing::warn!(pipeline = %self.spec.name, "pipeline ended while stopping: {e}");
            }
            return RunEnd::Interrupted;
        }
        match result {
            Ok(summary) => {
                tracing::info!(
                    pipeline = %self.spec.name,
                    events = summary.events_read,
                    checkpoint = ?summary.checkpoint.map(|p| p.to_json()),
                    "pipeline finished"
                );
                RunEnd::Finished
            }
            Err(e) if is_retryable(&e) => RunEnd::Retry(e.to_string()),
            Err(e) => RunEnd::Failed(e.to_string()),
        }
    }
}

enum RunEnd {
    Interrupted,
    Finished,
    Failed(String),
    Retry(String),
}
