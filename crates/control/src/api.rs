//! The REST API (axum): JSON in and out, errors as
//! `{"error": "...", "detail": ...}` with the right status code.
//!
//! This module owns the routes (the logic of `POST /storage/backup` is in
//! [`crate::storage_backup`]), their request and response shapes, bearer
//! authentication and the body size limit; the Host, Origin and
//! Content-Type checks that run before them are [`crate::request_guard`]'s.
//! Every decision about pipelines
//! is the [`crate::PipelineManager`]'s. It must never show a spec unredacted, never
//! accept a spec the config file would refuse, and never answer 5xx for bad
//! input (5xx means the server or its storage failed, or `/ready` is not ready).
//!
//! Why axum: it is the tokio-native router with typed extractors; its
//! `DefaultBodyLimit` and middleware cover size limits and authentication
//! without more crates. The OpenAPI document is written by hand in
//! [`crate::openapi`] (no macro crate to learn), and a test keeps it equal
//! to [`routes`].

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Json, Router};
use chrono::Utc;
use serde_json::{json, Value};

pub use crate::api_types::{ApiError, ApiState};
use crate::manager::{PipelineView, State as PState};
use crate::request_guard;

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

type ApiResult<T> = Result<T, ApiError>;

fn path<T>(p: Result<Path<T>, PathRejection>) -> ApiResult<T> {
    p.map(|Path(v)| v).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid path", json!(e.body_text())))
}

fn body_text(body: Result<Bytes, BytesRejection>) -> ApiResult<String> {
    let bytes = body.map_err(|e| {
        let status = e.status();
        let msg = if status == StatusCode::PAYLOAD_TOO_LARGE {
            format!("request body larger than {MAX_BODY_BYTES} bytes")
        } else {
            "cannot read the request body".to_string()
        };
        ApiError::new(status, msg, json!(e.body_text()))
    })?;
    String::from_utf8(bytes.to_vec()).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "the request body is not UTF-8 text",
            json!(format!("{e}; send the spec as YAML or JSON text")),
        )
    })
}

/// Every route with its methods, in the order of the OpenAPI document.
/// [`router`] is built from this list; a test compares it with
/// [`crate::openapi::document`].
pub fn routes() -> Vec<(&'static str, &'static [&'static str], MethodRouter<ApiState>)> {
    let routes: Vec<(&'static str, &'static [&'static str], MethodRouter<ApiState>)> = vec![
        ("/health", &["get"], get(health)),
        ("/ready", &["get"], get(ready)),
        ("/openapi.json", &["get"], get(openapi)),
        ("/pipelines", &["get", "post"], get(list).post(create)),
        ("/pipelines/{name}", &["get", "put", "delete"], get(show).put(replace).delete(remove)),
        ("/pipelines/{name}/pause", &["post"], post(pause)),
        ("/pipelines/{name}/resume", &["post"], post(resume)),
        ("/pipelines/{name}/stop", &["post"], post(stop)),
        ("/pipelines/{name}/start", &["post"], post(start)),
        ("/pipelines/{name}/checkpoint", &["get", "delete"], get(checkpoint).delete(reset_checkpoint)),
        ("/pipelines/{name}/backfill", &["get", "post"], get(backfills).post(backfill)),
        ("/pipelines/{name}/backfill/{id}", &["delete"], axum::routing::delete(cancel_backfill)),
        ("/pipelines/{name}/verify", &["post"], post(verify)),
        ("/pipelines/{name}/verify/{id}", &["get"], get(verify_status)),
        ("/pipelines/{name}/schemas", &["get"], get(schemas)),
        ("/pipelines/{name}/schemas/{db}/{table}/versions", &["get"], get(schema_versions)),
        ("/storage/backup", &["post"], post(storage_backup)),
    ];
    #[cfg(feature = "console")]
    let routes = routes.into_iter().chain(crate::console_api::routes()).collect();
    routes
}

/// The API router.
pub fn router(state: ApiState) -> Router {
    let mut r = Router::new();
    for (p, _, m) in routes() {
        r = r.route(p, m);
    }
    #[cfg(feature = "console")]
    let r = crate::console::routes(r);
    r.fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .layer(middleware::from_fn_with_state(state.guard.clone(), request_guard::check))
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    tracing::info!(addr = ?listener.local_addr().ok(), auth = state.token.is_some(), "REST API and console listening");
    #[cfg(feature = "console")]
    tokio::spawn(state.history.clone().run_sampler(state.manager.clone(), shutdown.clone()));
    axum::serve(listener, router(state)).with_graceful_shutdown(async move { shutdown.cancelled().await }).await
}

/// Whether `path` is a console file (served without the token: no data in it).
fn is_console_asset(path: &str) -> bool {
    #[cfg(feature = "console")]
    return crate::console::is_asset(path);
    #[cfg(not(feature = "console"))]
    return path.is_empty();
}

/// Compares two byte strings in time independent of where they differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn auth(State(st): State<ApiState>, req: Request, next: Next) -> Response {
    if let Some(token) = &st.token {
        if req.uri().path() != "/health" && !is_console_asset(req.uri().path()) {
            let given = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
            match given {
                None => {
                    return ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        "authentication required",
                        json!("send the API token as `Authorization: Bearer TOKEN`"),
                    )
                    .into_response()
                }
                Some(g) if !constant_time_eq(g.trim().as_bytes(), token.as_bytes()) => {
                    return ApiError::new(StatusCode::UNAUTHORIZED, "invalid API token", Value::Null).into_response()
                }
                Some(_) => {}
            }
        }
    }
    next.run(req).await
}

async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no route {} {}", req.method(), req.uri().path()),
        json!("see GET /openapi.json for the routes"),
    )
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method {} is not allowed on {}", req.method(), req.uri().path()),
        json!("see GET /openapi.json for the routes"),
    )
}

async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn ready(State(st): State<ApiState>) -> Response {
    let views = st.manager.list();
    let reasons: Vec<Value> = views
        .iter()
        .filter(|v| !matches!(v.state, PState::Running | PState::Finished | PState::Standby))
        .map(|v| json!({ "pipeline": v.name, "state": v.state, "last_error": v.last_error }))
        .collect();
    if reasons.is_empty() {
        Json(json!({ "status": "ready", "pipelines": views.len() })).into_response()
    } else {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{} pipeline(s) not running", reasons.len()),
            json!({ "reasons": reasons }),
        )
        .into_response()
    }
}

async fn openapi() -> Json<Value> {
    Json(crate::openapi::document())
}

async fn list(State(st): State<ApiState>) -> Json<Value> {
    Json(json!({ "pipelines": st.manager.list() }))
}

async fn create(State(st): State<ApiState>, body: Result<Bytes, BytesRejection>) -> ApiResult<Response> {
    let text = body_text(body)?;
    let view = st.manager.create(&text)?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

async fn show(State(st): State<ApiState>, name: Result<Path<String>, PathRejection>) -> ApiResult<Json<PipelineView>> {
    Ok(Json(st.manager.get_fresh(&path(name)?).await?))
}

async fn replace(
    State(st): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<PipelineView>> {
    let name = path(name)?;
    let text = body_text(body)?;
    Ok(Json(st.manager.replace(&name, &text).await?))
}

async fn remove(State(st): State<ApiState>, name: Result<Path<String>, PathRejection>) -> ApiResult<Json<Value>> {
    let name = path(name)?;
    st.manager.delete(&name).await?;
    Ok(Json(json!({ "deleted": name })))
}

fn command_response(view: PipelineView) -> Response {
    let status = if view.state == PState::Stopping { StatusCode::ACCEPTED } else { StatusCode::OK };
    (status, Json(view)).into_response()
}

async fn pause(State(st): State<ApiState>, name: Result<Path<String>, PathRejection>) -> ApiResult<Response> {
    Ok(command_response(st.manager.pause(&path(name)?, st.command_wait).await?))
}

async fn stop(State(st): State<ApiState>, name: Result<Path<String>, PathRejection>) -> ApiResult<Response> {
    Ok(command_response(st.manager.stop(&path(name)?, st.command_wait).await?))
}

async fn resume(State(st): State<ApiState>, name: Result<Path<String>, PathRejection>) -> ApiResult<Response> {
    Ok(command_response(st.manager.resume(&path(name)?)?))
}

async fn start(State(st): State<ApiState>, name: Result<Path<String>, PathRejection>) -> ApiResult<Response> {
    Ok(command_response(st.manager.start(&path(name)?)?))
}

async fn checkpoint(State(st): State<ApiState>, name: Result<Path<String>, PathRejection>) -> ApiResult<Json<Value>> {
    let name = path(name)?;
    let view = st.manager.get(&name)?;
    let cp = st.manager.load_checkpoint(&view.source_id).await?;
    let age = cp.as_ref().map(|c| (Utc::now() - c.written_at).num_milliseconds().max(0) as f64 / 1000.0);
    Ok(Json(json!({
        "pipeline": name,
        "source_id": view.source_id,
        "position": cp.as_ref().map(|c| &c.position),
        "sinks": cp.as_ref().map(|c| json!(c.sinks)).unwrap_or_else(|| json!({})),
        "written_at": cp.as_ref().map(|c| c.written_at),
        "age_seconds": age,
        "lag_seconds": view.lag_seconds,
        "lag_bytes": view.lag_bytes,
    })))
}

async fn reset_checkpoint(
    State(st): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let name = path(name)?;
    let reset = st.manager.reset_checkpoint(&name).await?;
    let note = match &reset.start {
        Some(p) => format!("the pipeline is stopped; POST /pipelines/{name}/start re-reads its source from {p}"),
        None => format!("the pipeline is stopped; POST /pipelines/{name}/start re-reads its source from the beginning"),
    };
    Ok(Json(json!({
        "deleted": reset.existed,
        "start_position": reset.start,
        "pipeline": reset.pipeline,
        "note": note,
    })))
}

async fn backfill(
    State(st): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let name = path(name)?;
    let text = body_text(body)?;
    Ok((StatusCode::ACCEPTED, Json(st.manager.backfill(&name, &text).await?)).into_response())
}

async fn backfills(State(st): State<ApiState>, name: Result<Path<String>, PathRejection>) -> ApiResult<Json<Value>> {
    let name = path(name)?;
    Ok(Json(st.manager.backfills(&name).await?))
}

async fn cancel_backfill(
    State(st): State<ApiState>,
    params: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let (name, id) = path(params)?;
    Ok(Json(st.manager.cancel_backfill(&name, &id).await?))
}

async fn verify(
    State(st): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let name = path(name)?;
    let text = body_text(body)?;
    let spec = st.manager.spec(&name)?;
    let started = st.verify.start(spec, st.manager.storage(), &text).map_err(job_error)?;
    Ok((StatusCode::ACCEPTED, Json(started)).into_response())
}

async fn verify_status(
    State(st): State<ApiState>,
    params: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let (name, id) = path(params)?;
    st.manager.spec(&name)?;
    Ok(Json(st.verify.status(&name, &id).map_err(job_error)?))
}

fn job_error(e: crate::verify_jobs::JobError) -> ApiError {
    ApiError::new(e.status, e.message, e.detail)
}

async fn schemas(State(st): State<ApiState>, name: Result<Path<String>, PathRejection>) -> ApiResult<Json<Value>> {
    let name = path(name)?;
    let tenant = st.manager.spec(&name)?.tenant;
    let registry = st.manager.schemas(&name).await?;
    let tables: Vec<Value> = registry
        .tables()
        .into_iter()
        .filter_map(|(db, table)| {
            let versions = registry.versions(&db, &table);
            let latest = versions.last()?;
            Some(json!({
                "db": db,
                "table": table,
                "versions": versions.len(),
                "latest_version": latest.version,
                "fingerprint": latest.fingerprint,
                "registered_at": latest.registered_at,
            }))
        })
        .collect();
    Ok(Json(json!({ "pipeline": name, "tenant": tenant, "tables": tables })))
}

async fn schema_versions(
    State(st): State<ApiState>,
    params: Result<Path<(String, String, String)>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let (name, db, table) = path(params)?;
    let registry = st.manager.schemas(&name).await?;
    let versions = registry.versions(&db, &table);
    if versions.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no schema history for table {db}.{table} in pipeline {name:?}"),
            json!("list the tables with GET /pipelines/{name}/schemas"),
        ));
    }
    Ok(Json(json!({ "pipeline": name, "db": db, "table": table, "versions": versions })))
}

async fn storage_backup(State(st): State<ApiState>, body: Result<Bytes, BytesRejection>) -> ApiResult<Json<Value>> {
    let text = body_text(body)?;
    crate::storage_backup::backup(st.manager.storage(), &text)
        .await
        .map(Json)
        .map_err(|(status, error, detail)| ApiError::new(status, error, detail))
}
