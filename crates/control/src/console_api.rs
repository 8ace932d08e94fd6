//! The REST routes the web console reads beyond the pipeline routes of
//! [`crate::api`]: throughput and lag history, the dead-letter queue (list,
//! acknowledge, redrive), snapshot and backfill progress, and the
//! checkpoint row as stored. They are ordinary API routes (same token,
//! same error shape, documented in the OpenAPI document by
//! [`document_paths`]), usable by scripts as well.
//!
//! This module owns these routes' shapes only. It must never change a
//! pipeline's state, never return a secret (dead letters hold event data,
//! which the API already serves to token holders, never configs), and never
//! deliver a dead letter itself: a redrive goes through the
//! [`crate::PipelineFactory`], which builds the pipeline's own sinks.

use std::collections::{BTreeMap, BTreeSet};

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post, MethodRouter};
use axum::Json;
use deltaforge_core::{DeadLetterQueue, SnapshotStore};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::api_types::{ApiError, ApiState};
use crate::history::Sample;
use crate::manager::ManagerError;

type ApiResult<T> = Result<T, ApiError>;

/// The routes of this module, in the order of the OpenAPI document.
pub fn routes() -> Vec<(&'static str, &'static [&'static str], MethodRouter<ApiState>)> {
    vec![
        ("/history", &["get"], get(all_history)),
        ("/pipelines/{name}/history", &["get"], get(history)),
        ("/pipelines/{name}/snapshot", &["get"], get(snapshot)),
        ("/pipelines/{name}/checkpoint/stored", &["get"], get(stored_checkpoint)),
        ("/pipelines/{name}/dlq", &["get"], get(dlq_list)),
        ("/pipelines/{name}/dlq/{id}", &["delete"], delete(dlq_ack)),
        ("/pipelines/{name}/dlq/redrive", &["post"], post(dlq_redrive)),
    ]
}

fn storage_error(e: impl std::fmt::Display) -> ApiError {
    ManagerError::Storage(e.to_string()).into()
}

fn bad_request(message: impl Into<String>, detail: Value) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message, detail)
}

fn path<T>(p: Result<Path<T>, PathRejection>) -> ApiResult<T> {
    p.map(|Path(v)| v).map_err(|e| bad_request("invalid path", json!(e.body_text())))
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> ApiResult<T> {
    q.map(|Query(v)| v).map_err(|e| bad_request("invalid query string", json!(e.body_text())))
}

/// `?minutes=N&points=P` of `GET /history`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    /// How many minutes back (default 10, at most 60).
    minutes: Option<u64>,
    /// At most this many points per pipeline (default 30, at most 720):
    /// a sparkline needs few, and 20 pipelines stay a small response.
    points: Option<usize>,
}

/// Body of `GET /history`, serialized straight from the samples (no
/// intermediate JSON tree: an open console asks for it every 2 s).
#[derive(Serialize)]
struct AllHistory {
    resolution_seconds: u64,
    pipelines: BTreeMap<String, Vec<Sample>>,
}

async fn all_history(
    State(st): State<ApiState>,
    q: Result<Query<HistoryQuery>, QueryRejection>,
) -> ApiResult<Json<AllHistory>> {
    let q = query(q)?;
    let minutes = q.minutes.unwrap_or(10).clamp(1, 60);
    let points = q.points.unwrap_or(30).clamp(1, 720);
    let last = (minutes * 60 / st.history.resolution().as_secs()).max(1) as usize;
    let pipelines = st
        .manager
        .names()
        .into_iter()
        .map(|name| (name.clone(), st.history.downsampled(&name, last, points)))
        .collect();
    Ok(Json(AllHistory { resolution_seconds: st.history.resolution().as_secs(), pipelines }))
}

/// `?since=T` of `GET /pipelines/{name}/history`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SinceQuery {
    /// Only samples taken after this unix time (seconds).
    since: Option<u32>,
}

/// Body of `GET /pipelines/{name}/history`: up to an hour of samples
/// (3,600 at a 1 s resolution), written straight into the response.
#[derive(Serialize)]
struct PipelineHistory {
    pipeline: String,
    resolution_seconds: u64,
    window_seconds: u64,
    samples: Vec<Sample>,
}

async fn history(
    State(st): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
    q: Result<Query<SinceQuery>, QueryRejection>,
) -> ApiResult<Json<PipelineHistory>> {
    let name = path(name)?;
    let q = query(q)?;
    st.manager.spec(&name)?;
    let samples = match q.since {
        Some(since) => st.history.samples_since(&name, since),
        None => st.history.samples(&name, usize::MAX),
    };
    Ok(Json(PipelineHistory {
        resolution_seconds: st.history.resolution().as_secs(),
        window_seconds: crate::history::WINDOW.as_secs(),
        samples,
        pipeline: name,
    }))
}

/// The tables whose snapshot records to show: the source's literal
/// `tables`, those matching its patterns that the schema history has seen,
/// and those of pending backfill requests.
async fn known_tables(
    st: &ApiState,
    name: &str,
    pending: &[deltaforge_core::snapshot::BackfillRequest],
) -> ApiResult<BTreeSet<String>> {
    let spec = st.manager.spec(name)?;
    let patterns: Vec<String> = spec
        .source
        .config
        .get("tables")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    let mut tables: BTreeSet<String> = patterns.iter().filter(|p| !p.contains(['*', '%'])).cloned().collect();
    let registry = st.manager.schemas(name).await?;
    for (db, table) in registry.tables() {
        let full = format!("{db}.{table}");
        if patterns.iter().any(|p| crate::backfill::glob(p, &full)) {
            tables.insert(full);
        }
    }
    tables.extend(pending.iter().flat_map(|r| r.tables.iter().cloned()));
    Ok(tables)
}

async fn snapshot(State(st): State<ApiState>, name: Result<Path<String>, PathRejection>) -> ApiResult<Json<Value>> {
    let name = path(name)?;
    let store = SnapshotStore::new(st.manager.storage(), name.clone());
    let pending = store.pending_backfills().await.map_err(storage_error)?;
    let mut tables = Vec::new();
    for table in known_tables(&st, &name, &pending).await? {
        if let Some(progress) = store.load(&table).await.map_err(storage_error)? {
            tables.push(json!({ "table": table, "progress": progress }));
        }
    }
    Ok(Json(json!({ "pipeline": name, "tables": tables, "pending_backfills": pending })))
}

async fn stored_checkpoint(
    State(st): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let name = path(name)?;
    let key = st.manager.spec(&name)?.source.id;
    let ns = deltaforge_core::checkpoint::NAMESPACE;
    let value = st.manager.storage().kv_get(ns, &key).await.map_err(storage_error)?;
    Ok(Json(json!({ "pipeline": name, "namespace": ns, "key": key, "value": value })))
}

/// Filters of `GET /pipelines/{name}/dlq`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DlqQuery {
    /// Most letters returned (default 100, at most 1000).
    limit: Option<usize>,
    /// Only letters rejected by this sink.
    sink: Option<String>,
    /// Only letters whose error contains this text.
    error: Option<String>,
}

fn queue(st: &ApiState, name: &str) -> ApiResult<DeadLetterQueue> {
    let spec = st.manager.spec(name)?;
    Ok(DeadLetterQueue::new(st.manager.storage(), &spec.name, spec.dlq.clone().unwrap_or_default()))
}

async fn dlq_list(
    State(st): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
    q: Result<Query<DlqQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let name = path(name)?;
    let q = query(q)?;
    let queue = queue(&st, &name)?;
    let total = queue.count().await.map_err(storage_error)?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    // Filters apply to the oldest 10,000 letters: enough to page through a
    // console, bounded so one request never reads a whole large queue.
    let letters: Vec<Value> = queue
        .list(10_000)
        .await
        .map_err(storage_error)?
        .into_iter()
        .filter(|(_, l)| q.sink.as_deref().is_none_or(|s| l.sink.as_deref() == Some(s)))
        .filter(|(_, l)| q.error.as_deref().is_none_or(|e| l.error.contains(e)))
        .take(limit)
        .map(|(id, letter)| json!({ "queue_id": id, "letter": letter }))
        .collect();
    Ok(Json(json!({ "pipeline": name, "total": total, "letters": letters })))
}

async fn dlq_ack(
    State(st): State<ApiState>,
    params: Result<Path<(String, u64)>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let (name, id) = path(params)?;
    let acked = queue(&st, &name)?.ack(id).await.map_err(storage_error)?;
    if !acked {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no dead letter {id} in the queue of {name:?}"),
            json!("list the queue with GET /pipelines/{name}/dlq"),
        ));
    }
    Ok(Json(json!({ "pipeline": name, "acknowledged": id })))
}

/// Body of `POST /pipelines/{name}/dlq/redrive`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RedriveBody {
    /// Only this letter; every letter, oldest first, when absent.
    id: Option<u64>,
}

async fn dlq_redrive(
    State(st): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let name = path(name)?;
    let text = body.map_err(|e| bad_request("cannot read the request body", json!(e.body_text())))?;
    let text = if text.iter().all(u8::is_ascii_whitespace) { &b"{}"[..] } else { &text[..] };
    let req: RedriveBody = serde_json::from_slice(text).map_err(|e| {
        bad_request(format!("invalid redrive request: {e}"), json!("send {} for every letter or {\"id\": N} for one"))
    })?;
    let redriven = st.manager.redrive_dead_letters(&name, req.id).await?;
    Ok(Json(json!({ "pipeline": name, "redriven": redriven })))
}

/// The OpenAPI path items of [`routes`].
pub fn document_paths() -> Vec<(&'static str, Value)> {
    let name = json!({ "name": "name", "in": "path", "required": true, "schema": { "type": "string" } });
    let any = json!({ "type": "object" });
    let ok = |d: &str| json!({ "200": { "description": d, "content": { "application/json": { "schema": any } } } });
    vec![
        (
            "/history",
            json!({ "get": { "summary": "Events/s and lag samples of every pipeline (last `minutes`, default 10), merged into at most `points` per pipeline (default 30)", "parameters": [{ "name": "minutes", "in": "query", "schema": { "type": "integer" } }, { "name": "points", "in": "query", "schema": { "type": "integer" } }], "responses": ok("Samples per pipeline") } }),
        ),
        (
            "/pipelines/{name}/history",
            json!({ "get": { "summary": "Events/s and lag samples of the last hour", "parameters": [name], "responses": ok("Samples, oldest first") } }),
        ),
        (
            "/pipelines/{name}/snapshot",
            json!({ "get": { "summary": "Snapshot and backfill progress per table, and pending backfills", "parameters": [name], "responses": ok("Progress records") } }),
        ),
        (
            "/pipelines/{name}/checkpoint/stored",
            json!({ "get": { "summary": "The checkpoint row as stored (namespace, key, raw value)", "parameters": [name], "responses": ok("The stored row; value null when none") } }),
        ),
        (
            "/pipelines/{name}/dlq",
            json!({ "get": { "summary": "Dead letters, oldest first, filtered by sink or error text", "parameters": [name, { "name": "limit", "in": "query", "schema": { "type": "integer" } }, { "name": "sink", "in": "query", "schema": { "type": "string" } }, { "name": "error", "in": "query", "schema": { "type": "string" } }], "responses": ok("Letters with their queue ids") } }),
        ),
        (
            "/pipelines/{name}/dlq/{id}",
            json!({ "delete": { "summary": "Acknowledge (discard) one dead letter", "parameters": [name, { "name": "id", "in": "path", "required": true, "schema": { "type": "integer" } }], "responses": ok("Acknowledged") } }),
        ),
        (
            "/pipelines/{name}/dlq/redrive",
            json!({ "post": { "summary": "Deliver dead letters again (one `id`, or all oldest first); each leaves the queue only once delivered", "parameters": [name], "requestBody": { "content": { "application/json": { "schema": { "type": "object", "properties": { "id": { "type": "integer" } } } } } }, "responses": ok("How many were redriven") } }),
        ),
    ]
}
