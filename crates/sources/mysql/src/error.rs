//! The source's error type: what went wrong, with the source id and the
//! redacted DSN, and whether retrying can help.
//!
//! It owns the wording of every error and the fatal/retryable split. It must
//! never carry the DSN's password (only [`crate::config::redact_dsn`]'s
//! form) and never decide anything about the stream.

use deltaforge_core::{PipelineClosed, SourceError};

/// Errors of the MySQL source, with their context. Each maps to a fatal or
/// retryable [`SourceError`].
#[derive(Debug, thiserror::Error)]
pub enum MysqlSourceError {
    /// Bad configuration.
    #[error("mysql source {id}: invalid configuration: {msg}")]
    Config {
        /// Source id.
        id: String,
        /// What is wrong and the fix.
        msg: String,
    },
    /// The server is not set up for CDC (setting or privilege), with the fix.
    #[error("mysql source {id}: server {dsn} is not ready for change capture: {msg}")]
    Setup {
        /// Source id.
        id: String,
        /// Redacted DSN.
        dsn: String,
        /// What is wrong and the fix.
        msg: String,
    },
    /// A server or network error during `context`.
    #[error("mysql source {id}: {context} ({dsn}): {source}")]
    Server {
        /// Source id.
        id: String,
        /// Redacted DSN.
        dsn: String,
        /// What was being done.
        context: String,
        /// The driver's error.
        #[source]
        source: Box<mysql_async::Error>,
    },
    /// The binlog after the checkpoint is gone.
    #[error("mysql source {id}: the checkpoint can no longer be resumed: {msg}")]
    Purged {
        /// Source id.
        id: String,
        /// What is missing and the recovery.
        msg: String,
    },
    /// A binlog event could not be decoded.
    #[error("mysql source {id}: cannot decode the binlog at {at}: {msg}")]
    Decode {
        /// Source id.
        id: String,
        /// Position of the event.
        at: String,
        /// Why.
        msg: String,
    },
    /// The connection went silent.
    #[error("mysql source {id}: no binlog event or heartbeat from {dsn} for {secs} s; reconnecting")]
    Silent {
        /// Source id.
        id: String,
        /// Redacted DSN.
        dsn: String,
        /// Seconds of silence.
        secs: u64,
    },
    /// The schema registry failed.
    #[error("mysql source {id}: schema registry: {msg}")]
    Registry {
        /// Source id.
        id: String,
        /// Why.
        msg: String,
    },
    /// The pipeline stopped accepting events.
    #[error(transparent)]
    Closed(#[from] PipelineClosed),
    /// The snapshot reader failed (its error keeps its kind).
    #[error("snapshot: {0}")]
    Snapshot(SourceError),
}

/// Server error codes that retrying cannot fix.
const FATAL_SERVER_CODES: &[u16] = &[
    1044, // access denied to database
    1045, // access denied (bad user/password)
    1049, // unknown database
    1142, // command denied
    1227, // missing privilege
    1236, // fatal error reading binlog (purged, bad position)
    1698, // access denied (auth plugin)
];

impl MysqlSourceError {
    /// The pipeline's error kind for this error: fatal when retrying cannot help.
    pub(crate) fn into_source_error(self) -> SourceError {
        if let MysqlSourceError::Snapshot(e) = self {
            return e;
        }
        let fatal = match &self {
            MysqlSourceError::Config { .. }
            | MysqlSourceError::Setup { .. }
            | MysqlSourceError::Purged { .. }
            | MysqlSourceError::Decode { .. } => true,
            MysqlSourceError::Server { source, .. } => match source.as_ref() {
                mysql_async::Error::Server(e) => FATAL_SERVER_CODES.contains(&e.code),
                mysql_async::Error::Url(_) => true,
                _ => false,
            },
            MysqlSourceError::Silent { .. }
            | MysqlSourceError::Registry { .. }
            | MysqlSourceError::Closed(_)
            | MysqlSourceError::Snapshot(_) => false,
        };
        if fatal {
            SourceError::Fatal(self.to_string())
        } else {
            SourceError::Retryable(self.to_string())
        }
    }
}

/// The result of the source's internal steps.
pub(crate) type Result<T> = std::result::Result<T, MysqlSourceError>;
