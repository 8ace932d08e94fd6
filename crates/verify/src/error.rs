//! The errors of a verification: each names what failed and what to do.
//! Never holds a password (DSNs are shown redacted by the readers).

use deltaforge_core::SourceError;

/// Why a verification could not run to the end (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// Reading the source failed.
    #[error("reading the source: {0}")]
    Source(String),
    /// Reading the sink failed.
    #[error("reading sink {sink}: {message}")]
    Sink {
        /// The sink id.
        sink: String,
        /// What went wrong.
        message: String,
    },
    /// The local on-disk index failed (disk full, temporary directory).
    #[error("the verify index on disk: {0}")]
    Index(#[from] rusqlite::Error),
    /// A processor of the pipeline failed on a source row.
    #[error("applying processor {processor} to source rows: {message}")]
    Transform {
        /// The processor's name.
        processor: String,
        /// Its error.
        message: String,
    },
    /// The request cannot be served as asked.
    #[error("{0}")]
    Unsupported(String),
    /// A local file (the temporary index) could not be created.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
}

impl From<SourceError> for VerifyError {
    fn from(e: SourceError) -> Self {
        VerifyError::Source(e.to_string())
    }
}
