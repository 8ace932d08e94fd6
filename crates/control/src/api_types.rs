//! The API's shared types: the handlers' state ([`ApiState`]) and the
//! error response ([`ApiError`], `{"error": "...", "detail": ...}` with its
//! status code, and how each [`ManagerError`] maps to one).
//!
//! A leaf of the API modules (`api`, `console_api` and the OpenAPI document
//! use it; it uses none of them), so the route modules can share these
//! types without a module cycle. It must never hold route logic.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::manager::{ManagerError, PipelineManager};

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// The pipelines.
    pub manager: PipelineManager,
    /// Required bearer token, if any.
    pub token: Option<Arc<str>>,
    /// How long `stop`/`pause` wait for the run to end before answering 202.
    pub command_wait: Duration,
    /// The Host, Origin and Content-Type rules every request must pass.
    pub guard: Arc<crate::RequestGuard>,
    /// The last hour of samples (sampled while [`crate::api::serve`] runs).
    #[cfg(feature = "console")]
    pub history: crate::History,
    /// Verification jobs (`POST /pipelines/{name}/verify`).
    pub verify: crate::VerifyJobs,
}

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    error: String,
    detail: Value,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, error: impl Into<String>, detail: Value) -> Self {
        ApiError { status, error: error.into(), detail }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, Json(json!({ "error": self.error, "detail": self.detail }))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

impl From<ManagerError> for ApiError {
    fn from(e: ManagerError) -> Self {
        match e {
            ManagerError::NotFound(name) => ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no pipeline named {name:?}"),
                json!({ "pipeline": name, "fix": "list the pipelines with GET /pipelines" }),
            ),
            ManagerError::Invalid(errors) => {
                let list: Vec<Value> = errors
                    .0
                    .iter()
                    .map(|e| {
                        json!({ "field": e.field, "message": e.message, "fix": e.fix, "pipeline": e.pipeline, "origin": e.origin })
                    })
                    .collect();
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("invalid pipeline spec: {errors}"),
                    json!({ "errors": list }),
                )
            }
            ManagerError::BadRequest(m) => ApiError::new(StatusCode::BAD_REQUEST, m, Value::Null),
            ManagerError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, m, Value::Null),
            ManagerError::Missing(m) => ApiError::new(StatusCode::NOT_FOUND, m, Value::Null),
            ManagerError::CheckpointUnreadable { pipeline, source_id, reason } => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the checkpoint of pipeline {pipeline:?} is unreadable: {reason}"),
                json!({
                    "pipeline": pipeline,
                    "source_id": source_id,
                    "reason": reason,
                    "fix": crate::manager::unreadable_checkpoint_fix(&pipeline, &source_id),
                }),
            ),
            ManagerError::Storage(m) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage is unavailable",
                json!({ "reason": m, "fix": "check the storage backend; retry later" }),
            ),
        }
    }
}
