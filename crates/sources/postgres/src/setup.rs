//! Server-side set-up before streaming: the publication and the replication
//! slot, checked (and created when allowed) on the replication session
//! itself, before `START_REPLICATION`.
//!
//! This module owns the rules that keep a restart honest: the slot is
//! created only on a first start (no checkpoint); a checkpoint whose slot is
//! missing, invalidated, or already past the checkpoint stops the pipeline
//! with an error that says what happened and how to recover. It must never
//! advance a slot, never alter an existing publication, and drop a slot only
//! in [`drop_slot`], which only an operator's checkpoint reset calls.

use std::time::{Duration, Instant};

use crate::position::Lsn;
use deltaforge_core::SourceError;

use crate::config::TablePattern;
use crate::transport::{source_error, Transport};

/// What to prepare.
#[derive(Debug, Clone)]
pub struct Plan<'a> {
    /// The source id (checkpoint key), for messages.
    pub source_id: &'a str,
    /// The database the DSN names.
    pub database: &'a str,
    /// Slot name.
    pub slot: &'a str,
    /// Publication name.
    pub publication: &'a str,
    /// Table patterns.
    pub patterns: &'a [TablePattern],
    /// Create the publication when missing.
    pub create_publication: bool,
    /// The checkpoint LSN, when one exists.
    pub checkpoint: Option<u64>,
}

/// A SQL string literal: an escape string (`E'…'`, backslashes and quotes
/// doubled), which the server reads the same way whatever the session's
/// `standard_conforming_strings`, so no value can end it early.
pub(crate) fn literal(s: &str) -> String {
    format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// A SQL identifier, always quoted.
fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Drops replication slot `slot` for a checkpoint reset: a slot cannot
/// rewind, so starting over means a new slot (created by the next run,
/// which finds no checkpoint). Returns whether the slot existed.
///
/// A slot still held by a walsender whose client just went away (the
/// stopped run) is retried until `wait` passes; a slot held longer is in use
/// by someone else and is left alone (retryable error).
pub async fn drop_slot<T: Transport>(t: &mut T, slot: &str, wait: Duration) -> Result<bool, SourceError> {
    let deadline = Instant::now() + wait;
    loop {
        match t.query(&format!("DROP_REPLICATION_SLOT {slot}")).await {
            Ok(_) => {
                tracing::info!(slot, "dropped replication slot (checkpoint reset)");
                return Ok(true);
            }
            // undefined_object: already gone (e.g. a reset repeated after a partial failure).
            Err(e) if e.sqlstate.as_deref() == Some("42704") => return Ok(false),
            // object_in_use: the walsender of the stopped run may not have exited yet.
            Err(e) if e.sqlstate.as_deref() == Some("55006") => {
                if Instant::now() >= deadline {
                    return Err(SourceError::Retryable(format!(
                        "replication slot {slot:?} is still in use after {wait:?} (another DeltaForge instance or \
                         another client streams from it); stop that client and retry: {e}"
                    )));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(source_error(e)),
        }
    }
}

/// Ensures the publication and slot are usable, creating them when allowed.
pub async fn prepare<T: Transport>(t: &mut T, plan: &Plan<'_>) -> Result<(), SourceError> {
    ensure_publication(t, plan).await?;
    ensure_slot(t, plan).await
}

async fn matched_tables<T: Transport>(t: &mut T, plan: &Plan<'_>) -> Result<Vec<(String, String)>, SourceError> {
    let rows = t
        .query(
            "SELECT schemaname, tablename FROM pg_catalog.pg_tables \
             WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2",
        )
        .await
        .map_err(source_error)?;
    Ok(rows
        .into_iter()
        .filter_map(|r| match (r.first().cloned().flatten(), r.get(1).cloned().flatten()) {
            (Some(s), Some(n)) if TablePattern::any(plan.patterns, &s, &n) => Some((s, n)),
            _ => None,
        })
        .collect())
}

async fn ensure_publication<T: Transport>(t: &mut T, plan: &Plan<'_>) -> Result<(), SourceError> {
    let exists = !t
        .query(&format!("SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = {}", literal(plan.publication)))
        .await
        .map_err(source_error)?
        .is_empty();
    let tables = matched_tables(t, plan).await?;
    let list = if tables.is_empty() {
        "schema.table, …".to_string()
    } else {
        tables.iter().map(|(s, n)| format!("{}.{}", ident(s), ident(n))).collect::<Vec<_>>().join(", ")
    };
    if exists {
        let published = t
            .query(&format!(
                "SELECT schemaname, tablename FROM pg_catalog.pg_publication_tables WHERE pubname = {}",
                literal(plan.publication)
            ))
            .await
            .map_err(source_error)?;
        let published: Vec<(String, String)> = published
            .into_iter()
            .filter_map(|r| Some((r.first().cloned().flatten()?, r.get(1).cloned().flatten()?)))
            .collect();
        let missing: Vec<String> =
            tables.iter().filter(|t| !published.contains(t)).map(|(s, n)| format!("{s}.{n}")).collect();
        if !missing.is_empty() {
            tracing::warn!(
                publication = plan.publication,
                "tables matched by `tables` are not in the publication, so their changes are not captured: {}; \
                 add them with ALTER PUBLICATION {} ADD TABLE …",
                missing.join(", "),
                ident(plan.publication)
            );
        }
        return Ok(());
    }
    let sql = format!("CREATE PUBLICATION {} FOR TABLE {list}", ident(plan.publication));
    if !plan.create_publication {
        return Err(SourceError::Fatal(format!(
            "publication {:?} does not exist in database {:?} and create_publication is false; create it with: {sql};",
            plan.publication, plan.database
        )));
    }
    if tables.is_empty() {
        return Err(SourceError::Fatal(format!(
            "no table in database {:?} matches `tables` ({}), so publication {:?} cannot be created; create the tables \
             first or fix the patterns",
            plan.database,
            plan.patterns.iter().map(|p| format!("{p:?}")).collect::<Vec<_>>().join(", "),
            plan.publication
        )));
    }
    match t.query(&sql).await {
        Ok(_) => {
            tracing::info!(publication = plan.publication, tables = %list, "created publication");
            Ok(())
        }
        // Created concurrently by another session: fine.
        Err(e) if e.sqlstate.as_deref() == Some("42710") => Ok(()),
        Err(e) => Err(SourceError::Fatal(format!("creating the publication failed: {e}"))),
    }
}

async fn ensure_slot<T: Transport>(t: &mut T, plan: &Plan<'_>) -> Result<(), SourceError> {
    let rows = t
        .query(&format!(
            "SELECT plugin, slot_type, database, confirmed_flush_lsn, wal_status, active_pid \
             FROM pg_catalog.pg_replication_slots WHERE slot_name = {}",
            literal(plan.slot)
        ))
        .await
        .map_err(source_error)?;
    let reset = format!("deltaforge checkpoints reset {} --storage-path <your storage>", plan.source_id);
    let Some(row) = rows.into_iter().next() else {
        if let Some(cp) = plan.checkpoint {
            return Err(SourceError::Fatal(format!(
                "replication slot {:?} does not exist, but source {:?} has a checkpoint at {}: the slot was dropped \
                 (or the server was replaced), so changes after the checkpoint may be lost and DeltaForge will not \
                 start from an arbitrary position. To start over from the current position, reset the checkpoint \
                 with `{reset}` (a new slot is then created); to re-read the tables, take a fresh snapshot",
                plan.slot,
                plan.source_id,
                Lsn(cp)
            )));
        }
        t.query(&format!("CREATE_REPLICATION_SLOT {} LOGICAL pgoutput NOEXPORT_SNAPSHOT", plan.slot)).await.map_err(
            |e| match e.sqlstate.as_deref() {
                Some("53400") => SourceError::Fatal(format!(
                    "creating replication slot {:?} failed: {e} (raise max_replication_slots or drop unused slots)",
                    plan.slot
                )),
                _ => source_error(e),
            },
        )?;
        tracing::info!(slot = plan.slot, "created replication slot (first start, no checkpoint)");
        return Ok(());
    };
    let col = |i: usize| row.get(i).cloned().flatten();
    if col(1).as_deref() != Some("logical") || col(0).as_deref() != Some("pgoutput") {
        return Err(SourceError::Fatal(format!(
            "replication slot {:?} exists but is not a logical slot of plugin pgoutput (type {:?}, plugin {:?}); \
             name another slot in `slot`",
            plan.slot,
            col(1).unwrap_or_default(),
            col(0).unwrap_or_default()
        )));
    }
    if col(2).as_deref() != Some(plan.database) {
        return Err(SourceError::Fatal(format!(
            "replication slot {:?} belongs to database {:?}, not {:?}; name another slot in `slot`",
            plan.slot,
            col(2).unwrap_or_default(),
            plan.database
        )));
    }
    if col(4).as_deref() == Some("lost") {
        return Err(SourceError::Fatal(format!(
            "replication slot {:?} was invalidated by the server (wal_status = lost: the WAL it needed was removed, \
             see max_slot_wal_keep_size), so changes after the checkpoint are lost. Drop the slot \
             (SELECT pg_drop_replication_slot({})), reset the checkpoint with `{reset}`, and start again",
            plan.slot,
            literal(plan.slot)
        )));
    }
    if let Some(pid) = col(5) {
        return Err(SourceError::Retryable(format!(
            "replication slot {:?} is in use by server process {pid} (another DeltaForge, or a previous session the \
             server has not noticed is gone); retrying",
            plan.slot
        )));
    }
    if let (Some(cp), Some(confirmed)) = (plan.checkpoint, col(3)) {
        let confirmed: Lsn = confirmed
            .parse()
            .map_err(|e| SourceError::Retryable(format!("reading the slot's confirmed_flush_lsn: {e}")))?;
        if confirmed.0 > cp {
            return Err(SourceError::Fatal(format!(
                "replication slot {:?} has been advanced to {confirmed}, past source {:?}'s checkpoint at {}: the \
                 server can no longer send the changes in between (something other than this pipeline consumed or \
                 advanced the slot). To start over from the slot's position, reset the checkpoint with `{reset}`",
                plan.slot,
                plan.source_id,
                Lsn(cp)
            )));
        }
    }
    Ok(())
}
