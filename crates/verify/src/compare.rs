//! The comparison: walks the source chunk by chunk in key order, looks each
//! key up in the sink, and collects the keys that differ ("suspects"); then,
//! when the pipeline's position can be watched, re-checks them: the suspect
//! rows are read from the source again with the position read with them,
//! the run waits until the sink's position has passed it, and the sink's
//! state *as of that position* is compared with them. Rows that changed
//! during the run agree then; only differences that persist through the
//! rounds are reported. When the sink does not catch up (the pipeline is
//! stopped or stalled), the differences are reported as they stand, with
//! the position the sink reached.
//!
//! Memory: one chunk of rows and at most `max_suspects` keys; the sink's
//! rows live in its reader's on-disk index. This module must never write
//! to the source or the sink, and never put a masked column's value in the
//! report.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use deltaforge_core::Position;
use serde_json::Value;

use crate::error::VerifyError;
use crate::model::{SinkRow, TableLayout};
use crate::report::{KeyRef, Report, RowDiff, TableSummary};
use crate::sink::SinkReader;
use crate::source::SourceReader;
use crate::transform::Transforms;

/// Where the sink stands: the pipeline's checkpoint (or the sink's own
/// position) as the storage or the control API gives it.
#[async_trait]
pub trait SinkProgress: Send + Sync {
    /// The position the sink has durably reached, if any yet.
    async fn reached(&self) -> Result<Option<Position>, VerifyError>;
}

use crate::diff::{differ, Diff, Suspect};
pub use crate::options::{Options, Progress, ProgressFn};

/// Suspect rows read again from the source: per batch, the position read
/// with them and each key's expected row (`None`: absent or filtered).
type Reread = Vec<(Position, HashMap<String, Option<SinkRow>>)>;

/// Compares `source` with `sink` and reports what differs.
pub async fn verify(
    source: &mut dyn SourceReader,
    sink: &mut dyn SinkReader,
    transforms: &mut Transforms,
    sink_progress: Option<&dyn SinkProgress>,
    opts: &Options,
    mut progress: ProgressFn,
) -> Result<Report, VerifyError> {
    let mut report = Report { pipeline: opts.pipeline.clone(), sink: opts.sink.clone(), ..Report::default() };
    report.warnings = opts.warnings.clone();
    let (mut tables, keyless) = source.tables(&opts.only).await?;
    for t in &mut tables {
        if let Some(key) = sink.key_override(&t.name) {
            t.key = key;
        }
    }
    for t in keyless {
        report.warnings.push(format!("table {t} has no primary key or NOT NULL unique index: not compared"));
    }
    if tables.is_empty() {
        return Err(VerifyError::Unsupported(
            "no table to compare: the source's `tables` (and --tables) match no table with a key".into(),
        ));
    }
    let mut step = Progress { tables_total: tables.len(), phase: "reading the sink".into(), ..Progress::default() };
    progress(&step);
    sink.load(&tables).await?;
    step.phase = "comparing".into();
    let mut suspects: Vec<Vec<Suspect>> = vec![Vec::new(); tables.len()];
    let mut unchecked = 0u64;
    let mut last_position: Option<Position> = None;
    for (ti, table) in tables.iter().enumerate() {
        step.table = table.name.clone();
        let mut summary = TableSummary { table: table.name.clone(), ..TableSummary::default() };
        if let Some(plan) = hash_plan(source, sink, transforms.is_empty(), table, opts, &mut report.warnings).await? {
            let h = crate::hashed::compare(source, sink, table, &plan, opts).await?;
            summary.source_rows = h.source_rows;
            summary.method =
                format!("chunk hashes: {} ranges hashed, {} read row by row", h.ranges_hashed, h.ranges_read);
            suspects[ti].extend(h.suspects);
            step.rows += h.source_rows;
            progress(&step);
            // The position of a later read: what the hashes saw is at or before it.
            last_position = Some(source.chunk(table, None, Some("1 = 0"), 1).await?.position);
            report.rows_compared += summary.source_rows;
            report.tables.push(summary);
            step.tables_done += 1;
            continue;
        }
        let mut after: Option<Vec<String>> = None;
        loop {
            let chunk = source.chunk(table, after.as_deref(), opts.condition.as_deref(), opts.chunk_size).await?;
            let expected = transforms.apply(table, &chunk.rows, &chunk.position).await?;
            let keys: Vec<String> = chunk.rows.iter().map(|r| table.key_of_row(r).unwrap_or_default()).collect();
            let found = sink.rows(&table.name, &keys).await?;
            for ((row, key), want) in chunk.rows.iter().zip(&keys).zip(expected) {
                if want.is_some() {
                    summary.source_rows += 1;
                }
                if let Some(diff) = differ(opts, &table.name, want.as_ref(), found.get(key), &|a, b| sink.same(a, b)) {
                    if total(&suspects) < opts.max_suspects {
                        suspects[ti].push(Suspect { key: key.clone(), values: table.key_values(row), diff });
                    } else {
                        unchecked += 1;
                    }
                }
            }
            step.rows += chunk.rows.len() as u64;
            progress(&step);
            last_position = Some(chunk.position);
            match chunk.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        // With a condition, sink rows outside it are not visited either:
        // they cannot be told from extra ones.
        let extra = match opts.condition {
            Some(_) => Vec::new(),
            None => sink.unvisited(&table.name, opts.max_suspects.saturating_sub(total(&suspects))).await?.0,
        };
        for (key, row) in extra {
            let values = table.key.iter().map(|k| row.get(k).cloned().unwrap_or(Value::Null)).collect();
            suspects[ti].push(Suspect { key, values, diff: Diff::Extra });
        }
        report.rows_compared += summary.source_rows;
        report.tables.push(summary);
        step.tables_done += 1;
    }
    let initial = total(&suspects) as u64;
    report.caught_up = true;
    if initial > 0 {
        if let Some(sp) = sink_progress {
            step.phase = "re-checking".into();
            progress(&step);
            let (caught_up, pos) =
                recheck(source, sink, transforms, sp, opts, &tables, &mut suspects, &mut last_position).await?;
            report.caught_up = caught_up;
            report.rechecked = initial;
            report.resolved_on_recheck = initial - total(&suspects) as u64;
            last_position = pos.or(last_position);
        } else {
            report.caught_up = false;
        }
    }
    if opts.condition.is_some() {
        report.warnings.push("with --where, rows in the sink that the source lacks are not looked for".into());
    }
    if unchecked > 0 {
        report.warnings.push(format!(
            "{unchecked} further difference(s) beyond max_suspects were not re-checked or listed; run again on fewer tables"
        ));
    }
    if let Some(sp) = sink_progress {
        report.sink_position = sp.reached().await?.map(|p| p.to_json());
    }
    report.source_position = last_position.map(|p| p.to_json());
    fill(&mut report, &tables, suspects, opts);
    report.deliveries = sink.deliveries();
    report.equal = report.tables.iter().all(|t| t.missing + t.extra + t.differing == 0) && unchecked == 0;
    Ok(report)
}

fn total(s: &[Vec<Suspect>]) -> usize {
    s.iter().map(Vec::len).sum()
}

/// Whether `table` is compared by chunk hashes (and how); when the sink
/// could hash but hashes cannot be used, a warning says why.
async fn hash_plan(
    source: &mut dyn SourceReader,
    sink: &mut dyn SinkReader,
    no_processors: bool,
    table: &TableLayout,
    opts: &Options,
    warnings: &mut Vec<String>,
) -> Result<Option<crate::hashed::Plan>, VerifyError> {
    if sink.table_sql(&table.name).is_none() {
        return Ok(None);
    }
    let why = if !opts.hashes {
        return Ok(None);
    } else if !no_processors {
        "the pipeline has processors".to_string()
    } else if opts.condition.is_some() {
        "--where is given".to_string()
    } else {
        match crate::hashed::plan(source, sink, table).await? {
            Ok(plan) => return Ok(Some(plan)),
            Err(why) => why,
        }
    };
    warnings.push(format!("table {} compared row by row, not by chunk hashes: {why}", table.name));
    Ok(None)
}

/// Re-checks the suspects in rounds; returns whether the sink caught up
/// and the last source position read.
#[allow(clippy::too_many_arguments)]
async fn recheck(
    source: &mut dyn SourceReader,
    sink: &mut dyn SinkReader,
    transforms: &mut Transforms,
    sp: &dyn SinkProgress,
    opts: &Options,
    tables: &[TableLayout],
    suspects: &mut [Vec<Suspect>],
    last: &mut Option<Position>,
) -> Result<(bool, Option<Position>), VerifyError> {
    for _round in 0..opts.rounds {
        // The suspects' current source rows, with the positions read with them.
        let mut reread: Vec<Reread> = Vec::new();
        let mut newest: Option<Position> = None;
        for (ti, table) in tables.iter().enumerate() {
            let mut parts = Vec::new();
            for batch in suspects[ti].chunks(500) {
                let values: Vec<Vec<Value>> = batch.iter().map(|s| s.values.clone()).collect();
                let mut cond = source.key_condition(table, &values);
                if let Some(w) = &opts.condition {
                    cond = format!("({w}) AND {cond}");
                }
                let chunk = source.chunk(table, None, Some(&cond), batch.len() + 1).await?;
                let expected = transforms.apply(table, &chunk.rows, &chunk.position).await?;
                let mut rows: HashMap<String, Option<SinkRow>> = batch.iter().map(|s| (s.key.clone(), None)).collect();
                for (row, want) in chunk.rows.iter().zip(expected) {
                    if let Some(k) = table.key_of_row(row) {
                        rows.insert(k, want);
                    }
                }
                if newest.as_ref().is_none_or(|n| n.is_at_or_before(&chunk.position)) {
                    newest = Some(chunk.position.clone());
                }
                parts.push((chunk.position, rows));
            }
            reread.push(parts);
        }
        let Some(target) = newest else { return Ok((true, last.clone())) };
        *last = Some(target.clone());
        if !wait_for(sp, &target, opts).await? {
            return Ok((false, Some(target)));
        }
        for (ti, table) in tables.iter().enumerate() {
            let mut still = Vec::new();
            for (position, rows) in &reread[ti] {
                let keys: Vec<String> = rows.keys().cloned().collect();
                let sink_rows = sink.rows_as_of(table, &keys, position).await?;
                for s in suspects[ti].iter().filter(|s| rows.contains_key(&s.key)) {
                    let want = rows.get(&s.key).cloned().flatten();
                    if let Some(diff) =
                        differ(opts, &table.name, want.as_ref(), sink_rows.get(&s.key), &|a, b| sink.same(a, b))
                    {
                        still.push(Suspect { diff, ..s.clone() });
                    }
                }
            }
            suspects[ti] = still;
        }
        if total(suspects) == 0 {
            break;
        }
    }
    Ok((true, last.clone()))
}

/// Waits until the sink's position passes `target`; `false` when it does
/// not within the timeout, or stops moving.
async fn wait_for(sp: &dyn SinkProgress, target: &Position, opts: &Options) -> Result<bool, VerifyError> {
    let start = Instant::now();
    let mut seen: Option<Position> = None;
    let mut moved = Instant::now();
    loop {
        let now = sp.reached().await?;
        if let Some(p) = &now {
            if target.compare(p).is_some_and(|o| o.is_le()) {
                return Ok(true);
            }
        }
        if now != seen {
            seen = now;
            moved = Instant::now();
        }
        if start.elapsed() > opts.catch_up_timeout || moved.elapsed() > opts.stall_timeout {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Puts the remaining differences into the report.
fn fill(report: &mut Report, tables: &[TableLayout], suspects: Vec<Vec<Suspect>>, opts: &Options) {
    for (ti, list) in suspects.into_iter().enumerate() {
        let name = &tables[ti].name;
        for s in list {
            let key = KeyRef { table: name.clone(), key: s.key };
            let summary = &mut report.tables[ti];
            match s.diff {
                Diff::Missing => {
                    summary.missing += 1;
                    if report.missing.len() < opts.max_listed {
                        report.missing.push(key);
                    }
                }
                Diff::Extra => {
                    summary.extra += 1;
                    if report.extra.len() < opts.max_listed {
                        report.extra.push(key);
                    }
                }
                Diff::Values(columns) => {
                    summary.differing += 1;
                    if report.differing.len() < opts.max_listed {
                        report.differing.push(RowDiff { row: key, columns });
                    }
                }
            }
        }
    }
}
