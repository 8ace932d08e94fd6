//! `deltaforge verify --repair`: re-delivers the rows a verification found
//! missing or different in a table sink through the pipeline's own
//! backfill, waits for those backfills to end, and verifies again.
//!
//! Why the backfill and not a write into the target: the re-read rows then
//! travel the pipeline's data path (its processors, the sink's
//! exactly-once apply, the checkpoint), and the backfill's watermarks
//! order them with the changes streaming at the same time, so a repair
//! never puts an older value over a newer one. A request per table (at
//! most [`KEYS_PER_REQUEST`] keys each) carries a `where` that selects the
//! listed keys, built by the source reader with literals no key value can
//! break out of (hex on MySQL/MariaDB, `E'…'` on PostgreSQL).
//!
//! Rows the sink has and the source does not (`extra`) are not repaired:
//! a backfill reads rows, it cannot produce their deletes. They are listed
//! in the repair's result for the operator.
//!
//! This module must never write to the sink or the source itself; it only
//! queues backfill requests in the pipeline's storage, as
//! `POST /pipelines/{name}/backfill` does.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use deltaforge_common::TablePattern;
use deltaforge_core::snapshot::BackfillState;
use deltaforge_core::SnapshotStore;
use deltaforge_storage::StorageBackend;
use deltaforge_verify::{Report, SourceReader};
use serde::Serialize;
use serde_json::Value;

/// The most keys one backfill request lists.
pub const KEYS_PER_REQUEST: usize = 500;

/// One backfill request queued by a repair.
#[derive(Debug, Clone, Serialize)]
pub struct RepairRequest {
    /// The backfill request's id (`GET /pipelines/{name}/backfill`).
    pub backfill: u64,
    /// The table.
    pub table: String,
    /// Keys it re-reads.
    pub keys: usize,
    /// How it ended (`done`, `failed: …`, `cancelled`).
    pub outcome: String,
}

/// What a repair did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RepairResult {
    /// The backfills queued, with their outcome.
    pub requests: Vec<RepairRequest>,
    /// Rows re-delivered (missing and differing keys listed by the report).
    pub keys: usize,
    /// Rows in the sink the source does not have: not repaired (a
    /// backfill cannot delete); delete them in the target, or reset the
    /// pipeline.
    pub not_repaired_extra: usize,
}

impl RepairResult {
    /// The result for people.
    pub fn to_text(&self) -> String {
        let mut out =
            format!("repair: {} row(s) re-delivered through {} backfill(s)\n", self.keys, self.requests.len());
        for r in &self.requests {
            out += &format!("  backfill #{} of {} ({} keys): {}\n", r.backfill, r.table, r.keys, r.outcome);
        }
        if self.not_repaired_extra > 0 {
            out += &format!(
                "  {} row(s) in the sink but not in the source were not repaired: a backfill cannot delete \
                 them; delete them in the target table, or reset the pipeline\n",
                self.not_repaired_extra
            );
        }
        out
    }
}

/// The keys to re-deliver per table: the report's missing and differing rows.
pub fn keys_to_redeliver(report: &Report) -> anyhow::Result<BTreeMap<String, Vec<Vec<Value>>>> {
    let mut out: BTreeMap<String, Vec<Vec<Value>>> = BTreeMap::new();
    let mut seen = HashSet::new();
    for row in report.missing.iter().chain(report.differing.iter().map(|d| &d.row)) {
        if !seen.insert(row) {
            continue;
        }
        let key: Vec<Value> = serde_json::from_str(&row.key)
            .with_context(|| format!("the report's key {} of {} is not a JSON array", row.key, row.table))?;
        out.entry(row.table.clone()).or_default().push(key);
    }
    Ok(out)
}

/// Asks for confirmation on the terminal unless `yes`; refuses without a
/// terminal.
pub fn confirm(yes: bool, pipeline: &str, keys: usize, tables: usize) -> anyhow::Result<()> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        bail!("--repair re-delivers {keys} row(s) through pipeline {pipeline:?}'s backfill and needs confirmation: run it in a terminal, or pass --yes");
    }
    eprint!("Re-deliver {keys} row(s) of {tables} table(s) through pipeline {pipeline:?}'s backfill? [y/N] ");
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer).context("reading the answer")?;
    if !matches!(answer.trim(), "y" | "Y" | "yes") {
        bail!("repair not confirmed; nothing was changed");
    }
    Ok(())
}

/// Queues the backfills of `keys` for `pipeline` and waits up to `timeout`
/// for each to end. `source` gives each table's key columns and builds the
/// conditions.
pub async fn redeliver(
    pipeline: &str,
    storage: Arc<dyn StorageBackend>,
    source: &mut dyn SourceReader,
    keys: &BTreeMap<String, Vec<Vec<Value>>>,
    timeout: Duration,
) -> anyhow::Result<Vec<RepairRequest>> {
    let patterns = keys
        .keys()
        .map(|t| TablePattern::parse(t).map_err(|m| anyhow!("table {t:?}: {m}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (layouts, _) = source.tables(&patterns).await.context("reading the tables' keys from the source")?;
    let store = SnapshotStore::new(storage, pipeline.to_string());
    let mut requests = Vec::new();
    for (table, table_keys) in keys {
        let layout = layouts
            .iter()
            .find(|l| &l.name == table)
            .ok_or_else(|| anyhow!("table {table} is no longer in the source; it cannot be backfilled"))?;
        for group in table_keys.chunks(KEYS_PER_REQUEST) {
            let condition = source.key_condition(layout, group);
            let request = store
                .request_backfill(vec![table.clone()], Some(condition))
                .await
                .with_context(|| format!("queueing the backfill of {table}"))?;
            tracing::info!(pipeline, table = %table, request = request.id, keys = group.len(), "repair backfill queued");
            requests.push(RepairRequest {
                backfill: request.id,
                table: table.clone(),
                keys: group.len(),
                outcome: "pending".into(),
            });
        }
    }
    let deadline = Instant::now() + timeout;
    for r in &mut requests {
        r.outcome = loop {
            let status = store.backfill(r.backfill).await.context("reading the backfill's state")?;
            match status.map(|s| (s.state, s.error)) {
                Some((BackfillState::Done, _)) => break "done".into(),
                Some((BackfillState::Failed, e)) => break format!("failed: {}", e.unwrap_or_default()),
                Some((BackfillState::Cancelled, _)) => break "cancelled".into(),
                _ if Instant::now() >= deadline => bail!(
                    "backfill #{} of {} has not ended within {}s: is pipeline {pipeline:?} running? The queued \
                     backfills run when it runs; verify again once they are done (GET /pipelines/{pipeline}/backfill)",
                    r.backfill,
                    r.table,
                    timeout.as_secs()
                ),
                _ => tokio::time::sleep(Duration::from_millis(300)).await,
            }
        };
    }
    Ok(requests)
}

#[cfg(test)]
mod tests {
    use deltaforge_verify::{KeyRef, RowDiff};

    use super::*;

    #[test]
    fn missing_and_differing_keys_are_redelivered_once_each() {
        let key = |t: &str, k: &str| KeyRef { table: t.into(), key: k.into() };
        let report = Report {
            missing: vec![key("s.a", "[1]"), key("s.b", r#"[2,"x'y"]"#)],
            differing: vec![
                RowDiff { row: key("s.a", "[3]"), columns: vec![] },
                RowDiff { row: key("s.a", "[1]"), columns: vec![] },
            ],
            extra: vec![key("s.a", "[9]")],
            ..Report::default()
        };
        let keys = keys_to_redeliver(&report).unwrap();
        assert_eq!(keys["s.a"], vec![vec![Value::from(1)], vec![Value::from(3)]]);
        assert_eq!(keys["s.b"], vec![vec![Value::from(2), Value::from("x'y")]]);
        assert_eq!(keys.len(), 2);
        let bad = Report { missing: vec![key("s.a", "not json")], ..Report::default() };
        assert!(keys_to_redeliver(&bad).unwrap_err().to_string().contains("not a JSON array"));
    }
}
