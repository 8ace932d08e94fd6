//! The `snapshot:` map of a source config: when tables are snapshotted and
//! how big the reads are.
//!
//! This module owns the config's shape, defaults and range checks. It must
//! never read or store anything: it is plain data for the other snapshot
//! modules and for the config loaders.

use serde::{Deserialize, Serialize};

/// Default rows per chunk.
pub const DEFAULT_CHUNK_SIZE: usize = 10_000;

/// When a source snapshots its tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotMode {
    /// Snapshot each matched table once (its record says `done` afterwards),
    /// streaming all along.
    #[default]
    Initial,
    /// Never snapshot; stream only. Backfills still work.
    Never,
    /// Snapshot like `initial`, then stop the source.
    InitialOnly,
    /// Snapshot the matched tables again on every start.
    Always,
}

/// The `snapshot:` map of a source config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotConfig {
    /// When to snapshot (default `initial`).
    #[serde(default)]
    pub mode: SnapshotMode,
    /// Rows per chunk (default 10000, 1 to 1000000).
    #[serde(default = "default_chunk_size")]
    pub chunk_size: usize,
    /// Tables read at the same time (default 1, at most 16).
    #[serde(default = "one")]
    pub max_parallel_tables: usize,
}

fn default_chunk_size() -> usize {
    DEFAULT_CHUNK_SIZE
}

fn one() -> usize {
    1
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        SnapshotConfig { mode: SnapshotMode::Initial, chunk_size: DEFAULT_CHUNK_SIZE, max_parallel_tables: 1 }
    }
}

impl SnapshotConfig {
    /// Checks the ranges serde cannot: returns `(field, message)`.
    pub fn check(&self) -> Result<(), (String, String)> {
        if !(1..=1_000_000).contains(&self.chunk_size) {
            return Err(("snapshot.chunk_size".into(), "must be between 1 and 1000000".into()));
        }
        if !(1..=16).contains(&self.max_parallel_tables) {
            return Err(("snapshot.max_parallel_tables".into(), "must be between 1 and 16".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn config_defaults_and_ranges() {
        let c: SnapshotConfig = serde_json::from_value(json!({})).unwrap();
        assert_eq!(c, SnapshotConfig::default());
        let c: SnapshotConfig = serde_json::from_value(json!({"mode": "initial_only", "chunk_size": 5})).unwrap();
        assert_eq!(c.mode, SnapshotMode::InitialOnly);
        assert!(c.check().is_ok());
        let bad: SnapshotConfig = serde_json::from_value(json!({"chunk_size": 0})).unwrap();
        assert_eq!(bad.check().unwrap_err().0, "snapshot.chunk_size");
        assert!(serde_json::from_value::<SnapshotConfig>(json!({"mode": "sometimes"})).is_err());
        assert!(serde_json::from_value::<SnapshotConfig>(json!({"chunk": 5})).is_err());
    }
}
