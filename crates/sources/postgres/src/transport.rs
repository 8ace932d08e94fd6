//! The replication connection, behind the source's own small trait
//! [`Transport`], so that the crate underneath can be swapped.
//!
//! The implementation, [`PgWire`], uses `pgwire-replication` 0.5: a tokio
//! client of the streaming replication protocol (CopyBoth) with SCRAM
//! authentication, TLS through rustls (`sslmode` honoured), keepalive
//! replies and periodic standby status updates that report only the LSN we
//! hand it ([`Transport::acknowledge`]). It parses Begin/Commit/Message
//! boundaries and hands back every other pgoutput message as raw bytes,
//! which [`crate::pgoutput`] decodes. It was chosen over `pg_walstream`
//! 0.9 because its feedback is driven solely by the consumer's applied LSN
//! (we must never report a merely received LSN), because a "gated" session
//! lets us run the set-up queries (slot and publication checks) on the same
//! authenticated replication connection before `START_REPLICATION`, with the
//! same TLS settings, so no second PostgreSQL client crate is needed; and
//! because protocol version 1 is all this source needs.
//!
//! Dead connections: connecting and authenticating are bounded by
//! `connect_timeout`; on the stream, a server silent for `receive_timeout`
//! ends the session with a retryable error (a half-open connection, a stuck
//! proxy or route that neither delivers nor closes would otherwise hang the
//! source for ever; TCP keepalives cannot see a middlebox that still
//! acknowledges). So that a healthy idle server is never silent that long,
//! the session sets `wal_sender_timeout` to `receive_timeout`: the server
//! then pings (reply requested) once the client has been quiet for half of
//! it, and the client's idle wakeup is set to `receive_timeout` so that it
//! stays quiet long enough for that ping. The server also ends a session
//! whose client went silent for that long, which frees the slot for the
//! reconnect.
//!
//! This module owns the connection only. It must never decide what is
//! durable: it reports exactly the LSN the source acknowledges.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use deltaforge_core::SourceError;
use futures::FutureExt as _;
use pgwire_replication::{
    Lsn as WireLsn, PgWireError, ReplicationClient, ReplicationConfig, ReplicationEvent, TlsConfig,
};

use crate::config::{Dsn, SslMode};

/// An event from the replication stream.
#[derive(Debug, Clone, PartialEq)]
pub enum WireEvent {
    /// Server heartbeat with the server's WAL position.
    KeepAlive {
        /// The position up to which the server has sent (or filtered) WAL.
        wal_end: u64,
    },
    /// Start of a transaction.
    Begin {
        /// LSN of the commit record.
        final_lsn: u64,
        /// Transaction id.
        xid: u32,
        /// Commit time, microseconds since 2000-01-01.
        commit_time: i64,
    },
    /// End of a transaction.
    Commit {
        /// LSN of the commit record.
        commit_lsn: u64,
        /// End of the commit record.
        end_lsn: u64,
        /// Commit time, microseconds since 2000-01-01.
        commit_time: i64,
    },
    /// Any other pgoutput message, undecoded, with the WAL position of the
    /// change it belongs to.
    Data {
        /// WAL start of the XLogData message.
        lsn: u64,
        /// The pgoutput message.
        data: Bytes,
    },
    /// A logical decoding message.
    LogicalMessage {
        /// Emitted inside a transaction.
        transactional: bool,
        /// LSN of the message.
        lsn: u64,
        /// Prefix.
        prefix: String,
        /// Content.
        content: Bytes,
    },
    /// The stream ended without error (stop requested).
    End,
}

/// Whether a connection failure may pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Retry later (connection lost, server restarting, slot busy).
    Retryable,
    /// Configuration or set-up problem; retrying will not help.
    Fatal,
}

/// A failure of the replication connection; the message never contains a
/// password.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct TransportError {
    /// Whether to retry.
    pub severity: Severity,
    /// What happened, with the redacted server address.
    pub message: String,
    /// The SQLSTATE of a server error, when there is one.
    pub sqlstate: Option<String>,
}

/// Maps a transport failure to the pipeline's error kinds.
pub(crate) fn source_error(e: TransportError) -> SourceError {
    match e.severity {
        Severity::Retryable => SourceError::Retryable(e.message),
        Severity::Fatal => SourceError::Fatal(e.message),
    }
}

/// A replication connection: set-up queries first, then the stream.
#[async_trait]
pub trait Transport: Send {
    /// Runs SQL (or a replication command) before [`start`](Self::start);
    /// returns the rows as text.
    async fn query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, TransportError>;
    /// Sends `START_REPLICATION` and waits until the server accepted it.
    async fn start(&mut self) -> Result<(), TransportError>;
    /// The next event if one is already buffered, without waiting.
    fn try_recv(&mut self) -> Option<Result<WireEvent, TransportError>>;
    /// The next event, waiting for it.
    async fn recv(&mut self) -> Result<WireEvent, TransportError>;
    /// Reports `lsn` as written, flushed and applied to the server (in the
    /// next standby status update, and in keepalive replies). Monotonic.
    fn acknowledge(&self, lsn: u64);
}

/// How long connecting, authenticating and each set-up step may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Session settings that make the server's text output ISO 8601 and UTC
/// (see [`crate::values`]).
pub(crate) const SESSION_OPTIONS: &str =
    "-c DateStyle=ISO,YMD -c IntervalStyle=iso_8601 -c TimeZone=UTC -c extra_float_digits=1";

/// [`SESSION_OPTIONS`] plus the session's `wal_sender_timeout` (see the
/// module docs).
fn session_options(receive_timeout: Duration) -> String {
    format!("{SESSION_OPTIONS} -c wal_sender_timeout={}", receive_timeout.as_millis())
}

/// [`Transport`] over `pgwire-replication`.
pub struct PgWire {
    client: ReplicationClient,
    target: String,
    receive_timeout: Duration,
}

/// What a session needs besides the DSN.
#[derive(Debug, Clone)]
pub struct SessionParams {
    /// Slot name.
    pub slot: String,
    /// Publication name.
    pub publication: String,
    /// Where to start (`0`: the slot's confirmed position).
    pub start_lsn: u64,
    /// Seconds between standby status updates.
    pub status_interval: Duration,
    /// Bound on connecting and authenticating.
    pub connect_timeout: Duration,
    /// Longest silence of the server on the stream (see the module docs).
    pub receive_timeout: Duration,
    /// How long to let a busy stream gather before reading again
    /// (`read_wait_ms`).
    pub read_wait: Duration,
}

impl PgWire {
    /// Connects and authenticates a replication session (not yet streaming).
    pub async fn connect(dsn: &Dsn, params: &SessionParams) -> Result<Self, TransportError> {
        let target = dsn.redacted();
        let mut tls = match dsn.sslmode {
            SslMode::Disable => TlsConfig::disabled(),
            SslMode::Prefer => TlsConfig { mode: pgwire_replication::SslMode::Prefer, ..TlsConfig::default() },
            SslMode::Require => TlsConfig::require(),
            SslMode::VerifyCa => TlsConfig::verify_ca(dsn.sslrootcert.clone().map(Into::into)),
            SslMode::VerifyFull => TlsConfig::verify_full(dsn.sslrootcert.clone().map(Into::into)),
        };
        if let (Some(cert), Some(key)) = (&dsn.sslcert, &dsn.sslkey) {
            tls = tls.with_client_cert(cert, key);
        }
        let cfg = ReplicationConfig::new(
            dsn.host.clone(),
            dsn.user.clone(),
            dsn.password.clone(),
            dsn.dbname.clone(),
            params.slot.clone(),
            params.publication.clone(),
        )
        .with_port(dsn.port)
        .with_tls(tls)
        .with_start_lsn(WireLsn(params.start_lsn))
        .with_status_interval(params.status_interval)
        .with_wakeup_interval(params.receive_timeout)
        .with_read_coalesce(params.read_wait)
        .with_options(session_options(params.receive_timeout))
        .with_application_name("deltaforge");
        // The gated client connects and authenticates in its worker; the
        // first round trip (IDENTIFY_SYSTEM) waits for that, so both are
        // bounded here.
        let connect = async {
            let mut client = ReplicationClient::connect_gated(cfg).await?;
            client.identify_system().await?;
            Ok::<_, PgWireError>(client)
        };
        let client = match tokio::time::timeout(params.connect_timeout, connect).await {
            Ok(r) => r.map_err(|e| classify(&target, "connecting", e))?,
            Err(_) => {
                return Err(TransportError {
                    severity: Severity::Retryable,
                    message: format!(
                        "PostgreSQL at {target}: connecting: no answer within {} s (connect_timeout_secs; is the \
                         server reachable?)",
                        params.connect_timeout.as_secs()
                    ),
                    sqlstate: None,
                })
            }
        };
        Ok(PgWire { client, target, receive_timeout: params.receive_timeout })
    }
}

#[async_trait]
impl Transport for PgWire {
    async fn query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, TransportError> {
        let rows = match tokio::time::timeout(SETUP_TIMEOUT, self.client.simple_query(sql)).await {
            Ok(r) => r.map_err(|e| classify(&self.target, "running a set-up query", e))?,
            Err(_) => return Err(timeout(&self.target, "a set-up query")),
        };
        Ok(rows
            .into_iter()
            .map(|row| row.into_iter().map(|c| c.map(|b| String::from_utf8_lossy(&b).into_owned())).collect())
            .collect())
    }

    async fn start(&mut self) -> Result<(), TransportError> {
        self.client.start().await.map_err(|e| classify(&self.target, "starting replication", e))?;
        match tokio::time::timeout(SETUP_TIMEOUT, self.client.wait_started()).await {
            Ok(r) => r.map_err(|e| classify(&self.target, "starting replication", e)),
            Err(_) => Err(timeout(&self.target, "START_REPLICATION")),
        }
    }

    fn try_recv(&mut self) -> Option<Result<WireEvent, TransportError>> {
        let target = &self.target;
        self.client.recv().now_or_never().map(|r| convert(target, r))
    }

    async fn recv(&mut self) -> Result<WireEvent, TransportError> {
        // Restarted whenever the caller polls anew (after each acknowledgement,
        // which also makes the client speak, so the server's ping comes at most
        // a status interval plus half the timeout later).
        match tokio::time::timeout(self.receive_timeout, self.client.recv()).await {
            Ok(r) => convert(&self.target, r),
            Err(_) => Err(TransportError {
                severity: Severity::Retryable,
                message: format!(
                    "PostgreSQL at {}: nothing received on the replication stream for {} s (receive_timeout_secs): \
                     the connection is considered dead; reconnecting",
                    self.target,
                    self.receive_timeout.as_secs()
                ),
                sqlstate: None,
            }),
        }
    }

    fn acknowledge(&self, lsn: u64) {
        self.client.update_applied_lsn(WireLsn(lsn));
    }
}

fn convert(target: &str, r: Result<Option<ReplicationEvent>, PgWireError>) -> Result<WireEvent, TransportError> {
    let ev = match r {
        Ok(Some(ev)) => ev,
        Ok(None) => return Ok(WireEvent::End),
        Err(e) => return Err(classify(target, "streaming", e)),
    };
    Ok(match ev {
        ReplicationEvent::KeepAlive { wal_end, .. } => WireEvent::KeepAlive { wal_end: wal_end.0 },
        ReplicationEvent::Begin { final_lsn, xid, commit_time_micros } => {
            WireEvent::Begin { final_lsn: final_lsn.0, xid, commit_time: commit_time_micros }
        }
        ReplicationEvent::Commit { lsn, end_lsn, commit_time_micros } => {
            WireEvent::Commit { commit_lsn: lsn.0, end_lsn: end_lsn.0, commit_time: commit_time_micros }
        }
        ReplicationEvent::XLogData { wal_start, data, .. } => WireEvent::Data { lsn: wal_start.0, data },
        ReplicationEvent::Message { transactional, lsn, prefix, content } => {
            WireEvent::LogicalMessage { transactional, lsn: lsn.0, prefix, content }
        }
        ReplicationEvent::StoppedAt { .. } => WireEvent::End,
    })
}

fn timeout(target: &str, what: &str) -> TransportError {
    TransportError {
        severity: Severity::Retryable,
        message: format!("PostgreSQL at {target} did not answer {what} within {}s", SETUP_TIMEOUT.as_secs()),
        sqlstate: None,
    }
}

/// Extracts `SQLSTATE XXXXX` from a server error text.
fn sqlstate(msg: &str) -> Option<String> {
    let i = msg.find("SQLSTATE ")?;
    let code: String = msg[i + 9..].chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
    (code.len() == 5).then_some(code)
}

/// Maps a client error to a [`TransportError`], deciding whether it may pass.
fn classify(target: &str, doing: &str, e: PgWireError) -> TransportError {
    let text = e.to_string();
    let code = sqlstate(&text);
    let severity = match &e {
        PgWireError::Auth(_) | PgWireError::Tls(_) | PgWireError::MessageTooLarge { .. } => Severity::Fatal,
        PgWireError::Server(_) => match code.as_deref() {
            // Connection problems, server shutting down or starting,
            // too many connections, object in use (slot busy), serialization.
            Some(c) if c.starts_with("08") || c.starts_with("57") || c.starts_with("53") || c.starts_with("40") => {
                Severity::Retryable
            }
            Some("55006") | Some("55000") | Some("XX000") => Severity::Retryable,
            Some(_) => Severity::Fatal,
            None => Severity::Retryable,
        },
        _ => Severity::Retryable,
    };
    let hint = match (code.as_deref(), &e) {
        (Some("28P01") | Some("28000"), _) | (_, PgWireError::Auth(_)) => {
            " (check the user and password in the dsn, and pg_hba.conf allows a replication connection for this user)"
        }
        (Some("3D000"), _) => " (the database in the dsn does not exist)",
        (Some("42501"), _) => " (the user needs the REPLICATION attribute: ALTER ROLE … WITH REPLICATION)",
        (_, PgWireError::Io(_)) => " (is the server running and reachable?)",
        (_, PgWireError::Tls(_)) => " (check sslmode and sslrootcert in the dsn)",
        _ => "",
    };
    TransportError { severity, message: format!("PostgreSQL at {target}: {doing}: {text}{hint}"), sqlstate: code }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let t = "postgres://u:***@h:1/d";
        let e = classify(
            t,
            "x",
            PgWireError::Server("terminating connection due to administrator command (SQLSTATE 57P01)".into()),
        );
        assert_eq!(e.severity, Severity::Retryable);
        assert_eq!(e.sqlstate.as_deref(), Some("57P01"));
        let e = classify(t, "x", PgWireError::Server("database \"nope\" does not exist (SQLSTATE 3D000)".into()));
        assert_eq!(e.severity, Severity::Fatal);
        assert!(e.message.contains("does not exist"));
        let e = classify(t, "x", PgWireError::Io(std::sync::Arc::new(std::io::Error::other("refused"))));
        assert_eq!(e.severity, Severity::Retryable);
        assert!(e.message.contains("reachable"));
    }
}
