//! What a verification is asked to do ([`Options`]) and how it reports
//! progress ([`Progress`]). Pure data.

use std::time::Duration;

use deltaforge_common::TablePattern;

/// Progress of a run, for a terminal line or an API job.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Progress {
    /// The table being read.
    pub table: String,
    /// Tables finished.
    pub tables_done: usize,
    /// Tables in all.
    pub tables_total: usize,
    /// Source rows compared so far.
    pub rows: u64,
    /// What the run is doing (`reading the sink`, `comparing`, `re-checking`).
    pub phase: String,
}

/// Called with each progress step.
pub type ProgressFn = Box<dyn FnMut(&Progress) + Send>;

/// What to compare and how.
#[derive(Debug, Clone)]
pub struct Options {
    /// The pipeline's name (for the report).
    pub pipeline: String,
    /// The sink's id (for the report).
    pub sink: String,
    /// Only these tables (empty: every captured table).
    pub only: Vec<TablePattern>,
    /// An SQL condition on the source rows (`--where`). With one, rows the
    /// sink has and the source lacks are not looked for (they cannot be
    /// told from rows outside the condition).
    pub condition: Option<String>,
    /// Source rows per chunk.
    pub chunk_size: usize,
    /// Keys listed per category in the report (all are counted).
    pub max_listed: usize,
    /// Differences re-checked at most (beyond: reported as they stand).
    pub max_suspects: usize,
    /// Re-check rounds at most.
    pub rounds: usize,
    /// How long to wait for the sink to catch up in a round.
    pub catch_up_timeout: Duration,
    /// Stop waiting when the sink's position has not moved for this long.
    pub stall_timeout: Duration,
    /// Columns whose values are masked, per table pattern.
    pub masked: Vec<(TablePattern, Vec<String>)>,
    /// Warnings to put in the report (skipped transforms and the like).
    pub warnings: Vec<String>,
    /// Compare database sinks by chunk hashes where exact (`--no-hashes`:
    /// row by row).
    pub hashes: bool,
    /// Key values per hashed range at the top level (`--hash-rows`).
    pub hash_rows: u64,
    /// Differing ranges are split until they span at most this many key
    /// values, then read row by row.
    pub hash_leaf: u64,
}

impl Options {
    /// Defaults for `pipeline` and `sink`.
    pub fn new(pipeline: &str, sink: &str) -> Self {
        Options {
            pipeline: pipeline.into(),
            sink: sink.into(),
            only: Vec::new(),
            condition: None,
            chunk_size: 2000,
            max_listed: 100,
            max_suspects: 100_000,
            rounds: 4,
            catch_up_timeout: Duration::from_secs(120),
            stall_timeout: Duration::from_secs(30),
            masked: Vec::new(),
            warnings: Vec::new(),
            hashes: true,
            hash_rows: 10_000,
            hash_leaf: 256,
        }
    }

    pub(crate) fn is_masked(&self, table: &str, column: &str) -> bool {
        let (db, t) = table.split_once('.').unwrap_or(("", table));
        self.masked.iter().any(|(p, cols)| p.matches(db, t) && cols.iter().any(|c| c == column))
    }
}
