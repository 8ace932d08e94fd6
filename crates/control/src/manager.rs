//! The pipeline manager: owns every pipeline's spec and its one supervised
//! task, and carries out the operator's commands.
//!
//! Each pipeline has a *target* set by commands (`run`, `pause`, `stop`) and
//! a *state* its supervisor reports:
//!
//! | state | meaning |
//! |---|---|
//! | `running` | the pipeline runs (after a retryable failure it is restarted from its checkpoint with backoff; `last_error` says why) |
//! | `paused` | stopped by `pause`: in-flight batches delivered, checkpoint written, lease kept; `resume` continues from the checkpoint |
//! | `stopping` | a stop was requested; in-flight batches are being delivered (bounded by the shutdown grace) |
//! | `stopped` | stopped by `stop` (or a checkpoint reset); `start` runs it again from its checkpoint |
//! | `failed` | ended with an error that retrying cannot fix (`last_error`); `start` tries again |
//! | `finished` | the source is exhausted (e.g. a bounded `datagen`) |
//! | `standby` | another instance holds the pipeline's lease (shared storage only) |
//!
//! Pause and stop both end the run cleanly (the coordinator has no
//! in-place pause); they differ in intent and in what `/ready` reports.
//!
//! This module must never run a pipeline whose lease (when leases are on)
//! is not held, never delete a checkpoint while a run of its pipeline may
//! still write it, and never build components itself: a [`PipelineFactory`]
//! does that.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use deltaforge_config::{Catalog, ConfigErrors, PipelineSpec};
use deltaforge_core::{
    Checkpoint, CheckpointStore, Pipeline, PipelineError, PipelineStatus, Position, SchemaRegistry, SinkError, Source,
    SourceError,
};
use deltaforge_storage::StorageBackend;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::lease::{self, FencedStorage, LeaseConfig, LeaseDeadline, LeaseView};

/// Builds the runtime parts of a pipeline; implemented by the binary over
/// its component registry.
pub trait PipelineFactory: Send + Sync + 'static {
    /// The catalog that validates component configs (offline).
    fn catalog(&self) -> &dyn Catalog;
    /// Builds one run of `spec` over `storage`. The manager sets
    /// [`Pipeline::status`] itself.
    fn build(&self, spec: &PipelineSpec, storage: Arc<dyn StorageBackend>) -> Result<Pipeline, PipelineError>;
    /// Builds the source of `spec` alone, for a checkpoint reset
    /// ([`Source::reset`]). The default builds none, and a reset then only
    /// deletes the checkpoint.
    fn build_source(&self, spec: &PipelineSpec) -> Result<Option<Box<dyn Source>>, SourceError> {
        let _ = spec;
        Ok(None)
    }
}

/// A pipeline's state (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Running (or restarting after a retryable failure).
    Running,
    /// Paused by an operator.
    Paused,
    /// A stop is in progress.
    Stopping,
    /// Stopped by an operator.
    Stopped,
    /// Failed with a non-retryable error.
    Failed,
    /// The source is exhausted.
    Finished,
    /// Another instance holds the lease.
    Standby,
}

impl State {
    /// Every state, for the status gauge.
    pub const ALL: [State; 7] = [
        State::Running,
        State::Paused,
        State::Stopping,
        State::Stopped,
        State::Failed,
        State::Finished,
        State::Standby,
    ];

    /// The state's name as in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Running => "running",
            State::Paused => "paused",
            State::Stopping => "stopping",
            State::Stopped => "stopped",
            State::Failed => "failed",
            State::Finished => "finished",
            State::Standby => "standby",
        }
    }
}

/// What the operator asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Run,
    Pause,
    Stop,
}

/// A command: the target, and a generation that every `start`/`resume`
/// bumps so that a finished or failed pipeline can be started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Control {
    target: Target,
    generation: u64,
}

/// The supervisor's report.
#[derive(Debug, Clone, PartialEq)]
struct StateInfo {
    state: State,
    last_error: Option<String>,
    since: DateTime<Utc>,
    restarts: u64,
}

struct Entry {
    spec: PipelineSpec,
    control: watch::Sender<Control>,
    state: watch::Receiver<StateInfo>,
    status: watch::Sender<PipelineStatus>,
    lease: Option<watch::Receiver<LeaseView>>,
    kill: CancellationToken,
    task: JoinHandle<()>,
    /// Stops the lease keeper; fired only after the supervisor ended, so
    /// the lease outlives the last checkpoint write.
    lease_stop: CancellationToken,
    lease_task: Option<JoinHandle<()>>,
}

/// Errors of manager commands; the API maps each to a status code.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    /// No pipeline of that name (404).
    #[error("no pipeline named {0:?}")]
    NotFound(String),
    /// The spec is invalid (400).
    #[error("invalid pipeline spec: {0}")]
    Invalid(ConfigErrors),
    /// A request that is malformed in another way (400).
    #[error("{0}")]
    BadRequest(String),
    /// The command cannot be carried out safely now (409).
    #[error("{0}")]
    Conflict(String),
    /// Storage failed (503).
    #[error("storage: {0}")]
    Storage(String),
}

/// Settings of a [`PipelineManager`].
#[derive(Clone)]
pub struct ManagerConfig {
    /// Storage for checkpoints, schemas and leases.
    pub storage: Arc<dyn StorageBackend>,
    /// Leases (shared storage); `None` for single-instance backends.
    pub leases: Option<LeaseConfig>,
    /// This instance's id (lease holder name).
    pub instance_id: String,
    /// How long a reset waits for a running pipeline to stop before answering 409.
    pub stop_wait: Duration,
}

/// One pipeline as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineView {
    /// `metadata.name`.
    pub name: String,
    /// Tenant.
    pub tenant: String,
    /// Current state.
    pub state: State,
    /// Since when.
    pub state_since: DateTime<Utc>,
    /// Last error (failure, or the reason of the latest restart).
    pub last_error: Option<String>,
    /// Restarts after retryable failures.
    pub restarts: u64,
    /// Source type.
    pub source_type: String,
    /// Source id (checkpoint key).
    pub source_id: String,
    /// Events read by the current (or last) run.
    pub events_read: u64,
    /// Current checkpoint lag in seconds (0 while idle).
    pub lag_seconds: f64,
    /// Current checkpoint lag in source log bytes (WAL or binlog; 0 for
    /// sources without a server log), as last measured; `null` until measured.
    pub lag_bytes: Option<u64>,
    /// The last durable checkpoint, if any.
    pub checkpoint: Option<Checkpoint>,
    /// Lease holder (shared storage only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease: Option<Value>,
    /// The spec with secrets redacted.
    pub spec: Value,
}

struct Inner {
    factory: Arc<dyn PipelineFactory>,
    config: ManagerConfig,
    pipelines: Mutex<BTreeMap<String, Entry>>,
    /// Bumped on every state change of any pipeline.
    changed: watch::Sender<u64>,
}

/// Owns the pipelines of this instance. Cheap to clone.
#[derive(Clone)]
pub struct PipelineManager {
    inner: Arc<Inner>,
}

fn set_status_gauge(pipeline: &str, state: Option<State>) {
    for s in State::ALL {
        let v = if Some(s) == state { 1.0 } else { 0.0 };
        metrics::gauge!("deltaforge_pipeline_status", "pipeline" => pipeline.to_string(), "state" => s.as_str()).set(v);
    }
}

/// What a checkpoint reset did.
#[derive(Debug, Clone)]
pub struct Reset {
    /// Whether a checkpoint existed (and was deleted).
    pub existed: bool,
    /// The position the next start reads from, stored as the new
    /// checkpoint (MySQL: the oldest binlog's start); `None` when no
    /// checkpoint is left and the source's no-checkpoint rule applies.
    pub start: Option<Position>,
    /// The pipeline after the reset (stopped).
    pub pipeline: PipelineView,
}

fn reset_refused(name: &str, e: &SourceError) -> ManagerError {
    ManagerError::Conflict(format!(
        "pipeline {name:?} is stopped, but its source could not be prepared for the reset, so its checkpoint was \
         not deleted: {e}. Fix the cause and retry the reset (it is safe to repeat), or start the pipeline to resume \
         from its checkpoint"
    ))
}

fn is_retryable(e: &PipelineError) -> bool {
    e.is_retryable() || matches!(e, PipelineError::Sink { error: SinkError::Retryable(_), .. })
}

impl PipelineManager {
    /// A manager with no pipelines.
    pub fn new(factory: Arc<dyn PipelineFactory>, config: ManagerConfig) -> Self {
        let (changed, _) = watch::channel(0);
        PipelineManager { inner: Arc::new(Inner { factory, config, pipelines: Mutex::new(BTreeMap::new()), changed }) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        self.inner.pipelines.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether leases are in use.
    pub fn uses_leases(&self) -> bool {
        self.inner.config.leases.is_some()
    }

    /// This instance's id.
    pub fn instance_id(&self) -> &str {
        &self.inner.config.instance_id
    }

    /// The storage backend.
    pub fn storage(&self) -> Arc<dyn StorageBackend> {
        self.inner.config.storage.clone()
    }

    /// Adds a validated pipeline and starts supervising it (running).
    pub fn add(&self, spec: PipelineSpec) {
        let name = spec.name.clone();
        let (control, control_rx) = watch::channel(Control { target: Target::Run, generation: 1 });
        let (state_tx, state) =
            watch::channel(StateInfo { state: State::Stopped, last_error: None, since: Utc::now(), restarts: 0 });
        let (status, _) = watch::channel(PipelineStatus::default());
        let kill = CancellationToken::new();
        let deadline = Arc::new(LeaseDeadline::default());
        let lease_stop = CancellationToken::new();
        let (lease, lease_task) = match self.inner.config.leases {
            Some(cfg) => {
                let (tx, rx) = watch::channel(LeaseView::default());
                let task = tokio::spawn(lease::keep(
                    self.inner.config.storage.clone(),
                    name.clone(),
                    self.inner.config.instance_id.clone(),
                    cfg,
                    deadline.clone(),
                    tx,
                    lease_stop.clone(),
                ));
                (Some(rx), Some(task))
            }
            None => (None, None),
        };
        let storage: Arc<dyn StorageBackend> = match self.inner.config.leases {
            Some(_) => Arc::new(FencedStorage::new(self.inner.config.storage.clone(), name.clone(), deadline)),
            None => self.inner.config.storage.clone(),
        };
        let sup = Supervisor {
            spec: spec.clone(),
            factory: self.inner.factory.clone(),
            storage,
            control: control_rx,
            state: state_tx,
            status: status.clone(),
            lease: lease.clone(),
            kill: kill.clone(),
            changed: self.inner.changed.clone(),
        };
        let task = tokio::spawn(sup.run());
        self.lock().insert(name, Entry { spec, control, state, status, lease, kill, task, lease_stop, lease_task });
        self.inner.changed.send_modify(|n| *n += 1);
    }

    /// Parses and validates one pipeline document from an API body, like
    /// the config file (env expansion, structure, component configs), and
    /// checks it against the other pipelines (`except`: the one it replaces).
    pub fn validate_body(&self, body: &str, except: Option<&str>) -> Result<PipelineSpec, ManagerError> {
        let spec = self.parse_body(body)?;
        self.check_against_others(&spec, except)?;
        Ok(spec)
    }

    /// Parses and validates one pipeline document (no cross-pipeline checks).
    fn parse_body(&self, body: &str) -> Result<PipelineSpec, ManagerError> {
        let env = |name: &str| std::env::var(name).ok();
        let mut specs = deltaforge_config::parse_str(body, "<api>", &env, self.inner.factory.catalog())
            .map_err(ManagerError::Invalid)?;
        if specs.len() != 1 {
            return Err(ManagerError::BadRequest(format!(
                "the body must hold exactly one Pipeline document; it holds {}",
                specs.len()
            )));
        }
        Ok(specs.remove(0))
    }

    /// Duplicate names and source ids against the other pipelines.
    fn check_against_others(&self, spec: &PipelineSpec, except: Option<&str>) -> Result<(), ManagerError> {
        let mut all: Vec<PipelineSpec> =
            self.lock().values().filter(|e| Some(e.spec.name.as_str()) != except).map(|e| e.spec.clone()).collect();
        all.push(spec.clone());
        deltaforge_config::check_unique(&all).map_err(ManagerError::Invalid)
    }

    /// Creates a pipeline from an API body; it starts running.
    pub fn create(&self, body: &str) -> Result<PipelineView, ManagerError> {
        let spec = self.validate_body(body, None)?;
        let name = spec.name.clone();
        self.add(spec);
        self.get(&name)
    }

    /// Replaces a pipeline's spec: the old run stops (delivering in-flight
    /// batches) and the new spec starts from the checkpoint of its source id.
    pub async fn replace(&self, name: &str, body: &str) -> Result<PipelineView, ManagerError> {
        self.get(name)?;
        let spec = self.parse_body(body)?;
        if spec.name != name {
            return Err(ManagerError::BadRequest(format!(
                "metadata.name is {:?} but the URL names {name:?}; renaming is delete + create",
                spec.name
            )));
        }
        self.check_against_others(&spec, Some(name))?;
        self.remove(name).await?;
        self.add(spec);
        self.get(name)
    }

    /// Deletes a pipeline: stops it (delivering in-flight batches) and
    /// releases its lease. Its checkpoint stays in storage.
    pub async fn delete(&self, name: &str) -> Result<(), ManagerError> {
        self.remove(name).await?;
        Ok(())
    }

    async fn remove(&self, name: &str) -> Result<(), ManagerError> {
        let entry = self.lock().remove(name).ok_or_else(|| ManagerError::NotFound(name.to_string()))?;
        entry.kill.cancel();
        let _ = entry.task.await;
        entry.lease_stop.cancel();
        if let Some(t) = entry.lease_task {
            let _ = t.await;
        }
        set_status_gauge(name, None);
        self.inner.changed.send_modify(|n| *n += 1);
        Ok(())
    }

    fn command(&self, name: &str, target: Target, bump: bool) -> Result<watch::Receiver<StateInfo>, ManagerError> {
        let map = self.lock();
        let e = map.get(name).ok_or_else(|| ManagerError::NotFound(name.to_string()))?;
        e.control.send_modify(|c| {
            c.target = target;
            if bump {
                c.generation += 1;
            }
        });
        Ok(e.state.clone())
    }

    /// Starts a stopped, paused, finished or failed pipeline (from its checkpoint).
    pub fn start(&self, name: &str) -> Result<PipelineView, ManagerError> {
        let running = self.get(name)?.state == State::Running;
        self.command(name, Target::Run, !running)?;
        self.get(name)
    }

    /// Resumes a paused pipeline (same as start).
    pub fn resume(&self, name: &str) -> Result<PipelineView, ManagerError> {
        self.start(name)
    }

    /// Pauses a pipeline; waits up to `wait` for the run to end.
    pub async fn pause(&self, name: &str, wait: Duration) -> Result<PipelineView, ManagerError> {
        let mut rx = self.command(name, Target::Pause, false)?;
        let _ =
            tokio::time::timeout(wait, rx.wait_for(|s| s.state != State::Running && s.state != State::Stopping)).await;
        self.get(name)
    }

    /// Stops a pipeline; waits up to `wait` for the run to end.
    pub async fn stop(&self, name: &str, wait: Duration) -> Result<PipelineView, ManagerError> {
        let mut rx = self.command(name, Target::Stop, false)?;
        let _ =
            tokio::time::timeout(wait, rx.wait_for(|s| s.state != State::Running && s.state != State::Stopping)).await;
        self.get(name)
    }

    /// Resets a pipeline's checkpoint: stops it if running, lets the source
    /// prepare its server ([`Source::reset`]: e.g. PostgreSQL drops the
    /// replication slot, MySQL names its oldest binlog), then deletes the
    /// checkpoint, or replaces it with the start position the source gave,
    /// so that its next start re-reads from the beginning.
    pub async fn reset_checkpoint(&self, name: &str) -> Result<Reset, ManagerError> {
        let view = self.get(name)?;
        match view.state {
            State::Stopping => {
                return Err(ManagerError::Conflict(format!(
                    "pipeline {name:?} is still stopping (delivering in-flight batches), so its checkpoint may \
                     still be written; retry once its state is `stopped`"
                )))
            }
            State::Standby => {
                return Err(ManagerError::Conflict(format!(
                    "pipeline {name:?} runs on instance {:?}, which may write its checkpoint at any time; \
                     reset it through that instance",
                    view.lease.as_ref().and_then(|l| l.get("holder")).cloned().unwrap_or(Value::Null)
                )))
            }
            _ => {}
        }
        let mut rx = self.command(name, Target::Stop, false)?;
        let stopped = tokio::time::timeout(
            self.inner.config.stop_wait,
            rx.wait_for(|s| !matches!(s.state, State::Running | State::Stopping)),
        )
        .await
        .is_ok_and(|r| r.is_ok());
        if !stopped {
            return Err(ManagerError::Conflict(format!(
                "pipeline {name:?} was asked to stop but is still delivering in-flight batches after {:?}; \
                 its checkpoint was not deleted. Retry once its state is `stopped`",
                self.inner.config.stop_wait
            )));
        }
        // The lease may have moved while we waited.
        if self.uses_leases() && self.get(name)?.state == State::Standby {
            return Err(ManagerError::Conflict(format!(
                "pipeline {name:?} lost its lease to another instance; reset it through that instance"
            )));
        }
        // The source first: if it cannot prepare its server, nothing is
        // deleted and the pipeline resumes from its checkpoint as before.
        let spec = self.spec(name)?;
        let source = self.inner.factory.build_source(&spec).map_err(|e| reset_refused(name, &e))?;
        let start = match source {
            Some(source) => source.reset(name).await.map_err(|e| reset_refused(name, &e))?,
            None => None,
        };
        let store = CheckpointStore::new(self.inner.config.storage.clone());
        let existed = store.delete(&view.source_id).await.map_err(|e| ManagerError::Storage(e.to_string()))?;
        if let Some(position) = &start {
            // A position before every event the source can still read: it
            // passes nothing undelivered, so storing it keeps the invariant.
            let cp = Checkpoint { position: position.clone(), sinks: BTreeMap::new(), written_at: Utc::now() };
            store.save(&view.source_id, &cp).await.map_err(|e| ManagerError::Storage(e.to_string()))?;
        }
        {
            let map = self.lock();
            if let Some(e) = map.get(name) {
                e.status.send_modify(|s| *s = PipelineStatus::default());
            }
        }
        tracing::info!(
            pipeline = name,
            source = %view.source_id,
            existed,
            start = %start.as_ref().map(|p| p.to_string()).unwrap_or_else(|| "the source's no-checkpoint rule".into()),
            "checkpoint reset by the API"
        );
        Ok(Reset { existed, start, pipeline: self.get(name)? })
    }

    /// Names of every pipeline.
    pub fn names(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// The spec of a pipeline.
    pub fn spec(&self, name: &str) -> Result<PipelineSpec, ManagerError> {
        self.lock().get(name).map(|e| e.spec.clone()).ok_or_else(|| ManagerError::NotFound(name.to_string()))
    }

    /// One pipeline's view, with the checkpoint as last reported by its run.
    pub fn get(&self, name: &str) -> Result<PipelineView, ManagerError> {
        let map = self.lock();
        let e = map.get(name).ok_or_else(|| ManagerError::NotFound(name.to_string()))?;
        let st = e.state.borrow().clone();
        let status = e.status.borrow().clone();
        Ok(PipelineView {
            name: e.spec.name.clone(),
            tenant: e.spec.tenant.clone(),
            state: st.state,
            state_since: st.since,
            last_error: st.last_error.or(status.last_error),
            restarts: st.restarts,
            source_type: e.spec.source.kind.clone(),
            source_id: e.spec.source.id.clone(),
            events_read: status.events_read,
            lag_seconds: status.lag_seconds,
            lag_bytes: status.lag_bytes,
            checkpoint: status.checkpoint,
            lease: e.lease.as_ref().map(|l| {
                let l = l.borrow();
                json!({ "held_here": l.held, "holder": l.holder, "instance": self.inner.config.instance_id })
            }),
            spec: e.spec.redacted_document(),
        })
    }

    /// Like [`get`](Self::get), with the checkpoint read from storage.
    pub async fn get_fresh(&self, name: &str) -> Result<PipelineView, ManagerError> {
        let mut view = self.get(name)?;
        view.checkpoint = self.load_checkpoint(&view.source_id).await?;
        Ok(view)
    }

    /// Every pipeline's view.
    pub fn list(&self) -> Vec<PipelineView> {
        self.names().iter().filter_map(|n| self.get(n).ok()).collect()
    }

    /// The stored checkpoint of a source id.
    pub async fn load_checkpoint(&self, source_id: &str) -> Result<Option<Checkpoint>, ManagerError> {
        CheckpointStore::new(self.inner.config.storage.clone())
            .load(source_id)
            .await
            .map_err(|e| ManagerError::Storage(e.to_string()))
    }

    /// The schema registry of a pipeline's tenant.
    pub async fn schemas(&self, name: &str) -> Result<SchemaRegistry, ManagerError> {
        let spec = self.spec(name)?;
        SchemaRegistry::load(self.inner.config.storage.clone(), &spec.tenant)
            .await
            .map_err(|e| ManagerError::Storage(e.to_string()))
    }

    /// Waits until some pipeline's state changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changed.subscribe()
    }

    /// Whether there is at least one pipeline and every one has ended by
    /// itself (finished or failed); with `Some(failed)`.
    pub fn all_ended(&self) -> Option<bool> {
        let map = self.lock();
        if map.is_empty() {
            return None;
        }
        let mut failed = false;
        for e in map.values() {
            match e.state.borrow().state {
                State::Finished => {}
                State::Failed => failed = true,
                _ => return None,
            }
        }
        Some(failed)
    }

    /// Stops every pipeline (delivering in-flight batches) and releases the leases.
    pub async fn shutdown(&self) {
        let entries: Vec<Entry> = std::mem::take(&mut *self.lock()).into_values().collect();
        for e in &entries {
            e.kill.cancel();
        }
        for e in entries {
            let _ = e.task.await;
            e.lease_stop.cancel();
            if let Some(t) = e.lease_task {
                let _ = t.await;
            }
        }
    }
}

/// Runs one pipeline according to its control channel and lease.
struct Supervisor {
    spec: PipelineSpec,
    factory: Arc<dyn PipelineFactory>,
    storage: Arc<dyn StorageBackend>,
    control: watch::Receiver<Control>,
    state: watch::Sender<StateInfo>,
    status: watch::Sender<PipelineStatus>,
    lease: Option<watch::Receiver<LeaseView>>,
    kill: CancellationToken,
    changed: watch::Sender<u64>,
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

    async fn run(mut self) {
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
        let mut pipeline = match self.factory.build(&self.spec, self.storage.clone()) {
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
