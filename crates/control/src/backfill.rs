//! On-demand backfills: `POST /pipelines/{name}/backfill` checks the
//! request and queues it in storage, where the running source picks it up
//! (see [`deltaforge_core::snapshot`]); `GET` lists the backfills with
//! their state (`pending`, `running`, `done`, `failed` with its error,
//! `cancelled`); `DELETE /pipelines/{name}/backfill/{id}` cancels one.
//!
//! The `where` condition is checked twice before it is queued: as text
//! (one condition: no `;`, no comments, no backslashes, no dollar quotes or
//! parameters, balanced quotes and parentheses, so that it cannot leave
//! the parentheses the chunk statement puts around it), then on the
//! source's server, which prepares each table's chunk statement with the
//! condition in it (a refusal is a 400 naming the server's message).
//!
//! Why a stored request rather than a channel into the running source: it
//! survives a restart of the source or of the process, works when the
//! pipeline runs on another instance of a shared storage backend, and is
//! picked up when a stopped pipeline starts. The source polls it every
//! second and reads the tables with the snapshot's chunks and watermarks
//! while the stream goes on.
//!
//! This module must never run the condition anywhere: it checks its shape
//! and has the source prepare it; the source runs it, inside a read-only
//! transaction.

use deltaforge_core::snapshot::CancelOutcome;
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
pub(crate) fn glob(pattern: &str, text: &str) -> bool {
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

/// Checks the text of a `where` condition (see the module docs). Quotes
/// (`'…'`, `"…"`, `` `…` ``, doubled to escape) are skipped when counting
/// parentheses; comment markers and `;` are refused even inside quotes,
/// because with backslash escapes on (MySQL's default) a quote's end is
/// not where a plain reading finds it — backslashes are refused for the
/// same reason.
pub(crate) fn check_condition(c: &str) -> Result<(), String> {
    if c.trim().is_empty() || c.len() > MAX_CONDITION {
        return Err(format!("must be a non-empty SQL condition of at most {MAX_CONDITION} bytes"));
    }
    for (bad, what) in [
        (";", "`;` (one condition only)"),
        ("--", "`--` comments"),
        ("#", "`#` comments"),
        ("/*", "`/*` comments"),
        ("*/", "`*/`"),
        ("\\", "backslashes (write quotes as '' instead)"),
    ] {
        if c.contains(bad) {
            return Err(format!("must not contain {what}"));
        }
    }
    let chars: Vec<char> = c.chars().collect();
    let mut depth = 0i32;
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            q @ ('\'' | '"' | '`') => {
                // To the closing quote; a doubled quote stays inside.
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(format!("has an unclosed {q} quote")),
                        Some(x) if *x == q && chars.get(i + 1) == Some(&q) => i += 2,
                        Some(x) if *x == q => break,
                        Some(_) => i += 1,
                    }
                }
            }
            '$' if chars
                .get(i + 1)
                .is_some_and(|n| n.is_ascii_digit() || *n == '$' || n.is_alphabetic() || *n == '_') =>
            {
                return Err("must not contain dollar-quoted strings or `$n` parameters".into());
            }
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err("closes a parenthesis it did not open".into());
                }
            }
            _ => {}
        }
        i += 1;
    }
    if depth != 0 {
        return Err("has an unclosed parenthesis".into());
    }
    Ok(())
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
        check_condition(c).map_err(|m| ManagerError::BadRequest(format!("`where`: {m}")))?;
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
        self.check_on_source(&spec, &b).await?;
        let store = deltaforge_core::SnapshotStore::new(self.storage(), spec.name.clone());
        let request =
            store.request_backfill(b.tables, b.condition).await.map_err(|e| ManagerError::Storage(e.to_string()))?;
        tracing::info!(pipeline = name, request = request.id, tables = ?request.tables, "backfill requested by the API");
        Ok(json!({
            "pipeline": name,
            "request": request,
            "note": "the running source starts it within a second (a stopped pipeline when it starts); \
                     GET /pipelines/{name}/backfill shows its state",
        }))
    }

    /// Has the pipeline's source prepare each table's chunk statement with
    /// the condition (see [`deltaforge_core::Source::check_backfill`]).
    async fn check_on_source(
        &self,
        spec: &deltaforge_config::PipelineSpec,
        b: &BackfillBody,
    ) -> Result<(), ManagerError> {
        let source = self.factory().build_source(spec).map_err(|e| {
            ManagerError::BadRequest(format!("the pipeline's source cannot be built to check the backfill: {e}"))
        })?;
        let Some(source) = source else { return Ok(()) };
        match source.check_backfill(&b.tables, b.condition.as_deref()).await {
            Ok(()) => Ok(()),
            Err(deltaforge_core::SourceError::Fatal(m)) => Err(ManagerError::BadRequest(format!(
                "the source refuses the backfill (its `where` or a table): {m}; fix the condition (it is put \
                 in parentheses in each chunk's WHERE) or the table names"
            ))),
            Err(deltaforge_core::SourceError::Retryable(m)) => Err(ManagerError::Conflict(format!(
                "the backfill could not be checked because the source's server did not answer ({m}); \
                 retry when it is up"
            ))),
        }
    }

    /// The pipeline's backfills: pending requests, then started ones with
    /// their state (and error, when one failed).
    pub async fn backfills(&self, name: &str) -> Result<Value, ManagerError> {
        let spec = self.spec(name)?;
        let store = deltaforge_core::SnapshotStore::new(self.storage(), spec.name.clone());
        let list = store.backfills().await.map_err(|e| ManagerError::Storage(e.to_string()))?;
        Ok(json!({ "pipeline": name, "backfills": list }))
    }

    /// Cancels backfill `id` of the pipeline: a pending one is never
    /// started; a running one stops before its next chunk (the rows already
    /// read stay delivered).
    pub async fn cancel_backfill(&self, name: &str, id: &str) -> Result<Value, ManagerError> {
        let spec = self.spec(name)?;
        let id: u64 = id.parse().map_err(|_| {
            ManagerError::BadRequest(format!(
                "backfill id {id:?} is not a number; list them with GET /pipelines/{name}/backfill"
            ))
        })?;
        let store = deltaforge_core::SnapshotStore::new(self.storage(), spec.name.clone());
        match store.cancel_backfill(id).await.map_err(|e| ManagerError::Storage(e.to_string()))? {
            CancelOutcome::Cancelled(b) => {
                tracing::info!(pipeline = name, request = id, "backfill cancelled by the API");
                Ok(json!({ "pipeline": name, "backfill": b }))
            }
            CancelOutcome::AlreadyEnded(b) => Err(ManagerError::Conflict(format!(
                "backfill {id} of pipeline {name:?} already ended ({})",
                serde_json::to_value(b.state).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
            ))),
            CancelOutcome::NotFound => Err(ManagerError::Missing(format!(
                "pipeline {name:?} has no backfill {id}; list them with GET /pipelines/{name}/backfill"
            ))),
        }
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
            r#"{"tables":["public.t"],"where":"1=1 -- ORDER BY gone"}"#,
            r#"{"tables":["public.t"],"where":"1=1 # ORDER BY gone"}"#,
            r#"{"tables":["public.t"],"where":"1=1 /* x */"}"#,
            r#"{"tables":["public.t"],"where":"1=1) OR (1=1"}"#,
            r#"{"tables":["public.t"],"where":"(1=1"}"#,
            r#"{"tables":["public.t"],"where":"a = 'x"}"#,
            r#"{"tables":["public.t"],"where":"a = '\\') OR (1=1'"}"#,
            r#"{"tables":["public.t"],"where":"a = $$)$$"}"#,
            r#"{"tables":["public.t"],"where":"a = $1"}"#,
            r#"{"tables":["public.t"],"where":" "}"#,
            r#"{"tables":["public.t"],"whatever":1}"#,
            "x: 1",
        ] {
            assert!(matches!(check(bad, &pats), Err(ManagerError::BadRequest(_))), "{bad}");
        }
        for good in ["id > 5", "name = 'it''s (fine)' AND (a < 3 OR b = \"x)\")", "`weird)col` IS NULL", "price$ > 1"] {
            assert!(check_condition(good).is_ok(), "{good}: {:?}", check_condition(good));
        }
    }
}
