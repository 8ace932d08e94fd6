//! [`SinkContext`]: what a sink reader knows of its pipeline (names for
//! templates, the idempotency key prefix). Pure data.

use crate::error::VerifyError;

/// What a stream sink reader needs to know of its pipeline.
#[derive(Debug, Clone)]
pub struct SinkContext {
    /// The sink's `id`.
    pub sink_id: String,
    /// The pipeline's name (`${pipeline}` in name templates).
    pub pipeline: String,
    /// The pipeline's tenant (`${tenant}`).
    pub tenant: String,
    /// The source's `id`: the prefix of every idempotency key.
    pub source_id: String,
}

impl SinkContext {
    /// A [`VerifyError::Sink`] of this sink.
    pub fn err(&self, message: impl Into<String>) -> VerifyError {
        VerifyError::Sink { sink: self.sink_id.clone(), message: message.into() }
    }
}
