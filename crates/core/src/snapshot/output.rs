//! What a snapshot tells its operator: the progress log lines of a table's
//! read ([`ProgressLog`], with a [`progress_bar`] on a terminal) and the
//! `deltaforge_snapshot_*` metrics ([`SnapshotMetrics`]).
//!
//! This module owns the wording and the metric names. It must never change
//! a record or wait on anything: logging a chunk is always cheap.

use crate::snapshot::progress::{TableProgress, TableState};

/// A text bar such as `[#######.............]  35%` for `done` of `total`
/// rows (the total is an estimate, so the bar stops at 100%).
pub fn progress_bar(done: u64, total: Option<u64>, width: usize) -> String {
    match total.filter(|t| *t > 0) {
        Some(t) => {
            let frac = (done as f64 / t as f64).clamp(0.0, 1.0);
            let filled = (frac * width as f64).round() as usize;
            format!("[{}{}] {:>3.0}%", "#".repeat(filled), ".".repeat(width - filled), frac * 100.0)
        }
        None => format!("[{}] ?", ".".repeat(width)),
    }
}

/// The progress log lines of one table's read: rows done/total every 5 s
/// (every second, with a [`progress_bar`], when stderr is a terminal) and
/// when the table is done.
pub struct ProgressLog {
    started: std::time::Instant,
    last: std::time::Instant,
    every: std::time::Duration,
    bar: bool,
}

impl Default for ProgressLog {
    fn default() -> Self {
        use std::io::IsTerminal as _;
        let bar = std::io::stderr().is_terminal();
        let now = std::time::Instant::now();
        ProgressLog { started: now, last: now, every: std::time::Duration::from_secs(if bar { 1 } else { 5 }), bar }
    }
}

impl ProgressLog {
    /// Logs `p` if it is time (or the table is done).
    pub fn chunk(&mut self, source: &str, table: &str, p: &TableProgress) {
        let done = p.state == TableState::Done;
        if !done && self.last.elapsed() < self.every {
            return;
        }
        self.last = std::time::Instant::now();
        let rate = p.rows_done as f64 / self.started.elapsed().as_secs_f64().max(0.001);
        let bar = if self.bar { progress_bar(p.rows_done, p.rows_total_estimate, 30) } else { String::new() };
        tracing::info!(source, table, rows_done = p.rows_done, rows_total_estimate = ?p.rows_total_estimate,
            chunks = p.chunk, rows_per_sec = rate as u64, done, "snapshot progress {bar}");
    }
}

/// Snapshot metrics of one pipeline (`deltaforge_snapshot_*`).
#[derive(Clone)]
pub struct SnapshotMetrics {
    pipeline: String,
    remaining: metrics::Gauge,
}

impl SnapshotMetrics {
    /// Metrics labelled with the pipeline.
    pub fn new(pipeline: &str) -> Self {
        SnapshotMetrics {
            pipeline: pipeline.to_string(),
            remaining: metrics::gauge!("deltaforge_snapshot_tables_remaining", "pipeline" => pipeline.to_string()),
        }
    }

    /// Counts rows emitted as `r` events for a table.
    pub fn rows(&self, table: &str, n: u64) {
        metrics::counter!("deltaforge_snapshot_rows_total", "pipeline" => self.pipeline.clone(), "table" => table.to_string())
            .increment(n);
    }

    /// Sets the number of tables still to read (snapshots and backfills).
    pub fn tables_remaining(&self, n: usize) {
        self.remaining.set(n as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_bars() {
        assert_eq!(progress_bar(35, Some(100), 20), "[#######.............]  35%");
        assert_eq!(progress_bar(150, Some(100), 4), "[####] 100%");
        assert_eq!(progress_bar(5, None, 3), "[...] ?");
    }
}
