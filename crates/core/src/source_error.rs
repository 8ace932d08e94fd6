//! How a source's run fails: [`SourceError`], and [`PipelineClosed`] (the
//! pipeline stopped taking events), shared by the source side
//! (`source`) and the snapshot machinery (`snapshot`).
//!
//! A leaf module: it must never import another module of this crate, so
//! that both of its users can depend on it without depending on each other.

/// The receiving end of the pipeline has gone away (shutdown or failure).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the pipeline stopped accepting events")]
pub struct PipelineClosed;

/// Errors that end a source's run.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Wrong configuration or server set-up; retrying will not help.
    #[error("{0}")]
    Fatal(String),
    /// A failure that may pass (connection lost, server restarting); the
    /// pipeline restarts the source from the durable checkpoint after a backoff.
    #[error("{0}")]
    Retryable(String),
}

impl From<PipelineClosed> for SourceError {
    fn from(e: PipelineClosed) -> Self {
        SourceError::Retryable(e.to_string())
    }
}
