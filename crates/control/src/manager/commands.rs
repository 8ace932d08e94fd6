//! The operator's commands on existing pipelines: create, replace,
//! delete, start/resume, pause, stop and checkpoint reset, plus validating
//! an API body.
//!
//! This module owns the order of each command's steps; it must never
//! delete a checkpoint while a run of its pipeline may still write it (a
//! reset first stops the run and checks the lease), and never touch a
//! supervisor other than through its control channel.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use deltaforge_config::PipelineSpec;
use deltaforge_core::{Checkpoint, CheckpointStore, PipelineStatus, SourceError};
use serde_json::Value;
use tokio::sync::watch;

use super::types::{ManagerError, PipelineView, Reset, State, StateInfo, Target};
use super::PipelineManager;

/// The 409 of a reset whose source could not prepare its server.
fn reset_refused(name: &str, e: &SourceError) -> ManagerError {
    ManagerError::Conflict(format!(
        "pipeline {name:?} is stopped, but its source could not be prepared for the reset, so its checkpoint was \
         not deleted: {e}. Fix the cause and retry the reset (it is safe to repeat), or start the pipeline to resume \
         from its checkpoint"
    ))
}

impl PipelineManager {
    /// Parses and validates one pipeline document from an API body, like
    /// the config file (structure, component configs; env expansion only of
    /// the variables [`ManagerConfig::api_env`](super::ManagerConfig::api_env) allows), and
    /// checks it against the other pipelines (`except`: the one it replaces).
    pub fn validate_body(&self, body: &str, except: Option<&str>) -> Result<PipelineSpec, ManagerError> {
        let spec = self.parse_body(body)?;
        self.check_against_others(&spec, except)?;
        Ok(spec)
    }

    /// Parses and validates one pipeline document (no cross-pipeline checks).
    fn parse_body(&self, body: &str) -> Result<PipelineSpec, ManagerError> {
        let env = |name: &str| std::env::var(name).ok();
        let mut specs = deltaforge_config::parse_str_with_env_access(
            body,
            "<api>",
            &env,
            &self.inner.config.api_env,
            self.inner.factory.catalog(),
        )
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

    /// Delivers dead letters of `name` again (one `only`, or all, oldest
    /// first) through the [`PipelineFactory`]; a delivery that fails stops
    /// the redrive with a conflict naming why, leaving that letter queued.
    pub async fn redrive_dead_letters(&self, name: &str, only: Option<u64>) -> Result<u64, ManagerError> {
        let spec = self.spec(name)?;
        let done = self.inner.factory.redrive(&spec, self.storage(), only).await.map_err(ManagerError::Conflict)?;
        tracing::info!(pipeline = name, redriven = done, "dead letters redriven by the API");
        Ok(done)
    }

    /// Resets a pipeline's checkpoint: stops it if running, lets the source
    /// prepare its server ([`Source::reset`](deltaforge_core::Source::reset): e.g. PostgreSQL drops the
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
}
