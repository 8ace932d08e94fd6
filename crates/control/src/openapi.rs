//! The OpenAPI 3 document of the REST API, served at `GET /openapi.json`.
//!
//! Written by hand as JSON (no derive-macro crate: the API is small and its
//! responses are plain JSON values). This module owns only the document; a
//! test below checks that its paths and methods are exactly those of
//! [`crate::api::routes`] and that each one is answered by the router, so
//! the two cannot drift apart.

use serde_json::{json, Value};

fn error_responses(codes: &[&str]) -> Value {
    let mut m = serde_json::Map::new();
    for c in codes {
        let text = match *c {
            "400" => "Invalid request (spec, body or path); `detail` names the field",
            "401" => "Missing or wrong bearer token",
            "404" => "No such pipeline (or table)",
            "409" => "Not safe now (e.g. the pipeline is still stopping)",
            "403" => "Foreign Host or Origin (DNS rebinding, cross-site request)",
            "413" => "Request body too large",
            "415" => "Body without Content-Type application/json or application/yaml",
            "500" => "The stored checkpoint is unreadable (`detail.fix` says how to reset or restore it)",
            "501" => "Not available in this build",
            "503" => "Storage unavailable, or not ready",
            _ => "Error",
        };
        m.insert(
            c.to_string(),
            json!({ "description": text, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } }),
        );
    }
    Value::Object(m)
}

fn ok(description: &str, schema: Value, extra: &[&str]) -> Value {
    let mut r = error_responses(extra);
    r.as_object_mut().expect("object").insert(
        "200".into(),
        json!({ "description": description, "content": { "application/json": { "schema": schema } } }),
    );
    r
}

fn name_param() -> Value {
    json!({ "name": "name", "in": "path", "required": true, "description": "metadata.name of the pipeline", "schema": { "type": "string" } })
}

fn spec_body() -> Value {
    json!({
        "required": true,
        "description": "One `deltaforge/v1` Pipeline document, as YAML or JSON (validated like the config file).",
        "content": {
            "application/json": { "schema": { "$ref": "#/components/schemas/PipelineSpec" } },
            "application/yaml": { "schema": { "type": "string" } }
        }
    })
}

fn command(summary: &str) -> Value {
    let mut responses = ok(
        "The pipeline after the command",
        json!({ "$ref": "#/components/schemas/Pipeline" }),
        &["400", "401", "404"],
    );
    responses.as_object_mut().expect("object").insert(
        "202".into(),
        json!({ "description": "Still stopping (in-flight batches being delivered)", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Pipeline" } } } }),
    );
    json!({ "post": { "summary": summary, "parameters": [name_param()], "responses": responses } })
}

/// The document.
pub fn document() -> Value {
    let mut doc = operations();
    #[cfg(feature = "console")]
    for (path, item) in crate::console_api::document_paths() {
        doc["paths"][path] = item;
    }
    // Every request passes the request guard: 403 for a foreign Host or
    // Origin anywhere, 415 for a mutating request that is not JSON/YAML.
    let guard = error_responses(&["403", "415"]);
    for item in doc["paths"].as_object_mut().expect("paths").values_mut() {
        for (method, op) in item.as_object_mut().expect("path item") {
            let responses = op["responses"].as_object_mut().expect("responses");
            responses.insert("403".into(), guard["403"].clone());
            if method != "get" {
                responses.insert("415".into(), guard["415"].clone());
            }
        }
    }
    doc
}

/// The document's paths and components, before the guard's responses.
fn operations() -> Value {
    let pipeline = json!({ "$ref": "#/components/schemas/Pipeline" });
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "DeltaForge control API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Inspect and steer DeltaForge pipelines. Errors are {\"error\": \"...\", \"detail\": ...}."
        },
        "security": [ { "bearer": [] } ],
        "paths": {
            "/health": { "get": { "summary": "Liveness", "security": [], "responses": ok("Alive", json!({ "type": "object" }), &[]) } },
            "/ready": { "get": { "summary": "Readiness: every pipeline running", "responses": ok("Ready", json!({ "type": "object" }), &["401", "503"]) } },
            "/openapi.json": { "get": { "summary": "This document", "responses": ok("OpenAPI 3 document", json!({ "type": "object" }), &["401"]) } },
            "/pipelines": {
                "get": { "summary": "List pipelines", "responses": ok("Pipelines", json!({ "type": "object", "properties": { "pipelines": { "type": "array", "items": pipeline } } }), &["401"]) },
                "post": {
                    "summary": "Create a pipeline from a spec (it starts running)",
                    "requestBody": spec_body(),
                    "responses": {
                        "201": { "description": "Created", "content": { "application/json": { "schema": pipeline } } },
                        "400": error_responses(&["400"])["400"], "401": error_responses(&["401"])["401"], "413": error_responses(&["413"])["413"]
                    }
                }
            },
            "/pipelines/{name}": {
                "get": { "summary": "One pipeline: state, redacted spec, last error, checkpoint", "parameters": [name_param()], "responses": ok("The pipeline", pipeline.clone(), &["400", "401", "404"]) },
                "put": { "summary": "Replace the spec; restarts from the checkpoint", "parameters": [name_param()], "requestBody": spec_body(), "responses": ok("The new pipeline", pipeline.clone(), &["400", "401", "404", "413"]) },
                "delete": { "summary": "Stop and delete a pipeline (its checkpoint stays)", "parameters": [name_param()], "responses": ok("Deleted", json!({ "type": "object" }), &["400", "401", "404"]) }
            },
            "/pipelines/{name}/pause": command("Pause (deliver in-flight batches, keep the checkpoint and lease)"),
            "/pipelines/{name}/resume": command("Resume from the checkpoint"),
            "/pipelines/{name}/stop": command("Stop (deliver in-flight batches)"),
            "/pipelines/{name}/start": command("Start from the checkpoint"),
            "/pipelines/{name}/checkpoint": {
                "get": { "summary": "The stored checkpoint: position, per-sink positions, written-at, lag", "parameters": [name_param()], "responses": ok("Checkpoint (position null when none)", json!({ "$ref": "#/components/schemas/Checkpoint" }), &["400", "401", "404", "500", "503"]) },
                "delete": { "summary": "Reset: stop the pipeline if running, prepare the source's server (PostgreSQL: drop the slot; MySQL: oldest binlog) and delete its checkpoint; the next start re-reads from the beginning", "parameters": [name_param()], "responses": ok("Reset", json!({ "type": "object", "properties": { "deleted": { "type": "boolean" }, "start_position": { "type": "object", "nullable": true }, "pipeline": { "$ref": "#/components/schemas/Pipeline" }, "note": { "type": "string" } } }), &["400", "401", "404", "409", "503"]) }
            },
            "/pipelines/{name}/backfill": {
                "get": { "summary": "Backfills of the pipeline: pending, running, done, failed (with `error`) or cancelled", "parameters": [name_param()], "responses": ok("Backfills", json!({ "type": "object", "properties": { "pipeline": { "type": "string" }, "backfills": { "type": "array", "items": { "type": "object", "properties": { "id": { "type": "integer" }, "tables": { "type": "array", "items": { "type": "string" } }, "where": { "type": "string" }, "state": { "type": "string", "enum": ["pending", "running", "done", "failed", "cancelled"] }, "tables_done": { "type": "array", "items": { "type": "string" } }, "error": { "type": "string" } } } } } }), &["400", "401", "404", "503"]) },
                "post": {
                    "summary": "Re-read tables (optionally only rows matching a SQL condition) while streaming continues",
                    "parameters": [name_param()],
                    "requestBody": {
                        "required": true,
                        "content": { "application/json": { "schema": {
                            "type": "object",
                            "required": ["tables"],
                            "additionalProperties": false,
                            "properties": {
                                "tables": { "type": "array", "minItems": 1, "items": { "type": "string", "description": "schema.table, matched by the source's `tables`" } },
                                "where": { "type": "string", "description": "One SQL condition (no `;`, comments, backslashes or dollar quotes; balanced quotes and parentheses), prepared on the source's server before it is queued and run by the source in a read-only transaction" }
                            }
                        } } }
                    },
                    "responses": {
                        "202": { "description": "Queued; the source starts it within a second", "content": { "application/json": { "schema": { "type": "object" } } } },
                        "400": error_responses(&["400"])["400"], "401": error_responses(&["401"])["401"], "404": error_responses(&["404"])["404"],
                        "409": error_responses(&["409"])["409"], "413": error_responses(&["413"])["413"], "503": error_responses(&["503"])["503"]
                    }
                }
            },
            "/pipelines/{name}/verify": {
                "post": { "summary": "Start comparing a sink with the source, row by row per primary key (`deltaforge verify`); body (JSON, optional): `sink`, `tables`, `where`, `no_transform`", "parameters": [name_param()], "responses": ok("Started", json!({ "type": "object", "properties": { "pipeline": { "type": "string" }, "id": { "type": "integer" }, "state": { "type": "string" } } }), &["400", "401", "404", "501", "503"]) }
            },
            "/pipelines/{name}/verify/{id}": {
                "get": { "summary": "A verification: state (running, equal, different, failed), progress, and the report once done", "parameters": [name_param(), { "name": "id", "in": "path", "required": true, "schema": { "type": "integer" } }], "responses": ok("Verification", json!({ "type": "object", "properties": { "state": { "type": "string", "enum": ["running", "equal", "different", "failed"] }, "progress": { "type": "object" }, "report": { "type": "object" }, "error": { "type": "string" } } }), &["400", "401", "404", "503"]) }
            },
            "/pipelines/{name}/backfill/{id}": {
                "delete": { "summary": "Cancel a backfill: a pending one never starts, a running one stops before its next chunk", "parameters": [name_param(), { "name": "id", "in": "path", "required": true, "schema": { "type": "integer" } }], "responses": ok("Cancelled", json!({ "type": "object" }), &["400", "401", "404", "409", "503"]) }
            },
            "/pipelines/{name}/schemas": {
                "get": { "summary": "Tables with schema history (tenant of the pipeline)", "parameters": [name_param()], "responses": ok("Tables", json!({ "type": "object" }), &["400", "401", "404", "503"]) }
            },
            "/pipelines/{name}/schemas/{db}/{table}/versions": {
                "get": {
                    "summary": "Every schema version of a table, with the checkpoint position recorded for each",
                    "parameters": [
                        name_param(),
                        { "name": "db", "in": "path", "required": true, "schema": { "type": "string" } },
                        { "name": "table", "in": "path", "required": true, "schema": { "type": "string" } }
                    ],
                    "responses": ok("Versions", json!({ "type": "object" }), &["400", "401", "404", "503"])
                }
            },
            "/storage/backup": {
                "post": {
                    "summary": "Write an online, integrity-checked copy of the storage to a new file under the data directory (SQLite backend only)",
                    "requestBody": {
                        "required": true,
                        "content": { "application/json": { "schema": {
                            "type": "object",
                            "required": ["to"],
                            "additionalProperties": false,
                            "properties": {
                                "to": { "type": "string", "description": "file name (or path) under the SQLite file's directory; no `..`, no existing file" }
                            }
                        } } }
                    },
                    "responses": {
                        "200": { "description": "Written: path, bytes, schema_version, checkpoints, integrity_check", "content": { "application/json": { "schema": { "type": "object" } } } },
                        "400": error_responses(&["400"])["400"], "401": error_responses(&["401"])["401"],
                        "409": { "description": "The file exists, or the storage backend has no online backups (postgres: use pg_dump)", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } },
                        "413": error_responses(&["413"])["413"],
                        "500": { "description": "The copy failed (I/O, damaged store)", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } }
                    }
                }
            }
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer", "description": "--api-token / DELTAFORGE_API_TOKEN" } },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": { "error": { "type": "string" }, "detail": {} }
                },
                "PipelineSpec": {
                    "type": "object",
                    "required": ["apiVersion", "kind", "metadata", "spec"],
                    "properties": {
                        "apiVersion": { "type": "string", "enum": ["deltaforge/v1"] },
                        "kind": { "type": "string", "enum": ["Pipeline"] },
                        "metadata": { "type": "object", "properties": { "name": { "type": "string" }, "tenant": { "type": "string" } } },
                        "spec": { "type": "object" }
                    }
                },
                "Pipeline": {
                    "type": "object",
                    "properties": {
                        "name": { "type": "string" },
                        "tenant": { "type": "string" },
                        "state": { "type": "string", "enum": ["running", "paused", "stopping", "stopped", "failed", "finished", "standby"] },
                        "state_since": { "type": "string", "format": "date-time" },
                        "last_error": { "type": "string", "nullable": true },
                        "restarts": { "type": "integer" },
                        "source_type": { "type": "string" },
                        "source_id": { "type": "string" },
                        "events_read": { "type": "integer" },
                        "lag_seconds": { "type": "number" },
                        "lag_bytes": { "type": "integer", "nullable": true, "description": "Source log bytes behind (WAL/binlog); 0 without a server log; null until measured" },
                        "sink_counts": {
                            "type": "object",
                            "description": "Per sink id, counts of the current (or last) run: events delivered, failed delivery attempts (retried or dead-lettered), batches dropped",
                            "additionalProperties": {
                                "type": "object",
                                "required": ["delivered", "errors", "dropped"],
                                "properties": { "delivered": { "type": "integer" }, "errors": { "type": "integer" }, "dropped": { "type": "integer" } }
                            }
                        },
                        "checkpoint": { "type": "object", "nullable": true },
                        "checkpoint_error": { "type": "string", "description": "Present when the stored checkpoint is unreadable: why, and how to fix it" },
                        "lease": { "type": "object" },
                        "spec": { "type": "object", "description": "The spec with secrets redacted" }
                    }
                },
                "Checkpoint": {
                    "type": "object",
                    "properties": {
                        "pipeline": { "type": "string" },
                        "source_id": { "type": "string" },
                        "position": { "type": "object", "nullable": true },
                        "sinks": { "type": "object" },
                        "written_at": { "type": "string", "format": "date-time", "nullable": true },
                        "age_seconds": { "type": "number", "nullable": true },
                        "lag_seconds": { "type": "number" },
                        "lag_bytes": { "type": "integer", "nullable": true }
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Arc;
    use std::time::Duration;

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    use crate::api::{router, routes, ApiState};
    use crate::testing::manager;

    #[test]
    fn document_paths_and_methods_equal_the_routes() {
        let doc = super::document();
        let mut documented = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                documented.insert((path.clone(), method.clone()));
            }
        }
        let mut routed = BTreeSet::new();
        for (path, methods, _) in routes() {
            for m in methods {
                routed.insert((path.to_string(), m.to_string()));
            }
        }
        assert_eq!(documented, routed);
    }

    #[tokio::test]
    async fn every_documented_operation_is_answered_by_the_router() {
        let state = ApiState {
            manager: manager(),
            token: None,
            command_wait: Duration::from_millis(10),
            guard: Arc::new(crate::RequestGuard::default()),
            #[cfg(feature = "console")]
            history: Default::default(),
            verify: Default::default(),
        };
        let app = router(state);
        let doc = super::document();
        for (path, item) in doc["paths"].as_object().unwrap() {
            let concrete = path.replace("{name}", "nope").replace("{db}", "d").replace("{table}", "t");
            for method in item.as_object().unwrap().keys() {
                let req = Request::builder()
                    .method(method.to_uppercase().as_str())
                    .uri(&concrete)
                    .header("host", "127.0.0.1:8080")
                    .header("content-type", "application/yaml")
                    .body(Body::from("x: 1"))
                    .unwrap();
                let resp = app.clone().oneshot(req).await.unwrap();
                let status = resp.status();
                let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
                let text = String::from_utf8_lossy(&body);
                assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}: {text}");
                assert!(!text.contains("no route"), "{method} {path} is not routed: {text}");
                assert!(!status.is_server_error() || path == "/ready", "{method} {path}: {status} {text}");
            }
        }
        // And an undocumented method is refused.
        let req = Request::builder()
            .method("PATCH")
            .uri("/pipelines")
            .header("host", "localhost")
            .body(Body::empty())
            .unwrap();
        assert_eq!(app.oneshot(req).await.unwrap().status(), StatusCode::METHOD_NOT_ALLOWED);
    }
}
