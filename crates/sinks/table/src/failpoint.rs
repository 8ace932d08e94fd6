//! The crash hook of the exactly-once tests: with
//! `DELTAFORGE_FAILPOINTS=table-precommit:SINK_ID=/path/flag`, the sink
//! aborts the process (as `kill -9` would) after it wrote a batch's rows
//! and its progress row but before the commit, once, when the flag file
//! exists (the file is removed first). A test then checks that neither the
//! rows nor the progress survived, which fails if the progress were
//! written outside the rows' transaction.
//!
//! Unset (production), it costs one environment lookup per sink. Never
//! enable it in production.

use std::path::PathBuf;

/// The flag of the `table-precommit` hook of `sink_id`, if configured.
pub fn precommit_flag(sink_id: &str) -> Option<PathBuf> {
    let spec = std::env::var("DELTAFORGE_FAILPOINTS").ok()?;
    spec.split(',').find_map(|item| {
        let (name, arg) = item.trim().split_once('=')?;
        (name.strip_prefix("table-precommit:") == Some(sink_id)).then(|| PathBuf::from(arg))
    })
}

/// Aborts the process when `flag` exists (removing it first).
pub fn crash_if_flagged(flag: Option<&PathBuf>) {
    if let Some(flag) = flag {
        if std::fs::remove_file(flag).is_ok() {
            tracing::warn!("failpoint table-precommit: aborting before the commit (test hook)");
            std::process::abort();
        }
    }
}
