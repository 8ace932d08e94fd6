//! `deltaforge backup` and `deltaforge restore`: the command-line side of
//! the SQLite storage's backups (the copying, checking and locking live in
//! `deltaforge_storage_sqlite::{backup, restore}`).
//!
//! This module owns the arguments' checks, the timestamp of the kept file
//! and what is printed. It must never open the storage through
//! [`crate::storage::open`] (which would create a missing file), and never
//! restore without the storage crate's checks (integrity, schema version,
//! file in use).

use std::path::Path;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use deltaforge_storage_sqlite::{backup_file, restore_file};

use crate::storage::{BackendKind, StorageArgs};

/// What to do instead for a backend without file backups.
fn unsupported(storage: &StorageArgs, what: &str) -> Option<ExitCode> {
    let advice = match storage.storage_backend {
        BackendKind::Sqlite => return None,
        BackendKind::Memory => "the memory backend keeps nothing to back up".to_string(),
        BackendKind::Postgres => format!(
            "{what} works on the SQLite backend only; back up the postgres backend with \
             `pg_dump --schema=deltaforge --format=custom` (and restore with pg_restore), see README \
             \"Checkpoints and storage\""
        ),
    };
    eprintln!("error: {advice}");
    Some(ExitCode::from(2))
}

/// Now as `YYYYMMDDTHHMMSSZ` (UTC), the suffix of the kept file.
fn timestamp() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default() as i64;
    let (y, m, d) = deltaforge_common::time::civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!("{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z", s / 3600, s % 3600 / 60, s % 60)
}

/// `deltaforge backup --to FILE [--force]`: an online copy of the SQLite
/// store, safe while pipelines run.
pub async fn backup(storage: &StorageArgs, to: &Path, force: bool) -> anyhow::Result<ExitCode> {
    if let Some(code) = unsupported(storage, "deltaforge backup") {
        return Ok(code);
    }
    let (src, dest) = (storage.storage_path.clone(), to.to_path_buf());
    let summary = tokio::task::spawn_blocking(move || backup_file(&src, &dest, force))
        .await?
        .with_context(|| format!("backing up {} to {}", storage.storage_path.display(), to.display()))?;
    println!(
        "backup written to {}: {} bytes, storage schema version {}, {} checkpoint(s); integrity_check ok",
        summary.path.display(),
        summary.bytes,
        summary.schema_version,
        summary.checkpoints
    );
    Ok(ExitCode::SUCCESS)
}

/// `deltaforge restore --from FILE [--force]`: puts a backup in place of
/// the SQLite store of a stopped engine, keeping the current file.
pub async fn restore(storage: &StorageArgs, from: &Path, force: bool) -> anyhow::Result<ExitCode> {
    if let Some(code) = unsupported(storage, "deltaforge restore") {
        return Ok(code);
    }
    let (src, dest, suffix) = (from.to_path_buf(), storage.storage_path.clone(), timestamp());
    let report = tokio::task::spawn_blocking(move || restore_file(&src, &dest, &suffix, force))
        .await?
        .with_context(|| format!("restoring {} from {}", storage.storage_path.display(), from.display()))?;
    println!(
        "restored {} from {}: {} bytes, storage schema version {}, {} checkpoint(s); integrity_check ok",
        storage.storage_path.display(),
        from.display(),
        report.restored.bytes,
        report.restored.schema_version,
        report.restored.checkpoints.len()
    );
    match &report.kept {
        Some(kept) => println!("the previous file is kept as {}", kept.display()),
        None => println!("there was no previous file"),
    }
    for (source_id, value) in &report.restored.checkpoints {
        let position = serde_json::from_str::<serde_json::Value>(value)
            .map(|v| v["position"].to_string())
            .unwrap_or_else(|_| "(unreadable)".to_string());
        println!("  checkpoint {source_id}: {position}");
    }
    println!(
        "note: each source resumes from the checkpoint above. Datagen and MySQL/MariaDB re-deliver what came \
         after it (at-least-once; MySQL needs that binlog still on the server). A PostgreSQL source whose slot \
         has moved past it stops with \"replication slot ... has been advanced to ..., past source ...'s \
         checkpoint\": reset that checkpoint (`deltaforge checkpoints reset SOURCE_ID`) to go on from the slot"
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_timestamp_is_compact_utc() {
        let t = super::timestamp();
        assert_eq!(t.len(), 16, "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[8] == b'T', "{t}");
    }
}
