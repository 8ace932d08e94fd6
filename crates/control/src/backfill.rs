//! On-demand backfills (`POST /pipelines/{name}/backfill`): checks the
//! request and queues it in storage, where the running source picks it up
//! (see [`deltaforge_core::snapshot`]).
//!
//! Why a stored request rather than a channel into the running source: it
//! survives a restart of the source or of the process, works when the
//! pipeline runs on another instance of a shared storage backend, and is
//! picked up when a stopped pipeline starts. The source polls it every
//! second and reads the tables with the snapshot's chunks and watermarks
//! while the stream goes on.
//!
//! This module must never run the condition anywhere: it only checks its
//! shape; the source runs it, inside a read-only transaction.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::manager::{ManagerError, PipelineManager};

/// Source types that can backfill.
const BACKFILL_SOURCES: &[&str] = &["postgres", "mysql"];
/// Longest accepted condition.
const MAX_CONDITION: usize = 4096;

/// The request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackfillBody {
    /// Tables to read again, as the source names them (`schema.table`).
    pub tables: Vec<String>,
    /// Optional SQL condition the rows must match.
    #[serde(default, rename = "where")]
    pub condition: Option<String>,
}

/// `*` and `%` match any run of characters, as in the sources' `tables`.
fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Classic two-pointer wildcard match with backtracking to the last star.
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < t.len() {
        if i < p.len() && (p[i] == '*' || p[i] == '%') {
            star = Some(i);
            mark = j;
            i += 1;
        } else if i < p.len() && p[i] == t[j] {
            i += 1;
            j += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    p[i..].iter().all(|c| *c == '*' || *c == '%')
}

/// Checks a backfill body: returns the tables and the condition.
pub fn check(body: &str, patterns: &[String]) -> Result<BackfillBody, ManagerError> {
    let b: BackfillBody = serde_json::from_str(body).map_err(|e| {
        ManagerError::BadRequest(format!(
            "invalid backfill request: {e}; send {{\"tables\": [\"schema.table\"], \"where\": \"optional SQL condition\"}}"
        ))
    })?;
    if b.tables.is_empty() {
        return Err(ManagerError::BadRequest("`tables` must list at least one table as schema.table".into()));
    }
    for t in &b.tables {
        let parts: Vec<&str> = t.split('.').collect();
        if parts.len() != 2 || parts.iter().any(|p| p.is_empty()) {
            return Err(ManagerError::BadRequest(format!("table {t:?} is not of the form schema.table")));
        }
        if !patterns.iter().any(|p| glob(p, t)) {
            return Err(ManagerError::BadRequest(format!(
                "table {t:?} is not matched by the source's `tables` ({}); only captured tables can be backfilled",
                patterns.join(", ")
            )));
        }
    }
    if let Some(c) = &b.condition {
        if c.trim().is_empty() || c.len() > MAX_CONDITION {
            return Err(ManagerError::BadRequest(format!(
                "`where` must be a non-empty SQL condition of at most {MAX_CONDITION} bytes"
            )));
        }
        // One condition, never a second statement.
        if c.contains(';') {
            return Err(ManagerError::BadRequest("`where` must not contain `;` (one condition only)".into()));
        }
    }
    Ok(b)
}

impl PipelineManager {
    /// Queues a backfill of `tables` (optionally only the rows matching a
    /// condition) for the pipeline's source; returns the stored request.
    pub async fn backfill(&self, name: &str, body: &str) -> Result<Value, ManagerError> {
        let spec = self.spec(name)?;
        if !BACKFILL_SOURCES.contains(&spec.source.kind.as_str()) {
            return Err(ManagerError::BadRequest(format!(
                "pipeline {name:?} reads a {} source, which cannot backfill (supported: {})",
                spec.source.kind,
                BACKFILL_SOURCES.join(", ")
            )));
        }
        let patterns: Vec<String> = spec
            .source
            .config
            .get("tables")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        let b = check(body, &patterns)?;
        let store = deltaforge_core::SnapshotStore::new(self.storage(), spec.name.clone());
        let request =
            store.request_backfill(b.tables, b.condition).await.map_err(|e| ManagerError::Storage(e.to_string()))?;
        tracing::info!(pipeline = name, request = request.id, tables = ?request.tables, "backfill requested by the API");
        Ok(json!({
            "pipeline": name,
            "request": request,
            "note": "the running source starts it within a second (a stopped pipeline when it starts); \
                     progress is in the logs and in the `snapshots` storage namespace",
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_the_sources() {
        assert!(glob("public.orders", "public.orders"));
        assert!(glob("public.order_*", "public.order_lines"));
        assert!(glob("sales.%", "sales.x"));
        assert!(!glob("public.orders", "public.orders2"));
        assert!(!glob("public.o*s", "public.orderx"));
    }

    #[test]
    fn bodies_are_checked() {
        let pats = vec!["public.*".to_string()];
        let b = check(r#"{"tables":["public.t"],"where":"id > 5"}"#, &pats).unwrap();
        assert_eq!(b.tables, vec!["public.t"]);
        assert_eq!(b.condition.as_deref(), Some("id > 5"));
        for bad in [
            r#"{"tables":[]}"#,
            r#"{"tables":["t"]}"#,
            r#"{"tables":["other.t"]}"#,
            r#"{"tables":["public.t"],"where":"1=1; DROP TABLE x"}"#,
            r#"{"tables":["public.t"],"where":" "}"#,
            r#"{"tables":["public.t"],"whatever":1}"#,
            "x: 1",
        ] {
            assert!(matches!(check(bad, &pats), Err(ManagerError::BadRequest(_))), "{bad}");
        }
    }
}
