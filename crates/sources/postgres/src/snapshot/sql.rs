//! The snapshot's ordinary connection ([`tokio_postgres`], TLS as the DSN
//! says) and the small SQL helpers the reader needs: quoting, error
//! mapping, simple queries as text.
//!
//! This module owns how the snapshot talks to the server; it must never
//! open a transaction or take a lock itself (callers send whole statement
//! batches), and never put a password in an error (only
//! [`Dsn::redacted`] appears).

use std::time::Duration;

use deltaforge_core::SourceError;
use futures::FutureExt as _;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage, SimpleQueryRow};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::{Dsn, TablePattern};
use crate::tls;

pub(super) use crate::setup::literal;

/// A SQL identifier, always quoted.
pub(super) fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// `schema.table` with each part quoted.
pub(super) fn quoted(table: &str) -> String {
    match table.split_once('.') {
        Some((s, t)) => format!("{}.{}", ident(s), ident(t)),
        None => ident(table),
    }
}

/// SQLSTATE classes that retrying the same statement cannot fix: syntax
/// and access (42), data exceptions (22, e.g. a backfill `where` dividing
/// by zero), invalid transaction state (25, e.g. a write in the read-only
/// chunk), routine exceptions (2F, 38, 39) and unsupported features (0A).
const FATAL_CLASSES: &[&str] = &["42", "22", "25", "2F", "38", "39", "0A"];

/// Errors of the statement itself are fatal; others (connection, server
/// shutting down) may pass.
fn db_error(what: &str, e: tokio_postgres::Error) -> SourceError {
    let text = match e.as_db_error() {
        Some(db) => format!("{}: {} (SQLSTATE {})", db.severity(), db.message(), db.code().code()),
        None => e.to_string(),
    };
    match e.code().map(|c| c.code()) {
        Some(c) if FATAL_CLASSES.iter().any(|f| c.starts_with(f)) => {
            SourceError::Fatal(format!("snapshot: {what}: {text}"))
        }
        _ => SourceError::Retryable(format!("snapshot: {what}: {text}")),
    }
}

/// A new connection for the snapshot, with its driver task spawned.
pub(super) async fn connect(dsn: &Dsn) -> Result<Client, SourceError> {
    let target = dsn.redacted();
    let mut c = tokio_postgres::Config::new();
    c.host(&dsn.host)
        .port(dsn.port)
        .user(&dsn.user)
        .dbname(&dsn.dbname)
        .application_name("deltaforge-snapshot")
        .options(crate::transport::SESSION_OPTIONS)
        .connect_timeout(Duration::from_secs(30));
    if !dsn.password.is_empty() {
        c.password(&dsn.password);
    }
    let connected = match tls::plan(dsn.sslmode) {
        None => {
            c.ssl_mode(tokio_postgres::config::SslMode::Disable);
            c.connect(NoTls).await.map(|(client, conn)| (client, conn.boxed()))
        }
        Some(plan) => {
            c.ssl_mode(plan.negotiate);
            let cfg = tls::client_config(dsn, plan.verify).map_err(|e| {
                SourceError::Fatal(format!("snapshot: TLS for PostgreSQL at {target} (sslmode {:?}): {e}", dsn.sslmode))
            })?;
            c.connect(MakeRustlsConnect::new(cfg)).await.map(|(client, conn)| (client, conn.boxed()))
        }
    };
    let (client, conn) = connected.map_err(|e| {
        let text = e.to_string();
        if text.contains("TLS") {
            // No TLS on the server, or its certificate was refused:
            // retrying will not help.
            SourceError::Fatal(format!(
                "snapshot: connecting to PostgreSQL at {target} (sslmode {:?}): {text} (check sslmode and \
                 sslrootcert in the dsn)",
                dsn.sslmode
            ))
        } else {
            SourceError::Retryable(format!("snapshot: connecting to PostgreSQL at {target}: {text}"))
        }
    })?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "snapshot connection closed");
        }
    });
    Ok(client)
}

/// Rows of a simple query as text.
pub(super) async fn rows(client: &Client, sql: &str, what: &str) -> Result<Vec<Vec<Option<String>>>, SourceError> {
    let msgs = client.simple_query(sql).await.map_err(|e| db_error(what, e))?;
    Ok(msgs
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect()),
            _ => None,
        })
        .collect())
}

/// Rows of a multi-statement simple query, one list per statement: one
/// round trip for what would otherwise be several.
pub(super) async fn statements(
    client: &Client,
    sql: &str,
    what: &str,
) -> Result<Vec<Vec<SimpleQueryRow>>, SourceError> {
    let msgs = client.simple_query(sql).await.map_err(|e| db_error(what, e))?;
    let mut out = vec![Vec::new()];
    for m in msgs {
        match m {
            SimpleQueryMessage::Row(r) => out.last_mut().expect("never empty").push(r),
            SimpleQueryMessage::CommandComplete(_) => out.push(Vec::new()),
            _ => {}
        }
    }
    out.pop();
    Ok(out)
}

/// The rows of one statement as text.
pub(super) fn text_rows(rows: &[SimpleQueryRow]) -> Vec<Vec<Option<String>>> {
    rows.iter().map(|r| (0..r.len()).map(|i| r.get(i).map(str::to_string)).collect()).collect()
}

/// One cell of a text row (`None`: SQL NULL or no such column).
pub(super) fn cell(r: &[Option<String>], i: usize) -> Option<&str> {
    r.get(i).and_then(|c| c.as_deref())
}

/// The `schema.table` names of every user table matched by `patterns`, sorted
/// (the snapshot's catalogue and `verify` list tables the same way).
pub(super) async fn matched_tables(client: &Client, patterns: &[TablePattern]) -> Result<Vec<String>, SourceError> {
    let all = rows(
        client,
        "SELECT schemaname, tablename FROM pg_catalog.pg_tables \
         WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2",
        "listing tables",
    )
    .await?;
    Ok(all
        .iter()
        .filter_map(|r| match (cell(r, 0), cell(r, 1)) {
            (Some(s), Some(t)) if TablePattern::any(patterns, s, t) => Some(format!("{s}.{t}")),
            _ => None,
        })
        .collect())
}
