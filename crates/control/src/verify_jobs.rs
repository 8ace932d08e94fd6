//! Verification jobs: `POST /pipelines/{name}/verify` starts a comparison
//! of one of the pipeline's sinks with its source (`deltaforge verify`) in
//! the background and answers 202 with the job's id; `GET
//! /pipelines/{name}/verify/{id}` gives its state (`running`, `equal`,
//! `different`, `failed` with its error), its progress and, once done, the
//! report.
//!
//! The comparison itself is the binary's [`VerifyRunner`] (it builds the
//! source and sink readers from the spec); this module owns the request's
//! shape and checks, and the jobs' bookkeeping (in memory: a job does not
//! survive a restart, and the newest [`KEPT`] jobs are kept). It must never
//! run a `where` condition that fails the backfill's shape check, and
//! never keep a report that shows a masked value (reports come redacted).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use axum::http::StatusCode;
use chrono::Utc;
use deltaforge_config::PipelineSpec;
use deltaforge_storage::StorageBackend;
use serde::Deserialize;
use serde_json::{json, Value};

/// A refused request: the status, the message and details for the API's
/// error body.
#[derive(Debug)]
pub struct JobError {
    /// HTTP status.
    pub status: StatusCode,
    /// What is wrong.
    pub message: String,
    /// Details (the fix).
    pub detail: Value,
}

impl JobError {
    fn new(status: StatusCode, message: impl Into<String>, detail: Value) -> Self {
        JobError { status, message: message.into(), detail }
    }
}

/// Jobs kept (oldest dropped first).
pub const KEPT: usize = 50;

/// The request body (JSON; empty for the defaults).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// The sink's id (needed when the pipeline has several).
    #[serde(default)]
    pub sink: Option<String>,
    /// Only these tables (`db.table` patterns).
    #[serde(default)]
    pub tables: Vec<String>,
    /// Only source rows matching this SQL condition.
    #[serde(default, rename = "where")]
    pub condition: Option<String>,
    /// Skip JavaScript processors.
    #[serde(default)]
    pub no_transform: bool,
    /// Table sinks: compare row by row, not by chunk hashes.
    #[serde(default)]
    pub no_hashes: bool,
    /// Table sinks: key values per hashed range (default 10,000).
    #[serde(default)]
    pub hash_rows: Option<u64>,
}

/// The outcome of a comparison: whether equal, and the report as JSON.
pub type VerifyFuture = Pin<Box<dyn Future<Output = Result<(bool, Value), String>> + Send>>;

/// Runs one comparison (implemented by the binary).
pub trait VerifyRunner: Send + Sync + 'static {
    /// Compares `spec`'s sink with its source; writes progress (a JSON
    /// object) into `progress` as it goes.
    fn run(
        &self,
        spec: PipelineSpec,
        storage: Arc<dyn StorageBackend>,
        request: VerifyRequest,
        progress: Arc<Mutex<Value>>,
    ) -> VerifyFuture;
}

struct Job {
    pipeline: String,
    state: &'static str,
    started_at: String,
    progress: Arc<Mutex<Value>>,
    result: Option<Value>,
    error: Option<String>,
}

/// The jobs of this process.
#[derive(Clone, Default)]
pub struct VerifyJobs {
    runner: Option<Arc<dyn VerifyRunner>>,
    jobs: Arc<Mutex<(u64, BTreeMap<u64, Job>)>>,
}

impl std::fmt::Debug for VerifyJobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyJobs").field("runner", &self.runner.is_some()).finish()
    }
}

impl VerifyJobs {
    /// Jobs run by `runner`.
    pub fn new(runner: Arc<dyn VerifyRunner>) -> Self {
        VerifyJobs { runner: Some(runner), jobs: Default::default() }
    }

    /// Checks the request and starts a job on pipeline `spec` (whose
    /// storage is `storage`); its id and state.
    pub fn start(&self, spec: PipelineSpec, storage: Arc<dyn StorageBackend>, body: &str) -> Result<Value, JobError> {
        let name = spec.name.clone();
        let request: VerifyRequest = if body.trim().is_empty() {
            VerifyRequest::default()
        } else {
            serde_json::from_str(body).map_err(|e| {
                JobError::new(
                    StatusCode::BAD_REQUEST,
                    format!("invalid verify request: {e}"),
                    json!({ "fix": "send JSON like {\"sink\": \"out\", \"tables\": [\"db.t\"], \"where\": \"id > 10\", \"no_transform\": false}" }),
                )
            })?
        };
        if let Some(c) = &request.condition {
            crate::backfill::check_condition(c)
                .map_err(|m| JobError::new(StatusCode::BAD_REQUEST, format!("where: {m}"), Value::Null))?;
        }
        let Some(runner) = self.runner.clone() else {
            return Err(JobError::new(StatusCode::NOT_IMPLEMENTED, "verification is not available here", Value::Null));
        };
        let progress = Arc::new(Mutex::new(json!({})));
        let id = {
            let mut g = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
            g.0 += 1;
            let id = g.0;
            g.1.insert(
                id,
                Job {
                    pipeline: name.clone(),
                    state: "running",
                    started_at: Utc::now().to_rfc3339(),
                    progress: progress.clone(),
                    result: None,
                    error: None,
                },
            );
            while g.1.len() > KEPT {
                let oldest = *g.1.keys().next().expect("not empty");
                g.1.remove(&oldest);
            }
            id
        };
        let jobs = self.jobs.clone();
        let fut = runner.run(spec, storage, request, progress);
        tokio::spawn(async move {
            let outcome = fut.await;
            let mut g = jobs.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(job) = g.1.get_mut(&id) {
                match outcome {
                    Ok((equal, report)) => {
                        job.state = if equal { "equal" } else { "different" };
                        job.result = Some(report);
                    }
                    Err(e) => {
                        job.state = "failed";
                        job.error = Some(e);
                    }
                }
            }
        });
        Ok(json!({ "pipeline": name, "id": id, "state": "running" }))
    }

    /// A job's state, progress and result (`name`: an existing pipeline).
    pub fn status(&self, name: &str, id: &str) -> Result<Value, JobError> {
        let unknown = || {
            JobError::new(
                StatusCode::NOT_FOUND,
                format!("no verification {id:?} of pipeline {name:?}"),
                json!({ "fix": "start one with POST /pipelines/{name}/verify; jobs do not survive a restart" }),
            )
        };
        let id: u64 = id.parse().map_err(|_| unknown())?;
        let g = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
        let job = g.1.get(&id).filter(|j| j.pipeline == name).ok_or_else(unknown)?;
        let progress = job.progress.lock().unwrap_or_else(PoisonError::into_inner).clone();
        Ok(json!({
            "pipeline": name,
            "id": id,
            "state": job.state,
            "started_at": job.started_at,
            "progress": progress,
            "report": job.result,
            "error": job.error,
        }))
    }
}
