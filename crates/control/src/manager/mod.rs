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
//!
//! Modules, by concern (none imports a module that imports it back):
//!
//! * `types`: the shared types (leaf);
//! * `supervisor`: the task that runs one pipeline;
//! * `commands`: the operator's commands on existing pipelines;
//! * this module: the [`PipelineManager`] itself, its map of pipelines,
//!   adding and removing them, and the read-only views.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::Utc;
use deltaforge_config::PipelineSpec;
use deltaforge_core::{Checkpoint, CheckpointError, CheckpointStore, PipelineStatus, SchemaRegistry};
use deltaforge_storage::StorageBackend;
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::lease::{self, FencedStorage, LeaseDeadline, LeaseView};

mod commands;
mod supervisor;
mod types;

use supervisor::Supervisor;
use types::{set_status_gauge, Control, StateInfo, Target};
pub use types::{
    unreadable_checkpoint_fix, ManagerConfig, ManagerError, PipelineFactory, PipelineView, RedriveFuture, Reset, State,
};

/// One pipeline: its spec, the ends of its supervisor's channels, and its tasks.
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

/// What every clone of a [`PipelineManager`] shares.
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

    /// The factory that builds the pipelines' components.
    pub(crate) fn factory(&self) -> Arc<dyn PipelineFactory> {
        self.inner.factory.clone()
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

    /// Stops a pipeline's supervisor and lease keeper and forgets it.
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
            sink_counts: status.sinks,
            checkpoint: status.checkpoint,
            checkpoint_error: None,
            lease: e.lease.as_ref().map(|l| {
                let l = l.borrow();
                json!({ "held_here": l.held, "holder": l.holder, "instance": self.inner.config.instance_id })
            }),
            spec: e.spec.redacted_document(),
        })
    }

    /// Like [`get`](Self::get), with the checkpoint read from storage; an
    /// unreadable one is shown as `checkpoint_error` rather than hiding the
    /// pipeline's state.
    pub async fn get_fresh(&self, name: &str) -> Result<PipelineView, ManagerError> {
        let mut view = self.get(name)?;
        match self.load_checkpoint(&view.source_id).await {
            Ok(cp) => view.checkpoint = cp,
            Err(e @ ManagerError::CheckpointUnreadable { .. }) => {
                view.checkpoint = None;
                view.checkpoint_error = Some(format!("{e}; {}", unreadable_checkpoint_fix(name, &view.source_id)));
            }
            Err(e) => return Err(e),
        }
        Ok(view)
    }

    /// Every pipeline's view.
    pub fn list(&self) -> Vec<PipelineView> {
        self.names().iter().filter_map(|n| self.get(n).ok()).collect()
    }

    /// The stored checkpoint of a source id: storage failures are
    /// [`ManagerError::Storage`], a record that cannot be parsed is
    /// [`ManagerError::CheckpointUnreadable`].
    pub async fn load_checkpoint(&self, source_id: &str) -> Result<Option<Checkpoint>, ManagerError> {
        CheckpointStore::new(self.inner.config.storage.clone()).load(source_id).await.map_err(|e| match e {
            CheckpointError::Corrupt { source_id, reason } => {
                let pipeline = self
                    .lock()
                    .values()
                    .find(|e| e.spec.source.id == source_id)
                    .map(|e| e.spec.name.clone())
                    .unwrap_or_default();
                ManagerError::CheckpointUnreadable { pipeline, source_id, reason }
            }
            other => ManagerError::Storage(other.to_string()),
        })
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
